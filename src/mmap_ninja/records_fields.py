"""The fields of a records map on disk: each an ordinary map, created, opened and appended to here."""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import numpy as np

from . import fs, kinds, layout
from .errors import MapFormatError
from . import numpy as np_ninja
from .records_schema import FieldSpec
from .shapes import LENGTHS, NESTED, ShapeRecord
from .spans import SpansMap

def field_length(field_dir: Path, kind: str) -> int:
    """The samples a field's map has committed on its own (may exceed the record count)."""
    found = kinds.get(kind)
    layout.expect_kind(field_dir, found.disk)
    return found.count(field_dir)


def read_spec(field_dir: Path, kind: str) -> FieldSpec:
    """The spec of an existing field, from its files."""
    if kind in ("strings", "images"):
        layout.expect_kind(field_dir, kinds.get(kind).disk)
        return FieldSpec(kind)
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
    elif spec.kind == "images":
        from .images import ImagesEncoder, field_codec

        encoder = ImagesEncoder()
        encoder.codec = field_codec()
        encoder.create_empty(field_dir)
    elif spec.kind == "numpy":
        layout.create_array(field_dir, np.dtype(spec.dtype), spec.row_shape)
    else:
        layout.create_spans(field_dir, "ragged", np.dtype(spec.dtype), LENGTHS if spec.shape_width == 1 else NESTED)


def open_field(field_dir: Path, kind: str, mode: str, count: Optional[int] = None) -> Any:
    """Open a field's map; with ``count``, map its first ``count`` samples only.

    A records reader maps no more than the records ``records.json`` committed: a field may
    hold a tail past them (an append killed before its commit) that the next writer cuts,
    and a mapping over cut pages would kill the reader with SIGBUS on access.
    """
    return kinds.get(kind).open(field_dir, mode, count)


def close_field(field: Any) -> None:
    if isinstance(field, SpansMap):
        field.close()


def _append_column(field_dir: Path, field: Any, kind: str, column: Any, durable: bool) -> None:
    """Append converted values to one field, by the field's own commit protocol."""
    if kind == "numpy":
        np_ninja.extend_dir(field_dir, column, durable)
    else:
        field.extend(column, durable=durable)


class FieldWriter:
    """Appends converted batches to the fields of a records map being built or extended."""

    def __init__(self, path: Path, names: Sequence[str], specs: Dict[str, FieldSpec], maps: Optional[Dict[str, Any]] = None):
        self.path = path
        self.names = list(names)
        self.specs = specs
        self._own = maps is None  # maps opened here are closed here
        if maps is None:
            maps = {n: open_field(path / n, specs[n].kind, "r") for n in names if specs[n].kind != "numpy"}
        self.maps = maps

    def append(self, columns: Dict[str, Any], durable: bool) -> None:
        for n in self.names:
            _append_column(self.path / n, self.maps.get(n), self.specs[n].kind, columns[n], durable)

    def close(self) -> None:
        if self._own:
            for m in self.maps.values():
                close_field(m)


class FieldAppender:
    """Appends records to the fields of a published records map, through one writer per field
    kept open between appends (opening every field's files for each record cost more than
    writing it). Values come converted (``records_schema.convert_column``): checked and cast
    once, then laid out as each field's writer takes them.
    """

    def __init__(self, path: Path, names: Sequence[str], specs: Dict[str, FieldSpec]):
        self.pid = os.getpid()  # a writer inherited through fork shares its locks: not reused there
        self.specs = {n: specs[n] for n in names}
        self.writers: Dict[str, Any] = {}
        try:
            for n, spec in self.specs.items():
                field_dir = path / n
                if spec.kind == "numpy":
                    self.writers[n] = layout.ArrayWriter(field_dir, layout.read_array_header(field_dir))
                else:
                    itemsize = np.dtype(spec.dtype).itemsize if spec.kind == "ragged" else 1
                    self.writers[n] = layout.SpansWriter(field_dir, itemsize, with_shapes=spec.kind == "ragged")
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
            kind, column = self.specs[n].kind, columns[n]
            if kind == "numpy":
                writer.append(column, durable)
            elif kind in ("strings", "images"):  # an image field's values come encoded and checked
                buffers = [s.encode("utf-8") for s in column] if kind == "strings" else column
                writer.append(buffers, np.fromiter(map(len, buffers), np.int64, len(buffers)), None, durable)
            else:
                lengths = np.fromiter((a.size for a in column), np.int64, len(column))
                shapes = ShapeRecord.of(column, lengths)
                writer.make_room(shapes, True, durable)
                writer.append(column, lengths, shapes, durable)

    def roll_back(self, count: int) -> None:
        """Cut every field back to ``count`` samples (inside ``locked``): a failed append undone."""
        for writer in self.writers.values():
            writer.roll_back(count)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
