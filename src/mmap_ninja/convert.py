"""Folders of files -> maps: one sample per file, in a stated order.

Used by ``mmap-ninja convert``; callable from Python too. Every converter

- takes the files under ``src_dir`` (recursively) whose names match ``pattern``, skipping
  hidden files and folders (names starting with "."), **sorted by their path relative to
  src_dir, compared folder by folder by Unicode code point** (Python's sort of the path
  parts: ``a/z.txt`` comes before ``b.txt``, ``B.txt`` before ``a.txt``); sample ``i`` of
  the map is file ``i`` of that list (minus skipped files);
- writes ``batch_size`` samples at a time with the library's builders, so the map appears at
  ``out_dir`` only once every file is in: an interrupted run (Ctrl-C, a bad file, a kill)
  leaves nothing at ``out_dir``;
- raises :class:`ConversionError` naming the file at fault, or with ``skip_bad`` leaves such
  files out (the dataset returns ``Skip`` for them, as any dataset may) and returns them in
  :attr:`ConversionResult.skipped`;
- builds through the one build engine (``parallel.build_indexable`` over a
  :class:`FileSamples`); with ``n_jobs`` (k worker processes, -1 one per core) the workers
  read the files and build parts of the map, byte-identical to the one a serial run writes.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import compression
from .build import MapProduct
from .errors import sample_of
from .skip import AllSkippedError, Skip

__all__ = ["convert_text", "convert_images", "convert_npy", "convert_imagefolder", "list_files", "list_imagefolder", "ConversionResult", "ConversionError"]

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.gif", "*.tif", "*.tiff", "*.webp")
DEFAULT_PATTERNS = {"text": ("*.txt",), "images": IMAGE_PATTERNS, "npy": ("*.npy",)}


class ConversionError(Exception):
    """A file could not be turned into a sample; the message names it."""


class ConversionResult(NamedTuple):
    """What a conversion wrote: the map's path, its sample count and the files left out."""

    out_dir: Path
    samples: int
    skipped: List[Tuple[Path, str]]  # (file, why) for files left out with skip_bad


def list_files(src_dir: PathLike, patterns: Iterable[str]) -> List[Path]:
    """The files under ``src_dir`` matching any of ``patterns`` (case-insensitive), in conversion order."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir} is not a folder" if src_dir.exists() else f"{src_dir} does not exist")
    regex = re.compile("|".join(_glob_to_regex(p) for p in patterns), re.IGNORECASE)
    found = []
    for folder, subfolders, names in os.walk(src_dir):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and regex.fullmatch(name):
                found.append(Path(folder, name).relative_to(src_dir))
    return [src_dir / rel for rel in sorted(found, key=lambda rel: rel.parts)]


def _glob_to_regex(pattern: str) -> str:
    return f"(?:{fnmatch.translate(pattern)})"


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConversionError(f"{path} is not UTF-8 text (byte {e.start} is {raw[e.start:e.start + 1]!r})") from None


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConversionError("converting images needs Pillow: pip install 'mmap_ninja[images]'") from None
    return Image


def _shrunk(image: Any, max_side: Optional[int]) -> Any:
    """``image`` resized so that its longer side is ``max_side`` (aspect kept, Lanczos, as
    FFCV's ``max_resolution``); never enlarged."""
    width, height = image.size
    if max_side is None or max(width, height) <= max_side:
        return image
    scale = max_side / max(width, height)
    return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), _pillow().LANCZOS)


class _ImageReader:
    """Decodes an image file to an HxW(xC) array (converted to ``mode`` unless None, and
    shrunk to ``max_side`` when given).

    A class rather than a closure so that worker processes (n_jobs) can be sent it.
    """

    def __init__(self, mode: Optional[str], max_side: Optional[int] = None):
        self.mode, self.max_side = mode, max_side

    def __call__(self, path: Path) -> np.ndarray:
        Image = _pillow()
        try:
            with Image.open(path) as image:
                if self.mode is not None and image.mode != self.mode:
                    image = image.convert(self.mode)
                return np.asarray(_shrunk(image, self.max_side))
        except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for unreadable images
            raise ConversionError(f"{path} is not a readable image ({e})") from None


def _image_reader(mode: Optional[str], max_side: Optional[int] = None) -> Callable[[Path], np.ndarray]:
    """A function that decodes an image file to an HxW(xC) array (converted to ``mode`` unless None)."""
    _pillow()  # fail now, naming the extra, rather than at the first file
    return _ImageReader(mode, max_side)


class _EncodedReader:
    """An image file as the bytes an images map stores: the file's own bytes, checked to
    decode; or, with ``quality`` or ``max_side``, decoded (shrunk) and encoded again as JPEG."""

    def __init__(self, mode: str, quality: Optional[int], max_side: Optional[int]):
        from .images import ImageCodec

        self.codec = ImageCodec(mode, "jpeg", quality or 90)
        self.reencode = quality is not None or max_side is not None
        self.max_side = max_side

    def __call__(self, path: Path) -> bytes:
        import io

        data = path.read_bytes()
        try:
            if not self.reencode:
                try:
                    return self.codec.checked(data, str(path))
                except ValueError as e:  # names the file already
                    raise ConversionError(str(e)) from None
            with _pillow().open(io.BytesIO(data)) as image:
                image = _shrunk(image.convert(self.codec.mode), self.max_side)
                return self.codec.checked(self.codec.encode(np.asarray(image)), str(path))
        except (OSError, SyntaxError, ValueError) as e:
            raise ConversionError(f"{path} is not a readable image ({e})") from None


def _check_store(store: str, quality: Optional[int], max_side: Optional[int], mode: Optional[str]) -> None:
    if store not in ("raw", "encoded"):
        raise ValueError(f"store must be 'raw' or 'encoded', got {store!r}")
    if quality is not None and store != "encoded":
        raise ValueError("quality is for store='encoded' (raw images are stored as decoded)")
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95):
        raise ValueError(f"quality must be an int from 1 to 95, got {quality!r}")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int, got {max_side!r}")
    if store == "encoded" and mode not in ("RGB", "L"):
        raise ValueError(f"store='encoded' keeps images as RGB or L, not mode={mode!r}")


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ConversionError(f"{path} is not a readable .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise ConversionError(f"{path} is not a .npy file with one array")
    return arr


def _read_file(read: Callable[[Path], Any], path: Path) -> Any:
    """``read(path)``; an unreadable file (permissions, vanished meanwhile) is a ConversionError too."""
    try:
        return read(path)
    except OSError as e:
        raise ConversionError(f"{path} cannot be read ({e.strerror or e})") from None


def _none_readable(count: int) -> ConversionError:
    return ConversionError(f"none of the {count} files could be read; no map was written")


class FileSamples:
    """The files of a conversion as a dataset: item ``i`` is ``read(files[i])``.

    Picklable (given a picklable ``read``), so that the workers of a parallel build read the
    files themselves and only small records cross between processes. With ``skip_bad``, a
    file that cannot be read is ``Skip(why)``: the build leaves it out and reports it by
    index, serial, parallel or on Dask alike.
    """

    def __init__(self, files: Sequence[PathLike], read: Callable[[Path], Any], skip_bad: bool = False):
        self.files = [str(f) for f in files]
        self.read = read
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self.files):
            raise IndexError(f"file {i} of {len(self.files)}")
        try:
            return _read_file(self.read, Path(self.files[i]))
        except ConversionError as e:
            if not self.skip_bad:
                raise
            return Skip(str(e))


def _name_file(error: BaseException, files: Sequence[PathLike]) -> ConversionError:
    """The error of a build as a ConversionError naming the file of the sample it is about.

    A reader's error raised by the dataset already names its file: it is given as it was.
    """
    index = sample_of(error)
    if index is None or not 0 <= index < len(files):
        return ConversionError(str(error))
    path = str(files[index])
    reason = getattr(error, "reason", None)
    if reason is not None and path in reason:
        return ConversionError(reason)
    return ConversionError(f"{path}: {error}")


def _check_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())) and not overwrite:
        raise ConversionError(f"{out_dir} already exists; pass overwrite=True to replace the map there")


def _build(out_dir: Path, product: Any, dataset: Any, files: Sequence[PathLike], batch_size: int, n_jobs: Optional[int],
           verbose: bool) -> ConversionResult:
    """Build ``dataset`` (one sample per file) by the build engine, serially or by ``n_jobs`` workers."""
    from .parallel import build_indexable

    try:
        skipped = build_indexable(out_dir, product, dataset, batch_size, n_jobs, verbose)
    except AllSkippedError:
        raise _none_readable(len(files)) from None
    except (ConversionError, TypeError, ValueError, KeyError) as e:  # a sample the map cannot store: name its file
        raise _name_file(e, files) from None
    return ConversionResult(out_dir, len(files) - len(skipped), [(Path(files[i]), why) for i, why in skipped])


def _convert(
    kind: str,
    src_dir: PathLike,
    out_dir: PathLike,
    read: Callable[[Path], Any],
    product: Any,
    batch_size: int,
    patterns: Optional[Iterable[str]],
    skip_bad: bool,
    overwrite: bool,
    verbose: bool,
    n_jobs: Optional[int] = None,
) -> ConversionResult:
    out_dir = Path(out_dir)
    _check_out(out_dir, overwrite)
    files = list_files(src_dir, patterns or DEFAULT_PATTERNS[kind])
    if not files:
        wanted = ", ".join(patterns or DEFAULT_PATTERNS[kind])
        raise ConversionError(f"found no files matching {wanted} under {src_dir}")
    return _build(out_dir, product, FileSamples(files, read, skip_bad), files, batch_size, n_jobs, verbose)


def convert_text(
    src_dir: PathLike,
    out_dir: PathLike,
    batch_size: int = 1024,
    patterns: Optional[Iterable[str]] = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    zstd_level: Optional[int] = None,
    n_jobs: Optional[int] = None,
) -> ConversionResult:
    """One string per text file (``*.txt`` by default), read as UTF-8 exactly (no newline changes).

    ``n_jobs``: worker processes reading the files and building parts (-1: one per core).
    """
    if zstd_level is not None:
        compression.compressor(zstd_level, None)  # say at once if zstandard is missing
    product = MapProduct("strings", {"zstd_level": zstd_level})
    return _convert("text", src_dir, out_dir, _read_text, product, batch_size, patterns, skip_bad, overwrite, verbose, n_jobs)


def convert_images(
    src_dir: PathLike,
    out_dir: PathLike,
    batch_size: int = 256,
    patterns: Optional[Iterable[str]] = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    mode: Optional[str] = "RGB",
    n_jobs: Optional[int] = None,
    store: str = "raw",
    quality: Optional[int] = None,
    max_side: Optional[int] = None,
) -> ConversionResult:
    """One HxWxC uint8 array per image file (a RaggedMmap), decoded with Pillow.

    ``mode`` is the Pillow mode every image is converted to ("RGB": HxWx3; "L": HxW);
    None keeps each file's own mode (then all must share a dtype). ``n_jobs``: worker
    processes decoding and building parts (-1: one per core). ``max_side`` shrinks every
    image whose longer side exceeds it (aspect kept, Lanczos), never enlarges one.
    ``store="encoded"`` writes an ImagesMmap of the files' own bytes instead (each checked to
    decode), or with ``quality`` (or ``max_side``) the images encoded again as JPEG.
    """
    _check_store(store, quality, max_side, mode)
    if store == "encoded":
        read: Any = _EncodedReader(mode, quality, max_side)
        product = MapProduct("images", {"mode": mode})
    else:
        read, product = _image_reader(mode, max_side), MapProduct("ragged")
    return _convert("images", src_dir, out_dir, read, product, batch_size, patterns, skip_bad, overwrite, verbose, n_jobs)


def convert_npy(
    src_dir: PathLike,
    out_dir: PathLike,
    batch_size: int = 1024,
    patterns: Optional[Iterable[str]] = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    dtype: Any = None,
    n_jobs: Optional[int] = None,
) -> ConversionResult:
    """One array per ``.npy`` file, of any shape (a RaggedMmap).

    The first batch decides the dtype unless ``dtype`` is given; a later file whose values
    that dtype cannot hold exactly stops the run, naming the file. ``n_jobs``: worker
    processes reading the files and building parts (-1: one per core).
    """
    product = MapProduct("ragged", {"dtype": None if dtype is None else np.dtype(dtype)})
    return _convert("npy", src_dir, out_dir, _read_npy, product, batch_size, patterns, skip_bad, overwrite, verbose, n_jobs)


CONVERTERS = {"text": convert_text, "images": convert_images, "npy": convert_npy}


# --- image folders: one subfolder per class ---------------------------------------------------

# the extensions torchvision's ImageFolder takes, so that both see the same images
IMAGEFOLDER_PATTERNS = ("*.jpg", "*.jpeg", "*.png", "*.ppm", "*.bmp", "*.pgm", "*.tif", "*.tiff", "*.webp")
DEFAULT_PATTERNS["imagefolder"] = IMAGEFOLDER_PATTERNS


def list_imagefolder(root: PathLike, patterns: Optional[Iterable[str]] = None) -> Tuple[List[str], List[Tuple[Path, int]]]:
    """The classes of an image folder and its (file, label) pairs, in torchvision's order.

    Classes are the subfolders of ``root``, sorted by name (code point order), as
    ``torchvision.datasets.ImageFolder`` sorts them; label ``i`` is class ``i``. A class's
    images are found recursively, sorted by folder path then file name, as ImageFolder does.
    Unlike ImageFolder, hidden files and folders (names starting with ".") are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConversionError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise ConversionError(f"{root} has no subfolders; an image folder has one subfolder of images per class")
    regex = re.compile("|".join(_glob_to_regex(p) for p in (patterns or IMAGEFOLDER_PATTERNS)), re.IGNORECASE)
    samples: List[Tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = []
        for folder, subfolders, names in os.walk(root / name, followlinks=True):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            found += [(folder, n) for n in names if not n.startswith(".") and regex.fullmatch(n)]
        samples += [(Path(folder, n), label) for folder, n in sorted(found)]
    return classes, samples


class _ImageFolderRecords:
    """The records of an image folder, by index (picklable, for worker processes)."""

    def __init__(self, root: Path, samples: List[Tuple[Path, int]], mode: Optional[str], skip_bad: bool, read: Any = None):
        self.root, self.samples, self.skip_bad = root, samples, skip_bad
        self._read = read or _image_reader(mode)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        path, label = self.samples[i]
        try:
            image = _read_file(self._read, path)
        except ConversionError as e:
            if not self.skip_bad:
                raise
            return Skip(str(e))
        return {"image": image, "label": label, "path": path.relative_to(self.root).as_posix()}


def convert_imagefolder(
    root: PathLike,
    out_dir: PathLike,
    batch_size: int = 256,
    patterns: Optional[Iterable[str]] = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    mode: Optional[str] = "RGB",
    n_jobs: Optional[int] = None,
    store: str = "raw",
    quality: Optional[int] = None,
    max_side: Optional[int] = None,
) -> ConversionResult:
    """An image folder (one subfolder per class) as a RecordsMmap with three fields.

    ``image``: HxWxC uint8 (decoded by Pillow, converted to ``mode`` as ``convert_images``
    does); ``label``: int64, the class's index in the sorted class names (see
    ``list_imagefolder``), which are stored with the map (``RecordsMmap.classes``); ``path``:
    the file's path relative to ``root``, with "/". ``patterns`` are globs of the file names
    to take instead of ImageFolder's extensions. ``n_jobs=k`` decodes and writes in ``k``
    processes (-1: one per core). The map appears at ``out_dir`` only when complete.
    ``max_side``, ``store`` and ``quality`` are ``convert_images``'s; with ``store="encoded"``
    the ``image`` field is an image field (``schema={"image": "image"}``: RGB, stored encoded,
    decoded on read).
    """
    from .records_build import RecordsProduct
    from .records_schema import parse_schema

    root, out_dir = Path(root), Path(out_dir)
    _check_out(out_dir, overwrite)
    classes, samples = list_imagefolder(root, patterns)
    if not samples:
        raise ConversionError(f"found no files matching {', '.join(patterns or IMAGEFOLDER_PATTERNS)} in the class folders of {root}")
    _pillow()  # say at once if Pillow is missing
    _check_store(store, quality, max_side, mode)
    if store == "encoded" and mode != "RGB":
        raise ValueError("an image field holds RGB images: store='encoded' needs mode='RGB'")
    schema = {"image": "image" if store == "encoded" else "ragged", "label": ("numpy", "int64"), "path": "strings"}
    product = RecordsProduct(parse_schema(schema), classes)
    read = _EncodedReader(mode, quality, max_side) if store == "encoded" else _image_reader(mode, max_side)
    dataset = _ImageFolderRecords(root, samples, mode, skip_bad, read)
    return _build(out_dir, product, dataset, [p for p, _ in samples], batch_size, n_jobs, verbose)


CONVERTERS["imagefolder"] = convert_imagefolder
