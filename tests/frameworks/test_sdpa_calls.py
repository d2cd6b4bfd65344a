"""The scaled_dot_product_attention glue's surface in the framework under test: torch's signature, torch's
refusals as clear errors (the same in every framework), misspelt keywords, dropout as the spec says, and
the input forms numpy users pass. Which calls torch refuses is checked on real torch in the PyTorch run."""
from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

import _support
from test_sdpa_parity import sdpa_glue

SIGNATURE = [("query", inspect.Parameter.empty), ("key", inspect.Parameter.empty), ("value", inspect.Parameter.empty),
             ("attn_mask", None), ("dropout_p", 0.0), ("is_causal", False), ("scale", None), ("enable_gqa", False)]
FEATURES = ("attn_mask", "is_causal", "scale", "enable_gqa", "dropout")


@pytest.fixture(scope="module")
def sdpa():
    return sdpa_glue()


def _rand(*shape, seed=0):
    return np.random.default_rng(seed + len(shape) * 7 + sum(shape)).standard_normal(shape).astype(np.float32)


def qkv(q=(1, 4, 5, 8), k=(1, 4, 7, 8), v=None):
    return _rand(*q, seed=1), _rand(*k, seed=2), _rand(*(v or k), seed=3)


# (id, call kwargs, error type, a word the message must hold). torch refuses every one of these calls
# (test_torch_refuses_the_same_calls) except where noted.
REFUSED = [
    ("causal_with_mask", lambda: dict(zip("qkv", qkv()), attn_mask=np.ones((5, 7), bool), is_causal=True),
     ValueError, "is_causal"),
    ("gqa_heads_do_not_divide", lambda: dict(zip("qkv", qkv((1, 4, 5, 8), (1, 3, 7, 8))), enable_gqa=True),
     ValueError, "divide"),
    ("gqa_more_kv_heads", lambda: dict(zip("qkv", qkv((1, 2, 5, 8), (1, 4, 7, 8))), enable_gqa=True),
     ValueError, "divide"),
    ("heads_differ_without_gqa", lambda: dict(zip("qkv", qkv((1, 4, 5, 8), (1, 2, 7, 8)))),
     ValueError, "enable_gqa"),
    ("gqa_rank_2", lambda: dict(zip("qkv", qkv((5, 8), (7, 8))), enable_gqa=True), ValueError, "rank"),
    ("rank_1", lambda: dict(zip("qkv", qkv((8,), (8,)))), ValueError, "2-D"),
    ("head_size_mismatch", lambda: dict(zip("qkv", qkv((2, 5, 8), (2, 7, 6)))), ValueError, "head size"),
    ("batch_mismatch", lambda: dict(zip("qkv", qkv((2, 5, 8), (3, 7, 8)))), ValueError, "broadcast"),
    ("mask_enlarges_scores", lambda: dict(zip("qkv", qkv()), attn_mask=np.ones((3, 1, 4, 5, 7), bool)),
     ValueError, "attn_mask"),
    ("mask_wrong_key_length", lambda: dict(zip("qkv", qkv()), attn_mask=np.ones((5, 6), bool)),
     ValueError, "attn_mask"),
    ("mask_rank_1", lambda: dict(zip("qkv", qkv()), attn_mask=np.ones((7,), bool)), ValueError, "2-D"),
    ("mask_int", lambda: dict(zip("qkv", qkv()), attn_mask=np.ones((5, 7), np.int32)), TypeError, "bool"),
    ("dropout_above_1", lambda: dict(zip("qkv", qkv()), dropout_p=1.5), ValueError, "dropout_p"),
    # torch runs this one without a word (its CPU kernel reads the value with the key's length); the glue refuses.
    ("value_length_differs", lambda: dict(zip("qkv", qkv((2, 5, 8), (2, 7, 8), (2, 6, 8)))), ValueError, "length"),
]
TORCH_ACCEPTS = {"value_length_differs"}


def _kwargs(make):
    kw = make()
    kw["query"], kw["key"], kw["value"] = kw.pop("q"), kw.pop("k"), kw.pop("v")
    return kw


def _spec(module):
    return importlib.import_module(module.__name__.rsplit(".", 1)[0] + "._spec")


def test_signature_is_torchs_and_the_specs(sdpa):
    _, module = sdpa
    params = inspect.signature(module.scaled_dot_product_attention).parameters
    assert [(n, p.default) for n, p in params.items()] == SIGNATURE
    spec = _spec(module).SIGNATURE
    assert [(n, a.get("default", inspect.Parameter.empty)) for n, a in spec.items()] == SIGNATURE


def test_module_describes_what_the_spec_says(sdpa):
    _, module = sdpa
    spec = _spec(module)
    entry = spec.FRAMEWORKS[module.FRAMEWORK]
    assert (module.API, module.STRATEGY) == (entry["api"], entry["strategy"])
    assert module.SUPPORT == spec.SUPPORT[module.FRAMEWORK]
    if entry["backend"] is not None:
        assert module.keras.backend.backend() == entry["backend"] == module.BACKEND


def test_support_table_covers_every_feature(sdpa):
    _, module = sdpa
    table = module.SUPPORT
    assert sorted(table) == sorted(FEATURES)
    for feature, (status, why) in table.items():
        assert status in ("native", "emulated", "unsupported"), (feature, status)
        assert status == "native" or why, f"{feature}: a non-native status needs its reason"
    # Exactness is impossible only for random dropout: every other feature runs.
    assert [f for f, (s, _) in table.items() if s == "unsupported"] in ([], ["dropout"])


@pytest.mark.parametrize("make, error, word", [pytest.param(m, e, w, id=i) for i, m, e, w in REFUSED])
def test_refusals_are_clear_errors(sdpa, make, error, word):
    glue_pkg, module = sdpa
    with pytest.raises(error) as info:
        module.scaled_dot_product_attention(**_kwargs(make))
    assert not isinstance(info.value, glue_pkg.UnsupportedFeature)
    assert "scaled_dot_product_attention" in str(info.value) and word in str(info.value), str(info.value)


@pytest.mark.only_framework("pytorch")
@pytest.mark.parametrize("make, name", [pytest.param(m, i, id=i) for i, m, _, _ in REFUSED])
def test_torch_refuses_the_same_calls(make, name):
    import torch

    kw = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in _kwargs(make).items()}
    call = lambda: torch.nn.functional.scaled_dot_product_attention(**kw)  # noqa: E731
    if name in TORCH_ACCEPTS:
        call()
    else:
        with pytest.raises((RuntimeError, IndexError, ValueError)):
            call()


def test_misspelt_keyword_suggests_the_parameter(sdpa):
    _, module = sdpa
    q, k, v = qkv()
    with pytest.raises(TypeError, match="did you mean `is_causal`"):
        module.scaled_dot_product_attention(q, k, v, is_casual=True)
    with pytest.raises(TypeError, match="unexpected keyword argument `mask`"):
        module.scaled_dot_product_attention(q, k, v, mask=None)


@pytest.mark.parametrize("name, bad", [("is_causal", 1), ("enable_gqa", "yes"), ("scale", "0.5"), ("dropout_p", None)])
def test_option_types(sdpa, name, bad):
    _, module = sdpa
    with pytest.raises(TypeError, match=name):
        module.scaled_dot_product_attention(*qkv(), **{name: bad})


def test_integer_inputs_are_refused(sdpa):
    _, module = sdpa
    q, k, v = qkv()
    with pytest.raises(TypeError, match="query"):
        module.scaled_dot_product_attention(q.astype(np.int64), k, v)


def test_dropout_as_the_spec_says(sdpa):
    glue_pkg, module = sdpa
    status, why = module.SUPPORT["dropout"]
    q, k, v = qkv()
    if status == "unsupported":
        with pytest.raises(glue_pkg.UnsupportedFeature) as info:
            module.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
        exc = info.value
        assert isinstance(exc, ValueError) and exc.feature == "dropout" and exc.why == why
        assert module.FRAMEWORK in str(exc) and "dropout" in str(exc)
    else:
        # Dropout of every probability: nothing reaches the output (torch scales the kept ones by 1/(1-p)).
        out = module.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
        assert out.shape == (1, 4, 5, 8) and not out.any()
    # dropout_p = 0 runs everywhere
    assert module.scaled_dot_product_attention(q, k, v, dropout_p=0.0).shape == (1, 4, 5, 8)


def test_input_forms(sdpa):
    """Positional arguments in torch's order, float64 and list inputs, numpy bools: float32 out."""
    _, module = sdpa
    q, k, v = qkv((2, 3, 4, 8), (2, 3, 6, 8))
    mask = np.random.default_rng(5).random((4, 6)) < 0.7
    mask[:, 0] = True
    want = module.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert want.dtype == np.float32 and want.shape == (2, 3, 4, 8) and want.flags.c_contiguous
    got = module.scaled_dot_product_attention(q.astype(np.float64), k.tolist(), v, mask, 0.0, np.bool_(False), None,
                                              np.bool_(False))
    assert got.dtype == np.float32
    assert _support.mismatch(got, want, "output") is None


def test_grouped_heads_equal_repeated_heads(sdpa):
    """enable_gqa gives the result of key/value heads repeated (torch's repeat_interleave) without it."""
    _, module = sdpa
    q, k, v = qkv((2, 6, 5, 8), (2, 2, 7, 8))
    got = module.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True)
    want = module.scaled_dot_product_attention(q, np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1), is_causal=True)
    assert _support.mismatch(got, want, "output") is None
