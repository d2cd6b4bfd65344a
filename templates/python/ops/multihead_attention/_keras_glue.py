"""The MultiheadAttention glue shared by the Keras-based framework modules (`keras` on JAX, `tensorflow`):
`TorchMultiHeadAttention`, a `keras.layers.MultiHeadAttention` subclass with what the reference has and
Keras lacks, and `KerasGlue`, the module functions (`build`, `load_state_dict`, `state_dict`, `forward`)
for one framework module, whose spec facts (FRAMEWORK, BACKEND, SUPPORT, the argument and weight maps) it
reads. The framework module sets KERAS_BACKEND before it imports this module, which imports Keras."""
import math
import warnings

import keras
import numpy as np
from keras import ops

from . import _common

# Features the glue runs on the subclass's own attention (`TorchMultiHeadAttention.torch_attention`);
# a call using none of them goes through Keras's `MultiHeadAttention.call`.
SUBCLASS_FEATURES = frozenset({"float_masks", "per_head_attn_mask", "fully_masked_rows"})
# Features the subclass adds to Keras's `call` itself (and to `torch_attention`).
CALL_FEATURES = frozenset({"add_bias_kv", "add_zero_attn"})
# Features the glue emulates on either route by reshaping inputs and outputs.
LAYOUT_FEATURES = frozenset({"seq_first_layout", "unbatched"})


def _add(x, y):
    """x + y with y broadcast to x's shape first.

    Keras's TensorFlow backend turns `ops.add(x, y)` into `tf.nn.bias_add` when y has one non-unit
    dimension matching x's axis 1 or last axis (keras-team/keras#20386), adding along the wrong axis
    when y was meant for another one: a (num_heads, 1) projection bias on (N, T, num_heads, 1) with
    T == num_heads, a head-broadcast mask with L == num_heads. A y of x's full shape is always added
    elementwise.
    """
    return ops.add(x, ops.broadcast_to(ops.cast(y, x.dtype), ops.shape(x)))


def check_backend(framework, backend):
    """Keras must run on the framework module's backend."""
    if keras.backend.backend() != backend:
        raise ImportError(
            f"{framework} glue needs Keras on the {backend!r} backend, but Keras runs on "
            f"{keras.backend.backend()!r}: set KERAS_BACKEND={backend} before Keras is first imported"
        )


def check_support_table(framework, support):
    """The spec's support table must say what this glue does."""
    for name in SUBCLASS_FEATURES | CALL_FEATURES:
        if support[name][0] != "emulated":
            raise ImportError(f"{framework}: the spec marks `{name}` {support[name][0]}, but the glue emulates it")
    for name, (status, _) in support.items():
        if status == "emulated" and name not in SUBCLASS_FEATURES | CALL_FEATURES | LAYOUT_FEATURES:
            raise ImportError(f"{framework}: the spec marks `{name}` emulated, but the glue has no emulation for it")


@keras.saving.register_keras_serializable(package="mha_glue")
class TorchMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` plus what the reference has and Keras lacks.

    - `add_bias_kv`: learned `bias_k` / `bias_v` (embed_dim each, split per head like the projections)
      appended to the projected keys and values;
    - `add_zero_attn`: a zero key and value appended after them;
    - `torch_attention`: attention with an additive float mask (per head or broadcast, may hold -inf) and
      the reference's result for fully masked query rows.

    Keras's `call` honours `add_bias_kv` / `add_zero_attn` too (the appended positions are attendable:
    `attention_mask` is padded with True), so the layer also works as a plain Keras layer.
    """

    def __init__(self, num_heads, key_dim, add_bias_kv=False, add_zero_attn=False, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.add_bias_kv = bool(add_bias_kv)
        self.add_zero_attn = bool(add_zero_attn)
        self.bias_k = None
        self.bias_v = None

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if self.add_bias_kv:
            # The reference initialises bias_k / bias_v (1, 1, E) with xavier_normal_: std = sqrt(1 / E).
            for offset, (name, dim) in enumerate((("bias_k", self._key_dim), ("bias_v", self._value_dim))):
                width = self._num_heads * dim
                seed = None if self.seed is None else self.seed + 1000 + offset
                weight = self.add_weight(
                    name=name, shape=(width,), dtype=self.variable_dtype,
                    initializer=keras.initializers.RandomNormal(stddev=math.sqrt(1.0 / width), seed=seed),
                )
                setattr(self, name, weight)

    def get_config(self):
        config = super().get_config()
        config.update(add_bias_kv=self.add_bias_kv, add_zero_attn=self.add_zero_attn)
        return config

    def _append_extra_keys(self, key, value):
        batch = ops.shape(key)[0]
        if self.add_bias_kv:
            extra = []
            for tensor, bias, dim in ((key, self.bias_k, self._key_dim), (value, self.bias_v, self._value_dim)):
                row = ops.reshape(ops.cast(bias, tensor.dtype), (1, 1, self._num_heads, dim))
                extra.append(ops.concatenate([tensor, ops.broadcast_to(row, (batch, 1, self._num_heads, dim))], axis=1))
            key, value = extra
        if self.add_zero_attn:
            key = ops.concatenate([key, ops.zeros_like(key[:, :1])], axis=1)
            value = ops.concatenate([value, ops.zeros_like(value[:, :1])], axis=1)
        return key, value

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        extra = int(self.add_bias_kv) + int(self.add_zero_attn)
        if extra:
            key, value = self._append_extra_keys(key, value)
            if attention_mask is not None:
                attention_mask = ops.cast(attention_mask, "bool")
                pad = ops.ones(tuple(ops.shape(attention_mask)[:-1]) + (extra,), dtype="bool")
                attention_mask = ops.concatenate([attention_mask, pad], axis=-1)
        return super()._compute_attention(query, key, value, attention_mask, training, return_attention_scores,
                                          **kwargs)

    @staticmethod
    def _project(dense, x):
        """An EinsumDense sublayer's projection (its equation, kernel and bias) with `_add` for the bias."""
        y = ops.einsum(dense.equation, x, ops.cast(dense.kernel, x.dtype))
        return y if dense.bias is None else _add(y, dense.bias)

    def torch_attention(self, query, key, value, mask=None, dead_rows=None, training=False):
        """The reference's attention on this layer's weights.

        query (N, L, E), key (N, S, kdim), value (N, S, vdim); `mask` None or float32 (N, H or 1, L, S')
        added to the scores (S' counts the appended keys); `dead_rows` None or bool (N, H or 1, L, 1): rows
        whose weights become 0 (the reference's result for a fully masked row when it returns no
        weights). Returns (output (N, L, E), weights (N, H, L, S')).
        """
        q = self._project(self._query_dense, query)
        k, v = self._append_extra_keys(self._project(self._key_dense, key), self._project(self._value_dense, value))
        q = ops.multiply(q, ops.cast(self._inverse_sqrt_key_dim, q.dtype))
        scores = ops.einsum("nlhd,nshd->nhls", q, k)
        if mask is not None:
            scores = _add(scores, mask)
        # softmax written out so that an all -inf row gives NaN, as the reference's softmax does
        shifted = ops.exp(ops.subtract(scores, ops.max(scores, axis=-1, keepdims=True)))
        weights = ops.divide(shifted, ops.sum(shifted, axis=-1, keepdims=True))
        if dead_rows is not None:
            weights = ops.where(dead_rows, ops.zeros_like(weights), weights)
        attended = weights
        if training and self._dropout > 0.0:
            attended = self._dropout_layer(weights, training=True)
        output = ops.einsum("nhls,nshd->nlhd", attended, v)
        return self._project(self._output_dense, output), weights


def _variable(framework, layer, name):
    obj = layer
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{framework}: layer has no weight `{name}`")
    return obj


def _tensor(x):
    return ops.convert_to_tensor(x)


def _numpy(x):
    """A backend tensor or Keras variable as a float32 numpy array."""
    x = ops.convert_to_tensor(x)
    # TensorFlow tensors: `.numpy()`, since np.array(tensor) warns about the `copy` keyword on NumPy 2
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)


def _native_call_exact(cfg, call):
    """Whether Keras's own call computes this exactly (beyond the features it cannot express).

    On the TensorFlow backend, EinsumDense adds a (num_heads, 1) bias (head_dim 1) to (N, T, num_heads, 1)
    along T when T == num_heads (see `_add`): such calls run on the subclass.
    """
    if keras.backend.backend() == "tensorflow" and cfg.head_dim == 1 and cfg.num_heads > 1:
        return cfg.num_heads not in (call.tgt_len, call.src_len)
    return True


def route(cfg, call):
    """"native" (Keras's own call) or "subclass" (`torch_attention`) for a prepared call."""
    if _common.call_features(cfg, call) & SUBCLASS_FEATURES or not _native_call_exact(cfg, call):
        return "subclass"
    return "native"


def _run_native(layer, call):
    attend = None
    if call.mask is not None:
        # Only bool masks, broadcast over heads, reach here: 0 = attend, -inf = masked.
        attend = _tensor(np.ascontiguousarray(call.mask[:, 0] == 0))
    with warnings.catch_warnings():
        # A single key position (S = 1) is valid attention; Keras warns about its size-1 softmax.
        warnings.filterwarnings("ignore", message="You are using a softmax over axis", category=UserWarning)
        result = layer(
            _tensor(call.query), _tensor(call.value), key=_tensor(call.key), attention_mask=attend,
            return_attention_scores=call.need_weights, training=call.training,
        )
    out, weights = result if call.need_weights else (result, None)
    return out, weights


def _run_subclass(layer, call):
    mask = dead = None
    if call.mask_ext is not None:
        mask = _tensor(call.mask_ext)
        if not call.need_weights:
            # The reference returns no weights through a fused kernel that gives 0 attention (not NaN)
            # to a fully masked row; with weights it gives NaN.
            dead_rows = np.all(np.isneginf(call.mask_ext), axis=-1, keepdims=True)
            dead = _tensor(dead_rows) if dead_rows.any() else None
    return layer.torch_attention(
        _tensor(call.query), _tensor(call.key), _tensor(call.value), mask=mask, dead_rows=dead,
        training=call.training,
    )


class KerasGlue:
    """The module functions of one Keras-based framework module `module` (its FRAMEWORK, BACKEND, SUPPORT,
    `_config`, `native_kwargs`, `weight_map` and `native_weight_shapes`)."""

    def __init__(self, module):
        self.module = module
        self.framework = module.FRAMEWORK
        check_backend(module.FRAMEWORK, module.BACKEND)
        check_support_table(module.FRAMEWORK, module.SUPPORT)

    def build(self, cfg, native_extra):
        """Creates the native layer (with Keras's own initialisation) for the resolved config `cfg`."""
        kwargs = self.module.native_kwargs(cfg)
        kwargs.setdefault("dtype", "float32")
        kwargs.update(native_extra)
        layer = TorchMultiHeadAttention(add_bias_kv=cfg.add_bias_kv, add_zero_attn=cfg.add_zero_attn, **kwargs)
        layer.build((None, None, cfg.embed_dim), (None, None, cfg.vdim), (None, None, cfg.kdim))
        layer._mha_config = cfg
        return layer

    def load_state_dict(self, layer, state, prefix=""):
        """Loads `state` (reference names -> float32 arrays; with `prefix`, those under it, e.g. a whole
        model's checkpoint and "layers.0.self_attn.") into `layer`; returns the layer."""
        framework = self.framework
        state = _common.select_prefix(framework, state, prefix)
        cfg = self.module._config(layer)
        native = _common.to_native(framework, state, cfg, self.module.weight_map(cfg))
        for name, arr in native.items():
            var = _variable(framework, layer, name)
            if tuple(var.shape) != arr.shape:
                raise ValueError(f"{framework}: `{name}` is {tuple(var.shape)}, state gives {arr.shape}")
        for name, arr in native.items():
            _variable(framework, layer, name).assign(arr)
        return layer

    def state_dict(self, layer):
        """The layer's weights as reference names -> float32 numpy arrays."""
        cfg = self.module._config(layer)
        native = {
            name: _numpy(_variable(self.framework, layer, name))
            for name in self.module.native_weight_shapes(cfg)
        }
        return _common.from_native(self.framework, native, cfg, self.module.weight_map(cfg))

    def forward(self, layer, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False, training=False, force_route=None):
        """Runs the layer with the reference's conventions; returns (attn_output, attn_weights or None).
        `force_route` ("native" or "subclass") picks the route instead of `route`."""
        cfg = self.module._config(layer)
        call = _common.prepare_call(cfg, query, key, value, key_padding_mask, need_weights, attn_mask,
                                    average_attn_weights, is_causal, training)
        _common.refuse_unsupported(self.framework, self.module.SUPPORT, cfg, call)
        chosen = force_route or route(cfg, call)
        if chosen == "native":
            if route(cfg, call) != "native":
                raise ValueError(f"{self.framework}: this call needs the subclass route")
            out, weights = _run_native(layer, call)
        elif chosen == "subclass":
            out, weights = _run_subclass(layer, call)
        else:
            raise ValueError(f"unknown route {chosen!r}")
        out = _numpy(out)
        weights = _numpy(weights) if call.need_weights else None
        return _common.finish(cfg, call, out, weights)
