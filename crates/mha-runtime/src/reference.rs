//! The exact reference path: torch's composite `multi_head_attention_forward`, step by step.
//!
//! Simple loops over `(batch, head, query, key)`, written to be read and trusted rather than to
//! be fast; it is the oracle the fused kernels are tested against. Values are stored in `f32`
//! where torch stores them (projections, scores after the mask is added, probabilities,
//! per-head outputs) and every sum is accumulated in `f64`, so the result is as close to torch's
//! float32 numbers as float32 allows: in particular a mask is added to the scores in `f32`, so a
//! `-1e9` row gives torch's uniform float32 softmax.

use ndarray::{s, Array2, Array3, Array4, ArrayD, ArrayView1, ArrayView2, ArrayViewMut1, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::prepare::{
    Causal, DropoutPlan, FullyMaskedRows, KernelOutput, PreparedForward, WeightsMode,
};
use crate::{MultiheadAttentionConfig, Weights};

/// The attention of a call prepared with `config`, on weights checked against `config`; the
/// result is batch-major (the prepared call's `finish` puts it into torch's layout).
pub(crate) fn attention_checked(
    config: &MultiheadAttentionConfig,
    weights: &Weights,
    prepared: &PreparedForward<'_>,
) -> KernelOutput {
    let e = config.embed_dim;
    let heads = config.num_heads;
    let head_dim = e / heads.max(1);
    let n = prepared.batch_size();
    let l = prepared.tgt_len();
    let [w_q, w_k, w_v] = weights.projection_weights(e);
    let [b_q, b_k, b_v] = match weights.projection_biases(e) {
        Some([bq, bk, bv]) => [Some(bq), Some(bk), Some(bv)],
        None => [None, None, None],
    };
    // torch: q_scaled = q * sqrt(1 / head_dim), the scale rounded to f32.
    let scale = (1.0 / head_dim as f64).sqrt() as f32;

    let mut output = Array3::<f32>::zeros((n, l, e));
    // (N, H, L, S') probabilities, kept when the caller wants weights.
    let mut per_head = (prepared.weights != WeightsMode::None)
        .then(|| Array4::<f32>::zeros((n, heads, l, prepared.total_src_len())));

    for b in 0..n {
        let q = linear(prepared.query.index_axis(Axis(0), b), w_q, b_q);
        let k = append_extra_keys(
            config,
            linear(prepared.key.index_axis(Axis(0), b), w_k, b_k),
            weights.bias_k.as_ref().map(|t| t.slice(s![0, 0, ..])),
        );
        let v = append_extra_keys(
            config,
            linear(prepared.value.index_axis(Axis(0), b), w_v, b_v),
            weights.bias_v.as_ref().map(|t| t.slice(s![0, 0, ..])),
        );
        let mut heads_out = Array2::<f32>::zeros((l, e));
        for h in 0..heads {
            let cols = h * head_dim..(h + 1) * head_dim;
            let mask = prepared.mask.as_ref().map(|m| m.merged(b, h));
            let head = HeadAttention {
                query: q.slice(s![.., cols.clone()]),
                key: k.slice(s![.., cols.clone()]),
                value: v.slice(s![.., cols.clone()]),
                scale,
                mask: mask.as_ref().map(|m| m.view()),
                causal: prepared.causal,
                fully_masked_rows: prepared.fully_masked_rows,
                dropout: prepared.dropout.map(|plan| (plan, (b * heads + h) as u64)),
            };
            let (out, probs) = attend(&head);
            heads_out.slice_mut(s![.., cols]).assign(&out);
            if let Some(w) = per_head.as_mut() {
                w.slice_mut(s![b, h, .., ..]).assign(&probs);
            }
        }
        let projected = linear(
            heads_out.view(),
            weights.out_proj_weight.view(),
            weights.out_proj_bias.as_ref().map(|b| b.view()),
        );
        output.index_axis_mut(Axis(0), b).assign(&projected);
    }

    let weights_out: Option<ArrayD<f32>> = match (prepared.weights, per_head) {
        (WeightsMode::PerHead, Some(w)) => Some(w.into_dyn()),
        (WeightsMode::Averaged, Some(w)) => Some(average_heads(&w).into_dyn()),
        _ => None,
    };
    KernelOutput {
        output,
        weights: weights_out,
    }
}

/// `x Wᵀ + b` for `x` (rows, in) and `w` (out, in), accumulated in f64 and stored in f32.
pub(crate) fn linear(
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    b: Option<ArrayView1<'_, f32>>,
) -> Array2<f32> {
    let (rows, _) = x.dim();
    let (outs, _) = w.dim();
    Array2::from_shape_fn((rows, outs), |(r, o)| {
        let dot: f64 = x
            .row(r)
            .iter()
            .zip(w.row(o))
            .map(|(&a, &c)| f64::from(a) * f64::from(c))
            .sum();
        let bias = b.map_or(0.0, |b| f64::from(b[o]));
        (dot + bias) as f32
    })
}

/// `a · b` for `a` (m, k) and `b` (k, n), accumulated in f64 (NaN and 0 · NaN propagate).
fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    let (m, _) = a.dim();
    let (_, cols) = b.dim();
    Array2::from_shape_fn((m, cols), |(i, j)| {
        a.row(i)
            .iter()
            .zip(b.column(j))
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum::<f64>() as f32
    })
}

/// Appends `bias` (when `add_bias_kv`) and then a zero row (when `add_zero_attn`) to projected
/// keys or values `(S, E)`.
fn append_extra_keys(
    config: &MultiheadAttentionConfig,
    projected: Array2<f32>,
    bias: Option<ArrayView1<'_, f32>>,
) -> Array2<f32> {
    let (s, e) = projected.dim();
    let extra = usize::from(config.add_bias_kv) + usize::from(config.add_zero_attn);
    if extra == 0 {
        return projected;
    }
    let mut out = Array2::<f32>::zeros((s + extra, e));
    out.slice_mut(s![..s, ..]).assign(&projected);
    if let (true, Some(bias)) = (config.add_bias_kv, bias) {
        out.row_mut(s).assign(&bias);
    }
    out
}

/// One head of attention, the exact core both ops run: `softmax(q·scale · kᵀ + mask) · v`.
///
/// `MultiheadAttention` gives it the projected heads, `scaled_dot_product_attention` its inputs.
/// Torch's rounding: `q · scale` and the scores are stored in f32 and the mask is added in f32
/// (`baddbmm(mask, q_scaled, kᵀ)`), so a `-1e9` row gives torch's uniform float32 softmax.
pub(crate) struct HeadAttention<'a> {
    /// `(L, E)`, not yet scaled.
    pub query: ArrayView2<'a, f32>,
    /// `(S, E)`.
    pub key: ArrayView2<'a, f32>,
    /// `(S, Ev)`.
    pub value: ArrayView2<'a, f32>,
    /// Multiplies the query.
    pub scale: f32,
    /// Additive mask `(L or 1, S or 1)`, broadcast over queries and keys.
    pub mask: Option<ArrayView2<'a, f32>>,
    /// Key `j > i` hidden from query `i` (top-left aligned, also when `L != S`), and how.
    pub causal: Causal,
    /// What a row with every key masked gives.
    pub fully_masked_rows: FullyMaskedRows,
    /// Dropout on the probabilities and the generator stream of this head.
    pub dropout: Option<(DropoutPlan, u64)>,
}

/// Runs one head: the output `(L, Ev)` and the probabilities `(L, S)` (after dropout).
pub(crate) fn attend(head: &HeadAttention<'_>) -> (Array2<f32>, Array2<f32>) {
    let q = head.query.mapv(|x| x * head.scale);
    let mut probs = matmul(q.view(), head.key.t());
    for (i, mut row) in probs.rows_mut().into_iter().enumerate() {
        if let Some(mask) = &head.mask {
            row += &mask.row(if mask.nrows() == 1 { 0 } else { i });
        }
        let hidden = row.iter_mut().skip(i + 1);
        match head.causal {
            Causal::Off => {}
            Causal::Hint => hidden.for_each(|x| *x = f32::NEG_INFINITY),
            Causal::Mask => hidden.for_each(|x| *x += f32::NEG_INFINITY),
        }
        softmax_in_place(row, head.fully_masked_rows);
    }
    if let Some((plan, stream)) = head.dropout {
        let (l, s) = probs.dim();
        let keep = keep_mask(plan.p, plan.seed, stream, l, s);
        let scale = 1.0 / (1.0 - plan.p);
        ndarray::Zip::from(&mut probs)
            .and(&keep)
            .for_each(|x, &k| *x = if k { *x * scale } else { 0.0 });
    }
    let out = matmul(probs.view(), head.value);
    (out, probs)
}

/// Softmax of one row in place: `exp(x - max) / sum`, in f64, stored in f32. A row whose entries
/// are all `-inf` becomes NaN or 0 as `fully_masked` says.
pub(crate) fn softmax_in_place(mut row: ArrayViewMut1<'_, f32>, fully_masked: FullyMaskedRows) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY && fully_masked == FullyMaskedRows::Zero {
        row.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let has_nan = row.iter().any(|x| x.is_nan());
    let max = f64::from(max);
    let exps: Vec<f64> = row
        .iter()
        .map(|&x| {
            if has_nan {
                f64::NAN
            } else {
                (f64::from(x) - max).exp()
            }
        })
        .collect();
    let sum: f64 = exps.iter().sum();
    for (slot, e) in row.iter_mut().zip(exps) {
        *slot = (e / sum) as f32;
    }
}

/// The dropout keep mask of head `head` of batch element `batch`: `(L, S')`, `true` = kept.
///
/// The draws come from ChaCha8 seeded with `seed`, on stream `batch * num_heads + head`, one
/// `f32` in `[0, 1)` per probability in row-major order; a probability is kept when its draw is
/// `>= p`. Any kernel that reproduces these draws gives the same training-mode output.
///
/// ```
/// let keep = mha_runtime::dropout_keep_mask(0.5, 7, 0, 1, 2, 3, 4);
/// assert_eq!(keep.dim(), (3, 4));
/// assert_eq!(keep, mha_runtime::dropout_keep_mask(0.5, 7, 0, 1, 2, 3, 4));
/// ```
pub fn dropout_keep_mask(
    p: f32,
    seed: u64,
    batch: usize,
    head: usize,
    num_heads: usize,
    tgt_len: usize,
    src_len: usize,
) -> Array2<bool> {
    keep_mask(p, seed, (batch * num_heads + head) as u64, tgt_len, src_len)
}

/// The keep mask `(L, S)` drawn on one generator stream (see [`dropout_keep_mask`]).
pub(crate) fn keep_mask(p: f32, seed: u64, stream: u64, l: usize, s: usize) -> Array2<bool> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    Array2::from_shape_simple_fn((l, s), || rng.random::<f32>() >= p)
}

/// `(N, H, L, S')` → `(N, L, S')`, the mean over heads (sum in f64).
fn average_heads(w: &Array4<f32>) -> Array3<f32> {
    let (n, h, l, s) = w.dim();
    Array3::from_shape_fn((n, l, s), |(b, i, j)| {
        let sum: f64 = (0..h).map(|hh| f64::from(w[[b, hh, i, j]])).sum();
        (sum / h as f64) as f32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn softmax_of_a_fully_masked_row_is_nan_or_zero_as_asked() {
        let mut row = array![0.0f32, f32::NEG_INFINITY];
        softmax_in_place(row.view_mut(), FullyMaskedRows::Nan);
        assert_eq!(row, array![1.0, 0.0]);
        let mut masked = array![f32::NEG_INFINITY, f32::NEG_INFINITY];
        softmax_in_place(masked.view_mut(), FullyMaskedRows::Zero);
        assert_eq!(masked, array![0.0, 0.0]);
        let mut nan = array![f32::NEG_INFINITY, f32::NEG_INFINITY];
        softmax_in_place(nan.view_mut(), FullyMaskedRows::Nan);
        assert!(nan.iter().all(|x| x.is_nan()));
    }
}
