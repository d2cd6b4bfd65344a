//! The fast kernels against the exact reference path on random shapes, masks, flags and
//! non-finite values, on every instruction-set level this CPU runs and on 1, 3 and 8 threads.

use mha_runtime::fast::Isa;
use mha_runtime::{
    generate_square_subsequent_mask, AttentionOutput, Dropout, ForwardOptions, Mask,
    MultiheadAttention, MultiheadAttentionConfig,
};
use ndarray::{Array, Array3, ArrayD, IxDyn};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::pool;

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
    /// Threads of the pool the fast path runs in.
    threads: usize,
    /// A NaN or infinity put into one input: (which: 0 query, 1 key, 2 value, 3 float key
    /// padding mask, 4 float attn_mask; value).
    poison: Option<(u8, f32)>,
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
        (
            prop::sample::select(vec![1usize, 3, 8]),
            prop::option::weighted(
                0.25,
                (
                    0u8..5,
                    prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
                ),
            ),
        ),
    )
        .prop_map(
            |(
                (heads, head_dim, kdim, vdim),
                (bias, add_bias_kv, add_zero_attn, batch_first, batched),
                (batch, tgt_len, src_len, self_attention),
                (key_padding, attn_mask, need_weights, average, dropout, seed),
                (threads, poison),
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
                    threads,
                    // With dropout a row whose one NaN probability is dropped is exact on
                    // neither path's terms, so non-finite values go without it.
                    poison: poison.filter(|_| !dropout),
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
    let mut inputs = Inputs {
        layer,
        query,
        key,
        value,
        key_padding,
        attn_bool,
        attn_float,
    };
    if let Some((which, x)) = c.poison {
        let at = |a: &ArrayD<f32>, rng: &mut ChaCha8Rng| rng.random_range(0..a.len());
        let target = match which {
            0 => Some(&mut inputs.query),
            1 if !c.self_attention => Some(&mut inputs.key),
            2 if !c.self_attention => Some(&mut inputs.value),
            3 if c.key_padding == 2 => inputs.key_padding.as_mut().map(|(_, f)| f),
            4 if matches!(c.attn_mask, 2 | 4) => Some(&mut inputs.attn_float),
            _ => Some(&mut inputs.query),
        };
        if let Some(t) = target {
            let i = at(t, &mut rng);
            if let Some(slot) = t.as_slice_mut().and_then(|s| s.get_mut(i)) {
                *slot = x;
            }
        }
    }
    inputs
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
        } else if w.is_infinite() {
            prop_assert_eq!(g, w, "{} [{}]", what, i);
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
        // Self-attention passes one tensor three times (the fast path's one-GEMM case).
        let (q, k, v) = if c.self_attention {
            (inputs.query.view(), inputs.query.view(), inputs.query.view())
        } else {
            (inputs.query.view(), inputs.key.view(), inputs.value.view())
        };
        let want = inputs.layer.forward_reference(q.clone(), k.clone(), v.clone(), &opts).unwrap();
        for isa in Isa::supported() {
            let got = pool(c.threads).install(|| {
                inputs.layer.forward_with_isa(q.clone(), k.clone(), v.clone(), &opts, isa)
            }).unwrap();
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

/// A non-finite value placed in one input of batch element 1 (query row 1, key / value row
/// `bad_key`, or a mask entry at `(1, bad_key)`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Inject {
    Query(f32),
    Key(f32),
    Value(f32),
    KeyPaddingMask(f32),
    AttnMask(f32),
}

const INJECTIONS: [Inject; 10] = [
    Inject::Key(f32::NAN),
    Inject::KeyPaddingMask(f32::NAN),
    Inject::AttnMask(f32::NAN),
    Inject::AttnMask(f32::INFINITY),
    Inject::Key(f32::NEG_INFINITY),
    Inject::Query(f32::INFINITY),
    Inject::Query(f32::NAN),
    Inject::Value(f32::NAN),
    Inject::Key(f32::INFINITY),
    Inject::Value(f32::NEG_INFINITY),
];

/// One shape of the non-finite grid.
struct Grid {
    embed_dim: usize,
    heads: usize,
    tgt_len: usize,
    src_len: usize,
    batch_first: bool,
    average: bool,
    /// Keys of batch element 1 masked by the key padding mask (so whole tiles are masked).
    padded: std::ops::Range<usize>,
    causal: bool,
    bad_key: usize,
}

const GRIDS: [Grid; 4] = [
    // The example: E=8, H=2, L=3, S=4, N=2, default options.
    Grid {
        embed_dim: 8,
        heads: 2,
        tgt_len: 3,
        src_len: 4,
        batch_first: false,
        average: true,
        padded: 0..0,
        causal: false,
        bad_key: 2,
    },
    // Whole vectors and several key tiles, batch-first, per-head weights.
    Grid {
        embed_dim: 16,
        heads: 2,
        tgt_len: 20,
        src_len: 70,
        batch_first: true,
        average: false,
        padded: 0..0,
        causal: false,
        bad_key: 67,
    },
    // The bad key inside a tile the key padding mask masks entirely.
    Grid {
        embed_dim: 16,
        heads: 2,
        tgt_len: 20,
        src_len: 150,
        batch_first: false,
        average: true,
        padded: 64..128,
        causal: false,
        bad_key: 100,
    },
    // Causal (`is_causal` with need_weights=False): the bad key beyond most queries' diagonal.
    Grid {
        embed_dim: 8,
        heads: 2,
        tgt_len: 140,
        src_len: 140,
        batch_first: true,
        average: true,
        padded: 0..0,
        causal: true,
        bad_key: 135,
    },
];

/// Runs one grid point on every supported ISA; returns how each ISA whose result differs from
/// the reference (NaN pattern or value) differs, ending with `(isa)`.
fn non_finite_case(grid: &Grid, inject: Inject, need_weights: bool) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let config = MultiheadAttentionConfig::new(grid.embed_dim, grid.heads)
        .with_batch_first(grid.batch_first);
    let layer = MultiheadAttention::random(config, 11).unwrap();
    let (n, l, s, e) = (2, grid.tgt_len, grid.src_len, grid.embed_dim);
    let shape = |len: usize| {
        if grid.batch_first {
            vec![n, len, e]
        } else {
            vec![len, n, e]
        }
    };
    let at = |t: usize| {
        if grid.batch_first {
            [1, t]
        } else {
            [t, 1]
        }
    };
    let mut query = uniform(&shape(l), &mut rng);
    let mut key = uniform(&shape(s), &mut rng);
    let mut value = uniform(&shape(s), &mut rng);
    let mut kpm = ArrayD::<f32>::zeros(IxDyn(&[n, s]));
    for j in grid.padded.clone() {
        kpm[[1, j]] = f32::NEG_INFINITY;
    }
    let mut attn = generate_square_subsequent_mask(l).into_dyn();
    if !grid.causal {
        attn = ArrayD::zeros(IxDyn(&[l, s]));
    }
    let [b, t] = at(1);
    let [kb, kt] = at(grid.bad_key);
    match inject {
        Inject::Query(x) => query[[b, t, 0]] = x,
        Inject::Key(x) => key[[kb, kt, 3]] = x,
        Inject::Value(x) => value[[kb, kt, 5]] = x,
        Inject::KeyPaddingMask(x) => kpm[[1, grid.bad_key]] = x,
        Inject::AttnMask(x) => attn[[1, grid.bad_key]] = x,
    }
    let mut opts = ForwardOptions::default()
        .with_need_weights(need_weights)
        .with_average_attn_weights(grid.average);
    let with_kpm = !grid.padded.is_empty() || matches!(inject, Inject::KeyPaddingMask(_));
    if with_kpm {
        opts = opts.with_key_padding_mask(Mask::Float(kpm.view()));
    }
    if grid.causal || matches!(inject, Inject::AttnMask(_)) {
        opts = opts
            .with_attn_mask(Mask::Float(attn.view()))
            .with_is_causal(grid.causal);
    }
    let (q, k, v) = (query.view(), key.view(), value.view());
    let want = layer
        .forward_reference(q.clone(), k.clone(), v.clone(), &opts)
        .unwrap();
    Isa::supported()
        .into_iter()
        .filter_map(|isa| {
            let got = layer
                .forward_with_isa(q.clone(), k.clone(), v.clone(), &opts, isa)
                .unwrap();
            compare(&got, &want, isa)
                .err()
                .map(|e| format!("{e} ({isa})"))
        })
        .collect()
}

/// NaN and infinities in every input, on the example and on shapes that reach whole
/// vectors, several tiles, fully masked tiles and causal tiles: every dispatch path propagates
/// them as the reference (and torch) does.
#[test]
fn non_finite_inputs_propagate_as_in_the_reference() {
    let mut failures = Vec::new();
    for (g, grid) in GRIDS.iter().enumerate() {
        for inject in INJECTIONS {
            for need_weights in [true, false] {
                for isa in non_finite_case(grid, inject, need_weights) {
                    failures.push(format!(
                        "grid {g} {inject:?} need_weights={need_weights}: {isa}"
                    ));
                }
            }
        }
    }
    let count = |grids: &[&str], isa: &str| {
        failures
            .iter()
            .filter(|f| grids.iter().any(|g| f.starts_with(g)) && f.ends_with(&format!("({isa})")))
            .count()
    };
    for isa in Isa::supported() {
        let isa = isa.to_string();
        eprintln!(
            "{isa}: {} of 60 (grids 0-2) and {} of 20 (causal grid 3) differ",
            count(&["grid 0", "grid 1", "grid 2"], &isa),
            count(&["grid 3"], &isa)
        );
    }
    assert!(
        failures.is_empty(),
        "{} differ from the reference:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A causal-triangle `attn_mask` that torch keeps (`need_weights=False`; with a key padding mask,
/// or without `is_causal`, as `nn.TransformerDecoderLayer` passes its `tgt_mask`): torch adds the
/// mask (merged with the padding); mha keeps the triangle as causal structure. The reference
/// gives exactly what the same mask written out as a 3-D `attn_mask` gives (NaN for NaN), and
/// the fast path (1 and 3 threads, every ISA) the reference's output, with NaN, infinities and
/// values large enough to overflow a score in a query, a key or the padding (then the fast path
/// writes the triangle out).
#[test]
fn a_causal_triangle_gives_the_output_of_the_mask_written_out() {
    // Where a bad value goes: 0 the query tensor (also the key: self-attention), 1 the value,
    // 2 the padding mask. 0.5 is a control; 3e19 overflows the scores it enters.
    let poisons: [(usize, f32); 9] = [
        (0, 0.5),
        (0, f32::NAN),
        (0, f32::INFINITY),
        (0, f32::NEG_INFINITY),
        (0, 3e19),
        (1, f32::NAN),
        (1, f32::INFINITY),
        (2, f32::NAN),
        (2, f32::INFINITY),
    ];
    for (round, (len, e, heads, batch_first)) in
        [(9, 8, 2, true), (140, 16, 2, false), (300, 8, 1, true)]
            .into_iter()
            .enumerate()
    {
        let mut rng = ChaCha8Rng::seed_from_u64(round as u64);
        let config = MultiheadAttentionConfig::new(e, heads).with_batch_first(batch_first);
        let layer = MultiheadAttention::random(config, 3).unwrap();
        let n = 3;
        let shape = if batch_first {
            [n, len, e]
        } else {
            [len, n, e]
        };
        let triangle = generate_square_subsequent_mask(len).into_dyn();
        let bool_triangle = triangle.mapv(|x| x == f32::NEG_INFINITY);
        for (p, &(which, x)) in poisons.iter().enumerate() {
            let mut query = uniform(&shape, &mut rng);
            let mut kpm = ArrayD::from_shape_fn(IxDyn(&[n, len]), |d| {
                if d[1] + d[0] * 3 >= len {
                    f32::NEG_INFINITY
                } else {
                    0.25
                }
            });
            // A bad entry near the end of batch element 1: hidden from most queries.
            let (b, t, c) = (1, len - 2, p % e);
            let at = if batch_first { [b, t, c] } else { [t, b, c] };
            let mut value = query.clone();
            match which {
                0 => query[at] = x,
                1 => value[at] = x,
                _ => kpm[[b, t]] = x,
            }
            // (mask, padded, is_causal); the longest sequence (three query blocks) only with
            // padding and is_causal (the whole test takes about a minute in a debug build).
            let masks = [
                (Mask::Float(triangle.view()), true, true),
                (Mask::Bool(bool_triangle.view()), true, true),
                (Mask::Float(triangle.view()), true, false),
                (Mask::Float(triangle.view()), false, false),
                (Mask::Bool(bool_triangle.view()), false, false),
            ];
            let configs = if len > 200 { 2 } else { masks.len() };
            for (attn, padded, causal) in masks.into_iter().take(configs) {
                let padding = padded.then_some(Mask::Float(kpm.view()));
                let opts = ForwardOptions {
                    key_padding_mask: padding,
                    ..ForwardOptions::default()
                        .with_need_weights(false)
                        .with_attn_mask(attn)
                        .with_is_causal(causal)
                };
                // torch's mask, written out: (N·H, L, S), the padding merged in.
                let written = Array3::from_shape_fn((n * heads, len, len), |(g, i, j)| {
                    triangle[[i, j]] + if padded { kpm[[g / heads, j]] } else { 0.0 }
                })
                .into_dyn();
                let written_opts = ForwardOptions::default()
                    .with_need_weights(false)
                    .with_attn_mask(Mask::Float(written.view()));
                let (q, v) = (query.view(), value.view());
                let merged = layer
                    .forward_reference(q.clone(), q.clone(), v.clone(), &written_opts)
                    .unwrap();
                let want = layer
                    .forward_reference(q.clone(), q.clone(), v.clone(), &opts)
                    .unwrap();
                let same = merged
                    .output
                    .iter()
                    .zip(want.output.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                let case = format!("round {round} poison {p} padded {padded} causal {causal}");
                assert!(
                    same,
                    "{case}: the reference differs from the mask written out"
                );
                for threads in [1, 3] {
                    for isa in Isa::supported() {
                        let got = pool(threads)
                            .install(|| {
                                layer.forward_with_isa(q.clone(), q.clone(), v.clone(), &opts, isa)
                            })
                            .unwrap();
                        if let Err(err) = compare(&got, &want, isa) {
                            panic!("{case} on {threads} threads: {err}");
                        }
                    }
                }
            }
        }
    }
}
