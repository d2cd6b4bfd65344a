//! Reading and writing safetensors: named tensors in, named tensors out, every failure an error.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::MhaError;

/// A tensor read from a safetensors file, with its element type preserved where the layer cares.
///
/// Raw reading for the workspace's parity runner (`mha-parity`); not a public API.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum LoadedTensor {
    /// F32, or F64 / F16 / BF16 converted to f32.
    Float(ArrayD<f32>),
    /// BOOL.
    Bool(ArrayD<bool>),
}

/// Reads a whole file (errors name the path).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, MhaError> {
    std::fs::read(path).map_err(|source| MhaError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Parses safetensors bytes (a truncated or corrupt buffer is an error, never a panic).
pub(crate) fn parse<'b>(
    bytes: &'b [u8],
    source_name: Option<&str>,
) -> Result<SafeTensors<'b>, MhaError> {
    SafeTensors::deserialize(bytes).map_err(|e| MhaError::Safetensors {
        source_name: source_name.map(str::to_string),
        message: e.to_string(),
    })
}

/// Every tensor of a safetensors buffer, by name, in the file's order (`source_name` names the
/// buffer in errors). Floats of any width become `f32`; BOOL stays bool; other dtypes are errors.
/// For the parity runner (`mha-parity`); not a public API.
///
/// ```
/// use mha_runtime::{read_tensors, LoadedTensor, MultiheadAttention, MultiheadAttentionConfig};
///
/// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(4, 2), 0)?;
/// let tensors = read_tensors(&layer.to_safetensors_bytes()?, None)?;
/// let found = |n: &str| tensors.iter().any(|(name, t)| name == n && matches!(t, LoadedTensor::Float(_)));
/// assert!(found("in_proj_weight") && found("out_proj.weight"));
/// assert!(read_tensors(b"not safetensors", Some("x.safetensors")).is_err());
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
#[doc(hidden)]
pub fn read_tensors(
    bytes: &[u8],
    source_name: Option<&str>,
) -> Result<Vec<(String, LoadedTensor)>, MhaError> {
    let file = parse(bytes, source_name)?;
    let mut out = Vec::new();
    for (name, view) in file.iter() {
        out.push((name.to_string(), convert(name, &view)?));
    }
    Ok(out)
}

/// Converts one stored tensor (`name` is used in errors).
pub(crate) fn convert(name: &str, view: &TensorView<'_>) -> Result<LoadedTensor, MhaError> {
    let shape = view.shape().to_vec();
    let data = view.data();
    let floats = |width: usize, f: &dyn Fn(&[u8]) -> f32| -> Vec<f32> {
        data.chunks_exact(width).map(f).collect()
    };
    let values = match view.dtype() {
        Dtype::F32 => floats(4, &|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        Dtype::F64 => floats(8, &|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            f64::from_le_bytes(b) as f32
        }),
        Dtype::BF16 => floats(2, &|c| {
            f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)
        }),
        Dtype::F16 => floats(2, &|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
        Dtype::BOOL => {
            let values: Vec<bool> = data.iter().map(|&b| b != 0).collect();
            return ArrayD::from_shape_vec(IxDyn(&shape), values)
                .map(LoadedTensor::Bool)
                .map_err(|_| size_error(name, &shape, data.len()));
        }
        other => {
            return Err(MhaError::Dtype {
                tensor: name.to_string(),
                expected:
                    "float32 (or float64 / float16 / bfloat16, converted), or bool for a mask"
                        .into(),
                actual: format!("{other:?}"),
            })
        }
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map(LoadedTensor::Float)
        .map_err(|_| size_error(name, &shape, data.len()))
}

fn size_error(name: &str, shape: &[usize], bytes: usize) -> MhaError {
    MhaError::Safetensors {
        source_name: None,
        message: format!(
            "tensor `{name}` of shape {shape:?} has {bytes} bytes of data, which does not match"
        ),
    }
}

/// The prefixes under which `names` (a file's tensor names) hold at least two of `params` (the layer's
/// parameter names, e.g. `in_proj_weight`, `out_proj.weight`), in file order: where the layer's
/// weights are when the prefix given finds none.
pub(crate) fn layer_prefixes<'n>(
    names: impl IntoIterator<Item = &'n str>,
    params: &[&str],
) -> Vec<String> {
    let mut found: Vec<(String, usize)> = Vec::new();
    for name in names {
        for param in params {
            let Some(prefix) = name.strip_suffix(param) else {
                continue;
            };
            if !(prefix.is_empty() || prefix.ends_with('.')) {
                continue;
            }
            match found.iter_mut().find(|(p, _)| p == prefix) {
                Some((_, n)) => *n += 1,
                None => found.push((prefix.to_string(), 1)),
            }
        }
    }
    let least = params.len().min(2);
    found
        .into_iter()
        .filter(|(_, n)| *n >= least)
        .map(|(p, _)| p)
        .collect()
}

/// The found prefix a reader most likely meant by `given`: one containing it (`self_attn` ->
/// `layers.0.self_attn.`), else the first.
pub(crate) fn closest_prefix<'f>(given: &str, found: &'f [String]) -> Option<&'f str> {
    let trimmed = given.trim_end_matches('.');
    found
        .iter()
        .find(|p| !trimmed.is_empty() && p.contains(trimmed))
        .or_else(|| found.first())
        .map(String::as_str)
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: value = m * 2^-24
            let v = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Serialises f32 tensors (in the given order) to safetensors bytes.
pub(crate) fn serialize(tensors: &[(String, ArrayD<f32>)]) -> Result<Vec<u8>, MhaError> {
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let data: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes.push((name.clone(), t.shape().to_vec(), data));
    }
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, data) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| {
            MhaError::Safetensors {
                source_name: None,
                message: format!("cannot store `{name}`: {e}"),
            }
        })?;
        views.push((name.as_str(), view));
    }
    safetensors::serialize(views, None::<HashMap<String, String>>).map_err(|e| {
        MhaError::Safetensors {
            source_name: None,
            message: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{closest_prefix, f16_to_f32, layer_prefixes};

    #[test]
    fn prefixes_holding_the_layer() {
        let names = [
            "layers.0.linear1.weight",
            "layers.0.self_attn.in_proj_weight",
            "layers.0.self_attn.out_proj.weight",
            "layers.1.self_attn.in_proj_weight",
            "layers.1.self_attn.out_proj.weight",
            "head.out_proj.weight",
        ];
        let found = layer_prefixes(names, &["in_proj_weight", "out_proj.weight"]);
        assert_eq!(found, ["layers.0.self_attn.", "layers.1.self_attn."]);
        assert_eq!(
            closest_prefix("self_attn", &found),
            Some("layers.0.self_attn.")
        );
        assert_eq!(
            closest_prefix("layers.1.self_attn", &found),
            Some("layers.1.self_attn.")
        );
        assert_eq!(closest_prefix("", &found), Some("layers.0.self_attn."));
        assert_eq!(closest_prefix("x", &[]), None);
    }

    #[test]
    fn half_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
