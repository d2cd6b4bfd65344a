"""Flax NNX glue for scaled_dot_product_attention: `jax.nn.dot_product_attention` (implementation
"xla"), the op `flax.nnx.dot_product_attention` delegates to without dropout; called directly because
the Flax wrapper has no `scale` argument (pre-scaling the query would round differently from torch).

Conversions around the fused op:
- layout: torch's (..., H, L, E) -> the spec's `layouts` for the framework, JAX's (B, L, H, E):
  leading dimensions broadcast and flattened into B, and back for the output.
- attn_mask: torch's mask as its additive float32 bias (bool False -> -inf), given as `bias`, which
  JAX adds to the scaled scores in float32 as torch does (JAX's boolean `mask` is a select and would
  hide a NaN key that torch's add keeps).
- rows with nothing to attend: JAX gives NaN (all -inf) there; the glue puts torch's 0 (`_sdpa.finish`).
- is_causal: passed as is: JAX's causal mask is the top-left tril(ones(L, S)), torch's, also for L != S.
- scale: passed as is (None -> torch's 1/sqrt(E), computed by the glue).
- enable_gqa: key/value heads kept (JAX groups query head h onto key/value head h // (Hq / Hkv), torch's
  repeat_interleave); key and value with different head counts are repeated to the query's.
- value head size != query head size (JAX wants them equal): the smaller of (query, key) and value is
  zero-padded to a common size; zeros add nothing to a score and the padded output columns are sliced
  off, so the result is exact.
- dropout: unsupported (JAX's random numbers cannot reproduce torch's).
"""
import jax
import numpy as np

from . import _sdpa

FRAMEWORK = "flax_nnx"
API, STRATEGY, SUPPORT = _sdpa.describe(FRAMEWORK)


@_sdpa.checked_keywords
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch's scaled dot-product attention, run by JAX; numpy in and out, torch's conventions."""
    args = _sdpa.parse(FRAMEWORK, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    call = _sdpa.canonical(args, native_gqa=True)
    if call.empty:
        return _sdpa.finish(call, None)
    q, k, v = (_sdpa.to_native(FRAMEWORK, name, x) for name, x in zip(("query", "key", "value"),
                                                                    _sdpa.equal_head_sizes(call)))
    out = jax.nn.dot_product_attention(
        q, k, v, bias=call.bias, scale=call.scale, is_causal=call.is_causal, implementation="xla",
    )
    return _sdpa.finish(call, _sdpa.from_native(FRAMEWORK, "output", np.asarray(out))[..., : call.ev])
