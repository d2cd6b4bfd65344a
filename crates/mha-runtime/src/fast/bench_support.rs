//! Timing hooks for the benchmark worker (`examples/bench_attention.rs`); not a stable API.

use std::time::Instant;

use ndarray::{Array1, Array2};

use super::phases::Phase;
use super::projection::{LinearInput, LinearOutput, PackedLinear};

/// Which GEMM a projection runs on, for [`time_projection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionKernel {
    /// The project's AVX-512 panel GEMM (where the CPU has AVX-512F, else the `gemm` crate).
    Panels,
    /// The `gemm` crate.
    GemmCrate,
}

/// Milliseconds of each of `iters` calls of a `rows × in_dim → out_dim` projection with bias
/// on the current rayon pool.
#[doc(hidden)]
pub fn time_projection(
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    kernel: ProjectionKernel,
    iters: usize,
) -> Vec<f64> {
    let w = Array2::from_shape_fn((out_dim, in_dim), |(o, i)| {
        ((o * 7 + i * 3) % 13) as f32 * 0.01
    });
    let b = Array1::from_shape_fn(out_dim, |o| o as f32 * 0.001);
    let linear = PackedLinear::concat_with(
        &[(w.view(), Some(b.view()))],
        kernel == ProjectionKernel::Panels,
    );
    let x: Vec<f32> = (0..rows * in_dim)
        .map(|i| (i % 17) as f32 * 0.1 - 0.8)
        .collect();
    let mut out = vec![0.0f32; rows * out_dim];
    (0..iters)
        .map(|_| {
            let start = Instant::now();
            linear.apply(
                &LinearInput {
                    data: &x,
                    rows,
                    stride: in_dim,
                },
                0..out_dim,
                &mut LinearOutput {
                    data: &mut out,
                    stride: out_dim,
                    col: 0,
                },
                Phase::QkvProjection,
            );
            std::hint::black_box(&mut out);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}
