//! `torch.nn.MultiheadAttention`, exactly, in Rust.
//!
//! [`MultiheadAttention`] is built from a [`MultiheadAttentionConfig`] (torch's constructor
//! arguments) and weights under torch's `state_dict` names, loaded from safetensors, given as
//! tensors or drawn with torch's initialisation scheme. [`MultiheadAttention::forward`] takes the
//! same inputs as torch's `forward` (see [`ForwardOptions`]) and gives the same
//! [`AttentionOutput`], including torch's layouts, masks, `is_causal` hint and fully-masked-row
//! behaviour. Bad input is an [`MhaError`], never a panic.
//!
//! [`MultiheadAttention::prepare`] checks a call and normalises it (layouts, one merged and
//! padded additive mask, the `is_causal` rules) into a [`PreparedForward`]; [`reference`](mod@reference) holds
//! the exact attention on it, kept simple as the oracle for the fast kernels of [`fast`] that
//! `forward` runs. The `mha-parity` crate checks the layer against fixtures produced by real
//! PyTorch.
//!
//! ```
//! use mha_runtime::{ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
//! use ndarray::ArrayD;
//!
//! let config = MultiheadAttentionConfig::new(8, 2).with_batch_first(true);
//! let layer = MultiheadAttention::random(config, 0)?;
//! let x = ArrayD::<f32>::ones(vec![3, 5, 8]); // (N, L, E)
//! let out = layer.forward(x.view(), x.view(), x.view(), &ForwardOptions::default())?;
//! assert_eq!(out.output.shape(), &[3, 5, 8]);
//! assert_eq!(out.weights.map(|w| w.shape().to_vec()), Some(vec![3, 5, 5]));
//! # Ok::<(), mha_runtime::MhaError>(())
//! ```

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod config;
mod config_ext;
mod error;
pub mod fast;
mod forward;
mod init;
mod layer;
mod mask;
mod prepare;
mod reference;
mod safetensors_io;
mod sdpa;
mod sizes;
mod weights;

pub use config::*;
pub use error::MhaError;
pub use forward::{AttentionLayer, AttentionOutput, Dropout, ForwardOptions};
pub use layer::MultiheadAttention;
pub use mask::{generate_square_subsequent_mask, Mask};
pub use reference::dropout_keep_mask;
/// Raw safetensors reading for the workspace's parity runner; not a public API.
#[doc(hidden)]
pub use safetensors_io::{read_tensors, LoadedTensor};
pub use sdpa::{
    scaled_dot_product_attention, scaled_dot_product_attention_reference,
    scaled_dot_product_attention_with_isa, SdpaMask, SdpaOptions,
};
pub use sizes::MAX_TENSOR_BYTES;
pub use weights::{InProjection, Weights};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
