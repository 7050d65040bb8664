use std::time::Duration;

use super::*;
use crate::flags::{lookup, parse_args, Command, Kind};

fn flags(a: &[&str]) -> Values {
    let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    match parse_args(&a, &mut Notices::default()).unwrap() {
        Command::Run(v) => v,
        other => panic!("{other:?}"),
    }
}

fn file(text: &str) -> Values {
    crate::config_file::parse(text, &mut Notices::default()).unwrap()
}

fn built(v: &Values, source: Source) -> (Config, Vec<String>) {
    build(v, source, &mut Notices::default()).unwrap()
}

fn err(v: &Values) -> String {
    resolve(v, Source::Flags, &mut Notices::default())
        .unwrap_err()
        .to_string()
}

/// A Config as text: `server::Config` holds `TlsInfo`, which has no `PartialEq`.
fn show(c: &Config) -> String {
    format!("{c:#?}")
}

#[test]
fn a_file_with_etcds_keys_builds_the_same_member_as_the_flags() {
    let from_flags = flags(&[
        "--name=infra1",
        "--data-dir=/var/lib/hearth",
        "--listen-client-urls=http://127.0.0.1:2379,http://10.0.0.1:2379",
        "--advertise-client-urls=http://10.0.0.1:2379",
        "--listen-peer-urls=https://10.0.0.1:2380",
        "--initial-advertise-peer-urls=https://10.0.0.1:2380",
        "--initial-cluster=infra1=https://10.0.0.1:2380,infra2=https://10.0.0.2:2380",
        "--initial-cluster-state=existing",
        "--initial-cluster-token=tok",
        "--snapshot-count=5000",
        "--heartbeat-interval=50",
        "--election-timeout=500",
        "--max-txn-ops=64",
        "--max-request-bytes=1048576",
        "--quota-backend-bytes=4294967296",
        "--strict-reconfig-check=false",
        "--watch-progress-notify-interval=5s",
        "--experimental-snapshot-catchup-entries=100",
        "--cert-file=/pki/server.crt",
        "--key-file=/pki/server.key",
        "--trusted-ca-file=/pki/ca.crt",
        "--client-cert-auth",
        "--peer-cert-file=/pki/peer.crt",
        "--peer-key-file=/pki/peer.key",
        "--peer-trusted-ca-file=/pki/ca.crt",
        "--peer-client-cert-auth",
        "--peer-cert-allowed-cn=infra1,infra2",
        "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "--listen-metrics-urls=http://127.0.0.1:2381",
        "--feature-gates=InitialCorruptCheck=true",
        "--auth-token-ttl=60",
        "--log-level=debug",
    ]);
    let from_file = file(
        r#"
name: infra1
data-dir: /var/lib/hearth
listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379
advertise-client-urls: http://10.0.0.1:2379
listen-peer-urls: https://10.0.0.1:2380
initial-advertise-peer-urls: https://10.0.0.1:2380
initial-cluster: infra1=https://10.0.0.1:2380,infra2=https://10.0.0.2:2380
initial-cluster-state: existing
initial-cluster-token: tok
snapshot-count: 5000
heartbeat-interval: 50
election-timeout: 500
max-txn-ops: 64
max-request-bytes: 1048576
quota-backend-bytes: 4294967296
strict-reconfig-check: false
watch-progress-notify-interval: 5000000000
experimental-snapshot-catch-up-entries: 100
client-transport-security:
  cert-file: /pki/server.crt
  key-file: /pki/server.key
  trusted-ca-file: /pki/ca.crt
  client-cert-auth: true
peer-transport-security:
  cert-file: /pki/peer.crt
  key-file: /pki/peer.key
  trusted-ca-file: /pki/ca.crt
  client-cert-auth: true
  allowed-cn: [infra1, infra2]
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
listen-metrics-urls: http://127.0.0.1:2381
feature-gates: InitialCorruptCheck=true
auth-token-ttl: 60
log-level: debug
"#,
    );
    let (a, a_not_yet) = built(&from_flags, Source::Flags);
    let (b, b_not_yet) = built(&from_file, Source::File);
    assert_eq!(show(&a), show(&b));
    assert_eq!(a_not_yet, b_not_yet);
    assert_eq!(a.snapshot_catchup_entries, 100);
    assert_eq!(a.watch_progress_notify_interval, Duration::from_secs(5));
    assert_eq!(
        a.peer_tls.allowed_cns,
        ["infra1".to_string(), "infra2".to_string()]
    );
    assert!(a.client_tls.client_cert_auth);
    assert!(a.feature_gates["InitialCorruptCheck"]);
    assert_eq!(
        crate::logging::config_from(&from_flags),
        crate::logging::config_from(&from_file)
    );
}

#[test]
fn defaults_are_etcds_and_make_a_valid_member() {
    let (c, not_yet) = built(&flags(&[]), Source::Flags);
    assert!(not_yet.is_empty());
    c.validate().unwrap();
    let d = Config::default();
    assert_eq!(c.listen_client_urls, d.listen_client_urls);
    assert_eq!(c.initial_cluster, d.initial_cluster);
    assert_eq!(c.max_request_bytes, d.max_request_bytes);
    assert_eq!(c.snapshot_count, d.snapshot_count);
    assert_eq!(c.snapshot_catchup_entries, d.snapshot_catchup_entries);
    assert_eq!(c.grpc_keepalive_interval, d.grpc_keepalive_interval);
    assert_eq!(c.max_concurrent_streams, d.max_concurrent_streams);
    assert_eq!(c.data_dir, PathBuf::from("default.hearth"));
    assert_eq!(c.auth_token, AuthToken::Simple);
}

#[test]
fn a_named_member_gets_an_initial_cluster_of_itself() {
    let (c, _) = built(
        &flags(&[
            "--name=n1",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        ]),
        Source::Flags,
    );
    assert_eq!(c.initial_cluster, "n1=http://127.0.0.1:2380");
    assert_eq!(c.data_dir, PathBuf::from("n1.hearth"));
}

#[test]
fn every_renamed_flag_stands_for_its_new_name_and_both_is_an_error() {
    for (old, new) in RENAMED {
        let kind = lookup(old).unwrap().kind;
        assert_eq!(
            kind,
            lookup(new).unwrap().kind,
            "{old} and {new} differ in type"
        );
        let value = match kind {
            Kind::Bool => "true",
            Kind::Duration => "7s",
            Kind::Uint | Kind::Int => "7",
            Kind::Str => "x:1",
            other => panic!("unexpected kind {other:?}"),
        };
        let v = flags(&[&format!("--{old}={value}")]);
        let eff = Effective { values: &v };
        assert_eq!(eff.name(new), *old);
        assert_eq!(v.get(eff.name(new)), v.get(old));
        let mut n = Notices::default();
        check_renames(&v, &mut n).unwrap();
        if *old != "experimental-peer-skip-client-san-verification" {
            assert!(n.mentions(&format!("--{old} is deprecated")), "{old}");
        }
        let both = flags(&[&format!("--{old}={value}"), &format!("--{new}={value}")]);
        assert_eq!(
            check_renames(&both, &mut Notices::default()).unwrap_err(),
            ConfigError::Invalid(format!(
                "cannot set --{old} and --{new} at the same time, please use --{new} only"
            ))
        );
    }
    // Through to the server's configuration.
    let (c, _) = built(
        &flags(&[
            "--experimental-watch-progress-notify-interval=3s",
            "--experimental-snapshot-catchup-entries=9",
        ]),
        Source::Flags,
    );
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(3));
    assert_eq!(c.snapshot_catchup_entries, 9);
}

#[test]
fn deprecations_are_warned_from_a_file_too() {
    let v = file("snapshot-count: 100\nexperimental-watch-progress-notify-interval: 1000000000\n");
    let mut n = Notices::default();
    build(&v, Source::File, &mut n).unwrap();
    assert!(n.mentions("--snapshot-count is deprecated in 3.6"));
    assert!(n.mentions("--experimental-watch-progress-notify-interval is deprecated in v3.6"));
}

#[test]
fn etcds_checks_and_messages() {
    assert_eq!(
        err(&flags(&["--listen-client-urls=http://127.0.0.1:1"])),
        "--advertise-client-urls is required when --listen-client-urls is set explicitly"
    );
    // A file keeps the default advertise URL, as etcd's does.
    assert!(build(
        &file("listen-client-urls: http://127.0.0.1:1\n"),
        Source::File,
        &mut Notices::default()
    )
    .is_ok());
    assert_eq!(
        err(&flags(&["--election-timeout=400"])),
        "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
    );
    assert_eq!(
        err(&flags(&["--heartbeat-interval=0"])),
        "--heartbeat-interval must be >0 (set to 0ms)"
    );
    assert_eq!(
        err(&flags(&["--election-timeout=60000"])),
        "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
    );
    assert_eq!(
        err(&flags(&["--listen-peer-urls=http://example.com:2380"])),
        "expected IP in URL for binding (http://example.com:2380)"
    );
    assert_eq!(
        err(&flags(&["--auto-compaction-mode=daily"])),
        "unknown auto-compaction-mode \"daily\""
    );
    assert_eq!(
        err(&flags(&["--feature-gates=LeaseCheckpointPersist=true"])),
        "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint"
    );
    assert!(err(&flags(&[
        "--discovery-srv=example.com",
        "--initial-cluster=a=http://127.0.0.1:1"
    ]))
    .starts_with("multiple discovery"));
    assert_eq!(
        err(&flags(&[
            "--tls-min-version=TLS1.3",
            "--tls-max-version=TLS1.2"
        ])),
        "min version (TLS1.3) is greater than max version (TLS1.2)"
    );
    assert_eq!(
        err(&flags(&[
            "--listen-client-urls=https://127.0.0.1:1",
            "--advertise-client-urls=https://127.0.0.1:1"
        ])),
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:1 with HTTPS scheme"
    );
    assert!(err(&flags(&[
        "--warning-unary-request-duration=1s",
        "--experimental-warning-unary-request-duration=1s"
    ]))
    .starts_with("both --experimental-warning-unary-request-duration"));
    assert!(err(&flags(&["--enable-v2=true"])).contains("--enable-v2"));
}

#[test]
fn auto_compaction_flags_reach_the_config() {
    let (c, _) = built(&flags(&["--name=a"]), Source::Flags);
    assert_eq!(c.auto_compaction, None, "etcd's default: off");
    let (c, _) = built(&flags(&["--auto-compaction-retention=2"]), Source::Flags);
    assert_eq!(
        c.auto_compaction,
        Some(compactor::Retention::Periodic(Duration::from_secs(7200))),
        "a bare number is hours"
    );
    let (c, _) = built(
        &flags(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000",
        ]),
        Source::Flags,
    );
    assert_eq!(
        c.auto_compaction,
        Some(compactor::Retention::Revision(1000))
    );
    let (c, _) = built(
        &file("auto-compaction-mode: periodic\nauto-compaction-retention: 30m\n"),
        Source::File,
    );
    assert_eq!(
        c.auto_compaction,
        Some(compactor::Retention::Periodic(Duration::from_secs(1800)))
    );
    assert_eq!(
        err(&flags(&["--auto-compaction-retention=soon"])),
        "error parsing CompactionRetention: time: invalid duration \"soon\""
    );
}

#[test]
fn storage_flags_reach_the_config() {
    let c = resolve(
        &flags(&[
            "--wal-dir=/w",
            "--max-wals=0",
            "--max-snapshots=2",
            "--unsafe-no-fsync",
            "--force-new-cluster",
        ]),
        Source::Flags,
        &mut Notices::default(),
    )
    .unwrap();
    assert_eq!(c.wal_dir.as_deref(), Some(std::path::Path::new("/w")));
    assert_eq!(c.wal_dir(), std::path::PathBuf::from("/w"));
    assert_eq!((c.max_wals, c.max_snapshots), (0, 2));
    assert!(c.unsafe_no_fsync && c.force_new_cluster);
    let d = resolve(&flags(&[]), Source::Flags, &mut Notices::default()).unwrap();
    assert_eq!(d.wal_dir, None);
    assert_eq!(d.wal_dir(), d.data_dir.join("member").join("wal"));
    assert_eq!((d.max_wals, d.max_snapshots), (5, 5));
    assert!(!d.unsafe_no_fsync && !d.force_new_cluster);
}

#[test]
fn flags_not_wired_yet_refuse_the_member_by_name() {
    let e = resolve(
        &flags(&[
            "--discovery=http://d",
            "--memory-mlock",
            "--bootstrap-defrag-threshold-megabytes=5",
        ]),
        Source::Flags,
        &mut Notices::default(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        ConfigError::NotYet(NotSupportedYet(vec![
            "--discovery".into(),
            "--memory-mlock".into(),
            "--bootstrap-defrag-threshold-megabytes".into()
        ]))
    );
    assert_eq!(
        e.to_string(),
        "--discovery is not supported yet; --memory-mlock is not supported yet; --bootstrap-defrag-threshold-megabytes is not supported yet"
    );
    // Defaults given explicitly are fine.
    assert!(resolve(
        &flags(&[
            "--memory-mlock=false",
            "--max-learners=1",
            "--pre-vote=true"
        ]),
        Source::Flags,
        &mut Notices::default()
    )
    .is_ok());
}

#[test]
fn auth_token_options_are_checked_as_etcd_checks_them() {
    assert_eq!(parse_auth_token("simple"), Ok(AuthToken::Simple));
    assert_eq!(
        parse_auth_token("bogus").unwrap_err(),
        "auth: invalid auth options"
    );
    assert_eq!(
        parse_auth_token("jwt,sign-method=RS256,sign-method=RS256").unwrap_err(),
        "auth: invalid auth options"
    );
    assert_eq!(
        parse_auth_token("jwt,color=blue").unwrap_err(),
        "auth: invalid auth options"
    );
    assert_eq!(
        parse_auth_token("jwt,sign-method=XX1").unwrap_err(),
        "auth: invalid auth signature method"
    );
    assert_eq!(
        parse_auth_token("jwt,sign-method=RS256").unwrap_err(),
        "auth: missing key data"
    );
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    std::fs::write(&key, "x").unwrap();
    let t = parse_auth_token(&format!(
        "jwt,pub-key={0},priv-key={0},sign-method=RS256,ttl=10m",
        key.display()
    ))
    .unwrap();
    assert_eq!(
        t,
        AuthToken::Jwt {
            sign_method: "RS256".into(),
            pub_key: Some(key.clone()),
            priv_key: Some(key.clone()),
            ttl: Duration::from_secs(600)
        }
    );
    assert!(
        parse_auth_token("jwt,sign-method=HS256,priv-key=/no/such/file")
            .unwrap_err()
            .starts_with("open /no/such/file")
    );
    let mut n = Notices::default();
    let (c, _) = build(&flags(&["--bcrypt-cost=99"]), Source::Flags, &mut n).unwrap();
    assert_eq!(c.bcrypt_cost, 10);
    assert!(n.mentions("use default bcrypt cost"));
}
