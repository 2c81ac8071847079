"""mmap_ninja 0.9.0's own public-API tests, run against this package.

The tests come from the release's source archive on the package index, never from this
repository: ``.ci/run`` downloads it and sets ``MMAP_NINJA_UPSTREAM_SDIST`` to its path.
Without the archive the suite test skips and says why. The compatibility aliases those
tests need are also checked directly here, so they stay covered without the archive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import base, generic
from mmap_ninja import numpy as np_ninja
from mmap_ninja.string import StringsMmap

from conftest import require

UPSTREAM_TEST_FILES = ("test_generic.py", "test_numpy.py", "test_ragged.py", "test_string.py")
UPSTREAM_TEST_COUNT = 52  # what those four files of the 0.9.0 archive hold


def _archive() -> Path:
    found = os.environ.get("MMAP_NINJA_UPSTREAM_SDIST")
    if not found:
        pytest.skip("no mmap_ninja 0.9.0 source archive: set MMAP_NINJA_UPSTREAM_SDIST to its .tar.gz (.ci/run does)")
    if not Path(found).is_file():
        pytest.skip(f"MMAP_NINJA_UPSTREAM_SDIST={found} is not a file")
    return Path(found)


def _extract_tests(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).parts[1:2] == ("tests",)]
        tar.extractall(into, members=members, filter="data")
    (tests,) = {into / Path(m.name).parts[0] / "tests" for m in members}
    missing = [name for name in UPSTREAM_TEST_FILES if not (tests / name).is_file()]
    assert not missing, f"the archive {archive} has no tests/{missing}"
    return tests


def test_upstream_suite_passes_in_full(tmp_path: Path) -> None:
    require("joblib", "zstandard")  # 0.9.0's own tests import both
    tests = _extract_tests(_archive(), tmp_path / "sdist")
    (tests / "pytest.ini").write_text("[pytest]\n")  # keep pytest from finding any other config
    ours = Path(mmap_ninja.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ours), os.environ.get("PYTHONPATH", "")])}
    report = tmp_path / "report.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *UPSTREAM_TEST_FILES],
        cwd=tests, env=env, capture_output=True, text=True, timeout=600,
    )
    assert report.exists(), f"pytest did not run:\n{run.stdout}\n{run.stderr}"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": UPSTREAM_TEST_COUNT, "failures": 0, "errors": 0, "skipped": 0}, run.stdout[-5000:]
    assert run.returncode == 0, run.stdout[-5000:]
    # the tests ran against this package, not an installed 0.9.0
    probe = subprocess.run([sys.executable, "-c", "import mmap_ninja; print(mmap_ninja.__file__)"],
                           cwd=tests, env=env, capture_output=True, text=True)
    assert Path(probe.stdout.strip()).resolve().is_relative_to(ours)


# -- the compatibility aliases and behaviour those tests rely on, checked without the archive --


def test_str_to_file_alias_writes_the_text(tmp_path: Path) -> None:
    out_dir = tmp_path / "m"
    out_dir.mkdir()
    base._str_to_file("asd", out_dir / "type.ninja")
    assert (out_dir / "type.ninja").read_bytes() == b"asd"
    with pytest.raises(ValueError):
        generic.open_existing(out_dir)


@pytest.mark.parametrize("order", ["C", "F"])
def test_empty_alias_gives_a_writable_zero_map(tmp_path: Path, order: str) -> None:
    m = np_ninja._empty(tmp_path / "m", dtype=np.int16, shape=(4, 3), order=order)
    assert m.shape == (4, 3) and m.dtype == np.int16 and not m.any()
    m[:] = np.arange(12).reshape(4, 3)
    m.flush()
    np.testing.assert_array_equal(np_ninja.open_existing(tmp_path / "m"), np.arange(12).reshape(4, 3))
    with pytest.raises(ValueError, match="order"):
        np_ninja._empty(tmp_path / "other", dtype=np.int16, shape=(4,), order="K")


def test_overwriting_a_zstd_string_always_raises_and_changes_nothing(tmp_path: Path) -> None:
    require("zstandard")
    m = StringsMmap.from_strings(tmp_path / "z", ["hello", "world"], zstd_level=3)
    before = (tmp_path / "z" / "data.ninja").read_bytes()
    # "other" happens to compress to as many bytes as "hello"; that must not matter
    for key, value in ((0, "other"), (0, "hello"), (-1, "x" * 100), (slice(0, 2), ["a", "b"])):
        with pytest.raises(ValueError, match="zstd"):
            m[key] = value
    assert (tmp_path / "z" / "data.ninja").read_bytes() == before
    assert list(StringsMmap(tmp_path / "z")) == ["hello", "world"]
