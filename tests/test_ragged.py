"""RaggedMmap: every builder, every way of indexing, writing in place and appending.

Each test compares every sample it reads with what was written (type, dtype, shape, values).
"""

from __future__ import annotations

import pickle
from typing import Any, List

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, ReadOnlyMapError

from conftest import require

DTYPES = ["bool", "float16", "int8", "uint64", "complex64", "float32", "int64", "uint8"]


def example_values(dtype: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` values of ``dtype`` that use its range (signs, large ints, imaginary parts)."""
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind == "b":
        return rng.integers(0, 2, count).astype(bool)
    if kind == "u":
        info = np.iinfo(dtype)
        return rng.integers(0, info.max, count, dtype=dtype, endpoint=True)
    if kind == "i":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
    if kind == "c":
        return (rng.standard_normal(count) + 1j * rng.standard_normal(count)).astype(dtype)
    return (rng.standard_normal(count) * 100).astype(dtype)


def ragged_1d(dtype: str = "int64", lengths=(3, 0, 1, 7, 2)) -> List[np.ndarray]:
    values = example_values(dtype, sum(lengths))
    bounds = np.cumsum((0,) + tuple(lengths))
    return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def images(count: int = 5, seed: int = 1) -> List[np.ndarray]:
    """Samples of varying height and width with 3 channels, like decoded images."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(1, 9)), int(rng.integers(1, 9)), 3), dtype=np.uint8) for _ in range(count)]


MIXED_NDIM = [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.arange(4, dtype=np.float32),
    np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    np.zeros((0, 3), np.float32),
    np.float32(7.5).reshape(()),
    np.ones((1, 1, 1, 1), np.float32),
]


# -- from_lists ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_lists_keeps_every_dtype(tmp_path, same_samples, dtype):
    samples = ragged_1d(dtype)
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    assert m.dtype == np.dtype(dtype)
    same_samples([m[i] for i in range(len(m))], samples)


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_lists_multi_axis_samples_of_every_dtype(tmp_path, same_samples, dtype):
    shapes = [(2, 3), (1, 1), (4, 2), (0, 5), (3, 1, 2)]
    values = example_values(dtype, sum(int(np.prod(s)) for s in shapes))
    samples, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        samples.append(values[offset : offset + size].reshape(shape))
        offset += size
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    same_samples(list(m), samples)


def test_images(tmp_path, same_samples):
    samples = images(12)
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    assert len(m) == 12
    same_samples([m[i] for i in range(12)], samples)
    same_samples(RaggedMmap(tmp_path / "m")[:], samples)


def test_mixed_number_of_axes_incl_scalar_and_empty(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", MIXED_NDIM)
    same_samples(list(m), MIXED_NDIM)
    same_samples(m[::-1], MIXED_NDIM[::-1])


def test_scalars_are_0d_samples(tmp_path, same_samples):
    samples = [np.array(v, np.int16) for v in (5, -3, 0, 32767)]
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    same_samples(list(m), samples)
    assert m[3].shape == () and int(m[3]) == 32767


def test_scalars_mixed_with_1d_and_empty(tmp_path, same_samples):
    samples = [np.array(4), np.arange(1), np.arange(0), np.arange(5), np.array(-1), np.arange(0)]
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    same_samples(list(m), samples)
    same_samples(m.get_batch([1, 0, 4, 2]), [samples[1], samples[0], samples[4], samples[2]])


def test_only_empty_samples(tmp_path, same_samples):
    samples = [np.zeros(0, np.int32)] * 3
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    same_samples(list(m), samples)
    m.append(np.arange(2, dtype=np.int32))
    same_samples(list(RaggedMmap(tmp_path / "m")), samples + [np.arange(2, dtype=np.int32)])


def test_empty_list_gives_an_empty_map_that_append_fills(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [])
    assert len(m) == 0 and list(m) == [] and m[:] == [] and m.get_batch([]) == []
    with pytest.raises(IndexError):
        m[0]
    m.append(np.arange(3, dtype=np.uint8))
    same_samples(list(RaggedMmap(tmp_path / "m")), [np.arange(3, dtype=np.uint8)])


def test_nested_python_lists(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [[1, 2, 3], [4], [[5, 6], [7, 8]]])
    same_samples(list(m), [np.array([1, 2, 3]), np.array([4]), np.array([[5, 6], [7, 8]])])


@pytest.mark.parametrize("order", ["C", "F"])
def test_fortran_and_c_order_inputs_read_back_in_their_logical_order(tmp_path, same_samples, order):
    base = [np.arange(12, dtype=np.float64).reshape(3, 4), np.arange(30, dtype=np.float64).reshape(2, 3, 5)]
    samples = [np.asarray(s, order=order) for s in base]
    assert all(s.flags.f_contiguous for s in samples) or order == "C"
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    same_samples(list(m), base)
    # non-contiguous inputs (transposed and strided views) too
    views = [base[0].T, base[1][:, ::2, 1:]]
    m2 = RaggedMmap.from_lists(tmp_path / "views", views)
    same_samples(list(m2), [np.ascontiguousarray(v) for v in views])


def test_dtype_argument_casts(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [[1, 2], [3]], dtype=np.float32)
    same_samples(list(m), [np.array([1, 2], np.float32), np.array([3], np.float32)])


def test_without_dtype_the_samples_decide_it_by_promotion(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2, dtype=np.int8), np.array([0.5, 1.5])])
    assert m.dtype == np.float64
    same_samples(list(m), [np.array([0.0, 1.0]), np.array([0.5, 1.5])])


def test_from_lists_replaces_an_existing_map(tmp_path, same_samples):
    RaggedMmap.from_lists(tmp_path / "m", [np.arange(10)] * 4)
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2)])
    same_samples(list(m), [np.arange(2)])
    same_samples(list(RaggedMmap(tmp_path / "m")), [np.arange(2)])


def test_from_lists_accepts_str_paths_and_opens_writable(tmp_path):
    m = RaggedMmap.from_lists(str(tmp_path / "m"), [np.arange(3)])
    m[0] = np.array([7, 8, 9])
    assert RaggedMmap(tmp_path / "m")[0].tolist() == [7, 8, 9]


# -- from_generator ------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 5, 6, 1000])
def test_from_generator_every_batch_size(tmp_path, same_samples, batch_size):
    samples = ragged_1d("int32", lengths=(4, 1, 0, 3, 9, 2))
    m = RaggedMmap.from_generator(tmp_path / "m", iter(samples), batch_size=batch_size)
    same_samples(list(m), samples)
    same_samples(list(RaggedMmap(tmp_path / "m")), samples)


def test_from_generator_multi_axis_in_small_batches(tmp_path, same_samples):
    samples = images(7)
    m = RaggedMmap.from_generator(tmp_path / "m", (s for s in samples), batch_size=2)
    same_samples(list(m), samples)


def test_from_generator_that_yields_nothing_is_an_empty_map(tmp_path, same_samples):
    m = RaggedMmap.from_generator(tmp_path / "m", iter([]), batch_size=4)
    assert len(m) == 0 and list(m) == []
    m.extend([np.array([1.5]), np.array([[1.0, 2.0]])])
    reopened = RaggedMmap(tmp_path / "m")
    same_samples(list(reopened), [np.array([1.5]), np.array([[1.0, 2.0]])])


def test_from_generator_with_dtype(tmp_path, same_samples):
    m = RaggedMmap.from_generator(tmp_path / "m", ([i] * i for i in range(4)), batch_size=3, dtype=np.int16)
    same_samples(list(m), [np.array([i] * i, np.int16) for i in range(4)])


def test_from_generator_verbose_shows_a_progress_bar(tmp_path, capfd):
    RaggedMmap.from_generator(tmp_path / "m", (np.arange(i) for i in range(5)), batch_size=2, verbose=True)
    out, err = capfd.readouterr()
    assert "5" in err and ("it/s" in err or "sample" in err), err


def test_from_generator_quiet_by_default(tmp_path, capfd):
    RaggedMmap.from_generator(tmp_path / "m", (np.arange(i) for i in range(5)), batch_size=2)
    RaggedMmap.from_generator(tmp_path / "n", (np.arange(i) for i in range(5)), batch_size=2, verbose=False)
    assert capfd.readouterr() == ("", "")


# -- from_indexable ------------------------------------------------------------------------


class IndexableWithoutLength:
    """A dataset known only by __getitem__, ending with IndexError (like a Python sequence)."""

    def __init__(self, count: int):
        self.count = count

    def __getitem__(self, i: int) -> np.ndarray:
        if i >= self.count:
            raise IndexError(i)
        return np.full((i % 3 + 1, 2), i, np.int32)


def sample_of(i: int) -> np.ndarray:
    """A module-level function of an int, so that joblib's workers can import it."""
    if i >= 11:
        raise IndexError(i)
    return np.arange(i, dtype=np.int64) * i


def test_from_indexable_with_length(tmp_path, same_samples):
    samples = ragged_1d("float32", lengths=(1, 2, 3, 0, 5, 6, 7))
    m = RaggedMmap.from_indexable(tmp_path / "m", samples, batch_size=3)
    same_samples(list(m), samples)


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_from_indexable_without_length(tmp_path, same_samples, batch_size):
    m = RaggedMmap.from_indexable(tmp_path / "m", IndexableWithoutLength(8), batch_size=batch_size)
    same_samples(list(m), [IndexableWithoutLength(8)[i] for i in range(8)])


def test_from_indexable_plain_function(tmp_path, same_samples):
    m = RaggedMmap.from_indexable(tmp_path / "m", sample_of, batch_size=4)
    same_samples(list(m), [sample_of(i) for i in range(11)])


def test_from_indexable_two_jobs_with_joblib(tmp_path, same_samples):
    require("joblib")
    expected = [sample_of(i) for i in range(11)]
    m = RaggedMmap.from_indexable(tmp_path / "fn", sample_of, batch_size=4, n_jobs=2)
    same_samples(list(m), expected)
    m2 = RaggedMmap.from_indexable(tmp_path / "seq", expected, batch_size=3, n_jobs=2)
    same_samples(list(m2), expected)


def test_from_indexable_empty(tmp_path):
    m = RaggedMmap.from_indexable(tmp_path / "m", [], batch_size=4)
    assert len(m) == 0 and list(m) == []


def test_from_indexable_passes_builder_options(tmp_path, same_samples, capfd):
    m = RaggedMmap.from_indexable(tmp_path / "m", [[1, 2], [3]], batch_size=1, dtype=np.uint8, verbose=True)
    same_samples(list(m), [np.array([1, 2], np.uint8), np.array([3], np.uint8)])
    assert capfd.readouterr().err != ""


# -- opening -------------------------------------------------------------------------------


def test_constructor_opens_an_existing_map(tmp_path, same_samples):
    samples = images(4)
    RaggedMmap.from_lists(tmp_path / "m", samples)
    m = RaggedMmap(tmp_path / "m")
    assert len(m) == 4 and m.dtype == np.uint8
    same_samples(list(m), samples)


def test_constructor_on_a_new_path_is_an_empty_map_that_append_and_extend_fill(tmp_path, same_samples):
    m = RaggedMmap(tmp_path / "new")
    assert len(m) == 0 and list(m) == [] and m[:] == []
    m.append(np.arange(3, dtype=np.int16))
    m.extend([np.arange(5, dtype=np.int16), np.zeros(0, np.int16)])
    m.append(np.array(9, np.int16))
    expected = [np.arange(3, dtype=np.int16), np.arange(5, dtype=np.int16), np.zeros(0, np.int16), np.array(9, np.int16)]
    same_samples(list(m), expected)
    same_samples(list(RaggedMmap(tmp_path / "new")), expected)


def test_first_extend_of_an_empty_map_may_hold_multi_axis_samples(tmp_path, same_samples):
    m = RaggedMmap(tmp_path / "new")
    samples = images(3)
    m.extend(samples)
    m.extend(images(2, seed=9))
    same_samples(list(RaggedMmap(tmp_path / "new")), samples + images(2, seed=9))


def test_read_only_mode_refuses_setitem(tmp_path, same_samples):
    RaggedMmap.from_lists(tmp_path / "m", [np.arange(3)])
    m = RaggedMmap(tmp_path / "m", mode="r")
    with pytest.raises(ReadOnlyMapError):
        m[0] = np.zeros(3, np.int64)
    same_samples(list(RaggedMmap(tmp_path / "m")), [np.arange(3)])


def test_another_handle_sees_appended_samples(tmp_path, same_samples):
    writer = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2)])
    reader = RaggedMmap(tmp_path / "m")
    writer.extend([np.arange(3), np.arange(4)])
    assert reader.refresh() == 3
    same_samples(list(reader), [np.arange(2), np.arange(3), np.arange(4)])


def test_a_handle_notices_samples_appended_by_another_when_asked_past_its_end(tmp_path, same_sample):
    """spans.py promises: appended samples are noticed "when asked for one past its end"."""
    writer = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2)])
    reader = RaggedMmap(tmp_path / "m")
    writer.append(np.arange(3))
    same_sample(reader[1], np.arange(3))


def test_pickles_by_reference(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(100_000)])
    data = pickle.dumps(m)
    assert len(data) < 2000
    same_samples(list(pickle.loads(data)), [np.arange(100_000)])


# -- indexing ------------------------------------------------------------------------------


@pytest.fixture
def tokens(tmp_path):
    samples = ragged_1d("int32", lengths=(3, 0, 1, 7, 2, 5, 4))
    return RaggedMmap.from_lists(tmp_path / "tokens", samples), samples


@pytest.fixture
def mixed(tmp_path):
    return RaggedMmap.from_lists(tmp_path / "mixed", MIXED_NDIM), MIXED_NDIM


@pytest.fixture(params=["tokens", "mixed"])
def any_map(request):
    return request.getfixturevalue(request.param)


def test_int_indexing_incl_negative_and_numpy_ints(any_map, same_sample):
    m, samples = any_map
    n = len(samples)
    for i in range(-n, n):
        same_sample(m[i], samples[i], f"m[{i}]")
        same_sample(m[np.int64(i)], samples[i], f"m[np.int64({i})]")
        same_sample(m[np.int32(i)], samples[i], f"m[np.int32({i})]")
    for bad in (n, -n - 1, 10**6):
        with pytest.raises(IndexError):
            m[bad]


@pytest.mark.parametrize(
    "item",
    [slice(None), slice(1, 4), slice(None, None, 2), slice(None, None, -1), slice(-3, None), slice(5, 1, -2), slice(4, 2), slice(100, 200)],
    ids=str,
)
def test_slices(any_map, same_samples, item):
    m, samples = any_map
    got = m[item]
    assert isinstance(got, list)
    same_samples(got, samples[item])
    same_samples(m.get_batch(item), samples[item])


@pytest.mark.parametrize(
    "index",
    [[3, 0, 0, 5, 1], (3, 0, 0, 5, 1), np.array([3, 0, 0, 5, 1], np.int64), np.array([3, 0, 0, 5, 1], np.uint8), range(0, 6, 2)],
    ids=["list", "tuple", "int64", "uint8", "range"],
)
def test_index_lists_and_integer_arrays(any_map, same_samples, index):
    m, samples = any_map
    wanted = [samples[int(i)] for i in index]
    same_samples(m[index], wanted)
    same_samples(m.get_batch(index), wanted)


def test_negative_entries_in_index_arrays(any_map, same_samples):
    m, samples = any_map
    same_samples(m[[-1, -2, 0]], [samples[-1], samples[-2], samples[0]])
    same_samples(m[np.array([-1, 2])], [samples[-1], samples[2]])
    with pytest.raises(IndexError):
        m[[0, len(samples)]]


def test_boolean_masks(any_map, same_samples):
    m, samples = any_map
    mask = np.array([i % 2 == 0 for i in range(len(samples))])
    same_samples(m[mask], [s for s, keep in zip(samples, mask) if keep])
    same_samples(m[list(mask)], [s for s, keep in zip(samples, mask) if keep])
    assert m[np.zeros(len(samples), bool)] == []
    with pytest.raises(IndexError):
        m[np.ones(len(samples) + 1, bool)]


def test_empty_index_lists(any_map):
    m, _ = any_map
    assert m[[]] == [] and m.get_batch(np.array([], np.int64)) == []


def test_len_and_iteration(any_map, same_samples):
    m, samples = any_map
    assert len(m) == len(samples)
    same_samples(list(iter(m)), samples)
    same_samples([s for s in m], samples)


# -- padded --------------------------------------------------------------------------------


def test_padded_batch(tokens):
    m, samples = tokens
    batch, lengths = m.padded([3, 1, 0])
    assert batch.dtype == np.int32 and batch.shape == (3, 7)
    assert lengths.tolist() == [7, 0, 3]
    expected = np.zeros((3, 7), np.int32)
    for row, i in enumerate([3, 1, 0]):
        expected[row, : len(samples[i])] = samples[i]
    np.testing.assert_array_equal(batch, expected)


def test_padded_with_pad_value_and_max_len(tokens):
    m, samples = tokens
    batch, lengths = m.padded(slice(None), pad_value=-1, max_len=3)
    assert batch.shape == (len(samples), 3)
    assert lengths.tolist() == [min(len(s), 3) for s in samples]
    for row, s in zip(batch, samples):
        cut = s[:3]
        np.testing.assert_array_equal(row[: len(cut)], cut)
        assert (row[len(cut) :] == -1).all()


def test_padded_max_len_longer_than_every_sample_uses_the_longest(tokens):
    m, samples = tokens
    batch, lengths = m.padded([0, 4], max_len=100)
    assert batch.shape == (2, 3)
    np.testing.assert_array_equal(batch, np.stack([samples[0], np.r_[samples[4], 0]]))


def test_padded_mask_and_empty_batches(tokens):
    m, samples = tokens
    mask = np.zeros(len(samples), bool)
    mask[1] = True  # only the empty sample
    batch, lengths = m.padded(mask)
    assert batch.shape == (1, 0) and lengths.tolist() == [0]
    batch, lengths = m.padded([])
    assert batch.shape == (0, 0) and lengths.tolist() == []


def test_padded_refuses_multi_axis_maps(mixed):
    m, _ = mixed
    with pytest.raises(ValueError):
        m.padded([0, 1])


# -- writing in place ----------------------------------------------------------------------


def test_setitem_int_and_negative(tmp_path, same_samples):
    samples = images(3)
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    new0 = np.full_like(samples[0], 1)
    new2 = np.full_like(samples[2], 2)
    m[0] = new0
    m[-1] = new2
    expected = [new0, samples[1], new2]
    same_samples(list(m), expected)
    same_samples(list(RaggedMmap(tmp_path / "m")), expected)


def test_setitem_slice_and_list(tmp_path, same_samples):
    samples = ragged_1d("int64", lengths=(2, 3, 2, 3))
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    m[1:4:2] = [np.array([7, 7, 7]), np.array([8, 8, 8])]
    m[[0, 2]] = [[1, 1], [2, 2]]
    expected = [np.array([1, 1]), np.array([7, 7, 7]), np.array([2, 2]), np.array([8, 8, 8])]
    same_samples(list(RaggedMmap(tmp_path / "m")), expected)


def test_setitem_refuses_another_shape_and_writes_nothing(tmp_path, same_samples):
    samples = ragged_1d("int64", lengths=(2, 3))
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    with pytest.raises(ValueError):
        m[:] = [np.array([5, 5]), np.array([6, 6])]  # the second has the wrong length
    same_samples(list(RaggedMmap(tmp_path / "m")), samples)


def test_setitem_on_a_scalar_sample(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.array(1.5), np.arange(2.0)])
    m[0] = 2.5
    same_samples(list(RaggedMmap(tmp_path / "m")), [np.array(2.5), np.arange(2.0)])


# -- appending -----------------------------------------------------------------------------


def test_append_and_extend_mixed_ndim(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", MIXED_NDIM[:2])
    m.append(MIXED_NDIM[2])
    m.extend(MIXED_NDIM[3:])
    m.extend([])
    same_samples(list(m), MIXED_NDIM)
    same_samples(list(RaggedMmap(tmp_path / "m")), MIXED_NDIM)


def test_extend_from_a_generator_and_lossless_cast(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2, dtype=np.float32)])
    m.extend(np.arange(i, dtype=np.int16) for i in range(3))  # int16 fits float32 exactly
    expected = [np.arange(2, dtype=np.float32)] + [np.arange(i, dtype=np.float32) for i in range(3)]
    same_samples(list(RaggedMmap(tmp_path / "m")), expected)


def test_indexing_after_append_sees_new_samples(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2)])
    m.append(np.arange(3))
    read = [m[1], *m[0:2], *m.get_batch([1]), *m[[-1]]]
    same_samples(read, [np.arange(3), np.arange(2), np.arange(3), np.arange(3), np.arange(3)])
    batch, lengths = m.padded([0, 1])
    assert lengths.tolist() == [2, 3]


# -- wrapper_fn ----------------------------------------------------------------------------


def test_wrapper_fn_on_every_kind_of_read(tmp_path):
    samples = [np.array([1, 2]), np.array([3, 4, 5]), np.array([6])]
    RaggedMmap.from_lists(tmp_path / "m", samples)
    m = RaggedMmap(tmp_path / "m", wrapper_fn=lambda a: int(a.sum()) * 10)
    sums = [30, 120, 60]
    assert [m[i] for i in range(3)] == sums
    assert m[-1] == sums[-1]
    assert m[:] == sums and m[[2, 0]] == [sums[2], sums[0]] and list(m) == sums


def test_wrapper_fn_from_the_builders(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [[1, 2], [3]], wrapper_fn=lambda a: a.tolist())
    assert list(m) == [[1, 2], [3]]
    g = RaggedMmap.from_generator(tmp_path / "g", iter([[1, 2], [3]]), batch_size=1, wrapper_fn=len)
    assert list(g) == [2, 1]


@pytest.mark.parametrize("copy_first", [True, False])
def test_copy_before_wrapper_fn(tmp_path, copy_first):
    RaggedMmap.from_lists(tmp_path / "m", [np.arange(3), np.arange(2)])
    seen: List[Any] = []

    def keep(a: np.ndarray) -> np.ndarray:
        seen.append(a)
        return a

    m = RaggedMmap(tmp_path / "m", mode="r+", wrapper_fn=keep, copy_before_wrapper_fn=copy_first)
    assert m[0].tolist() == [0, 1, 2] and m[1:] == [seen[-1]]
    # with a copy the wrapper may change its argument freely; without, it sees the map itself
    assert seen[0].flags.owndata is copy_first
    if copy_first:
        seen[0][...] = 0
    assert RaggedMmap(tmp_path / "m")[0].tolist() == [0, 1, 2]


def test_negative_index_right_after_append(tmp_path, same_sample):
    """m[-1] after an append is the new last sample, with or without a wrapper."""
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2)])
    m.append(np.arange(3))
    same_sample(m[-1], np.arange(3))
    w = RaggedMmap.from_lists(tmp_path / "w", [np.arange(2)], wrapper_fn=len)
    w.append(np.arange(3))
    assert w[-1] == 3 and w[-2] == 2


# -- the calls beyond 0.9.0 ----------------------------------------------------------------


def test_durable_builders_and_appends_store_the_same_samples(tmp_path, same_samples):
    samples = images(3)
    a = RaggedMmap.from_lists(tmp_path / "a", samples[:2], durable=True)
    a.append(samples[2], durable=True)
    b = RaggedMmap.from_generator(tmp_path / "b", iter(samples[:1]), batch_size=1, durable=True)
    b.extend(samples[1:], durable=True)
    for path in ("a", "b"):
        same_samples(list(RaggedMmap(tmp_path / path)), samples)


def test_from_generator_total_sets_the_bar_length(tmp_path, capfd):
    m = RaggedMmap.from_generator(tmp_path / "m", (np.arange(i) for i in range(3)), batch_size=2, verbose=True, total=3)
    assert len(m) == 3
    assert "3/3" in capfd.readouterr().err


def test_close_and_context_manager(tmp_path, same_samples):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(2)])
    m.close()
    m.close()
    with RaggedMmap(tmp_path / "m") as again:
        same_samples(list(again), [np.arange(2)])


def test_maps_forgotten_after_appending_leave_no_open_files(tmp_path):
    """Each appending map object holds the map's files open; dropping it must close them."""
    import gc
    import os

    RaggedMmap.from_lists(tmp_path / "m", [np.arange(3)])
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        m = RaggedMmap(tmp_path / "m")
        m.append(np.arange(2))
    del m
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(RaggedMmap(tmp_path / "m")) == 51
