"""A map's layout, by job (this module gathers their names for the modules that use several):

- ``ondisk.py``: the format: files, vocabulary, invariants, decoding of the small files;
- ``reads.py``: the read seam: every read of a map's files, one version per open;
- ``opening.py``: opening a map for reading (memory maps of its committed samples);
- ``commit.py``: the commit protocol (``SpansWriter``, ``ArrayWriter``), repair, roll-back;
- ``publish.py``: building in a private directory and swapping the map in whole;
- ``check.py``: one check of a whole map (``mmap-ninja info``, merges, the repair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from . import ondisk

from .commit import (ArrayWriter, SpansWriter, create_array, create_spans, hold_writer_lock, roll_back, spans_itemsize,
                     upgrade_to_nested, write_array_header, write_file, write_zstd_settings)
from .ondisk import (BYTE_KINDS, COMMIT, DATA, DTYPE, ENDS, FLATTENED_SHAPES, KIND, KINDS, LOCK, OFFSET, ORDER, SHAPE, SHAPES,
                     SHAPES_ARE_FLAT, STARTS, ZSTD_DICT, ZSTD_LEVEL, ArrayHeader, committed_count, expect_kind, read_array_header,
                     read_dtype, read_flat_flag, read_kind, read_shape_layout, read_zstd_settings)
from .opening import SpansView, map_array, open_spans
from .publish import building, check_can_build, is_map
from .reads import PathLike, open_map_files

_write_file = write_file  # the name 0.9.0's compatibility helpers (base.py) use


def read_shape(path: "PathLike") -> Tuple[int, ...]:
    """The axes in the shape file at ``path`` (e.g. ``map_dir / SHAPE``)."""
    path = Path(path)
    with open_map_files(path.parent) as files:
        return ondisk.read_shape(files, path.name)

__all__ = [
    "ArrayWriter", "SpansWriter", "create_array", "create_spans", "hold_writer_lock", "roll_back", "spans_itemsize", "upgrade_to_nested",
    "write_array_header", "write_file", "write_zstd_settings", "COMMIT", "DATA", "DTYPE", "ENDS", "FLATTENED_SHAPES", "KIND",
    "KINDS", "LOCK", "OFFSET", "ORDER", "SHAPE", "SHAPES", "SHAPES_ARE_FLAT", "STARTS", "ZSTD_DICT", "ZSTD_LEVEL", "BYTE_KINDS",
    "ArrayHeader", "committed_count", "expect_kind", "read_array_header", "read_dtype", "read_flat_flag", "read_kind",
    "read_shape", "read_shape_layout", "read_zstd_settings", "SpansView", "map_array", "open_spans", "building",
    "check_can_build", "is_map",
]
