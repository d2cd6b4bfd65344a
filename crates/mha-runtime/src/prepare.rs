//! Input checking and mask normalisation: one forward call turned into the single description
//! ([`PreparedForward`]) that every attention kernel consumes.
//!
//! Everything torch does before the attention itself happens here, in torch's order: the shape
//! checks of `_mha_shape_check` and `multi_head_attention_forward`, the `is_causal` rules,
//! `_canonical_mask` (bool → `-inf`), the padding of both masks for `add_bias_kv` /
//! `add_zero_attn`, and the merge `attn_mask + key_padding_mask` — except for an `attn_mask`
//! that is exactly the causal triangle with no weights asked for, which stays causal structure
//! ([`Causal::Mask`], beside the padding mask if there is one) instead of a mask to add.

use std::ops::Range;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use ndarray::{
    s, Array2, Array3, Array4, ArrayD, ArrayView3, ArrayView4, ArrayViewD, Axis, CowArray, Ix3, Ix4,
};

use crate::{AttentionOutput, ForwardOptions, Mask, MhaError, MultiheadAttentionConfig};

/// An additive mask over the attention scores of every `(batch, head, query)` row, covering the
/// `S' = S + extra_keys` key positions (torch pads the masks with 0 for the appended keys).
///
/// `values` is stored as `(Nm, Hm, Lm, S')` in standard (row-major) layout, where each of `Nm`,
/// `Hm`, `Lm` is either the full size or 1 (broadcast), so a 2-D `attn_mask` stays
/// `(1, 1, L, S')` and a key padding mask alone stays `(N, 1, 1, S')`. With both masks, `values`
/// is the `attn_mask` and `padding` the `(N, S')` key padding mask, and the mask of a row is
/// torch's merge `attn_mask + key_padding_mask`, added up where it is read (the same single
/// addition, never an `(N, H, L, S')` array). A float `attn_mask` in standard layout that needs
/// no padding is the caller's own array (borrowed), as torch passes it on as a view; any other
/// is written once ([`merge`]). Entries are whatever the caller's masks hold (`0`, finite
/// values, `-inf`, and NaN or `+inf`, which make their rows NaN as in torch). Its
/// (crate-private) `rows` view is the one place the broadcast is resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScoreMask<'a> {
    values: CowArray<'a, f32, Ix4>,
    padding: Option<Array2<f32>>,
}

impl<'a> ScoreMask<'a> {
    /// Wraps a `(Nm, Hm, Lm, S')` mask and the `(N, S')` padding added to it, both in standard
    /// layout (as [`merge`] builds them); `None` when the array has no key axis entries
    /// (`S' = 0`) or an empty broadcast axis.
    fn new(values: CowArray<'a, f32, Ix4>, padding: Option<Array2<f32>>) -> Option<Self> {
        if values.shape().contains(&0) {
            return None;
        }
        debug_assert!(values.is_standard_layout());
        debug_assert!(padding
            .as_ref()
            .is_none_or(|p| p.dim().1 == values.dim().3 && p.is_standard_layout()));
        Some(Self { values, padding })
    }

    /// The additive mask of row `(batch, head, query)`: `S'` values.
    ///
    /// # Panics
    /// If an index is beyond its axis (and that axis is not broadcast).
    #[cfg(test)]
    pub(crate) fn row(&self, batch: usize, head: usize, query: usize) -> ndarray::Array1<f32> {
        let (n, h, l, _) = self.values.dim();
        assert!(
            (n == 1 || batch < n) && (h == 1 || head < h) && (l == 1 || query < l),
            "mask row ({batch}, {head}, {query}) outside {:?}",
            self.values.dim()
        );
        self.merged(batch, head)
            .row(if l == 1 { 0 } else { query })
            .to_owned()
    }

    /// The `(Lm, S')` mask of head `head` of batch element `batch`, merged (what the reference
    /// path reads).
    pub(crate) fn merged(&self, batch: usize, head: usize) -> CowArray<'_, f32, ndarray::Ix2> {
        let (nm, hm, _, _) = self.values.dim();
        let values = self.values.slice(s![
            if nm == 1 { 0 } else { batch },
            if hm == 1 { 0 } else { head },
            ..,
            ..
        ]);
        match &self.padding {
            None => CowArray::from(values),
            Some(padding) => CowArray::from(&values + &padding.row(batch)),
        }
    }

    /// The values as flat rows with the broadcast axes' strides 0 (what the kernels read).
    pub(crate) fn rows(&self) -> MaskRows<'_> {
        let (n, h, l, keys) = self.values.dim();
        let stride = |len: usize, step: usize| if len == 1 { 0 } else { step };
        MaskRows {
            data: self
                .values
                .as_slice()
                .expect("ScoreMask::new stores standard layout"),
            batch_stride: stride(n, h * l * keys),
            head_stride: stride(h, l * keys),
            row_stride: stride(l, keys),
            padding: self.padding.as_ref().map(|p| PaddingRows {
                data: p.as_slice().expect("padding rows in standard layout"),
                batch_stride: keys,
            }),
        }
    }

    /// This `(Nm, 1, 1, S')` padding mask merged with the `(L, S')` causal triangle as torch
    /// merges them (the triangle's `0` or `-inf` plus the padding), for batch elements
    /// `batches`: `(batches, 1, L, S')`.
    pub(crate) fn with_causal_triangle(
        &self,
        batches: &Range<usize>,
        l: usize,
    ) -> ScoreMask<'static> {
        debug_assert!(self.padding.is_none(), "a padding mask alone");
        let (nm, _, _, keys) = self.values.dim();
        let values = Array4::from_shape_fn((batches.len(), 1, l, keys), |(b, _, i, j)| {
            let n = if nm == 1 { 0 } else { batches.start + b };
            causal_triangle_entry(i, j) + self.values[[n, 0, 0, j]]
        });
        ScoreMask {
            values: CowArray::from(values),
            padding: None,
        }
    }

    /// The `(1, 1, L, S')` causal triangle alone (`-inf` for key `j > i`, else `0`).
    pub(crate) fn causal_triangle(l: usize, keys: usize) -> ScoreMask<'static> {
        let values =
            Array4::from_shape_fn((1, 1, l, keys), |(_, _, i, j)| causal_triangle_entry(i, j));
        ScoreMask {
            values: CowArray::from(values),
            padding: None,
        }
    }

    /// The largest `|x|` of the finite values of batch elements `batches` of a padding mask
    /// alone, `None` when one is NaN or `+inf` (`-inf` is allowed).
    pub(crate) fn max_abs_without_nan_or_inf(&self, batches: &Range<usize>) -> Option<f32> {
        debug_assert!(self.padding.is_none(), "a padding mask alone");
        let nm = self.values.dim().0;
        let rows = if nm == 1 { 0..1 } else { batches.clone() };
        let mut max = 0.0f32;
        for x in self.values.slice(s![rows, .., .., ..]).iter() {
            if x.is_nan() || *x == f32::INFINITY {
                return None;
            }
            if x.is_finite() {
                max = max.max(x.abs());
            }
        }
        Some(max)
    }

    /// The stored `(Nm, Hm, Lm, S')` array (the `attn_mask` when there is a padding part).
    #[cfg(test)]
    pub(crate) fn values(&self) -> ArrayView4<'_, f32> {
        self.values.view()
    }

    /// The `(N, S')` key padding mask added to [`values`](Self::values), if both were given.
    #[cfg(test)]
    pub(crate) fn padding(&self) -> Option<&Array2<f32>> {
        self.padding.as_ref()
    }
}

/// The causal triangle's entry for query `i`, key `j`: `-inf` when the key is hidden (`j > i`),
/// else `0`.
fn causal_triangle_entry(i: usize, j: usize) -> f32 {
    if j > i {
        f32::NEG_INFINITY
    } else {
        0.0
    }
}

/// A [`ScoreMask`] as the kernels read it: row `(n, h, i)` starts at `n * batch_stride +
/// h * head_stride + i * row_stride` and holds `S'` contiguous values (a stride of 0
/// broadcasts); with `padding`, its row `n` is added to each of them first (torch's merge).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskRows<'a> {
    pub data: &'a [f32],
    pub batch_stride: usize,
    pub head_stride: usize,
    pub row_stride: usize,
    pub padding: Option<PaddingRows<'a>>,
}

/// The key padding part of a merged mask: row `n` (`S'` values) at `n * batch_stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PaddingRows<'a> {
    pub data: &'a [f32],
    pub batch_stride: usize,
}

impl MaskRows<'_> {
    /// Index of the first value of row `(n, h, i)`.
    #[inline(always)]
    pub(crate) fn start(&self, n: usize, h: usize, i: usize) -> usize {
        n * self.batch_stride + h * self.head_stride + i * self.row_stride
    }

    /// The rows of batch elements `n..` (all of them when the mask broadcasts over the batch).
    pub(crate) fn starting_at_batch(self, n: usize) -> Self {
        Self {
            data: &self.data[n * self.batch_stride..],
            padding: self.padding.map(|p| PaddingRows {
                data: &p.data[n * p.batch_stride..],
                ..p
            }),
            ..self
        }
    }

    /// Pointer to the first value of row `(n, h, i)` (in bounds when the indices are), without
    /// the padding.
    #[inline(always)]
    pub(crate) fn row_ptr(&self, n: usize, h: usize, i: usize) -> *const f32 {
        self.data.as_ptr().wrapping_add(self.start(n, h, i))
    }

    /// Pointer to batch element `n`'s padding row, if there is a padding part.
    #[inline(always)]
    pub(crate) fn padding_ptr(&self, n: usize) -> Option<*const f32> {
        self.padding
            .map(|p| p.data.as_ptr().wrapping_add(n * p.batch_stride))
    }

    /// The merged mask value of row `(n, h, i)` at key `j` (bounds-checked).
    #[inline(always)]
    pub(crate) fn value(&self, n: usize, h: usize, i: usize, j: usize) -> f32 {
        let x = self.data[self.start(n, h, i) + j];
        match self.padding {
            Some(p) => x + p.data[n * p.batch_stride + j],
            None => x,
        }
    }
}

/// Which attention weights the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightsMode {
    /// `need_weights=False`: no weights.
    None,
    /// `(N, L, S')`, the mean over heads.
    Averaged,
    /// `(N, H, L, S')`.
    PerHead,
}

/// What a query row whose keys are all masked (`-inf`) gives, as torch's composite path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullyMaskedRows {
    /// `need_weights=True`: the explicit softmax over all `-inf` is NaN (and so is the output row).
    Nan,
    /// `need_weights=False`: `scaled_dot_product_attention` gives 0 attention for the row.
    Zero,
}

/// Dropout on the attention probabilities, as applied in training mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DropoutPlan {
    /// Probability of zeroing a probability (`0 < p < 1`).
    pub p: f32,
    /// Seed of the generator (see [`Dropout`](crate::Dropout)).
    pub seed: u64,
}

impl DropoutPlan {
    /// The generator of head `head` of batch element `batch`: ChaCha8 seeded with `seed` on
    /// stream `batch * num_heads + head`, one `f32` draw per probability of the `(L, S')`
    /// matrix in row-major order (a probability is kept when its draw is `>= p`).
    pub(crate) fn generator(&self, batch: usize, head: usize, num_heads: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream((batch * num_heads + head) as u64);
        rng
    }
}

/// One forward call, checked and normalised: the inputs as batch-major views, one merged
/// additive mask, the causal flag and what to return. Built only by
/// [`MultiheadAttention::prepare`](crate::MultiheadAttention::prepare), so it is always
/// consistent with the layer's config; consumed by
/// [`reference::attention_checked`](crate::reference::attention_checked) (and by the fast kernels).
#[derive(Debug, Clone)]
pub(crate) struct PreparedForward<'a> {
    pub(crate) config: MultiheadAttentionConfig,
    pub(crate) query: ArrayView3<'a, f32>,
    pub(crate) key: ArrayView3<'a, f32>,
    pub(crate) value: ArrayView3<'a, f32>,
    pub(crate) mask: Option<ScoreMask<'a>>,
    pub(crate) causal: Causal,
    pub(crate) weights: WeightsMode,
    pub(crate) fully_masked_rows: FullyMaskedRows,
    pub(crate) dropout: Option<DropoutPlan>,
    pub(crate) batched: bool,
    pub(crate) batch_first: bool,
}

/// How causal structure (key `j > i` hidden from query `i`, top-left aligned, over all `S'`
/// keys) enters the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Causal {
    /// None.
    Off,
    /// torch's `is_causal` hint as `scaled_dot_product_attention` applies it when torch drops
    /// `attn_mask` (`need_weights=False`, no key padding mask): a hidden key's score is `-inf`,
    /// whatever `q · k` was.
    Hint,
    /// An `attn_mask` that is exactly the causal triangle, kept by torch (with a key padding
    /// mask, or without `is_causal`): a hidden key's score gets `-inf` added after the padding
    /// mask if any, as torch's (merged) mask does (`-inf`, or NaN for a NaN or `+inf` score).
    /// Not materialised as an `(L, S)` mask.
    Mask,
}

/// What an attention kernel computes, batch-major, before the output layout is applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KernelOutput {
    /// `(N, L, E)`: the output after `out_proj`.
    pub output: Array3<f32>,
    /// `(N, L, S')` when [`WeightsMode::Averaged`], `(N, H, L, S')` when
    /// [`WeightsMode::PerHead`], else `None`.
    pub weights: Option<ArrayD<f32>>,
}

impl<'a> PreparedForward<'a> {
    /// `(N, L, E)` (a strided view of a sequence-first input; `N = 1` when unbatched).
    pub(crate) fn query(&self) -> ArrayView3<'a, f32> {
        self.query
    }

    /// `(N, S, kdim)`.
    pub(crate) fn key(&self) -> ArrayView3<'a, f32> {
        self.key
    }

    /// `(N, S, vdim)`.
    pub(crate) fn value(&self) -> ArrayView3<'a, f32> {
        self.value
    }

    /// The padded additive mask over the `S'` keys (its `attn_mask` and key padding parts are
    /// added where they are read), or `None`.
    pub(crate) fn mask(&self) -> Option<&ScoreMask<'a>> {
        self.mask.as_ref()
    }

    /// The causal structure: a [`Causal::Hint`] comes without [`mask`](Self::mask), a
    /// [`Causal::Mask`] with the key padding mask (and no keys appended).
    pub(crate) fn causal(&self) -> Causal {
        self.causal
    }

    /// Which weights to return.
    pub(crate) fn weights_mode(&self) -> WeightsMode {
        self.weights
    }

    /// What a fully masked row gives.
    pub(crate) fn fully_masked_rows(&self) -> FullyMaskedRows {
        self.fully_masked_rows
    }

    /// `Some` in training mode with a positive dropout probability.
    pub(crate) fn dropout(&self) -> Option<DropoutPlan> {
        self.dropout
    }

    /// The input had a batch axis (3-D); else it was 2-D and the outputs drop `N`.
    pub(crate) fn batched(&self) -> bool {
        self.batched
    }

    /// Number of keys attended over: `S' = S + add_bias_kv + add_zero_attn`.
    pub(crate) fn total_src_len(&self) -> usize {
        self.src_len() + self.config.extra_keys()
    }

    /// Batch size `N` (1 when unbatched).
    pub(crate) fn batch_size(&self) -> usize {
        self.query.dim().0
    }

    /// Target length `L`.
    pub(crate) fn tgt_len(&self) -> usize {
        self.query.dim().1
    }

    /// Source length `S`, before `add_bias_kv` / `add_zero_attn` add keys.
    pub(crate) fn src_len(&self) -> usize {
        self.key.dim().1
    }

    /// Puts a kernel's batch-major result into torch's layout: `(L, N, E)` sequence-first,
    /// `(N, L, E)` batch-first, `(L, E)` unbatched; weights lose `N` when unbatched.
    pub(crate) fn finish(&self, result: KernelOutput) -> AttentionOutput {
        let output = if !self.batched {
            result.output.index_axis_move(Axis(0), 0).into_dyn()
        } else if self.batch_first {
            result.output.into_dyn()
        } else {
            // The fast path writes its rows in this layout already: then no copy.
            let seq_first = result.output.permuted_axes([1, 0, 2]);
            if seq_first.is_standard_layout() {
                seq_first.into_dyn()
            } else {
                seq_first.as_standard_layout().into_owned().into_dyn()
            }
        };
        let weights = result.weights.map(|w| {
            if self.batched {
                w
            } else {
                w.index_axis_move(Axis(0), 0)
            }
        });
        AttentionOutput { output, weights }
    }
}

/// Checks one forward call against the config and normalises it (see the module docs).
pub(crate) fn prepare<'a, 'o: 'a>(
    config: &MultiheadAttentionConfig,
    query: ArrayViewD<'a, f32>,
    key: ArrayViewD<'a, f32>,
    value: ArrayViewD<'a, f32>,
    options: &ForwardOptions<'o>,
) -> Result<PreparedForward<'a>, MhaError> {
    let e = config.embed_dim;
    let heads = config.num_heads;
    let kdim = config.kdim_or_default();
    let vdim = config.vdim_or_default();

    // _mha_shape_check: ranks decide batched / unbatched.
    let batched = match query.ndim() {
        3 => true,
        2 => false,
        r => {
            let batched_form = if config.batch_first {
                "(N, L, E)"
            } else {
                "(L, N, E)"
            };
            return Err(MhaError::rank(
                "query",
                format!("2-D (L, E) unbatched or 3-D {batched_form} batched"),
                r,
            ));
        }
    };
    let want = if batched { 3 } else { 2 };
    let form = |dim: &str| -> String {
        if !batched {
            format!("2-D (S, {dim}) like the 2-D query")
        } else if config.batch_first {
            format!("3-D (N, S, {dim}) like the 3-D query")
        } else {
            format!("3-D (S, N, {dim}) like the 3-D query")
        }
    };
    if key.ndim() != want {
        return Err(MhaError::rank("key", form("kdim"), key.ndim()));
    }
    if value.ndim() != want {
        return Err(MhaError::rank("value", form("vdim"), value.ndim()));
    }

    let to_batch_major = |t: ArrayViewD<'a, f32>| -> Result<ArrayView3<'a, f32>, MhaError> {
        let t = if batched { t } else { t.insert_axis(Axis(0)) };
        let shape = t.shape().to_vec();
        let t3 = t
            .into_dimensionality::<Ix3>()
            .map_err(|_| MhaError::rank("input", "3-D", shape.len()))?;
        Ok(if batched && !config.batch_first {
            t3.permuted_axes([1, 0, 2])
        } else {
            t3
        })
    };
    let (q_shape, k_shape, v_shape) = (
        query.shape().to_vec(),
        key.shape().to_vec(),
        value.shape().to_vec(),
    );
    let q = to_batch_major(query)?;
    let k = to_batch_major(key)?;
    let v = to_batch_major(value)?;
    let (n, l, qe) = q.dim();
    let (kn, s, ke) = k.dim();
    let (vn, vs, ve) = v.dim();

    let layout = |seq: &str, dim: String| -> String {
        if !batched {
            format!("({seq}, {dim})")
        } else if config.batch_first {
            format!("(N, {seq}, {dim})")
        } else {
            format!("({seq}, N, {dim})")
        }
    };
    if qe != e {
        return Err(MhaError::shape(
            "query",
            format!("{} with E = embed_dim = {e}", layout("L", "E".into())),
            &q_shape,
        ));
    }
    if ke != kdim {
        return Err(MhaError::shape(
            "key",
            format!("{} with kdim = {kdim}", layout("S", "kdim".into())),
            &k_shape,
        ));
    }
    if ve != vdim {
        return Err(MhaError::shape(
            "value",
            format!("{} with vdim = {vdim}", layout("S", "vdim".into())),
            &v_shape,
        ));
    }
    if kn != n {
        return Err(MhaError::shape(
            "key",
            format!(
                "{} with the query's batch size N = {n}",
                layout("S", "kdim".into())
            ),
            &k_shape,
        ));
    }
    if vn != n || vs != s {
        return Err(MhaError::shape(
            "value",
            format!(
                "{} with the key's batch size N = {n} and length S = {s}",
                layout("S", "vdim".into())
            ),
            &v_shape,
        ));
    }

    let s_total = crate::sizes::check_forward(config, n, l, s, options.need_weights)?;

    // is_causal: torch requires attn_mask, then drops the mask (using the hint instead) only on
    // the scaled_dot_product_attention path with no key padding mask.
    if options.is_causal && options.attn_mask.is_none() {
        return Err(MhaError::CausalWithoutMask);
    }
    let kpm = match &options.key_padding_mask {
        Some(mask) => Some(key_padding_mask(mask, batched, n, s)?),
        None => None,
    };
    // A dropped mask is only rank-checked (`_mha_shape_check`); torch never reads or reshapes
    // it, so neither do we (no copy of an (L, S) mask per call).
    let drop_attn_mask = options.is_causal && kpm.is_none() && !options.need_weights;
    // A mask torch keeps (with a key padding mask, or without `is_causal`, as
    // `nn.TransformerDecoderLayer` passes its `tgt_mask`) that is the causal triangle stays that
    // (appended keys would need a column of its own).
    let triangle = !drop_attn_mask
        && !options.need_weights
        && s_total == s
        && options
            .attn_mask
            .as_ref()
            .is_some_and(|mask| is_causal_triangle(mask, l, s));
    let causal = if drop_attn_mask {
        Causal::Hint
    } else if triangle {
        Causal::Mask
    } else {
        Causal::Off
    };
    let attn = match &options.attn_mask {
        Some(mask) if drop_attn_mask || triangle => {
            attn_mask_rank(mask)?;
            None
        }
        Some(mask) => Some(attn_mask(mask, batched, n, heads, l, s)?),
        None => None,
    };

    let mask = merge(
        attn,
        kpm,
        MergeShape {
            n,
            heads,
            l,
            s,
            s_total,
        },
    );

    let dropout = match options.training {
        Some(d) if config.dropout > 0.0 => Some(DropoutPlan {
            p: config.dropout as f32,
            seed: d.seed,
        }),
        _ => None,
    };
    let weights = match (options.need_weights, options.average_attn_weights) {
        (false, _) => WeightsMode::None,
        (true, true) => WeightsMode::Averaged,
        (true, false) => WeightsMode::PerHead,
    };
    Ok(PreparedForward {
        config: config.clone(),
        query: q,
        key: k,
        value: v,
        mask,
        causal,
        weights,
        fully_masked_rows: if options.need_weights {
            FullyMaskedRows::Nan
        } else {
            FullyMaskedRows::Zero
        },
        dropout,
        batched,
        batch_first: config.batch_first,
    })
}

/// `key_padding_mask` as a float `(N, S)` mask (`-inf` for `true`).
fn key_padding_mask(
    mask: &Mask<'_>,
    batched: bool,
    n: usize,
    s: usize,
) -> Result<Array2<f32>, MhaError> {
    let (want_rank, expected) = if batched {
        (2, format!("(N, S) = ({n}, {s})"))
    } else {
        (1, format!("(S,) = ({s},)"))
    };
    if mask.ndim() != want_rank {
        let rank_words = if batched {
            "None or 2-D (N, S) for a batched (3-D) query"
        } else {
            "None or 1-D (S,) for an unbatched (2-D) query"
        };
        return Err(MhaError::rank("key_padding_mask", rank_words, mask.ndim()));
    }
    let ok = if batched {
        mask.shape() == [n, s]
    } else {
        mask.shape() == [s]
    };
    if !ok {
        return Err(MhaError::shape("key_padding_mask", expected, mask.shape()));
    }
    let float = mask.to_float();
    let float = if batched {
        float
    } else {
        float.insert_axis(Axis(0))
    };
    float
        .into_dimensionality()
        .map_err(|_| MhaError::shape("key_padding_mask", "(N, S)", mask.shape()))
}

/// A checked `attn_mask`, read in place: `(G, L, S)` with `G = 1` (a 2-D mask, every batch
/// element and head) or `G = N · H` (a 3-D mask, row `n · H + h`), any strides.
#[derive(Debug, Clone)]
enum AttnMask<'a> {
    /// Added to the scores.
    Float(ArrayView3<'a, f32>),
    /// `true` = masked (`-inf`), `false` = `0`.
    Bool(ArrayView3<'a, bool>),
}

impl<'a> AttnMask<'a> {
    /// Whether there is one `(L, S)` mask per batch element and head (3-D), not one for all.
    fn per_head(&self) -> bool {
        match self {
            AttnMask::Float(m) => m.dim().0 > 1,
            AttnMask::Bool(m) => m.dim().0 > 1,
        }
    }

    /// The caller's float mask as `(Nm, Hm, L, S)` without a copy, when it is in standard
    /// layout.
    fn borrowed(&self, n: usize, heads: usize) -> Option<ArrayView4<'a, f32>> {
        let AttnMask::Float(m) = self else {
            return None;
        };
        let (g, l, s) = m.dim();
        let (nm, hm) = if g == 1 { (1, 1) } else { (n, heads) };
        m.into_shape_with_order((nm, hm, l, s)).ok()
    }

    /// Writes row `(group, i)` to `dst` (`S` floats) as floats (`-inf` for a masked bool).
    fn write_row(&self, group: usize, i: usize, dst: &mut [f32]) {
        match self {
            AttnMask::Float(m) => {
                for (d, &x) in dst.iter_mut().zip(m.slice(s![group, i, ..])) {
                    *d = x;
                }
            }
            AttnMask::Bool(m) => {
                for (d, &masked) in dst.iter_mut().zip(m.slice(s![group, i, ..])) {
                    *d = if masked { f32::NEG_INFINITY } else { 0.0 };
                }
            }
        }
    }
}

/// A 2-D `(L, S)` or 3-D `(G, L, S)` view as `(G, L, S)` (`G = 1` for a 2-D one).
fn grouped<A>(m: ArrayViewD<'_, A>) -> Result<ArrayView3<'_, A>, ndarray::ShapeError> {
    let m = if m.ndim() == 2 {
        m.insert_axis(Axis(0))
    } else {
        m
    };
    m.into_dimensionality::<Ix3>()
}

/// Checks `attn_mask` against torch's rules: 2-D `(L, S)` or 3-D `(N·num_heads, L, S)`, any
/// strides (a transposed, reversed or broadcast view reads as the same values, as in torch).
fn attn_mask<'a, 'o: 'a>(
    mask: &Mask<'o>,
    batched: bool,
    n: usize,
    heads: usize,
    l: usize,
    s: usize,
) -> Result<AttnMask<'a>, MhaError> {
    attn_mask_rank(mask)?;
    if mask.ndim() == 2 {
        if mask.shape() != [l, s] {
            return Err(MhaError::shape(
                "attn_mask",
                format!("2-D (L, S) = ({l}, {s})"),
                mask.shape(),
            ));
        }
    } else {
        let rows = n * heads;
        if mask.shape() != [rows, l, s] {
            let expected = if batched {
                format!("3-D (N*num_heads, L, S) = ({rows}, {l}, {s})")
            } else {
                format!("3-D (num_heads, L, S) = ({rows}, {l}, {s})")
            };
            return Err(MhaError::shape("attn_mask", expected, mask.shape()));
        }
    }
    let shape_error =
        |_| MhaError::shape("attn_mask", "(L, S) or (N*num_heads, L, S)", mask.shape());
    Ok(match mask {
        Mask::Float(m) => AttnMask::Float(grouped(m.clone().reborrow()).map_err(shape_error)?),
        Mask::Bool(m) => AttnMask::Bool(grouped(m.clone().reborrow()).map_err(shape_error)?),
    })
}

/// Whether `mask` is the `(L, S)` causal triangle torch's `is_causal` stands for: key `j > i`
/// masked (`true`, or `-inf`) for query `i`, every other entry kept (`false`, or `±0.0`). Rows
/// are checked in parallel, each stopping at its first other entry.
fn is_causal_triangle(mask: &Mask<'_>, l: usize, s: usize) -> bool {
    if mask.shape() != [l, s] {
        return false;
    }
    (0..l).into_par_iter().all(|i| match mask {
        Mask::Bool(m) => m
            .index_axis(Axis(0), i)
            .iter()
            .enumerate()
            .all(|(j, &masked)| masked == (j > i)),
        Mask::Float(m) => m.index_axis(Axis(0), i).iter().enumerate().all(|(j, &x)| {
            if j > i {
                x == f32::NEG_INFINITY
            } else {
                x == 0.0
            }
        }),
    })
}

/// torch's `_mha_shape_check` of `attn_mask`: 2-D or 3-D.
fn attn_mask_rank(mask: &Mask<'_>) -> Result<(), MhaError> {
    match mask.ndim() {
        2 | 3 => Ok(()),
        r => Err(MhaError::rank(
            "attn_mask",
            "2-D (L, S) or 3-D (N*num_heads, L, S)",
            r,
        )),
    }
}

/// The sizes [`merge`] works with: `S` keys given, `S'` with the appended ones.
#[derive(Debug, Clone, Copy)]
struct MergeShape {
    n: usize,
    heads: usize,
    l: usize,
    s: usize,
    s_total: usize,
}

/// Mask floats a parallel task of [`merge`] writes at least (about 100 µs of work), so small
/// masks are written by one thread.
const MERGE_TASK_FLOATS: usize = 1 << 15;

/// torch's merge, `attn_mask + key_padding_mask` with both padded with 0 for the appended keys,
/// as a [`ScoreMask`]: the `attn_mask` part borrowed when it is a float mask in standard layout
/// with no keys appended, otherwise written once, rows in parallel (a bool mask converted on the
/// way); the key padding mask beside it, added where the mask is read.
fn merge<'a>(
    attn: Option<AttnMask<'a>>,
    kpm: Option<Array2<f32>>,
    shape: MergeShape,
) -> Option<ScoreMask<'a>> {
    let MergeShape {
        n,
        heads,
        l,
        s,
        s_total,
    } = shape;
    let padded_kpm = kpm.map(|k| {
        if s_total == s && k.is_standard_layout() {
            return k;
        }
        let mut out = Array2::<f32>::zeros((n, s_total));
        out.slice_mut(s![.., ..s]).assign(&k);
        out
    });
    let Some(attn) = attn else {
        let kpm = padded_kpm?;
        return ScoreMask::new(
            CowArray::from(kpm.insert_axis(Axis(1)).insert_axis(Axis(1))),
            None,
        );
    };
    if s_total == s {
        if let Some(view) = attn.borrowed(n, heads) {
            return ScoreMask::new(CowArray::from(view), padded_kpm);
        }
    }
    let (nm, hm) = if attn.per_head() { (n, heads) } else { (1, 1) };
    let mut values = vec![0.0f32; nm * hm * l * s_total];
    let min_rows = (MERGE_TASK_FLOATS / s_total.max(1)).max(1);
    values
        .par_chunks_mut(s_total.max(1))
        .with_min_len(min_rows)
        .enumerate()
        .for_each(|(row, dst)| attn.write_row(row / l, row % l, &mut dst[..s]));
    let values = Array4::from_shape_vec((nm, hm, l, s_total), values)
        .expect("the mask holds nm * hm * l * s_total floats");
    ScoreMask::new(CowArray::from(values), padded_kpm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn config() -> MultiheadAttentionConfig {
        MultiheadAttentionConfig::new(4, 2).with_add_bias_kv(true)
    }

    /// (L=3, N=2, E=4) query, (S=5, N=2, E=4) key/value.
    fn run<'o>(options: &ForwardOptions<'o>) -> PreparedForward<'o> {
        let q: &'static ArrayD<f32> = Box::leak(Box::new(ArrayD::zeros(IxDyn(&[3, 2, 4]))));
        let kv: &'static ArrayD<f32> = Box::leak(Box::new(ArrayD::zeros(IxDyn(&[5, 2, 4]))));
        let view = |a: &'static ArrayD<f32>| a.view().reborrow();
        prepare(&config(), view(q), view(kv), view(kv), options).unwrap()
    }

    #[test]
    fn masks_keep_their_broadcast_shape_and_are_padded_with_zero() {
        let kpm = ArrayD::from_elem(IxDyn(&[2, 5]), true);
        let p = run(&ForwardOptions::default().with_key_padding_mask(Mask::Bool(kpm.view())));
        let m = p.mask().unwrap().values();
        assert_eq!(m.dim(), (2, 1, 1, 6));
        assert_eq!(m[[1, 0, 0, 4]], f32::NEG_INFINITY);
        assert_eq!(m[[1, 0, 0, 5]], 0.0); // the bias_k position
        assert_eq!(p.total_src_len(), 6);

        let attn = ArrayD::from_elem(IxDyn(&[3, 5]), 0.5f32);
        let p = run(&ForwardOptions::default().with_attn_mask(Mask::Float(attn.view())));
        assert_eq!(p.mask().unwrap().values().dim(), (1, 1, 3, 6));
        assert_eq!(
            p.mask().unwrap().row(1, 1, 2).to_vec(),
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.0]
        );
    }

    #[test]
    fn a_float_attn_mask_in_standard_layout_is_read_in_place_and_others_are_written_once() {
        // L = 3, S = 5, N = 2, H = 2; no appended keys.
        let config = MultiheadAttentionConfig::new(4, 2);
        let q = ArrayD::zeros(IxDyn(&[3, 2, 4]));
        let kv = ArrayD::zeros(IxDyn(&[5, 2, 4]));
        let prepared = |options: &ForwardOptions<'_>| {
            let p = prepare(&config, q.view(), kv.view(), kv.view(), options).unwrap();
            let values = p.mask().unwrap().values();
            (values.as_ptr(), values.to_owned())
        };
        for shape in [[1, 3, 5], [4, 3, 5]] {
            let attn = Array3::from_shape_fn(shape, |(g, i, j)| (g * 100 + i * 10 + j) as f32);
            let attn = if shape[0] == 1 {
                attn.index_axis_move(Axis(0), 0).into_dyn()
            } else {
                attn.into_dyn()
            };
            let (nm, hm) = if shape[0] == 1 { (1, 1) } else { (2, 2) };
            let want = attn.to_shape((nm, hm, 3, 5)).unwrap().to_owned();
            let (ptr, values) = prepared(&ForwardOptions::default().with_attn_mask(attn.view()));
            assert_eq!(ptr, attn.as_ptr(), "{shape:?}: borrowed");
            assert_eq!(values, want);
            // The same values through a view with its axes reversed: a copy, equal.
            let reversed = attn.t().as_standard_layout().into_owned();
            let (ptr, values) = prepared(&ForwardOptions::default().with_attn_mask(reversed.t()));
            assert_ne!(ptr, reversed.as_ptr());
            assert_eq!(values, want);
            // As a bool mask (entries >= 200 masked): converted.
            let bools = attn.mapv(|x| x >= 200.0);
            let (_, values) = prepared(&ForwardOptions::default().with_attn_mask(bools.view()));
            assert_eq!(
                values,
                want.mapv(|x| if x >= 200.0 { f32::NEG_INFINITY } else { 0.0 })
            );
        }
    }

    #[test]
    fn both_masks_merge_by_addition() {
        let attn = ArrayD::from_shape_fn(IxDyn(&[4, 3, 5]), |d| d[0] as f32); // row n*H + h
        let mut kpm = ArrayD::zeros(IxDyn(&[2, 5]));
        kpm[[1, 2]] = -10.0f32;
        let options = ForwardOptions::default()
            .with_attn_mask(Mask::Float(attn.view()))
            .with_key_padding_mask(Mask::Float(kpm.view()));
        let p = run(&options);
        let mask = p.mask().unwrap();
        // The attn_mask padded for the appended key (a copy), the padding beside it.
        assert_eq!(mask.values().dim(), (2, 2, 3, 6));
        assert_eq!(mask.padding().map(|p| p.dim()), Some((2, 6)));
        assert_eq!(mask.row(1, 0, 0).to_vec(), [2.0, 2.0, -8.0, 2.0, 2.0, 0.0]);
        assert_eq!(mask.row(0, 1, 2).to_vec(), [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(p.causal(), Causal::Off);
    }

    #[test]
    fn is_causal_replaces_the_mask_only_on_the_no_weights_path_without_padding() {
        let attn = ArrayD::from_elem(IxDyn(&[3, 5]), false);
        let kpm = ArrayD::from_elem(IxDyn(&[2, 5]), false);
        let causal = ForwardOptions::default()
            .with_attn_mask(Mask::Bool(attn.view()))
            .with_is_causal(true);
        let p = run(&causal.clone().with_need_weights(false));
        assert!(p.causal() == Causal::Hint && p.mask().is_none());
        assert_eq!(p.fully_masked_rows(), FullyMaskedRows::Zero);
        let p = run(&causal.clone());
        assert!(p.causal() == Causal::Off && p.mask().is_some());
        assert_eq!(p.fully_masked_rows(), FullyMaskedRows::Nan);
        let p = run(&causal
            .with_need_weights(false)
            .with_key_padding_mask(Mask::Bool(kpm.view())));
        assert!(p.causal() == Causal::Off && p.mask().is_some());
    }

    #[test]
    fn a_causal_triangle_without_is_causal_is_causal_structure_when_no_weights_are_asked_for() {
        let config = MultiheadAttentionConfig::new(4, 2);
        let q = ArrayD::zeros(IxDyn(&[3, 2, 4]));
        let kv = ArrayD::zeros(IxDyn(&[5, 2, 4]));
        let triangle = ArrayD::from_shape_fn(IxDyn(&[3, 5]), |d| d[1] > d[0]);
        let prepared = |need_weights| {
            let options = ForwardOptions::default()
                .with_attn_mask(Mask::Bool(triangle.view()))
                .with_need_weights(need_weights);
            let p = prepare(&config, q.view(), kv.view(), kv.view(), &options).unwrap();
            (p.causal(), p.mask().is_some())
        };
        assert_eq!(prepared(false), (Causal::Mask, false));
        assert_eq!(prepared(true), (Causal::Off, true));
    }

    #[test]
    fn a_causal_triangle_with_padding_stays_a_triangle() {
        // L = 3, S = 5 (the test layer appends no keys here: bias_kv adds one, so use a layer
        // without it).
        let config = MultiheadAttentionConfig::new(4, 2);
        let q = ArrayD::zeros(IxDyn(&[3, 2, 4]));
        let kv = ArrayD::zeros(IxDyn(&[5, 2, 4]));
        let kpm = ArrayD::from_shape_fn(IxDyn(&[2, 5]), |d| d[0] == 1 && d[1] == 4);
        let bool_triangle = ArrayD::from_shape_fn(IxDyn(&[3, 5]), |d| d[1] > d[0]);
        let float_triangle = bool_triangle.mapv(|m| if m { f32::NEG_INFINITY } else { -0.0 });
        let mut not_quite = float_triangle.clone();
        not_quite[[2, 1]] = -1e-30;
        let prepared = |attn, kpm, need_weights| {
            let options = ForwardOptions {
                attn_mask: Some(attn),
                key_padding_mask: kpm,
                ..ForwardOptions::default()
            }
            .with_is_causal(true)
            .with_need_weights(need_weights);
            let p = prepare(&config, q.view(), kv.view(), kv.view(), &options).unwrap();
            (p.causal(), p.mask().unwrap().clone())
        };
        let padding = || Some(Mask::Bool(kpm.view()));
        for triangle in [
            Mask::Bool(bool_triangle.view()),
            Mask::Float(float_triangle.view()),
        ] {
            let (causal, mask) = prepared(triangle.clone(), padding(), false);
            assert_eq!(causal, Causal::Mask);
            // Only the padding is stored: (N, 1, 1, S).
            assert_eq!(mask.values().dim(), (2, 1, 1, 5));
            assert!(mask.padding().is_none());
            // With weights asked for, the attn_mask and the padding beside it, merged where
            // they are read.
            let (causal, mask) = prepared(triangle, padding(), true);
            assert_eq!(causal, Causal::Off);
            assert_eq!(mask.values().dim(), (1, 1, 3, 5));
            assert_eq!(mask.padding().map(|p| p.dim()), Some((2, 5)));
            // Query 2 sees keys 0..=2; batch element 1 pads key 4.
            assert_eq!(mask.row(0, 1, 2).to_vec()[..3], [0.0; 3]);
            assert_eq!(mask.row(1, 1, 2).to_vec()[..3], [0.0; 3]);
            assert_eq!(mask.row(0, 0, 0)[1], f32::NEG_INFINITY);
            assert_eq!(mask.row(1, 1, 2)[4], f32::NEG_INFINITY);
        }
        let (causal, mask) = prepared(Mask::Float(not_quite.view()), padding(), false);
        assert_eq!(causal, Causal::Off);
        assert_eq!(mask.values()[[0, 0, 2, 1]], -1e-30);
        // Written out for a batch group, it is torch's merge: triangle + padding.
        let (_, padding) = prepared(Mask::Bool(bool_triangle.view()), padding(), false);
        let merged = padding.with_causal_triangle(&(1..2), 3);
        assert_eq!(merged.values().dim(), (1, 1, 3, 5));
        assert_eq!(
            merged.row(0, 0, 0).to_vec(),
            [
                0.0,
                -f32::INFINITY,
                -f32::INFINITY,
                -f32::INFINITY,
                -f32::INFINITY
            ]
        );
        assert_eq!(
            merged.row(0, 0, 2).to_vec(),
            [0.0, 0.0, 0.0, -f32::INFINITY, -f32::INFINITY]
        );
    }

    /// torch 2.15, `need_weights=False, is_causal=True`: an `attn_mask` it drops is only
    /// rank-checked (a (5, 7) and a (3, 4, 4) mask for L = S = 4 were accepted, a 1-D one refused).
    #[test]
    fn a_dropped_mask_is_only_rank_checked() {
        let causal = |mask: &ArrayD<f32>| {
            let options = ForwardOptions::default()
                .with_attn_mask(Mask::Float(mask.view()))
                .with_is_causal(true);
            let q = ArrayD::zeros(IxDyn(&[3, 2, 4]));
            let kv = ArrayD::zeros(IxDyn(&[5, 2, 4]));
            let dropped = prepare(
                &config(),
                q.view(),
                kv.view(),
                kv.view(),
                &options.clone().with_need_weights(false),
            )
            .map(|p| p.causal() == Causal::Hint && p.mask().is_none());
            let kept = prepare(&config(), q.view(), kv.view(), kv.view(), &options).map(|_| ());
            (dropped, kept)
        };
        let misshaped = ArrayD::zeros(IxDyn(&[7, 9]));
        let (dropped, kept) = causal(&misshaped);
        assert!(matches!(dropped, Ok(true)), "{dropped:?}");
        assert!(matches!(kept, Err(MhaError::Shape { .. })), "{kept:?}");
        let (dropped, _) = causal(&ArrayD::zeros(IxDyn(&[3, 5, 5])));
        assert!(matches!(dropped, Ok(true)), "{dropped:?}");
        let (dropped, _) = causal(&ArrayD::zeros(IxDyn(&[5])));
        assert!(matches!(dropped, Err(MhaError::Rank { .. })), "{dropped:?}");
    }

    #[test]
    fn weights_mode_and_dropout_follow_the_options() {
        assert_eq!(
            run(&ForwardOptions::default()).weights_mode(),
            WeightsMode::Averaged
        );
        let per_head = ForwardOptions::default().with_average_attn_weights(false);
        assert_eq!(run(&per_head).weights_mode(), WeightsMode::PerHead);
        let none = ForwardOptions::default().with_need_weights(false);
        assert_eq!(run(&none).weights_mode(), WeightsMode::None);

        let training = ForwardOptions::default().with_training(Some(crate::Dropout { seed: 9 }));
        assert_eq!(run(&training).dropout(), None); // the config's dropout is 0
        let q = ArrayD::<f32>::zeros(IxDyn(&[3, 4]));
        let with_p = config().with_dropout(0.1);
        let p = prepare(&with_p, q.view(), q.view(), q.view(), &training).unwrap();
        assert_eq!(p.dropout(), Some(DropoutPlan { p: 0.1, seed: 9 }));
        assert!(!p.batched());
    }

    #[test]
    fn layouts() {
        let p = run(&ForwardOptions::default());
        assert_eq!((p.batch_size(), p.tgt_len(), p.src_len()), (2, 3, 5));
        assert!(p.batched());
        let raw = KernelOutput {
            output: Array3::from_shape_fn((2, 3, 4), |(n, l, e)| (n * 100 + l * 10 + e) as f32),
            weights: None,
        };
        let out = p.finish(raw);
        assert_eq!(out.output.shape(), &[3, 2, 4]);
        assert_eq!(out.output[[2, 1, 3]], 123.0);
    }
}
