//! Torch's parameter initialisation (`MultiheadAttention._reset_parameters`), seeded.

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::{MhaError, MultiheadAttentionConfig, MultiheadAttentionWeight as W, Weights};

/// How torch initialises a tensor of the layout.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scheme {
    /// `xavier_uniform_`: the input projection.
    XavierUniform,
    /// nn.Linear's `kaiming_uniform_(a = √5)`: `out_proj.weight`.
    LinearDefault,
    /// `xavier_normal_`: `bias_k`, `bias_v`.
    XavierNormal,
    /// `constant_(0)`: the biases.
    Zeros,
}

/// Torch's scheme for each tensor of the layout (torch's `_reset_parameters`, not the spec's).
fn scheme(w: W) -> Scheme {
    if w == W::OUT_PROJ_WEIGHT {
        Scheme::LinearDefault
    } else if w == W::BIAS_K || w == W::BIAS_V {
        Scheme::XavierNormal
    } else if w == W::IN_PROJ_BIAS || w == W::OUT_PROJ_BIAS {
        Scheme::Zeros
    } else {
        Scheme::XavierUniform
    }
}

/// Draws weights with torch's scheme from ChaCha8 seeded with `seed`, for a checked config:
/// `xavier_uniform_` for `in_proj_weight` (or each of `q/k/v_proj_weight`), `xavier_normal_` for
/// `bias_k` / `bias_v`, `kaiming_uniform_(a = √5)` for `out_proj.weight` (nn.Linear's default),
/// and zeros for `in_proj_bias` and `out_proj.bias`. The tensors and their shapes are the
/// config's weight layout; they are drawn in the order of the schemes above.
pub(crate) fn torch_init(
    config: &MultiheadAttentionConfig,
    seed: u64,
) -> Result<Weights, MhaError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut layout: Vec<(W, Vec<usize>)> = config
        .weight_shapes()
        .into_iter()
        .filter_map(|s| Some((W::named(s.name)?, s.shape)))
        .collect();
    layout.sort_by_key(|(w, _)| scheme(*w)); // stable: the spec's order within a scheme
    let mut drawn: Vec<(W, ArrayD<f32>)> = layout
        .into_iter()
        .map(|(w, shape)| {
            let tensor = match (scheme(w), shape.as_slice()) {
                (Scheme::XavierUniform, &[rows, cols]) => {
                    uniform(&mut rng, &shape, (6.0 / (rows + cols) as f64).sqrt())
                }
                // kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
                (Scheme::LinearDefault, &[_, fan_in]) => {
                    uniform(&mut rng, &shape, 1.0 / (fan_in as f64).sqrt())
                }
                // xavier_normal_ on (1, 1, E): fan_in = fan_out = E, std = sqrt(2 / 2E).
                (Scheme::XavierNormal, &[.., e]) => {
                    normal(&mut rng, &shape, (1.0 / e as f64).sqrt())
                }
                _ => ArrayD::zeros(IxDyn(&shape)),
            };
            (w, tensor)
        })
        .collect();
    Weights::assemble(|w| {
        Ok(drawn
            .iter()
            .position(|(d, _)| *d == w)
            .map(|i| drawn.swap_remove(i).1))
    })
}

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], bound: f64) -> ArrayD<f32> {
    match Uniform::new_inclusive(-bound, bound) {
        Ok(dist) => ArrayD::from_shape_simple_fn(IxDyn(shape), || dist.sample(rng) as f32),
        Err(_) => ArrayD::zeros(IxDyn(shape)),
    }
}

fn normal(rng: &mut ChaCha8Rng, shape: &[usize], std: f64) -> ArrayD<f32> {
    match Normal::new(0.0, std) {
        Ok(dist) => ArrayD::from_shape_simple_fn(IxDyn(shape), || dist.sample(rng) as f32),
        Err(_) => ArrayD::zeros(IxDyn(shape)),
    }
}
