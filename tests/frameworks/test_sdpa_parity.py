"""Every torch SDPA parity case through the framework's scaled_dot_product_attention glue.

The cases are the committed sets (tests/fixtures/sdpa, made with real torch by scripts/make_sdpa_fixtures.py;
tests/fixtures/sdpa_corners, the non-finite corners where a fused op's masking differs from torch's, by
scripts/make_sdpa_corner_fixtures.py) and the three samples beside the format note
(../shared/parity/sdpa/samples), all in the format `sdpa-golden-fixtures/1`. A case passes when the glue's output matches torch's within the set's
suggested tolerance (|got - want| <= atol + rtol |want| elementwise, NaN positions equal); a refusal
(UnsupportedFeature), an exception or a mismatch fails it, and the failure says which (refused /
crashed / wrong). With MHA_SDPA_MATRIX_OUT set, the outcome of every case and the largest |got - want|
are written there as JSON.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import _support

SDPA_FORMAT = "sdpa-golden-fixtures/1"
OP_MODULE = "scaled_dot_product_attention"


def sdpa_fixture_dirs() -> list:
    """(label, folder) of every SDPA case set: MHA_SDPA_FIXTURES (os.pathsep-separated) or the committed
    sets and the shared samples (when ../shared is beside the checkout)."""
    given = os.environ.get("MHA_SDPA_FIXTURES")
    if given:
        return [(Path(p).name, Path(p)) for p in given.split(os.pathsep) if p]
    dirs = [(name, _support.ROOT / "tests" / "fixtures" / name) for name in ("sdpa", "sdpa_corners")]
    samples = _support.ROOT.parent / "shared" / "parity" / "sdpa" / "samples"
    if (samples / "index.json").is_file():
        dirs.append(("samples", samples))
    return dirs


def load_sdpa_index(folder: Path) -> dict:
    path = folder / "index.json"
    if not path.is_file():
        raise _support.SuiteSetupError(f"no SDPA case index at {path} (make it with scripts/make_sdpa_fixtures.py)")
    index = json.loads(path.read_text())
    if index.get("format") != SDPA_FORMAT:
        raise _support.SuiteSetupError(f"{path}: format {index.get('format')!r}, expected {SDPA_FORMAT!r}")
    return index


def sdpa_glue():
    """(mha_glue._shared, the package-level helpers such as UnsupportedFeature; the op's glue module of the
    framework under test)."""
    glue_dir = os.environ.get("MHA_GLUE_DIR")
    if not glue_dir:
        raise _support.SuiteSetupError("MHA_GLUE_DIR is not set (run the suite through scripts/test-frameworks.sh)")
    if glue_dir not in sys.path:
        sys.path.insert(0, glue_dir)
    shared = importlib.import_module("mha_glue._shared")
    return shared, importlib.import_module(f"mha_glue.{OP_MODULE}.{_support.framework_key()}")


def _cases():
    params = []
    for label, folder in sdpa_fixture_dirs():
        index = load_sdpa_index(folder)
        tol = index["suggested_tolerance"]
        for case in index["cases"]:
            params.append(pytest.param(folder, case, tol, id=f"{label}/{case['name']}"))
    return params


_OUTCOMES: dict = {}  # case id -> {"outcome": ..., "max_abs_diff": ...}


@pytest.fixture(scope="module", autouse=True)
def _write_matrix():
    yield
    out = os.environ.get("MHA_SDPA_MATRIX_OUT")
    if out and _OUTCOMES:
        counts = {k: sum(1 for o in _OUTCOMES.values() if o["outcome"] == k)
                  for k in ("matched", "wrong", "crashed", "refused")}
        diffs = [o["max_abs_diff"] for o in _OUTCOMES.values() if o.get("max_abs_diff") is not None]
        with open(out, "w") as f:
            json.dump({"framework": os.environ.get("MHA_FRAMEWORK"), "cases": len(_OUTCOMES), **counts,
                       "max_abs_diff": max(diffs) if diffs else None, "case_outcomes": _OUTCOMES}, f, indent=1)


@pytest.fixture(scope="module")
def sdpa():
    return sdpa_glue()


def case_call(case: dict, tensors: dict) -> dict:
    """The keyword arguments of a case's torch call, from its index entry and tensors."""
    call = case["call"]
    mask = None
    if call["attn_mask"] is not None:
        mask = tensors["attn_mask"]
        assert str(mask.dtype) == call["attn_mask"]["dtype"] and list(mask.shape) == call["attn_mask"]["shape"]
    return dict(query=tensors["query"], key=tensors["key"], value=tensors["value"], attn_mask=mask,
                dropout_p=call["dropout_p"], is_causal=call["is_causal"], scale=call["scale"],
                enable_gqa=call["enable_gqa"])


def max_abs_diff(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    ok = np.isfinite(want) & np.isfinite(got)
    return float(np.abs(got[ok] - want[ok]).max()) if ok.any() else 0.0


@pytest.mark.parametrize("folder, case, tol", _cases())
def test_sdpa_case(sdpa, folder, case, tol, request):
    glue_pkg, module = sdpa
    tensors = _support.load_tensors(folder / case["file"])
    node = request.node.callspec.id
    try:
        got = module.scaled_dot_product_attention(**case_call(case, tensors))
    except glue_pkg.UnsupportedFeature as exc:
        _OUTCOMES[node] = {"outcome": "refused", "why": str(exc)}
        pytest.fail(f"refused: {exc} (every committed case has dropout_p = 0, which every framework must run)")
    except Exception as exc:  # noqa: BLE001 - any other exception is a crash of the glue
        _OUTCOMES[node] = {"outcome": "crashed", "why": f"{type(exc).__name__}: {exc}"}
        raise
    want = tensors["output"]
    problem = _support.mismatch(got, want, "output", atol=tol["atol"], rtol=tol["rtol"])
    diff = max_abs_diff(got, want) if problem is None or np.shape(got) == want.shape else None
    _OUTCOMES[node] = {"outcome": "wrong" if problem else "matched", "max_abs_diff": diff}
    note = case.get("precision_sensitive")
    assert problem is None, f"wrong: {problem}" + (f" [precision-sensitive case: {note}]" if note else "")


def test_sdpa_case_sets_are_complete():
    """The committed set is there, and each case's file holds what its index entry lists."""
    labels = [label for label, _ in sdpa_fixture_dirs()]
    assert os.environ.get("MHA_SDPA_FIXTURES") or {"sdpa", "sdpa_corners"} <= set(labels)
    for _, folder in sdpa_fixture_dirs():
        index = load_sdpa_index(folder)
        assert index["cases"], f"{folder}: no cases"
        for case in index["cases"]:
            tensors = _support.load_tensors(folder / case["file"])
            assert sorted(tensors) == sorted(case["tensors"]), case["name"]
            for name, meta in case["tensors"].items():
                assert list(tensors[name].shape) == meta["shape"], (case["name"], name)
