"""Never wrong data: one version per open, every invariant checked (issue "Never wrong data").

Each race is made deterministic by a hook in the read seam (``reads.LocalMapFiles``): right
after the open has read one file of the map, a writer replaces, upgrades or rewrites the
map at the same path; the open must then return the old map or the new one, whole, and
never raise. Each of these tests fails on the library before the read seam (files opened
one by one by path). Then one test per invariant that open or a read checks.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from typing import Any, Callable, List, Tuple

import numpy as np
import pytest

from mmap_ninja import megatron, reads
from mmap_ninja import numpy as np_ninja
from mmap_ninja.errors import MapFormatError
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import CATALOGUE, MEGATRON_PREFIX, Kind, kind_params

# Right after the open has read this file of a map (with this method of the read seam), the
# map is rebuilt at the same path: the file that fixes what the rest of the files mean (the
# samples' ends; a same-shape map's dtype; a corpus's index). Every kind of the catalogue has one.
RACE_AFTER = {
    "ragged_flat": ("view", "ends/data.ninja"),
    "ragged_nested": ("view", "ends/data.ninja"),
    "strings": ("view", "ends/data.ninja"),
    "strings_zstd": ("view", "ends/data.ninja"),
    "numpy": ("read", "dtype.ninja"),
    "records": ("view", "image/ends/data.ninja"),
    "megatron": ("view", MEGATRON_PREFIX + ".idx"),
}
OLD_COUNT, NEW_COUNT, NEW_FIRST = 3, 4, 1000  # the rebuilt map: other samples, and another count


def test_every_kind_of_the_catalogue_is_raced():
    assert sorted(RACE_AFTER) == sorted(CATALOGUE), "name the file after which a rebuild races the open of a new kind"


def versions_read(k: Kind, path: Path) -> Tuple[List[Any], List[Any]]:
    """Every sample of one open of the map: by index, and as one batch."""
    m = k.open(path, False)
    try:
        return [k.read(m, i) for i in range(len(m))], k.rows(m[:])
    finally:
        getattr(m, "close", lambda: None)()


def same_samples(k: Kind, got: List[Any], want: List[Any]) -> bool:
    return len(got) == len(want) and all(k.equal(g, w) for g, w in zip(got, want))


def same(got: List[Any], want: List[Any]) -> bool:
    """Arrays of the same shapes and values (the races below on one kind)."""
    return len(got) == len(want) and all(np.asarray(g).shape == w.shape and np.array_equal(g, w) for g, w in zip(got, want))


def once_after(monkeypatch, method: str, matches: Callable[[Path], bool], action: Callable[[], None]) -> List[bool]:
    """Run ``action`` once, right after the seam's ``method`` handled a file that ``matches``."""
    fired: List[bool] = []
    original = getattr(reads.LocalMapFiles, method)

    def hooked(self, name, *args, **kwargs):
        result = original(self, name, *args, **kwargs)
        if not fired and matches(self.file(name)):
            fired.append(True)
            action()
        return result

    monkeypatch.setattr(reads.LocalMapFiles, method, hooked)
    return fired


# --- one version per open ---------------------------------------------------------------------------


@pytest.mark.parametrize("handles", ["directory descriptors", "paths (no dir_fd, as on Windows)"])
@pytest.mark.parametrize("kind", kind_params("integrity"))
def test_a_rebuild_during_an_open_gives_the_old_or_the_new_map(tmp_path, monkeypatch, kind, handles):
    """The issue's repro: right after ends/ (for a same-shape map: its dtype) was read, the
    map is rebuilt at the same path. The open used to mix both maps ([1000, 1001, ...]).
    Without directory descriptors, the open is checked against the directory's identity."""
    if handles.startswith("paths"):
        monkeypatch.setattr(reads, "_DIRECTORY", 0)
    k, path = CATALOGUE[kind], tmp_path / "m"
    old, new = k.samples(OLD_COUNT), k.samples(NEW_COUNT, NEW_FIRST)
    k.build(path, old)
    method, target = RACE_AFTER[kind]
    fired = once_after(monkeypatch, method, lambda p: str(p) == str(path / target), lambda: k.build(path, new))
    by_index, batch = versions_read(k, path)
    assert fired
    assert (same_samples(k, by_index, new) and same_samples(k, batch, new)) or (same_samples(k, by_index, old) and same_samples(k, batch, old)), \
        (by_index, batch)


@pytest.mark.parametrize("step", ["shapes_are_flat.ninja", "starts/shape.ninja"])
def test_an_upgrade_of_the_shapes_layout_during_an_open_gives_the_old_or_the_new_map(tmp_path, monkeypatch, step):
    """An append of a 2-D sample to a map of 1-D samples swaps in a map with nested shapes;
    an open in between used to raise a spurious MapFormatError."""
    path = tmp_path / "m"
    old = [np.arange(3), np.arange(2)]
    RaggedMmap.from_lists(path, old)
    new_sample = np.arange(6).reshape(2, 3)
    fired = once_after(monkeypatch, "read", lambda p: str(p) == str(path / step), lambda: RaggedMmap(path).append(new_sample))
    got = RaggedMmap(path)[:]
    assert fired
    assert same(got, old) or same(got, old + [new_sample]), got


def test_refresh_picks_up_a_rebuilt_map_of_the_same_length(tmp_path):
    path = tmp_path / "m"
    RaggedMmap.from_lists(path, [np.arange(3), np.arange(2)])
    m = RaggedMmap(path, mode="r")
    RaggedMmap.from_lists(path, [np.arange(3) + 10, np.arange(2) + 10])
    assert m.refresh() == 2
    assert np.array_equal(m[0], np.arange(3) + 10) and np.array_equal(m[1], np.arange(2) + 10)


def test_a_megatron_rewrite_during_an_open_gives_the_old_or_the_new_corpus(tmp_path, monkeypatch):
    prefix = tmp_path / "c"
    old = [np.full(4, 1, np.uint16)] * 3
    new = [np.full(3, 1001, np.uint16), np.full(9, 1001, np.uint16)]
    megatron.write(prefix, old)
    fired = once_after(monkeypatch, "view", lambda p: p.name == "c.idx", lambda: megatron.write(prefix, new))
    got = list(megatron.open(prefix))
    assert fired
    assert same(got, new) or same(got, old), got


def test_a_roll_back_never_cuts_what_a_reader_mapped(tmp_path):
    """A dataset's reader maps a field up to the dataset's count (``open_spans(count=...)``);
    a roll-back cuts the field to that count, never below: reading all it mapped is safe."""
    from mmap_ninja import layout

    path = tmp_path / "f"
    RaggedMmap.from_lists(path, [np.arange(1000)] * 3)
    RaggedMmap(path).extend([np.arange(100000)] * 4)  # a field ahead of its dataset (3 records)
    view = layout.open_spans(path, "ragged", count=3)
    layout.roll_back(path, 3)
    assert int(np.asarray(view.data).sum()) == 3 * int(np.arange(1000).sum())  # a SIGBUS would end the run
    assert len(RaggedMmap(path)) == 3


# --- invariants checked at open or at read -------------------------------------------------------


def test_a_start_moved_by_one_byte_is_an_error_not_another_string(tmp_path):
    path = tmp_path / "s"
    StringsMmap.from_strings(path, ["hello", "world", "again"])
    starts = path / "starts" / "data.ninja"
    raw = bytearray(starts.read_bytes())
    raw[8:16] = struct.pack("<q", 6)  # string 1 now "orld"
    starts.write_bytes(bytes(raw))
    m = StringsMmap(path)
    for read in (lambda: m[1], lambda: m[0], lambda: m[np.int64(1)], lambda: m[:], lambda: list(m), lambda: m[[1]], lambda: m[-2]):
        with pytest.raises(MapFormatError, match=r"starts.*sample (0|1)"):
            read()
    with pytest.raises(MapFormatError):  # offsets are checked by chunks of 4096 samples: this one is refused whole
        m[2]


def test_padded_checks_what_indexing_checks(tmp_path):
    path = tmp_path / "r"
    RaggedMmap.from_lists(path, [np.arange(3), np.arange(4), np.arange(2)])
    table = path / "shapes" / "data.ninja"
    raw = bytearray(table.read_bytes())
    raw[8:16] = struct.pack("<q", 2)  # sample 1 recorded with 2 elements, its offsets say 4
    table.write_bytes(bytes(raw))
    m = RaggedMmap(path)
    for read in (lambda: m[1], lambda: m.padded([0, 1])):
        with pytest.raises(MapFormatError, match="sample 1"):
            read()


def test_an_empty_sample_cannot_take_its_neighbours_shape(tmp_path):
    path = tmp_path / "r"
    samples = [np.zeros((2, 0, 3)), np.zeros((0, 3)), np.ones((2, 2))]
    RaggedMmap.from_lists(path, samples)
    starts = path / "shapes" / "starts" / "data.ninja"
    raw = bytearray(starts.read_bytes())
    raw[8:16] = struct.pack("<q", 0)  # sample 1's shape now begins at sample 0's: (2, 0, 0, 3)
    starts.write_bytes(bytes(raw))
    m = RaggedMmap(path)
    for read in (lambda: m[1], lambda: m[:], lambda: m[[1, 2]]):
        with pytest.raises(MapFormatError, match="shape of sample [01]"):  # the damage lies between them
            read()


@pytest.mark.parametrize("spelling", [">i2", "<i2", "i2", "S2", "i1,i1", "(2,)f2", "bytes", "int", "Int16", "(((", "[('a', 'i1')]", "int16 ", "M8"])
@pytest.mark.parametrize("kind", ["ragged", "numpy", "offsets"])
def test_dtype_must_be_exactly_a_dtype_name(tmp_path, kind, spelling):
    path = tmp_path / "m"
    if kind == "numpy":
        np_ninja.from_ndarray(path, np.arange(6, dtype=np.int16).reshape(3, 2))
        target, read = path / "dtype.ninja", lambda: np_ninja.open_existing(path)
    else:
        RaggedMmap.from_lists(path, [np.arange(3, dtype=np.int16)] * 2)
        target = path / ("dtype.ninja" if kind == "ragged" else "starts/dtype.ninja")
        read = lambda: RaggedMmap(path)[:]  # noqa: E731
    target.write_bytes(spelling.encode())
    with pytest.raises(MapFormatError, match="dtype") as caught:
        read()
    assert str(target) in str(caught.value)


def test_a_changed_megatron_dtype_code_is_an_error(tmp_path):
    prefix = tmp_path / "c"
    megatron.write(prefix, [np.arange(5, dtype=np.uint16), np.arange(7, dtype=np.uint16)])
    idx = Path(str(prefix) + ".idx")
    raw = bytearray(idx.read_bytes())
    raw[17] = 1  # uint16 -> uint8: the tokens would be read as bytes
    idx.write_bytes(bytes(raw))
    with pytest.raises(MapFormatError, match=str(idx)):
        megatron.open(prefix)


# --- the read seam: no module reads a map's files around it ------------------------------------

SRC = Path(__file__).parent.parent / "src" / "mmap_ninja"
# Calls that read files by path (or map them). Path methods by their names.
READING_CALLS = {"open", "os.open", "os.stat", "os.lstat", "os.listdir", "os.scandir", "os.walk", "mmap.mmap", "np.memmap",
                 "np.fromfile", "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.getsize", "builtins.open"}
PATH_METHODS = {"exists", "is_dir", "is_file", "iterdir", "glob", "rglob", "read_bytes", "read_text", "stat"}
# Where such calls are allowed, and why: none of them reads a map's files.
ALLOWED = {
    "reads.py": "the seam itself",
    "fs.py": "the write seam (and its lock file)",
    "convert.py": "reads the user's source files (images, texts), not maps",
    "demo.py": "writes and reads its own demo inputs",
    "dask.py": "a build's part directories and its liveness file",
    "torch.py": "no map files",
    "parallel.py": "no map files",
    "remote_cache.py": "its own cache files (fetched pages of remote objects), not maps",
}
ALLOWED_CALLS = {
    ("publish.py", "os.scandir"): "link_tree lists the map it hard-links, under the writer lock",
    ("publish.py", "exists"): "whether a build's target path is free",
    ("publish.py", "is_dir"): "whether a build's target path is free",
    ("publish.py", "iterdir"): "whether a build's target path is empty",
    ("publish.py", "glob"): "the partial builds beside a map, not its files",
    ("publish.py", "os.walk"): "fsyncs every file of a build's own private directory",
    ("megatron_read.py", "os.path.isfile"): "which of PREFIX / PREFIX.idx names the corpus",
    ("megatron_write.py", "os.path.getsize"): "the size report of inspect()",
    ("megatron_write.py", "os.path.isfile"): "the size report of inspect()",
    ("megatron_write.py", "glob"): "partial files of killed writers beside the corpus",
    ("megatron_write.py", "is_dir"): "whether a leftover is a folder, and from_ragged's optional extras",
    ("megatron_write.py", "exists"): "to_ragged's target path",
    ("megatron_write.py", "iterdir"): "to_ragged's target path",
    ("megatron_write.py", "builtins.open"): "write() creates its own temporary files",
    ("numpy.py", "exists"): "extend_dir: whether there is a map (the header is read through the seam)",
    ("generic.py", "exists"): "whether there is a map at all",
    ("records.py", "exists"): "whether there is a records map at all (records.json and fields are read through the seam)",
    ("cli_convert.py", "exists"): "the output path of convert / export",
    ("cli_convert.py", "is_dir"): "the output path of convert / export",
    ("cli_convert.py", "iterdir"): "the output path of convert / export",
    ("cli_convert.py", "os.path.exists"): "the output prefix of export",
    ("cli.py", "os.open"): "opens os.devnull",
    ("codecs.py", "read_text"): "ondisk.read_text(files, name): through a MapFiles handle",
    ("images.py", "read_text"): "ondisk.read_text(files, name): through a MapFiles handle",
    ("images.py", "open"): "Pillow's Image.open on bytes in memory, and from_files reading the user's image files, not maps",
}


HANDLES = {"files", "table", "table_files", "flat_files", "nested_files", "shapes_files"}  # names of MapFiles handles


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                if f.id in READING_CALLS:
                    yield f.id, node.lineno
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in HANDLES:
                continue  # a read through the seam
            elif isinstance(f, ast.Attribute):
                parts = [f.attr]
                value = f.value
                while isinstance(value, ast.Attribute):
                    parts.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name):
                    parts.append(value.id)
                dotted = ".".join(reversed(parts))
                yield (dotted if dotted in READING_CALLS or f.attr not in PATH_METHODS else f.attr), node.lineno


def test_every_read_of_a_map_goes_through_the_read_seam():
    found = []
    for module in sorted(SRC.glob("*.py")):
        if module.name in ALLOWED:
            continue
        for name, line in _calls(ast.parse(module.read_text())):
            if (name in READING_CALLS or name in PATH_METHODS) and (module.name, name) not in ALLOWED_CALLS:
                found.append(f"{module.name}:{line}: {name}()")
    assert not found, "reads around mmap_ninja.reads (use a MapFiles handle):\n" + "\n".join(found)


# --- a race under reader processes: rebuild, upgrade, roll back in a loop ------------------------

READER = r'''
import sys, time
import numpy as np
from mmap_ninja import layout
from mmap_ninja.errors import MapFormatError
from mmap_ninja.ragged import RaggedMmap

path, seconds, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
reads = wrong = errors = 0
deadline = time.time() + seconds
while time.time() < deadline:
    try:
        if mode == "map":  # a plain reader: the whole committed map
            samples = RaggedMmap(path)[:]
        else:  # a dataset's reader: no more than the dataset committed (7 samples)
            view = layout.open_spans(path, "ragged", count=7)
            samples = [np.asarray(view.data[s:e]) for s, e in zip(view.starts.tolist(), view.ends.tolist())]
            samples[6] = samples[6].reshape(2, 3)
    except MapFormatError as e:
        errors += 1
        print("error:", e, file=sys.stderr)
        continue
    reads += 1
    v = samples[0].reshape(-1)[0]
    ok = len(samples) >= 6 and all(s.size and (s == v).all() for s in samples)
    ok = ok and [s.shape for s in samples[:6]] == [(i + 1,) for i in range(6)]
    ok = ok and all(s.shape == (2, 3) for s in samples[6:7]) and all(s.shape == (5000,) for s in samples[7:])
    if not ok:
        wrong += 1
        print("wrong:", [s.tolist() for s in samples], file=sys.stderr)
print(reads, wrong, errors)
'''


def _race(tmp_path, mode: str, rounds: int, seconds: float) -> None:
    import subprocess
    import sys

    from mmap_ninja import layout

    path = tmp_path / "m"

    def version(v: int) -> None:
        RaggedMmap.from_lists(path, [np.full(i + 1, v, np.int64) for i in range(6)])  # rebuild: a swap
        RaggedMmap(path).append(np.full((2, 3), v, np.int64))  # upgrade of the shapes layout: a swap

    version(1)
    env = dict(__import__("os").environ, PYTHONPATH=str(SRC.parent))
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(path), str(seconds), mode], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    v = 1
    try:
        for _ in range(rounds):
            v += 1
            if mode == "map":
                version(v)
            else:  # a field gets ahead of its dataset (a killed append), and is rolled back
                RaggedMmap(path).extend([np.full(5000, 1, np.int64)] * 3)
                layout.roll_back(path, 7)
        outs = [r.communicate(timeout=seconds + 120) for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
    for r, (out, err) in zip(readers, outs):
        assert r.returncode == 0, f"a reader died ({r.returncode}): {err[-2000:]}"
        reads, wrong, errors = map(int, out.split())
        assert reads > 0 and wrong == 0 and errors == 0, f"{reads} reads, {wrong} wrong, {errors} errors:\n{err[-2000:]}"


@pytest.mark.parametrize("mode", ["map", "dataset"])
def test_readers_racing_rebuilds_upgrades_and_roll_backs(tmp_path, mode):
    _race(tmp_path, mode, rounds=40, seconds=2)


@pytest.mark.stress
@pytest.mark.parametrize("mode", ["map", "dataset"])
def test_readers_racing_rebuilds_upgrades_and_roll_backs_long(tmp_path, mode):
    _race(tmp_path, mode, rounds=3000, seconds=60)


def test_a_damaged_shape_is_found_in_its_chunk_and_at_a_chunk_boundary(tmp_path):
    """Nested shape tuples are checked once per chunk of samples (vectorised), not per read:
    the check must still see damage anywhere in the chunk read, and across its edges."""
    from mmap_ninja.spans import CHUNK

    path = tmp_path / "r"
    samples = [np.zeros((1, i % 3, 2)) if i % 2 else np.zeros((i % 4, 1)) for i in range(CHUNK + 600)]
    RaggedMmap.from_lists(path, samples)
    starts = path / "shapes" / "starts" / "data.ninja"
    clean = starts.read_bytes()
    # sample CHUNK's tuple is where chunk 0's last one must end and chunk 1's first one begin
    for damaged, read_at in ((CHUNK + 301, CHUNK + 500), (CHUNK, CHUNK - 1), (CHUNK, CHUNK + 599)):
        raw = bytearray(clean)
        (value,) = struct.unpack_from("<q", raw, 8 * damaged)
        struct.pack_into("<q", raw, 8 * damaged, value - 1)  # its shape now begins inside its neighbour's
        starts.write_bytes(bytes(raw))
        m = RaggedMmap(path)
        if damaged > CHUNK:
            assert m[5].shape == samples[5].shape  # chunk 0 is untouched: it still reads
        with pytest.raises(MapFormatError, match=rf"shape of sample ({damaged - 1}|{damaged})\b") as caught:
            m[read_at]
        assert str(path / "shapes") in str(caught.value)
        with pytest.raises(MapFormatError, match="shape of sample"):
            m[read_at - 3 : read_at + 1]
