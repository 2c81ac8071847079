"""Building a map by parts, and publishing parts as one map.

A *part* is an ordinary map (of any kind) holding a contiguous range of a dataset's
samples, built in a private directory. A serial build is one part; a parallel build (by
processes here, or by Dask in ``mmap_ninja.dask``) has each worker build parts of
contiguous index ranges; ``merge`` publishes the parts, in order, as one map at
``out_dir`` in one atomic step. The result is byte-identical to a serial build.

Kinds are those of ``kinds`` that build from samples: "ragged", "strings" and "numpy".
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import build, fs, kinds, merging
from .build import Part

__all__ = ["concatenate", "merge", "build_part", "Part", "part_ranges"]

PathLike = Union[str, "os.PathLike[str]"]

def map_kind(kind: str) -> str:
    """The name of ``kind`` if maps of it are built by parts, or a ValueError naming the kinds."""
    try:
        found = kinds.get(kind)
    except ValueError:
        found = None
    if found is None or found.encoder is None:
        built = [k for k in kinds.names() if kinds.get(k).encoder is not None]
        raise ValueError(f"unknown kind of map {kind!r}: use {', '.join(map(repr, built))}") from None
    return found.name


def part_ranges(count: int, batch_size: int, nparts: int, start: int = 0) -> List[Tuple[int, int]]:
    """Split ``range(start, count)`` into at most ``nparts`` contiguous ranges on batch boundaries.

    Boundaries fall on ``start`` plus multiples of ``batch_size`` so that every part sees
    the batches a serial build would see (the first batch decides the dtype and layout).
    """
    if count <= start:
        return []
    batches = -(-(count - start) // batch_size)
    nparts = max(1, min(nparts, batches))
    per, extra = divmod(batches, nparts)
    ranges, first = [], 0
    for p in range(nparts):
        n = per + (p < extra)
        stop = min(count, start + (first + n) * batch_size)
        ranges.append((start + first * batch_size, stop))
        first += n
    return ranges


def parts_dir(out_dir: PathLike) -> Path:
    """A new private directory beside ``out_dir`` for the parts of one build (unique per call)."""
    out_dir = Path(out_dir).absolute()
    fs.makedirs(out_dir.parent)
    path = out_dir.parent / f".{out_dir.name}.parts-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(path)
    return path


def build_part(
    part_dir: PathLike,
    kind: str,
    indexable: Any,
    start: int,
    stop: int,
    batch_size: int = 1024,
    options: Optional[Dict[str, Any]] = None,
) -> Part:
    """Build ``indexable[start:stop]`` as an ordinary map at ``part_dir`` (which must not exist).

    ``options`` are the builder's: ``dtype`` for ragged and numpy maps, ``zstd_level`` and
    ``zstd_dictionary`` for strings. A sample that raises is re-raised with its index named.
    A sample the dataset returns as ``Skip`` is left out and listed in ``Part.skipped``.
    """
    return build.build_part(Path(part_dir), build.MapProduct(map_kind(kind), options), indexable, start, stop, batch_size)


def merge(out_dir: PathLike, parts: Sequence[Union[Part, PathLike]], verbose: bool = False, durable: bool = False) -> None:
    """Publish ``parts`` (maps of one kind), in order, as one map at ``out_dir``, atomically.

    The parts are left untouched; remove them after. The merged dtype is the first part's;
    other parts are cast to it when no value changes, else a ValueError names the part and
    the sample.
    """
    merging.merge([Path(p.path if isinstance(p, Part) else p) for p in parts], Path(out_dir), verbose, durable)


def concatenate(out_dir: PathLike, sources: Sequence[PathLike], verbose: bool = False, durable: bool = False) -> None:
    """One map at ``out_dir`` holding the samples of ``sources`` (maps of one kind), in order.

    The sources are left untouched (one of them may be ``out_dir`` itself: it is replaced
    only once the new map is complete). Dtypes follow ``merge``.
    """
    merge(out_dir, list(sources), verbose, durable)


def remove(path: PathLike) -> None:
    """Remove a part (or a directory of parts); a missing one is not an error."""
    fs.rmtree(path)
