"""Merging maps of one kind into one map, in order (parts of a build, or ``concatenate``).

The small files cost O(parts); offsets and shapes go through one vectorised pass per part
(each part's offsets are recomputed from its lengths, i.e. shifted by the samples before
it); sample bytes are copied file to file in the kernel where the platform allows. Parts
are opened one at a time and read in chunks, so memory stays bounded whatever their size.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from . import layout
from .errors import MapFormatError
from .progress import progress_bar
from .samples import cast_losslessly
from .shapes import LENGTHS, NESTED, ShapeLayout, ShapeRecord

_CHUNK = 1 << 20  # samples (or rows) handled per step of a part


def merge(parts: List[Path], out_dir: Path, verbose: bool = False, durable: bool = False, one_dataset: bool = False) -> None:
    """See ``parts.merge``. ``one_dataset``: the parts are one build's, and errors name the
    dataset's samples only, as a serial build's would (the parts are private)."""
    if not parts:
        raise ValueError("nothing to merge: no maps were given")
    kinds = [_kind_of(p) for p in parts]
    for k, (path, kind) in enumerate(zip(parts, kinds)):
        if kind != kinds[0]:
            raise MapFormatError(f"map {k} ({path}) is a {kind!r} map, but map 0 ({parts[0]}) is a {kinds[0]!r} map: only maps of one kind merge")
    counts = [_count_of(p, kinds[0]) for p in parts]
    with layout.building(out_dir, durable) as tmp, progress_bar(verbose, sum(counts), "merging") as bar:
        try:
            if kinds[0] == "numpy":
                _merge_arrays(parts, tmp, bar)
            else:
                _merge_spans(parts, kinds[0], tmp, bar)
        except _PartError as e:
            raise (e.error if one_dataset else type(e.error)(f"map {e.k} ({e.path}): {e.error}")) from None


class _PartError(Exception):
    """``error`` (naming a sample by its position in the merged map) met in map ``k``."""

    def __init__(self, k: int, path: Path, error: Exception):
        super().__init__(str(error))
        self.k, self.path, self.error = k, path, error


def _kind_of(path: Path) -> str:
    if not path.is_dir():
        raise FileNotFoundError(f"there is no map at {path}")
    kind = layout.read_kind(path)
    if kind is None:
        raise MapFormatError(f"{path} holds no map ({layout.KIND} is missing)")
    return kind


def _count_of(path: Path, kind: str) -> int:
    return layout.read_array_header(path).shape[0] if kind == "numpy" else layout.committed_count(path)


def _merged_shape_layout(layouts: List[ShapeLayout]) -> ShapeLayout:
    """The one layout that holds the samples of every part (see shapes.py)."""
    if all(s == layouts[0] for s in layouts):
        return layouts[0]
    return NESTED if any(s.width != 1 for s in layouts) else LENGTHS


def _merge_spans(parts: List[Path], kind: str, tmp: Path, bar) -> None:
    first = layout.open_spans(parts[0], kind)
    dtype = first.data.dtype
    del first
    shape_layout = None
    if kind == "string":
        settings = layout.read_zstd_settings(parts[0])
        for k, path in enumerate(parts):
            if layout.read_zstd_settings(path) != settings:
                raise ValueError(f"map {k} ({path}) is compressed differently from map 0 ({parts[0]}); such maps cannot be merged")
        layout.create_spans(tmp, "string", dtype)
        if settings[0] is not None:
            layout.write_zstd_settings(tmp, *settings)
    else:
        shape_layout = _merged_shape_layout([layout.read_shape_layout(p) for p in parts])
        layout.create_spans(tmp, "ragged", dtype, shape_layout)
    writer = layout.SpansWriter(tmp, dtype.itemsize, with_shapes=kind == "ragged")
    try:
        with writer.locked(lock=False):
            base = 0
            for k, path in enumerate(parts):
                base += _append_spans(writer, k, path, kind, dtype, base, bar)
    finally:
        writer.close()


def _append_spans(writer: layout.SpansWriter, k: int, path: Path, kind: str, dtype: np.dtype, base: int, bar) -> int:
    """Append every sample of map ``k`` at ``path``; returns its sample count."""
    view = layout.open_spans(path, kind)
    for c0 in range(0, view.count, _CHUNK):
        c1 = min(c0 + _CHUNK, view.count)
        starts, ends = view.starts[c0:c1], view.ends[c0:c1]
        lengths = ends - starts
        if (lengths < 0).any() or starts[0] < 0 or ends.max() > len(view.data):
            raise MapFormatError(f"{path / layout.STARTS}: offsets outside the data")
        shapes = _shape_record(view, c0, c1, lengths) if kind == "ragged" else None
        contiguous = bool((starts[1:] == ends[:-1]).all())
        if contiguous and view.data.dtype == dtype:
            writer.append([], lengths, shapes, source=(path / layout.DATA, int(starts[0]) * dtype.itemsize))
        else:
            data = view.data[int(starts[0]) : int(ends[-1])] if contiguous else _gather(view.data, starts, ends)
            writer.append([_cast(data, dtype, k, path, base + c0, lengths)], lengths, shapes)
        bar.update(c1 - c0)
    return view.count


def _shape_record(view: layout.SpansView, c0: int, c1: int, lengths: np.ndarray) -> ShapeRecord:
    if isinstance(view.shapes, np.ndarray):
        return ShapeRecord.from_table(view.shapes[c0:c1], lengths)
    nested = view.shapes
    starts, ends = nested.starts[c0:c1], nested.ends[c0:c1]
    ndims = ends - starts
    if (ndims < 0).any() or starts[0] < 0 or ends.max() > len(nested.data):
        raise MapFormatError(f"{view.shapes} offsets outside the shapes data")
    if (starts[1:] == ends[:-1]).all():
        dims = np.asarray(nested.data[int(starts[0]) : int(ends[-1])])
    else:
        dims = _gather(nested.data, starts, ends)
    return ShapeRecord(np.ascontiguousarray(ndims), dims)


def _gather(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The spans ``data[starts[i]:ends[i]]`` back to back, in one vectorised step."""
    lengths = ends - starts
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return data[offsets + np.arange(int(lengths.sum()))]


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


def _merge_arrays(parts: List[Path], tmp: Path, bar) -> None:
    headers = [layout.read_array_header(p) for p in parts]
    dtype, row_shape = headers[0].dtype, tuple(headers[0].shape[1:])
    first = 0
    for k, (path, header) in enumerate(zip(parts, headers)):
        if tuple(header.shape[1:]) != row_shape:
            error = ValueError(f"sample {first} has shape {tuple(header.shape[1:])}, but the map holds samples of shape {row_shape}")
            raise _PartError(k, path, error)
        if header.order == "F" and len(header.shape) > 1 and header.shape[0] > 0:
            raise _PartError(k, path, ValueError("it is stored in Fortran order, whose samples cannot be merged; rebuild it"))
        first += header.shape[0]
    writer = layout.ArrayWriter(tmp, layout.create_array(tmp, dtype, row_shape))
    try:
        with writer.locked(lock=False):
            first = 0
            for k, (path, header) in enumerate(zip(parts, headers)):
                rows = header.shape[0]
                if header.dtype == dtype:
                    writer.append(None, source=(path / layout.DATA, 0, rows))
                    bar.update(rows)
                else:
                    data = layout.map_array(path, header)
                    for r0 in range(0, rows, _CHUNK):
                        chunk = data[r0 : r0 + _CHUNK]
                        writer.append(_cast(chunk, dtype, k, path, first + r0, None))
                        bar.update(len(chunk))
                    del data
                first += rows
    finally:
        writer.close()
