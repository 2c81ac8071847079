"""Merging maps of one kind into one map, in order (parts of a build, or ``concatenate``).

The small files cost O(parts); offsets and shapes go through one vectorised pass per part
(each part's offsets are recomputed from its lengths, i.e. shifted by the samples before
it); sample bytes are copied file to file in the kernel where the platform allows. Parts
are opened one at a time and read in chunks, so memory stays bounded whatever their size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from . import codecs, kinds, layout, reads
from .check import check_offsets
from .errors import MapFormatError
from .progress import progress_bar
from .samples import cast_losslessly
from .shapes import ShapeRecord

_CHUNK = 1 << 20  # samples (or rows) handled per step of a part


def merge(parts: List[Path], out_dir: Path, verbose: bool = False, durable: bool = False, one_dataset: bool = False) -> None:
    """See ``parts.merge``. ``one_dataset``: the parts are one build's, and errors name the
    dataset's samples only, as a serial build's would (the parts are private)."""
    if not parts:
        raise ValueError("nothing to merge: no maps were given")
    _kind_of(parts[0])
    kind = kinds.on_disk(parts[0])  # the first map's kind merges them all (a Merger for this library's own)
    total = sum(kinds.on_disk(p).count(p) for p in parts) if verbose else None
    with layout.building(out_dir, durable) as tmp, progress_bar(verbose, total, "merging") as bar:
        merger = kind.merger(tmp, one_dataset, bar)
        try:
            for path in parts:
                merger.add(path)
        finally:
            merger.close()


class Merger:
    """Appends maps of one kind, in order, to a new map in the private directory ``tmp``.

    The first map added decides the dtype (and for strings, the compression); a ragged
    map's shape layout is upgraded in place when a later map needs it (see shapes.py), so
    maps can be added as they become ready, e.g. the parts of a build still running.
    ``merger(tmp)`` makes the one for the first map's kind (``ArrayMerger``,
    ``RaggedMerger``, ``StringsMerger``, as registered in ``kinds``).
    """

    def __init__(self, tmp: Path, one_dataset: bool = False, bar: Any = None):
        self.tmp, self.one_dataset = tmp, one_dataset
        self._bar = bar if bar is not None else progress_bar(False, None)
        self._writer: Any = None
        self._first: Optional[Path] = None
        self._added = 0  # maps added so far
        self.count = 0  # samples merged so far

    def add(self, path: Path) -> None:
        """Append every sample of the map at ``path`` (a MapFormatError if it is no map)."""
        k, self._added = self._added, self._added + 1
        try:
            kind = _kind_of(path)
            if self._writer is None:
                self.kind, self._first = kind, path
                self._start(path)
                with self._writer.locked(lock=False):
                    pass  # the writer learns the (empty) map's counts
            elif kind != self.kind:
                raise MapFormatError(f"map {k} ({path}) is a {kind!r} map, but map 0 ({self._first}) is a {self.kind!r} map: only maps of one kind merge")
            self.count += self._append(k, path)
        except _PartError as e:
            raise (e.error if self.one_dataset else type(e.error)(f"map {e.k} ({e.path}): {e.error}")) from None

    def _start(self, path: Path) -> None:
        """Lay out the merged map like the first one, ``path``, and open its writer."""
        raise NotImplementedError

    def _append(self, k: int, path: Path) -> int:
        """Append the samples of map ``k`` at ``path``; returns how many."""
        raise NotImplementedError

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ArrayMerger(Merger):
    """Merges same-shape maps."""

    def _start(self, path: Path) -> None:
        header = layout.read_array_header(path)
        self.dtype, self.row_shape = header.dtype, tuple(header.shape[1:])
        self._writer = layout.ArrayWriter(self.tmp, layout.create_array(self.tmp, self.dtype, self.row_shape))

    def _append(self, k: int, path: Path) -> int:
        return _append_rows(self._writer, k, path, self.dtype, self.row_shape, self.count, self._bar)


class _SpansMerger(Merger):
    """Merges maps of spans whose samples are encoded alike, or not at all (codecs.py)."""

    with_shapes = False

    def _start(self, path: Path) -> None:
        first = layout.open_spans(path, self.kind)
        self.dtype, self._stored = first.dtype, first.data.dtype  # they differ for encoded samples
        del first
        self._codec = codecs.read(path, self.kind)
        if self.with_shapes:
            layout.create_spans(self.tmp, self.kind, self.dtype, layout.read_shape_layout(path), self._codec.name if self._codec else None)
        else:
            layout.create_spans(self.tmp, self.kind, self.dtype)
        codecs.write(self.tmp, self._codec, self.kind)
        self._writer = layout.SpansWriter(self.tmp, self._stored.itemsize, with_shapes=self.with_shapes)

    def _append(self, k: int, path: Path) -> int:
        codec = codecs.read(path, self.kind)
        if not (codec.same_as(self._codec) if codec is not None else self._codec is None):
            raise ValueError(f"map {k} ({path}) is compressed differently from map 0 ({self._first}); such maps cannot be merged")
        if codec is not None and layout.open_spans(path, self.kind).dtype != self.dtype:
            raise ValueError(f"map {k} ({path}) holds encoded samples of another dtype than map 0 ({self._first}); such maps cannot be merged")
        return _append_spans(self._writer, k, path, self.kind, self._stored, self.count, self._bar, with_shapes=self.with_shapes)


class RaggedMerger(_SpansMerger):
    """Merges ragged maps (their shapes too)."""

    with_shapes = True


class StringsMerger(_SpansMerger):
    """Merges strings maps, or images maps (bytes, with the codec record of map 0)."""


class _PartError(Exception):
    """``error`` (naming a sample by its position in the merged map) met in map ``k``."""

    def __init__(self, k: int, path: Path, error: Exception):
        super().__init__(str(error))
        self.k, self.path, self.error = k, path, error


def _kind_of(path: Path) -> str:
    try:
        with reads.open_map_files(path) as files:
            kind = layout.read_kind(files)
    except FileNotFoundError:
        raise FileNotFoundError(f"there is no map at {path}") from None
    if kind is None:
        raise MapFormatError(f"{path} holds no map ({layout.KIND} is missing)")
    return kind


def _append_spans(writer: layout.SpansWriter, k: int, path: Path, kind: str, dtype: np.dtype, base: int, bar: Any,
                  with_shapes: bool) -> int:
    """Append every sample of map ``k`` at ``path``; returns its sample count."""
    view = layout.open_spans(path, kind)
    for c0 in range(0, view.count, _CHUNK):
        c1 = min(c0 + _CHUNK, view.count)
        starts, ends = view.starts[c0:c1], view.ends[c0:c1]
        before = int(view.ends[c0 - 1]) if c0 else 0
        check_offsets(f"{path / layout.STARTS} or {path / layout.ENDS}", starts, ends, len(view.data), c0, before)
        lengths = ends - starts
        counts = view.counts[c0:c1] if view.counts is not None else None  # encoded samples: element counts
        shapes = _shape_record(view, c0, c1, lengths if counts is None else counts, path) if with_shapes else None
        writer.make_room(shapes, published=False)
        if view.data.dtype == dtype:  # back to back (checked): one copy in the kernel
            writer.append([], lengths, shapes, source=(path / layout.DATA, int(starts[0]) * dtype.itemsize), counts=counts)
        else:
            data = view.data[int(starts[0]) : int(ends[-1])]
            writer.append([_cast(data, dtype, k, path, base + c0, lengths)], lengths, shapes, counts=counts)
        bar.update(c1 - c0)
    return view.count


def _shape_record(view: layout.SpansView, c0: int, c1: int, lengths: np.ndarray, path: Path) -> ShapeRecord:
    if isinstance(view.shapes, np.ndarray):
        return ShapeRecord.from_table(view.shapes[c0:c1], lengths)
    nested = view.shapes
    starts, ends = nested.starts[c0:c1], nested.ends[c0:c1]
    before = int(nested.ends[c0 - 1]) if c0 else 0
    where = path / layout.SHAPES
    check_offsets(f"{where / layout.STARTS} or {where / layout.ENDS}", starts, ends, len(nested.data), c0, before)
    dims = np.asarray(nested.data[int(starts[0]) : int(ends[-1])])
    return ShapeRecord(np.ascontiguousarray(ends - starts), dims)


def _cast(data: np.ndarray, dtype: np.dtype, k: int, path: Path, first: int, lengths: Optional[np.ndarray]) -> np.ndarray:
    """``data`` of map ``k`` cast to ``dtype`` losslessly, or an error naming the map and the sample."""
    try:
        return cast_losslessly(np.asarray(data), dtype, first)
    except (TypeError, ValueError) as e:
        error = e
    if lengths is not None:  # find the sample at fault
        ends = np.cumsum(lengths)
        for i, (s, e) in enumerate(zip((ends - lengths).tolist(), ends.tolist())):
            try:
                cast_losslessly(np.asarray(data[s:e]), dtype, first + i)
            except (TypeError, ValueError) as bad:
                error = bad
                break
    else:
        for i in range(len(data)):
            try:
                cast_losslessly(np.asarray(data[i]), dtype, first + i)
            except (TypeError, ValueError) as bad:
                error = bad
                break
    raise _PartError(k, path, error)


def _append_rows(writer: layout.ArrayWriter, k: int, path: Path, dtype: np.dtype, row_shape: tuple, first: int, bar: Any) -> int:
    """Append every row of the same-shape map ``k`` at ``path``; returns its row count."""
    header = layout.read_array_header(path)
    if tuple(header.shape[1:]) != row_shape:
        error = ValueError(f"sample {first} has shape {tuple(header.shape[1:])}, but the map holds samples of shape {row_shape}")
        raise _PartError(k, path, error)
    rows = header.shape[0]
    if header.order == "F" and len(header.shape) > 1 and rows > 0:
        raise _PartError(k, path, ValueError("it is stored in Fortran order, whose samples cannot be merged; rebuild it"))
    if header.dtype == dtype:
        writer.append(None, source=(path / layout.DATA, 0, rows))
        bar.update(rows)
        return rows
    data = layout.map_array(path, header)
    for r0 in range(0, rows, _CHUNK):
        chunk = data[r0 : r0 + _CHUNK]
        writer.append(_cast(chunk, dtype, k, path, first + r0, None))
        bar.update(len(chunk))
    return rows
