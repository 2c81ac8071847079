#!/usr/bin/env python
"""What ``durable=True`` costs: appends and builds with and without it, side by side.

    python benchmarks/durable.py --quick           # development: a few appends, checks it runs
    python benchmarks/durable.py                   # the full run (~1 minute)
    python benchmarks/durable.py --dir /mnt/ssd    # on another disk (the default: beside this file)

The cost of an fsync is the disk's, so run it on the disk the maps will live on, never on a
tmpfs (/dev/shm, often /tmp), where an fsync costs nothing. For each kind of map it appends
one sample per call, ``--appends`` times, in alternating blocks of non-durable and durable
calls, and prints the median time per call, the fsyncs each durable call issues, and the
time of a durable and a non-durable build. Every map is read back and compared with what
was written before a figure is printed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402

from mmap_ninja import fs  # noqa: E402
from mmap_ninja import numpy as np_ninja  # noqa: E402
from mmap_ninja.ragged import RaggedMmap  # noqa: E402
from mmap_ninja.string import StringsMmap  # noqa: E402

KINDS = ("ragged", "strings", "numpy")


def sample(kind: str, i: int) -> Any:
    if kind == "ragged":
        return np.arange(i, i + 64 + i % 64, dtype=np.int64)
    if kind == "strings":
        return f"review {i}: " + "a fine film, " * (i % 20)
    return np.full((8, 8), i, np.float32)


def build(kind: str, path: Path, samples: List[Any], durable: bool) -> None:
    if kind == "numpy":
        np_ninja.from_ndarray(path, np.stack(samples), durable=durable)
    elif kind == "strings":
        StringsMmap.from_strings(path, samples, durable=durable).close()
    else:
        RaggedMmap.from_lists(path, samples, durable=durable).close()


def appender(kind: str, path: Path) -> Callable[[Any, bool], None]:
    if kind == "numpy":
        return lambda s, durable: np_ninja.extend_dir(path, s[None], durable=durable)
    handle = StringsMmap(path) if kind == "strings" else RaggedMmap(path)
    return lambda s, durable: handle.append(s, durable=durable)


def read_back(kind: str, path: Path) -> List[Any]:
    if kind == "numpy":
        return list(np.array(np_ninja.open_existing(path, mode="r")))
    m = StringsMmap(path, mode="rb") if kind == "strings" else RaggedMmap(path, mode="r")
    try:
        return [s if kind == "strings" else np.array(s) for s in m]
    finally:
        m.close()


def verify(kind: str, path: Path, expected: List[Any]) -> None:
    got = read_back(kind, path)
    ok = len(got) == len(expected) and all(
        (g == e) if kind == "strings" else (g.dtype == e.dtype and np.array_equal(g, e)) for g, e in zip(got, expected)
    )
    if not ok:
        raise SystemExit(f"{kind}: the map at {path} does not hold what was written")


class FsyncCounter:
    """Counts the files fsynced through mmap_ninja.fs."""

    def __init__(self) -> None:
        self.count = 0
        self._real: Dict[str, Any] = {}

    def __enter__(self) -> "FsyncCounter":
        for name in ("fsync", "fsync_all", "sync_path", "sync_paths"):
            real = getattr(fs, name, None)
            if real is None:
                continue
            self._real[name] = real
            setattr(fs, name, self._counting(name, real))
        return self

    def _counting(self, name: str, real: Callable) -> Callable:
        def counted(arg: Any) -> Any:
            self.count += len(arg) if name in ("fsync_all", "sync_paths") else 1
            saved = {n: getattr(fs, n) for n in self._real}
            for n, r in self._real.items():  # the real call's own inner calls are not counted twice
                setattr(fs, n, r)
            try:
                return real(arg)
            finally:
                for n, f in saved.items():
                    setattr(fs, n, f)

        return counted

    def __exit__(self, *exc: Any) -> None:
        for name, real in self._real.items():
            setattr(fs, name, real)


MODES = ("plain", "durable")


def bench_kind(kind: str, work: Path, appends: int, block: int, build_size: int) -> Dict[str, Any]:
    path = work / kind
    expected = [sample(kind, i) for i in range(100)]
    build(kind, path, expected, durable=False)
    append = appender(kind, path)
    times: Dict[str, List[float]] = {mode: [] for mode in MODES}
    i = len(expected)
    for round_number in range(0, appends, block):
        order = MODES if round_number % (2 * block) == 0 else MODES[::-1]
        for mode in order:
            for _ in range(block):
                s = sample(kind, i)
                t = time.perf_counter()
                append(s, mode != "plain")
                times[mode].append(time.perf_counter() - t)
                expected.append(s)
                i += 1
    with FsyncCounter() as counter:
        s = sample(kind, i)
        append(s, True)
        expected.append(s)
    verify(kind, path, expected)
    builds: Dict[bool, float] = {}
    big = [sample(kind, j) for j in range(build_size)]
    for durable in (False, True):
        best = float("inf")
        for rep in range(3):
            target = work / f"{kind}-build-{durable}-{rep}"
            t = time.perf_counter()
            build(kind, target, big, durable)
            best = min(best, time.perf_counter() - t)
        verify(kind, target, big)
        builds[durable] = best
    with FsyncCounter() as build_counter:
        build(kind, work / f"{kind}-build-counted", big, True)
    return {
        "kind": kind,
        "plain_ms": statistics.median(times["plain"]) * 1e3,
        "durable_ms": statistics.median(times["durable"]) * 1e3,
        "durable_best_ms": min(times["durable"]) * 1e3,
        "fsyncs": counter.count,
        "build_plain_ms": builds[False] * 1e3,
        "build_durable_ms": builds[True] * 1e3,
        "build_fsyncs": build_counter.count,
    }


def file_system(path: Path) -> str:
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return fstype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few appends: checks that it runs")
    parser.add_argument("--dir", type=Path, default=HERE, help="where to put the maps (a real disk, not tmpfs)")
    parser.add_argument("--appends", type=int, default=400, help="appends per kind and mode")
    args = parser.parse_args()
    appends, block, build_size = (20, 5, 1000) if args.quick else (args.appends, 20, 10000)
    work = Path(tempfile.mkdtemp(prefix=".durable-bench-", dir=args.dir))
    try:
        fstype = file_system(work.resolve())
        print(f"maps in {work} ({fstype}); {appends} appends of one sample per kind and mode; builds of {build_size} samples")
        if fstype in ("tmpfs", "ramfs"):
            print("warning: a tmpfs makes fsync free; use --dir on a real disk for meaningful figures")
        rows = [bench_kind(kind, work, appends, block, build_size) for kind in KINDS]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'map':8} {'append':>10} {'durable append (best)':>22} {'fsyncs':>7} {'build':>10} {'durable build':>14} {'fsyncs':>7}")
    for r in rows:
        print(f"{r['kind']:8} {r['plain_ms']:8.3f}ms {r['durable_ms']:11.3f}ms ({r['durable_best_ms']:.3f}) {r['fsyncs']:7d} "
              f"{r['build_plain_ms']:8.1f}ms {r['build_durable_ms']:12.1f}ms {r['build_fsyncs']:7d}")
    print("(median and best per append call of one sample; best of 3 per build; every map read back and verified)")


if __name__ == "__main__":
    main()
