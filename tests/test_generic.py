"""generic.open_existing for every kind of map, Wrapped, and the names mmap_ninja 0.9.0 users import."""

from __future__ import annotations

import inspect
from typing import Any, List

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import MapFormatError, RaggedMmap, StringsMmap, Wrapped, generic
from mmap_ninja import numpy as np_ninja

from conftest import missing, needs

RAGGED = [np.arange(6, dtype=np.int32).reshape(2, 3), np.arange(2, dtype=np.int32), np.array(7, np.int32), np.zeros((0, 2), np.int32)]
STRINGS = ["a", "", "日本", "🙂x"]
ARRAY = np.arange(12, dtype=np.float64).reshape(4, 3)


@pytest.fixture
def maps(tmp_path):
    RaggedMmap.from_lists(tmp_path / "ragged", RAGGED)
    StringsMmap.from_strings(tmp_path / "strings", STRINGS)
    if not missing("zstandard"):  # the zstd case skips with the reason without it
        StringsMmap.from_strings(tmp_path / "zstd", STRINGS, zstd_level=3)
    np_ninja.from_ndarray(tmp_path / "numpy", ARRAY)
    return tmp_path


def test_open_existing_ragged(maps, same_samples):
    m = generic.open_existing(maps / "ragged")
    assert isinstance(m, RaggedMmap) and len(m) == len(RAGGED)
    same_samples([m[i] for i in range(len(m))], RAGGED)
    same_samples(m[1:], RAGGED[1:])


@pytest.mark.parametrize("name", ["strings", pytest.param("zstd", marks=needs("zstandard"))])
def test_open_existing_strings(maps, name):
    m = generic.open_existing(maps / name)
    assert isinstance(m, StringsMmap)
    assert [m[i] for i in range(len(m))] == STRINGS and m[::-1] == STRINGS[::-1]


def test_open_existing_numpy(maps):
    m = generic.open_existing(maps / "numpy")
    assert isinstance(m, np.memmap) and m.shape == ARRAY.shape and m.dtype == ARRAY.dtype
    for i in range(len(ARRAY)):
        assert type(m[i]) is np.ndarray
        np.testing.assert_array_equal(m[i], ARRAY[i])


@pytest.mark.parametrize("mode", ["r", "rb"])
def test_open_existing_read_only(maps, mode):
    ragged = generic.open_existing(maps / "ragged", mode=mode)
    strings = generic.open_existing(maps / "strings", mode=mode)
    array = generic.open_existing(maps / "numpy", mode=mode)
    with pytest.raises((PermissionError, ValueError)):
        ragged[1] = np.zeros(2, np.int32)
    with pytest.raises((PermissionError, ValueError)):
        strings[0] = "b"
    with pytest.raises((PermissionError, ValueError)):
        array[0] = 1.0
    assert list(generic.open_existing(maps / "strings")) == STRINGS


def test_open_existing_default_mode_lets_strings_and_ragged_be_overwritten(maps, same_samples):
    strings = generic.open_existing(maps / "strings")  # 'r+b' as in 0.9.0
    strings[2] = "中文"  # same byte length
    assert list(StringsMmap(maps / "strings")) == ["a", "", "中文", "🙂x"]


@needs("zstandard")
def test_open_existing_with_wrapper_fn(maps):
    shape_of = generic.open_existing(maps / "ragged", wrapper_fn=lambda a: a.shape)
    assert [shape_of[i] for i in range(4)] == [(2, 3), (2,), (), (0, 2)]
    assert shape_of[1:3] == [(2,), ()] and list(shape_of) == [(2, 3), (2,), (), (0, 2)]

    upper = generic.open_existing(maps / "zstd", wrapper_fn=str.upper)
    assert isinstance(upper, Wrapped) and len(upper) == 4
    assert [upper[i] for i in range(4)] == [s.upper() for s in STRINGS]
    assert upper[-1] == "🙂X"
    # as in 0.9.0, Wrapped passes a slice to wrapper_fn as one batch
    assert generic.open_existing(maps / "zstd", wrapper_fn=lambda batch: batch[::-1])[:2] == ["", "a"]

    total = generic.open_existing(maps / "numpy", wrapper_fn=lambda row: float(row.sum()))
    assert isinstance(total, Wrapped) and len(total) == 4
    assert [total[i] for i in range(4)] == [float(r.sum()) for r in ARRAY]
    assert total[np.int64(-1)] == float(ARRAY[-1].sum()) and list(total) == [float(r.sum()) for r in ARRAY]
    assert total[0:2] == float(ARRAY[0:2].sum())


def test_open_existing_refuses_what_is_no_map(tmp_path):
    with pytest.raises(FileNotFoundError):
        generic.open_existing(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapFormatError):
        generic.open_existing(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "type.ninja").write_text("tensor")
    with pytest.raises(MapFormatError):
        generic.open_existing(tmp_path / "odd")


# -- Wrapped -------------------------------------------------------------------------------


def test_wrapped_over_a_plain_list():
    w = Wrapped([1, 2, 3], lambda x: x * 10)
    assert len(w) == 3 and w[0] == 10 and w[-1] == 30
    assert list(w) == [10, 20, 30]
    # as in 0.9.0, a slice is wrapped as one batch: wrapper_fn(data[1:])
    assert w[1:] == [2, 3] * 10
    batch = Wrapped(np.arange(4), lambda x: x.sum())[1:3]
    assert batch == 3


@pytest.mark.parametrize("copy_first", [True, False])
def test_wrapped_copy_before_wrapper_fn(tmp_path, copy_first):
    array = np_ninja.from_ndarray(tmp_path / "a", np.arange(6.0).reshape(3, 2))
    seen: List[Any] = []

    def keep(row: np.ndarray) -> np.ndarray:
        seen.append(row)
        return row

    w = Wrapped(array, keep, copy_before_wrapper_fn=copy_first)
    np.testing.assert_array_equal(w[1], [2.0, 3.0])
    assert np.shares_memory(seen[0], array) is not copy_first
    assert Wrapped(array, keep).copy_before_wrapper_fn is True  # the default, as in 0.9.0


def test_wrapped_over_each_map_kind(maps, same_samples):
    ragged = Wrapped(RaggedMmap(maps / "ragged"), np.ravel)
    same_samples(list(ragged), [s.ravel() for s in RAGGED])
    strings = Wrapped(StringsMmap(maps / "strings"), len)
    assert list(strings) == [len(s) for s in STRINGS]


# -- names ---------------------------------------------------------------------------------


def test_top_level_names():
    assert mmap_ninja.RaggedMmap is mmap_ninja.ragged.RaggedMmap
    assert mmap_ninja.StringsMmap is mmap_ninja.string.StringsMmap
    assert mmap_ninja.open_existing is generic.open_existing
    assert mmap_ninja.Wrapped is mmap_ninja.wrapped.Wrapped
    assert mmap_ninja.np_from_ndarray is np_ninja.from_ndarray
    assert mmap_ninja.np_from_generator is np_ninja.from_generator
    assert mmap_ninja.np_open_existing is np_ninja.open_existing
    assert mmap_ninja.np_extend is np_ninja.extend
    assert mmap_ninja.np_extend_dir is np_ninja.extend_dir
    assert mmap_ninja.np_append is np_ninja.append
    for name in mmap_ninja.__all__:
        assert hasattr(mmap_ninja, name), name
    assert issubclass(mmap_ninja.MapFormatError, ValueError)
    assert issubclass(mmap_ninja.ReadOnlyMapError, PermissionError)
    assert isinstance(mmap_ninja.__version__, str)


# The parameter names of mmap_ninja 0.9.0's public calls: code that passes them by keyword
# must keep working.
KEYWORDS_OF_0_9_0 = {
    "RaggedMmap": ["out_dir", "wrapper_fn", "mode", "copy_before_wrapper_fn"],
    "RaggedMmap.from_lists": ["out_dir", "lists", "dtype", "mode", "wrapper_fn"],
    "RaggedMmap.from_generator": ["out_dir", "sample_generator", "batch_size", "verbose"],
    "RaggedMmap.from_indexable": ["out_dir", "indexable", "batch_size", "n_jobs", "verbose"],
    "RaggedMmap.append": ["array"],
    "RaggedMmap.extend": ["arrays"],
    "StringsMmap": ["out_dir", "mode"],
    "StringsMmap.from_strings": ["out_dir", "strings", "mode", "verbose", "zstd_level", "zstd_train_dictionary_size"],
    "StringsMmap.from_generator": ["out_dir", "sample_generator", "batch_size", "verbose"],
    "StringsMmap.extend": ["list_of_strings", "verbose"],
    "StringsMmap.append": ["string"],
    "np_from_ndarray": ["out_dir", "arr"],
    "np_from_generator": ["out_dir", "sample_generator", "batch_size", "verbose"],
    "np_open_existing": ["out_dir", "mode"],
    "np_extend_dir": ["out_dir", "arr"],
    "np_extend": ["np_mmap", "arr"],
    "np_append": ["np_mmap", "arr"],
    "open_existing": ["out_dir", "wrapper_fn", "mode"],
    "Wrapped": ["data", "wrapper_fn", "copy_before_wrapper_fn"],
}


@pytest.mark.parametrize("call", sorted(KEYWORDS_OF_0_9_0))
def test_keyword_names_of_0_9_0(call):
    obj: Any = mmap_ninja
    for part in call.split("."):
        obj = getattr(obj, part)
    params = inspect.signature(obj).parameters
    missing = [name for name in KEYWORDS_OF_0_9_0[call] if name not in params]
    assert not missing, f"{call} lacks {missing}"


def test_legacy_key_arguments_are_accepted(tmp_path, same_samples):
    keys = dict(starts_key="starts", ends_key="ends", shapes_key="shapes", flattened_shapes_key="flattened_shapes")
    RaggedMmap.from_lists(out_dir=tmp_path / "r", lists=[[1], [2, 3]], **keys)
    same_samples(list(RaggedMmap(tmp_path / "r", **keys)), [np.array([1]), np.array([2, 3])])
    StringsMmap.from_strings(out_dir=tmp_path / "s", strings=["x"], starts_key="starts", ends_key="ends")
    assert list(StringsMmap(tmp_path / "s", starts_key="starts", ends_key="ends")) == ["x"]
    with pytest.raises(TypeError):
        RaggedMmap(tmp_path / "r", starts_key="other_starts")


def test_keyword_calls_as_0_9_0_users_write_them(tmp_path, same_samples):
    m = mmap_ninja.np_from_generator(out_dir=tmp_path / "n", sample_generator=iter([[1, 2], [3, 4]]), batch_size=1, verbose=False)
    mmap_ninja.np_extend(np_mmap=m, arr=np.array([[5, 6]]))
    mmap_ninja.np_append(np_mmap=m, arr=np.array([7, 8]))
    mmap_ninja.np_extend_dir(out_dir=tmp_path / "n", arr=np.array([[9, 10]]))
    np.testing.assert_array_equal(mmap_ninja.np_open_existing(out_dir=tmp_path / "n", mode="r"), np.arange(1, 11).reshape(5, 2))
    r = RaggedMmap.from_generator(out_dir=tmp_path / "r", sample_generator=iter([[1], [2, 3]]), batch_size=1, verbose=False)
    r.extend(arrays=[np.array([4])])
    r.append(array=np.array([5, 6]))
    same_samples(list(RaggedMmap(out_dir=tmp_path / "r", mode="r")), [np.array([1]), np.array([2, 3]), np.array([4]), np.array([5, 6])])
    s = StringsMmap.from_generator(out_dir=tmp_path / "s", sample_generator=iter(["a"]), batch_size=1, verbose=False)
    s.extend(list_of_strings=["b"], verbose=False)
    s.append(string="c")
    assert list(mmap_ninja.open_existing(out_dir=tmp_path / "s", wrapper_fn=None, mode="r+b")) == ["a", "b", "c"]


def test_0_9_0_public_methods_exist(tmp_path):
    """mmap_ninja 0.9.0 had public single/multiple accessors on both classes; code may call them."""
    ragged = RaggedMmap.from_lists(tmp_path / "r", [np.arange(2), np.arange(3)])
    strings = StringsMmap.from_strings(tmp_path / "s", ["ab", "cd"])
    missing = [
        f"{type(m).__name__}.{name}"
        for m in (ragged, strings)
        for name in ("get_single", "get_multiple", "set_single", "set_multiple")
        if not callable(getattr(m, name, None))
    ]
    assert not missing, f"missing 0.9.0 methods: {missing}"
