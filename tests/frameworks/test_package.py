"""The generated glue is an installable package: `mha-gen generate --out DIR`, then `pip install
DIR/python` and `pip install -e DIR/python` in a fresh venv (numpy comes as its one dependency); `import
mha_glue` works and a framework module whose framework is missing says what to install. Runs once, in
the PyTorch run of the suite (MHA_GEN: the mha-gen binary, default `cargo run -p mha-gen`)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import _support

CHECK = """
import mha_glue, mha_glue.multihead_attention as mha, sys
print(mha_glue.__file__)
assert mha_glue.OPS == {{"multihead_attention": "MultiheadAttention", "scaled_dot_product_attention": "ScaledDotProductAttention"}}, mha_glue.OPS
assert mha.FRAMEWORKS == {frameworks!r}, mha.FRAMEWORKS
assert mha_glue.load("ScaledDotProductAttention")._spec.KIND == "function"
try:
    import mha_glue.multihead_attention.{missing}
except ImportError as e:
    print(e)
else:
    sys.exit("mha_glue.multihead_attention.{missing} imported without its framework")
"""


@pytest.mark.only_framework("pytorch")
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_in_a_fresh_venv(tmp_path, editable):
    exe = os.environ.get("MHA_GEN")
    command = [exe] if exe else ["cargo", "run", "--quiet", "-p", "mha-gen", "--"]
    run = subprocess.run(command + ["generate", "--out", str(tmp_path / "generated")], cwd=_support.ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    source = tmp_path / "generated" / "python"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check", "-q"]
    run = subprocess.run(pip + (["-e", str(source)] if editable else [str(source)]), capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    frameworks = ["pytorch", "keras", "tensorflow", "mlx", "flax_nnx"]
    missing = "keras"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([str(python), "-c", CHECK.format(frameworks=frameworks, missing=missing)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    first, message = run.stdout.splitlines()[:2]
    assert first.startswith(str(source if editable else venv)), first
    assert message.startswith(f"mha_glue.multihead_attention.{missing} needs the ") and "pip install " in message, message
