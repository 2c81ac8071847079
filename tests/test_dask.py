"""mmap_ninja.dask on a real LocalCluster (two worker processes on loopback).

One cluster for the module, started with ``allowed-failures`` at 1 so that a task may see
one worker die under it, and the second death is an error: the death tests stay quick.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="mmap_ninja.dask needs dask[distributed]: pip install 'mmap_ninja[dask]'")
import dask  # noqa: E402
import dask.bag  # noqa: E402

import mmap_ninja.dask as mdask  # noqa: E402
from mmap_ninja import RaggedMmap, StringsMmap  # noqa: E402
from mmap_ninja.errors import WorkerDiedError  # noqa: E402
from mmap_ninja import numpy as np_ninja  # noqa: E402

N = 240
BATCH = 10


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
        client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def sample(kind: str, i: int) -> Any:
    if kind == "strings":
        return f"sample {i} " + "é" * (i % 7)
    if kind == "numpy":
        return np.full((3, 2), i, np.int64)
    return np.arange(i % 13, dtype=np.int32).reshape(-1) * i


class Dataset:
    """Deterministic samples; optionally slow, raising, or killing the worker process."""

    def __init__(self, kind: str, n: int = N, slow: Optional[Dict[int, float]] = None, raise_at: Optional[int] = None,
                 die_at: Optional[int] = None, die_marker: Optional[str] = None, pause: float = 0.0):
        self.kind, self.n, self.slow, self.raise_at = kind, n, slow or {}, raise_at
        self.die_at, self.die_marker, self.pause = die_at, die_marker, pause

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if i >= self.n:
            raise IndexError(i)
        time.sleep(self.slow.get(i, self.pause))
        if i == self.raise_at:
            raise ValueError("this sample is broken")
        if i == self.die_at:
            if self.die_marker is None:  # every attempt dies
                os._exit(17)
            if not os.path.exists(self.die_marker):  # only the first attempt dies
                Path(self.die_marker).touch()
                os._exit(17)
        return sample(self.kind, i)


def serial(kind: str, out: Path, samples) -> None:
    if kind == "ragged":
        RaggedMmap.from_generator(out, samples, BATCH)
    elif kind == "strings":
        StringsMmap.from_generator(out, samples, BATCH)
    else:
        np_ninja.from_generator(out, samples, BATCH)


def hashes(folder: Path) -> Dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if ".parts-" in p.name or ".partial-" in p.name)


@pytest.mark.parametrize("kind", ["ragged", "strings", "numpy"])
def test_same_bytes_as_the_serial_build(client, tmp_path, kind) -> None:
    # Part 0 finishes last, so a merge in completion order would put its samples at the end.
    ds = Dataset(kind, slow={0: 0.3})
    got = mdask.from_indexable(tmp_path / "dask", ds, kind, batch_size=BATCH, npartitions=6, client=client)
    serial(kind, tmp_path / "serial", (sample(kind, i) for i in range(N)))
    assert len(got) == N
    assert hashes(tmp_path / "dask") == hashes(tmp_path / "serial")
    assert leftovers(tmp_path) == []


def test_from_bag_keeps_partition_order(client, tmp_path) -> None:
    def slow_first(x: str) -> str:
        if x.startswith("sample 0 "):
            time.sleep(0.3)
        return x

    strings = [sample("strings", i) for i in range(N)]
    bag = dask.bag.from_sequence(strings, npartitions=5).map(slow_first)
    got = mdask.from_bag(tmp_path / "dask", bag, "strings", batch_size=BATCH, client=client)
    serial("strings", tmp_path / "serial", strings)
    assert got[:] == strings
    assert hashes(tmp_path / "dask") == hashes(tmp_path / "serial")
    assert leftovers(tmp_path) == []


def test_from_bag_skips_empty_partitions(client, tmp_path) -> None:
    bag = dask.bag.from_sequence(range(30), npartitions=6).filter(lambda x: x < 5 or x >= 25)
    got = mdask.from_bag(tmp_path / "dask", bag.map(lambda x: np.arange(x)), "ragged", client=client)
    serial("ragged", tmp_path / "serial", [np.arange(x) for x in [*range(5), *range(25, 30)]])
    assert hashes(tmp_path / "dask") == hashes(tmp_path / "serial")
    assert len(got) == 10 and leftovers(tmp_path) == []


def test_a_worker_dying_once_is_retried_with_the_same_result(client, tmp_path) -> None:
    # It dies in the middle of the last part, after writing some of it; the worker it kills
    # also held the results of earlier parts, which the scheduler computes again.
    marker = tmp_path / "died"
    ds = Dataset("ragged", die_at=N - 15, die_marker=str(marker))
    got = mdask.from_indexable(tmp_path / "dask", ds, "ragged", batch_size=BATCH, npartitions=6, client=client)
    assert marker.exists(), "the worker did not die: the test tests nothing"
    serial("ragged", tmp_path / "serial", (sample("ragged", i) for i in range(N)))
    assert len(got) == N
    assert hashes(tmp_path / "dask") == hashes(tmp_path / "serial")
    assert leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)


def test_a_worker_dying_every_time_names_the_index_range(client, tmp_path) -> None:
    ds = Dataset("ragged", die_at=125)
    with pytest.raises(WorkerDiedError, match=r"samples 120 to 159\b.*died 2 times"):
        mdask.from_indexable(tmp_path / "dask", ds, "ragged", batch_size=BATCH, npartitions=6, client=client)
    assert not (tmp_path / "dask").exists()
    assert leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)


def test_a_sample_that_raises_leaves_nothing(client, tmp_path) -> None:
    # The other worker is going through many small parts when the error reaches the caller;
    # the tasks still running or about to start must stop without leaving anything behind,
    # also a moment later.
    ds = Dataset("ragged", raise_at=3, slow={0: 0.3})
    with pytest.raises(ValueError, match=r"sample 3\b.*this sample is broken"):
        mdask.from_indexable(tmp_path / "dask", ds, "ragged", batch_size=BATCH, npartitions=24, client=client)
    assert not (tmp_path / "dask").exists()
    assert leftovers(tmp_path) == []
    time.sleep(1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_build_leaves_the_existing_map(client, tmp_path) -> None:
    old = RaggedMmap.from_lists(tmp_path / "dask", [np.arange(3)])
    del old
    before = hashes(tmp_path / "dask")
    with pytest.raises(ValueError, match="sample 5"):
        mdask.from_indexable(tmp_path / "dask", Dataset("ragged", raise_at=5), "ragged", batch_size=BATCH, client=client)
    assert hashes(tmp_path / "dask") == before
    assert leftovers(tmp_path) == []


def test_a_retried_or_duplicated_attempt_never_touches_another(tmp_path) -> None:
    # Two attempts at the same part, the second with other data (a stale duplicate): the first
    # attempt's part must stay exactly as built. Fixed part names would fail or overwrite it.
    pdir = tmp_path / "parts"
    pdir.mkdir()
    (pdir / "live").touch()
    first = mdask._build_range(str(pdir), "ragged", Dataset("ragged"), 20, 40, BATCH)
    built = hashes(Path(first.path))
    second = mdask._build_range(str(pdir), "ragged", [np.zeros(4, np.int32)] * 40, 20, 40, BATCH)
    assert first.path != second.path
    assert hashes(Path(first.path)) == built
    assert first[1:] == second[1:] == (20, 40)


def test_parts_dir_not_visible_names_the_shared_filesystem(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="shared filesystem"):
        mdask._build_range(str(tmp_path / "missing"), "ragged", Dataset("ragged"), 0, 10, BATCH)


def test_verbose_shows_one_bar_over_the_parts(client, tmp_path, capsys) -> None:
    mdask.from_indexable(tmp_path / "quiet", Dataset("numpy", n=40), "numpy", batch_size=BATCH, client=client)
    assert capsys.readouterr().err == ""
    mdask.from_indexable(tmp_path / "loud", Dataset("numpy", n=40), "numpy", batch_size=BATCH, npartitions=4,
                         client=client, verbose=True)
    err = capsys.readouterr().err
    assert "parts" in err and "4/4" in err
    assert err.count("0/4") == 1  # one bar


def test_the_default_client_is_used(client, tmp_path) -> None:
    with client.as_current():
        got = mdask.from_indexable(tmp_path / "m", Dataset("strings", n=25), "strings", batch_size=BATCH)
    assert got[:] == [sample("strings", i) for i in range(25)]


def test_a_dataset_shorter_than_its_len_ends_like_a_serial_build(client, tmp_path) -> None:
    class Short(Dataset):
        def __len__(self) -> int:
            return 100

    got = mdask.from_indexable(tmp_path / "m", Short("ragged", n=33), "ragged", batch_size=BATCH, npartitions=4, client=client)
    serial("ragged", tmp_path / "serial", (sample("ragged", i) for i in range(33)))
    assert len(got) == 33
    assert hashes(tmp_path / "m") == hashes(tmp_path / "serial")


class Unpicklable(Dataset):
    def __init__(self) -> None:
        super().__init__("ragged")
        self.lock = threading.Lock()


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((Dataset("ragged"), "rows"), ValueError, "unknown kind of map 'rows'"),
        ((iter([np.arange(3)]), "ragged"), TypeError, "list_iterator has no len"),
        ((Unpicklable(), "ragged"), TypeError, "Unpicklable cannot be sent to the Dask workers"),
    ],
)
def test_bad_input_is_refused_before_any_work(client, tmp_path, args, error, match) -> None:
    with pytest.raises(error, match=match):
        mdask.from_indexable(tmp_path / "m", *args, client=client)
    assert sorted(tmp_path.iterdir()) == []


def test_bad_sizes_and_a_foreign_out_dir_are_refused(client, tmp_path) -> None:
    with pytest.raises(ValueError, match="npartitions must be a positive int"):
        mdask.from_indexable(tmp_path / "m", Dataset("ragged"), "ragged", npartitions=0, client=client)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        mdask.from_bag(tmp_path / "m", dask.bag.from_sequence([1]), "ragged", batch_size=0, client=client)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a map"):
        mdask.from_indexable(tmp_path / "m", Dataset("ragged"), "ragged", client=client)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_without_distributed_the_message_names_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'mmap_ninja\[dask\]'"):
        mdask.from_indexable(tmp_path / "m", Dataset("ragged"), "ragged")


def _broken(x: int) -> int:
    if x == 13:
        raise KeyError("no such record")
    return x


def test_a_bag_that_raises_leaves_nothing(client, tmp_path) -> None:
    bag = dask.bag.from_sequence(range(40), npartitions=4).map(_broken).map(lambda x: np.arange(x))
    with pytest.raises(KeyError, match="no such record"):
        mdask.from_bag(tmp_path / "m", bag, "ragged", client=client)
    # a sample the map cannot hold: the error names the partition and the sample in it
    bag = dask.bag.from_sequence([np.zeros((2, 2))] * 6 + [np.zeros((3, 3))] + [np.zeros((2, 2))] * 3, npartitions=2)
    with pytest.raises(ValueError, match=r"partition 1 of the bag.*sample 1\b"):
        mdask.from_bag(tmp_path / "m", bag, "numpy", batch_size=2, client=client)
    assert sorted(tmp_path.iterdir()) == []


def test_ctrl_c_in_the_client_leaves_nothing(client, tmp_path, monkeypatch) -> None:
    class Interrupted(distributed.as_completed):  # Ctrl-C once the first part is done, while the others run
        def __next__(self):
            if getattr(self, "yielded", False):
                raise KeyboardInterrupt
            self.yielded = True
            return super().__next__()

    monkeypatch.setattr(distributed, "as_completed", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        mdask.from_indexable(tmp_path / "m", Dataset("ragged", pause=0.005), "ragged", batch_size=BATCH, npartitions=6, client=client)
    assert sorted(tmp_path.iterdir()) == []
    time.sleep(1.0)  # the tasks that were running have stopped, not recreated anything
    assert sorted(tmp_path.iterdir()) == []
