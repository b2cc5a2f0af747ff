//! Compiles `schema/artifact.proto` with protox (pure Rust), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=schema/artifact.proto");
    let descriptors = protox::compile(["schema/artifact.proto"], ["schema"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
