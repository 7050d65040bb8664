//! The flags Hearth parses but does not act on yet, in one table: a member given one of them with
//! anything but its default refuses to start, naming it ("--wal-dir is not supported yet"), rather than
//! run without what the operator asked for. Whoever wires a feature into the server removes its lines
//! here (the values are already in `server::Config`, see `member`).
//!
//! Also here: etcd flags Hearth will never need (the v2 API and v2 proxy of etcd 3.5). They are accepted
//! with their defaults, which mean "off" in etcd as well, and refused otherwise, as etcd 3.6 refuses them;
//! and two that Hearth cannot honour, refused when set: `--enable-pprof` (Go's runtime profiles) and
//! `--grpc-keepalive-min-time` (h2 cannot enforce a client's minimum ping interval).

use std::collections::BTreeMap;

use crate::flags::Values;

/// When a row is in effect.
enum When {
    /// The flag is set to something other than its default.
    NotDefault,
    /// A feature gate is on (given by `--feature-gates` or its 3.5 `--experimental-*` switch).
    GateOn(&'static str),
    /// A rule of its own.
    If(fn(&Values) -> bool),
}

use When::*;

/// (what to name, when it is in effect). Names are flags (shown as configuration file keys for the
/// settings only a file can give, see `display`).
static NOT_YET: &[(&str, When)] = &[
    // Listeners and HTTP.
    ("enable-grpc-gateway", NotDefault),
    // Raft and peers.
    ("initial-election-tick-advance", NotDefault),
    ("pre-vote", NotDefault),
    ("raft-read-timeout", NotDefault),
    ("raft-write-timeout", NotDefault),
    ("discovery", NotDefault),
    ("discovery-token", NotDefault),
    ("discovery-endpoints", NotDefault),
    ("discovery-dial-timeout", NotDefault),
    ("discovery-request-timeout", NotDefault),
    ("discovery-keepalive-time", NotDefault),
    ("discovery-keepalive-timeout", NotDefault),
    ("discovery-insecure-transport", NotDefault),
    ("discovery-insecure-skip-tls-verify", NotDefault),
    ("discovery-cert", NotDefault),
    ("discovery-key", NotDefault),
    ("discovery-cacert", NotDefault),
    ("discovery-user", NotDefault),
    ("discovery-password", NotDefault),
    ("discovery-proxy", NotDefault),
    ("discovery-srv", NotDefault),
    ("discovery-srv-name", NotDefault),
    ("discovery-config", NotDefault),
    // Storage.
    ("quota-backend-bytes", If(negative_quota)),
    ("memory-mlock", NotDefault),
    ("experimental-memory-mlock", NotDefault),
    ("bootstrap-defrag-threshold-megabytes", NotDefault),
    (
        "experimental-bootstrap-defrag-threshold-megabytes",
        NotDefault,
    ),
    // Leases, defragmentation, downgrades, membership.
    (
        "LeaseCheckpoint",
        GateOn("experimental-enable-lease-checkpoint"),
    ),
    (
        "LeaseCheckpointPersist",
        GateOn("experimental-enable-lease-checkpoint-persist"),
    ),
    (
        "StopGRPCServiceOnDefrag",
        GateOn("experimental-stop-grpc-service-on-defrag"),
    ),
    ("SetMemberLocalAddr", GateOn("")),
    ("downgrade-check-time", NotDefault),
    ("experimental-downgrade-check-time", NotDefault),
    // Distributed tracing.
    ("enable-distributed-tracing", NotDefault),
    ("experimental-enable-distributed-tracing", NotDefault),
    ("distributed-tracing-address", NotDefault),
    ("experimental-distributed-tracing-address", NotDefault),
    ("distributed-tracing-service-name", NotDefault),
    ("experimental-distributed-tracing-service-name", NotDefault),
    ("distributed-tracing-instance-id", NotDefault),
    ("experimental-distributed-tracing-instance-id", NotDefault),
    ("distributed-tracing-sampling-rate", NotDefault),
    ("experimental-distributed-tracing-sampling-rate", NotDefault),
];

/// Configuration file keys for the rows named after file-only settings.
fn display(name: &str) -> String {
    match name {
        "discovery-config" => "discovery-config".into(),
        n => format!("--{n}"),
    }
}

fn negative_quota(v: &Values) -> bool {
    v.int("quota-backend-bytes") < 0
}

/// The settings in effect that Hearth does not implement yet, each named ("--wal-dir",
/// "--feature-gates=InitialCorruptCheck=true", ...), in the table's order.
pub(crate) fn not_yet(values: &Values, gates: &BTreeMap<String, bool>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, when) in NOT_YET {
        match when {
            NotDefault if values.differs_from_default(name) => out.push(display(name)),
            If(f) if f(values) => out.push(display(name)),
            GateOn(switch) if gates.get(*name).copied().unwrap_or(false) => {
                if !switch.is_empty() && values.is_set(switch) {
                    out.push(format!("--{switch}"));
                } else {
                    out.push(format!("--feature-gates={name}=true"));
                }
            }
            _ => {}
        }
    }
    out
}

/// etcd flags for the v2 API and v2 proxy (etcd 3.5), which Hearth will never serve: their defaults
/// are accepted, anything else is an error naming the flag.
pub(crate) fn never(values: &Values) -> Result<(), String> {
    if values.bool("enable-v2") {
        return Err("--enable-v2=true is not supported: Hearth serves the v3 API only (etcd 3.6 removed v2)".into());
    }
    if !values.str("experimental-enable-v2v3").is_empty() {
        return Err("--experimental-enable-v2v3 is not supported: Hearth serves the v3 API only (etcd 3.6 removed v2)".into());
    }
    if values.bool("enable-pprof") {
        return Err("--enable-pprof is not supported: Hearth is not a Go program, it has no Go runtime profiles to serve".into());
    }
    if values.differs_from_default("grpc-keepalive-min-time") {
        return Err("--grpc-keepalive-min-time is not supported: Hearth's HTTP/2 server (h2) answers every client ping and cannot enforce a minimum ping interval".into());
    }
    let proxy = values.str("proxy");
    if proxy != "off" {
        return Err(format!(
            "--proxy={proxy} is not supported: the v2 proxy was removed in etcd 3.6 (use the grpc-proxy)"
        ));
    }
    if values.str("discovery-fallback") == "proxy" {
        return Err(
            "v2 proxy is deprecated, and --discovery-fallback can't be configured as \"proxy\""
                .into(),
        );
    }
    Ok(())
}

/// A member refusing settings it does not implement yet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotSupportedYet(pub Vec<String>);

impl std::fmt::Display for NotSupportedYet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|n| format!("{n} is not supported yet"))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{lookup, parse_args, Command};
    use crate::notice::Notices;

    fn values(a: &[&str]) -> Values {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        match parse_args(&a, &mut Notices::default()).unwrap() {
            Command::Run(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn gates(v: &Values) -> BTreeMap<String, bool> {
        let switches: Vec<(&'static str, bool)> = crate::features::EXPERIMENTAL_FLAG_GATES
            .iter()
            .filter(|(f, _)| v.is_set(f))
            .map(|(f, _)| (*f, v.bool(f)))
            .collect();
        crate::features::resolve(&v.gates(), &switches).unwrap()
    }

    #[test]
    fn every_row_names_a_flag_or_a_gate() {
        for (name, when) in NOT_YET {
            match when {
                GateOn(_) => assert!(
                    crate::features::GATES.iter().any(|g| g.name == *name),
                    "{name}"
                ),
                _ => assert!(lookup(name).is_some(), "{name}"),
            }
        }
    }

    #[test]
    fn the_readme_lists_every_row() {
        let readme = include_str!("../../../README.md");
        for (name, when) in NOT_YET {
            let shown = match when {
                GateOn(_) => format!("`--feature-gates={name}=true`"),
                _ => format!("`{}`", display(name)),
            };
            let tracing_alias = name.contains("distributed-tracing");
            assert!(
                readme.contains(&shown) || tracing_alias,
                "README.md's table of flags not wired yet lacks {shown}"
            );
        }
    }

    #[test]
    fn defaults_and_wired_flags_pass() {
        let v = values(&[
            "--name=a",
            "--snapshot-count=5",
            "--client-cert-auth=false",
            "--tls-min-version=TLS1.2",
            "--quota-backend-bytes=1024",
            "--auto-compaction-retention=1",
            "--auto-compaction-mode=revision",
            "--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true",
            "--corrupt-check-time=1m",
            "--compaction-batch-limit=10",
            "--feature-gates=TxnModeWriteWithSharedBuffer=false",
        ]);
        assert_eq!(not_yet(&v, &gates(&v)), Vec::<String>::new());
    }

    #[test]
    fn settings_not_wired_are_named() {
        let v = values(&[
            "--memory-mlock",
            "--enable-grpc-gateway=false",
            "--feature-gates=LeaseCheckpoint=true",
            "--experimental-stop-grpc-service-on-defrag",
            "--quota-backend-bytes=-1",
        ]);
        assert_eq!(
            not_yet(&v, &gates(&v)),
            [
                "--enable-grpc-gateway",
                "--quota-backend-bytes",
                "--memory-mlock",
                "--feature-gates=LeaseCheckpoint=true",
                "--experimental-stop-grpc-service-on-defrag",
            ]
        );
        assert_eq!(
            NotSupportedYet(vec!["--memory-mlock".into(), "--discovery".into()]).to_string(),
            "--memory-mlock is not supported yet; --discovery is not supported yet"
        );
    }

    #[test]
    fn v2_flags_are_accepted_only_off() {
        assert!(never(&values(&[
            "--enable-v2=false",
            "--proxy=off",
            "--proxy-dial-timeout=5"
        ]))
        .is_ok());
        assert!(never(&values(&["--enable-v2"]))
            .unwrap_err()
            .contains("--enable-v2"));
        assert!(never(&values(&["--proxy=on"]))
            .unwrap_err()
            .contains("--proxy=on"));
        assert!(never(&values(&["--experimental-enable-v2v3=/v2"])).is_err());
        assert!(never(&values(&["--enable-pprof"]))
            .unwrap_err()
            .starts_with("--enable-pprof is not supported"));
        assert!(never(&values(&[
            "--enable-pprof=false",
            "--grpc-keepalive-min-time=5s"
        ]))
        .is_ok());
        assert!(never(&values(&["--grpc-keepalive-min-time=1s"]))
            .unwrap_err()
            .starts_with("--grpc-keepalive-min-time is not supported"));
        assert_eq!(
            never(&values(&["--discovery-fallback=proxy"])).unwrap_err(),
            "v2 proxy is deprecated, and --discovery-fallback can't be configured as \"proxy\""
        );
    }
}
