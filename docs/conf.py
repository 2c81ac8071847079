"""Sphinx configuration of mmap_ninja's documentation site.

Why Sphinx: it is what the original mmap_ninja documentation is built with (a Read the Docs
site ending in an API reference), and its autodoc turns the docstrings into that reference
without a second copy of them. Why MyST-parser: the pages are Markdown, like the README they
came from, and every ```python block in them is executed by ``tests/test_docs.py``.

Build (warnings are errors): ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # document this checkout, installed or not

import mmap_ninja  # noqa: E402

project = "mmap_ninja"
author = "the mmap_ninja developers"
copyright = "mmap_ninja developers"
release = mmap_ninja.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "public_api",  # fails the build on a public name without a docstring or a reference entry
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
myst_heading_anchors = 3  # so that [text](page.md#a-heading) links resolve
myst_enable_extensions = ["colon_fence"]

# Optional extras (torch, dask...) are imported by autodoc only where installed; elsewhere
# their modules are stood in for, so the reference builds with `pip install -e '.[docs]'` alone.
autodoc_mock_imports = __import__("public_api").missing_optional_imports()
# Methods our classes inherit from our own private bases (RaggedMmap.refresh...) are shown;
# those of numpy, tuple and the exceptions are not.
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "inherited-members": "object,ndarray,memmap,tuple,list,BaseException,Exception,OSError",
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
# Type hints name classes Sphinx cannot link (numpy's, torch's...): not a documentation error.
nitpicky = False

html_theme = "furo"
html_title = f"mmap_ninja {release}"
