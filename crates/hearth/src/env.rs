//! Flags from the environment, as etcd's `flags.SetFlagsFromEnv`: every flag `--some-flag` can be given
//! as `ETCD_SOME_FLAG`, and as Hearth's own `HEARTH_SOME_FLAG`, which wins over the `ETCD_` one.
//!
//! etcd's rules, kept: a variable only fills a flag the command line did not give, and a variable for a
//! flag the command line *did* give is a fatal conflict ("conflicting environment variable is shadowed
//! by corresponding command-line flag"); an empty variable is not used; `ETCD_VERSION` cannot be set;
//! any other `ETCD_*` (and `HEARTH_*`) variable that matches no flag is warned about by name
//! ("unrecognized environment variable"). `ETCDCTL_*` does not start with `ETCD_` and is left alone.
//! One deviation: etcd's warning prints `NAME=value`; Hearth prints the name only, since a mistyped
//! variable may well hold a password.
//! With `--config-file` the environment is not read at all (etcd's rule), see `etcdmain`.

use std::collections::BTreeSet;

use crate::flags::{parse_value, Origin, Values, FLAGS};
use crate::notice::Notices;

/// The prefixes, strongest first.
pub(crate) const PREFIXES: [&str; 2] = ["HEARTH", "ETCD"];

/// Variables Hearth reads that are not flags (test switches of the server crates).
const NOT_FLAGS: &[&str] = &[
    "HEARTH_FAILPOINTS",
    "HEARTH_TEST_DEFRAG_HOLD",
    "HEARTH_TEST_SNAPSHOT_KILL",
];

/// `PREFIX_SOME_FLAG` for `some-flag` (etcd's `FlagToEnv`).
pub(crate) fn var_name(prefix: &str, flag: &str) -> String {
    format!("{prefix}_{}", flag.replace('-', "_").to_uppercase())
}

/// Fills `values` from `vars` (the process environment, passed in for tests) where the command line left
/// a flag unset. Errors are etcd's (a bad value, or a variable shadowed by a command-line flag).
pub(crate) fn apply(
    values: &mut Values,
    vars: &[(String, String)],
    notices: &mut Notices,
) -> Result<(), String> {
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let on_command_line: BTreeSet<&'static str> = values.explicit().collect();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut shadowed: BTreeSet<String> = BTreeSet::new();
    for flag in FLAGS.iter().filter(|f| f.origin != Origin::FileOnly) {
        if on_command_line.contains(flag.name) {
            for p in PREFIXES {
                shadowed.insert(var_name(p, flag.name));
            }
            continue;
        }
        let mut chosen: Option<(String, &str)> = None;
        for p in PREFIXES {
            let key = var_name(p, flag.name);
            let Some(val) = get(&key).filter(|v| !v.is_empty()) else {
                continue;
            };
            used.insert(key.clone());
            match &chosen {
                None => chosen = Some((key, val)),
                Some((winner, _)) => notices.warn(
                    "environment variable is overridden by the HEARTH_ one",
                    &[
                        ("environment-variable", key.clone()),
                        ("used", winner.clone()),
                    ],
                ),
            }
        }
        let Some((key, val)) = chosen else { continue };
        let v = parse_value(flag.kind, val)
            .map_err(|e| format!("invalid value {val:?} for {key}: {e}"))?;
        notices.info(
            "recognized and used environment variable",
            &[("variable-name", key), ("variable-value", val.to_string())],
        );
        values.set(flag, v);
    }
    for (name, value) in vars {
        if used.contains(name) {
            continue;
        }
        if shadowed.contains(name) {
            return Err(format!(
                "conflicting environment variable {name:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
            ));
        }
        if name == "ETCD_VERSION" || name == "HEARTH_VERSION" {
            notices.warn(
                "cannot set special environment variable",
                &[("key", name.clone()), ("value", value.clone())],
            );
            continue;
        }
        if NOT_FLAGS.contains(&name.as_str()) {
            continue;
        }
        if PREFIXES.iter().any(|p| name.starts_with(&format!("{p}_"))) {
            notices.warn(
                "unrecognized environment variable",
                &[("environment-variable", name.clone())],
            );
        }
    }
    Ok(())
}

/// `--config-file` from the environment (`HEARTH_CONFIG_FILE`, then `ETCD_CONFIG_FILE`), read apart from
/// the others because it decides whether the others are read at all.
pub(crate) fn config_file(vars: &[(String, String)]) -> Option<String> {
    PREFIXES.iter().find_map(|p| {
        let key = var_name(p, "config-file");
        vars.iter()
            .rev()
            .find(|(n, v)| *n == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{parse_args, Command};

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn cmdline(a: &[&str]) -> Values {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        match parse_args(&a, &mut Notices::default()).unwrap() {
            Command::Run(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn etcd_and_hearth_variables_fill_unset_flags_and_hearth_wins() {
        let mut v = cmdline(&["--name=a"]);
        let mut n = Notices::default();
        apply(
            &mut v,
            &vars(&[
                ("ETCD_DATA_DIR", "/etcd"),
                ("HEARTH_DATA_DIR", "/hearth"),
                ("ETCD_SNAPSHOT_COUNT", "5"),
                ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
                ("ETCDCTL_API", "3"),
                ("PATH", "/bin"),
            ]),
            &mut n,
        )
        .unwrap();
        assert_eq!(v.str("name"), "a");
        assert_eq!(v.str("data-dir"), "/hearth");
        assert_eq!(v.uint("snapshot-count"), 5);
        assert_eq!(v.str("initial-cluster-state"), "existing");
        assert!(n.mentions("overridden"));
        assert!(!n.mentions("unrecognized"));
    }

    #[test]
    fn unknown_variables_are_warned_about_by_name_only() {
        let mut v = Values::default();
        let mut n = Notices::default();
        apply(
            &mut v,
            &vars(&[
                ("ETCD_NAMME", "x"),
                ("HEARTH_SECRET_TOKEN", "hunter2"),
                ("HEARTH_FAILPOINTS", "a=off"),
            ]),
            &mut n,
        )
        .unwrap();
        let warned: Vec<String> = n
            .iter()
            .filter(|m| m.msg == "unrecognized environment variable")
            .map(|m| m.fields[0].1.clone())
            .collect();
        assert_eq!(warned, ["ETCD_NAMME", "HEARTH_SECRET_TOKEN"]);
        assert!(!n.mentions("hunter2"));
    }

    #[test]
    fn a_variable_shadowed_by_the_command_line_is_an_error() {
        let mut v = cmdline(&["--name=a"]);
        let e = apply(
            &mut v,
            &vars(&[("ETCD_NAME", "b")]),
            &mut Notices::default(),
        )
        .unwrap_err();
        assert!(
            e.contains("\"ETCD_NAME\" is shadowed by corresponding command-line flag"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_and_special_variables() {
        let e = apply(
            &mut Values::default(),
            &vars(&[("ETCD_MAX_TXN_OPS", "many")]),
            &mut Notices::default(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "invalid value \"many\" for ETCD_MAX_TXN_OPS: parse error"
        );
        let mut n = Notices::default();
        let mut v = Values::default();
        apply(
            &mut v,
            &vars(&[("ETCD_VERSION", "1"), ("ETCD_NAME", "")]),
            &mut n,
        )
        .unwrap();
        assert!(n.mentions("cannot set special environment variable"));
        assert!(!v.is_set("name"));
    }

    #[test]
    fn the_config_file_variable_is_found_apart() {
        assert_eq!(
            config_file(&vars(&[
                ("ETCD_CONFIG_FILE", "/e"),
                ("HEARTH_CONFIG_FILE", "/h")
            ])),
            Some("/h".into())
        );
        assert_eq!(config_file(&vars(&[("ETCD_CONFIG_FILE", "")])), None);
    }
}
