"""The browser check of the op pages' tabs (scripts/test-docs.sh runs it with headless Chromium).

    docs_tab_check.py probe PAGE PROBE [TAB]   write PROBE: PAGE plus a script that clicks every tab
                                               button and reports, as JSON in <pre id="tab-check">,
                                               what shows; it then leaves tab TAB (default 0) open
    docs_tab_check.py verify NAME < DOM        read Chromium's --dump-dom of a probe and check that
                                               op_tabs.js ran, one pane shows at first, and each
                                               click shows its framework's pane only
"""
import html
import json
import re
import sys

# Runs after the page's own scripts (it is the last thing in <body>).
PROBE_JS = """<script>
(function () {
  function shown() {
    return Array.from(document.querySelectorAll(".op-tab-pane"))
      .filter(function (p) { return getComputedStyle(p).display !== "none"; })
      .map(function (p) { return p.querySelector("h4").textContent; });
  }
  var buttons = Array.from(document.querySelectorAll(".op-tab-btn"));
  function active() {
    return buttons.filter(function (b) { return b.classList.contains("active"); })
      .map(function (b) { return b.textContent; });
  }
  var report = {script: typeof openOpTab === "function", initial: shown(), clicks: []};
  buttons.forEach(function (b) {
    b.click();
    report.clicks.push({button: b.textContent, shown: shown(), active: active()});
  });
  if (buttons[%d]) { buttons[%d].click(); }
  var pre = document.createElement("pre");
  pre.id = "tab-check";
  pre.style.display = "none";  // in the DOM dump, not in the screenshots
  pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
})();
</script>"""


def probe(page, out, tab="0"):
    text = open(page, encoding="utf-8").read()
    if text.count("</body>") != 1:
        sys.exit(f"{page}: expected one </body>")
    tab = int(tab)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text.replace("</body>", PROBE_JS % (tab, tab) + "</body>"))


def verify(name):
    m = re.search(r'<pre id="tab-check"[^>]*>(.*?)</pre>', sys.stdin.read(), re.S)
    if not m:
        print(f"test-docs: {name}: FAIL: the check script did not run (no #tab-check in the DOM)")
        return 1
    r = json.loads(html.unescape(m.group(1)))
    bad = []
    if not r["script"]:
        bad.append("op_tabs.js did not load (openOpTab is not defined)")
    if len(r["initial"]) != 1:
        bad.append(f"at first {len(r['initial'])} panes show: {r['initial']} (op_tabs.css not applied?)")
    if not r["clicks"]:
        bad.append("no tab buttons")
    for c in r["clicks"]:
        if c["shown"] != [c["button"]] or c["active"] != [c["button"]]:
            bad.append(f"clicked {c['button']!r}: panes shown {c['shown']}, buttons active {c['active']}")
    for line in bad:
        print(f"test-docs: {name}: FAIL: {line}")
    if not bad:
        tabs = ", ".join(c["button"] for c in r["clicks"])
        print(f"test-docs: {name}: ok: at first {r['initial']} shows; each of {len(r['clicks'])} tabs, "
              f"clicked, shows its framework only: {tabs}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "probe":
        probe(*sys.argv[2:5])
    elif len(sys.argv) == 3 and sys.argv[1] == "verify":
        sys.exit(verify(sys.argv[2]))
    else:
        sys.exit(__doc__)
