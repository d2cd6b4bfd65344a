"""`mha-gen convert` on a real torch checkpoint: a TransformerEncoder made by torch (in the torch venv)
is converted to this framework's native names and shapes, loaded by those names into the framework's
own layers with the framework's own weight assignment, and must give torch's numbers; converted back
(`--from`), from the file and from the weights read out of the framework's layers, it must give
torch's tensors bit for bit.

Needs MHA_GEN (the mha-gen binary; default `cargo run -p mha-gen`) and MHA_TORCH_PYTHON (default
.venvs/torch/bin/python); scripts/test-frameworks.sh sets both. MHA_CONVERT_OUT, when set, receives
the measured differences as JSON.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess

import numpy as np
import pytest

import _support

SETTINGS = ["--set", "num_heads=6", "--set", "layers.1.self_attn.num_heads=4"]
REPORT: dict = {}


def _mha_gen(*args):
    exe = os.environ.get("MHA_GEN")
    command = [exe] if exe else ["cargo", "run", "--quiet", "-p", "mha-gen", "--"]
    run = subprocess.run(command + [str(a) for a in args], cwd=_support.ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"mha-gen {' '.join(map(str, args))} failed:\n{run.stderr}"
    return run.stdout


@pytest.fixture(scope="module")
def torch_encoder(tmp_path_factory):
    python = os.environ.get("MHA_TORCH_PYTHON") or str(_support.ROOT / ".venvs" / "torch" / "bin" / "python")
    if not os.access(python, os.X_OK):
        raise _support.SuiteSetupError(f"no torch python at {python} (scripts/framework-env.sh torch makes it)")
    folder = tmp_path_factory.mktemp("torch_encoder")
    script = _support.ROOT / "tests" / "frameworks" / "_torch_encoder.py"
    run = subprocess.run([python, str(script), str(folder)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"torch could not make the encoder checkpoint:\n{run.stderr}"
    return folder, json.loads((folder / "encoder.json").read_text())


# The framework's own ways to put weights into a layer by their native names, and to read them back.

def _assign_native(key, layer, native):
    if key == "pytorch":
        import torch
        layer.load_state_dict({k: torch.from_numpy(v) for k, v in native.items()}, strict=True)
    elif key in ("keras", "tensorflow"):
        for name, arr in native.items():
            var = functools.reduce(getattr, name.split("."), layer)
            assert tuple(var.shape) == arr.shape, (name, tuple(var.shape), arr.shape)
            var.assign(arr)
    elif key == "mlx":
        import mlx.core as mx
        layer.load_weights([(k, mx.array(v)) for k, v in native.items()], strict=True)
    elif key == "flax_nnx":
        import jax.numpy as jnp
        params = _flax_params(layer)
        assert set(params) == set(native), (sorted(params), sorted(native))
        for name, arr in native.items():
            assert tuple(params[name][...].shape) == arr.shape, name
            params[name][...] = jnp.asarray(arr)
    else:
        raise AssertionError(f"no native loading for {key}")


def _read_native(key, glue, layer):
    if key == "pytorch":
        return {k: v.detach().numpy() for k, v in layer.state_dict().items()}
    if key in ("keras", "tensorflow"):
        import keras
        names = glue.native_weight_shapes(layer._mha_config)
        return {n: keras.ops.convert_to_numpy(functools.reduce(getattr, n.split("."), layer)) for n in names}
    if key == "mlx":
        from mlx.utils import tree_flatten
        return {k: np.array(v) for k, v in tree_flatten(layer.parameters())}
    if key == "flax_nnx":
        return {k: np.asarray(v[...]) for k, v in _flax_params(layer).items()}
    raise AssertionError(f"no native reading for {key}")


def _flax_params(layer):
    from flax import nnx
    return {".".join(str(p) for p in path): var for path, var in nnx.to_flat_state(nnx.state(layer, nnx.Param))}


def _max_diff(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))


def _write_report():
    out = os.environ.get("MHA_CONVERT_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(REPORT, f, indent=1)


def _layers(glue, tensors, info):
    """(info, layer built by the glue, native tensors of that layer) per layer of the checkpoint."""
    for entry in info["layers"]:
        prefix = entry["prefix"]
        layer = glue.build(embed_dim=entry["embed_dim"], num_heads=entry["num_heads"], dropout=0.1, batch_first=True)
        native = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        yield entry, layer, native


def test_converted_checkpoint_loads_by_native_names_and_gives_torchs_numbers(glue, torch_encoder, tmp_path):
    package, module = glue
    key = _support.framework_key()
    folder, info = torch_encoder
    native_file = tmp_path / "native.safetensors"
    stdout = _mha_gen("convert", "--to", key, folder / "encoder.safetensors", native_file, *SETTINGS)
    assert f"{len(info['layers'])} layers converted, 24 other tensors copied unchanged" in stdout, stdout
    tensors = package.load_safetensors(native_file)
    npz = tmp_path / "native.npz"
    _mha_gen("convert", "--to", key, folder / "encoder.safetensors", npz, *SETTINGS)
    from_npz = package.load_safetensors(npz)
    assert sorted(from_npz) == sorted(tensors) and all(_support.bits_equal(from_npz[k], tensors[k]) for k in tensors)
    torch_state = package.load_safetensors(folder / "encoder.safetensors")
    for name, arr in torch_state.items():
        if ".self_attn." not in name:
            assert _support.bits_equal(tensors[name], arr), f"{name} was not copied unchanged"
    expected = package.load_safetensors(folder / "expected.safetensors")
    diffs = {}
    for entry, layer, native in _layers(module, tensors, info):
        prefix = entry["prefix"]
        assert set(native) == set(module.native_weight_shapes(layer._mha_config)), sorted(native)
        _assign_native(key, layer, native)
        q = expected[prefix + "query"]
        out, weights = module.forward(layer, q, q, q, need_weights=True, average_attn_weights=False)
        for what, got in (("attn_output", out), ("attn_weights", weights)):
            problem = _support.mismatch(got, expected[prefix + what], f"{prefix}{what}")
            assert problem is None, problem
        diffs[prefix] = {"attn_output": _max_diff(out, expected[prefix + "attn_output"]),
                         "attn_weights": _max_diff(weights, expected[prefix + "attn_weights"]),
                         "num_heads": entry["num_heads"]}
    REPORT.update(framework=key, torch_version=info["torch_version"], max_abs_diff=diffs)
    _write_report()


def test_converted_back_gives_torchs_tensors_bit_for_bit(glue, torch_encoder, tmp_path):
    package, module = glue
    key = _support.framework_key()
    folder, info = torch_encoder
    source = folder / "encoder.safetensors"
    native_file, back = tmp_path / "native.safetensors", tmp_path / "back.safetensors"
    _mha_gen("convert", "--to", key, source, native_file, *SETTINGS)
    _mha_gen("convert", "--from", key, native_file, back, *SETTINGS)
    assert back.read_bytes() == source.read_bytes(), "the file round trip is not byte for byte"
    # Through the framework: load the native weights into its layers, read them out by their native
    # names with the framework's own accessors, save, convert back.
    tensors = package.load_safetensors(native_file)
    read_out = {k: v for k, v in tensors.items() if ".self_attn." not in k}
    for entry, layer, native in _layers(module, tensors, info):
        _assign_native(key, layer, native)
        read_out.update({entry["prefix"] + k: v for k, v in _read_native(key, module, layer).items()})
    from_framework, back2 = tmp_path / "from_framework.safetensors", tmp_path / "back2.safetensors"
    package.save_safetensors(read_out, from_framework)
    _mha_gen("convert", "--from", key, from_framework, back2, *SETTINGS)
    want, got = package.load_safetensors(source), package.load_safetensors(back2)
    assert sorted(got) == sorted(want)
    changed = [name for name in want if not _support.bits_equal(got[name], want[name])]
    assert not changed, f"not bit for bit after the round trip through {key}: {changed}"
    REPORT.update(framework=key, round_trip_bit_exact=True, round_trip_tensors=len(want))
    _write_report()
