"""Same-shape samples as one memory-mapped array (imported as ``np_ninja``).

``open_existing`` returns an ``np.memmap`` whose indexing gives plain ndarray views, and
which pickles by reference to its directory instead of by copying its data.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import weakref
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from . import build, checksums, layout, parallel, reads
from .build import ArrayEncoder, as_rows
from .errors import MapFormatError
from .progress import batched, progress

__all__ = ["open_existing", "from_ndarray", "from_generator", "from_indexable", "extend_dir", "extend", "append", "ArrayMap"]

PathLike = Union[str, os.PathLike]


class ArrayMap(np.memmap):
    """An ``np.memmap`` of a map directory: ``m[i]`` is a plain ndarray view, not a memmap."""

    # An ndarray subclass returns views of its own type, so plain results need a
    # __getitem__ of our own; one written in Python costs about half as much again as the
    # indexing itself. This one runs no Python code: the property (C) fetches the array's
    # ``_getitem``, for an opened map a partial (C) of operator.getitem over a plain view.
    __getitem__ = property(operator.attrgetter("_getitem"))

    def __array_finalize__(self, obj: Any) -> None:
        super().__array_finalize__(obj)
        # an array numpy derives from a map (a transpose, a reshape...) indexes itself; by a
        # weak reference, since a cycle through an ndarray is one the collector cannot see
        self._getitem = functools.partial(_index_derived, weakref.ref(self))

    def __array_wrap__(self, arr: np.ndarray, context: Any = None, return_scalar: bool = False) -> Any:
        # results of computations are plain arrays (or scalars), as they are for np.memmap
        if self is arr or not isinstance(arr, np.ndarray) or np.may_share_memory(self, arr):
            return arr
        return arr[()] if return_scalar or arr.ndim == 0 else arr.view(np.ndarray)

    def __reduce__(self) -> tuple:
        if "_map_dir" in self.__dict__:
            return (open_existing, (self._map_dir, self._map_mode))
        return np.array(self).__reduce__()

    @property
    def map_dir(self) -> Optional[str]:
        """The directory of the map this array was opened from."""
        return self.__dict__.get("_map_dir")


def _index_derived(ref: "weakref.ref[ArrayMap]", index: Any) -> Any:
    result = np.ndarray.__getitem__(ref(), index)
    return result.view(np.ndarray) if isinstance(result, np.ndarray) else result


_ACCESS = {"r": "r", "r+": "w", "c": "c"}  # np.memmap's modes, as the read seam's accesses


def _memmap_mode(mode: str) -> str:
    plain = mode.replace("b", "")
    if plain in ("r", "c", "r+"):
        return plain
    if plain in ("w+", "w", "a", "a+"):
        return "r+"  # never numpy's 'w+', which would truncate the map
    raise ValueError(f"unknown mode {mode!r}: use 'r', 'r+' or 'c'")


def open_existing(out_dir: PathLike, mode: str = "r", rows: Optional[int] = None, **remote_options: Any) -> np.memmap:
    """Open the same-shape map at ``out_dir`` as an ``np.memmap`` (``mode`` 'r', 'r+' or 'c').

    ``rows``: map only the first ``rows`` samples (a records field maps the records its
    dataset committed, never a tail that a writer may cut meanwhile). A URL
    (``s3://bucket/prefix``) opens a read-only ``remote.RemoteArray`` instead.
    """
    if isinstance(out_dir, str) and "://" in out_dir:
        from . import remote

        if remote.is_url(out_dir):
            return remote.RemoteArray(out_dir, **remote_options)
    out_dir = Path(out_dir)
    mode = _memmap_mode(mode)
    try:
        arr = reads.read_one_version(out_dir, functools.partial(_open_array, mode=mode, rows=rows))
    except FileNotFoundError:
        raise FileNotFoundError(f"there is no map at {out_dir}") from None
    arr._map_dir, arr._map_mode = str(out_dir), mode
    return arr


def _open_array(files: reads.MapFiles, mode: str, rows: Optional[int] = None) -> "ArrayMap":
    header = layout.read_array_header(files)
    if rows is not None:
        if rows > header.shape[0]:
            raise MapFormatError(f"{files.path / layout.SHAPE} counts {header.shape[0]} samples, the map needs {rows}")
        if rows < header.shape[0] and header.order == "F" and len(header.shape) > 1:
            raise MapFormatError(f"{files.path} is in Fortran order and cannot be read in part")
        header = header._replace(shape=(rows,) + tuple(header.shape[1:]))
    nbytes = math.prod(header.shape) * header.dtype.itemsize
    buffer = files.view(layout.DATA, nbytes, _ACCESS[mode])  # checks the data is long enough
    if nbytes == 0:  # no mapping of an empty file
        arr = np.ndarray.__new__(ArrayMap, header.shape, header.dtype, order=header.order)
        arr._mmap = None
    else:
        # np.memmap's own attributes, on an array over the one mapping the seam made
        arr = np.ndarray.__new__(ArrayMap, header.shape, header.dtype, buffer=buffer, order=header.order)
        arr._mmap = buffer
        arr.flags.writeable = mode != "r"  # read-only, also over a copy-on-write mapping
        # a view of the mapping itself, not of arr: a view of arr held by arr would be a
        # cycle the garbage collector cannot see, and the file would stay mapped for good
        plain = np.ndarray(header.shape, header.dtype, buffer=buffer, order=header.order)
        plain.flags.writeable = mode != "r"
        arr._getitem = functools.partial(operator.getitem, plain)
    arr.filename, arr.offset, arr.mode = str((files.path / layout.DATA).absolute()), 0, mode
    return arr


def _empty(out_dir: PathLike, dtype: Any, shape: Any, order: str = "C") -> np.memmap:
    """Compatibility alias for 0.9.0's private helper (its own tests call it): a new zero-filled map.

    Not part of the API: use ``from_ndarray``. ``order`` is accepted as 0.9.0 took it; the
    samples are stored in C order, which gives the same values.
    """
    if order not in ("C", "F"):
        raise ValueError(f"unknown order {order!r}: use 'C' or 'F'")
    return from_ndarray(out_dir, np.zeros(shape, dtype=dtype))


def _map_dir_of(np_mmap: np.memmap) -> Path:
    known = np_mmap.__dict__.get("_map_dir") if isinstance(np_mmap, ArrayMap) else None
    if known:
        return Path(known)
    if getattr(np_mmap, "filename", None) is None:
        raise TypeError("expected a memmap returned by np_ninja.open_existing / from_ndarray / from_generator")
    return Path(np_mmap.filename).parent


def extend_dir(out_dir: PathLike, arr: Any, durable: bool = False, checksum: bool = False) -> None:
    """Append the samples ``arr[0], arr[1], ...`` to the same-shape map at ``out_dir``, all or none.

    A map with checksums gets those of the new rows; ``checksum=True`` first gives checksums
    to a map that has none (computed from its rows as they are now)."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        raise FileNotFoundError(f"there is no map at {out_dir}")
    if checksum and not checksums.has_checksums(out_dir):
        checksums.add(out_dir)
    header = layout.read_array_header(out_dir)
    if header.order == "F" and len(header.shape) > 1 and header.shape[0] > 0:
        raise ValueError(f"{out_dir} is stored in Fortran order, where samples cannot be appended; rebuild it")
    rows = as_rows(arr, header.dtype, tuple(header.shape[1:]), header.shape[0])
    if len(rows) == 0:
        return
    writer = layout.ArrayWriter(out_dir, header)
    try:
        with writer.locked():
            writer.append(rows, durable)
    finally:
        writer.close()


def extend(np_mmap: np.memmap, arr: Any) -> None:
    """Append samples to the map ``np_mmap`` was opened from (reopen it to see them)."""
    extend_dir(_map_dir_of(np_mmap), arr)


def append(np_mmap: np.memmap, arr: Any) -> None:
    """Append one sample to the map ``np_mmap`` was opened from (reopen it to see it)."""
    extend_dir(_map_dir_of(np_mmap), np.asarray(arr)[None])


def from_ndarray(out_dir: PathLike, arr: Any, durable: bool = False, checksum: bool = False) -> np.memmap:
    """Write ``arr`` (axis 0 counts samples) as a new map at ``out_dir`` and open it ('r+').

    ``checksum=True`` records a CRC-32 of every row, which ``mmap_ninja.verify`` checks."""
    with checksums.recording(checksum):
        build.write(out_dir, ArrayEncoder(), [as_rows(arr, None, None, 0)], durable)
    return open_existing(out_dir, mode="r+")


def from_generator(
    out_dir: PathLike,
    sample_generator: Iterable[Any],
    batch_size: int,
    n: Optional[int] = None,
    verbose: bool = False,
    dtype: Any = None,
    durable: bool = False,
    checksum: bool = False,
) -> np.memmap:
    """Write same-shape samples from an iterable, ``batch_size`` at a time, as a new map.

    ``n`` is the expected number of samples (the progress bar's total); the map holds exactly
    the samples yielded. The first batch decides shape and dtype. The map appears at
    ``out_dir`` only once the iterable is exhausted.
    """
    with checksums.recording(checksum):
        build.write(out_dir, ArrayEncoder(dtype), batched(progress(sample_generator, verbose, n), batch_size), durable)
    return open_existing(out_dir, mode="r+")


def from_indexable(
    out_dir: PathLike,
    indexable: Any,
    batch_size: int,
    n_jobs: Optional[int] = None,
    verbose: bool = False,
    dtype: Any = None,
    durable: bool = False,
    checksum: bool = False,
) -> np.memmap:
    """Write the same-shape samples ``indexable[0], indexable[1], ...`` as a new map.

    ``n_jobs=k`` builds with k worker processes (-1: one per core), byte-identical to the
    serial build (see ``RaggedMmap.from_indexable``).
    """
    with checksums.recording(checksum):
        parallel.build_indexable(out_dir, "numpy", indexable, batch_size, n_jobs, verbose, {"dtype": dtype}, durable)
    return open_existing(out_dir, mode="r+")
