//! Generates `MultiheadAttentionConfig` from the op spec (specs/multihead_attention.yaml).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mha_gen::Builder::new().rust_only().generate()?;
    Ok(())
}
