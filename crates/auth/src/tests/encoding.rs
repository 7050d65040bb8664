//! The stored bytes are etcd's.
//!
//! The golden values were read from a real data dir: Debian's etcd 3.4.23 was started empty, then
//! driven with
//!
//! ```text
//! etcdctl role add r1
//! etcdctl role grant-permission r1 read k1
//! etcdctl role grant-permission r1 readwrite --prefix p/
//! etcdctl role grant-permission r1 write a z
//! etcdctl role grant-permission r1 read --from-key f
//! etcdctl user add alice:pw1
//! etcdctl user add bob --no-password
//! etcdctl user grant-role alice r1
//! etcdctl user add root:rootpw
//! etcdctl user grant-role root root
//! etcdctl auth enable
//! etcdctl --user root:rootpw snapshot save snap.db
//! ```
//!
//! and the `auth`, `authUsers` and `authRoles` buckets of `snap.db` were dumped with a small
//! bbolt page reader. The bcrypt hashes are etcd's (random salts); replaying the same requests
//! with those hashes as `hashed_password` must give the same bytes.

use api::authpb::permission::Type as PermType;
use api::etcdserverpb::AuthUserAddRequest;
use backend::{Bucket, Reader};
use base64::Engine;

use super::*;
use crate::password::check_password;

const ALICE_HASH: &str = "$2a$10$Hp/3gam0z43mhZpC442.punSSQEW293TfG3/REU1xVbLpBc1XMuqO";
const ROOT_HASH: &str = "$2a$10$fhVxCzbUONh9tgme4mxg0eV.2Twds.gZJt1RPP2S6HuAO5o1ZTIVy";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn add_with_hash(fx: &mut Fx, name: &str, hash: &str) {
    let req = AuthUserAddRequest {
        name: name.into(),
        hashed_password: base64::engine::general_purpose::STANDARD.encode(hash),
        ..Default::default()
    };
    fx.apply(|s, t| s.user_add(t, &req)).unwrap();
}

#[test]
fn auth_buckets_hold_exactly_what_etcd_3_4_writes() {
    let mut fx = Fx::new();
    fx.role_add("r1");
    fx.grant("r1", PermType::Read, b"k1", b"");
    fx.grant("r1", PermType::Readwrite, b"p/", b"p0");
    fx.grant("r1", PermType::Write, b"a", b"z");
    fx.grant("r1", PermType::Read, b"f", b"\0");
    add_with_hash(&mut fx, "alice", ALICE_HASH);
    fx.user_add_no_password("bob");
    fx.grant_role("alice", "r1");
    add_with_hash(&mut fx, "root", ROOT_HASH);
    fx.grant_role("root", "root");
    fx.apply(|s, t| s.auth_enable(t)).unwrap();

    let read = fx.be.read().unwrap();
    let get = |b: Bucket, k: &str| read.get(b, k.as_bytes()).unwrap().unwrap();
    assert_eq!(get(Bucket::Auth, "authEnabled"), hex("01"));
    assert_eq!(get(Bucket::Auth, "authRevision"), hex("000000000000000b"));
    assert_eq!(
        get(Bucket::AuthRoles, "r1"),
        hex("0a027231120808011201611a017a12061201661a0100120412026b31120a08021202702f1a027030")
    );
    assert_eq!(
        get(Bucket::AuthUsers, "alice"),
        hex("0a05616c696365123c2432612431302448702f3367616d307a34336d685a70433434322e70756e5353514557323933546647332f524555317856624c70426331584d75714f1a0272312200")
    );
    assert_eq!(get(Bucket::AuthUsers, "bob"), hex("0a03626f6222020801"));
    assert_eq!(
        get(Bucket::AuthUsers, "root"),
        hex("0a04726f6f74123c2432612431302466685678437a62554f4e683974676d65346d78673065562e32547764732e675a4a74315250503253364875414f356f315a544956791a04726f6f742200")
    );
    // Nothing else in the three buckets.
    for (bucket, n) in [
        (Bucket::Auth, 2),
        (Bucket::AuthUsers, 3),
        (Bucket::AuthRoles, 1),
    ] {
        assert_eq!(
            read.range(bucket, &[], None, 0).unwrap().len(),
            n,
            "{bucket}"
        );
    }
}

#[test]
fn an_etcd_data_dirs_auth_records_load_and_its_hashes_verify() {
    let fx = Fx::new();
    let mut txn = fx.be.write().unwrap();
    txn.put(Bucket::Auth, b"authEnabled", &hex("01")).unwrap();
    txn.put(Bucket::Auth, b"authRevision", &hex("000000000000000b"))
        .unwrap();
    txn.put(
        Bucket::AuthRoles,
        b"r1",
        &hex("0a027231120808011201611a017a12061201661a0100120412026b31120a08021202702f1a027030"),
    )
    .unwrap();
    txn.put(Bucket::AuthUsers, b"alice", &hex("0a05616c696365123c2432612431302448702f3367616d307a34336d685a70433434322e70756e5353514557323933546647332f524555317856624c70426331584d75714f1a0272312200")).unwrap();
    txn.put(Bucket::AuthUsers, b"bob", &hex("0a03626f6222020801"))
        .unwrap();
    txn.commit().unwrap();
    let s = AuthStore::load_from(&fx.be.read().unwrap(), TokenProvider::nop(), COST).unwrap();
    assert!(s.is_enabled());
    assert_eq!(s.revision(), 11);
    assert!(check_password(&s.user("alice").unwrap().password, "pw1"));
    assert!(!check_password(&s.user("alice").unwrap().password, "pw2"));
    assert!(s.user("bob").unwrap().options.unwrap().no_password);
    let alice = AuthInfo {
        username: "alice".into(),
        revision: 11,
    };
    // The permissions etcd showed for r1: read k1, [f, +inf), p/*; write [a, z), p/*.
    s.is_range_permitted(&alice, b"k2", b"").unwrap();
    s.is_range_permitted(&alice, b"p/", b"p0").unwrap();
    s.is_put_permitted(&alice, b"k1").unwrap();
    assert!(s.is_put_permitted(&alice, b"zz").is_err());
    assert!(s.is_range_permitted(&alice, b"b", b"").is_err());
}
