use super::*;
use raft::prelude::ConfState;

fn m(id: u64, name: &str, url: &str, learner: bool) -> Member {
    Member {
        id,
        name: name.into(),
        peer_urls: vec![url.into()],
        client_urls: vec![],
        is_learner: learner,
    }
}

fn three() -> RaftCluster {
    RaftCluster::new(
        1,
        99,
        [
            m(1, "a", "http://h:1", false),
            m(2, "b", "http://h:2", false),
            m(3, "c", "http://h:3", false),
        ],
        [],
    )
}

fn apply(c: &RaftCluster, change: &Change) -> Result<(), ServerError> {
    c.validate(change)?;
    let (saved, removed) = c.outcome(change);
    c.commit(saved, removed);
    Ok(())
}

#[test]
fn conf_changes_round_trip_through_raft_encoding() {
    for change in [
        Change::Add(m(9, "", "http://h:9", true)),
        Change::Add(m(9, "n", "http://h:9", false)),
        Change::Promote(9),
        Change::Remove(9),
    ] {
        let cc = change.to_conf_change();
        assert_eq!(Change::from_conf_change(&cc).unwrap(), change);
    }
    let update = Change::UpdatePeerUrls(9, vec!["http://x:1".into()]);
    match update.to_entry(42) {
        ChangeEntry::MemberUpdate(data) => {
            assert_eq!(Change::from_member_update(&data).unwrap(), (42, update));
        }
        other => panic!("an update is not a conf change: {other:?}"),
    }
    match Change::Remove(5).to_entry(7) {
        ChangeEntry::Conf(cc) => assert_eq!((cc.id, cc.node_id), (7, 5)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn conf_change_with_foreign_member_is_refused() {
    let mut cc = Change::Add(m(9, "", "http://h:9", false)).to_conf_change();
    cc.node_id = 10;
    assert!(Change::from_conf_change(&cc).is_err());
    cc.context = vec![0xff, 0xff].into();
    assert!(Change::from_conf_change(&cc).is_err());
}

#[test]
fn validation_gives_etcds_errors() {
    let c = three();
    assert_eq!(
        c.validate(&Change::Add(m(2, "", "http://h:9", false))),
        Err(ServerError::MemberExist)
    );
    assert_eq!(
        c.validate(&Change::Add(m(9, "", "http://h:2", false))),
        Err(ServerError::PeerUrlExist)
    );
    assert_eq!(
        c.validate(&Change::Remove(9)),
        Err(ServerError::MemberNotFound)
    );
    assert_eq!(
        c.validate(&Change::Promote(2)),
        Err(ServerError::MemberNotLearner)
    );
    assert_eq!(
        c.validate(&Change::UpdatePeerUrls(1, vec!["http://h:2".into()])),
        Err(ServerError::PeerUrlExist)
    );
    // A member may keep its own URL.
    c.validate(&Change::UpdatePeerUrls(1, vec!["http://h:1".into()]))
        .unwrap();

    apply(&c, &Change::Add(m(4, "", "http://h:4", true))).unwrap();
    assert_eq!(
        c.validate(&Change::Add(m(5, "", "http://h:5", true))),
        Err(ServerError::TooManyLearners)
    );
    apply(&c, &Change::Promote(4)).unwrap();
    assert!(!c.member(4).unwrap().is_learner);
    apply(&c, &Change::Remove(4)).unwrap();
    assert!(c.is_removed(4));
    // A removed id never comes back, whatever the change.
    for change in [
        Change::Add(m(4, "", "http://h:44", false)),
        Change::Remove(4),
        Change::Promote(4),
    ] {
        assert_eq!(c.validate(&change), Err(ServerError::MemberNotFound));
    }
    assert_eq!(
        c.members().iter().map(|m| m.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[test]
fn readiness_counts_started_voters_like_etcd() {
    let c = three();
    assert!(c.is_ready_to_add_voting_member());
    // An unstarted voter (added, never published its name) counts against the quorum.
    apply(&c, &Change::Add(m(4, "", "http://h:4", false))).unwrap();
    assert!(c.is_ready_to_add_voting_member(), "3 of 5 started");
    apply(&c, &Change::Add(m(5, "", "http://h:5", false))).unwrap();
    assert!(!c.is_ready_to_add_voting_member(), "3 of 6 started");
    assert!(!c.is_ready_to_remove_voting_member(1), "2 of 4 started");
    assert!(c.is_ready_to_remove_voting_member(5), "3 of 4 started");

    let one = RaftCluster::new(1, 9, [m(1, "a", "http://h:1", false)], []);
    assert!(
        one.is_ready_to_add_voting_member(),
        "growing a single member"
    );
    assert!(one.is_ready_to_promote_member());
}

#[test]
fn attributes_apply_only_to_members() {
    let c = three();
    let updated = c
        .with_attributes(2, "bee", &["http://c:2".to_string()])
        .unwrap();
    assert_eq!(updated.name, "bee");
    assert_eq!(updated.peer_urls, ["http://h:2"]);
    assert!(c.with_attributes(9, "x", &[]).is_none());
}

#[test]
fn store_round_trips_members_removed_and_conf_state() {
    let dir = tempfile::tempdir().unwrap();
    let be = backend::Backend::open(dir.path().join("db"), Default::default()).unwrap();
    let cs = ConfState::from((vec![1, 2], vec![3]));
    {
        let mut txn = be.write().unwrap();
        store::save_member(&mut txn, &m(1, "a", "http://h:1", false)).unwrap();
        store::save_member(&mut txn, &m(3, "", "http://h:3", true)).unwrap();
        store::save_member(&mut txn, &m(0xabc, "x", "http://h:4", false)).unwrap();
        store::remove_member(&mut txn, 0xabc).unwrap();
        store::save_conf_state(&mut txn, &cs).unwrap();
        txn.commit().unwrap();
    }
    let st = store::load(&be).unwrap();
    assert_eq!(
        st.members,
        [m(1, "a", "http://h:1", false), m(3, "", "http://h:3", true)]
    );
    assert_eq!(st.removed, [0xabc]);
    assert_eq!(st.conf_state, Some(cs));
    // etcd's key format: the id in lower-case hex.
    let r = be.read().unwrap();
    use backend::Reader as _;
    assert!(r
        .get(backend::Bucket::MembersRemoved, b"abc")
        .unwrap()
        .is_some());
}

#[test]
fn store_reports_corruption_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let be = backend::Backend::open(dir.path().join("db"), Default::default()).unwrap();
    {
        let mut txn = be.write().unwrap();
        txn.put(backend::Bucket::Members, b"not-hex", b"").unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        store::load(&be),
        Err(store::StoreError::Corrupt(_))
    ));
    {
        let mut txn = be.write().unwrap();
        txn.delete(backend::Bucket::Members, b"not-hex").unwrap();
        txn.put(backend::Bucket::Members, b"1", &[0xff, 0xff, 0xff])
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        store::load(&be),
        Err(store::StoreError::Corrupt(_))
    ));
}
