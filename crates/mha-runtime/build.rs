//! Generates `MultiheadAttentionConfig` and the weight layout `MultiheadAttentionWeight` from the
//! op spec (specs/multihead_attention.yaml).
//!
//! The spec and templates are bundled into mha-gen, so a spec change rebuilds mha-gen and Cargo
//! reruns this script; nothing else in this package needs to rerun it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    mha_gen::Builder::new().rust_only().generate()?;
    Ok(())
}
