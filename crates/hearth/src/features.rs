//! etcd 3.6's server feature gates (`server/features/etcd_features.go`, `pkg/featuregate`): the gates,
//! their defaults, `--feature-gates` parsing with etcd's errors, and the 3.5 `--experimental-*` switches
//! that 3.6 maps onto gates.

use std::collections::BTreeMap;

use crate::flags::{parse_bool, Gates};

/// One gate.
#[derive(Debug)]
pub(crate) struct Gate {
    pub name: &'static str,
    pub default: bool,
    /// etcd's pre-release stage, as its help prints it.
    pub stage: &'static str,
}

/// etcd 3.6.5's gates, plus the two every feature gate set has (`AllAlpha`, `AllBeta`).
pub(crate) static GATES: &[Gate] = &[
    Gate {
        name: "AllAlpha",
        default: false,
        stage: "ALPHA",
    },
    Gate {
        name: "AllBeta",
        default: false,
        stage: "BETA",
    },
    Gate {
        name: "CompactHashCheck",
        default: false,
        stage: "ALPHA",
    },
    Gate {
        name: "InitialCorruptCheck",
        default: false,
        stage: "ALPHA",
    },
    Gate {
        name: "LeaseCheckpoint",
        default: false,
        stage: "ALPHA",
    },
    Gate {
        name: "LeaseCheckpointPersist",
        default: false,
        stage: "ALPHA",
    },
    Gate {
        name: "SetMemberLocalAddr",
        default: false,
        stage: "ALPHA",
    },
    Gate {
        name: "StopGRPCServiceOnDefrag",
        default: false,
        stage: "ALPHA",
    },
    Gate {
        name: "TxnModeWriteWithSharedBuffer",
        default: true,
        stage: "BETA",
    },
];

/// The 3.5 boolean flags that 3.6 turns into gates.
pub(crate) static EXPERIMENTAL_FLAG_GATES: &[(&str, &str)] = &[
    (
        "experimental-stop-grpc-service-on-defrag",
        "StopGRPCServiceOnDefrag",
    ),
    ("experimental-initial-corrupt-check", "InitialCorruptCheck"),
    (
        "experimental-compact-hash-check-enabled",
        "CompactHashCheck",
    ),
    (
        "experimental-txn-mode-write-with-shared-buffer",
        "TxnModeWriteWithSharedBuffer",
    ),
    ("experimental-enable-lease-checkpoint", "LeaseCheckpoint"),
    (
        "experimental-enable-lease-checkpoint-persist",
        "LeaseCheckpointPersist",
    ),
];

/// Parses `Name=bool,...` as etcd's `featureGate.Set`, checking names against [`GATES`].
pub(crate) fn parse(s: &str) -> Result<Gates, String> {
    let mut pairs: Vec<(String, bool)> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => return Err(format!("missing bool value for {}", part.trim())),
        };
        let b = parse_bool(v).ok_or_else(|| {
            format!(
                "invalid value of {k}={v}, err: strconv.ParseBool: parsing {v:?}: invalid syntax"
            )
        })?;
        if !GATES.iter().any(|g| g.name == k) {
            return Err(format!("unrecognized feature gate: {k}"));
        }
        pairs.retain(|(n, _)| n != k);
        pairs.push((k.to_string(), b));
    }
    Ok(Gates {
        raw: s.to_string(),
        pairs,
    })
}

/// The value of every gate (without `AllAlpha`/`AllBeta`), after `--feature-gates` and the 3.5
/// switches (`explicit_switches`: those set explicitly, with their values), as etcd's
/// `SetFeatureGatesFromExperimentalFlags` computes it; a switch and its gate both given is etcd's error.
pub(crate) fn resolve(
    gates: &Gates,
    explicit_switches: &[(&'static str, bool)],
) -> Result<BTreeMap<String, bool>, String> {
    let mut enabled: BTreeMap<String, bool> = GATES
        .iter()
        .filter(|g| !g.name.starts_with("All"))
        .map(|g| (g.name.to_string(), g.default))
        .collect();
    let mut explicit: Vec<&str> = Vec::new();
    for (name, v) in &gates.pairs {
        match name.as_str() {
            "AllAlpha" | "AllBeta" => {}
            n => {
                enabled.insert(n.to_string(), *v);
                explicit.push(n);
            }
        }
    }
    // AllAlpha/AllBeta set every gate of their stage not named explicitly.
    for (name, v) in &gates.pairs {
        let stage = match name.as_str() {
            "AllAlpha" => "ALPHA",
            "AllBeta" => "BETA",
            _ => continue,
        };
        for g in GATES
            .iter()
            .filter(|g| g.stage == stage && !g.name.starts_with("All"))
        {
            if !explicit.contains(&g.name) {
                enabled.insert(g.name.to_string(), *v);
            }
        }
    }
    for (flag, value) in explicit_switches {
        let Some((_, gate)) = EXPERIMENTAL_FLAG_GATES.iter().find(|(f, _)| f == flag) else {
            continue;
        };
        if gates.raw.contains(gate) {
            let now = enabled.get(*gate).copied().unwrap_or(false);
            return Err(format!(
                "cannot specify both flags: --{flag}={value} and --feature-gates={gate}={now} at the same time, please just use --feature-gates={gate}={now}"
            ));
        }
        enabled.insert(gate.to_string(), *value);
    }
    Ok(enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_etcds() {
        let g = resolve(&parse("").unwrap(), &[]).unwrap();
        assert_eq!(g.len(), 7);
        assert!(g["TxnModeWriteWithSharedBuffer"]);
        assert!(!g["InitialCorruptCheck"]);
    }

    #[test]
    fn gates_parse_with_etcds_errors() {
        let g = parse("InitialCorruptCheck=true, CompactHashCheck=false").unwrap();
        assert_eq!(
            g.pairs,
            [
                ("InitialCorruptCheck".into(), true),
                ("CompactHashCheck".into(), false)
            ]
        );
        assert_eq!(
            parse("Nope=true").unwrap_err(),
            "unrecognized feature gate: Nope"
        );
        assert_eq!(
            parse("InitialCorruptCheck").unwrap_err(),
            "missing bool value for InitialCorruptCheck"
        );
        assert!(parse("InitialCorruptCheck=maybe")
            .unwrap_err()
            .starts_with("invalid value of InitialCorruptCheck=maybe"));
    }

    #[test]
    fn all_alpha_sets_alpha_gates_not_named() {
        let g = resolve(&parse("AllAlpha=true,LeaseCheckpoint=false").unwrap(), &[]).unwrap();
        assert!(g["InitialCorruptCheck"]);
        assert!(!g["LeaseCheckpoint"]);
        assert!(g["TxnModeWriteWithSharedBuffer"]);
    }

    #[test]
    fn experimental_switches_map_to_gates_and_conflict_with_them() {
        let g = resolve(
            &parse("").unwrap(),
            &[("experimental-initial-corrupt-check", true)],
        )
        .unwrap();
        assert!(g["InitialCorruptCheck"]);
        let e = resolve(
            &parse("InitialCorruptCheck=false").unwrap(),
            &[("experimental-initial-corrupt-check", true)],
        )
        .unwrap_err();
        assert_eq!(
            e,
            "cannot specify both flags: --experimental-initial-corrupt-check=true and --feature-gates=InitialCorruptCheck=false at the same time, please just use --feature-gates=InitialCorruptCheck=false"
        );
    }
}
