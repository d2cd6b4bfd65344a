//! The fast path's entry points on [`MultiheadAttention`].

use ndarray::ArrayViewD;

use super::phases::{timed, Phase};
use super::{forward, selected_isa, Isa};
use crate::prepare::KernelOutput;
use crate::{reference, AttentionOutput, ForwardOptions, MhaError, MultiheadAttention};

impl MultiheadAttention {
    /// [`forward`](Self::forward) on the fast kernels of one instruction-set level (for tests and
    /// benchmarks of each dispatch path). A level this CPU cannot run uses the portable kernels;
    /// what the fast path does not cover (inputs without keys) uses the reference path.
    ///
    /// ```
    /// use mha_runtime::fast::Isa;
    /// use mha_runtime::{ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
    /// use ndarray::ArrayD;
    ///
    /// let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(8, 2), 0)?;
    /// let x = ArrayD::<f32>::ones(vec![5, 3, 8]); // (L, N, E)
    /// let options = ForwardOptions::default();
    /// let portable = layer.forward_with_isa(x.view(), x.view(), x.view(), &options, Isa::Portable)?;
    /// let exact = layer.forward_reference(x.view(), x.view(), x.view(), &options)?;
    /// let err = (&portable.output - &exact.output).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
    /// assert!(err < 1e-5);
    /// # Ok::<(), mha_runtime::MhaError>(())
    /// ```
    pub fn forward_with_isa(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
        isa: Isa,
    ) -> Result<AttentionOutput, MhaError> {
        self.forward_fast::<0>(query, key, value, options, isa)
    }

    /// [`forward`](Self::forward) with kernels whose inner loops see the head dimension
    /// `HEAD_DIM` (`embed_dim / num_heads`) as a constant; used by layers generated for fixed
    /// constants. A `HEAD_DIM` that is not this layer's head dimension runs the dynamic kernels,
    /// so the result is the same either way.
    #[doc(hidden)]
    pub fn forward_with_head_dim<const HEAD_DIM: usize>(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
    ) -> Result<AttentionOutput, MhaError> {
        self.forward_fast::<HEAD_DIM>(query, key, value, options, selected_isa())
    }

    /// Every fast entry point: prepare the call, run the kernels of `isa` (head dimension
    /// `HEAD_DIM`, 0 = dynamic) or the reference path for what they do not cover, finish.
    pub(crate) fn forward_fast<const HEAD_DIM: usize>(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
        isa: Isa,
    ) -> Result<AttentionOutput, MhaError> {
        let prepared = self.prepare(query, key, value, options)?;
        let result: KernelOutput =
            forward::run::<HEAD_DIM>(&self.fast, self.config(), self.weights(), &prepared, isa)
                .unwrap_or_else(|| {
                    reference::attention_checked(self.config(), self.weights(), &prepared)
                });
        Ok(timed(Phase::LayoutCopy, || prepared.finish(result)))
    }
}
