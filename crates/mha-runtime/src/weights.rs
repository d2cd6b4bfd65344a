//! The parameters of the layer and their checks. Names, shapes and the conditions under which a
//! tensor exists are the spec's weight layout, generated from it: [`MultiheadAttentionWeight`]
//! (each tensor as the spec writes it) and [`MultiheadAttentionConfig::weight_shapes`] (their
//! shapes for one config). Only the struct's fields are written here.

use std::collections::BTreeMap;

use ndarray::{
    s, Array, Array1, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Dimension,
};

use crate::{MhaError, MultiheadAttentionConfig, MultiheadAttentionWeight};
use MultiheadAttentionWeight as W;

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
    /// [`IN_PROJ_WEIGHT`](W::IN_PROJ_WEIGHT): rows `[W_q; W_k; W_v]`.
    Packed(Array2<f32>),
    /// One weight per input, where the config has no packed one.
    Separate {
        /// [`Q_PROJ_WEIGHT`](W::Q_PROJ_WEIGHT).
        q: Array2<f32>,
        /// [`K_PROJ_WEIGHT`](W::K_PROJ_WEIGHT).
        k: Array2<f32>,
        /// [`V_PROJ_WEIGHT`](W::V_PROJ_WEIGHT).
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
    /// [`IN_PROJ_WEIGHT`](W::IN_PROJ_WEIGHT), or [`Q_PROJ_WEIGHT`](W::Q_PROJ_WEIGHT),
    /// [`K_PROJ_WEIGHT`](W::K_PROJ_WEIGHT) and [`V_PROJ_WEIGHT`](W::V_PROJ_WEIGHT).
    pub in_proj: InProjection,
    /// [`IN_PROJ_BIAS`](W::IN_PROJ_BIAS): `[b_q; b_k; b_v]`, when the config has it.
    pub in_proj_bias: Option<Array1<f32>>,
    /// [`BIAS_K`](W::BIAS_K), when the config has it.
    pub bias_k: Option<Array3<f32>>,
    /// [`BIAS_V`](W::BIAS_V), when the config has it.
    pub bias_v: Option<Array3<f32>>,
    /// [`OUT_PROJ_WEIGHT`](W::OUT_PROJ_WEIGHT).
    pub out_proj_weight: Array2<f32>,
    /// [`OUT_PROJ_BIAS`](W::OUT_PROJ_BIAS), when the config has it.
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
    /// The config must already be checked ([`MultiheadAttentionConfig::check`]).
    pub(crate) fn from_named(
        config: &MultiheadAttentionConfig,
        tensors: impl IntoIterator<Item = (String, ArrayD<f32>)>,
        prefix: &str,
    ) -> Result<Self, MhaError> {
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
            return Err(unexpected(&format!("{prefix}{name}"), &expected, prefix));
        }
        Self::assemble(|w| {
            let Some((_, shape)) = expected.iter().find(|(n, _)| *n == w.name) else {
                return Ok(None);
            };
            let full = format!("{prefix}{}", w.name);
            let tensor = given
                .remove(w.name)
                .ok_or_else(|| MhaError::MissingWeight {
                    name: full.clone(),
                    shape: shape.clone(),
                })?;
            if tensor.shape() != shape.as_slice() {
                return Err(wrong_shape(full, w, shape, tensor.shape()));
            }
            Ok(Some(tensor))
        })
    }

    /// The struct from the layout's tensors: `take` gives each tensor of the layout that the
    /// config has (shape checked), `None` for those it does not have. The one place where the
    /// fields meet the layout's names.
    pub(crate) fn assemble(
        mut take: impl FnMut(W) -> Result<Option<ArrayD<f32>>, MhaError>,
    ) -> Result<Self, MhaError> {
        let in_proj = match take(W::IN_PROJ_WEIGHT)? {
            Some(packed) => InProjection::Packed(fixed_rank(W::IN_PROJ_WEIGHT, packed)?),
            None => InProjection::Separate {
                q: required(W::Q_PROJ_WEIGHT, take(W::Q_PROJ_WEIGHT)?)?,
                k: required(W::K_PROJ_WEIGHT, take(W::K_PROJ_WEIGHT)?)?,
                v: required(W::V_PROJ_WEIGHT, take(W::V_PROJ_WEIGHT)?)?,
            },
        };
        Ok(Self {
            in_proj,
            in_proj_bias: optional(W::IN_PROJ_BIAS, take(W::IN_PROJ_BIAS)?)?,
            bias_k: optional(W::BIAS_K, take(W::BIAS_K)?)?,
            bias_v: optional(W::BIAS_V, take(W::BIAS_V)?)?,
            out_proj_weight: required(W::OUT_PROJ_WEIGHT, take(W::OUT_PROJ_WEIGHT)?)?,
            out_proj_bias: optional(W::OUT_PROJ_BIAS, take(W::OUT_PROJ_BIAS)?)?,
        })
    }

    /// Checks the config ([`MultiheadAttentionConfig::check`]) and that exactly the parameters
    /// it calls for are present, with their shapes.
    pub fn check(&self, config: &MultiheadAttentionConfig) -> Result<(), MhaError> {
        config.check()?;
        let present = self.tensors();
        let expected = Self::parameter_shapes(config);
        for (name, shape) in &expected {
            match present.iter().find(|(w, _)| w.name == *name) {
                None => {
                    return Err(MhaError::MissingWeight {
                        name: (*name).to_string(),
                        shape: shape.clone(),
                    })
                }
                Some((w, actual)) if actual.shape() != shape.as_slice() => {
                    return Err(wrong_shape(*name, *w, shape, actual.shape()))
                }
                Some(_) => {}
            }
        }
        if let Some((w, _)) = present
            .iter()
            .find(|(w, _)| !expected.iter().any(|(e, _)| *e == w.name))
        {
            return Err(unexpected(w.name, &expected, ""));
        }
        Ok(())
    }

    /// The parameters as (torch `state_dict` name, tensor), in torch's order.
    pub fn state_dict(&self) -> Vec<(String, ArrayD<f32>)> {
        self.tensors()
            .into_iter()
            .map(|(w, t)| (w.name.to_string(), t.to_owned()))
            .collect()
    }

    /// Every present parameter with its place in the layout, in the layout's order.
    fn tensors(&self) -> Vec<(W, ArrayViewD<'_, f32>)> {
        let mut out: Vec<(W, ArrayViewD<'_, f32>)> = Vec::with_capacity(W::ALL.len());
        match &self.in_proj {
            InProjection::Packed(w) => out.push((W::IN_PROJ_WEIGHT, w.view().into_dyn())),
            InProjection::Separate { q, k, v } => {
                out.push((W::Q_PROJ_WEIGHT, q.view().into_dyn()));
                out.push((W::K_PROJ_WEIGHT, k.view().into_dyn()));
                out.push((W::V_PROJ_WEIGHT, v.view().into_dyn()));
            }
        }
        let optional = [
            (
                W::IN_PROJ_BIAS,
                self.in_proj_bias.as_ref().map(|t| t.view().into_dyn()),
            ),
            (W::BIAS_K, self.bias_k.as_ref().map(|t| t.view().into_dyn())),
            (W::BIAS_V, self.bias_v.as_ref().map(|t| t.view().into_dyn())),
            (
                W::OUT_PROJ_WEIGHT,
                Some(self.out_proj_weight.view().into_dyn()),
            ),
            (
                W::OUT_PROJ_BIAS,
                self.out_proj_bias.as_ref().map(|t| t.view().into_dyn()),
            ),
        ];
        out.extend(optional.into_iter().filter_map(|(w, t)| Some((w, t?))));
        out.sort_by_key(|(w, _)| w.index());
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

/// `name` has a shape other than the one the config gives it; the message shows the spec's
/// dimensions, e.g. `[24, 8] (3 * embed_dim, embed_dim)`.
fn wrong_shape(name: impl Into<String>, w: W, expected: &[usize], actual: &[usize]) -> MhaError {
    MhaError::shape(name, format!("{expected:?} ({})", w.dims_text()), actual)
}

/// `name` is not among the config's parameters (listed under `prefix`).
fn unexpected(name: &str, expected: &[(&'static str, Vec<usize>)], prefix: &str) -> MhaError {
    let names: Vec<String> = expected
        .iter()
        .map(|(n, _)| format!("{prefix}{n}"))
        .collect();
    MhaError::UnexpectedWeight {
        name: name.to_string(),
        expected: names.join(", "),
    }
}

/// The tensor as the field's fixed-rank array (its rank is the layout's).
fn fixed_rank<D: Dimension>(w: W, tensor: ArrayD<f32>) -> Result<Array<f32, D>, MhaError> {
    let actual = tensor.shape().to_vec();
    tensor
        .into_dimensionality::<D>()
        .map_err(|_| MhaError::shape(w.name, format!("({})", w.dims_text()), &actual))
}

/// A tensor the struct always has (the layout has it for this config, or a sibling instead).
fn required<D: Dimension>(w: W, tensor: Option<ArrayD<f32>>) -> Result<Array<f32, D>, MhaError> {
    let tensor = tensor.ok_or_else(|| MhaError::MissingWeight {
        name: w.name.to_string(),
        shape: Vec::new(),
    })?;
    fixed_rank(w, tensor)
}

/// A tensor the config may not have.
fn optional<D: Dimension>(
    w: W,
    tensor: Option<ArrayD<f32>>,
) -> Result<Option<Array<f32, D>>, MhaError> {
    tensor.map(|t| fixed_rank(w, t)).transpose()
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
