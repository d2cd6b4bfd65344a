#!/usr/bin/env bash
# mha-runtime vs torch.nn.MultiheadAttention, alternately in one run (see bench_vs_torch.py).
#
#   scripts/bench_vs_torch.sh [bench_vs_torch.py options, e.g. --threads 1,2,8,16 --phases]
#
# Builds the release bench workers (crates/mha-runtime/examples/bench_attention.rs, and
# bench_sdpa.rs for the `sdpa` set, found beside it), creates or reuses .venvs/torch with
# scripts/framework-env.sh, then runs the comparison and the L=16384 peak-RSS check.
# CARGO_TARGET_DIR is honoured.
#
# Offline (a machine without network access, a worker built elsewhere, torch installed):
#   MHA_BENCH_BIN=path/to/bench_attention MHA_BENCH_PYTHON=python3 scripts/bench_vs_torch.sh
# (with bench_sdpa in the same folder, or --sdpa-bin PATH, or --sets shapes,calls)
# runs neither cargo nor the venv script (or call bench_vs_torch.py --bin directly).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -n "${MHA_BENCH_BIN:-}" ]]; then
    BIN="$MHA_BENCH_BIN"
else
    cargo build --release -p mha-runtime --example bench_attention --example bench_sdpa
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench_attention"
fi
if [[ -n "${MHA_BENCH_PYTHON:-}" ]]; then
    PYTHON="$MHA_BENCH_PYTHON"
else
    scripts/framework-env.sh torch
    PYTHON="$ROOT/.venvs/torch/bin/python"
fi
exec "$PYTHON" "$ROOT/scripts/bench_vs_torch.py" --bin "$BIN" "$@"
