"""The package-level helpers every op's glue uses (mha_glue._shared), framework-free."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def shared(glue):
    import mha_glue._shared as shared

    return shared


def test_permute_moves_named_axes_and_keeps_leading_ones(shared):
    x = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)
    torch_order, keras_order = ("...", "Hq", "L", "E"), ("...", "L", "Hq", "E")
    y = shared.permute(x, torch_order, keras_order)
    assert y.shape == (2, 3, 5, 4, 6)
    assert np.array_equal(y, np.swapaxes(x, 2, 3))
    assert np.array_equal(shared.permute(y, keras_order, torch_order), x)
    # rank 3 (no leading axes) works too
    assert shared.permute(x[0, 0], torch_order, keras_order).shape == (5, 4, 6)
    with pytest.raises(ValueError, match="do not name the same dimensions"):
        shared.permute(x, torch_order, ("...", "L", "Hq", "Ev"))
    with pytest.raises(ValueError, match="rank 2"):
        shared.permute(x[0, 0, 0], torch_order, keras_order)


def test_layouts_of_the_function_spec_are_permutations_of_its_shapes(shared):
    import mha_glue

    facts = mha_glue.load("ScaledDotProductAttention")._spec
    q = np.zeros((2, 8, 3, 4), np.float32)  # (N, Hq, L, E)
    for key, fw in facts.FRAMEWORKS.items():
        for tensor, dims in fw["layouts"].items():
            assert sorted(dims) == sorted(facts.SHAPES[tensor]), (key, tensor)
        if "query" in fw["layouts"]:
            native = shared.permute(q, facts.SHAPES["query"], fw["layouts"]["query"])
            assert native.shape == (2, 3, 8, 4), key


def test_one_constraint_message_format(shared):
    with pytest.raises(ValueError) as info:
        shared.check_param("Op", "heads", "int", 3, ("positive", {"divides": "dim"}), {"dim": 10})
    assert str(info.value) == "Op: `heads` must divide `dim` (10), got 3"
    with pytest.raises(ValueError) as info:
        shared.check_param("Op", "p", "float", 1.5, ({"at_least": 0.0}, {"below": 1.0}), {})
    assert str(info.value) == "Op: `p` must be below 1.0, got 1.5"
    with pytest.raises(TypeError) as info:
        shared.check_param("Op", "flag", "bool", 0, (), {})
    assert str(info.value) == "Op: `flag` must be a bool, got 0"
    shared.check_param("Op", "kdim", "optional_int", None, ("positive",), {})
    shared.check_param("Op", "heads", "int", np.int64(2), ("positive", {"divides": "dim"}), {"dim": 10})
