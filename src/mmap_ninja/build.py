"""The one builder (provisional: wraps today's builders until the per-kind encoders land)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator

from .parts import Part, name_sample


def _samples(indexable: Any, start: int, stop: int, written: list) -> Iterator[Any]:
    getter = indexable if callable(indexable) and not hasattr(indexable, "__getitem__") else indexable.__getitem__
    for i in range(start, stop):
        try:
            sample = getter(i)
        except IndexError:
            return
        except Exception as e:
            raise name_sample(e, i) from e
        written[0] = i + 1
        yield sample


def build_part(part_dir: Path, kind: str, indexable: Any, start: int, stop: int, batch_size: int, options: Dict[str, Any]) -> Part:
    if part_dir.exists():
        raise FileExistsError(f"{part_dir} exists; a part is built in a new directory")
    written = [start]
    samples = _samples(indexable, start, stop, written)
    if kind == "ragged":
        from .ragged import RaggedMmap

        RaggedMmap.from_generator(part_dir, samples, batch_size, dtype=options.get("dtype"))
    elif kind == "string":
        from .string import StringsMmap

        StringsMmap.from_generator(part_dir, samples, batch_size, zstd_level=options.get("zstd_level"))
    else:
        from . import numpy as np_ninja

        np_ninja.from_generator(part_dir, samples, batch_size, dtype=options.get("dtype"))
    return Part(str(part_dir), start, written[0])
