"""Maps written by the released mmap_ninja 0.9.0, committed under tests/golden/, in every run.

No 0.9.0 interpreter is needed: tests/golden/make_golden.py wrote them (see its docstring for
how to regenerate). Ours must read them, extend a copy into exactly the bytes 0.9.0 wrote for
the same extension, and build the same samples from scratch into exactly 0.9.0's bytes.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from mmap_ninja import generic
from mmap_ninja.layout import LOCK

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
import make_golden  # noqa: E402

needs_zstd = pytest.mark.skipif(
    importlib.util.find_spec("zstandard") is None,
    reason="the zstd strings map needs zstandard (pip install 'mmap_ninja[zstd]')",
)
CASES = [pytest.param(name, marks=needs_zstd) if name.endswith("zstd") else name for name in make_golden.CASES]


def files_of(root: Path) -> Dict[str, bytes]:
    """Every file under ``root`` by its relative path, with its bytes, but the writer lock.

    The lock (``layout.LOCK``) is an empty file our writers ``flock``; 0.9.0 never looks at it.
    """
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    for name in [n for n in found if n.split("/")[-1] == LOCK]:
        assert found.pop(name) == b"", f"{name} is not empty"
    return found


def assert_same_files(got: Path, want: Path) -> None:
    """``got`` holds exactly the files of ``want``, each with the same bytes."""
    mine, theirs = files_of(got), files_of(want)
    assert sorted(mine) == sorted(theirs), f"files differ from 0.9.0's: extra {sorted(set(mine) - set(theirs))}, missing {sorted(set(theirs) - set(mine))}"
    differ = [name for name in theirs if mine[name] != theirs[name]]
    assert not differ, "bytes differ from 0.9.0's in " + ", ".join(f"{n} ({mine[n]!r} != {theirs[n]!r})" for n in differ)


def assert_reads(path: Path, expected) -> None:
    """Ours opens ``path`` and serves exactly the ``expected`` samples, by index and by slice."""
    m = generic.open_existing(path)
    try:
        assert len(m) == len(expected)
        for i, want in enumerate(expected):
            got = m[i]
            if isinstance(want, str):
                assert got == want, f"sample {i}"
            else:
                want = np.asarray(want)
                got = np.asarray(got)
                assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), f"sample {i}: {got!r} != {want!r}"
        assert len(m[1:]) == len(expected) - 1
    finally:
        getattr(m, "close", lambda: None)()
        del m


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("extended", [False, True], ids=["built", "extended"])
def test_reads_what_0_9_0_wrote(name, extended):
    assert_reads(GOLDEN / (name + (".extended" if extended else "")), make_golden.expected(name, extended))


@pytest.mark.parametrize("name", CASES)
def test_extends_into_the_bytes_0_9_0_writes(name, tmp_path):
    copy = tmp_path / name
    shutil.copytree(GOLDEN / name, copy)
    make_golden.extend(name, copy)
    assert_same_files(copy, GOLDEN / f"{name}.extended")
    assert_reads(copy, make_golden.expected(name, extended=True))


@pytest.mark.parametrize("name", CASES)
def test_builds_the_bytes_0_9_0_builds(name, tmp_path):
    make_golden.build(name, tmp_path / name)
    assert_same_files(tmp_path / name, GOLDEN / name)


def test_the_golden_maps_are_all_there():
    """A case added to make_golden.py without rerunning it fails here, not silently."""
    for name in make_golden.CASES:
        for d in (GOLDEN / name, GOLDEN / f"{name}.extended"):
            assert (d / "type.ninja").is_file(), f"{d} is missing: rerun tests/golden/make_golden.py under mmap_ninja 0.9.0"
