#!/usr/bin/env bash
# Build the op docs site: generate it (`mha-gen generate --out generated`), then Sphinx (warnings
# are errors) in the venv scripts/docs-env.sh makes.
#
#   scripts/build-docs.sh            -> HTML in target/docs/html (open target/docs/html/index.html)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/docs-env.sh
cargo run --quiet --locked -p mha-gen -- generate --out generated
rm -rf target/docs/html
.venvs/docs/bin/sphinx-build -W --keep-going -q -b html generated/docs target/docs/html
echo "build-docs: target/docs/html/index.html"
