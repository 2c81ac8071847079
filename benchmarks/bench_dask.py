#!/usr/bin/env python
"""Dask benchmark: ``mmap_ninja.dask.from_indexable`` on a LocalCluster against a serial build.

    python benchmarks/bench_dask.py --quick     # development: 120 images, about a minute
    python benchmarks/bench_dask.py             # the full run: 4,000 images (3.6 GB decoded), ~3 minutes

The workload of benchmarks/bench_parallel.py: item ``i`` of the dataset
(``jpeg_folder.JpegFolder``) decodes COCO-sized JPEG ``i``, generated once from a seeded RNG
into ``--workdir`` (the same default folder as bench_parallel.py, so the JPEGs are shared).
Side by side in one run:

- serial: ``RaggedMmap.from_indexable(out, ds, batch_size)`` in a fresh process (``python
  -I``, this file with ``--serial``), the reference; it must take >= 10 s to judge;
- ``from_indexable(out, ds, "ragged", batch_size, client=...)`` on
  ``LocalCluster(n_workers=2, threads_per_worker=1)`` (worker processes), started by this
  process, twice: with the workers' ``MALLOC_TRIM_THRESHOLD_`` unset (target >= 1.5x
  faster than serial) and in Dask's default worker environment, which sets it to 65536
  and so makes decoding about 2x slower (see WORKER_ENVIRONMENTS). Each cluster's start-up
  (until both workers are up) is timed and reported on its own; the first build on a new
  cluster, which also pays for the workers' imports, is reported beside the best one.
- for scale, as in bench_parallel.py: serial / 2 + one copy of the serial map
  (``concatenate``, after a ``sync``), since a build by parts writes every byte twice; and
  how much faster two processes decoding at once are than one, measured just before: on a
  shared or SMT machine it is well under 2x, and no 2-worker build beats it.

After every build all samples are read back and compared with the checksum of the decoded
JPEG, and the Dask build's files are compared byte for byte with the serial build's. Exit
status 1 means some build returned wrong data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (imports this checkout's mmap_ninja and checks it did)
import jpeg_folder as jf  # noqa: E402
from tables import table  # noqa: E402

SPEEDUP_TARGET = 1.5
SERIAL_MIN_SECONDS = 10.0

# Dask starts worker processes with MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-environ),
# which turns off glibc's adaptive mmap threshold: every decoded image (~1 MB) is then a fresh
# mmap, page-faulted in and unmapped again, and decoding runs about 2x slower than in a plain
# process. Both are measured; the target is judged on the workers without it.
WORKER_ENVIRONMENTS = [
    ("MALLOC_TRIM_THRESHOLD_ unset", {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
    ("Dask's default worker environment", {}),
]


class Cluster:
    def __init__(self, label: str, config: Dict[str, Any]):
        self.label, self.config = label, config
        self.judged = label == WORKER_ENVIRONMENTS[0][0]
        self.startup = 0.0
        self.times: List[float] = []


def verify(path: Path, folder: Path, count: int) -> List[str]:
    """What is wrong with the map at ``path``: every sample against the decoded JPEG's checksum."""
    from mmap_ninja import RaggedMmap

    expected = json.loads((folder / "manifest.json").read_text())["checksums"][:count]
    m = RaggedMmap(path)
    wrong = [] if len(m) == count else [f"{len(m)} samples, expected {count}"]
    for i in range(min(len(m), count)):
        if jf.checksum(m[i]) != expected[i]:
            wrong.append(f"sample {i} differs from the decoded JPEG")
            if len(wrong) > 5:
                break
    return wrong


def file_hashes(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _decode_seconds(folder: str, count: int) -> float:
    ds = jf.JpegFolder(folder, count)
    t0 = time.perf_counter()
    for i in range(count):
        ds[i]
    return time.perf_counter() - t0


def parallel_ceiling(folder: Path, count: int, environ: Dict[str, str]) -> float:
    """How many times one process's decoding rate two processes reach together on this machine, now.

    The most any 2-worker build can gain: on a shared or SMT machine it is well under 2.
    """
    import multiprocessing

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pool.apply(_decode_seconds, (str(folder), 10))  # imports, page cache
            one = min(pool.apply(_decode_seconds, (str(folder), count)) for _ in range(2))
            two = max(pool.starmap(_decode_seconds, [(str(folder), count)] * 2))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return 2 * one / two


def serial_main(args: argparse.Namespace) -> None:
    mn = bench._import_library("ours")
    import mmap_ninja.ragged  # noqa: F401  (imported before the clock starts)

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    mn.RaggedMmap.from_indexable(out, jf.JpegFolder(args.folder, args.count), args.batch_size)
    seconds = time.perf_counter() - t0
    wrong = verify(out, Path(args.folder), args.count)
    # what a build by parts pays on top of its workers: one copy of every byte into the map
    copy = out.parent / (out.name + "-copy")
    os.sync()
    t0 = time.perf_counter()
    mn.concatenate(copy, [out])
    copy_seconds = time.perf_counter() - t0
    shutil.rmtree(copy, ignore_errors=True)
    print(json.dumps({"seconds": seconds, "wrong": wrong, "copy_seconds": copy_seconds}))


def run_serial(args: argparse.Namespace, out: Path, environ: Dict[str, str]) -> Dict[str, Any]:
    command = [sys.executable, "-I", str(Path(__file__).resolve()), "--serial", "--folder", str(args.folder),
               "--count", str(args.count), "--batch-size", str(args.batch_size), "--out", str(out)]
    env = {k: v for k, v in environ.items() if not k.startswith("PYTHON")}  # as bench._isolated_env(), from before any Nanny
    env["PYTHONHASHSEED"] = "0"
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(args.workdir))
    if proc.returncode != 0:
        raise RuntimeError(f"the serial build failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="120 images, 1 repetition (checks that it runs and verifies)")
    parser.add_argument("--count", type=int, default=None, help="images in the conversion (default 4,000: serial >= 10 s here; --quick 120)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch_size of both builds (default %(default)s)")
    parser.add_argument("--npartitions", type=int, default=None, help="parts of the Dask build (default: from_indexable's, 4 per worker thread)")
    parser.add_argument("--repetitions", type=int, default=2, help="timed runs of each build (best kept; default %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / f"mmap-ninja-bench-parallel-{os.getuid()}",
                        help="where the JPEGs are cached and maps built (default: %(default)s, shared with bench_parallel.py)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--serial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serial:
        serial_main(args)
        return

    if args.quick:
        args.repetitions = 1
    args.count = args.count or (120 if args.quick else 4000)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.folder = args.workdir / "jpegs-seed0"
    maps = args.workdir / "maps-dask"
    t0 = time.perf_counter()
    bench.log(f"generating {args.count:,} JPEGs in {args.folder} (cached between runs)")
    manifest = jf.make_folder(args.folder, args.count)
    bench.log(f"  ready in {time.perf_counter() - t0:.1f} s")
    bench.warm(args.folder)

    mn = bench._import_library("ours")  # sys.path now starts with this checkout's src: the workers inherit it
    import dask
    import distributed

    import mmap_ninja.dask as mdask

    environ = dict(os.environ)  # a Nanny writes its workers' variables into this process's environment
    ceiling = parallel_ceiling(args.folder, min(args.count, 300), environ)
    bench.log(f"two processes decode at {ceiling:.2f}x the rate of one (the most 2 workers can gain here, now)")
    clusters = [Cluster(label, config) for label, config in WORKER_ENVIRONMENTS]
    serial_times: List[float] = []
    copy_times: List[float] = []
    wrong: List[str] = []
    nparts = 0
    for c in clusters:
        t0 = time.perf_counter()
        with dask.config.set(c.config):
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                               dashboard_address=None)
        client = distributed.Client(cluster)
        try:
            client.wait_for_workers(2)
            c.startup = time.perf_counter() - t0
            bench.log(f"LocalCluster(n_workers=2, threads_per_worker=1), {c.label}: up in {c.startup:.2f} s")
            where = set(client.run(lambda: __import__("mmap_ninja").__file__).values())
            if where != {mn.__file__}:
                raise RuntimeError(f"the Dask workers import mmap_ninja from {where}, not {mn.__file__}")
            trim = set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
            bench.log(f"  the workers' MALLOC_TRIM_THRESHOLD_: {trim}")
            nparts = args.npartitions or 4 * sum(client.nthreads().values())  # from_indexable's default
            for rep in range(args.repetitions):  # alternate the order; the first Dask build is the cold one either way
                for which in (("dask", "serial") if rep % 2 == 0 else ("serial", "dask")):
                    out = maps / which
                    shutil.rmtree(out, ignore_errors=True)
                    os.sync()  # untimed: no build pays for writing back the previous one's pages
                    if which == "serial":
                        result = run_serial(args, out, environ)
                        serial_times.append(result["seconds"])
                        copy_times.append(result["copy_seconds"])
                        wrong += [f"serial: {w}" for w in result["wrong"]]
                    else:
                        t0 = time.perf_counter()
                        mdask.from_indexable(out, jf.JpegFolder(str(args.folder), args.count), "ragged", args.batch_size,
                                             npartitions=args.npartitions, client=client)
                        c.times.append(time.perf_counter() - t0)
                        wrong += [f"dask, {c.label}: {w}" for w in verify(out, args.folder, args.count)]
                    bench.log(f"  {which}: {(serial_times if which == 'serial' else c.times)[-1]:.2f} s")
                if file_hashes(maps / "dask") != file_hashes(maps / "serial"):
                    wrong.append(f"dask, {c.label}: the map's files differ from the serial build's")
                shutil.rmtree(maps, ignore_errors=True)  # their dirty pages are dropped, not written back
        finally:
            client.close()
            cluster.close()
            os.environ.clear()
            os.environ.update(environ)

    serial = min(serial_times)
    rows = [["serial (RaggedMmap.from_indexable)", f"{serial:.2f} s", f"{args.count / serial:,.0f}/s", "1.00x",
             f">= {SERIAL_MIN_SECONDS:.0f} s (sizing)", "yes" if serial >= SERIAL_MIN_SECONDS else "NO: too small to judge; raise --count"]]
    copy = min(copy_times)
    half = serial / 2 + copy
    rows.append([f"  for scale: serial / 2 + one copy of the map ({copy:.2f} s)", f"{half:.2f} s", f"{args.count / half:,.0f}/s",
                 f"{serial / half:.2f}x", "(the most 2 workers can do if the merge copies every byte)", ""])
    for c in clusters:
        best, cold = min(c.times), c.times[0]
        if c.judged:
            target = f">= {SPEEDUP_TARGET}x serial"
            met = "NO: wrong data" if wrong else "yes" if serial / best >= SPEEDUP_TARGET else f"NO ({serial / best / SPEEDUP_TARGET:.0%} of target)"
        else:
            target, met = "(shown)", ""
        rows += [
            [f"dask, {c.label}: best", f"{best:.2f} s", f"{args.count / best:,.0f}/s", f"{serial / best:.2f}x", target, met],
            [f"dask, {c.label}: first (cold workers)", f"{cold:.2f} s", f"{args.count / cold:,.0f}/s", f"{serial / cold:.2f}x", "(shown)", ""],
            [f"dask, {c.label}: first + start-up", f"{cold + c.startup:.2f} s", f"{args.count / (cold + c.startup):,.0f}/s",
             f"{serial / (cold + c.startup):.2f}x", "(shown)", ""],
            [f"LocalCluster start-up alone ({c.label})", f"{c.startup:.2f} s", "", "", "(shown)", ""],
        ]
    print(f"machine: {bench.machine_description()}")
    print(f"conversion of {args.count:,} JPEGs ({manifest['bytes_decoded'] * args.count / manifest['count'] / 1e9:.2f} GB decoded), "
          f"batch_size={args.batch_size}, npartitions={nparts}, best of {args.repetitions}, on LocalCluster(n_workers=2, "
          "threads_per_worker=1):")
    print(table(["configuration", "time", "images", "vs serial", "target", "met?"], rows))
    print(f"two processes decoding at once reached {ceiling:.2f}x the rate of one, measured before the builds: "
          "the most a 2-worker build can gain on this machine at the time")
    for w in wrong:
        print(f"WRONG: {w}")
    if args.json:
        args.json.write_text(json.dumps({"machine": bench.machine_description(), "count": args.count, "batch_size": args.batch_size,
                                         "serial_seconds": serial_times, "copy_seconds": copy_times, "wrong": wrong, "parallel_ceiling": ceiling,
                                         "dask": [{"label": c.label, "startup_seconds": c.startup, "seconds": c.times} for c in clusters]},
                                        indent=2))
    shutil.rmtree(maps, ignore_errors=True)
    if wrong:
        sys.exit(1)


if __name__ == "__main__":
    main()
