//! End-to-end test harness for Hearth: real server processes (Hearth, and etcd 3.4 as the
//! reference), clients for them, and side-by-side comparison of what they answer.
//!
//! - [`Server`]: a server process on free loopback ports in a fresh temp dir; `start`,
//!   `restart` (SIGTERM, same dir and ports), `stop`, `kill9`, `client`, `raw`, `etcdctl`.
//! - [`Cluster`]: N members of a new cluster on free loopback ports; leader discovery, members
//!   joining with `--initial-cluster-state existing`, cutting a member off from its peers
//!   (Hearth's test-only fault switch), and `assert_hashkv_equal` after every multi-member test.
//! - [`wire`]: etcd's KV messages and a raw unary client that sends requests exactly as built.
//! - [`normalize`]: compares responses/errors of two servers, ignoring header
//!   `cluster_id`, `member_id` and `raft_term`, and prints them readably.
//! - [`ctl`]: etcdctl output normalization.
//! - [`load`]: a concurrent write load over several members that records acknowledged puts, and
//!   the check that every acknowledged put is on a member at its revision.
//! - [`history`]: mixed KV traffic whose every operation is recorded with its invocation and
//!   response time, and a watcher that resumes on another member after a failure.
//! - [`linearizability`]: checks such a history (and the watcher's changes) for linearizability,
//!   lost acknowledged writes and etcd's watch guarantees.
//! - [`leases`]: lease-ID normalization, interactive etcdctl (`lock`, `elect`).
//! - [`proxy`]: a gRPC proxy process (Hearth's or etcd's) in front of a cluster.
//! - [`rng`]: a seeded PRNG (`HEARTH_SEED` replays a run).
//!
//! `HEARTH_TEST_TARGET=etcd` runs every test that targets Hearth against etcd instead, which is
//! how the tests themselves are validated against the reference.

pub mod cluster;
pub mod ctl;
pub mod history;
pub mod leases;
pub mod linearizability;
pub mod load;
pub mod normalize;
pub mod proxy;
pub mod rng;
pub mod server;
pub mod wire;

pub use cluster::Cluster;
pub use server::{Kind, Options, Server};
