"""Merging parts into one map (provisional: re-reads the samples until the vectorised merge lands)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

from . import layout
from .errors import MapFormatError


def merge(parts: List[Path], out_dir: Path, verbose: bool, durable: bool) -> None:
    from .generic import open_existing

    kinds = {layout.read_kind(p) for p in parts}
    if len(kinds) != 1 or None in kinds:
        raise MapFormatError(f"parts must be maps of one kind, found {sorted(map(str, kinds))}")
    (kind,) = kinds

    def samples() -> Iterator:
        for p in parts:
            yield from open_existing(p, mode="r")

    if kind == "ragged":
        from .ragged import RaggedMmap

        RaggedMmap.from_generator(out_dir, samples(), 1024, durable=durable)
    elif kind == "string":
        from .string import StringsMmap

        StringsMmap.from_generator(out_dir, samples(), 1024, durable=durable)
    else:
        from . import numpy as np_ninja

        np_ninja.from_generator(out_dir, samples(), 1024, durable=durable)
