"""Keras glue for scaled_dot_product_attention: `keras.ops.dot_product_attention` on Keras 3's JAX
backend (there: `jax.nn.dot_product_attention`, implementation "xla").

Set KERAS_BACKEND=jax (done here when unset) before Keras is first imported. The conversions around
the fused op are listed in `_keras_sdpa`; on this backend the op groups query heads over key/value
heads itself and wants the value's head size equal to the query's (the glue zero-pads, exactly).
"""
from . import _keras_sdpa, _sdpa

FRAMEWORK = "keras"
BACKEND = _sdpa.backend(FRAMEWORK)
API, STRATEGY, SUPPORT = _sdpa.describe(FRAMEWORK)
keras = _keras_sdpa.load_keras(FRAMEWORK, BACKEND)


@_sdpa.checked_keywords
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch's scaled dot-product attention, run by Keras; numpy in and out, torch's conventions."""
    args = _sdpa.parse(FRAMEWORK, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return _keras_sdpa.attention(keras, FRAMEWORK, args, gqa_needs_many_kv_heads=False, equal_head_sizes=True)
