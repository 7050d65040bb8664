//! Member and cluster ids, derived exactly as etcd derives them, so that the same `--initial-cluster` and
//! `--initial-cluster-token` give the same ids on every member (and the same ids etcd itself would pick).

use sha1::{Digest, Sha1};

/// A member's id: the first 8 bytes (big-endian) of SHA-1 over its sorted peer URLs joined, then the token.
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut h = Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(cluster_token.as_bytes());
    first_u64(&h.finalize())
}

/// The id etcd gives a member added at run time (`MemberAdd`): as [`member_id`], with no cluster token
/// and the time of the request (Unix seconds, in decimal) appended, so that re-adding the same URLs later
/// gives a new id.
pub fn added_member_id(peer_urls: &[String], unix_secs: u64) -> u64 {
    member_id(peer_urls, &unix_secs.to_string())
}

/// The cluster id: the first 8 bytes of SHA-1 over the sorted member ids, each 8 bytes big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_ignores_url_order() {
        let a = member_id(&["http://b:2380".into(), "http://a:2380".into()], "tok");
        let b = member_id(&["http://a:2380".into(), "http://b:2380".into()], "tok");
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&["http://a:2380".into(), "http://b:2380".into()], "other")
        );
    }

    #[test]
    fn added_member_id_depends_on_the_time() {
        let urls = ["http://127.0.0.1:44380".to_string()];
        assert_ne!(added_member_id(&urls, 1), added_member_id(&urls, 2));
        assert_eq!(added_member_id(&urls, 7), member_id(&urls, "7"));
    }

    #[test]
    fn matches_etcd_for_its_default_single_member() {
        // `etcd` with no flags: peer URL http://localhost:2380, token etcd-cluster. These are the ids it
        // reports (member 8e9e05c52164694d, cluster cdf818194e3a8c32).
        let m = member_id(&["http://localhost:2380".into()], "etcd-cluster");
        assert_eq!(m, 0x8e9e05c52164694d);
        assert_eq!(cluster_id(&[m]), 0xcdf818194e3a8c32);
    }
}
