//! Generates the sensor.v1 client and server, and the part of the Kubernetes CRI the sensor
//! speaks (runtime.v1), with the protoc shipped in protoc-bin-vendored so that no system protoc
//! is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("sensor_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_protos(
            &[std::path::PathBuf::from("proto/sensor/v1/sensor.proto")],
            &[std::path::PathBuf::from("proto"), well_known],
        )?;
    tonic_prost_build::configure().compile_protos(
        &[std::path::PathBuf::from(
            "proto/cri/runtime/v1/runtime.proto",
        )],
        &[std::path::PathBuf::from("proto")],
    )?;
    println!("cargo::rerun-if-changed=proto");
    Ok(())
}
