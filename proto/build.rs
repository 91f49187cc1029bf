fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/kolach/dataplane/v1/dataplane.proto",
            "proto/kolach/control/v1/control.proto",
            "proto/kolach/ipam/v1/ipam.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
