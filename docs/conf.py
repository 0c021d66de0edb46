"""Sphinx configuration for spikelottery (built with -W: warnings are errors)."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

# The example notebooks live in examples/ (where the tests execute them); the docs show a
# copy with the stored outputs.
_DOCS = Path(__file__).resolve().parent
(_DOCS / "examples").mkdir(exist_ok=True)
for _nb in sorted((_DOCS.parent / "examples").glob("*.ipynb")):
    shutil.copy2(_nb, _DOCS / "examples" / _nb.name)

project = "spikelottery"
author = "The spikelottery developers"
copyright = "2026, The spikelottery developers"
release = importlib.metadata.version("spikelottery")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_scripts", "**.ipynb_checkpoints"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# The notebook is executed by the test suite (nbmake); the docs show its stored outputs.
nb_execution_mode = "off"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Base-class references to torch/numpy types cannot be resolved without network access.
nitpicky = False
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]

html_theme = "furo"
html_title = f"spikelottery {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

# MathJax is vendored (docs/_static/mathjax/, Apache-2.0, see README.txt there), so the
# equations render without a network connection. The "full" bundle has every TeX
# extension built in: nothing is fetched at run time.
mathjax_path = "mathjax/tex-chtml-full.js"
