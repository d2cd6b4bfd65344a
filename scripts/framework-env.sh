#!/usr/bin/env bash
# Create / refresh one Python virtualenv per ML framework under <repo>/.venvs/<name>.
#
#   scripts/framework-env.sh [--check] [NAME ...]      (no NAME = all of them)
#
# NAME is one of:
#   torch       torch (PyPI wheel)
#   keras       keras 3 + jax            (use with KERAS_BACKEND=jax)
#   tensorflow  tensorflow-cpu + keras 3 (use with KERAS_BACKEND=tensorflow)
#   flax_nnx    flax (nnx API) + jax
#   mlx         mlx[cpu]                 (plain `mlx` has no Linux library)
#
# Every venv also gets numpy, safetensors and pytest. Exact pins live in
# scripts/requirements/common.txt and scripts/requirements/<NAME>.txt. A venv whose
# stamp file (.venvs/<NAME>/.mha-pins) holds the hash of those pins (plus the Python
# version) is reused as is (a fast no-op); otherwise it is (re)installed and then
# verified: the framework is imported and a tiny multi-head attention forward is run.
# --check also runs that verification on reused venvs.
#
# Env: PYTHON (default python3) is the interpreter used for `-m venv`.
set -euo pipefail

ALL_NAMES=(torch keras tensorflow flax_nnx mlx)
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
REQ_DIR="$SCRIPT_DIR/requirements"
VENVS="$ROOT/.venvs"
PYTHON="${PYTHON:-python3}"
PIP_VERSION="26.3"   # pip inside each venv (the one bundled with 3.11's ensurepip is old)

say()  { printf 'framework-env: %s\n' "$*"; }
die()  { printf 'framework-env: error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

CHECK=0
NAMES=()
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --check) CHECK=1 ;;
        -*) die "unknown option '$arg' (see --help)" ;;
        *)
            ok=0
            for n in "${ALL_NAMES[@]}"; do [[ "$n" == "$arg" ]] && ok=1; done
            [[ $ok == 1 ]] || die "unknown venv name '$arg' (expected one of: ${ALL_NAMES[*]})"
            NAMES+=("$arg") ;;
    esac
done
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=("${ALL_NAMES[@]}")

command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found (set PYTHON=...)"
[[ -f "$REQ_DIR/common.txt" ]] || die "missing $REQ_DIR/common.txt"
mkdir -p "$VENVS"

# Smoke test per venv: import the framework, run a tiny MHA forward, print "<framework> <version>".
smoke_code() {
    case "$1" in
        torch) cat <<'EOF'
import torch
m = torch.nn.MultiheadAttention(8, 2, batch_first=True)
x = torch.randn(2, 3, 8)
y, w = m(x, x, x)
assert tuple(y.shape) == (2, 3, 8) and tuple(w.shape) == (2, 3, 3)
assert bool(torch.isfinite(y).all())
print("torch", torch.__version__)
EOF
        ;;
        keras|tensorflow) cat <<'EOF'
import os, numpy as np, keras
want = os.environ["KERAS_BACKEND"]
assert keras.backend.backend() == want, (keras.backend.backend(), want)
layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype("float32")
y = keras.ops.convert_to_numpy(layer(x, x))
assert y.shape == (2, 3, 8) and np.isfinite(y).all()
if want == "jax":
    import jax; extra = "jax " + jax.__version__
else:
    import tensorflow as tf; extra = "tensorflow " + tf.__version__
print("keras", keras.__version__, "+", extra)
EOF
        ;;
        flax_nnx) cat <<'EOF'
import numpy as np, jax, jax.numpy as jnp, flax
from flax import nnx
m = nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=nnx.Rngs(0))
x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 8)), dtype=jnp.float32)
y = np.asarray(m(x, x, x))
assert y.shape == (2, 3, 8) and np.isfinite(y).all()
print("flax", flax.__version__, "+ jax", jax.__version__)
EOF
        ;;
        mlx) cat <<'EOF'
import numpy as np, mlx.core as mx, mlx.nn as nn
m = nn.MultiHeadAttention(8, 2)
x = mx.array(np.random.default_rng(0).standard_normal((2, 3, 8)).astype("float32"))
y = np.array(m(x, x, x))
assert y.shape == (2, 3, 8) and np.isfinite(y).all()
print("mlx", mx.__version__)
EOF
        ;;
    esac
}

backend_env() {
    case "$1" in
        keras) echo "KERAS_BACKEND=jax" ;;
        tensorflow) echo "KERAS_BACKEND=tensorflow" ;;
        *) echo "MHA_ENV=$1" ;;
    esac
}

pins_hash() {
    local name="$1"
    { "$PYTHON" -c 'import sys; print(sys.version)'; echo "pip==$PIP_VERSION";
      cat "$REQ_DIR/common.txt" "$REQ_DIR/$name.txt"; } | sha256sum | cut -d' ' -f1
}

smoke() {   # prints the version line; returns non-zero on failure (output on stderr)
    local name="$1" venv="$VENVS/$1" out
    if ! out="$(env $(backend_env "$name") TF_CPP_MIN_LOG_LEVEL=3 JAX_PLATFORMS=cpu \
                "$venv/bin/python" -c "$(smoke_code "$name")" 2>&1)"; then
        printf '%s\n' "$out" | tail -n 25 >&2
        return 1
    fi
    printf '%s\n' "$out" | tail -n 1
}

setup_one() {
    local name="$1" venv="$VENVS/$1" req="$REQ_DIR/$1.txt" want have="" line log
    [[ -f "$req" ]] || { printf 'framework-env: error: missing %s\n' "$req" >&2; return 1; }
    want="$(pins_hash "$name")"
    [[ -f "$venv/.mha-pins" ]] && have="$(cat "$venv/.mha-pins")"
    if [[ "$have" == "$want" && -x "$venv/bin/python" ]]; then
        if [[ $CHECK == 1 ]]; then
            line="$(smoke "$name")" || { say "$name: FAILED verification of existing venv $venv" >&2; return 1; }
            say "$name: ok (reused, verified) $line  [.venvs/$name, $(du -sh "$venv" | cut -f1)]"
        else
            say "$name: ok (reused, pins unchanged)  [.venvs/$name]"
        fi
        return 0
    fi
    if [[ -e "$venv" && ! -x "$venv/bin/python" ]]; then
        say "$name: removing broken venv $venv"
        rm -rf "$venv"
    fi
    if [[ ! -e "$venv" ]]; then
        "$PYTHON" -m venv "$venv" || { say "$name: error: '$PYTHON -m venv $venv' failed" >&2; return 1; }
    fi
    rm -f "$venv/.mha-pins"
    log="$VENVS/$name.pip.log"
    say "$name: installing pins from scripts/requirements/{common,$name}.txt (log: .venvs/$name.pip.log) ..."
    if ! { "$venv/bin/python" -m pip install --disable-pip-version-check -q "pip==$PIP_VERSION" &&
           "$venv/bin/python" -m pip install --disable-pip-version-check -q --progress-bar off \
               -r "$REQ_DIR/common.txt" -r "$req"; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        say "$name: error: pip install failed (full log: $log)" >&2
        return 1
    fi
    line="$(smoke "$name")" || { say "$name: error: installed, but the import / MHA forward check failed" >&2; return 1; }
    echo "$want" > "$venv/.mha-pins"
    say "$name: ok (installed) $line  [.venvs/$name, $(du -sh "$venv" | cut -f1)]"
}

failed=()
for name in "${NAMES[@]}"; do
    # One installer per venv at a time (e.g. the fixture script may call us while a
    # background run is installing the same venv).
    exec {lockfd}>"$VENVS/.$name.lock"
    flock "$lockfd"
    if ! setup_one "$name"; then failed+=("$name"); fi
    flock -u "$lockfd"
    exec {lockfd}>&-
done
if [[ ${#failed[@]} -gt 0 ]]; then
    die "failed: ${failed[*]}"
fi
