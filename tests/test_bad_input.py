"""Bad input is refused with an error that names the sample, and refused input writes nothing.

mmap_ninja 0.9.0 casts every sample to the map's dtype silently (1.5 becomes 1 in an int
map, 300 becomes 44 in an int8 map), takes the dtype from the first sample alone, and reads
corrupt directories as whatever the bytes happen to say. Each test here fails on that.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from mmap_ninja import MapFormatError, generic
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import CATALOGUE, kind_params, needs

# --- helpers -----------------------------------------------------------------------------------


def files_of(folder: Path) -> Dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_samples(got: List[Any], want: List[Any]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, str):
            assert g == w, i
        else:
            g, w = np.asarray(g), np.asarray(w)
            assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes(), i


def ragged_samples(path: Path) -> List[np.ndarray]:
    with RaggedMmap(path, mode="r") as m:
        return [np.array(s) for s in m]


@pytest.fixture
def int_map(tmp_path):
    """A ragged int64 map of 3 samples, open for appends and overwrites, and its samples."""
    samples = [np.arange(3), np.arange(4).reshape(2, 2) * 10, np.array([7, 8])]
    return RaggedMmap.from_lists(tmp_path / "ints", samples, mode="r+"), samples


def assert_refused_and_untouched(m: Any, before_files: Dict[str, bytes], samples: List[Any], reopen: Callable[[], List[Any]]) -> None:
    """After a refused call: same length, same samples (in this handle and reopened), same bytes."""
    assert len(m) == len(samples)
    assert_same_samples([m[i] for i in range(len(m))], samples)
    assert_same_samples(reopen(), samples)
    assert files_of(m.path) == before_files


# --- lossy casts are refused, lossless ones work --------------------------------------------------

LOSSY = [
    # map dtype, the bad sample, the error, the dtype names the message must hold
    ("int64", np.array([1.0, 1.5]), ValueError, ("float64", "int64")),
    ("int8", np.array([1, 300]), ValueError, ("int64", "int8")),
    ("uint8", np.array([-1, 2]), ValueError, ("int64", "uint8")),
    ("int64", np.array([2**63], np.uint64), ValueError, ("uint64", "int64")),  # same width: wraps to -2**63
    ("uint32", np.array([-1, 5], np.int32), ValueError, ("int32", "uint32")),  # same width: wraps to 2**32 - 1
    ("uint64", np.array([-1, 5]), ValueError, ("int64", "uint64")),
    ("float32", np.array([1 + 2j]), TypeError, ("complex128", "float32")),
    ("float32", np.array([1 + 0j]), TypeError, ("complex128", "float32")),  # complex never silently becomes real
    ("float32", np.array([1e300]), ValueError, ("float64", "float32")),  # would overflow to inf
    ("bool", np.array([0, 2]), ValueError, ("int64", "bool")),
]


@pytest.mark.parametrize("map_dtype, bad, error, dtypes", LOSSY, ids=[f"{d}<-{b.dtype}" for d, b, _, _ in LOSSY])
def test_lossy_cast_into_ragged_map_is_refused(tmp_path, map_dtype, bad, error, dtypes):
    samples = [np.zeros(3, map_dtype), np.ones(2, map_dtype)]
    m = RaggedMmap.from_lists(tmp_path / "m", samples, dtype=map_dtype, mode="r+")
    before = files_of(m.path)
    good = np.zeros(1, map_dtype)
    with pytest.raises(error) as info:
        m.extend([good, good, bad])  # the bad one would be sample 4
    message = str(info.value)
    assert "sample 4" in message and all(d in message for d in dtypes), message
    assert_refused_and_untouched(m, before, samples, lambda: ragged_samples(m.path))
    with pytest.raises(error, match="sample 1"):
        m[1] = bad[:2] if len(bad) >= 2 else np.concatenate([bad, bad])
    assert_refused_and_untouched(m, before, samples, lambda: ragged_samples(m.path))


@pytest.mark.parametrize("map_dtype, bad, error, dtypes", LOSSY, ids=[f"{d}<-{b.dtype}" for d, b, _, _ in LOSSY])
def test_lossy_cast_into_same_shape_map_is_refused(tmp_path, map_dtype, bad, error, dtypes):
    rows = np.zeros((3, len(bad)), map_dtype)
    np_ninja.from_ndarray(tmp_path / "m", rows)
    before = files_of(tmp_path / "m")
    with pytest.raises(error) as info:
        np_ninja.extend_dir(tmp_path / "m", np.stack([np.zeros_like(bad), bad]))
    message = str(info.value)
    assert "sample" in message and all(d in message for d in dtypes), message
    assert files_of(tmp_path / "m") == before
    np.testing.assert_array_equal(np_ninja.open_existing(tmp_path / "m", mode="r"), rows)


def test_same_shape_map_error_names_the_row_at_fault(tmp_path):
    """A batch of rows appended to a 3-row map: the lossy one is row 1 of the batch, sample 4."""
    np_ninja.from_ndarray(tmp_path / "m", np.zeros((3, 2), np.int16))
    with pytest.raises(ValueError, match="sample 4 "):
        np_ninja.extend_dir(tmp_path / "m", np.array([[1.0, 2.0], [1.5, 2.0]]))
    with pytest.raises(ValueError, match="sample 5 "):
        np_ninja.extend_dir(tmp_path / "m", np.array([[1, 2], [3, 4], [5, 70000]]))


def test_lossy_cast_in_a_new_map_builds_nothing(tmp_path):
    with pytest.raises(ValueError, match="sample 2"):
        RaggedMmap.from_lists(tmp_path / "m", [np.arange(3), np.arange(2), np.array([0.5])], dtype=np.int32)
    with pytest.raises(ValueError, match="sample 1"):
        np_ninja.from_generator(tmp_path / "n", iter([np.array([1, 2]), np.array([1.5, 2])]), batch_size=4, dtype=np.int8)
    assert sorted(os.listdir(tmp_path)) == []


LOSSLESS = [
    ("int8", np.array([1, -100, 127])),
    ("int32", np.array([1.0, -2.0, 3e9 - 3e9])),
    ("int64", np.array([True, False])),
    ("uint16", np.array([0, 65535], np.int64)),
    ("float32", np.array([0.1, 1e30])),  # rounded to the nearest float32, never overflowing
    ("float64", np.array([1, 2**53], np.int64)),
    ("complex64", np.array([1.5, -2.0])),
    ("float32", np.array([np.nan, np.inf, -np.inf])),
]


@pytest.mark.parametrize("map_dtype, sample", LOSSLESS, ids=[f"{d}<-{s.dtype}" for d, s in LOSSLESS])
def test_lossless_cast_is_stored_in_the_map_dtype(tmp_path, map_dtype, sample):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.zeros(2, map_dtype)], mode="r+")
    m.extend([sample])
    m[0] = sample[:2]
    for got in (m[1], ragged_samples(m.path)[1], ragged_samples(m.path)[0]):
        assert got.dtype == np.dtype(map_dtype)
    np.testing.assert_array_equal(m[1], sample.astype(map_dtype))
    np.testing.assert_array_equal(ragged_samples(m.path)[0], sample[:2].astype(map_dtype))
    np_ninja.from_ndarray(tmp_path / "n", np.zeros((1, len(sample)), map_dtype))
    np_ninja.extend_dir(tmp_path / "n", sample[None])
    stored = np_ninja.open_existing(tmp_path / "n", mode="r")
    assert stored.dtype == np.dtype(map_dtype)
    np.testing.assert_array_equal(stored[1], sample.astype(map_dtype))


# --- without a dtype, numpy promotion over the first batch decides ---------------------------------


@pytest.mark.parametrize(
    "first_batch, expected",
    [
        ([np.arange(3, dtype=np.int8), np.ones(2, np.float32)], "float32"),
        ([np.arange(3, dtype=np.int8), np.arange(2, dtype=np.int64)], "int64"),
        ([np.arange(3, dtype=np.uint8), np.arange(2, dtype=np.int8)], "int16"),
        ([np.ones(2, np.float16), np.arange(2, dtype=np.int32)], "float64"),
        ([[], [1, 2]], "int64"),  # [] is float64 to numpy; an empty sample does not decide
        ([np.array(True), np.arange(2, dtype=np.uint8)], "uint8"),
    ],
)
def test_first_batch_decides_dtype_by_promotion(tmp_path, first_batch, expected):
    built = RaggedMmap.from_lists(tmp_path / "a", first_batch)
    assert built.dtype == np.dtype(expected)
    appended = RaggedMmap(tmp_path / "b")
    appended.extend(first_batch)
    assert appended.dtype == np.dtype(expected) and RaggedMmap(tmp_path / "b").dtype == np.dtype(expected)
    generated = RaggedMmap.from_generator(tmp_path / "c", iter(first_batch + [np.zeros(1, np.int8)]), batch_size=len(first_batch))
    assert generated.dtype == np.dtype(expected)
    for m in (built, appended, generated):
        for got, want in zip(m, first_batch):
            np.testing.assert_array_equal(got, np.asarray(want).astype(expected))


def test_later_batches_are_cast_to_the_first_batches_dtype_or_refused(tmp_path):
    samples = iter([np.arange(2, dtype=np.int8), np.arange(3, dtype=np.int16), np.array([1.0]), np.array([0.5])])
    with pytest.raises(ValueError, match="sample 3.*float64.*int16"):
        RaggedMmap.from_generator(tmp_path / "m", samples, batch_size=2)
    assert not (tmp_path / "m").exists()
    rows = np_ninja.from_generator(tmp_path / "n", iter([np.arange(2, dtype=np.int8), np.ones(2, np.float32), np.arange(2)]), batch_size=2)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, [[0, 1], [1, 1], [0, 1]])


# --- what is not an array of numbers, or not a str ------------------------------------------------

NOT_NUMERIC = {
    "object array": np.array([1, "a"], dtype=object),
    "ragged nested list": [[1, 2], [3]],
    "None": None,
    "str": "abc",
    "dict": {"a": 1},
    "plain object": object(),
    "bytes": b"\x00\x01",
}


@pytest.mark.parametrize("bad", list(NOT_NUMERIC.values()), ids=list(NOT_NUMERIC))
def test_non_numeric_sample_is_refused_by_position(int_map, bad):
    m, samples = int_map
    before = files_of(m.path)
    with pytest.raises(TypeError, match="sample 4"):
        m.extend([np.arange(2), bad])
    assert_refused_and_untouched(m, before, samples, lambda: ragged_samples(m.path))
    with pytest.raises(TypeError, match="sample 2"):
        m[2] = bad
    assert_refused_and_untouched(m, before, samples, lambda: ragged_samples(m.path))


@pytest.mark.parametrize("bad", list(NOT_NUMERIC.values()), ids=list(NOT_NUMERIC))
def test_non_numeric_first_samples_create_nothing(tmp_path, bad):
    m = RaggedMmap(tmp_path / "m")
    with pytest.raises(TypeError, match="sample 1"):
        m.extend([np.arange(2), bad])
    with pytest.raises(TypeError, match="sample 1"):
        RaggedMmap.from_lists(tmp_path / "b", [np.arange(2), bad])
    with pytest.raises(TypeError, match="sample 1"):
        np_ninja.from_generator(tmp_path / "c", iter([np.arange(2), bad]), batch_size=2)
    assert len(m) == 0 and os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", [1, None, b"abc", 2.5, ["a"], np.str_("fine")], ids=["int", "None", "bytes", "float", "list", "np.str_"])
def test_strings_map_takes_str_only(tmp_path, bad):
    samples = ["abc", "dé", ""]
    s = StringsMmap.from_strings(tmp_path / "s", samples)
    before = files_of(s.path)
    if isinstance(bad, str):  # np.str_ is a str: stored as the text it holds
        s.extend([bad])
        assert StringsMmap(s.path)[3] == "fine" and type(StringsMmap(s.path)[3]) is str
        return
    with pytest.raises(TypeError, match=f"sample 4.*{type(bad).__name__}"):
        s.extend(["ok", bad])
    assert_refused_and_untouched(s, before, samples, lambda: list(StringsMmap(s.path, mode="rb")))
    with pytest.raises(TypeError, match="sample 1"):
        s[1] = bad
    assert_refused_and_untouched(s, before, samples, lambda: list(StringsMmap(s.path, mode="rb")))
    fresh = StringsMmap(tmp_path / "new")
    with pytest.raises(TypeError, match="sample 1"):
        fresh.extend(["ok", bad])
    with pytest.raises(TypeError, match="sample 2"):
        StringsMmap.from_strings(tmp_path / "built", ["a", "b", bad])
    assert len(fresh) == 0 and sorted(os.listdir(tmp_path)) == ["s"]


# --- indices -----------------------------------------------------------------------------------------


@pytest.fixture(params=["ragged", "strings"])
def any_map(request, tmp_path):
    if request.param == "ragged":
        samples = [np.arange(i + 1) for i in range(5)]
        return RaggedMmap.from_lists(tmp_path / "m", samples), samples
    samples = ["a", "bb", "ccc", "dddd", "é"]
    return StringsMmap.from_strings(tmp_path / "m", samples), samples


@pytest.mark.parametrize("index", [5, 6, 10**20, -6, -(10**20), np.int64(5), np.uint64(7)])
def test_index_out_of_range(any_map, index):
    m, _ = any_map
    with pytest.raises(IndexError):
        m[index]
    if abs(int(index)) < 2**63:
        with pytest.raises(IndexError):
            m[[0, int(index)]]
        with pytest.raises(IndexError):
            m[np.array([0, int(index)])]


@pytest.mark.parametrize("index", [-1, -5, 4, np.int32(2), np.uint8(1), np.int64(-2)])
def test_index_in_range_like_a_list(any_map, index):
    m, samples = any_map
    assert_same_samples([m[index]], [samples[int(index)]])


@pytest.mark.parametrize("index", [1.0, np.float64(1.0), "0", None, b"0", 1j, (0, 1)[0:0] or {0: 1}])
def test_index_of_wrong_type(any_map, index):
    m, _ = any_map
    with pytest.raises(TypeError):
        m[index]
    with pytest.raises(TypeError):
        m[np.array([0.0, 1.0])]


def test_boolean_masks_work_like_numpy(any_map):
    m, samples = any_map
    mask = np.array([True, False, True, True, False])
    assert_same_samples(m[mask], [samples[i] for i in np.flatnonzero(mask)])
    assert_same_samples(m[mask.tolist()], [samples[i] for i in np.flatnonzero(mask)])
    assert_same_samples(m[np.zeros(5, bool)], [])
    for wrong_length in (np.ones(4, bool), np.ones(6, bool)):
        with pytest.raises(IndexError):
            m[wrong_length]
    for scalar_bool in (True, np.True_):
        with pytest.raises(TypeError):
            m[scalar_bool]


def test_same_shape_map_indices_are_numpy_indices(tmp_path):
    m = np_ninja.from_ndarray(tmp_path / "n", np.arange(12).reshape(4, 3))
    for index in (4, -5, 10**20):
        with pytest.raises(IndexError):
            m[index]
    np.testing.assert_array_equal(m[-1], [9, 10, 11])
    np.testing.assert_array_equal(m[np.array([True, False, False, True])], [[0, 1, 2], [9, 10, 11]])


# --- overwriting samples in place -----------------------------------------------------------------


def test_setitem_with_another_shape_is_refused_and_neighbours_untouched(int_map):
    m, samples = int_map
    before = files_of(m.path)
    for index, value in [(0, np.arange(4)), (0, np.arange(2)), (1, np.arange(4)), (1, np.zeros((2, 2, 1), np.int64)), (2, 5)]:
        with pytest.raises(ValueError, match=f"sample {index}"):
            m[index] = value
        assert_refused_and_untouched(m, before, samples, lambda: ragged_samples(m.path))
    with pytest.raises(ValueError):  # the second value is wrong: the first is not written either
        m[[0, 2]] = [np.array([9, 9, 9]), np.array([9, 9, 9])]
    with pytest.raises(ValueError):
        m[[0, 2]] = [np.array([9, 9, 9])]
    assert_refused_and_untouched(m, before, samples, lambda: ragged_samples(m.path))
    m[1] = np.array([[-1, -2], [-3, -4]])
    expected = [samples[0], np.array([[-1, -2], [-3, -4]]), samples[2]]
    assert_same_samples(ragged_samples(m.path), expected)


def test_setitem_of_a_string_with_another_byte_length_is_refused(tmp_path):
    samples = ["abc", "dé", "xyz"]
    s = StringsMmap.from_strings(tmp_path / "s", samples)
    before = files_of(s.path)
    for index, value in [(0, "ab"), (0, "abé"), (1, "de"), (1, "déé"), (2, "")]:
        with pytest.raises(ValueError, match=f"string {index}"):
            s[index] = value
        assert_refused_and_untouched(s, before, samples, lambda: list(StringsMmap(s.path, mode="rb")))
    with pytest.raises(ValueError):
        s[[0, 1]] = ["ABC", "de"]
    assert_refused_and_untouched(s, before, samples, lambda: list(StringsMmap(s.path, mode="rb")))
    s[1] = "ßx"  # 3 bytes, like "dé"
    assert list(StringsMmap(s.path, mode="rb")) == ["abc", "ßx", "xyz"]


# --- missing paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("opener", [np_ninja.open_existing, generic.open_existing, lambda p: np_ninja.extend_dir(p, np.ones((1, 2)))],
                         ids=["np_ninja.open_existing", "generic.open_existing", "np_ninja.extend_dir"])
def test_missing_path_raises_file_not_found_and_creates_nothing(tmp_path, opener):
    with pytest.raises(FileNotFoundError, match="missing"):
        opener(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        opener(tmp_path / "deeper" / "missing")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cls", [RaggedMmap, StringsMmap])
def test_a_new_path_is_an_empty_map_created_on_first_append(tmp_path, cls):
    path = tmp_path / "sub" / "m"
    m = cls(path)
    assert len(m) == 0 and list(m) == [] and m[:] == [] and m[[]] == []
    with pytest.raises(IndexError):
        m[0]
    assert not (tmp_path / "sub").exists()
    m.extend([])
    assert not (tmp_path / "sub").exists()
    first = "é" if cls is StringsMmap else np.arange(3)
    m.append(first)
    assert len(m) == 1 and len(cls(path)) == 1
    assert_same_samples([cls(path)[0]], [first])


# --- corrupt directories -------------------------------------------------------------------------------


def _set_int64(relative: str, index: int, value: int) -> Callable[[Path], None]:
    def mutate(map_dir: Path) -> None:
        values = np.fromfile(map_dir / relative, "<i8")
        values[index] = value
        values.tofile(map_dir / relative)

    return mutate


def _truncate(relative: str, size: int) -> Callable[[Path], None]:
    return lambda map_dir: os.truncate(map_dir / relative, size)


def _write(relative: str, content: bytes) -> Callable[[Path], None]:
    return lambda map_dir: (map_dir / relative).write_bytes(content)


def _decodes_zstd(corrupt: Callable[[Path], None]) -> Callable[[Path], None]:
    """Mark a corruption whose map is read through zstandard (its test skips without it)."""
    corrupt.decodes_zstd = True  # type: ignore[attr-defined]
    return corrupt


def _replace_with_other_kind(kind: str) -> Callable[[Path], None]:
    def mutate(map_dir: Path) -> None:
        shutil.rmtree(map_dir)
        if kind == "string":
            StringsMmap.from_strings(map_dir, ["not", "this", "kind"])
        elif kind == "numpy":
            np_ninja.from_ndarray(map_dir, np.zeros((3, 2)))
        else:
            RaggedMmap.from_lists(map_dir, [np.arange(2)])

    return mutate


def _unrelated_files(map_dir: Path) -> None:
    shutil.rmtree(map_dir)
    map_dir.mkdir()
    (map_dir / "notes.txt").write_text("my holiday photos")
    (map_dir / "data.ninja").write_bytes(b"\x00" * 64)


BUILDERS = {
    "ragged_flat": lambda p: RaggedMmap.from_lists(p, [np.arange(3), np.arange(4), np.arange(2)]),
    "ragged_nested": lambda p: RaggedMmap.from_lists(p, [np.arange(3), np.arange(4).reshape(2, 2), np.arange(6).reshape(1, 2, 3)]),
    "strings": lambda p: StringsMmap.from_strings(p, ["abc", "dé", "漢字"]),
    "strings_zstd": lambda p: StringsMmap.from_strings(p, ["abc" * 10, "dé" * 10, "漢字"], zstd_level=3),
    "numpy": lambda p: np_ninja.from_ndarray(p, np.arange(12, dtype=np.float32).reshape(3, 4)),
}

CORRUPTIONS = [
    # kind built, what is done to it, what the message must name
    ("ragged_flat", _replace_with_other_kind("string"), "string"),
    ("strings", _replace_with_other_kind("ragged"), "ragged"),
    ("numpy", _replace_with_other_kind("ragged"), "ragged"),
    ("ragged_nested", _replace_with_other_kind("numpy"), "numpy"),
    ("ragged_flat", _unrelated_files, "type.ninja|no map"),
    ("numpy", _unrelated_files, "type.ninja|no map"),
    ("strings", _unrelated_files, "type.ninja|no map"),
    ("ragged_flat", _truncate("data.ninja", 40), "data.ninja"),
    ("ragged_nested", _truncate("data.ninja", 8), "data.ninja"),
    ("ragged_nested", _truncate("shapes/data.ninja", 8), "shapes/data.ninja"),
    ("ragged_nested", _truncate("shapes/ends/data.ninja", 8), "shapes/ends/data.ninja"),
    ("ragged_flat", _truncate("ends/data.ninja", 8), "ends/data.ninja"),
    ("ragged_flat", _truncate("shapes/data.ninja", 0), "shapes/data.ninja"),
    ("strings", _truncate("data.ninja", 5), "data.ninja"),
    ("strings_zstd", _truncate("data.ninja", 5), "data.ninja"),
    ("numpy", _truncate("data.ninja", 20), "data.ninja"),
    ("ragged_flat", _write("shape.ninja", b"12345"), "shape.ninja"),
    ("ragged_flat", _write("starts/shape.ninja", struct.pack("<2Q", 3, 1)), "starts/shape.ninja"),
    ("ragged_flat", _write("starts/shape.ninja", b""), "starts/shape.ninja"),
    ("strings", _write("ends/shape.ninja", b"\x01\x00"), "ends/shape.ninja"),
    ("ragged_flat", _write("ends/shape.ninja", struct.pack("<Q", 1)), "ends/shape.ninja"),
    ("ragged_flat", _write("shapes/shape.ninja", struct.pack("<2Q", 3, 0)), "shapes"),
    ("numpy", _write("shape.ninja", b""), "shape.ninja"),
    ("numpy", _write("shape.ninja", b"1234567"), "shape.ninja"),
    ("numpy", _write("shape.ninja", struct.pack("<2Q", 2**62, 2**62)), "data.ninja"),
    ("ragged_flat", _write("starts/shape.ninja", struct.pack("<Q", 2**63 + 5)), "starts/data.ninja"),
    ("ragged_flat", _write("dtype.ninja", b"float33"), "dtype.ninja"),
    ("ragged_flat", _write("dtype.ninja", b"object"), "dtype.ninja"),
    ("numpy", _write("dtype.ninja", b"V0"), "dtype.ninja"),
    ("numpy", _write("dtype.ninja", b""), "dtype.ninja"),
    ("numpy", _write("dtype.ninja", b"\xff\xfe"), "dtype.ninja"),
    ("ragged_flat", _write("starts/dtype.ninja", b"int32"), "starts"),
    ("numpy", _write("order.ninja", b"X"), "order.ninja"),
    ("ragged_flat", _write("type.ninja", b"banana"), "type.ninja"),
    ("ragged_flat", _write("shapes_are_flat.ninja", struct.pack("<i", 7)), "shapes_are_flat.ninja"),
    ("ragged_flat", _write("shapes_are_flat.ninja", struct.pack("<i", 0)), "shapes"),
    ("ragged_nested", _write("shapes_are_flat.ninja", struct.pack("<i", 1)), "shapes"),
    ("strings", _write("zstd_level.ninja", b"three"), "zstd_level.ninja"),
    ("strings", _decodes_zstd(_write("zstd_level.ninja", b"3")), "data.ninja"),  # plain bytes are no zstd frames
    ("strings", _write("data.ninja", b"ab\xffd\xc3\xa9\xe6\xbc\xa2\xe5\xad\x97"), "data.ninja"),  # not UTF-8
    ("ragged_flat", _set_int64("ends/data.ninja", 0, 10**6), "starts"),  # offsets past the end of the data
    ("ragged_flat", _set_int64("ends/data.ninja", 2, 10**6), "shape.ninja"),
    ("ragged_flat", _set_int64("ends/data.ninja", 2, -3), "ends"),
    ("ragged_flat", _set_int64("starts/data.ninja", 1, -3), "starts"),
    ("ragged_flat", _set_int64("starts/data.ninja", 1, 8), "starts"),  # start after end
    ("strings", _set_int64("ends/data.ninja", 0, 10**6), "starts"),
    ("strings", _set_int64("ends/data.ninja", 2, 10**6), "data.ninja"),
    ("strings", _set_int64("starts/data.ninja", 0, -1), "starts"),
    ("ragged_nested", _set_int64("shapes/data.ninja", -1, 5), "shapes"),  # 6 elements cannot take shape (1, 2, 5)
    ("ragged_nested", _set_int64("shapes/ends/data.ninja", 2, 10**6), "shapes"),
    ("ragged_nested", _write("shapes/dtype.ninja", b"float64"), "shapes"),  # shapes must be int64 (found by test_fuzz)
    ("ragged_flat", _set_int64("shapes/data.ninja", 0, 7), "shapes"),  # sample 0 has 3 elements, not 7
    ("ragged_flat", _set_int64("shapes/data.ninja", 1, 2), "shapes"),
]


def _read_every_way(kind: str, path: Path) -> None:
    """Open and read every sample by int index, by batch, and by iteration (each from a fresh open)."""
    if kind == "numpy":
        m = np_ninja.open_existing(path, mode="r")
        [np.array(row) for row in m]
        generic.open_existing(path, mode="r")
        return
    cls = StringsMmap if kind.startswith("strings") else RaggedMmap
    m = cls(path)
    [m[i] for i in range(len(m))]
    [cls(path)[np.int64(i)] for i in range(len(m))]
    cls(path)[:]
    list(cls(path))
    if cls is StringsMmap:
        list(cls(path).iter_chunks(2))
    else:
        RaggedMmap(path, wrapper_fn=np.copy)[0:len(m)]


def _corruption_params() -> list:
    """CORRUPTIONS as params; those read through zstandard skip, with the reason, without it."""
    params = []
    for i, (kind, corrupt, named) in enumerate(CORRUPTIONS):
        zstd = kind == "strings_zstd" or getattr(corrupt, "decodes_zstd", False)
        params.append(pytest.param(kind, corrupt, named, marks=[needs("zstandard")] if zstd else [], id=f"{kind}-{i}-{named.split('|')[0]}"))
    return params


@pytest.mark.parametrize("kind, corrupt, named", _corruption_params())
def test_corrupt_map_raises_map_format_error_naming_the_file(tmp_path, kind, corrupt, named):
    path = tmp_path / "m"
    BUILDERS[kind](path)
    _read_every_way(kind, path)  # healthy before
    corrupt(path)
    reads = [lambda: _read_every_way(kind, path)]
    if kind != "numpy":
        cls = StringsMmap if kind.startswith("strings") else RaggedMmap
        reads += [lambda: [cls(path)[i] for i in range(3)], lambda: cls(path)[[0, 1, 2]], lambda: list(cls(path))]
    for read in reads:
        with pytest.raises(MapFormatError) as info:
            read()
        assert re.search(named, str(info.value)), str(info.value)
    assert isinstance(info.value, ValueError)


def test_corruption_of_one_sample_leaves_the_others_readable(tmp_path):
    """Offsets of sample 0 past the data: sample 0 raises, samples 1 and 2 stay exact."""
    BUILDERS["ragged_flat"](tmp_path / "m")
    _set_int64("ends/data.ninja", 0, 10**6)(tmp_path / "m")
    m = RaggedMmap(tmp_path / "m")
    np.testing.assert_array_equal(m[1], np.arange(4))
    np.testing.assert_array_equal(m[2], np.arange(2))
    with pytest.raises(MapFormatError):
        m[0]


@pytest.mark.parametrize("kind", kind_params("bad input"))
def test_every_kind_with_a_truncated_data_file_reads_right_or_names_it(tmp_path, kind):
    """Every kind of the catalogue: each data.ninja cut short by one byte gives either the
    original samples (a file the reader does not need, such as flattened_shapes/) or a
    MapFormatError naming that very file, never other samples."""
    k = CATALOGUE[kind]
    template = tmp_path / "template"
    k.build(template, k.samples(9))
    data_files = sorted(p.relative_to(template) for p in template.rglob("data.ninja") if p.stat().st_size)
    assert data_files
    errors = 0
    for i, relative in enumerate(data_files):
        path = tmp_path / f"m{i}"
        shutil.copytree(template, path)
        target = path / relative
        target.write_bytes(target.read_bytes()[:-1])
        try:
            got = k.read_all(path)
        except MapFormatError as e:
            errors += 1
            assert str(target) in str(e), (relative, str(e))
        else:
            assert len(got) == 9 and all(k.equal(g, w) for g, w in zip(got, k.samples(9))), relative
    assert errors, "cutting the samples' own data.ninja must be an error"
