//! `hearth`: runs one member, configured as etcd 3.5/3.6 members are (flags, `ETCD_*`/`HEARTH_*`
//! environment, `--config-file`, zap-style logging), or, as `hearth grpc-proxy start`, etcd's gRPC proxy.
//! Everything is in `etcdmain` and the modules it uses; subcommands are dispatched here before the
//! member's flags are parsed.

#![forbid(unsafe_code)]

mod config_file;
mod env;
mod etcdmain;
mod features;
mod flags;
mod grpc_proxy;
mod logging;
mod member;
mod notice;
mod runtime;
mod unsupported;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "grpc-proxy") {
        return match grpc_proxy::main(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    etcdmain::main(args)
}
