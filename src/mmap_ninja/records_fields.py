"""The fields of a records map on disk: each an ordinary map, created, opened and appended to here."""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from . import fs, kinds, layout
from .errors import MapFormatError
from .records_schema import FieldSpec, arrays_of, cast_arrays, record_error, storable, strings_of
from .shapes import LENGTHS, NESTED, ShapeRecord

def field_length(field_dir: Path, kind: str) -> int:
    """The samples a field's map has committed on its own (may exceed the record count)."""
    found = kinds.get(kind)
    layout.expect_kind(field_dir, found.disk)
    return found.count(field_dir)


def read_spec(field_dir: Path, kind: str) -> FieldSpec:
    """The spec of an existing field, from its files."""
    return kinds.get(kind).field.spec(field_dir)


def create_field(field_dir: Path, spec: FieldSpec) -> None:
    """Lay out an empty map for a field (the directory must not exist)."""
    fs.mkdir(field_dir)
    kinds.get(spec.kind).field.create(field_dir, spec)


def open_field(field_dir: Path, kind: str, mode: str, count: Optional[int] = None) -> Any:
    """Open a field's map; with ``count``, map its first ``count`` samples only.

    A records reader maps no more than the records ``records.json`` committed: a field may
    hold a tail past them (an append killed before its commit) that the next writer cuts,
    and a mapping over cut pages would kill the reader with SIGBUS on access.
    """
    field_kind = kinds.get(kind)
    return field_kind.open(field_dir, mode, count)


def close_field(field: Any) -> None:
    close = getattr(field, "close", None)
    if close is not None and not isinstance(field, np.ndarray):  # a memmap is released when dropped
        close()


# --- what each kind of field does (registered with its kind, see builtin_kinds.py) -----------------


class RaggedField:
    """A field of arrays of any shape, as a ragged map."""

    grows_in_place = True  # the open map sees appended samples (no remap after an append)
    has_dtype = True

    @staticmethod
    def spec_from(field: str, values: Sequence[Any], first: int, dtype: Any) -> FieldSpec:
        """The spec of a new field from its first batch (``dtype``: the schema's, or None)."""
        arrays = arrays_of(field, values, first)
        dtype = storable(field, arrays, dtype)
        return FieldSpec("ragged", dtype.name, (), 1 if all(a.ndim <= 1 for a in arrays) else 0)

    @staticmethod
    def convert(field: str, spec: FieldSpec, values: Sequence[Any], first: int) -> List[np.ndarray]:
        """The values as the field stores them (see ``records_schema.convert_column``)."""
        return cast_arrays(field, arrays_of(field, values, first), np.dtype(spec.dtype), first)

    @staticmethod
    def spec(field_dir: Path) -> FieldSpec:
        header = layout.read_array_header(field_dir, kind="ragged")
        return FieldSpec("ragged", header.dtype.name, (), layout.read_shape_layout(field_dir).width)

    @staticmethod
    def create(field_dir: Path, spec: FieldSpec) -> None:
        layout.create_spans(field_dir, "ragged", np.dtype(spec.dtype), LENGTHS if spec.shape_width == 1 else NESTED)

    @staticmethod
    def writer(field_dir: Path, spec: FieldSpec) -> Any:
        return layout.SpansWriter(field_dir, np.dtype(spec.dtype).itemsize, with_shapes=True)

    @staticmethod
    def append(writer: Any, column: List[np.ndarray], durable: bool) -> None:
        lengths = np.fromiter((a.size for a in column), np.int64, len(column))
        shapes = ShapeRecord.of(column, lengths)
        writer.make_room(shapes, True, durable)
        writer.append(column, lengths, shapes, durable)


class StringsField:
    """A field of str, as a strings map (UTF-8, uncompressed)."""

    grows_in_place = True
    has_dtype = False

    @staticmethod
    def spec_from(field: str, values: Sequence[Any], first: int, dtype: Any) -> FieldSpec:
        strings_of(field, values, first)
        return FieldSpec("strings")

    @staticmethod
    def convert(field: str, spec: FieldSpec, values: Sequence[Any], first: int) -> List[str]:
        return strings_of(field, values, first)

    @staticmethod
    def spec(field_dir: Path) -> FieldSpec:
        layout.expect_kind(field_dir, "string")
        return FieldSpec("strings")

    @staticmethod
    def create(field_dir: Path, spec: FieldSpec) -> None:
        layout.create_spans(field_dir, "string", np.dtype(np.uint8))

    @staticmethod
    def writer(field_dir: Path, spec: FieldSpec) -> Any:
        return layout.SpansWriter(field_dir, 1, with_shapes=False)

    @staticmethod
    def append(writer: Any, column: List[str], durable: bool) -> None:
        buffers = [s.encode("utf-8") for s in column]
        writer.append(buffers, np.fromiter(map(len, buffers), np.int64, len(buffers)), None, durable)


class ArrayField:
    """A field of arrays of one shape, as a same-shape map."""

    grows_in_place = False  # a memmap does not grow: remapped when next read
    has_dtype = True

    @staticmethod
    def spec_from(field: str, values: Sequence[Any], first: int, dtype: Any) -> FieldSpec:
        arrays = arrays_of(field, values, first)
        return FieldSpec("numpy", storable(field, arrays, dtype).name, tuple(arrays[0].shape))

    @staticmethod
    def convert(field: str, spec: FieldSpec, values: Sequence[Any], first: int) -> np.ndarray:
        arrays = arrays_of(field, values, first)
        for i, a in enumerate(arrays):
            if a.shape != spec.row_shape:
                raise record_error(ValueError, first + i, f", field {field!r} has shape {a.shape}, but the field holds samples of "
                                   f"shape {spec.row_shape} (give it as 'ragged' in the schema to store varying shapes)")
        dtype = np.dtype(spec.dtype)
        out = cast_arrays(field, arrays, dtype, first)
        return np.stack(out) if out else np.empty((0, *spec.row_shape), dtype)

    @staticmethod
    def spec(field_dir: Path) -> FieldSpec:
        header = layout.read_array_header(field_dir)
        return FieldSpec("numpy", header.dtype.name, tuple(header.shape[1:]))

    @staticmethod
    def create(field_dir: Path, spec: FieldSpec) -> None:
        layout.create_array(field_dir, np.dtype(spec.dtype), spec.row_shape)

    @staticmethod
    def writer(field_dir: Path, spec: FieldSpec) -> Any:
        return layout.ArrayWriter(field_dir, layout.read_array_header(field_dir))

    @staticmethod
    def append(writer: Any, column: np.ndarray, durable: bool) -> None:
        writer.append(column, durable)


class FieldAppender:
    """Appends records to the fields of a records map, through one writer per field kept open
    between appends (opening every field's files for each record cost more than writing it).
    Values come converted (``records_schema.convert_column``): checked and cast once, then
    laid out by each kind's field (``RaggedField`` and its siblings).
    """

    def __init__(self, path: Path, names: Sequence[str], specs: Dict[str, FieldSpec]):
        self.pid = os.getpid()  # a writer inherited through fork shares its locks: not reused there
        self.fields = {n: kinds.get(specs[n].kind).field for n in names}
        self.writers: Dict[str, Any] = {}
        try:
            for n in names:
                self.writers[n] = self.fields[n].writer(path / n, specs[n])
        except BaseException:
            self.close()
            raise

    @contextmanager
    def locked(self, count: int, records_file: Path) -> Iterator["FieldAppender"]:
        """Hold every field's writer lock, with every field cut back to ``count`` samples
        (the tail an append killed before its commit left)."""
        with ExitStack() as stack:
            for n, writer in self.writers.items():
                stack.enter_context(writer.locked())
                if writer.count < count:
                    raise MapFormatError(f"field {n!r} holds {writer.count} samples, but {records_file} counts {count} records")
                writer.roll_back(count)
            yield self

    def append(self, columns: Dict[str, Any], durable: bool) -> None:
        """Append one converted column per field, each by its map's commit protocol (inside ``locked``)."""
        for n, writer in self.writers.items():
            self.fields[n].append(writer, columns[n], durable)

    def roll_back(self, count: int) -> None:
        """Cut every field back to ``count`` samples (inside ``locked``): a failed append undone."""
        for writer in self.writers.values():
            writer.roll_back(count)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
