//! `mha`: PyTorch-exact multi-head attention for Rust.
//!
//! A facade over [`mha_runtime`] (the layer and its kernels) and [`mha_macros`]
//! (`#[attention_layer(...)]`).

pub use mha_runtime::*;
