"""Every map pickles by reference (its path and options, a few hundred bytes) whatever its
size, and unpickles to an equivalent open map, so worker processes (multiprocessing under
spawn and fork, joblib) read samples from maps passed as arguments.

mmap_ninja 0.9.0 copies a RaggedMmap's data into the pickle, cannot pickle a StringsMmap
(an open file), and pickles an np.memmap as a full in-memory copy.
"""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from mmap_ninja import ReadOnlyMapError, Wrapped, generic
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import CATALOGUE, kind_params, missing

PICKLE_LIMIT = 4096


def negate(sample: Any) -> Any:
    """A wrapper_fn that workers can import."""
    return -sample


def shout(text: str) -> str:
    return text.upper()


def build_maps(folder: Path, scale: int) -> Dict[str, Any]:
    """One map of every kind, ``scale`` times larger for a larger ``scale``; name -> open map."""
    rng = np.random.default_rng(scale)
    ragged = [rng.integers(-100, 100, int(n), dtype=np.int32) for n in rng.integers(0, 400, 50 * scale)]
    images = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in rng.integers(1, 20, (20 * scale, 2))]
    texts = [f"text {i} " + "é漢" * (i % 13) + "abc" * (i % 50) for i in range(100 * scale)]
    rows = rng.standard_normal((60 * scale, 8, 4))
    RaggedMmap.from_lists(folder / "ragged", ragged)
    RaggedMmap.from_lists(folder / "images", images)
    StringsMmap.from_strings(folder / "strings", texts)
    zstd = not missing("zstandard")  # without it, test_strings' zstd tests skip with the reason
    if zstd:
        StringsMmap.from_strings(folder / "strings_zstd_dict", texts, zstd_level=5, zstd_train_dictionary_size=2048)
    np_ninja.from_ndarray(folder / "rows", rows)
    maps = {
        "RaggedMmap": RaggedMmap(folder / "ragged", mode="r"),
        "RaggedMmap nested, wrapper_fn": RaggedMmap(folder / "images", wrapper_fn=negate),
        "RaggedMmap r+": RaggedMmap(folder / "ragged", mode="r+"),
        "StringsMmap": StringsMmap(folder / "strings"),
        "StringsMmap rb": StringsMmap(folder / "strings", mode="rb"),
        "np_ninja.open_existing": np_ninja.open_existing(folder / "rows"),
        "np_ninja.open_existing r+": np_ninja.open_existing(folder / "rows", mode="r+"),
        "generic.open_existing numpy": generic.open_existing(folder / "rows", mode="r"),
        "generic.open_existing ragged": generic.open_existing(folder / "ragged"),
        "Wrapped RaggedMmap": Wrapped(RaggedMmap(folder / "ragged"), negate),
        "Wrapped StringsMmap": Wrapped(StringsMmap(folder / ("strings_zstd_dict" if zstd else "strings")), shout),
        "Wrapped np map": generic.open_existing(folder / "rows", wrapper_fn=negate, mode="r"),
    }
    if zstd:
        maps["StringsMmap zstd + dictionary"] = StringsMmap(folder / "strings_zstd_dict")
    return maps


def as_plain(sample: Any) -> Any:
    return sample if isinstance(sample, str) else np.array(sample)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b and type(a) is type(b)
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def small_maps(tmp_path_factory) -> Dict[str, Any]:
    return build_maps(tmp_path_factory.mktemp("small"), 1)


@pytest.fixture(scope="module")
def large_maps(tmp_path_factory) -> Dict[str, Any]:
    return build_maps(tmp_path_factory.mktemp("large"), 40)


def test_pickles_are_small_whatever_the_map_size(small_maps, large_maps):
    for name in small_maps:
        for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
            small = len(pickle.dumps(small_maps[name], protocol))
            large = len(pickle.dumps(large_maps[name], protocol))
            assert large < PICKLE_LIMIT and small < PICKLE_LIMIT, (name, protocol, small, large)
            assert abs(large - small) < 64, f"{name}: the pickle grows with the map ({small} -> {large} bytes)"
    data_bytes = sum(p.stat().st_size for p in Path(large_maps["RaggedMmap"].path).parent.rglob("data.ninja"))
    assert data_bytes > 2_000_000  # the large maps are large enough that a copy would show


def test_unpickled_map_is_equivalent_and_open(large_maps):
    for name, original in large_maps.items():
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original), name
        assert len(copy) == len(original), name
        for i in range(len(original)):
            assert same(as_plain(copy[i]), as_plain(original[i])), (name, i)
        if hasattr(original, "mode"):
            assert copy.mode == original.mode, name
    ragged = pickle.loads(pickle.dumps(large_maps["RaggedMmap"]))
    with pytest.raises(ReadOnlyMapError):  # read-only stays read-only
        ragged[0] = ragged[0]
    wrapped = pickle.loads(pickle.dumps(large_maps["RaggedMmap nested, wrapper_fn"]))
    assert wrapped.wrapper_fn is negate
    rows = pickle.loads(pickle.dumps(large_maps["np_ninja.open_existing"]))
    assert isinstance(rows, np.memmap) and not rows.flags.writeable
    assert type(rows[0]) is np.ndarray


def test_unpickled_map_sees_samples_appended_before_pickling(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(3)])
    m.extend([np.arange(4), np.arange(5)])
    copy = pickle.loads(pickle.dumps(m))
    assert len(copy) == 3 and all(same(copy[i], np.arange(i + 3)) for i in range(3))
    s = StringsMmap.from_strings(tmp_path / "s", ["a"])
    s.append("bé")
    assert pickle.loads(pickle.dumps(s))[:] == ["a", "bé"]


# --- worker processes ------------------------------------------------------------------------------


def read_samples(data: Any, indices: List[int]) -> List[Any]:
    """What a worker does: read samples from a map it got as an argument."""
    return [as_plain(data[i]) for i in indices]


def _tasks(maps: Dict[str, Any]) -> List[tuple]:
    tasks = []
    for name, data in maps.items():
        n = len(data)
        for chunk in np.array_split(np.arange(n), 3):
            tasks.append((name, data, chunk.tolist()))
    return tasks


def _check_results(maps: Dict[str, Any], tasks: List[tuple], results: List[List[Any]]) -> None:
    assert len(results) == len(tasks)
    for (name, data, indices), got in zip(tasks, results):
        want = read_samples(data, indices)
        assert len(got) == len(want) and all(same(g, w) for g, w in zip(got, want)), name


@pytest.mark.parametrize("start_method", ["spawn", "fork", "forkserver"])
def test_multiprocessing_pool_reads_maps_passed_as_arguments(small_maps, start_method):
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{start_method} is not available on this platform")
    tasks = _tasks(small_maps)
    context = multiprocessing.get_context(start_method)
    with context.Pool(2) as pool:
        results = pool.starmap(read_samples, [(data, indices) for _, data, indices in tasks])
    _check_results(small_maps, tasks, results)


def test_joblib_default_backend_reads_maps_passed_as_arguments(small_maps, large_maps):
    joblib = pytest.importorskip("joblib", reason="joblib is not installed (pip install 'mmap_ninja[parallel]')")
    for maps in (small_maps, large_maps):  # large numpy maps meet joblib's own memmapping of arrays
        tasks = _tasks(maps)
        results = joblib.Parallel(n_jobs=2)(joblib.delayed(read_samples)(data, indices) for _, data, indices in tasks)
        _check_results(maps, tasks, results)


@pytest.mark.parametrize("kind", kind_params("pickling"))
def test_every_kind_pickles_small_and_unpickles_equal(tmp_path, kind):
    """Every kind of the catalogue: a reader pickles by path (small, whatever the map's size)
    and the unpickled one serves the same samples."""
    k = CATALOGUE[kind]
    sizes = {}
    for count in (9, 900):
        path = tmp_path / f"m{count}"
        k.build(path, k.samples(count))
        reader = k.open(path, False)
        raw = pickle.dumps(reader)
        sizes[count] = len(raw)
        again = pickle.loads(raw)
        assert len(again) == count and all(k.equal(k.read(again, i), k.sample(i)) for i in range(0, count, 7)), kind
    assert sizes[900] < PICKLE_LIMIT and abs(sizes[900] - sizes[9]) < 64, sizes
