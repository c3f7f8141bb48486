"""Sphinx configuration: ``sphinx-build -W -b html docs <outdir>`` (see ``.ci/run``)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import dask_jobqueue  # noqa: E402

project = "dask_jobqueue"
author = "dask_jobqueue contributors"
copyright = "dask_jobqueue contributors"
release = dask_jobqueue.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

# Docstrings are numpydoc style (``Parameters`` / ``Returns`` sections).
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False}

exclude_patterns = ["_build"]
templates_path: list[str] = []

html_theme = "alabaster"
html_title = f"dask_jobqueue {release}"
# custom.css: long code lines scroll inside their box (they were clipped at the page width)
html_static_path = ["_static"]
html_css_files = ["custom.css"]
