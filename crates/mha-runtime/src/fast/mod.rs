//! The fast path: fused, tiled attention kernels and packed-weight projections behind the same
//! API as the exact [`reference`](crate::reference) path, which stays the oracle.
//!
//! Kernels are compiled for AVX-512, AVX2 + FMA and portable Rust, and picked at run time
//! ([`selected_isa`]); [`force_isa`] or the `MHA_FAST_ISA` environment variable force a level.

// The glue into the layer lands in the next commit.
#![allow(dead_code)]

mod attention;
mod isa;
mod projection;
mod simd;

#[cfg(test)]
mod kernel_tests;

pub use isa::{force_isa, selected_isa, Isa, UnsupportedIsa};
