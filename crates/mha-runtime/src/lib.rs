//! `torch.nn.MultiheadAttention`, exactly, in Rust.
//!
//! [`MultiheadAttention`] is built from a [`MultiheadAttentionConfig`] (torch's constructor
//! arguments) and weights under torch's `state_dict` names: loaded from safetensors (a whole
//! model's checkpoint too, by the layer's prefix), given as tensors or drawn with torch's
//! initialisation scheme. [`MultiheadAttention::forward`] takes the same inputs as torch's
//! `forward` (see [`ForwardOptions`] and [`Mask`]) and gives the same [`AttentionOutput`],
//! including torch's layouts, masks, `is_causal` hint and fully-masked-row behaviour. Bad input
//! is an [`MhaError`], never a panic. [`scaled_dot_product_attention`] is torch's
//! `F.scaled_dot_product_attention` (arguments in [`SdpaOptions`]).
//!
//! `forward` runs fused kernels (see [`fast`] for their strategies, the instruction-set
//! selection and phase timing); [`MultiheadAttention::forward_reference`] runs the exact
//! reference path, kept simple as the oracle the fast kernels are tested against. The
//! `mha-parity` crate checks both against fixtures produced by real PyTorch.
//!
//! ```
//! use mha_runtime::{
//!     generate_square_subsequent_mask, ForwardOptions, Mask, MhaError, MultiheadAttention,
//!     MultiheadAttentionConfig,
//! };
//! use ndarray::ArrayD;
//!
//! fn main() -> Result<(), MhaError> {
//!     // The self-attention of the second layer of a torch `nn.TransformerEncoder`, from its
//!     // state_dict saved with safetensors.torch.save_file(model.state_dict(), path).
//!     let config = MultiheadAttentionConfig::new(16, 4).with_batch_first(true);
//!     let checkpoint = "../../tests/fixtures/torch_checkpoint/encoder.safetensors";
//!     let layer = MultiheadAttention::from_safetensors(config, checkpoint, "layers.1.self_attn.")?;
//!
//!     let x = ArrayD::<f32>::ones(vec![3, 5, 16]); // (N, L, E)
//!     let causal = generate_square_subsequent_mask(5).into_dyn(); // (L, S): -inf above the diagonal
//!     let padding = ArrayD::from_shape_fn(vec![3, 5], |d| d[1] == 4); // (N, S): true = ignore
//!     let options = ForwardOptions::default()
//!         .with_attn_mask(Mask::Float(causal.view()))
//!         .with_key_padding_mask(Mask::Bool(padding.view()));
//!     let out = layer.forward(x.view(), x.view(), x.view(), &options)?;
//!     assert_eq!(out.output.shape(), &[3, 5, 16]);
//!     let weights = out.weights.unwrap(); // (N, L, S), averaged over heads
//!     assert_eq!((weights[[0, 1, 2]], weights[[2, 4, 4]]), (0.0, 0.0)); // future, padded keys
//!     Ok(())
//! }
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
// Raw safetensors reading for the parity runner (`mha-parity`): `#[doc(hidden)]` items.
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
