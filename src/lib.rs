//! `mha`: PyTorch-exact multi-head attention for Rust.
//!
//! A facade over [`mha_runtime`] (the layer and its kernels, re-exported here) and
//! [`attention_layer`], an attribute that turns a field-less struct into a layer whose sizes are
//! compile-time constants checked against the op spec. Both implement [`AttentionLayer`].
//! [`ndarray`] is re-exported so that inputs are built with the version the layer takes.
//! The functional op, torch's `F.scaled_dot_product_attention`, is
//! [`scaled_dot_product_attention`] (arguments in [`SdpaOptions`]), run on the same exact
//! reference core and flash kernel as the layer.
//!
//! ```
//! use mha::ndarray::ArrayD;
//! use mha::{attention_layer, generate_square_subsequent_mask, ForwardOptions, Mask, MhaError};
//!
//! /// The self-attention of a torch `nn.TransformerEncoderLayer(d_model=16, nhead=4, batch_first=True)`.
//! #[attention_layer(embed_dim = 16, num_heads = 4, dropout = 0.1, batch_first = true)]
//! struct SelfAttention;
//!
//! fn main() -> Result<(), MhaError> {
//!     assert_eq!(SelfAttention::HEAD_DIM, 4);
//!     // A torch model's state_dict, saved with safetensors.torch.save_file(model.state_dict(),
//!     // path): load the attention of its second encoder layer by its prefix.
//!     let checkpoint = "tests/fixtures/torch_checkpoint/encoder.safetensors";
//!     let layer = SelfAttention::from_safetensors_with_prefix(checkpoint, "layers.1.self_attn.")?;
//!
//!     let x = ArrayD::<f32>::ones(vec![2, 5, SelfAttention::EMBED_DIM]); // (N, L, E)
//!     // Masks as in torch: a float (additive) or bool (true = ignore) `attn_mask`, a
//!     // `key_padding_mask`, and the `is_causal` hint.
//!     let causal = generate_square_subsequent_mask(5).into_dyn(); // (L, S), -inf above the diagonal
//!     let padding = ArrayD::from_shape_fn(vec![2, 5], |d| d[0] == 1 && d[1] == 4); // (N, S)
//!     let options = ForwardOptions::default()
//!         .with_attn_mask(Mask::Float(causal.view()))
//!         .with_key_padding_mask(Mask::Bool(padding.view()))
//!         .with_average_attn_weights(false);
//!     let out = layer.forward(x.view(), x.view(), x.view(), &options)?;
//!     assert_eq!(out.output.shape(), &[2, 5, 16]);
//!     let weights = out.weights.unwrap(); // (N, H, L, S): per head
//!     assert_eq!(weights[[0, 0, 1, 2]], 0.0); // a future key
//!     assert_eq!(weights[[1, 3, 4, 4]], 0.0); // a padded key
//!
//!     // The exact reference path (the oracle of the fast kernels) takes the same arguments.
//!     let exact = layer.forward_reference(x.view(), x.view(), x.view(), &options)?;
//!     let diff = (&exact.output - &out.output).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
//!     assert!(diff < 1e-5);
//!     Ok(())
//! }
//! ```
//!
//! A mistake in the attribute is a compile error at the argument, e.g.
//! `#[attention_layer(embed_dim = 10, num_heads = 4)]` gives "MultiheadAttention: `num_heads`
//! must divide `embed_dim` (10), got 4; the nearest valid `num_heads` are 2 and 5".
//!
//! # The generated type
//!
//! For `#[attention_layer(...)] struct L;`:
//! - associated constants: one per spec parameter (`EMBED_DIM`, `NUM_HEADS`, `DROPOUT`, `BIAS`,
//!   `ADD_BIAS_KV`, `ADD_ZERO_ATTN`, `KDIM`, `VDIM` resolved to sizes, `BATCH_FIRST`), one per
//!   derived value (`HEAD_DIM`, `PACKED_IN_PROJ`, `EXTRA_KEYS`), `CONFIG` (the
//!   [`MultiheadAttentionConfig`]) and `PARAMETER_SHAPES` (torch `state_dict` names and shapes);
//! - constructors `from_safetensors(path)`, `from_safetensors_with_prefix(path, prefix)`,
//!   `from_safetensors_bytes(bytes, prefix)`, `from_tensors(named tensors)`,
//!   `from_weights(Weights)` (weights are checked against `CONFIG` once, there), and
//!   `random(seed)` (torch's initialisation scheme, seeded);
//! - `forward(query, key, value, &ForwardOptions)` with the runtime's options and output, its
//!   attention kernels instantiated for `HEAD_DIM`, and `forward_reference` (the exact
//!   reference path), both giving the dynamic layer's results bit for bit; `weights()`,
//!   `save_safetensors(path)`, `as_dynamic()` (for what only the dynamic layer offers, such as
//!   `forward_with_isa`), `into_dynamic()`;
//! - impls of [`AttentionLayer`], `From<L> for MultiheadAttention` and
//!   `TryFrom<MultiheadAttention> for L` (the dynamic layer's config must be exactly `CONFIG`).
//!
//! The expansion names everything through `::mha::__private`, so it needs the `mha` crate under
//! that name; with a renamed dependency, say where it is: `#[attention_layer(crate = ::my_mha, ...)]`.

pub use mha_macros::attention_layer;
pub use mha_runtime::*;
pub use ndarray;

/// What `#[attention_layer]` expansions name, by absolute path. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use core::convert::{AsRef, From, Into, TryFrom};
    pub use core::iter::IntoIterator;
    pub use core::option::Option;
    pub use core::result::Result;
    pub use std::format;
    pub use std::path::Path;
    pub use std::string::String;
    pub use std::vec::Vec;

    pub use mha_runtime::{
        AttentionLayer, AttentionOutput, ConfigError, ForwardOptions, MhaError, MultiheadAttention,
        MultiheadAttentionConfig, Weights,
    };
    pub use ndarray::{ArrayD, ArrayViewD};

    /// The dynamic layer inside a generated type. Its field is private to `mha`, so the user's
    /// crate cannot reach the dynamic layer except through the generated methods, and the
    /// compiler does not suggest a field path for a method the generated type lacks.
    #[derive(Debug, Clone, PartialEq)]
    pub struct DynamicLayer(MultiheadAttention);

    impl DynamicLayer {
        /// Wraps a layer whose config the generated type has checked.
        pub fn new(layer: MultiheadAttention) -> Self {
            Self(layer)
        }

        /// The wrapped layer.
        pub fn get(&self) -> &MultiheadAttention {
            &self.0
        }

        /// Unwraps the layer.
        pub fn into_inner(self) -> MultiheadAttention {
            self.0
        }
    }

    /// Reached only if the runtime rejects a config that the macro accepted from the same spec:
    /// a bug in `mha`, never a user error.
    #[cold]
    pub fn invalid_static_config(error: MhaError) -> ! {
        panic!("mha bug: #[attention_layer] accepted a config that mha-runtime rejects: {error}")
    }
}

/// The root README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
