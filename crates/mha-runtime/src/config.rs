// TEMPORARY hand-written stand-in. It will be replaced by code generated from
// specs/multihead_attention.yaml (build.rs + mha_gen::Builder) with exactly this public shape:
// `include!(concat!(env!("OUT_DIR"), "/multihead_attention.rs"));`

/// Constructor arguments of `torch.nn.MultiheadAttention`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiheadAttentionConfig {
    /// Total dimension of the model.
    pub embed_dim: usize,
    /// Number of parallel attention heads; `embed_dim` must be divisible by it.
    pub num_heads: usize,
    /// Dropout probability on the attention weights (training only).
    pub dropout: f64,
    /// Add bias to input / output projection layers.
    pub bias: bool,
    /// Add bias to the key and value sequences at dim=0.
    pub add_bias_kv: bool,
    /// Add a new batch of zeros to the key and value sequences at dim=1.
    pub add_zero_attn: bool,
    /// Total number of features for keys (`None` = `embed_dim`).
    pub kdim: Option<usize>,
    /// Total number of features for values (`None` = `embed_dim`).
    pub vdim: Option<usize>,
    /// Inputs and outputs are (batch, seq, feature) when true, (seq, batch, feature) when false.
    pub batch_first: bool,
}

/// A constructor argument that violates the op spec's constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The parameter's name in the spec.
    pub field: &'static str,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl MultiheadAttentionConfig {
    /// The config with the required arguments and torch's defaults for the rest.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            dropout: 0.0,
            bias: true,
            add_bias_kv: false,
            add_zero_attn: false,
            kdim: None,
            vdim: None,
            batch_first: false,
        }
    }

    /// Sets `dropout`.
    pub fn with_dropout(mut self, dropout: f64) -> Self { self.dropout = dropout; self }
    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self { self.bias = bias; self }
    /// Sets `add_bias_kv`.
    pub fn with_add_bias_kv(mut self, add_bias_kv: bool) -> Self { self.add_bias_kv = add_bias_kv; self }
    /// Sets `add_zero_attn`.
    pub fn with_add_zero_attn(mut self, add_zero_attn: bool) -> Self { self.add_zero_attn = add_zero_attn; self }
    /// Sets `kdim`.
    pub fn with_kdim(mut self, kdim: Option<usize>) -> Self { self.kdim = kdim; self }
    /// Sets `vdim`.
    pub fn with_vdim(mut self, vdim: Option<usize>) -> Self { self.vdim = vdim; self }
    /// Sets `batch_first`.
    pub fn with_batch_first(mut self, batch_first: bool) -> Self { self.batch_first = batch_first; self }

    /// Checks every constraint of the spec; returns all violations at once.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.embed_dim == 0 {
            errors.push(ConfigError { field: "embed_dim", message: "must be positive, got 0".into() });
        }
        if self.num_heads == 0 {
            errors.push(ConfigError { field: "num_heads", message: "must be positive, got 0".into() });
        } else if self.embed_dim % self.num_heads != 0 {
            errors.push(ConfigError {
                field: "num_heads",
                message: format!("embed_dim ({}) must be divisible by num_heads ({})", self.embed_dim, self.num_heads),
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            errors.push(ConfigError { field: "dropout", message: format!("must satisfy 0 <= dropout < 1, got {}", self.dropout) });
        }
        if self.kdim == Some(0) {
            errors.push(ConfigError { field: "kdim", message: "must be positive, got 0".into() });
        }
        if self.vdim == Some(0) {
            errors.push(ConfigError { field: "vdim", message: "must be positive, got 0".into() });
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
