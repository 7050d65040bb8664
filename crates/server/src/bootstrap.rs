//! How a member without a WAL starts, as etcd's `NewServer` decides it (a member with a WAL restarts from it
//! and ignores the `--initial-cluster*` flags, as etcd does):
//!
//! - `--initial-cluster-state new`: the cluster is `--initial-cluster`; member and cluster ids are derived
//!   from it and `--initial-cluster-token` (`ids`), the same on every initial member.
//! - `--initial-cluster-state existing`: the member was added with `MemberAdd` and joins a running
//!   cluster. It asks the other members listed in `--initial-cluster` for the cluster (its id and members),
//!   checks that the list matches `--initial-cluster` (etcd's `ValidateClusterAndAssignIDs`), and takes its
//!   own id from the member with its peer URLs.

use std::time::Duration;

use api::hearthraftpb::MembersResponse;

use crate::config::{ClusterState, Config, InitialMember};
use membership::Member;
use raftnode::{Bootstrap, WalMeta};

/// How long one peer gets to answer a join request, and how many rounds over all peers are made.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);
const JOIN_ROUNDS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// etcd's text.
    #[error(
        "cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs"
    )]
    NoPeerAnswered,
    #[error("error validating peerURLs {cluster}: {reason}")]
    Mismatch { cluster: String, reason: String },
}

/// How the log starts, and the peers to stream to from the start (the members of a cluster being joined;
/// a new cluster's members become peers as its first entries are applied).
pub struct Prepared {
    pub boot: Bootstrap,
    pub peers: Vec<Member>,
    /// Joining as a learner (as the cluster says).
    pub learner: bool,
}

/// `tls` dials `https` peers (a joining member asks them for the cluster).
pub async fn prepare(
    cfg: &Config,
    tls: Option<&transport::ClientTls>,
) -> Result<Prepared, BootstrapError> {
    let initial = cfg.initial_members()?;
    match cfg.initial_cluster_state {
        ClusterState::New => new_cluster(cfg, &initial),
        ClusterState::Existing => join(cfg, &initial, tls).await,
    }
}

/// The log of a member of a new cluster made of `initial`.
pub fn new_cluster(cfg: &Config, initial: &[InitialMember]) -> Result<Prepared, BootstrapError> {
    let ids: Vec<u64> = initial.iter().map(|m| m.id).collect();
    let me = initial
        .iter()
        .find(|m| m.name == cfg.name)
        .map(|m| m.id)
        .ok_or_else(|| crate::config::ConfigError::NameNotInCluster {
            name: cfg.name.clone(),
        })?;
    let members = initial
        .iter()
        .map(|m| {
            let mut peer_urls = m.peer_urls.clone();
            peer_urls.sort();
            Member {
                id: m.id,
                name: m.name.clone(),
                peer_urls,
                client_urls: Vec::new(),
                is_learner: false,
            }
        })
        .collect();
    Ok(Prepared {
        boot: Bootstrap::NewCluster {
            meta: WalMeta {
                node_id: me,
                cluster_id: crate::ids::cluster_id(&ids),
                voters: ids,
            },
            members,
        },
        peers: Vec::new(),
        learner: false,
    })
}

async fn join(
    cfg: &Config,
    initial: &[InitialMember],
    tls: Option<&transport::ClientTls>,
) -> Result<Prepared, BootstrapError> {
    let mine: Vec<String> = initial
        .iter()
        .filter(|m| m.name == cfg.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let urls: Vec<String> = initial
        .iter()
        .filter(|m| m.name != cfg.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let remote = fetch_cluster(&urls, tls).await?;
    let existing: Vec<Member> = remote.members.iter().map(Member::from_pb).collect();
    let me = assign_id(cfg, initial, &existing)?;
    let learner = existing.iter().any(|m| m.id == me && m.is_learner);
    tracing::info!(
        member_id = format!("{me:x}"),
        cluster_id = format!("{:x}", remote.cluster_id),
        peer_urls = ?mine,
        "joining an existing cluster"
    );
    Ok(Prepared {
        boot: Bootstrap::Join {
            meta: WalMeta {
                node_id: me,
                cluster_id: remote.cluster_id,
                voters: Vec::new(),
            },
        },
        peers: existing.into_iter().filter(|m| m.id != me).collect(),
        learner,
    })
}

/// The cluster as the first of `urls` to answer knows it.
async fn fetch_cluster(
    urls: &[String],
    tls: Option<&transport::ClientTls>,
) -> Result<MembersResponse, BootstrapError> {
    for round in 0..JOIN_ROUNDS {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for url in urls {
            match rafthttp::discovery::members(url, tls, JOIN_TIMEOUT).await {
                Ok(r) => return Ok(r),
                Err(e) => tracing::warn!(url = %url, "could not get cluster information: {e}"),
            }
        }
    }
    Err(BootstrapError::NoPeerAnswered)
}

/// etcd's `ValidateClusterAndAssignIDs`: the running cluster and `--initial-cluster` must list the same
/// members (by peer URLs); this member's id is the one the cluster gave the member with its URLs.
fn assign_id(
    cfg: &Config,
    initial: &[InitialMember],
    existing: &[Member],
) -> Result<u64, BootstrapError> {
    let mismatch = |reason: String| BootstrapError::Mismatch {
        cluster: cfg.initial_cluster.clone(),
        reason,
    };
    if existing.len() != initial.len() {
        return Err(mismatch("member count is unequal".into()));
    }
    let sorted = |urls: &[String]| {
        let mut u = urls.to_vec();
        u.sort();
        u
    };
    let mut me = None;
    for e in existing {
        let found = initial
            .iter()
            .find(|l| sorted(&l.peer_urls) == sorted(&e.peer_urls));
        match found {
            None => {
                return Err(mismatch(format!(
                    "PeerURLs: no match found for existing member ({:x}, {:?})",
                    e.id, e.peer_urls
                )))
            }
            Some(l) if l.name == cfg.name => me = Some(e.id),
            Some(_) => {}
        }
    }
    me.ok_or_else(|| {
        mismatch(format!(
            "no member of the cluster has the peer URLs of {}",
            cfg.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, cluster: &str) -> Config {
        Config {
            name: name.into(),
            initial_cluster: cluster.into(),
            ..Config::default()
        }
    }

    fn existing(id: u64, url: &str) -> Member {
        Member {
            id,
            peer_urls: vec![url.into()],
            ..Default::default()
        }
    }

    #[test]
    fn joining_member_takes_the_id_the_cluster_gave_its_urls() {
        let c = cfg("n4", "a=http://h:1,n4=http://h:4");
        let initial = c.initial_members().unwrap();
        let e = [existing(10, "http://h:1"), existing(40, "http://h:4")];
        assert_eq!(assign_id(&c, &initial, &e).unwrap(), 40);
    }

    #[test]
    fn joining_member_must_list_the_cluster_as_it_is() {
        let c = cfg("n4", "a=http://h:1,n4=http://h:4");
        let initial = c.initial_members().unwrap();
        let short = [existing(10, "http://h:1")];
        let e = assign_id(&c, &initial, &short).unwrap_err();
        assert!(e.to_string().contains("member count is unequal"), "{e}");
        let other = [existing(10, "http://h:1"), existing(40, "http://h:5")];
        let e = assign_id(&c, &initial, &other).unwrap_err();
        assert!(e.to_string().contains("no match found"), "{e}");
    }

    #[test]
    fn new_cluster_bootstraps_every_initial_member_alike() {
        let cluster = "a=http://h:1,b=http://h:2,c=http://h:3";
        let boot = |name: &str| match new_cluster(
            &cfg(name, cluster),
            &cfg(name, cluster).initial_members().unwrap(),
        )
        .unwrap()
        .boot
        {
            Bootstrap::NewCluster { meta, members } => (meta, members),
            Bootstrap::Join { .. } => unreachable!(),
        };
        let (ma, a) = boot("a");
        let (mb, b) = boot("b");
        assert_eq!(a, b);
        assert_eq!(ma.cluster_id, mb.cluster_id);
        assert_ne!(ma.node_id, mb.node_id);
        assert_eq!(a.len(), 3);
        assert!(a.windows(2).all(|w| w[0].id < w[1].id));
    }
}
