"""A folder of deterministic, COCO-sized JPEGs, and a dataset that decodes them (Pillow + numpy).

Imported by bench_parallel.py under both libraries' interpreters and by their worker
processes, so it holds nothing but the data: no mmap_ninja here.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image

SIZES = ((640, 480), (480, 640), (640, 427), (612, 612), (640, 360))  # (width, height), as COCO's are
QUALITY = 90


def image_path(folder: Path, i: int) -> Path:
    return Path(folder) / f"{i:06d}.jpg"


def checksum(pixels: np.ndarray) -> List[Any]:
    """What verification compares: the shape and the CRC-32 of the C-order bytes."""
    return [list(pixels.shape), zlib.crc32(np.ascontiguousarray(pixels).data)]


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _make_one(args: Tuple[str, int, int]) -> List[Any]:
    folder, seed, i = args
    rng = np.random.default_rng([seed, i])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    # smooth colour fields plus sensor-like noise: compresses and decodes like a photograph,
    # unlike pure noise (too big) or flat colour (too fast)
    coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)
    path = image_path(Path(folder), i)
    Image.fromarray(noisy).save(path, "JPEG", quality=QUALITY)
    return checksum(decode(path))  # the ground truth is what Pillow decodes, not what was encoded


def make_folder(folder: Path, count: int, seed: int = 0) -> Dict[str, Any]:
    """Create ``count`` JPEGs in ``folder`` once (cached); returns the manifest of their checksums."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["count"] >= count and manifest["seed"] == seed:
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        sums = pool.map(_make_one, [(str(folder), seed, i) for i in range(count)], chunksize=16)
    manifest = {"count": count, "seed": seed, "checksums": sums,
                "bytes_decoded": int(sum(int(np.prod(shape)) for shape, _ in sums)),
                "bytes_jpeg": sum(image_path(folder, i).stat().st_size for i in range(count))}
    manifest_path.write_text(json.dumps(manifest))
    return manifest


class JpegFolder:
    """Item ``i`` is JPEG ``i`` of the folder decoded to an HxWx3 uint8 array.

    Holds only the folder and the count, so pickling it to a worker costs next to nothing.
    """

    def __init__(self, folder: str, count: int):
        self.folder = str(folder)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.count:
            raise IndexError(f"image {i} of {self.count}")
        return decode(image_path(Path(self.folder), i))
