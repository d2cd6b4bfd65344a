"""Re-runs a fixture script under the project's torch venv (.venvs/torch, made by framework-env.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venvs" / "torch"


def ensure_torch_venv(script: str) -> None:
    """Returns when running inside the torch venv; otherwise makes it (or reuses it) and re-executes
    `script` with the same arguments under its python."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    name = Path(script).stem
    if os.environ.get("MHA_FIXTURES_REEXEC") == "1":
        sys.exit(f"{name}: re-executed but sys.prefix is {sys.prefix}, not {VENV}")
    subprocess.run([str(ROOT / "scripts" / "framework-env.sh"), "torch"], check=True)
    py = VENV / "bin" / "python"
    env = dict(os.environ, MHA_FIXTURES_REEXEC="1")
    os.execve(str(py), [str(py), str(Path(script).resolve()), *sys.argv[1:]], env)
