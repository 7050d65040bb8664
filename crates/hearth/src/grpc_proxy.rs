//! `hearth grpc-proxy start`: etcd's `etcd grpc-proxy start`, with etcd's flag names and defaults.
//!
//! Every flag of etcd's proxy is recognized. Those Hearth does not implement yet are refused by
//! name when given (never silently ignored): TLS on either side (until the `transport` crate
//! lands), DNS discovery, resolver registration, auto-TLS and its data directory, pprof, the
//! leasing prefix, endpoint auto-sync and the keepalive enforcement policy.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "hearth grpc-proxy", about = "grpc-proxy related command")]
struct ProxyCommand {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// start the grpc proxy
    Start(Box<StartFlags>),
}

/// Go's duration syntax for the duration flags (`10s`, `2h0m0s`, `500ms`).
fn duration(s: &str) -> Result<Duration, String> {
    server::config::parse_go_duration(s)
}

#[derive(clap::Args, Debug)]
struct StartFlags {
    /// listen address
    #[arg(long, default_value = "127.0.0.1:23790")]
    listen_addr: String,
    /// comma separated etcd cluster endpoints
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// advertise address to register (must be reachable by client)
    #[arg(long, default_value = "127.0.0.1:23790")]
    advertise_client_url: String,
    /// string to prefix to all keys for namespacing requests
    #[arg(long, default_value = "")]
    namespace: String,
    /// listen for endpoint /metrics requests on an additional interface
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Ensure serializable reads have monotonically increasing store revisions across endpoints.
    #[arg(long)]
    experimental_serializable_ordering: bool,
    /// message send limits in bytes (default value is 1.5 MiB)
    #[arg(long, default_value_t = 1_572_864)]
    max_send_bytes: usize,
    /// message receive limits in bytes (default value is math.MaxInt32)
    #[arg(long, default_value_t = i32::MAX as usize)]
    max_recv_bytes: usize,
    /// Bytes of serializable Range answers the proxy caches (Hearth's own flag; 0 disables the
    /// cache).
    #[arg(long, default_value_t = grpcproxy::DEFAULT_CACHE_BYTES)]
    experimental_cache_max_bytes: usize,
    /// keepalive time for client(grpc-proxy) connections (default 0, disable).
    #[arg(long, default_value = "0s", value_parser = duration)]
    dial_keepalive_time: Duration,
    /// keepalive timeout for client(grpc-proxy) connections (default 20s).
    #[arg(long, default_value = "20s", value_parser = duration)]
    dial_keepalive_timeout: Duration,
    /// Enable client(grpc-proxy) to send keepalive pings even with no active RPCs.
    #[arg(long)]
    permit_without_stream: bool,
    /// Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).
    #[arg(long, default_value = "2h0m0s", value_parser = duration)]
    grpc_keepalive_interval: Duration,
    /// Additional duration of wait before closing a non-responsive connection (0 to disable).
    #[arg(long, default_value = "20s", value_parser = duration)]
    grpc_keepalive_timeout: Duration,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, default_value_t = u32::MAX)]
    max_concurrent_streams: u32,
    /// Enable debug-level logging for grpc-proxy.
    #[arg(long)]
    debug: bool,

    // Upstream TLS.
    /// verify certificates of TLS-enabled secure etcd servers using this CA bundle
    #[arg(long)]
    cacert: Option<String>,
    /// identify secure connections with etcd servers using this TLS certificate file
    #[arg(long)]
    cert: Option<String>,
    /// identify secure connections with etcd servers using this TLS key file
    #[arg(long)]
    key: Option<String>,
    /// skip authentication of etcd server TLS certificates
    #[arg(long)]
    insecure_skip_tls_verify: bool,

    // Client-facing TLS.
    /// identify secure connections to the proxy using this TLS certificate file
    #[arg(long)]
    cert_file: Option<String>,
    /// identify secure connections to the proxy using this TLS key file
    #[arg(long)]
    key_file: Option<String>,
    /// verify certificates of TLS-enabled secure proxy using this CA bundle
    #[arg(long)]
    trusted_ca_file: Option<String>,
    /// Comma-separated list of supported TLS cipher suites between client/proxy
    #[arg(long, value_delimiter = ',')]
    listen_cipher_suites: Vec<String>,
    /// proxy TLS using generated certificates
    #[arg(long)]
    auto_tls: bool,
    /// proxy client certificate revocation list file.
    #[arg(long)]
    client_crl_file: Option<String>,
    /// The validity period of the proxy certificates, unit is year
    #[arg(long)]
    self_signed_cert_validity: Option<u32>,

    // Discovery and registration.
    /// domain name to query for SRV records describing cluster endpoints
    #[arg(long)]
    discovery_srv: Option<String>,
    /// service name to query when using DNS discovery
    #[arg(long)]
    discovery_srv_name: Option<String>,
    /// accept insecure SRV records
    #[arg(long)]
    insecure_discovery: bool,
    /// prefix to use for registering proxy (must be shared with other grpc-proxy members)
    #[arg(long)]
    resolver_prefix: Option<String>,
    /// specify TTL, in seconds, when registering proxy endpoints
    #[arg(long)]
    resolver_ttl: Option<i64>,
    /// etcd endpoints auto sync interval (disabled by default)
    #[arg(long, value_parser = duration)]
    endpoints_auto_sync_interval: Option<Duration>,

    // Others.
    /// Data directory for persistent data
    #[arg(long)]
    data_dir: Option<String>,
    /// Enable runtime profiling data via HTTP server
    #[arg(long)]
    enable_pprof: bool,
    /// leasing metadata prefix for disconnected linearized reads.
    #[arg(long)]
    experimental_leasing_prefix: Option<String>,
    /// Minimum interval duration that a client should wait before pinging proxy.
    #[arg(long, value_parser = duration)]
    grpc_keepalive_min_time: Option<Duration>,
}

impl StartFlags {
    /// The flags Hearth recognizes but does not implement yet, if any was given.
    fn refused(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        let mut refuse = |given: bool, flag: &'static str| {
            if given {
                r.push(flag);
            }
        };
        refuse(self.cacert.is_some(), "--cacert");
        refuse(self.cert.is_some(), "--cert");
        refuse(self.key.is_some(), "--key");
        refuse(self.insecure_skip_tls_verify, "--insecure-skip-tls-verify");
        refuse(self.cert_file.is_some(), "--cert-file");
        refuse(self.key_file.is_some(), "--key-file");
        refuse(self.trusted_ca_file.is_some(), "--trusted-ca-file");
        refuse(
            !self.listen_cipher_suites.is_empty(),
            "--listen-cipher-suites",
        );
        refuse(self.auto_tls, "--auto-tls");
        refuse(self.client_crl_file.is_some(), "--client-crl-file");
        refuse(
            self.self_signed_cert_validity.is_some(),
            "--self-signed-cert-validity",
        );
        refuse(self.discovery_srv.is_some(), "--discovery-srv");
        refuse(self.discovery_srv_name.is_some(), "--discovery-srv-name");
        refuse(self.insecure_discovery, "--insecure-discovery");
        refuse(self.resolver_prefix.is_some(), "--resolver-prefix");
        refuse(self.resolver_ttl.is_some(), "--resolver-ttl");
        refuse(
            self.endpoints_auto_sync_interval
                .is_some_and(|d| !d.is_zero()),
            "--endpoints-auto-sync-interval",
        );
        refuse(self.data_dir.is_some(), "--data-dir");
        refuse(self.enable_pprof, "--enable-pprof");
        refuse(
            self.experimental_leasing_prefix.is_some(),
            "--experimental-leasing-prefix",
        );
        refuse(
            self.grpc_keepalive_min_time.is_some(),
            "--grpc-keepalive-min-time",
        );
        r
    }

    fn into_config(self) -> anyhow::Result<grpcproxy::Config> {
        if let Some(flag) = self.refused().first() {
            bail!("{flag} is not supported yet by hearth grpc-proxy");
        }
        if let Some(e) = self.endpoints.iter().find(|e| e.starts_with("https://")) {
            bail!("--endpoints {e}: TLS to the cluster is not supported yet by hearth grpc-proxy");
        }
        Ok(grpcproxy::Config {
            listen_addr: self.listen_addr,
            metrics_addr: self.metrics_addr.filter(|m| !m.is_empty()),
            upstream: grpcproxy::UpstreamConfig {
                endpoints: self.endpoints,
                max_send_bytes: self.max_send_bytes,
                max_recv_bytes: self.max_recv_bytes,
                keepalive_time: (!self.dial_keepalive_time.is_zero())
                    .then_some(self.dial_keepalive_time),
                keepalive_timeout: self.dial_keepalive_timeout,
                permit_without_stream: self.permit_without_stream,
            },
            advertise_client_url: self.advertise_client_url,
            namespace: self.namespace,
            serializable_ordering: self.experimental_serializable_ordering,
            cache_max_bytes: self.experimental_cache_max_bytes,
            grpc_keepalive_interval: self.grpc_keepalive_interval,
            grpc_keepalive_timeout: self.grpc_keepalive_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
        })
    }
}

/// Runs `hearth grpc-proxy ...`; `args` start with the program name.
pub fn main(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    // `hearth grpc-proxy start ...` parses as `hearth-grpc-proxy start ...`.
    let args = std::iter::once(std::ffi::OsString::from("hearth grpc-proxy"))
        .chain(args.into_iter().skip(2));
    let Cmd::Start(flags) = ProxyCommand::parse_from(args).cmd;
    let level = if flags.debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg = flags.into_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let proxy = grpcproxy::GrpcProxy::start_with(cfg.clone(), v3rpc::FixAuthority::new)
            .await
            .context("grpc-proxy failed to start")?;
        tracing::info!(address = %proxy.local_addr(), endpoints = ?cfg.upstream.endpoints, "started gRPC proxy");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping gRPC proxy");
        proxy.stop().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> StartFlags {
        let all = ["hearth grpc-proxy", "start"].iter().chain(args);
        let Cmd::Start(f) = ProxyCommand::parse_from(all).cmd;
        *f
    }

    #[test]
    fn defaults_are_etcds() {
        let f = parse(&[]);
        assert_eq!(f.listen_addr, "127.0.0.1:23790");
        assert_eq!(f.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(f.max_send_bytes, 1_572_864);
        assert_eq!(f.max_recv_bytes, 2_147_483_647);
        assert_eq!(f.grpc_keepalive_interval, Duration::from_secs(7200));
        assert!(f.refused().is_empty());
    }

    #[test]
    fn unimplemented_flags_are_refused_by_name() {
        for (args, flag) in [
            (&["--cert-file=/x"][..], "--cert-file"),
            (&["--cacert", "/x"], "--cacert"),
            (&["--enable-pprof"], "--enable-pprof"),
            (&["--discovery-srv=example.com"], "--discovery-srv"),
            (&["--data-dir=/tmp/p"], "--data-dir"),
        ] {
            let err = parse(args).into_config().unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        assert!(parse(&["--endpoints-auto-sync-interval=0s"])
            .refused()
            .is_empty());
    }
}
