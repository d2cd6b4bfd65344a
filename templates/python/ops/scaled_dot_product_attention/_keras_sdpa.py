"""The Keras part of the scaled_dot_product_attention glue, shared by the Keras (JAX backend) and
TensorFlow (Keras on the TensorFlow backend) modules: `keras.ops.dot_product_attention`.

Conversions around the fused op (what it takes differs from torch's conventions):
- layout: torch's (..., H, L, E) -> the spec's `layouts` for the framework, Keras's (B, L, H, E):
  leading dimensions broadcast and flattened into B (the op takes 4-D inputs only), and back.
- attn_mask: torch's mask as its additive float32 bias (bool False -> -inf), given as `bias`, which
  the op adds to the scaled scores in float32 as torch does (Keras's boolean `mask` is a select and
  would hide a NaN key that torch's add keeps).
- rows with nothing to attend: the op gives NaN (all -inf) there; the glue puts torch's 0 (`_sdpa.finish`).
- is_causal: passed as is: Keras's causal mask is the top-left tril(ones(L, S)), torch's, also for L != S.
- scale: passed as is (None -> torch's 1/sqrt(E), computed by the glue).
- enable_gqa: key/value heads kept where the backend groups them as torch's repeat_interleave (JAX:
  jax.nn.dot_product_attention's grouped heads; TensorFlow: Keras repeats heads with tf.repeat, but
  only for more than one key/value head, so multi-query attention is repeated here); key and value with
  different head counts are repeated to the query's by the glue.
- value head size != query head size (JAX only: jax.nn.dot_product_attention wants them equal): the
  smaller of (query, key) and value is zero-padded to a common size; zeros add nothing to a score and
  the padded output columns are sliced off, so the result is exact.
- dropout: unsupported (Keras draws its own random numbers; torch's cannot be reproduced).
"""
import os

from . import _sdpa


def load_keras(framework, backend):
    """Imports Keras on `backend` (set as KERAS_BACKEND when unset) and checks it runs there."""
    os.environ.setdefault("KERAS_BACKEND", backend)
    import keras

    if keras.backend.backend() != backend:
        raise ImportError(
            f"{framework} glue needs Keras on the {backend!r} backend, but Keras runs on "
            f"{keras.backend.backend()!r}: set KERAS_BACKEND={backend} before Keras is first imported"
        )
    return keras


def attention(keras, framework, args, *, gqa_needs_many_kv_heads, equal_head_sizes):
    """Runs a parsed call (`_sdpa.parse`) on keras.ops.dot_product_attention; returns numpy."""
    native_gqa = True
    if gqa_needs_many_kv_heads and args.enable_gqa:
        native_gqa = args.query.shape[-3] // args.kv_reps[0] > 1
    call = _sdpa.canonical(args, native_gqa=native_gqa)
    if call.empty:
        return _sdpa.finish(call, None)
    q, k, v = _sdpa.equal_head_sizes(call) if equal_head_sizes else (call.query, call.key, call.value)
    out = keras.ops.dot_product_attention(
        _sdpa.to_native(framework, "query", q), _sdpa.to_native(framework, "key", k),
        _sdpa.to_native(framework, "value", v),
        bias=call.bias, scale=call.scale, is_causal=call.is_causal, flash_attention=False,
    )
    out = _sdpa.from_native(framework, "output", keras.ops.convert_to_numpy(out))
    return _sdpa.finish(call, out[..., : call.ev])
