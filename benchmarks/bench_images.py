"""Encoded images and compressed arrays: every row of issue 18's table, side by side in one run.

On generated photo-like JPEGs of COCO size (jpeg_folder.py: smooth colour fields plus noise,
quality 90), every read is checked against Pillow's decoding of the same file (simplejpeg
within 1 of it). Usage: python benchmarks/bench_images.py [--count N] [--folder DIR]
Prints one line per row: the measured figure, its baseline, the ratio and the target.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jpeg_folder  # noqa: E402

from mmap_ninja import RaggedMmap  # noqa: E402
from mmap_ninja.images import ImagesMmap  # noqa: E402


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def versus(a, b, rounds: int = 5) -> tuple:
    """Best times of ``a`` and ``b`` run alternately, so that a change of load hits both alike."""
    ta, tb = [], []
    for _ in range(rounds):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return min(ta), min(tb)


def disk(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def row(name: str, value: str, baseline: str, ratio: float, target: str, ok: bool) -> None:
    print(f"| {name} | {value} | {baseline} | {ratio:.2f}x | {target} | {'met' if ok else 'NOT met'} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "mmap_ninja_bench_jpegs"))
    args = parser.parse_args()
    from PIL import Image

    manifest = jpeg_folder.make_folder(Path(args.folder), args.count)
    paths = [jpeg_folder.image_path(Path(args.folder), i) for i in range(args.count)]
    truth = [jpeg_folder.decode(p) for p in paths]  # Pillow's pixels: what every read is checked against
    work = Path(tempfile.mkdtemp(prefix="bench_images_"))
    try:
        print(f"{args.count} JPEGs, {manifest['bytes_jpeg'] / args.count / 1e3:.0f} KB each on average; {os.cpu_count()} cores")
        print("| row | measured | baseline | ratio | target | |")
        print("|---|---|---|---|---|---|")

        m = ImagesMmap.from_files(work / "enc", paths)
        files_bytes = sum(p.stat().st_size for p in paths)
        ratio = disk(work / "enc") / files_bytes
        row("encoded map disk vs the files' bytes", f"{disk(work / 'enc') / 1e6:.2f} MB", f"{files_bytes / 1e6:.2f} MB", ratio, "<= 1.02x", ratio <= 1.02)

        def check(i: int, got: np.ndarray) -> None:
            if got.shape != truth[i].shape or np.abs(got.astype(np.int16) - truth[i]).max() > 1:
                raise SystemExit(f"image {i} read back wrong")

        worst = 0
        for i in range(len(m)):
            got = m[i]
            check(i, got)
            worst = max(worst, int(np.abs(got.astype(np.int16) - truth[i]).max()))
        print(f"decoder {m.decoder}: largest difference from Pillow's pixels over the {len(m)} images: {worst}")
        # m[i] against the bare decoder on the same bytes in memory
        blobs = [p.read_bytes() for p in paths]
        if m.decoder == "simplejpeg":
            import simplejpeg

            bare = lambda b: simplejpeg.decode_jpeg(b, fastdct=False, fastupsample=False)  # noqa: E731
        else:
            import io

            bare = lambda b: np.array(Image.open(io.BytesIO(b)).convert("RGB"))  # noqa: E731
        t_bare, t_map = (t / len(m) for t in versus(lambda: [bare(b) for b in blobs], lambda: [m[i] for i in range(len(m))]))
        row(f"m[i] per image ({m.decoder})", f"{t_map * 1e3:.3f} ms", f"{t_bare * 1e3:.3f} ms bare decoder", t_map / t_bare, "<= 1.1x", t_map <= 1.1 * t_bare)

        def pillow_files() -> None:
            for p in paths:
                with open(p, "rb") as f, Image.open(f) as im:
                    np.asarray(im.convert("RGB") if im.mode != "RGB" else im)

        t_pil, t_all = versus(pillow_files, lambda: [m[i] for i in range(len(m))])
        row("every image by index vs open + Pillow on the files", f"{t_all:.2f} s", f"{t_pil:.2f} s", t_pil / t_all, ">= 1.3x faster", t_pil / t_all >= 1.3)

        one, two = ImagesMmap(work / "enc", threads=1), ImagesMmap(work / "enc", threads=2)
        batches = [list(range(s, s + 64)) for s in range(0, len(m) - 63, 64)]
        for got, i in zip(two[batches[0]], batches[0]):
            check(i, got)
        t1, t2 = versus(lambda: [one[b] for b in batches], lambda: [two[b] for b in batches])
        row("m[idx] batch of 64, 2 threads vs 1", f"{t2 / len(batches) * 1e3:.1f} ms", f"{t1 / len(batches) * 1e3:.1f} ms", t1 / t2, ">= 1.6x", t1 / t2 >= 1.6)

        # raw at training resolution: what --max-side 256 stores (Pillow's LANCZOS, aspect kept, never up)
        def shrink(a: np.ndarray, side: int = 256) -> np.ndarray:
            h, w = a.shape[:2]
            scale = side / max(h, w)
            if scale >= 1:
                return a
            return np.asarray(Image.fromarray(a).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS))

        small = RaggedMmap.from_generator(work / "small", (shrink(a) for a in truth), 64)
        full = RaggedMmap.from_generator(work / "full", iter(truth), 64)
        for i in range(len(full)):
            if not np.array_equal(full[i], truth[i]):
                raise SystemExit(f"raw image {i} read back wrong")
        d_small = disk(work / "small") / files_bytes
        t_small, t_full = versus(lambda: [np.array(small[i]) for i in range(len(small))], lambda: [np.array(full[i]) for i in range(len(full))])
        row("--max-side 256 raw disk vs the JPEG files", f"{disk(work / 'small') / 1e6:.2f} MB", f"{files_bytes / 1e6:.2f} MB", d_small, "report", True)
        row("--max-side 256 read (copy) vs raw full size", f"{t_small / len(small) * 1e3:.3f} ms", f"{t_full / len(full) * 1e3:.3f} ms", t_small / t_full, "report", True)

        # token sequences: zstd level 3 with a dictionary against raw
        rng = np.random.default_rng(0)
        vocab = rng.zipf(1.3, 200_000) % 32_000  # a skewed vocabulary, as real token streams have
        tokens = [vocab[s : s + n].astype(np.int32) for s, n in zip(rng.integers(0, 190_000, 20_000), rng.integers(50, 400, 20_000))]
        raw = RaggedMmap.from_generator(work / "tok", iter(tokens), 4096)
        z = RaggedMmap.from_generator(work / "tokz", iter(tokens), 4096, zstd_level=3, zstd_train_dictionary_size=64 * 1024)
        for i in range(0, len(tokens), 97):
            if not np.array_equal(z[i], tokens[i]):
                raise SystemExit(f"token sequence {i} read back wrong")
        d_ratio = disk(work / "tokz") / disk(work / "tok")
        t_raw, t_z = (t / len(raw) for t in versus(lambda: [raw[i] for i in range(len(raw))], lambda: [z[i] for i in range(len(z))]))
        codec = z._codec  # the floor: zstd's own decompression of the same frames, in memory
        frames = [z._stored[s:e] for s, e in zip(np.asarray(z._view.starts).tolist(), np.asarray(z._view.ends).tolist())]
        decompress = codec.decoder()
        t_floor = best_of(lambda: [decompress(f) for f in frames], 5) / len(frames)
        row("tokens zstd=3 + dictionary: disk vs raw", f"{disk(work / 'tokz') / 1e6:.2f} MB", f"{disk(work / 'tok') / 1e6:.2f} MB", d_ratio, "<= 0.85x", d_ratio <= 0.85)
        row("tokens zstd=3 + dictionary: m[i] vs raw", f"{t_z * 1e6:.2f} us", f"{t_raw * 1e6:.2f} us", t_z / t_raw, "<= 3x", t_z <= 3 * t_raw)
        print(f"  (zstd's decompression alone, the same frames in memory: {t_floor * 1e6:.2f} us = {t_floor / t_raw:.1f}x raw)")

        try:
            from mmap_ninja.torch import MapDataset  # imports torch
        except ImportError:
            print("| DataLoader, num_workers=2 vs 0 | skipped: torch is not installed | | | >= 1.6x | |")
        else:
            from torch.utils.data import DataLoader

            from mmap_ninja.records import RecordsMmap

            # an encoded records dataset: (image, label) with the image field stored encoded
            RecordsMmap.from_generator(work / "rec", ({"image": b, "label": i} for i, b in enumerate(blobs)), 64, schema={"image": "image"})
            dataset = MapDataset(RecordsMmap(work / "rec"))

            def epoch(loader: "DataLoader") -> None:
                n = 0
                for batch in loader:
                    n += len(batch)
                if n != len(m):
                    raise SystemExit("the DataLoader missed images")

            # steady state: workers started and warmed up by one epoch, as in training
            loaders = {w: DataLoader(dataset, batch_size=32, num_workers=w, collate_fn=list, persistent_workers=w > 0) for w in (0, 2)}
            for loader in loaders.values():
                epoch(loader)
            t0, t2w = versus(lambda: epoch(loaders[0]), lambda: epoch(loaders[2]), 3)
            row("DataLoader over an encoded records dataset, num_workers=2 vs 0, per epoch", f"{t2w:.2f} s", f"{t0:.2f} s", t0 / t2w, ">= 1.6x", t0 / t2w >= 1.6)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
