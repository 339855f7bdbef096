"""Sphinx configuration for rnnlab's documentation (built by `make docs` into site/).

Strict by design: `make docs` runs with -W --keep-going and nitpicky on, so a broken internal
reference fails the build; docs/_ext/rnnlab_docs.py generates the API reference from the
packages' __all__ at build time, so new public names appear without editing the docs. See
docs/design/0009-documentation-site.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))

project = "rnnlab"
author = "rnnlab authors"
copyright = "2026, rnnlab authors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx-mathjax-offline",
    "rnnlab_docs",
    "rnnlab_run",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# Design notes (docs/design/) are written by every helper as plain Markdown for the repository:
# the site lists them (design.md) rather than building them, so one note's Markdown cannot break
# the site.
exclude_patterns = ["_build", "design", "reference/examples"]

templates_path: list[str] = []


# sphinx-mathjax-offline copies MathJax 3 into site/_static: the pages render maths offline.

html_theme = "furo"
html_title = "rnnlab"
html_static_path = ["_static"]
html_css_files = ["rnnlab.css"]
html_show_sourcelink = False

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Strictness: every reference must resolve. External targets (torch, numpy, the standard
# library) cannot be looked up offline; rnnlab_docs filters exactly those (see its docstring).
nitpicky = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_default_options = {"exclude-members": "__init__, forward"}
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # Attributes as one compact field list, not one block each

doctest_global_setup = """
import os
import torch
import rnnlab
from torch import nn
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("RNNLAB_DOCS_THREADS", "1")))
"""
doctest_default_flags = (
    __import__("doctest").ELLIPSIS
    | __import__("doctest").NORMALIZE_WHITESPACE
    | __import__("doctest").DONT_ACCEPT_TRUE_FOR_1
)
