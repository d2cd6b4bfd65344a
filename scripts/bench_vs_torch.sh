#!/usr/bin/env bash
# mha-runtime vs torch.nn.MultiheadAttention, alternately in one run (see bench_vs_torch.py).
#
#   scripts/bench_vs_torch.sh [bench_vs_torch.py options, e.g. --threads 1,2 --rounds 7]
#
# Builds the release bench worker (crates/mha-runtime/examples/bench_attention.rs), creates or
# reuses .venvs/torch with scripts/framework-env.sh, then runs the comparison and the L=16384
# peak-RSS check. CARGO_TARGET_DIR is honoured.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -p mha-runtime --example bench_attention
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
scripts/framework-env.sh torch
exec "$ROOT/.venvs/torch/bin/python" "$ROOT/scripts/bench_vs_torch.py" \
    --bin "$TARGET_DIR/release/examples/bench_attention" "$@"
