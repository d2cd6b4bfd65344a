#!/usr/bin/env python3
"""Generate the torch parity fixture set (format `mha-golden-fixtures/1`).

    scripts/make_torch_fixtures.py [--out DIR] [--runtime-only-out DIR] [--checkpoint-out DIR] [--only NAME ...]

Default DIR is tests/fixtures/torch; cases marked runtime_only (torch behaviour other frameworks
legitimately do not share, such as NaN handling corners) go to tests/fixtures/torch_runtime_only,
which only the Rust runtime's parity tests read; a real model checkpoint (an nn.TransformerEncoder state_dict
in safetensors, with one attention layer's expected output) goes to tests/fixtures/torch_checkpoint,
and a training-mode dropout case (eval and train weights, train output) to tests/fixtures/torch_dropout. The format is described in the project's copy of
parity/FORMAT.md; this script reproduces it field for field (index.json + one safetensors
file per case). Reference outputs come from the real torch.nn.MultiheadAttention in float32
on its composite path (module in eval mode, autograd enabled, MHA fast path disabled).
Everything is seeded (torch.Generator seeded with base_seed + case index), so re-running
with the same torch gives byte-identical files.

Not inside .venvs/torch? Then the script runs `scripts/framework-env.sh torch` and
re-executes itself with .venvs/torch/bin/python.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torch_venv import ensure_torch_venv

ROOT = Path(__file__).resolve().parent.parent


FORMAT = "mha-golden-fixtures/1"
BASE_SEED = 20240611

CONVENTIONS = {
    "weights": "state_dict names of torch.nn.MultiheadAttention; in_proj_weight rows are [W_q; W_k; W_v], in_proj_bias is [b_q; b_k; b_v]; Linear convention y = x W^T + b",
    "layout": "batch_first=False: query (L,N,E), key (S,N,kdim), value (S,N,vdim), attn_output (L,N,E); batch_first=True: (N,L,E)/(N,S,*); unbatched (no N): (L,E)/(S,*) whatever batch_first is",
    "attn_weights": "need_weights=True: (N,L,S') averaged over heads, or (N,H,L,S') with average_attn_weights=False; unbatched drops N; S' = S + add_bias_kv + add_zero_attn",
    "scaling": "scores = (q / sqrt(head_dim)) k^T + mask, head_dim = embed_dim / num_heads",
    "bool_masks": "True = position is NOT allowed to attend (masked out)",
    "float_masks": "added to the attention scores (may contain -inf)",
    "attn_mask_3d": "shape (N*num_heads, L, S), row index n*num_heads + h (unbatched: (num_heads, L, S))",
    "key_padding_mask": "shape (N,S) (unbatched: (S,)); merged with attn_mask by addition after both are converted to float (-inf for True)",
    "bias_kv_zero_attn": "bias_k/bias_v appended after the projected keys/values (one extra position), then a zero key/value if add_zero_attn; both masks are padded with 0 (attendable) for those positions",
    "is_causal": "only a hint in torch: it requires attn_mask; the outputs equal those obtained by applying attn_mask (causal: key j > query i masked)",
    "reference_path": "attn_output/attn_weights = torch composite path (fast path disabled), which is what a plain call with autograd enabled computes",
}

FULLY_MASKED_ROWS = (
    "torch (this version) gives NaN for a fully masked query row on the need_weights=True composite path "
    "(explicit softmax over all -inf) and on the fused fast path whatever need_weights is; with "
    "need_weights=False the composite path calls scaled_dot_product_attention, which returns 0 for the row, "
    "so attn_output there equals out_proj.bias. See expected.has_nan_attn_output and torch_fastpath per case; "
    "cases with a different fast-path NaN pattern also store attn_output_fastpath."
)

PRECISION_NOTE_1E9 = (
    "query row 1 of the float attn_mask is -1e9 for every key: in float32, -1e9 + score rounds to the same "
    "value for every key (ulp(1e9) = 64), so that row's softmax is uniform; float64 (or a kernel that adds "
    "the mask in higher precision) keeps the score differences and gives ordinary softmax weights. The case "
    "only matches when the mask is added to the scores in float32."
)


# --------------------------------------------------------------------------------------------
# Case table
# --------------------------------------------------------------------------------------------
# Mask builders take (g, N, H, L, S, batched) and return a torch tensor (kpm: (N,S) or (S,);
# attn_mask: (L,S), (N*H,L,S) or unbatched (H,L,S)). kpm is drawn before attn_mask.

def _t():
    import torch
    return torch


def kpm_bool(p=0.3):
    def make(g, N, H, L, S, batched):
        torch = _t()
        shape = (N, S) if batched else (S,)
        return torch.rand(shape, generator=g) < p
    return make


def kpm_float(p_inf=0.3, scale=0.5):
    def make(g, N, H, L, S, batched):
        torch = _t()
        shape = (N, S) if batched else (S,)
        vals = torch.randn(shape, generator=g) * scale
        inf = torch.rand(shape, generator=g) < p_inf
        return vals.masked_fill(inf, float("-inf"))
    return make


def kpm_full_batch(masked_batch=1, dtype="bool", p=0.3):
    """Random bool kpm, with batch element `masked_batch` masked on every key."""
    def make(g, N, H, L, S, batched):
        torch = _t()
        m = torch.rand((N, S), generator=g) < p
        m[masked_batch, :] = True
        if dtype == "bool":
            return m
        return torch.zeros((N, S)).masked_fill(m, float("-inf"))
    return make


def _attn_shape(N, H, L, S, batched, three_d):
    if not three_d:
        return (L, S)
    return (N * H, L, S) if batched else (H, L, S)


def attn_bool(p=0.3, three_d=False, full_rows=()):
    def make(g, N, H, L, S, batched):
        torch = _t()
        m = torch.rand(_attn_shape(N, H, L, S, batched, three_d), generator=g) < p
        for r in full_rows:
            m[..., r, :] = True
        return m
    return make


def attn_float(scale=1.0, p_inf=0.0, three_d=False, full_rows=()):
    """randn * scale, with -inf where rand < p_inf; rows in full_rows are all -inf."""
    def make(g, N, H, L, S, batched):
        torch = _t()
        shape = _attn_shape(N, H, L, S, batched, three_d)
        m = torch.randn(shape, generator=g) * scale
        if p_inf > 0:
            m = m.masked_fill(torch.rand(shape, generator=g) < p_inf, float("-inf"))
        for r in full_rows:
            m[..., r, :] = float("-inf")
        return m
    return make


def attn_causal(dtype="bool"):
    def make(g, N, H, L, S, batched):
        torch = _t()
        m = torch.ones((L, S), dtype=torch.bool).triu(1)  # key j > query i masked
        if dtype == "bool":
            return m
        return torch.zeros((L, S)).masked_fill(m, float("-inf"))
    return make


def kpm_block(batch, start, stop):
    """Bool kpm masking keys start..stop of one batch element (no draws)."""
    def make(g, N, H, L, S, batched):
        torch = _t()
        m = torch.zeros((N, S), dtype=torch.bool)
        m[batch, start:stop] = True
        return m
    return make


def attn_neg1e9_row(row=1, p=0.3):
    """HF-style additive mask: 0 or -1e9 (rand < p), and query row `row` all -1e9."""
    def make(g, N, H, L, S, batched):
        torch = _t()
        m = torch.where(torch.rand((L, S), generator=g) < p, -1e9, 0.0)
        m[row, :] = -1e9
        return m
    return make


NAN, POS_INF, NEG_INF = float("nan"), float("inf"), float("-inf")


def put(tensor, index, value):
    """One non-finite injection: `tensor` is query | key | value | key_padding_mask | attn_mask;
    `index` is (batch, position, feature) for the inputs (in any layout), (batch, key) for the
    key padding mask and the attn_mask's own index. Applied after every draw, so the generator
    sequence (and every earlier case) is unchanged."""
    return (tensor, index, value)


def _inject(case, tensors):
    for name, index, value in case["inject"]:
        t = tensors[name]
        if name in ("query", "key", "value") and not case["batch_first"]:
            n, pos, c = index
            index = (pos, n, c)
        t[index] = value


def C(name, description, **kw):
    d = dict(
        name=name, description=description,
        E=16, H=4, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
        kdim=None, vdim=None, batch_first=False,
        N=2, L=5, S=None, self_attention=False,
        need_weights=True, average_attn_weights=True, is_causal=False,
        kpm=None, attn_mask=None,
        input_scale=1.0, weight_scale=1.0, precision_sensitive=None,
        fully_masked=False, inject=(), runtime_only=None,
    )
    unknown = set(kw) - set(d)
    if unknown:
        raise TypeError(f"case {name}: unknown keys {unknown}")
    d.update(kw)
    if d["S"] is None:
        d["S"] = d["L"] if d["self_attention"] else 7
    if d["self_attention"]:
        assert d["S"] == d["L"] and d["kdim"] is None and d["vdim"] is None, name
    return d


CASES = [
    # 0
    C("self_seqfirst_weights_avg", "self-attention, batch_first=False (L,N,E), averaged weights",
      self_attention=True),
    C("self_batchfirst_weights_per_head",
      "self-attention, batch_first=True (N,L,E), per-head weights (average_attn_weights=False)",
      self_attention=True, batch_first=True, L=6, average_attn_weights=False),
    C("self_batchfirst_no_weights", "self-attention, batch_first=True, need_weights=False (SDPA composite path)",
      self_attention=True, batch_first=True, L=7, need_weights=False),
    C("cross_seqfirst_weights_avg", "cross-attention S=9 != L=5, batch_first=False, averaged weights",
      S=9),
    C("cross_batchfirst_per_head", "cross-attention S=7 != L=4, batch_first=True, N=3, per-head weights",
      batch_first=True, N=3, L=4, average_attn_weights=False),
    # 5
    C("cross_seqfirst_no_weights", "cross-attention S=11 != L=6, batch_first=False, need_weights=False",
      L=6, S=11, need_weights=False),
    C("unbatched_self", "unbatched 2-D self-attention (L,E), averaged weights (batch_first=True is ignored)",
      N=None, self_attention=True, batch_first=True, L=6),
    C("unbatched_cross_per_head_no_mask", "unbatched 2-D cross-attention (L=5,E)/(S=8,E), per-head weights (H,L,S)",
      N=None, S=8, average_attn_weights=False),
    C("unbatched_kpm_bool_attn_mask_float_3d",
      "unbatched cross-attention with 1-D bool key_padding_mask (S,) and float 3-D attn_mask (H,L,S), averaged weights",
      N=None, S=7, kpm=kpm_bool(), attn_mask=attn_float(three_d=True)),
    C("unbatched_attn_mask_bool_2d_no_weights",
      "unbatched self-attention with bool 2-D attn_mask (L,S), need_weights=False",
      N=None, self_attention=True, L=6, attn_mask=attn_bool(), need_weights=False),
    # 10
    C("no_bias", "bias=False (no in_proj_bias / out_proj.bias), cross-attention, averaged weights",
      bias=False, S=6),
    C("num_heads_1", "num_heads=1 (head_dim = embed_dim = 16), cross-attention, batch_first=True",
      H=1, batch_first=True, S=6),
    C("head_dim_1", "head_dim=1 (embed_dim=4, num_heads=4), cross-attention, per-head weights",
      E=4, H=4, S=6, average_attn_weights=False),
    C("unbatched_kpm_float_attn_mask_bool_3d_per_head",
      "unbatched self-attention, 1-D float key_padding_mask (S,) merged with bool 3-D attn_mask (H,L,S), per-head weights",
      N=None, self_attention=True, L=6, kpm=kpm_float(), attn_mask=attn_bool(three_d=True),
      average_attn_weights=False),
    C("kdim_vdim", "kdim=10, vdim=12 != embed_dim=16 (q_proj/k_proj/v_proj weights)",
      kdim=10, vdim=12),
    # 15
    C("kdim_vdim_batchfirst_masks_no_weights",
      "kdim=6, vdim=20, batch_first=True, bool key_padding_mask + float 2-D attn_mask, need_weights=False",
      kdim=6, vdim=20, batch_first=True, S=9, kpm=kpm_bool(), attn_mask=attn_float(), need_weights=False),
    C("kdim_vdim_no_bias_unbatched",
      "kdim=12, vdim=8, bias=False, unbatched, bool 2-D attn_mask, per-head weights",
      kdim=12, vdim=8, bias=False, N=None, S=6, attn_mask=attn_bool(), average_attn_weights=False),
    C("add_bias_kv", "add_bias_kv=True (bias_k/bias_v appended as key position S), cross-attention, averaged weights",
      add_bias_kv=True),
    C("add_zero_attn", "add_zero_attn=True (zero key/value appended), cross-attention, batch_first=True, per-head weights",
      add_zero_attn=True, batch_first=True, average_attn_weights=False),
    C("add_bias_kv_zero_attn", "add_bias_kv and add_zero_attn together (S' = S + 2), self-attention, averaged weights",
      add_bias_kv=True, add_zero_attn=True, self_attention=True, L=6),
    # 20
    C("add_bias_kv_kpm_bool_attn_mask_float",
      "add_bias_kv with bool key_padding_mask and float 2-D attn_mask (both padded with 0 by torch), per-head weights",
      add_bias_kv=True, kpm=kpm_bool(), attn_mask=attn_float(), average_attn_weights=False),
    C("add_zero_attn_kpm_float_attn_mask_bool_3d_no_weights",
      "add_zero_attn with float key_padding_mask and bool 3-D attn_mask (padded by torch), batch_first=True, need_weights=False",
      add_zero_attn=True, batch_first=True, S=8, kpm=kpm_float(), attn_mask=attn_bool(three_d=True),
      need_weights=False),
    C("add_bias_kv_zero_attn_kpm_attn_mask_3d",
      "add_bias_kv + add_zero_attn with bool key_padding_mask and float 3-D attn_mask containing -inf, averaged weights",
      add_bias_kv=True, add_zero_attn=True, kpm=kpm_bool(), attn_mask=attn_float(three_d=True, p_inf=0.2)),
    C("add_bias_kv_no_bias", "bias=False together with add_bias_kv=True, cross-attention, averaged weights",
      bias=False, add_bias_kv=True, S=6),
    C("kpm_bool", "bool key_padding_mask (N,S) only, cross-attention, batch_first=False, averaged weights",
      S=8, kpm=kpm_bool()),
    # 25
    C("kpm_float", "float key_padding_mask (finite values and -inf), batch_first=True, per-head weights",
      batch_first=True, S=8, kpm=kpm_float(), average_attn_weights=False),
    C("kpm_bool_attn_mask_bool_3d", "bool kpm merged with bool 3D attn_mask",
      batch_first=True, S=6, kpm=kpm_bool(), attn_mask=attn_bool(three_d=True)),
    C("kpm_float_attn_mask_float_2d", "float kpm merged with float 2-D attn_mask (float + float), averaged weights",
      S=8, kpm=kpm_float(), attn_mask=attn_float()),
    C("kpm_bool_attn_mask_float_2d_no_weights",
      "bool kpm merged with float 2-D attn_mask (bool + float), self-attention, batch_first=True, need_weights=False",
      self_attention=True, batch_first=True, L=7, kpm=kpm_bool(), attn_mask=attn_float(), need_weights=False),
    C("kpm_float_attn_mask_bool_2d", "float kpm merged with bool 2-D attn_mask (float + bool), per-head weights",
      S=9, kpm=kpm_float(), attn_mask=attn_bool(), average_attn_weights=False),
    # 30
    C("kpm_bool_attn_mask_bool_2d_no_weights",
      "bool kpm merged with bool 2-D attn_mask (bool + bool), self-attention, batch_first=True, need_weights=False (fast path eligible)",
      self_attention=True, batch_first=True, L=7, kpm=kpm_bool(), attn_mask=attn_bool(), need_weights=False),
    C("attn_mask_bool_2d", "bool 2-D attn_mask (L,S) only, cross-attention, averaged weights",
      S=8, attn_mask=attn_bool()),
    C("attn_mask_float_2d", "float 2-D attn_mask (L,S), finite values only, batch_first=True, per-head weights",
      batch_first=True, S=8, attn_mask=attn_float(), average_attn_weights=False),
    C("attn_mask_float_3d_no_weights", "float 3-D attn_mask (N*H,L,S), finite values, need_weights=False",
      S=6, attn_mask=attn_float(three_d=True), need_weights=False),
    C("attn_mask_bool_3d_per_head", "bool 3-D attn_mask (N*H,L,S) (differs per head), self-attention, per-head weights",
      self_attention=True, L=6, attn_mask=attn_bool(three_d=True, p=0.4), average_attn_weights=False),
    # 35
    C("attn_mask_float_neg_inf", "float 2-D attn_mask with finite values and -inf entries, averaged weights",
      S=9, attn_mask=attn_float(p_inf=0.3)),
    C("causal_weights", "is_causal=True with a bool causal attn_mask, self-attention, need_weights=True (mask is applied)",
      self_attention=True, L=6, is_causal=True, attn_mask=attn_causal(), need_weights=True),
    C("causal_no_weights",
      "is_causal=True with a bool causal attn_mask, self-attention, batch_first=True, need_weights=False (torch drops the mask and uses SDPA is_causal)",
      self_attention=True, batch_first=True, L=7, is_causal=True, attn_mask=attn_causal(), need_weights=False),
    C("causal_kpm_no_weights",
      "is_causal=True + bool causal attn_mask + bool key_padding_mask, need_weights=False (masks merged, hint dropped)",
      self_attention=True, L=7, is_causal=True, attn_mask=attn_causal(), kpm=kpm_bool(), need_weights=False),
    C("causal_kpm_float_weights_per_head",
      "is_causal=True + float causal attn_mask (-inf above diagonal) + float key_padding_mask, per-head weights",
      self_attention=True, batch_first=True, L=6, is_causal=True, attn_mask=attn_causal("float"), kpm=kpm_float(p_inf=0.2),
      average_attn_weights=False),
    # 40
    C("causal_cross_float_no_weights",
      "is_causal=True + float causal attn_mask (L=5, S=8, key j > query i masked), cross-attention, need_weights=False",
      S=8, is_causal=True, attn_mask=attn_causal("float"), need_weights=False),
    C("fully_masked_kpm_batch_weights",
      "batch element 1 fully masked by bool key_padding_mask, self-attention, batch_first=True, need_weights=True: NaN rows",
      self_attention=True, batch_first=True, L=6, kpm=kpm_full_batch(), fully_masked=True),
    C("fully_masked_kpm_batch_no_weights",
      "batch element 1 fully masked by bool key_padding_mask, self-attention, batch_first=True, need_weights=False: composite gives out_proj.bias rows, fast path NaN",
      self_attention=True, batch_first=True, L=6, kpm=kpm_full_batch(), need_weights=False, fully_masked=True),
    C("fully_masked_attn_mask_row_weights",
      "bool 2-D attn_mask masking all of query row 2, self-attention, batch_first=True, per-head weights: NaN row",
      self_attention=True, batch_first=True, L=6, attn_mask=attn_bool(full_rows=(2,)), average_attn_weights=False,
      fully_masked=True),
    C("fully_masked_attn_mask_row_no_weights",
      "bool 2-D attn_mask masking all of query row 2, self-attention, batch_first=True, need_weights=False: row = out_proj.bias, fast path NaN",
      self_attention=True, batch_first=True, L=6, attn_mask=attn_bool(full_rows=(2,)), need_weights=False,
      fully_masked=True),
    # 45
    C("fully_masked_float_row_kpm_no_weights",
      "float 3-D attn_mask with query row 0 all -inf plus bool kpm, cross-attention, need_weights=False: row = out_proj.bias",
      attn_mask=attn_float(three_d=True, full_rows=(0,)), kpm=kpm_bool(), need_weights=False, fully_masked=True),
    C("fully_masked_kpm_float_weights_seqfirst",
      "float key_padding_mask with batch element 1 all -inf, cross-attention, batch_first=False, need_weights=True: NaN rows",
      kpm=kpm_full_batch(dtype="float"), fully_masked=True),
    C("fully_masked_kpm_rescued_by_zero_attn",
      "batch element 1 fully masked by kpm but add_zero_attn adds an attendable zero key (mask padded with 0): no NaN",
      add_zero_attn=True, kpm=kpm_full_batch()),
    C("fully_masked_row_rescued_by_bias_kv_no_weights",
      "attn_mask row 3 fully masked but add_bias_kv adds an attendable bias key (mask padded with 0): no NaN, need_weights=False",
      add_bias_kv=True, attn_mask=attn_bool(full_rows=(3,)), need_weights=False),
    C("large_logits_input_scale_30",
      "large logits: inputs scaled by 30 (scores in the hundreds), cross-attention, batch_first=True, averaged weights; softmax must not overflow",
      input_scale=30.0, S=6, batch_first=True),
    # 50
    C("large_logits_input_scale_100_weights_x4",
      "large logits: inputs x100 and projection weights x4 (scores ~1e5), batch_first=True, per-head weights",
      input_scale=100.0, weight_scale=4.0, batch_first=True, average_attn_weights=False, S=6),
    C("large_logits_input_scale_100_no_weights_kpm",
      "large logits: inputs x100 with bool kpm, self-attention, need_weights=False",
      input_scale=100.0, self_attention=True, L=6, kpm=kpm_bool(), need_weights=False),
    C("float_mask_row_neg1e9",
      "float 2-D attn_mask of 0 / -1e9 with query row 1 entirely -1e9 (precision sensitive: uniform weights in float32)",
      S=6, attn_mask=attn_neg1e9_row(), precision_sensitive=PRECISION_NOTE_1E9),
    C("dropout_0p5_eval", "dropout=0.5 in the ctor, evaluated in eval mode (no dropout applied), averaged weights",
      dropout=0.5, S=6),
    C("dropout_0p3_eval_no_weights_masks",
      "dropout=0.3 in the ctor, eval mode, bool kpm + bool 2-D attn_mask, batch_first=True, need_weights=False",
      dropout=0.3, batch_first=True, S=7, kpm=kpm_bool(), attn_mask=attn_bool(), need_weights=False),
    # 55
    C("e64_h8_cross_masks_no_weights",
      "E=64, H=8, L=33, S=47, cross-attention, batch_first=True, bool kpm + float 3-D attn_mask, need_weights=False",
      E=64, H=8, L=33, S=47, batch_first=True, kpm=kpm_bool(p=0.2), attn_mask=attn_float(three_d=True), need_weights=False),
    C("e64_h8_self_causal_per_head",
      "E=64, H=8, L=S=33, self-attention, is_causal with bool causal attn_mask, per-head weights",
      E=64, H=8, L=33, self_attention=True, is_causal=True, attn_mask=attn_causal(), average_attn_weights=False),
    C("e128_h4_cross_weights",
      "E=128, H=4, L=70, S=130, cross-attention, batch_first=False, bool kpm, averaged weights",
      E=128, H=4, L=70, S=130, kpm=kpm_bool(p=0.2)),
    C("e128_h4_self_causal_no_weights",
      "E=128, H=4, L=S=70, N=1, self-attention, batch_first=True, is_causal + bool causal attn_mask, need_weights=False",
      E=128, H=4, N=1, L=70, self_attention=True, batch_first=True, is_causal=True, attn_mask=attn_causal(),
      need_weights=False),
    # Keras on TensorFlow adds a projection bias along the wrong axis when head_dim is 1 and a
    # sequence length equals num_heads (keras-team/keras#20386); the glue must not.
    C("head_dim_1_lengths_eq_heads",
      "head_dim=1 (E=4, H=4) with L=S=4 = num_heads, cross-attention, batch_first=True, per-head weights",
      E=4, H=4, L=4, S=4, batch_first=True, average_attn_weights=False),
    # 60: non-finite input (torch's composite path; see each description for the rule). Shared cases
    # use E=16, H=4 (a config the macro parity test has a layer type for).
    C("nonfinite_nan_key_weights",
      "NaN in one key of batch element 1 (E=8, H=2, L=3, S=4, defaults): that element's output and weights are NaN",
      E=8, H=2, L=3, S=4, inject=[put("key", (1, 2, 3), NAN)],
      runtime_only="TensorFlow's softmax keeps the other rows of the element finite"),
    C("nonfinite_nan_key_no_weights",
      "NaN in one key of batch element 1, need_weights=False: that element's output is NaN",
      L=3, S=4, need_weights=False, inject=[put("key", (1, 2, 3), NAN)]),
    C("nonfinite_nan_kpm_float_weights",
      "NaN in a float key_padding_mask entry of batch element 1: that element's output and weights are NaN",
      L=3, S=4, kpm=kpm_float(p_inf=0.0), inject=[put("key_padding_mask", (1, 2), NAN)]),
    C("nonfinite_nan_kpm_float_no_weights",
      "NaN in a float key_padding_mask entry of batch element 1, need_weights=False: that element's output is NaN",
      L=3, S=4, kpm=kpm_float(p_inf=0.0), need_weights=False,
      inject=[put("key_padding_mask", (1, 2), NAN)]),
    C("nonfinite_nan_attn_mask_weights",
      "NaN in a 2-D float attn_mask entry (query 1): query row 1 of every batch element is NaN, weights too",
      L=3, S=4, attn_mask=attn_float(), inject=[put("attn_mask", (1, 2), NAN)]),
    # 65
    C("nonfinite_posinf_attn_mask_no_weights",
      "+inf in a 2-D float attn_mask entry (query 1), need_weights=False: query row 1 is NaN (exp(inf - inf))",
      L=3, S=4, attn_mask=attn_float(), need_weights=False,
      inject=[put("attn_mask", (1, 2), POS_INF)]),
    C("nonfinite_neginf_key_weights",
      "-inf in one key of batch element 1: the projected key holds infinities of both signs, so the scores are NaN",
      E=8, H=2, L=3, S=4, inject=[put("key", (1, 2, 3), NEG_INF)],
      runtime_only="TensorFlow's softmax keeps the other rows of the element finite"),
    C("nonfinite_posinf_query_no_weights",
      "+inf in query 1 of batch element 1, need_weights=False: that query's scores are +inf or NaN, its row NaN",
      L=3, S=4, need_weights=False, inject=[put("query", (1, 1, 0), POS_INF)]),
    C("nonfinite_nan_query_weights",
      "NaN in query 1 of batch element 1: that query's output and weights rows are NaN",
      L=3, S=4, inject=[put("query", (1, 1, 0), NAN)]),
    C("nonfinite_nan_query_no_weights_short",
      "NaN in query 1 of batch element 1, need_weights=False, S=4: torch's CPU kernel drops NaN from a row "
      "maximum shorter than one vector, treats the all-NaN row as fully masked and returns out_proj.bias for it "
      "(from 16 keys on it returns NaN: only the short-row behaviour is pinned here)",
      E=8, H=2, L=3, S=4, need_weights=False, inject=[put("query", (1, 1, 0), NAN)],
      runtime_only="a quirk of torch's CPU kernel: Keras, TensorFlow, MLX and Flax give NaN"),
    # 70
    C("nonfinite_nan_value_weights",
      "NaN in one value of batch element 1: that element's output is NaN (0 * NaN too), its weights finite",
      L=3, S=4, inject=[put("value", (1, 2, 5), NAN)]),
    C("nonfinite_neginf_value_no_weights",
      "-inf in one value of batch element 1, need_weights=False: infinities of both signs after out_proj, NaN output",
      L=3, S=4, need_weights=False, inject=[put("value", (1, 2, 5), NEG_INF)]),
    C("nonfinite_nan_key_in_masked_tile_no_weights",
      "NaN in key 100 of batch element 1 whose keys 64..128 are all masked by a bool key_padding_mask "
      "(NaN + -inf is NaN: not masked), L=20, S=150, batch_first=True, need_weights=False",
      E=16, H=2, L=20, S=150, batch_first=True, need_weights=False, kpm=kpm_block(1, 64, 128),
      inject=[put("key", (1, 100, 3), NAN)],
      runtime_only="Keras, TensorFlow and Flax mask by replacing scores, which hides a NaN key under the mask"),
    C("nonfinite_nan_value_beyond_causal_diagonal",
      "NaN in value 35 of batch element 1 with is_causal + float causal mask (L=S=40), need_weights=False: "
      "masked keys still enter as 0 * v, so every query of that element is NaN",
      L=40, S=40, is_causal=True, attn_mask=attn_causal("float"), need_weights=False,
      inject=[put("value", (1, 35, 5), NAN)]),
]


# --------------------------------------------------------------------------------------------

def _effective_masked(case, kpm, am, N, H, L, S):
    """Bool (N', H, L, S') of positions that torch masks out (-inf after merging)."""
    import numpy as np
    Nb = N if N is not None else 1
    full = np.zeros((Nb, H, L, S), dtype=bool)
    if am is not None:
        a = am.numpy()
        a = a if a.dtype == np.bool_ else np.isneginf(a)
        if a.ndim == 2:
            full |= a[None, None]
        else:
            full |= a.reshape(Nb, H, L, S)
    if kpm is not None:
        k = kpm.numpy()
        k = k if k.dtype == np.bool_ else np.isneginf(k)
        full |= k.reshape(Nb, 1, 1, S)
    extra = int(case["add_bias_kv"]) + int(case["add_zero_attn"])
    if extra:
        full = np.concatenate([full, np.zeros((Nb, H, L, extra), dtype=bool)], axis=-1)
    return full


def _repair(case, kpm, am, N, H, L, S):
    """Unmask attn_mask entries so that no query row is fully masked (unless the case wants it)."""
    import numpy as np
    torch = _t()
    if case["fully_masked"] or am is None:
        return am
    Nb = N if N is not None else 1
    eff = _effective_masked(dict(case, add_bias_kv=False, add_zero_attn=False), kpm, am, N, H, L, S)
    if not eff.all(-1).any():
        return am
    am = am.clone()
    if kpm is not None:
        k = kpm.numpy()
        kb = (k if k.dtype == np.bool_ else np.isneginf(k)).reshape(Nb, S)
    else:
        kb = np.zeros((Nb, S), dtype=bool)
    for n, h, i in zip(*np.nonzero(eff.all(-1))):
        j = int(np.nonzero(~kb[n])[0][0])
        idx = (i, j) if am.dim() == 2 else (n * H + h, i, j)
        am[idx] = False if am.dtype == torch.bool else 0.0
    return am


def _np(t):
    return t.detach().cpu().contiguous().numpy()


def _max_abs_err(a, b):
    import numpy as np
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return 0.0
    return float(np.max(np.abs(a[ok].astype(np.float64) - b[ok].astype(np.float64))))


def build_case(idx, case, torch_version):
    import copy
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(BASE_SEED + idx)
    E, H, N, L, S = case["E"], case["H"], case["N"], case["L"], case["S"]
    batched = N is not None
    kdim = case["kdim"] if case["kdim"] is not None else E
    vdim = case["vdim"] if case["vdim"] is not None else E
    ctor = dict(embed_dim=E, num_heads=H, dropout=case["dropout"], bias=case["bias"],
                add_bias_kv=case["add_bias_kv"], add_zero_attn=case["add_zero_attn"],
                kdim=case["kdim"], vdim=case["vdim"], batch_first=case["batch_first"])
    m = torch.nn.MultiheadAttention(**ctor)
    ws = case["weight_scale"]
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if p.dim() == 2:   # projection weights: randn / sqrt(fan_in)
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * ws)
            else:              # biases, bias_k, bias_v
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    m.eval()
    params = [n for n, _ in m.named_parameters()]

    def shape(seq, dim):
        if not batched:
            return (seq, dim)
        return (N, seq, dim) if case["batch_first"] else (seq, N, dim)

    sc = case["input_scale"]
    query = torch.randn(shape(L, E), generator=g) * sc
    if case["self_attention"]:
        key = value = query
    else:
        key = torch.randn(shape(S, kdim), generator=g) * sc
        value = torch.randn(shape(S, vdim), generator=g) * sc
    kpm = case["kpm"](g, N, H, L, S, batched) if case["kpm"] else None
    am = case["attn_mask"](g, N, H, L, S, batched) if case["attn_mask"] else None
    am = _repair(case, kpm, am, N, H, L, S)
    if case["inject"]:
        if case["self_attention"]:
            raise SystemExit(f"case {case['name']}: inject needs separate query / key / value")
        named = {"query": query, "key": key, "value": value, "key_padding_mask": kpm, "attn_mask": am}
        _inject(case, named)

    eff = _effective_masked(case, kpm, am, N, H, L, S)
    fully_masked_rows_present = bool(eff.all(-1).any())
    if fully_masked_rows_present != case["fully_masked"]:
        raise SystemExit(f"case {case['name']}: fully_masked_rows_present={fully_masked_rows_present}, "
                         f"expected {case['fully_masked']}")

    fwd = dict(need_weights=case["need_weights"], average_attn_weights=case["average_attn_weights"],
               is_causal=case["is_causal"])

    def run(mod, q, k, v, kp, a):
        return mod(q, k, v, key_padding_mask=kp, attn_mask=a, **fwd)

    # reference: composite path, float32, autograd enabled, fast path disabled
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.enable_grad():
        out, w = run(m, query, key, value, kpm, am)
    out = _np(out)
    w = _np(w) if w is not None else None

    # float64 of the same module/inputs (composite path too)
    m64 = copy.deepcopy(m).double()
    q64 = query.double()
    if case["self_attention"]:
        k64 = v64 = q64
    else:
        k64, v64 = key.double(), value.double()
    kpm64 = kpm.double() if kpm is not None and kpm.is_floating_point() else kpm
    am64 = am.double() if am is not None and am.is_floating_point() else am
    with torch.enable_grad():
        out64, w64 = run(m64, q64, k64, v64, kpm64, am64)
    out64 = _np(out64)
    w64 = _np(w64) if w64 is not None else None

    # fast path: plain inference call (eval + no_grad + fast path enabled); did torch take it?
    torch.backends.mha.set_fastpath_enabled(True)
    calls = []
    native = torch._native_multi_head_attention

    def spy(*a, **k):
        calls.append(1)
        return native(*a, **k)

    torch._native_multi_head_attention = spy
    try:
        with torch.no_grad():
            fout, _ = run(m, query, key, value, kpm, am)
    finally:
        torch._native_multi_head_attention = native
        torch.backends.mha.set_fastpath_enabled(False)
    fout = _np(fout)
    fast_taken = bool(calls)
    if fast_taken:
        same_nan = bool(np.array_equal(np.isnan(fout), np.isnan(out)))
        torch_fastpath = {
            "taken": True,
            "nan_pattern_matches_reference": same_nan,
            "max_abs_diff_attn_output_vs_reference": _max_abs_err(fout, out),
            "attn_output_fastpath_stored": not same_nan,
        }
    else:
        same_nan = True
        torch_fastpath = {"taken": False}

    # tensors, in the samples' order
    tensors = {}
    for n, p in m.named_parameters():
        tensors[n] = _np(p)
    tensors["query"] = _np(query)
    tensors["key"] = _np(key)
    tensors["value"] = _np(value)
    if kpm is not None:
        tensors["key_padding_mask"] = _np(kpm)
    if am is not None:
        tensors["attn_mask"] = _np(am)
    tensors["attn_output"] = out
    if w is not None:
        tensors["attn_weights"] = w
    if not same_nan:
        tensors["attn_output_fastpath"] = fout

    def mask_info(t, with_kind):
        if t is None:
            return None
        d = {"dtype": "bool" if t.dtype == torch.bool else "float32", "shape": list(t.shape)}
        if with_kind:
            d["kind"] = "2d" if t.dim() == 2 else "3d"
        return d

    if w is not None:
        rows = w.astype(np.float64).sum(-1)
        rows = rows[np.isfinite(rows)]
        rowsum = float(np.max(np.abs(rows - 1.0))) if rows.size else None
    else:
        rowsum = None
    finite_out = out[np.isfinite(out)]
    numerics = {
        "max_abs_err_attn_output_f32_vs_f64": _max_abs_err(out, out64),
        "nan_pattern_matches_f64_output": bool(np.array_equal(np.isnan(out), np.isnan(out64))),
        "max_abs_err_attn_weights_f32_vs_f64": _max_abs_err(w, w64) if w is not None else None,
        "max_abs_attn_output": float(np.max(np.abs(finite_out))) if finite_out.size else None,
        "max_abs_weight_rowsum_minus_1": rowsum,
    }
    meta_case = {"case": case["name"], "ctor": ctor,
                 "forward": {"average_attn_weights": fwd["average_attn_weights"],
                             "is_causal": fwd["is_causal"], "need_weights": fwd["need_weights"]},
                 "torch_version": torch_version}
    entry = {
        "name": case["name"],
        "file": f"{idx:02d}_{case['name']}.safetensors",
        "sha256": None,
        "description": case["description"],
        "ctor": ctor,
        "forward": {**fwd, "key_padding_mask": mask_info(kpm, False), "attn_mask": mask_info(am, True)},
        "batched": batched,
        "batch_size": N,
        "tgt_len": L,
        "src_len": S,
        "kdim": kdim,
        "vdim": vdim,
        "self_attention": case["self_attention"],
        "input_scale": float(sc),
        "init": "random" if ws == 1.0 else f"random, projection weights x{ws:g}",
        "precision_sensitive": case["precision_sensitive"],
        "params": params,
        "tensors": {k: {"shape": list(v.shape), "dtype": "bool" if v.dtype == np.bool_ else "float32"}
                    for k, v in tensors.items()},
        "expected": {
            "has_nan_attn_output": bool(np.isnan(out).any()),
            "nan_attn_output_count": int(np.isnan(out).sum()),
            "has_nan_attn_weights": bool(w is not None and np.isnan(w).any()),
            "fully_masked_rows_present": fully_masked_rows_present,
        },
        "numerics": numerics,
        "torch_fastpath": torch_fastpath,
    }
    if case["runtime_only"] is not None:
        entry["runtime_only"] = case["runtime_only"]
    return entry, tensors, meta_case


def write_checkpoint(out_dir: Path) -> None:
    """A real model checkpoint: the state_dict of a 2-layer nn.TransformerEncoder saved with
    safetensors.torch.save_file (names such as `layers.1.self_attn.in_proj_weight` among the
    feed-forward and norm parameters), plus the input and torch's output of
    `layers[1].self_attn(x, x, x)` for loading one attention layer by prefix."""
    import json

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(BASE_SEED - 1)
    torch.manual_seed(BASE_SEED - 1)  # the modules' own init
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, dropout=0.1,
                                             batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    with torch.no_grad():  # non-zero biases so that a bias mix-up shows
        for name, p in model.named_parameters():
            if name.endswith("in_proj_bias") or name.endswith("out_proj.bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "encoder.safetensors"))
    attn = model.layers[1].self_attn
    x = torch.randn((2, 5, 16), generator=g)
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.enable_grad():
        out, w = attn(x, x, x, need_weights=True, average_attn_weights=False)
    save_file({"query": x.contiguous(), "attn_output": out.detach().contiguous(),
               "attn_weights": w.detach().contiguous()}, str(out_dir / "expected.safetensors"))
    meta = {
        "torch_version": torch.__version__,
        "model": "nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, batch_first=True), num_layers=2), eval mode",
        "prefix": "layers.1.self_attn.",
        "ctor": {"embed_dim": 16, "num_heads": 4, "dropout": 0.1, "bias": True, "add_bias_kv": False,
                 "add_zero_attn": False, "kdim": None, "vdim": None, "batch_first": True},
        "forward": "self-attention query = key = value = expected.query (N=2, L=5, E=16), need_weights=True, average_attn_weights=False, composite path",
        "state_dict_keys": sorted(state),
    }
    (out_dir / "checkpoint.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote a TransformerEncoder checkpoint ({len(state)} tensors) to {out_dir}")


def write_dropout_case(out_dir: Path) -> None:
    """Training-mode dropout in real torch (its RNG cannot be reproduced, so no output parity):
    per-head weights in eval and in training mode, and the training output, so that a test can
    check that torch zeroes post-softmax probabilities, scales the kept ones by 1/(1-p), returns
    the dropped weights and computes the output from them."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(BASE_SEED - 2)
    m = torch.nn.MultiheadAttention(16, 4, dropout=0.3, batch_first=True)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5 if p.dim() == 2 else 2.0))
    x = torch.randn((2, 5, 16), generator=g)
    torch.backends.mha.set_fastpath_enabled(False)
    m.eval()
    with torch.enable_grad():
        _, w_eval = m(x, x, x, need_weights=True, average_attn_weights=False)
    m.train()
    torch.manual_seed(BASE_SEED - 2)
    with torch.enable_grad():
        out_train, w_train = m(x, x, x, need_weights=True, average_attn_weights=False)
    tensors = {n: p.detach().contiguous() for n, p in m.named_parameters()}
    tensors.update(query=x, attn_weights_eval=w_eval.detach().contiguous(),
                   attn_weights_train=w_train.detach().contiguous(),
                   attn_output_train=out_train.detach().contiguous())
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "dropout_train.safetensors"),
              metadata={"ctor": "MultiheadAttention(16, 4, dropout=0.3, batch_first=True)",
                        "forward": "self-attention, need_weights=True, average_attn_weights=False, train() and eval()",
                        "torch_version": torch.__version__})
    print(f"wrote a training-mode dropout case to {out_dir}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "torch"),
                    help="output directory (default: tests/fixtures/torch)")
    ap.add_argument("--checkpoint-out", default=str(ROOT / "tests" / "fixtures" / "torch_checkpoint"),
                    help="where the TransformerEncoder checkpoint goes (default: tests/fixtures/torch_checkpoint)")
    ap.add_argument("--runtime-only-out", default=str(ROOT / "tests" / "fixtures" / "torch_runtime_only"),
                    help="where cases marked runtime_only go (default: tests/fixtures/torch_runtime_only)")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME",
                    help="only these cases (index.json then lists just them; for debugging)")
    args = ap.parse_args()
    ensure_torch_venv(__file__)

    import hashlib
    import json
    import warnings

    import numpy as np
    import torch
    from safetensors.numpy import save_file

    warnings.filterwarnings("ignore", message="Support for mismatched")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    tv = torch.__version__
    # Cases where other frameworks legitimately differ from torch go to a second set that only
    # the Rust runtime's parity tests read (the framework suite reads --out).
    sets = {False: (Path(args.out), []), True: (Path(args.runtime_only_out), [])}
    for out_dir, _ in sets.values():
        out_dir.mkdir(parents=True, exist_ok=True)
    for idx, case in enumerate(CASES):
        if args.only and case["name"] not in args.only:
            continue
        out_dir, entries = sets[case["runtime_only"] is not None]
        entry, tensors, meta_case = build_case(idx, case, tv)
        path = out_dir / entry["file"]
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
                  metadata={"mha_case": json.dumps(meta_case, sort_keys=True)})
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append(entry)
        e = entry["expected"]
        print(f"{entry['file']:<60} {path.stat().st_size:>8} B  nan_out={e['nan_attn_output_count']:<3} "
              f"err64={entry['numerics']['max_abs_err_attn_output_f32_vs_f64']:.2e}  "
              f"fast={'taken' if entry['torch_fastpath']['taken'] else '-'}"
              f"{' (+fastpath output)' if 'attn_output_fastpath' in tensors else ''}")

    for out_dir, entries in sets.values():
        write_index(out_dir, entries, tv, prune=not args.only)
    if not args.only:
        write_checkpoint(Path(args.checkpoint_out))
        write_dropout_case(Path(args.checkpoint_out).parent / "torch_dropout")


def write_index(out_dir: Path, entries: list, tv: str, prune: bool) -> None:
    """`out_dir/index.json` for `entries`; with `prune`, other case files there are removed."""
    import json

    if prune:
        keep = {e["file"] for e in entries} | {"index.json"}
        for f in out_dir.iterdir():
            if f.name not in keep and f.suffix in (".safetensors", ".json"):
                f.unlink()

    errs = []
    for e in entries:
        if e["precision_sensitive"] is None:
            n = e["numerics"]
            errs.append(n["max_abs_err_attn_output_f32_vs_f64"])
            if n["max_abs_err_attn_weights_f32_vs_f64"] is not None:
                errs.append(n["max_abs_err_attn_weights_f32_vs_f64"])
    index = {
        "format": FORMAT,
        "torch_version": tv,
        "base_seed": BASE_SEED,
        "dtype": "float32",
        "case_count": len(entries),
        "total_bytes": sum((out_dir / e["file"]).stat().st_size for e in entries),
        "conventions": CONVENTIONS,
        "fully_masked_rows": FULLY_MASKED_ROWS,
        "suggested_tolerance": {
            "atol": 1e-05,
            "rtol": 0.0001,
            "note": "compare NaN positions exactly; max f32-vs-f64 error over the cases not marked precision_sensitive is in max_err_f32_vs_f64",
        },
        "max_err_f32_vs_f64": max(errs) if errs else None,
        "cases": entries,
    }
    (out_dir / "index.json").write_text(json.dumps(index, indent=1))
    print(f"wrote {len(entries)} cases, {index['total_bytes']} bytes of safetensors, to {out_dir}")


if __name__ == "__main__":
    main()
