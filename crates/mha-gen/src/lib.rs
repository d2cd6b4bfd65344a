//! `mha-gen`: op specs → Python framework glue, docs pages and Rust code.
//!
//! One core serves three front ends: the `mha-gen` CLI, build scripts through [`Builder`], and the
//! `#[attention_layer]` macro. [`generate()`] is pure: it returns files and writes
//! nothing; [`write_all`] is the I/O edge and writes only files whose contents changed.
//!
//! ```
//! let specs = mha_spec::bundled().unwrap();
//! let files = mha_gen::generate(&specs, &mha_gen::Templates::bundled(), &Default::default()).unwrap();
//! assert!(files.iter().any(|f| f.path == "python/mha_glue/multihead_attention/keras.py"));
//! assert!(files.iter().any(|f| f.path == "python/mha_glue/scaled_dot_product_attention/_spec.py"));
//! assert!(files.iter().any(|f| f.path == "docs/ops/ScaledDotProductAttention.rst"));
//! ```

#![deny(missing_docs)]

mod builder;
pub mod convert;
mod docs;
mod error;
mod filters;
mod generate;
mod templates;
mod write;

pub use builder::Builder;
pub use error::GenError;
pub use generate::{generate, select_ops, snake_case, GeneratedFile, Options, PYTHON_PACKAGE};
pub use templates::Templates;
pub use write::{write_all, write_if_changed, WriteOutcome};
