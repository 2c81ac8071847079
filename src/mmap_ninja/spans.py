"""What ragged and strings maps share: samples found by (start, end) offsets.

A map object holds memory maps of the committed samples only. It notices samples that
were appended later (by itself or by another process) when asked for one past its end, or
when ``refresh()`` is called.
"""

from __future__ import annotations

import errno
import functools
import operator
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import build, layout, reads
from .errors import MapFormatError, ReadOnlyMapError
from .indexing import positions

_EMPTY = memoryview(np.empty(0, np.int64))


def normalise_mode(mode: str) -> str:
    """'r' (read-only) or 'r+' (samples may be overwritten) from any of numpy's or open()'s spellings."""
    plain = mode.replace("b", "")
    if plain in ("r", "c"):
        return "r"
    if plain in ("r+", "w+", "w", "a", "a+"):
        return "r+"
    raise ValueError(f"unknown mode {mode!r}: use 'r' (read-only) or 'r+' (writable)")


class SpansMap:
    """Base of RaggedMmap and StringsMmap: opening, length, refresh, appends, pickling."""

    _kind = ""
    # None: map every committed sample. A number: map no more than that many (a records
    # field maps only the records its dataset committed: a writer may cut the rest, see records)
    _limit: Optional[int] = None

    def __init__(self, out_dir: Union[str, os.PathLike], mode: str = "r"):
        self.path = Path(out_dir)
        self.mode = normalise_mode(mode)
        self._writer: Optional[layout.SpansWriter] = None
        self._writer_pid = -1
        self._load()

    # -- opening -------------------------------------------------------------------------

    def _load(self, writable: bool = False) -> None:
        """Map the committed samples of one version of the map; read-only unless ``writable``
        (for __setitem__)."""
        try:
            view, extra = reads.read_one_version(self.path, functools.partial(self._open_view, writable=writable))
        except FileNotFoundError:  # no map yet: an empty one, which appends create
            view, extra = None, None
        self._view = view
        self._n = view.count if view else 0  # samples mapped in this process
        self._len = self._n  # samples known to exist (more after an append, until remapped)
        self._starts = memoryview(view.starts) if view else _EMPTY
        self._ends = memoryview(view.ends) if view else _EMPTY
        self._total = int(view.ends[-1]) if view and view.count else 0
        self._install(view, extra)

    def _open_view(self, files: reads.MapFiles, writable: bool) -> Tuple[Optional[layout.SpansView], Any]:
        kind = layout.read_kind(files)
        if kind is None:
            if any(name != layout.LOCK for name in files.list()):
                raise MapFormatError(f"{self.path} holds files but no {layout.KIND}: it is not a map")
            return None, None
        if kind != self._kind:
            raise MapFormatError(f"{self.path} holds a {kind!r} map, not a {self._kind!r} map")
        return layout.open_spans(files, self._kind, writable=writable, count=self._limit), self._read_extra(files)

    def _read_extra(self, files: reads.MapFiles) -> Any:
        """What the subclass reads of the small files, of the same version as the samples."""
        return None

    def _install(self, view: Optional[layout.SpansView], extra: Any) -> None:
        """Set up the subclass's fast paths for ``view`` (None: no map on disk yet)."""

    def refresh(self) -> int:
        """Pick up samples appended since this map was opened; returns the new length."""
        try:
            version, count = reads.read_one_version(self.path, _version_and_count)
        except (FileNotFoundError, MapFormatError):
            version, count = None, -1  # _load says what is wrong, if anything
        if self._view is None or version != self._view.version or count != self._n:
            self._load()
        return self._len

    # -- the names 0.9.0 gave these operations -------------------------------------------

    def get_single(self, index: int) -> Any:
        """``self[index]`` for one integer index (as in mmap_ninja 0.9.0)."""
        return self[operator.index(index)]

    def get_multiple(self, indices: Any) -> List[Any]:
        """``self[indices]`` for a slice or a list of indices (as in mmap_ninja 0.9.0)."""
        return self.get_batch(indices)

    def set_single(self, index: int, value: Any) -> None:
        """``self[index] = value`` (as in mmap_ninja 0.9.0)."""
        self[operator.index(index)] = value

    def set_multiple(self, indices: Any, values: Sequence[Any]) -> None:
        """``self[indices] = values`` for a slice or a list of indices (as in mmap_ninja 0.9.0)."""
        self[indices] = values

    def _resolve(self, item: Any) -> Union[int, np.ndarray]:
        """``positions(item)``, looking for samples appended elsewhere before an IndexError."""
        try:
            return positions(item, self._len)
        except IndexError:
            known = self._len
            if self.refresh() == known:
                raise
            return positions(item, self._len)

    def _position(self, item: Any) -> int:
        """A single index resolved against the current length, remapping if it grew."""
        i = self._resolve(item)
        if isinstance(i, np.ndarray):
            raise TypeError(f"expected a single index, got {type(item).__name__}")
        if i >= self._n:
            self._load()
            if i >= self._n:
                raise MapFormatError(f"{self.path}: sample {i} was appended but cannot be read")
        return i

    def _batch_positions(self, item: Any) -> np.ndarray:
        idx = self._resolve(item)
        if isinstance(idx, int):
            idx = np.array([idx], np.int64)
        if len(idx) and idx.max() >= self._n:
            self._load()
        return idx

    def _span(self, i: int) -> tuple:
        """The offsets of sample ``i``, checked against the data and against its neighbours'
        (samples lie back to back: see ``ondisk.py``), so that a damaged offset is an error
        here, never another sample's bytes."""
        start, end = self._starts[i], self._ends[i]
        before = self._ends[i - 1] if i else 0
        after = self._starts[i + 1] if i + 1 < self._n else self._total
        if not (0 <= start == before and start <= end == after and end <= self._total):
            raise MapFormatError(self._bad_offsets(i, start, end, before, after))
        return start, end

    def _bad_offsets(self, i: int, start: int, end: int, before: int, after: int) -> str:
        files = f"{self.path / layout.STARTS} or {self.path / layout.ENDS}"
        if start != before:
            return f"{files}: sample {i} starts at {start}, but the sample before it ends at {before}"
        if end != after:
            return f"{files}: sample {i} ends at {end}, but the sample after it starts at {after}"
        return f"{files}: sample {i} has offsets {start}..{end} outside the {self._total} stored"

    def _batch_spans(self, idx: np.ndarray) -> tuple:
        view = self._view
        if view is None:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        starts, ends = view.starts[idx], view.ends[idx]
        if len(idx):
            last = self._n - 1
            before = np.where(idx > 0, view.ends[idx - 1], 0)
            after = np.where(idx < last, view.starts[np.minimum(idx + 1, last)], self._total)
            bad = (starts != before) | (ends != after) | (starts < 0) | (starts > ends) | (ends > self._total)
            if bad.any():
                j = int(np.argmax(bad))
                raise MapFormatError(self._bad_offsets(int(idx[j]), int(starts[j]), int(ends[j]), int(before[j]), int(after[j])))
        return starts, ends

    def _run_is_sound(self, first: int, stop: int) -> bool:
        """Whether samples ``first..stop-1`` lie back to back within the data, and so do their
        neighbours (a run read at once; False: read them one by one, which names the fault)."""
        view = self._view
        starts, ends = view.starts[first:stop], view.ends[first:stop]
        before = int(view.ends[first - 1]) if first else 0
        after = int(view.starts[stop]) if stop < self._n else self._total
        return bool(starts[0] == before and ends[-1] == after and after <= self._total and (starts[1:] == ends[:-1]).all()
                    and (starts <= ends).all() and before >= 0)

    # -- the sequence protocol -----------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._len):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {self._len} samples)"

    # -- writing -------------------------------------------------------------------------

    def _check_writable(self) -> None:
        """Refuse in read-only mode; otherwise map the data writable (opening never does)."""
        if self.mode != "r+":
            raise ReadOnlyMapError(f"{self.path} was opened read-only (mode='r'); open it with mode='r+' to overwrite samples")
        if self._view is not None and not self._view.data.flags.writeable:
            try:
                self._load(writable=True)
            except PermissionError as e:
                raise ReadOnlyMapError(f"the files of the map at {self.path} cannot be written: {e}") from None
            except OSError as e:
                if e.errno != errno.EROFS:
                    raise
                raise ReadOnlyMapError(f"the map at {self.path} is on a read-only file system") from None

    def _open_writer(self) -> layout.SpansWriter:
        if self._writer is None or self._writer_pid != os.getpid():
            # a writer inherited through fork shares its lock with the parent: start afresh
            self._writer = layout.SpansWriter(self.path, self._itemsize(), with_shapes=self._kind == "ragged")
            self._writer_pid = os.getpid()
        return self._writer

    def _itemsize(self) -> int:
        return 1

    def _new_encoder(self) -> Any:
        """The builder's encoder for this map's samples (see build.py)."""
        raise NotImplementedError

    def _extend(self, samples: List[Any], durable: bool) -> None:
        """Append ``samples`` all or none: each is checked and encoded before any is written."""
        if self._view is None:
            self._load()  # another process may have created the map meanwhile
        if self._view is None:  # the first samples create the map
            if samples:
                build.write(self.path, self._new_encoder(), [samples], durable)
                self._load()
            return
        encoder = self._new_encoder()
        pieces = list(encoder.encode(samples, self._len))
        if not pieces:
            return
        writer = self._open_writer()
        with writer.locked():
            encoder.append(writer, pieces[0], durable, published=True)
        self._after_append(writer.count)

    def _after_append(self, count: int) -> None:
        self._len = count  # the new samples are mapped lazily, on first access

    def close(self) -> None:
        """Release the map's files; the object cannot be used afterwards."""
        if self._writer is not None and self._writer_pid == os.getpid():
            self._writer.close()
        self._writer = None
        self._view = None
        self._n = self._len = 0
        self._starts = self._ends = _EMPTY

    def __enter__(self) -> "SpansMap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- pickling: by reference, never the data ---------------------------------------------

    def _reopen_kwargs(self) -> Dict[str, Any]:
        return {"mode": self.mode}

    def __reduce__(self) -> tuple:
        return (_reopen, (type(self), str(self.path), self._reopen_kwargs()))


def _version_and_count(files: reads.MapFiles) -> Tuple[Any, int]:
    return files.version(), layout.committed_count(files)


def _reopen(cls: type, path: str, kwargs: Dict[str, Any]) -> SpansMap:
    return cls(path, **kwargs)
