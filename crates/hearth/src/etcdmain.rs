//! Starting a member, as etcd's `etcdmain.startEtcdOrProxyV2`: read the command line; then either the
//! configuration file (`--config-file` or `ETCD_CONFIG_FILE`, in which case the other flags and the
//! environment are ignored, as etcd ignores them) or the environment; set up logging from the result;
//! check everything; run the server until a signal.
//!
//! Exit statuses are etcd's: 2 for a command line that does not parse (Go's `flag` package), 1 for a
//! configuration that is refused (logged as "failed to verify flags") or a server that fails.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;
use server::{Config, Hearth};

use crate::flags::{self, Command, UsageError, Values};
use crate::member::{self, ConfigError, Source};
use crate::notice::Notices;
use crate::{config_file, env, logging, runtime};

/// Runs `hearth` with `args` (the program name first).
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mut notices = Notices::default();
    let values = match flags::parse_args(args.get(1..).unwrap_or(&[]), &mut notices) {
        Ok(Command::Help) => {
            print!("{}", flags::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            // etcd prints its version, Git SHA, Go version and OS/arch; Hearth prints its own version
            // and the etcd version whose behaviour it implements (what Status and /version report).
            println!("hearth Version: {}", env!("CARGO_PKG_VERSION"));
            println!("etcd Version: {}", v3rpc::ETCD_VERSION);
            println!("etcd API Version: {}", v3rpc::CLUSTER_VERSION_LABEL);
            println!(
                "OS/Arch: {}/{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(v)) => v,
        Err(UsageError(msg)) => {
            eprintln!("{msg}");
            eprintln!("usage: hearth [flags]; `hearth --help` lists them");
            return ExitCode::from(2);
        }
    };
    let (values, source) = match read_sources(values, &vars, &mut notices) {
        Ok(v) => v,
        Err(e) => return refuse(&notices, &args, &e),
    };
    let log = match logging::config_from(&values) {
        Ok(l) => l,
        Err(e) => return refuse(&notices, &args, &e),
    };
    if let Err(e) = logging::install(&log) {
        return refuse(&notices, &args, &e);
    }
    notices.emit();
    tracing::info!(args = ?args, "Running: ");
    let mut later = Notices::default();
    let cfg = member::resolve(&values, source, &mut later);
    later.emit();
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            if let ConfigError::NotYet(n) = &e {
                for flag in &n.0 {
                    tracing::error!(flag = %flag, "flag is not supported yet");
                }
            }
            tracing::warn!(error = %e, "failed to verify flags");
            return ExitCode::FAILURE;
        }
    };
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hearth stopped");
            ExitCode::FAILURE
        }
    }
}

/// The file, or the command line with the environment.
fn read_sources(
    mut values: Values,
    vars: &[(String, String)],
    notices: &mut Notices,
) -> Result<(Values, Source), String> {
    let file = if values.is_set("config-file") {
        Some(values.str("config-file")).filter(|s| !s.is_empty())
    } else {
        env::config_file(vars)
    };
    match file {
        Some(path) => {
            let v = config_file::load(std::path::Path::new(&path), notices)?;
            notices.info(
                "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided",
                &[("path", path)],
            );
            Ok((v, Source::File))
        }
        None => {
            env::apply(&mut values, vars, notices)?;
            Ok((values, Source::Flags))
        }
    }
}

/// Reports a configuration that cannot even give a logger, with etcd's logger of last resort.
fn refuse(notices: &Notices, args: &[String], error: &str) -> ExitCode {
    logging::install_default();
    notices.emit();
    tracing::info!(args = ?args, "Running: ");
    tracing::warn!(error = %error, "failed to verify flags");
    ExitCode::FAILURE
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    runtime::note_build();
    runtime::build()?.block_on(run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let hearth = Hearth::start(cfg).await.context("hearth failed to start")?;
    for a in hearth.client_addrs() {
        tracing::info!(address = %a, "serving client requests");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => false,
        _ = hearth.failed() => true,
    };
    tracing::info!("stopping");
    match hearth.stop().await {
        // etcd exits cleanly when it was removed from the cluster, after saying so.
        Err(server::RaftError::Removed) => {
            tracing::warn!("the member has been permanently removed from the cluster");
            tracing::warn!("data-dir used by this member must be removed");
            return Ok(());
        }
        r => r.context("hearth stopped with an error")?,
    }
    if failed {
        anyhow::bail!("the raft loop failed; see the log above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn cmdline(a: &[&str]) -> Values {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        match flags::parse_args(&a, &mut Notices::default()).unwrap() {
            Command::Run(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_config_file_wins_over_flags_and_environment_which_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.conf.yml");
        std::fs::write(&path, "name: from-file\nsnapshot-count: 7\n").unwrap();
        let mut n = Notices::default();
        let (v, source) = read_sources(
            cmdline(&[
                &format!("--config-file={}", path.display()),
                "--name=from-flag",
            ]),
            &vars(&[("ETCD_SNAPSHOT_COUNT", "9"), ("ETCD_NO_SUCH", "1")]),
            &mut n,
        )
        .unwrap();
        assert_eq!(source, Source::File);
        assert_eq!(v.str("name"), "from-file");
        assert_eq!(v.uint("snapshot-count"), 7);
        assert!(n.mentions(
            "other configuration command line flags and environment variables will be ignored"
        ));
        // The environment is not read at all, as in etcd: no warning about ETCD_NO_SUCH.
        assert!(!n.mentions("ETCD_NO_SUCH"));

        // ETCD_CONFIG_FILE works the same.
        let (v, source) = read_sources(
            cmdline(&["--name=from-flag"]),
            &vars(&[("ETCD_CONFIG_FILE", &path.display().to_string())]),
            &mut Notices::default(),
        )
        .unwrap();
        assert_eq!(
            (source, v.str("name").as_str()),
            (Source::File, "from-file")
        );
    }

    #[test]
    fn without_a_file_the_command_line_wins_over_the_environment() {
        let (v, source) = read_sources(
            cmdline(&["--name=flag"]),
            &vars(&[("ETCD_DATA_DIR", "/env")]),
            &mut Notices::default(),
        )
        .unwrap();
        assert_eq!(source, Source::Flags);
        assert_eq!(v.str("name"), "flag");
        assert_eq!(v.str("data-dir"), "/env");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = read_sources(
            cmdline(&["--config-file=/no/such/etcd.yml"]),
            &[],
            &mut Notices::default(),
        )
        .unwrap_err();
        assert_eq!(e, "open /no/such/etcd.yml: no such file or directory");
    }
}
