"""The fields of a records map: names, schemas, and what each field's values become.

A field's *kind* is "ragged" (arrays of any shape), "strings" (str) or "numpy" (arrays of
one shape); ``records.json`` and ``RecordsMmap.fields`` spell them so. The first batch of
records decides each field's kind and dtype unless a schema fixes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import kinds
from .errors import sample_error, sample_of
from .samples import STORABLE_KINDS, as_array, cast_losslessly, common_dtype

RECORDS_FILE = "records.json"
KINDS = ("ragged", "strings", "numpy", "images")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_BAD_CHARACTERS = set('/\\:*?"<>|')


class FieldError(KeyError):
    """A record lacks one of the map's fields, or has one the map does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


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
    """The one name of a field's kind (``kinds``), or a ValueError naming the kinds a field may have."""
    try:
        found = kinds.get(kind)
    except ValueError:
        found = None
    if found is None or not found.field:
        raise ValueError(f"field {field!r}: unknown kind {kind!r}; use 'ragged', 'strings' or 'numpy'")
    return found.name


def parse_schema(schema: Optional[Mapping]) -> Dict[str, Tuple[str, Optional[np.dtype]]]:
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
            if not kinds.get(kind).field.has_dtype:
                raise ValueError(f"schema of field {name!r}: a {kind} field has no dtype")
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
    if sample_of(error) is not None and hasattr(error, "problem"):  # the library's own: "its value ..."
        message = "its value " + error.problem
    else:
        message = str(error.args[0]) if error.args else str(error)
    try:
        named = record_error(type(error), record, f", field {field!r}: {message}")
    except Exception:
        return error
    named.__cause__ = error
    return named


def record_error(error_type: type, record: int, problem: str) -> BaseException:
    """An error about one record (see ``errors.sample_error``)."""
    return sample_error(error_type, record, problem, "record")


def arrays_of(field: str, values: Sequence[Any], first: int) -> List[np.ndarray]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            raise record_error(TypeError, first + i, f", field {field!r}: a str in a field of arrays (the field's first batch held numbers)")
        try:
            out.append(v if type(v) is np.ndarray else as_array(v, first + i))
        except (TypeError, ValueError) as e:
            raise _named(e, first + i, field) from None
    return out


def infer(field: str, values: Sequence[Any], first: int, hint: Optional[Tuple[str, Optional[np.dtype]]]) -> FieldSpec:
    """The spec of a field from its values in the first batch (and the schema's ``hint``)."""
    kind, dtype = hint if hint is not None else (None, None)
    if kind is None:
        strings = [isinstance(v, str) for v in values]
        if all(strings):
            kind = "strings"
        elif any(strings):
            i = strings.index(not strings[0])
            what = "a str" if strings[i] else type(values[i]).__name__
            raise record_error(TypeError, first + i, f", field {field!r} is {what} but record {first} holds "
                            f"{'a str' if strings[0] else 'numbers'}; a field holds strings or arrays, not both")
    if kind is None:  # arrays: of one shape across the batch, or not
        kind = "numpy" if len({np.shape(v) for v in arrays_of(field, values, first)}) == 1 else "ragged"
    return kinds.get(kind).field.spec_from(field, values, first, dtype)


def strings_of(field: str, values: Sequence[Any], first: int) -> List[str]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise record_error(TypeError, first + i, f", field {field!r} is {type(v).__name__}, not str; the field holds strings")
    return list(values)


def convert_column(field: str, spec: FieldSpec, values: Sequence[Any], first: int) -> Any:
    """The values of one field for records ``first, first + 1, ...`` as the field stores them,
    or a TypeError/ValueError naming the record and the field. Writes nothing."""
    return kinds.get(spec.kind).field.convert(field, spec, values, first)


def cast_arrays(field: str, arrays: List[np.ndarray], dtype: np.dtype, first: int) -> List[np.ndarray]:
    """``arrays`` cast to ``dtype`` where no value changes, else an error naming the record and the field."""
    out = []
    for i, a in enumerate(arrays):
        try:
            out.append(a if a.dtype == dtype else cast_losslessly(a, dtype, first + i))
        except (TypeError, ValueError) as e:
            raise _named(e, first + i, field) from None
    return out


def storable(field: str, arrays: List[np.ndarray], dtype: Any) -> np.dtype:
    """``dtype``, or the batch's common dtype, if a map can store it."""
    dtype = common_dtype(arrays) if dtype is None else np.dtype(dtype)
    if dtype.kind not in STORABLE_KINDS:
        raise TypeError(f"field {field!r}: a map cannot store dtype {dtype}")
    return dtype


def columns_of(batch: Sequence[Any], names: Sequence[str], first: int) -> Dict[str, List[Any]]:
    """A batch of records as one list of values per field, or an error naming the record."""
    wanted = set(names)
    for j, record in enumerate(batch):
        if not isinstance(record, Mapping):
            raise record_error(TypeError, first + j, f"is {type(record).__name__}, not a dict of fields")
        if len(record) != len(names) or not wanted.issuperset(record.keys()):
            missing = [n for n in names if n not in record]
            if missing:
                raise record_error(FieldError, first + j, f"has no field {missing[0]!r} (the map's fields are {list(names)})")
            extra = next(k for k in record if k not in wanted)
            raise record_error(FieldError, first + j, f"has a field {extra!r} that the map does not have (its fields are {list(names)})")
    return {n: [record[n] for record in batch] for n in names}


def decide_fields(batch: Sequence[Any], hints: Dict[str, Tuple[str, Optional[np.dtype]]], first: int) -> Tuple[List[str], Dict[str, FieldSpec]]:
    """The fields (in the first record's order) and their specs, from the first batch."""
    if not isinstance(batch[0], Mapping):
        raise record_error(TypeError, first, f"is {type(batch[0]).__name__}, not a dict of fields")
    names = list(batch[0].keys())
    if not names:
        raise record_error(ValueError, first, "has no fields")
    for n in names:
        check_field_name(n, names)
    for n in hints:
        if n not in batch[0]:
            raise record_error(FieldError, first, f"has no field {n!r}, which the schema names")
    columns = columns_of(batch, names, first)
    return names, {n: infer(n, columns[n], first, hints.get(n)) for n in names}
