#!/usr/bin/env bash
# Build the op docs site (scripts/build-docs.sh) and check it in a real headless Chromium: on every
# op page, the tab script and style are loaded, one pane shows at first, and clicking each tab
# button shows that framework's pane (its heading is the button's text) and only that one.
# Screenshots of every tab go to target/docs/screenshots/.
#
#   scripts/test-docs.sh            (needs chromium: Debian's `apt-get install chromium`)
#
# Env: CHROMIUM (default: the first of chromium, chromium-browser, google-chrome on PATH).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HTML="$ROOT/target/docs/html"
SHOTS="$ROOT/target/docs/screenshots"

CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
[[ -n "$CHROMIUM" ]] || { echo "test-docs: error: no chromium on PATH (apt-get install chromium)" >&2; exit 1; }

bash scripts/build-docs.sh

chrome() { "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run --allow-file-access-from-files "$@" 2>/dev/null; }

rm -rf "$SHOTS"
mkdir -p "$SHOTS"
status=0
pages=0
for page in "$HTML"/ops/*.html; do
    [[ "$page" == *.details.html ]] && continue
    pages=$((pages + 1))
    name="$(basename "$page" .html)"
    probe="$(dirname "$page")/_tab_check_$name.html"   # beside the page: same relative links
    python3 scripts/docs_tab_check.py probe "$page" "$probe"
    chrome --virtual-time-budget=5000 --dump-dom "file://$probe" \
        | python3 scripts/docs_tab_check.py verify "$name" || status=1
    tabs="$(grep -o 'class="op-tab-btn' "$page" | wc -l)"
    for ((i = 0; i < tabs; i++)); do
        python3 scripts/docs_tab_check.py probe "$page" "$probe" "$i"
        chrome --virtual-time-budget=5000 --window-size=1200,900 --screenshot="$SHOTS/${name}_tab$i.png" "file://$probe" >/dev/null
    done
    rm -f "$probe"
    details="$(dirname "$page")/$name.details.html"
    [[ -f "$details" ]] && chrome --window-size=1200,2400 --screenshot="$SHOTS/${name}_details.png" "file://$details" >/dev/null
done
[[ $pages -gt 0 ]] || { echo "test-docs: error: no op pages under $HTML/ops" >&2; exit 1; }
echo "test-docs: screenshots in target/docs/screenshots/ ($(ls "$SHOTS" | wc -l) files)"
exit $status
