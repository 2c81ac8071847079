"""A kind added by one module (tests/example_kind.py) is built, merged, opened, counted,
inspected and repaired by the library's own code paths, through the registry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import example_kind  # noqa: E402  (registers the "lines" kind)

from mmap_ninja import Skip, kinds, open_existing, parallel, parts  # noqa: E402


class Sentences:
    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int):
        return Skip("seven") if i == 7 else f"sentence number {i}"


EXPECTED = [f"sentence number {i}" for i in range(23) if i != 7]


@pytest.mark.parametrize("jobs", [None, 2])
def test_the_engine_builds_a_registered_kind_serially_and_in_parallel(tmp_path, jobs):
    skipped = parallel.build_indexable(tmp_path / "m", "lines", Sentences(), 4, jobs, False)
    assert skipped == [(7, "seven")]
    m = open_existing(tmp_path / "m")  # found by its type.ninja
    assert isinstance(m, example_kind.LinesMap) and m.lines == EXPECTED
    assert kinds.on_disk(tmp_path / "m") is example_kind.LINES and kinds.get("lines").count(tmp_path / "m") == 22


def test_parts_merge_inspect_and_repair_a_registered_kind(tmp_path):
    a = parts.build_part(tmp_path / "a", "lines", Sentences(), 0, 10, batch_size=3)
    b = parts.build_part(tmp_path / "b", "lines", Sentences(), 10, 23, batch_size=3)
    assert a.skipped == ((7, "seven"),) and b.count == 13
    parts.merge(tmp_path / "m", [a, b])
    assert open_existing(tmp_path / "m").lines == EXPECTED
    kind = kinds.get("lines")
    assert kind.inspect(tmp_path / "m")["samples"] == 22
    kind.repair(tmp_path / "m", 5)
    assert open_existing(tmp_path / "m").lines == EXPECTED[:5]


def test_a_bad_sample_of_a_registered_kind_is_named_by_its_dataset_index(tmp_path):
    data = ["a", Skip(), "b", "c\nd"]
    with pytest.raises(TypeError, match="^sample 3 is not a str without newlines"):
        parallel.build_indexable(tmp_path / "m", "lines", data, 2, None, False)
