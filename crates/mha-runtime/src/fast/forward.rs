//! The fast forward: packed projections, the fused kernel, the output projection — on a
//! [`PreparedForward`], producing the same [`KernelOutput`] as the reference path.

use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use ndarray::{s, Array3, ArrayD, ArrayView3, IxDyn};
use rayon::prelude::*;

use super::attention::{self, Problem, SeqRef};
use super::projection::PackedLinear;
use super::Isa;
use crate::prepare::{KernelOutput, PreparedForward, WeightsMode};
use crate::{InProjection, MultiheadAttentionConfig, Weights};

/// The layer's weights packed for the fast path (built once, on first use) and a reusable
/// workspace for the projected inputs and the attention output.
#[derive(Default)]
pub(crate) struct FastCache {
    packed: OnceLock<PackedWeights>,
    workspace: Mutex<Vec<f32>>,
}

impl Clone for FastCache {
    /// A fresh, empty cache (the clone packs again on first use).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for FastCache {
    /// Caches never make two layers different.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for FastCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastCache")
            .field("packed", &self.packed.get().is_some())
            .finish()
    }
}

/// The input projections: one `E × 3E` weight when `kdim = vdim = E` (so self-attention is one
/// GEMM), else one per input.
enum InputProjections {
    Packed(PackedLinear),
    Separate {
        q: PackedLinear,
        k: PackedLinear,
        v: PackedLinear,
    },
}

struct PackedWeights {
    input: InputProjections,
    out: PackedLinear,
    /// `bias_k` then a zero row (as configured), `extra × E`.
    extra_k: Vec<f32>,
    extra_v: Vec<f32>,
}

impl PackedWeights {
    fn new(config: &MultiheadAttentionConfig, weights: &Weights) -> Self {
        let e = config.embed_dim;
        let biases = weights.in_proj_bias.as_ref().map(|b| {
            [
                b.slice(s![0..e]),
                b.slice(s![e..2 * e]),
                b.slice(s![2 * e..3 * e]),
            ]
        });
        let bias = |i: usize| biases.as_ref().map(|b| b[i].view());
        let input = match &weights.in_proj {
            InProjection::Packed(w) => InputProjections::Packed(PackedLinear::concat(&[
                (w.slice(s![0..e, ..]), bias(0)),
                (w.slice(s![e..2 * e, ..]), bias(1)),
                (w.slice(s![2 * e..3 * e, ..]), bias(2)),
            ])),
            InProjection::Separate { q, k, v } => InputProjections::Separate {
                q: PackedLinear::concat(&[(q.view(), bias(0))]),
                k: PackedLinear::concat(&[(k.view(), bias(1))]),
                v: PackedLinear::concat(&[(v.view(), bias(2))]),
            },
        };
        let out = PackedLinear::concat(&[(
            weights.out_proj_weight.view(),
            weights.out_proj_bias.as_ref().map(|b| b.view()),
        )]);
        let mut extra_k = Vec::new();
        let mut extra_v = Vec::new();
        if config.add_bias_kv {
            if let (Some(bk), Some(bv)) = (&weights.bias_k, &weights.bias_v) {
                extra_k.extend(bk.iter().copied());
                extra_v.extend(bv.iter().copied());
            }
        }
        if config.add_zero_attn {
            extra_k.extend(std::iter::repeat_n(0.0, e));
            extra_v.extend(std::iter::repeat_n(0.0, e));
        }
        Self {
            input,
            out,
            extra_k,
            extra_v,
        }
    }

    /// The linear and its output columns that project query (0), key (1) or value (2).
    fn projection(&self, which: usize, e: usize) -> (&PackedLinear, Range<usize>) {
        match &self.input {
            InputProjections::Packed(w) => (w, which * e..(which + 1) * e),
            InputProjections::Separate { q, k, v } => ([q, k, v][which], 0..e),
        }
    }
}

/// A `(N, T, C)` input as `N · T` rows of `C` floats in memory order: row `(n, t)` is
/// `n * batch_rows + t * seq_rows`.
struct Rows<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    batch_rows: usize,
    seq_rows: usize,
    count: usize,
}

impl<'a> Rows<'a> {
    fn new(view: ArrayView3<'a, f32>) -> Self {
        let (n, t, c) = view.dim();
        let strides = view.strides();
        let (s0, s1, s2) = (strides[0], strides[1], strides[2]);
        let ci = c as isize;
        let dense = if n * t * c == 0 || (c > 1 && s2 != 1) {
            None
        } else if n == 1 && t == 1 {
            Some((0, 0))
        } else if n == 1 {
            (s1 == ci).then_some((0, 1))
        } else if t == 1 {
            (s0 == ci).then_some((1, 0))
        } else if s1 == ci && s0 == ci * t as isize {
            Some((t, 1))
        } else if s0 == ci && s1 == ci * n as isize {
            Some((1, n))
        } else {
            None
        };
        match dense {
            Some((batch_rows, seq_rows)) => {
                // SAFETY: the strides say the view covers exactly n·t·c contiguous floats
                // starting at its first element (all strides non-negative).
                let data = unsafe { std::slice::from_raw_parts(view.as_ptr(), n * t * c) };
                Self {
                    data: std::borrow::Cow::Borrowed(data),
                    batch_rows,
                    seq_rows,
                    count: n * t,
                }
            }
            None => {
                let owned: Vec<f32> = view.iter().copied().collect();
                Self {
                    data: std::borrow::Cow::Owned(owned),
                    batch_rows: t,
                    seq_rows: 1,
                    count: n * t,
                }
            }
        }
    }
}

/// Whether two views are the same tensor (so one projection GEMM can serve both).
fn same_tensor(a: &ArrayView3<'_, f32>, b: &ArrayView3<'_, f32>) -> bool {
    a.as_ptr() == b.as_ptr() && a.dim() == b.dim() && a.strides() == b.strides()
}

/// A projected operand: the buffer slot, its row width and column offset.
#[derive(Clone, Copy)]
struct Slot {
    start: usize,
    width: usize,
    offset: usize,
}

/// Copies `src` (`n` batches of `len` positions, `heads` heads of `head_dim` features) into
/// `dst` as `(n, head, position, feature)`, one rayon task per `(n, head)`.
fn copy_head_major(
    src: &SeqRef<'_>,
    n: usize,
    len: usize,
    heads: usize,
    head_dim: usize,
    dst: &mut [f32],
) {
    dst[..n * heads * len * head_dim]
        .par_chunks_mut(len * head_dim)
        .enumerate()
        .for_each(|(nh, chunk)| {
            let (b, h) = (nh / heads, nh % heads);
            for (t, row) in chunk.chunks_exact_mut(head_dim).enumerate() {
                let at =
                    src.offset + b * src.batch_stride + t * src.row_stride + h * src.head_stride;
                row.copy_from_slice(&src.data[at..at + head_dim]);
            }
        });
}

/// The operand [`copy_head_major`] wrote.
fn head_major_ref(data: &[f32], len: usize, heads: usize, head_dim: usize) -> SeqRef<'_> {
    SeqRef {
        data,
        offset: 0,
        batch_stride: heads * len * head_dim,
        row_stride: head_dim,
        head_stride: len * head_dim,
    }
}

/// Floats appended to every projected row: a row stride that is a multiple of 2 KiB (3 · 512
/// floats, ...) puts a tile's rows into the same few L1 sets; one cache line more spreads them.
const ROW_PAD: usize = 16;

/// Queries at least this many (8 blocks of [`attention::BLOCK_Q`], each reading every key and
/// value tile) make copying keys and values head-major pay off.
const HEAD_MAJOR_MIN_QUERIES: usize = 1024;

/// Runs the fast path, or `None` for what it does not cover (empty inputs or no keys at all),
/// which the caller sends to the reference path. `HEAD_DIM` is a compile-time head
/// dimension for the kernels' inner loops; 0, or a value that is not the layer's head
/// dimension, uses the dynamic kernels.
pub(crate) fn run<const HEAD_DIM: usize>(
    cache: &FastCache,
    config: &MultiheadAttentionConfig,
    weights: &Weights,
    prepared: &PreparedForward<'_>,
    isa: Isa,
) -> Option<KernelOutput> {
    let e = config.embed_dim;
    let heads = config.num_heads;
    let head_dim = e / heads.max(1);
    if HEAD_DIM != 0 && HEAD_DIM != head_dim {
        return run::<0>(cache, config, weights, prepared, isa);
    }
    if HEAD_DIM == 0 && head_dim == 64 {
        return run::<64>(cache, config, weights, prepared, isa);
    }
    let (n, l, s) = (
        prepared.batch_size(),
        prepared.tgt_len(),
        prepared.src_len(),
    );
    let total = prepared.total_src_len();
    if n == 0 || l == 0 || total == 0 || head_dim == 0 {
        return None;
    }
    let packed = cache
        .packed
        .get_or_init(|| PackedWeights::new(config, weights));

    let (query, key, value) = (prepared.query(), prepared.key(), prepared.value());
    let packed_in = matches!(packed.input, InputProjections::Packed(_));
    let self_attention = packed_in && same_tensor(&query, &key) && same_tensor(&key, &value);
    let shared_kv = packed_in && !self_attention && same_tensor(&key, &value);
    let q_rows = Rows::new(query);
    let (k_rows, v_rows) = if self_attention {
        (None, None)
    } else if shared_kv {
        (Some(Rows::new(key)), None)
    } else {
        (Some(Rows::new(key)), Some(Rows::new(value)))
    };
    let mq = q_rows.count;
    let mk = n * s;

    // Workspace layout: [projections | attention output | head-major keys | head-major values].
    let (q_slot, k_slot, v_slot, proj_len) = if self_attention {
        let slot = |offset| Slot {
            start: 0,
            width: 3 * e + ROW_PAD,
            offset,
        };
        (slot(0), slot(e), slot(2 * e), mq * (3 * e + ROW_PAD))
    } else if shared_kv {
        let (q_width, kv_width) = (e + ROW_PAD, 2 * e + ROW_PAD);
        let q = Slot {
            start: 0,
            width: q_width,
            offset: 0,
        };
        let kv = |offset| Slot {
            start: mq * q_width,
            width: kv_width,
            offset,
        };
        (q, kv(0), kv(e), mq * q_width + mk * kv_width)
    } else {
        let width = e + ROW_PAD;
        let at = |start| Slot {
            start,
            width,
            offset: 0,
        };
        (
            at(0),
            at(mq * width),
            at(mq * width + mk * width),
            (mq + 2 * mk) * width,
        )
    };
    let needed = proj_len + mq * e + 2 * mk * e;
    let mut guard = cache.workspace.try_lock().ok();
    let mut local = Vec::new();
    let buf: &mut Vec<f32> = match guard.as_deref_mut() {
        Some(shared) => shared,
        None => &mut local,
    };
    if buf.len() < needed {
        buf.resize(needed, 0.0);
    }
    let (proj, rest) = buf.split_at_mut(proj_len);
    let (attn_out, rest) = rest.split_at_mut(mq * e);
    let (k_heads, rest) = rest.split_at_mut(mk * e);
    let v_heads = &mut rest[..mk * e];

    // Input projections.
    let project = |rows: &Rows<'_>, which: usize, slot: Slot, cols_end: usize, proj: &mut [f32]| {
        let (linear, cols) = packed.projection(which, e);
        let cols = cols.start..cols.start + cols_end;
        let in_dim = linear.in_dim();
        linear.apply(
            &rows.data,
            rows.count,
            in_dim,
            cols,
            &mut proj[slot.start..],
            slot.width,
            slot.offset,
        );
    };
    if self_attention {
        project(&q_rows, 0, q_slot, 3 * e, proj);
    } else {
        project(&q_rows, 0, q_slot, e, proj);
        if let Some(k_rows) = &k_rows {
            if shared_kv {
                project(k_rows, 1, k_slot, 2 * e, proj);
            } else if let Some(v_rows) = &v_rows {
                project(k_rows, 1, k_slot, e, proj);
                project(v_rows, 2, v_slot, e, proj);
            }
        }
    }

    let layout_of = |rows: Option<&Rows<'_>>| {
        rows.map_or((q_rows.batch_rows, q_rows.seq_rows), |r| {
            (r.batch_rows, r.seq_rows)
        })
    };
    let k_layout = layout_of(k_rows.as_ref());
    let v_layout = if shared_kv {
        k_layout
    } else {
        layout_of(v_rows.as_ref().or(k_rows.as_ref()))
    };
    let proj: &[f32] = proj;
    let seq = |slot: Slot, (batch_rows, seq_rows): (usize, usize)| SeqRef {
        data: &proj[slot.start..],
        offset: slot.offset,
        batch_stride: batch_rows * slot.width,
        row_stride: seq_rows * slot.width,
        head_stride: head_dim,
    };

    let mask = prepared.mask().map(|m| m.rows());

    // For long queries, keys and values copied head-major (each head's rows contiguous): the
    // kernels then read a tile's rows `head_dim` floats apart instead of a projection row apart.
    let (k, v) = if s > 0 && l >= HEAD_MAJOR_MIN_QUERIES {
        copy_head_major(&seq(k_slot, k_layout), n, s, heads, head_dim, k_heads);
        copy_head_major(&seq(v_slot, v_layout), n, s, heads, head_dim, v_heads);
        (
            head_major_ref(k_heads, s, heads, head_dim),
            head_major_ref(v_heads, s, heads, head_dim),
        )
    } else {
        (seq(k_slot, k_layout), seq(v_slot, v_layout))
    };

    let problem = Problem {
        batch: n,
        heads,
        head_dim,
        q_len: l,
        src_len: s,
        q: seq(q_slot, (q_rows.batch_rows, q_rows.seq_rows)),
        k,
        v,
        extra_k: &packed.extra_k,
        extra_v: &packed.extra_v,
        mask,
        causal: prepared.causal(),
        scale: (1.0 / head_dim as f64).sqrt() as f32,
        fully_masked: prepared.fully_masked_rows(),
        dropout: prepared.dropout(),
    };

    // The output rows in torch's layout: (L, N, E) sequence-first, else (N, L, E).
    let seq_first = prepared.batched() && !config.batch_first;
    let (out_batch_rows, out_seq_rows) = if seq_first { (1, n) } else { (l, 1) };
    let weights_out = match prepared.weights_mode() {
        WeightsMode::None => {
            attention::flash::<HEAD_DIM>(
                isa,
                &problem,
                attn_out,
                out_batch_rows * e,
                out_seq_rows * e,
            );
            None
        }
        mode => {
            let per_head = mode == WeightsMode::PerHead;
            let shape = if per_head {
                vec![n, heads, l, total]
            } else {
                vec![n, l, total]
            };
            let mut w = vec![0.0f32; shape.iter().product()];
            attention::with_weights::<HEAD_DIM>(
                isa,
                &problem,
                attn_out,
                out_batch_rows * e,
                out_seq_rows * e,
                &mut w,
                per_head,
            );
            ArrayD::from_shape_vec(IxDyn(&shape), w).ok()
        }
    };

    let mut output = vec![0.0f32; mq * e];
    packed.out.apply(attn_out, mq, e, 0..e, &mut output, e, 0);
    let output = if seq_first {
        Array3::from_shape_vec((l, n, e), output)
            .ok()?
            .permuted_axes([1, 0, 2])
    } else {
        Array3::from_shape_vec((n, l, e), output).ok()?
    };
    Some(KernelOutput {
        output,
        weights: weights_out,
    })
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use crate::fast::Isa;
    use crate::{
        AttentionOutput, ForwardOptions, Mask, MultiheadAttention, MultiheadAttentionConfig,
    };

    fn input(shape: &[usize], seed: u32) -> ArrayD<f32> {
        let mut state = seed;
        ArrayD::from_shape_simple_fn(IxDyn(shape), || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
    }

    fn assert_close(got: &AttentionOutput, want: &AttentionOutput) {
        for (g, w) in got.output.iter().zip(want.output.iter()) {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{g} vs {w}");
        }
        assert_eq!(got.weights.is_some(), want.weights.is_some());
        if let (Some(gw), Some(ww)) = (&got.weights, &want.weights) {
            for (g, w) in gw.iter().zip(ww.iter()) {
                assert!((g - w).abs() <= 1e-6 + 1e-4 * w.abs(), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn long_queries_with_head_major_keys_match_the_reference() {
        // L >= HEAD_MAJOR_MIN_QUERIES (not a whole number of query blocks): self-attention
        // (batch-first, head_dim 16: values read in place), and separate key / value tensors
        // (sequence-first, bias_k and a zero key, a key-padding mask, weights returned).
        let len = super::HEAD_MAJOR_MIN_QUERIES + 37;
        let layer = MultiheadAttention::random(
            MultiheadAttentionConfig::new(16, 1).with_batch_first(true),
            4,
        )
        .unwrap();
        let x = input(&[1, len, 16], 1);
        let opts = ForwardOptions::default().with_need_weights(false);
        let want = layer
            .forward_reference(x.view(), x.view(), x.view(), &opts)
            .unwrap();
        for isa in Isa::supported() {
            let got = layer
                .forward_with_isa(x.view(), x.view(), x.view(), &opts, isa)
                .unwrap();
            assert_close(&got, &want);
        }

        let config = MultiheadAttentionConfig::new(12, 3)
            .with_add_bias_kv(true)
            .with_add_zero_attn(true);
        let layer = MultiheadAttention::random(config, 5).unwrap();
        let (src, batch) = (40, 2);
        let q = input(&[len, batch, 12], 2);
        let k = input(&[src, batch, 12], 3);
        let v = input(&[src, batch, 12], 4);
        let padding = ArrayD::from_shape_fn(IxDyn(&[batch, src]), |i| i[1] % 7 == 3);
        let opts = ForwardOptions::default().with_key_padding_mask(Mask::Bool(padding.view()));
        let want = layer
            .forward_reference(q.view(), k.view(), v.view(), &opts)
            .unwrap();
        for isa in Isa::supported() {
            let got = layer
                .forward_with_isa(q.view(), k.view(), v.view(), &opts, isa)
                .unwrap();
            assert_close(&got, &want);
        }
    }
}
