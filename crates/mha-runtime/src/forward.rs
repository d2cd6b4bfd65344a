//! The arguments and result of `forward`, and the trait every attention layer implements.

use ndarray::{ArrayD, ArrayViewD};

use crate::{Mask, MhaError, MultiheadAttentionConfig};

/// Training mode: dropout on the attention probabilities, drawn from a seeded generator.
///
/// Applied (as in torch) only when the config's `dropout` is > 0: each probability after the
/// softmax is zeroed with probability `dropout` and the kept ones are scaled by `1 / (1 - dropout)`.
/// The draws come from this crate's own generator (ChaCha8 seeded with `seed`, see
/// [`dropout_keep_mask`](crate::dropout_keep_mask)), so they are
/// reproducible but not torch's.
///
/// ```
/// use mha_runtime::{Dropout, ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
/// use ndarray::ArrayD;
///
/// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2).with_dropout(0.5), 0)?;
/// let x = ArrayD::<f32>::ones(vec![6, 4]);
/// let train = ForwardOptions::default()
///     .with_average_attn_weights(false)
///     .with_training(Some(Dropout { seed: 3 }));
/// let weights = layer.forward(x.view(), x.view(), x.view(), &train)?.weights.unwrap();
/// // each probability (1/6 here) is either dropped or scaled by 1 / (1 - 0.5)
/// assert!(weights.iter().all(|&w| w == 0.0 || (w - 1.0 / 3.0).abs() < 1e-6));
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Dropout {
    /// Seed of the dropout generator.
    pub seed: u64,
}

/// The keyword arguments of `MultiheadAttention.forward`, with torch's defaults.
///
/// ```
/// use mha_runtime::{ForwardOptions, Mask};
/// use ndarray::ArrayD;
///
/// let causal = mha_runtime::generate_square_subsequent_mask(4).into_dyn();
/// let options = ForwardOptions::default()
///     .with_attn_mask(Mask::Float(causal.view()))
///     .with_is_causal(true)
///     .with_need_weights(false);
/// assert!(options.average_attn_weights && options.training.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardOptions<'a> {
    /// `(N, S)` (unbatched `(S,)`); `true` / `-inf` marks keys to ignore. Default `None`.
    pub key_padding_mask: Option<Mask<'a>>,
    /// Return the attention weights. Default `true` (as in torch).
    pub need_weights: bool,
    /// `(L, S)` or `(N·num_heads, L, S)` (unbatched `(num_heads, L, S)`), row `n·num_heads + h`.
    /// Default `None`.
    pub attn_mask: Option<Mask<'a>>,
    /// Average the returned weights over heads. Default `true`.
    pub average_attn_weights: bool,
    /// Torch's hint that `attn_mask` is the causal mask; requires `attn_mask`. Default `false`.
    /// As in torch, with `need_weights=false` and no `key_padding_mask` the causal mask (key
    /// `j > i` masked) replaces `attn_mask`, which is then only checked for its shape.
    pub is_causal: bool,
    /// `Some` = training mode (dropout applies); `None` = eval mode. Default `None`.
    pub training: Option<Dropout>,
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        Self {
            key_padding_mask: None,
            need_weights: true,
            attn_mask: None,
            average_attn_weights: true,
            is_causal: false,
            training: None,
        }
    }
}

impl<'a> ForwardOptions<'a> {
    /// Torch's defaults (same as [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key_padding_mask`.
    pub fn with_key_padding_mask(mut self, mask: impl Into<Mask<'a>>) -> Self {
        self.key_padding_mask = Some(mask.into());
        self
    }

    /// Sets `attn_mask`.
    pub fn with_attn_mask(mut self, mask: impl Into<Mask<'a>>) -> Self {
        self.attn_mask = Some(mask.into());
        self
    }

    /// Sets `need_weights`.
    pub fn with_need_weights(mut self, need_weights: bool) -> Self {
        self.need_weights = need_weights;
        self
    }

    /// Sets `average_attn_weights`.
    pub fn with_average_attn_weights(mut self, average: bool) -> Self {
        self.average_attn_weights = average;
        self
    }

    /// Sets `is_causal`.
    pub fn with_is_causal(mut self, is_causal: bool) -> Self {
        self.is_causal = is_causal;
        self
    }

    /// Sets training mode with the dropout generator's seed (`None` = eval mode).
    pub fn with_training(mut self, training: Option<Dropout>) -> Self {
        self.training = training;
        self
    }
}

/// What `forward` returns: torch's `(attn_output, attn_output_weights)`.
///
/// ```
/// use mha_runtime::{ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
/// use ndarray::ArrayD;
///
/// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 0)?;
/// let (q, kv) = (ArrayD::<f32>::ones(vec![3, 2, 4]), ArrayD::<f32>::ones(vec![5, 2, 4]));
/// let per_head = ForwardOptions::default().with_average_attn_weights(false);
/// let out = layer.forward(q.view(), kv.view(), kv.view(), &per_head)?;
/// assert_eq!(out.output.shape(), &[3, 2, 4]); // (L, N, E)
/// assert_eq!(out.weights.unwrap().shape(), &[2, 2, 3, 5]); // (N, H, L, S)
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionOutput {
    /// `(L, N, E)`, `(N, L, E)` with `batch_first`, or `(L, E)` unbatched.
    pub output: ArrayD<f32>,
    /// With `need_weights`: `(N, L, S')` averaged over heads or `(N, num_heads, L, S')`
    /// (unbatched without `N`), where `S' = S + add_bias_kv + add_zero_attn`; else `None`.
    pub weights: Option<ArrayD<f32>>,
}

/// A multi-head attention layer with torch's `forward` contract. Implemented by
/// [`MultiheadAttention`](crate::MultiheadAttention); generated static layers implement it too.
///
/// ```
/// use mha_runtime::{AttentionLayer, ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
/// use ndarray::ArrayD;
///
/// fn run(layer: &dyn AttentionLayer, x: &ArrayD<f32>) -> Result<ArrayD<f32>, mha_runtime::MhaError> {
///     let options = ForwardOptions::default().with_need_weights(false);
///     Ok(layer.forward(x.view(), x.view(), x.view(), &options)?.output)
/// }
/// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 7)?;
/// let y = run(&layer, &ArrayD::zeros(vec![3, 4]))?; // unbatched (L, E)
/// assert_eq!(y.shape(), &[3, 4]);
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
pub trait AttentionLayer {
    /// The constructor arguments.
    fn config(&self) -> &MultiheadAttentionConfig;

    /// Torch's `forward(query, key, value, **options)`.
    fn forward(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
    ) -> Result<AttentionOutput, MhaError>;
}
