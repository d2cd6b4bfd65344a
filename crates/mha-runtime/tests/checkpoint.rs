//! A real torch checkpoint (tests/fixtures/torch_checkpoint: an nn.TransformerEncoder state_dict
//! saved with safetensors.torch.save_file) loaded one attention layer at a time by prefix.

use std::path::{Path, PathBuf};

use mha_parity::{compare, Tolerance};
use mha_runtime::{ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
use ndarray::{ArrayD, IxDyn};
use safetensors::SafeTensors;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/torch_checkpoint")
}

fn config() -> MultiheadAttentionConfig {
    MultiheadAttentionConfig::new(16, 4)
        .with_dropout(0.1)
        .with_batch_first(true)
}

fn expected(name: &str) -> ArrayD<f32> {
    let bytes = std::fs::read(dir().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ArrayD::from_shape_vec(IxDyn(t.shape()), values).unwrap()
}

#[test]
fn one_layer_of_a_transformer_encoder_checkpoint_matches_torch() {
    let path = dir().join("encoder.safetensors");
    let layer =
        MultiheadAttention::from_safetensors(config(), &path, "layers.1.self_attn.").unwrap();
    let x = expected("query");
    let options = ForwardOptions::default().with_average_attn_weights(false);
    for out in [
        layer
            .forward(x.view(), x.view(), x.view(), &options)
            .unwrap(),
        layer
            .forward_reference(x.view(), x.view(), x.view(), &options)
            .unwrap(),
    ] {
        let tol = Tolerance::default();
        let c = compare(out.output.view(), expected("attn_output").view(), tol).unwrap();
        assert!(c.passed(), "{c:?}");
        let w = out.weights.unwrap();
        let c = compare(w.view(), expected("attn_weights").view(), tol).unwrap();
        assert!(c.passed(), "{c:?}");
    }
    // Layer 0 is another layer: same file, other prefix, other numbers.
    let first =
        MultiheadAttention::from_safetensors(config(), &path, "layers.0.self_attn.").unwrap();
    assert_ne!(first.weights(), layer.weights());
}

#[test]
fn the_whole_checkpoint_is_not_one_attention_layer() {
    let path = dir().join("encoder.safetensors");
    let err = MultiheadAttention::from_safetensors(config(), &path, "")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "unexpected weight `layers.0.linear1.bias`: not a parameter of this MultiheadAttention"
        ),
        "{err}"
    );
    let err = MultiheadAttention::from_safetensors(config(), &path, "layers.2.self_attn.")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "missing weight `layers.2.self_attn.in_proj_weight` (expected shape [48, 16]); did you mean \
         `layers.0.self_attn.`? (the file holds MultiheadAttention parameters under \
         `layers.0.self_attn.`, `layers.1.self_attn.`)"
    );
}

#[test]
fn a_wrong_prefix_names_the_prefixes_the_file_holds() {
    let path = dir().join("encoder.safetensors");
    let err = |prefix: &str| {
        MultiheadAttention::from_safetensors(config(), &path, prefix)
            .unwrap_err()
            .to_string()
    };
    // The dot forgotten: the layer's own prefix is suggested.
    let e = err("layers.1.self_attn");
    assert!(
        e.starts_with("unexpected weight `layers.1.self_attn.in_proj_bias`"),
        "{e}"
    );
    assert!(
        e.ends_with(
            "; did you mean `layers.1.self_attn.`? (the file holds MultiheadAttention parameters \
             under `layers.0.self_attn.`, `layers.1.self_attn.`)"
        ),
        "{e}"
    );
    // No prefix for a whole model's checkpoint.
    assert!(
        err("").ends_with(
            "; did you mean `layers.0.self_attn.`? (the file holds MultiheadAttention parameters \
             under `layers.0.self_attn.`, `layers.1.self_attn.`)"
        ),
        "{}",
        err("")
    );
    // The right prefix loads.
    MultiheadAttention::from_safetensors(config(), &path, "layers.1.self_attn.").unwrap();
}
