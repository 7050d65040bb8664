//! `hearth grpc-proxy start`: etcd's `etcd grpc-proxy start`, with etcd's flag names and defaults.
//!
//! Every flag of etcd's proxy is recognized. Those Hearth does not implement are refused by name
//! when given (never silently ignored): DNS discovery, resolver registration, pprof, the leasing
//! prefix, endpoint auto-sync and the keepalive enforcement policy.
//!
//! TLS follows etcd's `startGRPCProxy`: `--cacert --cert --key` (and `--insecure-skip-tls-verify`)
//! configure the dial to the cluster, and the certificate given with `--cert` must have an empty
//! CN (etcd's `EmptyCN`: a cluster with `--client-cert-auth` would otherwise take every proxied
//! request for that CN's user); `--cert-file --key-file --trusted-ca-file` configure the listen
//! address (a trusted CA makes client certificates required), with `--client-crl-file`,
//! `--listen-cipher-suites`, `--tls-min-version` and `--tls-max-version`; `--auto-tls` generates a
//! certificate under `<data-dir>/fixtures/proxy` when none is given.

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
    #[arg(long, default_value_t = 1)]
    self_signed_cert_validity: u32,
    /// Minimum TLS version supported by grpc proxy. Possible values: TLS1.2, TLS1.3.
    #[arg(long, default_value = "TLS1.2")]
    tls_min_version: String,
    /// Maximum TLS version supported by grpc proxy. Possible values: TLS1.2, TLS1.3 (empty defers
    /// to the TLS library).
    #[arg(long, default_value = "")]
    tls_max_version: String,

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
    #[arg(long, default_value = "default.proxy")]
    data_dir: String,
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

    /// etcd's `newClientCfg` TLS: set when any of `--cacert --cert --key` is given, or
    /// `--insecure-skip-tls-verify` alone.
    fn upstream_tls(&self) -> anyhow::Result<Option<transport::ClientTls>> {
        let any = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if !any && !self.insecure_skip_tls_verify {
            return Ok(None);
        }
        let info = transport::TlsInfo {
            trusted_ca_file: self.cacert.as_ref().map(Into::into),
            cert_file: self.cert.as_ref().map(Into::into),
            key_file: self.key.as_ref().map(Into::into),
            insecure_skip_verify: self.insecure_skip_tls_verify,
            ..Default::default()
        };
        let tls = transport::ClientTls::new(&info)?;
        if let Some(cert) = &self.cert {
            if let Some(cn) = first_common_name(cert)? {
                bail!("cert has non empty Common Name ({cn}): {cert}");
            }
        }
        if self.insecure_skip_tls_verify {
            tracing::warn!("--insecure-skip-tls-verify was given, this grpc proxy process skips authentication of etcd server TLS certificates. This option should be enabled only for testing purposes.");
        }
        tracing::info!(tls_info = %info, "gRPC proxy client TLS");
        Ok(Some(tls))
    }

    /// etcd's listen TLS: `--cert-file --key-file --trusted-ca-file` when any is given, else
    /// `--auto-tls`; then the CRL, cipher suites and versions.
    fn listen_tls(&self) -> anyhow::Result<Option<transport::ServerTls>> {
        let options = transport::TlsOptions::new(
            &self.listen_cipher_suites,
            &self.tls_min_version,
            &self.tls_max_version,
        )?;
        let given =
            self.cert_file.is_some() || self.key_file.is_some() || self.trusted_ca_file.is_some();
        let mut info = if given {
            transport::TlsInfo {
                cert_file: self.cert_file.as_ref().map(Into::into),
                key_file: self.key_file.as_ref().map(Into::into),
                trusted_ca_file: self.trusted_ca_file.as_ref().map(Into::into),
                ..Default::default()
            }
        } else if self.auto_tls {
            let dir = std::path::Path::new(&self.data_dir)
                .join("fixtures")
                .join("proxy");
            transport::self_cert(
                &dir,
                std::slice::from_ref(&self.listen_addr),
                self.self_signed_cert_validity,
                options.clone(),
            )?
        } else {
            return Ok(None);
        };
        info.crl_file = self.client_crl_file.as_ref().map(Into::into);
        info.options = options;
        tracing::info!(tls_info = %info, "gRPC proxy server TLS");
        Ok(Some(transport::ServerTls::new(
            &info,
            transport::Role::Client,
        )?))
    }

    fn into_config(self) -> anyhow::Result<grpcproxy::Config> {
        if let Some(flag) = self.refused().first() {
            bail!("{flag} is not supported yet by hearth grpc-proxy");
        }
        if self.auto_tls && self.self_signed_cert_validity == 0 {
            bail!("selfSignedCertValidity is invalid,it should be greater than 0");
        }
        let upstream_tls = self.upstream_tls()?;
        let tls = self.listen_tls()?;
        Ok(grpcproxy::Config {
            tls,
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
                tls: upstream_tls,
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

/// The CN of the first certificate in the PEM file `path`, if it has a non-empty one.
fn first_common_name(path: &str) -> anyhow::Result<Option<String>> {
    use transport::rustls::pki_types::pem::PemObject as _;
    use transport::rustls::pki_types::CertificateDer;
    let der = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {path}"))?
        .next()
        .with_context(|| format!("no certificate in {path}"))?
        .with_context(|| format!("cannot read {path}"))?;
    let summary = transport::CertSummary::parse(&der)
        .with_context(|| format!("cannot parse the certificate in {path}"))?;
    Ok(summary.common_name.filter(|cn| !cn.is_empty()))
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
    crate::runtime::note_build();
    crate::runtime::build()?.block_on(async move {
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
            (&["--enable-pprof"][..], "--enable-pprof"),
            (&["--discovery-srv=example.com"], "--discovery-srv"),
            (&["--resolver-prefix=/p"], "--resolver-prefix"),
            (
                &["--experimental-leasing-prefix=/l"],
                "--experimental-leasing-prefix",
            ),
        ] {
            let err = parse(args).into_config().unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        assert!(parse(&["--endpoints-auto-sync-interval=0s"])
            .refused()
            .is_empty());
    }

    #[test]
    fn tls_flags_are_checked_as_etcd_checks_them() {
        let err = |args: &[&str]| parse(args).into_config().unwrap_err().to_string();
        assert!(err(&["--cert-file=/nonexistent/c.pem"])
            .contains("KeyFile and CertFile must both be present"),);
        assert!(err(&["--tls-min-version=TLS1.1"]).contains("unexpected TLS version"));
        assert!(
            err(&["--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"])
                .contains("min version (TLS1.3) is greater than max version (TLS1.2)")
        );
        assert!(err(&["--cacert=/nonexistent/ca.pem"]).contains("/nonexistent/ca.pem"));
        assert!(err(&["--auto-tls", "--self-signed-cert-validity=0"])
            .contains("selfSignedCertValidity is invalid"));
    }

    #[test]
    fn the_upstream_certificate_must_have_an_empty_cn() {
        let dir = tempfile::tempdir().unwrap();
        let ca = transport::testing::Ca::new("ca");
        let ca_file = transport::testing::write(dir.path(), "ca.pem", ca.cert_pem());
        let ca_file = ca_file.to_str().unwrap();
        let named = ca.issue(&transport::testing::CertSpec::new("proxy").sans(&["127.0.0.1"]));
        let (cert, key) = named.write(dir.path(), "named");
        let e = parse(&[
            &format!("--cacert={ca_file}"),
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
        ])
        .into_config()
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            format!("cert has non empty Common Name (proxy): {}", cert.display())
        );
        let cfg = parse(&[&format!("--cacert={ca_file}")])
            .into_config()
            .unwrap();
        assert!(cfg.upstream.tls.is_some() && cfg.tls.is_none());
        let cfg = parse(&["--insecure-skip-tls-verify"])
            .into_config()
            .unwrap();
        assert!(cfg.upstream.tls.is_some());
        let cfg = parse(&[]).into_config().unwrap();
        assert!(cfg.upstream.tls.is_none());
    }

    #[test]
    fn auto_tls_writes_its_certificate_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("p");
        let cfg = parse(&["--auto-tls", &format!("--data-dir={}", data.display())])
            .into_config()
            .unwrap();
        assert!(cfg.tls.is_some());
        assert!(data.join("fixtures/proxy/cert.pem").exists());
    }
}
