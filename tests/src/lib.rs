//! End-to-end test harness for Hearth: real server processes (Hearth, and etcd 3.4 as the
//! reference), clients for them, and side-by-side comparison of what they answer.
//!
//! - [`Server`]: a server process on reserved loopback ports in a fresh temp dir; `start`,
//!   `restart` (SIGTERM, same dir and ports), `stop`, `kill9`, `client`, `raw`, `etcdctl`,
//!   `/metrics` and waiting for gauges.
//! - [`Cluster`]: N members of a new cluster on reserved loopback ports; leader discovery,
//!   members added (`MemberAdd`, retried while etcd's rules refuse it) and joining with
//!   `--initial-cluster-state existing`, cutting a member off from its peers (Hearth's test-only
//!   fault switch), and `assert_hashkv_equal` after every multi-member test.
//! - [`poll`]: the one way to wait for something: a condition polled until a deadline.
//! - [`ports`]: loopback ports reserved across processes (no race between parallel tests).
//! - [`rpc`]: requests sent exactly as built, with the `api` crate's etcd messages and client.
//! - [`normalize`]: compares responses/errors of two servers, ignoring header
//!   `cluster_id`, `member_id` and `raft_term`, and prints them readably.
//! - [`ctl`]: etcdctl output normalization, and a command's stdout once it must have succeeded.
//! - [`corrupt`]: one value of a stopped member's backend changed offline.
//! - [`load`]: a concurrent write load over several members that records acknowledged puts, and
//!   the check that every acknowledged put is on a member at its revision.
//! - [`history`]: mixed KV traffic whose every operation is recorded with its invocation and
//!   response time, and a watcher that resumes on another member after a failure.
//! - [`linearizability`]: checks such a history (and the watcher's changes) for linearizability,
//!   lost acknowledged writes and etcd's watch guarantees.
//! - [`leases`]: lease-ID normalization, interactive etcdctl (`lock`, `elect`).
//! - [`proxy`]: a gRPC proxy process (Hearth's or etcd's) in front of a cluster.
//! - [`rng`]: the one seeded generator (`HEARTH_SEED` replays a run; seeds printed on failure).
//! - [`watch`]: a watch stream read into a channel as it comes, read back with a deadline.
//!
//! `HEARTH_TEST_TARGET=etcd` runs every test that targets Hearth against etcd instead, which is
//! how the tests themselves are validated against the reference.

pub mod cluster;
pub mod corrupt;
pub mod ctl;
pub mod history;
pub mod leases;
pub mod linearizability;
pub mod load;
pub mod normalize;
pub mod poll;
pub mod ports;
pub mod proxy;
pub mod rng;
pub mod rpc;
pub mod server;
pub mod watch;

pub use cluster::Cluster;
pub use server::{Kind, Options, Server};
