"""Memory: opening a map reads none of its data, and iterating over a map larger than the
process may allocate keeps its anonymous memory flat.

How it is measured: each check runs in a fresh child interpreter (so nothing else from the
test run is in its memory) that reads its own /proc/self/status. ``RssAnon`` is the memory
only this process holds (heap, copies of data); ``RssFile`` is file pages mapped into it,
which the kernel can drop and re-read at any time. A map read through memory maps grows
RssFile, never RssAnon. The iterating child also lowers its RLIMIT_DATA (which limits heap
and private anonymous mappings, not shared read-only file mappings) to less than the map's
size above what it already uses, so a reader that copied the map into memory would fail
with MemoryError rather than merely measure badly. The child checksums every sample it
reads, so it cannot pass without reading the data.

mmap_ninja 0.9.0 also maps its files, but its StringsMmap maps the whole data file
writable and its pickles copy data; these tests pin the property for every kind of map of
the catalogue (``conftest.py``), each opened as the catalogue opens it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import MEGATRON_PREFIX, kind_params

MB = 1 << 20

CHILD_PRELUDE = r'''
import json, resource, sys
import numpy as np
from mmap_ninja import generic, numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)
'''

OPEN_CHILD = CHILD_PRELUDE + r'''
kind, path = sys.argv[1], sys.argv[2]
before_anon, before_file = status("RssAnon"), status("RssFile")
# reads the length and sample 0 (small); the last sample is the huge one
if kind == "numpy":
    m = np_ninja.open_existing(path)
    first = np.array(m[0][:4])
elif kind == "ragged_flat":
    m = RaggedMmap(path)
    first = np.array(m[0])
else:
    m = StringsMmap(path, mode="rb")
    first = m[0]
any_map = generic.open_existing(path, mode="r")
print(json.dumps({"anon": status("RssAnon") - before_anon, "file": status("RssFile") - before_file,
                  "len": len(m), "len_generic": len(any_map), "first": first if isinstance(first, str) else first.tolist()}))
'''

ITERATE_CHILD = CHILD_PRELUDE + r'''
kind_name, path, headroom, tests = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, tests)
from conftest import CATALOGUE  # opens the map as every guarantee test does
m = CATALOGUE[kind_name].open(path, False)

def value(sample):
    """What the test sums for a sample: every element, a string's bytes and last character."""
    if isinstance(sample, dict):
        return sum(value(v) for v in sample.values())
    if isinstance(sample, str):
        return len(sample.encode()) + ord(sample[-1])
    return int(np.asarray(sample).sum(dtype=np.int64))

# from here on, the process may allocate at most `headroom` more bytes of heap/anonymous memory
resource.setrlimit(resource.RLIMIT_DATA, (status("VmData") + headroom, resource.RLIM_INFINITY))
baseline = status("RssAnon")
peak, checksum, count = 0, 0, 0
for sample in m:
    checksum += value(sample)
    count += 1
    if count % 256 == 0:
        peak = max(peak, status("RssAnon") - baseline)
peak = max(peak, status("RssAnon") - baseline)
print(json.dumps({"peak_anon": peak, "file": status("RssFile"), "checksum": checksum, "count": count}))
'''


def run_child(code: str, *args: str) -> Dict:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def scratch(tmp_path):
    """A folder for big maps, removed right after the test (pytest would keep it around)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


# --- opening reads nothing ------------------------------------------------------------------------


def _grow_sparse(kind: str, path: Path, big_bytes: int) -> None:
    """Make the last sample of a small map ``big_bytes`` long, as a sparse file: no data is
    written, so the test costs nothing, yet a reader that read the data would need it all."""
    data = path / "data.ninja"
    if kind == "numpy":  # rows of 1 MB; the file becomes big_bytes // MB rows
        rows = big_bytes // MB
        os.truncate(data, rows * MB)
        (path / "shape.ninja").write_bytes(struct.pack("<2Q", rows, MB))
        return
    itemsize = 1 if kind == "strings" else 4
    elements = big_bytes // itemsize
    ends = np.fromfile(path / "ends" / "data.ninja", "<i8")
    start = int(np.fromfile(path / "starts" / "data.ninja", "<i8")[-1])
    ends[-1] = start + elements
    ends.tofile(path / "ends" / "data.ninja")
    os.truncate(data, (start + elements) * itemsize)
    if kind == "ragged_flat":
        (path / "shape.ninja").write_bytes(struct.pack("<Q", start + elements))
        for table in ("flattened_shapes", "shapes"):
            values = np.fromfile(path / table / "data.ninja", "<i8")
            values[-1] = elements
            values.tofile(path / table / "data.ninja")


# The kinds whose files _grow_sparse knows how to edit by hand (the others share these layouts).
@pytest.mark.parametrize("kind", kind_params("memory", ["ragged_flat", "strings", "numpy"]))
def test_opening_a_4gb_map_reads_none_of_it(scratch, kind):
    path = scratch / kind
    if kind == "numpy":
        np_ninja.from_ndarray(path, np.full((1, MB), 7, np.uint8))
    elif kind == "ragged_flat":
        RaggedMmap.from_lists(path, [np.arange(3, dtype=np.float32), np.arange(5, dtype=np.float32)])
    else:
        StringsMmap.from_strings(path, ["first", "second"])
    _grow_sparse(kind, path, 4 << 30)
    assert (path / "data.ninja").stat().st_size >= 4 << 30
    assert (path / "data.ninja").stat().st_blocks * 512 < 16 * MB  # sparse: nothing on disk
    result = run_child(OPEN_CHILD, kind, path)
    assert result["anon"] < 8 * MB and result["file"] < 8 * MB, result
    if kind == "numpy":
        assert result["len"] == 4096 and result["first"] == [7, 7, 7, 7]
    elif kind == "ragged_flat":
        assert result["len"] == 2 and result["first"] == [0, 1, 2]
    else:
        assert result["len"] == 2 and result["first"] == "first"
    assert result["len_generic"] == result["len"]


# --- iterating keeps anonymous memory flat -------------------------------------------------------------


def _text(i: int) -> str:
    return "é" * 2048 if i % 2 else "ab" * 2048  # 4 KB of UTF-8


def _build_for_iteration(kind: str, path: Path, total_bytes: int) -> int:
    """A map of ``kind`` holding about ``total_bytes`` of samples (written batch by batch, not
    sparse); returns the checksum the child must find. Samples are big, unlike the catalogue's,
    so that the map outgrows what the child may allocate. Every kind of the catalogue has one."""
    if kind == "ragged_flat":  # samples of 64 KB
        count = total_bytes // (64 << 10)
        RaggedMmap.from_generator(path, (np.full(16384, i % 1000, np.int32) for i in range(count)), batch_size=256)
        return sum(16384 * (i % 1000) for i in range(count))
    if kind == "ragged_nested":  # 32 KB images
        count = total_bytes // (32 << 10)
        RaggedMmap.from_generator(path, (np.full((64, 128, 4), i % 200, np.uint8) for i in range(count)), batch_size=256)
        return sum(32768 * (i % 200) for i in range(count))
    if kind in ("strings", "strings_zstd"):  # strings of 4 KB of UTF-8 (compressed: far less on disk, as much once read)
        count = total_bytes // 4096
        StringsMmap.from_generator(path, (_text(i) for i in range(count)), batch_size=1024, zstd_level=3 if kind == "strings_zstd" else None)
        return sum(4096 + ord("é" if i % 2 else "b") for i in range(count))
    if kind == "numpy":  # rows of 64 KB
        count = total_bytes // (64 << 10)
        np_ninja.from_generator(path, (np.full(65536, i % 100, np.uint8) for i in range(count)), batch_size=256)
        return sum(65536 * (i % 100) for i in range(count))
    if kind == "records":  # 32 KB images, a label and a 4 KB caption
        from mmap_ninja import RecordsMmap

        count = total_bytes // (36 << 10)
        records = ({"image": np.full((64, 128, 4), i % 200, np.uint8), "label": np.int64(i), "caption": _text(i)} for i in range(count))
        RecordsMmap.from_generator(path, records, batch_size=256, schema={"image": "ragged", "label": "numpy", "caption": "strings"}).close()
        return sum(32768 * (i % 200) + i + 4096 + ord("é" if i % 2 else "b") for i in range(count))
    if kind == "megatron":  # sequences of 32768 tokens (64 KB)
        from mmap_ninja import megatron

        count = total_bytes // (64 << 10)
        path.mkdir(parents=True)
        megatron.write(path / MEGATRON_PREFIX, (np.full(32768, i % 1000, np.uint16) for i in range(count)), dtype=np.uint16, batch_size=256).close()
        return sum(32768 * (i % 1000) for i in range(count))
    raise AssertionError(f"no big map of kind {kind!r}: add one to _build_for_iteration")


def _check_iteration(scratch: Path, kind: str, total_bytes: int) -> None:
    path = scratch / kind
    expected = _build_for_iteration(kind, path, total_bytes)
    headroom = total_bytes // 4  # the process may not allocate even a quarter of the map
    result = run_child(ITERATE_CHILD, kind, path, headroom, Path(__file__).resolve().parent)
    assert result["checksum"] == expected  # every sample was read, and right
    assert result["peak_anon"] < min(32 * MB, headroom), result
    shutil.rmtree(path)


@pytest.mark.parametrize("kind", kind_params("memory"))
def test_iterating_a_map_keeps_anonymous_memory_flat(scratch, kind):
    _check_iteration(scratch, kind, 192 * MB)


@pytest.mark.stress
@pytest.mark.parametrize("kind", kind_params("memory"))
def test_iterating_a_2gb_map_keeps_anonymous_memory_flat(scratch, kind):
    _check_iteration(scratch, kind, 2048 * MB)
