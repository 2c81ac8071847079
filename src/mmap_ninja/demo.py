"""``mmap-ninja demo``: how much faster is reading a map than reading a folder of files?

Generates, deterministically, a review-like text corpus (IMDB-sized by default) and a set
of JPEG images of varying sizes, converts both with the library, and times the same work on
the files and on the maps: reading every sample in order (read + decode: UTF-8 for text,
JPEG for images on the files; the maps hold decoded samples) and reading samples at random.
Both sides are measured warm: the files were just written and the maps just built, so the
page cache serves both. Everything is deleted afterwards unless ``keep`` is given.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

import numpy as np

# A fixed vocabulary of common review words, drawn with Zipf-like frequencies.
_VOCABULARY = """
the a and of to is in it this that was as for with movie film but on not you are his have he be one all at by an who
they from so like her just about out if has what some good can more when very up no time even she my which would
only story really see their had we were me than much well been get will also other do bad into great people because
how most him made its then make way could too any after them films first movies think characters character watch
two many seen being acting plot never love life where best did show know little over does ever your better end man
still here these say scene why while such scenes something through go back should those real now watching thing
years though actors director funny old another work nothing before actually makes look find going same few lot part
again every cast world us things want pretty quite horror young around seems got down fact take however enough both
big between give may series thought without long original action right gets comedy always must role saw come
almost interesting whole point least bit done music far guess minutes script feel anything might since last family
performance beautiful wonderful terrible boring brilliant moving ending camera dialogue effects sound soundtrack
screen audience viewer plays played star stars hero villain friend friends mother father wife husband girl boy woman
town house night day war death killer police money book novel version sequel episode season budget production
""".split()

_TEXT_MEAN_BYTES = 1300  # the mean length of an IMDB review, roughly
_TEXT_SIGMA = 0.7  # spread of the lognormal lengths
_RANDOM_READS = 2000  # samples read in the random-access test (at most the sample count)


def _word_pool(rng: np.random.Generator, n_words: int) -> str:
    """A long run of sentences from the vocabulary, to cut reviews from."""
    vocab = np.array(_VOCABULARY, dtype=object)
    v = len(vocab)
    # four spellings per word: plain, "word.", "Word", "Word."
    spellings = np.concatenate([vocab, vocab + ".", np.array([w.capitalize() for w in vocab], object)])
    spellings = np.concatenate([spellings, spellings[2 * v :] + "."])
    weights = 1.0 / np.arange(1, v + 1)
    ids = rng.choice(v, size=n_words, p=weights / weights.sum())
    ends_sentence = rng.random(n_words) < 1 / 14
    starts_sentence = np.roll(ends_sentence, 1)
    return " ".join(spellings[ids + v * ends_sentence + 2 * v * starts_sentence].tolist())


def generate_texts(folder: Path, n: int, rng: np.random.Generator) -> List[Path]:
    """``n`` review-like UTF-8 files (lognormal lengths, mean ~1,300 bytes) in pos/ and neg/."""
    lengths = rng.lognormal(np.log(_TEXT_MEAN_BYTES) - _TEXT_SIGMA**2 / 2, _TEXT_SIGMA, n)
    lengths = np.clip(lengths, 60, 30 * _TEXT_MEAN_BYTES).astype(np.int64)
    pool = _word_pool(rng, 1_000_000)
    longest = int(lengths.max()) if n else 0
    offsets = rng.integers(0, max(1, len(pool) - longest - 64), n)
    paths = []
    for label in ("neg", "pos"):
        (folder / label).mkdir(parents=True)
    for i, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist())):
        start = pool.find(" ", offset) + 1  # cut at word boundaries
        end = pool.rfind(" ", start, start + length)
        path = folder / ("pos" if i % 2 else "neg") / f"{i:06d}.txt"
        with open(path, "w", encoding="utf-8") as f:
            f.write(pool[start:end])
        paths.append(path)
    return paths


def generate_images(folder: Path, n: int, rng: np.random.Generator) -> List[Path]:
    """``n`` JPEG photos-like images, HxWx3 with H and W in 64..256 (smooth shapes plus noise)."""
    from PIL import Image

    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        h, w = (int(x) for x in rng.integers(64, 257, 2))
        y, x = np.ogrid[:h, :w]
        colours = rng.integers(0, 256, (2, 3))
        blend = (x / w + y / h)[..., None] / 2
        image = colours[0] * (1 - blend) + colours[1] * blend
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, 64)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        image += rng.normal(0, 8, (h, w, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _disk_usage(paths: Sequence[Path]) -> int:
    """Bytes the files take on disk (allocated blocks, as ``du`` counts them)."""
    total = 0
    for path in paths:
        total += os.stat(path).st_blocks * 512
    return total


def _map_files(map_dir: Path) -> List[Path]:
    return [Path(folder, name) for folder, _, names in os.walk(map_dir) for name in names]


def _time(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _read_text_file(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def _measure(files: Sequence[Path], read_file: Callable[[Path], Any], samples: Any, read_sample: Callable[[Any], Any],
             order: np.ndarray, map_dir: Path) -> Dict[str, float]:
    """Seconds to read every sample in order and ``order`` at random, from the files and from the map."""

    def files_in_order() -> None:
        for path in files:
            read_file(path)

    def map_in_order() -> None:
        for sample in samples:
            read_sample(sample)

    return {
        "iterate_files": _time(files_in_order),
        "iterate_map": _time(map_in_order),
        "random_files": _time(lambda: [read_file(files[i]) for i in order.tolist()]),
        "random_map": _time(lambda: [read_sample(samples[i]) for i in order.tolist()]),
        "disk_files": _disk_usage(files),
        "disk_map": _disk_usage(_map_files(map_dir)),
        "bytes_files": sum(os.stat(p).st_size for p in files),
    }


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def format_table(sections: Dict[str, Dict[str, float]], random_reads: Dict[str, int]) -> str:
    """The results as the table the demo prints."""
    rows = [f"{'':44}{'files':>11}{'map':>11}{'speedup':>12}"]
    for title, r in sections.items():
        rows.append(title)
        for label, a, b in (
            ("read all, in order (read + decode)", r["iterate_files"], r["iterate_map"]),
            (f"read {random_reads[title]:,} at random (read + decode)", r["random_files"], r["random_map"]),
        ):
            rows.append(f"  {label:42}{_seconds(a):>11}{_seconds(b):>11}{a / max(b, 1e-9):>11.1f}x")
        ratio = r["disk_files"] / max(r["disk_map"], 1)
        smaller = f"{ratio:.1f}x less" if ratio >= 1 else f"{1 / max(ratio, 1e-9):.1f}x more"
        rows.append(f"  {'disk usage (allocated blocks)':42}{_megabytes(r['disk_files']):>11}{_megabytes(r['disk_map']):>11}"
                    f"{smaller:>12}")
    return "\n".join(rows)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # draw to a file, never to a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'mmap_ninja[plot]'") from None
    return plt


def save_plot(sections: Dict[str, Dict[str, float]], path: str) -> None:
    """A bar chart of the timings (files vs map, log scale) saved to ``path``."""
    plt = _pyplot()
    labels, files, maps = [], [], []
    for title, r in sections.items():
        short = title.split(" (")[0]
        for what, key in (("read all", "iterate"), ("random reads", "random")):
            labels.append(f"{short}\n{what}")
            files.append(r[f"{key}_files"])
            maps.append(r[f"{key}_map"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(2 + 1.8 * len(labels), 4.5))
    ax.bar(x - 0.2, files, 0.4, label="files")
    ax.bar(x + 0.2, maps, 0.4, label="mmap_ninja map")
    for i, (a, b) in enumerate(zip(files, maps)):
        ax.annotate(f"{a / max(b, 1e-9):.0f}x faster", (x[i] + 0.2, b), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log scale, warm page cache)")
    ax.set_title("Reading samples: files vs memory map")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _workdir(keep: Optional[str]) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="mmap-ninja-demo-"))
    folder = Path(keep)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} is not empty; --keep needs a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run(n_texts: int = 100_000, n_images: int = 2_000, plot: Optional[str] = None, keep: Optional[str] = None,
        seed: int = 0, out: Optional[TextIO] = None) -> Dict[str, Dict[str, float]]:
    """Run the demo and print its table to ``out`` (default stdout); returns the measurements per section."""
    out = out or sys.stdout
    from .convert import convert_images, convert_text
    from .ragged import RaggedMmap
    from .string import StringsMmap

    if n_images and importlib.util.find_spec("PIL") is None:
        print("(no images: Pillow is not installed; pip install 'mmap_ninja[demo]' for them)", file=out)
        n_images = 0
    if plot:
        _pyplot()  # fail before the long part if matplotlib is missing
    rng = np.random.default_rng(seed)
    work = _workdir(keep)

    def say(message: str) -> None:
        print(message, file=out, flush=True)

    sections: Dict[str, Dict[str, float]] = {}
    random_reads: Dict[str, int] = {}
    started = time.perf_counter()
    say(f"working in {work}" + (" (kept)" if keep else " (deleted at the end)"))
    try:
        if n_texts:
            say(f"generating {n_texts:,} review-like text files...")
            t = time.perf_counter()
            texts = generate_texts(work / "texts", n_texts, rng)
            say(f"generated {n_texts:,} review-like text files in {_seconds(time.perf_counter() - t)}")
            t = time.perf_counter()
            convert_text(work / "texts", work / "texts_mmap")
            say(f"converted them to a StringsMmap in {_seconds(time.perf_counter() - t)}")
            # the map's order is the conversion's (sorted paths): pair each file with its sample
            texts = sorted(texts, key=lambda p: p.relative_to(work / "texts").parts)
            order = rng.integers(0, n_texts, min(_RANDOM_READS, n_texts))
            strings = StringsMmap(work / "texts_mmap", mode="r")
            result = _measure(texts, _read_text_file, strings, lambda s: s, order, work / "texts_mmap")
            title = f"text ({n_texts:,} reviews, {_megabytes(result['bytes_files'])} of UTF-8)"
            sections[title], random_reads[title] = result, len(order)
        if n_images:
            from PIL import Image

            t = time.perf_counter()
            images = generate_images(work / "images", n_images, rng)
            say(f"generated {n_images:,} JPEG images (HxWx3, H and W in 64..256) in {_seconds(time.perf_counter() - t)}")
            t = time.perf_counter()
            convert_images(work / "images", work / "images_mmap")
            say(f"converted them to a RaggedMmap of uint8 arrays in {_seconds(time.perf_counter() - t)}")
            order = rng.integers(0, n_images, min(_RANDOM_READS, n_images))

            def decode(path: Path) -> np.ndarray:
                with Image.open(path) as image:
                    return np.asarray(image.convert("RGB"))

            arrays = RaggedMmap(work / "images_mmap", mode="r")
            # np.array copies the sample out of the map, as a loader handing it to training would
            result = _measure(images, decode, arrays, np.array, order, work / "images_mmap")
            title = f"images ({n_images:,} JPEGs, {_megabytes(result['bytes_files'])})"
            sections[title], random_reads[title] = result, len(order)
        say("")
        say(format_table(sections, random_reads))
        say("")
        say("Both sides are measured warm: the files were just written and the maps just built, so both are")
        say("read from the page cache; on a cold cache the numbers depend on the disk and are not shown.")
        say("Maps hold decoded samples: images take more disk as arrays than as JPEGs.")
        if plot:
            save_plot(sections, plot)
            say(f"saved the chart to {plot}")
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    say(f"demo took {_seconds(time.perf_counter() - started)}" + (f"; files and maps kept in {work}" if keep else ""))
    return sections
