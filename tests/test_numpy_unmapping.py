"""A same-shape map opened and dropped unmaps its file at once (no garbage collection needed).

The array ``open_existing`` returns indexes through a view of the mapping; had that view
been taken of the array itself, the array would hold itself through an ndarray, a cycle
the garbage collector cannot see, and every opened map would stay mapped for good.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import numpy as np_ninja

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")


def _mappings_of(path: Path) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if str(path) in line)


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_a_dropped_map_is_unmapped_at_once(tmp_path: Path, mode: str) -> None:
    np_ninja.from_ndarray(tmp_path / "m", np.arange(4096, dtype=np.float32).reshape(64, 64))
    data = (tmp_path / "m" / "data.ninja").resolve()
    gc.collect()
    before = _mappings_of(data)
    was_enabled = gc.isenabled()
    gc.disable()  # the point: plain reference counting suffices
    try:
        for _ in range(10):
            m = np_ninja.open_existing(tmp_path / "m", mode=mode)
            row, t_row, total = m[3], m.T[5], float((m + 1).sum())
            assert type(row) is np.ndarray and row[0] == 192 and t_row[0] == 5 and total == 4096 * 4097 / 2
            del m, row, t_row
        assert _mappings_of(data) == before
    finally:
        if was_enabled:
            gc.enable()
