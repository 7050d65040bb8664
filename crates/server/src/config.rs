//! Server configuration, in etcd's terms. The binary fills it from flags and environment; the server only
//! reads it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::urls;

/// Everything a member needs to start. Field names follow etcd's flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=url,name=url,...`
    pub initial_cluster: String,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub quota_backend_bytes: u64,
    pub snapshot_count: u64,
    /// Entries kept before a snapshot for slow followers (etcd's `--experimental-snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// etcd's `--experimental-watch-progress-notify-interval`: how often a watcher that asked for
    /// progress notifications gets one while idle (0 keeps the default).
    pub watch_progress_notify_interval: Duration,
    /// Reject membership changes that could cost the cluster its quorum (etcd's default: on).
    pub strict_reconfig_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// etcd's default `--experimental-snapshot-catchup-entries`.
pub use raftnode::SNAPSHOT_CATCHUP_ENTRIES as DEFAULT_SNAPSHOT_CATCHUP_ENTRIES;
/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1572864;
/// etcd's default `--quota-backend-bytes` when the flag is 0: 2 GiB.
pub use apply::quota::DEFAULT_QUOTA_BACKEND_BYTES;
/// etcd's default `--experimental-watch-progress-notify-interval`: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".into(),
            data_dir: PathBuf::from("default.hearth"),
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: "default=http://localhost:2380".into(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: 128,
            quota_backend_bytes: 0,
            snapshot_count: 10_000,
            snapshot_catchup_entries: DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            watch_progress_notify_interval: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            strict_reconfig_check: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("invalid --initial-cluster entry {0:?}: expected name=url")]
    InitialCluster(String),
    #[error("couldn't find local name {name:?} in the initial cluster configuration")]
    NameNotInCluster { name: String },
    #[error(
        "--initial-cluster has {cluster:?} for {name:?} but --initial-advertise-peer-urls is {advertised:?}"
    )]
    PeerUrlMismatch {
        name: String,
        cluster: Vec<String>,
        advertised: Vec<String>,
    },
    #[error("--election-timeout[{election:?}] should be at least 5 times as --heartbeat-interval[{heartbeat:?}]")]
    Timeouts {
        election: Duration,
        heartbeat: Duration,
    },
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub id: u64,
}

impl Config {
    /// The quota actually in force: etcd treats 0 as its default.
    pub fn quota_bytes(&self) -> u64 {
        if self.quota_backend_bytes == 0 {
            DEFAULT_QUOTA_BACKEND_BYTES
        } else {
            self.quota_backend_bytes
        }
    }

    /// Parses `--initial-cluster` into members with their etcd-derived ids, sorted by id.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ConfigError> {
        let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
        for part in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| ConfigError::InitialCluster(part.to_string()))?;
            let url = normalize_url(url)?;
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url),
                None => by_name.push((name.to_string(), vec![url])),
            }
        }
        let mut members: Vec<InitialMember> = by_name
            .into_iter()
            .map(|(name, peer_urls)| {
                let id = crate::ids::member_id(&peer_urls, &self.initial_cluster_token);
                InitialMember {
                    name,
                    peer_urls,
                    id,
                }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Ok(members)
    }

    /// Checks the flags that must agree with each other, as etcd does at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(ConfigError::Timeouts {
                election: self.election_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        let members = self.initial_members()?;
        let me = members
            .iter()
            .find(|m| m.name == self.name)
            .ok_or_else(|| ConfigError::NameNotInCluster {
                name: self.name.clone(),
            })?;
        let mut advertised = self
            .initial_advertise_peer_urls
            .iter()
            .map(|u| normalize_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        advertised.sort();
        let mut cluster = me.peer_urls.clone();
        cluster.sort();
        if advertised != cluster {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                cluster,
                advertised,
            });
        }
        for u in self.listen_client_urls.iter().chain(&self.listen_peer_urls) {
            listen_addr(u)?;
        }
        Ok(())
    }
}

/// Parses a duration in Go's `time.ParseDuration` syntax, as etcd's duration flags take it: an
/// optional sign and a sequence of decimal numbers with units (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), e.g. `10m`, `1h30m`, `1.5s`, `100ms`; a bare `0` is zero. Negative durations are
/// rejected (no etcd flag means anything by them).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("negative duration {s:?}"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1e0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * nanos_per;
        rest = tail;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Accepts `http://host:port` (or `https://`, `unix://`), without a path; returns it without a trailing
/// slash.
fn normalize_url(url: &str) -> Result<String, ConfigError> {
    let url = url.trim().trim_end_matches('/');
    let bad = |why| ConfigError::Url(url.to_string(), why);
    let uri = urls::parse(url).map_err(|e| match e {
        urls::UrlError::Scheme => bad("scheme must be http or https"),
        urls::UrlError::Shape => bad("expected scheme://host:port"),
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https" | "unix")) {
        return Err(bad("scheme must be http or https"));
    }
    Ok(url.to_string())
}

/// The socket address to bind for a listen URL. `localhost` binds the IPv4 loopback.
pub fn listen_addr(url: &str) -> Result<SocketAddr, ConfigError> {
    let url = normalize_url(url)?;
    let bad = |why| ConfigError::Url(url.clone(), why);
    let uri = urls::parse(&url).map_err(|_| bad("expected scheme://host:port"))?;
    let port = urls::port(&uri)
        .map_err(|()| bad("bad port"))?
        .ok_or_else(|| bad("a port is required"))?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .map_err(|_| bad("host must be an IP address or localhost"))?
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_single_member() {
        let c = Config::default();
        c.validate().unwrap();
        let m = c.initial_members().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "default");
    }

    #[test]
    fn rejects_name_missing_from_cluster() {
        let c = Config {
            name: "x".into(),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NameNotInCluster { .. })
        ));
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        let d = |s| parse_go_duration(s);
        assert_eq!(d("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(d("10m0s"), Ok(Duration::from_secs(600)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert!(d("").is_err());
        assert!(d("10").is_err());
        assert!(d("5x").is_err());
        assert!(d("-1s").is_err());
        assert!(d("s").is_err());
    }

    #[test]
    fn listen_addr_parses_forms() {
        assert_eq!(
            listen_addr("http://localhost:2379").unwrap().to_string(),
            "127.0.0.1:2379"
        );
        assert_eq!(
            listen_addr("http://[::1]:1/").unwrap().to_string(),
            "[::1]:1"
        );
        assert!(listen_addr("http://host.example:1").is_err());
        assert!(listen_addr("ftp://127.0.0.1:1").is_err());
        assert!(listen_addr("http://127.0.0.1").is_err());
        assert!(listen_addr("http://127.0.0.1:1/path").is_err());
        assert!(listen_addr("unix://sock").is_err());
    }
}
