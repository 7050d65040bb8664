//! Compiles the protocol definitions with `protox` (pure Rust), so building Hearth needs no system protoc.
//!
//! Besides the generated Rust code, the encoded `FileDescriptorSet` of every file (imports
//! included, with source info) is written to `$OUT_DIR/hearth_descriptor.bin` for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/kv.proto",
    "proto/auth.proto",
    "proto/membership.proto",
    "proto/rpc.proto",
    "proto/raft_internal.proto",
    "proto/v3lock.proto",
    "proto/v3election.proto",
    "proto/lease.proto",
    "proto/hearthraft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    for f in PROTOS {
        println!("cargo:rerun-if-changed={f}");
    }

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    std::fs::write(
        out_dir.join("hearth_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
