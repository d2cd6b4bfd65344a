//! Tensors as raw little-endian bytes: the layout steps move elements and never touch their bits,
//! so every dtype converts exactly and a round trip gives back the same bytes.

use safetensors::Dtype;

/// One stored tensor: element type, shape and its row-major bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    /// The element type.
    pub dtype: Dtype,
    /// The shape (row-major).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements of `dtype`, little-endian.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// A tensor, checked: the data must hold exactly `shape`'s elements.
    pub fn new(dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Result<RawTensor, String> {
        let elements = element_count(&shape)?;
        let bits = elements
            .checked_mul(dtype.bitsize())
            .ok_or_else(|| format!("shape {shape:?} is too large"))?;
        if bits.div_ceil(8) != data.len() {
            return Err(format!(
                "shape {shape:?} of {dtype} needs {} bytes, the data has {}",
                bits.div_ceil(8),
                data.len()
            ));
        }
        Ok(RawTensor { dtype, shape, data })
    }

    /// Bytes per element; sub-byte types (F4, F6) cannot be split or transposed.
    fn element_bytes(&self) -> Result<usize, String> {
        match self.dtype.bitsize() {
            bits if bits % 8 == 0 => Ok(bits / 8),
            _ => Err(format!(
                "{} packs several elements per byte: it cannot be split, transposed or joined",
                self.dtype
            )),
        }
    }

    /// The same elements under another shape of the same size.
    pub fn reshape(mut self, shape: &[usize]) -> Result<RawTensor, String> {
        if element_count(shape)? != element_count(&self.shape)? {
            return Err(format!("cannot reshape {:?} to {shape:?}", self.shape));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The two axes of a matrix swapped.
    pub fn transpose(&self) -> Result<RawTensor, String> {
        let [rows, cols] = self.shape[..] else {
            return Err(format!(
                "transpose needs a matrix, the tensor has shape {:?}",
                self.shape
            ));
        };
        let width = self.element_bytes()?;
        let mut data = vec![0u8; self.data.len()];
        if data.is_empty() {
            return Ok(RawTensor {
                dtype: self.dtype,
                shape: vec![cols, rows],
                data,
            });
        }
        for (i, row) in self.data.chunks_exact(cols * width).enumerate() {
            for (j, element) in row.chunks_exact(width).enumerate() {
                let at = (j * rows + i) * width;
                data[at..at + width].copy_from_slice(element);
            }
        }
        Ok(RawTensor {
            dtype: self.dtype,
            shape: vec![cols, rows],
            data,
        })
    }

    /// Part `index` of `parts` equal parts along the first axis.
    pub fn chunk(&self, index: usize, parts: usize) -> Result<RawTensor, String> {
        let first = *self
            .shape
            .first()
            .ok_or("a scalar cannot be split".to_string())?;
        if parts == 0 || index >= parts || first % parts != 0 {
            return Err(format!(
                "cannot take part {index} of {parts} along the first axis of shape {:?}",
                self.shape
            ));
        }
        let width = self.element_bytes()?;
        let part = self.data.len() / parts;
        let mut shape = self.shape.clone();
        shape[0] = first / parts;
        debug_assert_eq!(part % width, 0);
        Ok(RawTensor {
            dtype: self.dtype,
            shape,
            data: self.data[index * part..(index + 1) * part].to_vec(),
        })
    }

    /// Tensors of one dtype joined along the first axis (the inverse of [`RawTensor::chunk`]).
    pub fn concat(parts: &[RawTensor]) -> Result<RawTensor, String> {
        let first = parts.first().ok_or("nothing to join".to_string())?;
        first.element_bytes()?;
        let mut shape = first.shape.clone();
        if shape.is_empty() {
            return Err("scalars cannot be joined".into());
        }
        shape[0] = 0;
        let mut data = Vec::new();
        for p in parts {
            if p.dtype != first.dtype || p.shape.get(1..) != first.shape.get(1..) {
                return Err(format!(
                    "cannot join {} {:?} with {} {:?} along the first axis",
                    first.dtype, first.shape, p.dtype, p.shape
                ));
            }
            shape[0] += p.shape[0];
            data.extend_from_slice(&p.data);
        }
        Ok(RawTensor {
            dtype: first.dtype,
            shape,
            data,
        })
    }
}

fn element_count(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], values: &[f32]) -> RawTensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        RawTensor::new(Dtype::F32, shape.to_vec(), data).unwrap()
    }

    #[test]
    fn transpose_moves_elements_and_round_trips() {
        let t = f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let tt = t.transpose().unwrap();
        assert_eq!(tt, f32s(&[3, 2], &[1., 4., 2., 5., 3., 6.]));
        assert_eq!(tt.transpose().unwrap(), t);
    }

    #[test]
    fn chunks_join_back() {
        let t = f32s(&[6, 1], &[1., 2., 3., 4., 5., 6.]);
        let parts: Vec<_> = (0..3).map(|i| t.chunk(i, 3).unwrap()).collect();
        assert_eq!(parts[1], f32s(&[2, 1], &[3., 4.]));
        assert_eq!(RawTensor::concat(&parts).unwrap(), t);
        assert!(t.chunk(0, 4).is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(RawTensor::new(Dtype::F32, vec![2, 2], vec![0; 15]).is_err());
        assert!(f32s(&[4], &[0.; 4]).transpose().is_err());
        assert!(f32s(&[4], &[0.; 4]).reshape(&[3]).is_err());
        assert!(RawTensor::new(Dtype::F32, vec![usize::MAX, 2], vec![]).is_err());
        let sub_byte = RawTensor::new(Dtype::F4, vec![2, 2], vec![0; 2]).unwrap();
        assert!(sub_byte.transpose().is_err() && sub_byte.chunk(0, 2).is_err());
    }

    #[test]
    fn empty_tensors_move_too() {
        for shape in [[3, 0], [0, 3]] {
            let t = RawTensor::new(Dtype::F32, shape.to_vec(), vec![]).unwrap();
            let tt = t.transpose().unwrap();
            assert_eq!(tt.shape, [shape[1], shape[0]]);
            assert_eq!(tt.transpose().unwrap(), t);
        }
        let t = RawTensor::new(Dtype::F32, vec![0, 2], vec![]).unwrap();
        assert_eq!(t.chunk(1, 3).unwrap().shape, [0, 2]);
    }
}
