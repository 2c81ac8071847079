"""Payload checksums (opt-in): a CRC-32 of every sample's stored bytes, and ``verify``.

On disk
-------
A map with checksums holds, beside its 0.9.0 files, one more array directory::

    checksums/    array directory, uint32: zlib.crc32 of the stored bytes of sample i

"Stored bytes" are the bytes of ``data.ninja`` that sample i covers: ``starts[i]..ends[i]``
times the item size for a ragged map, the (possibly zstd-compressed) bytes of string i, row
i of a same-shape map. mmap_ninja 0.9.0 never looks at ``checksums/``: it opens, reads and
extends such a map as any other (an append by 0.9.0 leaves its new samples without checksums).
A dataset of several maps (``RecordsMmap``) has ``checksums/`` in each field's map.

Commit
------
``checksums/`` has as many rows as the map has samples, or:

- more: the tail of an append killed before the map's commit; readers and ``verify`` use
  the first ``count`` rows only, and the next writer cuts the rest (the repair of ``commit.py``);
- fewer: samples appended by a writer that does not record checksums (0.9.0), or a map
  whose checksums were being added when the process was killed. ``verify`` reports those
  samples as *not covered*, not as damaged; the next append of ours computes the missing
  rows from the data first, so a map that has checksums keeps them on every append.

An append (``commit.SpansWriter.append``, ``commit.ArrayWriter.append``) reads back the
bytes it just wrote (its own descriptor, still in the page cache), and appends their CRCs
to ``checksums/`` by the commit protocol, *before* the map's own commit. A build with
``checksum=True`` runs inside ``recording()``; ``publish.building`` then adds the table to
the private directory before it publishes it, so a new map appears with its checksums.

``verify`` reads every committed sample, never writes, and reports (see ``verify``).
"""

from __future__ import annotations

import contextvars
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import fs
from .errors import MapFormatError
from .ondisk import DATA, DTYPE, KIND, SHAPE

DIR = "checksums"
CRC = np.dtype("<u4")
_CHUNK = 64 << 20  # bytes read back (or mapped) at once: memory holds this much, not the map

_recording: contextvars.ContextVar[bool] = contextvars.ContextVar("mmap_ninja_checksums", default=False)


@contextmanager
def recording(enabled: bool = True) -> Iterator[None]:
    """Within this block, maps built (``publish.building``) get a ``checksums/`` table."""
    token = _recording.set(bool(enabled) or _recording.get())
    try:
        yield
    finally:
        _recording.reset(token)


def requested() -> bool:
    """Whether the build running now was asked for checksums (``recording``)."""
    return _recording.get()


# --- computing -------------------------------------------------------------------------------


def crcs_of(buffer: Any, starts: np.ndarray, ends: np.ndarray, base: int = 0) -> np.ndarray:
    """CRC-32 of ``buffer[starts[i] - base : ends[i] - base]`` for every i (byte offsets)."""
    view = memoryview(buffer).cast("B")
    return np.fromiter((zlib.crc32(view[s - base : e - base]) for s, e in zip(starts.tolist(), ends.tolist())), CRC, len(starts))


def crcs_from_fd(fd: int, starts: np.ndarray, ends: np.ndarray, where: object) -> np.ndarray:
    """CRC-32 of the bytes ``starts[i]..ends[i]`` of the open file ``fd``, read ~64 MiB at a time."""
    out = np.empty(len(starts), CRC)
    i, n = 0, len(starts)
    while i < n:
        base = int(starts[i])
        j = i + max(1, int(np.searchsorted(ends[i:], base + _CHUNK, side="right")))
        stop = int(ends[j - 1])
        if j > i + 1 or stop - base <= _CHUNK:
            chunk = _read_exactly(fd, stop - base, base, where)
            out[i:j] = crcs_of(chunk, starts[i:j], ends[i:j], base)
        else:  # one sample larger than a chunk: its CRC piece by piece
            crc, pos = 0, base
            while pos < stop:
                piece = _read_exactly(fd, min(_CHUNK, stop - pos), pos, where)
                crc, pos = zlib.crc32(piece, crc), pos + len(piece)
            out[i] = crc
        i = j
    return out


def _read_exactly(fd: int, count: int, offset: int, where: object) -> bytes:
    raw = fs.pread(fd, count, offset)
    while len(raw) < count:  # pread may return less than asked for
        more = fs.pread(fd, count - len(raw), offset + len(raw))
        if not more:
            raise MapFormatError(f"{where} ends at byte {offset + len(raw)}, the samples need {offset + count}")
        raw += more
    return raw


# --- the table, for the writers of commit.py --------------------------------------------------


class Table:
    """Append access to a map's ``checksums/`` (uint32 rows), under the map's writer lock."""

    def __init__(self, map_dir: Path, data_fd: int, data_path: Path):
        self.dir = Path(map_dir) / DIR
        self._data = fs.open_file(self.dir / DATA, os.O_RDWR)
        self._shape = fs.open_file(self.dir / SHAPE, os.O_RDWR)
        self._map_data, self._map_data_path = data_fd, data_path

    @classmethod
    def open(cls, map_dir: Path, data_fd: int, data_path: Path) -> Optional["Table"]:
        """The table of the map at ``map_dir`` if it has one (its data file open as ``data_fd``)."""
        from .ondisk import read_array_header, read_kind

        table = Path(map_dir) / DIR
        if read_kind(table) is None:  # read through reads.py, as every read of a map
            return None
        header = read_array_header(table)
        if header.dtype != CRC or len(header.shape) != 1:
            raise MapFormatError(f"{table / DTYPE}: checksums should be uint32 of shape (n,), found {header.dtype.name} {header.shape}")
        return cls(map_dir, data_fd, data_path)

    def rows(self) -> int:
        raw = fs.pread(self._shape, 8, 0)
        if len(raw) != 8:
            raise MapFormatError(f"{self.dir / SHAPE} is truncated")
        return struct.unpack("<Q", raw)[0]

    def repair(self, committed: int, byte_spans: Callable[[int, int], Tuple[np.ndarray, np.ndarray]]) -> None:
        """Make the table hold exactly ``committed`` rows: cut a killed append's tail, or
        compute the rows of samples appended without checksums (``byte_spans(first, stop)``
        gives their byte offsets in the map's data file)."""
        rows = self.rows()
        size = os.fstat(self._data).st_size
        # rows past the commit may be counted but not written (a power loss before the fsync
        # of an append that was never committed): only the committed rows must be there
        needed = min(rows, committed) * CRC.itemsize
        if size < needed:
            raise MapFormatError(f"{self.dir / DATA} holds {size} bytes but {self.dir / SHAPE} counts "
                                 f"{min(rows, committed)} checksums of committed samples: it is truncated")
        if rows > committed:
            self.publish(committed)  # un-count first, then cut: killed in between, the next repair cuts
        if rows < committed:
            self.append(rows, *byte_spans(rows, committed))
        elif size != committed * CRC.itemsize:
            fs.ftruncate(self._data, committed * CRC.itemsize)

    def append(self, first_row: int, starts: np.ndarray, ends: np.ndarray) -> None:
        """Write the CRCs of the map's data bytes ``starts[i]..ends[i]`` as rows ``first_row...``
        and publish them (before the map's own commit: see the module docstring)."""
        crcs = crcs_from_fd(self._map_data, starts, ends, self._map_data_path)
        fs.pwrite(self._data, crcs.tobytes(), first_row * CRC.itemsize)
        self.publish(first_row + len(crcs))

    def publish(self, rows: int) -> None:
        fs.pwrite(self._shape, struct.pack("<Q", rows), 0)

    def descriptors(self) -> List[int]:
        return [fd for fd in (self._data, self._shape) if fd >= 0]

    def close(self) -> None:
        for fd in (getattr(self, "_data", -1), getattr(self, "_shape", -1)):
            if fd >= 0:
                fs.close(fd)
        self._data = self._shape = -1

    def __del__(self) -> None:
        self.close()


def create(map_dir: Path) -> None:
    """Lay out an empty ``checksums/`` in ``map_dir`` (its rows come with the next append)."""
    from .commit import write_array_header

    write_array_header(Path(map_dir) / DIR, CRC, (0,))


def add(map_dir: Path, lock: bool = True) -> None:
    """Give the map at ``map_dir`` checksums of every sample it holds (nothing if it has them).

    Under the map's writer lock (``lock=False``: a map still in its private build
    directory): the table is laid out empty, then the writer's repair computes its rows from
    the data (see the module docstring), so a kill at any instant leaves a map whose
    checksums cover a prefix of its samples, which the next append completes.
    """
    from . import commit
    from .ondisk import read_array_header, read_kind

    map_dir = Path(map_dir)
    kind = read_kind(map_dir)
    if kind is None:
        raise MapFormatError(f"{map_dir} holds no map: {KIND} is missing")
    with commit.hold_writer_lock(map_dir) if lock else contextmanager(lambda: iter([None]))():
        if not has_checksums(map_dir):
            create(map_dir)
        if kind == "numpy":
            writer: Any = commit.ArrayWriter(map_dir, read_array_header(map_dir))
        else:
            itemsize = read_array_header(map_dir, kind="ragged").dtype.itemsize if kind == "ragged" else 1
            writer = commit.SpansWriter(map_dir, itemsize, with_shapes=kind == "ragged")
        try:
            with writer.locked(lock=False):  # its first repair fills the table
                pass
        finally:
            writer.close()


def add_tree(root: Path) -> None:
    """``add`` to the map at ``root``, or to every field of a dataset of maps (``RecordsMmap``)."""
    from .ondisk import read_kind
    from .records import is_records_dir, read_records_file

    root = Path(root)
    if is_records_dir(root):
        for name, _ in read_records_file(root).fields:
            add(root / name, lock=False)
    elif read_kind(root) is not None:
        add(root, lock=False)


def has_checksums(map_dir: Path) -> bool:
    """Whether the map (or every field of the dataset) at ``map_dir`` records checksums."""
    from .ondisk import read_kind

    return read_kind(Path(map_dir) / DIR) is not None


def overwrite(map_dir: Path, samples: Dict[int, Any]) -> None:
    """After samples were overwritten in place (``m[i] = value``): record their new CRCs.

    Like the overwrite itself, not crash-atomic: a kill between the two leaves a checksum
    that ``verify`` reports, naming the sample. Nothing to do for a map without checksums.
    """
    if not samples or not has_checksums(map_dir):
        return
    fd = fs.open_file(Path(map_dir) / DIR / DATA, os.O_RDWR)
    try:
        for i, value in samples.items():
            fs.pwrite(fd, struct.pack("<I", zlib.crc32(memoryview(value).cast("B"))), int(i) * CRC.itemsize)
    finally:
        fs.close(fd)
