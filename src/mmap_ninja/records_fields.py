"""The fields of a records map on disk: each an ordinary map, created, opened and appended to here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from . import fs, layout
from . import numpy as np_ninja
from .ragged import RaggedMmap
from .records_schema import FieldSpec
from .shapes import LENGTHS, NESTED
from .spans import SpansMap
from .string import StringsMmap

_DISK_KIND = {"ragged": "ragged", "strings": "string", "numpy": "numpy", "image": "images"}


def field_length(field_dir: Path, kind: str) -> int:
    """The samples a field's map has committed on its own (may exceed the record count)."""
    layout.expect_kind(field_dir, _DISK_KIND[kind])
    if kind == "numpy":
        return layout.read_shape(field_dir / layout.SHAPE)[0]
    return layout.committed_count(field_dir)


def read_spec(field_dir: Path, kind: str) -> FieldSpec:
    """The spec of an existing field, from its files."""
    if kind in ("strings", "image"):
        layout.expect_kind(field_dir, _DISK_KIND[kind])
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
    elif spec.kind == "image":
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
    if kind == "numpy":
        return np_ninja.open_existing(field_dir, mode=mode, rows=count)
    if kind == "image":
        from .images import ImagesMmap

        cls: Any = ImagesMmap
    else:
        cls = RaggedMmap if kind == "ragged" else StringsMmap
    field = cls.__new__(cls)
    field._limit = count  # before __init__, which maps the samples
    field.__init__(field_dir, mode=mode)
    return field


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
