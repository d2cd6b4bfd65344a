//! Every bad input of issue 3 item 3 gives an error naming the tensor and the expected against
//! the actual shape or dtype.

use mha_runtime::{ForwardOptions, Mask, MhaError, MultiheadAttention, MultiheadAttentionConfig};
use ndarray::{ArrayD, IxDyn};

fn zeros(shape: &[usize]) -> ArrayD<f32> {
    ArrayD::zeros(IxDyn(shape))
}

fn layer(config: MultiheadAttentionConfig) -> MultiheadAttention {
    MultiheadAttention::random(config, 0).unwrap()
}

/// forward on (L=3, N=2, E=8) query and (S=5, N=2, E=8) key/value unless overridden.
fn forward_err(
    config: MultiheadAttentionConfig,
    q: &[usize],
    k: &[usize],
    v: &[usize],
    options: &ForwardOptions<'_>,
) -> String {
    let (q, k, v) = (zeros(q), zeros(k), zeros(v));
    layer(config)
        .forward(q.view(), k.view(), v.view(), options)
        .unwrap_err()
        .to_string()
}

fn seq_first() -> MultiheadAttentionConfig {
    MultiheadAttentionConfig::new(8, 2)
}

const Q: &[usize] = &[3, 2, 8];
const KV: &[usize] = &[5, 2, 8];

#[test]
fn query_of_wrong_rank() {
    let none = ForwardOptions::default();
    assert_eq!(
        forward_err(seq_first(), &[8], KV, KV, &none),
        "`query` must be 2-D (L, E) unbatched or 3-D (L, N, E) batched, but got a 1-D tensor"
    );
    assert_eq!(
        forward_err(
            seq_first().with_batch_first(true),
            &[1, 3, 2, 8],
            KV,
            KV,
            &none
        ),
        "`query` must be 2-D (L, E) unbatched or 3-D (N, L, E) batched, but got a 4-D tensor"
    );
}

#[test]
fn key_or_value_of_wrong_rank() {
    let none = ForwardOptions::default();
    assert_eq!(
        forward_err(seq_first(), Q, &[5, 8], KV, &none),
        "`key` must be 3-D (S, N, kdim) like the 3-D query, but got a 2-D tensor"
    );
    assert_eq!(
        forward_err(seq_first(), &[3, 8], &[5, 8], KV, &none),
        "`value` must be 2-D (S, vdim) like the 2-D query, but got a 3-D tensor"
    );
}

#[test]
fn feature_sizes() {
    let none = ForwardOptions::default();
    assert_eq!(
        forward_err(seq_first(), &[3, 2, 7], KV, KV, &none),
        "`query` has shape [3, 2, 7], but expected (L, N, E) with E = embed_dim = 8"
    );
    let kv = seq_first().with_kdim(Some(4)).with_vdim(Some(6));
    assert_eq!(
        forward_err(kv.clone(), Q, &[5, 2, 8], &[5, 2, 6], &none),
        "`key` has shape [5, 2, 8], but expected (S, N, kdim) with kdim = 4"
    );
    assert_eq!(
        forward_err(
            kv.with_batch_first(true),
            &[2, 3, 8],
            &[2, 5, 4],
            &[2, 5, 8],
            &none
        ),
        "`value` has shape [2, 5, 8], but expected (N, S, vdim) with vdim = 6"
    );
}

#[test]
fn mismatched_batch_or_length() {
    let none = ForwardOptions::default();
    assert_eq!(
        forward_err(seq_first(), Q, &[5, 3, 8], &[5, 3, 8], &none),
        "`key` has shape [5, 3, 8], but expected (S, N, kdim) with the query's batch size N = 2"
    );
    assert_eq!(
        forward_err(seq_first(), Q, KV, &[4, 2, 8], &none),
        "`value` has shape [4, 2, 8], but expected (S, N, vdim) with the key's batch size N = 2 and length S = 5"
    );
    assert_eq!(
        forward_err(
            seq_first().with_batch_first(true),
            &[2, 3, 8],
            &[1, 5, 8],
            &[1, 5, 8],
            &none
        ),
        "`key` has shape [1, 5, 8], but expected (N, S, kdim) with the query's batch size N = 2"
    );
}

#[test]
fn key_padding_mask_of_wrong_shape_or_rank() {
    let kpm = ArrayD::from_elem(IxDyn(&[2, 4]), false);
    let options = ForwardOptions::default().with_key_padding_mask(Mask::Bool(kpm.view()));
    assert_eq!(
        forward_err(seq_first(), Q, KV, KV, &options),
        "`key_padding_mask` has shape [2, 4], but expected (N, S) = (2, 5)"
    );
    let kpm = zeros(&[5]);
    let options = ForwardOptions::default().with_key_padding_mask(Mask::Float(kpm.view()));
    assert_eq!(
        forward_err(seq_first(), Q, KV, KV, &options),
        "`key_padding_mask` must be None or 2-D (N, S) for a batched (3-D) query, but got a 1-D tensor"
    );
    let kpm = zeros(&[1, 5]);
    let options = ForwardOptions::default().with_key_padding_mask(Mask::Float(kpm.view()));
    assert_eq!(
        forward_err(seq_first(), &[3, 8], &[5, 8], &[5, 8], &options),
        "`key_padding_mask` must be None or 1-D (S,) for an unbatched (2-D) query, but got a 2-D tensor"
    );
    let kpm = zeros(&[4]);
    let options = ForwardOptions::default().with_key_padding_mask(Mask::Float(kpm.view()));
    assert_eq!(
        forward_err(seq_first(), &[3, 8], &[5, 8], &[5, 8], &options),
        "`key_padding_mask` has shape [4], but expected (S,) = (5,)"
    );
}

#[test]
fn attn_mask_of_wrong_shape_or_rank() {
    let m = ArrayD::from_elem(IxDyn(&[5, 3]), true);
    let options = ForwardOptions::default().with_attn_mask(Mask::Bool(m.view()));
    assert_eq!(
        forward_err(seq_first(), Q, KV, KV, &options),
        "`attn_mask` has shape [5, 3], but expected 2-D (L, S) = (3, 5)"
    );
    let m = zeros(&[2, 3, 5]);
    let options = ForwardOptions::default().with_attn_mask(Mask::Float(m.view()));
    assert_eq!(
        forward_err(seq_first(), Q, KV, KV, &options),
        "`attn_mask` has shape [2, 3, 5], but expected 3-D (N*num_heads, L, S) = (4, 3, 5)"
    );
    let m = zeros(&[4, 3, 5]);
    let options = ForwardOptions::default().with_attn_mask(Mask::Float(m.view()));
    assert_eq!(
        forward_err(seq_first(), &[3, 8], &[5, 8], &[5, 8], &options),
        "`attn_mask` has shape [4, 3, 5], but expected 3-D (num_heads, L, S) = (2, 3, 5)"
    );
    let m = zeros(&[1, 4, 3, 5]);
    let options = ForwardOptions::default().with_attn_mask(Mask::Float(m.view()));
    assert_eq!(
        forward_err(seq_first(), Q, KV, KV, &options),
        "`attn_mask` must be 2-D (L, S) or 3-D (N*num_heads, L, S), but got a 4-D tensor"
    );
}

#[test]
fn is_causal_without_attn_mask_is_torchs_error() {
    let options = ForwardOptions::default().with_is_causal(true);
    assert_eq!(
        forward_err(seq_first(), Q, KV, KV, &options),
        "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method \
         `generate_square_subsequent_mask` to create this mask."
    );
}

#[test]
fn embed_dim_not_divisible_by_num_heads() {
    let err = MultiheadAttention::random(MultiheadAttentionConfig::new(10, 4), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MultiheadAttention: `num_heads` must divide `embed_dim` (10), got 4"
    );
    let err = MultiheadAttention::from_tensors(
        MultiheadAttentionConfig::new(10, 4),
        Vec::<(String, _)>::new(),
    )
    .unwrap_err();
    assert!(matches!(err, MhaError::InvalidConfig(_)));
}

fn good_tensors(config: &MultiheadAttentionConfig) -> Vec<(String, ArrayD<f32>)> {
    config
        .weight_shapes()
        .into_iter()
        .map(|w| (w.name.to_string(), zeros(&w.shape)))
        .collect()
}

#[test]
fn missing_extra_duplicate_and_misshapen_weights() {
    let config = MultiheadAttentionConfig::new(8, 2).with_add_bias_kv(true);
    let mut t = good_tensors(&config);
    t.retain(|(n, _)| n != "bias_v");
    assert_eq!(
        MultiheadAttention::from_tensors(config.clone(), t)
            .unwrap_err()
            .to_string(),
        "missing weight `bias_v` (expected shape [1, 1, 8])"
    );

    let mut t = good_tensors(&config);
    t.push(("q_proj_weight".into(), zeros(&[8, 8])));
    assert_eq!(
        MultiheadAttention::from_tensors(config.clone(), t)
            .unwrap_err()
            .to_string(),
        "unexpected weight `q_proj_weight`: not a parameter of this MultiheadAttention (expected \
         in_proj_weight, in_proj_bias, bias_k, bias_v, out_proj.weight, out_proj.bias)"
    );

    let mut t = good_tensors(&config);
    t.push(("out_proj.weight".into(), zeros(&[8, 8])));
    assert_eq!(
        MultiheadAttention::from_tensors(config.clone(), t)
            .unwrap_err()
            .to_string(),
        "weight `out_proj.weight` is given more than once"
    );

    let mut t = good_tensors(&config);
    t[0].1 = zeros(&[8, 24]);
    assert_eq!(
        MultiheadAttention::from_tensors(config.clone(), t)
            .unwrap_err()
            .to_string(),
        "`in_proj_weight` has shape [8, 24], but expected [24, 8] (3 * embed_dim, embed_dim)"
    );

    let kv = MultiheadAttentionConfig::new(8, 2)
        .with_kdim(Some(3))
        .with_bias(false);
    let mut t = good_tensors(&kv);
    t[1].1 = zeros(&[8, 8]);
    assert_eq!(
        MultiheadAttention::from_tensors(kv, t)
            .unwrap_err()
            .to_string(),
        "`k_proj_weight` has shape [8, 8], but expected [8, 3] (embed_dim, kdim)"
    );
}

#[test]
fn weights_built_by_hand_are_checked() {
    let config = MultiheadAttentionConfig::new(8, 2);
    let mut weights = layer(config.clone()).weights().clone();
    weights.out_proj_bias = None;
    assert_eq!(
        MultiheadAttention::new(config.clone(), weights)
            .unwrap_err()
            .to_string(),
        "missing weight `out_proj.bias` (expected shape [8])"
    );
    let mut weights = layer(config.clone()).weights().clone();
    weights.out_proj_weight = ndarray::Array2::zeros((8, 4));
    assert_eq!(
        MultiheadAttention::new(config, weights)
            .unwrap_err()
            .to_string(),
        "`out_proj.weight` has shape [8, 4], but expected [8, 8] (embed_dim, embed_dim)"
    );
}

#[test]
fn safetensors_prefix_names_the_full_tensor() {
    let config = MultiheadAttentionConfig::new(8, 2);
    let bytes = layer(config.clone()).to_safetensors_bytes().unwrap();
    let err =
        MultiheadAttention::from_safetensors_bytes(config.clone(), &bytes, "encoder.self_attn.")
            .unwrap_err()
            .to_string();
    assert_eq!(
        err,
        "missing weight `encoder.self_attn.in_proj_weight` (expected shape [24, 8]); did you mean \
         `` (no prefix)? (the file holds MultiheadAttention parameters under `` (no prefix))"
    );
    // A file for another config: wrong shapes are named.
    let err =
        MultiheadAttention::from_safetensors_bytes(MultiheadAttentionConfig::new(4, 2), &bytes, "")
            .unwrap_err()
            .to_string();
    assert_eq!(
        err,
        "`in_proj_weight` has shape [24, 8], but expected [12, 4] (3 * embed_dim, embed_dim)"
    );
}

#[test]
fn truncated_or_corrupt_safetensors() {
    let config = MultiheadAttentionConfig::new(8, 2);
    let bytes = layer(config.clone()).to_safetensors_bytes().unwrap();
    let err =
        MultiheadAttention::from_safetensors_bytes(config.clone(), &bytes[..bytes.len() - 10], "")
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("invalid safetensors data: "), "{err}");
    let err = MultiheadAttention::from_safetensors_bytes(config.clone(), &bytes[..5], "")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid safetensors data: "), "{err}");
    let mut corrupt = bytes.clone();
    corrupt[9] = b'#'; // inside the JSON header
    let err = MultiheadAttention::from_safetensors_bytes(config.clone(), &corrupt, "").unwrap_err();
    assert!(matches!(err, MhaError::Safetensors { .. }), "{err}");

    let path =
        std::env::temp_dir().join(format!("mha_truncated_{}.safetensors", std::process::id()));
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = MultiheadAttention::from_safetensors(config.clone(), &path, "")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "invalid safetensors data in `{}`: ",
            path.display()
        )),
        "{err}"
    );
    std::fs::remove_file(&path).ok();
    let err = MultiheadAttention::from_safetensors(config, "/nonexistent/w.safetensors", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read `/nonexistent/w.safetensors`: "),
        "{err}"
    );
}

#[test]
fn weights_of_a_wrong_dtype() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    let config = MultiheadAttentionConfig::new(4, 1).with_bias(false);
    let ints: Vec<u8> = vec![0; 12 * 4 * 4];
    let floats: Vec<u8> = vec![0; 4 * 4 * 4];
    let bools: Vec<u8> = vec![0; 16];
    let file = |in_proj: TensorView<'_>, out: TensorView<'_>| {
        safetensors::serialize(
            vec![("in_proj_weight", in_proj), ("out_proj.weight", out)],
            None,
        )
        .unwrap()
    };
    let bytes = file(
        TensorView::new(Dtype::I32, vec![12, 4], &ints).unwrap(),
        TensorView::new(Dtype::F32, vec![4, 4], &floats).unwrap(),
    );
    assert_eq!(
        MultiheadAttention::from_safetensors_bytes(config.clone(), &bytes, "").unwrap_err().to_string(),
        "`in_proj_weight` has dtype I32, but expected float32 (or float64 / float16 / bfloat16, converted), or bool for a mask"
    );
    let bytes = file(
        TensorView::new(Dtype::F32, vec![12, 4], &ints).unwrap(),
        TensorView::new(Dtype::BOOL, vec![4, 4], &bools).unwrap(),
    );
    assert_eq!(
        MultiheadAttention::from_safetensors_bytes(config.clone(), &bytes, "")
            .unwrap_err()
            .to_string(),
        "`out_proj.weight` has dtype BOOL, but expected float32 (or float64 / float16 / bfloat16)"
    );
    // F64 and BF16 parameters are converted.
    let f64s: Vec<u8> = (0..48)
        .flat_map(|i| (i as f64 * 0.5).to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = (0..16).flat_map(|_| 0x3f80u16.to_le_bytes()).collect(); // 1.0
    let bytes = file(
        TensorView::new(Dtype::F64, vec![12, 4], &f64s).unwrap(),
        TensorView::new(Dtype::BF16, vec![4, 4], &bf16s).unwrap(),
    );
    let layer = MultiheadAttention::from_safetensors_bytes(config, &bytes, "").unwrap();
    assert!(layer.weights().out_proj_weight.iter().all(|&x| x == 1.0));
}
