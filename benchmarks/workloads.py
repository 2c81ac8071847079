"""Deterministic benchmark data: what the samples are, cached on disk, and their checksums.

Depends on numpy only (never on mmap_ninja), so the benchmark's worker can import it under
either library's interpreter. Every dataset is a *source*: one flat array of values and an
``offsets`` array (n + 1 int64) saying where sample i lies in it; images also store their
(H, W, 3) shapes. The ground truth of sample i is always a slice of its source, so the
checksum of whatever a library returned can be compared with the generator's.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np

SEED = 20240607

# Sizes per mode. "full" is what the performance issue asks for; "quick" is for development.
SIZES: Dict[str, Dict[str, int]] = {
    "full": {
        "images": 3_000,
        "tokens": 200_000,
        "imdb": 100_000,
        "sameshape": 100_000,
        "sameshape64": 10_000,
        "open": 1_000_000,
        "token_files": 20_000,  # .npy files for the file baseline (a subset: 200k files is silly)
        "single_reads": 20_000,
        "batches": 100,
        "appends": 10_000,
        "durable_appends": 200,
        "peak_total_mb": 500,
        "peak_batch_mb": 10,
    },
    "quick": {
        "images": 300,
        "tokens": 20_000,
        "imdb": 10_000,
        "sameshape": 10_000,
        "sameshape64": 2_000,
        "open": 1_000_000,
        "token_files": 5_000,
        "single_reads": 5_000,
        "batches": 20,
        "appends": 2_000,
        "durable_appends": 50,
        "peak_total_mb": 100,
        "peak_batch_mb": 10,
    },
}

SAMESHAPE_ROW = (28, 28)  # MNIST-sized uint8 rows
SAMESHAPE64_ROW = (64, 64)  # float32 rows, e.g. spectrograms
TOKEN_VOCAB = 50_257
VERIFY_COUNT = 1_000  # samples whose checksum is compared with the ground truth
BATCH = 256


# --- sources ------------------------------------------------------------------------------


class Source:
    """One dataset on disk: ``values`` (flat), ``offsets`` (n + 1) and optional ``shapes``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        self.kind = self.meta["kind"]  # "array" or "text"
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        # a plain ndarray view, so samples are ndarrays as a user's generator yields, not np.memmap
        self.values = np.load(folder / "values.npy", mmap_mode="r").view(np.ndarray)
        self.shapes = np.load(folder / "shapes.npy", mmap_mode="r") if (folder / "shapes.npy").exists() else None
        self._offsets_list: List[int] = []

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def offsets_list(self) -> List[int]:
        if not self._offsets_list:
            self._offsets_list = self.offsets.tolist()
        return self._offsets_list

    def sample(self, i: int) -> Any:
        """Ground truth of sample ``i``: an ndarray (view) or a str."""
        off = self.offsets_list()
        flat = self.values[off[i] : off[i + 1]]
        if self.kind == "text":
            return flat.tobytes().decode("utf-8")
        if self.shapes is not None:
            return flat.reshape(tuple(self.shapes[i]))
        return flat

    def samples(self, start: int = 0, stop: int = -1) -> Iterator[Any]:
        stop = len(self) if stop < 0 else stop
        for i in range(start, stop):
            yield self.sample(i)

    def nbytes(self) -> int:
        return int(self.values.nbytes)


def _save(folder: Path, kind: str, values: np.ndarray, offsets: np.ndarray, shapes: Any = None, **meta: Any) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "values.npy", values)
    np.save(tmp / "offsets.npy", offsets)
    if shapes is not None:
        np.save(tmp / "shapes.npy", shapes)
    (tmp / "meta.json").write_text(json.dumps({"kind": kind, "n": len(offsets) - 1, **meta}))
    os.replace(tmp, folder)


def _offsets_of(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def make_images(n: int) -> Dict[str, Any]:
    """HxWx3 uint8 images, H and W uniform in 64..256 (random pixels)."""
    rng = np.random.default_rng(SEED + 1)
    shapes = np.empty((n, 3), np.int64)
    shapes[:, :2] = rng.integers(64, 257, size=(n, 2))
    shapes[:, 2] = 3
    offsets = _offsets_of(shapes.prod(axis=1))
    values = np.frombuffer(rng.bytes(int(offsets[-1])), np.uint8)
    return {"kind": "array", "values": values, "offsets": offsets, "shapes": shapes}


def make_tokens(n: int, seed_shift: int = 2, mean: float = 300.0, sigma: float = 0.8) -> Dict[str, Any]:
    """int32 token sequences with lognormal lengths (mean ~``mean``, at least 1)."""
    rng = np.random.default_rng(SEED + seed_shift)
    mu = np.log(mean) - sigma**2 / 2
    lengths = np.maximum(1, rng.lognormal(mu, sigma, n).astype(np.int64))
    offsets = _offsets_of(lengths)
    values = rng.integers(0, TOKEN_VOCAB, int(offsets[-1]), dtype=np.int32)
    return {"kind": "array", "values": values, "offsets": offsets}


def make_tiny_tokens(n: int) -> Dict[str, Any]:
    """Many tiny int32 samples (1..8 elements): a map with a large sample count, small data."""
    rng = np.random.default_rng(SEED + 3)
    lengths = rng.integers(1, 9, n)
    offsets = _offsets_of(lengths)
    values = rng.integers(0, TOKEN_VOCAB, int(offsets[-1]), dtype=np.int32)
    return {"kind": "array", "values": values, "offsets": offsets}


def make_sameshape64(n: int) -> Dict[str, Any]:
    """n rows of SAMESHAPE64_ROW float32 in [0, 1)."""
    rng = np.random.default_rng(SEED + 7)
    row = int(np.prod(SAMESHAPE64_ROW))
    values = rng.random(n * row, dtype=np.float32)
    return {"kind": "array", "values": values, "offsets": np.arange(n + 1, dtype=np.int64) * row,
            "shapes": np.tile(np.array(SAMESHAPE64_ROW, np.int64), (n, 1))}


def make_sameshape(n: int) -> Dict[str, Any]:
    """n rows of SAMESHAPE_ROW uint8 (an MNIST-sized same-shape dataset)."""
    rng = np.random.default_rng(SEED + 4)
    row = int(np.prod(SAMESHAPE_ROW))
    values = np.frombuffer(rng.bytes(n * row), np.uint8)
    return {"kind": "array", "values": values, "offsets": np.arange(n + 1, dtype=np.int64) * row,
            "shapes": np.tile(np.array(SAMESHAPE_ROW, np.int64), (n, 1))}


_COMMON = (
    "the a and of to is in it this that i was as with for movie film but on you not he his are "
    "have be one all at they by an who so from like there her or just about out if has what some "
    "good can more when very up no time even she my would which story only really see their had "
    "were me well than we much been get bad will do also into people other great first because how "
    "him most made its then make way them could too any after movies characters think watch films "
    "two many character seen being plot never acting life did love best where know little over "
    "show ever off does better your man end here still scene these say why while scenes something "
    "go such should through back i'm real those watching now though doesn't years actors thing "
    "director nothing funny actually another before work look going new lot old makes every few"
).split()
_NON_ASCII = ["café", "naïve", "Amélie", "—", "’s", "résumé", "Björk", "…"]


def _vocabulary(rng: np.random.Generator) -> List[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "ea")]
    made = set()
    while len(made) < 6_000:
        k = int(rng.integers(1, 4))
        made.add("".join(syllables[j] for j in rng.integers(0, len(syllables), k)))
    return _COMMON + sorted(made)


def make_imdb(n: int, mean_bytes: float = 1_300.0, sigma: float = 0.75, non_ascii_docs: float = 0.03,
              non_ascii_words: float = 1.4e-4) -> Dict[str, Any]:
    """English-like reviews: lognormal byte lengths (mean ~1,300), Zipf-distributed words.

    About ``non_ascii_docs`` of the documents contain a non-ASCII word (as real reviews do:
    accents, curly quotes, dashes), which follows from the share ``non_ascii_words`` of such
    words (1.4e-4: 3.5% of documents; 1.3e-3: 27%); some contain IMDB's ``<br /><br />``.
    """
    rng = np.random.default_rng(SEED + 5)
    vocab = _vocabulary(rng)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.07
    words = np.array(vocab + _NON_ASCII + ["<br /><br />"], dtype=object)
    mu = np.log(mean_bytes) - sigma**2 / 2
    target = np.maximum(40, rng.lognormal(mu, sigma, n)).astype(np.int64)
    probs = np.concatenate([weights / weights.sum() * (1 - 2e-3 - non_ascii_words),
                            np.full(len(_NON_ASCII), non_ascii_words / len(_NON_ASCII)), [2e-3]])
    avg_word = float(probs @ np.array([len(w.encode()) + 1 for w in words], np.float64))
    count = int(target.sum() / avg_word * 1.1) + 10_000
    ids = rng.choice(len(words), size=count, p=probs)
    # sentence structure: a full stop after ~7% of words, a capital letter after each stop
    stops = rng.random(count) < 0.07
    capital = np.concatenate([[True], stops[:-1]])
    variants = []
    for w in words.tolist():
        cap = w[:1].upper() + w[1:]
        variants += [w + " ", w + ". ", cap + " ", cap + ". "]
    variant_len = np.array([len(v.encode()) for v in variants], np.int64)
    chosen = ids * 4 + capital * 2 + stops
    pieces = np.array(variants, dtype=object)[chosen].tolist()
    cum = np.cumsum(variant_len[chosen])
    # document i ends at the first word boundary past its target length
    ends_bytes = np.cumsum(target)
    ends_words = np.searchsorted(cum, ends_bytes, side="left") + 1
    if ends_words[-1] > len(pieces):
        raise RuntimeError("generated too few words for the documents")
    starts_words = np.concatenate([[0], ends_words[:-1]])
    docs = ["".join(pieces[a:b]).rstrip() for a, b in zip(starts_words.tolist(), ends_words.tolist())]
    encoded = [d.encode("utf-8") for d in docs]
    offsets = _offsets_of(np.fromiter((len(e) for e in encoded), np.int64, n))
    values = np.frombuffer(b"".join(encoded), np.uint8)
    del non_ascii_docs  # documented rate; it follows from the per-word probability above
    return {"kind": "text", "values": values, "offsets": offsets}


def make_tiny_strings(n: int) -> Dict[str, Any]:
    """Many short ASCII strings (5..40 bytes)."""
    rng = np.random.default_rng(SEED + 6)
    lengths = rng.integers(5, 41, n)
    offsets = _offsets_of(lengths)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", np.uint8)
    values = letters[rng.integers(0, len(letters), int(offsets[-1]))]
    return {"kind": "text", "values": values, "offsets": offsets}


def make_imdb_mixed(n: int) -> Dict[str, Any]:
    """IMDB-like reviews of which about 27% contain a non-ASCII character."""
    return make_imdb(n, non_ascii_docs=0.27, non_ascii_words=1.3e-3)


MAKERS = {
    "images": ("images", make_images),
    "tokens": ("tokens", make_tokens),
    "imdb": ("imdb", make_imdb),
    "imdb_mixed": ("imdb", make_imdb_mixed),
    "sameshape": ("sameshape", make_sameshape),
    "sameshape64": ("sameshape64", make_sameshape64),
    "open_ragged": ("open", make_tiny_tokens),
    "open_strings": ("open", make_tiny_strings),
}


def source(workdir: Path, name: str, mode: str) -> Source:
    """The cached source ``name`` for ``mode`` (generating it on first use)."""
    size_key, maker = MAKERS[name]
    n = SIZES[mode][size_key]
    folder = Path(workdir) / "sources" / f"{name}-{n}"
    if not (folder / "meta.json").exists():
        made = maker(n)
        _save(folder, made["kind"], made["values"], made["offsets"], made.get("shapes"))
    return Source(folder)


# --- indices ------------------------------------------------------------------------------


def random_indices(n: int, count: int, seed: int) -> List[int]:
    return np.random.default_rng(SEED + seed).integers(0, n, count).tolist()


def random_batches(n: int, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(SEED + seed).integers(0, n, (count, BATCH))


# --- checksums ----------------------------------------------------------------------------


def checksum(samples: Sequence[Any]) -> int:
    """A checksum of samples in order: shape, dtype and bytes of arrays; UTF-8 of strings."""
    h = 0
    for s in samples:
        if isinstance(s, str):
            h = zlib.crc32(b"s", h)
            h = zlib.crc32(s.encode("utf-8"), h)
        else:
            a = np.asarray(s)
            h = zlib.crc32(f"{a.dtype.str}{a.shape}".encode(), h)
            h = zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data, h)
    return h


def expected_checksum(src: Source, indices: Sequence[int]) -> int:
    return checksum([src.sample(int(i)) for i in indices])


# --- synthetic streams for the peak-memory test (nothing stored) ---------------------------


def peak_token_lengths(total_mb: int) -> np.ndarray:
    """Lengths of ~10 KB int32 samples adding up to about ``total_mb`` MB."""
    n = total_mb * 1_000_000 // 10_240
    return 2_048 + (np.arange(n, dtype=np.int64) * 7_919) % 1_024


def peak_token_sample(i: int, length: int) -> np.ndarray:
    return np.full(length, i, np.int32)


_PEAK_TEXT = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 1_000)[:65_536]


def peak_string_sample(i: int, length: int) -> str:
    start = (i * 31) % 32_768
    return _PEAK_TEXT[start : start + length] * 4  # ~4 bytes per token, like the int32 stream
