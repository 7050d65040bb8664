//! Response headers, as etcd's v3rpc `header`: cluster id, member id, Raft term, and the store's
//! revision unless the response carries its own.

use api::etcdserverpb::ResponseHeader;

use crate::{KvGetter, RaftStatusGetter};

/// A response header at `revision` (0: the store's current revision).
pub fn header<S: RaftStatusGetter + KvGetter + ?Sized>(
    s: &S,
    revision: i64,
) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: s.cluster_id(),
        member_id: s.member_id(),
        revision: if revision == 0 {
            s.kv().rev()
        } else {
            revision
        },
        raft_term: s.term(),
    })
}

/// Fills the member fields of a header the applier produced, keeping its revision.
pub(crate) fn fill<S: RaftStatusGetter + KvGetter + ?Sized>(s: &S, h: &mut Option<ResponseHeader>) {
    let rev = h.as_ref().map(|h| h.revision).unwrap_or(0);
    *h = header(s, rev);
}
