//! What the runtime adds to the generated [`MultiheadAttentionConfig`].

use crate::{MhaError, MultiheadAttentionConfig};

impl MultiheadAttentionConfig {
    /// [`validate`](Self::validate) as an [`MhaError::InvalidConfig`] naming every violation.
    ///
    /// ```
    /// use mha_runtime::MultiheadAttentionConfig;
    ///
    /// let err = MultiheadAttentionConfig::new(10, 3).check().unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid MultiheadAttention config: invalid `num_heads`: embed_dim (10) must be divisible by num_heads (3)"
    /// );
    /// ```
    ///
    /// Also refuses a config whose weights no allocation, or not this machine's memory, can hold
    /// ([`MhaError::TooLarge`]).
    pub fn check(&self) -> Result<(), MhaError> {
        self.validate().map_err(MhaError::InvalidConfig)?;
        crate::sizes::check_weights(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_derived_dims() {
        let c = MultiheadAttentionConfig::new(12, 3)
            .with_kdim(Some(5))
            .with_add_zero_attn(true);
        assert_eq!(
            (c.kdim_or_default(), c.vdim_or_default(), c.head_dim()),
            (5, 12, 4)
        );
        assert!(!c.packed_in_proj());
        assert_eq!(c.extra_keys(), 1);
        // kdim given explicitly equal to embed_dim still packs, as in torch.
        assert!(MultiheadAttentionConfig::new(12, 3)
            .with_kdim(Some(12))
            .packed_in_proj());
    }

    #[test]
    fn check_reports_every_violation() {
        let err = MultiheadAttentionConfig::new(0, 0)
            .with_dropout(1.5)
            .check()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid MultiheadAttention config: invalid `embed_dim`: must be positive, got 0; \
             invalid `num_heads`: must be positive, got 0; invalid `dropout`: must be below 1, got 1.5"
        );
    }
}
