//! `--namespace`: every key a client sends gets the prefix, every key sent back loses it, as etcd's
//! `client/v3/namespace` wrappers do for its proxy.
//!
//! The client's key space maps onto `[prefix, prefix_end)` of the cluster's: a key `k` becomes
//! `prefix + k`, a range end `e` becomes `prefix + e`, and the two "open" ends (`"\0"`: every key
//! from `key` on, or every key when `key` is `"\0"` too) become the end of the prefix. Every range a
//! client can name therefore lies inside the prefix, so a client never sees or touches a key outside
//! its namespace; the only keys that come back unasked are those a lease holds (`TimeToLive` with
//! `keys`), and those outside the prefix are dropped there. Unlike etcd's proxy, which applies the
//! namespace to KV, Watch and Lease only, Hearth's also prefixes lock and election names and the
//! keys they return, so a lock taken through a namespaced proxy cannot collide with one outside it.
//!
//! Empty keys are refused before they are prefixed (`etcdserver: key is not provided`), as etcd's
//! wrappers do: with a prefix an empty key would otherwise name the prefix itself.

use api::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use api::mvccpb::{Event, KeyValue};

/// A key prefix; the empty prefix is the identity.
#[derive(Clone, Debug, Default)]
pub struct Namespace {
    prefix: Vec<u8>,
    /// The first key after every key with the prefix (`[0]` when there is none).
    end: Vec<u8>,
}

impl Namespace {
    pub fn new(prefix: &[u8]) -> Namespace {
        Namespace {
            prefix: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty()
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The cluster range of the whole namespace (`["\0", "\0")` without a prefix).
    pub fn whole(&self) -> (Vec<u8>, Vec<u8>) {
        if self.prefix.is_empty() {
            (vec![0], vec![0])
        } else {
            (self.prefix.clone(), self.end.clone())
        }
    }

    /// A client key in the cluster's key space.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// A client `(key, range_end)` in the cluster's key space.
    pub fn interval(&self, key: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        if self.prefix.is_empty() {
            return (key.to_vec(), end.to_vec());
        }
        let k = self.key(key);
        let e = match end {
            [] => Vec::new(),
            [0] => self.end.clone(),
            _ => self.key(end),
        };
        (k, e)
    }

    /// A cluster key back in the client's key space; None if it lies outside the namespace.
    pub fn strip<'a>(&self, key: &'a [u8]) -> Option<&'a [u8]> {
        key.strip_prefix(self.prefix.as_slice())
    }

    fn strip_kv(&self, kv: &mut KeyValue) {
        if self.prefix.is_empty() {
            return;
        }
        let n = if kv.key.starts_with(&self.prefix) {
            self.prefix.len()
        } else {
            0
        };
        kv.key.drain(..n);
    }

    pub fn range_request(&self, r: &mut RangeRequest) {
        (r.key, r.range_end) = self.interval(&r.key, &r.range_end);
    }

    pub fn put_request(&self, r: &mut PutRequest) {
        r.key = self.key(&r.key);
    }

    pub fn delete_request(&self, r: &mut DeleteRangeRequest) {
        (r.key, r.range_end) = self.interval(&r.key, &r.range_end);
    }

    fn compare(&self, c: &mut Compare) {
        (c.key, c.range_end) = self.interval(&c.key, &c.range_end);
    }

    fn request_op(&self, op: &mut RequestOp) {
        match &mut op.request {
            Some(request_op::Request::RequestRange(r)) => self.range_request(r),
            Some(request_op::Request::RequestPut(r)) => self.put_request(r),
            Some(request_op::Request::RequestDeleteRange(r)) => self.delete_request(r),
            Some(request_op::Request::RequestTxn(t)) => self.txn_request(t),
            None => {}
        }
    }

    pub fn txn_request(&self, t: &mut TxnRequest) {
        if self.prefix.is_empty() {
            return;
        }
        t.compare.iter_mut().for_each(|c| self.compare(c));
        t.success.iter_mut().for_each(|o| self.request_op(o));
        t.failure.iter_mut().for_each(|o| self.request_op(o));
    }

    pub fn range_response(&self, r: &mut RangeResponse) {
        r.kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    pub fn put_response(&self, r: &mut PutResponse) {
        if let Some(kv) = &mut r.prev_kv {
            self.strip_kv(kv);
        }
    }

    pub fn delete_response(&self, r: &mut DeleteRangeResponse) {
        r.prev_kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    fn response_op(&self, op: &mut ResponseOp) {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => self.range_response(r),
            Some(response_op::Response::ResponsePut(r)) => self.put_response(r),
            Some(response_op::Response::ResponseDeleteRange(r)) => self.delete_response(r),
            Some(response_op::Response::ResponseTxn(t)) => self.txn_response(t),
            None => {}
        }
    }

    pub fn txn_response(&self, t: &mut TxnResponse) {
        if self.prefix.is_empty() {
            return;
        }
        t.responses.iter_mut().for_each(|o| self.response_op(o));
    }

    /// A watch event back in the client's key space.
    pub fn event(&self, ev: &mut Event) {
        if let Some(kv) = &mut ev.kv {
            self.strip_kv(kv);
        }
        if let Some(kv) = &mut ev.prev_kv {
            self.strip_kv(kv);
        }
    }

    /// The keys a lease holds, as the client sees them: those outside the namespace are left out.
    pub fn lease_keys(&self, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        if self.prefix.is_empty() {
            return keys;
        }
        keys.into_iter()
            .filter_map(|k| self.strip(&k).map(<[u8]>::to_vec))
            .collect()
    }

    /// A key that names something in the cluster (lock owner key, election leader key) back in the
    /// client's key space.
    pub fn strip_owned(&self, key: &mut Vec<u8>) {
        if !self.prefix.is_empty() && key.starts_with(&self.prefix) {
            key.drain(..self.prefix.len());
        }
    }

    pub fn kv(&self, kv: &mut KeyValue) {
        self.strip_kv(kv);
    }
}

/// The first key after every key that starts with `prefix`: `prefix` with its last byte below 0xff
/// incremented and what follows dropped; `[0]` (the end of the key space) if every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_stay_inside_the_prefix() {
        let ns = Namespace::new(b"app/");
        assert_eq!(ns.interval(b"k", b""), (b"app/k".to_vec(), Vec::new()));
        assert_eq!(
            ns.interval(b"a", b"c"),
            (b"app/a".to_vec(), b"app/c".to_vec())
        );
        // From-key and all-keys forms end at the end of the prefix.
        assert_eq!(
            ns.interval(b"k", b"\0"),
            (b"app/k".to_vec(), b"app0".to_vec())
        );
        assert_eq!(
            ns.interval(b"\0", b"\0"),
            (b"app/\0".to_vec(), b"app0".to_vec())
        );
        assert_eq!(
            ns.interval(b"", b"\0"),
            (b"app/".to_vec(), b"app0".to_vec())
        );
        assert_eq!(
            Namespace::new(b"").interval(b"a", b"\0"),
            (b"a".to_vec(), b"\0".to_vec())
        );
    }

    #[test]
    fn prefix_end_carries_and_saturates() {
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
    }

    #[test]
    fn txn_compares_and_nested_ops_are_prefixed_and_answers_stripped() {
        let ns = Namespace::new(b"p/");
        let mut t = TxnRequest {
            compare: vec![Compare {
                key: b"c".to_vec(),
                range_end: b"\0".to_vec(),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    failure: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: b"x".to_vec(),
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        ns.txn_request(&mut t);
        assert_eq!(t.compare[0].key, b"p/c");
        assert_eq!(t.compare[0].range_end, b"p0");
        let Some(request_op::Request::RequestTxn(inner)) = &t.success[0].request else {
            panic!("nested txn kept");
        };
        let Some(request_op::Request::RequestPut(p)) = &inner.failure[0].request else {
            panic!("nested put kept");
        };
        assert_eq!(p.key, b"p/x");

        let mut resp = TxnResponse {
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    kvs: vec![KeyValue {
                        key: b"p/a".to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        ns.txn_response(&mut resp);
        let Some(response_op::Response::ResponseRange(r)) = &resp.responses[0].response else {
            panic!("range kept");
        };
        assert_eq!(r.kvs[0].key, b"a");
    }

    #[test]
    fn lease_keys_outside_the_namespace_are_hidden() {
        let ns = Namespace::new(b"p/");
        assert_eq!(
            ns.lease_keys(vec![b"p/a".to_vec(), b"q/b".to_vec(), b"p".to_vec()]),
            vec![b"a".to_vec()]
        );
    }
}
