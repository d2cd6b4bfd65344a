"""Shared helpers of the framework suite: the run's settings, fixture reading and writing, comparison.

Settings come from the environment (scripts/test-frameworks.sh sets them):

- MHA_FRAMEWORK     framework key of the glue module under test (pytorch, keras, tensorflow, mlx, flax_nnx)
- MHA_GLUE_DIR      folder holding the generated `mha_glue` package (mha-gen's DIR/python)
- MHA_FIXTURES      torch parity fixture set (default: tests/fixtures/torch of this checkout)
- MHA_PARITY_RUNNER the parity runner binary (crate mha-parity); unset = `cargo run --release -p mha-parity
                    --` from the checkout
- MHA_MATRIX_OUT    optional JSON file the per-case outcome matrix is written to
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_FORMAT = "mha-golden-fixtures/1"
ATOL = 1e-5
RTOL = 1e-4


class SuiteSetupError(RuntimeError):
    """The suite's environment is incomplete (missing variable, package or fixture set)."""


# The op package this suite tests: mha_glue.<OP_MODULE>.<framework>.
OP_MODULE = "multihead_attention"


def framework_key() -> str:
    key = os.environ.get("MHA_FRAMEWORK")
    if not key:
        raise SuiteSetupError("MHA_FRAMEWORK is not set (run the suite through scripts/test-frameworks.sh)")
    return key


def glue_module():
    """The generated glue module of the framework under test."""
    glue_dir = os.environ.get("MHA_GLUE_DIR")
    if not glue_dir:
        raise SuiteSetupError("MHA_GLUE_DIR is not set (run the suite through scripts/test-frameworks.sh)")
    if not (Path(glue_dir) / "mha_glue" / "__init__.py").is_file():
        raise SuiteSetupError(f"MHA_GLUE_DIR={glue_dir} holds no generated mha_glue package")
    if glue_dir not in sys.path:
        sys.path.insert(0, glue_dir)
    package = importlib.import_module("mha_glue").load(OP_MODULE)
    return package, package.load(framework_key())


def fixtures_dir() -> Path:
    return Path(os.environ.get("MHA_FIXTURES") or ROOT / "tests" / "fixtures" / "torch")


def load_index(folder: Path) -> dict:
    path = folder / "index.json"
    if not path.is_file():
        raise SuiteSetupError(f"no fixture index at {path} (make it with scripts/make_torch_fixtures.py)")
    index = json.loads(path.read_text())
    if index.get("format") != FIXTURE_FORMAT:
        raise SuiteSetupError(f"{path}: format {index.get('format')!r}, expected {FIXTURE_FORMAT!r}")
    return index


def load_tensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def mismatch(got, want, what: str, atol: float = ATOL, rtol: float = RTOL):
    """None when `got` matches `want` (shape, NaN positions exactly, |got - want| <= atol + rtol |want|),
    else a message saying how it differs."""
    want = np.asarray(want)
    if got is None:
        return f"{what}: got None, expected an array of shape {want.shape}"
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, expected {want.shape}"
    if got.dtype != np.float32:
        return f"{what}: dtype {got.dtype}, expected float32"
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    if not np.array_equal(nan_got, nan_want):
        return (f"{what}: NaN at {int(nan_got.sum())} positions, expected {int(nan_want.sum())}; "
                f"first difference at {tuple(int(i) for i in np.argwhere(nan_got != nan_want)[0])}")
    ok = ~nan_want
    g, w = got[ok].astype(np.float64), want[ok].astype(np.float64)
    if not np.array_equal(np.isinf(g), np.isinf(w)) or not np.array_equal(g[np.isinf(w)], w[np.isinf(w)]):
        return f"{what}: infinities differ"
    fin = np.isfinite(w)
    err = np.abs(g[fin] - w[fin])
    bad = err > atol + rtol * np.abs(w[fin])
    if bad.any():
        return (f"{what}: {int(bad.sum())} of {bad.size} elements off; max |got - want| = {err.max():.3g} "
                f"(atol {atol}, rtol {rtol})")
    return None


def bits_equal(a, b) -> bool:
    """Exact equality, bit for bit (float32, same shape)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------------------------
# Features a fixture case uses, derived from its index entry and tensors alone (not from the glue)
# ---------------------------------------------------------------------------------------------


CTOR_DEFAULTS = dict(dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False, kdim=None, vdim=None,
                     batch_first=False)


def full_ctor(ctor: dict) -> dict:
    """Constructor arguments with torch's defaults filled in."""
    return dict(CTOR_DEFAULTS, **ctor)


def resolved_ctor(ctor: dict) -> dict:
    """full_ctor with kdim / vdim resolved (None means embed_dim)."""
    out = full_ctor(ctor)
    for name in ("kdim", "vdim"):
        if out.get(name) is None:
            out[name] = out["embed_dim"]
    return out


def masked_positions(case: dict, tensors: dict) -> np.ndarray | None:
    """Bool (N, H, L, S') of the keys each query may not attend after both masks are merged and padded."""
    kpm, am = tensors.get("key_padding_mask"), tensors.get("attn_mask")
    if kpm is None and am is None:
        return None
    ctor = case["ctor"]
    n = case["batch_size"] if case["batched"] else 1
    h, tgt, src = ctor["num_heads"], case["tgt_len"], case["src_len"]
    full = np.zeros((n, h, tgt, src), dtype=bool)
    if am is not None:
        a = am if am.dtype == np.bool_ else np.isneginf(am)
        full |= a[None, None] if a.ndim == 2 else a.reshape(n, h, tgt, src)
    if kpm is not None:
        k = kpm if kpm.dtype == np.bool_ else np.isneginf(kpm)
        full |= k.reshape(n, 1, 1, src)
    extra = int(ctor["add_bias_kv"]) + int(ctor["add_zero_attn"])
    return np.concatenate([full, np.zeros((n, h, tgt, extra), dtype=bool)], axis=-1)


def case_features(case: dict, tensors: dict, training: bool = False) -> set:
    """The spec features (specs/multihead_attention.yaml `features`) a fixture case exercises."""
    ctor = resolved_ctor(case["ctor"])
    fwd = case["forward"]
    used = set()
    if case["batched"] and not ctor["batch_first"]:
        used.add("seq_first_layout")
    if not case["batched"]:
        used.add("unbatched")
    if not case["self_attention"] or case["src_len"] != case["tgt_len"]:
        used.add("cross_attention")
    if ctor["kdim"] != ctor["embed_dim"] or ctor["vdim"] != ctor["embed_dim"]:
        used.add("kdim_vdim")
    if ctor["kdim"] != ctor["vdim"]:
        used.add("kdim_ne_vdim")
    if not ctor["bias"]:
        used.add("no_bias")
    if ctor["add_bias_kv"]:
        used.add("add_bias_kv")
    if ctor["add_zero_attn"]:
        used.add("add_zero_attn")
    masks = [tensors[m] for m in ("key_padding_mask", "attn_mask") if m in tensors]
    for m in masks:
        used.add("bool_masks" if m.dtype == np.bool_ else "float_masks")
    if len(masks) == 2:
        used.add("both_masks")
    if "attn_mask" in tensors and tensors["attn_mask"].ndim == 3:
        used.add("per_head_attn_mask")
    if fwd["is_causal"]:
        used.add("is_causal")
    if fwd["need_weights"]:
        used.add("need_weights" if fwd["average_attn_weights"] else "per_head_weights")
    masked = masked_positions(case, tensors)
    if masked is not None and masked.all(axis=-1).any():
        used.add("fully_masked_rows")
    if training and ctor["dropout"] > 0:
        used.add("training_dropout")
    return used


def call_inputs(case: dict, tensors: dict) -> dict:
    """forward() arguments of a fixture case (self-attention passes one array as query, key and value)."""
    q = tensors["query"]
    k, v = (q, q) if case["self_attention"] else (tensors["key"], tensors["value"])
    fwd = case["forward"]
    return dict(
        query=q, key=k, value=v,
        key_padding_mask=tensors.get("key_padding_mask"),
        need_weights=fwd["need_weights"],
        attn_mask=tensors.get("attn_mask"),
        average_attn_weights=fwd["average_attn_weights"],
        is_causal=fwd["is_causal"],
    )


def params_of(case: dict, tensors: dict) -> dict:
    return {name: tensors[name] for name in case["params"]}


# ---------------------------------------------------------------------------------------------
# The parity runner (crate mha-parity)
# ---------------------------------------------------------------------------------------------


def parity_runner_command(folder: Path) -> list:
    runner = os.environ.get("MHA_PARITY_RUNNER")
    if runner:
        if not os.access(runner, os.X_OK):
            raise SuiteSetupError(f"MHA_PARITY_RUNNER={runner} is not an executable file")
        return [runner, str(folder)]
    return ["cargo", "run", "--quiet", "--release", "-p", "mha-parity", "--", str(folder)]


def run_parity_runner(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(parity_runner_command(folder), cwd=ROOT, capture_output=True, text=True, timeout=1800)
