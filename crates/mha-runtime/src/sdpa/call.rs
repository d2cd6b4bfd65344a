//! One `scaled_dot_product_attention` call, checked (torch's refusals) and normalised: the
//! broadcast leading dimensions, how each input is indexed from them, one additive mask.

use ndarray::{Array3, ArrayD, ArrayView2, ArrayViewD, Axis, CowArray, Ix2, IxDyn};

use super::{SdpaMask, SdpaOptions};
use crate::prepare::{Causal, DropoutPlan, FullyMaskedRows};
use crate::reference::{self, HeadAttention};
use crate::MhaError;

/// How an input's leading dimensions are indexed from the output's.
#[derive(Debug, Clone)]
pub(super) struct LeadMap {
    /// The input's leading dimensions (all but the last two).
    pub(super) dims: Vec<usize>,
    /// The output has this many more leading dimensions (they are broadcast).
    offset: usize,
    /// Grouped-query attention: the last leading (head) index is divided by this.
    group: usize,
}

impl LeadMap {
    /// The input's leading index for the output's leading index `out`.
    pub(super) fn index(&self, out: &[usize], at: &mut Vec<usize>) {
        at.clear();
        let last = self.dims.len().wrapping_sub(1);
        for (i, &d) in self.dims.iter().enumerate() {
            let o = out[i + self.offset];
            at.push(if d == 1 {
                0
            } else if i == last {
                o / self.group
            } else {
                o
            });
        }
    }
}

/// A checked call (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct SdpaCall<'a> {
    pub(super) query: ArrayViewD<'a, f32>,
    pub(super) key: ArrayViewD<'a, f32>,
    pub(super) value: ArrayViewD<'a, f32>,
    pub(super) q_map: LeadMap,
    pub(super) k_map: LeadMap,
    pub(super) v_map: LeadMap,
    /// The output's leading dimensions.
    pub(super) lead: Vec<usize>,
    /// Additive, rank `lead.len() + 2`, each axis full or 1 (a float mask borrowed, not copied).
    pub(super) mask: Option<CowArray<'a, f32, IxDyn>>,
    pub(super) causal: bool,
    pub(super) scale: f32,
    pub(super) dropout: Option<DropoutPlan>,
}

fn leading(shape: &[usize]) -> &[usize] {
    &shape[..shape.len() - 2]
}

impl<'a> SdpaCall<'a> {
    pub(crate) fn new<'m: 'a>(
        query: ArrayViewD<'a, f32>,
        key: ArrayViewD<'a, f32>,
        value: ArrayViewD<'a, f32>,
        options: &SdpaOptions<'m>,
    ) -> Result<Self, MhaError> {
        for (name, t, form) in [
            ("query", &query, "(..., L, E)"),
            ("key", &key, "(..., S, E)"),
            ("value", &value, "(..., S, Ev)"),
        ] {
            if t.ndim() < 2 {
                return Err(MhaError::rank(
                    name,
                    format!("at least 2-D {form}"),
                    t.ndim(),
                ));
            }
        }
        let (qs, ks, vs) = (query.shape(), key.shape(), value.shape());
        let (l, e) = (qs[qs.len() - 2], qs[qs.len() - 1]);
        let s = ks[ks.len() - 2];
        if ks[ks.len() - 1] != e {
            return Err(MhaError::shape(
                "key",
                format!("(..., S, E) with the query's E = {e}"),
                ks,
            ));
        }
        if vs[vs.len() - 2] != s {
            return Err(MhaError::shape(
                "value",
                format!("(..., S, Ev) with the key's S = {s}"),
                vs,
            ));
        }
        let (k_group, v_group) = if options.enable_gqa {
            gqa_groups(qs, ks, vs)?
        } else {
            (1, 1)
        };

        // Broadcast the leading dimensions, the key/value head axes counted as Hq under GQA.
        let as_query_heads = |shape: &[usize], group: usize| -> Vec<usize> {
            let mut dims = leading(shape).to_vec();
            if let Some(h) = dims.last_mut() {
                *h *= group;
            }
            dims
        };
        let q_lead = leading(qs).to_vec();
        let k_lead = as_query_heads(ks, k_group);
        let v_lead = as_query_heads(vs, v_group);
        let rank = q_lead.len().max(k_lead.len()).max(v_lead.len());
        let mut lead = vec![1usize; rank];
        for dims in [&q_lead, &k_lead, &v_lead] {
            for (i, &d) in dims.iter().enumerate() {
                let slot = &mut lead[i + rank - dims.len()];
                if *slot == 1 {
                    *slot = d;
                }
            }
        }
        for (name, dims, shape) in [("key", &k_lead, ks), ("value", &v_lead, vs)] {
            let fits = dims
                .iter()
                .enumerate()
                .all(|(i, &d)| d == 1 || d == lead[i + rank - dims.len()]);
            let fits_query = q_lead
                .iter()
                .enumerate()
                .all(|(i, &d)| d == 1 || d == lead[i + rank - q_lead.len()]);
            if !fits || !fits_query {
                let hint = if options.enable_gqa {
                    ""
                } else {
                    " (set enable_gqa for grouped-query attention)"
                };
                return Err(MhaError::shape(
                    name,
                    format!(
                        "leading dimensions {:?} that broadcast with the query's {q_lead:?}{hint}",
                        leading(shape)
                    ),
                    shape,
                ));
            }
        }
        let map = |shape: &[usize], group: usize| LeadMap {
            dims: leading(shape).to_vec(),
            offset: rank - leading(shape).len(),
            group,
        };

        if options.is_causal && options.attn_mask.is_some() {
            return Err(MhaError::InvalidArgument {
                argument: "is_causal",
                message: "explicit attn_mask should not be set when is_causal=True (torch's \
                          refusal)"
                    .into(),
            });
        }
        let mut scores_shape = lead.clone();
        scores_shape.extend([l, s]);
        let mask = match &options.attn_mask {
            Some(m) => Some(additive_mask(m, &scores_shape)?),
            None => None,
        };
        let dropout = dropout_plan(options)?;
        let scale = options.scale.unwrap_or(1.0 / (e as f64).sqrt()) as f32;
        Ok(Self {
            q_map: map(qs, 1),
            k_map: map(ks, k_group),
            v_map: map(vs, v_group),
            query,
            key,
            value,
            lead,
            mask,
            causal: options.is_causal,
            scale,
            dropout,
        })
    }

    /// `L`, `S`, `Ev`.
    pub(super) fn sizes(&self) -> (usize, usize, usize) {
        let (qs, vs) = (self.query.shape(), self.value.shape());
        (qs[qs.len() - 2], vs[vs.len() - 2], vs[vs.len() - 1])
    }

    /// The output's shape `(..., Hq, L, Ev)`.
    pub(crate) fn output_shape(&self) -> Vec<usize> {
        let (l, _, ev) = self.sizes();
        let mut shape = self.lead.clone();
        shape.extend([l, ev]);
        shape
    }

    /// Runs every `(leading index)` head through the reference core.
    pub(crate) fn run_reference(&self) -> ArrayD<f32> {
        let (l, _, ev) = self.sizes();
        let heads: usize = self.lead.iter().product();
        let mut out = Array3::<f32>::zeros((heads, l, ev));
        let mut index = vec![0usize; self.lead.len()];
        let mut at = Vec::new();
        for (flat, mut dst) in out.outer_iter_mut().enumerate() {
            unravel(flat, &self.lead, &mut index);
            let head = HeadAttention {
                query: matrix(&self.query, &self.q_map, &index, &mut at),
                key: matrix(&self.key, &self.k_map, &index, &mut at),
                value: matrix(&self.value, &self.v_map, &index, &mut at),
                scale: self.scale,
                mask: self.mask.as_ref().map(|m| mask_matrix(m, &index)),
                causal: if self.causal {
                    Causal::Hint
                } else {
                    Causal::Off
                },
                fully_masked_rows: FullyMaskedRows::Zero,
                dropout: self.dropout.map(|plan| (plan, flat as u64)),
            };
            dst.assign(&reference::attend(&head).0);
        }
        out.into_shape_with_order(IxDyn(&self.output_shape()))
            .expect("the output holds prod(leading) * L * Ev values")
    }
}

/// `enable_gqa`: the key and value head groups `Hq / Hk`, `Hq / Hv`.
fn gqa_groups(qs: &[usize], ks: &[usize], vs: &[usize]) -> Result<(usize, usize), MhaError> {
    if qs.len() < 3 || ks.len() < 3 || vs.len() < 3 {
        return Err(MhaError::InvalidArgument {
            argument: "enable_gqa",
            message: format!(
                "grouped-query attention needs a heads dimension: query, key and value of at \
                 least 3-D (..., H, L, E), got {}-D, {}-D and {}-D",
                qs.len(),
                ks.len(),
                vs.len()
            ),
        });
    }
    let hq = qs[qs.len() - 3];
    let group = |h: usize| (h > 0 && hq.is_multiple_of(h)).then(|| hq / h);
    let (hk, hv) = (ks[ks.len() - 3], vs[vs.len() - 3]);
    match (group(hk), group(hv)) {
        (Some(gk), Some(gv)) => Ok((gk, gv)),
        _ => Err(MhaError::InvalidArgument {
            argument: "enable_gqa",
            message: format!(
                "the number of heads in key ({hk}) and value ({hv}) must divide the number of \
                 heads in query ({hq})"
            ),
        }),
    }
}

/// The mask as an additive f32 array of rank `scores.len()`, each axis full or 1: a float mask
/// as it is (a view), a bool mask converted.
fn additive_mask<'a>(
    mask: &SdpaMask<'a>,
    scores: &[usize],
) -> Result<CowArray<'a, f32, IxDyn>, MhaError> {
    let shape = mask.shape();
    if shape.len() < 2 {
        return Err(MhaError::rank(
            "attn_mask",
            "at least 2-D (..., L, S), as torch requires",
            shape.len(),
        ));
    }
    let fits = shape.len() <= scores.len()
        && shape
            .iter()
            .zip(&scores[scores.len() - shape.len()..])
            .all(|(&m, &t)| m == 1 || m == t);
    if !fits {
        return Err(MhaError::shape(
            "attn_mask",
            format!("a shape that broadcasts to (..., Hq, L, S) = {scores:?}"),
            shape,
        ));
    }
    let mut full = match mask {
        SdpaMask::Bool(m) => CowArray::from(crate::mask::map_to_standard(m, |takes_part| {
            if takes_part {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })),
        SdpaMask::Float(m) => CowArray::from(m.clone()),
    };
    while full.ndim() < scores.len() {
        full.insert_axis_inplace(Axis(0));
    }
    Ok(full)
}

fn dropout_plan(options: &SdpaOptions<'_>) -> Result<Option<DropoutPlan>, MhaError> {
    let p = options.dropout_p;
    if !(0.0..=1.0).contains(&p) {
        return Err(MhaError::InvalidArgument {
            argument: "dropout_p",
            message: format!("dropout probability has to be between 0 and 1, but got {p}"),
        });
    }
    if p == 0.0 {
        return Ok(None);
    }
    match options.dropout_seed {
        Some(seed) => Ok(Some(DropoutPlan { p: p as f32, seed })),
        None => Err(MhaError::InvalidArgument {
            argument: "dropout_p",
            message: format!(
                "dropout_p = {p} needs dropout_seed (the dropout generator is seeded \
                 explicitly, see SdpaOptions::with_dropout)"
            ),
        }),
    }
}

/// Row-major multi-index of `flat` in `dims`.
pub(super) fn unravel(mut flat: usize, dims: &[usize], index: &mut [usize]) {
    for (slot, &d) in index.iter_mut().zip(dims).rev() {
        *slot = flat % d;
        flat /= d;
    }
}

/// The `(rows, cols)` matrix of `t` at the output's leading index `out`.
fn matrix<'a>(
    t: &ArrayViewD<'a, f32>,
    map: &LeadMap,
    out: &[usize],
    at: &mut Vec<usize>,
) -> ArrayView2<'a, f32> {
    map.index(out, at);
    let mut view = t.clone();
    for &i in at.iter() {
        view = view.index_axis_move(Axis(0), i);
    }
    view.into_dimensionality::<Ix2>()
        .expect("two axes remain after the leading ones")
}

/// The `(L or 1, S or 1)` mask at the output's leading index `out`.
fn mask_matrix<'m>(mask: &'m CowArray<'_, f32, IxDyn>, out: &[usize]) -> ArrayView2<'m, f32> {
    let mut view = mask.view();
    for &i in out {
        let i = if view.shape()[0] == 1 { 0 } else { i };
        view = view.index_axis_move(Axis(0), i);
    }
    view.into_dimensionality::<Ix2>()
        .expect("two axes remain after the leading ones")
}
