"""One check of a whole map: what it holds, and every invariant of the format (see ``ondisk.py``).

``check_map(path)`` reads the small files and the offset and shape tables (vectorised with
numpy), never the samples, and returns what it found: kind, count, dtype, shape statistics,
compression, *tails* (bytes past the commit: an interrupted append, harmless, cut by the next
writer) and *problems* (each a MapFormatError's message naming the file and, for offsets and
shapes, the first bad sample). ``mmap-ninja info`` formats it; merges and open use its
pieces (``check_offsets``); a reader raises what it would report as a problem.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np

from . import codecs, ondisk
from .errors import MapFormatError
from .ondisk import DATA, ENDS, FLATTENED_SHAPES, KIND, OFFSET, SHAPE, SHAPES, STARTS
from .opening import map_array, open_spans
from .reads import MapFiles, PathLike, read_one_version

HEALTHY = "healthy"
NEEDS_REPAIR = "needs repair on next append"
UNHEALTHY = "unhealthy"


def check_offsets(where: str, starts: np.ndarray, ends: np.ndarray, total: int, first: int = 0, before: int = 0) -> None:
    """Raise MapFormatError naming the first sample whose offsets break the invariants:
    back to back from ``before`` (``starts[0] == before``, ``starts[i] == ends[i - 1]``),
    lengths >= 0, within ``total``. ``first`` is the position of ``starts[0]`` in the map."""
    if not len(starts):
        return
    previous = np.empty_like(ends)
    previous[0] = before
    previous[1:] = ends[:-1]
    bad = (starts != previous) | (starts < 0) | (starts > ends) | (ends > total)
    if bad.any():
        i = int(np.argmax(bad))
        s, e = int(starts[i]), int(ends[i])
        if s < 0:
            why = f"starts at {s}, a negative offset"
        elif s != previous[i]:
            why = f"starts at {s}, but the sample before it ends at {int(previous[i])}" if first + i else f"starts at {s}, not 0"
        elif s > e:
            why = f"ends at {e}, before its start {s}"
        else:
            why = f"ends at {e}, past the {total} elements stored"
        raise MapFormatError(f"{where}: sample {first + i} {why}")


def bytes_on_disk(files: MapFiles, name: str = "") -> int:
    total = 0
    for entry in files.list(name):
        path = f"{name}/{entry}" if name else entry
        try:
            total += bytes_on_disk(files, path) if files.is_dir(path) else files.size(path)
        except MapFormatError:  # removed meanwhile
            pass
    return total


def check_map(path: PathLike) -> Dict[str, Any]:
    """What ``mmap-ninja info`` reports about the map at ``path``, as a dict (see the module
    docstring); ``health`` is HEALTHY, NEEDS_REPAIR (tails only) or UNHEALTHY (``problems``).
    FileNotFoundError if there is nothing at ``path``."""
    return read_one_version(path, _check)


def _check(files: MapFiles) -> Dict[str, Any]:
    report: Dict[str, Any] = {
        "path": str(files.path),
        "kind": None,
        "samples": None,
        "dtype": None,
        "shapes": [],
        "bytes_on_disk": bytes_on_disk(files),
        "compression": "none",
        "health": HEALTHY,
        "problems": [],
    }
    try:
        kind = ondisk.read_kind(files)
        if kind is None:
            raise NotAMap(f"{files.path} holds no map ({KIND} is missing)")
        report["kind"] = kind
        tails: List[str] = []
        if kind == "numpy":
            _check_array(files, report, tails)
        else:
            _check_spans_map(files, kind, report, tails)
        if tails:
            report["health"] = NEEDS_REPAIR
            report["problems"] = tails
    except MapFormatError as e:
        report["health"] = UNHEALTHY
        report["problems"] = [str(e)]
    return report


class NotAMap(Exception):
    """The path holds files, but no map."""


def _check_tail(files: MapFiles, name: str, needed: int, what: str, tails: List[str]) -> None:
    """Record bytes beyond the committed ones (a killed append's tail); fewer is corruption."""
    size = files.size(name)
    if size < needed:
        raise MapFormatError(f"{files.file(name)} holds {size} bytes but the committed {what} need {needed}: it is truncated")
    if size > needed:
        tails.append(f"{files.file(name)} holds {size - needed} bytes past the committed {what} (the tail of an interrupted append)")


def _axis_stats(shapes: np.ndarray) -> List[Dict[str, float]]:
    """min / median / max of every column of an (n, ndim) shape table."""
    if not len(shapes):
        return []
    return [{"min": int(col.min()), "median": float(np.median(col)), "max": int(col.max())} for col in np.asarray(shapes, np.int64).T]


def _shape_group(shapes: np.ndarray, ndim: int) -> Dict[str, Any]:
    return {"ndim": ndim, "samples": int(len(shapes)), "axes": _axis_stats(shapes)}


def _check_array(files: MapFiles, report: Dict[str, Any], tails: List[str]) -> None:
    header = ondisk.read_array_header(files)
    report["samples"] = header.shape[0]
    report["dtype"] = header.dtype.name
    row = header.shape[1:]  # every sample has this shape: no table to read
    axes = [{"min": r, "median": float(r), "max": r} for r in row] if header.shape[0] else []
    report["shapes"] = [{"ndim": len(row), "samples": header.shape[0], "axes": axes}]
    if header.order == "F":
        report["order"] = "F"
    _check_tail(files, DATA, math.prod(header.shape) * header.dtype.itemsize, f"{header.shape[0]} samples", tails)


def _table_rows(files: MapFiles, table: str, count: int, commit: str, row_bytes: int, tails: List[str]) -> None:
    """An offset or shape table must count at least the committed samples."""
    rows = ondisk.read_shape(files, f"{table}/{SHAPE}")
    if not rows:
        raise MapFormatError(f"{files.file(table)}/{SHAPE} is empty: a table needs a sample axis")
    if rows[0] < count:
        raise MapFormatError(f"{files.file(table)}/{SHAPE} counts {rows[0]} samples but {commit} counts {count}")
    if rows[0] > count:
        tails.append(f"{files.file(table)}/{SHAPE} counts {rows[0] - count} samples past the {count} committed in {commit}")
    _check_tail(files, f"{table}/{DATA}", count * row_bytes, f"{count} samples", tails)


def _check_spans_files(files: MapFiles, kind: str, count: int, commit: str, tails: List[str]) -> Optional[np.ndarray]:
    """Every table and data file of a ragged or strings map against the commit and the
    invariants; returns the lengths of a ragged map's samples."""
    view = open_spans(files, kind, count=count)
    for table in (STARTS, ENDS):
        _table_rows(files, table, count, commit, 8, tails)
    starts, ends = np.asarray(view.starts), np.asarray(view.ends)
    total = int(ends[-1]) if count else 0
    check_offsets(f"{files.file(STARTS)} or {files.file(ENDS)}", starts, ends, total)
    if kind in ondisk.BYTE_KINDS:
        _check_tail(files, DATA, total, f"{count} {'strings' if kind == 'string' else 'images'}", tails)
        return None
    header = ondisk.read_array_header(files, kind="ragged", coded=True)
    if header.shape[0] > total:
        unit = "bytes" if header.codec else "elements"
        tails.append(f"{files.file(SHAPE)} counts {header.shape[0] - total} {unit} past the committed samples")
    _check_tail(files, DATA, total * (1 if header.codec else header.dtype.itemsize), f"{count} samples", tails)
    lengths = ends - starts
    _table_rows(files, FLATTENED_SHAPES, count, commit, 8, tails)
    with files.sub(FLATTENED_SHAPES) as flat_files:
        flattened = map_array(flat_files, ondisk.read_array_header(flat_files), count)
    if header.codec is not None:  # encoded samples: offsets count stored bytes, flattened_shapes elements
        return np.asarray(flattened)
    wrong = flattened != lengths
    if wrong.any():
        i = int(np.argmax(wrong))
        raise MapFormatError(f"{files.file(FLATTENED_SHAPES)}: sample {i} has {flattened[i]} elements there but {lengths[i]} by its offsets")
    return lengths


def _check_spans_map(files: MapFiles, kind: str, report: Dict[str, Any], tails: List[str]) -> None:
    count = ondisk.committed_count(files)
    commit = str(files.file(ondisk.COMMIT))
    report["samples"] = count
    if kind == "ragged":
        report["dtype"] = ondisk.read_array_header(files, kind="ragged", coded=True).dtype.name
    lengths = _check_spans_files(files, kind, count, commit, tails)
    codec = codecs.read(files, kind)
    if codec is not None:
        report["compression"] = codec.describe()
    if kind in ondisk.BYTE_KINDS:
        report["dtype"] = "str (UTF-8)" if kind == "string" else "uint8 images, stored encoded"
        view = open_spans(files, kind, count=count)
        stored = np.asarray(view.ends) - np.asarray(view.starts)
        unit = "bytes per string, as stored" if kind == "string" else "bytes per image, as stored"
        report["shapes"] = [dict(_shape_group(stored[:, None], 1), unit=unit)]
        return
    report["shapes"] = _ragged_shapes(files, count, commit, lengths, tails)


def _ragged_shapes(files: MapFiles, count: int, commit: str, lengths: np.ndarray, tails: List[str]) -> List[Dict[str, Any]]:
    """Shape statistics of a ragged map, grouped by number of axes, checked against the lengths."""
    where = files.file(SHAPES)
    if ondisk.read_flat_flag(files):
        with files.sub(SHAPES) as table_files:
            header = ondisk.read_array_header(table_files)
            width = header.shape[1] if len(header.shape) == 2 else 0
            if header.dtype != OFFSET or width < 1:
                raise MapFormatError(f"{where} should be an (n, k) int64 table, found {header.dtype.name} {header.shape}")
            _table_rows(files, SHAPES, count, commit, 8 * width, tails)
            table = np.asarray(map_array(table_files, header, count))
        if width == 1:  # a 0 row with one element is a 0-d sample (a scalar)
            scalar = (table[:, 0] == 0) & (lengths == 1)
            wrong = ~scalar & (table[:, 0] != lengths)
            groups = [(0, table[scalar][:, :0]), (1, table[~scalar])]
        else:
            wrong = np.prod(table, axis=1) != lengths
            groups = [(width, table)]
        _raise_if_wrong(where, wrong, lengths)
        return [_shape_group(t, d) for d, t in groups if len(t)]
    # nested: shapes/ is itself a ragged map of 1-D shape tuples, one per sample
    with files.sub(SHAPES) as nested_files:
        ndims = _check_spans_files(nested_files, "ragged", count, commit, tails)
        _ragged_shapes(nested_files, count, commit, ndims, tails)  # the shapes of the shape tuples
        view = open_spans(nested_files, "ragged", count=count)
    data, starts = np.asarray(view.data), np.asarray(view.starts)
    out = []
    wrong = np.zeros(count, bool)
    for d in np.unique(ndims).tolist():
        idx = np.flatnonzero(ndims == d)
        table = data[starts[idx, None] + np.arange(d)] if d else np.empty((len(idx), 0), np.int64)
        wrong[idx] = np.prod(table, axis=1) != lengths[idx]
        out.append(_shape_group(table, d))
    _raise_if_wrong(where, wrong, lengths)
    return out


def _raise_if_wrong(where: object, wrong: np.ndarray, lengths: np.ndarray) -> None:
    if wrong.any():
        i = int(np.argmax(wrong))
        raise MapFormatError(f"{where}: the shape of sample {i} does not hold its {lengths[i]} elements")
