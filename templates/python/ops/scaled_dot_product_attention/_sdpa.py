"""Framework-agnostic part of the scaled_dot_product_attention glue (numpy only).

Every framework module of this op offers `scaled_dot_product_attention(query, key, value, attn_mask=None,
dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)` with numpy arrays in and out in the
reference's (torch's) conventions. This module holds what they share:

- `parse` checks a call as torch does and refuses what torch refuses, with one message format:
  inputs of rank >= 2 `(..., H, L, E)`; key and value of one length S; `enable_gqa` needs a head axis
  (rank >= 3) whose key/value head counts divide the query's; leading dimensions broadcast; the mask
  is bool (True = takes part) or float (added to the scores), of rank >= 2, and broadcasts to the
  scores `(..., Hq, L, S)` without enlarging them; `is_causal` is not combined with a mask;
  `dropout_p` lies in [0, 1] and a positive one is refused where the spec marks dropout unsupported.
- `canonical` turns a parsed call into what fused kernels take: float32 `(B, H, L, E)` inputs with
  every leading dimension broadcast and flattened into B, key/value heads either kept (for kernels
  with grouped-query attention) or repeated to the query's (torch's `repeat_interleave`), and the
  mask as torch's own additive float32 bias (bool False -> -inf) of a broadcastable `(B|1, H|1, L|1,
  S|1)` shape. An additive bias rather than a boolean select keeps torch's NaN propagation: torch
  adds its mask to the scores, so a NaN key stays NaN where it is masked.
- `finish` puts a kernel's `(B, H, L, Ev)` result back into torch's layout and applies torch's rule
  for rows that have nothing to attend: a query row whose scores are all -inf or NaN (every key
  masked, a NaN query, every visible key NaN; S = 0) gives probabilities 0, so its output is
  0 · sum(value) — 0, or NaN in the value columns that hold a NaN or an infinity. Fused kernels give a
  uniform average or NaN there instead. The rule is the one of torch's CPU kernels at the fixture
  sizes and of mha's runtime; it is found from the mask, the NaN positions of query/key and the
  causal triangle in O(mask + L + S) work, never from an L x S score matrix (only NaN keys together
  with a mask need the mask's broadcast with the key axis).

The glue computes in float32: float inputs of other widths (and torch bfloat16 tensors) are converted.
"""
import math
import numbers

import numpy as np

from .._shared import UnsupportedFeature, keywords, permute
from . import _spec

OP = _spec.CALL


def checked_keywords(fn):
    """Decorator: a misspelt keyword is a TypeError that suggests the closest argument of the spec's call."""
    return keywords(fn, tuple(_spec.SIGNATURE))


def describe(framework):
    """(API, STRATEGY, SUPPORT) of `framework` as the spec gives them; SUPPORT: feature -> (status, reason)."""
    fw = _spec.FRAMEWORKS[framework]
    return fw["api"], fw["strategy"], _spec.SUPPORT[framework]


def backend(framework):
    """The backend the spec names for `framework` (Keras's KERAS_BACKEND), or None."""
    return _spec.FRAMEWORKS[framework]["backend"]


class Args:
    """A checked call: float32 arrays as given (not broadcast) and the resolved options."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _as_array(value, name):
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()  # exact: every bfloat16 is a float32
        value = value.numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{OP}: `{name}` is not array-like ({type(value).__name__}): {exc}") from None
    if arr.dtype.name == "bfloat16":  # ml_dtypes (JAX): exact in float32
        arr = arr.astype(np.float32)
    return arr


def _float_input(value, name):
    arr = _as_array(value, name)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{OP}: `{name}` must hold floats, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{OP}: `{name}` must be at least 2-D (..., L, E), got shape {arr.shape}")
    return np.asarray(arr, dtype=np.float32)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{OP}: `{name}` must be a bool, got {value!r}")
    return bool(value)


def _real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{OP}: `{name}` must be a float, got {value!r}")
    return float(value)


def _broadcast(shapes, what):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"{OP}: {what} do not broadcast: {', '.join(str(tuple(s)) for s in shapes)}") from None


def parse(framework, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """Checks a call as torch does; returns its `Args` (raises ValueError / TypeError /
    UnsupportedFeature)."""
    q = _float_input(query, "query")
    k = _float_input(key, "key")
    v = _float_input(value, "value")
    is_causal = _flag(is_causal, "is_causal")
    enable_gqa = _flag(enable_gqa, "enable_gqa")
    dropout_p = _real(dropout_p, "dropout_p")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{OP}: dropout_p must lie in [0, 1], got {dropout_p}")
    if scale is not None:
        scale = _real(scale, "scale")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{OP}: query and key must have the same head size E, got query {q.shape} and key {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{OP}: key and value must have the same length S, got key {k.shape} and value {v.shape}")
    l, e, s, ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]

    kv_reps = (1, 1)
    if enable_gqa:
        if min(q.ndim, k.ndim, v.ndim) < 3:
            raise ValueError(f"{OP}: enable_gqa needs a head axis (inputs of rank >= 3, (..., H, L, E)), "
                             f"got query {q.shape}, key {k.shape}, value {v.shape}")
        hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
        if hk == 0 or hv == 0 or hq % hk or hq % hv:
            raise ValueError(f"{OP}: with enable_gqa the key and value head counts ({hk}, {hv}) must divide "
                             f"the query's ({hq})")
        kv_reps = (hq // hk, hq // hv)
    k_lead = _repeated_lead(k.shape[:-2], kv_reps[0])
    v_lead = _repeated_lead(v.shape[:-2], kv_reps[1])
    try:
        scores_lead = tuple(np.broadcast_shapes(q.shape[:-2], k_lead))
        out_lead = tuple(np.broadcast_shapes(scores_lead, v_lead))
    except ValueError:
        hint = ""
        if not enable_gqa and min(q.ndim, k.ndim) >= 3 and q.shape[-3] != k.shape[-3] and k.shape[-3] \
                and q.shape[-3] % k.shape[-3] == 0:
            hint = " (the head counts differ: pass enable_gqa=True for grouped-query attention)"
        raise ValueError(f"{OP}: the leading dimensions of query {q.shape}, key {k.shape} and value {v.shape} "
                         f"do not broadcast{hint}") from None

    mask = None
    if attn_mask is not None:
        if is_causal:
            raise ValueError(f"{OP}: attn_mask must be None when is_causal=True (torch refuses both together)")
        mask = _as_array(attn_mask, "attn_mask")
        if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.floating):
            raise TypeError(f"{OP}: attn_mask must be a bool mask (True = takes part) or a float mask "
                            f"(added to the scores), got dtype {mask.dtype}")
        if mask.ndim < 2:
            raise ValueError(f"{OP}: attn_mask must be at least 2-D (..., L, S), got shape {mask.shape}")
        scores = scores_lead + (l, s)
        if len(mask.shape) > len(scores) or _broadcast([mask.shape, scores], "attn_mask and the scores") != scores:
            raise ValueError(f"{OP}: attn_mask of shape {mask.shape} does not broadcast to the scores' shape "
                             f"{scores} (..., Hq, L, S)")
        if mask.dtype != np.bool_:
            mask = np.asarray(mask, dtype=np.float32)

    status, why = _spec.SUPPORT[framework]["dropout"]
    if dropout_p > 0 and status == "unsupported":
        raise UnsupportedFeature(framework, "dropout", why, op=OP, what=_spec.FEATURES["dropout"])
    return Args(
        framework=framework, query=q, key=k, value=v, mask=mask, dropout_p=dropout_p, is_causal=is_causal,
        scale=scale, enable_gqa=enable_gqa, kv_reps=kv_reps, out_lead=out_lead, l=l, e=e, s=s, ev=ev,
    )


def _repeated_lead(lead, reps):
    if reps == 1:
        return tuple(lead)
    return tuple(lead[:-1]) + (lead[-1] * reps,)


def default_scale(e):
    """torch's default: 1 / sqrt(E), E the query's head size."""
    return 1.0 / math.sqrt(e) if e else math.inf


class Call:
    """A call in the form fused kernels take (see `canonical`)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def empty(self):
        """No kernel needed: the output has no elements, or there are no keys (every row gives 0)."""
        return 0 in (self.batch, self.heads, self.l, self.ev) or self.s == 0


def _to_bhle(x, lead, heads_axis):
    """`x` (..., n, d) broadcast to `lead[:-1] + (heads_axis,)` and flattened to (B, heads, n, d)."""
    batch = lead[:-1]
    x = x.reshape((1,) * (len(lead) + 2 - x.ndim) + x.shape)
    x = np.broadcast_to(x, batch + (heads_axis,) + x.shape[-2:])
    return np.ascontiguousarray(x.reshape((math.prod(batch), heads_axis) + x.shape[-2:]), dtype=np.float32)


def _heads(x, reps, native):
    """The head axis of a key/value array: kept for a kernel with grouped-query attention, else
    repeated `reps` times per head (torch's repeat_interleave)."""
    if reps == 1 or native:
        return x
    return np.repeat(x, reps, axis=-3)


def canonical(args, native_gqa):
    """`args` as float32 (B, H, L, E) arrays (see the module doc).

    native_gqa: the kernel groups query heads over key/value heads as torch's repeat_interleave does
    (query head h uses key/value head h // (Hq / Hkv)); then the key/value head axes are kept when
    key and value have the same number of heads. The Call's `kv_heads` says which.
    """
    lead = args.out_lead or (1,)
    heads = lead[-1]
    keep = native_gqa and args.enable_gqa and args.kv_reps[0] == args.kv_reps[1] and args.kv_reps[0] > 1
    k = _heads(args.key, args.kv_reps[0], keep)
    v = _heads(args.value, args.kv_reps[1], keep)
    kv_heads = heads // args.kv_reps[0] if keep else heads
    query = _to_bhle(args.query, lead, heads)
    key = _to_bhle(k, lead, kv_heads)
    value = _to_bhle(v, lead, kv_heads)
    bias = None
    if args.mask is not None:
        m = args.mask
        m = m.reshape((1,) * (len(lead) + 2 - m.ndim) + m.shape)
        if all(d == 1 for d in m.shape[:-3]):
            m = m.reshape(m.shape[-3:])[None]
        else:
            m = np.broadcast_to(m, lead[:-1] + m.shape[-3:]).reshape((-1,) + m.shape[-3:])
        if m.dtype == np.bool_:
            bias = np.where(m, np.float32(0.0), np.float32(-np.inf))
        else:
            bias = np.ascontiguousarray(m, dtype=np.float32)
    scale = default_scale(args.e) if args.scale is None else args.scale
    call = Call(
        query=query, key=key, value=value, bias=bias, is_causal=args.is_causal, scale=scale,
        batch=query.shape[0], heads=heads, kv_heads=kv_heads, l=args.l, e=args.e, s=args.s, ev=args.ev,
        out_shape=tuple(args.out_lead) + (args.l, args.ev),
    )
    call.dead = _dead_rows(call)
    return call


def _per_query_head(x, call):
    """(B, kv_heads, ...) -> (B, heads, ...) (each key/value head serves its group of query heads)."""
    return x if call.kv_heads == call.heads else np.repeat(x, call.heads // call.kv_heads, axis=1)


def _dead_rows(call):
    """Bool, broadcastable to (B, H, L): rows whose scores are all -inf or NaN; None when there are none."""
    if call.s == 0:
        return None  # `empty`: every row is 0, no kernel runs
    dead = None
    nan_key = np.isnan(call.key).any(axis=-1)  # (B, Hkv, S)
    any_nan_key = bool(nan_key.any())
    nan_key = _per_query_head(nan_key, call) if any_nan_key else None
    if call.bias is not None:
        masked = np.isneginf(call.bias) | np.isnan(call.bias)  # (B|1, H|1, L|1, S|1)
        if any_nan_key:
            masked = masked | nan_key[:, :, None, :]
        dead = masked.all(axis=-1)
    elif any_nan_key and call.is_causal:
        # Row l sees keys 0..l: dead when every one of them is NaN (torch's causal mask hides the rest).
        prefix = np.logical_and.accumulate(nan_key, axis=-1)
        dead = prefix[..., np.minimum(np.arange(call.l), call.s - 1)]
    elif any_nan_key:
        dead = nan_key.all(axis=-1)[..., None]
    nan_query = np.isnan(call.query).any(axis=-1)  # (B, H, L)
    if nan_query.any():
        dead = nan_query if dead is None else (dead | nan_query)
    if dead is None or not dead.any():
        return None
    return dead


def _layout(framework, name):
    return tuple(_spec.FRAMEWORKS[framework]["layouts"].get(name, _spec.SHAPES[name]))


def to_native(framework, name, array):
    """A canonical (B, H, n, d) tensor `name` (query, key, value) in `framework`'s layout, as the spec's
    `layouts` give it (the reference's when unlisted)."""
    return permute(array, _spec.SHAPES[name], _layout(framework, name))


def from_native(framework, name, array):
    """A result `name` (output) of `framework`'s op back in the reference's layout."""
    return permute(array, _layout(framework, name), _spec.SHAPES[name])


def equal_head_sizes(call):
    """(query, key, value) of `call` zero-padded on the last axis to one head size, max(E, Ev), for kernels
    that want the value's head size equal to the query's: zeros add nothing to a score, and the output's
    padded columns (`[..., :call.ev]` drops them) are 0 · probabilities. Exact."""
    width = max(call.e, call.ev)

    def pad(x):
        if x.shape[-1] == width:
            return x
        return np.concatenate([x, np.zeros(x.shape[:-1] + (width - x.shape[-1],), dtype=np.float32)], axis=-1)

    return pad(call.query), pad(call.key), pad(call.value)


def finish(call, out):
    """A kernel's (B, H, L, Ev) result -> torch's layout, with torch's rows of nothing to attend."""
    if call.empty:
        return np.zeros(call.out_shape, dtype=np.float32)
    out = np.asarray(out, dtype=np.float32)
    want = (call.batch, call.heads, call.l, call.ev)
    if out.shape != want:
        raise ValueError(f"{OP}: the kernel returned shape {out.shape}, expected {want}")
    if call.dead is not None:
        # probabilities 0: 0 * sum(value) is NaN in a column that holds a NaN or an infinity
        fill = np.where(np.isfinite(call.value).all(axis=-2), np.float32(0.0), np.float32(np.nan))
        fill = _per_query_head(fill, call)[:, :, None, :]  # (B, H, 1, Ev)
        out = np.where(call.dead[..., None], fill, out)
    return np.ascontiguousarray(out.reshape(call.out_shape), dtype=np.float32)
