//! `--config-file`: etcd's YAML configuration file (`embed.ConfigFromFile`), read into the same
//! [`Values`] as the command line, so a file and the equivalent flags make the same member.
//!
//! etcd reads the file with `sigs.k8s.io/yaml` (YAML turned into JSON, then Go's `encoding/json` into
//! `embed.Config`'s `json` tags). What that means, and what is done here:
//! - Keys are etcd's (`name`, `data-dir`, `listen-client-urls`, `initial-cluster`, `log-outputs`, ...),
//!   matched case-insensitively as Go's JSON decoding matches them. TLS is nested:
//!   `client-transport-security` and `peer-transport-security` hold `cert-file`, `key-file`,
//!   `client-cert-file`, `client-key-file`, `client-cert-auth`, `trusted-ca-file`, `auto-tls`,
//!   `allowed-cn`, `allowed-hostname`, `skip-client-san-verification` (there is no CRL key);
//!   `socket-options` holds `reuse-port` and `reuse-address`.
//! - URL lists are comma-separated strings; `log-outputs` and `cipher-suites` are YAML lists (a comma
//!   string is accepted as well).
//! - Durations are integers of nanoseconds, Go's JSON form of `time.Duration`; Hearth also takes Go's
//!   duration strings (`10m`), which etcd would refuse.
//! - Booleans also take YAML 1.1's `yes`/`no`/`on`/`off`, which etcd's YAML 1.1 parser turns into
//!   booleans (this parser speaks YAML 1.2).
//! - A null value leaves the default, as in Go.
//! - Unknown keys are ignored, as etcd's non-strict decoding ignores them, but warned about by name.
//! - `experimental-snapshot-catch-up-entries` (the key etcd's 3.5 field was given by mistake) and
//!   `experimental-snapshot-catchup-entries` are the same setting, as in etcd 3.6.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use crate::flags::{lookup, parse_value, Kind, Origin, Value, Values};
use crate::notice::Notices;

/// Top-level keys that are not flags of the same name.
const RENAMED: &[(&str, &str)] = &[(
    "experimental-snapshot-catch-up-entries",
    "experimental-snapshot-catchup-entries",
)];

/// Top-level keys etcd's `embed.Config` has no flag for, and which Hearth accepts and ignores (etcd
/// itself only reads them when embedded in a Go program).
const NO_EFFECT: &[&str] = &["grpc-additional-server-options"];

/// Flags that are not keys of etcd's file (they have no `json` tag), so a file cannot set them.
const NOT_KEYS: &[&str] = &[
    "config-file",
    "cert-file",
    "key-file",
    "client-cert-file",
    "client-key-file",
    "client-cert-auth",
    "client-crl-file",
    "client-cert-allowed-hostname",
    "trusted-ca-file",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-file",
    "peer-client-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-auto-tls",
    "peer-crl-file",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "peer-skip-client-san-verification",
    "socket-reuse-port",
    "socket-reuse-address",
    "raft-read-timeout",
    "raft-write-timeout",
    "discovery-token",
    "discovery-endpoints",
    "discovery-dial-timeout",
    "discovery-request-timeout",
    "discovery-keepalive-time",
    "discovery-keepalive-timeout",
    "discovery-insecure-transport",
    "discovery-insecure-skip-tls-verify",
    "discovery-cert",
    "discovery-key",
    "discovery-cacert",
    "discovery-user",
    "discovery-password",
    "client-cert-allowed-cn",
    "client-skip-client-san-verification",
];

/// The nested TLS keys and the flags they set, per side.
const SECURITY_KEYS: &[(&str, &str, &str)] = &[
    // (key, client flag, peer flag)
    ("cert-file", "cert-file", "peer-cert-file"),
    ("key-file", "key-file", "peer-key-file"),
    (
        "client-cert-file",
        "client-cert-file",
        "peer-client-cert-file",
    ),
    ("client-key-file", "client-key-file", "peer-client-key-file"),
    (
        "client-cert-auth",
        "client-cert-auth",
        "peer-client-cert-auth",
    ),
    ("trusted-ca-file", "trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "auto-tls", "peer-auto-tls"),
    (
        "allowed-cn",
        "client-cert-allowed-cn",
        "peer-cert-allowed-cn",
    ),
    (
        "allowed-hostname",
        "client-cert-allowed-hostname",
        "peer-cert-allowed-hostname",
    ),
    (
        "skip-client-san-verification",
        "client-skip-client-san-verification",
        "peer-skip-client-san-verification",
    ),
];

/// Reads the file at `path` into values.
pub(crate) fn load(path: &Path, notices: &mut Notices) -> Result<Values, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("open {}: {}", path.display(), io_text(&e)))?;
    parse(&text, notices)
}

/// Go's wording for the common I/O errors.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Parses the text of a configuration file.
pub(crate) fn parse(text: &str, notices: &mut Notices) -> Result<Values, String> {
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| format!("error converting YAML to JSON: {e}"))?;
    let mut values = Values::default();
    let top = match docs.into_iter().next() {
        None | Some(Yaml::Null) => return Ok(values),
        Some(Yaml::Hash(h)) => h,
        Some(_) => {
            return Err("error unmarshaling JSON: the configuration file is not a mapping".into())
        }
    };
    for (k, v) in top {
        let key = key_text(&k)?;
        match key.as_str() {
            "client-transport-security" | "peer-transport-security" => {
                let peer = key.starts_with("peer");
                for (sk, sv) in section(&key, v)? {
                    let sub = key_text(&sk)?;
                    match SECURITY_KEYS.iter().find(|(k, _, _)| *k == sub) {
                        Some((_, c, p)) => set(
                            &mut values,
                            if peer { p } else { c },
                            &format!("{key}.{sub}"),
                            sv,
                        )?,
                        None => unknown(notices, &format!("{key}.{sub}")),
                    }
                }
            }
            "socket-options" => {
                for (sk, sv) in section(&key, v)? {
                    let sub = key_text(&sk)?;
                    match sub.as_str() {
                        "reuse-port" => set(
                            &mut values,
                            "socket-reuse-port",
                            "socket-options.reuse-port",
                            sv,
                        )?,
                        "reuse-address" => set(
                            &mut values,
                            "socket-reuse-address",
                            "socket-options.reuse-address",
                            sv,
                        )?,
                        _ => unknown(notices, &format!("{key}.{sub}")),
                    }
                }
            }
            "discovery-config" => {
                if !matches!(v, Yaml::Null) {
                    if let Some(f) = lookup("discovery-config") {
                        values.set(f, Value::Str("set".into()));
                    }
                }
            }
            k if NO_EFFECT.contains(&k) => {}
            k => {
                let name = RENAMED
                    .iter()
                    .find(|(from, _)| *from == k)
                    .map(|(_, to)| *to)
                    .unwrap_or(k);
                match lookup(name) {
                    Some(f)
                        if !NOT_KEYS.contains(&name)
                            && !matches!(f.kind, Kind::Ignored)
                            && f.origin != Origin::FileOnly =>
                    {
                        set(&mut values, name, &key, v)?
                    }
                    _ => unknown(notices, &key),
                }
            }
        }
    }
    Ok(values)
}

fn unknown(notices: &mut Notices, key: &str) {
    notices.warn(
        "unrecognized configuration file key; ignoring it",
        &[("key", key.to_string())],
    );
}

fn key_text(k: &Yaml) -> Result<String, String> {
    match k {
        Yaml::String(s) => Ok(s.to_lowercase()),
        other => Err(format!(
            "error unmarshaling JSON: configuration key {other:?} is not a string"
        )),
    }
}

fn section(key: &str, v: Yaml) -> Result<Vec<(Yaml, Yaml)>, String> {
    match v {
        Yaml::Hash(h) => Ok(h.into_iter().collect()),
        Yaml::Null => Ok(Vec::new()),
        _ => Err(format!("invalid {key}")),
    }
}

/// Sets flag `name` from the YAML value of `key`.
fn set(values: &mut Values, name: &str, key: &str, v: Yaml) -> Result<(), String> {
    let Some(flag) = lookup(name) else {
        return Err(format!("no flag for configuration key {key}"));
    };
    let bad = |what: &str| {
        format!(
            "cannot use {} as {what} for configuration key {key:?}",
            show(&v)
        )
    };
    let value = match (flag.kind, &v) {
        (_, Yaml::Null) => return Ok(()),
        (Kind::Bool, Yaml::Boolean(b)) => Value::Bool(*b),
        (Kind::Bool, Yaml::String(s)) => {
            Value::Bool(yaml11_bool(s).ok_or_else(|| bad("a boolean"))?)
        }
        (Kind::Bool, _) => return Err(bad("a boolean")),
        (Kind::Uint | Kind::Uint32, Yaml::Integer(i)) => {
            let max = if flag.kind == Kind::Uint32 {
                u32::MAX as u64
            } else {
                u64::MAX
            };
            match u64::try_from(*i) {
                Ok(u) if u <= max => Value::Uint(u),
                _ => return Err(bad("an unsigned number")),
            }
        }
        (Kind::Uint | Kind::Uint32, _) => return Err(bad("an unsigned number")),
        (Kind::Int, Yaml::Integer(i)) => Value::Int(*i),
        (Kind::Int, _) => return Err(bad("a number")),
        (Kind::Duration, Yaml::Integer(ns)) => {
            let ns = u64::try_from(*ns).map_err(|_| bad("a duration"))?;
            Value::Duration(std::time::Duration::from_nanos(ns))
        }
        (Kind::Duration, Yaml::String(s)) => Value::Duration(
            server::config::parse_go_duration(s)
                .map_err(|e| format!("{} ({e})", bad("a duration")))?,
        ),
        (Kind::Duration, _) => return Err(bad("a duration")),
        (Kind::Strings | Kind::UniqueStrings, Yaml::Array(items)) => {
            let mut out = Vec::new();
            for i in items {
                out.push(scalar(i).ok_or_else(|| bad("a list of strings"))?);
            }
            if flag.kind == Kind::UniqueStrings {
                out.retain(|s| !s.is_empty());
                out.sort();
                out.dedup();
            }
            Value::List(out)
        }
        (kind, other) => {
            let s = scalar(other).ok_or_else(|| bad("a string"))?;
            let s = if name == "initial-cluster-state" && s.is_empty() {
                "new".to_string()
            } else {
                s
            };
            parse_value(kind, &s).map_err(|e| format!("configuration key {key:?}: {e}"))?
        }
    };
    values.set(flag, value);
    Ok(())
}

/// A scalar as the string Go would see for a string field.
fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn show(v: &Yaml) -> String {
    scalar(v)
        .map(|s| format!("{s:?}"))
        .unwrap_or_else(|| "this value".into())
}

/// YAML 1.1's booleans, which etcd's YAML parser knows.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load_str(s: &str) -> (Values, Notices) {
        let mut n = Notices::default();
        let v = parse(s, &mut n).unwrap();
        (v, n)
    }

    #[test]
    fn etcds_keys_are_read() {
        let (v, n) = load_str(
            r#"
name: infra1
data-dir: /var/lib/etcd
listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379
initial-cluster: infra1=http://10.0.0.1:2380
initial-cluster-state: existing
snapshot-count: 5000
heartbeat-interval: 50
election-timeout: 500
strict-reconfig-check: false
watch-progress-notify-interval: 5000000000
log-outputs: [stdout, stderr]
cipher-suites:
  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
feature-gates: InitialCorruptCheck=true
Max-Txn-Ops: 64
client-transport-security:
  cert-file: /c.pem
  client-cert-auth: yes
peer-transport-security:
  cert-file: /p.pem
  allowed-cn: [a, b]
socket-options:
  reuse-port: true
"#,
        );
        assert_eq!(v.str("name"), "infra1");
        assert_eq!(v.str("data-dir"), "/var/lib/etcd");
        assert_eq!(
            v.list("listen-client-urls"),
            ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
        );
        assert_eq!(v.str("initial-cluster-state"), "existing");
        assert_eq!(v.uint("snapshot-count"), 5000);
        assert!(!v.bool("strict-reconfig-check"));
        assert_eq!(
            v.duration("watch-progress-notify-interval"),
            Duration::from_secs(5)
        );
        assert_eq!(v.list("log-outputs"), ["stderr", "stdout"]);
        assert_eq!(v.uint("max-txn-ops"), 64);
        assert_eq!(v.str("cert-file"), "/c.pem");
        assert!(v.bool("client-cert-auth"));
        assert_eq!(v.str("peer-cert-file"), "/p.pem");
        assert_eq!(v.list("peer-cert-allowed-cn"), ["a", "b"]);
        assert!(v.bool("socket-reuse-port"));
        assert_eq!(v.gates().pairs, [("InitialCorruptCheck".to_string(), true)]);
        assert_eq!(n.len(), 0);
    }

    #[test]
    fn unknown_keys_are_ignored_with_a_warning() {
        let (v, n) = load_str("name: a\nno-such-key: 1\nclient-crl-file: /x\nclient-transport-security: {crl-file: /y}\n");
        assert_eq!(v.str("name"), "a");
        assert!(n.mentions("no-such-key"));
        assert!(n.mentions("client-crl-file"));
        assert!(n.mentions("client-transport-security.crl-file"));
        assert!(!v.is_set("client-crl-file"));
    }

    #[test]
    fn durations_nulls_renamed_keys_and_bad_types() {
        let (v, _) = load_str("backend-batch-interval: 10ms\ndata-dir: ~\nexperimental-snapshot-catch-up-entries: 7\n");
        assert_eq!(
            v.duration("backend-batch-interval"),
            Duration::from_millis(10)
        );
        assert!(!v.is_set("data-dir"));
        assert_eq!(v.uint("experimental-snapshot-catchup-entries"), 7);
        let mut n = Notices::default();
        assert!(parse("snapshot-count: many\n", &mut n).is_err());
        assert!(parse("strict-reconfig-check: maybe\n", &mut n).is_err());
        assert!(parse("listen-client-urls: http://x\n", &mut n).is_err());
        assert!(parse("- a\n- b\n", &mut n).is_err());
        assert!(parse("name: [\n", &mut n).is_err());
        assert!(parse("", &mut n).unwrap().explicit().next().is_none());
    }
}
