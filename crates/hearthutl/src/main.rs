//! `hearthutl`: offline tools for a Hearth member's data, as `etcdutl` is for etcd's. They work
//! on files (snapshots, data directories), never over the network.

#![forbid(unsafe_code)]

mod print;
mod snapshot;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "hearthutl", version, about = "Offline tools for Hearth data")]
struct Cli {
    /// Output format: simple, table, json or fields.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    write_out: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Simple,
    Table,
    Json,
    Fields,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Inspects and restores snapshot files (from `etcdctl snapshot save` against Hearth).
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Defragments the backend of a stopped member's data directory.
    Defrag {
        /// The member's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// Prints the snapshot's hash, revision, total keys and size (the checksum trailer, if any, is
    /// not checked, as etcdutl does not: a member's `member/snap/db` has none).
    Status {
        /// The snapshot file.
        file: PathBuf,
    },
    /// Builds a new member's data directory from a snapshot, as the first member of a new
    /// cluster: new member and cluster ids, the key-value data, revisions and leases kept.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// Path to the data directory to create, or an existing empty one to fill (default:
        /// <name>.hearth).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Path to the WAL directory to create (default: <data-dir>/member/wal).
        #[arg(long)]
        wal_dir: Option<PathBuf>,
        /// Human-readable name for this member.
        #[arg(long, default_value = "default")]
        name: String,
        /// Initial cluster configuration for restore bootstrap (default: this member alone).
        #[arg(long)]
        initial_cluster: Option<String>,
        /// Initial cluster token for the cluster during restore bootstrap.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs to advertise to the rest of the cluster.
        #[arg(long, value_delimiter = ',', default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: Vec<String>,
        /// Ignore the snapshot's checksum (for a file copied out of a data directory).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Snapshot {
            cmd: SnapshotCmd::Status { file },
        } => snapshot::status(&file).map(|s| print::status(&s, cli.write_out)),
        Cmd::Snapshot {
            cmd:
                SnapshotCmd::Restore {
                    file,
                    data_dir,
                    wal_dir,
                    name,
                    initial_cluster,
                    initial_cluster_token,
                    initial_advertise_peer_urls,
                    skip_hash_check,
                },
        } => {
            let initial_cluster = initial_cluster.unwrap_or_else(|| {
                initial_advertise_peer_urls
                    .iter()
                    .map(|u| format!("{name}={u}"))
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let cfg = server::Config {
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.hearth"))),
                wal_dir,
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
                ..server::Config::default()
            };
            snapshot::restore(&file, &cfg, skip_hash_check)
        }
        Cmd::Defrag { data_dir } => snapshot::defrag(&data_dir),
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
