"""The framework-agnostic helpers every glue module builds on (mha_glue.multihead_attention._common), checked against the
reference's conventions (FORMAT.md) computed here independently."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import _support


@pytest.fixture(scope="module")
def common(glue):
    import mha_glue.multihead_attention._common as common

    return common


def test_config_resolves_fallbacks_and_derived_values(common):
    cfg = common.make_config(embed_dim=12, num_heads=3, kdim=5)
    assert (cfg.kdim, cfg.vdim, cfg.head_dim) == (5, 12, 4)
    assert cfg.given["kdim"] == 5 and cfg.given["vdim"] is None
    assert cfg.packed_in_proj is False
    assert common.make_config(embed_dim=8, num_heads=2, add_bias_kv=True, add_zero_attn=True).extra_keys == 2
    with pytest.raises(TypeError, match="unknown constructor parameters"):
        common.config_from(dict(embed_dim=8, num_heads=2, heads=3))


@pytest.mark.parametrize("bias, add_bias_kv, kv", list(itertools.product([True, False], [True, False],
                                                                         [(None, None), (5, 7), (8, None)])))
def test_canonical_shapes_follow_torch(common, bias, add_bias_kv, kv):
    kdim, vdim = kv
    cfg = common.make_config(embed_dim=8, num_heads=2, bias=bias, add_bias_kv=add_bias_kv, kdim=kdim, vdim=vdim)
    k, v = kdim or 8, vdim or 8
    want = {"out_proj.weight": (8, 8)}
    if k == 8 and v == 8:
        want["in_proj_weight"] = (24, 8)
    else:
        want.update({"q_proj_weight": (8, 8), "k_proj_weight": (8, k), "v_proj_weight": (8, v)})
    if bias:
        want.update({"in_proj_bias": (24,), "out_proj.bias": (8,)})
    if add_bias_kv:
        want.update({"bias_k": (1, 1, 8), "bias_v": (1, 1, 8)})
    assert common.canonical_shapes(cfg) == want


def test_logical_views_split_the_packed_projection(common):
    cfg = common.make_config(embed_dim=4, num_heads=2)
    state = {
        "in_proj_weight": np.arange(48, dtype=np.float32).reshape(12, 4),
        "in_proj_bias": np.arange(12, dtype=np.float32),
        "out_proj.weight": np.eye(4, dtype=np.float32),
        "out_proj.bias": np.zeros(4, np.float32),
    }
    logical = common.to_logical(common.check_state("test", state, cfg), cfg)
    assert np.array_equal(logical["k_weight"], state["in_proj_weight"][4:8])
    assert np.array_equal(logical["v_bias"], state["in_proj_bias"][8:])
    back = common.from_logical(logical, {}, cfg)
    assert all(_support.bits_equal(back[n], state[n]) for n in state)


def test_weight_steps_are_undone_exactly(common):
    """A Keras-style map (transpose, then split heads) there and back."""
    cfg = common.make_config(embed_dim=6, num_heads=3, kdim=4, vdim=5, add_bias_kv=True)
    weight_map = (
        ("q.kernel", "q_weight", (("transpose",), ("reshape", (6, 3, 2)))),
        ("k.kernel", "k_weight", (("transpose",), ("reshape", (4, 3, 2)))),
        ("v.kernel", "v_weight", (("transpose",), ("reshape", (5, 3, 2)))),
        ("q.bias", "q_bias", (("reshape", (3, 2)),)),
        ("k.bias", "k_bias", ()),
        ("v.bias", "v_bias", ()),
        ("o.kernel", "out_weight", (("transpose",), ("reshape", (3, 2, 6)))),
        ("o.bias", "out_bias", ()),
        ("bias_k", "bias_k", ()),
        ("bias_v", "bias_v", ()),
    )
    rng = np.random.default_rng(0)
    state = {n: rng.standard_normal(s).astype(np.float32) for n, s in common.canonical_shapes(cfg).items()}
    native = common.to_native("test", state, cfg, weight_map)
    assert native["q.kernel"].shape == (6, 3, 2)
    assert np.array_equal(native["q.kernel"][:, 1, :], state["q_proj_weight"][2:4].T)
    assert native["bias_k"].shape == (6,)
    assert common.native_shapes(weight_map, cfg)["o.kernel"] == (3, 2, 6)
    back = common.from_native("test", native, cfg, weight_map)
    assert sorted(back) == sorted(state)
    assert all(_support.bits_equal(back[n], state[n]) for n in state)
    with pytest.raises(ValueError, match="q.kernel"):
        common.from_native("test", dict(native, **{"q.kernel": native["q.kernel"][:, :2]}), cfg, weight_map)
    with pytest.raises(ValueError, match="cannot reshape"):
        common.weight_plan((("q.kernel", "q_weight", (("reshape", (5, 7)),)),), cfg)


def test_prepare_call_merges_masks_as_torch_does(common):
    cfg = common.make_config(embed_dim=4, num_heads=2, add_zero_attn=True)
    rng = np.random.default_rng(1)
    n, tgt, src = 2, 3, 4
    q = rng.standard_normal((tgt, n, 4)).astype(np.float32)
    kv = rng.standard_normal((src, n, 4)).astype(np.float32)
    kpm = np.array([[False, True, False, False], [True, True, True, True]])
    am = rng.standard_normal((n * 2, tgt, src)).astype(np.float32)
    call = common.prepare_call(cfg, q, kv, kv, key_padding_mask=kpm, attn_mask=am)
    assert call.query.shape == (n, tgt, 4) and np.array_equal(call.query[1], q[:, 1])
    want = am.reshape(n, 2, tgt, src) + np.where(kpm, -np.inf, 0).reshape(n, 1, 1, src)
    assert np.array_equal(call.mask, want.astype(np.float32))
    assert call.mask_ext.shape == (n, 2, tgt, src + 1)
    assert np.array_equal(call.mask_ext[..., -1], np.zeros((n, 2, tgt), np.float32))
    assert not call.fully_masked_rows  # the zero key rescues batch element 1
    assert common.call_features(cfg, call) >= {"seq_first_layout", "cross_attention", "add_zero_attn",
                                                "bool_masks", "float_masks", "both_masks", "per_head_attn_mask",
                                                "need_weights"}


def test_finish_restores_torch_layouts(common):
    cfg = common.make_config(embed_dim=4, num_heads=2)
    q = np.zeros((3, 2, 4), np.float32)
    call = common.prepare_call(cfg, q, q, q, average_attn_weights=True)
    out = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    w = np.random.default_rng(0).random((2, 2, 3, 3)).astype(np.float32)
    got_out, got_w = common.finish(cfg, call, out, w)
    assert np.array_equal(got_out, out.transpose(1, 0, 2))
    assert np.allclose(got_w, w.mean(axis=1))
    call = common.prepare_call(cfg, q[:, 0], q[:, 0], q[:, 0], average_attn_weights=False)
    got_out, got_w = common.finish(cfg, call, out[:1], w[:1])
    assert got_out.shape == (3, 4) and got_w.shape == (2, 3, 3)
    with pytest.raises(ValueError, match="native output"):
        common.finish(cfg, call, out, w[:1])


def test_unsupported_feature_and_support_table(common):
    exc = common.UnsupportedFeature("Some Framework", "add_zero_attn", "no way to append a key")
    assert isinstance(exc, ValueError)
    assert "Some Framework" in str(exc) and "add_zero_attn" in str(exc) and "no way" in str(exc)
    table = common.support_table({"add_zero_attn": ("unsupported", "no way to append a key")})
    assert table["add_zero_attn"] == ("unsupported", "no way to append a key")
    assert table["bool_masks"][0] == "native"
    with pytest.raises(ValueError, match="unknown support status"):
        common.support_table({"add_zero_attn": ("maybe", "")})
    with pytest.raises(ValueError, match="unknown features"):
        common.support_table({"teleportation": ("native", "")})
    cfg = common.make_config(embed_dim=4, num_heads=2, add_zero_attn=True)
    q = np.zeros((2, 3, 4), np.float32)
    call = common.prepare_call(cfg, q, q, q)
    with pytest.raises(common.UnsupportedFeature, match="add_zero_attn") as info:
        common.refuse_unsupported("Some Framework", table, cfg, call)
    assert info.value.feature == "add_zero_attn" and info.value.framework == "Some Framework"
