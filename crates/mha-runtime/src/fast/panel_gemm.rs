//! The projections' own AVX-512 GEMM for blocks of few rows: `C = A · B + bias` with `B` (a
//! layer's transposed weight) packed once per layer into panels of [`NR`] columns, `A` read in
//! place from the caller's rows, `C` written once into the caller's layout.
//!
//! Why it exists beside the `gemm` crate: `gemm` packs the weight again in every call, which
//! for a block of 128 rows or fewer is a large share of the work (the weight is read from L3
//! and written once more per call, for only a few rows that use it). With the weight packed
//! once per layer, the panel GEMM ran 8–12 % faster per CPU-second at 128 rows, 0–8 % at 256,
//! 22–47 % at 64 (`512 → 1536` and `512 → 512`, single-threaded, thread CPU time, interleaved
//! runs on the loaded 2-core Sapphire Rapids); at 512 rows and more it is even with `gemm` or
//! behind, so larger blocks stay on `gemm` (see [`super::projection`]).
//!
//! A row tile's `A` (`MR × KC`) is copied depth-major into a 14 KiB buffer first (read in
//! place from the caller's rows, whatever their stride, once per column block), so the
//! micro-kernel's broadcasts come from L1 at fixed offsets.
//!
//! The micro-kernel keeps a [`MR`] × [`NR`] tile of `C` in 28 of the 32 `zmm` registers (two
//! vectors per row), so each step of the dot product is 2 loads of `B`, 14 broadcasts of `A`
//! (folded into the FMAs as memory operands) and 28 independent FMAs: enough to keep two FMA
//! ports with a 4-cycle latency busy (8 chains needed) and loads (16 per 28 FMAs) under the two
//! load ports' rate. Accumulators start from the bias (or from `C` after the first depth
//! block), so the bias costs nothing.
//!
//! Blocking, for each task's block of `C`: column blocks of [`NC_PANELS`] panels, depth blocks
//! of [`KC`], row tiles of [`MR`]; a row tile's packed `A` (`MR × KC`) stays in L1 while it
//! meets every panel of the column block, the column block's `B` (`KC × NC_PANELS · NR`) stays
//! in L2.
//!
//! A [`Panels`] holds the AVX-512 capability token, which only the CPU's feature detection
//! makes (`simd::Avx512::try_new`): CPUs without AVX-512F (and other architectures) get no
//! panels and run the `gemm` crate for every block.

use std::arch::x86_64::*;

use super::projection::LinearInput;
use super::simd::Avx512;

/// Panel width: two 16-lane vectors.
pub(crate) const NR: usize = 32;
/// Rows per micro tile: 14 × 2 accumulators + 2 `B` vectors + 1 broadcast = 31 of 32 registers.
pub(crate) const MR: usize = 14;
/// Depth block: a row tile's `A` is 14 KiB (L1 is 48 KiB on Sapphire Rapids, 32 KiB on Zen 4),
/// a panel's `B` 32 KiB read from L2 once per row tile.
const KC: usize = 256;
/// Panels per column block: `KC × 512` floats of `B` = 512 KiB, half of Zen 4's 1 MiB L2 (a
/// quarter of Sapphire Rapids' 2 MiB), so the block stays in L2 while every row tile meets it.
const NC_PANELS: usize = 16;

/// `NR` columns of `C` that one panel computes: output column `col` (of the concatenated
/// weight) onwards, `width <= NR` of them, from panel `panel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColTile {
    pub col: usize,
    pub width: usize,
    pub panel: usize,
}

/// A weight packed into panels: panel `p` holds `depth × NR` floats, element `(k, lane)` at
/// `k * NR + lane` (columns past a part's end are zero), and its bias (zero-padded likewise).
#[derive(Debug, Clone)]
pub(crate) struct Panels {
    /// Proof that this CPU runs AVX-512F.
    token: Avx512,
    /// Panels, plus slack to start them on a 64-byte boundary (see [`Panels::base`]).
    data: Vec<f32>,
    bias: Option<Vec<f32>>,
    depth: usize,
    /// Every panel's columns, in column order.
    tiles: Vec<ColTile>,
}

impl PartialEq for Panels {
    /// The same panels (every token is the same proof).
    fn eq(&self, other: &Self) -> bool {
        self.base_slice() == other.base_slice()
            && self.bias == other.bias
            && self.depth == other.depth
            && self.tiles == other.tiles
    }
}

/// Floats of slack before the first panel (a cache line).
const ALIGN_SLACK: usize = 16;

impl Panels {
    /// Packs the parts `(weight_t columns, bias)` of a concatenated `depth × out` weight given
    /// as a function of `(k, column)`; every part starts a new panel. `None` when this CPU has
    /// no AVX-512F.
    pub(crate) fn new(
        depth: usize,
        parts: &[std::ops::Range<usize>],
        weight_t: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> Option<Self> {
        let token = Avx512::try_new()?;
        let mut tiles = Vec::new();
        for part in parts {
            let mut col = part.start;
            while col < part.end {
                let width = NR.min(part.end - col);
                tiles.push(ColTile {
                    col,
                    width,
                    panel: tiles.len(),
                });
                col += width;
            }
        }
        let mut data = vec![0.0f32; tiles.len() * depth * NR + ALIGN_SLACK];
        let base = data.as_ptr().align_offset(64).min(ALIGN_SLACK);
        let mut padded_bias = bias.map(|_| vec![0.0f32; tiles.len() * NR]);
        for t in &tiles {
            let panel = &mut data[base + t.panel * depth * NR..][..depth * NR];
            for k in 0..depth {
                for lane in 0..t.width {
                    panel[k * NR + lane] = weight_t(k, t.col + lane);
                }
            }
            if let (Some(dst), Some(src)) = (padded_bias.as_mut(), bias) {
                dst[t.panel * NR..][..t.width].copy_from_slice(&src[t.col..t.col + t.width]);
            }
        }
        Some(Self {
            token,
            data,
            bias: padded_bias,
            depth,
            tiles,
        })
    }

    /// The panels without the alignment slack.
    fn base_slice(&self) -> &[f32] {
        let offset = self.data.as_ptr().align_offset(64).min(ALIGN_SLACK);
        &self.data[offset..offset + self.tiles.len() * self.depth * NR]
    }

    /// The first panel, 64-byte aligned (recomputed, so a clone is aligned too).
    fn base(&self) -> *const f32 {
        let offset = self.data.as_ptr().align_offset(64).min(ALIGN_SLACK);
        self.data.as_ptr().wrapping_add(offset)
    }

    /// Whether `cols` is a run of whole panels (the tiles starting in it end in it).
    pub(crate) fn covers(&self, cols: std::ops::Range<usize>) -> bool {
        let tiles = self.tiles_in(cols.clone());
        tiles.first().is_some_and(|t| t.col == cols.start)
            && tiles.last().is_some_and(|t| t.col + t.width == cols.end)
    }

    /// The tiles whose first column lies in `cols`.
    pub(crate) fn tiles_in(&self, cols: std::ops::Range<usize>) -> &[ColTile] {
        let start = self.tiles.partition_point(|t| t.col < cols.start);
        let end = self.tiles.partition_point(|t| t.col < cols.end);
        &self.tiles[start..end]
    }

    /// `dst.ptr[r * dst.stride + t.col - dst.col0 + c] = Σ_k a.data[r * a.stride + k] ·
    /// B[k][t.col + c] + bias` for `r < a.rows` and every tile `t` of `tiles`.
    ///
    /// # Safety
    /// `tiles` must come from [`Panels::tiles_in`]; `a.data` must hold `a.rows` rows of `depth`
    /// floats `a.stride` apart; `dst.ptr` must point at `a.rows` rows (`dst.stride` apart) whose
    /// columns `t.col - dst.col0 .. + t.width` are writable for every tile, and nothing else may
    /// access them during the call.
    pub(crate) unsafe fn gemm(&self, a: &LinearInput<'_>, tiles: &[ColTile], dst: PanelDst) {
        // SAFETY: `self.token` proves that this CPU runs AVX-512F; the rest is this function's
        // contract.
        unsafe { self.gemm_avx512(self.token, a, tiles, dst) }
    }

    /// [`gemm`](Self::gemm) compiled for AVX-512F.
    ///
    /// # Safety
    /// As [`gemm`](Self::gemm); `_token` shows that the CPU runs AVX-512F, which
    /// `#[target_feature]` makes this function's requirement.
    #[target_feature(enable = "avx512f")]
    unsafe fn gemm_avx512(
        &self,
        _token: Avx512,
        a: &LinearInput<'_>,
        tiles: &[ColTile],
        dst: PanelDst,
    ) {
        let LinearInput {
            data: a,
            rows,
            stride: a_stride,
        } = *a;
        let PanelDst {
            ptr: dst,
            stride: dst_stride,
            col0,
        } = dst;
        debug_assert!(rows == 0 || (rows - 1) * a_stride + self.depth <= a.len());
        let base = self.base();
        // A row tile's `A`, packed depth-major (`MR` values per depth step), read by the
        // micro-kernel at fixed offsets from L1.
        let mut packed_a = [0.0f32; MR * KC];
        for block in tiles.chunks(NC_PANELS) {
            let mut k0 = 0;
            while k0 < self.depth.max(1) {
                let kc = KC.min(self.depth - k0);
                let mut i0 = 0;
                while i0 < rows {
                    let mr = MR.min(rows - i0);
                    for r in 0..mr {
                        let row = &a[(i0 + r) * a_stride + k0..][..kc];
                        for (k, &x) in row.iter().enumerate() {
                            packed_a[k * MR + r] = x;
                        }
                    }
                    for t in block {
                        let init = if k0 > 0 {
                            Init::Load
                        } else if let Some(bias) = &self.bias {
                            Init::Bias(bias[t.panel * NR..].as_ptr())
                        } else {
                            Init::Zero
                        };
                        let tile = Tile {
                            a: packed_a.as_ptr(),
                            b: base.wrapping_add((t.panel * self.depth + k0) * NR),
                            depth: kc,
                            c: dst.wrapping_add(i0 * dst_stride + t.col - col0),
                            c_stride: dst_stride,
                            width: t.width,
                            init,
                        };
                        // SAFETY: AVX-512F runs (this function's contract); the packed
                        // tile holds `kc × MR` floats; the panel holds `depth × NR` floats from
                        // `base`; the tile's `C` columns are writable by the contract.
                        unsafe { micro_dispatch(mr, &tile) };
                    }
                    i0 += mr;
                }
                k0 += kc.max(1);
            }
        }
    }
}

/// Where [`Panels::gemm`] writes: the block's first row at `ptr` (its column `col0` of the
/// projection's columns), rows `stride` apart.
#[derive(Clone, Copy)]
pub(crate) struct PanelDst {
    pub ptr: *mut f32,
    pub stride: usize,
    pub col0: usize,
}

/// Where a micro tile's accumulators start.
#[derive(Clone, Copy)]
enum Init {
    /// From `NR` bias values.
    Bias(*const f32),
    /// From zero.
    Zero,
    /// From `C` (a later depth block).
    Load,
}

/// One micro tile's operands.
struct Tile {
    /// `A` packed depth-major: row `r`, depth `k` at `k * MR + r`.
    a: *const f32,
    /// The panel at the first depth, `NR` floats per depth step.
    b: *const f32,
    depth: usize,
    /// `C` at (first row, first column), rows `c_stride` apart, `width <= NR` columns.
    c: *mut f32,
    c_stride: usize,
    width: usize,
    init: Init,
}

/// Runs the micro-kernel for `rows` (1 to [`MR`]) rows.
///
/// # Safety
/// As [`micro`].
#[target_feature(enable = "avx512f")]
unsafe fn micro_dispatch(rows: usize, t: &Tile) {
    // SAFETY: forwarded contract.
    unsafe {
        match rows {
            14 => micro::<14>(t),
            13 => micro::<13>(t),
            12 => micro::<12>(t),
            11 => micro::<11>(t),
            10 => micro::<10>(t),
            9 => micro::<9>(t),
            8 => micro::<8>(t),
            7 => micro::<7>(t),
            6 => micro::<6>(t),
            5 => micro::<5>(t),
            4 => micro::<4>(t),
            3 => micro::<3>(t),
            2 => micro::<2>(t),
            1 => micro::<1>(t),
            _ => unreachable!("row tiles have 1 to MR rows"),
        }
    }
}

/// `C[r][c] = init + Σ_k A[r][k] · B[k][c]` for `r < R`, `c < t.width`.
///
/// # Safety
/// AVX-512F must be available; `t.a` must be readable at `k * MR + r` for `r < R`,
/// `k < depth`; `t.b` at `k * NR + lane` for `k < depth`, `lane < NR`; a bias pointer at `NR`
/// floats; `t.c` readable (for [`Init::Load`]) and writable at `r * c_stride + c`, `c < width`.
#[target_feature(enable = "avx512f")]
unsafe fn micro<const R: usize>(t: &Tile) {
    let mask0: __mmask16 = if t.width >= 16 {
        0xffff
    } else {
        ((1u32 << t.width) - 1) as u16
    };
    let mask1: __mmask16 = if t.width >= 32 {
        0xffff
    } else if t.width <= 16 {
        0
    } else {
        ((1u32 << (t.width - 16)) - 1) as u16
    };
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    // The pointers below are in bounds by this function's contract; masked loads and stores
    // touch only the tile's `width` columns.
    match t.init {
        Init::Bias(bias) => {
            // SAFETY: a panel's bias is `NR` floats (zero-padded).
            let (b0, b1) = unsafe { (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16))) };
            acc0 = [b0; R];
            acc1 = [b1; R];
        }
        Init::Zero => {}
        Init::Load => {
            for r in 0..R {
                let c = t.c.wrapping_add(r * t.c_stride);
                // SAFETY: row `r` of the tile's `C`, masked to its `width` columns.
                unsafe {
                    acc0[r] = _mm512_maskz_loadu_ps(mask0, c);
                    acc1[r] = _mm512_maskz_loadu_ps(mask1, c.add(16));
                }
            }
        }
    }
    for k in 0..t.depth {
        let a = t.a.wrapping_add(k * MR);
        // SAFETY: the panel holds `NR` floats per depth step, `depth` of them.
        let (b0, b1) = unsafe {
            let b = t.b.add(k * NR);
            (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)))
        };
        for r in 0..R {
            // SAFETY: the packed `A` holds `MR >= R` floats per depth step.
            let x = unsafe { _mm512_set1_ps(*a.add(r)) };
            acc0[r] = _mm512_fmadd_ps(x, b0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(x, b1, acc1[r]);
        }
    }
    for r in 0..R {
        let c = t.c.wrapping_add(r * t.c_stride);
        // SAFETY: row `r` of the tile's `C`, masked to its `width` columns.
        unsafe {
            _mm512_mask_storeu_ps(c, mask0, acc0[r]);
            _mm512_mask_storeu_ps(c.add(16), mask1, acc1[r]);
        }
    }
}
