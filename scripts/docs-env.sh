#!/usr/bin/env bash
# Create / refresh the Sphinx virtualenv that builds the op docs site: <repo>/.venvs/docs.
#
#   scripts/docs-env.sh
#
# Pins: scripts/requirements/docs.txt (Sphinx and every package it installs). A venv whose stamp
# (.venvs/docs/.mha-pins) holds the hash of those pins and the Python version, and whose
# sphinx-build runs (a venv made through another path to .venvs, e.g. a git worktree's link that
# is gone, names an interpreter that no longer exists), is reused as is.
# Env: PYTHON (default python3) is the interpreter used for `-m venv`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/scripts/requirements/docs.txt"
VENV="$ROOT/.venvs/docs"
PYTHON="${PYTHON:-python3}"

command -v "$PYTHON" >/dev/null || { echo "docs-env: error: '$PYTHON' not found" >&2; exit 1; }
want="$({ "$PYTHON" -c 'import sys; print(sys.version)'; cat "$REQ"; } | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/sphinx-build" && -f "$VENV/.mha-pins" && "$(cat "$VENV/.mha-pins")" == "$want" ]] &&
    "$VENV/bin/sphinx-build" --version >/dev/null 2>&1; then
    echo "docs-env: ok (reused, pins unchanged)  [.venvs/docs]"
    exit 0
fi
rm -rf "$VENV"
mkdir -p "$ROOT/.venvs"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQ"
"$VENV/bin/pip" check >/dev/null || { "$VENV/bin/pip" check >&2; exit 1; }
echo "$want" > "$VENV/.mha-pins"
echo "docs-env: ok (installed) $("$VENV/bin/sphinx-build" --version)  [.venvs/docs]"
