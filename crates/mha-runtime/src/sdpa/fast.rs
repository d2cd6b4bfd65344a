//! `scaled_dot_product_attention` on the fast path: the flash kernel `MultiheadAttention` uses
//! (online softmax, no `L × S` matrix), given the inputs in place.
//!
//! Strategy: one kernel call per flattened batch index `b` of the leading dimensions (all but the
//! head axis). Within it the kernel's "batch" is the key/value head `j` and its "heads" are the
//! `group = Hq / Hkv` query heads that share it, so grouped-query attention, a broadcast query
//! head and broadcast key/value batches are strides (0 where broadcast), never copies: query
//! head `j·group + hh` of batch `b` reads key/value head `j`, torch's `repeat_interleave`.
//! The kernel writes the output in place: its head `hh` of batch `j` at the output's head
//! `j·group + hh` (a head stride of `L·E`, rows `E` apart).
//!
//! Folding: without causal structure, and with a mask that is the same for the group's heads or
//! follows their `(head, query)` rows, the `group` query heads of key/value head `j` are one
//! head of `group · L` queries (rows `hh·L + t`, contiguous in the query and in the output). The
//! kernel then reads each key once per group instead of once per query head and fills its
//! query lanes: a decode step (`L = 1`) of grouped-query attention is `group` queries, not
//! `group` one-query problems.
//!
//! Left to the reference path: `Ev != E` (the kernel has one head size), an empty axis, and
//! dropout (the kernel numbers its generator streams by head within one call, the op by the
//! flattened index of every leading dimension).
//!
//! Non-finite input needs no pass of its own: the kernel follows the reference's rule on every
//! instruction set (a NaN or `+inf` score makes its row NaN, a row with no unmasked score is 0
//! even when some of its scores are NaN, a hidden or masked key still adds `0 · v`; the attention
//! module doc), which the property test of NaN and ±inf inputs against the reference checks on
//! the folded, grouped, causal, masked and split-key paths. (Scanning the inputs for NaN first,
//! as this module once did, was a second pass over the keys and values: 38 % of a one-query
//! decode step against 4096 keys.)

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, CowArray, IxDyn};

use super::call::{unravel, LeadMap, SdpaCall};
use crate::fast::{flash, flash_split_keys, key_chunk, Isa, OutLayout, Problem, SeqRef, Split};
use crate::prepare::{FullyMaskedRows, MaskRows};

/// A contiguous input and how to find its block for one batch index.
struct Operand<'a> {
    data: Cow<'a, [f32]>,
    /// Heads in the input's own head axis (1 without one).
    heads: usize,
    /// Floats per own batch index: `heads · rows · cols`.
    block: usize,
    map: &'a LeadMap,
}

impl<'a> Operand<'a> {
    fn new(t: &'a ArrayViewD<'a, f32>, map: &'a LeadMap) -> Self {
        let data = match t.as_slice() {
            Some(slice) => Cow::Borrowed(slice),
            None => Cow::Owned(t.iter().copied().collect()),
        };
        let shape = t.shape();
        let rank = shape.len();
        let heads = if rank >= 3 { shape[rank - 3] } else { 1 };
        Self {
            data,
            heads,
            block: heads * shape[rank - 2] * shape[rank - 1],
            map,
        }
    }

    /// The offset of the block of the output's leading index `out` (its head index ignored).
    fn offset(&self, out: &[usize], at: &mut Vec<usize>) -> usize {
        self.map.index(out, at);
        let batch_dims = self.map.dims.len().saturating_sub(1);
        let flat = at[..batch_dims]
            .iter()
            .zip(&self.map.dims[..batch_dims])
            .fold(0, |acc, (&i, &d)| acc * d + i);
        flat * self.block
    }

    /// With `kv_heads` heads: as it is when it has 1 (shared) or `kv_heads`, else each head
    /// repeated `kv_heads / heads` times (torch's `repeat_interleave`).
    fn widen(self, kv_heads: usize) -> Self {
        if self.heads == 1 || self.heads == kv_heads {
            return self;
        }
        let times = kv_heads / self.heads;
        let per_head = self.block / self.heads;
        let data: Vec<f32> = self
            .data
            .chunks(per_head)
            .flat_map(|head| std::iter::repeat_n(head, times).flatten())
            .copied()
            .collect();
        Self {
            data: Cow::Owned(data),
            heads: kv_heads,
            block: self.block * times,
            map: self.map,
        }
    }

    /// Key/value head `j` of the block of `out` (every `j` the same head when there is one).
    fn kv_ref(&self, out: &[usize], at: &mut Vec<usize>, rows: usize, e: usize) -> SeqRef<'_> {
        SeqRef {
            data: self.data.as_ref(),
            offset: self.offset(out, at),
            batch_stride: if self.heads == 1 { 0 } else { rows * e },
            row_stride: e,
            head_stride: 0,
        }
    }

    /// Query head `j·group + hh` of the block of `out` (all the same head when there is one).
    fn query_ref(
        &self,
        out: &[usize],
        at: &mut Vec<usize>,
        l: usize,
        e: usize,
        group: usize,
    ) -> SeqRef<'_> {
        let shared = self.heads == 1;
        SeqRef {
            data: self.data.as_ref(),
            offset: self.offset(out, at),
            batch_stride: if shared { 0 } else { group * l * e },
            row_stride: e,
            head_stride: if shared { 0 } else { l * e },
        }
    }
}

/// The call on the flash kernel of `isa`, or `None` for what the module docs leave to the
/// reference path.
pub(super) fn run(call: &SdpaCall<'_>, isa: Isa) -> Option<ArrayD<f32>> {
    let (l, s, ev) = call.sizes();
    let e = call.query.shape()[call.query.ndim() - 1];
    let lead = &call.lead;
    let hq = lead.last().copied().unwrap_or(1);
    let batches: usize = lead.iter().rev().skip(1).product();
    let empty = l == 0 || s == 0 || e == 0 || hq == 0 || batches == 0;
    if ev != e || empty || call.dropout.is_some() {
        return None;
    }
    let q = Operand::new(&call.query, &call.q_map);
    let (k, v) = (
        Operand::new(&call.key, &call.k_map),
        Operand::new(&call.value, &call.v_map),
    );
    // The key/value heads the kernel sees: the lcm of the two counts (each divides Hq).
    let kv_heads = lcm(k.heads, v.heads);
    let group = hq / kv_heads;
    let (k, v) = (k.widen(kv_heads), v.widen(kv_heads));
    let mask = call.mask.as_ref().map(|m| MaskOperand::new(m, s));

    let fold =
        group > 1 && q.heads == hq && !call.causal && mask.as_ref().is_none_or(|m| m.folds(hq, l));
    let block = hq * l * e;
    let mut out = vec![0.0f32; batches * block];
    // The kernel's row (j, t) of head hh is the output's row t of query head j·group + hh.
    let heads_apart = OutLayout {
        batch_stride: group * l * e,
        row_stride: e,
        head_stride: l * e,
    };
    let mut index = vec![0usize; lead.len()];
    let mut at = Vec::new();
    for (b, dst) in out.chunks_mut(block).enumerate() {
        if !lead.is_empty() {
            unravel(b * hq, lead, &mut index);
        }
        let mut problem = Problem {
            batch: kv_heads,
            heads: group,
            head_dim: e,
            q_len: l,
            src_len: s,
            q: q.query_ref(&index, &mut at, l, e, group),
            k: k.kv_ref(&index, &mut at, s, e),
            v: v.kv_ref(&index, &mut at, s, e),
            extra_k: &[],
            extra_v: &[],
            mask: mask.as_ref().map(|m| m.rows(&index, group)),
            causal: call.causal,
            scale: call.scale,
            fully_masked: FullyMaskedRows::Zero,
            dropout: None,
        };
        if fold {
            problem.heads = 1;
            problem.q_len = group * l;
            problem.q.head_stride = 0;
            if let Some(m) = problem.mask.as_mut() {
                // Rows (hh, t) of a (Hq, L) or (Hq, 1 = L) mask are consecutive; (1, 1) is shared.
                m.row_stride = if m.head_stride == 0 { 0 } else { s };
                m.head_stride = 0;
            }
            // Row hh·L + t of the folded head is the output's row t of query head j·group + hh.
            run_flash(isa, &problem, dst, OutLayout::rows(group * l * e, e, e));
        } else {
            run_flash(isa, &problem, dst, heads_apart);
        }
    }
    let mut shape = lead.clone();
    shape.extend([l, e]);
    Some(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("batches · Hq · L · E values"))
}

/// The flash kernel, with the head size a compile-time constant where it is a common one; with
/// each query block's keys split across threads when the call has fewer query blocks than the
/// pool has threads (a decode step with few key/value heads on many cores).
fn run_flash(isa: Isa, problem: &Problem<'_>, out: &mut [f32], layout: OutLayout) {
    match (
        key_chunk(problem, rayon::current_num_threads()),
        problem.head_dim,
    ) {
        (None, 64) => flash::<64>(isa, problem, out, layout, Split::Pool),
        (None, 128) => flash::<128>(isa, problem, out, layout, Split::Pool),
        (None, _) => flash::<0>(isa, problem, out, layout, Split::Pool),
        (Some(chunk), 64) => flash_split_keys::<64>(isa, problem, out, layout, chunk),
        (Some(chunk), 128) => flash_split_keys::<128>(isa, problem, out, layout, chunk),
        (Some(chunk), _) => flash_split_keys::<0>(isa, problem, out, layout, chunk),
    }
}

/// The additive mask, contiguous over `S` (a broadcast key axis expanded), its other broadcast
/// axes kept at 1.
struct MaskOperand<'m> {
    values: CowArray<'m, f32, IxDyn>,
}

impl<'m> MaskOperand<'m> {
    /// The mask as it is when it is contiguous with a full key axis (no copy); else a
    /// contiguous copy with the key axis expanded.
    fn new(mask: &'m CowArray<'_, f32, IxDyn>, s: usize) -> Self {
        let mut shape = mask.shape().to_vec();
        let last = shape.len() - 1;
        shape[last] = s;
        let view = mask
            .broadcast(IxDyn(&shape))
            .expect("the mask's key axis is S or 1");
        let values = if view.is_standard_layout() {
            CowArray::from(view)
        } else {
            CowArray::from(view.as_standard_layout().into_owned())
        };
        Self { values }
    }

    /// Whether the rows of a group's query heads can be read as one head's `group · L` rows:
    /// the mask is `(1, 1)` over (head, query), or `(Hq, L)`, or `(Hq, 1)` with `L = 1`.
    fn folds(&self, hq: usize, l: usize) -> bool {
        let shape = self.values.shape();
        let rank = shape.len();
        let hm = if rank >= 3 { shape[rank - 3] } else { 1 };
        let lm = shape[rank - 2];
        (hm == 1 && lm == 1) || (hm == hq && (lm == l || l == 1))
    }

    /// The kernel's rows for batch index `out`: row `(j, hh, i)` is query head `j·group + hh`.
    fn rows(&self, out: &[usize], group: usize) -> MaskRows<'_> {
        let shape = self.values.shape();
        let rank = shape.len();
        let (hm, lm, s) = if rank >= 3 {
            (shape[rank - 3], shape[rank - 2], shape[rank - 1])
        } else {
            (1, shape[rank - 2], shape[rank - 1])
        };
        // The flat offset of this batch index's (Hm, Lm, S) block.
        let mut start = 0;
        let mut stride = hm * lm * s;
        for axis in (0..rank.saturating_sub(3)).rev() {
            let i = if shape[axis] == 1 { 0 } else { out[axis] };
            start += i * stride;
            stride *= shape[axis];
        }
        let per_head = if hm == 1 { 0 } else { lm * s };
        let data = self.values.as_slice().expect("standard layout");
        MaskRows {
            data: &data[start..],
            batch_stride: group * per_head,
            head_stride: per_head,
            row_stride: if lm == 1 { 0 } else { s },
            padding: None,
        }
    }
}

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}

#[cfg(test)]
mod tests {
    use ndarray::ArrayD;

    use super::{lcm, run};
    use crate::fast::Isa;
    use crate::sdpa::{call::SdpaCall, SdpaOptions};

    #[test]
    fn lcm_of_head_counts() {
        assert_eq!(lcm(2, 4), 4);
        assert_eq!(lcm(1, 3), 3);
        assert_eq!(lcm(4, 6), 12);
    }

    /// The kernel takes what it covers; the rest goes to the reference path.
    #[test]
    fn what_runs_on_the_kernel() {
        let covered = |q: &[usize], k: &[usize], v: &[usize], options: &SdpaOptions<'_>| {
            let (q, k, v) = (
                ArrayD::<f32>::ones(q.to_vec()),
                ArrayD::<f32>::ones(k.to_vec()),
                ArrayD::<f32>::ones(v.to_vec()),
            );
            let call = SdpaCall::new(q.view(), k.view(), v.view(), options).unwrap();
            run(&call, Isa::Portable).is_some()
        };
        let plain = SdpaOptions::default();
        let gqa = SdpaOptions::default().with_enable_gqa(true);
        assert!(covered(
            &[2, 8, 5, 16],
            &[2, 2, 7, 16],
            &[2, 2, 7, 16],
            &gqa
        ));
        assert!(covered(
            &[2, 8, 5, 16],
            &[1, 2, 7, 16],
            &[2, 4, 7, 16],
            &gqa
        ));
        assert!(covered(&[5, 16], &[7, 16], &[7, 16], &plain));
        assert!(covered(
            &[3, 1, 5, 16],
            &[1, 4, 7, 16],
            &[1, 4, 7, 16],
            &plain
        ));
        assert!(!covered(
            &[2, 4, 5, 16],
            &[2, 4, 7, 16],
            &[2, 4, 7, 8],
            &plain
        ));
        assert!(!covered(
            &[2, 4, 5, 16],
            &[2, 4, 0, 16],
            &[2, 4, 0, 16],
            &plain
        ));
        let dropout = SdpaOptions::default().with_dropout(0.5, 1);
        assert!(!covered(
            &[2, 4, 5, 16],
            &[2, 4, 7, 16],
            &[2, 4, 7, 16],
            &dropout
        ));
    }
}
