//! The fast kernels against the exact reference path on random shapes, masks and flags, on
//! every instruction-set level this CPU runs.

use mha_runtime::fast::Isa;
use mha_runtime::{
    generate_square_subsequent_mask, AttentionOutput, Dropout, ForwardOptions, Mask,
    MultiheadAttention, MultiheadAttentionConfig,
};
use ndarray::{Array, ArrayD, IxDyn};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
struct Case {
    heads: usize,
    head_dim: usize,
    kdim: Option<usize>,
    vdim: Option<usize>,
    bias: bool,
    add_bias_kv: bool,
    add_zero_attn: bool,
    batch_first: bool,
    batched: bool,
    batch: usize,
    tgt_len: usize,
    src_len: usize,
    self_attention: bool,
    /// 0 none, 1 bool, 2 float.
    key_padding: u8,
    /// 0 none, 1 bool 2-D, 2 float 2-D, 3 bool 3-D, 4 float 3-D, 5 causal (float, with `is_causal`).
    attn_mask: u8,
    need_weights: bool,
    average: bool,
    dropout: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            1usize..4,
            prop::sample::select(vec![1usize, 2, 5, 8, 16, 64]),
            prop::option::of(1usize..20),
            prop::option::of(1usize..20),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (1usize..4, 1usize..80, 1usize..80, any::<bool>()),
        (
            0u8..3,
            0u8..6,
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.15),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (heads, head_dim, kdim, vdim),
                (bias, add_bias_kv, add_zero_attn, batch_first, batched),
                (batch, tgt_len, src_len, self_attention),
                (key_padding, attn_mask, need_weights, average, dropout, seed),
            )| {
                let self_attention = self_attention && kdim.is_none() && vdim.is_none();
                Case {
                    heads,
                    head_dim,
                    kdim,
                    vdim,
                    bias,
                    add_bias_kv,
                    add_zero_attn,
                    batch_first,
                    batched,
                    batch: if batched { batch } else { 1 },
                    tgt_len,
                    src_len: if self_attention { tgt_len } else { src_len },
                    self_attention,
                    key_padding,
                    attn_mask,
                    need_weights,
                    average,
                    dropout,
                    seed,
                }
            },
        )
}

fn uniform(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f32> {
    Array::from_shape_simple_fn(IxDyn(shape), || rng.random::<f32>() * 2.0 - 1.0)
}

/// Input layout of a `(N, T, C)` tensor for the case.
fn input_shape(c: &Case, len: usize, dim: usize) -> Vec<usize> {
    match (c.batched, c.batch_first) {
        (false, _) => vec![len, dim],
        (true, true) => vec![c.batch, len, dim],
        (true, false) => vec![len, c.batch, dim],
    }
}

fn float_mask_value(rng: &mut ChaCha8Rng) -> f32 {
    match rng.random_range(0..6) {
        0 => f32::NEG_INFINITY,
        1 => -1e9,
        2 => rng.random::<f32>() * 4.0 - 2.0,
        _ => 0.0,
    }
}

struct Inputs {
    layer: MultiheadAttention,
    query: ArrayD<f32>,
    key: ArrayD<f32>,
    value: ArrayD<f32>,
    key_padding: Option<(ArrayD<bool>, ArrayD<f32>)>,
    attn_bool: ArrayD<bool>,
    attn_float: ArrayD<f32>,
}

fn build(c: &Case) -> Inputs {
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
    let e = c.heads * c.head_dim;
    let config = MultiheadAttentionConfig::new(e, c.heads)
        .with_kdim(c.kdim)
        .with_vdim(c.vdim)
        .with_bias(c.bias)
        .with_add_bias_kv(c.add_bias_kv)
        .with_add_zero_attn(c.add_zero_attn)
        .with_batch_first(c.batch_first)
        .with_dropout(if c.dropout { 0.3 } else { 0.0 });
    // Weights on the scale of torch's initialisation (fan-in scaled), biases in [-1, 1].
    let tensors: Vec<(String, ArrayD<f32>)> = config
        .weight_shapes()
        .into_iter()
        .map(|w| {
            let fan_in = if w.shape.len() == 2 {
                w.shape[1] as f32
            } else {
                1.0
            };
            (
                w.name.to_string(),
                uniform(&w.shape, &mut rng) * (3.0 / fan_in).sqrt(),
            )
        })
        .collect();
    let layer = MultiheadAttention::from_tensors(config, tensors).unwrap();
    let query = uniform(&input_shape(c, c.tgt_len, e), &mut rng);
    let (key, value) = if c.self_attention {
        (query.clone(), query.clone())
    } else {
        let key = uniform(&input_shape(c, c.src_len, c.kdim.unwrap_or(e)), &mut rng);
        let value = if c.kdim == c.vdim && rng.random::<bool>() {
            key.clone()
        } else {
            uniform(&input_shape(c, c.src_len, c.vdim.unwrap_or(e)), &mut rng)
        };
        (key, value)
    };
    let kpm_shape = if c.batched {
        vec![c.batch, c.src_len]
    } else {
        vec![c.src_len]
    };
    let key_padding = (c.key_padding > 0).then(|| {
        let b = Array::from_shape_simple_fn(IxDyn(&kpm_shape), || rng.random_range(0..4) == 0);
        let f = Array::from_shape_simple_fn(IxDyn(&kpm_shape), || float_mask_value(&mut rng));
        (b, f)
    });
    let attn_shape = match c.attn_mask {
        3 | 4 => vec![c.batch * c.heads, c.tgt_len, c.src_len],
        _ => vec![c.tgt_len, c.src_len],
    };
    let attn_bool = Array::from_shape_simple_fn(IxDyn(&attn_shape), || rng.random_range(0..4) == 0);
    let attn_float = if c.attn_mask == 5 && c.tgt_len == c.src_len {
        generate_square_subsequent_mask(c.tgt_len).into_dyn()
    } else {
        Array::from_shape_simple_fn(IxDyn(&attn_shape), || float_mask_value(&mut rng))
    };
    Inputs {
        layer,
        query,
        key,
        value,
        key_padding,
        attn_bool,
        attn_float,
    }
}

fn options<'a>(c: &Case, inputs: &'a Inputs) -> ForwardOptions<'a> {
    let mut o = ForwardOptions::default()
        .with_need_weights(c.need_weights)
        .with_average_attn_weights(c.average);
    if let Some((b, f)) = &inputs.key_padding {
        o = if c.key_padding == 1 {
            o.with_key_padding_mask(Mask::Bool(b.view()))
        } else {
            o.with_key_padding_mask(Mask::Float(f.view()))
        };
    }
    o = match c.attn_mask {
        1 | 3 => o.with_attn_mask(Mask::Bool(inputs.attn_bool.view())),
        2 | 4 => o.with_attn_mask(Mask::Float(inputs.attn_float.view())),
        5 => o
            .with_attn_mask(Mask::Float(inputs.attn_float.view()))
            .with_is_causal(c.tgt_len == c.src_len),
        _ => o,
    };
    if c.dropout {
        o = o.with_training(Some(Dropout {
            seed: c.seed ^ 0x5eed,
        }));
    }
    o
}

fn close(got: &ArrayD<f32>, want: &ArrayD<f32>, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{} shape", what);
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        if w.is_nan() {
            prop_assert!(
                g.is_nan(),
                "{} [{}]: {} where the reference has NaN",
                what,
                i,
                g
            );
        } else {
            prop_assert!(
                (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{} [{}]: {} vs reference {}",
                what,
                i,
                g,
                w
            );
        }
    }
    Ok(())
}

fn compare(got: &AttentionOutput, want: &AttentionOutput, isa: Isa) -> Result<(), TestCaseError> {
    close(&got.output, &want.output, &format!("{isa} output"))?;
    match (&got.weights, &want.weights) {
        (Some(g), Some(w)) => close(g, w, &format!("{isa} weights")),
        (None, None) => Ok(()),
        _ => Err(TestCaseError::fail(format!(
            "{isa}: weights present on one path only"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_matches_the_reference(c in case()) {
        let inputs = build(&c);
        let opts = options(&c, &inputs);
        let (q, k, v) = (inputs.query.view(), inputs.key.view(), inputs.value.view());
        let want = inputs.layer.forward_reference(q.clone(), k.clone(), v.clone(), &opts).unwrap();
        for isa in Isa::supported() {
            let got = inputs.layer.forward_with_isa(q.clone(), k.clone(), v.clone(), &opts, isa).unwrap();
            compare(&got, &want, isa)?;
        }
        let default = inputs.layer.forward(q.clone(), k.clone(), v.clone(), &opts).unwrap();
        compare(&default, &want, mha_runtime::fast::selected_isa())?;
        if c.head_dim == 8 {
            let fixed = inputs.layer.forward_with_head_dim::<8>(q.clone(), k.clone(), v.clone(), &opts).unwrap();
            compare(&fixed, &want, Isa::detected())?;
        }
        if c.head_dim == 64 {
            let fixed = inputs.layer.forward_with_head_dim::<64>(q, k, v, &opts).unwrap();
            compare(&fixed, &want, Isa::detected())?;
        }
    }
}

#[test]
fn a_non_contiguous_input_gives_the_same_result() {
    let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(16, 2), 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let wide = uniform(&[7, 3, 32], &mut rng); // (L, N, 2E): take every other feature
    let query = wide.slice_each_axis(|ax| {
        if ax.axis.index() == 2 {
            ndarray::Slice::new(0, None, 2)
        } else {
            ndarray::Slice::from(..)
        }
    });
    let owned = query.to_owned();
    let opts = ForwardOptions::default();
    let got = layer
        .forward(query.clone(), query.clone(), query, &opts)
        .unwrap();
    let want = layer
        .forward_reference(owned.view(), owned.view(), owned.view(), &opts)
        .unwrap();
    for (g, w) in got.output.iter().zip(want.output.iter()) {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn repeated_calls_reuse_the_workspace_and_agree() {
    let layer = MultiheadAttention::random(
        MultiheadAttentionConfig::new(32, 4).with_batch_first(true),
        1,
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = uniform(&[2, 70, 32], &mut rng);
    let small = uniform(&[1, 5, 32], &mut rng);
    let opts = ForwardOptions::default().with_need_weights(false);
    let first = layer.forward(x.view(), x.view(), x.view(), &opts).unwrap();
    let _ = layer
        .forward(small.view(), small.view(), small.view(), &opts)
        .unwrap();
    let again = layer.forward(x.view(), x.view(), x.view(), &opts).unwrap();
    assert_eq!(first, again);
}
