"""RecordsMmap: a dataset of several fields (an image, a label, a caption...) that commit together.

``r[i]`` is a dict such as ``{"image": HxWx3 uint8, "label": 3, "caption": "a dog"}``.

On disk
-------
A records map is a directory holding one ordinary map per field, in mmap_ninja 0.9.0's
layout, so that ``RaggedMmap(out_dir / "image")``, ``generic.open_existing(out_dir /
"caption")`` and mmap_ninja 0.9.0 open any field alone, and beside them one small file::

    records.json   {"count":                   N, "format": "mmap_ninja.records", "version": 1,
                    "fields": [{"name": "image", "kind": "ragged"}, ...],
                    "classes": ["cat", "dog"]}          (classes: optional)
    <field>/       the field's map: "ragged" (RaggedMmap), "strings" (StringsMmap) or
                   "numpy" (same-shape, np_ninja)
    .writer.lock   the lock that admits one writer at a time

``records.json`` is JSON that begins with ``{"count":``, a space and the count
right-aligned in 20 characters, so that committing records is one positioned write of
those 20 bytes, as a map's commit is one 8-byte write. (Readers take any JSON; a writer
that finds another layout rewrites the file whole.)

Commit
------
``count`` is the number of committed records, and it is written last. An append, holding
the dataset's writer lock:

1. checks every record against its field (kind, dtype, shape) before it writes anything;
2. cuts back any field that holds more than ``count`` samples (the tail of an append that
   was killed), with ``layout.roll_back``;
3. appends the new samples to each field in turn, each by the field's own commit protocol;
4. writes the new count into ``records.json`` (the commit: one 20-byte write in place).

Readers take ``count`` from ``records.json`` and never look past it, so a record is
visible only once every field holds it, and a writer killed at any instant leaves exactly
the records of the appends that finished. Fields are only ever appended to through the
dataset: a sample appended to a field alone lies past ``count`` and is cut by the next
writer.

Readers map each field up to ``count`` only, never the tail a killed append left: the next
writer cuts that tail (step 2), and a reader's mapping over cut pages would die of SIGBUS.

Modules: this one holds the map (``RecordsMmap``); ``records_schema`` the fields and what
their values become, ``records_file`` ``records.json``, ``records_fields`` the fields'
maps on disk, ``records_build`` the builds (through the one build engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import os

import numpy as np

from . import checksums, fs, kinds, layout, reads
from .errors import MapFormatError
from .indexing import positions
from .progress import batched, progress
from .records_build import build_records, build_records_from
from .records_fields import FieldAppender, close_field, create_field, field_length, open_field, read_spec
from .records_file import (
    RecordsInfo,
    _remove_stale_records_files,
    commit_count,
    is_records_dir,
    read_count,
    read_records_file,
    write_records_file,
)
from .records_schema import RECORDS_FILE, FieldError, FieldSpec, check_field_name, columns_of, convert_column, infer, parse_schema
from .skip import Skip

__all__ = ["RecordsMmap", "FieldSpec", "FieldError", "SkippedRecord"]

PathLike = Union[str, "os.PathLike[str]"]

SkippedRecord = Skip  # the name this sentinel had when only convert's image folders used it

_CHUNK = 256  # records read together when iterating
_FIELD_PIECE = 1024  # values checked and written together by add_field

__all__ = ["RecordsMmap", "RECORDS_FILE", "FieldError", "FieldSpec", "RecordsInfo", "SkippedRecord", "check_field_name",
           "is_records_dir", "read_records_file", "write_records_file", "build_records"]


class RecordsMmap:
    """A dataset of records (dicts of fields), one memory-mapped map per field, at ``out_dir``.

    ``r[i]`` is a dict of field values; ``r[slice | list | int array]`` a dict of batches
    (lists for ragged and strings fields, one ndarray for same-shape fields); ``r["label"]``
    the field's own map (after an interrupted append it may hold samples past ``len(r)``,
    until the next writer cuts them: read it below ``len(r)``). ``append``/``extend`` add
    records to every field, all or none, and commit them together (see the module docstring). ``mode="r+"`` opens the fields so that
    samples may be overwritten in place. Pickles by reference to ``out_dir``.
    """

    def __new__(cls, out_dir: Any = None, *args: Any, **kwargs: Any) -> "RecordsMmap":
        # a URL (s3://...) opens the read-only remote variant (remote.py)
        if isinstance(out_dir, str) and "://" in out_dir and not getattr(cls, "_remote", False):
            from . import remote

            if remote.is_url(out_dir):
                cls = remote.remote_records_class()
        return super().__new__(cls)

    def __init__(self, out_dir: PathLike, mode: str = "r"):
        self.path = Path(out_dir)
        self.mode = mode
        self._maps: Dict[str, Any] = {}
        self._appender: Optional[FieldAppender] = None  # the fields' writers, kept open between appends
        self._file_identity: Optional[Tuple[int, int]] = None  # records.json as the last append saw it
        if not self.path.exists():
            raise FileNotFoundError(f"there is no records map at {self.path}")
        self._load()

    # -- opening -------------------------------------------------------------------------

    def _load(self) -> None:
        info, maps = reads.read_one_version(self.path, self._open_version)
        # maps opened before are not closed: the user may still hold one (r["image"])
        self._info = info
        self._count = info.count
        self._kinds = dict(info.fields)
        self._maps = maps
        self._specs: Optional[Dict[str, FieldSpec]] = None  # read when first needed
        self._stale = False  # appended to since the same-shape fields were mapped

    def _open_version(self, files: reads.MapFiles) -> Tuple[RecordsInfo, Dict[str, Any]]:
        """``records.json`` and every field of one version of the map (``files``'s).

        The fields are opened by path, each of one version of its own; if the dataset was
        replaced meanwhile (a rebuild at its path), the handle has moved and the whole open
        is retried, so that fields and count never mix two versions.
        """
        info = read_records_file(files)
        maps: Dict[str, Any] = {}
        try:
            for name, kind in info.fields:
                field_dir = self.path / name
                if not files.is_dir(name):
                    raise MapFormatError(f"{field_dir} is missing: {self.path / RECORDS_FILE} lists field {name!r}")
                held = field_length(field_dir, kind)
                if held < info.count:
                    raise MapFormatError(f"field {name!r} ({field_dir}) holds {held} samples, but "
                                         f"{self.path / RECORDS_FILE} counts {info.count} records")
                maps[name] = open_field(field_dir, kind, self.mode, info.count)
            if files.moved():
                raise MapFormatError(f"{self.path} was replaced while it was opened")  # read_one_version retries
        except BaseException:
            for m in maps.values():
                close_field(m)
            raise
        return info, maps

    def refresh(self) -> int:
        """Pick up records appended (and fields added) since the map was opened; returns the length."""
        if read_records_file(self.path) != self._info:
            self._load()
        return self._count

    @property
    def fields(self) -> Dict[str, str]:
        """The fields in order, each with its kind: "ragged", "strings" or "numpy"."""
        return dict(self._kinds)

    @property
    def classes(self) -> Optional[List[str]]:
        """The class names of label ``0, 1, ...`` when the map was made from an image folder."""
        return None if self._info.classes is None else list(self._info.classes)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}: {k}" for n, k in self._kinds.items())
        return f"RecordsMmap({str(self.path)!r}, {self._count} records, fields {{{fields}}})"

    # -- reading -------------------------------------------------------------------------

    def _resolve(self, item: Any) -> Union[int, np.ndarray]:
        try:
            return positions(item, self._count)
        except IndexError:
            known = self._count
            if self.refresh() == known:
                raise
            return positions(item, self._count)

    def __getitem__(self, item: Any) -> Any:
        self._fresh()
        if isinstance(item, str):
            try:
                return self._maps[item]
            except KeyError:
                raise FieldError(f"the map has no field {item!r}; its fields are {list(self._kinds)}") from None
        where = self._resolve(item)
        if isinstance(where, int):
            return {n: m[where] for n, m in self._maps.items()}
        return self._batch(item, where)

    def _batch(self, item: Any, idx: np.ndarray) -> Dict[str, Any]:
        view = None
        if isinstance(item, slice):  # a same-shape field gives a view, not a gathered copy
            start, stop, step = item.indices(self._count)
            if step > 0:
                view = slice(start, max(start, stop), step)
        out = {}
        for n, m in self._maps.items():
            if isinstance(m, np.ndarray):  # a same-shape field's memmap: batches are arrays
                out[n] = m[view] if view is not None else m[idx]
            else:
                out[n] = m.get_batch(idx)
        return out

    def get_batch(self, indices: Any) -> Dict[str, Any]:
        """The records at ``indices`` as a dict of batches (see the class docstring)."""
        self._fresh()
        where = self._resolve(indices)
        if isinstance(where, int):
            where = np.array([where], np.int64)
        return self._batch(indices, where)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        self._fresh()
        count = self._count
        for first in range(0, count, _CHUNK):
            chunk = self._batch(slice(first, min(first + _CHUNK, count)), np.arange(first, min(first + _CHUNK, count)))
            for j in range(len(next(iter(chunk.values()))) if chunk else 0):
                yield {n: values[j] for n, values in chunk.items()}

    # -- writing -------------------------------------------------------------------------

    def append(self, record: Mapping, durable: bool = False, checksum: bool = False) -> None:
        """Add one record at the end (see ``extend``)."""
        self.extend([record], durable=durable, checksum=checksum)

    def extend(self, records: Iterable[Mapping], durable: bool = False, checksum: bool = False) -> None:
        """Add records at the end: to every field, all or none, committed together.

        A record with a missing or an extra field raises KeyError; a value its field cannot
        hold without changing it (a str in an array field, a float in an int field, another
        shape in a same-shape field) raises TypeError/ValueError. The message names the
        record and the field, and nothing is written. ``durable=True`` also fsyncs. Fields
        with checksums get those of the new values; ``checksum=True`` first gives checksums
        to the fields that have none.
        """
        records = list(records)
        if not records:
            return
        with layout.hold_writer_lock(self.path):
            fd = fs.open_file(self.path / RECORDS_FILE, os.O_RDWR)
            try:
                self._append(records, fd, durable, checksum)
            finally:
                fs.close(fd)

    def _append(self, records: List[Mapping], fd: int, durable: bool, checksum: bool = False) -> None:
        """The work of ``extend``, holding the dataset's writer lock, ``records.json`` open as ``fd``."""
        st = os.fstat(fd)
        identity = (st.st_ino, st.st_size)
        count = read_count(fd)
        if count is None or identity != self._file_identity or count != self._count:
            self._load()  # appended by another writer, fields added, or the first append of this object
            self._close_appender()
            self._file_identity = identity
        count = self._count
        names = list(self._kinds)
        if self._specs is None:
            self._specs = {n: read_spec(self.path / n, self._kinds[n]) for n in names}
        columns = columns_of(records, names, count)
        converted = {n: convert_column(n, self._specs[n], columns[n], count) for n in names}  # checked once
        del columns
        if checksum:
            self._add_checksums()
        appender = self._field_appender()
        info = self._info._replace(count=count + len(records))
        with appender.locked(count, self.path / RECORDS_FILE):  # cuts a killed append's tail first
            try:
                appender.append(converted, durable)
                commit_count(self.path, info, durable, fd)
            except BaseException:
                try:
                    appender.roll_back(count)  # so that each field alone is as it was too
                except Exception:  # the next writer repairs what is left
                    pass
                raise
        self._info, self._count = info, info.count
        for n in names:  # ragged and strings maps see their new samples now, memmaps when next read
            if kinds.get(self._kinds[n]).field.grows_in_place:
                self._maps[n]._limit = info.count
        self._stale = True

    def _add_checksums(self) -> None:
        """Give every field without checksums a table of them (under the dataset's lock)."""
        for n in self._kinds:
            if not checksums.has_checksums(self.path / n):
                checksums.add(self.path / n)
                self._close_appender()  # its writers were opened before the table existed: they would not keep it
                writer = getattr(self._maps.get(n), "_writer", None)
                if writer is not None:
                    writer.close()
                    self._maps[n]._writer = None

    def verify(self, verbose: bool = False) -> "Any":
        """Check every field's invariants and, where recorded, every value's checksum
        (see ``mmap_ninja.verify``). Reads only; ``report.ok`` says if it is sound."""
        from .verification import verify

        return verify(self.path, verbose)

    def _field_appender(self) -> FieldAppender:
        if self._appender is None or self._appender.pid != os.getpid():
            _remove_stale_records_files(self.path)
            self._appender = FieldAppender(self.path, list(self._kinds), self._specs)
        return self._appender

    def _close_appender(self) -> None:
        if self._appender is not None and self._appender.pid == os.getpid():
            self._appender.close()
        self._appender = None

    def _fresh(self) -> None:
        """Remap the same-shape fields after appends (a memmap does not grow)."""
        if self._stale:
            self._stale = False
            for n, kind in self._kinds.items():
                if not kinds.get(kind).field.grows_in_place:
                    self._maps[n] = open_field(self.path / n, kind, self.mode, self._count)

    def add_field(self, name: str, values: Iterable[Any], kind: Optional[str] = None, dtype: Any = None, durable: bool = False) -> None:
        """Add a field holding ``values`` (exactly one per record), committed atomically.

        ``kind`` ("ragged", "strings", "numpy") and ``dtype`` fix what the field holds;
        otherwise its first 1,024 values decide, as the first batch does for a new map.
        """
        values = list(values)
        with layout.hold_writer_lock(self.path):
            self.refresh()
            if name in self._kinds:
                raise ValueError(f"the map already has a field {name!r}")
            check_field_name(name, list(self._kinds) + [name])
            if len(values) != self._count:
                raise ValueError(f"add_field needs one value per record: the map has {self._count} records, got {len(values)} values")
            if not values:
                raise ValueError("the map has no records, so the new field's values cannot say what it holds")
            hint = None if kind is None else parse_schema({name: (kind, dtype)})[name]
            spec = infer(name, values[:_FIELD_PIECE], 0, hint)
            with checksums.recording(any(checksums.has_checksums(self.path / n) for n in self._kinds)), \
                    layout.building(self.path / name, durable) as tmp:
                fs.rmtree(tmp)  # create_field lays the map out in a new directory
                create_field(tmp, spec)
                writer = FieldAppender(tmp.parent, [tmp.name], {tmp.name: spec})
                try:
                    for first in range(0, len(values), _FIELD_PIECE):
                        column = convert_column(name, spec, values[first:first + _FIELD_PIECE], first)
                        with writer.locked(first, tmp):
                            writer.append({tmp.name: column}, False)  # building syncs it all before the commit
                finally:
                    writer.close()
            info = self._info._replace(fields=self._info.fields + ((name, spec.kind),))
            write_records_file(self.path, info, durable)  # the commit: until now the field is not listed
            self._load()

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_generator(
        cls,
        out_dir: PathLike,
        records: Iterable[Mapping],
        batch_size: int,
        verbose: bool = False,
        schema: Optional[Mapping] = None,
        durable: bool = False,
        total: Optional[int] = None,
        classes: Optional[Sequence[str]] = None,
        checksum: bool = False,
    ) -> "RecordsMmap":
        """Write records (dicts of fields) from an iterable, ``batch_size`` at a time, as a new map.

        The first batch decides each field's kind: str values give a strings field; values
        of one shape across the batch (Python numbers count as 0-d) a same-shape field; any
        other arrays a ragged field. ``schema`` (``{"label": "numpy", "boxes": ("ragged",
        "float32")}``) fixes kinds and dtypes instead. Memory holds one batch. The map
        appears at ``out_dir`` only once the iterable is exhausted, replacing a records map
        there. ``classes`` are stored as the names of labels 0, 1, ... ``checksum=True``
        records a CRC-32 of every value of every field, which ``verify()`` checks.
        """
        batches = batched(progress(records, verbose, total, desc="records"), batch_size)
        with checksums.recording(checksum):
            build_records_from(out_dir, batches, schema, durable, classes)
        return cls(out_dir)

    @classmethod
    def from_indexable(
        cls,
        out_dir: PathLike,
        indexable: Any,
        batch_size: int,
        n_jobs: Optional[int] = None,
        verbose: bool = False,
        schema: Optional[Mapping] = None,
        durable: bool = False,
        classes: Optional[Sequence[str]] = None,
        checksum: bool = False,
    ) -> "RecordsMmap":
        """Write ``indexable[0], indexable[1], ...`` (records) as a new map (see ``from_generator``).

        ``n_jobs=k`` builds it by parts in ``k`` worker processes (``indexable`` must
        pickle, by cloudpickle for a local class or a closure), each writing the records of
        a contiguous index range; the parts are merged field by field as they come. The
        result is the map a serial build writes. An ``indexable`` without ``__len__`` ends
        at its first IndexError. A record returned as ``mmap_ninja.Skip`` is left out.
        """
        with checksums.recording(checksum):
            build_records(out_dir, indexable, batch_size, n_jobs, verbose, schema, durable, classes)
        return cls(out_dir)

    # -- the rest --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the fields' files; the object cannot be used afterwards."""
        self._close_appender()
        for m in self._maps.values():
            close_field(m)
        self._maps = {}
        self._count = 0

    def __enter__(self) -> "RecordsMmap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        return (RecordsMmap, (str(self.path), self.mode))
