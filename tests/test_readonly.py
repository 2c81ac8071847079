"""Read-only use: mode "r"/"rb" refuses overwrites, opening and reading never open a file for
writing (checked with audit hooks, and on a real read-only mount), and appends either work
(from a read-only handle on a writable directory) or fail clearly (on a read-only directory).

mmap_ninja 0.9.0 opens strings maps with "r+b" and numpy's "r+" by default, and creates the
directory of a map path that does not exist, so it cannot read a map on a read-only mount.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from mmap_ninja import ReadOnlyMapError, generic
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import CATALOGUE, kind_params, needs

SAMPLES: Dict[str, List[Any]] = {
    "ragged_flat": [np.arange(3, dtype=np.int32), np.array(5, np.int32), np.arange(7, dtype=np.int32) * 2],
    "ragged_nested": [np.arange(6, dtype=np.uint8).reshape(2, 3), np.arange(4, dtype=np.uint8)],
    "strings": ["abc", "", "dé漢🙂"],
    "strings_zstd": ["abc" * 9, "dé漢🙂" * 4, ""],
    "numpy": list(np.arange(12, dtype=np.float64).reshape(3, 2, 2)),
}


def build_all(folder: Path) -> Dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, samples in SAMPLES.items():
        path = folder / kind
        if kind == "numpy":
            np_ninja.from_ndarray(path, np.stack(samples))
        elif kind.startswith("ragged"):
            RaggedMmap.from_lists(path, samples).close()
        else:
            StringsMmap.from_strings(path, samples, zstd_level=3 if kind == "strings_zstd" else None).close()
    return {kind: folder / kind for kind in SAMPLES}


def files_of(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def as_json(sample: Any) -> Any:
    if isinstance(sample, str):
        return sample
    a = np.asarray(sample)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "values": a.ravel().tolist()}


def expected_json() -> Dict[str, List[Any]]:
    return {kind: [as_json(s) for s in samples] for kind, samples in SAMPLES.items()}


# An audit hook, for the child processes below, that records in ``writes`` every attempt to
# open a file for writing, map one writable, or change a file or directory.
WRITE_AUDIT = r'''
import mmap, os, sys
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
writes = []

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS):
            writes.append(f"open {path} mode={mode} flags={flags}")
    elif event == "mmap.__new__" and args[2] not in (mmap.ACCESS_READ, mmap.ACCESS_COPY):
        writes.append(f"mmap fd={args[0]} access={args[2]}")
    elif event in ("os.truncate", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.chmod", "os.utime"):
        writes.append(f"{event} {args[0]}")
'''

# The checks that run in a child process (with an audit hook, or inside a read-only mount).
# Prints one JSON object: what each read returned, and what each write attempt raised.
CHILD = WRITE_AUDIT + r'''
import json
import numpy as np

folder, audit = sys.argv[1], sys.argv[2] == "audit"
if audit:
    sys.addaudithook(hook)

from mmap_ninja import generic, numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

def as_json(sample):
    if isinstance(sample, str):
        return sample
    a = np.asarray(sample)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "values": a.ravel().tolist()}

def read(kind, how):
    path = os.path.join(folder, kind)
    if kind == "numpy":
        m = np_ninja.open_existing(path) if how == "default" else generic.open_existing(path, mode="r")
        return [as_json(r) for r in m]
    cls = RaggedMmap if kind.startswith("ragged") else StringsMmap
    if how == "default":  # RaggedMmap: "r", StringsMmap: "r+b", as in 0.9.0
        m = cls(path)
    elif how == "writable mode":
        m = cls(path, mode="r+" if cls is RaggedMmap else "r+b")
    else:
        m = generic.open_existing(path, mode="r")
    out = [as_json(m[i]) for i in range(len(m))]
    assert [as_json(s) for s in m] == out and [as_json(s) for s in m[:]] == out
    return out

result = {"reads": {}, "writes": writes, "attempts": {}}
kinds = ["ragged_flat", "ragged_nested", "strings", "strings_zstd", "numpy"]
for kind in kinds:
    for how in ("default", "generic") + (("writable mode",) if kind != "numpy" else ()):
        try:
            result["reads"][f"{kind} {how}"] = read(kind, how)
        except Exception as e:
            result["reads"][f"{kind} {how}"] = f"{type(e).__name__}: {e}"

def attempt(name, call):
    try:
        call()
        result["attempts"][name] = "ok"
    except Exception as e:
        result["attempts"][name] = {"type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__], "message": str(e)}

if not audit:  # in the read-only mount: every way of writing must fail clearly
    p = lambda kind: os.path.join(folder, kind)
    attempt("ragged extend", lambda: RaggedMmap(p("ragged_flat")).extend([np.arange(2, dtype=np.int32)]))
    attempt("nested append", lambda: RaggedMmap(p("ragged_nested"), mode="r").append(np.zeros((1, 1), np.uint8)))
    attempt("strings extend", lambda: StringsMmap(p("strings")).extend(["x"]))
    attempt("zstd strings append", lambda: StringsMmap(p("strings_zstd"), mode="rb").append("x"))
    attempt("np extend_dir", lambda: np_ninja.extend_dir(p("numpy"), np.zeros((1, 2, 2))))
    attempt("np extend", lambda: np_ninja.extend(np_ninja.open_existing(p("numpy")), np.zeros((1, 2, 2))))
    attempt("new ragged map", lambda: RaggedMmap(p("new")).append(np.arange(2)))
    attempt("new strings map", lambda: StringsMmap.from_strings(p("new_strings"), ["a"]))
    attempt("ragged setitem r+", lambda: RaggedMmap(p("ragged_flat"), mode="r+").__setitem__(0, np.zeros(3, np.int32)))
    attempt("strings setitem r+b", lambda: StringsMmap(p("strings"), mode="r+b").__setitem__(0, "xyz"))
    attempt("np open r+", lambda: np_ninja.open_existing(p("numpy"), mode="r+"))
print(json.dumps(result))
'''


def run_child(folder: Path, mode: str, wrapper: List[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*wrapper, sys.executable, "-c", CHILD, str(folder), mode], capture_output=True, text=True, timeout=120)


@needs("zstandard")  # one map of every kind, the zstd strings among them
def test_opening_and_reading_never_open_a_file_for_writing(tmp_path):
    """Audit hooks in a child see every open(), os.open() and mmap(): none may ask to write,
    whatever the mode (except numpy's own "r+", which generic.open_existing is not given here)."""
    build_all(tmp_path)
    before = files_of(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    result = run_child(tmp_path, "audit")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["writes"] == []
    expected = expected_json()
    for name, samples in report["reads"].items():
        assert samples == expected[name.split()[0]], name
    assert len(report["reads"]) == 14
    assert files_of(tmp_path) == before  # no lock file, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes


def _read_only_mount_wrapper(source: Path, target: Path) -> List[str]:
    """A command prefix that runs the rest with ``source`` bound read-only at ``target`` in a
    private mount namespace (nothing leaks to the rest of the system); skip if impossible."""
    script = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && touch "$2/.probe" 2>/dev/null && exit 3; shift 2; exec "$@"'
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("no read-only mount possible: unshare or mount is not installed")
    for unshare in (["unshare", "-m"], ["unshare", "-r", "-m"]):  # as root; else in a user namespace
        probe = subprocess.run([*unshare, "sh", "-c", script, "sh", str(source), str(target), "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [*unshare, "sh", "-c", script, "sh", str(source), str(target)]
    pytest.skip(f"no read-only mount possible here (unshare/mount refused: {probe.stderr.strip()[:200]!r})")


@needs("zstandard")  # one map of every kind, the zstd strings among them
def test_maps_on_a_read_only_mount(tmp_path):
    """On a file system mounted read-only (so root cannot write either): every map opens and
    reads in its default mode and in mode r+; every write fails with an error that says the
    map is read-only, and names it."""
    source, target = tmp_path / "maps", tmp_path / "ro"
    build_all(source)
    target.mkdir()
    before = files_of(source)
    result = run_child(target, "mounted", _read_only_mount_wrapper(source, target))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    expected = expected_json()
    assert len(report["reads"]) == 14
    for name, samples in report["reads"].items():
        assert samples == expected[name.split()[0]], (name, samples)
    attempts = report["attempts"]
    assert len(attempts) == 11
    for name, outcome in attempts.items():
        assert outcome != "ok", f"{name} succeeded on a read-only file system"
        assert "OSError" in outcome["mro"], (name, outcome)  # ReadOnlyMapError and PermissionError are OSErrors
        assert "read-only" in outcome["message"].lower(), (name, outcome)
        assert str(target) in outcome["message"], (name, outcome)
    for name in ("ragged setitem r+", "strings setitem r+b"):
        assert attempts[name]["type"] == "ReadOnlyMapError", attempts[name]
    assert files_of(source) == before
    assert not (target / ".probe").exists() and not any(target.iterdir())  # the mount was private


# --- mode "r": overwrites refused, appends allowed ----------------------------------------------------


@needs("zstandard")  # one map of every kind, the zstd strings among them
def test_read_only_mode_refuses_setitem_and_leaves_data(tmp_path):
    paths = build_all(tmp_path)
    before = files_of(tmp_path)
    for kind in ("ragged_flat", "ragged_nested"):
        m = RaggedMmap(paths[kind], mode="r")
        for key, value in [(0, SAMPLES[kind][0]), (slice(0, 1), [SAMPLES[kind][0]]), ([1], [SAMPLES[kind][1]])]:
            with pytest.raises(ReadOnlyMapError, match="read-only"):
                m[key] = value
        with pytest.raises(ValueError):  # the views handed out are read-only too
            m[0][...] = 0
    for kind in ("strings", "strings_zstd"):
        s = StringsMmap(paths[kind], mode="rb")
        with pytest.raises(ReadOnlyMapError, match="read-only"):
            s[0] = SAMPLES[kind][0]
        with pytest.raises(ReadOnlyMapError):
            s[[0, 1]] = SAMPLES[kind][:2]
    rows = np_ninja.open_existing(paths["numpy"], mode="r")
    with pytest.raises(ValueError):
        rows[0] = 1.0
    with pytest.raises(ValueError):
        rows[0][0, 0] = 1.0
    with pytest.raises(ValueError):
        generic.open_existing(paths["numpy"], mode="r")[1] = 1.0
    assert files_of(tmp_path) == before
    assert isinstance(ReadOnlyMapError("x"), PermissionError)


@needs("zstandard")  # one map of every kind, the zstd strings among them
def test_appends_through_a_read_only_handle_on_a_writable_directory(tmp_path):
    paths = build_all(tmp_path)
    m = RaggedMmap(paths["ragged_flat"], mode="r")
    m.extend([np.arange(4, dtype=np.int32), np.array(9, np.int32)])
    assert len(m) == 5 and len(RaggedMmap(paths["ragged_flat"])) == 5
    np.testing.assert_array_equal(m[3], np.arange(4, dtype=np.int32))
    assert m[4] == 9 and m[4].shape == ()
    with pytest.raises(ReadOnlyMapError):  # appending does not make the handle writable
        m[3] = np.zeros(4, np.int32)
    nested = RaggedMmap(paths["ragged_nested"], mode="r")
    nested.append(np.ones((2, 2, 2), np.uint8))
    np.testing.assert_array_equal(RaggedMmap(paths["ragged_nested"])[2], np.ones((2, 2, 2), np.uint8))
    for kind in ("strings", "strings_zstd"):
        s = StringsMmap(paths[kind], mode="rb")
        s.extend(["new", "néw"])
        assert s[-2:] == ["new", "néw"] and StringsMmap(paths[kind], mode="rb")[:] == SAMPLES[kind] + ["new", "néw"]
        with pytest.raises(ReadOnlyMapError):
            s[-1] = "abc"
    rows = np_ninja.open_existing(paths["numpy"], mode="r")
    np_ninja.extend(rows, np.full((2, 2, 2), 7.0))
    np_ninja.append(rows, np.full((2, 2), 8.0))
    reopened = np_ninja.open_existing(paths["numpy"], mode="r")
    np.testing.assert_array_equal(reopened, np.concatenate([np.stack(SAMPLES["numpy"]), np.full((2, 2, 2), 7.0), np.full((1, 2, 2), 8.0)]))


# --- every kind of the catalogue, with and without checksums ----------------------------------------

CATALOGUE_CHILD = WRITE_AUDIT + r'''
import json
sys.path.insert(0, sys.argv[3])

from conftest import CATALOGUE  # imported before the hook: pytest's own start-up may write caches
from mmap_ninja import verify
sys.addaudithook(hook)
kind, path, count = CATALOGUE[sys.argv[1]], sys.argv[2], int(sys.argv[4])
got = kind.read_all(path)
same = len(got) == count and all(kind.equal(g, w) for g, w in zip(got, kind.samples(count)))
report = verify(os.path.join(path, kind.verify_at)) if kind.verifiable else None
print(json.dumps({"writes": writes, "same": same, "verified": report.ok if report else None, "checked": report.checked if report else 0}))
'''


@pytest.mark.parametrize("kind", kind_params("read-only"))
def test_reading_and_verifying_any_kind_never_writes(tmp_path, kind):
    """Every kind of the catalogue: opening it read-only, reading every sample and verify()
    open no file for writing, map nothing writable and change no file or time stamp."""
    _never_writes(tmp_path, kind, False)


@pytest.mark.parametrize("kind", kind_params("checksums"))
def test_reading_and_verifying_any_kind_with_checksums_never_writes(tmp_path, kind):
    """The same for every kind that records checksums, built with ``checksum=True``."""
    _never_writes(tmp_path, kind, True)


def _never_writes(tmp_path, kind, checksum):
    k, path = CATALOGUE[kind], tmp_path / "m"
    options = {"checksum": True} if checksum else {}
    k.build(path, k.samples(9), **options)
    before = files_of(path)
    mtimes = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    tests = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", CATALOGUE_CHILD, kind, str(path), tests, "9"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["writes"] == [] and report["same"] and report["verified"] is (True if k.verifiable else None), report
    assert report["checked"] == (9 * len(k.maps) if checksum else 0)
    assert files_of(path) == before
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == mtimes
