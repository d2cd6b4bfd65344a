//! Sizes the runtime can hold: every shape product checked, and allocations that cannot succeed
//! refused with [`MhaError::TooLarge`] before they are made.
//!
//! Two bounds apply. [`MAX_TENSOR_BYTES`] is what one Rust allocation (and ndarray) can address
//! at all; the `#[attention_layer]` macro applies it at compile time. At run time the memory of
//! the machine (RAM plus swap, from `/proc/meminfo` where there is one) bounds a layer's weights
//! and one forward call's buffers: an allocation past it would abort the process.

use std::sync::OnceLock;

use crate::{MhaError, MultiheadAttentionConfig};

/// The largest tensor, in bytes, one allocation can hold (`isize::MAX`).
pub const MAX_TENSOR_BYTES: usize = isize::MAX as usize;

const F32_BYTES: usize = std::mem::size_of::<f32>();

/// RAM plus swap, in bytes, read once; `usize::MAX` where the system does not say.
fn memory_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
            return usize::MAX;
        };
        let kib = |key: &str| -> Option<usize> {
            let line = info.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        match kib("MemTotal:") {
            Some(total) => total
                .saturating_add(kib("SwapTotal:").unwrap_or(0))
                .saturating_mul(1024),
            None => usize::MAX,
        }
    })
}

/// The bytes of an f32 tensor of `dims`, or `TooLarge` naming `what` when the product overflows
/// or passes [`MAX_TENSOR_BYTES`].
pub(crate) fn tensor_bytes(what: &str, dims: &[usize]) -> Result<usize, MhaError> {
    let bytes = dims
        .iter()
        .try_fold(F32_BYTES, |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= MAX_TENSOR_BYTES);
    bytes.ok_or_else(|| MhaError::TooLarge {
        what: format!("{what} {dims:?}"),
        bytes: dims
            .iter()
            .try_fold(F32_BYTES as u128, |acc, &d| acc.checked_mul(d as u128)),
        limit: MAX_TENSOR_BYTES,
    })
}

/// Refuses `total` bytes for `what` past the machine's memory.
fn fits_in_memory(what: String, total: usize) -> Result<(), MhaError> {
    let limit = memory_limit();
    if total > limit {
        return Err(MhaError::TooLarge {
            what,
            bytes: Some(total as u128),
            limit,
        });
    }
    Ok(())
}

/// The weights of `config`: each tensor addressable, all of them together in memory.
pub(crate) fn check_weights(config: &MultiheadAttentionConfig) -> Result<(), MhaError> {
    let mut total = 0usize;
    for w in config.weight_shapes() {
        let bytes = tensor_bytes(&format!("weight `{}`", w.name), &w.shape)?;
        total = total.saturating_add(bytes);
    }
    fits_in_memory("the layer's weights".into(), total)
}

/// One forward call's largest buffers (the projected query, keys and values, the output and,
/// when asked for, the attention weights) for batch `n`, target length `l`, source length `s`.
/// Returns `s` plus the appended key positions.
pub(crate) fn check_forward(
    config: &MultiheadAttentionConfig,
    n: usize,
    l: usize,
    s: usize,
    need_weights: bool,
) -> Result<usize, MhaError> {
    let e = config.embed_dim;
    let s_total = s
        .checked_add(config.extra_keys())
        .ok_or_else(|| MhaError::TooLarge {
            what: format!("the source length S = {s} plus the appended keys"),
            bytes: None,
            limit: MAX_TENSOR_BYTES,
        })?;
    let mut buffers = vec![
        tensor_bytes("the projected query (N, L, E)", &[n, l, e])?,
        tensor_bytes("the projected keys (N, S', E)", &[n, s_total, e])?,
        tensor_bytes("the projected values (N, S', E)", &[n, s_total, e])?,
        tensor_bytes("the output (N, L, E)", &[n, l, e])?,
    ];
    if need_weights {
        let heads = config.num_heads;
        buffers.push(tensor_bytes(
            "the attention weights (N, H, L, S')",
            &[n, heads, l, s_total],
        )?);
    }
    let total = buffers.iter().fold(0usize, |a, b| a.saturating_add(*b));
    fits_in_memory(
        format!("a forward call with N = {n}, L = {l}, S = {s}, E = {e}"),
        total,
    )?;
    Ok(s_total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_checked() {
        assert_eq!(tensor_bytes("x", &[2, 3]).ok(), Some(24));
        assert!(tensor_bytes("x", &[usize::MAX, 2]).is_err());
        assert!(tensor_bytes("x", &[1 << 31, 1 << 31]).is_err());
        assert_eq!(tensor_bytes("x", &[0, usize::MAX]).ok(), Some(0));
    }
}
