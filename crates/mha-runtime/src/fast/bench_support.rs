//! Timing hooks for the benchmark worker (`examples/bench_attention.rs`); not a stable API.

use ndarray::{Array1, Array2};

use super::phases::{Phase, Split};
use super::projection::{LinearInput, LinearOutput, PackedLinear};

/// A `rows × in_dim → out_dim` projection with bias, packed, with its input and output,
/// for timing [`ProjectionBench::run`] alone.
#[doc(hidden)]
pub struct ProjectionBench {
    linear: PackedLinear,
    x: Vec<f32>,
    out: Vec<f32>,
    rows: usize,
    in_dim: usize,
    out_dim: usize,
}

impl ProjectionBench {
    /// Packs a deterministic weight and input.
    pub fn new(rows: usize, in_dim: usize, out_dim: usize) -> Self {
        let w = Array2::from_shape_fn((out_dim, in_dim), |(o, i)| {
            ((o * 7 + i * 3) % 13) as f32 * 0.01
        });
        let b = Array1::from_shape_fn(out_dim, |o| o as f32 * 0.001);
        let linear = PackedLinear::concat(&[(w.view(), Some(b.view()))]);
        Self {
            linear,
            x: (0..rows * in_dim)
                .map(|i| (i % 17) as f32 * 0.1 - 0.8)
                .collect(),
            out: vec![0.0f32; rows * out_dim],
            rows,
            in_dim,
            out_dim,
        }
    }

    /// One projection on the current rayon pool.
    pub fn run(&mut self) {
        self.linear.apply(
            &LinearInput {
                data: &self.x,
                rows: self.rows,
                stride: self.in_dim,
            },
            0..self.out_dim,
            &mut LinearOutput {
                data: &mut self.out,
                stride: self.out_dim,
                col: 0,
            },
            (Phase::QkvProjection, Split::Pool),
        );
        std::hint::black_box(&mut self.out);
    }
}
