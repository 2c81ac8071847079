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
  files out and returns them in :attr:`ConversionResult.skipped`;
- with ``n_jobs`` (k worker processes, -1 one per core) has the workers read the files and
  build parts of the map (the classes' ``from_indexable`` over a :class:`FileSamples`); the
  map is byte-identical to the one a serial run writes.
"""

from __future__ import annotations

import fnmatch
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import fs
from .progress import progress

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


class _ImageReader:
    """Decodes an image file to an HxW(xC) array (converted to ``mode`` unless None).

    A class rather than a closure so that worker processes (n_jobs) can be sent it.
    """

    def __init__(self, mode: Optional[str]):
        self.mode = mode

    def __call__(self, path: Path) -> np.ndarray:
        Image = _pillow()
        try:
            with Image.open(path) as image:
                if self.mode is not None and image.mode != self.mode:
                    image = image.convert(self.mode)
                return np.asarray(image)
        except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for unreadable images
            raise ConversionError(f"{path} is not a readable image ({e})") from None


def _image_reader(mode: Optional[str]) -> Callable[[Path], np.ndarray]:
    """A function that decodes an image file to an HxW(xC) array (converted to ``mode`` unless None)."""
    _pillow()  # fail now, naming the extra, rather than at the first file
    return _ImageReader(mode)


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
            sample = _read_file(read, path)
        except ConversionError as e:
            if not skip_bad:
                raise
            skipped.append((path, str(e)))
            continue
        sources.append(path)
        yield sample
    if not sources:  # raised inside the build, so that no empty map is published
        raise _none_readable(len(files))


class FileSamples:
    """The files of a conversion as a dataset: item ``i`` is ``read(files[i])``.

    Picklable (given a picklable ``read``), so that the workers of ``from_indexable(...,
    n_jobs=k)`` read the files themselves and only small records cross between processes.

    With ``skipped_dir`` (skip_bad across processes), a file that cannot be read is noted
    there as a file named by its index, holding why, and a readable file's sample stands in
    for it (the next one, else the previous one), so the stand-in never brings a dtype or a
    number of axes the data does not have. The caller then writes the map without the noted
    indices. The stand-in is a copy of real data, so a bad file costs one extra read, not a
    second pass over the folder.
    """

    def __init__(self, files: Sequence[PathLike], read: Callable[[Path], Any], skipped_dir: Optional[PathLike] = None):
        self.files = [str(f) for f in files]
        self.read = read
        self.skipped_dir = None if skipped_dir is None else str(skipped_dir)
        self._reset()

    def _reset(self) -> None:
        self._bad: set = set()  # indices this process found bad (their notes are written)
        self._standin: Optional[Tuple[int, Any]] = None

    def __getstate__(self) -> Dict[str, Any]:
        return {"files": self.files, "read": self.read, "skipped_dir": self.skipped_dir}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self.files):
            raise IndexError(f"file {i} of {len(self.files)}")
        if self.skipped_dir is None:
            return _read_file(self.read, Path(self.files[i]))
        if self._standin is not None and (self._standin[0] == i or i in self._bad):
            return self._standin[1]
        try:
            return _read_file(self.read, Path(self.files[i]))
        except ConversionError as e:
            self._note(i, e)
        for j in (*range(i + 1, len(self.files)), *range(i - 1, -1, -1)):
            if j in self._bad:
                continue
            try:
                self._standin = (j, _read_file(self.read, Path(self.files[j])))
                return self._standin[1]
            except ConversionError as e:
                self._note(j, e)
        raise _none_readable(len(self.files))

    def _note(self, i: int, error: ConversionError) -> None:
        self._bad.add(i)
        Path(str(self.skipped_dir), str(i)).write_text(str(error), encoding="utf-8")


class _Kept:
    """Samples ``keep[0], keep[1], ...`` of a map: a built map without its stand-ins."""

    def __init__(self, source: Any, keep: List[int]):
        self.source, self.keep = source, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, j: int) -> Any:
        return self.source[self.keep[j]]


def _name_sample(error: Exception, sources: Sequence[PathLike]) -> ConversionError:
    """The library's "sample N ..." (or "record N ...") error, with N replaced by the file it came from.

    A reader's error re-raised by a worker ("sample N of the dataset raised ConversionError:
    <file> is not ...") already names the file: then it is given without the prefix. What
    comes before "sample N" in a parallel build's error names its private parts, which
    are gone by now: the file says more.
    """
    message = str(error)
    match = re.search(r"\b(?:sample|record) (\d+)\b", message)
    if match and int(match.group(1)) < len(sources):
        message = message[match.start():]
        path = str(sources[int(match.group(1))])
        reraised = re.match(r"sample \d+ of the dataset raised \w+: (.*)$", message, re.DOTALL)
        if reraised and path in reraised.group(1):
            return ConversionError(reraised.group(1))
        return ConversionError(f"{path}: {message}")
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
    n_jobs: Optional[int] = None,
    build_indexable: Optional[Callable[[Path, Any, Optional[int]], None]] = None,
) -> ConversionResult:
    out_dir = Path(out_dir)
    _check_out(out_dir, overwrite)
    files = list_files(src_dir, patterns or DEFAULT_PATTERNS[kind])
    if not files:
        wanted = ", ".join(patterns or DEFAULT_PATTERNS[kind])
        raise ConversionError(f"found no files matching {wanted} under {src_dir}")
    if n_jobs not in (None, 1) and build_indexable is not None:
        return _convert_by_parts(files, out_dir, read, build_indexable, skip_bad, n_jobs)
    skipped: List[Tuple[Path, str]] = []
    sources: List[Path] = []
    samples = _samples(files, read, skip_bad, skipped, sources, verbose, f"{kind} -> map")
    try:
        build(out_dir, samples)
    except (TypeError, ValueError) as e:  # a sample the map cannot store: name its file
        raise _name_sample(e, sources) from None
    return ConversionResult(out_dir, len(sources), skipped)


def _convert_by_parts(
    files: List[Path],
    out_dir: Path,
    read: Callable[[Path], Any],
    build_indexable: Callable[[Path, Any, Optional[int]], None],
    skip_bad: bool,
    n_jobs: Optional[int],
) -> ConversionResult:
    """The files as a :class:`FileSamples`, built by ``n_jobs`` workers.

    Without ``skip_bad`` the map is built at ``out_dir`` directly. With it, the workers note
    bad files in a private folder beside ``out_dir`` (named like the library's partial
    builds, so a killed run's leftovers are cleaned by the next build of ``out_dir``), the
    map is built there, and published as it is when nothing was noted, or else rewritten to
    ``out_dir`` without the stand-ins: ``out_dir`` only ever holds the finished map.
    """
    if not skip_bad:
        try:
            build_indexable(out_dir, FileSamples(files, read), n_jobs)
        except (ConversionError, TypeError, ValueError) as e:
            raise _name_sample(e, files) from None
        return ConversionResult(out_dir, len(files), [])
    from . import layout
    from .generic import open_existing

    absolute = out_dir.absolute()
    fs.makedirs(absolute.parent)
    scratch = absolute.parent / f".{absolute.name}.partial-{os.getpid()}-convert-{uuid.uuid4().hex[:8]}"
    notes = scratch / "skipped"
    try:
        fs.makedirs(notes)
        built = scratch / "map"
        try:
            build_indexable(built, FileSamples(files, read, notes), n_jobs)
        except (ConversionError, TypeError, ValueError) as e:
            if len(list(notes.iterdir())) == len(files):
                raise _none_readable(len(files)) from None
            raise _name_sample(e, files) from None
        bad = sorted(int(p.name) for p in notes.iterdir())
        skipped = [(files[i], (notes / str(i)).read_text(encoding="utf-8")) for i in bad]
        if not bad:
            with layout.building(absolute) as tmp:
                fs.rmtree(tmp)
                fs.replace(built, tmp)
            return ConversionResult(out_dir, len(files), [])
        gone = set(bad)
        keep = [i for i in range(len(files)) if i not in gone]
        try:
            build_indexable(out_dir, _Kept(open_existing(built, mode="r"), keep), None)
        except (TypeError, ValueError) as e:
            raise _name_sample(e, [files[i] for i in keep]) from None
        return ConversionResult(out_dir, len(keep), skipped)
    finally:
        fs.rmtree(scratch)


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
    from .string import StringsMmap

    def build(out: Path, samples: Iterator[Any]) -> None:
        StringsMmap.from_generator(out, samples, batch_size, zstd_level=zstd_level)

    def build_indexable(out: Path, dataset: Any, jobs: Optional[int]) -> None:
        StringsMmap.from_indexable(out, dataset, batch_size, n_jobs=jobs, verbose=verbose, zstd_level=zstd_level)

    return _convert("text", src_dir, out_dir, _read_text, build, patterns, skip_bad, overwrite, verbose, n_jobs, build_indexable)


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
) -> ConversionResult:
    """One HxWxC uint8 array per image file (a RaggedMmap), decoded with Pillow.

    ``mode`` is the Pillow mode every image is converted to ("RGB": HxWx3; "L": HxW);
    None keeps each file's own mode (then all must share a dtype). ``n_jobs``: worker
    processes decoding and building parts (-1: one per core).
    """
    from .ragged import RaggedMmap

    read = _image_reader(mode)

    def build(out: Path, samples: Iterator[Any]) -> None:
        RaggedMmap.from_generator(out, samples, batch_size)

    def build_indexable(out: Path, dataset: Any, jobs: Optional[int]) -> None:
        RaggedMmap.from_indexable(out, dataset, batch_size, n_jobs=jobs, verbose=verbose)

    return _convert("images", src_dir, out_dir, read, build, patterns, skip_bad, overwrite, verbose, n_jobs, build_indexable)


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
    from .ragged import RaggedMmap

    def build(out: Path, samples: Iterator[Any]) -> None:
        RaggedMmap.from_generator(out, samples, batch_size, dtype=dtype)

    def build_indexable(out: Path, dataset: Any, jobs: Optional[int]) -> None:
        RaggedMmap.from_indexable(out, dataset, batch_size, n_jobs=jobs, verbose=verbose, dtype=dtype)

    return _convert("npy", src_dir, out_dir, _read_npy, build, patterns, skip_bad, overwrite, verbose, n_jobs, build_indexable)


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

    def __init__(self, root: Path, samples: List[Tuple[Path, int]], mode: Optional[str], skip_bad: bool):
        self.root, self.samples, self.skip_bad = root, samples, skip_bad
        self._read = _image_reader(mode)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        from .records import SkippedRecord

        path, label = self.samples[i]
        try:
            image = _read_file(self._read, path)
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
    n_jobs: Optional[int] = None,
) -> ConversionResult:
    """An image folder (one subfolder per class) as a RecordsMmap with three fields.

    ``image``: HxWxC uint8 (decoded by Pillow, converted to ``mode`` as ``convert_images``
    does); ``label``: int64, the class's index in the sorted class names (see
    ``list_imagefolder``), which are stored with the map (``RecordsMmap.classes``); ``path``:
    the file's path relative to ``root``, with "/". ``patterns`` are globs of the file names
    to take instead of ImageFolder's extensions. ``n_jobs=k`` decodes and writes in ``k``
    processes (-1: one per core). The map appears at ``out_dir`` only when complete.
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
        build_records(out_dir, _ImageFolderRecords(root, samples, mode, skip_bad), batch_size, n_jobs, verbose, schema,
                      classes=classes, skipped=skipped)
    except ConversionError as e:
        raise ConversionError(re.sub(r"^sample \d+ of the dataset raised ConversionError: ", "", str(e))) from None
    except (TypeError, ValueError) as e:  # an image the map cannot store: name its file
        if skipped and len(skipped) == len(samples):
            raise _none_readable(len(samples)) from None
        left_out = {i for i, _ in skipped}
        raise _name_sample(e, [p for i, (p, _) in enumerate(samples) if i not in left_out]) from None
    return ConversionResult(out_dir, len(samples) - len(skipped), [(samples[i][0], why) for i, why in skipped])



CONVERTERS["imagefolder"] = convert_imagefolder
