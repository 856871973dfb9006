//! Compiles the project's own protocol (proto/) with a protoc written in
//! Rust (protox), so a build needs no system protoc. OTLP's protos come from
//! the opentelemetry-proto crate, not from copies here.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["agent_immune/control/v1/control.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
