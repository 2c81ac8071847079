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

This module holds the file I/O of ``records.json``; the fields' files are ``layout``'s.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import checksums, fs, layout, parts
from . import numpy as np_ninja
from .errors import MapFormatError
from .indexing import positions
from .progress import batched, progress, progress_bar
from .ragged import RaggedMmap
from .samples import STORABLE_KINDS, as_array, cast_losslessly, common_dtype
from .shapes import LENGTHS, NESTED
from .string import StringsMmap

__all__ = ["RecordsMmap", "FieldSpec", "FieldError", "SkippedRecord"]

PathLike = Union[str, "os.PathLike[str]"]

RECORDS_FILE = "records.json"
FORMAT = "mmap_ninja.records"
VERSION = 1
KINDS = ("ragged", "strings", "numpy")
_DISK_KIND = {"ragged": "ragged", "strings": "string", "numpy": "numpy"}
_CHUNK = 256  # records read together when iterating
_FIELD_PIECE = 1024  # values checked and written together by add_field

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_BAD_CHARACTERS = set('/\\:*?"<>|')


class FieldError(KeyError):
    """A record lacks one of the map's fields, or has one the map does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class SkippedRecord(NamedTuple):
    """Returned by a dataset in place of a record to leave out (used by ``convert imagefolder``)."""

    reason: str


class FieldSpec(NamedTuple):
    """What a field holds: its kind, dtype and layout (decided by the first batch, or a schema)."""

    kind: str  # "ragged", "strings" or "numpy"
    dtype: Optional[str] = None  # numpy's dtype name; None for strings
    row_shape: Tuple[int, ...] = ()  # numpy: the shape of every sample
    shape_width: int = 1  # ragged: the shape layout to start with (1: lengths, 0: nested); appends upgrade it


# --- names, schemas and kinds ------------------------------------------------------------------


def check_field_name(name: Any, others: Iterable[str] = ()) -> str:
    """``name`` if it can be a field (a directory on any platform), else a ValueError/TypeError."""
    if not isinstance(name, str):
        raise TypeError(f"field names are str, got {type(name).__name__} {name!r}")
    why = None
    if not name:
        why = "it is empty"
    elif name.startswith("."):
        why = "it starts with '.' (names starting with '.' are the library's own)"
    elif any(c in _BAD_CHARACTERS or ord(c) < 32 for c in name):
        why = "it holds a character that cannot be in a directory name (/ \\ : * ? \" < > | or a control character)"
    elif name.endswith((" ", ".")):
        why = "it ends with a space or a '.'"
    elif len(name.encode("utf-8")) > 255:
        why = "it is longer than 255 bytes"
    elif name.split(".")[0].upper() in _WINDOWS_RESERVED:
        why = "it is a reserved device name on Windows"
    elif name == RECORDS_FILE:
        why = f"{RECORDS_FILE} is the file that lists the fields"
    if why:
        raise ValueError(f"{name!r} cannot be the name of a field: {why}")
    clash = next((o for o in others if o != name and o.casefold() == name.casefold()), None)
    if clash is not None:
        raise ValueError(f"fields {clash!r} and {name!r} differ only in case, so they cannot be directories side by side everywhere")
    return name


def _kind_name(kind: Any, field: str) -> str:
    if kind in ("string", "str"):
        return "strings"
    if kind in ("same-shape", "array"):
        return "numpy"
    if kind not in KINDS:
        raise ValueError(f"field {field!r}: unknown kind {kind!r}; use 'ragged', 'strings' or 'numpy'")
    return kind


def _parse_schema(schema: Optional[Mapping]) -> Dict[str, Tuple[str, Optional[np.dtype]]]:
    """``{"label": "numpy", "boxes": ("ragged", "float32"), "x": {"kind": ..., "dtype": ...}}``
    as ``{name: (kind, dtype or None)}``."""
    if schema is None:
        return {}
    if not isinstance(schema, Mapping):
        raise TypeError(f"schema is a dict of field name to kind, got {type(schema).__name__}")
    out = {}
    for name, entry in schema.items():
        check_field_name(name, schema.keys())
        dtype = None
        if isinstance(entry, Mapping):
            unknown = set(entry) - {"kind", "dtype"}
            if unknown or "kind" not in entry:
                raise ValueError(f"schema of field {name!r}: expected keys 'kind' and optionally 'dtype', got {sorted(entry)}")
            kind, dtype = entry["kind"], entry.get("dtype")
        elif isinstance(entry, (tuple, list)):
            if len(entry) != 2:
                raise ValueError(f"schema of field {name!r}: expected (kind, dtype), got {entry!r}")
            kind, dtype = entry
        else:
            kind = entry
        kind = _kind_name(kind, name)
        if dtype is not None:
            if kind == "strings":
                raise ValueError(f"schema of field {name!r}: a strings field has no dtype")
            try:
                dtype = np.dtype(dtype)
            except TypeError:
                raise TypeError(f"schema of field {name!r}: {dtype!r} is not a numpy dtype") from None
            if dtype.kind not in STORABLE_KINDS:
                raise TypeError(f"schema of field {name!r}: a map cannot store dtype {dtype}")
        out[name] = (kind, dtype)
    return out


def _named(error: Exception, record: int, field: str) -> Exception:
    """``error`` of the same type, its message naming the record and the field."""
    message = str(error.args[0]) if error.args else str(error)
    prefix = f"sample {record} "
    if message.startswith(prefix):  # the library's own sample errors: say "its value" instead
        message = "its value " + message[len(prefix):]
    try:
        named = type(error)(f"record {record}, field {field!r}: {message}")
    except Exception:
        return error
    named.__cause__ = error
    return named


def _arrays(field: str, values: Sequence[Any], first: int) -> List[np.ndarray]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            raise TypeError(f"record {first + i}, field {field!r}: a str in a field of arrays (the field's first batch held numbers)")
        try:
            out.append(v if type(v) is np.ndarray else as_array(v, first + i))
        except (TypeError, ValueError) as e:
            raise _named(e, first + i, field) from None
    return out


def _infer(field: str, values: Sequence[Any], first: int, hint: Optional[Tuple[str, Optional[np.dtype]]]) -> FieldSpec:
    """The spec of a field from its values in the first batch (and the schema's ``hint``)."""
    kind, dtype = hint if hint is not None else (None, None)
    if kind is None:
        strings = [isinstance(v, str) for v in values]
        if all(strings):
            kind = "strings"
        elif any(strings):
            i = strings.index(not strings[0])
            what = "a str" if strings[i] else type(values[i]).__name__
            raise TypeError(f"record {first + i}, field {field!r} is {what} but record {first} holds "
                            f"{'a str' if strings[0] else 'numbers'}; a field holds strings or arrays, not both")
    if kind == "strings":
        _strings(field, values, first)
        return FieldSpec("strings")
    arrays = _arrays(field, values, first)
    if dtype is None:
        dtype = common_dtype(arrays)
        if dtype.kind not in STORABLE_KINDS:
            raise TypeError(f"field {field!r}: a map cannot store dtype {dtype}")
    if kind is None:
        kind = "numpy" if len({a.shape for a in arrays}) == 1 else "ragged"
    if kind == "numpy":
        return FieldSpec("numpy", np.dtype(dtype).name, tuple(arrays[0].shape))
    return FieldSpec("ragged", np.dtype(dtype).name, (), 1 if all(a.ndim <= 1 for a in arrays) else 0)


def _strings(field: str, values: Sequence[Any], first: int) -> List[str]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"record {first + i}, field {field!r} is {type(v).__name__}, not str; the field holds strings")
    return list(values)


def convert_column(field: str, spec: FieldSpec, values: Sequence[Any], first: int) -> Any:
    """The values of one field for records ``first, first + 1, ...`` as the field stores them,
    or a TypeError/ValueError naming the record and the field. Writes nothing."""
    if spec.kind == "strings":
        return _strings(field, values, first)
    dtype = np.dtype(spec.dtype)
    arrays = _arrays(field, values, first)
    out = []
    for i, a in enumerate(arrays):
        if spec.kind == "numpy" and a.shape != spec.row_shape:
            raise ValueError(f"record {first + i}, field {field!r} has shape {a.shape}, but the field holds samples of "
                             f"shape {spec.row_shape} (give it as 'ragged' in the schema to store varying shapes)")
        try:
            out.append(a if a.dtype == dtype else cast_losslessly(a, dtype, first + i))
        except (TypeError, ValueError) as e:
            raise _named(e, first + i, field) from None
    if spec.kind == "numpy":
        return np.stack(out) if out else np.empty((0, *spec.row_shape), dtype)
    return out


def _columns(batch: Sequence[Any], names: Sequence[str], first: int) -> Dict[str, List[Any]]:
    """A batch of records as one list of values per field, or an error naming the record."""
    wanted = set(names)
    for j, record in enumerate(batch):
        if not isinstance(record, Mapping):
            raise TypeError(f"record {first + j} is {type(record).__name__}, not a dict of fields")
        if len(record) != len(names) or not wanted.issuperset(record.keys()):
            missing = [n for n in names if n not in record]
            if missing:
                raise FieldError(f"record {first + j} has no field {missing[0]!r} (the map's fields are {list(names)})")
            extra = next(k for k in record if k not in wanted)
            raise FieldError(f"record {first + j} has a field {extra!r} that the map does not have (its fields are {list(names)})")
    return {n: [record[n] for record in batch] for n in names}


# --- the records file ----------------------------------------------------------------------------


class RecordsInfo(NamedTuple):
    """What ``records.json`` says: the committed record count, the fields in order, the classes."""

    count: int
    fields: Tuple[Tuple[str, str], ...]  # (name, kind)
    classes: Optional[Tuple[str, ...]] = None


def is_records_dir(path: PathLike) -> bool:
    """Whether ``path`` is a records map (a directory with ``records.json``)."""
    return (Path(path) / RECORDS_FILE).is_file()


def read_records_file(path: PathLike) -> RecordsInfo:
    """Read and check ``records.json`` of the records map at ``path``."""
    file = Path(path) / RECORDS_FILE
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise MapFormatError(f"{path} holds no records map: {RECORDS_FILE} is missing") from None
    except IsADirectoryError:
        raise MapFormatError(f"{file} is a directory, not a file") from None
    return parse_records_file(raw, file)


def parse_records_file(raw: bytes, file: Any) -> RecordsInfo:
    """Check and read the content of a ``records.json`` (``file`` names it in errors; a
    remote map reads the bytes from object storage)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MapFormatError(f"{file} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MapFormatError(f"{file} does not describe a records map (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise MapFormatError(f"{file} has version {doc.get('version')!r}; this library reads version {VERSION}")
    count, fields, classes = doc.get("count"), doc.get("fields"), doc.get("classes")
    if type(count) is not int or count < 0:
        raise MapFormatError(f"{file}: count is {count!r}, not a record count")
    if not isinstance(fields, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str) and f.get("kind") in KINDS for f in fields):
        raise MapFormatError(f"{file}: fields should be a list of {{\"name\": str, \"kind\": one of {KINDS}}}")
    names = [f["name"] for f in fields]
    for name in names:
        try:
            check_field_name(name, names)
        except (TypeError, ValueError) as e:
            raise MapFormatError(f"{file}: {e}") from None
    if len(set(names)) != len(names):
        raise MapFormatError(f"{file} names a field twice")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise MapFormatError(f"{file}: classes should be a list of str")
    return RecordsInfo(count, tuple((f["name"], f["kind"]) for f in fields), None if classes is None else tuple(classes))


_COUNT_AT = b'{"count": '  # what records.json begins with; the count follows in 20 characters
_COUNT_WIDTH = 20


def write_records_file(path: Path, info: RecordsInfo, durable: bool = False) -> None:
    """Replace ``records.json`` in one step (write a new file, rename it over the old one)."""
    doc: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "fields": [{"name": n, "kind": k} for n, k in info.fields]}
    if info.classes is not None:
        doc["classes"] = list(info.classes)
    text = _COUNT_AT + str(info.count).rjust(_COUNT_WIDTH).encode("ascii") + b"," + json.dumps(doc, indent=1)[1:].encode("utf-8")
    tmp = path / f".{RECORDS_FILE}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fs.write_file(tmp, text)
        if durable:
            fs.sync_path(tmp)
        fs.replace(tmp, path / RECORDS_FILE)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fs.sync_path(path)


def commit_count(path: Path, info: RecordsInfo, durable: bool = False) -> None:
    """Publish ``info.count`` records: one write of the count's 20 bytes in ``records.json``."""
    fd = fs.open_file(path / RECORDS_FILE, os.O_RDWR)
    try:
        head = fs.pread(fd, len(_COUNT_AT) + _COUNT_WIDTH + 1, 0)
        digits = head[len(_COUNT_AT):-1]
        if head.startswith(_COUNT_AT) and head.endswith(b",") and digits.strip().isdigit() and len(str(info.count)) <= _COUNT_WIDTH:
            fs.pwrite(fd, str(info.count).rjust(_COUNT_WIDTH).encode("ascii"), len(_COUNT_AT))  # the commit
            if durable:
                fs.fsync(fd)
            return
    finally:
        fs.close(fd)
    write_records_file(path, info, durable)  # laid out otherwise (edited by hand): rewrite it whole


def _remove_stale_records_files(path: Path) -> None:
    """Remove new records files that writers killed before their rename left behind."""
    for leftover in path.glob(f".{RECORDS_FILE}.tmp-*"):
        try:
            pid = int(leftover.name.split(".tmp-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if not fs.process_alive(pid):
            try:
                leftover.unlink()
            except OSError:
                pass


# --- fields on disk --------------------------------------------------------------------------------


def field_length(field_dir: Path, kind: str) -> int:
    """The samples a field's map has committed on its own (may exceed the record count)."""
    layout.expect_kind(field_dir, _DISK_KIND[kind])
    if kind == "numpy":
        return layout.read_shape(field_dir / layout.SHAPE)[0]
    return layout.committed_count(field_dir)


def read_spec(field_dir: Path, kind: str) -> FieldSpec:
    """The spec of an existing field, from its files."""
    if kind == "strings":
        layout.expect_kind(field_dir, "string")
        return FieldSpec("strings")
    if kind == "numpy":
        header = layout.read_array_header(field_dir)
        return FieldSpec("numpy", header.dtype.name, tuple(header.shape[1:]))
    header = layout.read_array_header(field_dir, kind="ragged")
    return FieldSpec("ragged", header.dtype.name, (), layout.read_shape_layout(field_dir).width)


def create_field(field_dir: Path, spec: FieldSpec) -> None:
    """Lay out an empty map for a field (the directory must not exist)."""
    fs.mkdir(field_dir)
    if spec.kind == "strings":
        layout.create_spans(field_dir, "string", np.dtype(np.uint8))
    elif spec.kind == "numpy":
        layout.create_array(field_dir, np.dtype(spec.dtype), spec.row_shape)
    else:
        layout.create_spans(field_dir, "ragged", np.dtype(spec.dtype), LENGTHS if spec.shape_width == 1 else NESTED)


def _open_field(field_dir: Path, kind: str, mode: str) -> Any:
    if kind == "ragged":
        return RaggedMmap(field_dir, mode=mode)
    if kind == "strings":
        return StringsMmap(field_dir, mode=mode)
    return np_ninja.open_existing(field_dir, mode=mode)


def _close_field(field: Any) -> None:
    if isinstance(field, (RaggedMmap, StringsMmap)):
        field.close()


def _append_column(field_dir: Path, field: Any, kind: str, column: Any, durable: bool) -> None:
    """Append converted values to one field, by the field's own commit protocol."""
    if kind == "numpy":
        np_ninja.extend_dir(field_dir, column, durable)
    else:
        field.extend(column, durable=durable)


class _FieldWriter:
    """Appends converted batches to the fields of a records map being built or extended."""

    def __init__(self, path: Path, names: Sequence[str], specs: Dict[str, FieldSpec], maps: Optional[Dict[str, Any]] = None):
        self.path = path
        self.names = list(names)
        self.specs = specs
        self._own = maps is None  # maps opened here are closed here
        if maps is None:
            maps = {n: _open_field(path / n, specs[n].kind, "r") for n in names if specs[n].kind != "numpy"}
        self.maps = maps

    def append(self, columns: Dict[str, Any], durable: bool) -> None:
        for n in self.names:
            _append_column(self.path / n, self.maps.get(n), self.specs[n].kind, columns[n], durable)

    def close(self) -> None:
        if self._own:
            for m in self.maps.values():
                _close_field(m)


def _write_records(path: Path, batches: Iterable[Sequence[Any]], hints: Dict[str, Tuple[str, Optional[np.dtype]]],
                   layout_of: Optional[Tuple[Tuple[str, FieldSpec], ...]], durable: bool, classes: Optional[Sequence[str]],
                   first: int = 0) -> int:
    """Write a records map of ``batches`` into the existing, empty directory ``path``.

    ``layout_of`` fixes the fields and their specs (parts of a parallel build); otherwise the
    first batch decides them. Returns the number of records written.
    """
    writer = None
    names: List[str] = [n for n, _ in layout_of] if layout_of else []
    specs: Dict[str, FieldSpec] = dict(layout_of) if layout_of else {}
    position = first
    try:
        for batch in batches:
            if writer is None:
                if not specs:
                    names, specs = _decide_fields(batch, hints, position)
                for n in names:
                    create_field(path / n, specs[n])
                writer = _FieldWriter(path, names, specs)
            columns = _columns(batch, names, position)
            converted = {n: convert_column(n, specs[n], columns[n], position) for n in names}
            del columns
            writer.append(converted, durable)
            position += len(batch)
            del batch, converted  # hold one batch, not two, while the next is read
        if writer is None:
            if not specs:
                raise ValueError("no records were given; a records map needs one to know its fields")
            for n in names:
                create_field(path / n, specs[n])
    finally:
        if writer is not None:
            writer.close()
    write_records_file(path, RecordsInfo(position - first, tuple((n, specs[n].kind) for n in names),
                                         None if classes is None else tuple(classes)), durable)
    return position - first


def _decide_fields(batch: Sequence[Any], hints: Dict[str, Tuple[str, Optional[np.dtype]]], first: int) -> Tuple[List[str], Dict[str, FieldSpec]]:
    """The fields (in the first record's order) and their specs, from the first batch."""
    if not isinstance(batch[0], Mapping):
        raise TypeError(f"record {first} is {type(batch[0]).__name__}, not a dict of fields")
    names = list(batch[0].keys())
    if not names:
        raise ValueError(f"record {first} has no fields")
    for n in names:
        check_field_name(n, names)
    for n in hints:
        if n not in batch[0]:
            raise FieldError(f"record {first} has no field {n!r}, which the schema names")
    columns = _columns(batch, names, first)
    return names, {n: _infer(n, columns[n], first, hints.get(n)) for n in names}


# --- the map ---------------------------------------------------------------------------------------


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
        if not self.path.exists():
            raise FileNotFoundError(f"there is no records map at {self.path}")
        self._load()

    # -- opening -------------------------------------------------------------------------

    def _load(self) -> None:
        info = read_records_file(self.path)
        maps = {}
        try:
            for name, kind in info.fields:
                field_dir = self.path / name
                if not field_dir.is_dir():
                    raise MapFormatError(f"{field_dir} is missing: {self.path / RECORDS_FILE} lists field {name!r}")
                m = _open_field(field_dir, kind, self.mode)
                maps[name] = m
                if len(m) < info.count:
                    raise MapFormatError(f"field {name!r} ({field_dir}) holds {len(m)} samples, but "
                                         f"{self.path / RECORDS_FILE} counts {info.count} records")
        except BaseException:
            for m in maps.values():
                _close_field(m)
            raise
        # maps opened before are not closed: the user may still hold one (r["image"])
        self._info = info
        self._count = info.count
        self._kinds = dict(info.fields)
        self._maps = maps
        self._specs: Optional[Dict[str, FieldSpec]] = None  # read when first needed

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
            if self._kinds[n] == "numpy":
                out[n] = m[view] if view is not None else m[idx]
            else:
                out[n] = m.get_batch(idx)
        return out

    def get_batch(self, indices: Any) -> Dict[str, Any]:
        """The records at ``indices`` as a dict of batches (see the class docstring)."""
        where = self._resolve(indices)
        if isinstance(where, int):
            where = np.array([where], np.int64)
        return self._batch(indices, where)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
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
            self.refresh()
            count = self._count
            names = list(self._kinds)
            if self._specs is None:
                self._specs = {n: read_spec(self.path / n, self._kinds[n]) for n in names}
            specs = self._specs
            columns = _columns(records, names, count)
            converted = {n: convert_column(n, specs[n], columns[n], count) for n in names}
            del columns
            if checksum:
                self._add_checksums()
            self._repair(count)
            info = self._info._replace(count=count + len(records))
            try:
                _FieldWriter(self.path, names, specs, self._maps).append(converted, durable)
                commit_count(self.path, info, durable)
            except BaseException:
                self._undo(count)  # so that each field alone is as it was too
                raise
            self._info, self._count = info, info.count
            for n in names:  # ragged and strings maps see their new samples; memmaps are reopened
                if self._kinds[n] == "numpy":
                    self._maps[n] = _open_field(self.path / n, "numpy", self.mode)

    def _add_checksums(self) -> None:
        """Give every field without checksums a table of them (under the dataset's lock)."""
        for n in self._kinds:
            if not checksums.has_checksums(self.path / n):
                checksums.add(self.path / n)
                writer = getattr(self._maps.get(n), "_writer", None)
                if writer is not None:  # opened before the table existed: it would not keep it
                    writer.close()
                    self._maps[n]._writer = None

    def verify(self, verbose: bool = False) -> "Any":
        """Check every field's invariants and, where recorded, every value's checksum
        (see ``mmap_ninja.verify``). Reads only; ``report.ok`` says if it is sound."""
        from .verification import verify

        return verify(self.path, verbose)

    def _repair(self, count: int) -> None:
        """Cut every field that holds more than ``count`` samples (an interrupted append's tail)."""
        _remove_stale_records_files(self.path)
        cut = False
        for n, kind in self._kinds.items():
            held = field_length(self.path / n, kind)
            if held < count:
                raise MapFormatError(f"field {n!r} holds {held} samples, but {self.path / RECORDS_FILE} counts {count} records")
            if held > count:
                layout.roll_back(self.path / n, count)
                cut = True
        if cut:  # the maps open here may have mapped the tail that is gone now
            self._load()

    def _undo(self, count: int) -> None:
        for n in self._kinds:
            try:
                layout.roll_back(self.path / n, count)
            except Exception:  # the next writer repairs what is left
                pass
        try:
            self._load()
        except Exception:
            pass

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
            hint = None if kind is None else _parse_schema({name: (kind, dtype)})[name]
            spec = _infer(name, values[:_FIELD_PIECE], 0, hint)
            with checksums.recording(any(checksums.has_checksums(self.path / n) for n in self._kinds)), \
                    layout.building(self.path / name, durable) as tmp:
                fs.rmtree(tmp)  # create_field lays the map out in a new directory
                create_field(tmp, spec)
                writer = _FieldWriter(tmp.parent, [tmp.name], {tmp.name: spec})
                try:
                    for first in range(0, len(values), _FIELD_PIECE):
                        column = convert_column(name, spec, values[first:first + _FIELD_PIECE], first)
                        writer.append({tmp.name: column}, durable)
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
        hints = _parse_schema(schema)
        with checksums.recording(checksum), layout.building(Path(out_dir), durable, is_records_dir, "a dataset of maps") as tmp:
            _write_records(tmp, batches, hints, None, durable, classes)
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

        ``n_jobs=k`` builds it by parts in ``k`` worker processes (spawn-safe: ``indexable``
        must pickle), each writing the records of a contiguous index range; the parts are
        then merged field by field. The result is the map a serial build writes. An
        ``indexable`` without ``__len__`` is read serially until its first IndexError.
        """
        with checksums.recording(checksum):
            build_records(out_dir, indexable, batch_size, n_jobs, verbose, schema, durable, classes)
        return cls(out_dir)

    # -- the rest --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the fields' files; the object cannot be used afterwards."""
        for m in self._maps.values():
            _close_field(m)
        self._maps = {}
        self._count = 0

    def __enter__(self) -> "RecordsMmap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        return (RecordsMmap, (str(self.path), self.mode))


# --- building from an indexable, serially or by parts -----------------------------------------------


def _records_of(indexable: Any, start: int, stop: Optional[int], written: List[int],
                skipped: Optional[List[Tuple[int, str]]] = None) -> Iterator[Any]:
    """``indexable[start:stop]`` one by one, until its first IndexError; errors name the index.

    With ``skipped``, a ``SkippedRecord`` is left out and its (index, reason) noted there.
    """
    getter = indexable if callable(indexable) and not hasattr(indexable, "__getitem__") else indexable.__getitem__
    i = start
    while stop is None or i < stop:
        try:
            record = getter(i)
        except IndexError:
            return
        except Exception as e:
            raise parts.name_sample(e, i) from e
        written[0] = i + 1
        if skipped is not None and isinstance(record, SkippedRecord):
            skipped.append((i, record.reason))
        else:
            yield record
        i += 1


def _count_of(indexable: Any) -> Optional[int]:
    try:
        return len(indexable)
    except TypeError:
        return None


def build_part(part_dir: PathLike, indexable: Any, start: int, stop: int, batch_size: int,
               layout_of: Tuple[Tuple[str, FieldSpec], ...], skips: bool = False) -> Tuple[parts.Part, List[Tuple[int, str]]]:
    """Build ``indexable[start:stop]`` as a records map at ``part_dir`` with the given fields.

    Returns the part and, with ``skips``, the (index, reason) of records the dataset left out.
    """
    part_dir = Path(part_dir)
    fs.mkdir(part_dir)
    written = [start]
    skipped: List[Tuple[int, str]] = []
    records = _records_of(indexable, start, stop, written, skipped if skips else None)
    _write_records(part_dir, batched(records, batch_size), {}, layout_of, False, None, start)
    return parts.Part(str(part_dir), start, written[0]), skipped


def build_records(out_dir: PathLike, indexable: Any, batch_size: int, n_jobs: Optional[int] = None, verbose: bool = False,
                  schema: Optional[Mapping] = None, durable: bool = False, classes: Optional[Sequence[str]] = None,
                  skipped: Optional[List[Tuple[int, str]]] = None) -> None:
    """The work of ``RecordsMmap.from_indexable``. With a ``skipped`` list, the dataset may
    return ``SkippedRecord`` to leave a record out, and its (index, reason) is added there."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    from .parallel import resolve_jobs

    n_jobs = resolve_jobs(n_jobs)
    hints = _parse_schema(schema)
    count = _count_of(indexable)
    if n_jobs == 1 or count is None or count <= batch_size:
        written = [0]
        records = progress(_records_of(indexable, 0, count, written, skipped), verbose, count, desc="records")
        with layout.building(Path(out_dir), durable, is_records_dir, "a dataset of maps") as tmp:
            _write_records(tmp, batched(records, batch_size), hints, None, durable, classes)
        return
    # the first records decide the fields, for every part alike (as they do for a serial build)
    first: List[Any] = []
    written = [0]
    probe = None if skipped is None else []  # the parts note these skips again
    for record in _records_of(indexable, 0, count, written, probe):
        first.append(record)
        if len(first) == batch_size:
            break
    if not first:
        if skipped is not None:
            skipped.extend(probe)
        raise ValueError("no records were given; a records map needs one to know its fields")
    names, specs = _decide_fields(first, hints, 0)
    layout_of = tuple((n, specs[n]) for n in names)
    del first
    ranges = parts.part_ranges(count, batch_size, n_jobs)
    work = parts.parts_dir(out_dir)
    try:
        built = _build_parts(work, indexable, ranges, batch_size, layout_of, skipped is not None, n_jobs, verbose)
        kept = []
        for (part, part_skipped), (_, stop) in zip(built, ranges):
            kept.append(part)
            if skipped is not None:
                skipped.extend(part_skipped)
            if part.stop < stop:  # an indexable shorter than its len ends here, as a serial build would
                break
        non_empty = [p.path for p in kept if read_records_file(p.path).count] or [kept[0].path]
        merge_parts(out_dir, non_empty, verbose, durable, classes)
    finally:
        parts.remove(work)


def _build_parts(work: Path, indexable: Any, ranges: List[Tuple[int, int]], batch_size: int,
                 layout_of: Tuple[Tuple[str, FieldSpec], ...], skips: bool, n_jobs: int, verbose: bool) -> List[Any]:
    from concurrent.futures import ProcessPoolExecutor, as_completed  # only when used, as parallel.py does

    from .parallel import worker_context

    pool = ProcessPoolExecutor(max_workers=min(n_jobs, len(ranges)), mp_context=worker_context())
    try:
        futures = [pool.submit(build_part, str(work / f"part-{k:05d}"), indexable, start, stop, batch_size, layout_of, skips)
                   for k, (start, stop) in enumerate(ranges)]
        with progress_bar(verbose, ranges[-1][1], desc="records") as bar:
            for future in as_completed(futures):
                part, _ = future.result()  # the first failure stops the build
                bar.update(part.stop - part.start)
        return [f.result() for f in futures]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def merge_parts(out_dir: PathLike, part_dirs: Sequence[PathLike], verbose: bool = False, durable: bool = False,
                classes: Optional[Sequence[str]] = None) -> None:
    """Publish records parts (records maps with the same fields), in order, as one map at
    ``out_dir``: each field merged with ``parts.merge``, the records file written last, the
    whole directory published in one step."""
    infos = [read_records_file(p) for p in part_dirs]
    if not infos:
        raise ValueError("no parts to merge")
    fields = infos[0].fields
    for p, info in zip(part_dirs, infos):
        if info.fields != fields:
            raise MapFormatError(f"part {p} has fields {list(info.fields)}, the first part {list(fields)}")
    with layout.building(Path(out_dir), durable, is_records_dir, "a dataset of maps") as tmp:
        for name, _ in fields:
            parts.merge(tmp / name, [Path(p) / name for p in part_dirs], verbose=False, durable=durable)
        total = sum(info.count for info in infos)
        write_records_file(tmp, RecordsInfo(total, fields, None if classes is None else tuple(classes)), durable)
