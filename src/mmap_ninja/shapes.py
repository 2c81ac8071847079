"""The shapes of a ragged map's samples: how a batch of them is recorded, in which layout.

A batch's shapes are held as one *shape record*: every sample's number of axes
(``ndims``) and all their axis lengths back to back (``dims``). A map stores them in one
of three *shape layouts* (see ``layout.py`` for the files):

- ``LENGTHS``: an (n, 1) table; row i is the length of a 1-D sample, or 0 for a 0-d
  sample (its element count, 1, tells it from an empty 1-D sample). Holds 0-d and 1-D.
- ``TABLE(k)``: an (n, k) table of k-axis shapes. Holds k-D samples only. We read it; we
  write it only to maps that already have it.
- ``NESTED``: a ragged map whose sample i is the shape of sample i. Holds any shape.

Upgrade path: LENGTHS -> NESTED, TABLE(k) -> NESTED. A map that meets a sample its layout
cannot hold is upgraded (``layout.upgrade_shapes``); the layout a set of samples gets is
a function of the samples alone (LENGTHS when all are 0-d or 1-D, else NESTED), so that
a map built in parts, or upgraded midway, has the bytes of one built in one go.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Optional, Sequence

import numpy as np

OFFSET = np.dtype("<i8")


class ShapeLayout(NamedTuple):
    """How a map records its samples' shapes: ``kind`` "lengths", "table" or "nested"."""

    kind: str
    width: int  # columns of the table: 1 for "lengths", k for "table", 0 for "nested"

    def holds(self, record: "ShapeRecord") -> bool:
        """Whether samples with these shapes can be recorded in this layout."""
        if self.kind == "nested" or not len(record.ndims):
            return True
        if self.kind == "lengths":
            return int(record.ndims.max()) <= 1
        return bool((record.ndims == self.width).all())

    def table(self, record: "ShapeRecord") -> np.ndarray:
        """The (n, width) table rows of a record (for the "lengths" and "table" layouts)."""
        if self.kind == "lengths":
            rows = np.zeros(len(record.ndims), OFFSET)
            rows[record.ndims == 1] = record.dims
            return rows[:, None]
        return record.dims.reshape(-1, self.width)

    def __str__(self) -> str:
        return {"lengths": "0-d or 1-D samples", "nested": "samples of any shape"}.get(self.kind, f"{self.width}-D samples")


LENGTHS = ShapeLayout("lengths", 1)
NESTED = ShapeLayout("nested", 0)


def table_layout(width: int) -> ShapeLayout:
    """The layout of a flat (n, ``width``) shapes table."""
    return LENGTHS if width == 1 else ShapeLayout("table", width)


class ShapeRecord(NamedTuple):
    """The shapes of a batch of samples: axes per sample, then every axis length in order."""

    ndims: np.ndarray  # int64[n]
    dims: np.ndarray  # int64[ndims.sum()]

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray], sizes: Optional[np.ndarray] = None) -> "ShapeRecord":
        """The record of a batch; ``sizes`` (element counts), when known, spare 1-D batches a pass."""
        ndims = np.array([a.ndim for a in arrays], OFFSET)
        if sizes is not None and len(ndims) and ndims.min() == 1 == ndims.max():
            return cls(ndims, np.asarray(sizes, OFFSET))  # a 1-D sample's one axis is its size
        dims = np.fromiter(itertools.chain.from_iterable(a.shape for a in arrays), OFFSET, int(ndims.sum()))
        return cls(ndims, dims)

    @classmethod
    def from_table(cls, table: np.ndarray, lengths: np.ndarray) -> "ShapeRecord":
        """The record of an (n, k) table; for k = 1, ``lengths`` (element counts) tell 0-d rows."""
        table = np.asarray(table, OFFSET)
        if table.shape[1] == 1:
            ndims = np.where((table[:, 0] == 0) & (lengths == 1), 0, 1).astype(OFFSET)
            return cls(ndims, table[ndims == 1, 0])
        return cls(np.full(len(table), table.shape[1], OFFSET), table.reshape(-1))

    def needed_layout(self) -> ShapeLayout:
        """The layout a map of only these samples gets."""
        return LENGTHS if not len(self.ndims) or int(self.ndims.max()) <= 1 else NESTED

    def as_samples(self) -> "ShapeRecord":
        """The record of the shape arrays themselves (1-D, of ``ndims`` lengths), for NESTED."""
        return ShapeRecord(np.ones(len(self.ndims), OFFSET), self.ndims)


def concat(records: Sequence[ShapeRecord]) -> ShapeRecord:
    """One record of several batches, in order."""
    return ShapeRecord(np.concatenate([r.ndims for r in records]), np.concatenate([r.dims for r in records]))
