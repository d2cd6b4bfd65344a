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
    ///     "MultiheadAttention: `num_heads` must divide `embed_dim` (10), got 3"
    /// );
    /// ```
    ///
    /// Also refuses a config whose weights no allocation, or not this machine's memory, can hold
    /// ([`MhaError::TooLarge`]).
    pub fn check(&self) -> Result<(), MhaError> {
        #[cfg(test)]
        tests::CHECKS.with(|n| n.set(n.get() + 1));
        self.validate().map_err(MhaError::InvalidConfig)?;
        crate::sizes::check_weights(self)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use ndarray::ArrayD;

    use super::*;
    use crate::{MultiheadAttention, Weights};

    thread_local! {
        /// How many times this thread has run [`MultiheadAttentionConfig::check`].
        pub(super) static CHECKS: Cell<usize> = const { Cell::new(0) };
    }

    /// The config checks `load` makes.
    fn checks_in<T>(load: impl FnOnce() -> T) -> usize {
        let before = CHECKS.with(Cell::get);
        let _ = load();
        CHECKS.with(Cell::get) - before
    }

    #[test]
    fn every_load_checks_the_config_once() {
        let config = MultiheadAttentionConfig::new(8, 2).with_add_bias_kv(true);
        let layer = MultiheadAttention::random(config.clone(), 0).unwrap();
        let bytes = layer.to_safetensors_bytes().unwrap();
        let path = std::env::temp_dir().join(format!(
            "mha_checks_once_{}.safetensors",
            std::process::id()
        ));
        layer.save_safetensors(&path).unwrap();
        let tensors: Vec<(String, ArrayD<f32>)> = layer.weights().state_dict();
        let weights: Weights = layer.weights().clone();
        let c = || config.clone();
        let loads: [(&str, usize); 5] = [
            ("random", checks_in(|| MultiheadAttention::random(c(), 1))),
            (
                "new",
                checks_in(|| MultiheadAttention::new(c(), weights.clone())),
            ),
            (
                "from_tensors",
                checks_in(|| MultiheadAttention::from_tensors(c(), tensors.clone())),
            ),
            (
                "from_safetensors",
                checks_in(|| MultiheadAttention::from_safetensors(c(), &path, "")),
            ),
            (
                "from_safetensors_bytes",
                checks_in(|| MultiheadAttention::from_safetensors_bytes(c(), &bytes, "")),
            ),
        ];
        let _ = std::fs::remove_file(&path);
        assert_eq!(loads.map(|(_, n)| n), [1; 5], "{loads:?}");
        // A bad config is refused by that one check, before any weight is looked at.
        let bad = MultiheadAttentionConfig::new(8, 3);
        assert!(matches!(
            MultiheadAttention::from_safetensors_bytes(bad, &bytes, ""),
            Err(MhaError::InvalidConfig(_))
        ));
    }

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
            "MultiheadAttention: `embed_dim` must be positive, got 0; \
             MultiheadAttention: `num_heads` must be positive, got 0; \
             MultiheadAttention: `dropout` must be below 1.0, got 1.5"
        );
    }
}
