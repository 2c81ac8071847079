"""Building a map on a Dask cluster: workers build parts, the client merges them.

Needs Dask's distributed scheduler (``pip install 'mmap_ninja[dask]'``), imported only when
a function here is called. Parts are written into a directory beside ``out_dir``, so every
worker and the client must see that directory at the same path (one machine, or a shared
filesystem).

Dask may run a task more than once (a retry after a worker died, a duplicate after work
stealing, a worker the scheduler gave up on that is still running). Each attempt therefore
builds into a directory of its own, named for its index range and a fresh uuid; the client
merges only the parts whose results the scheduler returned, and removes the rest with the
parts directory.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from . import build, fs, kinds, layout, parallel
from .build import Part
from .errors import WorkerDiedError
from .parts import map_kind, part_ranges, parts_dir, remove
from .progress import check_batch_size, progress_bar

__all__ = ["from_indexable", "from_bag"]

PathLike = Union[str, "os.PathLike[str]"]

# While this file exists in the parts directory the build is live; tasks stop at their next
# check once it is gone (the build failed, or the parts directory was removed).
_LIVE = "live"
_CHECK_SECONDS = 0.5
# After a failure, how long the client waits for running tasks to notice and stop before it
# removes the parts directory anyway.
_STOP_WAIT_SECONDS = 30.0


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ImportError("mmap_ninja.dask needs Dask's distributed scheduler: pip install 'mmap_ninja[dask]'") from None
    return distributed


class _Stopped(Exception):
    """The build this task belongs to has failed or finished: stop writing."""


class _Watched:
    """The user's samples, checking now and then that the build is still live."""

    def __init__(self, indexable: Any, pdir: Path):
        self._get = indexable if callable(indexable) and not hasattr(indexable, "__getitem__") else indexable.__getitem__
        self._live = pdir / _LIVE
        self._next_check = 0.0

    def __getitem__(self, i: int) -> Any:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _CHECK_SECONDS
            if not self._live.exists():
                raise _Stopped("the build was abandoned")
        return self._get(i)


def _not_shared(pdir: Path, where: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"the parts directory {pdir} is not visible on {where}: every Dask worker and the client "
        "must see the directory beside out_dir at the same path (one machine or a shared filesystem)"
    )


def _start_attempt(pdir: Path, name: str) -> Optional[Path]:
    """A fresh directory name for this attempt's part, or None if the build is over."""
    if not pdir.is_dir():
        raise _not_shared(pdir, f"the worker on {os.uname().nodename}")
    if not (pdir / _LIVE).exists():
        return None
    return pdir / f"{name}-{uuid.uuid4().hex}"


def _dataset(indexable: Any) -> Any:
    # A task of its own (not scattered data), so the scheduler can recompute it if the worker
    # holding it dies.
    return indexable


def _build_range(pdir: str, product: Any, indexable: Any, start: int, stop: int, batch_size: int) -> Optional[Part]:
    """One attempt at the part holding samples ``start..stop-1``, in a directory of its own."""
    path = _start_attempt(Path(pdir), f"{start}-{stop}")
    if path is None:
        return None
    product = _product(product) if isinstance(product, str) else product
    return build.build_part(path, product, _Watched(indexable, Path(pdir)), start, stop, batch_size)


def _build_partition(pdir: str, product: Any, partition: Iterable[Any], number: int, batch_size: int) -> Optional[Part]:
    """One attempt at the part holding partition ``number`` of a bag (empty partitions: None)."""
    # A computed bag partition is already in this worker's memory; a list of it is indexable.
    samples = partition if isinstance(partition, list) else list(partition)
    path = _start_attempt(Path(pdir), f"partition{number}")
    if path is None or not samples:
        return None
    try:
        return build.build_part(path, product, _Watched(samples, Path(pdir)), 0, len(samples), batch_size)
    except _Stopped:
        raise
    except Exception as e:
        raise _in_partition(e, number) from e


def _in_partition(error: Exception, number: int) -> Exception:
    """``error`` of the same type, its message saying which partition of the bag it came from."""
    message = f"partition {number} of the bag (sample numbers count from the partition's first): {error}"
    try:
        return type(error)(message)
    except Exception:  # an exception type with another constructor: keep it as it is
        return error


def _client(distributed: Any, client: Any) -> Any:
    if client is not None:
        return client
    try:
        return distributed.default_client()
    except ValueError:
        raise ValueError(
            "no Dask client: pass client=, or create one first, e.g. distributed.Client(distributed.LocalCluster())"
        ) from None


def _positive(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _product(kind: str) -> Any:
    """What the build engine builds for ``kind`` (a name in ``kinds``: a map's, or "records")."""
    found = kinds.get(kind)
    return found.product({}) if found.product is not None else build.MapProduct(map_kind(kind))


def _prepare(out_dir: PathLike, kind: str, batch_size: int) -> Tuple[Any, Path, Any]:
    distributed = _distributed()
    product = _product(kind)
    check_batch_size(batch_size)
    out_dir = Path(out_dir).absolute()
    layout.check_can_build(out_dir, product.replaceable, product.what)  # fail before the cluster does any work
    return distributed, out_dir, product


class _Task(NamedTuple):
    submit: Callable[[], List[Any]]  # submits the part's task(s); the part's future comes last
    name: str  # what the part holds, in the user's words
    size: Optional[int]  # samples it should hold; fewer means the dataset ended there


def _collect(distributed: Any, client: Any, tasks: List[_Task], submitted: List[Any], pdir: Path, verbose: bool,
             merger: Any, skipped: List[Tuple[int, str]]) -> None:
    """Have the cluster build the parts and merge them in order as they come, while it builds the next.

    Parts are submitted in order, two per worker thread at a time, so that they finish
    about in order and each can be merged (and its disk freed) while later ones are built;
    all submitted futures are appended to ``submitted``. The first failure is raised in the
    caller; a part that came back short (the dataset ended there, as a serial build ends at
    its first IndexError) is the last one merged.
    """
    number: Dict[Any, int] = {}
    finished: Dict[int, Optional[Part]] = {}  # done, not merged yet
    merged = 0
    pending = distributed.as_completed()

    def top_up() -> None:
        window = 2 * max(1, sum(client.nthreads().values()))  # the cluster may grow or shrink meanwhile
        while len(number) < len(tasks) and len(number) - merged - len(finished) < window:
            futures = tasks[len(number)].submit()
            submitted.extend(futures)
            number[futures[-1]] = len(number)
            pending.add(futures[-1])

    with progress_bar(verbose, len(tasks), "parts", unit="part") as bar:
        top_up()
        for future in pending:
            k = number[future]
            try:
                part = future.result()
            except distributed.KilledWorker as e:
                raise WorkerDiedError(
                    f"the Dask workers building {tasks[k].name} died {e.allowed_failures + 1} times, more "
                    "than the scheduler's distributed.scheduler.allowed-failures allows; the workers' "
                    "logs say why (often the memory limit); nothing was written"
                ) from e
            if part is not None and not Path(part.path).is_dir():
                raise _not_shared(pdir, "the client")
            finished[k] = part
            bar.update(1)
            top_up()
            while merged in finished:
                part, size = finished.pop(merged), tasks[merged].size
                merged += 1
                if part is None:  # an empty partition of a bag
                    continue
                parallel.merge_part(merger, part, skipped)  # frees its disk now: the build needs about one map's room, not two
                if size is not None and part.stop - part.start < size:
                    return
                top_up()


def _stop(distributed: Any, client: Any, futures: Iterable[Any], pdir: Path) -> None:
    """Tell tasks still running to stop, give them time to, then forget them.

    After a failure other parts may be half built; after a success a worker that died after
    its parts were done makes the scheduler compute them again. Either way no task may write
    into the parts directory once it is removed.
    """
    try:
        (pdir / _LIVE).unlink()
    except OSError:
        pass
    futures = list(futures)
    try:
        distributed.wait(futures, timeout=_STOP_WAIT_SECONDS)
    except Exception:  # a timeout, or a scheduler that is gone: there is nothing more to wait for
        pass
    finally:
        try:
            client.cancel(futures)
        except Exception:  # a client already closed has nothing left to cancel
            pass


def _run(distributed: Any, client: Any, out_dir: Path, product: Any, verbose: bool,
         plan: Callable[[Path, str, List[Any], Any], List[_Task]]) -> Any:
    """Build the parts ``plan(pdir, build_id, submitted, merger)`` describes on the cluster, merge them, open the map."""
    pdir = parts_dir(out_dir)
    fs.touch(pdir / _LIVE)
    submitted: List[Any] = []  # every future of this build, to stop and forget at the end
    skipped: List[Tuple[int, str]] = []
    try:
        with layout.building(out_dir, False, product.replaceable, product.what) as tmp:
            # errors name samples by their index in the dataset, as a serial build's would
            merger = product.merger(tmp)
            try:
                tasks = plan(pdir, uuid.uuid4().hex[:8], submitted, lambda part: parallel.merge_part(merger, part, skipped))
                _collect(distributed, client, tasks, submitted, pdir, verbose, merger, skipped)
            finally:
                merger.close()
            parallel.finish(product, tmp, merger, skipped)
    finally:
        try:
            _stop(distributed, client, submitted, pdir)
        finally:  # also after a second Ctrl-C while waiting
            remove(pdir)
    return _open(out_dir, product)


def _open(out_dir: Path, product: Any) -> Any:
    return kinds.get(product.kind).open(out_dir)


def from_indexable(
    out_dir: PathLike,
    indexable: Any,
    kind: str,
    batch_size: int = 1024,
    npartitions: Optional[int] = None,
    client: Any = None,
    verbose: bool = False,
) -> Any:
    """Build ``indexable[0], indexable[1], ...`` as one map at ``out_dir`` on a Dask cluster.

    ``kind`` is "ragged", "strings", "numpy" or "records". The samples are split into ``npartitions``
    contiguous ranges (default: four per worker thread), each built as a part by a task; the
    client merges them, in index order, into a map with the same bytes as a serial build.
    ``indexable`` needs ``len()`` and is pickled to the workers once. ``client`` defaults to
    the current Dask client. ``verbose`` shows one bar over the parts. Returns the opened map.
    """
    distributed, out_dir, product = _prepare(out_dir, kind, batch_size)
    try:
        count = len(indexable)
    except TypeError:
        raise TypeError(f"from_indexable needs the number of samples: {type(indexable).__name__} has no len()") from None
    client = _client(distributed, client)
    if npartitions is None:
        npartitions = 4 * max(1, sum(client.nthreads().values()))
    npartitions = _positive("npartitions", npartitions)

    def plan(pdir: Path, build_id: str, submitted: List[Any], merge_first: Callable[[Part], None]) -> List[_Task]:
        # what must be read once (a records map's first batch) is read here, by the client
        first = product.prepare(pdir, indexable, count, batch_size)
        start = 0
        if first is not None:
            merge_first(first)
            start = first.stop
        ranges = part_ranges(count, batch_size, npartitions, start)
        if not ranges:
            return []
        try:
            data = client.submit(_dataset, indexable, key=f"mmap_ninja-dataset-{build_id}")
        except Exception as e:
            raise TypeError(f"the dataset {type(indexable).__name__} cannot be sent to the Dask workers: {e}") from e
        submitted.append(data)

        def part(p: int, a: int, b: int) -> _Task:
            def submit() -> List[Any]:
                return [client.submit(_build_range, str(pdir), product, data, a, b, batch_size, key=f"mmap_ninja-part-{build_id}-{p}", priority=-p)]

            return _Task(submit, f"samples {a} to {b - 1}", b - a)

        return [part(p, a, b) for p, (a, b) in enumerate(ranges)]

    return _run(distributed, client, out_dir, product, verbose, plan)


def from_bag(
    out_dir: PathLike,
    bag: Any,
    kind: str,
    batch_size: int = 1024,
    client: Any = None,
    verbose: bool = False,
) -> Any:
    """Build the samples of a ``dask.bag.Bag`` as one map at ``out_dir``, in partition order.

    Each partition becomes a part, built by a task on the worker that computed it; the client
    merges them. ``kind`` is "ragged", "strings", "numpy" or "records"; ``client`` defaults to the
    current Dask client; ``verbose`` shows one bar over the partitions. Returns the opened map.
    """
    distributed, out_dir, product = _prepare(out_dir, kind, batch_size)
    if not hasattr(bag, "to_delayed") or not hasattr(bag, "npartitions"):
        raise TypeError(f"from_bag needs a dask.bag.Bag, got {type(bag).__name__}")
    client = _client(distributed, client)

    def plan(pdir: Path, build_id: str, submitted: List[Any], merge_first: Callable[[Part], None]) -> List[_Task]:
        def part(k: int, partition: Any) -> _Task:
            def submit() -> List[Any]:
                # computed only now, so that the workers hold the partitions in flight, not the whole bag
                computed = client.compute(partition, priority=-k)
                key = f"mmap_ninja-partition-{build_id}-{k}"
                return [computed, client.submit(_build_partition, str(pdir), product, computed, k, batch_size, key=key, priority=-k)]

            return _Task(submit, f"partition {k} of the bag", None)

        return [part(k, partition) for k, partition in enumerate(bag.to_delayed())]

    return _run(distributed, client, out_dir, product, verbose, plan)
