//! The fast forward: packed projections, the fused kernel, the output projection — on a
//! [`PreparedForward`], producing the same [`KernelOutput`] as the reference path.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use ndarray::{s, Array3, ArrayD, ArrayView3, IxDyn};
use rayon::prelude::*;

use super::attention::{self, OutLayout, Problem, SeqRef};
use super::phases::{timed, Phase, Region, Split};
use super::projection::{LinearInput, LinearOutput, PackedLinear};
use super::Isa;
use crate::prepare::{Causal, KernelOutput, MaskRows, PreparedForward, ScoreMask, WeightsMode};
use crate::{InProjection, MultiheadAttentionConfig, Weights};

/// The layer's weights packed for the fast path (built once, on first use) and a reusable
/// workspace for the projected inputs and the attention output.
#[derive(Default)]
pub(crate) struct FastCache {
    packed: OnceLock<PackedWeights>,
    workspace: Mutex<Vec<f32>>,
}

impl Clone for FastCache {
    /// A fresh, empty cache (the clone packs again on first use).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for FastCache {
    /// Caches never make two layers different.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for FastCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastCache")
            .field("packed", &self.packed.get().is_some())
            .finish()
    }
}

/// The input projections: one `E × 3E` weight when `kdim = vdim = E` (so self-attention is one
/// GEMM), else one per input.
enum InputProjections {
    Packed(PackedLinear),
    /// Boxed: three linears are much larger than one.
    Separate(Box<[PackedLinear; 3]>),
}

struct PackedWeights {
    input: InputProjections,
    out: PackedLinear,
    /// `bias_k` then a zero row (as configured), `extra × E`.
    extra_k: Vec<f32>,
    extra_v: Vec<f32>,
}

impl PackedWeights {
    fn new(config: &MultiheadAttentionConfig, weights: &Weights) -> Self {
        let e = config.embed_dim;
        let biases = weights.in_proj_bias.as_ref().map(|b| {
            [
                b.slice(s![0..e]),
                b.slice(s![e..2 * e]),
                b.slice(s![2 * e..3 * e]),
            ]
        });
        let bias = |i: usize| biases.as_ref().map(|b| b[i].view());
        let input = match &weights.in_proj {
            InProjection::Packed(w) => InputProjections::Packed(PackedLinear::concat(&[
                (w.slice(s![0..e, ..]), bias(0)),
                (w.slice(s![e..2 * e, ..]), bias(1)),
                (w.slice(s![2 * e..3 * e, ..]), bias(2)),
            ])),
            InProjection::Separate { q, k, v } => InputProjections::Separate(Box::new([
                PackedLinear::concat(&[(q.view(), bias(0))]),
                PackedLinear::concat(&[(k.view(), bias(1))]),
                PackedLinear::concat(&[(v.view(), bias(2))]),
            ])),
        };
        let out = PackedLinear::concat(&[(
            weights.out_proj_weight.view(),
            weights.out_proj_bias.as_ref().map(|b| b.view()),
        )]);
        let mut extra_k = Vec::new();
        let mut extra_v = Vec::new();
        if config.add_bias_kv {
            if let (Some(bk), Some(bv)) = (&weights.bias_k, &weights.bias_v) {
                extra_k.extend(bk.iter().copied());
                extra_v.extend(bv.iter().copied());
            }
        }
        if config.add_zero_attn {
            extra_k.extend(std::iter::repeat_n(0.0, e));
            extra_v.extend(std::iter::repeat_n(0.0, e));
        }
        Self {
            input,
            out,
            extra_k,
            extra_v,
        }
    }

    /// Bytes of the input and output projections' weights.
    fn weight_bytes(&self) -> usize {
        let input = match &self.input {
            InputProjections::Packed(w) => w.weight_len(),
            InputProjections::Separate(qkv) => qkv.iter().map(PackedLinear::weight_len).sum(),
        };
        (input + self.out.weight_len()) * std::mem::size_of::<f32>()
    }

    /// The linear and its output columns that project query (0), key (1) or value (2).
    fn projection(&self, which: usize, e: usize) -> (&PackedLinear, Range<usize>) {
        match &self.input {
            InputProjections::Packed(w) => (w, which * e..(which + 1) * e),
            InputProjections::Separate(qkv) => (&qkv[which], 0..e),
        }
    }
}

/// A `(N, T, C)` input as `N · T` rows of `C` floats in memory order: row `(n, t)` is
/// `n * batch_rows + t * seq_rows`.
struct Rows<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    batch_rows: usize,
    seq_rows: usize,
    count: usize,
    /// `C`, the floats of a row.
    width: usize,
}

impl<'a> Rows<'a> {
    fn new(view: ArrayView3<'a, f32>) -> Self {
        let (n, t, c) = view.dim();
        let strides = view.strides();
        let (s0, s1, s2) = (strides[0], strides[1], strides[2]);
        let ci = c as isize;
        let dense = if n * t * c == 0 || (c > 1 && s2 != 1) {
            None
        } else if n == 1 && t == 1 {
            Some((0, 0))
        } else if n == 1 {
            (s1 == ci).then_some((0, 1))
        } else if t == 1 {
            (s0 == ci).then_some((1, 0))
        } else if s1 == ci && s0 == ci * t as isize {
            Some((t, 1))
        } else if s0 == ci && s1 == ci * n as isize {
            Some((1, n))
        } else {
            None
        };
        match dense {
            Some((batch_rows, seq_rows)) => {
                // SAFETY: the strides say the view covers exactly n·t·c contiguous floats
                // starting at its first element (all strides non-negative).
                let data = unsafe { std::slice::from_raw_parts(view.as_ptr(), n * t * c) };
                Self {
                    data: std::borrow::Cow::Borrowed(data),
                    batch_rows,
                    seq_rows,
                    count: n * t,
                    width: c,
                }
            }
            None => {
                let owned: Vec<f32> = view.iter().copied().collect();
                Self {
                    data: std::borrow::Cow::Owned(owned),
                    batch_rows: t,
                    seq_rows: 1,
                    count: n * t,
                    width: c,
                }
            }
        }
    }
}

impl Rows<'_> {
    /// Whether the rows of a range of batch elements, `len` positions each, lie contiguously
    /// (batch-major rows, or one position per batch element).
    fn batches_contiguous(&self, len: usize) -> bool {
        (self.seq_rows == 1 && self.batch_rows == len) || (len == 1 && self.batch_rows == 1)
    }

    /// The rows of batch elements `batches` (`len` positions each) as a projection's input:
    /// all rows for the whole batch, else a contiguous range
    /// ([`batches_contiguous`](Self::batches_contiguous)).
    fn of_batches(&self, batches: &Range<usize>, len: usize) -> LinearInput<'_> {
        let (data, rows) = if batches.start == 0 && batches.len() * len == self.count {
            (&self.data[..], self.count)
        } else {
            debug_assert!(self.batches_contiguous(len));
            let (start, rows) = (batches.start * len, batches.len() * len);
            (
                &self.data[start * self.width..(start + rows) * self.width],
                rows,
            )
        };
        LinearInput {
            data,
            rows,
            stride: self.width,
        }
    }
}

/// Whether two views are the same tensor (so one projection GEMM can serve both).
fn same_tensor(a: &ArrayView3<'_, f32>, b: &ArrayView3<'_, f32>) -> bool {
    a.as_ptr() == b.as_ptr() && a.dim() == b.dim() && a.strides() == b.strides()
}

/// A projected operand: the buffer slot, its row width and column offset.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: usize,
    width: usize,
    offset: usize,
}

/// Copies `src` (`n` batches of `len` positions, `heads` heads of `head_dim` features) into
/// `dst` as `(n, head, position, feature)`, one rayon task per `(n, head)`.
fn copy_head_major(
    src: &SeqRef<'_>,
    n: usize,
    len: usize,
    heads: usize,
    head_dim: usize,
    dst: &mut [f32],
) {
    dst[..n * heads * len * head_dim]
        .par_chunks_mut(len * head_dim)
        .enumerate()
        .for_each(|(nh, chunk)| {
            let (b, h) = (nh / heads, nh % heads);
            for (t, row) in chunk.chunks_exact_mut(head_dim).enumerate() {
                let at =
                    src.offset + b * src.batch_stride + t * src.row_stride + h * src.head_stride;
                row.copy_from_slice(&src.data[at..at + head_dim]);
            }
        });
}

/// The operand [`copy_head_major`] wrote.
fn head_major_ref(data: &[f32], len: usize, heads: usize, head_dim: usize) -> SeqRef<'_> {
    SeqRef {
        data,
        offset: 0,
        batch_stride: heads * len * head_dim,
        row_stride: head_dim,
        head_stride: len * head_dim,
    }
}

/// Floats appended to every projected row: a row stride that is a multiple of 2 KiB (3 · 512
/// floats, ...) puts a tile's rows into the same few L1 sets; one cache line more spreads them.
const ROW_PAD: usize = 16;

/// Workspace bytes (projected rows and attention output) of a batch group, which one thread
/// runs whole: half of a Sapphire Rapids core's L2, all of a Zen 4 one's. A call whose
/// workspace is larger runs its three phases per group of batch elements, so the projected rows
/// are still in cache when the attention reads them and its output when the output projection
/// does, instead of a round trip through memory (a quarter of the call for 512 sequences of 16
/// at `E = 128`).
const GROUP_BYTES: usize = 1 << 20;

/// Batch groups only for weights of at most this fraction of a group's workspace: each group
/// reads the weights again (from L2 or L3), which must cost less than the round trip through
/// memory of the workspace it saves. Measured: 512 sequences of 16 at `E = 128` (weights a
/// quarter of the budget) 16 % faster at one thread; a ViT layer (`E = 768`, 9.4 MB of weights,
/// four times a one-sequence group's workspace) 17 % slower when grouped.
const GROUP_WEIGHT_RATIO: usize = 4;

/// Batch groups on several threads only when the busiest thread runs at most
/// `numerator / denominator` (9 / 8) of an equal share: groups are whole batch elements, so 3
/// elements on 2 threads would leave one thread idle a third of the call, where the whole
/// call's phases split evenly.
const GROUP_IMBALANCE: (usize, usize) = (9, 8);

/// Queries at least this many (8 blocks of [`attention::BLOCK_Q`], each reading every key and
/// value tile) make copying keys and values head-major pay off.
const HEAD_MAJOR_MIN_QUERIES: usize = 1024;

/// How a call's batch elements run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// All at once, each phase split over the pool.
    Whole,
    /// In groups of `size` batch elements, each run whole (its three phases inline) by one of
    /// `workers` threads, which take the groups in order as they finish their last one.
    Groups { size: usize, workers: usize },
}

impl Grouping {
    /// Batch elements per group: all `batch` when whole.
    fn size(self, batch: usize) -> usize {
        match self {
            Grouping::Whole => batch,
            Grouping::Groups { size, .. } => size,
        }
    }

    /// Threads that run groups at once, each with a workspace of its own: 1 when whole.
    fn workers(self) -> usize {
        match self {
            Grouping::Whole => 1,
            Grouping::Groups { workers, .. } => workers,
        }
    }
}

/// How an `(n, l, s)` call that can be split by batch element runs on the current pool
/// ([`batch_grouping`]).
fn grouping(
    inputs: &Inputs<'_>,
    packed: &PackedWeights,
    e: usize,
    (n, l, s): (usize, usize, usize),
) -> Grouping {
    let per_batch = (Slots::new(inputs.sharing, e, l, s).len + l * e) * std::mem::size_of::<f32>();
    batch_grouping(
        n,
        per_batch,
        packed.weight_bytes(),
        rayon::current_num_threads(),
    )
}

/// How `n` batch elements of `per_batch` workspace bytes each, with `weight_bytes` of weights,
/// run on `threads` threads: in groups whose workspace fits [`GROUP_BYTES`], as many per thread
/// as that needs (sizes evened out over the threads), or whole when the weights are too large
/// to read once per group ([`GROUP_WEIGHT_RATIO`]), when it all fits one group, or when whole
/// batch elements cannot be shared evenly among the threads ([`GROUP_IMBALANCE`]).
fn batch_grouping(n: usize, per_batch: usize, weight_bytes: usize, threads: usize) -> Grouping {
    let threads = threads.max(1);
    if GROUP_WEIGHT_RATIO * weight_bytes > GROUP_BYTES || n < threads {
        return Grouping::Whole;
    }
    let fit = (GROUP_BYTES / per_batch.max(1)).max(1);
    let per_thread = n.div_ceil(threads).div_ceil(fit);
    let size = n.div_ceil(threads * per_thread);
    // Elements the busiest thread runs at most: `per_thread` groups of `size`.
    let busiest = per_thread * size;
    let (num, den) = GROUP_IMBALANCE;
    if size == n || (threads > 1 && den * threads * busiest > num * n) {
        return Grouping::Whole;
    }
    Grouping::Groups {
        size,
        workers: threads.min(n.div_ceil(size)),
    }
}

/// Which input tensors are the same, and so how many projection GEMMs a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    /// `query`, `key` and `value` are one tensor: one `E × 3E` GEMM.
    SelfAttention,
    /// `key` and `value` are one tensor: a query GEMM and one `E × 2E` GEMM.
    SharedKeyValue,
    /// Three GEMMs.
    Separate,
}

/// The call's inputs as projection rows.
struct Inputs<'a> {
    sharing: Sharing,
    query: Rows<'a>,
    /// `None` when it is the query's rows.
    key: Option<Rows<'a>>,
    /// `None` when it is the key's (or the query's) rows.
    value: Option<Rows<'a>>,
}

impl<'a> Inputs<'a> {
    fn new(prepared: &PreparedForward<'a>, packed: &PackedWeights) -> Self {
        let (query, key, value) = (prepared.query(), prepared.key(), prepared.value());
        let packed_in = matches!(packed.input, InputProjections::Packed(_));
        let sharing = if packed_in && same_tensor(&query, &key) && same_tensor(&key, &value) {
            Sharing::SelfAttention
        } else if packed_in && same_tensor(&key, &value) {
            Sharing::SharedKeyValue
        } else {
            Sharing::Separate
        };
        let (key, value) = match sharing {
            Sharing::SelfAttention => (None, None),
            Sharing::SharedKeyValue => (Some(Rows::new(key)), None),
            Sharing::Separate => (Some(Rows::new(key)), Some(Rows::new(value))),
        };
        Self {
            sharing,
            query: Rows::new(query),
            key,
            value,
        }
    }

    /// Whether every input's rows can be split by batch element ([`Rows::batches_contiguous`]).
    fn batches_contiguous(&self, l: usize, s: usize) -> bool {
        self.query.batches_contiguous(l)
            && self.key.as_ref().is_none_or(|k| k.batches_contiguous(s))
            && self.value.as_ref().is_none_or(|v| v.batches_contiguous(s))
    }

    /// `(batch_rows, seq_rows)` of the query, key and value rows.
    fn layouts(&self) -> [(usize, usize); 3] {
        let of = |r: &Rows<'_>| (r.batch_rows, r.seq_rows);
        let q = of(&self.query);
        let k = self.key.as_ref().map_or(q, of);
        let v = self.value.as_ref().map_or(k, of);
        [q, k, v]
    }
}

/// Where a call's projected query, key and value live in the workspace, and its size.
#[derive(Debug, Clone, Copy)]
struct Slots {
    q: Slot,
    k: Slot,
    v: Slot,
    /// Floats of the projection region.
    len: usize,
}

impl Slots {
    /// Self-attention: one row of `[q | k | v]`; shared key / value: rows of `q` then rows of
    /// `[k | v]`; else three regions. Rows are padded by [`ROW_PAD`].
    fn new(sharing: Sharing, e: usize, mq: usize, mk: usize) -> Self {
        let slot = |start, width, offset| Slot {
            start,
            width,
            offset,
        };
        match sharing {
            Sharing::SelfAttention => {
                let w = 3 * e + ROW_PAD;
                Self {
                    q: slot(0, w, 0),
                    k: slot(0, w, e),
                    v: slot(0, w, 2 * e),
                    len: mq * w,
                }
            }
            Sharing::SharedKeyValue => {
                let (qw, kvw) = (e + ROW_PAD, 2 * e + ROW_PAD);
                Self {
                    q: slot(0, qw, 0),
                    k: slot(mq * qw, kvw, 0),
                    v: slot(mq * qw, kvw, e),
                    len: mq * qw + mk * kvw,
                }
            }
            Sharing::Separate => {
                let w = e + ROW_PAD;
                Self {
                    q: slot(0, w, 0),
                    k: slot(mq * w, w, 0),
                    v: slot((mq + mk) * w, w, 0),
                    len: (mq + 2 * mk) * w,
                }
            }
        }
    }
}

/// One call's plan: its sizes, inputs and workspace slots.
struct Plan<'a> {
    batch: usize,
    /// `L`.
    q_len: usize,
    /// `S`.
    src_len: usize,
    embed_dim: usize,
    heads: usize,
    head_dim: usize,
    inputs: Inputs<'a>,
    slots: Slots,
    /// Keys and values copied head-major before attention.
    head_major: bool,
    /// The output in torch's sequence-first layout `(L, N, E)`.
    seq_first: bool,
    /// Whole, or in batch groups ([`GROUP_BYTES`]).
    grouping: Grouping,
}

impl<'a> Plan<'a> {
    /// `None` for what the fast path does not cover (empty inputs or no keys at all).
    fn new(
        config: &MultiheadAttentionConfig,
        prepared: &PreparedForward<'a>,
        packed: &PackedWeights,
    ) -> Option<Self> {
        let (e, heads) = (config.embed_dim, config.num_heads);
        let head_dim = e / heads.max(1);
        let (n, l, s) = (
            prepared.batch_size(),
            prepared.tgt_len(),
            prepared.src_len(),
        );
        if n == 0 || l == 0 || prepared.total_src_len() == 0 || head_dim == 0 {
            return None;
        }
        let inputs = timed(Phase::Pack, || Inputs::new(prepared, packed));
        let head_major = s > 0 && l >= HEAD_MAJOR_MIN_QUERIES;
        let seq_first = prepared.batched() && !config.batch_first;
        let splittable = !head_major
            && !seq_first
            && prepared.weights_mode() == WeightsMode::None
            && prepared.dropout().is_none()
            && inputs.batches_contiguous(l, s);
        let grouping = if splittable {
            grouping(&inputs, packed, e, (n, l, s))
        } else {
            Grouping::Whole
        };
        let group = grouping.size(n);
        let slots = Slots::new(inputs.sharing, e, group * l, group * s);
        Some(Self {
            batch: n,
            q_len: l,
            src_len: s,
            embed_dim: e,
            heads,
            head_dim,
            inputs,
            slots,
            head_major,
            seq_first,
            grouping,
        })
    }

    /// Batch elements per group (`batch` when whole).
    fn group(&self) -> usize {
        self.grouping.size(self.batch)
    }

    /// Query rows of a group, `group · L`.
    fn query_rows(&self) -> usize {
        self.group() * self.q_len
    }

    /// Key rows of a group, `group · S`.
    fn key_rows(&self) -> usize {
        self.group() * self.src_len
    }

    /// The groups of batch elements, in order.
    fn groups(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let group = self.group();
        (0..self.batch)
            .step_by(group)
            .map(move |n0| n0..self.batch.min(n0 + group))
    }

    /// Floats of workspace (one group's): projections, attention output, head-major keys and
    /// values.
    fn workspace_len(&self) -> usize {
        let head_major = if self.head_major {
            2 * self.key_rows() * self.embed_dim
        } else {
            0
        };
        self.slots.len + self.query_rows() * self.embed_dim + head_major
    }

    /// The input projections of batch elements `batches` into the projection region.
    fn project(
        &self,
        packed: &PackedWeights,
        proj: &mut [f32],
        batches: &Range<usize>,
        split: Split,
    ) {
        let e = self.embed_dim;
        let (l, s) = (self.q_len, self.src_len);
        let run =
            |rows: LinearInput<'_>, which: usize, slot: Slot, width: usize, proj: &mut [f32]| {
                let (linear, cols) = packed.projection(which, e);
                debug_assert_eq!(rows.stride, linear.in_dim());
                linear.apply(
                    &rows,
                    cols.start..cols.start + width,
                    &mut LinearOutput {
                        data: &mut proj[slot.start..],
                        stride: slot.width,
                        col: slot.offset,
                    },
                    (Phase::QkvProjection, split),
                );
            };
        let Inputs {
            sharing,
            query,
            key,
            value,
        } = &self.inputs;
        let slots = &self.slots;
        match (sharing, key, value) {
            (Sharing::SelfAttention, _, _) => {
                run(query.of_batches(batches, l), 0, slots.q, 3 * e, proj)
            }
            (Sharing::SharedKeyValue, Some(key), _) => {
                run(query.of_batches(batches, l), 0, slots.q, e, proj);
                run(key.of_batches(batches, s), 1, slots.k, 2 * e, proj);
            }
            (Sharing::Separate, Some(key), Some(value)) => {
                run(query.of_batches(batches, l), 0, slots.q, e, proj);
                run(key.of_batches(batches, s), 1, slots.k, e, proj);
                run(value.of_batches(batches, s), 2, slots.v, e, proj);
            }
            _ => unreachable!("Inputs::new gives separate rows for every unshared input"),
        }
    }

    /// The projected operand in `slot`, rows laid out as `(batch_rows, seq_rows)`.
    fn operand<'p>(&self, proj: &'p [f32], slot: Slot, layout: (usize, usize)) -> SeqRef<'p> {
        SeqRef {
            data: &proj[slot.start..],
            offset: slot.offset,
            batch_stride: layout.0 * slot.width,
            row_stride: layout.1 * slot.width,
            head_stride: self.head_dim,
        }
    }

    /// The attention output's rows in torch's layout: `(batch_rows, seq_rows)` in rows of `E`.
    fn out_layout(&self) -> (usize, usize) {
        if self.seq_first {
            (1, self.batch)
        } else {
            (self.q_len, 1)
        }
    }
}

/// The call's workspace, split into its regions.
struct Regions<'w> {
    proj: &'w mut [f32],
    attn_out: &'w mut [f32],
    k_heads: &'w mut [f32],
    v_heads: &'w mut [f32],
}

impl<'w> Regions<'w> {
    fn new(buf: &'w mut [f32], plan: &Plan<'_>) -> Self {
        let heads_len = if plan.head_major {
            plan.key_rows() * plan.embed_dim
        } else {
            0
        };
        let (proj, rest) = buf.split_at_mut(plan.slots.len);
        let (attn_out, rest) = rest.split_at_mut(plan.query_rows() * plan.embed_dim);
        let (k_heads, rest) = rest.split_at_mut(heads_len);
        Self {
            proj,
            attn_out,
            k_heads,
            v_heads: &mut rest[..heads_len],
        }
    }
}

/// Runs the fast path, or `None` for what it does not cover (empty inputs or no keys at all),
/// which the caller sends to the reference path. `HEAD_DIM` is a compile-time head
/// dimension for the kernels' inner loops; 0, or a value that is not the layer's head
/// dimension, uses the dynamic kernels (64 gets its own).
///
/// A plan (inputs, workspace slots), then three phases: project, attend, out-project, for all
/// batch elements at once or per batch group ([`Grouping`]).
pub(crate) fn run<const HEAD_DIM: usize>(
    cache: &FastCache,
    config: &MultiheadAttentionConfig,
    weights: &Weights,
    prepared: &PreparedForward<'_>,
    isa: Isa,
) -> Option<KernelOutput> {
    let packed = cache
        .packed
        .get_or_init(|| PackedWeights::new(config, weights));
    let plan = Plan::new(config, prepared, packed)?;

    let mut guard = cache.workspace.try_lock().ok();
    let mut local = Vec::new();
    let buf: &mut Vec<f32> = match guard.as_deref_mut() {
        Some(shared) => shared,
        None => &mut local,
    };
    let group_len = plan.workspace_len();
    let workers = plan.grouping.workers();
    if buf.len() < workers * group_len {
        timed(Phase::Pack, || buf.resize(workers * group_len, 0.0));
    }
    let (n, l, e) = (plan.batch, plan.q_len, plan.embed_dim);
    let mut output = vec![0.0f32; n * l * e];
    let call = GroupCall {
        plan: &plan,
        packed,
        prepared,
        isa,
    };
    let weights_out = match plan.grouping {
        Grouping::Whole => call.run::<HEAD_DIM>(buf, 0..n, &mut output, Split::Pool),
        Grouping::Groups { .. } => {
            // Workers take the next group's output rows (contiguous: groups are batch-first
            // only) and a workspace each; the locks are taken once per group.
            let groups = Mutex::new(output.chunks_mut(plan.group() * l * e).zip(plan.groups()));
            let workspaces = Mutex::new(buf.chunks_mut(group_len));
            let split = Split::Inline {
                concurrent: workers,
            };
            let region = Region::start(Split::Pool);
            region.for_each(workers, |_| {
                let Some(workspace) = next_shared(&workspaces) else {
                    return;
                };
                while let Some((out, batches)) = next_shared(&groups) {
                    call.run::<HEAD_DIM>(workspace, batches, out, split);
                }
            });
            region.finish_idle(workers);
            // Weights are returned only by calls that run whole.
            None
        }
    };
    // Rows are in torch's layout already: a sequence-first output is a view permuted back.
    let output = if plan.seq_first {
        Array3::from_shape_vec((l, n, e), output)
            .ok()?
            .permuted_axes([1, 0, 2])
    } else {
        Array3::from_shape_vec((n, l, e), output).ok()?
    };
    Some(KernelOutput {
        output,
        weights: weights_out,
    })
}

/// The next item of an iterator that threads share. A lock poisoned by a panicking holder is
/// taken over: the panic reaches the caller through rayon anyway, and an iterator's `next` leaves
/// it whole.
fn next_shared<I: Iterator>(shared: &Mutex<I>) -> Option<I::Item> {
    shared.lock().unwrap_or_else(PoisonError::into_inner).next()
}

/// What every group of a call shares.
#[derive(Clone, Copy)]
struct GroupCall<'c, 'a> {
    plan: &'c Plan<'a>,
    packed: &'c PackedWeights,
    prepared: &'c PreparedForward<'a>,
    isa: Isa,
}

impl GroupCall<'_, '_> {
    /// The three phases of batch elements `batches` (the whole call or one group) in
    /// `workspace`, their output rows written to `out`; returns the attention weights.
    fn run<const HEAD_DIM: usize>(
        self,
        workspace: &mut [f32],
        batches: Range<usize>,
        out: &mut [f32],
        split: Split,
    ) -> Option<ArrayD<f32>> {
        let (plan, packed) = (self.plan, self.packed);
        let regions = Regions::new(workspace, plan);
        plan.project(packed, regions.proj, &batches, split);
        let weights = attend::<HEAD_DIM>(
            plan,
            packed,
            self.prepared,
            self.isa,
            regions,
            &batches,
            split,
        );
        let (rows, e) = (batches.len() * plan.q_len, plan.embed_dim);
        let attn_out: &[f32] = &workspace[plan.slots.len..][..rows * e];
        packed.out.apply(
            &LinearInput {
                data: attn_out,
                rows,
                stride: e,
            },
            0..e,
            &mut LinearOutput {
                data: out,
                stride: e,
                col: 0,
            },
            (Phase::OutProjection, split),
        );
        weights
    }
}

/// The attention phase of batch elements `batches`: head-major copies if planned, then the flash
/// kernel (no weights) or the weights kernel, writing the attention output in torch's layout;
/// returns the weights.
fn attend<const HEAD_DIM: usize>(
    plan: &Plan<'_>,
    packed: &PackedWeights,
    prepared: &PreparedForward<'_>,
    isa: Isa,
    regions: Regions<'_>,
    batches: &Range<usize>,
    split: Split,
) -> Option<ArrayD<f32>> {
    let Regions {
        proj,
        attn_out,
        k_heads,
        v_heads,
    } = regions;
    let proj: &[f32] = proj;
    let (n, s, heads, head_dim) = (batches.len(), plan.src_len, plan.heads, plan.head_dim);
    let [q_layout, k_layout, v_layout] = plan.inputs.layouts();
    let q = plan.operand(proj, plan.slots.q, q_layout);
    let k = plan.operand(proj, plan.slots.k, k_layout);
    let v = plan.operand(proj, plan.slots.v, v_layout);
    let scale = (1.0 / head_dim as f64).sqrt() as f32;
    let scores = ScoreBound {
        q: &q,
        k: &k,
        batches,
        q_len: plan.q_len,
        src_len: s,
        width: plan.embed_dim,
        head_dim,
        scale,
    };
    let mut written_out = None;
    let (mask, causal) = kernel_mask(prepared, &scores, split, &mut written_out);
    // For long queries, keys and values copied head-major (each head's rows contiguous): the
    // kernels then read a tile's rows `head_dim` floats apart instead of a projection row apart.
    let (k, v) = if plan.head_major {
        timed(Phase::LayoutCopy, || {
            copy_head_major(&k, n, s, heads, head_dim, k_heads);
            copy_head_major(&v, n, s, heads, head_dim, v_heads);
        });
        (
            head_major_ref(k_heads, s, heads, head_dim),
            head_major_ref(v_heads, s, heads, head_dim),
        )
    } else {
        (k, v)
    };

    let problem = Problem {
        batch: n,
        heads,
        head_dim,
        q_len: plan.q_len,
        src_len: s,
        q,
        k,
        v,
        extra_k: &packed.extra_k,
        extra_v: &packed.extra_v,
        mask,
        causal,
        scale,
        fully_masked: prepared.fully_masked_rows(),
        dropout: prepared.dropout(),
    };
    let e = plan.embed_dim;
    let (batch_rows, seq_rows) = plan.out_layout();
    let out = AttentionOut {
        data: attn_out,
        layout: OutLayout::rows(batch_rows * e, seq_rows * e, head_dim),
    };
    match prepared.weights_mode() {
        WeightsMode::None => {
            kernels::<HEAD_DIM>(isa, &problem, out, None, split);
            None
        }
        mode => {
            let per_head = mode == WeightsMode::PerHead;
            let shape = if per_head {
                vec![n, heads, plan.q_len, problem.total_keys()]
            } else {
                vec![n, plan.q_len, problem.total_keys()]
            };
            let mut w = vec![0.0f32; shape.iter().product()];
            kernels::<HEAD_DIM>(isa, &problem, out, Some((&mut w, per_head)), split);
            ArrayD::from_shape_vec(IxDyn(&shape), w).ok()
        }
    }
}

/// The mask the kernels read for batch elements `batches`, and whether they run causal. A
/// causal-triangle `attn_mask` with padding ([`Causal::Mask`]) runs as the kernels' causal mode
/// when no hidden score plus its padding can reach `+inf` or NaN (adding `-inf` to it gives
/// `-inf` then, as the causal mode's `-inf` in its place does); otherwise the triangle is written
/// out, into `written_out`.
fn kernel_mask<'m>(
    prepared: &'m PreparedForward<'_>,
    scores: &ScoreBound<'_, '_>,
    split: Split,
    written_out: &'m mut Option<ScoreMask<'static>>,
) -> (Option<MaskRows<'m>>, bool) {
    let batches = scores.batches;
    let at_batch = |m: &'m ScoreMask<'_>| m.rows().starting_at_batch(batches.start);
    match prepared.causal() {
        Causal::Off => (prepared.mask().map(at_batch), false),
        Causal::Hint => (prepared.mask().map(at_batch), true),
        Causal::Mask => {
            let padding = prepared.mask();
            if scores.hidden_stay_minus_inf(padding, split) {
                (padding.map(at_batch), true)
            } else {
                let triangle = written_out.insert(match padding {
                    Some(padding) => padding.with_causal_triangle(batches, scores.q_len),
                    None => ScoreMask::causal_triangle(scores.q_len, scores.src_len),
                });
                (Some(triangle.rows()), false)
            }
        }
    }
}

/// The projected queries and keys of a group (batch elements `batches`, `q_len` and `src_len`
/// rows of `width` floats each), which bound its scores `q · k · scale`.
struct ScoreBound<'a, 'p> {
    q: &'a SeqRef<'p>,
    k: &'a SeqRef<'p>,
    batches: &'a Range<usize>,
    q_len: usize,
    src_len: usize,
    width: usize,
    head_dim: usize,
    scale: f32,
}

impl ScoreBound<'_, '_> {
    /// Whether every score plus its padding (`padding`, for the group's batch elements, if any)
    /// stays below `+inf` and is not NaN, so that adding `-inf` gives `-inf`: queries and keys
    /// finite, the padding without NaN or `+inf`, and `head_dim · max|q| · max|k| · scale +
    /// max|padding|` under half of `f32::MAX` (room for the rounding of the dot products).
    fn hidden_stay_minus_inf(&self, padding: Option<&ScoreMask<'_>>, split: Split) -> bool {
        let (Some(q), Some(k)) = (
            self.max_abs(self.q, self.q_len, split),
            self.max_abs(self.k, self.src_len, split),
        ) else {
            return false;
        };
        let Some(pad) = padding.map_or(Some(0.0), |p| p.max_abs_without_nan_or_inf(self.batches))
        else {
            return false;
        };
        let bound = self.head_dim as f64 * f64::from(q) * f64::from(k) * f64::from(self.scale)
            + f64::from(pad);
        bound < f64::from(f32::MAX) / 2.0
    }

    /// The largest `|x|` of `x`'s rows, `None` when one is not finite. Absolute values of
    /// floats order as their bit patterns do (`+inf` and NaN above every finite one), so the
    /// rows reduce by an integer maximum.
    fn max_abs(&self, x: &SeqRef<'_>, len: usize, split: Split) -> Option<f32> {
        let max_bits = AtomicU32::new(0);
        let region = Region::start(split);
        region.for_each(self.batches.len(), |b| {
            let rows = (0..len)
                .map(|t| &x.data[x.offset + b * x.batch_stride + t * x.row_stride..][..self.width]);
            let bits = rows.flatten().fold(0u32, |m, v| m.max(v.abs().to_bits()));
            max_bits.fetch_max(bits, Ordering::Relaxed);
        });
        region.finish(Phase::Attention, self.batches.len());
        let max = f32::from_bits(max_bits.into_inner());
        max.is_finite().then_some(max)
    }
}

/// Where the attention output goes: rows of `E` in torch's layout ([`OutLayout::rows`]).
struct AttentionOut<'o> {
    data: &'o mut [f32],
    layout: OutLayout,
}

/// The head-size dispatch: kernels compiled for the head dimension `HEAD_DIM` when it is the
/// problem's, the `64` kernels for head dimension 64, else the dynamic ones.
fn kernels<const HEAD_DIM: usize>(
    isa: Isa,
    problem: &Problem<'_>,
    out: AttentionOut<'_>,
    weights: Option<(&mut [f32], bool)>,
    split: Split,
) {
    let d = problem.head_dim;
    if HEAD_DIM != 0 && HEAD_DIM == d {
        kernels_for::<HEAD_DIM>(isa, problem, out, weights, split);
    } else if d == 64 {
        kernels_for::<64>(isa, problem, out, weights, split);
    } else {
        kernels_for::<0>(isa, problem, out, weights, split);
    }
}

fn kernels_for<const D: usize>(
    isa: Isa,
    problem: &Problem<'_>,
    out: AttentionOut<'_>,
    weights: Option<(&mut [f32], bool)>,
    split: Split,
) {
    let AttentionOut { data, layout } = out;
    match weights {
        // Fewer work units than threads (one long sequence, a decode step): split the keys.
        None => match super::key_chunk(problem, split.threads()) {
            Some(chunk) => super::flash_split_keys::<D>(isa, problem, data, layout, chunk),
            None => attention::flash::<D>(isa, problem, data, layout, split),
        },
        Some((w, per_head)) => {
            debug_assert_eq!(split, Split::Pool, "calls that return weights run whole");
            attention::with_weights::<D>(isa, problem, data, layout, w, per_head)
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use crate::fast::Isa;
    use crate::{
        AttentionOutput, ForwardOptions, Mask, MultiheadAttention, MultiheadAttentionConfig,
    };

    fn input(shape: &[usize], seed: u32) -> ArrayD<f32> {
        let mut state = seed;
        ArrayD::from_shape_simple_fn(IxDyn(shape), || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
    }

    /// Runs `f` on a new rayon pool of `threads` threads.
    fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    fn assert_close(got: &AttentionOutput, want: &AttentionOutput) {
        for (g, w) in got.output.iter().zip(want.output.iter()) {
            let same = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 + 1e-4 * w.abs();
            assert!(same, "{g} vs {w}");
        }
        assert_eq!(got.weights.is_some(), want.weights.is_some());
        if let (Some(gw), Some(ww)) = (&got.weights, &want.weights) {
            for (g, w) in gw.iter().zip(ww.iter()) {
                assert!((g - w).abs() <= 1e-6 + 1e-4 * w.abs(), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn long_queries_with_head_major_keys_match_the_reference() {
        // L >= HEAD_MAJOR_MIN_QUERIES (not a whole number of query blocks): self-attention
        // (batch-first, head_dim 16: values read in place), and separate key / value tensors
        // (sequence-first, bias_k and a zero key, a key-padding mask, weights returned).
        let len = super::HEAD_MAJOR_MIN_QUERIES + 37;
        let layer = MultiheadAttention::random(
            MultiheadAttentionConfig::new(16, 1).with_batch_first(true),
            4,
        )
        .unwrap();
        let x = input(&[1, len, 16], 1);
        let opts = ForwardOptions::default().with_need_weights(false);
        let want = layer
            .forward_reference(x.view(), x.view(), x.view(), &opts)
            .unwrap();
        for isa in Isa::supported() {
            let got = layer
                .forward_with_isa(x.view(), x.view(), x.view(), &opts, isa)
                .unwrap();
            assert_close(&got, &want);
        }

        let config = MultiheadAttentionConfig::new(12, 3)
            .with_add_bias_kv(true)
            .with_add_zero_attn(true);
        let layer = MultiheadAttention::random(config, 5).unwrap();
        let (src, batch) = (40, 2);
        let q = input(&[len, batch, 12], 2);
        let k = input(&[src, batch, 12], 3);
        let v = input(&[src, batch, 12], 4);
        let padding = ArrayD::from_shape_fn(IxDyn(&[batch, src]), |i| i[1] % 7 == 3);
        let opts = ForwardOptions::default().with_key_padding_mask(Mask::Bool(padding.view()));
        let want = layer
            .forward_reference(q.view(), k.view(), v.view(), &opts)
            .unwrap();
        for isa in Isa::supported() {
            let got = layer
                .forward_with_isa(q.view(), k.view(), v.view(), &opts, isa)
                .unwrap();
            assert_close(&got, &want);
        }
    }

    #[test]
    fn batch_groups_fit_the_workspace_and_share_evenly() {
        use super::{batch_grouping, Grouping, GROUP_BYTES};
        let groups = |size, workers| Grouping::Groups { size, workers };
        // 512 sequences of 16 at E = 128: 33 KiB each, 256 KiB of weights.
        let (per_batch, weights) = (16 * (3 * 128 + 16 + 128) * 4, 256 << 10);
        assert_eq!(batch_grouping(512, per_batch, weights, 1), groups(31, 1));
        assert_eq!(batch_grouping(512, per_batch, weights, 2), groups(29, 2));
        assert_eq!(batch_grouping(512, per_batch, weights, 16), groups(16, 16));
        // Fits one group on one thread; shared evenly on two.
        assert_eq!(batch_grouping(8, per_batch, weights, 1), Grouping::Whole);
        assert_eq!(batch_grouping(8, per_batch, weights, 2), groups(4, 2));
        // Groups of one element when one element is larger than a group's workspace.
        assert_eq!(batch_grouping(3, 2 * GROUP_BYTES, weights, 1), groups(1, 1));
        // Whole: uneven shares (3 on 2 threads, 9 on 8), fewer elements than threads,
        // weights above a quarter of a group's workspace.
        assert_eq!(batch_grouping(3, per_batch, weights, 2), Grouping::Whole);
        assert_eq!(batch_grouping(9, per_batch, weights, 8), Grouping::Whole);
        assert_eq!(batch_grouping(4, per_batch, weights, 8), Grouping::Whole);
        assert_eq!(
            batch_grouping(512, per_batch, weights + 4, 1),
            Grouping::Whole
        );
        // 9 and 8 elements on 2 threads is even enough; 2 and 1 on 9 threads (10 elements) not.
        assert_eq!(
            batch_grouping(17, 2 * GROUP_BYTES, weights, 2),
            groups(1, 2)
        );
        assert_eq!(
            batch_grouping(10, 2 * GROUP_BYTES, weights, 9),
            Grouping::Whole
        );
    }

    #[test]
    fn batch_groups_match_the_reference() {
        // Many short batch-first sequences with small weights run group by group: self-attention
        // with a key padding mask and a per-(batch, head) float mask, causal, `bias_k` / `bias_v`
        // and a zero key with a padding mask, and separate key and value tensors with S != L
        // (kdim / vdim), causal with padding (finite, and with an infinity in one batch element),
        // on 1, 3 and 8 threads (several groups each; on 3 and 8, groups run in parallel).
        let (batch, len, src) = (200, 64, 48);
        let self_attn = MultiheadAttention::random(
            MultiheadAttentionConfig::new(16, 2).with_batch_first(true),
            11,
        )
        .unwrap();
        let cross = MultiheadAttention::random(
            MultiheadAttentionConfig::new(16, 2)
                .with_batch_first(true)
                .with_kdim(Some(8))
                .with_vdim(Some(12)),
            12,
        )
        .unwrap();
        let extra_keys = MultiheadAttention::random(
            MultiheadAttentionConfig::new(16, 2)
                .with_batch_first(true)
                .with_add_bias_kv(true)
                .with_add_zero_attn(true),
            13,
        )
        .unwrap();
        let x = input(&[batch, len, 16], 5);
        let k = input(&[batch, src, 8], 6);
        let v = input(&[batch, src, 12], 7);
        let padding = ArrayD::from_shape_fn(IxDyn(&[batch, len]), |i| i[1] + i[0] % 9 >= len);
        let per_head = input(&[batch * 2, len, len], 8);
        let causal = crate::generate_square_subsequent_mask(len).into_dyn();
        let no_weights = ForwardOptions::default().with_need_weights(false);
        let masked = no_weights
            .clone()
            .with_key_padding_mask(Mask::Bool(padding.view()))
            .with_attn_mask(Mask::Float(per_head.view()));
        let causal = no_weights
            .clone()
            .with_attn_mask(Mask::Float(causal.view()))
            .with_is_causal(true);
        let padded = no_weights
            .clone()
            .with_key_padding_mask(Mask::Bool(padding.view()));
        // The causal triangle with padding stays causal structure; with the keys of `poisoned`
        // (an infinity in one batch element: NaN scores, hidden from most queries, that the
        // merged mask turns into NaN rows) that element's group writes the triangle out.
        let causal_padded = causal
            .clone()
            .with_key_padding_mask(Mask::Bool(padding.view()));
        let mut poisoned = x.clone();
        poisoned[[150, 40, 3]] = f32::INFINITY;
        let cases = [
            (&self_attn, &x, x.view(), x.view(), &masked),
            (&self_attn, &x, x.view(), x.view(), &causal),
            (&extra_keys, &x, x.view(), x.view(), &padded),
            (&cross, &x, k.view(), v.view(), &no_weights),
            (&self_attn, &x, x.view(), x.view(), &causal_padded),
            (&self_attn, &x, poisoned.view(), x.view(), &causal_padded),
        ];
        for (layer, x, key, value, opts) in cases {
            let want = layer
                .forward_reference(x.view(), key.clone(), value.clone(), opts)
                .unwrap();
            for threads in [1, 3, 8] {
                on_threads(threads, || {
                    let prepared = layer
                        .prepare(x.view(), key.clone(), value.clone(), opts)
                        .unwrap();
                    let packed = super::PackedWeights::new(layer.config(), layer.weights());
                    let plan = super::Plan::new(layer.config(), &prepared, &packed).unwrap();
                    assert!(plan.groups().count() > 1, "{threads} threads: one group");
                    assert!(matches!(plan.grouping, super::Grouping::Groups { .. }));
                    assert_eq!(plan.grouping.workers(), threads);
                    for isa in Isa::supported() {
                        let got = layer
                            .forward_with_isa(x.view(), key.clone(), value.clone(), opts, isa)
                            .unwrap();
                        assert_close(&got, &want);
                    }
                });
            }
        }
    }

    #[test]
    fn every_thread_count_matches_the_reference() {
        // Causal with an even (4) and an odd (3) number of query blocks (paired items, the
        // middle block alone), sequence-first with a padding mask and averaged weights, a
        // projection big enough to split into a grid: on 1, 3 and 8 threads.
        let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(64, 4), 7).unwrap();
        for len in [3 * 128 + 5, 300] {
            let x = input(&[len, 2, 64], len as u32);
            let causal = crate::generate_square_subsequent_mask(len).into_dyn();
            let padding = ArrayD::from_shape_fn(IxDyn(&[2, len]), |i| i[1] >= len - 9 * i[0]);
            let cases = [
                ForwardOptions::default()
                    .with_need_weights(false)
                    .with_attn_mask(Mask::Float(causal.view()))
                    .with_is_causal(true),
                ForwardOptions::default().with_key_padding_mask(Mask::Bool(padding.view())),
            ];
            for opts in &cases {
                let want = layer
                    .forward_reference(x.view(), x.view(), x.view(), opts)
                    .unwrap();
                for threads in [1, 3, 8] {
                    let got = on_threads(threads, || {
                        layer.forward(x.view(), x.view(), x.view(), opts)
                    })
                    .unwrap();
                    assert_close(&got, &want);
                }
            }
        }
    }
}
