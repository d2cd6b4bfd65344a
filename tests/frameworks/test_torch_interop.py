"""PyTorch only: the glue moves weights in and out of a real torch.nn.MultiheadAttention unchanged and
computes what that module computes."""
from __future__ import annotations

import numpy as np
import pytest

import _support

pytestmark = pytest.mark.only_framework("pytorch")

CTORS = [
    dict(embed_dim=16, num_heads=4),
    dict(embed_dim=16, num_heads=4, batch_first=True, bias=False),
    dict(embed_dim=12, num_heads=3, kdim=5, vdim=9),
    dict(embed_dim=8, num_heads=2, add_bias_kv=True, add_zero_attn=True, batch_first=True),
]
IDS = [",".join(f"{k}={v}" for k, v in c.items()) for c in CTORS]


def _inputs(ctor, seed):
    c = _support.resolved_ctor(ctor)
    rng = np.random.default_rng(seed)
    n, tgt, src = 2, 5, 6
    lay = (lambda s, f: (n, s, f)) if c["batch_first"] else (lambda s, f: (s, n, f))
    q = rng.standard_normal(lay(tgt, c["embed_dim"])).astype(np.float32)
    k = rng.standard_normal(lay(src, c["kdim"])).astype(np.float32)
    v = rng.standard_normal(lay(src, c["vdim"])).astype(np.float32)
    kpm = np.where(rng.random((n, src)) < 0.3, -np.inf, 0.0).astype(np.float32)
    kpm[:, 0] = 0.0
    am = rng.standard_normal((tgt, src)).astype(np.float32)
    return q, k, v, kpm, am


@pytest.mark.parametrize("ctor", CTORS, ids=IDS)
def test_real_module_weights_round_trip(glue_module, ctor):
    import torch

    torch.manual_seed(7)
    real = torch.nn.MultiheadAttention(**ctor)
    real_state = {k: t.detach().numpy().copy() for k, t in real.state_dict().items()}
    layer = glue_module.build(**ctor)
    glue_module.load_state_dict(layer, real_state)
    back = glue_module.state_dict(layer)
    assert sorted(back) == sorted(real_state)
    assert all(_support.bits_equal(back[n], real_state[n]) for n in real_state)

    # and back into a second real module, strictly
    other = torch.nn.MultiheadAttention(**ctor)
    other.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    for name, t in other.state_dict().items():
        assert _support.bits_equal(t.numpy(), real_state[name]), name


@pytest.mark.parametrize("ctor", CTORS, ids=IDS)
@pytest.mark.parametrize("need_weights", [True, False])
def test_forward_equals_the_real_module(glue_module, ctor, need_weights):
    import torch

    layer = glue_module.build(**ctor)  # torch's own init, through the glue
    real = torch.nn.MultiheadAttention(**ctor)
    real.load_state_dict({k: torch.from_numpy(v) for k, v in glue_module.state_dict(layer).items()}, strict=True)
    real.eval()
    q, k, v, kpm, am = _inputs(ctor, seed=3)
    out, weights = glue_module.forward(layer, q, k, v, key_padding_mask=kpm, attn_mask=am, need_weights=need_weights)
    with torch.enable_grad():  # the composite path, as the fixtures were made
        want_out, want_w = real(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v),
                                key_padding_mask=torch.from_numpy(kpm), attn_mask=torch.from_numpy(am),
                                need_weights=need_weights)
    assert _support.bits_equal(out, want_out.detach().numpy())
    if need_weights:
        assert _support.bits_equal(weights, want_w.detach().numpy())
    else:
        assert weights is None and want_w is None


def test_frozen_module_stays_on_the_composite_path(glue_module, fixture_index):
    """Frozen parameters under no_grad would let torch take its fused fast path, whose fully masked rows
    are NaN: the glue still gives the reference (composite) result."""
    import torch

    case = next(c for c in fixture_index["cases"] if c["name"] == "fully_masked_kpm_batch_no_weights")
    assert case["torch_fastpath"]["taken"], "the case was chosen because torch's fast path applies to it"
    tensors = _support.load_tensors(_support.fixtures_dir() / case["file"])
    layer = glue_module.build(**case["ctor"])
    glue_module.load_state_dict(layer, _support.params_of(case, tensors))
    layer.requires_grad_(False)
    with torch.no_grad():
        out, weights = glue_module.forward(layer, **_support.call_inputs(case, tensors))
    assert weights is None
    assert _support.mismatch(out, tensors["attn_output"], "attn_output") is None
    assert not np.isnan(out).any()
