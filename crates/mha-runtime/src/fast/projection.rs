//! The linear projections (`x Wᵀ + b`), with weights packed once per layer: blocks of at most
//! [`PANEL_MAX_ROWS`] rows on the project's AVX-512 panel GEMM ([`super::panel_gemm`], where
//! the CPU has AVX-512F), larger ones (and every block elsewhere) on the `gemm` crate, which
//! picks its own micro-kernels at run time (AVX-512 through its `x86-v4` feature, AVX2 / FMA,
//! or scalar) and reads the weight stored transposed (unit column stride). The output is split
//! into a grid of blocks sized to the thread count ([`grid`]), each block a single-threaded
//! GEMM that reads the caller's rows in place and writes the block once. On AVX-512 CPUs the
//! layer keeps both copies of each weight (twice the weights' memory).
//!
//! The bias: the panel GEMM starts its accumulators from it; `gemm` cannot, so its blocks are
//! first filled with the bias rows and accumulated into (`beta = 1`), in row chunks that keep
//! the filled rows in L2 where re-packing the weight per chunk is cheap ([`chunk_rows`]).
//!
//! What was measured and not taken: the panel GEMM for every block (even with `gemm` from 512
//! rows up, 2–4 % behind at 1024 rows of `512 → 1536`; an earlier session's "5–40 % slower"
//! for all sizes was read from `/proc/thread-self/schedstat`, which this machine updates only
//! at scheduler ticks); `faer` 0.22 (its `private-gemm-x86` kernels,
//! `Par::Seq`), timed on `rows × 512 → 1536` and `→ 512` for 16 to 1024 rows, slower than
//! `gemm` 0.19 at every size but one (10–30 % per CPU-second); raising the `gemm` crate's
//! global packing thresholds (`set_lhs_packing_threshold_single_thread`) so that it reads the
//! weight unpacked, slower from 128 rows up.

use std::ops::Range;

use ndarray::{ArrayView1, ArrayView2};

#[cfg(target_arch = "x86_64")]
use super::panel_gemm::{PanelDst, Panels};
use super::phases::{Phase, Region, Split};

/// A linear layer's weight stored transposed, `in × out` row-major (the GEMM's right-hand side
/// with unit column stride), and its bias; several layers may be concatenated along `out`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedLinear {
    weight_t: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// The same weight in the AVX-512 panel GEMM's panels (where the CPU has AVX-512F), for
    /// blocks of at most [`PANEL_MAX_ROWS`] rows.
    #[cfg(target_arch = "x86_64")]
    panels: Option<Panels>,
    in_dim: usize,
    out_dim: usize,
}

/// The rows a linear reads: `rows` rows of `in_dim` floats, `stride` floats apart.
pub(crate) struct LinearInput<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub stride: usize,
}

/// Where a linear writes: row `r`, column `c` of the result goes to
/// `data[r * stride + col + c]`.
pub(crate) struct LinearOutput<'a> {
    pub data: &'a mut [f32],
    pub stride: usize,
    pub col: usize,
}

/// Multiply-adds a parallel task should do at least: about 2 M (tens of microseconds on one
/// core) keeps rayon's dispatch (a few microseconds) and each task's packing of its operands
/// under a few percent.
const MIN_TASK_MACS: usize = 1 << 21;
/// Rows of a task's block at least, unless the whole output has fewer: the grid then splits
/// columns only. The `gemm` crate packs the weight (its left-hand side after it transposes the
/// problem) only for more than 64 rows; with 64 or fewer it reads the weight in place, a
/// 6 KiB-strided walk, and its `512 → 1536` projection ran 25–50 % slower per flop at 64 rows
/// than at 128 (single-threaded, this machine). A block of `⌈rows / row_tasks⌉` rows with
/// `row_tasks <= ⌈rows / 128⌉` has more than 64 whenever it has a row split at all.
const MIN_TASK_ROWS: usize = 128;
/// Row blocks of at most this many rows run on the panel GEMM where there is one
/// ([`super::panel_gemm`]: the weight packed once per layer, where `gemm` packs it again per
/// call); larger ones on `gemm`, which is as fast there and keeps its own blocking for
/// long inputs.
const PANEL_MAX_ROWS: usize = 256;
/// Column blocks are multiples of this (whole 16-lane vectors, two of them) and at least one
/// of them.
const COL_ALIGN: usize = 32;

/// The task grid `(row_tasks, col_tasks)` for a `rows × width` output with `depth`-long dot
/// products on `threads` threads.
///
/// As many tasks as threads (one block each, so no block waits for a second round), fewer when
/// the work would make tasks smaller than [`MIN_TASK_MACS`]. Of the factorisations
/// `tasks = row_tasks · col_tasks` whose blocks keep [`MIN_TASK_ROWS`] rows and [`COL_ALIGN`]
/// columns, the one that moves the least: every task reads its columns of the weight
/// (`depth × width / col_tasks`) and reads and packs (writes) its input rows
/// (`rows / row_tasks × depth`: `gemm` packs them in every call), so the grid moves
/// `2 · col_tasks · rows + row_tasks · width` (times `depth`) floats in all; blocks come out
/// about square, a little taller than wide.
fn grid(rows: usize, width: usize, depth: usize, threads: usize) -> (usize, usize) {
    let macs = rows.saturating_mul(width).saturating_mul(depth.max(1));
    let max_tasks = threads.min(macs / MIN_TASK_MACS).max(1);
    let row_blocks = rows.div_ceil(MIN_TASK_ROWS);
    let col_blocks = width.div_ceil(COL_ALIGN);
    (1..=max_tasks)
        .rev()
        .find_map(|tasks| {
            (1..=tasks)
                .filter(|&rt| tasks % rt == 0 && rt <= row_blocks && tasks / rt <= col_blocks)
                .map(|rt| (rt, tasks / rt))
                .min_by_key(|&(rt, ct)| 2 * ct * rows + rt * width)
        })
        .unwrap_or((1, 1))
}

impl PackedLinear {
    /// Packs `[W_1; W_2; ...]` (each `(out_i, in)`, torch's Linear layout) with their biases
    /// (all present or all absent).
    pub(crate) fn concat(parts: &[(ArrayView2<'_, f32>, Option<ArrayView1<'_, f32>>)]) -> Self {
        let in_dim = parts.first().map_or(0, |(w, _)| w.dim().1);
        let out_dim: usize = parts.iter().map(|(w, _)| w.dim().0).sum();
        let mut weight_t = vec![0.0f32; in_dim * out_dim];
        let mut col = 0;
        for (w, _) in parts {
            assert_eq!(
                w.dim().1,
                in_dim,
                "concatenated weights must share the input width"
            );
            for ((o, i), &x) in w.indexed_iter() {
                weight_t[i * out_dim + col + o] = x;
            }
            col += w.dim().0;
        }
        let bias: Option<Vec<f32>> = if parts.iter().all(|(_, b)| b.is_some()) && !parts.is_empty()
        {
            Some(
                parts
                    .iter()
                    .flat_map(|(_, b)| b.iter().flat_map(|b| b.iter().copied()))
                    .collect(),
            )
        } else {
            None
        };
        #[cfg(target_arch = "x86_64")]
        let panels = {
            let mut ranges = Vec::with_capacity(parts.len());
            let mut start = 0;
            for (w, _) in parts {
                ranges.push(start..start + w.dim().0);
                start += w.dim().0;
            }
            Panels::new(
                in_dim,
                &ranges,
                |k, c| weight_t[k * out_dim + c],
                bias.as_deref(),
            )
        };
        Self {
            weight_t,
            bias,
            #[cfg(target_arch = "x86_64")]
            panels,
            in_dim,
            out_dim,
        }
    }

    /// Input width.
    pub(crate) fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Weight floats, `in_dim × out_dim`.
    pub(crate) fn weight_len(&self) -> usize {
        self.in_dim * self.out_dim
    }

    /// `out[r][out.col + c] = Σ_i x[r][i] · W[cols.start + c][i] + b[cols.start + c]` for the
    /// input's rows and `c < cols.len()`, split over the threads `split` gives (see [`grid`]);
    /// the time goes to `phase`.
    pub(crate) fn apply(
        &self,
        x: &LinearInput<'_>,
        cols: Range<usize>,
        out: &mut LinearOutput<'_>,
        (phase, split): (Phase, Split),
    ) {
        let (rows, width) = (x.rows, cols.len());
        if rows == 0 || width == 0 {
            return;
        }
        assert!(cols.end <= self.out_dim);
        assert!(x.stride >= self.in_dim && (rows - 1) * x.stride + self.in_dim <= x.data.len());
        assert!(
            out.col + width <= out.stride
                && (rows - 1) * out.stride + out.col + width <= out.data.len()
        );

        let (row_tasks, col_tasks) = grid(rows, width, self.in_dim, split.threads());
        let rows_per = rows.div_ceil(row_tasks);
        #[cfg(target_arch = "x86_64")]
        let panels = self
            .panels
            .as_ref()
            .filter(|p| rows_per <= PANEL_MAX_ROWS && p.covers(cols.clone()));
        let cols_per = width.div_ceil(col_tasks).div_ceil(COL_ALIGN) * COL_ALIGN;
        let dst_ptr = SendPtr(out.data.as_mut_ptr());
        let (x_data, x_stride, out_stride, out_col) = (x.data, x.stride, out.stride, out.col);
        let region = Region::start(split);
        let run = |t: usize| {
            let (rt, ct) = (t / col_tasks, t % col_tasks);
            let r0 = (rt * rows_per).min(rows);
            let r1 = rows.min(r0 + rows_per);
            let c0 = (ct * cols_per).min(width);
            let c1 = width.min(c0 + cols_per);
            if r0 == r1 || c0 == c1 {
                return;
            }
            let dst = dst_ptr;
            let x = &x_data[r0 * x_stride..];
            let dst_rows = dst.0.wrapping_add(r0 * out_stride + out_col);
            #[cfg(target_arch = "x86_64")]
            if let Some(panels) = panels {
                // The panels that start in this task's columns: every panel of `cols`
                // (whole panels, checked by `covers`) goes to exactly one task.
                let tiles = panels.tiles_in(cols.start + c0..cols.start + c1);
                // SAFETY: `x` holds the block's rows (asserted above); the tiles' columns
                // lie inside `cols`, so inside `out`'s rows, and no other task has them.
                unsafe {
                    let a = LinearInput {
                        data: x,
                        rows: r1 - r0,
                        stride: x_stride,
                    };
                    let dst = PanelDst {
                        ptr: dst_rows,
                        stride: out_stride,
                        col0: cols.start,
                    };
                    panels.gemm(&a, tiles, dst)
                };
                return;
            }
            // SAFETY: tasks cover disjoint blocks of `out`, all in bounds (asserted above).
            unsafe {
                gemm_block(
                    GemmOperands {
                        weight_t: &self.weight_t,
                        bias: self.bias.as_deref(),
                        in_dim: self.in_dim,
                        out_dim: self.out_dim,
                    },
                    x,
                    r1 - r0,
                    x_stride,
                    cols.start + c0..cols.start + c1,
                    dst_rows.wrapping_add(c0),
                    out_stride,
                )
            }
        };
        let tasks = row_tasks * col_tasks;
        region.for_each(tasks, run);
        region.finish(phase, tasks);
    }
}

/// The `gemm` crate's operands: the weight transposed (`in_dim × out_dim` row-major) and bias.
#[derive(Clone, Copy)]
struct GemmOperands<'w> {
    weight_t: &'w [f32],
    bias: Option<&'w [f32]>,
    in_dim: usize,
    out_dim: usize,
}

/// Output bytes whose bias rows a [`gemm_block`] call writes before its GEMM accumulates into
/// them: about half of a core's L2 (1 MiB on Zen 4, 2 MiB on Sapphire Rapids), so the
/// prefilled rows are still there when the GEMM reads them back. A block that is larger and
/// written all at once sends its bias rows out to L3 or memory and fetches them again: one more
/// round trip of the whole output, 5–10 % of a `k = 512` projection and a quarter of a
/// `k = 128` one (measured on the `gemm` crate: 8192 × 128 → 384 and 1024 × 512 → 512).
const PREFILL_BYTES: usize = 512 << 10;
/// A weight block of at most this many floats (512 KiB) stays in L2, so packing it again for
/// every row chunk costs about a quarter cycle per float: under 3 % of a chunk of
/// [`MIN_CHUNK_ROWS`] rows. Larger blocks (a `512 × 1536` QKV weight) come from L3 on every
/// packing, so their rows are not chunked (measured: 256-row chunks of `1024 × 512 → 1536`
/// 7–15 % slower).
const REPACK_FLOATS: usize = 128 << 10;
/// Rows of a chunk at least: the `gemm` crate reads an unpacked weight at 64 rows or fewer,
/// which is slower than packing it.
const MIN_CHUNK_ROWS: usize = 256;

/// Rows per GEMM call of a `rows × width` block with `depth`-long dot products: the whole block,
/// or, when the bias is prefilled and the weight block is small enough to pack again per call,
/// chunks whose prefilled rows fit [`PREFILL_BYTES`].
fn chunk_rows(rows: usize, width: usize, depth: usize, bias: bool) -> usize {
    if !bias || depth.saturating_mul(width) > REPACK_FLOATS {
        return rows;
    }
    let fits = PREFILL_BYTES / (width.max(1) * std::mem::size_of::<f32>());
    fits.max(MIN_CHUNK_ROWS).min(rows).max(1)
}

/// One single-threaded `gemm` crate GEMM over `rows` rows and the weight's columns `cols`: the
/// bias rows are written first and the GEMM accumulates into them (`beta = 1`), in row chunks
/// ([`chunk_rows`]) so the prefilled rows are still in cache when it does.
///
/// # Safety
/// `x` must hold `rows` rows of `in_dim` floats `x_stride` apart; `dst` must point at `rows`
/// rows of `cols.len()` writable floats, `dst_stride` apart, that nothing else accesses.
unsafe fn gemm_block(
    w: GemmOperands<'_>,
    x: &[f32],
    rows: usize,
    x_stride: usize,
    cols: Range<usize>,
    dst: *mut f32,
    dst_stride: usize,
) {
    let width = cols.len();
    let chunk = chunk_rows(rows, width, w.in_dim, w.bias.is_some());
    let mut r0 = 0;
    while r0 < rows {
        let n = chunk.min(rows - r0);
        let dst = dst.wrapping_add(r0 * dst_stride);
        let read_dst = if let Some(bias) = w.bias {
            for r in 0..n {
                // SAFETY: row r0 + r of dst holds `width` floats.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(r * dst_stride), width) };
                row.copy_from_slice(&bias[cols.clone()]);
            }
            true
        } else {
            false
        };
        // SAFETY: the strides describe in-bounds row-major matrices: x rows r0.. (n × in_dim),
        // Wᵀ columns `cols` (in_dim × width, row stride out_dim) and dst rows r0.. (n × width).
        unsafe {
            gemm::gemm(
                n,
                width,
                w.in_dim,
                dst,
                1,
                dst_stride as isize,
                read_dst,
                x.as_ptr().add(r0 * x_stride),
                1,
                x_stride as isize,
                w.weight_t.as_ptr().add(cols.start),
                1,
                w.out_dim as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        r0 += n;
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint row blocks to rayon tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`.
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    #[test]
    fn matches_naive_linear_on_parts_strides_and_thread_counts() {
        // Row counts around the micro tile (14), the task minimum and the panel limit (256); a
        // depth of two blocks and a remainder; parts of odd widths, a column range inside one
        // part; 1, 3 and 8 threads (grids of one to eight tasks).
        for rows in [1, 13, 15, 70, 600] {
            for with_bias in [true, false] {
                check_linear(rows, with_bias, &[0..80, 37..80, 0..37, 5..60], &[1, 3, 8]);
            }
        }
    }

    #[test]
    fn blocks_in_row_chunks_match_naive_linear() {
        // 3500 rows of 80 columns with bias: two chunks of 1638 rows and a remainder (and a part).
        assert_eq!(chunk_rows(3500, 80, 300, true), 1638);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| check_linear(3500, true, &[0..80, 0..37], &[]));
    }

    /// Checks `apply` on `rows` rows for every column set against a naive linear computed once,
    /// in a pool of each of `threads` sizes (none: in the caller's pool).
    fn check_linear(rows: usize, with_bias: bool, col_sets: &[Range<usize>], threads: &[usize]) {
        let in_dim = 300;
        let widths = [37, 3, 40];
        let weights: Vec<Array2<f32>> = widths
            .iter()
            .enumerate()
            .map(|(p, &w)| {
                Array2::from_shape_fn((w, in_dim), |(o, i)| {
                    ((o * 7 + i * 3 + p) % 13) as f32 * 0.1 - 0.6
                })
            })
            .collect();
        let biases: Vec<Array1<f32>> = widths
            .iter()
            .map(|&w| Array1::from_shape_fn(w, |o| o as f32 * 0.5 - 3.0))
            .collect();
        let parts: Vec<_> = weights
            .iter()
            .zip(&biases)
            .map(|(w, b)| (w.view(), with_bias.then(|| b.view())))
            .collect();
        let packed = PackedLinear::concat(&parts);
        let x_stride = in_dim + 5;
        let x: Vec<f32> = (0..rows * x_stride)
            .map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.5)
            .collect();
        // The naive result, once: every output column of every row, parts side by side.
        let flat: Vec<(&[f32], f32)> = weights
            .iter()
            .zip(&biases)
            .flat_map(|(w, b)| {
                let w = w.as_slice().expect("standard layout");
                (0..b.len()).map(move |o| {
                    let bias = if with_bias { b[o] } else { 0.0 };
                    (&w[o * in_dim..(o + 1) * in_dim], bias)
                })
            })
            .collect();
        let want: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let row = &x[r * x_stride..r * x_stride + in_dim];
                flat.iter()
                    .map(move |(w, b)| row.iter().zip(*w).map(|(a, b)| a * b).sum::<f32>() + b)
            })
            .collect();
        let total = flat.len();
        let run = || {
            for cols in col_sets {
                let dst_stride = 90;
                let mut dst = vec![f32::NAN; rows * dst_stride];
                packed.apply(
                    &LinearInput {
                        data: &x,
                        rows,
                        stride: x_stride,
                    },
                    cols.clone(),
                    &mut LinearOutput {
                        data: &mut dst,
                        stride: dst_stride,
                        col: 1,
                    },
                    (Phase::QkvProjection, Split::Pool),
                );
                for r in 0..rows {
                    for (c, col) in cols.clone().enumerate() {
                        let (got, want) = (dst[r * dst_stride + 1 + c], want[r * total + col]);
                        assert!(
                            (got - want).abs() < 1e-3,
                            "rows {rows} row {r} col {col}: {got} vs {want}"
                        );
                    }
                    assert!(dst[r * dst_stride].is_nan());
                    assert!(dst[r * dst_stride + 1 + cols.len()].is_nan());
                }
            }
        };
        if threads.is_empty() {
            run();
        }
        for &n in threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap();
            pool.install(run);
        }
    }

    #[test]
    fn small_weights_chunk_rows_to_keep_prefilled_bias_in_cache() {
        // Tiny sequences' projections (E = 128): chunks of 512 KiB of output, at least 256 rows.
        assert_eq!(chunk_rows(8192, 384, 128, true), 341);
        assert_eq!(chunk_rows(8192, 128, 128, true), 1024);
        assert_eq!(chunk_rows(8192, 2048, 16, true), 256);
        assert_eq!(chunk_rows(100, 128, 128, true), 100);
        // No bias to prefill, or a weight too large to pack again per chunk: one call.
        assert_eq!(chunk_rows(8192, 384, 128, false), 8192);
        assert_eq!(chunk_rows(1024, 1536, 512, true), 1024);
    }

    #[test]
    fn grid_keeps_tasks_large_and_blocks_square() {
        // Too little work to split.
        assert_eq!(grid(128, 1536, 512, 1), (1, 1));
        assert_eq!(grid(16, 64, 64, 8), (1, 1));
        // Short and wide: columns; tall and narrow: rows.
        assert_eq!(grid(128, 1536, 512, 2), (1, 2));
        assert_eq!(grid(8192, 512, 512, 2), (2, 1));
        assert_eq!(grid(1024, 1536, 512, 2), (2, 1));
        // Many threads: a two-dimensional grid of about square blocks.
        assert_eq!(grid(4096, 1536, 512, 16), (8, 2));
        assert_eq!(grid(2048, 3072, 1024, 64), (8, 8));
        // 128 rows at 16 threads: columns only (a row split would leave 64-row blocks, on
        // which the gemm crate reads the weight unpacked).
        assert_eq!(grid(128, 1536, 512, 16), (1, 16));
        assert_eq!(grid(129, 1536, 512, 16).0, 2);
        // A decode step (one row per sequence) never splits rows below the minimum.
        let (rt, ct) = grid(8, 1536, 512, 64);
        assert_eq!(rt, 1);
        assert!(ct <= 1536 / COL_ALIGN);
    }
}
