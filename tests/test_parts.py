"""Builds by parts: parallel builds byte-identical to serial ones, the merge, concatenate,
shape layout upgrades (also killed midway), and the errors of parallel builds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import numpy as np_ninja
from mmap_ninja import parts
from mmap_ninja.errors import MapFormatError, WorkerDiedError
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import require, restore_ctrl_c

SRC = str(Path(mmap_ninja.__file__).resolve().parents[1])


def tree_hashes(root: Path) -> Dict[str, str]:
    """Every file below ``root`` (but the writer lock) by its path, with the hash of its bytes."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name != ".writer.lock":
                path = Path(folder, name)
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(out_dir: Path) -> list:
    return [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]


# -- datasets, at module level so that worker processes can import them -------------------


class Mixed:
    """1-D, 0-d and 2-D samples of mixed dtypes: parts disagree on dtype and shape layout."""

    def __len__(self) -> int:
        return 90

    def __getitem__(self, i: int) -> np.ndarray:
        if i >= 90:
            raise IndexError(i)
        if i < 40:
            return np.arange(i % 7, dtype=np.int64)
        if i < 50:
            return np.array(i)
        return np.full((2, i % 3 + 1), i, np.int16)  # later parts: int16 and nested shapes


class Texts:
    def __len__(self) -> int:
        return 300

    def __getitem__(self, i: int) -> str:
        return ("ça va 🎬 " * (i % 4)) + str(i)


class Rows:
    def __len__(self) -> int:
        return 77

    def __getitem__(self, i: int) -> np.ndarray:
        return np.full((3, 2), i, np.uint8 if i < 40 else np.int64)


class NoLength:
    def __getitem__(self, i: int) -> np.ndarray:
        if i >= 23:
            raise IndexError(i)
        return np.arange(i, dtype=np.int32)


class Failing:
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> np.ndarray:
        if i == 29:
            raise KeyError(f"no image for {i}")
        return np.arange(3)


class LossyLater:
    """Ints, then from sample 30 on floats that an int map cannot hold."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> np.ndarray:
        return np.arange(3) if i < 30 else np.array([0.5])


class DiesAt:
    def __init__(self, index: int):
        self.index = index

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> np.ndarray:
        if i == self.index:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.arange(3)


def build(kind: str, out: Path, dataset, batch_size: int, n_jobs, **kw):
    if kind == "ragged":
        return RaggedMmap.from_indexable(out, dataset, batch_size, n_jobs=n_jobs, **kw)
    if kind == "strings":
        return StringsMmap.from_indexable(out, dataset, batch_size, n_jobs=n_jobs, **kw)
    return np_ninja.from_indexable(out, dataset, batch_size, n_jobs=n_jobs, **kw)


# -- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, dataset, options",
    [
        ("ragged", Mixed(), {}),
        ("ragged", NoLength(), {}),
        ("strings", Texts(), {}),
        ("strings", Texts(), {"zstd_level": 3}),
        ("strings", Texts(), {"zstd_level": 3, "zstd_train_dictionary_size": 2048}),
        ("numpy", Rows(), {}),
    ],
    ids=["ragged-mixed", "ragged-no-len", "strings", "strings-zstd", "strings-zstd-dict", "numpy"],
)
def test_parallel_builds_are_byte_identical_to_serial(tmp_path, kind, dataset, options):
    if options.get("zstd_level"):
        require("zstandard")
    build(kind, tmp_path / "serial", dataset, 8, None, **options)
    expected = tree_hashes(tmp_path / "serial")
    assert build(kind, tmp_path / "two", dataset, 8, 2, **options) is not None
    assert tree_hashes(tmp_path / "two") == expected
    assert leftovers(tmp_path / "two") == []


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_start_by_spawn_or_forkserver_never_fork(tmp_path, monkeypatch, method):
    import multiprocessing

    from mmap_ninja import parallel

    assert parallel.worker_context().get_start_method() != "fork"
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available on this platform")
    monkeypatch.setattr(parallel, "worker_context", lambda: multiprocessing.get_context(method))
    RaggedMmap.from_indexable(tmp_path / "serial", Mixed(), 8)
    RaggedMmap.from_indexable(tmp_path / "two", Mixed(), 8, n_jobs=2)
    assert tree_hashes(tmp_path / "two") == tree_hashes(tmp_path / "serial")


@pytest.mark.parametrize("nparts", [1, 2, 3, 7, 64])
def test_any_number_of_parts_merges_to_the_serial_bytes(tmp_path, nparts):
    dataset = Mixed()
    RaggedMmap.from_indexable(tmp_path / "serial", dataset, 8)
    work = parts.parts_dir(tmp_path / "out")
    built = [parts.build_part(work / str(k), "ragged", dataset, a, b, 8) for k, (a, b) in enumerate(parts.part_ranges(len(dataset), 8, nparts))]
    assert [p.start for p in built] == sorted(p.start for p in built) and built[-1].stop == len(dataset)
    parts.merge(tmp_path / "out", built)
    parts.remove(work)
    assert tree_hashes(tmp_path / "out") == tree_hashes(tmp_path / "serial")
    m = RaggedMmap(tmp_path / "out")
    for i in range(len(dataset)):
        assert m[i].shape == dataset[i].shape and np.array_equal(m[i], dataset[i])


def test_part_ranges_fall_on_batch_boundaries():
    assert parts.part_ranges(10, 3, 2) == [(0, 6), (6, 10)]
    assert parts.part_ranges(10, 3, 100) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert parts.part_ranges(0, 3, 4) == []
    for count, batch, n in [(1000, 7, 13), (5, 100, 3)]:
        ranges = parts.part_ranges(count, batch, n)
        assert ranges[0][0] == 0 and ranges[-1][1] == count
        assert all(a % batch == 0 and b > a for a, b in ranges)
        assert all(r[1] == s[0] for r, s in zip(ranges, ranges[1:]))


# -- the merge ---------------------------------------------------------------------------------


def test_merge_casts_parts_to_the_first_dtype_or_names_the_part_and_sample(tmp_path):
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3, dtype=np.int64)] * 4)
    RaggedMmap.from_lists(tmp_path / "b", [np.array([1.0, 2.0]), np.array([7.0])])
    RaggedMmap.from_lists(tmp_path / "c", [np.array([1.0]), np.array([2.0, 0.5])])
    parts.merge(tmp_path / "ab", [tmp_path / "a", tmp_path / "b"])
    ab = RaggedMmap(tmp_path / "ab")
    assert ab.dtype == np.int64 and ab[5].tolist() == [7] and len(ab) == 6
    before = tree_hashes(tmp_path / "ab")
    with pytest.raises(ValueError, match=rf"map 1 \({tmp_path / 'c'}\): sample 5 has dtype float64"):
        parts.merge(tmp_path / "ab", [tmp_path / "a", tmp_path / "c"])
    assert tree_hashes(tmp_path / "ab") == before and leftovers(tmp_path / "ab") == []


def test_merge_refuses_maps_of_other_kinds_and_shapes(tmp_path):
    RaggedMmap.from_lists(tmp_path / "r", [np.arange(3)])
    StringsMmap.from_strings(tmp_path / "s", ["a"])
    np_ninja.from_ndarray(tmp_path / "n1", np.zeros((2, 3)))
    np_ninja.from_ndarray(tmp_path / "n2", np.zeros((2, 4)))
    with pytest.raises(MapFormatError, match="map 1 .* is a 'string' map, but map 0 .* 'ragged'"):
        mmap_ninja.concatenate(tmp_path / "x", [tmp_path / "r", tmp_path / "s"])
    with pytest.raises(ValueError, match=r"map 1 .*: sample 2 has shape \(4,\), but the map holds samples of shape \(3,\)"):
        mmap_ninja.concatenate(tmp_path / "x", [tmp_path / "n1", tmp_path / "n2"])
    with pytest.raises(FileNotFoundError, match="there is no map at"):
        mmap_ninja.concatenate(tmp_path / "x", [tmp_path / "r", tmp_path / "missing"])
    with pytest.raises(ValueError, match="no maps were given"):
        mmap_ninja.concatenate(tmp_path / "x", [])
    assert not (tmp_path / "x").exists() and leftovers(tmp_path / "x") == []


def test_concatenate_every_kind_leaves_sources_untouched(tmp_path):
    pieces = {
        "ragged": ([np.arange(3), np.ones((2, 2), int)], [np.array(4), np.arange(2)]),
        "strings": (["a", "ça"], ["", "🎬"]),
        "numpy": (np.arange(6).reshape(3, 2), np.arange(4).reshape(2, 2)),
    }
    for kind, (first, second) in pieces.items():
        a, b, out = tmp_path / f"{kind}-a", tmp_path / f"{kind}-b", tmp_path / f"{kind}-out"
        if kind == "ragged":
            RaggedMmap.from_lists(a, first), RaggedMmap.from_lists(b, second)
        elif kind == "strings":
            StringsMmap.from_strings(a, first), StringsMmap.from_strings(b, second)
        else:
            np_ninja.from_ndarray(a, first), np_ninja.from_ndarray(b, second)
        sources = (tree_hashes(a), tree_hashes(b))
        mmap_ninja.concatenate(out, [a, b, a])
        assert (tree_hashes(a), tree_hashes(b)) == sources
        got = list(mmap_ninja.open_existing(out))
        expected = list(first) + list(second) + list(first)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert (g == e) if isinstance(e, str) else (np.shape(g) == np.shape(e) and np.array_equal(g, e))


def test_concatenate_shows_progress_only_when_asked(tmp_path, capfd):
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3)] * 5)
    mmap_ninja.concatenate(tmp_path / "b", [tmp_path / "a"] * 2)
    assert capfd.readouterr() == ("", "")
    mmap_ninja.concatenate(tmp_path / "c", [tmp_path / "a"] * 2, verbose=True)
    assert "10/10" in capfd.readouterr().err


# -- shape layout upgrades ----------------------------------------------------------------------


def test_a_1d_map_takes_a_2d_sample_and_keeps_the_bytes_of_a_fresh_build(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(3), np.array(5)])
    reader = RaggedMmap(tmp_path / "m")
    m.append(np.ones((2, 2)))
    m.extend([np.arange(4), np.zeros((1, 2, 3))])
    samples = [np.arange(3), np.array(5), np.ones((2, 2), int), np.arange(4), np.zeros((1, 2, 3), int)]
    RaggedMmap.from_lists(tmp_path / "fresh", samples)
    assert tree_hashes(tmp_path / "m") == tree_hashes(tmp_path / "fresh")
    assert leftovers(tmp_path / "m") == []
    assert [g.shape for g in reader[:]] == [(3,), ()]  # a reader sees what it mapped until refresh()
    reader.refresh()
    for got in (m[:], reader[:], RaggedMmap(tmp_path / "m")[:]):
        assert [g.shape for g in got] == [s.shape for s in samples]
        assert all(np.array_equal(g, s) for g, s in zip(got, samples))


def test_a_lossy_sample_refused_before_the_upgrade(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(3)])
    before = tree_hashes(tmp_path / "m")
    with pytest.raises(ValueError, match="sample 1 has dtype float64"):
        m.append(np.full((2, 2), 0.5))
    assert tree_hashes(tmp_path / "m") == before


UPGRADE_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from mmap_ninja.ragged import RaggedMmap

    target, events = int(sys.argv[2]), [0]
    def hook(event, args):
        if event in ("open", "os.link", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            events[0] += 1
            if events[0] == target:
                os.kill(os.getpid(), signal.SIGKILL)
    m = RaggedMmap(sys.argv[1], mode="r+")
    m[0]
    sys.addaudithook(hook)
    m.append(np.ones((2, 3), np.int64))
    print("done", events[0])
    """
)


def kill_points(stride: int):
    """Every ``stride``-th file operation of the upgrade (each one: a kill just before it)."""
    return range(1, 600, stride)


@pytest.mark.parametrize("stride", [pytest.param(1, marks=pytest.mark.stress, id="every-instant"), pytest.param(13, id="sampled")])
def test_a_kill_at_any_instant_of_an_upgrade_leaves_the_old_or_the_new_map(tmp_path, stride):
    old = [np.arange(3), np.array(5), np.arange(0)]
    new = old + [np.ones((2, 3), np.int64)]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    outcomes = set()
    for target in kill_points(stride):
        path = tmp_path / f"m{target}"
        RaggedMmap.from_lists(path, old)
        run = subprocess.run([sys.executable, "-c", UPGRADE_CHILD, str(path), str(target)], env=env, capture_output=True, text=True)
        got = RaggedMmap(path)[:]
        expected = new if len(got) == len(new) else old
        assert [g.shape for g in got] == [e.shape for e in expected], f"kill at event {target}"
        assert all(np.array_equal(g, e) for g, e in zip(got, expected)), f"kill at event {target}"
        outcomes.add(len(got))
        follow = RaggedMmap(path, mode="r+")  # the next writer repairs and goes on
        follow.append(np.zeros((1, 1), np.int64))
        assert [s.shape for s in RaggedMmap(path)[:]] == [e.shape for e in expected] + [(1, 1)]
        assert leftovers(path) == []
        if run.returncode == 0:
            assert run.stdout.startswith("done")
            break
    else:
        pytest.fail("the upgrade never finished")
    assert outcomes == {len(old), len(new)} and target > 10


# -- errors of parallel builds -------------------------------------------------------------------


def test_a_sample_that_raises_in_a_worker_names_its_index(tmp_path):
    with pytest.raises(KeyError, match="sample 29 of the dataset raised KeyError"):
        RaggedMmap.from_indexable(tmp_path / "m", Failing(), 4, n_jobs=2)
    assert not (tmp_path / "m").exists() and leftovers(tmp_path / "m") == []
    with pytest.raises(KeyError, match="sample 29 of the dataset raised KeyError"):
        RaggedMmap.from_indexable(tmp_path / "m", Failing(), 4)


def test_a_lossy_sample_in_a_later_part_gives_the_error_of_the_serial_build(tmp_path):
    with pytest.raises(ValueError) as serial:
        RaggedMmap.from_indexable(tmp_path / "s", LossyLater(), 4)
    with pytest.raises(ValueError) as parallel:
        RaggedMmap.from_indexable(tmp_path / "p", LossyLater(), 4, n_jobs=2)
    assert str(serial.value).startswith("sample 30 has dtype float64 and the map holds int64")
    assert str(parallel.value) == str(serial.value)
    assert not (tmp_path / "p").exists() and leftovers(tmp_path / "p") == []


def test_a_worker_killed_by_the_os_names_its_range(tmp_path):
    with pytest.raises(WorkerDiedError, match=r"samples 24 to 27 .*exit code -9"):
        RaggedMmap.from_indexable(tmp_path / "m", DiesAt(25), 4, n_jobs=2)
    assert not (tmp_path / "m").exists() and leftovers(tmp_path / "m") == []


class HoldsALock:
    """A dataset that no pickler can send: it holds a lock."""

    def __init__(self):
        self.lock = threading.Lock()

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return np.arange(i)


def test_an_unpicklable_dataset_is_refused_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="HoldsALock .* cannot be pickled .*lock"):
        RaggedMmap.from_indexable(tmp_path / "m", HoldsALock(), 4, n_jobs=2)
    assert list(tmp_path.iterdir()) == []


def test_closures_and_lambdas_go_to_the_workers_by_cloudpickle(tmp_path):
    from mmap_ninja import parallel

    if parallel._cloudpickle() is None:
        pytest.skip("cloudpickle is not installed (pip install 'mmap_ninja[parallel]')")
    scale = 3

    def sample(i):
        if i >= 21:
            raise IndexError(i)
        return np.arange(i) * scale

    RaggedMmap.from_indexable(tmp_path / "closure", sample, 4, n_jobs=2)
    RaggedMmap.from_indexable(tmp_path / "serial", sample, 4)
    assert tree_hashes(tmp_path / "closure") == tree_hashes(tmp_path / "serial")


@pytest.mark.parametrize("n_jobs", [0, -2, 1.5, True])
def test_bad_n_jobs(tmp_path, n_jobs):
    with pytest.raises(ValueError, match="n_jobs must be"):
        RaggedMmap.from_indexable(tmp_path / "m", Mixed(), 4, n_jobs=n_jobs)


def test_one_bar_for_the_whole_parallel_build(tmp_path, capfd):
    RaggedMmap.from_indexable(tmp_path / "q", Mixed(), 8, n_jobs=2)
    assert capfd.readouterr() == ("", "")
    RaggedMmap.from_indexable(tmp_path / "v", Mixed(), 8, n_jobs=2, verbose=True)
    err = capfd.readouterr().err
    assert "90/90" in err and err.count("building") >= 1


INTERRUPT_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from mmap_ninja.ragged import RaggedMmap

    class Slow:
        def __len__(self):
            return 10_000
        def __getitem__(self, i):
            time.sleep(0.001)
            return np.arange(3)

    if __name__ == "__main__":
        print("start", flush=True)
        RaggedMmap.from_indexable(sys.argv[1], Slow(), 16, n_jobs=2)
    """
)


def test_ctrl_c_in_the_parent_leaves_nothing(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(INTERRUPT_CHILD)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "out" / "m"
    child = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=restore_ctrl_c)  # SIGINT may be ignored in pytest (a background job)
    assert child.stdout.readline().startswith("start")
    deadline = 100
    while deadline and not (out.parent.exists() and leftovers(out)):
        deadline -= 1
        import time

        time.sleep(0.05)
    assert leftovers(out), "the build never started writing parts"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert not out.exists() and leftovers(out) == []
