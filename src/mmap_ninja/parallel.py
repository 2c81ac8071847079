"""The build engine: worker processes each build parts of contiguous index ranges of a
dataset, and the caller merges the parts, in order as they come, into one map.

What is built is a *product* (``build.MapProduct`` for a map of one kind,
``records_build.RecordsProduct`` for records): it builds a range into a part, merges parts
and creates an empty map; the engine (here, and ``dask.py`` on a cluster) only schedules,
reports progress, handles a dead worker and Ctrl-C, and merges. A serial build is the same
product building the whole range into the published directory.

Why ``concurrent.futures`` and not joblib: it is the standard library (``n_jobs`` needs no
extra), the dataset travels to each worker once (the pool's initializer) instead of with
every task, a worker that dies surfaces as ``BrokenProcessPool`` instead of a hang, and
workers return a small ``Part`` record, never samples. Workers start by forkserver where
the platform has it (Python 3.14's default on Linux) and by spawn elsewhere, never by
fork, which is unsafe in a process that runs threads.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import build, layout, parts
from .errors import WorkerDiedError, renumbered, sample_of
from .skip import AllSkippedError
from .progress import check_batch_size, progress_bar

_PARTS_PER_JOB = 4  # more parts than workers: the last ones to finish are short
_WORKER: Dict[str, Any] = {}  # in a worker process: the dataset and the progress queue


def resolve_jobs(n_jobs: Optional[int]) -> int:
    """The number of worker processes ``n_jobs`` asks for (None and 1: none, build in this process)."""
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be None, a positive int or -1 (all cores), got {n_jobs!r}")
    return os.cpu_count() or 1 if n_jobs == -1 else n_jobs


def _init_worker(payload: bytes, progress: Any) -> None:
    _WORKER["indexable"], _WORKER["progress"] = pickle.loads(payload), progress


def _dumps(indexable: Any, jobs: int) -> bytes:
    """The dataset pickled for the workers; closures and lambdas by cloudpickle, when installed."""
    error: Exception = TypeError("it is defined in __main__, which the workers cannot import")
    if not _from_unimportable_main(indexable):
        try:
            return pickle.dumps(indexable)
        except Exception as e:
            error = e
    cloudpickle = _cloudpickle()
    if cloudpickle is not None:
        try:
            return cloudpickle.dumps(indexable)
        except Exception as e:
            error = e
    hint = "" if cloudpickle is not None else ", or pip install 'mmap_ninja[parallel]' (cloudpickle) for closures and lambdas"
    raise TypeError(
        f"n_jobs={jobs} sends the dataset to worker processes, but {type(indexable).__name__} {indexable!r:.80} "
        f"cannot be pickled ({type(error).__name__}: {error}); define it at the top level of a module, or use n_jobs=None{hint}"
    ) from None


def _from_unimportable_main(indexable: Any) -> bool:
    """Whether the dataset's class lives in a ``__main__`` that workers cannot import (``python -c``,
    a notebook, an interactive session): pickle would name it, and the workers would not find it."""
    import sys

    main = sys.modules.get("__main__")
    return type(indexable).__module__ == "__main__" and not getattr(main, "__file__", None)


def _cloudpickle() -> Any:
    try:
        import cloudpickle
    except ImportError:
        try:
            from joblib.externals import cloudpickle  # joblib ships one
        except ImportError:
            return None
    return cloudpickle


def _build_part(part_dir: str, product: Any, start: int, stop: int, batch_size: int) -> parts.Part:
    progress = _WORKER["progress"]
    progress.put(("start", os.getpid(), start, stop))
    return build.build_part(Path(part_dir), product, _WORKER["indexable"], start, stop, batch_size, on_batch=lambda n: progress.put(("batch", n)))


def worker_context() -> Any:
    """The multiprocessing context of worker processes: forkserver where the platform has it, else spawn."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _ranges(count: Optional[int], batch_size: int, jobs: int, start: int) -> Iterator[Tuple[int, int]]:
    """The parts' index ranges from ``start``; without a known count, ranges go on until a part ends short."""
    if count is not None:
        yield from parts.part_ranges(count, batch_size, jobs * _PARTS_PER_JOB, start)
        return
    size = batch_size * _PARTS_PER_JOB
    yield from ((a, a + size) for a in itertools.count(start, size))


def build_in_parallel(
    out_dir: Path,
    product: Any,
    indexable: Any,
    count: Optional[int],
    batch_size: int,
    jobs: int,
    verbose: bool,
    durable: bool = False,
) -> List[Tuple[int, str]]:
    """Build ``indexable[0:count]`` with ``jobs`` worker processes and publish it at ``out_dir``.

    ``product`` says what is built (``build.MapProduct``, ``records_build.RecordsProduct``).
    With ``count`` None, the dataset ends at its first IndexError, as in a serial build.
    Returns the (index, reason) of the samples the dataset skipped (``Skip``).
    """
    # imported here: multiprocessing is slow to import, and absent on some platforms
    from concurrent.futures import ProcessPoolExecutor

    payload = _dumps(indexable, jobs)
    context = worker_context()
    progress = context.SimpleQueue()  # written through at once: a worker killed next has told its range
    workdir = parts.parts_dir(out_dir)
    pool = None
    try:
        with layout.building(Path(out_dir), durable, product.replaceable, product.what) as tmp, \
                progress_bar(verbose, count, "building") as bar:
            # what must be read once (a records map's first batch) is read here, before the workers start
            first = product.prepare(workdir, indexable, count, batch_size)
            if first is not None:
                bar.update(first.stop - first.start)
            pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(payload, progress))
            # parts are merged in order as they come, while the workers build the next ones
            merger = product.merger(tmp)
            try:
                skipped = _run(pool, merger, workdir, product, first, count, batch_size, jobs, progress, bar)
            finally:
                merger.close()
            finish(product, tmp, merger, skipped)
            _stop(pool)
    except BaseException:
        if pool is not None:
            _stop(pool)
        raise
    finally:
        progress.close()
        parts.remove(workdir)
    return skipped


def finish(product: Any, tmp: Path, merger: Any, skipped: List[Tuple[int, str]]) -> None:
    """Complete the merged map in ``tmp``; a build that skipped every sample publishes nothing."""
    if not merger.count and skipped:
        raise AllSkippedError(f"every one of the {len(skipped)} samples of the dataset was skipped; no map was written "
                              f"(sample {skipped[0][0]}: {skipped[0][1]})")
    product.finish(tmp, merger)


def merge_part(merger: Any, part: parts.Part, skipped: List[Tuple[int, str]]) -> None:
    """Merge ``part`` (the next in order), then remove it: the build needs about one map's room, not two.

    Errors of the merge name samples by their index in the dataset, also after skipped ones.
    """
    before = len(skipped)
    skipped.extend(part.skipped)
    if part.count:
        try:
            merger.add(Path(part.path))
        except (TypeError, ValueError) as e:
            raise _in_dataset(e, skipped, merger.count, before) from e.__cause__
    parts.remove(part.path)


def _in_dataset(error: BaseException, skipped: List[Tuple[int, str]], merged: int, before: int) -> BaseException:
    """An error of the merge that names a sample by its position in the map, named by its index in the dataset."""
    position = sample_of(error)
    if position is None or not skipped:
        return error
    index = position
    for i, _ in skipped:  # in increasing order: each skipped one at or before the sample moves it on
        if i <= index:
            index += 1
    return renumbered(error, index)


def _run(
    pool: Any,
    merger: Any,
    workdir: Path,
    product: Any,
    first: Optional[parts.Part],
    count: Optional[int],
    batch_size: int,
    jobs: int,
    progress: Any,
    bar: Any,
) -> List[Tuple[int, str]]:
    """Keep the workers busy with parts and merge the finished ones in order, until the end."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    skipped: List[Tuple[int, str]] = []
    start = 0
    if first is not None:
        merge_part(merger, first, skipped)
        start = first.stop
        read = first.stop - first.start
        if (count is not None and start >= count) or read == 0 or read % batch_size:
            return skipped  # the dataset ended within what was read first
    ranges = enumerate(_ranges(count, batch_size, jobs, start))
    pending: Dict[Any, int] = {}  # future -> part number
    planned: Dict[int, int] = {}  # part number -> samples asked for
    finished: Dict[int, parts.Part] = {}  # done, not merged yet
    running: Dict[int, Tuple[int, int]] = {}  # worker pid -> the range it is building
    processes: Dict[int, Any] = {}
    end = None  # the first part that came back short: the dataset ends there
    merged = 0  # parts merged so far
    while True:
        while end is None and len(pending) < 2 * jobs:
            k, (a, b) = next(ranges, (None, (0, 0)))
            if k is None:
                break
            try:
                pending[pool.submit(_build_part, str(workdir / f"{k:06d}"), product, a, b, batch_size)] = k
            except BrokenProcessPool:  # a worker died: its failed future says where, below
                if not pending:
                    raise WorkerDiedError("a worker process died; nothing was written") from None
                break
            planned[k] = b - a
        if not pending:
            break
        done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
        processes.update(getattr(pool, "_processes", None) or {})
        _drain(progress, bar, running)
        for future in done:
            k = pending.pop(future)
            _raise_if_failed(future, running, processes)
            part = finished[k] = future.result()
            if part.stop - part.start < planned[k] and (end is None or k < end):
                end = k
        while merged in finished and (end is None or merged <= end):
            merge_part(merger, finished.pop(merged), skipped)
            merged += 1
        if end is not None and merged > end:
            break
    _drain(progress, bar, running)
    return skipped


def _drain(progress: Any, bar: Any, running: Dict[int, Tuple[int, int]]) -> None:
    while True:
        try:
            if progress.empty():
                return
            message = progress.get()
        except (OSError, ValueError, EOFError):
            return
        if message[0] == "batch":
            bar.update(message[1])
        else:
            running[message[1]] = (message[2], message[3])


def _raise_if_failed(future: Any, running: Dict[int, Tuple[int, int]], processes: Dict[int, Any]) -> None:
    from concurrent.futures.process import BrokenProcessPool

    error = future.exception()
    if error is None:
        return
    if isinstance(error, BrokenProcessPool):
        for process in processes.values():
            process.join(timeout=1)  # so that the dead one has its exit code
        dead = [pid for pid, p in processes.items() if p.exitcode not in (None, 0) and pid in running]
        # once one worker died, the pool stops the others (SIGTERM, or exit code 255 when their
        # queue broke): those are not what killed the build, unless nothing else died
        dead = [pid for pid in dead if processes[pid].exitcode not in (-signal.SIGTERM, 255)] or dead
        suspects = dead or list(running)
        where = " or ".join(f"samples {running[pid][0]} to {running[pid][1] - 1}" for pid in suspects)
        codes = ", ".join(f"exit code {processes[pid].exitcode}" for pid in dead) or "its exit code is unknown"
        raise WorkerDiedError(
            f"a worker process died while building {where or 'the map'} ({codes}; a negative code is the signal that "
            "killed it, e.g. -9 from the out-of-memory killer); nothing was written"
        ) from None
    raise error


def _stop(pool: Any) -> None:
    """Stop the workers now (Ctrl-C, an error): the parts they build are removed after."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.terminate()
        except Exception:
            pass
    pool.shutdown(wait=True, cancel_futures=True)


def build_indexable(
    out_dir: Any,
    kind: Any,
    indexable: Any,
    batch_size: int,
    n_jobs: Optional[int],
    verbose: bool,
    options: Optional[Dict[str, Any]] = None,
    durable: bool = False,
) -> List[Tuple[int, str]]:
    """``indexable[0], indexable[1], ...`` as a map at ``out_dir``, by ``n_jobs`` processes or serially.

    ``kind`` is a map's kind ("ragged", "string", "numpy", with the builder's ``options``) or
    a product (see ``build.MapProduct``). Returns the (index, reason) of the samples the
    dataset left out by returning ``Skip``.
    """
    check_batch_size(batch_size)
    product = build.MapProduct(kind, options) if isinstance(kind, str) else kind
    jobs = resolve_jobs(n_jobs)
    count = _length(indexable)
    if jobs > 1 and count != 0:
        return build_in_parallel(Path(out_dir), product, indexable, count, batch_size, jobs, verbose, durable)
    with layout.building(Path(out_dir), durable, product.replaceable, product.what) as tmp, \
            progress_bar(verbose, count, "building") as bar:
        part = product.build_into(tmp, indexable, 0, count if count is not None else 2**62, batch_size, bar.update)
        if part.skipped and not part.count:
            finish(product, tmp, _Empty(), list(part.skipped))
    return list(part.skipped)


class _Empty:
    count = 0


def _length(indexable: Any) -> Optional[int]:
    try:
        return len(indexable)
    except TypeError:
        return None
