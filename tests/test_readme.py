"""Every ```python block of README.md runs, in order, so the documentation cannot rot."""

from pathlib import Path

from markdown_blocks import python_blocks, run_blocks

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_has_examples() -> None:
    # The README is an overview: a few short examples, each kind of map once; the guides in
    # docs/ hold the rest (tests/test_docs.py runs those).
    assert len(python_blocks(README)) >= 5


def test_readme_python_blocks_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_blocks(README, "README.md")
