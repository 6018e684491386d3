//! Generates the memd.v1 Rust code and the file descriptor set used by gRPC reflection.
//! protoc comes from `protoc-bin-vendored` unless `PROTOC` is set, so no system package is needed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = ["proto/memd/v1/control.proto", "proto/memd/v1/memory.proto"];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("memd_descriptor.bin"))
        // BTreeMap keeps encoding deterministic, which idempotency hashing relies on.
        .btree_map(".")
        .compile_with_config(config, &protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
