//! The subset of etcd's v3 KV protocol (`etcdserverpb.KV`) the tests speak, as plain prost
//! messages, plus a raw unary client for it.
//!
//! The `etcd-client` crate's builders cannot express every request (for example it rewrites
//! `sort_target=KEY, sort_order=ASCEND` into `sort_order=NONE`), and its request types are not
//! nameable, so the randomized and edge-case tests build requests from these types and send
//! them as they are. The unit test `matches_etcd_client_schema` checks the field numbers
//! against the `etcd-client` crate's generated code by round-tripping messages.

use prost::Message;
use std::fmt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

#[derive(Clone, PartialEq, Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// `RangeRequest.SortOrder`.
pub mod sort_order {
    pub const NONE: i32 = 0;
    pub const ASCEND: i32 = 1;
    pub const DESCEND: i32 = 2;
}

/// `RangeRequest.SortTarget`.
pub mod sort_target {
    pub const KEY: i32 = 0;
    pub const VERSION: i32 = 1;
    pub const CREATE: i32 = 2;
    pub const MOD: i32 = 3;
    pub const VALUE: i32 = 4;
}

#[derive(Clone, PartialEq, Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int64, tag = "4")]
    pub revision: i64,
    #[prost(int32, tag = "5")]
    pub sort_order: i32,
    #[prost(int32, tag = "6")]
    pub sort_target: i32,
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    #[prost(bool, tag = "8")]
    pub keys_only: bool,
    #[prost(bool, tag = "9")]
    pub count_only: bool,
    #[prost(int64, tag = "10")]
    pub min_mod_revision: i64,
    #[prost(int64, tag = "11")]
    pub max_mod_revision: i64,
    #[prost(int64, tag = "12")]
    pub min_create_revision: i64,
    #[prost(int64, tag = "13")]
    pub max_create_revision: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, optional, tag = "2")]
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeleteRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(bool, tag = "3")]
    pub prev_kv: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeleteRangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub deleted: i64,
    #[prost(message, repeated, tag = "3")]
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RequestOp {
    #[prost(oneof = "Request", tags = "1, 2, 3, 4")]
    pub request: Option<Request>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    #[prost(message, tag = "1")]
    Range(RangeRequest),
    #[prost(message, tag = "2")]
    Put(PutRequest),
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeRequest),
    #[prost(message, tag = "4")]
    Txn(TxnRequest),
}

#[derive(Clone, PartialEq, Message)]
pub struct ResponseOp {
    #[prost(oneof = "Response", tags = "1, 2, 3, 4")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Response {
    #[prost(message, tag = "1")]
    Range(RangeResponse),
    #[prost(message, tag = "2")]
    Put(PutResponse),
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeResponse),
    #[prost(message, tag = "4")]
    Txn(TxnResponse),
}

/// `Compare.CompareResult`.
pub mod compare_result {
    pub const EQUAL: i32 = 0;
    pub const GREATER: i32 = 1;
    pub const LESS: i32 = 2;
    pub const NOT_EQUAL: i32 = 3;
}

/// `Compare.CompareTarget`.
pub mod compare_target {
    pub const VERSION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const MOD: i32 = 2;
    pub const VALUE: i32 = 3;
    pub const LEASE: i32 = 4;
}

#[derive(Clone, PartialEq, Message)]
pub struct Compare {
    #[prost(int32, tag = "1")]
    pub result: i32,
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(oneof = "TargetUnion", tags = "4, 5, 6, 7, 8")]
    pub target_union: Option<TargetUnion>,
    #[prost(bytes = "vec", tag = "64")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TargetUnion {
    #[prost(int64, tag = "4")]
    Version(i64),
    #[prost(int64, tag = "5")]
    CreateRevision(i64),
    #[prost(int64, tag = "6")]
    ModRevision(i64),
    #[prost(bytes = "vec", tag = "7")]
    Value(Vec<u8>),
    #[prost(int64, tag = "8")]
    Lease(i64),
}

#[derive(Clone, PartialEq, Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CompactionRequest {
    #[prost(int64, tag = "1")]
    pub revision: i64,
    #[prost(bool, tag = "2")]
    pub physical: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct CompactionResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

impl RequestOp {
    pub fn new(request: Request) -> Self {
        RequestOp {
            request: Some(request),
        }
    }
}

/// Converts between two protobuf messages with the same schema (for example an `etcd-client`
/// response's inner message into the matching type here), by encoding and decoding.
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

/// A raw unary client for `etcdserverpb.KV`: requests go out exactly as built.
#[derive(Clone)]
pub struct RawKv {
    grpc: tonic::client::Grpc<Channel>,
}

impl RawKv {
    pub async fn connect(endpoint: &str) -> Result<RawKv, tonic::transport::Error> {
        let channel = Channel::from_shared(endpoint.to_string())
            .expect("valid endpoint")
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(20))
            .connect()
            .await?;
        // The server's limits are under test: the client imposes none of its own.
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(RawKv { grpc })
    }

    async fn unary<Q, R>(&mut self, path: &'static str, req: Q) -> Result<R, RpcError>
    where
        Q: Message + Send + Sync + 'static,
        R: Message + Default + Send + Sync + 'static,
    {
        self.unary_request(path, tonic::Request::new(req)).await
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
        self.unary_request("/etcdserverpb.KV/Range", req).await
    }

    async fn unary_request<Q, R>(
        &mut self,
        path: &'static str,
        req: tonic::Request<Q>,
    ) -> Result<R, RpcError>
    where
        Q: Message + Send + Sync + 'static,
        R: Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| RpcError::new(tonic::Code::Unknown, format!("client not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        self.grpc
            .unary(req, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(RpcError::from)
    }

    pub async fn range(&mut self, r: RangeRequest) -> Result<RangeResponse, RpcError> {
        self.unary("/etcdserverpb.KV/Range", r).await
    }
    pub async fn put(&mut self, r: PutRequest) -> Result<PutResponse, RpcError> {
        self.unary("/etcdserverpb.KV/Put", r).await
    }
    pub async fn delete_range(
        &mut self,
        r: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, RpcError> {
        self.unary("/etcdserverpb.KV/DeleteRange", r).await
    }
    pub async fn txn(&mut self, r: TxnRequest) -> Result<TxnResponse, RpcError> {
        self.unary("/etcdserverpb.KV/Txn", r).await
    }
    pub async fn compact(&mut self, r: CompactionRequest) -> Result<CompactionResponse, RpcError> {
        self.unary("/etcdserverpb.KV/Compact", r).await
    }

    /// Sends any of the four request kinds to its RPC.
    pub async fn call(&mut self, r: Request) -> Result<Response, RpcError> {
        Ok(match r {
            Request::Range(r) => Response::Range(self.range(r).await?),
            Request::Put(r) => Response::Put(self.put(r).await?),
            Request::DeleteRange(r) => Response::DeleteRange(self.delete_range(r).await?),
            Request::Txn(r) => Response::Txn(self.txn(r).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    /// `etcd-client` crate's own generated types: the field numbers here are etcd's.
    #[test]
    fn matches_etcd_client_schema() {
        let range = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 3,
            revision: 4,
            sort_order: 2,
            sort_target: 4,
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
        let cmp = |target, tu| Compare {
            result: 3,
            target,
            key: b"c".to_vec(),
            target_union: Some(tu),
            range_end: b"z".to_vec(),
        };
        let inner = TxnRequest {
            compare: vec![
                cmp(0, TargetUnion::Version(1)),
                cmp(1, TargetUnion::CreateRevision(2)),
                cmp(2, TargetUnion::ModRevision(3)),
                cmp(3, TargetUnion::Value(b"x".to_vec())),
                cmp(4, TargetUnion::Lease(5)),
            ],
            success: vec![RequestOp::new(Request::Put(put.clone()))],
            failure: vec![RequestOp::new(Request::DeleteRange(del.clone()))],
        };
        let txn = TxnRequest {
            compare: inner.compare.clone(),
            success: vec![
                RequestOp::new(Request::Range(range)),
                RequestOp::new(Request::Put(put)),
                RequestOp::new(Request::DeleteRange(del)),
            ],
            failure: vec![RequestOp::new(Request::Txn(inner))],
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
                    response: Some(Response::Range(RangeResponse {
                        header: Some(header()),
                        kvs: vec![kv(1), kv(2)],
                        more: true,
                        count: 9,
                    })),
                },
                ResponseOp {
                    response: Some(Response::Put(PutResponse {
                        header: Some(header()),
                        prev_kv: Some(kv(3)),
                    })),
                },
                ResponseOp {
                    response: Some(Response::DeleteRange(DeleteRangeResponse {
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
    }
}
