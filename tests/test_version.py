"""`mmap_ninja.__version__`, `mmap-ninja --version` and the package metadata agree."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmap_ninja
from mmap_ninja import cli

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def pyproject_version() -> str:
    return re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(encoding="utf-8"), flags=re.M).group(1)


def test_version_is_the_metadata_version() -> None:
    try:
        installed = importlib.metadata.version("mmap_ninja")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mmap_ninja is not installed (running from the source tree): no metadata to compare")
    assert mmap_ninja.__version__ == installed


def test_fallback_version_is_pyproject_version(monkeypatch) -> None:
    """Running from a source tree without an install gives pyproject.toml's version."""

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert mmap_ninja._version() == pyproject_version()


def test_cli_version(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mmap-ninja {mmap_ninja.__version__}"


def test_python_m_version() -> None:
    out = subprocess.run([sys.executable, "-m", "mmap_ninja", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"mmap-ninja {mmap_ninja.__version__}"
