"""Opening a map for reading: memory maps of its committed samples, of one version.

Every file is read through a :class:`reads.MapFiles` handle, so that one open sees one
version of the map (see ``reads.py``). What is checked here costs O(1) per open, whatever
the sample count: the headers and their agreement, ``starts[0] == 0``, the commit against
every table's row count, and the data size against ``total`` (see the invariants in
``ondisk.py``). What costs O(samples) is checked per sample when a sample is read (its
offsets against its neighbours' and against its shape), and for the whole map by
``check.py`` (``mmap-ninja info``, merges).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np

from .errors import MapFormatError
from .ondisk import (BYTE_KINDS, DATA, ENDS, FLATTENED_SHAPES, OFFSET, SHAPE, SHAPES, STARTS, ArrayHeader, Where, committed_count, expect_kind, handle,
                     read_array_header, read_shapes_header)
from .reads import Buffer, MapFiles, read_one_version


def map_array(where: Where, header: ArrayHeader, rows: Optional[int] = None, writable: bool = False, access: Optional[str] = None) -> np.ndarray:
    """The first ``rows`` samples of an array directory as an ndarray over a memory map."""
    with handle(where) as files:
        if rows is None:
            rows = header.shape[0]
        elif rows > header.shape[0]:
            raise MapFormatError(f"{files.file(SHAPE)} counts {header.shape[0]} samples, the map needs {rows}")
        elif rows < header.shape[0] and header.order == "F" and len(header.shape) > 1:
            raise MapFormatError(f"{files.path} is in Fortran order and cannot be read in part")
        shape = (rows,) + tuple(header.shape[1:])
        count = math.prod(shape)
        access = access or ("w" if writable else "r")
        array = np.frombuffer(files.view(DATA, count * header.dtype.itemsize, access), header.dtype, count)
        array.flags.writeable = access != "r"  # samples are read-only views, also of a copy-on-write mapping
        return array.reshape(shape, order=header.order)


class SpansView(NamedTuple):
    """What a reader needs of a ragged or strings map: committed samples only."""

    count: int
    data: np.ndarray  # every committed element (bytes for strings), 1-D
    starts: np.ndarray  # int64[count]
    ends: np.ndarray  # int64[count]
    shapes: Union[None, np.ndarray, "SpansView"]  # None for strings; (count, k) when flat
    buffer: Buffer  # the raw data mapping (strings decode from it)
    version: object = None  # the version of the map these views belong to (reads.MapFiles.version)
    codec: Optional[str] = None  # a ragged map of encoded samples: data holds their stored bytes
    dtype: Optional[np.dtype] = None  # the samples' dtype (that of data unless coded)
    counts: Optional[np.ndarray] = None  # coded ragged maps: element count of each sample

    def element_counts(self, c0: int, c1: int) -> np.ndarray:
        """Element counts of samples ``c0..c1-1`` (their spans, unless the samples are coded)."""
        if self.counts is not None:
            return self.counts[c0:c1]
        return self.ends[c0:c1] - self.starts[c0:c1]


def _offsets(files: MapFiles, name: str, count: int) -> np.ndarray:
    with files.sub(name) as table:
        header = read_array_header(table)
        if header.dtype != OFFSET or len(header.shape) != 1:
            raise MapFormatError(f"{table.path} should hold int64 offsets, found {header.dtype.name} {header.shape}")
        return map_array(table, header, count)


def open_spans(where: Where, kind: str, writable: bool = False, count: Optional[int] = None) -> SpansView:
    """Open a ragged (``kind="ragged"``) or strings (``kind="string"``) map for reading.

    Given a path, the open is of one version of the map (retried if a rebuild replaced it
    meanwhile, see ``reads.read_one_version``); given a handle, of the handle's version.
    ``count`` reads the first ``count`` samples instead of the committed count (a dataset
    of maps commits its own count; a reader maps no more than it).
    """
    if not isinstance(where, MapFiles):
        return read_one_version(where, lambda files: open_spans(files, kind, writable, count))
    files = where
    expect_kind(files, kind)
    if count is None:
        count = committed_count(files)
    starts = _offsets(files, STARTS, count)
    ends = _offsets(files, ENDS, count)
    total = int(ends[-1]) if count else 0
    if count and starts[0] != 0:
        raise MapFormatError(f"{files.file(STARTS)}: sample 0 starts at {starts[0]}, not 0")
    if total < 0:
        raise MapFormatError(f"{files.file(ENDS)}: sample {count - 1} ends at {total}, a negative offset")
    if kind in BYTE_KINDS:
        buffer = files.view(DATA, total, "w" if writable else "r")
        data = np.frombuffer(buffer, np.uint8, total)
        data.flags.writeable = writable
        return SpansView(count, data, starts, ends, None, buffer, files.version(), dtype=data.dtype)
    header = read_array_header(files, kind="ragged", coded=True)
    if len(header.shape) != 1 or header.shape[0] < total:
        raise MapFormatError(f"{files.file(SHAPE)} holds {header.shape}, the samples need {total} elements")
    counts = None
    if header.codec is not None:  # stored bytes; the element counts are in flattened_shapes/
        data = map_array(files, header._replace(dtype=np.dtype(np.uint8)), total, writable)
        counts = _offsets(files, FLATTENED_SHAPES, count)
    else:
        data = map_array(files, header, total, writable)
    _, table_header = read_shapes_header(files)
    with files.sub(SHAPES) as shapes_files:
        if table_header is not None:
            shapes: Union[np.ndarray, SpansView] = map_array(shapes_files, table_header, count)
        else:
            shapes = open_spans(shapes_files, "ragged", count=count) if count else _empty_shapes(shapes_files)
            if shapes.data.dtype != OFFSET:
                raise MapFormatError(f"{shapes_files.path} should hold int64 shapes, found {shapes.data.dtype.name}")
    return SpansView(count, data, starts, ends, shapes, data, files.version(), header.codec, header.dtype, counts)


def _empty_shapes(files: MapFiles) -> SpansView:
    expect_kind(files, "ragged")
    empty = np.empty(0, OFFSET)
    return SpansView(0, empty, empty, empty, np.empty((0, 1), OFFSET), b"")
