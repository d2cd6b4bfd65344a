//! Fused attention over projected Q, K, V: a flash-style kernel with online softmax that never
//! materialises the `L × S'` scores, and a weights-returning kernel that writes the
//! probabilities it must return.
//!
//! Work is split with rayon over `(batch, head, query block)` (flash; with a causal mask, block
//! `b` and block `blocks - 1 - b` of a head form one unit, so units cost the same) or
//! `(batch, query block)` (weights); each work item runs single-threaded register-blocked micro-kernels on tiles of
//! `BLOCK_Q` queries × `BLOCK_K` keys, with its packed operands in a thread-local scratch
//! buffer, so steady-state calls allocate nothing here.

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::phases::{Phase, Region};
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Simd};
use super::Isa;

/// Queries per work item / tile.
pub(crate) const BLOCK_Q: usize = 128;
/// Keys per tile (a multiple of every ISA's lane count).
pub(crate) const BLOCK_K: usize = 64;

/// A `(batch, position, head, feature)` operand inside a flat buffer: element `(n, t, h, c)`
/// is at `offset + n * batch_stride + t * row_stride + h * head_stride + c`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub batch_stride: usize,
    pub row_stride: usize,
    pub head_stride: usize,
}

impl SeqRef<'_> {
    /// Pointer to `(n, t, 0)`; in bounds by [`Problem::check`].
    #[inline(always)]
    fn row(&self, n: usize, t: usize) -> *const f32 {
        self.data
            .as_ptr()
            .wrapping_add(self.offset + n * self.batch_stride + t * self.row_stride)
    }

    /// Pointer to `(n, t, h, 0)`.
    #[inline(always)]
    fn head_row(&self, n: usize, t: usize, h: usize) -> *const f32 {
        self.row(n, t).wrapping_add(h * self.head_stride)
    }

    fn last_index(&self, batch: usize, len: usize, heads: usize, head_dim: usize) -> usize {
        self.offset
            + (batch - 1) * self.batch_stride
            + (len - 1) * self.row_stride
            + (heads - 1) * self.head_stride
            + head_dim
    }
}

/// The merged additive mask: row `(n, h, i)` starts at `n * batch_stride + h * head_stride +
/// i * row_stride` and holds `S'` contiguous values (a stride of 0 broadcasts).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskRef<'a> {
    pub data: &'a [f32],
    pub batch_stride: usize,
    pub head_stride: usize,
    pub row_stride: usize,
}

impl MaskRef<'_> {
    #[inline(always)]
    fn row(&self, n: usize, h: usize, i: usize) -> *const f32 {
        self.data
            .as_ptr()
            .wrapping_add(n * self.batch_stride + h * self.head_stride + i * self.row_stride)
    }
}

/// What a query row whose keys are all masked gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullyMasked {
    /// Output (and weights) NaN, as torch's explicit softmax gives.
    Nan,
    /// Zero attention, as `scaled_dot_product_attention` gives.
    Zero,
}

/// One attention problem on projected inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Problem<'a> {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// `L`.
    pub q_len: usize,
    /// `S`, the keys that come from `k` / `v`.
    pub src_len: usize,
    pub q: SeqRef<'a>,
    pub k: SeqRef<'a>,
    pub v: SeqRef<'a>,
    /// Keys appended after the `S` input keys (`bias_k`, then a zero row), `extra × E`.
    pub extra_k: &'a [f32],
    /// Values appended likewise, `extra × E`.
    pub extra_v: &'a [f32],
    pub mask: Option<MaskRef<'a>>,
    /// Mask key `j > i` for query `i`.
    pub causal: bool,
    pub scale: f32,
    pub fully_masked: FullyMasked,
    /// Training-mode dropout on the probabilities.
    pub dropout: Option<DropoutRef>,
}

/// Dropout with the reference path's draws: ChaCha8 seeded with `seed`, stream
/// `n * heads + h`, one `f32` per probability of the `(L, S')` matrix in row-major order; kept
/// when the draw is `>= p`, then scaled by `1 / (1 - p)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropoutRef {
    pub p: f32,
    pub seed: u64,
}

impl DropoutRef {
    fn generator(&self, n: usize, h: usize, heads: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream((n * heads + h) as u64);
        rng
    }

    /// Applies the draws from word `word_pos` on (element `(i, k0)` of the `(L, S')` matrix
    /// is word `i * S' + k0`) to `row[0], row[stride], ...`, `count` of them.
    fn apply(
        &self,
        rng: &mut ChaCha8Rng,
        word_pos: usize,
        row: &mut [f32],
        stride: usize,
        count: usize,
    ) {
        rng.set_word_pos(word_pos as u128);
        let scale = 1.0 / (1.0 - self.p);
        for j in 0..count {
            let x = &mut row[j * stride];
            *x = if rng.random::<f32>() >= self.p {
                *x * scale
            } else {
                0.0
            };
        }
    }
}

impl Problem<'_> {
    fn embed_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn extra(&self) -> usize {
        self.extra_k.len() / self.embed_dim().max(1)
    }

    /// `S'`: all keys, appended ones included.
    pub(crate) fn total_keys(&self) -> usize {
        self.src_len + self.extra()
    }

    /// Checks that every index the kernels form is in bounds (an internal invariant: the
    /// callers build problems from checked shapes).
    fn check(&self) {
        let e = self.embed_dim();
        assert!(self.batch > 0 && self.q_len > 0 && self.heads > 0 && self.head_dim > 0);
        assert!(
            self.q
                .last_index(self.batch, self.q_len, self.heads, self.head_dim)
                <= self.q.data.len()
        );
        if self.src_len > 0 {
            assert!(
                self.k
                    .last_index(self.batch, self.src_len, self.heads, self.head_dim)
                    <= self.k.data.len()
            );
            assert!(
                self.v
                    .last_index(self.batch, self.src_len, self.heads, self.head_dim)
                    <= self.v.data.len()
            );
        }
        assert_eq!(self.extra_k.len(), self.extra_v.len());
        assert_eq!(self.extra_k.len() % e, 0);
        if let Some(m) = &self.mask {
            let last = (self.batch - 1) * m.batch_stride
                + (self.heads - 1) * m.head_stride
                + (self.q_len - 1) * m.row_stride
                + self.total_keys();
            assert!(last <= m.data.len());
        }
    }

    /// Key `j` (of `S'`) of head `h`, batch `n`.
    #[inline(always)]
    fn key(&self, n: usize, j: usize, h: usize) -> *const f32 {
        if j < self.src_len {
            self.k.head_row(n, j, h)
        } else {
            self.extra_k
                .as_ptr()
                .wrapping_add((j - self.src_len) * self.embed_dim() + h * self.head_dim)
        }
    }

    #[inline(always)]
    fn value(&self, n: usize, j: usize, h: usize) -> *const f32 {
        if j < self.src_len {
            self.v.head_row(n, j, h)
        } else {
            self.extra_v
                .as_ptr()
                .wrapping_add((j - self.src_len) * self.embed_dim() + h * self.head_dim)
        }
    }
}

/// A `(batch, position, feature)` destination (attention output before `out_proj`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqOut {
    ptr: *mut f32,
    batch_stride: usize,
    row_stride: usize,
}

impl SeqOut {
    /// Pointer to head `h` (`d` wide) of row `(n, t)`.
    #[inline(always)]
    fn head_row(&self, n: usize, t: usize, h: usize, d: usize) -> *mut f32 {
        self.ptr
            .wrapping_add(n * self.batch_stride + t * self.row_stride + h * d)
    }
}

// SAFETY: work items write disjoint rows / head columns of the destination.
unsafe impl Send for SeqOut {}
unsafe impl Sync for SeqOut {}

/// Where the weights kernel writes the probabilities: `(N, H, L, S')` or `(N, L, S')`.
#[derive(Debug, Clone, Copy)]
struct WeightsOut {
    ptr: *mut f32,
    per_head: bool,
}

// SAFETY: work items write disjoint `(n, query block)` rows.
unsafe impl Send for WeightsOut {}
unsafe impl Sync for WeightsOut {}

fn out_for(
    problem: &Problem<'_>,
    out: &mut [f32],
    batch_stride: usize,
    row_stride: usize,
) -> SeqOut {
    let last =
        (problem.batch - 1) * batch_stride + (problem.q_len - 1) * row_stride + problem.embed_dim();
    assert!(last <= out.len(), "attention output buffer too small");
    SeqOut {
        ptr: out.as_mut_ptr(),
        batch_stride,
        row_stride,
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of at least `len` floats.
fn with_scratch(len: usize, f: impl FnOnce(&mut [f32])) {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len]);
    });
}

const fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

fn flash_scratch_len(head_dim: usize) -> usize {
    let dp = round_up(head_dim, 16);
    head_dim * BLOCK_Q + BLOCK_K * dp + BLOCK_Q * BLOCK_K + BLOCK_Q * dp + 3 * BLOCK_Q
}

fn weights_scratch_len(head_dim: usize, total_keys: usize) -> usize {
    let dp = round_up(head_dim, 16);
    head_dim * BLOCK_K
        + BLOCK_K * dp
        + BLOCK_Q * round_up(total_keys.max(1), BLOCK_K)
        + BLOCK_Q * dp
}

type FlashItem = unsafe fn(&Problem<'_>, SeqOut, usize, &mut [f32]);
type WeightsItem = unsafe fn(&Problem<'_>, SeqOut, WeightsOut, usize, &mut [f32]);

/// The flash kernel: `out` gets softmax(q kᵀ · scale + mask) v for every `(n, i, h)`.
/// `HEAD_DIM = 0` reads the head dimension from the problem; otherwise it must equal it.
pub(crate) fn flash<const HEAD_DIM: usize>(
    isa: Isa,
    problem: &Problem<'_>,
    out: &mut [f32],
    out_batch_stride: usize,
    out_row_stride: usize,
) {
    problem.check();
    assert!(HEAD_DIM == 0 || HEAD_DIM == problem.head_dim);
    let out = out_for(problem, out, out_batch_stride, out_row_stride);
    let item: FlashItem = flash_item_for::<HEAD_DIM>(isa);
    let blocks = problem.q_len.div_ceil(BLOCK_Q);
    let items = problem.batch * problem.heads * blocks;
    let scratch = flash_scratch_len(problem.head_dim);
    let region = Region::start();
    let run = |index: usize| {
        // SAFETY: `item` runs on an ISA this CPU supports (checked by `Isa::is_supported` when
        // it was selected), the problem passed `check`, items write disjoint outputs.
        region.item(|| with_scratch(scratch, |buf| unsafe { item(problem, out, index, buf) }));
    };
    let units = if problem.causal && blocks > 1 {
        // Causal: query block `b` reads `b + 1` key blocks, so block `b` and block
        // `blocks - 1 - b` of the same head make one unit of `blocks + 1` (the middle block
        // alone when `blocks` is odd): units of equal cost, whatever the thread count.
        let pairs = blocks.div_ceil(2);
        let units = problem.batch * problem.heads * pairs;
        (0..units).into_par_iter().for_each(|unit| {
            let (head, j) = (unit / pairs, unit % pairs);
            run(head * blocks + j);
            if blocks - 1 - j != j {
                run(head * blocks + blocks - 1 - j);
            }
        });
        units
    } else {
        (0..items).into_par_iter().for_each(run);
        items
    };
    region.finish(Phase::Attention, rayon::current_num_threads().min(units));
}

/// The weights kernel: like [`flash`], and writes the probabilities into `weights`,
/// `(N, H, L, S')` when `per_head`, else their mean over heads `(N, L, S')`.
pub(crate) fn with_weights<const HEAD_DIM: usize>(
    isa: Isa,
    problem: &Problem<'_>,
    out: &mut [f32],
    out_batch_stride: usize,
    out_row_stride: usize,
    weights: &mut [f32],
    per_head: bool,
) {
    problem.check();
    assert!(HEAD_DIM == 0 || HEAD_DIM == problem.head_dim);
    let heads = if per_head { problem.heads } else { 1 };
    assert_eq!(
        weights.len(),
        problem.batch * heads * problem.q_len * problem.total_keys()
    );
    let out = out_for(problem, out, out_batch_stride, out_row_stride);
    let weights = WeightsOut {
        ptr: weights.as_mut_ptr(),
        per_head,
    };
    let item: WeightsItem = weights_item_for::<HEAD_DIM>(isa);
    let blocks = problem.q_len.div_ceil(BLOCK_Q);
    let items = problem.batch * blocks;
    let scratch = weights_scratch_len(problem.head_dim, problem.total_keys());
    let region = Region::start();
    (0..items).into_par_iter().for_each(|index| {
        // SAFETY: as in `flash`.
        region.item(|| {
            with_scratch(scratch, |buf| unsafe {
                item(problem, out, weights, index, buf)
            })
        });
    });
    region.finish(Phase::Attention, rayon::current_num_threads().min(items));
}

fn flash_item_for<const D: usize>(isa: Isa) -> FlashItem {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_supported() => avx512_flash_item::<D>,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma if isa.is_supported() => avx2_flash_item::<D>,
        _ => portable_flash_item::<D>,
    }
}

fn weights_item_for<const D: usize>(isa: Isa) -> WeightsItem {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_supported() => avx512_weights_item::<D>,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma if isa.is_supported() => avx2_weights_item::<D>,
        _ => portable_weights_item::<D>,
    }
}

// Register blocking per ISA: (QK rows, QK vectors, PV rows, PV vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_flash_item<const D: usize>(
    p: &Problem<'_>,
    out: SeqOut,
    index: usize,
    buf: &mut [f32],
) {
    unsafe { flash_item::<Avx512, D, 8, 2, 4, 4>(p, out, index, buf) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_flash_item<const D: usize>(
    p: &Problem<'_>,
    out: SeqOut,
    index: usize,
    buf: &mut [f32],
) {
    unsafe { flash_item::<Avx2, D, 6, 2, 6, 2>(p, out, index, buf) }
}

unsafe fn portable_flash_item<const D: usize>(
    p: &Problem<'_>,
    out: SeqOut,
    index: usize,
    buf: &mut [f32],
) {
    unsafe { flash_item::<Portable, D, 4, 1, 4, 1>(p, out, index, buf) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_weights_item<const D: usize>(
    p: &Problem<'_>,
    out: SeqOut,
    w: WeightsOut,
    index: usize,
    buf: &mut [f32],
) {
    unsafe { weights_item::<Avx512, D, 8, 2, 4, 4>(p, out, w, index, buf) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_weights_item<const D: usize>(
    p: &Problem<'_>,
    out: SeqOut,
    w: WeightsOut,
    index: usize,
    buf: &mut [f32],
) {
    unsafe { weights_item::<Avx2, D, 6, 2, 6, 2>(p, out, w, index, buf) }
}

unsafe fn portable_weights_item<const D: usize>(
    p: &Problem<'_>,
    out: SeqOut,
    w: WeightsOut,
    index: usize,
    buf: &mut [f32],
) {
    unsafe { weights_item::<Portable, D, 4, 1, 4, 1>(p, out, w, index, buf) }
}

/// Packs keys `k0..k0 + cols` of head `h` transposed into `kt` (`d × BLOCK_K`, zero-padded to
/// `cols_padded` keys).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_keys(
    p: &Problem<'_>,
    n: usize,
    h: usize,
    k0: usize,
    cols: usize,
    cols_padded: usize,
    d: usize,
    kt: &mut [f32],
) {
    for j in 0..cols {
        // SAFETY: key rows are in bounds by `Problem::check`.
        let key = unsafe { std::slice::from_raw_parts(p.key(n, k0 + j, h), d) };
        for (c, &x) in key.iter().enumerate() {
            kt[c * BLOCK_K + j] = x;
        }
    }
    for c in 0..d {
        kt[c * BLOCK_K + cols..c * BLOCK_K + cols_padded].fill(0.0);
    }
}

/// Values `k0..k0 + cols` of head `h` as `(first row, row stride)`: read in place when their
/// rows are whole vectors (`d == dp`) of the input keys, else packed into `vp` (`dp` apart,
/// zero-padded).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_values(
    p: &Problem<'_>,
    n: usize,
    h: usize,
    k0: usize,
    cols: usize,
    d: usize,
    dp: usize,
    vp: &mut [f32],
) -> (*const f32, usize) {
    if d == dp && k0 + cols <= p.src_len {
        return (p.value(n, k0, h), p.v.row_stride);
    }
    for j in 0..cols {
        // SAFETY: value rows are in bounds by `Problem::check`.
        let value = unsafe { std::slice::from_raw_parts(p.value(n, k0 + j, h), d) };
        let dst = &mut vp[j * dp..(j + 1) * dp];
        dst[..d].copy_from_slice(value);
        dst[d..].fill(0.0);
    }
    (vp.as_ptr(), dp)
}

/// `scores[i][j] = Σ_c q_i[c] · kt[c][j]` for `q_rows.len()` query rows and `cols_padded`
/// keys; score row `i` starts at `scores + i * ld`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn qk_tile<S: Simd, const D: usize, const MR: usize, const NV: usize>(
    q_rows: &[*const f32],
    d: usize,
    kt: *const f32,
    ld_kt: usize,
    cols_padded: usize,
    scores: *mut f32,
    ld: usize,
) {
    let rows = q_rows.len();
    let mut i = 0;
    while i + MR <= rows {
        let mut q = [std::ptr::null::<f32>(); MR];
        q.copy_from_slice(&q_rows[i..i + MR]);
        unsafe { qk_rows::<S, D, MR, NV>(q, d, kt, ld_kt, cols_padded, scores.add(i * ld), ld) };
        i += MR;
    }
    while i < rows {
        unsafe {
            qk_rows::<S, D, 1, NV>(
                [q_rows[i]],
                d,
                kt,
                ld_kt,
                cols_padded,
                scores.add(i * ld),
                ld,
            )
        };
        i += 1;
    }
}

#[inline(always)]
unsafe fn qk_rows<S: Simd, const D: usize, const MR: usize, const NV: usize>(
    q: [*const f32; MR],
    d: usize,
    kt: *const f32,
    ld_kt: usize,
    cols_padded: usize,
    scores: *mut f32,
    ld: usize,
) {
    let mut j = 0;
    while j + NV * S::LANES <= cols_padded {
        unsafe { qk_block::<S, D, MR, NV>(q, d, kt.add(j), ld_kt, scores.add(j), ld) };
        j += NV * S::LANES;
    }
    while j < cols_padded {
        unsafe { qk_block::<S, D, MR, 1>(q, d, kt.add(j), ld_kt, scores.add(j), ld) };
        j += S::LANES;
    }
}

/// The QKᵀ micro-kernel: `MR` query rows × `NV` vectors of keys, accumulated over `d`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn qk_block<S: Simd, const D: usize, const MR: usize, const NV: usize>(
    q: [*const f32; MR],
    d: usize,
    kt: *const f32,
    ld_kt: usize,
    scores: *mut f32,
    ld: usize,
) {
    let d = if D > 0 { D } else { d };
    let mut acc = [[S::splat(0.0); NV]; MR];
    for c in 0..d {
        let mut kv = [S::splat(0.0); NV];
        for (v, slot) in kv.iter_mut().enumerate() {
            *slot = unsafe { S::load(kt.add(c * ld_kt + v * S::LANES)) };
        }
        for r in 0..MR {
            let qb = S::splat(unsafe { *q[r].add(c) });
            for v in 0..NV {
                acc[r][v] = S::mul_add(qb, kv[v], acc[r][v]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            unsafe { S::store(scores.add(r * ld + v * S::LANES), x) };
        }
    }
}

/// `o[i][:] += Σ_{j < cols} p(i, j) · v[j][:]` for `rows` rows of width `dp`, where `p(i, j)`
/// is at `p + i * p_rs + j * p_cs`, `v` rows are `ld_v` apart and `o` rows `dp` apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_tile<S: Simd, const MR: usize, const NV: usize>(
    p: *const f32,
    p_rs: usize,
    p_cs: usize,
    rows: usize,
    cols: usize,
    v: *const f32,
    ld_v: usize,
    dp: usize,
    o: *mut f32,
) {
    let mut i = 0;
    while i + MR <= rows {
        unsafe {
            pv_rows::<S, MR, NV>(
                p.add(i * p_rs),
                p_rs,
                p_cs,
                cols,
                v,
                ld_v,
                dp,
                o.add(i * dp),
            )
        };
        i += MR;
    }
    while i < rows {
        unsafe {
            pv_rows::<S, 1, NV>(
                p.add(i * p_rs),
                p_rs,
                p_cs,
                cols,
                v,
                ld_v,
                dp,
                o.add(i * dp),
            )
        };
        i += 1;
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_rows<S: Simd, const MR: usize, const NV: usize>(
    p: *const f32,
    p_rs: usize,
    p_cs: usize,
    cols: usize,
    v: *const f32,
    ld_v: usize,
    dp: usize,
    o: *mut f32,
) {
    let mut c = 0;
    while c + NV * S::LANES <= dp {
        unsafe { pv_block::<S, MR, NV>(p, p_rs, p_cs, cols, v.add(c), ld_v, dp, o.add(c)) };
        c += NV * S::LANES;
    }
    while c < dp {
        unsafe { pv_block::<S, MR, 1>(p, p_rs, p_cs, cols, v.add(c), ld_v, dp, o.add(c)) };
        c += S::LANES;
    }
}

/// The PV micro-kernel: `MR` rows × `NV` vectors of output columns, accumulated over keys.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn pv_block<S: Simd, const MR: usize, const NV: usize>(
    p: *const f32,
    p_rs: usize,
    p_cs: usize,
    cols: usize,
    v: *const f32,
    ld_v: usize,
    dp: usize,
    o: *mut f32,
) {
    let mut acc = [[S::splat(0.0); NV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        for (k, slot) in row.iter_mut().enumerate() {
            *slot = unsafe { S::load(o.add(r * dp + k * S::LANES)) };
        }
    }
    for j in 0..cols {
        let mut vv = [S::splat(0.0); NV];
        for (k, slot) in vv.iter_mut().enumerate() {
            *slot = unsafe { S::load(v.add(j * ld_v + k * S::LANES)) };
        }
        for r in 0..MR {
            let pb = S::splat(unsafe { *p.add(r * p_rs + j * p_cs) });
            for k in 0..NV {
                acc[r][k] = S::mul_add(pb, vv[k], acc[r][k]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (k, &x) in row.iter().enumerate() {
            unsafe { S::store(o.add(r * dp + k * S::LANES), x) };
        }
    }
}

/// Turns raw dot products of row `qi` (keys `k0..k0 + cols`, padded to `cols_padded`) into
/// masked, scaled scores: `-inf` for padding and causally hidden keys.
#[inline(always)]
fn mask_scores<S: Simd>(
    p: &Problem<'_>,
    row: &mut [f32],
    mask_row: Option<*const f32>,
    qi: usize,
    k0: usize,
    cols: usize,
) {
    let scale = S::splat(p.scale);
    for chunk in row.chunks_exact_mut(S::LANES) {
        // SAFETY: the chunk holds LANES floats.
        unsafe { S::store(chunk.as_mut_ptr(), S::mul(S::load(chunk.as_ptr()), scale)) };
    }
    if let Some(m) = mask_row {
        // SAFETY: the mask row holds S' >= k0 + cols values (`Problem::check`).
        let m = unsafe { std::slice::from_raw_parts(m.add(k0), cols) };
        for (x, &add) in row[..cols].iter_mut().zip(m) {
            *x += add;
        }
    }
    if p.causal && k0 + cols > qi + 1 {
        let from = (qi + 1).saturating_sub(k0);
        row[from..cols].fill(f32::NEG_INFINITY);
    }
    row[cols..].fill(f32::NEG_INFINITY);
}

#[inline(always)]
fn row_max<S: Simd>(row: &[f32]) -> f32 {
    let mut m = S::splat(f32::NEG_INFINITY);
    for chunk in row.chunks_exact(S::LANES) {
        m = S::max(m, unsafe { S::load(chunk.as_ptr()) });
    }
    S::reduce_max(m)
}

/// `row[j] = exp(row[j] - max)`; returns the sum.
#[inline(always)]
fn exp_row<S: Simd>(row: &mut [f32], max: f32) -> f32 {
    let m = S::splat(max);
    let mut sum = S::splat(0.0);
    for chunk in row.chunks_exact_mut(S::LANES) {
        let e = S::exp(S::sub(unsafe { S::load(chunk.as_ptr()) }, m));
        unsafe { S::store(chunk.as_mut_ptr(), e) };
        sum = S::add(sum, e);
    }
    S::reduce_add(sum)
}

#[inline(always)]
fn scale_row<S: Simd>(row: &mut [f32], factor: f32) {
    let f = S::splat(factor);
    for chunk in row.chunks_exact_mut(S::LANES) {
        unsafe { S::store(chunk.as_mut_ptr(), S::mul(S::load(chunk.as_ptr()), f)) };
    }
}

/// Whether every score of the tile is masked by the additive mask (all `-inf`).
#[inline(always)]
fn tile_fully_masked(
    p: &Problem<'_>,
    n: usize,
    h: usize,
    q0: usize,
    rows: usize,
    k0: usize,
    cols: usize,
) -> bool {
    let Some(mask) = &p.mask else { return false };
    let rows = if mask.row_stride == 0 { 1 } else { rows };
    (0..rows).all(|i| {
        // SAFETY: in bounds by `Problem::check`.
        let m = unsafe { std::slice::from_raw_parts(mask.row(n, h, q0 + i).add(k0), cols) };
        m.iter().all(|&x| x == f32::NEG_INFINITY)
    })
}

/// A work item's block of queries and the sizes both kernels use.
struct QueryBlock {
    /// Head dimension.
    d: usize,
    /// `d` rounded up to whole vectors.
    dp: usize,
    /// The item index without its query block: `(n, h)` flattened (flash) or `n` (weights).
    outer: usize,
    /// First query.
    q0: usize,
    /// Queries in the block (up to [`BLOCK_Q`]).
    rows: usize,
    /// `S'`.
    total: usize,
}

/// Splits a work item index into its outer part and query block `index % blocks`.
#[inline(always)]
fn query_block<S: Simd, const D: usize>(p: &Problem<'_>, index: usize) -> QueryBlock {
    let d = if D > 0 { D } else { p.head_dim };
    let blocks = p.q_len.div_ceil(BLOCK_Q);
    let q0 = (index % blocks) * BLOCK_Q;
    QueryBlock {
        d,
        dp: round_up(d, S::LANES),
        outer: index / blocks,
        q0,
        rows: BLOCK_Q.min(p.q_len - q0),
        total: p.total_keys(),
    }
}

/// One flash work item: query block `index % blocks` of head `(index / blocks) % H` of batch
/// element `index / (blocks * H)`.
///
/// Scores are computed transposed, `sᵀ = K Qᵀ` (keys × queries), against the query block packed
/// once as `Qᵀ`, so keys are read straight from the projections (no per-tile transpose) and the
/// online softmax runs along the vector lanes (16 or 8 queries at a time).
#[inline(always)]
unsafe fn flash_item<
    S: Simd,
    const D: usize,
    const QMR: usize,
    const QNV: usize,
    const PMR: usize,
    const PNV: usize,
>(
    p: &Problem<'_>,
    out: SeqOut,
    index: usize,
    buf: &mut [f32],
) {
    let QueryBlock {
        d,
        dp,
        outer: nh,
        q0,
        rows,
        total,
    } = query_block::<S, D>(p, index);
    let (n, h) = (nh / p.heads, nh % p.heads);
    let rows_padded = round_up(rows, S::LANES);
    let kv_end = if p.causal {
        total.min(q0 + rows)
    } else {
        total
    };

    let (qt, rest) = buf.split_at_mut(d * BLOCK_Q);
    let (vp, rest) = rest.split_at_mut(BLOCK_K * dp);
    let (st, rest) = rest.split_at_mut(BLOCK_K * BLOCK_Q);
    let (o, rest) = rest.split_at_mut(BLOCK_Q * dp);
    let (m, rest) = rest.split_at_mut(BLOCK_Q);
    let (l, rest) = rest.split_at_mut(BLOCK_Q);
    let alpha = &mut rest[..BLOCK_Q];
    o[..rows * dp].fill(0.0);
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);

    // Qᵀ · scale (torch's q_scaled): d × BLOCK_Q, padded queries zero.
    for i in 0..rows {
        // SAFETY: query rows are in bounds by `Problem::check`.
        let q = unsafe { std::slice::from_raw_parts(p.q.head_row(n, q0 + i, h), d) };
        for (c, &x) in q.iter().enumerate() {
            qt[c * BLOCK_Q + i] = x * p.scale;
        }
    }
    for c in 0..d {
        qt[c * BLOCK_Q + rows..c * BLOCK_Q + rows_padded].fill(0.0);
    }

    let floor = S::splat(f32::MIN);
    let mut rng = p.dropout.map(|dr| dr.generator(n, h, p.heads));
    let mut k_rows = [std::ptr::null::<f32>(); BLOCK_K];
    let mut k0 = 0;
    while k0 < kv_end {
        let cols = BLOCK_K.min(kv_end - k0);
        if tile_fully_masked(p, n, h, q0, rows, k0, cols) {
            k0 += BLOCK_K;
            continue;
        }
        for (j, slot) in k_rows[..cols].iter_mut().enumerate() {
            *slot = p.key(n, k0 + j, h);
        }
        // sᵀ[j][i] = k_j · q_i
        unsafe {
            qk_tile::<S, D, QMR, QNV>(
                &k_rows[..cols],
                d,
                qt.as_ptr(),
                BLOCK_Q,
                rows_padded,
                st.as_mut_ptr(),
                BLOCK_Q,
            );
        }
        // Mask and causal structure, one key row at a time.
        for j in 0..cols {
            let row = &mut st[j * BLOCK_Q..j * BLOCK_Q + rows_padded];
            if let Some(mask) = &p.mask {
                if mask.row_stride == 0 {
                    // SAFETY: in bounds by `Problem::check`.
                    let add = unsafe { *mask.row(n, h, 0).add(k0 + j) };
                    row[..rows].iter_mut().for_each(|x| *x += add);
                } else {
                    for (i, x) in row[..rows].iter_mut().enumerate() {
                        // SAFETY: in bounds by `Problem::check`.
                        *x += unsafe { *mask.row(n, h, q0 + i).add(k0 + j) };
                    }
                }
            }
            if p.causal && k0 + j > q0 {
                // queries i with q0 + i < k0 + j do not see key k0 + j
                let hidden = (k0 + j - q0).min(rows_padded);
                row[..hidden].fill(f32::NEG_INFINITY);
            }
        }
        // Online softmax along the queries (vector lanes).
        let mut iv = 0;
        while iv < rows_padded {
            let mut tile_max = S::splat(f32::NEG_INFINITY);
            for j in 0..cols {
                tile_max = S::max(tile_max, unsafe {
                    S::load(st.as_ptr().add(j * BLOCK_Q + iv))
                });
            }
            let m_old = unsafe { S::load(m.as_ptr().add(iv)) };
            // A lane with every key masked so far keeps a finite floor: its p and alpha are
            // exp(-inf) = 0 (and a row of f32::MIN masks still gives exp(0) = 1 as torch does).
            let m_new = S::max(S::max(m_old, tile_max), floor);
            let a = S::exp(S::sub(m_old, m_new));
            let mut sum = S::splat(0.0);
            for j in 0..cols {
                let at = unsafe { st.as_mut_ptr().add(j * BLOCK_Q + iv) };
                let e = S::exp(S::sub(unsafe { S::load(at) }, m_new));
                unsafe { S::store(at, e) };
                sum = S::add(sum, e);
            }
            let l_old = unsafe { S::load(l.as_ptr().add(iv)) };
            unsafe {
                S::store(l.as_mut_ptr().add(iv), S::mul_add(l_old, a, sum));
                S::store(m.as_mut_ptr().add(iv), m_new);
                S::store(alpha.as_mut_ptr().add(iv), a);
            }
            iv += S::LANES;
        }
        if let (Some(dr), Some(rng)) = (&p.dropout, rng.as_mut()) {
            for i in 0..rows {
                dr.apply(rng, (q0 + i) * total + k0, &mut st[i..], BLOCK_Q, cols);
            }
        }
        for i in 0..rows {
            if alpha[i] != 1.0 {
                scale_row::<S>(&mut o[i * dp..(i + 1) * dp], alpha[i]);
            }
        }
        let (v, ld_v) = tile_values(p, n, h, k0, cols, d, dp, vp);
        unsafe {
            pv_tile::<S, PMR, PNV>(
                st.as_ptr(),
                1,
                BLOCK_Q,
                rows,
                cols,
                v,
                ld_v,
                dp,
                o.as_mut_ptr(),
            )
        };
        k0 += BLOCK_K;
    }

    for i in 0..rows {
        let inv = if l[i] > 0.0 {
            1.0 / l[i]
        } else {
            match p.fully_masked {
                FullyMasked::Zero => 0.0,
                FullyMasked::Nan => f32::NAN,
            }
        };
        // SAFETY: in bounds by `out_for`; this item owns these columns of this row.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.head_row(n, q0 + i, h, d), d) };
        for (x, &acc) in dst.iter_mut().zip(&o[i * dp..i * dp + d]) {
            *x = acc * inv;
        }
    }
}

/// One weights work item: query block `index % blocks` of batch element `index / blocks`, all
/// heads.
#[inline(always)]
unsafe fn weights_item<
    S: Simd,
    const D: usize,
    const QMR: usize,
    const QNV: usize,
    const PMR: usize,
    const PNV: usize,
>(
    p: &Problem<'_>,
    out: SeqOut,
    weights: WeightsOut,
    index: usize,
    buf: &mut [f32],
) {
    let QueryBlock {
        d,
        dp,
        outer: n,
        q0,
        rows,
        total,
    } = query_block::<S, D>(p, index);
    let ld = round_up(total.max(1), BLOCK_K);

    let (kt, rest) = buf.split_at_mut(d * BLOCK_K);
    let (vp, rest) = rest.split_at_mut(BLOCK_K * dp);
    let (scores, rest) = rest.split_at_mut(BLOCK_Q * ld);
    let o = &mut rest[..BLOCK_Q * dp];
    let inv_heads = 1.0 / p.heads as f32;

    for h in 0..p.heads {
        let mut rng = p.dropout.map(|d| d.generator(n, h, p.heads));
        let mut q_rows = [std::ptr::null::<f32>(); BLOCK_Q];
        for (i, slot) in q_rows[..rows].iter_mut().enumerate() {
            *slot = p.q.head_row(n, q0 + i, h);
        }
        let mut k0 = 0;
        while k0 < total {
            let cols = BLOCK_K.min(total - k0);
            let cols_padded = round_up(cols, S::LANES);
            pack_keys(p, n, h, k0, cols, cols_padded, d, kt);
            unsafe {
                qk_tile::<S, D, QMR, QNV>(
                    &q_rows[..rows],
                    d,
                    kt.as_ptr(),
                    BLOCK_K,
                    cols_padded,
                    scores.as_mut_ptr().add(k0),
                    ld,
                );
            }
            k0 += BLOCK_K;
        }
        let total_padded = round_up(total, S::LANES);
        for i in 0..rows {
            let row = &mut scores[i * ld..i * ld + total_padded];
            let mask_row = p.mask.as_ref().map(|mask| mask.row(n, h, q0 + i));
            mask_scores::<S>(p, row, mask_row, q0 + i, 0, total);
            let max = row_max::<S>(row);
            if max == f32::NEG_INFINITY || max.is_nan() {
                let fill = match p.fully_masked {
                    FullyMasked::Nan => f32::NAN,
                    FullyMasked::Zero if max.is_nan() => f32::NAN,
                    FullyMasked::Zero => 0.0,
                };
                row[..total].fill(fill);
                row[total..].fill(0.0);
            } else {
                let sum = exp_row::<S>(row, max);
                scale_row::<S>(row, 1.0 / sum);
            }
            if let (Some(d), Some(rng)) = (&p.dropout, rng.as_mut()) {
                d.apply(rng, (q0 + i) * total, row, 1, total);
            }
            let row = &row[..total];
            let qi = q0 + i;
            if weights.per_head {
                let at = ((n * p.heads + h) * p.q_len + qi) * total;
                // SAFETY: in bounds by the length check in `with_weights`; rows are disjoint.
                let dst = unsafe { std::slice::from_raw_parts_mut(weights.ptr.add(at), total) };
                dst.copy_from_slice(row);
            } else {
                let at = (n * p.q_len + qi) * total;
                let dst = unsafe { std::slice::from_raw_parts_mut(weights.ptr.add(at), total) };
                if h == 0 {
                    dst.copy_from_slice(row);
                } else {
                    for (x, &w) in dst.iter_mut().zip(row) {
                        *x += w;
                    }
                }
                if h + 1 == p.heads {
                    for x in dst.iter_mut() {
                        *x *= inv_heads;
                    }
                }
            }
        }

        o[..rows * dp].fill(0.0);
        let mut k0 = 0;
        while k0 < total {
            let cols = BLOCK_K.min(total - k0);
            let (v, ld_v) = tile_values(p, n, h, k0, cols, d, dp, vp);
            unsafe {
                pv_tile::<S, PMR, PNV>(
                    scores.as_ptr().add(k0),
                    ld,
                    1,
                    rows,
                    cols,
                    v,
                    ld_v,
                    dp,
                    o.as_mut_ptr(),
                );
            }
            k0 += BLOCK_K;
        }
        for i in 0..rows {
            // SAFETY: in bounds by `out_for`; this item owns these rows.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.head_row(n, q0 + i, h, d), d) };
            dst.copy_from_slice(&o[i * dp..i * dp + d]);
        }
    }
}
