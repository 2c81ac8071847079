#!/usr/bin/env python
"""From map to batch tensor: mmap_ninja.torch against the floor and what users use instead.

    python benchmarks/bench_torch.py            # 3,000 images of 224x224x3 (~2 minutes on 2 cores)
    python benchmarks/bench_torch.py --quick    # 600 images, one timed epoch per row

Every row runs in this one process, side by side (except the peers that need another
library, each in a child process, and the peak-RSS rows, each in a fresh process). Rows are
samples/s, best of the timed epochs after one untimed epoch. Labels are the sample indices,
so every batch is checked against the map: its labels name its samples, 64 fixed bytes of
every image are compared with the map's, and the first batch of every epoch in full (for a
transform: the first item recomputed with the same seed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from mmap_ninja import RecordsMmap  # noqa: E402
from mmap_ninja import numpy as np_ninja  # noqa: E402
from mmap_ninja.ragged import RaggedMmap  # noqa: E402
from mmap_ninja.torch import MapDataset, PadCollate  # noqa: E402

UPSTREAM_PYTHON = os.environ.get("MMAP_NINJA_UPSTREAM_PYTHON", "")  # no default path: the column says how to fill it
SHAPE = (224, 224, 3)
BATCH = 64
CROP = 200


class Checker:
    """What every batch is compared with: 64 bytes per image at fixed places, read once."""

    def __init__(self, images):
        rng = np.random.default_rng(11)
        self.flat_pos = rng.integers(0, int(np.prod(SHAPE)), 64)
        self.images = images
        self.prints = np.stack([np.asarray(images[i]).reshape(-1)[self.flat_pos] for i in range(len(images))])

    def check(self, batch_images, labels, full=False):
        idx = labels.numpy()
        got = batch_images.reshape(len(idx), -1)[:, torch.from_numpy(self.flat_pos)].numpy()
        if not np.array_equal(got, self.prints[idx]):
            raise SystemExit(f"WRONG batch: samples {idx[:5]}...")
        if full and not np.array_equal(batch_images.numpy(), np.stack(self.images[idx.tolist()])):
            raise SystemExit(f"WRONG batch (full check): samples {idx[:5]}...")
        return idx


def one_epoch(make_batches, check, n):
    """Seconds for one epoch; every batch checked, the epoch must cover every sample once."""
    seen = []
    start = time.perf_counter()
    for k, batch in enumerate(make_batches()):
        seen.append(check(batch, k == 0))
    took = time.perf_counter() - start
    seen = np.concatenate(seen)
    if len(seen) != n or len(np.unique(seen)) != n:
        raise SystemExit(f"WRONG epoch: {len(seen)} samples, {len(np.unique(seen))} distinct, expected {n}")
    return took


def rotate(rows, epochs):
    """Best samples/s of each row: one untimed epoch of each, then ``epochs`` rounds in which
    every row runs one epoch in turn (so a burst of load on this shared machine hits them all)."""
    best = {}
    for round_ in range(epochs + 1):
        for name, (make_batches, check, n) in rows.items():
            took = one_epoch(make_batches, check, n)
            if round_:
                best[name] = max(best.get(name, 0.0), n / took)
        if round_:
            print(f"  round {round_}: " + ", ".join(f"{k} {v:,.0f}" for k, v in best.items()), flush=True)
    return best


# --- the 200 µs transform: random crop, flip and colour jitter, uint8 in and out ---------------


def augment(item):
    image, label = item
    g = torch.Generator().manual_seed(int(label))  # seeded by the sample, so it can be checked
    y, x, flip, a, b = torch.randint(0, SHAPE[0] - CROP, (5,), generator=g).tolist()
    out = image[y : y + CROP, x : x + CROP]
    out = out.flip(1) if flip % 2 else out.clone()
    for _ in range(JITTER_ROUNDS):  # as many as make the transform cost about 200 µs (calibrated)
        out.clamp_(max=255 - b).add_(b)  # brightness up by b, saturating
        out.clamp_(min=a).sub_(a)  # and down by a
    return out, label


JITTER_ROUNDS = 1


def calibrate(image) -> float:
    """Set JITTER_ROUNDS so that the transform costs about 200 µs per sample (the least of
    several timings: the cost on an idle core); returns that cost in seconds."""
    global JITTER_ROUNDS

    def cost():
        sample = (image, torch.tensor(0))
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(40):
                augment(sample)
            best = min(best, (time.perf_counter() - start) / 40)
        return best

    JITTER_ROUNDS = 1
    one = cost()
    JITTER_ROUNDS = 2
    two = cost()
    per_round = max(two - one, 1e-6)
    JITTER_ROUNDS = max(1, round(1 + (200e-6 - one) / per_round))
    return cost()


# --- peers ------------------------------------------------------------------------------------------


class NpyFolder(Dataset):
    def __init__(self, folder, labels):
        self.folder, self.labels = folder, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(np.load(f"{self.folder}/{i}.npy")), torch.tensor(self.labels[i])


UPSTREAM_CHILD = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])  # 0.9.0's mmap_ninja; numpy and torch from this interpreter
import os, numpy as np, torch
from torch.utils.data import DataLoader, Dataset
torch.set_num_threads(int(os.environ["MMAP_NINJA_BENCH_THREADS"]))
import mmap_ninja
from mmap_ninja.ragged import RaggedMmap
assert mmap_ninja.__version__ == "0.9.0", mmap_ninja.__file__

class Minimal(Dataset):  # what a 0.9.0 user writes
    def __init__(self, path, labels):
        self.images, self.labels = RaggedMmap(path), np.load(labels)
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.images[i])), torch.tensor(self.labels[i])

path, labels, prints, pos, epochs = sys.argv[2], sys.argv[3], np.load(sys.argv[4]), np.load(sys.argv[5]), int(sys.argv[6])
ds = Minimal(path, labels)
best = None
for e in range(epochs + 1):
    start, seen = time.perf_counter(), 0
    for images, labels in DataLoader(ds, batch_size=64, shuffle=True):
        idx = labels.numpy()
        assert np.array_equal(images.reshape(len(idx), -1)[:, torch.from_numpy(pos)].numpy(), prints[idx]), "WRONG"
        seen += len(idx)
    took = time.perf_counter() - start
    assert seen == len(ds)
    if e:
        best = took if best is None else min(best, took)
print(json.dumps(len(ds) / best))
"""


RSS_CHILD = r"""
import sys, json
with open("/proc/self/clear_refs", "w") as f:  # the peak a forked and exec'd process inherits
    f.write("5")
sys.path.insert(0, sys.argv[1])
import os, numpy as np, torch
from torch.utils.data import DataLoader
torch.set_num_threads(int(os.environ["MMAP_NINJA_BENCH_THREADS"]))
from mmap_ninja.torch import MapDataset
ds = MapDataset(sys.argv[2], sys.argv[3])
seen = 0
for images, labels in DataLoader(ds, batch_size=64, shuffle=True, num_workers=2):
    assert images.shape[0] == labels.shape[0]
    seen += len(labels)
assert seen == len(ds)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps(int(status["VmHWM"].split()[0]) / 1024))
"""


def build(work: Path, n: int):
    rng = np.random.default_rng(0)
    if not (work / "images").exists():
        RaggedMmap.from_generator(work / "images", (rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(n)), batch_size=100)
        np_ninja.from_ndarray(work / "labels", np.arange(n, dtype=np.int64))
        np.save(work / "labels.npy", np.arange(n, dtype=np.int64))
        (work / "npy").mkdir()
        for i, image in enumerate(RaggedMmap(work / "images")):
            np.save(work / "npy" / f"{i}.npy", image)
        records = ({"image": image, "label": i, "caption": f"image number {i}"} for i, image in enumerate(RaggedMmap(work / "images")))
        RecordsMmap.from_generator(work / "records", records, batch_size=100)
        token_lists = (rng.integers(0, 50_000, int(k), dtype=np.int32) for k in rng.integers(32, 512, 20 * n))
        RaggedMmap.from_generator(work / "tokens", token_lists, batch_size=10_000)
        np_ninja.from_ndarray(work / "token_labels", np.arange(20 * n, dtype=np.int64))


def small_images(folder: Path, n: int):
    rng = np.random.default_rng(1)
    RaggedMmap.from_generator(folder / "images", (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)), batch_size=1000)
    np_ninja.from_ndarray(folder / "labels", np.arange(n, dtype=np.int64))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in this process (default 1: on a loaded 2-core machine more threads spin and wait)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), f"mmap-ninja-bench-torch-{os.getuid()}"))
    args = parser.parse_args()
    n = 600 if args.quick else 3000
    torch.set_num_threads(args.threads)
    os.environ["MMAP_NINJA_BENCH_THREADS"] = str(args.threads)
    epochs = 1 if args.quick else 5
    work = Path(args.workdir) / str(n)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build(work, n)
    print(f"data ready in {work} ({time.perf_counter() - t0:.1f} s); torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)

    images, labels = RaggedMmap(work / "images"), np_ninja.open_existing(work / "labels")
    checker = Checker(images)
    plan = {}

    def row(name, make_batches, check=None, count=n):
        plan[name] = (make_batches, check or (lambda batch, full: checker.check(batch[0], batch[1], full)), count)

    def floor_batches():
        for idx in np.array_split(np.random.permutation(n), range(BATCH, n, BATCH)):
            yield torch.from_numpy(np.stack(images[idx])), torch.from_numpy(labels[idx])

    row("floor", floor_batches)
    # each dataset is made once, as a training script makes it: its maps stay mapped across epochs
    default = MapDataset(work / "images", work / "labels")
    shared = MapDataset(work / "images", work / "labels", copy=False)
    row("default", lambda: DataLoader(default, batch_size=BATCH, shuffle=True))
    row("copy=False", lambda: DataLoader(shared, batch_size=BATCH, shuffle=True))
    loader2 = DataLoader(MapDataset(work / "images", work / "labels"), batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True)
    row("workers=2", lambda: loader2)

    def check_augmented(batch, full):
        out, idx = batch
        expected, _ = augment((torch.from_numpy(np.array(images[int(idx[0])])), idx[0]))
        if out.shape != (len(idx), CROP, CROP, 3) or not torch.equal(out[0], expected):
            raise SystemExit(f"WRONG transformed batch: samples {idx[:5].tolist()}")
        return idx.numpy()

    per_item = calibrate(torch.from_numpy(np.array(images[0])))
    print(f"  the transform costs {per_item * 1e6:.0f} µs per sample here ({JITTER_ROUNDS} jitter rounds)", flush=True)
    augmented = MapDataset(work / "images", work / "labels", transform=augment)
    row("transform, workers=0", lambda: DataLoader(augmented, batch_size=BATCH, shuffle=True), check_augmented)
    loader_t = DataLoader(MapDataset(work / "images", work / "labels", transform=augment), batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True)
    row("transform, workers=2", lambda: loader_t, check_augmented)

    # tokens: PadCollate against RaggedMmap.padded + labels
    tokens, token_labels = RaggedMmap(work / "tokens"), np_ninja.open_existing(work / "token_labels")
    nt = len(tokens)

    def check_tokens(batch, full):
        (padded, lengths), idx = batch
        idx = idx.numpy()
        for j in (0, len(idx) - 1):
            if padded[j, : lengths[j]].tolist() != tokens[int(idx[j])].tolist():
                raise SystemExit(f"WRONG tokens: sample {idx[j]}")
        return idx

    def padded_batches():
        for idx in np.array_split(np.random.permutation(nt), range(BATCH, nt, BATCH)):
            p, lengths = tokens.padded(idx)
            yield (torch.from_numpy(p), torch.from_numpy(lengths)), torch.from_numpy(token_labels[idx])

    row("tokens: RaggedMmap.padded + labels", padded_batches, check_tokens, nt)
    token_dataset = MapDataset(tokens, token_labels)
    row("tokens: PadCollate", lambda: DataLoader(token_dataset, batch_size=BATCH, shuffle=True, collate_fn=PadCollate()), check_tokens, nt)

    def check_records(batch, full):
        if batch["caption"][0] != f"image number {int(batch['label'][0])}":
            raise SystemExit("WRONG caption")
        return checker.check(batch["image"], batch["label"], full)

    record_dataset = MapDataset(work / "records")
    row("records (image, label, caption)", lambda: DataLoader(record_dataset, batch_size=BATCH, shuffle=True), check_records)
    row("folder of .npy files", lambda: DataLoader(NpyFolder(work / "npy", np.arange(n)), batch_size=BATCH, shuffle=True))
    rows = rotate(plan, epochs)
    del loader2, loader_t

    # 0.9.0 in a child process: its package first on sys.path, numpy and torch from here
    upstream = None
    site = subprocess.run([UPSTREAM_PYTHON, "-c", "import mmap_ninja, os; print(os.path.dirname(os.path.dirname(mmap_ninja.__file__)))"],
                          capture_output=True, text=True) if UPSTREAM_PYTHON and Path(UPSTREAM_PYTHON).exists() else None
    if site is not None and site.returncode == 0:
        only = work / "upstream_path"
        shutil.rmtree(only, ignore_errors=True)
        only.mkdir()
        (only / "mmap_ninja").symlink_to(Path(site.stdout.strip()) / "mmap_ninja")
        np.save(work / "prints.npy", checker.prints)
        np.save(work / "pos.npy", checker.flat_pos)
        done = subprocess.run([sys.executable, "-c", UPSTREAM_CHILD, str(only), str(work / "images"), str(work / "labels.npy"),
                               str(work / "prints.npy"), str(work / "pos.npy"), str(epochs)], capture_output=True, text=True)
        if done.returncode == 0:
            upstream = float(done.stdout.strip().splitlines()[-1])
            rows["0.9.0 RaggedMmap, minimal Dataset"] = upstream
        else:
            print(f"  0.9.0 failed: {done.stderr[-500:]}")
    else:
        print(f"  0.9.0 skipped: no interpreter with mmap_ninja 0.9.0 at {UPSTREAM_PYTHON or '(none given)'} (set MMAP_NINJA_UPSTREAM_PYTHON)")

    try:
        import datasets  # noqa: F401
    except ImportError:
        hf_note = "skipped: Hugging Face datasets is not installed beside torch in this interpreter"
    else:
        hf_note = "skipped: not measured in this version of the script"

    # peak RSS of the parent with 2 workers, for a map and one 4x larger (64x64 images)
    rss = {}
    for count in (5_000, 20_000):
        folder = Path(args.workdir) / f"rss-{count}"
        if not (folder / "images").exists():
            small_images(folder, count)
        done = subprocess.run([sys.executable, "-c", RSS_CHILD, str(HERE.parent / "src"), str(folder / "images"), str(folder / "labels")],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        rss[count] = float(done.stdout.strip().splitlines()[-1])
        print(f"  parent peak RSS, {count} samples of 12 KB, 2 workers: {rss[count]:.0f} MB", flush=True)

    # what a batch costs to cross from a worker: new shared memory per batch, and the fd passing
    from multiprocessing.reduction import ForkingPickler
    import pickle

    idx = np.random.permutation(n)[:BATCH]
    warm = torch.empty((BATCH, *SHAPE), dtype=torch.uint8)
    reps = 20
    start = time.perf_counter()
    for _ in range(reps):
        np.stack(images[idx], out=warm.numpy())
    into_warm = (time.perf_counter() - start) / reps
    start = time.perf_counter()
    for _ in range(reps):
        storage = torch.UntypedStorage._new_shared(warm.numel())
        fresh = torch.empty(0, dtype=torch.uint8).set_(storage, 0, warm.shape)
        np.stack(images[idx], out=fresh.numpy())
    into_shared = (time.perf_counter() - start) / reps
    start = time.perf_counter()
    for _ in range(reps):
        pickle.loads(ForkingPickler.dumps(fresh))
    handover = (time.perf_counter() - start) / reps

    print()
    print(f"## mmap_ninja.torch, {n} images {SHAPE} uint8 + int64 labels, batch {BATCH}, shuffle, best of {epochs} epochs "
          f"(samples/s; {time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print()
    print("| row | samples/s | vs | target |")
    print("|---|---:|---:|---|")
    floor = rows["floor"]

    def line(name, base_name, target):
        base = rows.get(base_name)
        ratio = rows[name] / base if base else float("nan")
        met = "" if target is None else (" (met)" if ratio >= target else " (NOT met)")
        print(f"| {name} | {rows[name]:,.0f} | {ratio:.2f}x {base_name} | {'' if target is None else f'>= {target}x'}{met} |")

    print(f"| floor: np.stack(images[idx]) + labels[idx], as tensors | {floor:,.0f} | | |")
    line("default", "floor", 0.9)
    line("copy=False", "floor", None)
    line("workers=2", "default", 1.0)
    line("transform, workers=0", "floor", None)
    line("transform, workers=2", "transform, workers=0", 1.5)
    line("tokens: PadCollate", "tokens: RaggedMmap.padded + labels", 0.9)
    line("records (image, label, caption)", "default", None)
    line("folder of .npy files", "default", None)
    if upstream is not None:
        line("0.9.0 RaggedMmap, minimal Dataset", "default", None)
    print(f"| HF datasets with_format('torch') | {hf_note} | | |")
    growth = rss[20_000] / rss[5_000]
    print(f"| parent peak RSS, 2 workers: 5,000 vs 20,000 samples | {rss[5_000]:.0f} MB vs {rss[20_000]:.0f} MB | {growth:.2f}x | no growth"
          f"{' (met)' if growth < 1.1 else ' (NOT met)'} |")
    if torch.cuda.is_available():
        print("| host to device | (see below) | | |")
    else:
        print("| host to device, pinned, non_blocking | skipped: no CUDA device | | |")
    print()
    print(f"the 200 µs transform measured {per_item * 1e6:.0f} µs per sample ({JITTER_ROUNDS} jitter rounds; least of 5 timings)")
    print(f"crossing from a worker, per batch of {BATCH} ({warm.numel() / 1e6:.1f} MB): gather into fresh shared memory "
          f"{into_shared * 1e3:.2f} ms vs into warm memory {into_warm * 1e3:.2f} ms (+{(into_shared - into_warm) * 1e3:.2f} ms of new pages); "
          f"handing the batch over (pickle of its fd, unpickle and map) {handover * 1e3:.2f} ms")
    if torch.cuda.is_available():
        batch = torch.empty((BATCH, *SHAPE), dtype=torch.uint8, pin_memory=True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(50):
            batch.cuda(non_blocking=True)
        torch.cuda.synchronize()
        print(f"host to device, pinned batch, non_blocking: {50 * batch.numel() / (time.perf_counter() - start) / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
