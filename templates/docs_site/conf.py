# Sphinx configuration of the op docs site: `sphinx-build -W -b html docs docs/_build/html`
# (scripts/build-docs.sh does this in the venv scripts/docs-env.sh makes).
project = "mha operators"
author = "mha"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_show_copyright = False
# `_static/op_tabs.js` is loaded by each op page's own <script> tag; the style applies site-wide.
html_static_path = ["_static"]
html_css_files = ["op_tabs.css"]
html_theme_options = {"page_width": "1100px"}
