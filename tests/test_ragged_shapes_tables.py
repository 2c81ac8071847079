"""The shape layouts no builder writes by default, and the batch paths that hide wrong rows.

* A *flat* shapes table of k > 1 axes (``shapes_are_flat.ninja`` = 1, ``shapes/`` an (n, k)
  int64 array): the format allows it and the reader supports it, but the builders write
  k = 1 or nested shapes, so the map is laid out here by hand, file by file, as the layout
  in ``mmap_ninja/layout.py`` describes it.
* A nested-shapes map whose samples have the same element count but different shapes:
  there a batch read that took the wrong sample's shape would still reshape without error.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest

from mmap_ninja import RaggedMmap

# No two consecutive rows of the table describe a sample, and several samples share an
# element count with another shape, so a batch read that took the wrong row would still
# reshape without error (and not fall back to reading one sample at a time).
SHAPES_2D = [(2, 3), (3, 2), (6, 1), (1, 6), (2, 2), (1, 4), (4, 1), (1, 1)]


def _samples(shapes: Sequence[tuple], dtype: type = np.int32) -> List[np.ndarray]:
    out, first = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(np.arange(first, first + size, dtype=dtype).reshape(shape))
        first += size
    return out


def _write_array_dir(folder: Path, arr: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.ninja").write_bytes(np.ascontiguousarray(arr).tobytes())
    (folder / "dtype.ninja").write_bytes(arr.dtype.name.encode())
    (folder / "shape.ninja").write_bytes(struct.pack(f"<{arr.ndim}Q", *arr.shape))
    (folder / "order.ninja").write_bytes(b"C")
    (folder / "type.ninja").write_bytes(b"numpy")


def _write_flat_k_map(folder: Path, samples: Sequence[np.ndarray]) -> None:
    """A ragged map whose shapes/ is an (n, k) table, written without mmap_ninja."""
    sizes = np.array([s.size for s in samples], np.int64)
    ends = np.cumsum(sizes)
    _write_array_dir(folder, np.concatenate([s.reshape(-1) for s in samples]))
    (folder / "type.ninja").write_bytes(b"ragged")
    _write_array_dir(folder / "starts", ends - sizes)
    _write_array_dir(folder / "ends", ends)
    _write_array_dir(folder / "flattened_shapes", sizes)
    _write_array_dir(folder / "shapes", np.array([s.shape for s in samples], np.int64))
    (folder / "shapes_are_flat.ninja").write_bytes(struct.pack("<i", 1))


@pytest.fixture
def flat_k(tmp_path: Path):
    samples = _samples(SHAPES_2D)
    _write_flat_k_map(tmp_path / "flat_k", samples)
    return RaggedMmap(tmp_path / "flat_k"), samples


def test_the_hand_built_map_really_has_a_flat_k2_table(flat_k) -> None:
    m, _ = flat_k
    assert m._shape_width == 2  # else the tests below would not run the k > 1 branch


def test_flat_k_table_positive_reads(flat_k, same_sample) -> None:
    m, samples = flat_k
    for i, expected in enumerate(samples):
        same_sample(m[i], expected, f"m[{i}]")
        same_sample(m[np.int64(i)], expected, f"m[np.int64({i})]")


def test_flat_k_table_negative_reads(flat_k, same_sample) -> None:
    m, samples = flat_k
    for i in range(1, len(samples) + 1):
        same_sample(m[-i], samples[-i], f"m[-{i}]")
        same_sample(m[np.int64(-i)], samples[-i], f"m[np.int64(-{i})]")
    with pytest.raises(IndexError):
        m[-len(samples) - 1]


@pytest.mark.parametrize(
    "index",
    [[0, 1, 2, 3, 4, 5, 6, 7], [7, 0, 3, 3, 1], [-1, -8, -3], slice(1, None, 2), slice(None, None, -1), "mask",
     # only samples of 6 elements: a wrong row would still reshape, so nothing falls back
     [0, 1, 2, 3], [3, 2, 1, 0], [1, 2, 3], [2, 0, 3, 1], [-5, -8, -6], slice(0, 4)],
    ids=["all", "shuffled-repeats", "negative", "step", "reversed", "mask",
         "size6", "size6-reversed", "size6-from-1", "size6-shuffled", "size6-negative", "size6-slice"],
)
def test_flat_k_table_batch_reads(flat_k, same_samples, index) -> None:
    m, samples = flat_k
    if index == "mask":
        index = np.array([i % 3 == 1 for i in range(len(samples))])
        expected = [s for s, keep in zip(samples, index) if keep]
    elif isinstance(index, slice):
        expected = samples[index]
    else:
        expected = [samples[i] for i in index]
    same_samples(m[index], expected)
    same_samples(m.get_batch(np.array(index) if not isinstance(index, slice) else index), expected)


def test_flat_k_table_iteration_and_extend(flat_k, same_samples) -> None:
    m, samples = flat_k
    same_samples(list(m), samples)
    more = _samples([(2, 5), (1, 2)])
    m.extend(more)
    same_samples(list(RaggedMmap(m.path)), samples + more)
    same_samples(RaggedMmap(m.path)[[-1, -2, 0]], [more[1], more[0], samples[0]])


# -- nested shapes, same element count, different shapes --------------------------------------

SAME_SIZE = [(2, 3), (3, 2), (1, 6), (6, 1), (3, 2), (2, 3)]


@pytest.fixture
def same_size(tmp_path: Path):
    samples = _samples(SAME_SIZE, np.float32)
    m = RaggedMmap.from_lists(tmp_path / "nested", samples)
    assert m._shape_width == 0  # nested shapes: the branch under test
    return m, samples


@pytest.mark.parametrize(
    "index",
    [[0, 1, 2, 3, 4, 5], [1, 0], [3, 2, 1, 0, 5, 4], [5, 5, 1, 1], [-1, -2, -5], slice(None, None, -1), slice(1, 5)],
)
def test_nested_batch_gives_each_sample_its_own_shape(same_size, same_samples, index) -> None:
    m, samples = same_size
    expected = samples[index] if isinstance(index, slice) else [samples[i] for i in index]
    same_samples(m[index], expected)
    same_samples(m.get_batch(index), expected)


def test_nested_single_reads_of_equal_size_samples(same_size, same_sample) -> None:
    m, samples = same_size
    for i in range(-len(samples), len(samples)):
        same_sample(m[i], samples[i], f"m[{i}]")
