//! `torch.nn.functional.scaled_dot_product_attention`, exactly.
//!
//! See [`scaled_dot_product_attention`] for the semantics; `call.rs` checks and normalises a
//! call, `fast.rs` runs it on the flash kernel.

mod call;
mod fast;

use ndarray::{ArrayD, ArrayViewD};

use crate::fast::{selected_isa, Isa};
use crate::MhaError;
use call::SdpaCall;

/// `attn_mask` of [`scaled_dot_product_attention`], torch's SDPA convention.
///
/// ```
/// use mha_runtime::SdpaMask;
/// use ndarray::ArrayD;
///
/// let keep = ArrayD::from_elem(vec![1, 4], true); // (1, S): every key takes part
/// assert_eq!(SdpaMask::from(keep.view()).shape(), &[1, 4]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum SdpaMask<'a> {
    /// `true` = the position TAKES PART in attention (torch's SDPA; the opposite of
    /// `nn.MultiheadAttention`'s bool masks).
    Bool(ArrayViewD<'a, bool>),
    /// Added to the scores (may hold `-inf`).
    Float(ArrayViewD<'a, f32>),
}

impl SdpaMask<'_> {
    /// The mask's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            SdpaMask::Bool(m) => m.shape(),
            SdpaMask::Float(m) => m.shape(),
        }
    }
}

impl<'a> From<ArrayViewD<'a, bool>> for SdpaMask<'a> {
    fn from(mask: ArrayViewD<'a, bool>) -> Self {
        SdpaMask::Bool(mask)
    }
}

impl<'a> From<ArrayViewD<'a, f32>> for SdpaMask<'a> {
    fn from(mask: ArrayViewD<'a, f32>) -> Self {
        SdpaMask::Float(mask)
    }
}

/// The keyword arguments of `scaled_dot_product_attention`, with torch's defaults.
///
/// ```
/// use mha_runtime::SdpaOptions;
///
/// let options = SdpaOptions::default().with_is_causal(true).with_scale(Some(0.5));
/// assert!(options.attn_mask.is_none() && options.dropout_p == 0.0 && !options.enable_gqa);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SdpaOptions<'a> {
    /// Broadcastable to `(..., Hq, L, S)`. Default `None`.
    pub attn_mask: Option<SdpaMask<'a>>,
    /// Probability of dropping an attention probability, in `[0, 1]`. Default 0.
    pub dropout_p: f64,
    /// The top-left causal mask; not together with `attn_mask`. Default `false`.
    pub is_causal: bool,
    /// Multiplies `q·kᵀ`; `None` = `1/√E`. Default `None`.
    pub scale: Option<f64>,
    /// Grouped-query attention: key/value heads divide the query heads. Default `false`.
    pub enable_gqa: bool,
    /// Seed of the dropout generator (ChaCha8, stream = the flattened index of the output's
    /// leading dimensions); required when `dropout_p > 0`, so that a run is reproducible.
    pub dropout_seed: Option<u64>,
}

impl<'a> SdpaOptions<'a> {
    /// Torch's defaults (same as [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `attn_mask`.
    pub fn with_attn_mask(mut self, mask: impl Into<SdpaMask<'a>>) -> Self {
        self.attn_mask = Some(mask.into());
        self
    }

    /// Sets `dropout_p` and the generator's seed.
    pub fn with_dropout(mut self, dropout_p: f64, seed: u64) -> Self {
        self.dropout_p = dropout_p;
        self.dropout_seed = Some(seed);
        self
    }

    /// Sets `is_causal`.
    pub fn with_is_causal(mut self, is_causal: bool) -> Self {
        self.is_causal = is_causal;
        self
    }

    /// Sets `scale` (`None` = `1/√E`).
    pub fn with_scale(mut self, scale: Option<f64>) -> Self {
        self.scale = scale;
        self
    }

    /// Sets `enable_gqa`.
    pub fn with_enable_gqa(mut self, enable_gqa: bool) -> Self {
        self.enable_gqa = enable_gqa;
        self
    }
}

/// Torch's `F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal,
/// scale, enable_gqa)`: the output `(..., Hq, L, Ev)`.
///
/// It takes torch's arguments ([`SdpaOptions`], defaults = torch's) and gives torch's result or
/// torch's refusal as an [`MhaError`]:
/// - query `(..., Hq, L, E)`, key `(..., Hk, S, E)`, value `(..., Hv, S, Ev)` → output
///   `(..., Hq, L, Ev)`, any rank ≥ 2; the leading dimensions broadcast (a key batch of 1 serves
///   every query batch);
/// - scores `q·kᵀ · scale + mask`, `scale` = `1/√E` unless given, softmax over `S`;
/// - a bool mask marks with `true` the positions that TAKE PART (the opposite of
///   [`Mask`](crate::Mask), `nn.MultiheadAttention`'s convention); a float mask is added; either
///   broadcasts to `(..., Hq, L, S)`;
/// - `is_causal`: the top-left-aligned lower triangle `tril(ones(L, S))`, also when `L != S`;
///   refused together with `attn_mask`, as torch does;
/// - `enable_gqa`: `Hk` and `Hv` divide `Hq`; key head `j` serves query heads
///   `j·Hq/Hk .. (j+1)·Hq/Hk` (torch's `repeat_interleave`);
/// - a query row in which no position takes part gives 0;
/// - `dropout_p > 0` drops probabilities with this crate's seeded generator (see
///   [`SdpaOptions::dropout_seed`]), as `MultiheadAttention`'s training mode does.
///
/// One difference from torch: a value whose length differs from the key's is refused (torch's
/// CPU kernel silently reads only the first `S` values).
///
/// The exact path ([`scaled_dot_product_attention_reference`]) runs the same per-head core as
/// [`MultiheadAttention::forward_reference`](crate::MultiheadAttention::forward_reference); the default runs the same flash
/// kernel as `MultiheadAttention`'s fast path (no `L × S` matrix) on the inputs in place, and
/// the reference path for what that kernel does not cover (`Ev != E`, empty axes, dropout).
///
/// ```
/// use mha_runtime::{scaled_dot_product_attention, SdpaOptions};
/// use ndarray::ArrayD;
///
/// let q = ArrayD::<f32>::ones(vec![2, 8, 5, 16]); // (N, Hq, L, E)
/// let kv = ArrayD::<f32>::ones(vec![1, 2, 7, 16]); // (1, Hkv, S, E): one batch serves both
/// let options = SdpaOptions::default().with_enable_gqa(true).with_is_causal(true);
/// let out = scaled_dot_product_attention(q.view(), kv.view(), kv.view(), &options)?;
/// assert_eq!(out.shape(), &[2, 8, 5, 16]);
///
/// let refused = scaled_dot_product_attention(q.view(), kv.view(), kv.view(), &SdpaOptions::default());
/// assert_eq!(
///     refused.unwrap_err().to_string(),
///     "`key` has shape [1, 2, 7, 16], but expected leading dimensions [1, 2] that broadcast \
///      with the query's [2, 8] (set enable_gqa for grouped-query attention)"
/// );
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
pub fn scaled_dot_product_attention(
    query: ArrayViewD<'_, f32>,
    key: ArrayViewD<'_, f32>,
    value: ArrayViewD<'_, f32>,
    options: &SdpaOptions<'_>,
) -> Result<ArrayD<f32>, MhaError> {
    scaled_dot_product_attention_with_isa(query, key, value, options, selected_isa())
}

/// [`scaled_dot_product_attention`] on the fast kernels of one instruction-set level (for tests
/// and benchmarks of each dispatch path); a level this CPU cannot run uses the portable kernels.
///
/// ```
/// use mha_runtime::fast::Isa;
/// use mha_runtime::{scaled_dot_product_attention_reference, scaled_dot_product_attention_with_isa, SdpaOptions};
/// use ndarray::ArrayD;
///
/// let q = ArrayD::from_shape_fn(vec![1, 4, 9, 8], |i| (i[2] as f32 - i[3] as f32) / 8.0);
/// let kv = ArrayD::from_shape_fn(vec![1, 2, 11, 8], |i| (i[1] + i[2] * i[3]) as f32 / 50.0);
/// let gqa = SdpaOptions::default().with_enable_gqa(true).with_is_causal(true);
/// let fast = scaled_dot_product_attention_with_isa(q.view(), kv.view(), kv.view(), &gqa, Isa::Portable)?;
/// let exact = scaled_dot_product_attention_reference(q.view(), kv.view(), kv.view(), &gqa)?;
/// let err = (&fast - &exact).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
/// assert!(err < 1e-5);
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
pub fn scaled_dot_product_attention_with_isa(
    query: ArrayViewD<'_, f32>,
    key: ArrayViewD<'_, f32>,
    value: ArrayViewD<'_, f32>,
    options: &SdpaOptions<'_>,
    isa: Isa,
) -> Result<ArrayD<f32>, MhaError> {
    let call = SdpaCall::new(query, key, value, options)?;
    Ok(fast::run(&call, isa).unwrap_or_else(|| call.run_reference()))
}

/// [`scaled_dot_product_attention`] on the exact reference path (the oracle).
pub fn scaled_dot_product_attention_reference(
    query: ArrayViewD<'_, f32>,
    key: ArrayViewD<'_, f32>,
    value: ArrayViewD<'_, f32>,
    options: &SdpaOptions<'_>,
) -> Result<ArrayD<f32>, MhaError> {
    let call = SdpaCall::new(query, key, value, options)?;
    Ok(call.run_reference())
}
