"""The on-disk layout of a map, and the only module that opens a map's files.

The layout is that of mmap_ninja 0.9.0, so either library reads what the other wrote.

Files
-----
A map is a directory. Integers in binary files are little-endian; text files are ASCII
without a newline.

*Array directory* (``type.ninja`` = ``numpy``; the same-shape map, and every offset table)::

    data.ninja    raw bytes of the array, in the order of order.ninja
    dtype.ninja   numpy's dtype.name, e.g. "float32"
    shape.ninja   one uint64 per axis; axis 0 counts the samples
    order.ninja   "C" or "F"
    type.ninja    "numpy"

*Ragged map* (``type.ninja`` = ``ragged``): the directory is an array directory of all
samples flattened (C order) and concatenated, and beside it::

    starts/            array directory, int64: element offset where sample i begins
    ends/              array directory, int64: element offset where sample i ends
    flattened_shapes/  array directory, int64: element count of sample i
    shapes_are_flat.ninja   int32: 1 if shapes/ is an (n, k) array directory, else 0
    shapes/            flat: row i is the shape of sample i (k = 1 holds 1-D lengths, and
                       0 for a 0-d sample); not flat: a ragged map whose sample i is the
                       shape of sample i as a 1-D int64 array

*Strings map* (``type.ninja`` = ``string``)::

    data.ninja         UTF-8 bytes of every string, concatenated (no header files)
    starts/, ends/     array directories, int64: byte offsets of string i
    zstd_level.ninja   optional, ASCII int: every string is a zstd frame
    zstd_dict.ninja    optional: the zstd dictionary the frames were made with

*Images map* (``type.ninja`` = ``images``; not in 0.9.0): a strings map whose samples are
encoded images (JPEG, PNG) instead of UTF-8, with the codec record below (``codec.ninja`` =
``image``). mmap_ninja 0.9.0 refuses the kind; its ``StringsMmap`` opened on one fails to
decode JPEG or PNG bytes as UTF-8.

*Encoded samples* (``codecs.py``; not in 0.9.0, except zstd strings above): a map whose
samples pass through a codec records it in ``codec.ninja`` (the codec's name) and the codec's
own files. Its ``starts/``/``ends/`` then count *stored bytes*; the element counts of a ragged
map stay in ``flattened_shapes/`` and its shapes in ``shapes/``. A ragged map's data
directory then holds bytes and its ``dtype.ninja`` reads ``CODEC:DTYPE`` (e.g.
``zstd:int32``), which numpy refuses as a dtype: mmap_ninja 0.9.0 fails to open such a map
instead of reading stored bytes as elements.

Commit protocol
---------------
Samples are only ever appended, and the sample count is published last, by one 8-byte
write. The *commit file* is ``starts/shape.ninja`` for ragged and strings maps and
``shape.ninja`` for an array directory. An append, holding the writer lock on
``.writer.lock`` in the map directory (an ``flock``; ``fs.WriterLock`` says what elsewhere):

1. writes the new bytes of every ``data.ninja`` right after the committed bytes (whatever
   lies beyond them is the tail of an append that was killed, and is overwritten);
2. rewrites every other ``shape.ninja`` in place (first 8 bytes only); a nested
   ``shapes/`` map is appended to by this same protocol, commit included; with
   ``durable=True`` all files of steps 1 and 2 are fsynced here, at once (``fs.fsync_all``);
3. writes the commit file (and with ``durable=True`` fsyncs it).

A reader takes the sample count from the commit file and never looks at bytes beyond what
those samples cover, so a writer killed at any instant leaves the map with exactly the
samples of the appends that finished. The first append of a writer then *repairs* the
map: it truncates every file and shape to what the commit covers, so that mmap_ninja 0.9.0,
which trusts every ``shape.ninja``, reads and extends it correctly again.

A new map is built in a private sibling directory ``.NAME.partial-PID-*`` and renamed into
place when complete, so a map either exists whole or not at all; an existing map at that
path is swapped out in one step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two
renames, see ``fs.swap_in``). Every write, fsync and rename goes through ``fs``. Leftovers of a
killed build are removed by the next build of the same path.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import struct
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import fs
from .errors import MapFormatError
from .shapes import LENGTHS, NESTED, ShapeLayout, ShapeRecord, table_layout

DATA = "data.ninja"
DTYPE = "dtype.ninja"
SHAPE = "shape.ninja"
ORDER = "order.ninja"
KIND = "type.ninja"
STARTS = "starts"
ENDS = "ends"
FLATTENED_SHAPES = "flattened_shapes"
SHAPES = "shapes"
SHAPES_ARE_FLAT = "shapes_are_flat.ninja"
ZSTD_LEVEL = "zstd_level.ninja"
ZSTD_DICT = "zstd_dict.ninja"
LOCK = ".writer.lock"

KINDS = ("numpy", "ragged", "string", "images")
BYTE_KINDS = ("string", "images")  # spans maps whose data.ninja is bare bytes, without header files
OFFSET = np.dtype("<i8")
_IOV_MAX = 1024
_SMALL_FILE = 1 << 16  # read size for the small files

PathLike = Union[str, "os.PathLike[str]"]


# --- small files -------------------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    # os-level calls: a map has a dozen small files, and io's buffered objects cost more than the reads
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            chunks = [os.read(fd, _SMALL_FILE)]
            while len(chunks[-1]) == _SMALL_FILE or (len(chunks) > 1 and chunks[-1]):
                chunks.append(os.read(fd, _SMALL_FILE))
        finally:
            os.close(fd)
        return b"".join(chunks)
    except FileNotFoundError:
        raise MapFormatError(f"{path} is missing") from None
    except IsADirectoryError:
        raise MapFormatError(f"{path} is a directory, not a file") from None


def read_text(path: Path) -> str:
    raw = _read_file(path)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MapFormatError(f"{path} is not ASCII text") from None


def _write_file(path: Path, content: bytes) -> None:
    fs.write_file(path, content)


def read_kind(map_dir: Path) -> Optional[str]:
    """The kind of map in ``map_dir`` ("numpy", "ragged", "string"), or None if it holds none."""
    if not (map_dir / KIND).exists():
        return None
    kind = read_text(map_dir / KIND)
    if kind not in KINDS:
        raise MapFormatError(f"{map_dir / KIND} names an unknown kind of map: {kind!r}")
    return kind


def expect_kind(map_dir: Path, kind: str) -> None:
    found = read_kind(map_dir)
    if found != kind:
        what = "no map" if found is None else f"a {found!r} map"
        raise MapFormatError(f"{map_dir} holds {what}, not a {kind!r} map")


def read_shape(path: Path) -> Tuple[int, ...]:
    raw = _read_file(path)
    if len(raw) % 8:
        raise MapFormatError(f"{path} holds {len(raw)} bytes, not a whole number of uint64s")
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


def _shape_bytes(shape: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(shape)}Q", *shape)


def read_dtype(path: Path) -> np.dtype:
    return _dtype_named(read_text(path), path)


def _dtype_named(name: str, path: Path) -> np.dtype:
    try:
        dtype = np.dtype(name)
    except TypeError:
        raise MapFormatError(f"{path} names an unknown dtype: {name!r}") from None
    if dtype.hasobject or dtype.itemsize == 0:
        raise MapFormatError(f"{path} names a dtype that cannot be memory-mapped: {name!r}")
    return dtype


def read_flat_flag(map_dir: Path) -> bool:
    raw = _read_file(map_dir / SHAPES_ARE_FLAT)
    if len(raw) != 4 or struct.unpack("<i", raw)[0] not in (0, 1):
        raise MapFormatError(f"{map_dir / SHAPES_ARE_FLAT} is not a 0/1 int32")
    return struct.unpack("<i", raw)[0] == 1


def read_shape_layout(map_dir: Path) -> ShapeLayout:
    """The shape layout of a ragged map (see ``shapes.py``), from its flag and ``shapes/``."""
    return _read_shapes_header(map_dir)[0]


def _read_shapes_header(map_dir: Path) -> Tuple[ShapeLayout, Optional[ArrayHeader]]:
    """The shape layout, and the header of the (n, k) table when the shapes are flat."""
    if not read_flat_flag(map_dir):
        return NESTED, None
    header = read_array_header(map_dir / SHAPES)
    if header.dtype != OFFSET or len(header.shape) != 2 or header.shape[1] < 1:
        raise MapFormatError(f"{map_dir / SHAPES} should be an (n, k) int64 array, found {header.dtype.name} {header.shape}")
    return table_layout(header.shape[1]), header


def read_zstd_settings(map_dir: Path) -> Tuple[Optional[int], Optional[bytes]]:
    """The zstd level and dictionary of a strings map (None, None when uncompressed)."""
    level = None
    if (map_dir / ZSTD_LEVEL).exists():
        text = read_text(map_dir / ZSTD_LEVEL)
        try:
            level = int(text)
        except ValueError:
            raise MapFormatError(f"{map_dir / ZSTD_LEVEL} is not an integer: {text!r}") from None
    dictionary = _read_file(map_dir / ZSTD_DICT) if (map_dir / ZSTD_DICT).exists() else None
    return level, dictionary


def write_zstd_settings(map_dir: Path, level: int, dictionary: Optional[bytes]) -> None:
    _write_file(map_dir / ZSTD_LEVEL, str(level).encode("ascii"))
    if dictionary is not None:
        _write_file(map_dir / ZSTD_DICT, dictionary)


# --- array directories -------------------------------------------------------------------


class ArrayHeader(NamedTuple):
    dtype: np.dtype
    shape: Tuple[int, ...]
    order: str
    codec: Optional[str] = None  # a ragged map of encoded samples: its codec's name; dtype is then the samples'


def read_array_header(array_dir: Path, kind: str = "numpy", coded: bool = False) -> ArrayHeader:
    """Dtype, shape and order of an array directory, checked against each other.

    ``coded``: a ragged map's data directory may read ``CODEC:DTYPE`` (encoded samples).
    """
    expect_kind(array_dir, kind)
    codec = None
    if coded and ":" in read_text(array_dir / DTYPE):
        codec, name = read_text(array_dir / DTYPE).split(":", 1)
        dtype = _dtype_named(name, array_dir / DTYPE)
        if not codec:
            raise MapFormatError(f"{array_dir / DTYPE} names no codec before ':'")
    else:
        dtype = read_dtype(array_dir / DTYPE)
    shape = read_shape(array_dir / SHAPE)
    order = read_text(array_dir / ORDER)
    if order not in ("C", "F"):
        raise MapFormatError(f"{array_dir / ORDER} holds {order!r}, not 'C' or 'F'")
    if not shape:
        raise MapFormatError(f"{array_dir / SHAPE} is empty: a map needs a sample axis")
    return ArrayHeader(dtype, shape, order, codec)


def write_array_header(array_dir: Path, dtype: np.dtype, shape: Sequence[int], kind: str = "numpy", codec: Optional[str] = None) -> None:
    fs.mkdir(array_dir, exist_ok=True)
    name = np.dtype(dtype).name
    _write_file(array_dir / DTYPE, (name if codec is None else f"{codec}:{name}").encode("ascii"))
    _write_file(array_dir / SHAPE, _shape_bytes(shape))
    _write_file(array_dir / ORDER, b"C")
    _write_file(array_dir / KIND, kind.encode("ascii"))
    fs.touch(array_dir / DATA)


def map_file(path: Path, nbytes: int, writable: bool = False) -> Union[mmap.mmap, bytes]:
    """Map the first ``nbytes`` of a file (read-only unless ``writable``)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise MapFormatError(f"{path} is missing") from None
    if size < nbytes:
        raise MapFormatError(f"{path} holds {size} bytes but the map needs {nbytes}: it is truncated")
    if nbytes == 0:
        return bytearray() if writable else b""
    with open(path, "r+b" if writable else "rb") as f:
        return mmap.mmap(f.fileno(), nbytes, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)


def map_array(array_dir: Path, header: ArrayHeader, rows: Optional[int] = None, writable: bool = False) -> np.ndarray:
    """The first ``rows`` samples of an array directory as an ndarray over a memory map."""
    if rows is None:
        rows = header.shape[0]
    elif rows > header.shape[0]:
        raise MapFormatError(f"{array_dir / SHAPE} counts {header.shape[0]} samples, the map needs {rows}")
    elif rows < header.shape[0] and header.order == "F" and len(header.shape) > 1:
        raise MapFormatError(f"{array_dir} is in Fortran order and cannot be read in part")
    shape = (rows,) + tuple(header.shape[1:])
    count = math.prod(shape)
    buffer = map_file(array_dir / DATA, count * header.dtype.itemsize, writable)
    return np.frombuffer(buffer, header.dtype, count).reshape(shape, order=header.order)


# --- ragged and strings maps: reading ----------------------------------------------------


class SpansView(NamedTuple):
    """What a reader needs of a ragged or strings map: committed samples only."""

    count: int
    data: np.ndarray  # every committed element (bytes for strings), 1-D
    starts: np.ndarray  # int64[count]
    ends: np.ndarray  # int64[count]
    shapes: Union[None, np.ndarray, "SpansView"]  # None for strings; (count, k) when flat
    buffer: Union[mmap.mmap, bytes]  # the raw data mapping (strings decode from it)
    codec: Optional[str] = None  # a ragged map of encoded samples: data holds their stored bytes
    dtype: Optional[np.dtype] = None  # the samples' dtype (that of data unless coded)
    counts: Optional[np.ndarray] = None  # coded ragged maps: element count of each sample

    def element_counts(self, c0: int, c1: int) -> np.ndarray:
        """Element counts of samples ``c0..c1-1`` (their spans, unless the samples are coded)."""
        if self.counts is not None:
            return self.counts[c0:c1]
        return self.ends[c0:c1] - self.starts[c0:c1]


def committed_count(map_dir: Path) -> int:
    """The number of samples a ragged or strings map has published."""
    shape = read_shape(map_dir / STARTS / SHAPE)
    if len(shape) != 1:
        raise MapFormatError(f"{map_dir / STARTS / SHAPE} should hold one count, found {shape}")
    return shape[0]


def _offsets(array_dir: Path, count: int) -> np.ndarray:
    header = read_array_header(array_dir)
    if header.dtype != OFFSET or len(header.shape) != 1:
        raise MapFormatError(f"{array_dir} should hold int64 offsets, found {header.dtype.name} {header.shape}")
    return map_array(array_dir, header, count)


def open_spans(map_dir: Path, kind: str, writable: bool = False, count: Optional[int] = None) -> SpansView:
    """Open a ragged (``kind="ragged"``) or strings (``kind="string"``) map for reading."""
    expect_kind(map_dir, kind)
    if count is None:
        count = committed_count(map_dir)
    starts = _offsets(map_dir / STARTS, count)
    ends = _offsets(map_dir / ENDS, count)
    total = int(ends[-1]) if count else 0
    if total < 0:
        raise MapFormatError(f"{map_dir / ENDS} holds a negative offset")
    if kind in BYTE_KINDS:
        buffer = map_file(map_dir / DATA, total, writable)
        data = np.frombuffer(buffer, np.uint8, total)
        return SpansView(count, data, starts, ends, None, buffer, dtype=data.dtype)
    header = read_array_header(map_dir, kind="ragged", coded=True)
    if len(header.shape) != 1 or header.shape[0] < total:
        raise MapFormatError(f"{map_dir / SHAPE} holds {header.shape}, the samples need {total} elements")
    counts = None
    if header.codec is not None:  # stored bytes; the element counts are in flattened_shapes/
        data = map_array(map_dir, header._replace(dtype=np.dtype(np.uint8)), total, writable)
        counts = _offsets(map_dir / FLATTENED_SHAPES, count)
    else:
        data = map_array(map_dir, header, total, writable)
    shape_layout, table_header = _read_shapes_header(map_dir)
    if table_header is not None:
        shapes: Union[np.ndarray, SpansView] = map_array(map_dir / SHAPES, table_header, count)
    else:
        shapes = open_spans(map_dir / SHAPES, "ragged", count=count) if count else _empty_shapes(map_dir / SHAPES)
        if shapes.data.dtype != OFFSET:
            raise MapFormatError(f"{map_dir / SHAPES} should hold int64 shapes, found {shapes.data.dtype.name}")
    return SpansView(count, data, starts, ends, shapes, data, header.codec, header.dtype, counts)


def spans_itemsize(map_dir: Path, kind: str) -> int:
    """The size of one item of a spans map's data.ninja: its dtype's for raw ragged maps, else 1."""
    if kind != "ragged":
        return 1
    header = read_array_header(map_dir, kind="ragged", coded=True)
    return 1 if header.codec is not None else header.dtype.itemsize


def _empty_shapes(shapes_dir: Path) -> SpansView:
    expect_kind(shapes_dir, "ragged")
    empty = np.empty(0, OFFSET)
    return SpansView(0, empty, empty, empty, np.empty((0, 1), OFFSET), b"")


# --- writing ------------------------------------------------------------------------------


def _write_at(fd: int, buffers: Sequence, offset: int, sizes: Optional[np.ndarray] = None) -> None:
    """Write buffers (arrays, bytes) back to back from ``offset``.

    ``sizes`` are their byte counts when the caller knows them (saves a pass per sample).
    """
    if sizes is None:
        sizes = np.array([memoryview(b).nbytes for b in buffers], np.int64)
    for i in range(0, len(buffers), _IOV_MAX):
        chunk = buffers[i : i + _IOV_MAX]
        expected = int(sizes[i : i + _IOV_MAX].sum())
        if not expected:
            continue
        try:
            done = fs.pwritev(fd, chunk, offset)
        except (BufferError, ValueError):  # a non-contiguous array: write a contiguous copy
            chunk = [np.ascontiguousarray(b) for b in chunk]
            done = fs.pwritev(fd, chunk, offset)
        if done < expected:  # short write (huge chunk or full disk): finish the rest one by one
            rest = memoryview(b"".join(memoryview(b).cast("B") for b in chunk))[done:]
            while rest:
                n = fs.pwrite(fd, rest, offset + done)
                if n == 0:
                    raise OSError(f"could not write to {fd}")
                done += n
                rest = rest[n:]
        offset += expected


class _ArrayFile:
    """Append access to one array directory: its data.ninja and its shape.ninja."""

    def __init__(self, array_dir: Path, row_bytes: int, has_shape: bool = True):
        self.dir = array_dir
        self.row_bytes = row_bytes
        self._data = fs.open_file(array_dir / DATA, os.O_RDWR)
        # a strings map's data.ninja has no shape.ninja: its length lives in ends/
        self._shape = fs.open_file(array_dir / SHAPE, os.O_RDWR) if has_shape else -1

    def rows(self) -> int:
        raw = fs.pread(self._shape, 8, 0)
        if len(raw) != 8:
            raise MapFormatError(f"{self.dir / SHAPE} is truncated")
        return struct.unpack("<Q", raw)[0]

    def read_int64(self, row: int) -> int:
        raw = fs.pread(self._data, 8, row * 8)
        if len(raw) != 8:
            raise MapFormatError(f"{self.dir / DATA} is truncated")
        return struct.unpack("<q", raw)[0]

    def write(self, first_row: int, buffers: Sequence, sizes: Optional[np.ndarray] = None) -> None:
        _write_at(self._data, buffers, first_row * self.row_bytes, sizes)

    def copy_from(self, path: Path, offset: int, dest: int, nbytes: int) -> None:
        """Copy ``nbytes`` of the file at ``path`` from ``offset`` to byte ``dest`` of data.ninja."""
        src = fs.open_file(path, os.O_RDONLY)
        try:
            if os.fstat(src).st_size < offset + nbytes:
                raise MapFormatError(f"{path} holds fewer bytes than its map needs: it is truncated")
            fs.copy_range(src, self._data, nbytes, offset, dest)
        finally:
            fs.close(src)

    def publish(self, rows: int) -> None:
        if self._shape >= 0:
            fs.pwrite(self._shape, struct.pack("<Q", rows), 0)

    def cut(self, rows: int) -> None:
        """Forget everything past ``rows`` (repair after a killed append)."""
        size = os.fstat(self._data).st_size
        if size < rows * self.row_bytes:
            raise MapFormatError(f"{self.dir / DATA} holds {size} bytes but the map needs {rows * self.row_bytes}: it is truncated")
        if self._shape >= 0 and self.rows() != rows:
            self.publish(rows)
        if size > rows * self.row_bytes:
            fs.ftruncate(self._data, rows * self.row_bytes)

    def sync(self) -> None:
        fs.fsync(self._data)

    def descriptors(self, with_shape: bool = True) -> List[int]:
        """The open files (data.ninja, and shape.ninja if any), e.g. to fsync them at once."""
        return [fd for fd in (self._data, self._shape if with_shape else -1) if fd >= 0]

    def sync_shape(self) -> None:
        if self._shape >= 0:
            fs.fsync(self._shape)

    def close(self) -> None:
        for fd in (getattr(self, "_data", -1), getattr(self, "_shape", -1)):  # may be half-built
            if fd >= 0:
                fs.close(fd)
        self._data = self._shape = -1

    def __del__(self) -> None:  # a map object forgotten without close() must not leak descriptors
        self.close()


class _WriterLock(fs.WriterLock):
    """The lock that admits one writer at a time to a map (on .writer.lock; see fs.WriterLock)."""

    def __init__(self, map_dir: Path):
        super().__init__(map_dir / LOCK, f"another writer is appending to the map at {map_dir}; try again when it is done")


class SpansWriter:
    """Appends samples to a ragged or strings map by the commit protocol above."""

    def __init__(self, map_dir: Path, itemsize: int, with_shapes: bool):
        self.dir = map_dir
        self._itemsize = itemsize
        self._with_shapes = with_shapes
        self._lock = _WriterLock(map_dir)
        self.count = -1  # committed samples as this writer last saw them; -1: not checked yet
        self.total = 0
        self._open_files()

    def _open_files(self) -> None:
        map_dir = self.dir
        self._data = _ArrayFile(map_dir, self._itemsize, has_shape=self._with_shapes)
        self._starts = _ArrayFile(map_dir / STARTS, 8)
        self._ends = _ArrayFile(map_dir / ENDS, 8)
        self._lengths: Optional[_ArrayFile] = None
        self._flat_shapes: Optional[_ArrayFile] = None
        self._nested_shapes: Optional[SpansWriter] = None
        self.shape_layout: Optional[ShapeLayout] = None  # None for strings
        if self._with_shapes:
            self._lengths = _ArrayFile(map_dir / FLATTENED_SHAPES, 8)
            self.shape_layout = read_shape_layout(map_dir)
            if self.shape_layout is NESTED:
                self._nested_shapes = SpansWriter(map_dir / SHAPES, 8, with_shapes=True)
            else:
                self._flat_shapes = _ArrayFile(map_dir / SHAPES, 8 * self.shape_layout.width)

    def _close_files(self) -> None:
        if self._nested_shapes is not None:
            self._nested_shapes.close()
        for f in [self._data, self._starts] + self._tables():
            f.close()

    def _tables(self) -> List[_ArrayFile]:
        return [t for t in (self._ends, self._lengths, self._flat_shapes) if t is not None]

    @contextmanager
    def locked(self, lock: bool = True) -> Iterator["SpansWriter"]:
        """Hold the map's writer lock and make sure the map holds no half-written tail."""
        if lock:
            self._lock.acquire()
            if self.count < 0:  # this writer's first append: clear what killed upgrades left
                _remove_stale_partials(self.dir)
        try:
            committed = self._starts.rows()
            if committed != self.count:
                self.repair(committed)
            yield self
        finally:
            if lock:
                self._lock.release()

    def repair(self, committed: int) -> None:
        """Cut every file back to the ``committed`` samples (idempotent, safe to kill)."""
        for table in self._tables():
            if table.rows() < committed:
                raise MapFormatError(f"{table.dir / SHAPE} counts fewer samples than {self.dir / STARTS / SHAPE}")
        self.total = self._ends.read_int64(committed - 1) if committed else 0
        if self._nested_shapes is not None:
            nested = self._nested_shapes
            if nested._starts.rows() < committed:
                raise MapFormatError(f"{nested.dir} holds fewer shapes than {self.dir} has samples")
            nested._starts.cut(committed)
            nested.repair(committed)
        for table in self._tables():
            table.cut(committed)
        self._starts.cut(committed)
        self._data.cut(self.total)
        self.count = committed

    def make_room(self, shapes: Optional[ShapeRecord], published: bool = True, durable: bool = False) -> None:
        """Upgrade the map's shape layout if it cannot record ``shapes`` (see ``shapes.py``).

        Call inside ``locked()``. ``published=False`` is for a map still in its private build
        directory, which is upgraded in place.
        """
        if shapes is None or self.shape_layout is None or self.shape_layout.holds(shapes):
            return
        self._close_files()
        upgrade_to_nested(self.dir, self.count, published, durable)
        self._open_files()
        self.repair(self.count)  # the new shapes writer learns the count

    def append(
        self,
        buffers: Sequence,
        lengths: Sequence[int],
        shapes: Optional[ShapeRecord],
        durable: bool = False,
        source: Optional[Tuple[Path, int]] = None,
        counts: Optional[Sequence[int]] = None,
    ) -> None:
        """Append samples given as byte buffers, their stored sizes and their shapes.

        ``lengths`` are the sizes of the samples in data.ninja (in its items), which are also
        their element counts unless ``counts`` gives those (encoded samples, see codecs.py).
        ``source`` = (file, byte offset) copies the samples' bytes from that file instead of
        taking ``buffers``. Call inside ``locked()``, after ``make_room(shapes)``.
        """
        lengths = np.asarray(lengths, OFFSET)
        n, count = len(lengths), self.count
        ends = np.cumsum(lengths, dtype=OFFSET)
        ends += self.total
        starts = ends - lengths
        new_total = int(ends[-1]) if n else self.total
        if source is not None:
            row_bytes = self._data.row_bytes
            self._data.copy_from(source[0], source[1], self.total * row_bytes, (new_total - self.total) * row_bytes)
        else:
            # one buffer per sample, or a single buffer holding them all
            sizes = lengths * self._data.row_bytes if len(buffers) == n else None
            self._data.write(self.total, buffers, sizes)
        self._starts.write(count, [starts])
        self._ends.write(count, [ends])
        if self._lengths is not None:
            self._lengths.write(count, [lengths if counts is None else np.asarray(counts, OFFSET)])
        if self.shape_layout is not None:
            if shapes is None or len(shapes.ndims) != n or not self.shape_layout.holds(shapes):
                raise ValueError(f"{self.dir}: the shapes of {n} new samples do not fit its layout ({self.shape_layout})")
            if self._nested_shapes is not None:
                self._nested_shapes.append([shapes.dims], shapes.ndims, shapes.as_samples(), durable)
            else:
                self._flat_shapes.write(count, [self.shape_layout.table(shapes)])
        self._data.publish(new_total)
        for table in self._tables():
            table.publish(count + n)
        if durable:  # all the commit vouches for, counts included, durable before it: in one batch
            files = [fd for f in [self._data] + self._tables() for fd in f.descriptors()]
            fs.fsync_all(files + self._starts.descriptors(with_shape=False))
        self._starts.publish(count + n)  # the commit
        if durable:
            self._starts.sync_shape()
        self.count, self.total = count + n, new_total

    def close(self) -> None:
        self._close_files()
        self._lock.close()


class ArrayWriter:
    """Appends rows to a same-shape map by the commit protocol above."""

    def __init__(self, array_dir: Path, header: ArrayHeader):
        self.dir = array_dir
        self._file = _ArrayFile(array_dir, math.prod(header.shape[1:]) * header.dtype.itemsize)
        self.count = -1
        self._lock = _WriterLock(array_dir)

    @contextmanager
    def locked(self, lock: bool = True) -> Iterator["ArrayWriter"]:
        """Hold the map's writer lock and make sure the map holds no half-written tail.

        ``lock=False`` is for maps still being built in a private directory.
        """
        if lock:
            self._lock.acquire()
        try:
            committed = self._file.rows()
            if committed != self.count:
                self._file.cut(committed)
                self.count = committed
            yield self
        finally:
            if lock:
                self._lock.release()

    def append(self, rows: Optional[np.ndarray], durable: bool = False, source: Optional[Tuple[Path, int, int]] = None) -> None:
        """Append ``rows``, or with ``source`` = (file, byte offset, row count) copy them from a file."""
        if source is not None:
            n = source[2]
            self._file.copy_from(source[0], source[1], self.count * self._file.row_bytes, n * self._file.row_bytes)
        else:
            n = len(rows)
            self._file.write(self.count, [np.ascontiguousarray(rows)])
        if durable:
            self._file.sync()
        self._file.publish(self.count + n)
        if durable:
            self._file.sync_shape()
        self.count += n

    def close(self) -> None:
        self._file.close()
        self._lock.close()


# --- creating maps ------------------------------------------------------------------------


def create_spans(map_dir: Path, kind: str, dtype: np.dtype, shape_layout: ShapeLayout = LENGTHS, codec: Optional[str] = None) -> None:
    """Lay out an empty ragged, strings or images map in an existing, empty directory.

    ``codec`` names the codec of a ragged map of encoded samples (its record is written by
    ``codecs.write``).
    """
    for table in (STARTS, ENDS):
        write_array_header(map_dir / table, OFFSET, (0,))
    if kind in BYTE_KINDS:
        fs.touch(map_dir / DATA)
    else:
        write_array_header(map_dir, dtype, (0,), kind="ragged", codec=codec)
        write_array_header(map_dir / FLATTENED_SHAPES, OFFSET, (0,))
        _create_shapes(map_dir, shape_layout)
    _write_file(map_dir / KIND, kind.encode("ascii"))  # last: a directory without it is no map


def _create_shapes(map_dir: Path, shape_layout: ShapeLayout) -> None:
    _write_file(map_dir / SHAPES_ARE_FLAT, struct.pack("<i", 0 if shape_layout is NESTED else 1))
    if shape_layout is NESTED:
        fs.mkdir(map_dir / SHAPES)
        create_spans(map_dir / SHAPES, "ragged", OFFSET, LENGTHS)
    else:
        write_array_header(map_dir / SHAPES, OFFSET, (0, shape_layout.width))


def upgrade_to_nested(map_dir: Path, count: int, published: bool, durable: bool = False) -> None:
    """Record the shapes of a ragged map's ``count`` samples in the NESTED layout.

    A map still in its private build directory (``published=False``) is changed in place.
    A published one is rebuilt beside itself, every other file hard-linked (no data is
    copied), and swapped into place in one step, so a reader or a kill sees the old map or
    the upgraded one, never a mix; both are mmap_ninja 0.9.0 maps. Call under the writer lock.
    """
    view = open_spans(map_dir, "ragged", count=count)
    record = ShapeRecord.from_table(view.shapes, view.element_counts(0, count))
    del view
    target = map_dir
    if published:
        _remove_stale_partials(map_dir)
        target = map_dir.parent / f".{map_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _link_tree(map_dir, target, skip={SHAPES, SHAPES_ARE_FLAT})
    else:
        fs.rmtree(map_dir / SHAPES)
    try:
        _create_shapes(target, NESTED)
        writer = SpansWriter(target / SHAPES, 8, with_shapes=True)
        with writer.locked(lock=False):
            writer.append([record.dims], record.ndims, record.as_samples())
        writer.close()
        if published:
            if durable:
                _sync_tree(target)
            _publish(target, map_dir, durable)
    except BaseException:
        if published:
            fs.rmtree(target)
        raise


def _link_tree(src: Path, dst: Path, skip: set) -> None:
    """A copy of the tree ``src`` at ``dst`` made of hard links (copies where links fail)."""
    fs.mkdir(dst)
    for entry in os.scandir(src):
        if entry.name in skip:
            continue
        if entry.is_dir(follow_symlinks=False):
            _link_tree(Path(entry.path), dst / entry.name, set())
        else:
            fs.link_or_copy(Path(entry.path), dst / entry.name)


def create_array(array_dir: Path, dtype: np.dtype, row_shape: Sequence[int]) -> ArrayHeader:
    """Lay out an empty same-shape map in an existing, empty directory."""
    write_array_header(array_dir, dtype, (0, *row_shape))
    return ArrayHeader(np.dtype(dtype), (0, *row_shape), "C")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def is_map(path: Path) -> bool:
    """Whether ``path`` holds a map (which a new build may replace)."""
    return read_kind(path) is not None


def check_can_build(out_dir: Path, replaceable: Callable[[Path], bool] = is_map, what: str = "a map") -> None:
    """Raise unless ``out_dir`` is free, an empty directory, or ``what`` we may replace."""
    if not out_dir.exists() or _is_empty_dir(out_dir):
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a directory for {what}")
    if not replaceable(out_dir):
        raise FileExistsError(f"{out_dir} holds files that are not {what}; refusing to overwrite them")


@contextmanager
def building(out_dir: Path, durable: bool = False, replaceable: Callable[[Path], bool] = is_map, what: str = "a map") -> Iterator[Path]:
    """A private directory to build a map in; on success it replaces ``out_dir`` at once.

    With ``durable``, every file and directory is fsynced before and after the rename.
    ``replaceable`` says what may be replaced at ``out_dir`` (a map; for a dataset of
    several maps, such a dataset), ``what`` names it in errors.
    """
    out_dir = Path(out_dir).absolute()
    check = functools.partial(check_can_build, out_dir, replaceable, what)
    check()
    fs.makedirs(out_dir.parent)
    _remove_stale_partials(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(tmp)
    try:
        yield tmp
        if durable:
            _sync_tree(tmp)
        _publish(tmp, out_dir, durable, check)
    except BaseException:
        fs.rmtree(tmp)
        raise


def _publish(tmp: Path, out_dir: Path, durable: bool = False, check: Optional[Callable[[], None]] = None) -> None:
    if not out_dir.exists() or _is_empty_dir(out_dir):
        fs.replace(tmp, out_dir)
        if durable:
            fs.sync_path(out_dir.parent)
        return
    # again: something else may have appeared at out_dir meanwhile
    (check or functools.partial(check_can_build, out_dir))()
    aside = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
    old = fs.swap_in(tmp, out_dir, aside)
    if durable:  # the swap first: removing the old map's files must not reach the disk before it
        fs.sync_path(out_dir.parent)
    fs.rmtree(old)


def _sync_tree(root: Path) -> None:
    paths: List[Path] = []
    for folder, _, files in os.walk(root):
        paths.extend(Path(folder) / name for name in files)
        paths.append(Path(folder))
    fs.sync_paths(paths)


def _remove_stale_partials(out_dir: Path) -> None:
    """Remove what builds of ``out_dir`` killed before they finished left beside it."""
    for leftover in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            pid = int(leftover.name.rsplit(".partial-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if not fs.process_alive(pid):
            fs.rmtree(leftover)


# --- datasets of several maps (RecordsMmap) ---------------------------------------------------


def roll_back(map_dir: Path, count: int) -> None:
    """Cut the map at ``map_dir`` back to its first ``count`` samples, under its writer lock.

    For a field of a dataset whose fields commit together: an append that reached some
    fields but not the dataset's commit is undone here. The field's commit file is lowered
    by one 8-byte write (from then on readers see ``count`` samples), then every file is cut
    to what those samples cover, by the repair a killed append gets. Killed at any instant,
    the map holds either its old samples or ``count``, and the next call finishes the job.
    """
    map_dir = Path(map_dir)
    kind = read_kind(map_dir)
    if kind == "numpy":
        array = ArrayWriter(map_dir, read_array_header(map_dir))
        try:
            with array.locked():
                if array.count < count:
                    raise MapFormatError(f"{map_dir / SHAPE} counts {array.count} samples; cannot roll back to {count}")
                if array.count > count:
                    array._file.cut(count)  # the commit is the first 8 bytes of shape.ninja: lowered first
                    array.count = count
        finally:
            array.close()
        return
    if kind is None:
        raise MapFormatError(f"{map_dir} holds no map: {KIND} is missing")
    itemsize = spans_itemsize(map_dir, kind)
    spans = SpansWriter(map_dir, itemsize, with_shapes=kind == "ragged")
    try:
        with spans.locked():
            if spans.count < count:
                raise MapFormatError(f"{map_dir / STARTS / SHAPE} counts {spans.count} samples; cannot roll back to {count}")
            if spans.count > count:
                spans._starts.publish(count)  # un-commit first: readers now see `count` samples
                spans.repair(count)
    finally:
        spans.close()


@contextmanager
def hold_writer_lock(map_dir: Path) -> Iterator[None]:
    """Hold the writer lock of ``map_dir`` (a map, or a dataset of maps) for a block."""
    lock = _WriterLock(Path(map_dir))
    try:
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    finally:
        lock.close()
