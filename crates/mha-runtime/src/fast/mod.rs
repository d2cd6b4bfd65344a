//! The fast path: fused, tiled attention kernels and packed-weight projections behind the same
//! API as the exact reference path
//! ([`forward_reference`](crate::MultiheadAttention::forward_reference)), which stays the
//! oracle. Public here: the instruction-set selection ([`Isa`], [`selected_isa`],
//! [`force_isa`]) and the phase timing ([`phase_times`]); the rest describes how `forward`
//! works.
//!
//! - Projections run with the weights packed once per layer (`W_q, W_k, W_v` concatenated so
//!   self-attention is one GEMM; key and value share one when they are the same tensor): blocks
//!   of up to 256 rows on an own AVX-512 panel GEMM (bias in its accumulators), larger ones on
//!   the `gemm` crate; the caller's rows read in place (any batch / sequence order), the result
//!   written once into the workspace or the output.
//! - Without weights (`need_weights=false`) a flash-style kernel with online softmax works per
//!   `(batch, head, block of 128 queries)`: the block is packed once as `Qᵀ`, scores are
//!   computed transposed (`K Qᵀ`, 64 keys per tile) so keys and values are read in place (from
//!   projection rows padded by one cache line, or, for 1024 queries or more, from a head-major
//!   copy), and the softmax runs along the vector lanes. The `L × S` scores are never materialised; masks
//!   and causal structure are applied tile by tile and fully masked tiles are skipped. With
//!   weights, a second kernel per `(batch, query block)` writes the probabilities it returns.
//! - A call is a plan (inputs, workspace slots) and three phases: project, attend,
//!   out-project (`forward`); the attention output is written in torch's layout, so a
//!   sequence-first call needs no final permute and copy. A batch-first call of many short
//!   sequences with small weights (no weights returned, no dropout) runs the three phases per
//!   group of batch elements whose workspace fits a core's L2 (1 MiB), each group whole on one
//!   thread, so projected rows and attention output never make a round trip through memory. `MHA_PHASE_TIMES=1` times the phases
//!   ([`phase_times`]).
//! - Work items reuse a thread-local scratch buffer and the layer keeps a workspace for the
//!   projections, so steady-state calls allocate only what they return.
//! - Kernels are compiled for AVX-512, AVX2 + FMA and portable Rust and picked at run time
//!   ([`selected_isa`]); they run on a capability token that only the CPU's feature detection
//!   can make (as in `pulp`), so safe code cannot run an instruction the CPU lacks; [`force_isa`], the `MHA_FAST_ISA` environment variable (`avx512`,
//!   `avx2`, `portable`) or [`MultiheadAttention::forward_with_isa`](crate::MultiheadAttention::forward_with_isa)
//!   choose a level for the attention kernels (the projections pick theirs once per layer).
//! - Training-mode dropout uses the reference path's draws (ChaCha8, one per probability), so
//!   both paths drop the same probabilities.

//!
//! # Threads: the rule, for 1 to 64
//!
//! One parallel region per phase, never nested (a work item runs single-threaded code), on the
//! caller's rayon pool; every region splits into units of about equal cost, as many as pay:
//!
//! - **Projections** (`projection`): a grid of `row_tasks × col_tasks` blocks of the output,
//!   one per thread, fewer when a block would fall under about 2 M multiply-adds (tens of
//!   microseconds: dispatch and the block's own packing stay at a few percent); rows are split
//!   only into blocks of more than 64 (at most `⌈rows / 128⌉` row tasks: the `gemm` crate
//!   reads the weight unpacked, and slower, for 64 rows or fewer). Of the grids
//!   with that many blocks, the one that moves least (`2 · col_tasks · rows + row_tasks ·
//!   width`: each task reads its weight columns, and reads and packs its input rows), i.e.
//!   about square blocks: at 16 threads a `4096 × 1536` QKV output is 8 × 2 blocks of
//!   512 × 768, at 64 threads a `2048 × 3072` one 8 × 8; a decode step's 8 rows are split by
//!   columns only; at 2 threads a `1024 × 1536` output is split by rows. Equal blocks, so one
//!   round.
//! - **Attention** (`attention`): flash items are `(batch, head, block of 128 queries)`,
//!   independent and equal in cost without a causal mask; with one, query block `b` reads
//!   `b + 1` key blocks, so block `b` runs with block `blocks - 1 - b` of the same head as one
//!   unit: `B · H · ⌈blocks / 2⌉` units of equal cost (a causal L = 4096, H = 8 call has 128,
//!   enough for 64 threads). Fully masked tiles are skipped inside the items. Rayon's work
//!   stealing absorbs what is left (padding masks, a busy core).
//! - **Copies** (head-major keys and values for long queries): one task per `(batch, head)`.
//! - **Batch groups** (many short sequences, small weights): one region for the whole call;
//!   each thread takes the next group and runs its three phases inline, on its own 1 MiB
//!   workspace, so there is no barrier between phases and a thread that finishes early (or
//!   another process holding a core) is made up by the others. Groups are sized so that each
//!   thread gets an equal number of about equal groups; a call whose batch elements cannot be
//!   shared about evenly (3 on 2 threads, fewer than the threads) runs whole instead, each
//!   phase split as above.
//! - Workspaces (the layer's projection buffer, each thread's kernel scratch) are reused across
//!   calls, so more threads cost no allocation per call.

mod attention;
#[doc(hidden)]
pub mod bench_support;
mod forward;
mod isa;
mod layer_api;
#[cfg(target_arch = "x86_64")]
mod panel_gemm;
mod phases;
mod projection;
mod simd;
mod split_keys;

#[cfg(test)]
mod kernel_tests;

pub(crate) use attention::{flash, OutLayout, Problem, SeqRef};
pub(crate) use forward::FastCache;
pub use isa::{force_isa, selected_isa, Isa, UnsupportedIsa};
pub(crate) use phases::Split;
pub use phases::{phase_times, reset_phase_times, Phase};
pub(crate) use split_keys::{flash_split_keys, key_chunk};
