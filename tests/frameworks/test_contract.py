"""The glue module contract (issue 2, section 4) on the real framework: names, support table, errors."""
from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

import _support

FEATURES = {
    "seq_first_layout", "unbatched", "cross_attention", "kdim_vdim", "kdim_ne_vdim", "no_bias", "add_bias_kv",
    "add_zero_attn", "bool_masks", "float_masks", "both_masks", "per_head_attn_mask", "is_causal", "need_weights",
    "per_head_weights", "fully_masked_rows", "training_dropout",
}


def test_module_describes_itself(glue, glue_module):
    glue_pkg, _ = glue
    assert glue_module.KEY == _support.framework_key()
    assert glue_module.KEY in glue_pkg.FRAMEWORKS
    for name in ("FRAMEWORK", "API", "STRATEGY"):
        value = getattr(glue_module, name)
        assert isinstance(value, str) and value, name
    assert glue_module.UnsupportedFeature is glue_pkg.UnsupportedFeature
    assert issubclass(glue_pkg.UnsupportedFeature, ValueError)


def test_spec_facts_are_the_modules(glue, glue_module):
    """The op package's `_spec` (generic, generated from the spec) says what the framework module says."""
    glue_pkg, _ = glue
    facts = glue_pkg._spec
    assert facts.OP == glue_pkg.OP == "MultiheadAttention" and facts.KIND == "layer"
    assert facts.SUPPORT[glue_module.KEY] == glue_module.SUPPORT
    assert facts.FRAMEWORKS[glue_module.KEY]["api"] == glue_module.API
    assert facts.FRAMEWORKS[glue_module.KEY]["dropped"] == glue_module.DROPPED
    assert {n: p.get("default") for n, p in facts.SIGNATURE.items() if "default" in p} == {
        n: p.default for n, p in inspect.signature(glue_module.build).parameters.items()
        if p.default is not p.empty
    }


def test_every_op_package_imports_without_a_framework(glue):
    """An op without framework modules yet (ScaledDotProductAttention) is still a package with its spec."""
    import mha_glue

    for module, name in mha_glue.OPS.items():
        package = mha_glue.load(name)
        assert package.OP == name == package._spec.OP and module == package.__name__.rsplit(".", 1)[1]
        assert set(package.FRAMEWORKS) <= set(package._spec.FRAMEWORKS)
        for statuses in package._spec.SUPPORT.values():
            assert set(statuses) == set(package._spec.FEATURES)
            assert all(s in ("native", "emulated", "unsupported") for s, _ in statuses.values())


def test_support_table_covers_every_spec_feature(glue_module):
    assert set(glue_module.SUPPORT) == FEATURES
    for feature, (status, note) in glue_module.SUPPORT.items():
        assert status in ("native", "emulated", "unsupported"), feature
        if status != "native":
            assert note, f"{feature} is {status} without a reason"


def test_signatures_follow_the_contract(glue_module):
    build = inspect.signature(glue_module.build)
    assert list(build.parameters)[:9] == [
        "embed_dim", "num_heads", "dropout", "bias", "add_bias_kv", "add_zero_attn", "kdim", "vdim", "batch_first"]
    assert {k: build.parameters[k].default for k in list(build.parameters)[2:9]} == dict(
        dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False, kdim=None, vdim=None, batch_first=False)
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in build.parameters.values())
    fwd = inspect.signature(glue_module.forward)
    assert list(fwd.parameters)[:9] == [
        "layer", "query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
        "is_causal"]
    assert {k: fwd.parameters[k].default for k in list(fwd.parameters)[4:9]} == dict(
        key_padding_mask=None, need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False)


# One message format for every constraint, the Rust side's too: "{Op}: `{name}` must {requirement}, got {value}".
@pytest.mark.parametrize("bad, message", [
    (dict(embed_dim=10, num_heads=3), "MultiheadAttention: `num_heads` must divide `embed_dim` (10), got 3"),
    (dict(embed_dim=0, num_heads=1), "MultiheadAttention: `embed_dim` must be positive, got 0"),
    (dict(embed_dim=8, num_heads=0), "MultiheadAttention: `num_heads` must be positive, got 0"),
    (dict(embed_dim=8, num_heads=2, dropout=1.0), "MultiheadAttention: `dropout` must be below 1.0, got 1.0"),
    (dict(embed_dim=8, num_heads=2, dropout=-0.1), "MultiheadAttention: `dropout` must be at least 0.0, got -0.1"),
    (dict(embed_dim=8, num_heads=2, kdim=0), "MultiheadAttention: `kdim` must be positive, got 0"),
    (dict(embed_dim=8, num_heads=2, vdim=-3), "MultiheadAttention: `vdim` must be positive, got -3"),
])
def test_build_rejects_invalid_parameters(glue_module, bad, message):
    with pytest.raises(ValueError) as info:
        glue_module.build(**bad)
    assert str(info.value) == message


@pytest.mark.parametrize("bad, message", [
    (dict(embed_dim=8.0, num_heads=2), "MultiheadAttention: `embed_dim` must be an int, got 8.0"),
    (dict(embed_dim=8, num_heads=2, bias="yes"), "MultiheadAttention: `bias` must be a bool, got 'yes'"),
    (dict(embed_dim=8, num_heads=2, batch_first=1), "MultiheadAttention: `batch_first` must be a bool, got 1"),
    (dict(embed_dim=8, num_heads=2, dropout="0.1"), "MultiheadAttention: `dropout` must be a float, got '0.1'"),
])
def test_build_rejects_wrong_types(glue_module, bad, message):
    with pytest.raises(TypeError) as info:
        glue_module.build(**bad)
    assert str(info.value) == message


def test_a_config_is_validated_once_per_build_not_per_load(glue, glue_module, monkeypatch):
    """build checks the parameters and the weight layout they give; load_state_dict and state_dict
    read what build checked (the layer's weight plan is made once) and validate nothing again."""
    import mha_glue._shared as shared

    common = importlib.import_module(f"{glue[0].__name__}._common")
    calls = {"params": 0, "sizes": 0}
    check_param, sizes = shared.check_param, common._sizes

    def counting_check_param(*args):
        calls["params"] += 1
        return check_param(*args)

    def counting_sizes(*args):
        calls["sizes"] += 1
        return sizes(*args)

    monkeypatch.setattr(shared, "check_param", counting_check_param)
    monkeypatch.setattr(common, "_sizes", counting_sizes)
    layer = glue_module.build(embed_dim=8, num_heads=2)
    assert calls["params"] == len(common.PARAMS), "each parameter checked once"
    state = glue_module.state_dict(layer)
    glue_module.load_state_dict(layer, state)
    calls.update(params=0, sizes=0)
    glue_module.load_state_dict(layer, state)
    glue_module.state_dict(layer)
    assert calls == {"params": 0, "sizes": 0}, calls


def _layer(glue_module, **ctor):
    ctor = dict(dict(embed_dim=8, num_heads=2), **ctor)
    layer = glue_module.build(**ctor)
    rng = np.random.default_rng(0)
    state = {n: rng.standard_normal(a.shape).astype(np.float32) for n, a in glue_module.state_dict(layer).items()}
    glue_module.load_state_dict(layer, state)
    return layer


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("args, match", [
    (dict(query=_x(3, 2, 6), key=_x(4, 2, 8), value=_x(4, 2, 8)), "embed_dim"),
    (dict(query=_x(3, 2, 8), key=_x(4, 2, 5), value=_x(4, 2, 8)), "kdim"),
    (dict(query=_x(3, 2, 8), key=_x(4, 2, 8), value=_x(5, 2, 8)), "value"),
    (dict(query=_x(3, 2, 8), key=_x(4, 8), value=_x(4, 8)), "rank"),
    (dict(query=_x(2, 3, 2, 8), key=_x(2, 4, 2, 8), value=_x(2, 4, 2, 8)), "query"),
    (dict(query=_x(3, 2, 8), key=_x(4, 2, 8), value=_x(4, 2, 8), key_padding_mask=np.zeros((2, 3), bool)),
     "key_padding_mask"),
    (dict(query=_x(3, 2, 8), key=_x(4, 2, 8), value=_x(4, 2, 8), attn_mask=np.zeros((4, 3), bool)), "attn_mask"),
    (dict(query=_x(3, 2, 8), key=_x(4, 2, 8), value=_x(4, 2, 8), attn_mask=np.zeros((3, 3, 4), bool)),
     "attn_mask"),
    (dict(query=_x(3, 2, 8), key=_x(4, 2, 8), value=_x(4, 2, 8), attn_mask=np.zeros((3, 4), np.int32)),
     "attn_mask"),
    (dict(query=_x(3, 2, 8), key=_x(4, 2, 8), value=_x(4, 2, 8), is_causal=True), "is_causal"),
])
def test_forward_rejects_bad_input(glue_module, args, match):
    layer = _layer(glue_module)
    with pytest.raises((ValueError, TypeError), match=match):
        glue_module.forward(layer, **args)


def test_forward_rejects_foreign_layer(glue_module):
    with pytest.raises(TypeError, match="build"):
        glue_module.forward(object(), _x(3, 2, 8), _x(3, 2, 8), _x(3, 2, 8))


def test_forward_returns_float32_numpy(glue_module):
    layer = _layer(glue_module, batch_first=True)
    q = _x(2, 3, 8)
    out, weights = glue_module.forward(layer, q, q, q)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 3, 8)
    assert isinstance(weights, np.ndarray) and weights.dtype == np.float32 and weights.shape == (2, 3, 3)
    out2, none = glue_module.forward(layer, q, q, q, need_weights=False)
    assert none is None
    assert _support.mismatch(out2, out, "need_weights=False output") is None


def test_training_dropout_follows_the_spec(glue, glue_module):
    """forward(..., training=True) with dropout > 0: refused where the spec says unsupported, else random."""
    glue_pkg, _ = glue
    if "training" not in inspect.signature(glue_module.forward).parameters:
        pytest.skip("this module's forward() has no `training` argument (an extension beyond the contract)")
    layer = _layer(glue_module, dropout=0.5, batch_first=True)
    q = _x(2, 5, 8)
    status = glue_module.SUPPORT["training_dropout"][0]
    if status == "unsupported":
        with pytest.raises(glue_pkg.UnsupportedFeature, match="training_dropout"):
            glue_module.forward(layer, q, q, q, training=True)
        return
    out_eval, _ = glue_module.forward(layer, q, q, q)
    out_train, w_train = glue_module.forward(layer, q, q, q, training=True)
    assert out_train.shape == out_eval.shape and np.isfinite(out_train).all()
    assert not np.allclose(out_train, out_eval), "dropout=0.5 in training changed nothing"
    out_again, _ = glue_module.forward(layer, q, q, q)
    assert _support.bits_equal(out_again, out_eval), "training=True left the layer in training mode"
