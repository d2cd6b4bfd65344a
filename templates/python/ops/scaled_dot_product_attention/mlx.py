"""MLX glue for scaled_dot_product_attention: `mlx.core.fast.scaled_dot_product_attention`.

MLX takes torch's layout, (B, H, L, E), 4-D only. Conversions around the fused op:
- leading dimensions broadcast and flattened into B (the op wants one batch size for q, k and v).
- attn_mask: torch's mask as its additive float32 mask (bool False -> -inf): MLX's boolean mask is a
  select and would hide a NaN key that torch's add keeps.
- rows with nothing to attend: MLX gives NaN (all -inf) there; the glue puts torch's 0 (`_sdpa.finish`).
- is_causal: MLX's "causal" mask is aligned bottom-right (the last query sees the last key); torch's is
  the top-left tril(ones(L, S)). The same triangle when L == S, passed as "causal"; for L != S the glue
  passes torch's triangle as a boolean mask (a select, as torch's causal mask: a hidden NaN key stays
  hidden).
- scale: passed as is (None -> torch's 1/sqrt(E), computed by the glue); MLX applies it to the query
  before the product, a rounding away from torch's order, well inside the parity tolerance.
- enable_gqa: key/value heads kept (MLX groups query heads as torch's repeat_interleave); key and value
  with different head counts are repeated to the query's.
- dropout: unsupported (the op has none; MLX's random numbers cannot reproduce torch's).
"""
import mlx.core as mx
import numpy as np

from . import _sdpa

FRAMEWORK = "mlx"
API, STRATEGY, SUPPORT = _sdpa.describe(FRAMEWORK)


@_sdpa.checked_keywords
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch's scaled dot-product attention, run by MLX; numpy in and out, torch's conventions."""
    args = _sdpa.parse(FRAMEWORK, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    call = _sdpa.canonical(args, native_gqa=True)
    if call.empty:
        return _sdpa.finish(call, None)
    mask = None
    if call.bias is not None:
        mask = mx.array(call.bias)
    elif call.is_causal:
        mask = "causal" if call.l == call.s else mx.array(np.tril(np.ones((call.l, call.s), dtype=bool)))
    q, k, v = (mx.array(_sdpa.to_native(FRAMEWORK, name, x))  # MLX's layout is torch's (B, H, n, d)
               for name, x in (("query", call.query), ("key", call.key), ("value", call.value)))
    out = mx.fast.scaled_dot_product_attention(q, k, v, scale=call.scale, mask=mask)
    return _sdpa.finish(call, _sdpa.from_native(FRAMEWORK, "output", np.array(out)))
