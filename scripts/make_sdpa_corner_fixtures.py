#!/usr/bin/env python3
"""Generate torch SDPA cases for the non-finite corners the frameworks' fused ops treat differently from torch.

    scripts/make_sdpa_corner_fixtures.py [--out DIR]

Default DIR is tests/fixtures/sdpa_corners, in the format of scripts/make_sdpa_fixtures.py
(`sdpa-golden-fixtures/1`, ../shared/parity/sdpa/FORMAT.md). Each case is one place where a fused op
that masks by selection (JAX, Keras, MLX: `where(mask, scores, -big)`) or that spreads a row with
nothing to attend over its keys would not give torch's numbers, and where torch's CPU kernels agree
with each other at every size tried (L, S from 4 to 70):

- a NaN key under a bool or float mask: torch adds the mask (NaN + -inf = NaN), so every row is NaN;
- a NaN key hidden by the causal triangle: torch's causal mask hides it (rows before it stay finite);
- a NaN or infinite value together with a fully masked row: the row's probabilities are 0 and
  0 * NaN, 0 * inf are NaN, so that row is 0 except in the value's non-finite column.

(Rows whose every score is NaN, a NaN query or every visible key NaN, are left out: torch's CPU
kernel gives 0 at some sizes and NaN at others.) Outputs come from the real
torch.nn.functional.scaled_dot_product_attention in float32 on the CPU's default dispatch, seeded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from make_sdpa_fixtures import index_entry, write_index
from torch_venv import ensure_torch_venv

ROOT = Path(__file__).resolve().parent.parent
BASE_SEED = 20261130


def cases(torch):
    """(name, query, key, value, attn_mask, is_causal), each from its own seeded generator."""
    nan, inf = float("nan"), float("inf")
    out = []

    def rand(g, *shape):
        return torch.randn(shape, generator=g)

    def add(name, build):
        g = torch.Generator().manual_seed(BASE_SEED + len(out))
        out.append((name,) + build(g))

    def nan_key_masked(g, kind):
        q, k, v = rand(g, 1, 2, 5, 8), rand(g, 1, 2, 9, 8), rand(g, 1, 2, 9, 8)
        k[0, 0, 3, 5] = nan
        keep = torch.rand((5, 9), generator=g) < 0.7
        keep[:, 3] = False  # the NaN key is masked for every query
        keep[:, 0] = True
        if kind == "bool":
            return q, k, v, keep, False
        return q, k, v, torch.where(keep, rand(g, 5, 9), torch.tensor(-inf)), False

    def nan_key_causal(g, l, s, at):
        q, k, v = rand(g, 1, 2, l, 8), rand(g, 1, 2, s, 8), rand(g, 1, 2, s, 8)
        k[0, 1, at, 2] = nan
        return q, k, v, None, True

    def bad_value_dead_row(g, bad, kind):
        q, k, v = rand(g, 2, 2, 5, 8), rand(g, 2, 2, 7, 8), rand(g, 2, 2, 7, 6)
        v[1, 0, 4, 2] = bad
        keep = torch.rand((2, 1, 5, 7), generator=g) < 0.8
        keep[..., 0] = True
        keep[1, :, 3, :] = False  # query row 3 of batch 1 attends nothing
        if kind == "bool":
            return q, k, v, keep, False
        return q, k, v, torch.where(keep, torch.tensor(0.0), torch.tensor(-inf)), False

    add("nan_key_bool_masked", lambda g: nan_key_masked(g, "bool"))
    add("nan_key_float_masked", lambda g: nan_key_masked(g, "float"))
    add("nan_key_causally_hidden_square", lambda g: nan_key_causal(g, 7, 7, 4))
    add("nan_key_causally_hidden_L4_S9", lambda g: nan_key_causal(g, 4, 9, 5))
    add("nan_value_fully_masked_row_bool", lambda g: bad_value_dead_row(g, nan, "bool"))
    add("inf_value_fully_masked_row_float", lambda g: bad_value_dead_row(g, inf, "float"))
    return out


def main() -> None:
    ensure_torch_venv(__file__)
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "sdpa_corners")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    entries = []
    for idx, (name, q, k, v, mask, causal) in enumerate(cases(torch)):
        with torch.no_grad():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=causal)
        tensors = {"query": q, "key": k, "value": v, "output": out}
        if mask is not None:
            tensors["attn_mask"] = mask
        file = f"{idx:02d}_{name}.safetensors"
        save_file({key: t.contiguous() for key, t in tensors.items()}, str(args.out / file))
        # Non-finite inputs: torch's float64 run is no yardstick here (its kernels differ).
        entries.append(index_entry(name, file, tensors, torch,
                                   call={"is_causal": causal, "scale": None, "enable_gqa": False},
                                   max_err_f32_vs_f64=None, precision=None))
        print(f"{file}: output {tuple(out.shape)}, NaN rows {int(torch.isnan(out).any(-1).sum())}")
    write_index(args.out, entries, torch, None, base_seed=BASE_SEED)

if __name__ == "__main__":
    main()
