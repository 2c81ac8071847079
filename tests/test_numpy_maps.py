"""np_ninja (``mmap_ninja.numpy``): same-shape maps as an ``np.memmap``.

Indexing a map gives plain ndarrays (or numpy scalars), never memmaps; every test compares
every sample with what was written.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mmap_ninja import numpy as np_ninja

DTYPES = ["bool", "float16", "int8", "uint64", "complex64", "float64", "int32", "uint8"]


def values(dtype: str, shape: tuple, seed: int = 0) -> np.ndarray:
    """An array of ``shape`` using the range of ``dtype`` (signs, large ints, imaginary parts)."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    kind = np.dtype(dtype).kind
    if kind == "b":
        flat = rng.integers(0, 2, count).astype(bool)
    elif kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
    elif kind == "c":
        flat = (rng.standard_normal(count) + 1j * rng.standard_normal(count)).astype(dtype)
    else:
        flat = (rng.standard_normal(count) * 100).astype(dtype)
    return flat.reshape(shape)


def check_map(m, expected: np.ndarray) -> None:
    """``m`` holds ``expected``: as a whole, and sample by sample as plain ndarrays/scalars."""
    expected = np.asarray(expected)
    assert isinstance(m, np.memmap)
    assert m.dtype == expected.dtype and m.shape == expected.shape and len(m) == len(expected)
    np.testing.assert_array_equal(np.asarray(m), expected)
    for i in range(len(expected)):
        sample = m[i]
        if expected.ndim == 1:  # 0-d samples come back as numpy scalars, like np.ndarray's
            assert isinstance(sample, np.generic) and sample.dtype == expected.dtype
            assert sample == expected[i] or (np.isnan(sample) and np.isnan(expected[i]))
        else:
            assert type(sample) is np.ndarray, type(sample)
            assert sample.dtype == expected.dtype and sample.shape == expected.shape[1:]
            np.testing.assert_array_equal(sample, expected[i])


def reopened(path, mode: str = "r"):
    return np_ninja.open_existing(path, mode=mode)


# -- from_ndarray --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6,), (4, 3), (2, 3, 4, 2)], ids=["0-d-samples", "1-D", "3-D"])
def test_from_ndarray_every_dtype_and_rank(tmp_path, dtype, shape):
    arr = values(dtype, shape)
    m = np_ninja.from_ndarray(tmp_path / "a", arr)
    check_map(m, arr)
    check_map(reopened(tmp_path / "a"), arr)
    assert (tmp_path / "a" / "dtype.ninja").read_text() == np.dtype(dtype).name


@pytest.mark.parametrize("order", ["C", "F"])
def test_fortran_and_c_order_inputs(tmp_path, order):
    arr = np.asarray(values("float32", (5, 3, 4)), order=order)
    check_map(np_ninja.from_ndarray(tmp_path / "a", arr), arr)
    check_map(reopened(tmp_path / "a"), arr)
    np_ninja.append(reopened(tmp_path / "a"), np.ones((3, 4), np.float32))
    check_map(reopened(tmp_path / "a"), np.concatenate([arr, np.ones((1, 3, 4), np.float32)]))


def test_non_contiguous_input(tmp_path):
    base = values("int32", (6, 8))
    view = base[::2, 1::3]
    check_map(np_ninja.from_ndarray(tmp_path / "a", view), np.ascontiguousarray(view))


def test_nested_lists_input(tmp_path):
    check_map(np_ninja.from_ndarray(tmp_path / "a", [[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]]))


def test_empty_samples(tmp_path):
    arr = np.zeros((4, 0, 3), np.int16)
    m = np_ninja.from_ndarray(tmp_path / "a", arr)
    check_map(m, arr)
    np_ninja.extend(m, np.zeros((2, 0, 3), np.int16))
    check_map(reopened(tmp_path / "a"), np.zeros((6, 0, 3), np.int16))


def test_map_with_no_samples_that_extend_fills(tmp_path):
    m = np_ninja.from_ndarray(tmp_path / "a", np.zeros((0, 3), np.float32))
    assert m.shape == (0, 3) and len(m) == 0 and list(m) == []
    assert type(m[:]) is np.ndarray and m[:].shape == (0, 3)
    check_map(reopened(tmp_path / "a"), np.zeros((0, 3), np.float32))
    np_ninja.extend(m, np.arange(6, dtype=np.float32).reshape(2, 3))
    check_map(reopened(tmp_path / "a"), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_from_ndarray_replaces_an_existing_map(tmp_path):
    np_ninja.from_ndarray(tmp_path / "a", np.zeros((10, 10)))
    check_map(np_ninja.from_ndarray(tmp_path / "a", np.arange(3)), np.arange(3))
    check_map(reopened(tmp_path / "a"), np.arange(3))


def test_a_0d_array_is_refused(tmp_path):
    with pytest.raises(ValueError):
        np_ninja.from_ndarray(tmp_path / "a", np.float32(1.0))


# -- from_generator ------------------------------------------------------------------------


SAMPLES = [np.full((2, 3), i, np.int16) * np.arange(3, dtype=np.int16) for i in range(7)]


@pytest.mark.parametrize("batch_size", [1, 2, 7, 1000])
def test_from_generator_n_none(tmp_path, batch_size):
    m = np_ninja.from_generator(tmp_path / "a", iter(SAMPLES), batch_size=batch_size)
    check_map(m, np.stack(SAMPLES))
    check_map(reopened(tmp_path / "a"), np.stack(SAMPLES))


@pytest.mark.parametrize("n", [7, 3, 100], ids=["exact", "fewer-than-yielded", "more-than-yielded"])
def test_from_generator_holds_exactly_the_samples_yielded_whatever_n_says(tmp_path, n):
    m = np_ninja.from_generator(tmp_path / "a", (s for s in SAMPLES), batch_size=3, n=n)
    check_map(m, np.stack(SAMPLES))
    check_map(reopened(tmp_path / "a"), np.stack(SAMPLES))


def test_from_generator_scalar_samples_and_dtype(tmp_path):
    m = np_ninja.from_generator(tmp_path / "a", range(5), batch_size=2, dtype=np.uint8)
    check_map(m, np.arange(5, dtype=np.uint8))


def test_from_generator_that_yields_nothing_builds_nothing(tmp_path):
    with pytest.raises(ValueError):
        np_ninja.from_generator(tmp_path / "a", iter([]), batch_size=4)
    assert not (tmp_path / "a").exists()


def test_from_generator_verbose_shows_a_progress_bar(tmp_path, capfd):
    np_ninja.from_generator(tmp_path / "a", iter(SAMPLES), batch_size=2, n=7, verbose=True)
    assert "7" in capfd.readouterr().err
    np_ninja.from_generator(tmp_path / "b", iter(SAMPLES), batch_size=2)
    np_ninja.from_generator(tmp_path / "c", iter(SAMPLES), batch_size=2, n=7, verbose=False)
    assert capfd.readouterr() == ("", "")


# -- open_existing -------------------------------------------------------------------------


@pytest.fixture
def stored(tmp_path):
    arr = values("float32", (5, 4))
    np_ninja.from_ndarray(tmp_path / "a", arr)
    return tmp_path / "a", arr


def test_open_read_only(stored):
    path, arr = stored
    m = np_ninja.open_existing(path)  # 'r' by default, as in 0.9.0
    check_map(m, arr)
    with pytest.raises(ValueError):
        m[0] = 1.0
    for mode in ("r", "rb"):
        check_map(np_ninja.open_existing(path, mode=mode), arr)


@pytest.mark.parametrize("mode", ["r+", "r+b", "w+"])
def test_open_writable_persists_writes(stored, mode):
    path, arr = stored
    m = np_ninja.open_existing(path, mode=mode)
    check_map(m, arr)  # 'w+' must never truncate a map
    m[1] = np.arange(4, dtype=np.float32)
    m[-1, 2] = 42.0
    m.flush()
    expected = arr.copy()
    expected[1] = np.arange(4)
    expected[-1, 2] = 42.0
    check_map(reopened(path), expected)


def test_open_copy_on_write_keeps_the_file(stored):
    path, arr = stored
    m = np_ninja.open_existing(path, mode="c")
    m[0] = 0.0
    assert (m[0] == 0).all()
    check_map(reopened(path), arr)


def test_open_a_missing_map(tmp_path):
    with pytest.raises(FileNotFoundError):
        np_ninja.open_existing(tmp_path / "nothing")


def test_from_builders_open_writable(tmp_path):
    m = np_ninja.from_ndarray(tmp_path / "a", np.zeros((2, 2)))
    m[0] = 1.0
    m.flush()
    check_map(reopened(tmp_path / "a"), np.array([[1.0, 1.0], [0.0, 0.0]]))


# -- indexing ------------------------------------------------------------------------------


def test_every_index_gives_plain_ndarrays(stored):
    path, arr = stored
    m = np_ninja.open_existing(path)
    for item in (0, -1, np.int64(2), slice(1, 4), slice(None, None, -2), [3, 0, 3], np.array([1, 2]), arr[:, 0] > 0, (slice(None), 1), (Ellipsis, 2)):
        got = m[item]
        assert type(got) is np.ndarray, (item, type(got))
        np.testing.assert_array_equal(got, arr[item])
        assert got.dtype == arr.dtype and got.shape == arr[item].shape
    assert type(m[1, 2]) is np.float32 and m[1, 2] == arr[1, 2]
    with pytest.raises(IndexError):
        m[5]


def test_views_of_a_map_index_to_plain_ndarrays(stored):
    path, arr = stored
    m = np_ninja.open_existing(path)
    for view, expected in ((m.T, arr.T), (m.reshape(10, 2), arr.reshape(10, 2)), (m[...], arr)):
        got = view[1]
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, expected[1])


def test_computations_give_what_a_plain_memmap_gives(stored):
    """Arithmetic gives ndarrays and reductions give numpy scalars, as on np.memmap in 0.9.0.

    A 0-d map instead of a scalar is unhashable, so ``{m.max(): ...}`` would fail.
    """
    path, arr = stored
    m = np_ninja.open_existing(path)
    assert type(m + 1) is np.ndarray and type(np.sqrt(np.abs(m))) is np.ndarray
    np.testing.assert_array_equal(m + 1, arr + 1)
    total = m.sum()
    assert isinstance(total, np.generic) and total == arr.sum()
    assert isinstance(m.max(), np.generic)
    assert {m.max(): "ok"} == {arr.max(): "ok"}


def test_iteration_and_len(stored):
    path, arr = stored
    m = np_ninja.open_existing(path)
    rows = list(m)
    assert len(rows) == len(m) == 5
    for row, expected in zip(rows, arr):
        assert type(row) is np.ndarray
        np.testing.assert_array_equal(row, expected)


def test_pickles_by_reference(tmp_path):
    arr = np.arange(200_000, dtype=np.float64).reshape(1000, 200)
    m = np_ninja.from_ndarray(tmp_path / "a", arr)
    data = pickle.dumps(np_ninja.open_existing(tmp_path / "a"))
    assert len(data) < 2000
    check_map(pickle.loads(data), arr)
    check_map(pickle.loads(pickle.dumps(m)), arr)


# -- extending -----------------------------------------------------------------------------


def test_extend_append_and_extend_dir(tmp_path):
    arr = values("int8", (3, 2, 2))
    m = np_ninja.from_ndarray(tmp_path / "a", arr)
    more = values("int8", (4, 2, 2), seed=1)
    np_ninja.extend(m, more[:2])
    np_ninja.append(m, more[2])
    np_ninja.extend_dir(tmp_path / "a", more[3:])
    np_ninja.extend_dir(str(tmp_path / "a"), np.zeros((0, 2, 2), np.int8))
    check_map(reopened(tmp_path / "a"), np.concatenate([arr, more]))


def test_extend_through_a_reopened_map_and_lossless_casts(tmp_path):
    np_ninja.from_ndarray(tmp_path / "a", np.zeros((1, 3), np.float64))
    np_ninja.extend(reopened(tmp_path / "a"), [[1, 2, 3]])  # Python ints fit float64
    np_ninja.append(reopened(tmp_path / "a"), np.array([4, 5, 6], np.int16))
    check_map(reopened(tmp_path / "a"), np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6]], np.float64))


def test_append_scalar_samples(tmp_path):
    m = np_ninja.from_ndarray(tmp_path / "a", np.array([True, False]))
    np_ninja.append(m, True)
    np_ninja.append(m, np.bool_(False))
    check_map(reopened(tmp_path / "a"), np.array([True, False, True, False]))


def test_extend_refuses_another_sample_shape_and_writes_nothing(tmp_path):
    m = np_ninja.from_ndarray(tmp_path / "a", np.zeros((2, 3)))
    with pytest.raises(ValueError):
        np_ninja.extend(m, np.zeros((1, 4)))
    with pytest.raises(ValueError):
        np_ninja.append(m, np.zeros(4))
    check_map(reopened(tmp_path / "a"), np.zeros((2, 3)))


def test_extend_dir_on_a_missing_map(tmp_path):
    with pytest.raises(FileNotFoundError):
        np_ninja.extend_dir(tmp_path / "nothing", np.zeros((1, 2)))


def test_durable_builders_and_extends_store_the_same_samples(tmp_path):
    arr = values("float64", (6, 2))
    np_ninja.from_ndarray(tmp_path / "a", arr[:3], durable=True)
    np_ninja.extend_dir(tmp_path / "a", arr[3:], durable=True)
    np_ninja.from_generator(tmp_path / "b", iter(arr), batch_size=4, durable=True)
    check_map(reopened(tmp_path / "a"), arr)
    check_map(reopened(tmp_path / "b"), arr)


def test_map_dir_names_the_directory(tmp_path):
    m = np_ninja.from_ndarray(tmp_path / "a", np.zeros(3))
    assert m.map_dir == str(tmp_path / "a") and reopened(tmp_path / "a").map_dir == str(tmp_path / "a")
