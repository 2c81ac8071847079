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
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import build, checksums, kinds, layout, reads
from .check import check_offsets
from .errors import MapFormatError, ReadOnlyMapError
from .indexing import positions

if TYPE_CHECKING:
    from .verification import VerifyReport

_EMPTY = memoryview(np.empty(0, np.int64))
CHUNK_BITS = 12
CHUNK = 1 << CHUNK_BITS  # samples whose offsets are checked together, on the first read of one


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

    def __new__(cls, out_dir: Any = None, *args: Any, **kwargs: Any) -> "SpansMap":
        # a URL (s3://...) opens the read-only remote variant of the class (remote.py)
        if isinstance(out_dir, str) and "://" in out_dir and not getattr(cls, "_remote", False):
            from . import remote

            if remote.is_url(out_dir):
                cls = remote.remote_class(cls)
        return super().__new__(cls)

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
        self._sound = bytearray((self._n + CHUNK - 1) >> CHUNK_BITS)  # chunks whose offsets were checked
        self._sound_np = np.frombuffer(self._sound, np.uint8)  # the same bytes, to test a batch's chunks at once
        self._unsound = len(self._sound)  # chunks not checked yet
        self._install(view, extra)

    def _open_view(self, files: reads.MapFiles, writable: bool) -> Tuple[Optional[layout.SpansView], Any]:
        kind = layout.read_kind(files)
        if kind is None:
            if files.moved():  # a rebuild swapped the map out and is removing this old one: retry
                raise MapFormatError(f"{self.path} was replaced while it was opened")
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

    # -- the offsets of samples, checked once per chunk ----------------------------------------
    #
    # Opening checks O(1) things only (opening.py). The offsets of samples are checked, all of
    # a chunk of CHUNK samples at once (vectorised), the first time a sample of the chunk is
    # read: back to back, lengths >= 0, within the data (check.check_offsets), then whatever
    # the subclass keeps per sample (``_check_block``: a ragged map's nested shape tuples).
    # ``_sound[c]`` is 1 once chunk ``c`` passed all of it; reads of a sound chunk then need no
    # check of their own.

    def _check_chunk(self, c: int) -> None:
        view = self._view
        first, stop = c << CHUNK_BITS, min((c + 1) << CHUNK_BITS, self._n)
        starts, ends = view.starts[first:stop], view.ends[first:stop]
        where = f"{self.path / layout.STARTS} or {self.path / layout.ENDS}"
        check_offsets(where, starts, ends, self._total, first, int(view.ends[first - 1]) if first else 0)
        if stop < self._n and view.starts[stop] != ends[-1]:
            check_offsets(where, view.starts[stop : stop + 1], view.ends[stop : stop + 1], self._total, stop, int(ends[-1]))
        self._check_block(first, stop)
        self._sound[c] = 1
        self._unsound -= 1

    def _check_block(self, first: int, stop: int) -> None:
        """Check what the subclass keeps of samples ``first..stop-1`` besides their offsets,
        vectorised; raise MapFormatError naming the file and the first bad sample."""

    def _span(self, i: int) -> tuple:
        """The offsets of sample ``i`` (``0 <= i < self._n``), checked."""
        if not self._sound[i >> CHUNK_BITS]:
            self._check_chunk(i >> CHUNK_BITS)
        return self._starts[i], self._ends[i]

    def _check_chunks(self, first: int, stop: int) -> None:
        """Check the chunks of samples ``first..stop-1`` that were not checked yet."""
        for c in range(first >> CHUNK_BITS, ((stop - 1) >> CHUNK_BITS) + 1):
            if not self._sound[c]:
                self._check_chunk(c)

    def _check_batch(self, idx: np.ndarray) -> None:
        """Check the chunks of the samples at ``idx`` (positions below ``self._n``) not checked yet."""
        if self._unsound and len(idx):
            chunks = idx >> CHUNK_BITS
            if not self._sound_np[chunks].all():
                for c in np.unique(chunks).tolist():
                    if not self._sound[c]:
                        self._check_chunk(c)

    def _batch_spans(self, idx: np.ndarray) -> tuple:
        view = self._view
        if view is None:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        self._check_batch(idx)
        return view.starts[idx], view.ends[idx]

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
            self._writer = layout.SpansWriter(self.path, self._itemsize(), with_shapes=kinds.by_disk(self._kind).shapes)
            self._writer_pid = os.getpid()
        return self._writer

    def _itemsize(self) -> int:
        return 1

    def _new_encoder(self) -> Any:
        """The builder's encoder for this map's samples (see build.py)."""
        raise NotImplementedError

    def _extend(self, samples: List[Any], durable: bool, checksum: bool = False) -> None:
        """Append ``samples`` all or none: each is checked and encoded before any is written.

        ``checksum=True`` first gives checksums to a map that has none (see ``checksums.py``);
        a map that has them gets those of the new samples whatever ``checksum`` says."""
        if self._view is None:
            self._load()  # another process may have created the map meanwhile
        if self._view is None:  # the first samples create the map
            if samples:
                with checksums.recording(checksum):
                    build.write(self.path, self._new_encoder(), [samples], durable)
                self._load()
            return
        encoder = self._new_encoder()
        pieces = list(encoder.encode(samples, self._len))
        if not pieces:
            return
        if checksum and not checksums.has_checksums(self.path):
            checksums.add(self.path)
            if self._writer is not None:  # opened before the table existed: it would not keep it
                self._writer.close()
                self._writer = None
        writer = self._open_writer()
        with writer.locked():
            encoder.append(writer, pieces[0], durable, published=True)
        self._after_append(writer.count)

    def verify(self, verbose: bool = False) -> "VerifyReport":
        """Check every invariant of this map and, if it records checksums, every sample's
        stored bytes (see ``mmap_ninja.verify``). Reads only; ``report.ok`` says if it is sound."""
        from .verification import verify

        return verify(self.path, verbose)

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
        self._sound = bytearray()
        self._sound_np = np.empty(0, np.uint8)
        self._unsound = 0

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
