//! [`MultiheadAttention`]: a config and its checked weights.

use std::path::Path;

use ndarray::{ArrayD, ArrayViewD};

use crate::fast::FastCache;
use crate::prepare::{prepare, PreparedForward};
use crate::safetensors_io::{self, LoadedTensor};
use crate::{
    init, reference, AttentionLayer, AttentionOutput, ForwardOptions, MhaError,
    MultiheadAttentionConfig, Weights,
};

/// `torch.nn.MultiheadAttention`: a config and weights that match it.
///
/// ```
/// use mha_runtime::{ForwardOptions, Mask, MultiheadAttention, MultiheadAttentionConfig};
/// use ndarray::{Array2, ArrayD};
///
/// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(8, 2), 42)?;
/// let query = ArrayD::<f32>::zeros(vec![3, 2, 8]); // (L, N, E)
/// let key = ArrayD::<f32>::ones(vec![5, 2, 8]); // (S, N, E)
/// let padding = Array2::from_shape_fn((2, 5), |(_, s)| s == 4).into_dyn(); // (N, S)
/// let options = ForwardOptions::default()
///     .with_key_padding_mask(Mask::Bool(padding.view()))
///     .with_average_attn_weights(false);
/// let out = layer.forward(query.view(), key.view(), key.view(), &options)?;
/// assert_eq!(out.output.shape(), &[3, 2, 8]);
/// let weights = out.weights.unwrap(); // (N, H, L, S)
/// assert_eq!(weights.shape(), &[2, 2, 3, 5]);
/// assert_eq!(weights[[0, 1, 2, 4]], 0.0); // the padded key gets no attention
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MultiheadAttention {
    config: MultiheadAttentionConfig,
    weights: Weights,
    /// The fast path's packed weights and workspace (built on first use; never affects equality).
    pub(crate) fast: FastCache,
}

impl MultiheadAttention {
    /// A layer from a config and weights; the weights must be exactly the parameters the config
    /// calls for, with their shapes ([`Weights::check`]).
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let config = MultiheadAttentionConfig::new(4, 2);
    /// let weights = MultiheadAttention::random(config.clone(), 0)?.weights().clone();
    /// let layer = MultiheadAttention::new(config, weights)?;
    /// assert_eq!(layer.config().head_dim(), 2);
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn new(config: MultiheadAttentionConfig, weights: Weights) -> Result<Self, MhaError> {
        weights.check(&config)?;
        Ok(Self::from_checked(config, weights))
    }

    /// The layer from a checked config and weights that match it (every constructor checks the
    /// config once, then comes here).
    fn from_checked(config: MultiheadAttentionConfig, weights: Weights) -> Self {
        Self {
            config,
            weights,
            fast: FastCache::default(),
        }
    }

    /// A layer initialised as torch initialises one (see [`Weights`]; zero biases, xavier-uniform
    /// input projection, xavier-normal `bias_k`/`bias_v`, nn.Linear's default `out_proj.weight`),
    /// drawn from a generator seeded with `seed`. The draws are this crate's own, not torch's.
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let a = MultiheadAttention::random(MultiheadAttentionConfig::new(6, 3), 5)?;
    /// assert_eq!(a, MultiheadAttention::random(MultiheadAttentionConfig::new(6, 3), 5)?);
    /// assert!(MultiheadAttention::random(MultiheadAttentionConfig::new(6, 4), 5).is_err());
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn random(config: MultiheadAttentionConfig, seed: u64) -> Result<Self, MhaError> {
        config.check()?;
        let weights = init::torch_init(&config, seed)?;
        Ok(Self::from_checked(config, weights))
    }

    /// A layer from named tensors under torch's `state_dict` names (`in_proj_weight`,
    /// `out_proj.bias`, ...). Missing, unexpected, repeated or wrongly shaped tensors are errors.
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    /// use ndarray::ArrayD;
    ///
    /// let config = MultiheadAttentionConfig::new(4, 1).with_bias(false);
    /// let layer = MultiheadAttention::from_tensors(
    ///     config.clone(),
    ///     [
    ///         ("in_proj_weight", ArrayD::<f32>::zeros(vec![12, 4])),
    ///         ("out_proj.weight", ArrayD::<f32>::zeros(vec![4, 4])),
    ///     ],
    /// )?;
    /// let err = MultiheadAttention::from_tensors(config, [("in_proj_weight", ArrayD::zeros(vec![12, 4]))]);
    /// assert_eq!(err.unwrap_err().to_string(), "missing weight `out_proj.weight` (expected shape [4, 4])");
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn from_tensors<N: Into<String>>(
        config: MultiheadAttentionConfig,
        tensors: impl IntoIterator<Item = (N, ArrayD<f32>)>,
    ) -> Result<Self, MhaError> {
        config.check()?;
        let weights =
            Weights::from_named(&config, tensors.into_iter().map(|(n, t)| (n.into(), t)), "")?;
        Ok(Self::from_checked(config, weights))
    }

    /// A layer from a safetensors file, e.g. a torch `state_dict` saved with
    /// `safetensors.torch.save_file`. With a `prefix` such as `"encoder.layers.0.self_attn."`
    /// only the tensors under it are read (the rest of a model's checkpoint is ignored); with
    /// `""` every tensor in the file must be a parameter of the layer. F64, F16 and BF16
    /// parameters are converted to f32.
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let config = MultiheadAttentionConfig::new(8, 2);
    /// let layer = MultiheadAttention::random(config.clone(), 3)?;
    /// let path = std::env::temp_dir().join("mha_runtime_doc_from_safetensors.safetensors");
    /// layer.save_safetensors(&path)?;
    /// assert_eq!(MultiheadAttention::from_safetensors(config, &path, "")?, layer);
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn from_safetensors(
        config: MultiheadAttentionConfig,
        path: impl AsRef<Path>,
        prefix: &str,
    ) -> Result<Self, MhaError> {
        let path = path.as_ref();
        let bytes = safetensors_io::read_file(path)?;
        Self::load(config, &bytes, prefix, Some(&path.display().to_string()))
    }

    /// [`from_safetensors`](Self::from_safetensors) on bytes in memory.
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let config = MultiheadAttentionConfig::new(8, 2);
    /// let err = MultiheadAttention::from_safetensors_bytes(config, &[1, 2, 3], "").unwrap_err();
    /// assert!(err.to_string().starts_with("invalid safetensors data:"));
    /// ```
    pub fn from_safetensors_bytes(
        config: MultiheadAttentionConfig,
        bytes: &[u8],
        prefix: &str,
    ) -> Result<Self, MhaError> {
        Self::load(config, bytes, prefix, None)
    }

    fn load(
        config: MultiheadAttentionConfig,
        bytes: &[u8],
        prefix: &str,
        source_name: Option<&str>,
    ) -> Result<Self, MhaError> {
        config.check()?;
        let file = safetensors_io::parse(bytes, source_name)?;
        let mut named = Vec::new();
        for (name, view) in file.tensors() {
            let Some(local) = name.strip_prefix(prefix) else {
                continue;
            };
            match safetensors_io::convert(&name, &view).map_err(|e| with_source(e, source_name))? {
                LoadedTensor::Float(t) => named.push((local.to_string(), t)),
                LoadedTensor::Bool(_) => {
                    return Err(MhaError::Dtype {
                        tensor: name,
                        expected: "float32 (or float64 / float16 / bfloat16)".into(),
                        actual: "BOOL".into(),
                    })
                }
            }
        }
        let weights = Weights::from_named(&config, named, prefix).map_err(|error| {
            let mut names = file.names();
            names.sort_unstable();
            with_prefix_hint(error, prefix, names, &config)
        })?;
        Ok(Self::from_checked(config, weights))
    }

    /// The parameters as safetensors bytes under torch's `state_dict` names.
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let config = MultiheadAttentionConfig::new(4, 2).with_add_bias_kv(true);
    /// let layer = MultiheadAttention::random(config.clone(), 1)?;
    /// let bytes = layer.to_safetensors_bytes()?;
    /// assert_eq!(MultiheadAttention::from_safetensors_bytes(config, &bytes, "")?, layer);
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, MhaError> {
        safetensors_io::serialize(&self.weights.state_dict())
    }

    /// Writes [`to_safetensors_bytes`](Self::to_safetensors_bytes) to a file (readable by
    /// `safetensors.torch.load_file` and torch's `load_state_dict`).
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 1)?;
    /// let path = std::env::temp_dir().join("mha_runtime_doc_save.safetensors");
    /// layer.save_safetensors(&path)?;
    /// assert!(path.exists());
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), MhaError> {
        let path = path.as_ref();
        let bytes = self.to_safetensors_bytes()?;
        std::fs::write(path, bytes).map_err(|source| MhaError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// The constructor arguments.
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 0)?;
    /// assert_eq!(layer.config().num_heads, 2);
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn config(&self) -> &MultiheadAttentionConfig {
        &self.config
    }

    /// The parameters (checked against the config).
    ///
    /// ```
    /// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
    ///
    /// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 0)?;
    /// assert!(layer.weights().in_proj_bias.as_ref().unwrap().iter().all(|&b| b == 0.0));
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Checks the inputs of a forward call and normalises them (layouts, merged and padded masks,
    /// the `is_causal` rules) into the description every kernel consumes.
    pub(crate) fn prepare<'a, 'o: 'a>(
        &self,
        query: ArrayViewD<'a, f32>,
        key: ArrayViewD<'a, f32>,
        value: ArrayViewD<'a, f32>,
        options: &ForwardOptions<'o>,
    ) -> Result<PreparedForward<'a>, MhaError> {
        prepare(&self.config, query, key, value, options)
    }

    /// Torch's `forward(query, key, value, key_padding_mask, need_weights, attn_mask,
    /// average_attn_weights, is_causal)`, in eval mode unless `options.training` is set.
    ///
    /// ```
    /// use mha_runtime::{ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
    /// use ndarray::ArrayD;
    ///
    /// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 0)?;
    /// let x = ArrayD::<f32>::zeros(vec![3, 4]); // unbatched (L, E)
    /// let out = layer.forward(x.view(), x.view(), x.view(), &ForwardOptions::default())?;
    /// assert_eq!(out.weights.unwrap().shape(), &[3, 3]); // (L, S)
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn forward(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
    ) -> Result<AttentionOutput, MhaError> {
        self.forward_fast::<0>(query, key, value, options, crate::fast::selected_isa())
    }

    /// [`forward`](Self::forward) through the exact reference path only (the oracle).
    ///
    /// ```
    /// use mha_runtime::{ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
    /// use ndarray::ArrayD;
    ///
    /// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 0)?;
    /// let x = ArrayD::<f32>::ones(vec![2, 3, 4]);
    /// let options = ForwardOptions::default();
    /// let a = layer.forward_reference(x.view(), x.view(), x.view(), &options)?;
    /// assert_eq!(a.output.shape(), &[2, 3, 4]);
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn forward_reference(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
    ) -> Result<AttentionOutput, MhaError> {
        let prepared = self.prepare(query, key, value, options)?;
        Ok(prepared.finish(reference::attention_checked(
            &self.config,
            &self.weights,
            &prepared,
        )))
    }
}

fn with_source(error: MhaError, source_name: Option<&str>) -> MhaError {
    match error {
        MhaError::Safetensors {
            source_name: None,
            message,
        } => MhaError::Safetensors {
            source_name: source_name.map(str::to_string),
            message,
        },
        other => other,
    }
}

impl AttentionLayer for MultiheadAttention {
    fn config(&self) -> &MultiheadAttentionConfig {
        &self.config
    }

    fn forward(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
    ) -> Result<AttentionOutput, MhaError> {
        MultiheadAttention::forward(self, query, key, value, options)
    }
}

/// A missing or unexpected weight, with the prefixes that do hold the layer's parameters in the
/// file when the one given is not among them.
fn with_prefix_hint<'n>(
    error: MhaError,
    prefix: &str,
    names: impl IntoIterator<Item = &'n str>,
    config: &MultiheadAttentionConfig,
) -> MhaError {
    if !matches!(
        error,
        MhaError::MissingWeight { .. } | MhaError::UnexpectedWeight { .. }
    ) {
        return error;
    }
    let params: Vec<&str> = Weights::parameter_shapes(config)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let found = safetensors_io::layer_prefixes(names, &params);
    match safetensors_io::closest_prefix(prefix, &found) {
        Some(suggestion) if !found.iter().any(|p| p == prefix) => MhaError::WrongPrefix {
            error: Box::new(error),
            suggestion: suggestion.to_string(),
            found,
        },
        _ => error,
    }
}
