//! The fast path: fused, tiled attention kernels and packed-weight projections behind the same
//! API as the exact [`reference`](crate::reference) path, which stays the oracle.
//!
//! - Projections run on the `gemm` crate with the weights packed once per layer (transposed,
//!   and `W_q, W_k, W_v` concatenated so self-attention is one GEMM; key and value share one
//!   when they are the same tensor), the output split over rayon threads (columns for short
//!   inputs, rows for long ones), each block a single-threaded GEMM.
//! - Without weights (`need_weights=false`) a flash-style kernel with online softmax works per
//!   `(batch, head, block of 128 queries)`: the block is packed once as `Qᵀ`, scores are
//!   computed transposed (`K Qᵀ`, 64 keys per tile) so keys and values are read in place (from
//!   projection rows padded by one cache line, or, for 1024 queries or more, from a head-major
//!   copy), and the softmax runs along the vector lanes. The `L × S` scores are never materialised; masks
//!   and causal structure are applied tile by tile and fully masked tiles are skipped. With
//!   weights, a second kernel per `(batch, query block)` writes the probabilities it returns.
//! - Work items reuse a thread-local scratch buffer and the layer keeps a workspace for the
//!   projections, so steady-state calls allocate only what they return.
//! - Kernels are compiled for AVX-512, AVX2 + FMA and portable Rust and picked at run time
//!   ([`selected_isa`]); [`force_isa`], the `MHA_FAST_ISA` environment variable (`avx512`,
//!   `avx2`, `portable`) or [`MultiheadAttention::forward_with_isa`](crate::MultiheadAttention::forward_with_isa)
//!   choose a level for the attention kernels (the projections' `gemm` picks its own
//!   micro-kernels at run time).
//! - Training-mode dropout uses the reference path's draws (ChaCha8, one per probability), so
//!   both paths drop the same probabilities.

mod attention;
mod forward;
mod isa;
mod layer_api;
mod projection;
mod simd;

#[cfg(test)]
mod kernel_tests;

pub(crate) use attention::{flash, FullyMasked, MaskRef, Problem, SeqRef};
pub(crate) use forward::FastCache;
pub use isa::{force_isa, selected_isa, Isa, UnsupportedIsa};
