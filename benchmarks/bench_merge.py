#!/usr/bin/env python
"""Merge benchmark: ``mmap_ninja.parts.merge`` of prebuilt parts (and ``mmap_ninja.concatenate``).

    python benchmarks/bench_merge.py --quick     # development: 51,200 samples, seconds
    python benchmarks/bench_merge.py             # the full run: 1,000,000 samples, ~400 MB

1,000,000 token-like samples (1-D int32, lognormal lengths, mean ~100) are split into 2, 64
and 512 contiguous parts, built once with ``mmap_ninja.parts.build_part`` and cached in
``--workdir``. For each number of parts, timed with a warm page cache and nothing left to
write back (``sync`` before each run, not timed):

- the merge of the parts, and the merge of parts holding as many *empty* samples (the same
  offset tables and small files, no data): the latter is the merge's **non-data part**
  (target: under 1 s at 512 parts);
- the data part = full merge minus the non-data part, as a copy speed, against ``cp`` of a
  file holding the same bytes, less cp's start-up (cp of an empty file) (target: >= 80% of
  cp's speed);
- ``mmap_ninja.concatenate`` of the same parts as maps, when the library has it.

Every merged map is checked against the generated data: its length, every sample's length,
and the CRC-32 of every sample's bytes in order. Exit status 1 means a merge returned wrong
data. The table ends with how the non-data cost grows with the number of parts (a line fit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_SRC = HERE.parent / "src"
sys.path.insert(0, str(REPO_SRC))  # ours, from this checkout, before any installed copy
sys.path.insert(1, str(HERE))

from bench import log, warm  # noqa: E402
from tables import table  # noqa: E402

import mmap_ninja  # noqa: E402
from mmap_ninja import parts as mn_parts  # noqa: E402
from mmap_ninja.ragged import RaggedMmap  # noqa: E402

PART_COUNTS = (2, 64, 512)
NON_DATA_TARGET = 1.0  # seconds, at 512 parts
COPY_TARGET = 0.80  # of cp's speed
MEAN_LENGTH = 100



class Tokens:
    """The generated dataset: sample ``i`` is ``values[offsets[i]:offsets[i + 1]]`` (or empty)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray, empty: bool = False):
        self.values, self.offsets, self.empty = values, offsets, empty
        self.none = values[:0]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.none if self.empty else self.values[self.offsets[i] : self.offsets[i + 1]]


def generate(count: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.lognormal(np.log(MEAN_LENGTH) - 0.5, 1.0, count)).astype(np.int64)
    offsets = np.zeros(count + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = rng.integers(0, 50_000, int(offsets[-1]), dtype=np.int32)
    return values, offsets


def build_parts(folder: Path, dataset: Tokens, nparts: int) -> List[mn_parts.Part]:
    """``nparts`` parts of ``dataset`` (cached in ``folder`` between runs)."""
    done = folder / "parts.json"
    if done.exists():
        return [mn_parts.Part(*p) for p in json.loads(done.read_text())]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    per = -(-len(dataset) // nparts)
    built = []
    for k, start in enumerate(range(0, len(dataset), per)):
        stop = min(len(dataset), start + per)
        built.append(mn_parts.build_part(folder / f"part-{k:04d}", "ragged", dataset, start, stop, batch_size=10_000))
    done.write_text(json.dumps([list(p) for p in built]))
    return built


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())



def timed(fn: Callable[[], Any], repetitions: int, before: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repetitions):
        before()
        os.sync()  # nothing dirty left from the last run to slow this one down
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def verify(out: Path, lengths: np.ndarray, crc: Optional[int]) -> List[str]:
    """The merged map against the generated data: length, every sample's length, CRC of every byte."""
    m = RaggedMmap(out)
    if len(m) != len(lengths):
        return [f"{len(m):,} samples, expected {len(lengths):,}"]
    got_lengths = np.fromiter((len(s) for s in m), np.int64, len(m))
    if not np.array_equal(got_lengths, lengths):
        return [f"sample {int(np.argmax(got_lengths != lengths))} has the wrong length"]
    if crc is not None:
        running = 0
        for s in m:
            running = zlib.crc32(s, running)
        if running != crc or m.dtype != np.int32:
            return [f"the samples' bytes differ from the concatenation (crc {running:#x}, expected {crc:#x}, dtype {m.dtype})"]
    return []


def fit(xs: List[int], ys: List[float]) -> Tuple[float, float]:
    slope, intercept = np.polyfit(np.array(xs, float), np.array(ys, float), 1)
    return float(intercept), float(slope)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="51,200 samples, 1 repetition (checks that it runs and verifies)")
    parser.add_argument("--samples", type=int, default=None, help="samples in all (default 1,000,000; --quick 51,200)")
    parser.add_argument("--repetitions", type=int, default=3, help="timed runs per measurement (best kept)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / f"mmap-ninja-bench-merge-{os.getuid()}",
                        help="where the parts are cached and merged (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    reps = 1 if args.quick else args.repetitions
    count = args.samples or (51_200 if args.quick else 1_000_000)
    work = args.workdir / f"n{count}"
    work.mkdir(parents=True, exist_ok=True)
    scratch = args.workdir / f"scratch-{os.getpid()}"  # two runs at once must not remove each other's maps

    values, offsets = generate(count)
    lengths = np.diff(offsets)
    data_bytes = values.nbytes
    crc = zlib.crc32(values)
    log(f"mmap_ninja from {Path(mmap_ninja.__file__).parent}")
    log(f"{count:,} samples, {data_bytes / 1e6:,.0f} MB of int32 tokens; building the parts (cached in {work})")
    full, empty = Tokens(values, offsets), Tokens(values, offsets, empty=True)
    t0 = time.perf_counter()
    built = {(n, e): build_parts(work / f"{'empty' if e else 'data'}-{n}", empty if e else full, n) for n in PART_COUNTS for e in (False, True)}
    log(f"  parts ready in {time.perf_counter() - t0:.1f} s")

    flat = work / "flat.bin"  # the cp baseline: one file of the same bytes the merge copies
    if not flat.exists() or flat.stat().st_size != data_bytes:
        values.tofile(flat)
    out = scratch / "merged"

    def clean() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)

    nothing = work / "empty.bin"
    nothing.touch()
    warm(flat)
    cp_seconds = timed(lambda: subprocess.run(["cp", str(flat), str(out)], check=True), reps, clean)
    # cp's own start-up is not copying: take it out, as the merge has no process to start
    cp_startup = timed(lambda: subprocess.run(["cp", str(nothing), str(out)], check=True), max(reps, 3), clean)
    cp_seconds = max(cp_seconds - cp_startup, 1e-9)
    cp_speed = data_bytes / cp_seconds
    log(f"  cp of {data_bytes / 1e6:,.0f} MB: {cp_seconds:.3f} s ({cp_speed / 1e9:.2f} GB/s), its start-up of {cp_startup * 1e3:.1f} ms taken out")

    concatenate = getattr(mmap_ninja, "concatenate", None)
    results: List[Dict[str, Any]] = []
    wrong: List[str] = []
    try:
        for n in PART_COUNTS:
            row: Dict[str, Any] = {"parts": n}
            for e in (True, False):
                parts = built[(n, e)]
                warm(work / f"{'empty' if e else 'data'}-{n}")
                clean()
                mn_parts.merge(out, parts)  # once untimed, verified
                problems = verify(out, np.zeros_like(lengths) if e else lengths, None if e else crc)
                wrong += [f"merge of {n} {'empty ' if e else ''}parts: {p}" for p in problems]
                if not e:
                    row["map_bytes"] = tree_bytes(out)
                row["empty" if e else "full"] = timed(lambda: mn_parts.merge(out, parts), reps, clean)
            if concatenate is not None:
                sources = [p.path for p in built[(n, False)]]
                clean()
                concatenate(out, sources)
                wrong += [f"concatenate of {n} maps: {p}" for p in verify(out, lengths, crc)]
                row["concatenate"] = timed(lambda: concatenate(out, sources), reps, clean)
            log(f"  {n} parts: merge {row['full']:.3f} s, of empty parts {row['empty']:.3f} s"
                + (f", concatenate {row['concatenate']:.3f} s" if "concatenate" in row else ""))
            results.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    for r in results:
        data_seconds = r["full"] - r["empty"]
        measurable = data_seconds > 0.1 * cp_seconds  # else the difference is noise (tiny data, --quick)
        speed = data_bytes / data_seconds if measurable else float("nan")
        r["copy_vs_cp"] = speed / cp_speed if measurable else None
        non_data_ok = r["empty"] < NON_DATA_TARGET if r["parts"] == max(PART_COUNTS) else True
        copy_ok = not measurable or r["copy_vs_cp"] >= COPY_TARGET
        met = "NO: wrong data" if wrong else ("yes" if non_data_ok and copy_ok else "NO (" + ", ".join(
            ([f"non-data {r['empty'] / NON_DATA_TARGET:.0%} of the limit"] if not non_data_ok else [])
            + ([f"copy {r['copy_vs_cp'] / COPY_TARGET:.0%} of target"] if not copy_ok else [])) + ")")
        target = (f"non-data < {NON_DATA_TARGET:.0f} s, " if r["parts"] == max(PART_COUNTS) else "") + f"copy >= {COPY_TARGET:.0%} of cp"
        rows.append([f"{r['parts']} parts", f"{r['full']:.3f} s", f"{r['empty']:.3f} s", f"{r['empty'] / r['parts'] * 1e3:.2f} ms",
                     f"{data_seconds:.3f} s", f"{speed / 1e9:.2f} GB/s" if measurable else "within noise",
                     f"{r['copy_vs_cp']:.0%}" if measurable else "-",
                     f"{r['concatenate']:.3f} s" if "concatenate" in r else "-", target, met])
    a, b = fit([r["parts"] for r in results], [r["empty"] for r in results])
    print(f"merge of {count:,} ragged int32 samples ({data_bytes / 1e6:,.0f} MB of data, map {results[0]['map_bytes'] / 1e6:,.0f} MB), "
          f"best of {reps}; cp of the same bytes: {cp_seconds:.3f} s ({cp_speed / 1e9:.2f} GB/s, its start-up taken out)")
    print(table(["parts", "merge", "non-data", "per part", "data", "data speed", "vs cp", "concatenate", "target", "met?"], rows))
    print(f"non-data cost ~ {a * 1e3:.1f} ms + {b * 1e3:.3f} ms per part (line fit over {', '.join(map(str, PART_COUNTS))} parts)")
    if wrong:
        print("WRONG DATA:\n  " + "\n  ".join(wrong))
    if args.json:
        args.json.write_text(json.dumps({"samples": count, "data_bytes": data_bytes, "cp_seconds": cp_seconds, "rows": results,
                                         "fit_ms": [a * 1e3, b * 1e3], "wrong": wrong}, indent=2))
    if wrong:
        sys.exit(1)


if __name__ == "__main__":
    main()
