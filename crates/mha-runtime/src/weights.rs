//! The parameters of the layer: torch's `state_dict` names and shapes, and their checks.

use std::collections::BTreeMap;

use ndarray::{s, Array, Array1, Array2, Array3, ArrayD, ArrayView1, ArrayView2, Dimension};

use crate::{MhaError, MultiheadAttentionConfig};

/// The input projection weight, packed or per input as torch stores it.
///
/// ```
/// use mha_runtime::{InProjection, MultiheadAttention, MultiheadAttentionConfig};
///
/// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2).with_kdim(Some(3)), 0)?;
/// match &layer.weights().in_proj {
///     InProjection::Separate { k, .. } => assert_eq!(k.dim(), (4, 3)),
///     InProjection::Packed(_) => unreachable!("kdim != embed_dim uses separate weights"),
/// }
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum InProjection {
    /// `in_proj_weight` (3E, E): rows `[W_q; W_k; W_v]`; used when `kdim = vdim = embed_dim`.
    Packed(Array2<f32>),
    /// `q_proj_weight` (E, E), `k_proj_weight` (E, kdim), `v_proj_weight` (E, vdim); used otherwise.
    Separate {
        /// `q_proj_weight` (E, E).
        q: Array2<f32>,
        /// `k_proj_weight` (E, kdim).
        k: Array2<f32>,
        /// `v_proj_weight` (E, vdim).
        v: Array2<f32>,
    },
}

/// All parameters of a `torch.nn.MultiheadAttention`, in the Linear convention `y = x Wᵀ + b`.
///
/// The fields are public so that weights can be built or edited by hand;
/// [`MultiheadAttention::new`](crate::MultiheadAttention::new) checks them against the config
/// with [`Weights::check`].
///
/// ```
/// use mha_runtime::{MultiheadAttention, MultiheadAttentionConfig};
///
/// let config = MultiheadAttentionConfig::new(4, 2);
/// let mut weights = MultiheadAttention::random(config.clone(), 0)?.weights().clone();
/// weights.out_proj_bias = Some(ndarray::Array1::ones(4));
/// let layer = MultiheadAttention::new(config.clone(), weights.clone())?;
/// let names: Vec<String> = weights.state_dict().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]);
/// weights.bias_k = Some(ndarray::Array3::zeros((1, 1, 4)));
/// assert!(weights.check(&config).is_err()); // add_bias_kv is off
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// `in_proj_weight`, or `q/k/v_proj_weight`.
    pub in_proj: InProjection,
    /// `in_proj_bias` (3E) when `bias`: `[b_q; b_k; b_v]`.
    pub in_proj_bias: Option<Array1<f32>>,
    /// `bias_k` (1, 1, E) when `add_bias_kv`.
    pub bias_k: Option<Array3<f32>>,
    /// `bias_v` (1, 1, E) when `add_bias_kv`.
    pub bias_v: Option<Array3<f32>>,
    /// `out_proj.weight` (E, E).
    pub out_proj_weight: Array2<f32>,
    /// `out_proj.bias` (E) when `bias`.
    pub out_proj_bias: Option<Array1<f32>>,
}

impl Weights {
    /// The names and shapes of the parameters a config calls for, in torch's `state_dict` order
    /// (the spec's weight layout, [`MultiheadAttentionConfig::weight_shapes`]).
    ///
    /// ```
    /// # use mha_runtime::{MultiheadAttentionConfig, Weights};
    /// let names: Vec<_> = Weights::parameter_shapes(&MultiheadAttentionConfig::new(16, 4))
    ///     .into_iter()
    ///     .map(|(name, _)| name)
    ///     .collect();
    /// assert_eq!(names, ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]);
    /// ```
    pub fn parameter_shapes(config: &MultiheadAttentionConfig) -> Vec<(&'static str, Vec<usize>)> {
        config
            .weight_shapes()
            .into_iter()
            .map(|w| (w.name, w.shape))
            .collect()
    }

    /// Builds the weights from named tensors (names relative to the layer; `prefix` is only
    /// used in error messages). Missing, unexpected, repeated or wrongly shaped tensors are errors.
    pub(crate) fn from_named(
        config: &MultiheadAttentionConfig,
        tensors: impl IntoIterator<Item = (String, ArrayD<f32>)>,
        prefix: &str,
    ) -> Result<Self, MhaError> {
        config.check()?;
        let expected = Self::parameter_shapes(config);
        let mut given: BTreeMap<String, ArrayD<f32>> = BTreeMap::new();
        for (name, tensor) in tensors {
            if given.contains_key(&name) {
                return Err(MhaError::DuplicateWeight {
                    name: format!("{prefix}{name}"),
                });
            }
            given.insert(name, tensor);
        }
        if let Some(name) = given
            .keys()
            .find(|n| !expected.iter().any(|(e, _)| e == *n))
        {
            let names: Vec<String> = expected
                .iter()
                .map(|(n, _)| format!("{prefix}{n}"))
                .collect();
            return Err(MhaError::UnexpectedWeight {
                name: format!("{prefix}{name}"),
                expected: names.join(", "),
            });
        }
        let mut taker = Taker {
            given,
            expected: &expected,
            prefix,
        };
        let in_proj = if config.packed_in_proj() {
            InProjection::Packed(taker.take("in_proj_weight")?)
        } else {
            InProjection::Separate {
                q: taker.take("q_proj_weight")?,
                k: taker.take("k_proj_weight")?,
                v: taker.take("v_proj_weight")?,
            }
        };
        let in_proj_bias = taker.take_if(config.bias, "in_proj_bias")?;
        let bias_k = taker.take_if(config.add_bias_kv, "bias_k")?;
        let bias_v = taker.take_if(config.add_bias_kv, "bias_v")?;
        let out_proj_weight = taker.take("out_proj.weight")?;
        let out_proj_bias = taker.take_if(config.bias, "out_proj.bias")?;
        Ok(Self {
            in_proj,
            in_proj_bias,
            bias_k,
            bias_v,
            out_proj_weight,
            out_proj_bias,
        })
    }

    /// Checks that exactly the parameters the config calls for are present, with their shapes.
    pub fn check(&self, config: &MultiheadAttentionConfig) -> Result<(), MhaError> {
        config.check()?;
        let present: Vec<(&'static str, Vec<usize>)> = self
            .named_views()
            .into_iter()
            .map(|(n, t)| (n, t.to_vec()))
            .collect();
        let expected = Self::parameter_shapes(config);
        for (name, shape) in &expected {
            match present.iter().find(|(n, _)| n == name) {
                None => {
                    return Err(MhaError::MissingWeight {
                        name: (*name).to_string(),
                        shape: shape.clone(),
                    })
                }
                Some((_, actual)) if actual != shape => {
                    return Err(MhaError::shape(
                        *name,
                        format!("{shape:?} ({})", meaning(name)),
                        actual,
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some((name, _)) = present
            .iter()
            .find(|(n, _)| !expected.iter().any(|(e, _)| e == n))
        {
            let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
            return Err(MhaError::UnexpectedWeight {
                name: (*name).to_string(),
                expected: names.join(", "),
            });
        }
        Ok(())
    }

    /// The parameters as (torch `state_dict` name, tensor), in torch's order.
    pub fn state_dict(&self) -> Vec<(String, ArrayD<f32>)> {
        let mut out: Vec<(String, ArrayD<f32>)> = Vec::with_capacity(8);
        let mut push = |name: &str, t: ArrayD<f32>| out.push((name.to_string(), t));
        match &self.in_proj {
            InProjection::Packed(w) => push("in_proj_weight", w.clone().into_dyn()),
            InProjection::Separate { q, k, v } => {
                push("q_proj_weight", q.clone().into_dyn());
                push("k_proj_weight", k.clone().into_dyn());
                push("v_proj_weight", v.clone().into_dyn());
            }
        }
        if let Some(b) = &self.in_proj_bias {
            push("in_proj_bias", b.clone().into_dyn());
        }
        if let Some(b) = &self.bias_k {
            push("bias_k", b.clone().into_dyn());
        }
        if let Some(b) = &self.bias_v {
            push("bias_v", b.clone().into_dyn());
        }
        push("out_proj.weight", self.out_proj_weight.clone().into_dyn());
        if let Some(b) = &self.out_proj_bias {
            push("out_proj.bias", b.clone().into_dyn());
        }
        out
    }

    /// (name, shape) of every present parameter.
    fn named_views(&self) -> Vec<(&'static str, &[usize])> {
        let mut out: Vec<(&'static str, &[usize])> = Vec::with_capacity(8);
        match &self.in_proj {
            InProjection::Packed(w) => out.push(("in_proj_weight", w.shape())),
            InProjection::Separate { q, k, v } => {
                out.push(("q_proj_weight", q.shape()));
                out.push(("k_proj_weight", k.shape()));
                out.push(("v_proj_weight", v.shape()));
            }
        }
        if let Some(b) = &self.in_proj_bias {
            out.push(("in_proj_bias", b.shape()));
        }
        if let Some(b) = &self.bias_k {
            out.push(("bias_k", b.shape()));
        }
        if let Some(b) = &self.bias_v {
            out.push(("bias_v", b.shape()));
        }
        out.push(("out_proj.weight", self.out_proj_weight.shape()));
        if let Some(b) = &self.out_proj_bias {
            out.push(("out_proj.bias", b.shape()));
        }
        out
    }

    /// `(W_q, W_k, W_v)`, each (E, in_features). Only valid after [`Weights::check`].
    pub(crate) fn projection_weights(&self, e: usize) -> [ArrayView2<'_, f32>; 3] {
        match &self.in_proj {
            InProjection::Packed(w) => [
                w.slice(s![0..e, ..]),
                w.slice(s![e..2 * e, ..]),
                w.slice(s![2 * e..3 * e, ..]),
            ],
            InProjection::Separate { q, k, v } => [q.view(), k.view(), v.view()],
        }
    }

    /// `(b_q, b_k, b_v)` when `bias`. Only valid after [`Weights::check`].
    pub(crate) fn projection_biases(&self, e: usize) -> Option<[ArrayView1<'_, f32>; 3]> {
        self.in_proj_bias.as_ref().map(|b| {
            [
                b.slice(s![0..e]),
                b.slice(s![e..2 * e]),
                b.slice(s![2 * e..3 * e]),
            ]
        })
    }
}

/// The meaning of a parameter's dimensions, for error messages.
fn meaning(name: &str) -> &'static str {
    match name {
        "in_proj_weight" => "3*embed_dim, embed_dim",
        "q_proj_weight" => "embed_dim, embed_dim",
        "k_proj_weight" => "embed_dim, kdim",
        "v_proj_weight" => "embed_dim, vdim",
        "in_proj_bias" => "3*embed_dim",
        "bias_k" | "bias_v" => "1, 1, embed_dim",
        "out_proj.weight" => "embed_dim, embed_dim",
        "out_proj.bias" => "embed_dim",
        _ => "",
    }
}

/// Hands out the given tensors one by one, checking presence and shape.
struct Taker<'a> {
    given: BTreeMap<String, ArrayD<f32>>,
    expected: &'a [(&'static str, Vec<usize>)],
    prefix: &'a str,
}

impl Taker<'_> {
    fn take<D: Dimension>(&mut self, name: &str) -> Result<Array<f32, D>, MhaError> {
        let shape = self
            .expected
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let full = format!("{}{name}", self.prefix);
        let tensor = self
            .given
            .remove(name)
            .ok_or_else(|| MhaError::MissingWeight {
                name: full.clone(),
                shape: shape.clone(),
            })?;
        if tensor.shape() != shape.as_slice() {
            return Err(MhaError::shape(
                full,
                format!("{shape:?} ({})", meaning(name)),
                tensor.shape(),
            ));
        }
        let actual = tensor.shape().to_vec();
        tensor
            .into_dimensionality::<D>()
            .map_err(|_| MhaError::shape(full, format!("{shape:?} ({})", meaning(name)), &actual))
    }

    fn take_if<D: Dimension>(
        &mut self,
        present: bool,
        name: &str,
    ) -> Result<Option<Array<f32, D>>, MhaError> {
        if present {
            self.take(name).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn named(config: &MultiheadAttentionConfig) -> Vec<(String, ArrayD<f32>)> {
        Weights::parameter_shapes(config)
            .into_iter()
            .map(|(n, s)| (n.to_string(), ArrayD::zeros(IxDyn(&s))))
            .collect()
    }

    #[test]
    fn separate_projection_names() {
        let c = MultiheadAttentionConfig::new(8, 2)
            .with_vdim(Some(3))
            .with_bias(false)
            .with_add_bias_kv(true);
        let names: Vec<_> = Weights::parameter_shapes(&c)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "bias_k",
                "bias_v",
                "out_proj.weight"
            ]
        );
        let w = Weights::from_named(&c, named(&c), "").unwrap();
        w.check(&c).unwrap();
        let back: Vec<_> = w.state_dict().into_iter().map(|(n, _)| n).collect();
        assert_eq!(back, names);
    }

    #[test]
    fn errors_name_the_tensor() {
        let c = MultiheadAttentionConfig::new(8, 2);
        let mut t = named(&c);
        t.pop();
        let e = Weights::from_named(&c, t.clone(), "p.")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing weight `p.out_proj.bias` (expected shape [8])");
        t.push(("out_proj.bias".into(), ArrayD::zeros(IxDyn(&[9]))));
        let e = Weights::from_named(&c, t, "").unwrap_err().to_string();
        assert_eq!(
            e,
            "`out_proj.bias` has shape [9], but expected [8] (embed_dim)"
        );
    }

    #[test]
    fn check_catches_inconsistent_fields() {
        let c = MultiheadAttentionConfig::new(8, 2);
        let mut w = Weights::from_named(&c, named(&c), "").unwrap();
        w.bias_k = Some(Array3::zeros((1, 1, 8)));
        assert!(matches!(
            w.check(&c),
            Err(MhaError::UnexpectedWeight { .. })
        ));
    }
}
