"""Inputs the glue must take or refuse clearly (issue 11): numpy scalars wherever Python numbers go,
and malformed states with an error that names the key and what was expected."""
from __future__ import annotations

import numpy as np
import pytest


def _state(glue_module, layer):
    """A valid state for `layer`: its own weights."""
    return glue_module.state_dict(layer)


def test_numpy_integer_scalars_are_python_ints(glue_module):
    layer = glue_module.build(np.int64(8), np.int64(2))
    cfg = glue_module._config(layer)
    assert type(cfg.given["embed_dim"]) is int and type(cfg.given["num_heads"]) is int
    x = np.ones((3, 1, 8), np.float32)
    out, _ = glue_module.forward(layer, x, x, x)
    assert out.shape == (3, 1, 8)


def test_numpy_scalars_of_every_kind(glue_module):
    layer = glue_module.build(
        embed_dim=np.int32(8), num_heads=np.uint8(2), dropout=np.float32(0.0), bias=np.bool_(True),
        kdim=np.int64(8), vdim=np.int16(8), batch_first=np.bool_(True),
    )
    given = glue_module._config(layer).given
    assert [type(given[k]) for k in ("embed_dim", "dropout", "bias", "kdim")] == [int, float, bool, int]
    glue_module.load_state_dict(layer, _state(glue_module, layer))


def test_numpy_scalars_keep_their_type_checks(glue_module):
    with pytest.raises(TypeError, match="num_heads"):
        glue_module.build(8, np.float64(2.0))
    with pytest.raises(TypeError, match="embed_dim"):
        glue_module.build(np.bool_(True), 1)


def test_state_that_is_not_a_mapping(glue_module):
    layer = glue_module.build(8, 2)
    state = _state(glue_module, layer)
    with pytest.raises(TypeError, match="mapping.*got list"):
        glue_module.load_state_dict(layer, list(state.items()))
    with pytest.raises(TypeError, match="mapping"):
        glue_module.load_state_dict(layer, None)


@pytest.mark.parametrize("key", [3, None, ("out_proj", "bias"), b"out_proj.bias"])
def test_state_with_a_non_string_key(glue_module, key):
    layer = glue_module.build(8, 2)
    state = dict(_state(glue_module, layer))
    state[key] = np.zeros(8, np.float32)
    with pytest.raises(TypeError, match="is not a string"):
        glue_module.load_state_dict(layer, state)


@pytest.mark.parametrize("dtype", [np.complex64, np.int32, np.bool_, "U3", object])
def test_state_with_an_unsupported_dtype_names_the_key(glue_module, dtype):
    layer = glue_module.build(8, 2)
    state = dict(_state(glue_module, layer))
    state["out_proj.weight"] = np.zeros((8, 8), dtype=dtype)
    with pytest.raises(ValueError, match=r"out_proj\.weight.*expected a float type"):
        glue_module.load_state_dict(layer, state)


def test_state_value_that_is_not_an_array_names_the_key(glue_module):
    layer = glue_module.build(8, 2)
    state = dict(_state(glue_module, layer))
    state["out_proj.bias"] = {"not": "an array"}
    with pytest.raises((TypeError, ValueError), match=r"out_proj\.bias"):
        glue_module.load_state_dict(layer, state)


def _bfloat16_exact(state):
    """Values a bfloat16 holds exactly (the top 16 bits of each float32)."""
    return {n: (a.view(np.uint32) & 0xFFFF0000).view(np.float32) for n, a in state.items()}


def test_torch_bfloat16_tensors_are_converted_exactly(glue_module):
    torch = pytest.importorskip("torch")
    layer = glue_module.build(8, 2)
    exact = _bfloat16_exact(_state(glue_module, layer))
    glue_module.load_state_dict(layer, {n: torch.from_numpy(a).to(torch.bfloat16) for n, a in exact.items()})
    back = glue_module.state_dict(layer)
    assert all(np.array_equal(back[n], exact[n]) for n in exact)


def test_ml_dtypes_bfloat16_arrays_are_converted_exactly(glue_module):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    layer = glue_module.build(8, 2)
    exact = _bfloat16_exact(_state(glue_module, layer))
    glue_module.load_state_dict(layer, {n: a.astype(ml_dtypes.bfloat16) for n, a in exact.items()})
    back = glue_module.state_dict(layer)
    assert all(np.array_equal(back[n], exact[n]) for n in exact)


@pytest.mark.parametrize("state", [[("a.out_proj.bias", np.zeros(8, np.float32))], None, {3: np.zeros(8, np.float32)}])
def test_malformed_state_under_a_prefix(glue_module, state):
    """`prefix=` picks entries before the state is checked: a malformed state is still the same TypeError."""
    layer = glue_module.build(8, 2)
    with pytest.raises(TypeError, match="mapping|is not a string"):
        glue_module.load_state_dict(layer, state, prefix="a.")
