//! `hearth`: runs one member, configured as etcd 3.5/3.6 members are (flags, `ETCD_*`/`HEARTH_*`
//! environment, `--config-file`, zap-style logging). Everything is in `etcdmain` and the modules it
//! uses; subcommands, when there are some, are dispatched here before the member's flags are parsed.

#![forbid(unsafe_code)]

mod config_file;
mod env;
mod etcdmain;
mod features;
mod flags;
mod logging;
mod member;
mod notice;
mod unsupported;

fn main() -> std::process::ExitCode {
    etcdmain::main(std::env::args_os().collect())
}
