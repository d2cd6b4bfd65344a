//! The error type of the crate.

use std::path::PathBuf;

use crate::ConfigError;

/// Torch's message when `is_causal` is given without `attn_mask`.
pub(crate) const CAUSAL_WITHOUT_MASK: &str = "Need attn_mask if specifying the is_causal hint. \
You may use the Transformer module method `generate_square_subsequent_mask` to create this mask.";

/// Everything that can go wrong building or running a layer. Messages name the tensor and give
/// the expected against the actual shape or dtype.
///
/// ```
/// use mha_runtime::{ForwardOptions, MhaError, MultiheadAttention, MultiheadAttentionConfig};
/// use ndarray::ArrayD;
///
/// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 0)?;
/// let (q, kv) = (ArrayD::<f32>::ones(vec![3, 2, 4]), ArrayD::<f32>::ones(vec![5, 3, 4]));
/// let err = layer.forward(q.view(), kv.view(), kv.view(), &ForwardOptions::default()).unwrap_err();
/// assert!(matches!(err, MhaError::Shape { .. }));
/// assert_eq!(
///     err.to_string(),
///     "`key` has shape [5, 3, 4], but expected (S, N, kdim) with the query's batch size N = 2"
/// );
/// # Ok::<(), MhaError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MhaError {
    /// The config violates a constraint (e.g. `num_heads` does not divide `embed_dim`); each
    /// message names the op, the parameter and its value.
    #[error("{}", join_config_errors(.0))]
    InvalidConfig(Vec<ConfigError>),

    /// A tensor has the wrong number of dimensions.
    #[error("`{tensor}` must be {expected}, but got a {actual}-D tensor")]
    Rank {
        /// The tensor's name (an input, mask or weight).
        tensor: String,
        /// The accepted ranks, in words (e.g. "2-D (L, E) or 3-D").
        expected: String,
        /// The rank that was given.
        actual: usize,
    },

    /// A tensor has the right rank but a wrong size.
    #[error("`{tensor}` has shape {actual:?}, but expected {expected}")]
    Shape {
        /// The tensor's name.
        tensor: String,
        /// The expected shape, with the meaning of each dimension.
        expected: String,
        /// The shape that was given.
        actual: Vec<usize>,
    },

    /// A tensor has an unsupported element type.
    #[error("`{tensor}` has dtype {actual}, but expected {expected}")]
    Dtype {
        /// The tensor's name.
        tensor: String,
        /// The accepted dtypes.
        expected: String,
        /// The dtype that was given.
        actual: String,
    },

    /// A parameter the config requires is absent.
    #[error("missing weight `{name}` (expected shape {shape:?})")]
    MissingWeight {
        /// The `state_dict` name (with any prefix).
        name: String,
        /// The shape it must have.
        shape: Vec<usize>,
    },

    /// A tensor that is not a parameter of this layer (for this config).
    #[error("unexpected weight `{name}`: not a parameter of this MultiheadAttention (expected {expected})")]
    UnexpectedWeight {
        /// The tensor's name (with any prefix).
        name: String,
        /// The parameter names the config calls for.
        expected: String,
    },

    /// A weight is missing or unexpected under the prefix given, while the file holds the layer's
    /// parameters under other prefixes (e.g. `"self_attn"` without its dot, or no prefix for a model).
    #[error("{error}; did you mean {}? (the file holds MultiheadAttention parameters under {})", show_prefix(.suggestion), .found.iter().map(|p| show_prefix(p)).collect::<Vec<_>>().join(", "))]
    WrongPrefix {
        /// The missing or unexpected weight.
        error: Box<MhaError>,
        /// The closest prefix that holds the parameters.
        suggestion: String,
        /// Every prefix that holds them, in file order.
        found: Vec<String>,
    },

    /// The same parameter name was given twice.
    #[error("weight `{name}` is given more than once")]
    DuplicateWeight {
        /// The repeated name.
        name: String,
    },

    /// An argument torch refuses: a value out of range, or a combination of arguments
    /// (`scaled_dot_product_attention` with `is_causal` and `attn_mask`, heads that do not divide).
    #[error("`{argument}`: {message}")]
    InvalidArgument {
        /// The argument (or the first of the clashing ones).
        argument: &'static str,
        /// What is wrong, with the values given.
        message: String,
    },

    /// `is_causal` without `attn_mask` (torch's `RuntimeError`, same message).
    #[error("{}", CAUSAL_WITHOUT_MASK)]
    CausalWithoutMask,

    /// The safetensors data is truncated or corrupt, or could not be written.
    #[error("invalid safetensors data{}: {message}", .source_name.as_ref().map(|p| format!(" in `{p}`")).unwrap_or_default())]
    Safetensors {
        /// Where the data came from, if a file.
        source_name: Option<String>,
        /// What is wrong.
        message: String,
    },

    /// A tensor or a call too large to hold: its size overflows, passes what one allocation can
    /// address, or passes the machine's memory. Refused before anything is allocated.
    #[error("{what} needs {} bytes, more than {limit} bytes (the most {})", .bytes.map_or_else(|| "more than 2^128".to_string(), |b| b.to_string()), if *.limit == crate::MAX_TENSOR_BYTES { "one allocation can hold" } else { "this machine's memory can hold" })]
    TooLarge {
        /// What it is for, with its shape or dimensions.
        what: String,
        /// The bytes it would need (`None` past 2^128).
        bytes: Option<u128>,
        /// The bound it passes.
        limit: usize,
    },

    /// Reading or writing a file failed.
    #[error("cannot {action} `{}`: {source}", .path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn join_config_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl MhaError {
    pub(crate) fn shape(
        tensor: impl Into<String>,
        expected: impl Into<String>,
        actual: &[usize],
    ) -> Self {
        Self::Shape {
            tensor: tensor.into(),
            expected: expected.into(),
            actual: actual.to_vec(),
        }
    }

    pub(crate) fn rank(
        tensor: impl Into<String>,
        expected: impl Into<String>,
        actual: usize,
    ) -> Self {
        Self::Rank {
            tensor: tensor.into(),
            expected: expected.into(),
            actual,
        }
    }
}

/// A prefix as a reader sees it: `` `layers.0.self_attn.` ``, or `` `` (no prefix) ``.
fn show_prefix(prefix: &str) -> String {
    match prefix {
        "" => "`` (no prefix)".to_string(),
        p => format!("`{p}`"),
    }
}
