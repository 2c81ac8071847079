"""Building records maps: serially, by worker processes or on Dask, through the one build engine.

``RecordsProduct`` is what the engine (``parallel.py``, ``dask.py``) needs of a records map,
as ``build.MapProduct`` is for a map of one kind: build a range of a dataset into a part (a
records map of its own), merge parts in order (field by field, ``records.json`` last) and
create an empty map. The first batch decides the fields for every part alike; a parallel
build reads it once, in the calling process, as the first part (``prepare``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import os

import numpy as np

from . import fs, kinds
from .build import Part, Reading, in_dataset, indexed_batches, read_count
from .errors import MapFormatError
from .records_fields import FieldAppender, create_field
from .records_file import RecordsInfo, is_records_dir, read_records_file, write_records_file
from .records_schema import FieldSpec, columns_of, convert_column, decide_fields, parse_schema
from .skip import AllSkippedError

PathLike = Union[str, "os.PathLike[str]"]
Hints = Dict[str, Tuple[str, Optional[np.dtype]]]


class RecordsProduct:
    """A records map as the build engine builds it (see ``build.MapProduct`` for the interface)."""

    kind = "records"
    replaceable = staticmethod(is_records_dir)
    what = "a dataset of maps"

    def __init__(self, hints: Optional[Hints] = None, classes: Optional[Sequence[str]] = None,
                 fields: Optional[Tuple[Tuple[str, FieldSpec], ...]] = None):
        self.hints = hints or {}
        self.classes = None if classes is None else tuple(classes)
        self.fields = fields  # (name, spec) in order, once the first batch decided them

    def prepare(self, workdir: Path, indexable: Any, count: Optional[int], batch_size: int) -> Optional[Part]:
        """Build the first records (up to the first batch that holds one) as the first part.

        Their fields are then every part's: the workers get this product with them.
        """
        path = workdir / "first"
        fs.mkdir(path)
        reading = Reading(0)
        batches = _until_one_record(indexed_batches(indexable, 0, count if count is not None else 2**62, batch_size, reading))
        write_records(path, batches, self, None, 0, reading)
        return reading.part(path, 0)

    def build_into(self, path: Path, indexable: Any, start: int, stop: int, batch_size: int,
                   on_batch: Optional[Callable[[int], None]] = None) -> Part:
        """Build ``indexable[start:stop]`` as a records map in the existing, empty directory ``path``."""
        reading = Reading(start)
        write_records(path, indexed_batches(indexable, start, stop, batch_size, reading), self, on_batch, start, reading)
        return reading.part(path, start)

    def merger(self, tmp: Path) -> "RecordsMerger":
        return RecordsMerger(tmp, self)

    def finish(self, tmp: Path, merger: "RecordsMerger") -> None:
        merger.finish()


def _until_one_record(batches: Iterator[list]) -> Iterator[list]:
    for batch in batches:
        yield batch
        if batch:
            return


class RecordsMerger:
    """Appends records parts, in order, to a new records map in the private directory ``tmp``:
    each field by its map's merge; ``records.json`` is written by ``finish``, last."""

    def __init__(self, tmp: Path, product: RecordsProduct):
        self.tmp, self.product = tmp, product
        self.fields: Optional[Tuple[Tuple[str, str], ...]] = None
        self._mergers: Dict[str, Any] = {}
        self.count = 0

    def add(self, path: Path) -> None:
        info = read_records_file(path)
        if self.fields is None:
            self.fields = info.fields
            for name, kind in info.fields:
                fs.mkdir(self.tmp / name)
                self._mergers[name] = kinds.get(kind).merger(self.tmp / name, True)
        elif info.fields != self.fields:
            raise MapFormatError(f"part {path} has fields {list(info.fields)}, the first part {list(self.fields)}")
        for name, _ in info.fields:
            self._mergers[name].add(path / name)
        self.count += info.count

    def close(self) -> None:
        for m in self._mergers.values():
            m.close()

    def finish(self) -> None:
        if self.fields is None:  # no records at all: the fields the first batch decided, empty
            if self.product.fields is None:
                raise ValueError("no records were given; a records map needs one to know its fields")
            for name, spec in self.product.fields:
                create_field(self.tmp / name, spec)
            self.fields = tuple((n, s.kind) for n, s in self.product.fields)
        write_records_file(self.tmp, RecordsInfo(self.count, self.fields, self.product.classes))


def write_records(path: Path, batches: Iterable[Sequence[Any]], product: RecordsProduct,
                  on_batch: Optional[Callable[[int], None]] = None, first: int = 0, reading: Optional[Reading] = None) -> int:
    """Write a records map of ``batches`` into the existing, empty directory ``path``.

    The product's fields are the map's; without them the first batch decides (and they
    become the product's). Returns the number of records written.
    """
    writer = None
    position = first
    try:
        for batch in batches:
            if not batch:  # every record of it was skipped
                if on_batch is not None:
                    on_batch(read_count(batch))
                continue
            batch_start = position
            try:
                if writer is None:
                    if product.fields is None:
                        names, specs = decide_fields(batch, product.hints, position)
                        product.fields = tuple((n, specs[n]) for n in names)
                    writer = _create(path, product)
                names = [n for n, _ in product.fields]
                specs = dict(product.fields)
                columns = columns_of(batch, names, position)
                converted = {n: convert_column(n, specs[n], columns[n], position) for n in names}
                del columns
            except (TypeError, ValueError, KeyError) as e:
                raise in_dataset(e, batch, batch_start) from e.__cause__
            with writer.locked(position - first, path):  # a durable build syncs the whole directory once, before it is published
                writer.append(converted, False)
            position += len(batch)
            if on_batch is not None:
                on_batch(read_count(batch))
            del batch, converted  # hold one batch, not two, while the next is read
        if writer is None:
            if product.fields is None:
                if reading is not None and reading.skipped:
                    raise AllSkippedError(f"every one of the {len(reading.skipped)} records of the dataset was skipped; "
                                          f"no map was written (record {reading.skipped[0][0]}: {reading.skipped[0][1]})")
                raise ValueError("no records were given; a records map needs one to know its fields")
            for n, spec in product.fields:
                create_field(path / n, spec)
    finally:
        if writer is not None:
            writer.close()
    fields = tuple((n, spec.kind) for n, spec in product.fields)
    write_records_file(path, RecordsInfo(position - first, fields, product.classes))
    return position - first


def _create(path: Path, product: RecordsProduct) -> FieldAppender:
    for n, spec in product.fields:
        create_field(path / n, spec)
    return FieldAppender(path, [n for n, _ in product.fields], dict(product.fields))


def build_records(out_dir: PathLike, indexable: Any, batch_size: int, n_jobs: Optional[int] = None, verbose: bool = False,
                  schema: Optional[Mapping] = None, durable: bool = False,
                  classes: Optional[Sequence[str]] = None) -> List[Tuple[int, str]]:
    """The work of ``RecordsMmap.from_indexable``; returns the (index, reason) of the records
    the dataset left out by returning ``Skip``."""
    from .parallel import build_indexable

    product = RecordsProduct(parse_schema(schema), classes)
    return build_indexable(out_dir, product, indexable, batch_size, n_jobs, verbose, durable=durable)


def build_records_from(out_dir: PathLike, batches: Iterable[Sequence[Any]], schema: Optional[Mapping] = None,
                       durable: bool = False, classes: Optional[Sequence[str]] = None) -> None:
    """The work of ``RecordsMmap.from_generator``: batches of records as a new map at ``out_dir``."""
    from . import layout

    product = RecordsProduct(parse_schema(schema), classes)
    with layout.building(Path(out_dir), durable, is_records_dir, "a dataset of maps") as tmp:
        write_records(tmp, batches, product)
