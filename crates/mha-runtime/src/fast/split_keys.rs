//! The flash kernel with each query block's keys split across threads, for calls with fewer
//! `(batch, head, query block)` items than the pool has threads: a decode step (`L = 1`) against
//! a long `S` with few heads, a long causal row on many cores.
//!
//! Strategy: the keys a query block sees are cut into chunks of whole key tiles
//! ([`key_chunk`]); every `(item, chunk)` runs the flash tile loop
//! ([`flash_keys`]) alone and leaves its partial state — the
//! unnormalised output `o_c`, the running maximum `m_c` and the sum `l_c` of
//! `exp(s - max(m_c, f32::MIN))` — in a workspace. A second pass merges each item's chunks the
//! way the online softmax merges two tiles:
//!
//! ```text
//! m = max_c m_c        base = max(m, f32::MIN)        w_c = exp(max(m_c, f32::MIN) - base)
//! l = Σ_c w_c · l_c    o = Σ_c w_c · o_c              out = o / l
//! ```
//!
//! The rule (the same as the single pass, so every dispatch path follows torch on non-finite
//! input): `m` ignores NaN, so `m = -inf` still means no key took part and the row gets the
//! fully-masked policy; a NaN in some `l_c` or `o_c` (a NaN or `+inf` score, a `0 · inf` value)
//! survives its weight, even a weight of 0, as it survives the single pass's rescaling.

use super::attention::{
    finish_rows, flash_keys, flash_scratch_len, out_for, query_block, round_up, run_blocked,
    visible_keys, with_scratch, BlockState, BlockedOp, OutLayout, Problem, QueryBlock, SeqOut,
    BLOCK_K, BLOCK_Q,
};
use super::isa::Level;
use super::phases::{Phase, Region, Split};
use super::simd::{exp_scalar, Simd};
use super::Isa;

/// The fewest keys a chunk gets. A chunk packs its query block (`rows · d`) and is merged
/// (`rows · d` multiply-adds), against `rows · chunk · d · 4` flops of attention: at 512 keys the
/// overheads are under 0.2% of a chunk, and the chunk still runs eight whole key tiles.
const MIN_CHUNK_KEYS: usize = 8 * BLOCK_K;

/// Chunks per thread the split aims at: more than one, so rayon's stealing can even out chunks
/// that cost more (a causal block's diagonal tile, a busy core).
const CHUNKS_PER_THREAD: usize = 2;

/// The chunk length (a multiple of [`BLOCK_K`]) that gives `threads` threads about
/// [`CHUNKS_PER_THREAD`] chunks each, or `None` when the call has enough items for the threads
/// already (or too few keys to split): then [`flash`](super::attention::flash) is the kernel.
pub(crate) fn key_chunk(problem: &Problem<'_>, threads: usize) -> Option<usize> {
    let blocks = problem.q_len.div_ceil(BLOCK_Q);
    let items = problem.batch * problem.heads * blocks;
    // `flash` runs a causal call's blocks in pairs of equal cost: units, not items, are what
    // the threads share.
    let units = if problem.causal {
        problem.batch * problem.heads * blocks.div_ceil(2)
    } else {
        items
    };
    let total = problem.total_keys();
    if units >= threads || total < 2 * MIN_CHUNK_KEYS {
        return None;
    }
    // Keys visited over all items: all of them, or with a causal mask about half.
    let work = if problem.causal {
        problem.batch * problem.heads * (blocks * total).div_ceil(2)
    } else {
        items * total
    };
    let chunk = round_up(work.div_ceil(CHUNKS_PER_THREAD * threads), BLOCK_K);
    Some(chunk.max(MIN_CHUNK_KEYS))
}

/// Floats of one chunk's partial state: `rows_max × d` output, then `rows_max` maxima and
/// `rows_max` sums.
fn partial_len(rows_max: usize, d: usize) -> usize {
    rows_max * (d + 2)
}

/// The chunks' partial states, written by the chunk pass (each `(item, chunk)` its own slot).
#[derive(Clone, Copy)]
struct Partials {
    ptr: *mut f32,
}

impl Partials {
    /// Slot `unit` of `slot` floats (a method, so closures capture the whole `Sync` value).
    fn slot(self, unit: usize, slot: usize) -> *mut f32 {
        self.ptr.wrapping_add(unit * slot)
    }
}

// SAFETY: the chunk pass writes disjoint slots (one per `(item, chunk)`); the merge pass only
// reads, after the chunk pass has finished.
unsafe impl Send for Partials {}
// SAFETY: as for `Send`.
unsafe impl Sync for Partials {}

/// The flash kernel with each query block's keys split into chunks of `chunk` keys (a multiple
/// of [`BLOCK_K`], e.g. from [`key_chunk`]): the same `out` as
/// [`flash`](super::attention::flash), to rounding.
pub(crate) fn flash_split_keys<const HEAD_DIM: usize>(
    isa: Isa,
    problem: &Problem<'_>,
    out: &mut [f32],
    layout: OutLayout,
    chunk: usize,
) {
    problem.check();
    assert!(HEAD_DIM == 0 || HEAD_DIM == problem.head_dim);
    assert!(chunk > 0 && chunk.is_multiple_of(BLOCK_K));
    let out = out_for(problem, out, layout);
    let level = Level::or_portable(isa);
    let blocks = problem.q_len.div_ceil(BLOCK_Q);
    let items = problem.batch * problem.heads * blocks;
    let chunks = problem.total_keys().div_ceil(chunk);
    let (d, rows_max) = (problem.head_dim, problem.q_len.min(BLOCK_Q));
    let slot = partial_len(rows_max, d);
    let mut partials = vec![0.0f32; items * chunks * slot];
    let partials_at = Partials {
        ptr: partials.as_mut_ptr(),
    };
    let scratch = flash_scratch_len(d);
    let region = Region::start(Split::Pool);
    region.for_each(items * chunks, |unit| {
        with_scratch(scratch, |buf| {
            let op = ChunkOp::<HEAD_DIM> {
                p: problem,
                index: unit / chunks,
                keys: (unit % chunks) * chunk..(unit % chunks + 1) * chunk,
                // Slot `unit` of the `items · chunks` slots.
                dst: partials_at.slot(unit, slot),
                rows_max,
                buf,
            };
            // SAFETY: `problem` passed `check`; each unit writes its own slot.
            unsafe { run_chunk(level, op) }
        })
    });
    let partials = &partials;
    region.for_each(items, |index| {
        let state = &partials[index * chunks * slot..(index + 1) * chunks * slot];
        merge_item(problem, index, state, chunks, rows_max, out);
    });
    region.finish(Phase::Attention, items * chunks);
}

/// One chunk: the keys `keys` of flash item `index`, its state written to `dst`.
struct ChunkOp<'a, 'p, const D: usize> {
    p: &'a Problem<'p>,
    index: usize,
    keys: std::ops::Range<usize>,
    dst: *mut f32,
    rows_max: usize,
    buf: &'a mut [f32],
}

/// Runs `op` on `level`'s instructions with that level's register blocking.
///
/// # Safety
/// `op.p` passed [`Problem::check`], `op.buf` holds `flash_scratch_len(head_dim)` floats, and
/// `op.dst` points to a slot of [`partial_len`]`(rows_max, head_dim)` writable floats no other
/// thread touches.
unsafe fn run_chunk<const D: usize>(level: Level, op: ChunkOp<'_, '_, D>) {
    // SAFETY: the op's contract is the caller's.
    unsafe { run_blocked(level, op) }
}

impl<const D: usize> BlockedOp for ChunkOp<'_, '_, D> {
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
        let ChunkOp {
            p,
            index,
            keys,
            dst,
            rows_max,
            buf,
        } = self;
        let qb = query_block::<S, D>(p, index);
        let (n, h) = (qb.outer / p.heads, qb.outer % p.heads);
        let end = keys.end.min(visible_keys::<S>(simd, p, n, h, &qb));
        let (d, rows) = (qb.d, qb.rows);
        // SAFETY: `dst` holds this slot's `rows_max · (d + 2)` floats (`run_chunk`'s contract).
        let dst = unsafe { std::slice::from_raw_parts_mut(dst, partial_len(rows_max, d)) };
        let (o_dst, rest) = dst.split_at_mut(rows_max * d);
        let (m_dst, l_dst) = rest.split_at_mut(rows_max);
        if keys.start >= end {
            // Nothing visible here: the state of no keys.
            m_dst[..rows].fill(f32::NEG_INFINITY);
            l_dst[..rows].fill(0.0);
            o_dst[..rows * d].fill(0.0);
            return;
        }
        // SAFETY: `run_chunk`'s contract; `keys.start` is a multiple of BLOCK_K and
        // `end <= S'`.
        let state = unsafe {
            flash_keys::<S, D, QMR, QNV, PMR, PNV>(simd, p, n, h, &qb, keys.start..end, buf)
        };
        let dp = state.o.len() / BLOCK_Q;
        for i in 0..rows {
            o_dst[i * d..(i + 1) * d].copy_from_slice(&state.o[i * dp..i * dp + d]);
        }
        m_dst[..rows].copy_from_slice(&state.m[..rows]);
        l_dst[..rows].copy_from_slice(&state.l[..rows]);
    }
}

/// Merges item `index`'s `chunks` partial states (see the module doc) and writes its rows.
fn merge_item(
    p: &Problem<'_>,
    index: usize,
    partials: &[f32],
    chunks: usize,
    rows_max: usize,
    out: SeqOut,
) {
    let blocks = p.q_len.div_ceil(BLOCK_Q);
    let q0 = (index % blocks) * BLOCK_Q;
    let d = p.head_dim;
    let qb = QueryBlock {
        d,
        dp: d,
        outer: index / blocks,
        q0,
        rows: BLOCK_Q.min(p.q_len - q0),
        total: p.total_keys(),
    };
    let (n, h) = (qb.outer / p.heads, qb.outer % p.heads);
    let slot = partial_len(rows_max, d);
    let part = |c: usize| {
        let s = &partials[c * slot..(c + 1) * slot];
        let (o, rest) = s.split_at(rows_max * d);
        let (m, l) = rest.split_at(rows_max);
        (o, m, l)
    };
    // `finish_rows` reads `o` rows `o.len() / BLOCK_Q` apart: a BLOCK_Q × d merged block.
    let mut o = vec![0.0f32; BLOCK_Q * d];
    let mut m = vec![f32::NEG_INFINITY; qb.rows];
    let mut l = vec![0.0f32; qb.rows];
    for i in 0..qb.rows {
        // NaN-free maxima (the tile loop's max ignores NaN), so `>` finds the largest.
        let m_all = (0..chunks).fold(f32::NEG_INFINITY, |acc, c| {
            let mc = part(c).1[i];
            if mc > acc {
                mc
            } else {
                acc
            }
        });
        let base = m_all.max(f32::MIN);
        let row = &mut o[i * d..(i + 1) * d];
        let mut sum = 0.0f32;
        for c in 0..chunks {
            let (oc, mc, lc) = part(c);
            let w = exp_scalar(mc[i].max(f32::MIN) - base);
            sum += w * lc[i];
            for (x, &y) in row.iter_mut().zip(&oc[i * d..(i + 1) * d]) {
                *x += w * y;
            }
        }
        m[i] = m_all;
        l[i] = sum;
    }
    let state = BlockState {
        o: &o,
        m: &m,
        l: &l,
    };
    finish_rows(p, n, h, &qb, &state, out);
}
