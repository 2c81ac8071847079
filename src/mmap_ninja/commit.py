"""The commit protocol: how an append changes a map's files, and how a writer repairs them.

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

A writer reads only its own open descriptors (``fs.pread``), never a map it did not lock;
readers go through ``reads.py`` and ``opening.py``. A roll-back (``roll_back``: a field of
a dataset whose own commit got ahead of the dataset's) lowers the commit and cuts the
files to what the dataset committed; readers of a dataset map only what the dataset
committed, never a field's own count, so nothing they mapped is ever cut (no SIGBUS).
"""

from __future__ import annotations

import math
import os
import struct
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import checksums, fs, kinds
from .errors import MapFormatError
from .ondisk import (BYTE_KINDS, DATA, DTYPE, ENDS, FLATTENED_SHAPES, KIND, LOCK, OFFSET, ORDER, SHAPE, SHAPES, SHAPES_ARE_FLAT, STARTS,
                     ZSTD_DICT, ZSTD_LEVEL, ArrayHeader, read_array_header, read_kind, read_shape_layout, shape_bytes)
from .opening import open_spans
from .publish import link_tree, publish, remove_stale_partials, sync_tree
from .shapes import LENGTHS, NESTED, ShapeLayout, ShapeRecord

_IOV_MAX = 1024


def write_file(path: Path, content: bytes) -> None:
    fs.write_file(path, content)


def write_zstd_settings(map_dir: Path, level: int, dictionary: Optional[bytes]) -> None:
    write_file(map_dir / ZSTD_LEVEL, str(level).encode("ascii"))
    if dictionary is not None:
        write_file(map_dir / ZSTD_DICT, dictionary)


def write_array_header(array_dir: Path, dtype: np.dtype, shape: Sequence[int], kind: str = "numpy", codec: Optional[str] = None) -> None:
    fs.mkdir(array_dir, exist_ok=True)
    name = np.dtype(dtype).name
    write_file(array_dir / DTYPE, (name if codec is None else f"{codec}:{name}").encode("ascii"))
    write_file(array_dir / SHAPE, shape_bytes(shape))
    write_file(array_dir / ORDER, b"C")
    write_file(array_dir / KIND, kind.encode("ascii"))
    fs.touch(array_dir / DATA)


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
        self._checksums = checksums.Table.open(map_dir, self._data._data, map_dir / DATA)  # None: the map has none
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
        if self._checksums is not None:
            self._checksums.close()

    def _tables(self) -> List[_ArrayFile]:
        return [t for t in (self._ends, self._lengths, self._flat_shapes) if t is not None]

    @contextmanager
    def locked(self, lock: bool = True) -> Iterator["SpansWriter"]:
        """Hold the map's writer lock and make sure the map holds no half-written tail."""
        if lock:
            self._lock.acquire()
            if self.count < 0:  # this writer's first append: clear what killed upgrades left
                remove_stale_partials(self.dir)
        try:
            committed = self._starts.rows()
            if self._checksums is None:  # also those added since this writer opened the map
                self._checksums = checksums.Table.open(self.dir, self._data._data, self.dir / DATA)
                self.count = -1 if self._checksums is not None else self.count  # the repair completes them
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
        if self._checksums is not None:  # cut a killed append's rows, or add those of samples appended without
            self._checksums.repair(committed, self._byte_spans)
        self.count = committed

    def roll_back(self, count: int) -> None:
        """Cut the map back to its first ``count`` committed samples (inside ``locked()``):
        the commit is lowered first (readers see ``count`` from then on), then the files cut."""
        if self.count > count:
            self._starts.publish(count)
            self.repair(count)

    def _byte_spans(self, first: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        """The byte offsets in data.ninja of committed samples ``first..stop-1`` (for checksums)."""
        def table(f: _ArrayFile) -> np.ndarray:
            raw = fs.pread(f._data, 8 * (stop - first), 8 * first)
            if len(raw) != 8 * (stop - first):
                raise MapFormatError(f"{f.dir / DATA} is truncated")
            return np.frombuffer(raw, OFFSET) * self._data.row_bytes
        return table(self._starts), table(self._ends)

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
        if self._checksums is not None:  # read back what was just written: the CRCs of what is on disk
            self._checksums.append(count, starts * self._data.row_bytes, ends * self._data.row_bytes)
        if durable:  # all the commit vouches for, counts included, durable before it: in one batch
            files = [fd for f in [self._data] + self._tables() for fd in f.descriptors()]
            files += self._checksums.descriptors() if self._checksums is not None else []
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
        self._checksums = checksums.Table.open(array_dir, self._file._data, array_dir / DATA)
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
            if self._checksums is None:  # also those added since this writer opened the map
                self._checksums = checksums.Table.open(self.dir, self._file._data, self.dir / DATA)
                self.count = -1 if self._checksums is not None else self.count
            if committed != self.count:
                self._file.cut(committed)
                if self._checksums is not None:
                    self._checksums.repair(committed, self._byte_spans)
                self.count = committed
            yield self
        finally:
            if lock:
                self._lock.release()

    def roll_back(self, count: int) -> None:
        """Cut the map back to its first ``count`` rows (inside ``locked()``); the commit, the
        first 8 bytes of shape.ninja, is lowered first."""
        if self.count > count:
            self._file.cut(count)
            self.count = count

    def append(self, rows: Optional[np.ndarray], durable: bool = False, source: Optional[Tuple[Path, int, int]] = None) -> None:
        """Append ``rows``, or with ``source`` = (file, byte offset, row count) copy them from a file."""
        if source is not None:
            n = source[2]
            self._file.copy_from(source[0], source[1], self.count * self._file.row_bytes, n * self._file.row_bytes)
        else:
            n = len(rows)
            self._file.write(self.count, [np.ascontiguousarray(rows)])
        if self._checksums is not None:
            self._checksums.append(self.count, *self._byte_spans(self.count, self.count + n))
        if durable:
            self._file.sync()
            if self._checksums is not None:
                fs.fsync_all(self._checksums.descriptors())
        self._file.publish(self.count + n)
        if durable:
            self._file.sync_shape()
        self.count += n

    def _byte_spans(self, first: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        starts = np.arange(first, stop, dtype=np.int64) * self._file.row_bytes
        return starts, starts + self._file.row_bytes

    def close(self) -> None:
        self._file.close()
        if self._checksums is not None:
            self._checksums.close()
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
    write_file(map_dir / KIND, kind.encode("ascii"))  # last: a directory without it is no map


def _create_shapes(map_dir: Path, shape_layout: ShapeLayout) -> None:
    write_file(map_dir / SHAPES_ARE_FLAT, struct.pack("<i", 0 if shape_layout is NESTED else 1))
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
        remove_stale_partials(map_dir)
        target = map_dir.parent / f".{map_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        link_tree(map_dir, target, skip={SHAPES, SHAPES_ARE_FLAT})
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
                sync_tree(target)
            publish(target, map_dir, durable)
    except BaseException:
        if published:
            fs.rmtree(target)
        raise


def spans_itemsize(map_dir: Path, kind: str) -> int:
    """The size of one item of a spans map's data.ninja: its dtype's for raw ragged maps, else 1."""
    found = kinds.by_disk(kind)
    if found is None or not found.shapes:
        return 1
    header = read_array_header(map_dir, kind="ragged", coded=True)
    return 1 if header.codec is not None else header.dtype.itemsize


def create_array(array_dir: Path, dtype: np.dtype, row_shape: Sequence[int]) -> ArrayHeader:
    """Lay out an empty same-shape map in an existing, empty directory."""
    write_array_header(array_dir, dtype, (0, *row_shape))
    return ArrayHeader(np.dtype(dtype), (0, *row_shape), "C")


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
    if kind is None:
        raise MapFormatError(f"{map_dir} holds no map: {KIND} is missing")
    writer: Union[ArrayWriter, SpansWriter]
    if kinds.by_disk(kind).array:
        writer, commit_file = ArrayWriter(map_dir, read_array_header(map_dir)), map_dir / SHAPE
    else:
        writer = SpansWriter(map_dir, spans_itemsize(map_dir, kind), with_shapes=kinds.by_disk(kind).shapes)
        commit_file = map_dir / STARTS / SHAPE
    try:
        with writer.locked():
            if writer.count < count:
                raise MapFormatError(f"{commit_file} counts {writer.count} samples; cannot roll back to {count}")
            if writer.count > count:
                writer.roll_back(count)
    finally:
        writer.close()


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
