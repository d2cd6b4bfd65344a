//! Torch's parameter initialisation (`MultiheadAttention._reset_parameters`), seeded.

use ndarray::{Array, Array1, Array2, Array3, Dimension, ShapeBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::{InProjection, MhaError, MultiheadAttentionConfig, Weights};

/// Draws weights with torch's scheme from ChaCha8 seeded with `seed`:
/// `xavier_uniform_` for `in_proj_weight` (or each of `q/k/v_proj_weight`), `xavier_normal_` for
/// `bias_k` / `bias_v`, `kaiming_uniform_(a = √5)` for `out_proj.weight` (nn.Linear's default),
/// and zeros for `in_proj_bias` and `out_proj.bias`.
pub(crate) fn torch_init(
    config: &MultiheadAttentionConfig,
    seed: u64,
) -> Result<Weights, MhaError> {
    config.check()?;
    let e = config.embed_dim;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let in_proj = if config.packed_in_proj() {
        InProjection::Packed(xavier_uniform(&mut rng, (3 * e, e)))
    } else {
        InProjection::Separate {
            q: xavier_uniform(&mut rng, (e, e)),
            k: xavier_uniform(&mut rng, (e, config.kdim_or_default())),
            v: xavier_uniform(&mut rng, (e, config.vdim_or_default())),
        }
    };
    // nn.Linear's reset: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let bound = 1.0 / (e as f64).sqrt();
    let out_proj_weight = uniform(&mut rng, (e, e), bound);
    let (bias_k, bias_v) = if config.add_bias_kv {
        // xavier_normal_ on (1, 1, E): fan_in = fan_out = E, std = sqrt(2 / 2E).
        let std = (1.0 / e as f64).sqrt();
        (
            Some(normal(&mut rng, (1, 1, e), std)),
            Some(normal(&mut rng, (1, 1, e), std)),
        )
    } else {
        (None, None)
    };
    let (in_proj_bias, out_proj_bias) = if config.bias {
        (Some(Array1::zeros(3 * e)), Some(Array1::zeros(e)))
    } else {
        (None, None)
    };
    Ok(Weights {
        in_proj,
        in_proj_bias,
        bias_k,
        bias_v,
        out_proj_weight,
        out_proj_bias,
    })
}

/// `xavier_uniform_` on a (fan_out, fan_in) matrix: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
fn xavier_uniform(rng: &mut ChaCha8Rng, (rows, cols): (usize, usize)) -> Array2<f32> {
    let a = (6.0 / (rows + cols) as f64).sqrt();
    uniform(rng, (rows, cols), a)
}

fn uniform<Sh: ShapeBuilder>(rng: &mut ChaCha8Rng, shape: Sh, bound: f64) -> Array<f32, Sh::Dim>
where
    Sh::Dim: Dimension,
{
    match Uniform::new_inclusive(-bound, bound) {
        Ok(dist) => Array::from_shape_simple_fn(shape, || dist.sample(rng) as f32),
        Err(_) => Array::zeros(shape),
    }
}

fn normal(rng: &mut ChaCha8Rng, shape: (usize, usize, usize), std: f64) -> Array3<f32> {
    match Normal::new(0.0, std) {
        Ok(dist) => Array3::from_shape_simple_fn(shape, || dist.sample(rng) as f32),
        Err(_) => Array3::zeros(shape),
    }
}
