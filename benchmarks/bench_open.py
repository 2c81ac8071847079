#!/usr/bin/env python
"""Open-time benchmark: opening a 1,000,000-sample ragged and strings map, this checkout
against the code before the read seam and its checks (commit 0bdd1b0), side by side.

    python benchmarks/bench_open.py              # 1,000,000 samples
    python benchmarks/bench_open.py --quick      # 100,000 samples

The baseline's ``src/`` is taken with ``git archive 0bdd1b0`` into a temporary folder (or
``--baseline-src DIR``). Each side runs in its own worker process that imports its own
``src/``; the driver alternates them and keeps the median of ``--repeat`` rounds of
``--opens`` opens each (page cache warm: the maps are read once before). Also timed, because
the reads now check the offsets of each chunk of 4,096 samples on its first read: ``m[i]`` over 100,000
random positions, and ``m.padded`` of 1,000 batches of 64 (each once untimed first, so that
page faults of the fresh mappings are not counted).

The "full offsets check" row (after only) is what checking every offset at open would add
to it, on a fresh mapping: the reason the check is done by chunks instead.

Each worker checks what it read (length, and samples 0, 1 and the last against the
generator); a wrong answer prints WRONG and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "0bdd1b0"

WORKER = r'''
import json, sys, time
import numpy as np
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap
work, n, opens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lens = np.random.default_rng(0).integers(0, 20, n)
ends = np.cumsum(lens)
out, wrong = {}, []
for name, cls in (("ragged", RaggedMmap), ("strings", StringsMmap)):
    path = f"{work}/{name}"
    times = []
    for _ in range(opens):
        t = time.perf_counter()
        m = cls(path, mode="r")
        times.append(time.perf_counter() - t)
    out[f"open {name}"] = sorted(times)[len(times) // 2]
    try:  # what opening would cost with a full check of the offsets (after only; not what open does)
        from mmap_ninja.check import check_offsets
        fresh = cls(path, mode="r")._view
        t = time.perf_counter()
        check_offsets(path, fresh.starts, fresh.ends, int(fresh.ends[-1]))
        out[f"full offsets check {name}"] = time.perf_counter() - t
    except ImportError:
        out[f"full offsets check {name}"] = float("nan")
    for i in (0, 1, n - 1):
        want = np.arange(ends[i] - lens[i], ends[i], dtype=np.int32) if name == "ragged" else "x" * int(lens[i])
        got = m[i]
        if len(m) != n or (name == "ragged" and not np.array_equal(got, want)) or (name == "strings" and got != want):
            wrong.append(f"{name}[{i}]")
    idx = np.random.default_rng(1).integers(0, n, 100_000).tolist()
    for i in idx:  # once untimed: the pages of a fresh mapping fault in on first touch
        m[i]
    t = time.perf_counter()
    for i in idx:
        m[i]
    out[f"m[i] {name} (100k)"] = time.perf_counter() - t
    if name == "ragged":
        for b in range(1000):
            m.padded(idx[b * 64 : (b + 1) * 64])
        t = time.perf_counter()
        for b in range(1000):
            m.padded(idx[b * 64 : (b + 1) * 64])
        out["padded ragged (1000 x 64)"] = time.perf_counter() - t
print(json.dumps({"times": out, "wrong": wrong}))
'''


def build(work: Path, n: int) -> None:
    if (work / "done").exists():
        return
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from mmap_ninja.ragged import RaggedMmap
    from mmap_ninja.string import StringsMmap

    lens = np.random.default_rng(0).integers(0, 20, n)
    data = np.arange(int(lens.sum()), dtype=np.int32)
    RaggedMmap.from_lists(work / "ragged", np.split(data, np.cumsum(lens)[:-1]))
    StringsMmap.from_strings(work / "strings", ["x" * int(k) for k in lens])
    (work / "done").write_text("")


def baseline_src(folder: Path) -> Path:
    subprocess.run(f"git -C {ROOT} archive {BASELINE_COMMIT} src | tar -x -C {folder}", shell=True, check=True)
    return folder / "src"


def run(src: Path, work: Path, n: int, opens: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, "-c", WORKER, str(work), str(n), str(opens)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--opens", type=int, default=21)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / f"mmap-ninja-bench-open-{os.getuid()}")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    work = args.workdir / str(n)
    work.mkdir(parents=True, exist_ok=True)
    build(work, n)
    for f in work.rglob("*"):  # warm page cache
        if f.is_file():
            f.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.baseline_src or baseline_src(Path(tmp))
        sides = {"before": base, "after": ROOT / "src"}
        results = {side: [] for side in sides}
        bad = False
        for r in range(args.repeat):
            for side in (sides if r % 2 == 0 else list(reversed(list(sides)))):
                got = run(sides[side], work, n, args.opens)
                bad |= bool(got["wrong"])
                if got["wrong"]:
                    print(f"WRONG ({side}): {got['wrong']}")
                results[side].append(got["times"])
    print(f"{n:,} samples; median of {args.repeat} rounds; {time.strftime('%Y-%m-%d')}")
    print(f"{'':28} {'before (0bdd1b0)':>18} {'after':>12} {'after/before':>13}")
    for key in results["after"][0]:
        if key.startswith("full"):
            after = statistics.median(t[key] for t in results["after"])
            print(f"{key:28} {'':>18} {after * 1e3:9.3f} ms")
            continue
        before = statistics.median(t[key] for t in results["before"])
        after = statistics.median(t[key] for t in results["after"])
        unit, scale = ("ms", 1e3)
        print(f"{key:28} {before * scale:15.3f} {unit} {after * scale:9.3f} {unit} {after / before:12.2f}x")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
