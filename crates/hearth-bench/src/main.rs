//! `hearth-bench`: a load generator and latency report for servers that speak etcd's v3 API
//! (Hearth, etcd), modelled on etcd's `benchmark` tool: same subcommands, flags, defaults and
//! report layout.

#![forbid(unsafe_code)]

mod client;
mod gateway;
mod keys;
mod limiter;
mod progress;
mod report;
mod runner;
mod workload;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use report::{Output, Report};
use serde::Serialize;
use std::str::FromStr;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "hearth-bench",
    version,
    about = "A low-level benchmark tool for etcd v3 API servers (Hearth, etcd)",
    long_about = "A low-level benchmark tool for etcd v3 API servers (Hearth, etcd), modelled on \
                  etcd's `benchmark`: each subcommand drives one kind of request with --clients \
                  concurrent clients over --conns gRPC connections and prints etcd's report \
                  (summary, latency histogram, percentiles, errors), or JSON with --json."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Args, Debug, Clone, Serialize)]
pub struct Global {
    /// gRPC endpoints (comma separated; `host:port` or `http://host:port`)
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub conns: u64,
    /// Total number of concurrent clients (shared round-robin over the connections)
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub clients: u64,
    /// Maximum requests per second over all clients (0 is no limit); for watch, the put rate
    /// when --put-rate is 0
    #[arg(long, global = true, default_value_t = 0.0)]
    pub rate: f64,
    /// Print the report as one JSON object
    #[arg(long, global = true)]
    pub json: bool,
    /// Use full floating point precision in the text report
    #[arg(long, global = true)]
    pub precise: bool,
    /// Send put and range as JSON to the gRPC-gateway (`POST /v3/kv/put`, `/v3/kv/range`) over
    /// HTTP/1.1 keep-alive connections, one per client, instead of gRPC
    #[arg(long, global = true)]
    pub gateway: bool,
    /// Dial timeout for client connections (0 waits as long as it takes)
    #[arg(long, global = true, default_value = "5s")]
    pub dial_timeout: GoDuration,
}

impl Global {
    fn clients(&self) -> usize {
        self.clients as usize
    }
    fn conns(&self) -> usize {
        self.conns as usize
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmark put
    Put(workload::put::PutArgs),
    /// Benchmark range
    Range(workload::range::RangeArgs),
    /// Benchmark txn-put: transactions of --txn-ops puts
    TxnPut(workload::txn_put::TxnPutArgs),
    /// Benchmark a mixed load of txn-put and txn-range (one op per transaction)
    TxnMixed(workload::txn_mixed::TxnMixedArgs),
    /// Benchmark watch: events per second delivered to many watchers
    Watch(workload::watch::WatchArgs),
    /// Benchmark watch latency: time from a put to each watcher's event
    WatchLatency(workload::watch::WatchLatencyArgs),
    /// Benchmark lease keepalive
    LeaseKeepalive(workload::lease::LeaseArgs),
    /// Benchmark puts from --clients authenticated clients while --login-clients log in at once
    AuthStorm(workload::auth_storm::AuthStormArgs),
}

/// Linearizable (`l`) or serializable (`s`) reads.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Consistency {
    #[value(name = "l")]
    #[serde(rename = "l")]
    Linearizable,
    #[value(name = "s")]
    #[serde(rename = "s")]
    Serializable,
}

impl Consistency {
    fn banner(self) -> &'static str {
        match self {
            Consistency::Linearizable => "bench with linearizable range",
            Consistency::Serializable => "bench with serializable range",
        }
    }
}

/// A duration written as Go writes them (`5s`, `100ms`, `1m30s`, `0`); serialized as written.
#[derive(Clone, Debug, PartialEq)]
pub struct GoDuration {
    text: String,
    value: Duration,
}

impl GoDuration {
    pub fn get(&self) -> Duration {
        self.value
    }
}

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {s:?} (examples: 500ms, 5s, 1m30s)");
        let t = s.trim();
        if t == "0" {
            return Ok(GoDuration {
                text: s.into(),
                value: Duration::ZERO,
            });
        }
        let mut rest = t;
        let mut total = 0f64;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            total += n * scale;
            rest = &rest[unit_len..];
        }
        Ok(GoDuration {
            text: s.into(),
            value: Duration::try_from_secs_f64(total).map_err(|_| bad())?,
        })
    }
}

impl Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// What a subcommand produced: lines printed before the reports (text mode only), and its
/// reports, each with the heading printed above it.
pub struct Outcome {
    pub preface: Vec<String>,
    pub sections: Vec<(Option<String>, Report)>,
}

impl Outcome {
    fn single(report: Report) -> Outcome {
        Outcome {
            preface: Vec::new(),
            sections: vec![(None, report)],
        }
    }
}

fn print(cli: &Cli, name: &str, options: &impl Serialize, out: Outcome) -> Result<()> {
    if cli.global.json {
        let o = Output {
            command: name.to_string(),
            global: &cli.global,
            options,
            reports: out.sections.into_iter().map(|(_, r)| r).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        for line in &out.preface {
            println!("{line}");
        }
        for (heading, report) in &out.sections {
            if let Some(h) = heading {
                print!("{h}");
            }
            println!("{}", report.to_text(cli.global.precise));
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    if g.gateway && !matches!(cli.command, Command::Put(_) | Command::Range(_)) {
        anyhow::bail!("--gateway covers the put and range benchmarks only");
    }
    match &cli.command {
        Command::Put(a) => print(&cli, "put", a, workload::put::run(g, a).await?),
        Command::Range(a) => print(&cli, "range", a, workload::range::run(g, a).await?),
        Command::TxnPut(a) => print(&cli, "txn-put", a, workload::txn_put::run(g, a).await?),
        Command::TxnMixed(a) => print(&cli, "txn-mixed", a, workload::txn_mixed::run(g, a).await?),
        Command::Watch(a) => print(&cli, "watch", a, workload::watch::run_watch(g, a).await?),
        Command::WatchLatency(a) => print(
            &cli,
            "watch-latency",
            a,
            workload::watch::run_latency(g, a).await?,
        ),
        Command::LeaseKeepalive(a) => print(
            &cli,
            "lease-keepalive",
            a,
            workload::lease::run(g, a).await?,
        ),
        Command::AuthStorm(a) => print(
            &cli,
            "auth-storm",
            a,
            workload::auth_storm::run(g, a).await?,
        ),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Pinned to one core (as `bench/compare` runs it), one thread does the work of all: a
    // multi-threaded runtime there is a worker plus the thread blocked on `run`, taking turns on
    // the core and waking each other across threads. With 1000 clients reading from Hearth, one
    // thread gave 11-15% more reads a second and a p99 of 98-114 ms, not 193-198 (RESULTS.md).
    let one_core = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let mut rt = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all().build()?.block_on(run(cli))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        let d = |s: &str| GoDuration::from_str(s).map(|d| d.get());
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(d("").is_err());
        assert!(d("5").is_err());
        assert!(d("5x").is_err());
        assert!(d("s").is_err());
    }

    #[test]
    fn etcd_flags_and_defaults() {
        let cli = Cli::try_parse_from([
            "hearth-bench",
            "--endpoints=127.0.0.1:1,127.0.0.1:2",
            "--conns=2",
            "put",
            "--clients",
            "4",
            "--total",
            "200",
        ])
        .unwrap();
        assert_eq!(cli.global.endpoints, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!((cli.global.conns, cli.global.clients), (2, 4));
        let Command::Put(p) = cli.command else {
            panic!("not put")
        };
        assert_eq!(
            (p.key_size, p.val_size, p.total, p.key_space_size),
            (8, 8, 200, 1)
        );

        let cli =
            Cli::try_parse_from(["hearth-bench", "range", "foo", "--consistency", "s"]).unwrap();
        assert_eq!(cli.global.endpoints, ["127.0.0.1:2379"]);
        let Command::Range(r) = cli.command else {
            panic!("not range")
        };
        assert_eq!(r.key, "foo");
        assert_eq!(r.consistency, Consistency::Serializable);
        assert_eq!(r.total, 10000);

        let cli = Cli::try_parse_from([
            "hearth-bench",
            "watch",
            "--watch-per-stream",
            "3",
            "--key-space",
            "2",
        ])
        .unwrap();
        let Command::Watch(w) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(
            (w.streams, w.watchers_per_stream, w.key_space_size),
            (10, 3, 2)
        );

        let cli = Cli::try_parse_from(["hearth-bench", "put", "--gateway"]).unwrap();
        assert!(cli.global.gateway);

        assert!(Cli::try_parse_from(["hearth-bench", "range"]).is_err());
        assert!(Cli::try_parse_from(["hearth-bench", "put", "--clients", "0"]).is_err());
        assert!(Cli::try_parse_from(["hearth-bench", "range", "k", "--consistency", "x"]).is_err());
    }
}
