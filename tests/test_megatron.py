"""Megatron-LM / fairseq corpora: reading, writing, bad files, the CLI, and megatron-core itself.

The interop tests run megatron-core's own IndexedDataset and IndexedDatasetBuilder in one
subprocess (tests/peer/megatron_job.py) for the whole module; they skip, saying why, only
where megatron-core cannot be imported.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, megatron
from mmap_ninja.cli import HEALTHY, UNHEALTHY, inspect_map, main
from mmap_ninja.errors import MapFormatError

PEER_SCRIPT = Path(__file__).resolve().parent / "peer" / "megatron_job.py"
SRC = str(Path(megatron.__file__).resolve().parents[1])


def corpus(count: int, dtype: str = "int32", seed: int = 0, high: int = 40) -> List[np.ndarray]:
    """Token sequences of 0..high-1 tokens over the whole range of ``dtype``."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    return [rng.integers(info.min, info.max, int(rng.integers(0, high)), dtype=dtype, endpoint=True) for _ in range(count)]


def same(got: List[np.ndarray], expected: List[np.ndarray], dtype: str) -> None:
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert type(g) is np.ndarray and g.dtype == np.dtype(dtype) and g.ndim == 1, f"sequence {i}: {type(g)} {g.dtype} {g.shape}"
        assert np.array_equal(g, e), f"sequence {i} differs"


# -- the reading API ---------------------------------------------------------------------------


def test_write_then_read_every_dtype(tmp_path) -> None:
    for dtype in ("uint8", "int8", "int16", "int32", "int64", "uint16"):
        seqs = corpus(300, dtype, seed=len(dtype))
        m = megatron.write(tmp_path / dtype, seqs, dtype=dtype, batch_size=64)
        assert m.dtype == np.dtype(dtype) and m.format == "megatron" and len(m) == 300
        same(list(m), seqs, dtype)
        same([m[i] for i in range(300)], seqs, dtype)
        assert np.array_equal(m.document_indices, np.arange(301)) and m.sequence_modes is None
    for dtype in ("float32", "float64"):
        seqs = [np.random.default_rng(1).standard_normal(n).astype(dtype) for n in (0, 3, 7)]
        m = megatron.write(tmp_path / dtype, seqs)
        assert m.dtype == np.dtype(dtype)
        same(list(m), seqs, dtype)


def test_indexing_like_a_ragged_map(tmp_path) -> None:
    seqs = corpus(100, "uint16")
    m = megatron.write(tmp_path / "c", seqs)
    view = m[7]
    assert not view.flags.writeable and not view.flags.owndata  # a view of the mapped .bin
    assert np.array_equal(m[-1], seqs[-1]) and np.array_equal(m[np.int64(3)], seqs[3])
    for index, expected in [(slice(5, 40, 3), seqs[5:40:3]), ([3, 1, 3], [seqs[3], seqs[1], seqs[3]]),
                            (np.array([-1, 0]), [seqs[-1], seqs[0]]), (np.arange(100) % 7 == 0, seqs[::7])]:
        same(m[index], expected, "uint16")
        same(m.get_batch(index), expected, "uint16")
    assert m[5:5] == [] and m.get_multiple([2]) [0].tolist() == seqs[2].tolist()
    with pytest.raises(IndexError):
        m[100]
    with pytest.raises(IndexError):
        m[[0, 100]]
    with pytest.raises(TypeError):
        m[1.5]
    padded, lengths = m.padded([0, 1, 2], pad_value=-1 % 65536, max_len=10)
    for row, length, s in zip(padded, lengths, seqs[:3]):
        assert length == min(len(s), 10) and np.array_equal(row[:length], s[:length]) and (row[length:] == 65535).all()


def test_documents_and_modes(tmp_path) -> None:
    seqs = corpus(10, "int32")
    m = megatron.write(tmp_path / "c", seqs, document_ends=[3, 3, 9, 10], sequence_modes=[i % 3 for i in range(10)])
    assert m.document_indices.dtype == np.int64 and m.document_indices.tolist() == [0, 3, 3, 9, 10]
    assert m.num_documents == 4
    same(m.document(0), seqs[:3], "int32")
    assert m.document(1) == []
    same(m.document(-1), seqs[9:], "int32")
    with pytest.raises(IndexError):
        m.document(4)
    assert m.sequence_modes.dtype == np.int8 and m.sequence_modes.tolist() == [i % 3 for i in range(10)]


def test_pickles_by_reference_and_feeds_map_dataset(tmp_path) -> None:
    seqs = corpus(50, "int64")
    m = megatron.write(tmp_path / "c", seqs)
    blob = pickle.dumps(m)
    assert len(blob) < 500  # the prefix, not the tokens
    same(list(pickle.loads(blob)), seqs, "int64")
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'mmap_ninja[torch]')")
    from mmap_ninja.torch import MapDataset, pad_collate

    loader = torch.utils.data.DataLoader(MapDataset(m), batch_size=8, collate_fn=pad_collate)
    padded, lengths = next(iter(loader))
    assert lengths.tolist() == [len(s) for s in seqs[:8]]
    assert all(torch.equal(padded[i, : len(s)], torch.from_numpy(s)) for i, s in enumerate(seqs[:8]))


def test_views_outlive_the_map(tmp_path) -> None:
    """Megatron-LM's reader unmaps in __del__ while views live (a segfault); ours must not."""
    megatron.write(tmp_path / "c", [np.arange(1000, dtype=np.int64) + i for i in range(20)])
    code = f"""
import gc, sys
sys.path.insert(0, {SRC!r})
from mmap_ninja import megatron
m = megatron.open({str(tmp_path / 'c')!r})
views = [m[3], m[[5]][0], m.document(7)[0]]
m.close()
del m
gc.collect()
print(int(views[0].sum()), int(views[1][0]), int(views[2][-1]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    assert done.stdout.split() == [str(sum(range(1000)) + 3000), "5", "1006"]


def test_accepts_a_prefix_or_either_file(tmp_path) -> None:
    megatron.write(tmp_path / "c", [np.arange(3)])
    for name in ("c", "c.idx", "c.bin"):
        assert len(megatron.open(tmp_path / name)) == 1
    with pytest.raises(FileNotFoundError, match="no Megatron corpus"):
        megatron.open(tmp_path / "nothing")


# -- fairseq's index and the dtype codes --------------------------------------------------------


def index_bytes(code: int, lengths, itemsize: int, documents=None, modes=None, fairseq: bool = False) -> bytes:
    """An index laid out by the spec in megatron.py's docstring, written here independently."""
    lengths = np.asarray(lengths, "<i4")
    pointers = (np.cumsum(lengths.astype(np.int64)) - lengths) * itemsize
    out = b"MMIDIDX\x00\x00" + struct.pack("<QBQ", 1, code, len(lengths))
    if not fairseq:
        documents = np.arange(len(lengths) + 1) if documents is None else np.asarray(documents)
        out += struct.pack("<Q", len(documents))
    out += lengths.tobytes() + pointers.astype("<i8").tobytes()
    if not fairseq:
        out += np.asarray(documents, "<i8").tobytes()
        if modes is not None:
            out += np.asarray(modes, np.int8).tobytes()
    return out


def make(tmp_path: Path, name: str, idx: bytes, data: bytes) -> str:
    (tmp_path / f"{name}.idx").write_bytes(idx)
    (tmp_path / f"{name}.bin").write_bytes(data)
    return str(tmp_path / name)


@pytest.mark.parametrize("fairseq", [False, True])
def test_dtype_codes(tmp_path, fairseq: bool) -> None:
    table = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float64" if fairseq else "float32", 8: "uint16"}
    if fairseq:
        table.update({9: "uint32", 10: "uint64"})
    for code, name in table.items():
        seqs = [np.arange(n, dtype=name) for n in (2, 0, 5)]
        prefix = make(tmp_path, f"{code}", index_bytes(code, [2, 0, 5], np.dtype(name).itemsize, fairseq=fairseq), b"".join(s.tobytes() for s in seqs))
        m = megatron.open(prefix)
        assert m.dtype == np.dtype(name), f"code {code}"
        assert m.format == ("fairseq" if fairseq else "megatron")
        same(list(m), seqs, name)
        if fairseq:
            assert m.document_indices.tolist() == [0, 1, 2, 3]  # one document per sequence


def test_float_codes_follow_the_data(tmp_path) -> None:
    """Code 7 is float32 to Megatron-LM, float64 to fairseq and early Megatron-LM; the .bin tells."""
    values = np.linspace(0, 1, 6)
    for code, dtype in [(7, "float64"), (6, "float32")]:
        data = values.astype(dtype)
        m = megatron.open(make(tmp_path, f"f{code}", index_bytes(code, [2, 4], data.itemsize), data.tobytes()))
        assert m.dtype == np.dtype(dtype)
        assert np.array_equal(m[1], data[2:])


def test_refuses_dtypes_without_a_megatron_code(tmp_path) -> None:
    for dtype in ("uint32", "uint64", "float16", "bool", "complex64"):
        with pytest.raises(TypeError, match=f"dtype {dtype}"):
            megatron.write(tmp_path / "c", [np.zeros(2, dtype)])
        with pytest.raises(TypeError, match=f"dtype {dtype}"):
            megatron.write(tmp_path / "c", [np.zeros(2, "int8")], dtype=dtype)
    assert not os.path.exists(tmp_path / "c.idx")


# -- bad files -----------------------------------------------------------------------------------


def good(tmp_path: Path, name: str = "c", modes=None):
    seqs = [np.arange(n, dtype=np.int32) for n in (3, 0, 4, 2)]
    idx = index_bytes(4, [3, 0, 4, 2], 4, documents=[0, 2, 4], modes=modes)
    return idx, b"".join(s.tobytes() for s in seqs), seqs


def test_a_hand_made_index_reads(tmp_path) -> None:
    idx, data, seqs = good(tmp_path)
    m = megatron.open(make(tmp_path, "c", idx, data))
    same(list(m), seqs, "int32")
    assert m.document_indices.tolist() == [0, 2, 4]
    idx, data, _ = good(tmp_path, modes=[1, 0, 1, 1])
    assert megatron.open(make(tmp_path, "m", idx, data)).sequence_modes.tolist() == [1, 0, 1, 1]


def patched(idx: bytes, offset: int, fmt: str, value) -> bytes:
    return idx[:offset] + struct.pack(fmt, value) + idx[offset + struct.calcsize(fmt):]


LENGTHS, POINTERS, DOCUMENTS = 34, 34 + 16, 34 + 48  # offsets in good()'s index


@pytest.mark.parametrize(
    "why, change, match",
    [
        ("magic", lambda i, d: (b"MMIDIDY" + i[7:], d), "magic"),
        ("version", lambda i, d: (patched(i, 9, "<Q", 2), d), "version 2"),
        ("dtype code", lambda i, d: (patched(i, 17, "<B", 11), d), "dtype code 11"),
        ("dtype code 0", lambda i, d: (patched(i, 17, "<B", 0), d), "dtype code 0"),
        ("empty .idx", lambda i, d: (b"", d), "truncated"),
        ("short header", lambda i, d: (i[:20], d), "truncated"),
        ("truncated .idx", lambda i, d: (i[:-3], d), "truncated"),
        ("extra .idx bytes", lambda i, d: (i + b"\x00\x00", d), "bytes"),
        ("huge count", lambda i, d: (patched(i, 18, "<Q", 2**62), d), "truncated"),
        ("truncated .bin", lambda i, d: (i, d[:-1]), "truncated"),
        ("empty .bin", lambda i, d: (i, b""), "truncated"),
        ("documents decrease", lambda i, d: (patched(i, DOCUMENTS + 8, "<q", 5), d), "decrease"),
        ("documents end early", lambda i, d: (patched(i, DOCUMENTS + 16, "<q", 3), d), "end at 3"),
        ("documents start late", lambda i, d: (patched(i, DOCUMENTS, "<q", 1), d), "start at 1"),
        ("no documents", lambda i, d: (patched(i, 26, "<Q", 0)[:-24], d), "no document"),
        ("last length", lambda i, d: (patched(i, LENGTHS + 12, "<i", 3), d), "truncated"),
        ("last pointer", lambda i, d: (patched(i, POINTERS + 24, "<q", -8), d), "truncated"),
    ],
)
def test_bad_files_raise_map_format_error(tmp_path, why: str, change, match: str) -> None:
    idx, data, _ = good(tmp_path)
    idx, data = change(idx, data)
    prefix = make(tmp_path, "c", idx, data)
    with pytest.raises(MapFormatError, match=match) as caught:
        megatron.open(prefix)
    assert prefix in str(caught.value), f"{why}: the message names no file: {caught.value}"
    report = inspect_map(prefix)
    assert report["health"] == UNHEALTHY and report["problems"]


@pytest.mark.parametrize(
    "why, offset, fmt, value, match",
    [
        ("pointer past the data", POINTERS + 8, "<q", 400, "outside"),
        ("negative pointer", POINTERS + 8, "<q", -4, "outside"),
        ("misaligned pointer", POINTERS + 16, "<q", 13, "multiple"),
        ("negative length", LENGTHS + 4, "<i", -2, "negative"),
        ("length past the data", LENGTHS + 8, "<i", 1000, "outside"),
    ],
)
def test_bad_sequences_raise_at_open(tmp_path, why: str, offset: int, fmt: str, value: int, match: str) -> None:
    """Pointers must be the prefix sums of the lengths (as every writer lays sequences out):
    checked for every sequence at open, the first bad one named (it used to be found only
    when read)."""
    idx, data, seqs = good(tmp_path)
    prefix = make(tmp_path, "c", patched(idx, offset, fmt, value), data)
    bad = 1 if offset in (POINTERS + 8, LENGTHS + 4) else 2
    with pytest.raises(MapFormatError) as caught:
        megatron.open(prefix)
    assert f"sequence {bad}" in str(caught.value) and str(prefix) in str(caught.value)
    assert inspect_map(prefix)["health"] == UNHEALTHY


# -- writing -------------------------------------------------------------------------------------


def test_write_errors_name_the_sample(tmp_path) -> None:
    ok = [np.arange(3)] * 5
    cases = [
        (ok + [np.zeros((2, 2))], None, ValueError, "sample 5 has shape"),
        (ok + [np.int64(4)], None, ValueError, "sample 5 has shape"),
        (ok + [np.array([1, 300])], "uint8", ValueError, "sample 5"),
        (ok + [np.array([1, -1])], "uint16", ValueError, "sample 5"),
        (ok + [np.array([1.5])], "int32", ValueError, "sample 5"),
        (ok + [["a"]], None, TypeError, "sample 5"),
        (ok + [None], None, TypeError, "sample 5"),
    ]
    megatron.write(tmp_path / "c", [np.arange(9)])
    before = {p: (tmp_path / p).read_bytes() for p in ("c.idx", "c.bin")}
    for samples, dtype, error, match in cases:
        with pytest.raises(error, match=match):
            megatron.write(tmp_path / "c", samples, dtype=dtype, batch_size=4)
        assert {p: (tmp_path / p).read_bytes() for p in ("c.idx", "c.bin")} == before, "a failed write changed the corpus"
        assert sorted(os.listdir(tmp_path)) == ["c.bin", "c.idx"], "a failed write left files behind"
    with pytest.raises(ValueError, match="document_ends ends at 4"):
        megatron.write(tmp_path / "c", ok, document_ends=[2, 4])
    with pytest.raises(ValueError, match="must not decrease"):
        megatron.write(tmp_path / "c", ok, document_ends=[3, 2, 5])
    with pytest.raises(ValueError, match="sequence_modes has 2"):
        megatron.write(tmp_path / "c", ok, sequence_modes=[0, 1])
    with pytest.raises(ValueError, match="no samples"):
        megatron.write(tmp_path / "c", [])
    assert megatron.open(tmp_path / "c")[0].tolist() == list(range(9))
    assert len(megatron.write(tmp_path / "empty", [], dtype="int32")) == 0


def test_write_takes_maps_and_casts_losslessly(tmp_path) -> None:
    seqs = corpus(40, "int64", high=20)
    small = [s % 1000 for s in seqs]
    ragged = RaggedMmap.from_lists(tmp_path / "r", small)
    m = megatron.write(tmp_path / "from_ragged", ragged, dtype="uint16", batch_size=7)
    same(list(m), [s.astype(np.uint16) for s in small], "uint16")
    again = megatron.write(tmp_path / "from_megatron", m, batch_size=9)
    same(list(again), list(m), "uint16")
    mixed = megatron.write(tmp_path / "mixed", [[1, 2], np.array([3], np.int8), (4.0,)], dtype="int16")
    assert [s.tolist() for s in mixed] == [[1, 2], [3], [4]]


def test_write_holds_one_batch(tmp_path) -> None:
    """The .bin grows while the samples are still being read: nothing waits for the end."""
    seen = []

    def samples():
        for i in range(10_000):
            if i % 1000 == 0:
                seen.append(sum(p.stat().st_size for p in tmp_path.glob("c.bin.partial-*")))
            yield np.full(10, i, np.int32)

    megatron.write(tmp_path / "c", samples(), batch_size=500)
    assert seen[0] == 0 and all(later > earlier for earlier, later in zip(seen, seen[1:])), seen


def test_progress_bar_only_when_verbose(tmp_path, capsys) -> None:
    megatron.write(tmp_path / "a", corpus(50), verbose=True)
    assert "writing corpus" in capsys.readouterr().err
    megatron.write(tmp_path / "b", corpus(50))
    assert capsys.readouterr() == ("", "")


WRITER = """
import sys, time, numpy as np
sys.path.insert(0, {src!r})
from mmap_ninja import megatron
def samples():
    for i in range(10**9):
        if i == 5000:
            open({ready!r}, "w").close()
        yield np.full(5, i, np.int32)
megatron.write({prefix!r}, samples(), batch_size=100)
"""


@pytest.mark.parametrize("existing", [False, True])
def test_a_killed_write_leaves_no_new_index(tmp_path, existing: bool) -> None:
    prefix = tmp_path / "c"
    if existing:
        megatron.write(prefix, [np.arange(4, dtype=np.int32)])
    ready = tmp_path / "ready"
    code = WRITER.format(src=SRC, ready=str(ready), prefix=str(prefix))
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while not ready.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert ready.exists(), "the writer did not start"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    if existing:
        assert megatron.open(prefix)[0].tolist() == [0, 1, 2, 3]  # the old corpus, whole
    else:
        assert not (tmp_path / "c.idx").exists() and not (tmp_path / "c.bin").exists()
    assert any(".partial-" in p.name for p in tmp_path.iterdir())  # what the killed write left...
    megatron.write(prefix, [np.arange(2)])
    assert not any(".partial-" in p.name for p in tmp_path.iterdir())  # ...the next write removes


# -- the command line ----------------------------------------------------------------------------


def run(capsys, *argv) -> tuple:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_convert_export_info(tmp_path, capsys) -> None:
    seqs = corpus(120, "uint16")
    megatron.write(tmp_path / "c", seqs, document_ends=[30, 31, 120], sequence_modes=[i % 2 for i in range(120)])
    code, out, err = run(capsys, "info", tmp_path / "c")
    assert code == 0 and "megatron" in out and "documents:     3" in out and "health:        healthy" in out
    assert "multimodal" in out and f"tokens:        {sum(map(len, seqs)):,}" in out and "median" in out
    assert inspect_map(tmp_path / "c.idx")["health"] == HEALTHY
    assert json.loads(subprocess.run([sys.executable, "-m", "mmap_ninja", "info", "--json", str(tmp_path / "c")],
                                     capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}).stdout)["samples"] == 120

    code, out, err = run(capsys, "convert", "megatron", tmp_path / "c", tmp_path / "map", "--quiet")
    assert code == 0 and "120 sequences" in out, err
    ragged = RaggedMmap(tmp_path / "map")
    same(list(ragged), seqs, "uint16")
    from mmap_ninja import numpy as np_ninja

    assert np.asarray(np_ninja.open_existing(tmp_path / "map" / "documents")).tolist() == [0, 30, 31, 120]
    assert run(capsys, "info", tmp_path / "map")[0] == 0
    assert run(capsys, "convert", "megatron", tmp_path / "c", tmp_path / "map", "--quiet")[0] == 1  # exists
    assert run(capsys, "convert", "megatron", tmp_path / "c", tmp_path / "map", "--quiet", "--overwrite")[0] == 0

    code, out, err = run(capsys, "export", "megatron", tmp_path / "map", tmp_path / "back", "--quiet")
    assert code == 0, err
    for ext in (".idx", ".bin"):  # the same bytes as the corpus we started from
        assert (tmp_path / f"back{ext}").read_bytes() == (tmp_path / f"c{ext}").read_bytes()
    code, out, err = run(capsys, "export", "megatron", tmp_path / "map", tmp_path / "back", "--quiet")
    assert code == 1 and "--overwrite" in err
    assert run(capsys, "export", "megatron", tmp_path / "map", tmp_path / "i8", "--quiet", "--dtype", "int8")[0] == 1  # values > 127
    assert not (tmp_path / "i8.idx").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial-" in p.name) == []

    (tmp_path / "bad.idx").write_bytes(b"MMIDIDX\x00\x00" + bytes(30))
    (tmp_path / "bad.bin").write_bytes(b"")
    code, out, err = run(capsys, "info", tmp_path / "bad")
    assert code == 1 and "unhealthy" in out and "bad.idx" in err


# -- megatron-core itself --------------------------------------------------------------------------

INTEROP_DTYPES = ("int32", "uint16", "int64")


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> Dict[str, object]:
    """Our corpora read by megatron-core, and corpora written by megatron-core, in one subprocess."""
    root = tmp_path_factory.mktemp("megatron-peer")
    jobs, inputs, expected = [{"id": "dtypes", "op": "dtypes", "prefix": ""}], {}, {}
    for n, dtype in enumerate(INTEROP_DTYPES):
        seqs = corpus(200, dtype, seed=10 + n)
        if dtype == "int64":  # the builder goes through torch int64 tensors: stay in range
            seqs = [s // 4 for s in seqs]
        ends = [5, 5, 60, 199, 200]
        multimodal = dtype == "int32"
        modes = [i % 3 for i in range(200)] if multimodal else None
        megatron.write(root / f"ours-{dtype}", seqs, document_ends=ends, sequence_modes=modes)
        jobs.append({"id": f"read-{dtype}", "op": "read", "prefix": str(root / f"ours-{dtype}"), "multimodal": multimodal})
        inputs[dtype] = np.concatenate(seqs)
        inputs[f"{dtype}.lengths"] = np.array([len(s) for s in seqs], np.int64)
        if modes is not None:
            inputs[f"{dtype}.modes"] = np.array(modes, np.int8)
        jobs.append({"id": f"write-{dtype}", "op": "write", "prefix": str(root / f"theirs-{dtype}"), "dtype": dtype,
                     "input": dtype, "document_ends": ends, "modes": f"{dtype}.modes" if modes else None})
        expected[dtype] = (seqs, ends, modes)
    (root / "job.json").write_text(json.dumps(jobs))
    np.savez(root / "inputs.npz", **inputs)
    done = subprocess.run([sys.executable, str(PEER_SCRIPT), str(root)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the megatron-core job failed: {done.stderr[-3000:]}")
    results = json.loads((root / "results.json").read_text())
    if "unavailable" in results:
        pytest.skip(f"megatron-core cannot be imported here ({results['unavailable']}); .ci/run installs it")
    return {"root": root, "results": results, "arrays": dict(np.load(root / "results.npz")), "expected": expected}


def split(flat: np.ndarray, lengths: np.ndarray) -> List[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


@pytest.mark.parametrize("dtype", INTEROP_DTYPES)
def test_megatron_core_reads_what_we_write(peer, dtype: str) -> None:
    result = peer["results"][f"read-{dtype}"]
    assert "error" not in result, result.get("error")
    seqs, ends, modes = peer["expected"][dtype]
    arrays = peer["arrays"]
    assert result["dtype"] == dtype and result["sequence_dtypes"] == [dtype]
    same(split(arrays[f"read-{dtype}.flat"], arrays[f"read-{dtype}.lengths"]), seqs, dtype)
    assert arrays[f"read-{dtype}.documents"].tolist() == [0] + ends
    if modes is not None:
        assert arrays[f"read-{dtype}.modes"].tolist() == modes


@pytest.mark.parametrize("dtype", INTEROP_DTYPES)
def test_we_read_what_megatron_core_writes(peer, dtype: str) -> None:
    result = peer["results"][f"write-{dtype}"]
    assert "error" not in result, result.get("error")
    seqs, ends, modes = peer["expected"][dtype]
    m = megatron.open(peer["root"] / f"theirs-{dtype}")
    assert m.dtype == np.dtype(dtype) and m.format == "megatron"
    same(list(m), seqs, dtype)
    same(m[: len(seqs)], seqs, dtype)
    assert m.document_indices.tolist() == [0] + ends
    assert (m.sequence_modes is None) == (modes is None)
    if modes is not None:
        assert m.sequence_modes.tolist() == modes
    # and byte for byte what we write for the same corpus
    ours = peer["root"] / f"ours-{dtype}"
    for ext in (".idx", ".bin"):
        assert Path(f"{ours}{ext}").read_bytes() == Path(f"{peer['root'] / f'theirs-{dtype}'}{ext}").read_bytes()


def test_dtype_codes_are_megatron_cores(peer) -> None:
    codes = peer["results"]["dtypes"]["codes"]
    assert {code: name for name, code in codes.items()} == megatron.MEGATRON_DTYPES


def test_convert_appears_only_complete(tmp_path) -> None:
    idx, data, _ = good(tmp_path)
    prefix = make(tmp_path, "c", patched(idx, POINTERS + 8, "<q", 400), data)  # sequence 1 lies outside the data
    with pytest.raises(MapFormatError, match="sequence 1"):
        megatron.to_ragged(prefix, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    leftover = tmp_path / f".out.partial-{dead}-megatron-0000"  # as a killed conversion leaves it
    (leftover / "map").mkdir(parents=True)
    idx, data, seqs = good(tmp_path)
    megatron.to_ragged(make(tmp_path, "c", idx, data), tmp_path / "out")
    same(list(RaggedMmap(tmp_path / "out")), seqs, "int32")
    assert not leftover.exists()


KILLED_WRITER = """
import sys, numpy as np
sys.path.insert(0, {src!r})
from mmap_ninja import megatron
print("go", flush=True)
megatron.write({prefix!r}, [np.full(i % 50, i, np.int32) for i in range(20_000)], dtype="int32", batch_size=256)
"""


@pytest.mark.stress
def test_a_write_killed_at_any_instant_leaves_the_old_corpus_the_new_one_or_no_index(tmp_path) -> None:
    prefix = tmp_path / "c"
    old = [np.arange(5, dtype=np.int32)]
    new = [np.full(i % 50, i, np.int32) for i in range(20_000)]
    rng = np.random.default_rng(0)
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(src=SRC, prefix=str(prefix))], capture_output=True)
    assert proc.returncode == 0
    duration = time.time() - start
    outcomes = {"old": 0, "new": 0, "none": 0}
    for _ in range(40):
        megatron.write(prefix, old)
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(src=SRC, prefix=str(prefix))], stdout=subprocess.PIPE)
        proc.stdout.readline()  # "go": the interpreter is up; the write is about to start
        time.sleep(float(rng.uniform(0, duration / 2)))
        proc.kill()
        proc.wait()
        if not (tmp_path / "c.idx").exists():
            outcomes["none"] += 1
            continue
        m = megatron.open(prefix)
        m.validate()
        if len(m) == len(old):
            same(list(m), old, "int32")
            outcomes["old"] += 1
        else:
            same(list(m), new, "int32")
            outcomes["new"] += 1
    assert outcomes["old"] and outcomes["new"], outcomes  # the kills hit before and after the end
