#!/usr/bin/env python
"""What ``checksum=True`` costs, and how fast ``verify`` reads, side by side with baselines.

    python benchmarks/bench_verify.py --quick    # development: ~40 MB, seconds
    python benchmarks/bench_verify.py            # ~200 MB of token-like samples

Samples: 1-D int32 arrays with lognormal lengths (mean ~250 elements, ~1 KB), as a
RaggedMmap. Timed with a warm page cache (each build replaces the map at the same path):

- build: ``RaggedMmap.from_generator`` without and with ``checksum=True`` (best of --repeat);
- append: ``m.extend`` of 64-sample batches, ms per call, without and with checksums;
- verify: ``mmap_ninja.verify`` of the whole map in MB/s of sample bytes, against reading
  the same bytes (every sample through ``m[i]``, summed so that each byte is touched, and
  the data file read sequentially with ``readinto``).

Checks what it read: verify must report every sample checked and the map sound, the sum
over the samples must equal the sum of the generated data, and a flipped byte must be
reported. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from mmap_ninja import RaggedMmap, verify  # noqa: E402


def samples(count: int, seed: int = 0) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.lognormal(np.log(200), 0.6, count).astype(np.int64))
    flat = rng.integers(0, 50_000, int(lengths.sum()), dtype=np.int32)
    return np.split(flat, np.cumsum(lengths)[:-1])


def best(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~40 MB instead of ~200 MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (default 3)")
    args = parser.parse_args()
    count = 40_000 if args.quick else 200_000
    data = samples(count)
    nbytes = sum(a.nbytes for a in data)
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    failed = False
    try:
        path = work / "m"
        rows = []
        plain = best(args.repeat, lambda: RaggedMmap.from_generator(path, iter(data), batch_size=4096))
        summed = best(args.repeat, lambda: RaggedMmap.from_generator(path, iter(data), batch_size=4096, checksum=True))
        rows.append(("build (from_generator)", f"{plain:.3f} s", f"{summed:.3f} s", f"{summed / plain:.2f}x"))

        batches = [data[i : i + 64] for i in range(0, 64 * 200, 64)]

        def appends(checksum: bool) -> float:
            RaggedMmap.from_lists(work / "a", data[:1000], checksum=checksum)
            m = RaggedMmap(work / "a")
            t = time.perf_counter()
            for batch in batches:
                m.extend(batch)
            return (time.perf_counter() - t) / len(batches) * 1000

        a_plain = min(appends(False) for _ in range(args.repeat))
        a_summed = min(appends(True) for _ in range(args.repeat))
        rows.append(("append (extend of 64 samples)", f"{a_plain:.3f} ms", f"{a_summed:.3f} ms", f"{a_summed / a_plain:.2f}x"))

        report = verify(path)
        if not (report.ok and report.checked == count and report.bytes_checked == nbytes):
            print(f"FAILED: verify reported {report}", file=sys.stderr)
            failed = True
        t_verify = best(args.repeat, lambda: verify(path))
        m = RaggedMmap(path, mode="r")
        total = sum(int(a.sum(dtype=np.int64)) for a in data)
        got = [0]

        def read_samples() -> None:
            got[0] = sum(int(m[i].sum(dtype=np.int64)) for i in range(len(m)))

        t_read = best(args.repeat, read_samples)
        if got[0] != total:
            print("FAILED: the samples read back do not sum to the data written", file=sys.stderr)
            failed = True
        buffer = bytearray(64 << 20)

        def read_file() -> None:
            with open(path / "data.ninja", "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass

        t_file = best(args.repeat, read_file)
        mb = nbytes / 1e6
        print(f"{count} samples, {mb:.1f} MB of sample bytes; best of {args.repeat}; warm page cache")
        print()
        print("| what | without checksums | with checksum=True | cost |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()
        print("| reading every sample's bytes | MB/s |")
        print("|---|---|")
        print(f"| mmap_ninja.verify (CRC-32 of every sample + every invariant) | {mb / t_verify:,.0f} |")
        print(f"| m[i] for every i, summed | {mb / t_read:,.0f} |")
        print(f"| data.ninja read sequentially (readinto) | {mb / t_file:,.0f} |")

        raw = bytearray((path / "data.ninja").read_bytes()[:8])
        raw[0] ^= 1
        with open(path / "data.ninja", "r+b") as f:
            f.write(raw)
        if verify(path).ok:
            print("FAILED: a flipped byte went unnoticed", file=sys.stderr)
            failed = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
