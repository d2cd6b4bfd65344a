"""A layer made by the framework itself (its own initialisation), exported through the glue's state_dict,
written as a parity fixture directory (FORMAT `mha-golden-fixtures/1`, the framework's outputs as the
expected values) and run through the parity runner (crate mha-parity): the runtime must give the framework's
own numbers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import _support

# (name, ctor, call): call says layout and masks; every configuration keeps key 0 attendable so no query
# row is fully masked (that behaviour is pinned by the torch fixture set, not here).
CASES = [
    ("self_seqfirst_avg", dict(embed_dim=16, num_heads=4),
     dict(batched=True, self_attention=True, tgt=5, src=5)),
    ("cross_batchfirst_masks_per_head", dict(embed_dim=16, num_heads=2, batch_first=True),
     dict(batched=True, tgt=4, src=7, kpm="bool", attn_mask="float2d", average_attn_weights=False)),
    ("kdim_vdim_mask3d_no_weights", dict(embed_dim=16, num_heads=4, kdim=10, vdim=12),
     dict(batched=True, tgt=5, src=6, attn_mask="bool3d", need_weights=False)),
    ("bias_kv_zero_attn_float_kpm", dict(embed_dim=8, num_heads=2, add_bias_kv=True, add_zero_attn=True),
     dict(batched=True, tgt=3, src=5, kpm="float")),
    ("no_bias_unbatched_per_head", dict(embed_dim=12, num_heads=3, bias=False),
     dict(batched=False, tgt=4, src=6, attn_mask="bool2d", average_attn_weights=False)),
    ("causal_batchfirst_no_weights", dict(embed_dim=16, num_heads=4, batch_first=True),
     dict(batched=True, self_attention=True, tgt=6, src=6, attn_mask="causal", is_causal=True,
          need_weights=False)),
]
BATCH = 2


def _make_case(index, name, ctor, call, rng):
    """Inputs and the FORMAT index entry (without outputs, params and tensors) of one case."""
    full_ctor = _support.full_ctor(ctor)
    c = _support.resolved_ctor(full_ctor)
    batched, tgt, src, h = call["batched"], call["tgt"], call["src"], c["num_heads"]
    n = BATCH if batched else None

    def shape(s, f):
        if not batched:
            return (s, f)
        return (n, s, f) if c["batch_first"] else (s, n, f)

    tensors = {"query": rng.standard_normal(shape(tgt, c["embed_dim"])).astype(np.float32)}
    if call.get("self_attention"):
        tensors["key"] = tensors["value"] = tensors["query"]
    else:
        tensors["key"] = rng.standard_normal(shape(src, c["kdim"])).astype(np.float32)
        tensors["value"] = rng.standard_normal(shape(src, c["vdim"])).astype(np.float32)
    kpm_shape = (n, src) if batched else (src,)
    kind = call.get("kpm")
    if kind == "bool":
        kpm = rng.random(kpm_shape) < 0.3
        kpm[..., 0] = False
        tensors["key_padding_mask"] = kpm
    elif kind == "float":
        kpm = (rng.standard_normal(kpm_shape) * 0.5).astype(np.float32)
        kpm[rng.random(kpm_shape) < 0.3] = -np.inf
        kpm[..., 0] = 0.0
        tensors["key_padding_mask"] = kpm
    kind = call.get("attn_mask")
    heads = (n * h if batched else h, tgt, src)
    if kind == "float2d":
        tensors["attn_mask"] = rng.standard_normal((tgt, src)).astype(np.float32)
    elif kind == "bool2d":
        am = rng.random((tgt, src)) < 0.3
        am[:, 0] = False
        tensors["attn_mask"] = am
    elif kind == "bool3d":
        am = rng.random(heads) < 0.3
        am[..., 0] = False
        tensors["attn_mask"] = am
    elif kind == "causal":
        tensors["attn_mask"] = np.triu(np.ones((tgt, src), dtype=bool), 1)
    forward = dict(need_weights=call.get("need_weights", True),
                   average_attn_weights=call.get("average_attn_weights", True),
                   is_causal=call.get("is_causal", False))
    for m in ("key_padding_mask", "attn_mask"):
        t = tensors.get(m)
        forward[m] = None if t is None else {"dtype": "bool" if t.dtype == np.bool_ else "float32",
                                             "shape": list(t.shape)}
    if forward["attn_mask"] is not None:
        forward["attn_mask"]["kind"] = kind
    entry = dict(
        name=name, file=f"{index:02d}_{name}.safetensors", description=f"{name} (native init, {_support.framework_key()})",
        ctor=full_ctor, forward=forward, batched=batched, batch_size=n, tgt_len=tgt, src_len=src,
        kdim=c["kdim"], vdim=c["vdim"], self_attention=bool(call.get("self_attention")),
        precision_sensitive=None,
    )
    return entry, tensors


def _write_fixture_dir(folder, glue_module, glue_pkg):
    """Runs every case through the framework and writes the directory; returns (written, refused)."""
    rng = np.random.default_rng(20261125)
    cases, refused = [], []
    for i, (name, ctor, call) in enumerate(CASES):
        entry, tensors = _make_case(i, name, ctor, call, rng)
        try:
            layer = glue_module.build(**entry["ctor"])  # the framework's own init
            state = glue_module.state_dict(layer)
            out, weights = glue_module.forward(layer, **_support.call_inputs(entry, tensors))
        except glue_pkg.UnsupportedFeature as exc:
            used = _support.case_features(entry, tensors)
            assert glue_module.SUPPORT[exc.feature][0] == "unsupported" and exc.feature in used, str(exc)
            refused.append((name, str(exc)))
            continue
        assert np.isfinite(out).all(), f"{name}: the framework's output holds NaN or inf"
        file_tensors = dict(state)
        file_tensors.update(tensors)
        file_tensors["attn_output"] = out
        if entry["forward"]["need_weights"]:
            file_tensors["attn_weights"] = weights
        _support.save_tensors(file_tensors, folder / entry["file"])
        entry.update(
            params=sorted(state),
            tensors={k: {"shape": list(v.shape), "dtype": "bool" if v.dtype == np.bool_ else "float32"}
                     for k, v in sorted(file_tensors.items())},
            expected=dict(fully_masked_rows_present=False, has_nan_attn_output=False,
                          has_nan_attn_weights=False, nan_attn_output_count=0),
        )
        cases.append(entry)
    index = {
        "format": _support.FIXTURE_FORMAT,
        "torch_version": None,
        "made_by": f"{glue_module.FRAMEWORK} ({glue_module.API}) through mha_glue, its own initialisation",
        "dtype": "float32",
        "conventions": "torch's (FORMAT.md); outputs are the framework's own",
        "suggested_tolerance": {"atol": _support.ATOL, "rtol": _support.RTOL},
        "case_count": len(cases),
        "cases": cases,
    }
    (folder / "index.json").write_text(json.dumps(index, indent=1))
    return cases, refused


@pytest.fixture(scope="module")
def native_fixture_dir(glue, tmp_path_factory):
    glue_pkg, glue_module = glue
    folder = tmp_path_factory.mktemp(f"native_{_support.framework_key()}")
    cases, refused = _write_fixture_dir(folder, glue_module, glue_pkg)
    return folder, cases, refused


def test_native_layer_runs_in_the_rust_runtime(native_fixture_dir):
    folder, cases, refused = native_fixture_dir
    assert len(cases) >= len(CASES) // 2, f"too few cases left after refusals: {refused}"
    result = _support.run_parity_runner(folder)
    assert result.returncode == 0, (
        f"parity runner failed on the {_support.framework_key()} layer (exit {result.returncode}); fixtures in "
        f"{folder}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    for case in cases:
        assert case["name"] in result.stdout + result.stderr, f"runner output does not mention {case['name']}"


def test_runner_rejects_a_wrong_output(native_fixture_dir, tmp_path):
    """The same directory with one output element moved by 1e-2 must fail: the runner really compares."""
    folder, cases, _ = native_fixture_dir
    bad = tmp_path / "corrupted"
    shutil.copytree(folder, bad)
    case = cases[0]
    tensors = _support.load_tensors(bad / case["file"])
    tensors["attn_output"] = tensors["attn_output"].copy()
    tensors["attn_output"].flat[0] += 1e-2
    _support.save_tensors(tensors, bad / case["file"])
    result = _support.run_parity_runner(bad)
    assert result.returncode == 1, (
        f"parity runner should report the corrupted attn_output as a failed case (exit 1), got exit "
        f"{result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    assert "FAIL" in result.stdout and case["name"] in result.stdout, result.stdout[-2000:]
