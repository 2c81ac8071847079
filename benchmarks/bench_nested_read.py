#!/usr/bin/env python
"""Read benchmark of multi-axis samples (the nested shape layout): ``m[i]`` and ``m[batch]``
of a map of HxWx3 uint8 images, several checkouts side by side in one run.

    python benchmarks/bench_nested_read.py                      # 0bdd1b0 against this checkout
    python benchmarks/bench_nested_read.py --src base=DIR --src new=DIR ...

Why: the reads check that each sample's shape tuple lies right after its neighbour's. Done
on every ``m[i]`` this cost 1.2-1.4x; it is now done vectorised once per chunk of 4,096
samples, with the offsets (``SpansMap._check_block``). Each ``--src LABEL=DIR`` is a
``src/`` folder imported by its own worker process; without any, the baseline is taken with
``git archive 0bdd1b0`` and compared with this checkout. Every side reads the same map
(built by this checkout; the format is the same for all) and reports the best of
``--repeat`` rounds, per read, after one untimed pass (page faults and the chunk checks are
not counted). Each worker checks what it read against the images it was built from; a wrong
answer prints WRONG and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "0bdd1b0"

WORKER = r'''
import json, sys, time
import numpy as np
from mmap_ninja.ragged import RaggedMmap
path, n, reads, repeat, seed = sys.argv[1], *map(int, sys.argv[2:6])
rng = np.random.default_rng(seed)
images = [rng.integers(0, 256, (int(rng.integers(16, 64)), int(rng.integers(16, 64)), 3), dtype=np.uint8) for _ in range(n)]
m = RaggedMmap(path)
order = np.random.default_rng(1).integers(0, n, reads).tolist()
batches = [np.random.default_rng(2).integers(0, n, 64) for _ in range(reads // 640)]
if len(m) != n or any(not np.array_equal(m[i], images[i]) for i in (0, 1, n - 1, *order[:50])):
    print("WRONG"); sys.exit(1)
if any(not np.array_equal(a, images[i]) for a, i in zip(m[batches[0]], batches[0].tolist())):
    print("WRONG"); sys.exit(1)
def index():
    for i in order:
        m[i]
def batch():
    for b in batches:
        m[b]
out = {}
for name, fn, count in (("m[i]", index, len(order)), ("m[64 random]", batch, len(batches))):
    fn()  # untimed: page faults and the first read of each chunk
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t)
    out[name] = best / count * 1e6
print(json.dumps(out))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", default=[], help="LABEL=DIR: a src/ folder to time (repeatable)")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = [tuple(s.split("=", 1)) for s in args.src]
        if not sides:
            base = Path(tmp) / "base"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_COMMIT, "src"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            sides = [(BASELINE_COMMIT, str(base / "src")), ("this checkout", str(ROOT / "src"))]
        path = Path(tmp) / "images"
        build = ("import sys, numpy as np\nfrom mmap_ninja.ragged import RaggedMmap\nrng = np.random.default_rng(0)\n"
                 "RaggedMmap.from_lists(sys.argv[1], [rng.integers(0, 256, (int(rng.integers(16, 64)), int(rng.integers(16, 64)), 3), dtype=np.uint8)"
                 " for _ in range(int(sys.argv[2]))])")
        subprocess.run([sys.executable, "-c", build, str(path), str(args.images)], check=True, env={"PYTHONPATH": str(ROOT / "src")})
        results = {}
        for label, src in sides:
            run = subprocess.run([sys.executable, "-c", WORKER, str(path), str(args.images), str(args.reads), str(args.repeat), "0"],
                                 capture_output=True, text=True, env={"PYTHONPATH": src})
            if run.returncode or "WRONG" in run.stdout:
                print(f"{label}: WRONG or failed\n{run.stdout}{run.stderr}")
                sys.exit(1)
            results[label] = json.loads(run.stdout)
    rows = list(next(iter(results.values())))
    print(f"{args.images} images HxWx3 uint8 (nested shapes), best of {args.repeat}, µs per read")
    print(f"{'':>14}" + "".join(f"{label:>16}" for label in results))
    for row in rows:
        print(f"{row:>14}" + "".join(f"{results[label][row]:>16.2f}" for label in results))


if __name__ == "__main__":
    main()
