"""The codec seam: zstd strings keep 0.9.0's files; ragged maps compress each sample on its own.

- a zstd strings map has exactly 0.9.0's files (no codec record of ours);
- a compressed ragged map round-trips every shape and dtype, serial, by generator and by
  parallel parts (byte-identical), and appends compress with the map's level and dictionary;
- damaged frames are a MapFormatError naming the sample; a killed append is invisible;
- mmap_ninja 0.9.0 fails to open a compressed ragged map instead of returning its bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zstandard", reason="compressed maps need zstandard (pip install 'mmap_ninja[zstd]')")

from mmap_ninja import RaggedMmap, StringsMmap, codecs, generic  # noqa: E402
from mmap_ninja.errors import MapFormatError  # noqa: E402
from conftest import extend_and_die  # noqa: E402

RNG = np.random.default_rng(7)


def tokens(count: int, dtype: str = "int32") -> list:
    return [RNG.integers(0, 300, RNG.integers(0, 60)).astype(dtype) for _ in range(count)]


def mixed() -> list:
    return [np.arange(6, dtype=np.float64).reshape(2, 3), np.float64(2.5), np.zeros(0), np.ones((2, 1, 2)) * 7, np.arange(4.0)]


def same(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        assert type(g) is np.ndarray and g.dtype == e.dtype and g.shape == e.shape and np.array_equal(g, e), f"sample {i}"


def test_zstd_strings_keep_0_9_0_files(tmp_path):
    texts = [f"sentence number {i} " * (i % 7) for i in range(300)]
    m = StringsMmap.from_strings(tmp_path / "s", texts, zstd_level=5, zstd_train_dictionary_size=1024)
    names = {p.name for p in (tmp_path / "s").iterdir()} - {".writer.lock"}
    assert names == {"data.ninja", "starts", "ends", "type.ninja", "zstd_level.ninja", "zstd_dict.ninja"}
    assert (tmp_path / "s" / "zstd_level.ninja").read_bytes() == b"5"
    codec = codecs.read(tmp_path / "s", "string")
    assert isinstance(codec, codecs.ZstdCodec) and codec.level == 5 and codec.dictionary == (tmp_path / "s" / "zstd_dict.ninja").read_bytes()
    assert list(m) == texts


@pytest.mark.parametrize("dictionary", [None, 2048], ids=["plain", "dictionary"])
def test_compressed_ragged_round_trip_and_appends(tmp_path, dictionary):
    samples = tokens(400)
    m = RaggedMmap.from_lists(tmp_path / "z", samples, zstd_level=3, zstd_train_dictionary_size=dictionary)
    assert (tmp_path / "z" / "dtype.ninja").read_bytes() == b"zstd:int32"
    assert m.zstd_level == 3 and m.dtype == np.int32
    same(list(m), samples)
    same(m[5:9], samples[5:9])
    same([m[-1]], [samples[-1]])
    m.extend(mixed_int := [np.arange(7, dtype=np.int32), np.int32(4), np.arange(6, dtype=np.int32).reshape(3, 2)])
    reopened = RaggedMmap(tmp_path / "z")
    same(list(reopened), samples + mixed_int)
    # the appended samples were compressed with the map's level and dictionary
    codec = codecs.read(tmp_path / "z", "ragged")
    view_starts = np.fromfile(tmp_path / "z" / "starts" / "data.ninja", np.int64)
    view_ends = np.fromfile(tmp_path / "z" / "ends" / "data.ninja", np.int64)
    data = (tmp_path / "z" / "data.ninja").read_bytes()
    stored = data[view_starts[400] : view_ends[400]]
    assert stored == codec.encode(np.arange(7, dtype=np.int32).tobytes())


def test_compressed_ragged_of_any_shape(tmp_path):
    samples = mixed()
    m = RaggedMmap.from_lists(tmp_path / "z", samples, zstd_level=1)
    same(list(m), samples)
    m.append(np.ones((1, 2, 2, 1)))
    same([RaggedMmap(tmp_path / "z")[-1]], [np.ones((1, 2, 2, 1))])


def test_compressed_builds_are_byte_identical(tmp_path):
    samples = tokens(500)
    RaggedMmap.from_generator(tmp_path / "g", iter(samples), 64, zstd_level=3, zstd_train_dictionary_size=1024)
    RaggedMmap.from_indexable(tmp_path / "p", samples, 64, n_jobs=2, zstd_level=3, zstd_train_dictionary_size=1024)
    assert_same_files(tmp_path / "g", tmp_path / "p")
    same(list(RaggedMmap(tmp_path / "p")), samples)


def test_compressed_is_smaller_and_padded_works(tmp_path):
    samples = [np.repeat(RNG.integers(0, 50, 30), 4).astype(np.int64) for _ in range(200)]
    RaggedMmap.from_lists(tmp_path / "raw", samples)
    m = RaggedMmap.from_lists(tmp_path / "z", samples, zstd_level=3)
    size = lambda p: (p / "data.ninja").stat().st_size  # noqa: E731
    assert size(tmp_path / "z") < size(tmp_path / "raw") / 2
    padded, lengths = m.padded([0, 3, 5], pad_value=-1, max_len=100)
    expected, _ = RaggedMmap(tmp_path / "raw").padded([0, 3, 5], pad_value=-1, max_len=100)
    assert np.array_equal(padded, expected) and lengths.tolist() == [100, 100, 100]


def test_compressed_samples_cannot_be_overwritten(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "z", tokens(5), zstd_level=3)
    with pytest.raises(ValueError, match="cannot be overwritten"):
        m[0] = m[0]


def test_damaged_frame_names_the_sample(tmp_path):
    samples = [np.arange(50, dtype=np.int32) + i for i in range(4)]
    RaggedMmap.from_lists(tmp_path / "z", samples, zstd_level=3)
    data = bytearray((tmp_path / "z" / "data.ninja").read_bytes())
    ends = np.fromfile(tmp_path / "z" / "ends" / "data.ninja", np.int64)
    data[ends[1] + 5 : ends[2] - 1] = b"\x00" * (ends[2] - 1 - ends[1] - 5)
    (tmp_path / "z" / "data.ninja").write_bytes(bytes(data))
    m = RaggedMmap(tmp_path / "z")
    same([m[1]], [samples[1]])
    with pytest.raises(MapFormatError, match="sample 2"):
        m[2]


def test_unknown_codec_is_refused(tmp_path):
    RaggedMmap.from_lists(tmp_path / "z", tokens(3), zstd_level=3)
    (tmp_path / "z" / "codec.ninja").write_bytes(b"brotli")
    with pytest.raises(MapFormatError, match="brotli"):
        RaggedMmap(tmp_path / "z")


def test_merge_refuses_parts_compressed_differently(tmp_path):
    from mmap_ninja import parts

    RaggedMmap.from_lists(tmp_path / "a", tokens(3), zstd_level=3)
    RaggedMmap.from_lists(tmp_path / "b", tokens(3), zstd_level=5)
    RaggedMmap.from_lists(tmp_path / "c", tokens(3))
    for other in ("b", "c"):
        with pytest.raises(ValueError, match="compressed differently"):
            parts.merge(tmp_path / "m", [tmp_path / "a", tmp_path / other])
    expected = list(RaggedMmap(tmp_path / "a")) * 2
    parts.merge(tmp_path / "m", [tmp_path / "a", tmp_path / "a"])
    same(list(generic.open_existing(tmp_path / "m")), expected)


def assert_same_files(a: Path, b: Path) -> None:
    """Every file of map ``a`` (but its lock) has the same bytes in map ``b``."""
    for folder, _, files in os.walk(a):
        for name in files:
            if name != ".writer.lock":
                rel = Path(folder, name).relative_to(a)
                assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def _append_and_die(path: Path, batch: list, kill_after: int) -> int:
    return extend_and_die(lambda: RaggedMmap(path), batch, kill_after)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked writer")
def test_killed_append_of_compressed_samples(tmp_path):
    """A writer killed at each write in turn: the map holds the old samples or all new ones."""
    import shutil

    first, batch = tokens(20), tokens(5)
    RaggedMmap.from_lists(tmp_path / "template", first, zstd_level=3, zstd_train_dictionary_size=512)
    for k in range(1, 100):
        run = tmp_path / f"run{k}"
        shutil.copytree(tmp_path / "template", run)
        status = _append_and_die(run, batch, k)
        got = list(RaggedMmap(run))
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0
            same(got, first + batch)
            break
        assert len(got) in (20, 25)
        same(got, (first + batch)[: len(got)])
        m = RaggedMmap(run)
        m.extend(batch[:1])  # repairs, then appends
        same(list(RaggedMmap(run)), (first + batch)[: len(got)] + batch[:1])
    else:
        pytest.fail("the append never completed")
    assert k >= 3


# --- against the real mmap_ninja 0.9.0 ------------------------------------------------------

PEER_READ = r"""
import json, sys
out = {}
try:
    from mmap_ninja import generic
    from mmap_ninja.ragged import RaggedMmap
    from mmap_ninja.string import StringsMmap
except Exception as e:
    print(json.dumps({"import": repr(e)})); sys.exit(0)
def attempt(name, fn):
    try:
        out[name] = {"ok": repr(fn())[:200]}
    except Exception as e:
        out[name] = {"error": type(e).__name__ + ": " + str(e)[:200]}
path = sys.argv[1]
attempt("generic", lambda: [generic.open_existing(path)[i] for i in range(2)])
attempt("ragged", lambda: (len(RaggedMmap(path)), RaggedMmap(path)[0]))
attempt("strings", lambda: (len(StringsMmap(path)), StringsMmap(path)[0]))
print(json.dumps(out))
"""


def upstream_python():
    configured = os.environ.get("MMAP_NINJA_UPSTREAM_PYTHON") or "/work/venv-upstream/bin/python"
    if not os.path.exists(configured):
        pytest.skip("needs mmap_ninja 0.9.0: set MMAP_NINJA_UPSTREAM_PYTHON to an interpreter that has it (.ci/run does)")
    return configured


def upstream_tries(path: Path) -> dict:
    """What mmap_ninja 0.9.0 gets opening ``path`` generically, as a RaggedMmap and as a StringsMmap."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the peer imports its own mmap_ninja
    done = subprocess.run([upstream_python(), "-c", PEER_READ, str(path)], capture_output=True, text=True, timeout=120, cwd=path.parent, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_upstream_refuses_a_compressed_ragged_map(tmp_path):
    RaggedMmap.from_lists(tmp_path / "z", tokens(10), zstd_level=3, zstd_train_dictionary_size=None)
    tried = upstream_tries(tmp_path / "z")
    assert "error" in tried["generic"] and "zstd:int32" in tried["generic"]["error"], tried
    assert "error" in tried["ragged"] and "zstd:int32" in tried["ragged"]["error"], tried
    # a ragged map's root is no strings map in 0.9.0 either: it reads no samples from it
    assert "error" in tried["strings"], tried


def test_compressed_parts_merge_through_a_shapes_upgrade(tmp_path):
    """Parts of 1-D samples, then of 2-D ones: the merge upgrades the shape layout, counting
    elements (flattened_shapes), not stored bytes; the result is the serial build's, byte for byte."""
    samples = [np.arange(i % 7, dtype=np.int16) for i in range(300)]
    samples += [np.arange(6, dtype=np.int16).reshape(2, 3) + i for i in range(300)] + [np.int16(5)]
    RaggedMmap.from_generator(tmp_path / "g", iter(samples), 50, zstd_level=2)
    RaggedMmap.from_indexable(tmp_path / "p", samples, 50, n_jobs=2, zstd_level=2)
    assert_same_files(tmp_path / "g", tmp_path / "p")
    same(list(RaggedMmap(tmp_path / "p")), samples)
