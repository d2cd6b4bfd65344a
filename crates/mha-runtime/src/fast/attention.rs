//! Fused attention over projected Q, K, V: a flash-style kernel with online softmax that never
//! materialises the `L × S'` scores, and a weights-returning kernel that writes the
//! probabilities it must return.
//!
//! Work is split with rayon over `(batch, head, query block)` (flash; with a causal mask, block
//! `b` and block `blocks - 1 - b` of a head form one unit, so units cost the same) or
//! `(batch, query block)` (weights); each work item runs single-threaded register-blocked
//! micro-kernels on tiles of `BLOCK_Q` queries × `BLOCK_K` keys, with its packed operands in a
//! thread-local scratch buffer, so steady-state calls allocate nothing here. Calls with fewer
//! items than threads can split each block's keys instead (`split_keys`).
//!
//! Strategies of the flash tile loop ([`flash_keys`]):
//! - **wide blocks**: scores transposed, `sᵀ = K Qᵀ`, queries along the vector lanes (`Qᵀ`
//!   packed once per block by in-register transposes, keys read in place), so the online
//!   softmax is lane-parallel and its rescale of the outputs happens in the PV micro-kernel;
//! - **narrow blocks** (a decode step, a folded GQA group: at most a quarter of a vector of
//!   queries): scores as dot products along `d` (`qk_narrow`), no padded lanes;
//! - **causal**: key tiles past the block's last query are not visited, and on a tile past the
//!   block's first query the queries that see none of its keys are skipped in QKᵀ, the softmax
//!   and PV, unless a hidden value is not finite;
//! - **unmasked tiles**: the QK micro-kernel raises the softmax's running maxima from its
//!   registers, so the online softmax makes one pass over the scores (`exp`), not two;
//! - **masks**: a tile whose mask is `-inf` everywhere is skipped when its keys and values are
//!   finite.
//!
//! The rule, on every instruction set: non-finite input propagates as in torch's explicit
//! `softmax(q kᵀ · scale + mask) v` — a NaN or `+inf` score makes its row NaN, a hidden or
//! masked key still contributes `0 · v` (NaN for a non-finite value), and a row with no
//! unmasked score follows the fully-masked-row policy.

use std::cell::RefCell;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::isa::Level;
use super::phases::{Phase, Region, Split};
use super::simd::{Simd, WithSimd, Write};
use super::Isa;
use crate::prepare::{DropoutPlan, FullyMaskedRows, MaskRows};

/// Queries per work item / tile.
pub(crate) const BLOCK_Q: usize = 128;
/// Keys per tile (a multiple of every ISA's lane count).
pub(crate) const BLOCK_K: usize = 64;
/// Row pitch of the query-major scratch tiles (`Qᵀ`, the scores `sᵀ`): `BLOCK_Q` plus one cache
/// line. At exactly 128 floats (512 B) the rows of a tile fall into 8 of the L1 cache's 64 sets,
/// so a micro-kernel walking one column block down 128 rows evicts its own lines; one line more
/// spreads them over all sets.
const LD_Q: usize = BLOCK_Q + 16;

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
    pub mask: Option<MaskRows<'a>>,
    /// Mask key `j > i` for query `i`.
    pub causal: bool,
    pub scale: f32,
    pub fully_masked: FullyMaskedRows,
    /// Training-mode dropout on the probabilities.
    pub dropout: Option<DropoutPlan>,
}

/// Applies `plan`'s draws from word `word_pos` on (element `(i, k0)` of the `(L, S')` matrix is
/// word `i * S' + k0`) to `row[0], row[stride], ...`, `count` of them: kept when the draw is
/// `>= p`, then scaled by `1 / (1 - p)`.
fn apply_dropout(
    plan: &DropoutPlan,
    rng: &mut ChaCha8Rng,
    word_pos: usize,
    row: &mut [f32],
    stride: usize,
    count: usize,
) {
    rng.set_word_pos(word_pos as u128);
    let scale = 1.0 / (1.0 - plan.p);
    for j in 0..count {
        let x = &mut row[j * stride];
        *x = if rng.random::<f32>() >= plan.p {
            *x * scale
        } else {
            0.0
        };
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
    pub(super) fn check(&self) {
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
            let last = m.start(self.batch - 1, self.heads - 1, self.q_len - 1) + self.total_keys();
            assert!(last <= m.data.len());
            if let Some(padding) = &m.padding {
                let last = (self.batch - 1) * padding.batch_stride + self.total_keys();
                assert!(last <= padding.data.len());
            }
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

/// Where the attention output goes: head `h` (`d` floats) of query `t` of batch element `n`
/// starts at `n · batch_stride + t · row_stride + h · head_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutLayout {
    pub batch_stride: usize,
    pub row_stride: usize,
    pub head_stride: usize,
}

impl OutLayout {
    /// Rows of `E = heads · head_dim` floats with the heads side by side (torch's `(…, L, E)`
    /// attention output), `batch_stride` and `row_stride` floats apart.
    pub(crate) fn rows(batch_stride: usize, row_stride: usize, head_dim: usize) -> Self {
        Self {
            batch_stride,
            row_stride,
            head_stride: head_dim,
        }
    }

    /// Whether distinct `(n, t, h, c)` of a problem's output land on distinct floats, so that
    /// work items writing distinct rows and heads never write the same float: ordered by
    /// stride, each axis with more than one index steps past everything the smaller ones span.
    fn is_disjoint(&self, p: &Problem<'_>) -> bool {
        let mut axes = [
            (p.batch, self.batch_stride),
            (p.q_len, self.row_stride),
            (p.heads, self.head_stride),
        ];
        axes.sort_by_key(|&(_, stride)| stride);
        let mut span = p.head_dim;
        for (len, stride) in axes.into_iter().filter(|&(len, _)| len > 1) {
            if stride < span {
                return false;
            }
            span += (len - 1) * stride;
        }
        true
    }
}

/// The attention output as the work items write it ([`out_for`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqOut {
    ptr: *mut f32,
    layout: OutLayout,
}

impl SeqOut {
    /// Pointer to head `h` (`d` wide) of row `(n, t)`.
    #[inline(always)]
    fn head_row(&self, n: usize, t: usize, h: usize) -> *mut f32 {
        let l = self.layout;
        self.ptr
            .wrapping_add(n * l.batch_stride + t * l.row_stride + h * l.head_stride)
    }
}

// SAFETY: a `SeqOut` is only written through by work items, which write disjoint rows / head
// columns of the destination (`FlashItem::run`, `WeightsItem::run`).
unsafe impl Send for SeqOut {}
// SAFETY: as for `Send`.
unsafe impl Sync for SeqOut {}

/// Where the weights kernel writes the probabilities: `(N, H, L, S')` or `(N, L, S')`.
#[derive(Debug, Clone, Copy)]
struct WeightsOut {
    ptr: *mut f32,
    per_head: bool,
}

// SAFETY: work items write disjoint `(n, query block)` rows through it.
unsafe impl Send for WeightsOut {}
// SAFETY: as for `Send`.
unsafe impl Sync for WeightsOut {}

/// `out` as the destination of `problem`'s output in `layout`, after checking that every
/// `(n, t, h)` row lies inside it and that no two overlap.
pub(super) fn out_for(problem: &Problem<'_>, out: &mut [f32], layout: OutLayout) -> SeqOut {
    let last = (problem.batch - 1) * layout.batch_stride
        + (problem.q_len - 1) * layout.row_stride
        + (problem.heads - 1) * layout.head_stride
        + problem.head_dim;
    assert!(last <= out.len(), "attention output buffer too small");
    assert!(layout.is_disjoint(problem), "attention output rows overlap");
    SeqOut {
        ptr: out.as_mut_ptr(),
        layout,
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of at least `len` floats.
pub(super) fn with_scratch(len: usize, f: impl FnOnce(&mut [f32])) {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len]);
    });
}

pub(super) const fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

pub(super) fn flash_scratch_len(head_dim: usize) -> usize {
    let dp = round_up(head_dim, 16);
    head_dim * LD_Q + BLOCK_K * dp + BLOCK_K * LD_Q + BLOCK_Q * dp + 3 * BLOCK_Q + BLOCK_Q * BLOCK_K
}

fn weights_scratch_len(head_dim: usize, total_keys: usize) -> usize {
    let dp = round_up(head_dim, 16);
    head_dim * BLOCK_K
        + BLOCK_K * dp
        + BLOCK_Q * round_up(total_keys.max(1), BLOCK_K)
        + BLOCK_Q * dp
}

/// The flash kernel: `out` gets softmax(q kᵀ · scale + mask) v for every `(n, i, h)`, its work
/// items run as `split` says. `HEAD_DIM = 0` reads the head dimension from the problem;
/// otherwise it must equal it.
pub(crate) fn flash<const HEAD_DIM: usize>(
    isa: Isa,
    problem: &Problem<'_>,
    out: &mut [f32],
    layout: OutLayout,
    split: Split,
) {
    problem.check();
    assert!(HEAD_DIM == 0 || HEAD_DIM == problem.head_dim);
    let out = out_for(problem, out, layout);
    let item = FlashItem::<HEAD_DIM>::for_isa(isa);
    let blocks = problem.q_len.div_ceil(BLOCK_Q);
    let items = problem.batch * problem.heads * blocks;
    let scratch = flash_scratch_len(problem.head_dim);
    let run = |index: usize| {
        // SAFETY: the problem passed `check`, `out` came from `out_for`, and each index is
        // run once, so items write disjoint outputs.
        with_scratch(scratch, |buf| unsafe { item.run(problem, out, index, buf) });
    };
    let region = Region::start(split);
    let units = if problem.causal && blocks > 1 {
        // Causal: query block `b` reads `b + 1` key blocks, so block `b` and block
        // `blocks - 1 - b` of the same head make one unit of `blocks + 1` (the middle block
        // alone when `blocks` is odd): units of equal cost, whatever the thread count.
        let pairs = blocks.div_ceil(2);
        let units = problem.batch * problem.heads * pairs;
        region.for_each(units, |unit| {
            let (head, j) = (unit / pairs, unit % pairs);
            run(head * blocks + j);
            if blocks - 1 - j != j {
                run(head * blocks + blocks - 1 - j);
            }
        });
        units
    } else {
        region.for_each(items, run);
        items
    };
    region.finish(Phase::Attention, units);
}

/// The weights kernel: like [`flash`], and writes the probabilities into `weights`,
/// `(N, H, L, S')` when `per_head`, else their mean over heads `(N, L, S')`.
pub(crate) fn with_weights<const HEAD_DIM: usize>(
    isa: Isa,
    problem: &Problem<'_>,
    out: &mut [f32],
    layout: OutLayout,
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
    let out = out_for(problem, out, layout);
    let weights = WeightsOut {
        ptr: weights.as_mut_ptr(),
        per_head,
    };
    let item = WeightsItem::<HEAD_DIM>::for_isa(isa);
    let blocks = problem.q_len.div_ceil(BLOCK_Q);
    let items = problem.batch * blocks;
    let scratch = weights_scratch_len(problem.head_dim, problem.total_keys());
    let region = Region::start(Split::Pool);
    region.for_each(items, |index| {
        with_scratch(scratch, |buf| {
            // SAFETY: as in `flash`; `weights` has the length `run` needs (asserted above).
            unsafe { item.run(problem, out, weights, index, buf) }
        })
    });
    region.finish(Phase::Attention, items);
}

/// A query block is narrow when its rows fill at most `1 / NARROW_LANE_FRACTION` of a vector:
/// the lane-parallel QK micro-kernel would then spend 4 or more FMAs per useful one on padded
/// lanes, while a dot product along `d` spends one per `LANES` products and a horizontal sum
/// (about `log2(LANES)` shuffles and adds) per score.
const NARROW_LANE_FRACTION: usize = 4;

/// Register blocking of the micro-kernels per level: QK rows, QK vectors, PV rows, PV vectors.
///
/// The blocking keeps both FMA ports busy: an FMA has 4 cycles of latency and two issue per
/// cycle, so a micro-kernel needs at least 8 independent accumulators, and each step's loads
/// (`NV` vector loads + `MR` broadcasts) must stay well under its `MR · NV` FMAs. AVX-512
/// (32 registers): 6 × 4 = 24 accumulators + 4 operand vectors + 1 broadcast, 10 loads per 24
/// FMAs (8 × 2 had 10 per 16 and measured 6–10% slower on both micro-kernels); 4 vectors are
/// 64 queries (QK) or 64 output columns (PV), a whole number of both in every tile. AVX2
/// (16 registers): 6 × 2 = 12 accumulators + 2 + 1. Row counts that are not a multiple of
/// `MR` finish in blocks of 4, 2 and 1 rows.
pub(super) const AVX512_BLOCKING: [usize; 4] = [6, 4, 6, 4];
/// See [`AVX512_BLOCKING`].
pub(super) const AVX2_BLOCKING: [usize; 4] = [6, 2, 6, 2];
/// Plain Rust on 8-lane arrays: small blocks the compiler keeps in registers.
pub(super) const PORTABLE_BLOCKING: [usize; 4] = [4, 1, 4, 1];

/// A kernel written once for every instruction set and register blocking: [`run_blocked`] picks
/// the level's blocking and runs it with the level's instructions.
pub(super) trait BlockedOp {
    /// What the kernel returns.
    type Output;

    /// Runs the kernel with `simd`'s instructions and the blocking `QMR × QNV` (QK) and
    /// `PMR × PNV` (PV).
    ///
    /// # Safety
    /// The contract of the op's kernel, which [`run_blocked`]'s caller guarantees.
    unsafe fn run<S: Simd, const QMR: usize, const QNV: usize, const PMR: usize, const PNV: usize>(
        self,
        simd: S,
    ) -> Self::Output;
}

/// `op` on `level`'s instructions with that level's register blocking.
///
/// # Safety
/// The contract of `op`'s kernel ([`BlockedOp::run`]).
#[inline(always)]
pub(super) unsafe fn run_blocked<Op: BlockedOp>(level: Level, op: Op) -> Op::Output {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512(simd) => simd.vectorize(Blocked::<
            Op,
            { AVX512_BLOCKING[0] },
            { AVX512_BLOCKING[1] },
            { AVX512_BLOCKING[2] },
            { AVX512_BLOCKING[3] },
        >(op)),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2(simd) => simd.vectorize(Blocked::<
            Op,
            { AVX2_BLOCKING[0] },
            { AVX2_BLOCKING[1] },
            { AVX2_BLOCKING[2] },
            { AVX2_BLOCKING[3] },
        >(op)),
        Level::Portable(simd) => simd.vectorize(Blocked::<
            Op,
            { PORTABLE_BLOCKING[0] },
            { PORTABLE_BLOCKING[1] },
            { PORTABLE_BLOCKING[2] },
            { PORTABLE_BLOCKING[3] },
        >(op)),
    }
}

/// A [`BlockedOp`] with one blocking, for [`Simd::vectorize`]. Built only by [`run_blocked`],
/// whose contract makes running it sound.
struct Blocked<Op, const QMR: usize, const QNV: usize, const PMR: usize, const PNV: usize>(Op);

impl<Op: BlockedOp, const QMR: usize, const QNV: usize, const PMR: usize, const PNV: usize> WithSimd
    for Blocked<Op, QMR, QNV, PMR, PNV>
{
    type Output = Op::Output;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Op::Output {
        // SAFETY: the contract of `run_blocked`, the only place this wrapper is built.
        unsafe { self.0.run::<S, QMR, QNV, PMR, PNV>(simd) }
    }
}

/// The flash work item of one level's capability token, with that level's register blocking.
#[derive(Debug, Clone, Copy)]
struct FlashItem<const D: usize> {
    level: Level,
}

impl<const D: usize> FlashItem<D> {
    /// The item for `isa`, or the portable one when this CPU cannot run `isa`.
    fn for_isa(isa: Isa) -> Self {
        Self {
            level: Level::or_portable(isa),
        }
    }

    /// Runs work item `index` (see [`flash_item`]).
    ///
    /// # Safety
    /// `p` passed [`Problem::check`], `out` came from [`out_for`] for `p`, and no other thread
    /// runs item `index` of this call at the same time.
    unsafe fn run(self, p: &Problem<'_>, out: SeqOut, index: usize, buf: &mut [f32]) {
        let op = FlashOp::<D> { p, out, index, buf };
        // SAFETY: `flash_item`'s contract is this function's.
        unsafe { run_blocked(self.level, op) }
    }
}

/// [`flash_item`] as a [`BlockedOp`].
struct FlashOp<'a, 'p, const D: usize> {
    p: &'a Problem<'p>,
    out: SeqOut,
    index: usize,
    buf: &'a mut [f32],
}

impl<const D: usize> BlockedOp for FlashOp<'_, '_, D> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<
        S: Simd,
        const QMR: usize,
        const QNV: usize,
        const PMR: usize,
        const PNV: usize,
    >(
        self,
        simd: S,
    ) {
        // SAFETY: the caller's (`FlashItem::run`'s) contract.
        unsafe {
            flash_item::<S, D, QMR, QNV, PMR, PNV>(simd, self.p, self.out, self.index, self.buf)
        }
    }
}

/// The weights work item of one level's capability token (blocking as in [`FlashItem`]).
#[derive(Debug, Clone, Copy)]
struct WeightsItem<const D: usize> {
    level: Level,
}

impl<const D: usize> WeightsItem<D> {
    /// The item for `isa`, or the portable one when this CPU cannot run `isa`.
    fn for_isa(isa: Isa) -> Self {
        Self {
            level: Level::or_portable(isa),
        }
    }

    /// Runs work item `index` (see [`weights_item`]).
    ///
    /// # Safety
    /// As [`FlashItem::run`], and `w` points to `N · (H or 1) · L · S'` writable floats.
    unsafe fn run(
        self,
        p: &Problem<'_>,
        out: SeqOut,
        w: WeightsOut,
        index: usize,
        buf: &mut [f32],
    ) {
        let op = WeightsOp::<D> {
            p,
            out,
            w,
            index,
            buf,
        };
        // SAFETY: `weights_item`'s contract is this function's.
        unsafe { run_blocked(self.level, op) }
    }
}

/// [`weights_item`] as a [`BlockedOp`].
struct WeightsOp<'a, 'p, const D: usize> {
    p: &'a Problem<'p>,
    out: SeqOut,
    w: WeightsOut,
    index: usize,
    buf: &'a mut [f32],
}

impl<const D: usize> BlockedOp for WeightsOp<'_, '_, D> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<
        S: Simd,
        const QMR: usize,
        const QNV: usize,
        const PMR: usize,
        const PNV: usize,
    >(
        self,
        simd: S,
    ) {
        // SAFETY: the caller's (`WeightsItem::run`'s) contract.
        unsafe {
            weights_item::<S, D, QMR, QNV, PMR, PNV>(
                simd, self.p, self.out, self.w, self.index, self.buf,
            )
        }
    }
}

/// A tile of keys: keys `k0..k0 + cols` of batch `n`, head `h`.
#[derive(Clone, Copy)]
struct KeyRange {
    n: usize,
    h: usize,
    k0: usize,
    cols: usize,
}

/// Packs the keys of `keys` transposed into `kt` (`d × BLOCK_K`, zero-padded to `cols_padded`
/// keys).
#[inline(always)]
fn pack_keys<S: Simd>(
    simd: S,
    p: &Problem<'_>,
    keys: KeyRange,
    cols_padded: usize,
    d: usize,
    kt: &mut [f32],
) {
    let KeyRange { n, h, k0, cols } = keys;
    let mut k_rows = [std::ptr::null::<f32>(); BLOCK_K];
    for (j, slot) in k_rows[..cols].iter_mut().enumerate() {
        *slot = p.key(n, k0 + j, h);
    }
    // SAFETY: key rows hold `d` floats (`Problem::check`); `kt` is `d × BLOCK_K`.
    unsafe {
        pack_transposed(
            simd,
            &k_rows[..cols],
            d,
            1.0,
            (kt, BLOCK_K),
            Write::Overwrite,
        )
    };
    for c in 0..d {
        kt[c * BLOCK_K + cols..c * BLOCK_K + cols_padded].fill(0.0);
    }
}

/// `dst[c * ld + i] = rows[i][c] * scale` (or `+=`, as `write` says) for `i < rows.len()`,
/// `c < d`: whole `LANES × LANES` blocks transposed in registers ([`Simd::transpose_block`];
/// the scalar loop it replaces compiled to scatters), the edges one float at a time. A `scale`
/// of 1 copies (or adds) exactly.
///
/// # Safety
/// Each of `rows` points at `d` readable floats.
#[inline(always)]
unsafe fn pack_transposed<S: Simd>(
    simd: S,
    rows: &[*const f32],
    d: usize,
    scale: f32,
    (dst, ld): (&mut [f32], usize),
    write: Write,
) {
    if rows.is_empty() || d == 0 {
        return;
    }
    assert!(rows.len() <= ld && (d - 1) * ld + rows.len() <= dst.len());
    let lanes = S::LANES;
    let (whole_rows, whole_cols) = (rows.len() - rows.len() % lanes, d - d % lanes);
    let mut block = [std::ptr::null::<f32>(); 16];
    for i0 in (0..whole_rows).step_by(lanes) {
        for c0 in (0..whole_cols).step_by(lanes) {
            for (slot, &row) in block[..lanes].iter_mut().zip(&rows[i0..i0 + lanes]) {
                *slot = row.wrapping_add(c0);
            }
            // SAFETY: rows `i0..i0 + LANES` hold columns `c0..c0 + LANES <= d` (the caller's
            // guarantee); `dst` holds `(c0 + c) * ld + i0 + r` for `c, r < LANES` by the assert.
            unsafe {
                simd.transpose_block(
                    &block[..lanes],
                    scale,
                    dst.as_mut_ptr().add(c0 * ld + i0),
                    ld,
                    write,
                )
            };
        }
    }
    for (i, &row) in rows.iter().enumerate() {
        let from = if i < whole_rows { whole_cols } else { 0 };
        // SAFETY: the caller's guarantee.
        let row = unsafe { std::slice::from_raw_parts(row, d) };
        for (c, &x) in row.iter().enumerate().skip(from) {
            write.apply(&mut dst[c * ld + i], x * scale);
        }
    }
}

/// The values of `keys` as `(first row, row stride)`: read in place when their rows are whole
/// vectors (`d == dp`) of the input keys, else packed into `vp` (`dp` apart, zero-padded).
#[inline(always)]
fn tile_values(
    p: &Problem<'_>,
    keys: KeyRange,
    d: usize,
    dp: usize,
    vp: &mut [f32],
) -> (*const f32, usize) {
    let KeyRange { n, h, k0, cols } = keys;
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

/// The keys a QKᵀ tile reads and the scores it writes (raw pointers: the micro-kernels index
/// them by row and vector).
#[derive(Clone, Copy)]
struct ScoreTile {
    /// Head size (the kernels use `D` instead when `D > 0`).
    d: usize,
    /// `d` rows of keys, transposed: key `j`'s element `c` at `kt[c * ld_kt + j]`.
    kt: *const f32,
    ld_kt: usize,
    /// Keys in the tile, a multiple of `LANES` (padding keys are zeros).
    cols_padded: usize,
    /// Score row `i` starts at `scores + i * ld`.
    scores: *mut f32,
    ld: usize,
    /// Running column maxima (`cols_padded` floats, NaN-free), which the micro-kernels raise
    /// to each column's largest score while the scores are in registers (NaN ignored); the
    /// flash kernel's online softmax then needs no pass of its own for the tile's maximum.
    col_max: Option<*mut f32>,
}

impl ScoreTile {
    /// The same tile from score row `i` on.
    ///
    /// # Safety
    /// `scores + i * ld` lies in (or one past) the caller's score buffer.
    #[inline(always)]
    unsafe fn starting_at_row(self, i: usize) -> Self {
        Self {
            // SAFETY: the caller's guarantee.
            scores: unsafe { self.scores.add(i * self.ld) },
            ..self
        }
    }

    /// The same tile from column `j` on.
    ///
    /// # Safety
    /// `j <= cols_padded`.
    #[inline(always)]
    unsafe fn starting_at_col(self, j: usize) -> Self {
        // SAFETY: the caller's guarantee: column `j` lies in (or one past) each buffer's rows.
        unsafe {
            Self {
                kt: self.kt.add(j),
                scores: self.scores.add(j),
                col_max: self.col_max.map(|m| m.add(j)),
                cols_padded: self.cols_padded - j,
                ..self
            }
        }
    }
}

/// `scores[i][j] = Σ_c q_i[c] · kt[c][j]` for `q_rows.len()` query rows and `tile.cols_padded`
/// keys.
///
/// Column blocks run outermost: one block's `d × NV · LANES` slice of `kt` (32 KB at `d = 128`)
/// stays in L1 while every row passes over it, where rows outermost would stream all of `kt`
/// (72 KB at `d = 128`, more than L1) from L2 once per `MR` rows.
///
/// # Safety
/// Each query row holds `tile.d` readable floats, `tile.kt` holds `d` rows of `cols_padded`
/// readable floats `ld_kt` apart, and `tile.scores` holds `q_rows.len()` rows of `cols_padded`
/// writable floats `ld` apart.
#[inline(always)]
unsafe fn qk_tile<S: Simd, const D: usize, const MR: usize, const NV: usize>(
    simd: S,
    q_rows: &[*const f32],
    tile: ScoreTile,
) {
    let mut j = 0;
    while j + NV * S::LANES <= tile.cols_padded {
        // SAFETY: columns `j..j + NV * LANES <= cols_padded` of the caller's buffers.
        unsafe { qk_columns::<S, D, MR, NV>(simd, q_rows, tile.starting_at_col(j)) };
        j += NV * S::LANES;
    }
    while j < tile.cols_padded {
        // SAFETY: columns `j..j + LANES <= cols_padded` (a multiple of LANES).
        unsafe { qk_columns::<S, D, MR, 1>(simd, q_rows, tile.starting_at_col(j)) };
        j += S::LANES;
    }
}

/// [`qk_tile`] for the tile's first `NV` vectors of keys, all rows.
///
/// # Safety
/// As [`qk_tile`] for these columns.
#[inline(always)]
unsafe fn qk_columns<S: Simd, const D: usize, const MR: usize, const NV: usize>(
    simd: S,
    q_rows: &[*const f32],
    tile: ScoreTile,
) {
    let rows = q_rows.len();
    let mut i = 0;
    while i + MR <= rows {
        // SAFETY: rows `i..i + MR` of what the caller guarantees.
        unsafe { qk_rows_at::<S, D, MR, NV>(simd, q_rows, i, tile) };
        i += MR;
    }
    // The last `rows % MR` rows in blocks of 4, 2, 1 (a one-row block does NV FMAs per NV + 1
    // loads, so a tile of 64 keys with MR = 6 would otherwise run 4 rows at a quarter speed).
    while i < rows {
        let block = tail_block::<MR>(rows - i);
        // SAFETY: rows `i..i + block` of what the caller guarantees.
        unsafe {
            match block {
                4 => qk_rows_at::<S, D, 4, NV>(simd, q_rows, i, tile),
                2 => qk_rows_at::<S, D, 2, NV>(simd, q_rows, i, tile),
                _ => qk_rows_at::<S, D, 1, NV>(simd, q_rows, i, tile),
            }
        };
        i += block;
    }
}

/// The rows of the next block after the whole `MR`-row blocks, `left` rows from the end: 4, 2
/// or 1 (each smaller than `MR`).
#[inline(always)]
fn tail_block<const MR: usize>(left: usize) -> usize {
    if MR > 4 && left >= 4 {
        4
    } else if MR > 2 && left >= 2 {
        2
    } else {
        1
    }
}

/// [`qk_block`] for the `R` query rows from `i`.
///
/// # Safety
/// As [`qk_block`] for rows `i..i + R` of the caller's tile.
#[inline(always)]
unsafe fn qk_rows_at<S: Simd, const D: usize, const R: usize, const NV: usize>(
    simd: S,
    q_rows: &[*const f32],
    i: usize,
    tile: ScoreTile,
) {
    let mut q = [std::ptr::null::<f32>(); R];
    q.copy_from_slice(&q_rows[i..i + R]);
    // SAFETY: the caller's guarantee for these rows.
    unsafe { qk_block::<S, D, R, NV>(simd, q, tile.starting_at_row(i)) };
}

/// The QKᵀ micro-kernel: `MR` query rows × the tile's first `NV` vectors of keys, accumulated
/// over `d`.
///
/// # Safety
/// Each `q[r]` holds `d` readable floats (`D` when `D > 0`), `tile.kt` holds `d` rows of
/// `NV * LANES` readable floats `ld_kt` apart, `tile.scores` `MR` rows of `NV * LANES` writable
/// floats `ld` apart, and `tile.col_max`, when given, `NV * LANES` readable and writable floats.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn qk_block<S: Simd, const D: usize, const MR: usize, const NV: usize>(
    simd: S,
    q: [*const f32; MR],
    tile: ScoreTile,
) {
    let ScoreTile {
        d,
        kt,
        ld_kt,
        scores,
        ld,
        col_max,
        ..
    } = tile;
    let d = if D > 0 { D } else { d };
    let mut acc = [[simd.splat(0.0); NV]; MR];
    for c in 0..d {
        let mut kv = [simd.splat(0.0); NV];
        for (v, slot) in kv.iter_mut().enumerate() {
            // SAFETY: row `c < d` of `kt`, vector `v < NV`.
            *slot = unsafe { simd.load(kt.add(c * ld_kt + v * S::LANES)) };
        }
        for r in 0..MR {
            // SAFETY: `c < d`.
            let qb = simd.splat(unsafe { *q[r].add(c) });
            for v in 0..NV {
                acc[r][v] = simd.mul_add(qb, kv[v], acc[r][v]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: row `r < MR` of `scores`, vector `v < NV`.
            unsafe { simd.store(scores.add(r * ld + v * S::LANES), x) };
        }
    }
    if let Some(col_max) = col_max {
        for v in 0..NV {
            // SAFETY: vector `v < NV` of `col_max`.
            let at = unsafe { col_max.add(v * S::LANES) };
            // SAFETY: as above.
            let mut m = unsafe { simd.load(at) };
            for row in &acc {
                m = simd.max(row[v], m);
            }
            // SAFETY: as above.
            unsafe { simd.store(at, m) };
        }
    }
}

/// A narrow block's queries for [`qk_narrow`]: `rows` scaled query rows of `d` floats, `dp`
/// apart (zero-padded), row-major in `q`.
#[derive(Clone, Copy)]
struct NarrowQueries<'a> {
    q: &'a [f32],
    rows: usize,
    d: usize,
    dp: usize,
}

impl NarrowQueries<'_> {
    /// The same queries from row `i` on.
    fn starting_at_row(self, i: usize) -> Self {
        Self {
            q: &self.q[i * self.dp..],
            rows: self.rows - i,
            ..self
        }
    }
}

/// `sᵀ[j][i] = k_j · q_i` for a narrow block (at most `LANES / 4` query rows), dot products
/// along `d` with one horizontal sum per score; the padded lanes `rows..rows_padded` of each
/// score row get 0, as the wide kernel's zero queries give.
#[inline(always)]
fn qk_narrow<S: Simd, const D: usize>(
    simd: S,
    k_rows: &[*const f32],
    queries: NarrowQueries<'_>,
    st: &mut [f32],
    rows_padded: usize,
) {
    match queries.rows {
        1 => qk_narrow_rows::<S, D, 1>(simd, k_rows, queries, st, rows_padded),
        2 => qk_narrow_rows::<S, D, 2>(simd, k_rows, queries, st, rows_padded),
        3 => qk_narrow_rows::<S, D, 3>(simd, k_rows, queries, st, rows_padded),
        rows => {
            for i0 in (0..rows).step_by(4) {
                let (part, st) = (queries.starting_at_row(i0), &mut st[i0..]);
                match part.rows.min(4) {
                    4 => qk_narrow_rows::<S, D, 4>(simd, k_rows, part, st, 0),
                    3 => qk_narrow_rows::<S, D, 3>(simd, k_rows, part, st, 0),
                    2 => qk_narrow_rows::<S, D, 2>(simd, k_rows, part, st, 0),
                    _ => qk_narrow_rows::<S, D, 1>(simd, k_rows, part, st, 0),
                }
            }
            for j in 0..k_rows.len() {
                st[j * LD_Q + rows..j * LD_Q + rows_padded].fill(0.0);
            }
        }
    }
}

/// [`qk_narrow`] for the first `R` query rows; `pad_to` > 0 zero-fills score lanes `R..pad_to`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn qk_narrow_rows<S: Simd, const D: usize, const R: usize>(
    simd: S,
    k_rows: &[*const f32],
    queries: NarrowQueries<'_>,
    st: &mut [f32],
    pad_to: usize,
) {
    let NarrowQueries { q, d, dp, .. } = queries;
    let d = if D > 0 { D } else { d };
    assert!(R <= queries.rows && (R - 1) * dp + d <= q.len());
    let whole = d - d % S::LANES;
    for (j, &key) in k_rows.iter().enumerate() {
        // SAFETY: key rows hold `d` floats (`Problem::check`).
        let key = unsafe { std::slice::from_raw_parts(key, d) };
        let mut acc = [simd.splat(0.0); R];
        let mut c = 0;
        while c < whole {
            // SAFETY: `c + LANES <= whole <= d`, and query rows `i < R` hold `d` floats `dp`
            // apart in `q` (asserted above).
            let kv = unsafe { simd.load(key.as_ptr().add(c)) };
            for i in 0..R {
                // SAFETY: as above.
                let qv = unsafe { simd.load(q.as_ptr().add(i * dp + c)) };
                acc[i] = simd.mul_add(kv, qv, acc[i]);
            }
            c += S::LANES;
        }
        let row = &mut st[j * LD_Q..];
        row[R..pad_to.max(R)].fill(0.0);
        for i in 0..R {
            let tail: f32 = key[whole..]
                .iter()
                .zip(&q[i * dp + whole..i * dp + d])
                .map(|(&k, &q)| k * q)
                .sum();
            row[i] = simd.reduce_add(acc[i]) + tail;
        }
    }
}

/// The probabilities a PV tile reads, the values it weighs and the output rows it adds to (raw
/// pointers: the micro-kernels index them by row and vector).
#[derive(Clone, Copy)]
struct ValueTile {
    /// `p(i, j)` at `p + i * p_rs + j * p_cs`.
    p: *const f32,
    p_rs: usize,
    p_cs: usize,
    /// Keys (value rows) in the tile.
    cols: usize,
    /// Value rows, `ld_v` apart.
    v: *const f32,
    ld_v: usize,
    /// Output row width and stride, a multiple of `LANES`.
    dp: usize,
    o: *mut f32,
    /// The online softmax's rescale: output row `i` is multiplied by `o_scale[i]` before the
    /// tile adds to it (in the micro-kernel's registers, not in a pass of its own).
    o_scale: Option<*const f32>,
}

impl ValueTile {
    /// The same tile from row `i` on.
    ///
    /// # Safety
    /// `p(i, 0)` and `o + i * dp` lie in (or one past) the caller's buffers.
    #[inline(always)]
    unsafe fn starting_at_row(self, i: usize) -> Self {
        // SAFETY: the caller's guarantee.
        unsafe {
            Self {
                p: self.p.add(i * self.p_rs),
                o: self.o.add(i * self.dp),
                o_scale: self.o_scale.map(|f| f.add(i)),
                ..self
            }
        }
    }

    /// The same tile from output column `c` on.
    ///
    /// # Safety
    /// `c <= dp`.
    #[inline(always)]
    unsafe fn starting_at_col(self, c: usize) -> Self {
        // SAFETY: the caller's guarantee (`c` within a value row and an output row).
        unsafe {
            Self {
                v: self.v.add(c),
                o: self.o.add(c),
                ..self
            }
        }
    }
}

/// `o[i][:] += Σ_{j < cols} p(i, j) · v[j][:]` for `rows` rows of the tile.
///
/// # Safety
/// Those `p(i, j)` for `i < rows`, `j < cols` are readable, `v` holds `cols` rows of `dp`
/// readable floats, `o` holds `rows` rows of `dp` readable and writable floats (`dp` a
/// multiple of `S::LANES`).
#[inline(always)]
unsafe fn pv_tile<S: Simd, const MR: usize, const NV: usize>(
    simd: S,
    rows: usize,
    tile: ValueTile,
) {
    let mut i = 0;
    while i + MR <= rows {
        // SAFETY: rows `i..i + MR` of what the caller guarantees.
        unsafe { pv_rows::<S, MR, NV>(simd, tile.starting_at_row(i)) };
        i += MR;
    }
    // The last `rows % MR` rows in blocks of 4, 2, 1, as in `qk_tile`.
    while i < rows {
        let block = tail_block::<MR>(rows - i);
        // SAFETY: rows `i..i + block` of what the caller guarantees.
        unsafe {
            let tile = tile.starting_at_row(i);
            match block {
                4 => pv_rows::<S, 4, NV>(simd, tile),
                2 => pv_rows::<S, 2, NV>(simd, tile),
                _ => pv_rows::<S, 1, NV>(simd, tile),
            }
        };
        i += block;
    }
}

/// [`pv_tile`] for `MR` rows.
///
/// # Safety
/// As [`pv_tile`] for these rows.
#[inline(always)]
unsafe fn pv_rows<S: Simd, const MR: usize, const NV: usize>(simd: S, tile: ValueTile) {
    let mut c = 0;
    while c + NV * S::LANES <= tile.dp {
        // SAFETY: columns `c..c + NV * LANES <= dp` of the caller's buffers.
        unsafe { pv_block::<S, MR, NV>(simd, tile.starting_at_col(c)) };
        c += NV * S::LANES;
    }
    while c < tile.dp {
        // SAFETY: columns `c..c + LANES <= dp` (a multiple of LANES).
        unsafe { pv_block::<S, MR, 1>(simd, tile.starting_at_col(c)) };
        c += S::LANES;
    }
}

/// The PV micro-kernel: `MR` rows × `NV` vectors of output columns, accumulated over keys.
///
/// # Safety
/// As [`pv_tile`] for `MR` rows and `NV * LANES` columns.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn pv_block<S: Simd, const MR: usize, const NV: usize>(simd: S, tile: ValueTile) {
    let ValueTile {
        p,
        p_rs,
        p_cs,
        cols,
        v,
        ld_v,
        dp,
        o,
        o_scale,
    } = tile;
    let mut acc = [[simd.splat(0.0); NV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        for (k, slot) in row.iter_mut().enumerate() {
            // SAFETY: row `r < MR` of `o`, vector `k < NV`.
            *slot = unsafe { simd.load(o.add(r * dp + k * S::LANES)) };
        }
        if let Some(factors) = o_scale {
            // SAFETY: `o_scale` holds a factor for each of the tile's rows.
            let f = simd.splat(unsafe { *factors.add(r) });
            for slot in row.iter_mut() {
                *slot = simd.mul(*slot, f);
            }
        }
    }
    for j in 0..cols {
        let mut vv = [simd.splat(0.0); NV];
        for (k, slot) in vv.iter_mut().enumerate() {
            // SAFETY: value row `j < cols`, vector `k < NV`.
            *slot = unsafe { simd.load(v.add(j * ld_v + k * S::LANES)) };
        }
        for r in 0..MR {
            // SAFETY: `p(r, j)` with `r < MR`, `j < cols`.
            let pb = simd.splat(unsafe { *p.add(r * p_rs + j * p_cs) });
            for k in 0..NV {
                acc[r][k] = simd.mul_add(pb, vv[k], acc[r][k]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (k, &x) in row.iter().enumerate() {
            // SAFETY: row `r < MR` of `o`, vector `k < NV`.
            unsafe { simd.store(o.add(r * dp + k * S::LANES), x) };
        }
    }
}

/// One query's mask row and, with a padding part, its batch element's padding row (added to
/// it first, torch's merge); both hold `S'` values.
#[derive(Clone, Copy)]
struct MaskRow {
    values: *const f32,
    padding: Option<*const f32>,
}

/// Turns raw dot products of row `qi` (keys `k0..k0 + cols`, padded to `cols_padded`) into
/// masked, scaled scores: `-inf` for padding and causally hidden keys.
#[inline(always)]
fn mask_scores<S: Simd>(
    simd: S,
    p: &Problem<'_>,
    row: &mut [f32],
    mask_row: Option<MaskRow>,
    qi: usize,
    k0: usize,
    cols: usize,
) {
    let scale = simd.splat(p.scale);
    for chunk in row.chunks_exact_mut(S::LANES) {
        // SAFETY: the chunk holds LANES floats.
        unsafe {
            simd.store(
                chunk.as_mut_ptr(),
                simd.mul(simd.load(chunk.as_ptr()), scale),
            )
        };
    }
    if let Some(MaskRow { values, padding }) = mask_row {
        // SAFETY: mask and padding rows hold S' >= k0 + cols values (`Problem::check`).
        let m = unsafe { std::slice::from_raw_parts(values.add(k0), cols) };
        match padding {
            Some(padding) => {
                // SAFETY: as above.
                let k = unsafe { std::slice::from_raw_parts(padding.add(k0), cols) };
                for ((x, &a), &k) in row[..cols].iter_mut().zip(m).zip(k) {
                    *x += a + k;
                }
            }
            None => row[..cols].iter_mut().zip(m).for_each(|(x, &a)| *x += a),
        }
    }
    if p.causal && k0 + cols > qi + 1 {
        let from = (qi + 1).saturating_sub(k0);
        row[from..cols].fill(f32::NEG_INFINITY);
    }
    row[cols..].fill(f32::NEG_INFINITY);
}

/// `out[i] = max(m[i], max_j st[j * LD_Q + i])` for the query lanes `lanes` (whole vectors) of
/// a tile's `cols` score rows, NaN scores ignored; for tiles whose scores a mask or the causal
/// triangle changed after QKᵀ (the others get their maxima from the QK kernel's registers,
/// `ScoreTile::col_max`). Row by row, eight lane vectors at a time: a walk down each lane
/// vector's column (64 rows 576 B apart) on one `max` chain took 4.0% of a d = 64 call in perf,
/// rows 3.1%.
#[inline(always)]
fn tile_max<S: Simd>(
    simd: S,
    st: &[f32],
    cols: usize,
    lanes: std::ops::Range<usize>,
    m: &[f32],
    out: &mut [f32],
) {
    assert!(
        lanes.len().is_multiple_of(S::LANES)
            && lanes.end <= m.len().min(out.len())
            && (cols == 0 || (cols - 1) * LD_Q + lanes.end <= st.len())
    );
    let mut iv = lanes.start;
    while iv < lanes.end {
        let vectors = (lanes.end - iv) / S::LANES;
        // SAFETY: each arm's vectors from `iv` lie in `lanes` (at least that many remain), in
        // bounds by the assert.
        iv += unsafe {
            match vectors {
                8.. => tile_max_group::<S, 8>(simd, st, cols, iv, m, out),
                4..=7 => tile_max_group::<S, 4>(simd, st, cols, iv, m, out),
                2..=3 => tile_max_group::<S, 2>(simd, st, cols, iv, m, out),
                _ => tile_max_group::<S, 1>(simd, st, cols, iv, m, out),
            }
        };
    }
}

/// [`tile_max`] for the `NV` lane vectors from `iv`; returns the lanes done.
///
/// # Safety
/// Lanes `iv..iv + NV * LANES` lie in `m`, `out` and each of the `cols` rows of `st`.
#[inline(always)]
unsafe fn tile_max_group<S: Simd, const NV: usize>(
    simd: S,
    st: &[f32],
    cols: usize,
    iv: usize,
    m: &[f32],
    out: &mut [f32],
) -> usize {
    // SAFETY: the caller's guarantee.
    let mut acc: [S::V; NV] =
        std::array::from_fn(|v| unsafe { simd.load(m.as_ptr().add(iv + v * S::LANES)) });
    for j in 0..cols {
        let row = st[j * LD_Q + iv..].as_ptr();
        for (v, slot) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's guarantee.
            *slot = simd.max(unsafe { simd.load(row.add(v * S::LANES)) }, *slot);
        }
    }
    for (v, &x) in acc.iter().enumerate() {
        // SAFETY: the caller's guarantee.
        unsafe { simd.store(out.as_mut_ptr().add(iv + v * S::LANES), x) };
    }
    NV * S::LANES
}

/// The largest score of `row`, NaN ignored (`-inf` when there is none).
#[inline(always)]
fn row_max<S: Simd>(simd: S, row: &[f32]) -> f32 {
    let mut m = simd.splat(f32::NEG_INFINITY);
    for chunk in row.chunks_exact(S::LANES) {
        // SAFETY: the chunk holds LANES floats.
        m = simd.max(unsafe { simd.load(chunk.as_ptr()) }, m);
    }
    simd.reduce_max(m)
}

/// `row[j] = exp(row[j] - max)`; returns the sum.
#[inline(always)]
fn exp_row<S: Simd>(simd: S, row: &mut [f32], max: f32) -> f32 {
    let m = simd.splat(max);
    let mut sum = simd.splat(0.0);
    for chunk in row.chunks_exact_mut(S::LANES) {
        // SAFETY: the chunk holds LANES floats.
        let e = simd.exp(simd.sub(unsafe { simd.load(chunk.as_ptr()) }, m));
        // SAFETY: as above.
        unsafe { simd.store(chunk.as_mut_ptr(), e) };
        sum = simd.add(sum, e);
    }
    simd.reduce_add(sum)
}

/// `row[j] *= factor`.
#[inline(always)]
fn scale_row<S: Simd>(simd: S, row: &mut [f32], factor: f32) {
    let f = simd.splat(factor);
    for chunk in row.chunks_exact_mut(S::LANES) {
        // SAFETY: the chunk holds LANES floats.
        unsafe { simd.store(chunk.as_mut_ptr(), simd.mul(simd.load(chunk.as_ptr()), f)) };
    }
}

/// Whether the tile can be skipped: the additive mask is `-inf` at every score and its keys
/// and values are finite. (A score `NaN + -inf` or `±inf + -inf` is not masked, and a masked
/// key's value still enters the output as `0 · v`, which is NaN for a non-finite `v`.)
#[inline(always)]
fn tile_skippable<S: Simd>(
    simd: S,
    p: &Problem<'_>,
    keys: KeyRange,
    q0: usize,
    rows: usize,
    d: usize,
) -> bool {
    let KeyRange { n, h, k0, cols } = keys;
    let Some(mask) = &p.mask else { return false };
    let rows = if mask.row_stride == 0 { 1 } else { rows };
    // Row by row, stopping at the first row with another value (most tiles stop at their first
    // row); within a row, every value compared by its bits with `-inf`'s, OR-ed without a branch
    // (a few instructions per vector), since a skipped tile's check costs what it saves.
    const NEG_INF_BITS: u32 = f32::NEG_INFINITY.to_bits();
    // SAFETY: the padding row holds the tile's keys (`Problem::check`).
    let padding = mask
        .padding_ptr(n)
        .map(|p| unsafe { std::slice::from_raw_parts(p.add(k0), cols) });
    let masked = (0..rows).all(|i| {
        // SAFETY: the mask row holds the tile's keys (`Problem::check`).
        let m = unsafe { std::slice::from_raw_parts(mask.row_ptr(n, h, q0 + i).add(k0), cols) };
        let other_bits = match padding {
            None => m
                .iter()
                .fold(0, |acc, x| acc | (x.to_bits() ^ NEG_INF_BITS)),
            Some(k) => m
                .iter()
                .zip(k)
                .fold(0, |acc, (x, k)| acc | ((x + k).to_bits() ^ NEG_INF_BITS)),
        };
        other_bits == 0
    });
    masked
        && rows_finite::<S>(simd, (k0..k0 + cols).map(|j| p.key(n, j, h)), d)
        && rows_finite::<S>(simd, (k0..k0 + cols).map(|j| p.value(n, j, h)), d)
}

/// Whether every one of the `d` floats at each pointer is finite: sums `0 · x` (0 for a finite
/// `x`, NaN otherwise) without a branch per element, into [`FINITE_CHAINS`] independent sums.
#[inline(always)]
fn rows_finite<S: Simd>(simd: S, rows: impl Iterator<Item = *const f32>, d: usize) -> bool {
    let whole = d - d % S::LANES;
    let zero = simd.splat(0.0);
    let mut acc = [zero; FINITE_CHAINS];
    let mut tail = 0.0f32;
    for row in rows {
        // SAFETY: the callers pass rows of `d` floats in bounds by `Problem::check`.
        let row = unsafe { std::slice::from_raw_parts(row, d) };
        let mut chunks = row[..whole].chunks_exact(FINITE_CHAINS * S::LANES);
        for group in &mut chunks {
            for (c, chain) in acc.iter_mut().enumerate() {
                // SAFETY: the group holds FINITE_CHAINS * LANES floats.
                let x = unsafe { simd.load(group.as_ptr().add(c * S::LANES)) };
                *chain = simd.mul_add(x, zero, *chain);
            }
        }
        for chunk in chunks.remainder().chunks_exact(S::LANES) {
            // SAFETY: the chunk holds LANES floats.
            let x = unsafe { simd.load(chunk.as_ptr()) };
            acc[0] = simd.mul_add(x, zero, acc[0]);
        }
        for &x in &row[whole..] {
            tail += 0.0 * x;
        }
    }
    let sum = acc.into_iter().fold(zero, |a, b| simd.add(a, b));
    simd.reduce_add(sum) + tail == 0.0
}

/// Independent sums in [`rows_finite`]: one FMA chain waits 4 cycles per vector, so a single
/// one made the causal check of the hidden values ~3% of a causal SDPA call; four keep both
/// FMA ports busy.
const FINITE_CHAINS: usize = 4;

/// Head `h` of what a fully masked row gives when torch zeroes it (`need_weights=False`): the
/// probabilities are 0 and the output is `Σ_j 0 · v_j`, which is 0 unless a value is not finite.
fn zero_attention(p: &Problem<'_>, n: usize, h: usize, dst: &mut [f32]) {
    dst.fill(0.0);
    for j in 0..p.total_keys() {
        // SAFETY: value rows are in bounds by `Problem::check`.
        let v = unsafe { std::slice::from_raw_parts(p.value(n, j, h), dst.len()) };
        for (x, &y) in dst.iter_mut().zip(v) {
            *x += 0.0 * y;
        }
    }
}

/// A work item's block of queries and the sizes both kernels use.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueryBlock {
    /// Head dimension.
    pub d: usize,
    /// `d` rounded up to whole vectors.
    pub dp: usize,
    /// The item index without its query block: `(n, h)` flattened (flash) or `n` (weights).
    pub outer: usize,
    /// First query.
    pub q0: usize,
    /// Queries in the block (up to [`BLOCK_Q`]).
    pub rows: usize,
    /// `S'`.
    pub total: usize,
}

/// Splits a work item index into its outer part and query block `index % blocks`.
#[inline(always)]
pub(super) fn query_block<S: Simd, const D: usize>(p: &Problem<'_>, index: usize) -> QueryBlock {
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
/// element `index / (blocks * H)`: [`flash_keys`] over every key the block can see, then
/// [`finish_rows`].
///
/// # Safety
/// As [`FlashItem::run`]; `buf` holds at least `flash_scratch_len(head_dim)` floats.
#[inline(always)]
unsafe fn flash_item<
    S: Simd,
    const D: usize,
    const QMR: usize,
    const QNV: usize,
    const PMR: usize,
    const PNV: usize,
>(
    simd: S,
    p: &Problem<'_>,
    out: SeqOut,
    index: usize,
    buf: &mut [f32],
) {
    let qb = query_block::<S, D>(p, index);
    let (n, h) = (qb.outer / p.heads, qb.outer % p.heads);
    let keys = 0..visible_keys::<S>(simd, p, n, h, &qb);
    // SAFETY: the caller's contract.
    let state = unsafe { flash_keys::<S, D, QMR, QNV, PMR, PNV>(simd, p, n, h, &qb, keys, buf) };
    finish_rows(p, n, h, &qb, &state, out);
}

/// The keys `0..end` query block `qb` of head `(n, h)` must visit: all of them, or with a
/// causal mask those up to the block's last query. Causally hidden keys get probability 0; they
/// are skipped unless a value is not finite (`0 · v` is then NaN, as in torch's explicit
/// product).
#[inline(always)]
pub(super) fn visible_keys<S: Simd>(
    simd: S,
    p: &Problem<'_>,
    n: usize,
    h: usize,
    qb: &QueryBlock,
) -> usize {
    let (q0, rows, total) = (qb.q0, qb.rows, qb.total);
    if p.causal
        && rows_finite::<S>(
            simd,
            (q0 + rows..total).map(|j| p.value(n, j, h)),
            p.head_dim,
        )
    {
        total.min(q0 + rows)
    } else {
        total
    }
}

/// One query block's online-softmax state after [`flash_keys`], borrowed from the scratch
/// buffer: per query `i < rows`, the unnormalised output `o[i * dp..][..d]`, the running maximum
/// score `m[i]` (NaN ignored, `-inf` while every key seen is masked) and the sum `l[i]` of
/// `exp(score - max(m[i], f32::MIN))`.
pub(super) struct BlockState<'b> {
    pub o: &'b [f32],
    pub m: &'b [f32],
    pub l: &'b [f32],
}

/// Runs query block `qb` of head `(n, h)` over the key tiles in `keys` (whole [`BLOCK_K`] tiles
/// from `keys.start`, a multiple of `BLOCK_K`, except at the end) and returns its state.
///
/// Scores are computed transposed, `sᵀ = K Qᵀ` (keys × queries), against the query block packed
/// once as `Qᵀ`, so keys are read straight from the projections (no per-tile transpose) and the
/// online softmax runs along the vector lanes (16 or 8 queries at a time).
///
/// # Safety
/// `p` passed [`Problem::check`], `qb` is one of its query blocks, `keys.end <= S'`, and `buf`
/// holds at least `flash_scratch_len(head_dim)` floats.
#[inline(always)]
pub(super) unsafe fn flash_keys<
    'b,
    S: Simd,
    const D: usize,
    const QMR: usize,
    const QNV: usize,
    const PMR: usize,
    const PNV: usize,
>(
    simd: S,
    p: &Problem<'_>,
    n: usize,
    h: usize,
    qb: &QueryBlock,
    keys: std::ops::Range<usize>,
    buf: &'b mut [f32],
) -> BlockState<'b> {
    let QueryBlock {
        d,
        dp,
        q0,
        rows,
        total,
        ..
    } = *qb;
    let rows_padded = round_up(rows, S::LANES);
    let kv_end = keys.end;
    let (qt, rest) = buf.split_at_mut(d * LD_Q);
    let (vp, rest) = rest.split_at_mut(BLOCK_K * dp);
    let (st, rest) = rest.split_at_mut(BLOCK_K * LD_Q);
    let (o, rest) = rest.split_at_mut(BLOCK_Q * dp);
    let (m, rest) = rest.split_at_mut(BLOCK_Q);
    let (l, rest) = rest.split_at_mut(BLOCK_Q);
    let (alpha, rest) = rest.split_at_mut(BLOCK_Q);
    let merged_mask = &mut rest[..BLOCK_Q * BLOCK_K];
    o[..rows * dp].fill(0.0);
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);

    // A narrow block (a decode step, a few folded query heads) fills under a quarter of a
    // vector of query lanes: its scores are dot products along `d` (`qk_narrow`), reading the
    // queries as rows; a wide one packs `Qᵀ` for the lane-parallel micro-kernel.
    let narrow = rows * NARROW_LANE_FRACTION <= S::LANES;
    if narrow {
        // q · scale (torch's q_scaled), row-major: rows × dp, zero-padded.
        for i in 0..rows {
            // SAFETY: query rows are in bounds by `Problem::check`.
            let q = unsafe { std::slice::from_raw_parts(p.q.head_row(n, q0 + i, h), d) };
            let dst = &mut qt[i * dp..(i + 1) * dp];
            for (x, &y) in dst.iter_mut().zip(q) {
                *x = y * p.scale;
            }
            dst[d..].fill(0.0);
        }
    } else {
        // Qᵀ · scale: d × BLOCK_Q (LD_Q apart), padded queries zero.
        let mut q_rows = [std::ptr::null::<f32>(); BLOCK_Q];
        for (i, slot) in q_rows[..rows].iter_mut().enumerate() {
            *slot = p.q.head_row(n, q0 + i, h);
        }
        // SAFETY: query rows hold `d` floats (`Problem::check`); `qt` is `d × LD_Q`.
        unsafe {
            pack_transposed(
                simd,
                &q_rows[..rows],
                d,
                p.scale,
                (qt, LD_Q),
                Write::Overwrite,
            )
        };
        for c in 0..d {
            qt[c * LD_Q + rows..c * LD_Q + rows_padded].fill(0.0);
        }
    }

    // `m` holds each query's running maximum score, NaN ignored (`-inf` while every key is
    // masked); the exponents are taken against `max(m, floor)`, so a fully masked lane computes
    // exp(-inf - floor) = 0 rather than exp(-inf + inf) = NaN, and a row of f32::MIN scores
    // still gives exp(0) = 1 as torch does. A NaN score stays NaN through `exp` and the sum `l`.
    let floor = simd.splat(f32::MIN);
    let mut rng = p.dropout.map(|dr| dr.generator(n, h, p.heads));
    let mut k_rows = [std::ptr::null::<f32>(); BLOCK_K];
    let mut k0 = keys.start;
    while k0 < kv_end {
        let cols = BLOCK_K.min(kv_end - k0);
        if tile_skippable::<S>(simd, p, KeyRange { n, h, k0, cols }, q0, rows, d) {
            k0 += BLOCK_K;
            continue;
        }
        for (j, slot) in k_rows[..cols].iter_mut().enumerate() {
            *slot = p.key(n, k0 + j, h);
        }
        // With a causal mask, the block's first `hidden_rows` queries see none of this tile's
        // keys: their scores are -inf, their probabilities 0 and their rescale exactly 1, so a
        // wide block skips their query lanes (whole vectors, `skip_lanes`) in QKᵀ and the
        // softmax, and their rows in PV, unless a value is not finite (0 · v is then NaN).
        let hidden_rows = if p.causal && !narrow && k0 > q0 {
            let hidden = (k0 - q0).min(rows);
            let values = (k0..k0 + cols).map(|j| p.value(n, j, h));
            if rows_finite::<S>(simd, values, d) {
                hidden
            } else {
                0
            }
        } else {
            0
        };
        let skip_lanes = hidden_rows - hidden_rows % S::LANES;
        // The wide kernel's scores are final when no mask is added and no key of the tile is
        // causally hidden from a query of the block: it then leaves each lane's new running
        // maximum in `alpha` itself.
        let scores_final = !narrow && p.mask.is_none() && !(p.causal && k0 + cols > q0 + 1);
        if scores_final {
            alpha[skip_lanes..rows_padded].copy_from_slice(&m[skip_lanes..rows_padded]);
        }
        // sᵀ[j][i] = k_j · q_i
        if narrow {
            let queries = NarrowQueries { q: qt, rows, d, dp };
            qk_narrow::<S, D>(simd, &k_rows[..cols], queries, st, rows_padded);
        } else {
            // SAFETY: `cols` key rows of `d` floats (`Problem::check`); `qt` is `d × LD_Q` and
            // `st` `BLOCK_K × LD_Q`, with `skip_lanes <= rows_padded <= BLOCK_Q` multiples of
            // LANES (equal, and no lane left, on a tile no query of the block sees).
            unsafe {
                let tile = ScoreTile {
                    d,
                    kt: qt.as_ptr().add(skip_lanes),
                    ld_kt: LD_Q,
                    cols_padded: rows_padded - skip_lanes,
                    scores: st.as_mut_ptr().add(skip_lanes),
                    ld: LD_Q,
                    col_max: scores_final.then(|| alpha.as_mut_ptr().add(skip_lanes)),
                };
                qk_tile::<S, D, QMR, QNV>(simd, &k_rows[..cols], tile);
            }
        }
        // The mask: a row per query, the tile's `cols` keys of each added to its lane of the
        // transposed scores, a block of queries at a time (transposed in registers); or one
        // row for every query (a padding mask), added along the lanes.
        if let Some(mask) = p.mask.as_ref().filter(|m| m.row_stride != 0) {
            let mut mask_rows = [std::ptr::null::<f32>(); BLOCK_Q];
            for (i, slot) in mask_rows[..rows].iter_mut().enumerate() {
                *slot = mask.row_ptr(n, h, q0 + i).wrapping_add(k0);
            }
            // With a padding part, the tile's rows of torch's merged mask (`attn_mask +
            // key_padding_mask`, the one rounding torch's merge has) are written first.
            if let Some(padding) = mask.padding_ptr(n) {
                // SAFETY: the padding row holds the tile's keys (`Problem::check`).
                let padding = unsafe { std::slice::from_raw_parts(padding.add(k0), cols) };
                for (i, slot) in mask_rows[..rows].iter_mut().enumerate() {
                    let dst = &mut merged_mask[i * BLOCK_K..i * BLOCK_K + cols];
                    // SAFETY: each mask row holds the tile's keys (`Problem::check`).
                    let src = unsafe { std::slice::from_raw_parts(*slot, cols) };
                    for ((d, &a), &k) in dst.iter_mut().zip(src).zip(padding) {
                        *d = a + k;
                    }
                    *slot = dst.as_ptr();
                }
            }
            // SAFETY: each mask row holds the tile's keys `k0..k0 + cols` (`Problem::check`);
            // `st` holds `cols` rows of `LD_Q >= rows` floats.
            unsafe {
                pack_transposed(
                    simd,
                    &mask_rows[..rows],
                    cols,
                    1.0,
                    (st, LD_Q),
                    Write::Accumulate,
                )
            };
        }
        // The padding mask and the causal structure, one key row at a time.
        for j in 0..cols {
            let row = &mut st[j * LD_Q..j * LD_Q + rows_padded];
            if let Some(mask) = p.mask.as_ref().filter(|m| m.row_stride == 0) {
                let add = mask.value(n, h, 0, k0 + j);
                row[..rows].iter_mut().for_each(|x| *x += add);
            }
            if p.causal && k0 + j > q0 {
                // queries i with q0 + i < k0 + j do not see key k0 + j
                let hidden = (k0 + j - q0).min(rows_padded);
                row[..hidden].fill(f32::NEG_INFINITY);
            }
        }
        // Online softmax along the queries (vector lanes); skipped lanes keep their state.
        // `alpha` first holds each lane's new running maximum, then its rescale factor.
        if !scores_final {
            tile_max(simd, st, cols, skip_lanes..rows_padded, m, alpha);
        }
        let mut iv = skip_lanes;
        // SAFETY (the loads and stores below): `iv + LANES <= rows_padded <= BLOCK_Q`, the
        // length of `m`, `l` and `alpha` and of each of the `cols` rows of `st`.
        while iv < rows_padded {
            // SAFETY: see above.
            let m_old = unsafe { simd.load(m.as_ptr().add(iv)) };
            let base_old = simd.max(m_old, floor);
            // SAFETY: see above.
            let m_new = unsafe { simd.load(alpha.as_ptr().add(iv)) };
            let base = simd.max(m_new, floor);
            let a = simd.exp(simd.sub(base_old, base));
            let mut sum = simd.splat(0.0);
            for j in 0..cols {
                let at = st[j * LD_Q + iv..].as_mut_ptr();
                // SAFETY: see above.
                let e = simd.exp(simd.sub(unsafe { simd.load(at) }, base));
                // SAFETY: see above.
                unsafe { simd.store(at, e) };
                sum = simd.add(sum, e);
            }
            // SAFETY: see above.
            let l_old = unsafe { simd.load(l.as_ptr().add(iv)) };
            // SAFETY: see above.
            unsafe {
                simd.store(l.as_mut_ptr().add(iv), simd.mul_add(l_old, a, sum));
                simd.store(m.as_mut_ptr().add(iv), m_new);
                simd.store(alpha.as_mut_ptr().add(iv), a);
            }
            iv += S::LANES;
        }
        if let (Some(dr), Some(rng)) = (&p.dropout, rng.as_mut()) {
            for i in 0..rows {
                apply_dropout(dr, rng, (q0 + i) * total + k0, &mut st[i..], LD_Q, cols);
            }
        }
        let (v, ld_v) = tile_values(p, KeyRange { n, h, k0, cols }, d, dp, vp);
        // SAFETY: `st` holds p(i, j) at `i + j * LD_Q` for `hidden_rows <= i < rows`,
        // `j < cols`; `tile_values` gives `cols` value rows of `dp` floats; `o` is
        // `BLOCK_Q × dp`, `alpha` `BLOCK_Q` long.
        unsafe {
            let tile = ValueTile {
                p: st.as_ptr(),
                p_rs: 1,
                p_cs: LD_Q,
                cols,
                v,
                ld_v,
                dp,
                o: o.as_mut_ptr(),
                o_scale: Some(alpha.as_ptr()),
            };
            pv_tile::<S, PMR, PNV>(simd, rows - hidden_rows, tile.starting_at_row(hidden_rows))
        };
        k0 += BLOCK_K;
    }

    BlockState { o, m, l }
}

/// Writes query block `qb`'s output rows of head `(n, h)` from its final state: `o / l`, or
/// what the fully-masked-row policy gives for a row with no unmasked score.
#[inline(always)]
pub(super) fn finish_rows(
    p: &Problem<'_>,
    n: usize,
    h: usize,
    qb: &QueryBlock,
    state: &BlockState<'_>,
    out: SeqOut,
) {
    let (d, dp) = (qb.d, state.o.len() / BLOCK_Q);
    for i in 0..qb.rows {
        // SAFETY: in bounds by `out_for`; this item owns these columns of this row.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.head_row(n, qb.q0 + i, h), d) };
        // A row with no unmasked score (m = -inf) is fully masked: NaN scores do not rescue it.
        // Otherwise a NaN or +inf score has made `l` NaN, and the row NaN with it.
        let inv = match (state.m[i] == f32::NEG_INFINITY, p.fully_masked) {
            (false, _) => 1.0 / state.l[i],
            (true, FullyMaskedRows::Nan) => f32::NAN,
            (true, FullyMaskedRows::Zero) => {
                zero_attention(p, n, h, dst);
                continue;
            }
        };
        for (x, &acc) in dst.iter_mut().zip(&state.o[i * dp..i * dp + d]) {
            *x = acc * inv;
        }
    }
}

/// One weights work item: query block `index % blocks` of batch element `index / blocks`, all
/// heads.
///
/// # Safety
/// As [`WeightsItem::run`]; `buf` holds at least `weights_scratch_len(head_dim, S')` floats.
#[inline(always)]
unsafe fn weights_item<
    S: Simd,
    const D: usize,
    const QMR: usize,
    const QNV: usize,
    const PMR: usize,
    const PNV: usize,
>(
    simd: S,
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
            pack_keys::<S>(simd, p, KeyRange { n, h, k0, cols }, cols_padded, d, kt);
            // SAFETY: `rows` query rows of `d` floats (`Problem::check`); `kt` is
            // `d × BLOCK_K`; `scores` has `rows` rows of `ld >= k0 + cols_padded` floats.
            unsafe {
                let tile = ScoreTile {
                    d,
                    kt: kt.as_ptr(),
                    ld_kt: BLOCK_K,
                    cols_padded,
                    scores: scores.as_mut_ptr().add(k0),
                    ld,
                    col_max: None,
                };
                qk_tile::<S, D, QMR, QNV>(simd, &q_rows[..rows], tile);
            }
            k0 += BLOCK_K;
        }
        let total_padded = round_up(total, S::LANES);
        for i in 0..rows {
            let row = &mut scores[i * ld..i * ld + total_padded];
            let mask_row = p.mask.as_ref().map(|mask| MaskRow {
                values: mask.row_ptr(n, h, q0 + i),
                padding: mask.padding_ptr(n),
            });
            mask_scores::<S>(simd, p, row, mask_row, q0 + i, 0, total);
            // NaN ignored: a row whose other scores are all -inf is fully masked; otherwise a
            // NaN (or a +inf, through exp(inf - inf)) makes the sum, and so every
            // probability, NaN, as torch's softmax does.
            let max = row_max::<S>(simd, row);
            if max == f32::NEG_INFINITY {
                let fill = match p.fully_masked {
                    FullyMaskedRows::Nan => f32::NAN,
                    FullyMaskedRows::Zero => 0.0,
                };
                row[..total].fill(fill);
                row[total..].fill(0.0);
            } else {
                let sum = exp_row::<S>(simd, row, max);
                scale_row::<S>(simd, row, 1.0 / sum);
            }
            if let (Some(plan), Some(rng)) = (&p.dropout, rng.as_mut()) {
                apply_dropout(plan, rng, (q0 + i) * total, row, 1, total);
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
                // SAFETY: as above, for the averaged `(N, L, S')` weights.
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
            let (v, ld_v) = tile_values(p, KeyRange { n, h, k0, cols }, d, dp, vp);
            // SAFETY: `scores` holds p(i, j) at `i * ld + k0 + j` for `i < rows`, `j < cols`;
            // `tile_values` gives `cols` value rows of `dp` floats; `o` is `BLOCK_Q × dp`.
            unsafe {
                let tile = ValueTile {
                    p: scores.as_ptr().add(k0),
                    p_rs: ld,
                    p_cs: 1,
                    cols,
                    v,
                    ld_v,
                    dp,
                    o: o.as_mut_ptr(),
                    o_scale: None,
                };
                pv_tile::<S, PMR, PNV>(simd, rows, tile);
            }
            k0 += BLOCK_K;
        }
        for i in 0..rows {
            // SAFETY: in bounds by `out_for`; this item owns these rows.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.head_row(n, q0 + i, h), d) };
            dst.copy_from_slice(&o[i * dp..i * dp + d]);
        }
    }
}
