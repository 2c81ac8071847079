#!/usr/bin/env python
"""Parallel conversion benchmark: ``RaggedMmap.from_indexable`` over a dataset that decodes JPEGs.

    python benchmarks/bench_parallel.py --quick     # development: 120 images, about a minute
    python benchmarks/bench_parallel.py             # the full run: 3,000 images (2.8 GB decoded)

A CPU-bound conversion, the normal case of converting an image folder: item ``i`` of the
dataset (``jpeg_folder.JpegFolder``) decodes COCO-sized JPEG ``i`` (640x480 and the like,
generated once from a seeded RNG into ``--workdir``) with Pillow. Side by side in one run:

- ours, serial (``n_jobs=None``), the reference;
- ours, ``n_jobs=2`` (target: >= 1.7x faster than serial, worker start-up included);
- mmap_ninja 0.9.0, ``n_jobs=2`` (its own virtualenv, as benchmarks/bench.py runs it).

Each build runs in a fresh process (``python -I``, this file with ``--run``), timed from the
call to its return. Peak RSS is taken of that process (``VmHWM``, reset just before the
build) and of every process it starts (their ``VmHWM``, read every 0.1 s and from
``getrusage`` once they are reaped), at two dataset sizes: the target is about one batch
per process above its idle size, and no growth with the dataset. After each build every
sample is read back and compared with the checksum of the decoded JPEG. Exit status 1
means some build returned wrong data.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (the 0.9.0 side's import rules, isolated environment)
import jpeg_folder as jf  # noqa: E402
from tables import table  # noqa: E402

UPSTREAM = bench.UPSTREAM_VERSION
SPEEDUP_TARGET = 1.7
SERIAL_MIN_SECONDS = 10.0
RSS_BATCHES = 2.5  # "about one batch per process": the decoded batch plus its copy on the way to disk
GROWTH_BATCHES = 0.5


# =========================================================================================
# one build, in a fresh process
# =========================================================================================


def _status_kb(pid: Any, field: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # the process ended meanwhile
        return None
    return None


def _children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


class DescendantPeaks(threading.Thread):
    """Polls the peak RSS (VmHWM) and anonymous RSS of every process this one starts."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.hwm: Dict[int, int] = {}
        self.anon: Dict[int, int] = {}
        self.own_anon = 0  # sampled: VmHWM also counts the map's file pages this process has mapped
        self.halt = threading.Event()

    def poll(self) -> None:
        anon = _status_kb("self", "RssAnon")
        if anon is not None:
            self.own_anon = max(self.own_anon, anon)
        todo, seen = [os.getpid()], set()  # type: List[int], Set[int]
        while todo:
            for child in _children(todo.pop()):
                if child in seen:
                    continue
                seen.add(child)
                todo.append(child)
                hwm, anon = _status_kb(child, "VmHWM"), _status_kb(child, "RssAnon")
                if hwm is not None:
                    self.hwm[child] = max(self.hwm.get(child, 0), hwm)
                if anon is not None:
                    self.anon[child] = max(self.anon.get(child, 0), anon)

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self.poll()
        self.halt.set()
        self.join()


def _idle_worker_kb(side: str) -> int:
    """RSS of a spawned process that has imported what a worker needs, before any work."""
    bench._import_library(side)
    import mmap_ninja.ragged  # noqa: F401

    return _status_kb("self", "VmRSS") or 0


def run_main(args: argparse.Namespace) -> None:
    mn = bench._import_library(args.side)
    import mmap_ninja.ragged  # noqa: F401  (everything the build touches, imported before measuring)

    dataset = jf.JpegFolder(args.folder, args.count)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        idle_worker = pool.apply(_idle_worker_kb, (args.side,))
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := current RSS, so the peak is the build's
        hwm_reset = True
    except OSError:
        hwm_reset = False
    idle = _status_kb("self", "VmRSS") or 0
    peaks = DescendantPeaks()
    peaks.start()
    t0 = time.perf_counter()
    mn.RaggedMmap.from_indexable(out, dataset, args.batch_size, n_jobs=args.jobs)
    seconds = time.perf_counter() - t0
    peaks.stop()
    parent_peak = _status_kb("self", "VmHWM") or 0
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    workers = [kb for pid, kb in peaks.hwm.items()]
    if reaped > children_before:  # a child that ended between two polls
        workers.append(reaped)

    # verification: every sample, against the checksum of the decoded JPEG
    expected = json.loads((Path(args.folder) / "manifest.json").read_text())["checksums"][: args.count]
    m = mn.RaggedMmap(out)
    wrong = [] if len(m) == args.count else [f"{len(m)} samples, expected {args.count}"]
    for i in range(min(len(m), args.count)):
        if jf.checksum(m[i]) != expected[i]:
            wrong.append(f"sample {i} differs from the decoded JPEG")
            if len(wrong) > 5:
                break
    del m
    merge_seconds = None
    if args.side == "ours" and args.jobs is None and hasattr(mn, "concatenate"):
        # what a parallel build pays on top of its workers: one copy of every byte into the map
        copy = out.parent / (out.name + "-copy")
        os.sync()
        t0 = time.perf_counter()
        mn.concatenate(copy, [out])
        merge_seconds = time.perf_counter() - t0
        shutil.rmtree(copy, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"seconds": seconds, "count": args.count, "wrong": wrong, "hwm_reset": hwm_reset, "merge_seconds": merge_seconds,
                      "idle_kb": idle, "parent_peak_kb": parent_peak, "parent_anon_kb": peaks.own_anon, "idle_worker_kb": idle_worker,
                      "worker_peak_kb": max(workers, default=0), "worker_anon_kb": max(peaks.anon.values(), default=0),
                      "processes_seen": len(peaks.hwm), "library": mn.__file__}))


# =========================================================================================
# the driver
# =========================================================================================


def find_upstream(requested: Optional[str], cache_dir: Path) -> Optional[str]:
    """A python with mmap_ninja 0.9.0, joblib and Pillow (created once in ``cache_dir`` if need be)."""
    candidates = [requested, os.environ.get("MMAP_NINJA_UPSTREAM_PYTHON")]
    check = f"import mmap_ninja, joblib, PIL; assert mmap_ninja.__version__ == {UPSTREAM!r}"
    for python in filter(None, candidates):
        if Path(python).exists():
            if subprocess.run([python, "-I", "-c", check], capture_output=True, env=bench._isolated_env()).returncode == 0:
                return python
            bench.log(f"{python} lacks mmap_ninja {UPSTREAM}, joblib or Pillow; not using it")
    venv = cache_dir / f"venv-mmap_ninja-{UPSTREAM}-parallel"
    python = venv / "bin" / "python"
    if python.exists():
        return str(python)
    import joblib
    import numpy
    import PIL

    # the same joblib, Pillow and numpy as ours: the decoding and the pool are not what is compared
    pins = [f"mmap_ninja=={UPSTREAM}", f"joblib=={joblib.__version__}", f"Pillow=={PIL.__version__}", f"numpy=={numpy.__version__}"]
    bench.log(f"creating {venv} with {' '.join(pins)}")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True, capture_output=True)
        return str(python)
    except (subprocess.CalledProcessError, OSError) as e:
        bench.log(f"could not create it ({e}); measuring ours only")
        shutil.rmtree(venv, ignore_errors=True)
        return None


class Config:
    def __init__(self, label: str, side: str, jobs: Optional[int]):
        self.label, self.side, self.jobs = label, side, jobs
        self.seconds: Optional[float] = None  # best at the full size
        self.rss: Dict[int, Dict[str, Any]] = {}  # dataset size -> the run's result
        self.wrong: List[str] = []


def run_build(driver: argparse.Namespace, config: Config, python: str, count: int) -> Dict[str, Any]:
    out = driver.workdir / f"maps-{os.getpid()}" / f"{config.side}-{config.jobs}"  # one folder per run of this script
    command = [python, "-I", str(Path(__file__).resolve()), "--run", "--side", config.side, "--folder", str(driver.folder),
               "--count", str(count), "--batch-size", str(driver.batch_size), "--out", str(out)]
    if config.jobs is not None:
        command += ["--jobs", str(config.jobs)]
    os.sync()  # untimed: the dirty pages of the run before must not be written back during this one
    proc = subprocess.run(command, capture_output=True, text=True, env=bench._isolated_env(), cwd=str(driver.workdir))
    if proc.returncode != 0:
        raise RuntimeError(f"{config.label} failed on {count} images:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["wrong"]:
        config.wrong.extend(result["wrong"])
    bench.log(f"  {config.label}, {count:,} images: {result['seconds']:.2f} s, parent peak {result['parent_peak_kb'] / 1024:.0f} MB, "
              f"worker peak {result['worker_peak_kb'] / 1024:.0f} MB ({result['processes_seen']} processes)"
              + (f"  WRONG: {result['wrong']}" if result["wrong"] else ""))
    return result


def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"



def report(args: argparse.Namespace, configs: List[Config], sizes: List[int], batch_kb: float, manifest: Dict[str, Any]) -> str:
    serial = configs[0]
    big = sizes[-1]
    rows = []
    for c in configs:
        speedup = serial.seconds / c.seconds if serial.seconds and c.seconds else None
        if c.wrong:
            target, met = "", "NO: wrong data"
        elif c is serial:
            target = f">= {SERIAL_MIN_SECONDS:.0f} s (sizing)"
            met = "yes" if c.seconds >= SERIAL_MIN_SECONDS else "NO: too small to judge; raise --count"
        elif c.side == "ours":
            target = f">= {SPEEDUP_TARGET}x serial"
            met = "yes" if speedup >= SPEEDUP_TARGET else f"NO ({speedup / SPEEDUP_TARGET:.0%} of target)"
        else:
            target, met = "(reference)", ""
        rows.append([c.label, f"{c.seconds:.2f} s", f"{big / c.seconds:,.0f}/s", f"{speedup:.2f}x", target, met])
    merge = serial.rss.get(big, {}).get("merge_seconds")
    if merge is not None and serial.seconds:
        half = serial.seconds / 2 + merge
        rows.append([f"  for scale: serial / 2 + one copy of the map ({merge:.2f} s)", f"{half:.2f} s", f"{big / half:,.0f}/s",
                     f"{serial.seconds / half:.2f}x", "(the most 2 workers can do if the merge copies every byte)", ""])
    out = [f"conversion of {big:,} JPEGs ({manifest['bytes_decoded'] * big / manifest['count'] / 1e9:.2f} GB decoded), "
           f"batch_size={args.batch_size}, best of {args.repetitions}:",
           table(["configuration", "time", "images", "vs serial", "target", "met?"], rows), ""]
    rows = []
    for c in configs:
        for who, peak_key, idle_key, anon_key in (("parent", "parent_peak_kb", "idle_kb", "parent_anon_kb"),
                                                  ("worker", "worker_peak_kb", "idle_worker_kb", "worker_anon_kb")):
            if who == "worker" and c.jobs is None:
                continue
            peaks = [c.rss[n][peak_key] for n in sizes]
            idle = c.rss[big][idle_key]
            above = (peaks[-1] - idle) / batch_kb
            growth = (peaks[-1] - peaks[0]) / batch_kb
            if c.side != "ours":
                target, met = "(reference)", ""
            else:
                target = f"<= {RSS_BATCHES} batches above idle, growth < {GROWTH_BATCHES} batch"
                met = "yes" if above <= RSS_BATCHES and growth < GROWTH_BATCHES else "NO"
            rows.append([f"{c.label}: {who}" + (" (largest)" if who == "worker" else ""), mb(idle),
                         *[f"{mb(p)} ({mb(c.rss[n][anon_key])})" for p, n in zip(peaks, sizes)], f"{above:+.1f}", f"{growth:+.1f}", target, met])
    out += [f"peak RSS in MB, VmHWM (sampled peak of anonymous RSS); one batch = {batch_kb / 1024:.0f} MB; idle = RSS before "
            "the build, for a worker that of a spawned process with the same imports:",
            table(["process", "idle", *[f"{n:,} images" for n in sizes], "batches above idle", "growth (batches)", "target", "met?"],
                  rows)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="120 images, 1 repetition (checks that it runs and verifies)")
    parser.add_argument("--count", type=int, default=None, help="images in the timed conversion (default 3,000; --quick 120)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch_size given to from_indexable (default %(default)s)")
    parser.add_argument("--repetitions", type=int, default=2, help="timed runs per configuration at the full size (best kept)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / f"mmap-ninja-bench-parallel-{os.getuid()}",
                        help="where the JPEGs are cached and maps built (default: %(default)s)")
    parser.add_argument("--upstream-python", default=None, help="python with mmap_ninja==0.9.0, joblib and Pillow "
                        "(default: $MMAP_NINJA_UPSTREAM_PYTHON if it has them, else a virtualenv created in ~/.cache/mmap-ninja-bench)")
    parser.add_argument("--no-upstream", action="store_true", help="measure ours only")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["ours", "upstream"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_main(args)
        return

    if args.quick:
        args.repetitions = 1
    count = args.count or (120 if args.quick else 3000)
    sizes = [max(2 * args.batch_size, count // 4), count]  # at least two batches: a peak of one batch needs a second to show
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.folder = args.workdir / "jpegs-seed0"
    t0 = time.perf_counter()
    bench.log(f"generating {count:,} JPEGs in {args.folder} (cached between runs)")
    manifest = jf.make_folder(args.folder, count)
    bench.log(f"  ready in {time.perf_counter() - t0:.1f} s: {manifest['bytes_jpeg'] * count / manifest['count'] / 1e6:,.0f} MB of JPEG")
    upstream = None if args.no_upstream else find_upstream(args.upstream_python, Path.home() / ".cache" / "mmap-ninja-bench")
    configs = [Config("ours, n_jobs=None (serial)", "ours", None), Config("ours, n_jobs=2", "ours", 2)]
    if upstream:
        configs.append(Config(f"{UPSTREAM}, n_jobs=2", "upstream", 2))
    python = {"ours": sys.executable, "upstream": upstream}
    bench.warm(args.folder)
    for n in sizes[:-1]:  # the smaller size: memory only
        for c in configs:
            c.rss[n] = run_build(args, c, python[c.side], n)
    for rep in range(args.repetitions):  # alternate the order, keep the best time
        for c in (configs if rep % 2 == 0 else configs[::-1]):
            result = run_build(args, c, python[c.side], count)
            if c.seconds is None or result["seconds"] < c.seconds:
                c.seconds = result["seconds"]
            if count not in c.rss or result["parent_peak_kb"] > c.rss[count]["parent_peak_kb"]:
                c.rss[count] = result
    batch_kb = manifest["bytes_decoded"] / manifest["count"] * args.batch_size / 1024
    print(f"machine: {bench.machine_description()}")
    print(report(args, configs, sizes, batch_kb, manifest))
    if args.json:
        args.json.write_text(json.dumps({"machine": bench.machine_description(), "count": count, "batch_size": args.batch_size,
                                         "configs": [{"label": c.label, "seconds": c.seconds, "rss": c.rss, "wrong": c.wrong}
                                                     for c in configs]}, indent=2))
    shutil.rmtree(args.workdir / f"maps-{os.getpid()}", ignore_errors=True)
    if any(c.wrong for c in configs):
        sys.exit(1)


if __name__ == "__main__":
    main()
