#!/usr/bin/env python3
"""Generate the torch scaled_dot_product_attention parity set (format `sdpa-golden-fixtures/1`).

    scripts/make_sdpa_fixtures.py [--out DIR] [--only NAME ...]

Default DIR is tests/fixtures/sdpa. The format is described in ../shared/parity/sdpa/FORMAT.md:
index.json + one safetensors file per case (`query`, `key`, `value`, `attn_mask` when used,
and torch's `output`). Outputs come from the real torch.nn.functional.scaled_dot_product_attention
in float32 on the CPU's default dispatch with dropout_p=0, under no_grad; each case's f32-vs-f64
error is torch's own (the same call on float64 copies). Everything is seeded (torch.Generator
seeded with base_seed + case index), so re-running with the same torch gives the same files.

Not inside .venvs/torch? Then the script runs `scripts/framework-env.sh torch` and re-executes
itself with .venvs/torch/bin/python.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch_venv import ensure_torch_venv

ROOT = Path(__file__).resolve().parent.parent


FORMAT = "sdpa-golden-fixtures/1"
BASE_SEED = 20261129

CONVENTIONS = {
    "call": "output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p=0.0, is_causal, scale, enable_gqa), default CPU dispatch, no_grad",
    "shapes": "query (..., Hq, L, E), key (..., Hkv, S, E), value (..., Hkv, S, Ev), output (..., Hq, L, Ev); leading dims broadcast; rank 2 and 3 allowed",
    "bool_mask": "True = the position TAKES PART in attention (opposite of nn.MultiheadAttention's masks)",
    "float_mask": "added to the scores; broadcast to (..., Hq, L, S)",
    "scale": "null = 1/sqrt(E)",
    "is_causal": "top-left aligned lower triangle tril(ones(L, S)); not combined with attn_mask",
    "enable_gqa": "Hq a multiple of Hkv; key/value head j serves query heads j*Hq/Hkv .. (j+1)*Hq/Hkv-1 (repeat_interleave)",
    "fully_masked_rows": "a query row with no position taking part gives 0 (this torch version, default and math backends)",
}

PRECISION_NOTE_1E9 = (
    "one query row of the float mask is -1e9 for every key: in float32, -1e9 + score rounds to the same value "
    "for every key, so that row's softmax is uniform; a kernel that adds the mask in higher precision gives "
    "ordinary softmax weights. The case only matches when the mask is added to the scores in float32."
)


# --------------------------------------------------------------------------------------------
# Case table. Shapes are (query, key, value); a mask spec is (kind, shape, options) where kind is
# "bool" (True = takes part, drawn with p_keep) or "float" (randn * scale, with -inf at p_inf).
# A shape may use the letters N, H (query heads), L, S, resolved from the query/key shapes.
# --------------------------------------------------------------------------------------------

def C(name, q, k=None, v=None, mask=None, causal=False, scale=None, gqa=False, **extra):
    return dict(name=name, q=q, k=k or q, v=v or k or q, mask=mask, causal=causal, scale=scale, gqa=gqa,
                **extra)


def bool_mask(shape, p_keep=0.7, full_rows=(), full_batches=()):
    return ("bool", shape, dict(p_keep=p_keep, full_rows=full_rows, full_batches=full_batches))


def float_mask(shape, scale=1.0, p_inf=0.0, full_rows=(), neg_1e9_row=None):
    return ("float", shape, dict(scale=scale, p_inf=p_inf, full_rows=full_rows, neg_1e9_row=neg_1e9_row))


B4 = (2, 4, 6, 8)        # (N, H, L, E) for the mask broadcast cases
K4 = (2, 4, 10, 8)       # (N, H, S, E)
BROADCAST_SHAPES = [
    ("LS", "L,S"), ("1S", "1,S"), ("L1", "L,1"), ("HLS", "H,L,S"), ("N1LS", "N,1,L,S"),
    ("N11S", "N,1,1,S"), ("NHLS", "N,H,L,S"), ("1H1S", "1,H,1,S"), ("11LS", "1,1,L,S"), ("NH11", "N,H,1,1"),
]

CASES = [
    C("basic_self", (2, 4, 8, 16)),
    C("cross_L5_S9", (2, 3, 5, 8), (2, 3, 9, 8)),
    C("value_dim_12", (2, 2, 6, 8), (2, 2, 7, 8), (2, 2, 7, 12)),
    C("gqa_8q_2kv", (2, 8, 6, 16), (2, 2, 10, 16), gqa=True),
    C("mqa_6q_1kv", (1, 6, 5, 8), (1, 1, 7, 8), gqa=True),
    C("gqa_key_2_value_4_heads", (1, 8, 5, 8), (1, 2, 7, 8), (1, 4, 7, 8), gqa=True),
    C("gqa_causal", (2, 8, 6, 16), (2, 2, 6, 16), gqa=True, causal=True),
    C("gqa_mask_NHLS", (1, 4, 5, 8), (1, 2, 9, 8), gqa=True, mask=bool_mask("N,H,L,S")),
    C("causal_square", (2, 4, 7, 8), causal=True),
    C("causal_L4_S9", (1, 3, 4, 8), (1, 3, 9, 8), causal=True),
    C("causal_L9_S4", (1, 3, 9, 8), (1, 3, 4, 8), causal=True),
    C("custom_scale_0_3", (2, 2, 5, 8), (2, 2, 6, 8), scale=0.3),
    C("custom_scale_2_5_causal", (1, 2, 6, 8), scale=2.5, causal=True),
    C("custom_scale_float_mask", (1, 2, 5, 8), (1, 2, 7, 8), scale=0.125, mask=float_mask("L,S")),
    *[C(f"bool_mask_{tag}", B4, K4, mask=bool_mask(shape)) for tag, shape in BROADCAST_SHAPES],
    *[C(f"float_mask_{tag}", B4, K4, mask=float_mask(shape, p_inf=0.2)) for tag, shape in BROADCAST_SHAPES],
    C("bool_mask_fully_masked_rows", B4, K4, mask=bool_mask("N,H,L,S", full_rows=(0, 3))),
    C("bool_mask_fully_masked_batch", B4, K4, mask=bool_mask("N,1,1,S", full_batches=(1,))),
    C("float_mask_fully_masked_rows", B4, K4, mask=float_mask("L,S", p_inf=0.3, full_rows=(2,))),
    C("float_mask_neg_1e9_row", B4, K4, mask=float_mask("L,S", neg_1e9_row=1), precision=PRECISION_NOTE_1E9),
    C("rank2", (5, 8), (7, 8)),
    C("rank2_bool_mask", (5, 8), (7, 8), mask=bool_mask("L,S")),
    C("rank2_causal", (6, 8), (4, 8), causal=True),
    C("rank3", (4, 5, 8), (4, 7, 8)),
    C("rank3_gqa", (6, 5, 8), (2, 7, 8), gqa=True),
    C("rank5", (2, 3, 2, 5, 8), (2, 3, 2, 7, 8)),
    C("rank5_gqa_mask", (2, 3, 4, 5, 8), (2, 3, 2, 7, 8), gqa=True, mask=float_mask("3,1,L,S")),
    C("key_batch_1_broadcast", (3, 4, 5, 8), (1, 4, 7, 8)),
    C("query_batch_1_broadcast", (1, 4, 5, 8), (3, 4, 7, 8)),
    C("key_head_1_broadcast", (2, 4, 5, 8), (2, 1, 7, 8)),
    C("decode_L1", (1, 4, 1, 64), (1, 4, 300, 64)),
    C("decode_L1_gqa", (1, 8, 1, 64), (1, 2, 300, 64), gqa=True),
    C("decode_L1_causal_top_left", (1, 2, 1, 16), (1, 2, 20, 16), causal=True),
    C("head_size_1", (2, 4, 6, 1), (2, 4, 9, 1)),
    C("head_size_128", (1, 2, 70, 128), (1, 2, 200, 128)),
    C("not_tile_multiple_L130_S67", (1, 2, 130, 32), (1, 2, 67, 32)),
    C("not_tile_multiple_causal_129", (1, 2, 129, 32), causal=True),
    C("not_tile_multiple_mask_L130_S67", (1, 2, 130, 16), (1, 2, 67, 16), mask=float_mask("L,S", p_inf=0.1)),
    C("long_S_5000", (1, 1, 3, 16), (1, 1, 5000, 16)),
    C("large_logits", (1, 2, 6, 8), (1, 2, 8, 8), magnitude=12.0),
    C("nan_in_query", (1, 2, 4, 8), (1, 2, 6, 8), nan=("query", (0, 0, 2, 0))),
    C("nan_in_key", (1, 2, 4, 8), (1, 2, 6, 8), nan=("key", (0, 1, 3, 5))),
    C("nan_in_value_causally_hidden", (1, 2, 70, 8), causal=True, nan=("value", (0, 0, 69, 1))),
    C("no_keys_S0", (1, 2, 3, 8), (1, 2, 0, 8)),
]


def _resolve(shape, q, k):
    if isinstance(shape, tuple):
        return shape
    sizes = {"N": q[0] if len(q) >= 4 else 1, "H": q[-3] if len(q) >= 3 else 1, "L": q[-2], "S": k[-2]}
    return tuple(sizes[t] if t in sizes else int(t) for t in shape.split(","))


def build(idx, case, torch, F):
    g = torch.Generator().manual_seed(BASE_SEED + idx)
    q_shape, k_shape, v_shape = case["q"], case["k"], case["v"]
    magnitude = case.get("magnitude", 1.0)
    q = torch.randn(q_shape, generator=g) * magnitude
    k = torch.randn(k_shape, generator=g) * magnitude
    v = torch.randn(v_shape, generator=g)
    if case.get("nan") is not None:
        which, at = case["nan"]
        {"query": q, "key": k, "value": v}[which][at] = float("nan")
    mask = None
    if case["mask"] is not None:
        kind, shape, opt = case["mask"]
        shape = _resolve(shape, q_shape, k_shape)
        if kind == "bool":
            mask = torch.rand(shape, generator=g) < opt["p_keep"]
            for r in opt["full_rows"]:
                mask[..., r, :] = False
            for b in opt["full_batches"]:
                mask[b] = False
        else:
            mask = torch.randn(shape, generator=g) * opt["scale"]
            if opt["p_inf"]:
                mask = mask.masked_fill(torch.rand(shape, generator=g) < opt["p_inf"], float("-inf"))
            for r in opt["full_rows"]:
                mask[..., r, :] = float("-inf")
            if opt["neg_1e9_row"] is not None:
                mask[..., opt["neg_1e9_row"], :] = -1e9
    kwargs = dict(attn_mask=mask, dropout_p=0.0, is_causal=case["causal"], scale=case["scale"],
                  enable_gqa=case["gqa"])
    with torch.no_grad():
        out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        mask64 = mask if mask is None or mask.dtype == torch.bool else mask.double()
        out64 = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                               **dict(kwargs, attn_mask=mask64))
    ok = ~(torch.isnan(out) | torch.isnan(out64))
    err = float((out.double() - out64)[ok].abs().max()) if ok.any() else 0.0
    tensors = {"query": q, "key": k, "value": v, "output": out}
    if mask is not None:
        tensors["attn_mask"] = mask
    return tensors, err


def index_entry(name, file, tensors, torch, call, max_err_f32_vs_f64, precision):
    """The `cases` entry of `index.json` for one case: its torch call (`call` holds is_causal, scale
    and enable_gqa; the mask is described from `tensors`, dropout is 0), its tensors and torch's
    result facts."""
    mask = tensors.get("attn_mask")
    return {
        "name": name,
        "file": file,
        "call": {
            "attn_mask": None if mask is None else {
                "dtype": "bool" if mask.dtype == torch.bool else "float32",
                "shape": list(mask.shape)},
            "dropout_p": 0.0,
            **call,
        },
        "tensors": {k: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for k, t in tensors.items()},
        "expected": {"has_nan": bool(torch.isnan(tensors["output"]).any()),
                     "max_err_f32_vs_f64": max_err_f32_vs_f64},
        "precision_sensitive": precision,
    }


def write_index(out, entries, torch, max_err_f32_vs_f64, base_seed=BASE_SEED):
    """Writes `out/index.json` in the format `sdpa-golden-fixtures/1`."""
    index = {
        "format": FORMAT,
        "torch_version": torch.__version__,
        "base_seed": base_seed,
        "dtype": "float32",
        "case_count": len(entries),
        "conventions": CONVENTIONS,
        "suggested_tolerance": {"atol": 1e-5, "rtol": 1e-4, "note": "NaN positions equal exactly"},
        "max_err_f32_vs_f64": max_err_f32_vs_f64,
        "cases": entries,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


def main() -> None:
    ensure_torch_venv(__file__)
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "sdpa")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    entries, errs = [], []
    for idx, case in enumerate(CASES):
        if args.only and case["name"] not in args.only:
            continue
        tensors, err = build(idx, case, torch, F)
        file = f"{idx:02d}_{case['name']}.safetensors"
        # No metadata: safetensors writes it from a hash map, in no fixed order.
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(args.out / file))
        precision = case.get("precision")
        if precision is None:
            errs.append(err)
        entries.append(index_entry(
            case["name"], file, tensors, torch,
            call={"is_causal": case["causal"], "scale": case["scale"], "enable_gqa": case["gqa"]},
            max_err_f32_vs_f64=err, precision=precision))
        print(f"{file}: output {tuple(tensors['output'].shape)}, f32 vs f64 {err:.2e}")
    write_index(args.out, entries, torch, max(errs) if errs else None)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{len(entries)} cases, {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
