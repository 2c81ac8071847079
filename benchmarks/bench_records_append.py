"""``RecordsMmap.append`` of one (image, label, caption) record: this checkout vs an older one.

Each side runs in its own subprocess (``python -I``, the given ``src/`` first on sys.path):
ours from this checkout, the baseline from ``--base`` (default ``/work/wt-base``, a
``git worktree add /work/wt-base 0bdd1b0`` of the main branch before the build engine).
Both append the same records to a fresh map (a warm-up of 200 first), best of ``--repeat``
runs of ``--appends`` calls, and then check what they wrote: every record read back equal.

    python benchmarks/bench_records_append.py [--base /work/wt-base] [--appends 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import gc, json, sys, tempfile, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import mmap_ninja
    from mmap_ninja.records import RecordsMmap
    assert mmap_ninja.__file__.startswith(sys.argv[1]), mmap_ninja.__file__
    appends, repeat = int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(64)]

    def record(i):
        return {"image": images[i % 64], "label": i % 10, "caption": f"a photo number {i}"}

    best = float("inf")
    for rep in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            r = RecordsMmap.from_generator(tmp + "/ds", [record(i) for i in range(200)], 200)
            for i in range(200, 400):  # warm-up
                r.append(record(i))
            gc.disable()
            t0 = time.perf_counter()
            for i in range(400, 400 + appends):
                r.append(record(i))
            best = min(best, (time.perf_counter() - t0) / appends)
            gc.enable()
            again = RecordsMmap(tmp + "/ds")
            ok = len(again) == 400 + appends and all(
                np.array_equal(again[i]["image"], images[i % 64]) and again[i]["label"] == i % 10
                and again[i]["caption"] == f"a photo number {i}" for i in range(0, 400 + appends, 7))
            del r, again
    print(json.dumps({"ms_per_append": best * 1e3, "ok": ok}))
    """
)


def run(src: Path, appends: int, repeat: int) -> dict:
    out = subprocess.run([sys.executable, "-I", "-c", WORKER, str(src), str(appends), str(repeat)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("/work/wt-base"), help="a checkout of the baseline")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ours_src = Path(__file__).resolve().parents[1] / "src"
    rows = []
    for name, src in (("baseline", args.base / "src"), ("this checkout", ours_src)):
        if not src.is_dir():
            print(f"{name}: {src} is missing; skipped", file=sys.stderr)
            continue
        rows.append((name, run(src, args.appends, args.repeat)))
    print(f"{'RecordsMmap.append, one (image, label, caption) record':<58} {'ms/call':>8}  checked")
    for name, result in rows:
        print(f"{name:<58} {result['ms_per_append']:>8.3f}  {'ok' if result['ok'] else 'WRONG DATA'}")
    return 0 if all(r["ok"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
