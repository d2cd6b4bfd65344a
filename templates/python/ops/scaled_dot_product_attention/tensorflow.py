"""TensorFlow glue for scaled_dot_product_attention: `keras.ops.dot_product_attention` on Keras 3's
TensorFlow backend (tensorflow-cpu; there Keras's own einsum/softmax composition, run by TensorFlow).

Set KERAS_BACKEND=tensorflow (done here when unset) before Keras is first imported. The conversions
around the op are listed in `_keras_sdpa`; on this backend Keras repeats key/value heads for grouped-
query attention only when there is more than one (its einsum cannot broadcast a single head), so
multi-query attention is repeated by the glue; value head sizes may differ from the query's.
"""
from . import _keras_sdpa, _sdpa

FRAMEWORK = "tensorflow"
BACKEND = _sdpa.backend(FRAMEWORK)
API, STRATEGY, SUPPORT = _sdpa.describe(FRAMEWORK)
keras = _keras_sdpa.load_keras(FRAMEWORK, BACKEND)


@_sdpa.checked_keywords
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch's scaled dot-product attention, run by TensorFlow; numpy in and out, torch's conventions."""
    args = _sdpa.parse(FRAMEWORK, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return _keras_sdpa.attention(keras, FRAMEWORK, args, gqa_needs_many_kv_heads=True, equal_head_sizes=False)
