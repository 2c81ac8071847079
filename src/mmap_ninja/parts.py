"""Building a map by parts, and publishing parts as one map.

A *part* is an ordinary map (of any kind) holding a contiguous range of a dataset's
samples, built in a private directory. A serial build is one part; a parallel build (by
processes here, or by Dask in ``mmap_ninja.dask``) has each worker build parts of
contiguous index ranges; ``merge`` publishes the parts, in order, as one map at
``out_dir`` in one atomic step. The result is byte-identical to a serial build.

Kinds are "ragged", "strings" (also "string") and "numpy".
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import fs

__all__ = ["concatenate", "merge", "build_part", "Part", "part_ranges"]

PathLike = Union[str, "os.PathLike[str]"]

KINDS = {"ragged": "ragged", "strings": "string", "string": "string", "numpy": "numpy"}


class Part(NamedTuple):
    """A finished part: its map directory and the dataset's index range it holds."""

    path: str
    start: int
    stop: int  # one past the last sample written


def disk_kind(kind: str) -> str:
    """The kind as ``type.ninja`` spells it, or a ValueError naming the accepted kinds."""
    try:
        return KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kind of map {kind!r}: use 'ragged', 'strings' or 'numpy'") from None


def part_ranges(count: int, batch_size: int, nparts: int) -> List[Tuple[int, int]]:
    """Split ``range(count)`` into at most ``nparts`` contiguous ranges on batch boundaries.

    Boundaries fall on multiples of ``batch_size`` so that every part sees the batches a
    serial build would see (the first batch decides the dtype and layout).
    """
    if count <= 0:
        return []
    batches = -(-count // batch_size)
    nparts = max(1, min(nparts, batches))
    per, extra = divmod(batches, nparts)
    ranges, first = [], 0
    for p in range(nparts):
        n = per + (p < extra)
        stop = min(count, (first + n) * batch_size)
        ranges.append((first * batch_size, stop))
        first += n
    return ranges


def parts_dir(out_dir: PathLike) -> Path:
    """A new private directory beside ``out_dir`` for the parts of one build (unique per call)."""
    out_dir = Path(out_dir).absolute()
    fs.makedirs(out_dir.parent)
    path = out_dir.parent / f".{out_dir.name}.parts-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(path)
    return path


def name_sample(error: BaseException, index: int) -> BaseException:
    """``error`` of the same type with a message that names sample ``index`` of the dataset."""
    message = f"sample {index} of the dataset raised {type(error).__name__}: {error}"
    try:
        named = type(error)(message)
    except Exception:  # an exception type with another constructor: keep it, add a note
        if hasattr(error, "add_note"):
            error.add_note(message)
        return error
    named.__cause__ = error
    return named


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
    """
    from . import build

    return build.build_part(Path(part_dir), disk_kind(kind), indexable, start, stop, batch_size, options or {})


def merge(out_dir: PathLike, parts: Sequence[Union[Part, PathLike]], verbose: bool = False, durable: bool = False) -> None:
    """Publish ``parts`` (maps of one kind), in order, as one map at ``out_dir``, atomically.

    The parts are left untouched; remove them after. The merged dtype is the first part's;
    other parts are cast to it when no value changes, else a ValueError names the part and
    the sample.
    """
    from . import merging

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
