//! Compiles the protocol definitions with `protox` (pure Rust), so building Hearth needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/kv.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
