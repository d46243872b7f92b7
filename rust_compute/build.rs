//! Generates the gRPC types and service traits from the shared contract in
//! `../proto` into `OUT_DIR` (never committed), plus an encoded descriptor
//! set that server reflection serves.

use std::env;
use std::error::Error;
use std::path::PathBuf;

/// The contract files this service implements. Their imports (buf.validate
/// and the protobuf well-known types) are resolved through the include paths.
const PROTOS: &[&str] = &["../proto/nuell/compute/v1/compute_service.proto"];

/// Directories whose changes must regenerate code. Not the whole `../proto`:
/// it also holds `node_modules`, which would make every npm install rebuild.
const WATCHED: &[&str] = &["../proto/nuell/compute", "../proto/third_party"];

fn main() -> Result<(), Box<dyn Error>> {
    for dir in WATCHED {
        println!("cargo:rerun-if-changed={dir}");
    }

    // A pinned protoc from crates.io, so a build needs no system protoc and
    // every machine generates identical code. Passed to prost directly rather
    // than through `env::set_var("PROTOC", ..)`, which is `unsafe` since
    // edition 2024; the effect on the build is the same.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    // Where the well-known types (descriptor, duration, ...) that
    // buf/validate/validate.proto imports are found.
    let well_known = protoc_bin_vendored::include_path()?;
    let includes = [
        PathBuf::from("../proto"),
        PathBuf::from("../proto/third_party"),
        well_known,
    ];

    let descriptor_path = PathBuf::from(env::var("OUT_DIR")?).join("compute_descriptor.bin");

    tonic_prost_build::configure()
        // The client is used by the black-box tests and is handy for tools.
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(&descriptor_path)
        .compile_with_config(
            config,
            &PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            &includes,
        )?;
    Ok(())
}
