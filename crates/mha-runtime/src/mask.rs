//! Attention masks: bool or float, as torch accepts them.

use ndarray::{Array2, ArrayD, ArrayViewD, Axis, IxDyn};
use rayon::prelude::*;

/// A mask given to `forward`: `key_padding_mask` or `attn_mask`.
///
/// As in torch, a bool mask marks with `true` the positions that may NOT be attended (they become
/// `-inf`), and a float mask is added to the attention scores (it may hold `-inf`). Bool and float
/// masks can be mixed; both are converted to float and added.
///
/// ```
/// use mha_runtime::Mask;
/// use ndarray::{array, Array2};
///
/// let padding = array![[false, false, true]].into_dyn(); // (N=1, S=3): the last key is padding
/// let mask = Mask::from(padding.view());
/// assert_eq!(mask.shape(), &[1, 3]);
///
/// let bias: Array2<f32> = Array2::zeros((2, 3)); // (L, S)
/// assert_eq!(Mask::from(bias.view().into_dyn()).dtype_name(), "float32");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Mask<'a> {
    /// `true` = masked out (not allowed to attend).
    Bool(ArrayViewD<'a, bool>),
    /// Added to the attention scores.
    Float(ArrayViewD<'a, f32>),
}

impl Mask<'_> {
    /// The mask's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Mask::Bool(m) => m.shape(),
            Mask::Float(m) => m.shape(),
        }
    }

    /// The mask's number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// `"bool"` or `"float32"`, torch's dtype name.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Mask::Bool(_) => "bool",
            Mask::Float(_) => "float32",
        }
    }

    /// Torch's `_canonical_mask`: the float mask, with `-inf` for `true` and `0` for `false`.
    ///
    /// ```
    /// use mha_runtime::Mask;
    /// use ndarray::array;
    ///
    /// let m = array![true, false].into_dyn();
    /// assert_eq!(Mask::Bool(m.view()).to_float(), array![f32::NEG_INFINITY, 0.0].into_dyn());
    /// ```
    pub fn to_float(&self) -> ArrayD<f32> {
        match self {
            Mask::Bool(m) => {
                map_to_standard(m, |masked| if masked { f32::NEG_INFINITY } else { 0.0 })
            }
            Mask::Float(m) => map_to_standard(m, |x| x),
        }
    }
}

/// Elements a mask must have before [`map_to_standard`] writes it on several threads (a
/// 256 × 256 mask, about 50 µs on one core): below, rayon's dispatch would cost more than it
/// saves.
const PARALLEL_MAP_LEN: usize = 1 << 16;

/// `f` of every element of `m`, as a new array of the same shape in standard (row-major)
/// layout; a large mask's rows (along the last axis) are written in parallel on the current
/// rayon pool, read in place whatever `m`'s strides.
pub(crate) fn map_to_standard<A, F>(m: &ArrayViewD<'_, A>, f: F) -> ArrayD<f32>
where
    A: Copy + Sync,
    F: Fn(A) -> f32 + Sync,
{
    let shape = m.shape().to_vec();
    let row_len = shape.last().copied().unwrap_or(1);
    let values: Vec<f32> = if m.len() < PARALLEL_MAP_LEN || row_len == 0 {
        m.iter().map(|&x| f(x)).collect()
    } else {
        let lead = &shape[..shape.len() - 1];
        let mut values = vec![0.0f32; m.len()];
        values
            .par_chunks_mut(row_len)
            .with_min_len((PARALLEL_MAP_LEN / 4 / row_len).max(1))
            .enumerate()
            .for_each(|(row, dst)| {
                // Row `row` of the leading axes, in row-major order.
                let mut index = vec![0; lead.len()];
                let mut rest = row;
                for (slot, &len) in index.iter_mut().zip(lead).rev() {
                    *slot = rest % len;
                    rest /= len;
                }
                let mut src = m.view();
                for &i in &index {
                    src.index_axis_inplace(Axis(0), i);
                }
                for (d, &x) in dst.iter_mut().zip(src.iter()) {
                    *d = f(x);
                }
            });
        values
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values).expect("one value per element")
}

impl<'a> From<ArrayViewD<'a, bool>> for Mask<'a> {
    fn from(mask: ArrayViewD<'a, bool>) -> Self {
        Mask::Bool(mask)
    }
}

impl<'a> From<ArrayViewD<'a, f32>> for Mask<'a> {
    fn from(mask: ArrayViewD<'a, f32>) -> Self {
        Mask::Float(mask)
    }
}

/// Torch's `nn.Transformer.generate_square_subsequent_mask(size)`: a float (size, size) causal
/// mask, `-inf` above the diagonal (key j > query i) and `0` elsewhere. This is the `attn_mask` to
/// give with `is_causal`.
///
/// ```
/// let m = mha_runtime::generate_square_subsequent_mask(3);
/// assert_eq!(m[[0, 1]], f32::NEG_INFINITY);
/// assert_eq!(m[[1, 0]], 0.0);
/// ```
pub fn generate_square_subsequent_mask(size: usize) -> Array2<f32> {
    Array2::from_shape_fn(
        (size, size),
        |(i, j)| if j > i { f32::NEG_INFINITY } else { 0.0 },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn large_strided_masks_map_in_parallel_to_the_same_values() {
        // (3, 7, 4096) elements, more than PARALLEL_MAP_LEN, read through a reversed view.
        let base =
            ndarray::Array3::from_shape_fn((4096, 7, 3), |(a, b, c)| (a * 31 + b * 7 + c) % 5 == 0);
        let m = base.view().reversed_axes().into_dyn();
        assert!(m.len() >= PARALLEL_MAP_LEN && !m.is_standard_layout());
        let want = m.mapv(|x| if x { f32::NEG_INFINITY } else { 0.0 });
        let got = Mask::Bool(m.clone()).to_float();
        assert!(got.is_standard_layout());
        assert_eq!(got, want);
        let floats = want.view().reversed_axes();
        assert_eq!(Mask::Float(floats.clone()).to_float(), floats);
    }

    #[test]
    fn bool_becomes_neg_inf() {
        let m = array![true, false].into_dyn();
        let f = Mask::from(m.view()).to_float();
        assert_eq!(f.as_slice(), Some(&[f32::NEG_INFINITY, 0.0][..]));
        assert_eq!(Mask::from(m.view()).ndim(), 1);
    }
}
