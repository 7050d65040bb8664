//! A tonic codec for `DynamicMessage`: the gateway calls gRPC methods it knows only by descriptor,
//! so requests are encoded from, and responses decoded into, messages built from the protos at run
//! time. The bytes on the (in-process) wire are exactly those a typed client would send.

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Encodes any dynamic message; decodes responses of one message type.
#[derive(Clone, Debug)]
pub(crate) struct DynCodec {
    response: MessageDescriptor,
}

impl DynCodec {
    pub(crate) fn new(response: MessageDescriptor) -> DynCodec {
        DynCodec { response }
    }
}

impl Codec for DynCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;

    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }

    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.response.clone())
    }
}

#[derive(Debug)]
pub(crate) struct DynEncoder;

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding request: {e}")))
    }
}

#[derive(Debug)]
pub(crate) struct DynDecoder(MessageDescriptor);

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding response: {e}")))
    }
}
