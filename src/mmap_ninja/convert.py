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
  files out and returns them in :attr:`ConversionResult.skipped`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from .progress import progress

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


def _image_reader(mode: Optional[str]) -> Callable[[Path], np.ndarray]:
    """A function that decodes an image file to an HxW(xC) array (converted to ``mode`` unless None)."""
    Image = _pillow()

    def read(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                if mode is not None and image.mode != mode:
                    image = image.convert(mode)
                return np.asarray(image)
        except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for unreadable images
            raise ConversionError(f"{path} is not a readable image ({e})") from None

    return read


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ConversionError(f"{path} is not a readable .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise ConversionError(f"{path} is not a .npy file with one array")
    return arr


def _samples(
    files: List[Path],
    read: Callable[[Path], Any],
    skip_bad: bool,
    skipped: List[Tuple[Path, str]],
    sources: List[Path],
    verbose: bool,
    desc: str,
) -> Iterator[Any]:
    """Read ``files`` in order; a bad one raises, or with ``skip_bad`` is recorded and left out."""
    for path in progress(files, verbose, total=len(files), desc=desc):
        try:
            sample = read(path)
        except ConversionError as e:
            if not skip_bad:
                raise
            skipped.append((path, str(e)))
            continue
        except OSError as e:  # unreadable file: permissions, vanished meanwhile
            if not skip_bad:
                raise ConversionError(f"{path} cannot be read ({e.strerror or e})") from None
            skipped.append((path, str(e)))
            continue
        sources.append(path)
        yield sample
    if not sources:  # raised inside the build, so that no empty map is published
        raise ConversionError(f"none of the {len(files)} files could be read; no map was written")


def _name_sample(error: Exception, sources: List[Path]) -> ConversionError:
    """The library's "sample N ..." (or "record N ...") error, with the file it came from named."""
    message = str(error)
    match = re.match(r"(?:sample|record) (\d+)\b", message)
    if match and int(match.group(1)) < len(sources):
        return ConversionError(f"{sources[int(match.group(1))]}: {message}")
    return ConversionError(message)


def _check_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())) and not overwrite:
        raise ConversionError(f"{out_dir} already exists; pass overwrite=True to replace the map there")


def _convert(
    kind: str,
    src_dir: PathLike,
    out_dir: PathLike,
    read: Callable[[Path], Any],
    build: Callable[[Path, Iterator[Any]], None],
    patterns: Optional[Iterable[str]],
    skip_bad: bool,
    overwrite: bool,
    verbose: bool,
) -> ConversionResult:
    out_dir = Path(out_dir)
    _check_out(out_dir, overwrite)
    files = list_files(src_dir, patterns or DEFAULT_PATTERNS[kind])
    if not files:
        wanted = ", ".join(patterns or DEFAULT_PATTERNS[kind])
        raise ConversionError(f"found no files matching {wanted} under {src_dir}")
    skipped: List[Tuple[Path, str]] = []
    sources: List[Path] = []
    samples = _samples(files, read, skip_bad, skipped, sources, verbose, f"{kind} -> map")
    try:
        build(out_dir, samples)
    except (TypeError, ValueError) as e:  # a sample the map cannot store: name its file
        raise _name_sample(e, sources) from None
    return ConversionResult(out_dir, len(sources), skipped)


def convert_text(
    src_dir: PathLike,
    out_dir: PathLike,
    batch_size: int = 1024,
    patterns: Optional[Iterable[str]] = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    zstd_level: Optional[int] = None,
) -> ConversionResult:
    """One string per text file (``*.txt`` by default), read as UTF-8 exactly (no newline changes)."""
    from .string import StringsMmap

    def build(out: Path, samples: Iterator[Any]) -> None:
        StringsMmap.from_generator(out, samples, batch_size, zstd_level=zstd_level)

    return _convert("text", src_dir, out_dir, _read_text, build, patterns, skip_bad, overwrite, verbose)


def convert_images(
    src_dir: PathLike,
    out_dir: PathLike,
    batch_size: int = 256,
    patterns: Optional[Iterable[str]] = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    mode: Optional[str] = "RGB",
) -> ConversionResult:
    """One HxWxC uint8 array per image file (a RaggedMmap), decoded with Pillow.

    ``mode`` is the Pillow mode every image is converted to ("RGB": HxWx3; "L": HxW);
    None keeps each file's own mode (then all must share a dtype).
    """
    from .ragged import RaggedMmap

    read = _image_reader(mode)

    def build(out: Path, samples: Iterator[Any]) -> None:
        RaggedMmap.from_generator(out, samples, batch_size)

    return _convert("images", src_dir, out_dir, read, build, patterns, skip_bad, overwrite, verbose)


def convert_npy(
    src_dir: PathLike,
    out_dir: PathLike,
    batch_size: int = 1024,
    patterns: Optional[Iterable[str]] = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    dtype: Any = None,
) -> ConversionResult:
    """One array per ``.npy`` file, of any shape (a RaggedMmap).

    The first batch decides the dtype unless ``dtype`` is given; a later file whose values
    that dtype cannot hold exactly stops the run, naming the file.
    """
    from .ragged import RaggedMmap

    def build(out: Path, samples: Iterator[Any]) -> None:
        RaggedMmap.from_generator(out, samples, batch_size, dtype=dtype)

    return _convert("npy", src_dir, out_dir, _read_npy, build, patterns, skip_bad, overwrite, verbose)


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
    """The records of an image folder, by index; pickles without its Pillow reader (for workers)."""

    def __init__(self, root: Path, samples: List[Tuple[Path, int]], mode: Optional[str], skip_bad: bool):
        self.root, self.samples, self.mode, self.skip_bad = root, samples, mode, skip_bad
        self._read: Optional[Callable[[Path], np.ndarray]] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_read": None}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        from .records import SkippedRecord

        path, label = self.samples[i]
        if self._read is None:
            self._read = _image_reader(self.mode)
        try:
            try:
                image = self._read(path)
            except OSError as e:  # unreadable file: permissions, vanished meanwhile
                raise ConversionError(f"{path} cannot be read ({e.strerror or e})") from None
        except ConversionError as e:
            if not self.skip_bad:
                raise
            return SkippedRecord(str(e))
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
    jobs: Optional[int] = None,
) -> ConversionResult:
    """An image folder (one subfolder per class) as a RecordsMmap with three fields.

    ``image``: HxWxC uint8 (decoded by Pillow, converted to ``mode`` as ``convert_images``
    does); ``label``: int64, the class's index in the sorted class names (see
    ``list_imagefolder``), which are stored with the map (``RecordsMmap.classes``); ``path``:
    the file's path relative to ``root``, with "/". ``patterns`` are globs of the file names
    to take instead of ImageFolder's extensions. ``jobs=k`` decodes and writes in ``k``
    processes. The map appears at ``out_dir`` only when complete.
    """
    from .records import build_records

    root, out_dir = Path(root), Path(out_dir)
    _check_out(out_dir, overwrite)
    classes, samples = list_imagefolder(root, patterns)
    if not samples:
        raise ConversionError(f"found no files matching {', '.join(patterns or IMAGEFOLDER_PATTERNS)} in the class folders of {root}")
    _pillow()  # say at once if Pillow is missing
    skipped: List[Tuple[int, str]] = []
    schema = {"image": "ragged", "label": ("numpy", "int64"), "path": "strings"}
    try:
        build_records(out_dir, _ImageFolderRecords(root, samples, mode, skip_bad), batch_size, jobs, verbose, schema,
                      classes=classes, skipped=skipped)
    except ConversionError as e:
        raise ConversionError(re.sub(r"^sample \d+ of the dataset raised ConversionError: ", "", str(e))) from None
    except (TypeError, ValueError) as e:  # an image the map cannot store: name its file
        if skipped and len(skipped) == len(samples):
            raise ConversionError(f"none of the {len(samples)} images could be read; no map was written") from None
        left_out = {i for i, _ in skipped}
        raise _name_sample(e, [p for i, (p, _) in enumerate(samples) if i not in left_out]) from None
    return ConversionResult(out_dir, len(samples) - len(skipped), [(samples[i][0], why) for i, why in skipped])



CONVERTERS["imagefolder"] = convert_imagefolder
