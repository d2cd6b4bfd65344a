"""The glue's helpers around the layer: checkpoint files with numpy alone (`load_safetensors` /
`save_safetensors`, checked against the safetensors library itself), `load_state_dict(prefix=...)`
on a whole model's checkpoint, and the readable errors (a wrong prefix, a misspelt keyword)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import _support

CHECKPOINT = _support.ROOT / "tests" / "fixtures" / "torch_checkpoint"


def _arrays():
    rng = np.random.default_rng(3)
    return {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "a.bias": rng.standard_normal(4).astype(np.float64),
        "half": rng.standard_normal((2, 2)).astype(np.float16),
        "steps": np.arange(5, dtype=np.int64),
        "mask": np.array([[True, False]]),
        "scalar": np.array(1.5, dtype=np.float32),
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_and_load_round_trip_every_dtype(glue, tmp_path, suffix):
    package, _ = glue
    arrays = _arrays()
    path = tmp_path / f"state{suffix}"
    package.save_safetensors(arrays, path)
    back = package.load_safetensors(path)
    assert sorted(back) == sorted(arrays)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and _support.bits_equal(back[name], arr), name
    assert package.load_safetensors(path, prefix="a.").keys() == {"weight", "bias"}


def test_files_agree_with_the_safetensors_library(glue, tmp_path):
    package, _ = glue
    arrays = _arrays()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    package.save_safetensors(arrays, ours, metadata={"format": "np"})
    save_file(arrays, str(theirs))
    for name, arr in load_file(str(ours)).items():
        assert _support.bits_equal(arr, arrays[name]), name
    for name, arr in package.load_safetensors(theirs).items():
        assert _support.bits_equal(arr, arrays[name]), name


def test_bfloat16_is_widened_exactly(glue, tmp_path):
    package, _ = glue
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)  # representable in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(raw)]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + raw)
    got = package.load_safetensors(path)["w"]
    assert got.dtype == np.float32 and np.array_equal(got, values.reshape(2, 2))


def test_bad_files_are_clear_errors(glue, tmp_path):
    package, _ = glue
    good = tmp_path / "good.safetensors"
    package.save_safetensors({"x": np.zeros(4, np.float32)}, good)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match="does not fit its data offsets"):
        package.load_safetensors(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a safetensors file"):
        package.load_safetensors(junk)
    with pytest.raises(KeyError, match="no tensor under the prefix 'y.'"):
        package.load_safetensors(good, prefix="y.")
    with pytest.raises(TypeError, match="cannot be stored"):
        package.save_safetensors({"o": np.array(["text"])}, tmp_path / "o.safetensors")


def test_load_state_dict_takes_one_layer_of_a_model_by_prefix(glue):
    package, module = glue
    state = package.load_safetensors(CHECKPOINT / "encoder.safetensors")
    expected = package.load_safetensors(CHECKPOINT / "expected.safetensors")
    layer = module.build(embed_dim=16, num_heads=4, batch_first=True)
    module.load_state_dict(layer, state, prefix="layers.1.self_attn.")
    q = expected["query"]
    out, weights = module.forward(layer, q, q, q, need_weights=True, average_attn_weights=False)
    assert _support.mismatch(out, expected["attn_output"], "attn_output") is None
    assert _support.mismatch(weights, expected["attn_weights"], "attn_weights") is None
    with pytest.raises(ValueError, match=r"no weight under the prefix `self_attn\.`; did you mean `layers\.0\.self_attn\.`\?"):
        module.load_state_dict(layer, state, prefix="self_attn.")
    with pytest.raises(ValueError, match=r"pass prefix=\.\.\. to load_state_dict; did you mean `layers\.0\.self_attn\.`\?"):
        module.load_state_dict(layer, state)


def test_a_misspelt_keyword_suggests_the_closest(glue):
    _, module = glue
    with pytest.raises(TypeError, match=r"unexpected keyword argument `num_head` \(did you mean `num_heads`\?\)"):
        module.build(embed_dim=8, num_heads=2, num_head=2)
    layer = module.build(embed_dim=8, num_heads=2)
    x = np.zeros((3, 1, 8), np.float32)
    with pytest.raises(TypeError, match=r"`need_weight` \(did you mean `need_weights`\?\)"):
        module.forward(layer, x, x, x, need_weight=False)
    with pytest.raises(TypeError, match=r"`prefx` \(did you mean `prefix`\?\)"):
        module.load_state_dict(layer, {}, prefx="a.")
