//! Checkpoint files: safetensors, and numpy's `.npz` (an uncompressed zip of `.npy` files, as
//! `numpy.savez` writes). The format follows the file's extension.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::tensor::RawTensor;

/// Named tensors in file order, with the safetensors metadata (kept through a conversion).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// (name, tensor), names unique.
    pub tensors: Vec<(String, RawTensor)>,
    /// The safetensors `__metadata__` (e.g. `format: pt`); npz files have none.
    pub metadata: Option<HashMap<String, String>>,
}

impl Checkpoint {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// A checkpoint file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.safetensors`
    Safetensors,
    /// `.npz`
    Npz,
}

impl Format {
    /// The format a path's extension names.
    pub fn of(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Format::Safetensors),
            Some("npz") => Ok(Format::Npz),
            _ => Err(format!(
                "{}: unknown checkpoint format (the name must end in .safetensors or .npz)",
                path.display()
            )),
        }
    }
}

impl Checkpoint {
    /// Parses a checkpoint file's bytes.
    pub fn from_bytes(bytes: &[u8], format: Format) -> Result<Checkpoint, String> {
        match format {
            Format::Safetensors => parse_safetensors(bytes),
            Format::Npz => npz::parse(bytes),
        }
    }

    /// The checkpoint as a file's bytes.
    pub fn to_bytes(&self, format: Format) -> Result<Vec<u8>, String> {
        match format {
            Format::Safetensors => serialize_safetensors(self),
            Format::Npz => npz::serialize(self),
        }
    }
}

fn parse_safetensors(bytes: &[u8]) -> Result<Checkpoint, String> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| format!("invalid safetensors: {e}"))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("invalid safetensors: {e}"))?;
    let mut tensors: Vec<(String, RawTensor)> = file
        .iter()
        .map(|(name, view)| {
            let t = RawTensor::new(view.dtype(), view.shape().to_vec(), view.data().to_vec())
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            Ok((name.to_string(), t))
        })
        .collect::<Result<_, String>>()?;
    // File order: by data offset, as the writer laid them out.
    let offset = |name: &str| header.info(name).map_or(0, |i| i.data_offsets.0);
    tensors.sort_by_key(|(n, _)| offset(n));
    Ok(Checkpoint {
        tensors,
        metadata: header.metadata().clone(),
    })
}

fn serialize_safetensors(checkpoint: &Checkpoint) -> Result<Vec<u8>, String> {
    let views = checkpoint
        .tensors
        .iter()
        .map(|(name, t)| {
            TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (name.as_str(), v))
                .map_err(|e| format!("cannot store `{name}`: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    safetensors::serialize(views, checkpoint.metadata.clone()).map_err(|e| e.to_string())
}

/// numpy's `.npy` inside a stored (uncompressed) zip.
mod npz {
    use super::*;

    const LOCAL: u32 = 0x0403_4b50;
    const CENTRAL: u32 = 0x0201_4b50;
    const END: u32 = 0x0605_4b50;

    /// numpy `descr` for a dtype, and back.
    const DESCRS: &[(Dtype, &str)] = &[
        (Dtype::BOOL, "|b1"),
        (Dtype::U8, "|u1"),
        (Dtype::I8, "|i1"),
        (Dtype::I16, "<i2"),
        (Dtype::U16, "<u2"),
        (Dtype::F16, "<f2"),
        (Dtype::I32, "<i4"),
        (Dtype::U32, "<u4"),
        (Dtype::F32, "<f4"),
        (Dtype::F64, "<f8"),
        (Dtype::I64, "<i8"),
        (Dtype::U64, "<u8"),
    ];

    pub(super) fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
        let mut tensors = Vec::new();
        for (name, data) in zip_entries(bytes)? {
            let Some(key) = name.strip_suffix(".npy") else {
                return Err(format!("npz entry `{name}` is not a .npy array"));
            };
            let t = parse_npy(data).map_err(|e| format!("npz array `{key}`: {e}"))?;
            tensors.push((key.to_string(), t));
        }
        Ok(Checkpoint {
            tensors,
            metadata: None,
        })
    }

    pub(super) fn serialize(checkpoint: &Checkpoint) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, t) in &checkpoint.tensors {
            let entry = format!("{name}.npy");
            let data = npy(t).map_err(|e| format!("cannot store `{name}` in npz: {e}"))?;
            let (size, offset, name_len) = (
                u32::try_from(data.len()),
                u32::try_from(out.len()),
                u16::try_from(entry.len()),
            );
            let (Ok(size), Ok(offset), Ok(name_len)) = (size, offset, name_len) else {
                return Err("npz files over 4 GiB are not supported: use .safetensors".into());
            };
            let crc = crc32(&data);
            // local header: version 20, no flags, stored, no time, crc, sizes, name, no extra
            push_u32(&mut out, LOCAL);
            for v in [20u16, 0, 0, 0, 0x21] {
                push_u16(&mut out, v);
            }
            for v in [crc, size, size] {
                push_u32(&mut out, v);
            }
            push_u16(&mut out, name_len);
            push_u16(&mut out, 0);
            out.extend_from_slice(entry.as_bytes());
            out.extend_from_slice(&data);
            push_u32(&mut central, CENTRAL);
            for v in [20u16, 20, 0, 0, 0, 0x21] {
                push_u16(&mut central, v);
            }
            for v in [crc, size, size] {
                push_u32(&mut central, v);
            }
            for v in [name_len, 0, 0, 0, 0] {
                push_u16(&mut central, v);
            }
            push_u32(&mut central, 0);
            push_u32(&mut central, offset);
            central.extend_from_slice(entry.as_bytes());
        }
        let count = u16::try_from(checkpoint.tensors.len())
            .map_err(|_| "npz files hold at most 65535 arrays: use .safetensors".to_string())?;
        let start = u32::try_from(out.len())
            .map_err(|_| "npz files over 4 GiB are not supported: use .safetensors".to_string())?;
        let central_len = central.len() as u32;
        out.extend_from_slice(&central);
        push_u32(&mut out, END);
        for v in [0u16, 0, count, count] {
            push_u16(&mut out, v);
        }
        push_u32(&mut out, central_len);
        push_u32(&mut out, start);
        push_u16(&mut out, 0);
        Ok(out)
    }

    /// (name, stored bytes) of every zip entry, from the central directory.
    fn zip_entries(bytes: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
        let bad = |what: &str| format!("invalid npz (zip) file: {what}");
        let end = (0..=bytes.len().saturating_sub(22))
            .rev()
            .find(|&i| u32_at(bytes, i) == Some(END))
            .ok_or_else(|| bad("no end of central directory"))?;
        let count = u16_at(bytes, end + 10).ok_or_else(|| bad("truncated"))? as usize;
        let mut at = u32_at(bytes, end + 16).ok_or_else(|| bad("truncated"))? as usize;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            if u32_at(bytes, at) != Some(CENTRAL) {
                return Err(bad("broken central directory"));
            }
            let field = |off: usize| u16_at(bytes, at + off).ok_or_else(|| bad("truncated"));
            let method = field(10)?;
            let (name_len, extra_len, comment_len) = (
                field(28)? as usize,
                field(30)? as usize,
                field(32)? as usize,
            );
            let name = bytes
                .get(at + 46..at + 46 + name_len)
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| bad("bad entry name"))?
                .to_string();
            let extra = bytes
                .get(at + 46 + name_len..at + 46 + name_len + extra_len)
                .ok_or_else(|| bad("truncated"))?;
            let mut size = u64::from(u32_at(bytes, at + 24).ok_or_else(|| bad("truncated"))?);
            let mut offset = u64::from(u32_at(bytes, at + 42).ok_or_else(|| bad("truncated"))?);
            // zip64: the 32-bit fields that overflowed are in the extra field 0x0001, in order.
            if let Some(zip64) = extra_field(extra, 1) {
                let mut values = zip64
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8 bytes")));
                let uncompressed = u32_at(bytes, at + 24) == Some(u32::MAX);
                let compressed = u32_at(bytes, at + 20) == Some(u32::MAX);
                if uncompressed {
                    size = values.next().ok_or_else(|| bad("short zip64 field"))?;
                }
                if compressed {
                    values.next();
                }
                if offset == u64::from(u32::MAX) {
                    offset = values.next().ok_or_else(|| bad("short zip64 field"))?;
                }
            }
            if method != 0 {
                return Err(format!(
                    "npz entry `{name}` is compressed (numpy.savez_compressed): only uncompressed npz \
                     files (numpy.savez) are read; resave it with numpy.savez or use .safetensors"
                ));
            }
            let local = usize::try_from(offset).map_err(|_| bad("offset too large"))?;
            if u32_at(bytes, local) != Some(LOCAL) {
                return Err(bad("broken local header"));
            }
            let skip = 30
                + u16_at(bytes, local + 26).ok_or_else(|| bad("truncated"))? as usize
                + u16_at(bytes, local + 28).ok_or_else(|| bad("truncated"))? as usize;
            let size = usize::try_from(size).map_err(|_| bad("entry too large"))?;
            let data = local
                .checked_add(skip)
                .and_then(|s| Some(s..s.checked_add(size)?))
                .and_then(|r| bytes.get(r))
                .ok_or_else(|| bad(&format!("entry `{name}` runs past the end")))?;
            if crc32(data) != u32_at(bytes, at + 16).unwrap_or(0) {
                return Err(bad(&format!("entry `{name}` fails its CRC check")));
            }
            entries.push((name, data));
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(entries)
    }

    fn extra_field(mut extra: &[u8], id: u16) -> Option<&[u8]> {
        while extra.len() >= 4 {
            let (kind, len) = (u16_at(extra, 0)?, u16_at(extra, 2)? as usize);
            let body = extra.get(4..4 + len)?;
            if kind == id {
                return Some(body);
            }
            extra = &extra[4 + len..];
        }
        None
    }

    /// One `.npy` (format 1.0 or 2.0/3.0), C order only.
    fn parse_npy(data: &[u8]) -> Result<RawTensor, String> {
        if data.get(..6) != Some(b"\x93NUMPY") {
            return Err("not a .npy array (bad magic)".into());
        }
        let major = *data.get(6).ok_or("truncated")?;
        let (len, start) = match major {
            1 => (u16_at(data, 8).ok_or("truncated")? as usize, 10),
            2 | 3 => (u32_at(data, 8).ok_or("truncated")? as usize, 12),
            v => return Err(format!(".npy version {v} is not supported")),
        };
        let header = data
            .get(start..start + len)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or("truncated or non-text header")?;
        let value = |key: &str| -> Result<&str, String> {
            let at = header
                .find(&format!("'{key}':"))
                .ok_or_else(|| format!("header lacks `{key}`"))?;
            Ok(header[at + key.len() + 3..].trim_start())
        };
        let descr = value("descr")?;
        let descr = descr
            .strip_prefix('\'')
            .and_then(|d| d.split('\'').next())
            .ok_or("bad descr")?;
        let dtype = DESCRS
            .iter()
            .find(|(_, d)| *d == descr || (d.starts_with('<') && descr == format!("={}", &d[1..])))
            .map(|(t, _)| *t)
            .ok_or_else(|| format!("dtype `{descr}` is not supported"))?;
        if value("fortran_order")?.starts_with("True") {
            return Err("Fortran-ordered arrays are not supported (save a C-ordered copy)".into());
        }
        let shape_text = value("shape")?;
        let shape_text = shape_text
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or("bad shape")?;
        let shape = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .map_err(|_| format!("bad dimension `{s}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        RawTensor::new(dtype, shape, data[start + len..].to_vec())
    }

    fn npy(t: &RawTensor) -> Result<Vec<u8>, String> {
        let descr = DESCRS
            .iter()
            .find(|(d, _)| *d == t.dtype)
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("numpy has no {} dtype: use .safetensors", t.dtype))?;
        let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // Pad with spaces so that the data starts on a 64-byte boundary; end with a newline.
        let total = 10 + header.len() + 1;
        header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
        header.push('\n');
        let len = u16::try_from(header.len()).map_err(|_| "shape too long".to_string())?;
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        push_u16(&mut out, len);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&t.data);
        Ok(out)
    }

    fn push_u16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn push_u32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// CRC-32 (IEEE), as zip stores it.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every single-byte corruption of a small file is an error or a different checkpoint,
        /// never a panic.
        #[test]
        fn corrupt_files_never_panic() {
            let checkpoint = Checkpoint {
                tensors: vec![(
                    "w".into(),
                    RawTensor::new(Dtype::F16, vec![2, 1], vec![1, 2, 3, 4]).unwrap(),
                )],
                metadata: None,
            };
            for format in [Format::Npz, Format::Safetensors] {
                let bytes = checkpoint.to_bytes(format).unwrap();
                for at in 0..bytes.len() {
                    for flip in [0x01u8, 0x80, 0xff] {
                        let mut broken = bytes.clone();
                        broken[at] ^= flip;
                        let _ = Checkpoint::from_bytes(&broken, format);
                    }
                    let _ = Checkpoint::from_bytes(&bytes[..at], format);
                }
            }
        }

        #[test]
        fn crc_of_a_known_string() {
            assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        }

        #[test]
        fn npz_round_trips() {
            let checkpoint = Checkpoint {
                tensors: vec![
                    (
                        "a.weight".into(),
                        RawTensor::new(Dtype::F32, vec![2, 3], (0..24).collect()).unwrap(),
                    ),
                    (
                        "b".into(),
                        RawTensor::new(Dtype::I64, vec![1], vec![7, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
                    ),
                ],
                metadata: None,
            };
            let bytes = serialize(&checkpoint).unwrap();
            assert_eq!(parse(&bytes).unwrap(), checkpoint);
            let mut broken = bytes.clone();
            broken[120] ^= 1;
            assert!(parse(&broken).is_err());
            assert!(parse(&bytes[..bytes.len() - 3]).is_err());
        }
    }
}
