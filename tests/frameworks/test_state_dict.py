"""Weights in the reference's state_dict layout: exact round trips and clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest

import _support


def _canonical_names(ctor):
    """torch's state_dict names for a constructor (FORMAT.md), independent of the glue."""
    c = _support.resolved_ctor(ctor)
    packed = c["kdim"] == c["embed_dim"] and c["vdim"] == c["embed_dim"]
    names = ["in_proj_weight"] if packed else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    if c["bias"]:
        names += ["in_proj_bias", "out_proj.bias"]
    if c["add_bias_kv"]:
        names += ["bias_k", "bias_v"]
    return sorted(names + ["out_proj.weight"])


def test_round_trip_is_exact(glue_module, fixture_case, case_tensors):
    """state_dict(load_state_dict(x)) == x bit for bit, for every fixture case's weights."""
    params = _support.params_of(fixture_case, case_tensors)
    try:
        layer = glue_module.build(**fixture_case["ctor"])
    except glue_module.UnsupportedFeature as exc:
        assert glue_module.SUPPORT[exc.feature][0] == "unsupported", str(exc)
        pytest.skip(f"configuration refused: {exc}")
    glue_module.load_state_dict(layer, params)
    back = glue_module.state_dict(layer)
    assert sorted(back) == sorted(params)
    for name, want in params.items():
        assert _support.bits_equal(back[name], want), f"`{name}` changed in the round trip"
    # a second load of what came back changes nothing either
    glue_module.load_state_dict(layer, back)
    again = glue_module.state_dict(layer)
    assert all(_support.bits_equal(again[n], params[n]) for n in params)


CTORS = [
    dict(embed_dim=16, num_heads=4),
    dict(embed_dim=16, num_heads=2, bias=False, batch_first=True),
    dict(embed_dim=12, num_heads=3, kdim=5, vdim=7),
    dict(embed_dim=8, num_heads=2, add_bias_kv=True, add_zero_attn=True),
]


@pytest.mark.parametrize("ctor", CTORS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_native_init_exports_canonical_layout(glue_module, ctor):
    """A freshly built layer (the framework's own init) exports every canonical tensor, float32, finite."""
    layer = glue_module.build(**ctor)
    state = glue_module.state_dict(layer)
    assert sorted(state) == _canonical_names(ctor)
    c = _support.resolved_ctor(ctor)
    e = c["embed_dim"]
    want_shapes = {
        "in_proj_weight": (3 * e, e), "q_proj_weight": (e, e), "k_proj_weight": (e, c["kdim"]),
        "v_proj_weight": (e, c["vdim"]), "in_proj_bias": (3 * e,), "bias_k": (1, 1, e), "bias_v": (1, 1, e),
        "out_proj.weight": (e, e), "out_proj.bias": (e,),
    }
    for name, arr in state.items():
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float32, name
        assert arr.shape == want_shapes[name], name
        assert np.isfinite(arr).all(), name
    weight_names = [n for n in state if n.endswith("weight")]
    assert any(np.abs(state[n]).max() > 0 for n in weight_names), "the native init left every weight zero"


def _state(ctor, seed=0):
    rng = np.random.default_rng(seed)
    c = _support.resolved_ctor(ctor)
    e = c["embed_dim"]
    shapes = {
        "in_proj_weight": (3 * e, e), "q_proj_weight": (e, e), "k_proj_weight": (e, c["kdim"]),
        "v_proj_weight": (e, c["vdim"]), "in_proj_bias": (3 * e,), "bias_k": (1, 1, e), "bias_v": (1, 1, e),
        "out_proj.weight": (e, e), "out_proj.bias": (e,),
    }
    return {n: rng.standard_normal(shapes[n]).astype(np.float32) for n in _canonical_names(ctor)}


@pytest.mark.parametrize("ctor", CTORS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_round_trip_random_weights(glue_module, ctor):
    state = _state(ctor, seed=1)
    layer = glue_module.build(**ctor)
    glue_module.load_state_dict(layer, state)
    back = glue_module.state_dict(layer)
    assert sorted(back) == sorted(state)
    assert all(_support.bits_equal(back[n], state[n]) for n in state)


def test_load_rejects_missing_tensor(glue_module):
    ctor = dict(embed_dim=8, num_heads=2)
    state = _state(ctor)
    del state["out_proj.bias"]
    with pytest.raises(ValueError, match="out_proj.bias"):
        glue_module.load_state_dict(glue_module.build(**ctor), state)


def test_load_rejects_unexpected_tensor(glue_module):
    ctor = dict(embed_dim=8, num_heads=2)
    state = _state(ctor)
    state["bias_k"] = np.zeros((1, 1, 8), np.float32)
    with pytest.raises(ValueError, match="bias_k"):
        glue_module.load_state_dict(glue_module.build(**ctor), state)


def test_load_rejects_wrong_shape(glue_module):
    ctor = dict(embed_dim=8, num_heads=2)
    state = _state(ctor)
    state["in_proj_weight"] = state["in_proj_weight"][:, :4]
    with pytest.raises(ValueError, match="in_proj_weight"):
        glue_module.load_state_dict(glue_module.build(**ctor), state)


def test_load_rejects_non_float(glue_module):
    ctor = dict(embed_dim=8, num_heads=2)
    state = _state(ctor)
    state["out_proj.weight"] = np.ones((8, 8), dtype=np.int64)
    with pytest.raises(ValueError, match="out_proj.weight"):
        glue_module.load_state_dict(glue_module.build(**ctor), state)


def test_failed_load_leaves_layer_unchanged(glue_module):
    ctor = dict(embed_dim=8, num_heads=2)
    layer = glue_module.build(**ctor)
    good = _state(ctor, seed=2)
    glue_module.load_state_dict(layer, good)
    bad = _state(ctor, seed=3)
    bad["out_proj.weight"] = bad["out_proj.weight"][:4]
    with pytest.raises(ValueError):
        glue_module.load_state_dict(layer, bad)
    after = glue_module.state_dict(layer)
    assert all(_support.bits_equal(after[n], good[n]) for n in good)
