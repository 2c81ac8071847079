"""The documentation site (docs/) cannot drift from the code.

- Every ```python block of every page runs, page by page, each page in an empty temporary
  folder, its blocks in order (blocks needing an extra that is not installed skip, named).
- Every public name (``__all__`` of every module that has one) has a docstring, and every
  public module an entry in docs/api.md: the same check the Sphinx build makes
  (``docs/_ext/public_api.py``), here so that it holds without Sphinx installed too.
- The toctree of docs/index.md lists every page, and each page starts with a ``# Title``.
"""

import re
import sys
from pathlib import Path

import pytest

from markdown_blocks import python_blocks, run_blocks

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "README.md")
sys.path.insert(0, str(DOCS / "_ext"))
import public_api  # noqa: E402


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_python_blocks_run(page: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_blocks(page, f"docs/{page.name}")


def test_pages_have_examples() -> None:
    # 15 on this branch before the feature pages (torch, images, remote...) land with theirs
    assert sum(len(python_blocks(p)) for p in PAGES) >= 15


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_starts_with_a_title(page: Path) -> None:
    assert page.read_text(encoding="utf-8").startswith("# "), f"docs/{page.name} must start with '# Title'"


def test_toctree_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([\w-]+)$", "\n".join(re.findall(r"```\{toctree\}\n(.*?)```", index, flags=re.S)), flags=re.M))
    pages = {p.stem for p in PAGES} - {"index"}
    assert pages - listed == set(), "pages missing from the toctree of docs/index.md"
    assert listed - pages == set(), "the toctree names pages that do not exist"


@pytest.mark.parametrize("module", public_api.public_modules())
def test_public_names_have_docstrings(module: str) -> None:
    try:
        missing = public_api.missing_docstrings(module)
    except ImportError as e:  # an extra not installed, and no Sphinx to stand in for it
        pytest.skip(f"{module} cannot be imported here: {e}")
    assert missing == []


def test_every_public_module_is_in_the_reference() -> None:
    documented = set(public_api.documented_modules())
    assert [m for m in public_api.public_modules() if m not in documented] == []


def test_reference_names_every_top_level_name() -> None:
    """``import mmap_ninja`` re-exports names documented under their modules: the table in
    docs/api.md must list each, or the reference would miss them."""
    import mmap_ninja

    table = (DOCS / "api.md").read_text(encoding="utf-8")
    assert [name for name in mmap_ninja.__all__ if f"`{name}`" not in table] == []


def test_public_api_finds_a_missing_docstring(tmp_path, monkeypatch) -> None:
    """The check is not vacuous: a public function without a docstring is reported."""
    import mmap_ninja.generic as generic

    def undocumented(path):  # noqa: ANN001
        return path

    monkeypatch.setattr(generic, "open_existing", undocumented)
    assert public_api.missing_docstrings("mmap_ninja.generic") == ["mmap_ninja.generic.open_existing"]
