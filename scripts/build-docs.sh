#!/usr/bin/env bash
# Build the op docs site: generate it afresh into target/docs/generated (so that no page left by an
# older generation in generated/docs is built), then Sphinx (warnings are errors) in the venv
# scripts/docs-env.sh makes.
#
#   scripts/build-docs.sh            -> HTML in target/docs/html (open target/docs/html/index.html)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/docs-env.sh
rm -rf target/docs/generated target/docs/html
cargo run --quiet --locked -p mha-gen -- generate --out target/docs/generated >/dev/null
.venvs/docs/bin/sphinx-build -W --keep-going -q -b html target/docs/generated/docs target/docs/html
echo "build-docs: target/docs/html/index.html"
