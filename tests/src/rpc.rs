//! Requests sent exactly as built, with the `api` crate's generated etcd messages and clients.
//!
//! The `etcd-client` crate's builders cannot express every request (for example it rewrites
//! `sort_target=KEY, sort_order=ASCEND` into `sort_order=NONE`), and its request types are not
//! nameable, so the randomized and edge-case tests build `api::etcdserverpb` messages and send
//! them through [`RawKv`], a thin wrapper over the generated `KvClient` that answers with the
//! message itself or an [`RpcError`] (code and message, which is what the tests compare).
//! [`convert`] turns an `etcd-client` response's inner message into the `api` type (same
//! schema), so both kinds of test compare the same types.

use std::fmt;
use std::time::Duration;

use api::etcdserverpb::kv_client::KvClient;
use api::etcdserverpb::request_op::Request;
use api::etcdserverpb::response_op::Response;
use api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, RequestOp, TxnRequest,
    TxnResponse,
};
use prost::Message;
use tonic::transport::Channel;

/// A txn operation holding `request`.
pub fn request_op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// The revision in a response's header (None without a header).
pub fn header_revision(r: &Response) -> Option<i64> {
    let h = match r {
        Response::ResponseRange(r) => &r.header,
        Response::ResponsePut(r) => &r.header,
        Response::ResponseDeleteRange(r) => &r.header,
        Response::ResponseTxn(r) => &r.header,
    };
    h.as_ref().map(|h| h.revision)
}

/// Converts between two protobuf messages with the same schema (for example an `etcd-client`
/// response's inner message into the `api` type), by encoding and decoding.
pub fn convert<A: Message, B: Message + Default>(a: &A) -> B {
    B::decode(a.encode_to_vec().as_slice()).expect("messages with the same schema")
}

/// A gRPC error as the tests compare it: the status code and the message.
#[derive(Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: tonic::Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RpcError({:?}, {:?})", self.code, self.message)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<tonic::Status> for RpcError {
    fn from(s: tonic::Status) -> Self {
        RpcError::new(s.code(), s.message())
    }
}

impl From<etcd_client::Error> for RpcError {
    fn from(e: etcd_client::Error) -> Self {
        match e {
            etcd_client::Error::GRpcStatus(s) => s.into(),
            // Not a status from the server: keep it visible, with a code no server sends here.
            other => RpcError::new(tonic::Code::Unknown, format!("client-side error: {other}")),
        }
    }
}

/// What a RangeStream answered: its parts in order, and the error that ended it, if any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamAnswer {
    pub parts: Vec<RangeResponse>,
    pub error: Option<RpcError>,
}

impl StreamAnswer {
    /// The parts merged as etcd's `proto.Merge` would: kvs appended, and the header, `more` and
    /// `count` of the parts that set them (the last one).
    pub fn merged(&self) -> RangeResponse {
        let mut m = RangeResponse::default();
        for p in &self.parts {
            m.kvs.extend(p.kvs.iter().cloned());
            if p.header.is_some() {
                m.header = p.header;
            }
            m.more |= p.more;
            if p.count != 0 {
                m.count = p.count;
            }
        }
        m
    }
}

/// `etcdserverpb.KV` through the generated client: requests go out exactly as built.
#[derive(Clone)]
pub struct RawKv {
    kv: KvClient<Channel>,
}

fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, RpcError> {
    r.map(tonic::Response::into_inner).map_err(RpcError::from)
}

impl RawKv {
    pub async fn connect(endpoint: &str) -> Result<RawKv, tonic::transport::Error> {
        let channel = Channel::from_shared(endpoint.to_string())
            .expect("valid endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await?;
        // The server's limits are under test: the client imposes none of its own.
        let kv = KvClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(RawKv { kv })
    }

    pub async fn range(&mut self, r: RangeRequest) -> Result<RangeResponse, RpcError> {
        answer(self.kv.range(r).await)
    }

    /// A Range with the metadata etcd clients add with `WithRequireLeader` (`hasleader: true`):
    /// the server must refuse it while it knows no leader.
    pub async fn range_requiring_leader(
        &mut self,
        r: RangeRequest,
    ) -> Result<RangeResponse, RpcError> {
        let mut req = tonic::Request::new(r);
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        answer(self.kv.range(req).await)
    }

    /// Opens a RangeStream (etcd 3.7), with the `token` metadata when given; the parts are read
    /// as the caller pulls them.
    pub async fn range_stream_open(
        &mut self,
        r: RangeRequest,
        token: Option<&str>,
    ) -> Result<tonic::Streaming<RangeStreamResponse>, RpcError> {
        let mut req = tonic::Request::new(r);
        if let Some(t) = token {
            req.metadata_mut()
                .insert("token", t.parse().expect("token is ASCII"));
        }
        answer(self.kv.range_stream(req).await)
    }

    /// A whole RangeStream: every part received, then the error that ended it, if any.
    pub async fn range_stream(&mut self, r: RangeRequest, token: Option<&str>) -> StreamAnswer {
        let mut answer = StreamAnswer::default();
        let mut stream = match self.range_stream_open(r, token).await {
            Ok(s) => s,
            Err(e) => {
                answer.error = Some(e);
                return answer;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(part)) => answer.parts.push(part.range_response.unwrap_or_default()),
                Ok(None) => return answer,
                Err(e) => {
                    answer.error = Some(e.into());
                    return answer;
                }
            }
        }
    }

    pub async fn put(&mut self, r: PutRequest) -> Result<PutResponse, RpcError> {
        answer(self.kv.put(r).await)
    }

    pub async fn delete_range(
        &mut self,
        r: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, RpcError> {
        answer(self.kv.delete_range(r).await)
    }

    pub async fn txn(&mut self, r: TxnRequest) -> Result<TxnResponse, RpcError> {
        answer(self.kv.txn(r).await)
    }

    pub async fn compact(&mut self, r: CompactionRequest) -> Result<CompactionResponse, RpcError> {
        answer(self.kv.compact(r).await)
    }

    /// Sends any of the four request kinds to its RPC.
    pub async fn call(&mut self, r: Request) -> Result<Response, RpcError> {
        Ok(match r {
            Request::RequestRange(r) => Response::ResponseRange(self.range(r).await?),
            Request::RequestPut(r) => Response::ResponsePut(self.put(r).await?),
            Request::RequestDeleteRange(r) => {
                Response::ResponseDeleteRange(self.delete_range(r).await?)
            }
            Request::RequestTxn(r) => Response::ResponseTxn(self.txn(r).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use api::etcdserverpb::range_request::{SortOrder, SortTarget};
    use api::etcdserverpb::{Compare, ResponseHeader, ResponseOp};
    use api::mvccpb::KeyValue;
    use etcd_client::proto::{PbRangeResponse, PbTxnRequest, PbTxnResponse};

    fn kv(n: i64) -> KeyValue {
        KeyValue {
            key: format!("k{n}").into_bytes(),
            create_revision: n + 1,
            mod_revision: n + 2,
            version: n + 3,
            value: format!("v{n}").into_bytes(),
            lease: n + 4,
        }
    }

    fn header() -> ResponseHeader {
        ResponseHeader {
            cluster_id: 11,
            member_id: 12,
            revision: 13,
            raft_term: 14,
        }
    }

    /// Every field set to a distinct non-default value survives a trip through the
    /// `etcd-client` crate's own generated types: [`convert`] between the two is faithful.
    #[test]
    fn converts_to_and_from_etcd_client_types_field_for_field() {
        let range = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 3,
            revision: 4,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Value as i32,
            serializable: true,
            keys_only: true,
            count_only: true,
            min_mod_revision: 10,
            max_mod_revision: 11,
            min_create_revision: 12,
            max_create_revision: 13,
        };
        let put = PutRequest {
            key: b"p".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
        };
        let del = DeleteRangeRequest {
            key: b"d".to_vec(),
            range_end: b"e".to_vec(),
            prev_kv: true,
        };
        let cmp = |target: CompareTarget, tu| Compare {
            result: CompareResult::NotEqual as i32,
            target: target as i32,
            key: b"c".to_vec(),
            target_union: Some(tu),
            range_end: b"z".to_vec(),
        };
        let inner = TxnRequest {
            compare: vec![
                cmp(CompareTarget::Version, TargetUnion::Version(1)),
                cmp(CompareTarget::Create, TargetUnion::CreateRevision(2)),
                cmp(CompareTarget::Mod, TargetUnion::ModRevision(3)),
                cmp(CompareTarget::Value, TargetUnion::Value(b"x".to_vec())),
                cmp(CompareTarget::Lease, TargetUnion::Lease(5)),
            ],
            success: vec![request_op(Request::RequestPut(put.clone()))],
            failure: vec![request_op(Request::RequestDeleteRange(del.clone()))],
        };
        let txn = TxnRequest {
            compare: inner.compare.clone(),
            success: vec![
                request_op(Request::RequestRange(range)),
                request_op(Request::RequestPut(put)),
                request_op(Request::RequestDeleteRange(del)),
            ],
            failure: vec![request_op(Request::RequestTxn(inner))],
        };
        let theirs: PbTxnRequest = convert(&txn);
        let dbg = format!("{theirs:?}");
        for needle in [
            "range_end: [98]",
            "limit: 3",
            "revision: 4",
            "sort_order: Descend",
            "sort_target: Value",
            "serializable: true",
            "keys_only: true",
            "count_only: true",
            "min_mod_revision: 10",
            "max_mod_revision: 11",
            "min_create_revision: 12",
            "max_create_revision: 13",
            "lease: 7",
            "prev_kv: true",
            "ignore_value: true",
            "ignore_lease: true",
            "RequestRange",
            "RequestPut",
            "RequestDeleteRange",
            "RequestTxn",
            "Version(1)",
            "CreateRevision(2)",
            "ModRevision(3)",
            "Value([120])",
            "Lease(5)",
            "range_end: [122]",
            "result: NotEqual",
            "target: Version",
            "target: Create",
            "target: Mod",
            "target: Value",
            "target: Lease",
        ] {
            assert!(dbg.contains(needle), "{needle} missing in {dbg}");
        }
        let back: TxnRequest = convert(&theirs);
        assert_eq!(back, txn);

        let resp = TxnResponse {
            header: Some(header()),
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(Response::ResponseRange(RangeResponse {
                        header: Some(header()),
                        kvs: vec![kv(1), kv(2)],
                        more: true,
                        count: 9,
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponsePut(PutResponse {
                        header: Some(header()),
                        prev_kv: Some(kv(3)),
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponseDeleteRange(DeleteRangeResponse {
                        header: Some(header()),
                        deleted: 2,
                        prev_kvs: vec![kv(4)],
                    })),
                },
            ],
        };
        let theirs: PbTxnResponse = convert(&resp);
        let dbg = format!("{theirs:?}");
        for needle in [
            "cluster_id: 11",
            "member_id: 12",
            "revision: 13",
            "raft_term: 14",
            "succeeded: true",
            "more: true",
            "count: 9",
            "deleted: 2",
            "create_revision: 2",
            "mod_revision: 3",
            "version: 4",
            "lease: 5",
            "ResponseRange",
            "ResponsePut",
            "ResponseDeleteRange",
        ] {
            assert!(dbg.contains(needle), "{needle} missing in {dbg}");
        }
        let back: TxnResponse = convert(&theirs);
        assert_eq!(back, resp);
        let r: PbRangeResponse = convert(&RangeResponse {
            header: None,
            kvs: vec![kv(1)],
            more: false,
            count: 1,
        });
        assert!(format!("{r:?}").contains("value: [118, 49]"));
        assert_eq!(
            header_revision(&Response::ResponseRange(RangeResponse {
                header: Some(header()),
                ..Default::default()
            })),
            Some(13)
        );
    }
}
