#!/usr/bin/env python
"""Megatron corpora: our reader and writer against our RaggedMmap and megatron-core's own.

    python benchmarks/bench_megatron.py --quick     # development: small corpus, 1 repetition
    python benchmarks/bench_megatron.py             # the full run (a few minutes on 2 cores)

One token corpus (uint16 sequences of log-normal lengths, one document each) is generated,
written with our ``megatron.write`` and as a RaggedMmap, then read in the same process by

- ``megatron.open`` (ours), ``RaggedMmap`` (ours, the baseline the reader should match), and
- megatron-core's ``IndexedDataset`` (when installed),

with random single reads (``m[i]``) and random batches of 256 (``get_batch``; megatron-core has
no batch read, so a list of ``ds[i]``). Writes compare ``megatron.write`` with megatron-core's
``IndexedDatasetBuilder`` (``add_item`` per sequence and ``add_document`` per document) on the
same in-memory int32 sequences. Every timing is the best of the repetitions after one untimed run, warm page cache.
Every reader's results are checked against the generated sequences after it is timed, and the
written files must be byte-identical to megatron-core's.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

REPO_SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(REPO_SRC))

from mmap_ninja import megatron  # noqa: E402
from mmap_ninja.ragged import RaggedMmap  # noqa: E402

BATCH = 256


def generate(count: int, mean_length: int, seed: int) -> List[np.ndarray]:
    """Token sequences (int32 token ids below 50,000) of log-normal lengths around ``mean_length``."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(mean_length), 0.8, count), 1, 8 * mean_length).astype(np.int64)
    flat = rng.integers(0, 50_000, int(lengths.sum()), dtype=np.int32)
    return np.split(flat, np.cumsum(lengths)[:-1])


def megatron_core() -> Optional[Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from megatron.core.datasets import indexed_dataset
        return indexed_dataset
    except Exception as e:  # not installed, or no torch
        print(f"megatron-core is not available ({type(e).__name__}: {e}); its columns stay empty", file=sys.stderr)
        return None


def best(repeats: int, run: Callable[[], Any]) -> float:
    """The best of ``repeats`` timings of ``run()`` after one untimed run (page cache, allocator
    and branch caches warm for every side alike), with the garbage collector off (as timeit)."""
    run()
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return min(times)


def single_reads(reader: Any, indices: List[int]) -> Callable[[], None]:
    """Every ``reader[i]``, consumed at C speed so that the loop costs the readers alike, and little."""
    return lambda: collections.deque(map(reader.__getitem__, indices), maxlen=0)


def batch_reads(get_batch: Callable[[List[int]], Any], batches: List[List[int]]) -> Callable[[], None]:
    return lambda: collections.deque(map(get_batch, batches), maxlen=0)


def verify(name: str, got: List[Any], truth: List[np.ndarray], indices: List[int]) -> None:
    for i, g in zip(indices, got):
        g = np.asarray(g)
        if g.shape != truth[i].shape or not np.array_equal(g, truth[i]):
            raise SystemExit(f"{name}: sequence {i} read back wrong")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small corpus, one repetition")
    parser.add_argument("--sequences", type=int, help="sequences in the corpus (default 200,000; quick 20,000)")
    parser.add_argument("--mean-length", type=int, help="mean tokens per sequence (default 512; quick 128)")
    parser.add_argument("--reads", type=int, help="random single reads per repetition (default 200,000; quick 20,000)")
    parser.add_argument("--repeats", type=int, help="repetitions, best kept (default 5; quick 1)")
    parser.add_argument("--dir", help="where to write the corpora (default: a temporary folder, removed after)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    count = args.sequences or (20_000 if args.quick else 200_000)
    mean_length = args.mean_length or (128 if args.quick else 512)
    reads = args.reads or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (1 if args.quick else 5)

    core = megatron_core()
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-megatron-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = run(root, core, count, mean_length, reads, repeats)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def run(root: Path, core: Any, count: int, mean_length: int, reads: int, repeats: int) -> Dict[str, Any]:
    truth = generate(count, mean_length, seed=0)
    tokens = sum(len(s) for s in truth)
    print(f"corpus: {count:,} sequences, {tokens:,} tokens (uint16), {repeats} repetition(s), best kept")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} cpus")
    rows: Dict[str, Dict[str, Optional[float]]] = {}

    # -- writing ---------------------------------------------------------------------------
    def write_ours() -> None:
        megatron.write(root / "ours", truth, dtype="uint16")

    write_times: Dict[str, Optional[float]] = {"ours": best(repeats, write_ours), "megatron_item": None, "megatron_document": None}
    if core is not None:
        import torch

        def write_items() -> None:
            builder = core.IndexedDatasetBuilder(str(root / "theirs_item.bin"), dtype=np.uint16)
            for s in truth:
                builder.add_item(torch.from_numpy(s))
                builder.end_document()
            builder.finalize(str(root / "theirs_item.idx"))

        def write_documents() -> None:
            builder = core.IndexedDatasetBuilder(str(root / "theirs_doc.bin"), dtype=np.uint16)
            for s in truth:
                builder.add_document(s, [len(s)])
            builder.finalize(str(root / "theirs_doc.idx"))

        write_times["megatron_item"] = best(repeats, write_items)
        write_times["megatron_document"] = best(repeats, write_documents)
        for theirs in ("theirs_item", "theirs_doc"):
            for ext in (".idx", ".bin"):
                if (root / f"ours{ext}").read_bytes() != (root / f"{theirs}{ext}").read_bytes():
                    raise SystemExit(f"our {ext} differs from megatron-core's ({theirs})")
    RaggedMmap.from_generator(root / "ragged", truth, 4096)

    # -- reading ---------------------------------------------------------------------------
    rng = np.random.default_rng(1)
    indices = rng.integers(0, count, reads).tolist()
    batches = [rng.integers(0, count, BATCH).tolist() for _ in range(max(1, reads // BATCH))]
    readers: Dict[str, Any] = {"ours": megatron.open(root / "ours"), "ragged": RaggedMmap(root / "ragged")}
    if core is not None:
        readers["megatron"] = core.IndexedDataset(str(root / "ours"))
    single: Dict[str, Optional[float]] = {"ours": None, "ragged": None, "megatron": None}
    batch: Dict[str, Optional[float]] = {"ours": None, "ragged": None, "megatron": None}
    order = list(readers) + list(reversed(readers))  # interleaved, so that drift hits all alike
    for name in order:
        reader = readers[name]
        t = best(repeats, single_reads(reader, indices))
        single[name] = t if single[name] is None else min(single[name], t)
        get = reader.get_batch if name != "megatron" else (lambda b, r=reader: [r[i] for i in b])
        t = best(repeats, batch_reads(get, batches))
        batch[name] = t if batch[name] is None else min(batch[name], t)
    for name, reader in readers.items():  # what was timed, read again and checked
        verify(name, [reader[i] for i in indices], truth, indices)
        get = reader.get_batch if name != "megatron" else (lambda b, r=reader: [r[i] for i in b])
        for b in batches[:200]:
            verify(f"{name} batch", get(b), truth, b)
    print("every read checked against the generated sequences; our files are byte-identical to megatron-core's\n")

    def us(t: Optional[float], n: int) -> Optional[float]:
        return None if t is None else t / n * 1e6

    rows["random single read (us/read)"] = {k: us(v, reads) for k, v in single.items()}
    rows[f"random batch of {BATCH} (us/batch)"] = {k: us(v, len(batches)) for k, v in batch.items()}
    print(f"{'reads':34} {'ours':>10} {'RaggedMmap':>11} {'megatron-core':>14} {'ours/Ragged':>12} {'megatron/ours':>14}")
    for label, row in rows.items():
        cells = [f"{row[k]:10.3f}" if k == "ours" else (f"{row[k]:11.3f}" if k == "ragged" else (f"{row[k]:14.3f}" if row[k] is not None else f"{'-':>14}"))
                 for k in ("ours", "ragged", "megatron")]
        ratio = row["ours"] / row["ragged"]
        vs = f"{row['megatron'] / row['ours']:13.2f}x" if row["megatron"] is not None else f"{'-':>14}"
        print(f"{label:34} {' '.join(cells)} {ratio:11.2f}x {vs}")

    mb = tokens * 2 / 1e6
    print(f"\n{'writes (MB/s of .bin, uint16)':34} {'ours':>10} {'megatron add_item':>18} {'add_document':>13} {'ours/best':>10}")
    rates = {k: (None if v is None else mb / v) for k, v in write_times.items()}
    theirs = [r for k, r in rates.items() if k != "ours" and r is not None]
    cells = " ".join(f"{rates[k]:{w}.1f}" if rates[k] is not None else f"{'-':>{w}}" for k, w in (("megatron_item", 18), ("megatron_document", 13)))
    vs = f"{rates['ours'] / max(theirs):9.2f}x" if theirs else f"{'-':>10}"
    print(f"{'write ' + format(count, ',') + ' sequences':34} {rates['ours']:10.1f} {cells} {vs}")
    return {"sequences": count, "tokens": tokens, "repeats": repeats, "reads": rows, "write_seconds": write_times,
            "write_mb_per_s": rates}


if __name__ == "__main__":
    main()
