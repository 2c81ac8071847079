"""An example kind of map, written as a user would add one: one module that registers itself.

A "lines" map stores str samples without newlines, one per line of ``lines.txt``, beside a
``type.ninja`` that says "lines". Small on purpose: it shows every hook of ``kinds.Kind``
(open, build, count, merge, inspect, repair). Used only by tests/test_example_kind.py.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from mmap_ninja import fs, kinds
from mmap_ninja.errors import MapFormatError, sample_error

DATA = "lines.txt"


class LinesMap:
    """The samples of a lines map, read once into memory (a real kind would map them)."""

    def __init__(self, path: Path, mode: Optional[str] = None, count: Optional[int] = None):
        self.path = Path(path)
        lines = (self.path / DATA).read_text(encoding="utf-8").split("\n")[:-1]
        self.lines = lines if count is None else lines[:count]

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> str:
        return self.lines[i]


class _Writer:
    """What build.py's engine drives: ``locked()``, then ``append`` through the encoder."""

    def __init__(self, map_dir: Path):
        self.fd = fs.open_file(map_dir / DATA, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    @contextmanager
    def locked(self, lock: bool = True) -> Iterator["_Writer"]:
        yield self  # a real kind takes its writer lock here

    def close(self) -> None:
        fs.close(self.fd)


class LinesEncoder:
    """Batches of str -> lines (the interface of build.RaggedEncoder and its siblings)."""

    def __init__(self, options: Dict[str, Any]):
        pass

    def encode(self, batch: Sequence[Any], position: int, piece: Optional[int] = None) -> List[List[str]]:
        for i, s in enumerate(batch):
            if not isinstance(s, str) or "\n" in s:
                raise sample_error(TypeError, position + i, "is not a str without newlines")
        return [list(batch)] if len(batch) else []

    def create(self, map_dir: Path, first: Any) -> _Writer:
        self.create_empty(map_dir)
        return _Writer(map_dir)

    def create_empty(self, map_dir: Path) -> None:
        fs.touch(map_dir / DATA)
        fs.write_file(map_dir / "type.ninja", b"lines")

    @staticmethod
    def append(writer: _Writer, lines: List[str], durable: bool, published: bool) -> int:
        fs.pwrite(writer.fd, "".join(s + "\n" for s in lines).encode("utf-8"), 0)  # O_APPEND: at the end
        return len(lines)


class LinesMerger:
    """Appends lines maps, in order, into a new map in ``tmp`` (the engine's merger interface)."""

    def __init__(self, tmp: Path, one_dataset: bool = True, bar: Any = None):
        self.tmp, self.count, self._writer = tmp, 0, None

    def add(self, path: Path) -> None:
        if self._writer is None:
            self._writer = LinesEncoder({}).create(self.tmp, None)
        part = LinesMap(path)
        LinesEncoder.append(self._writer, part.lines, False, False)
        self.count += len(part)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def count(path: Path) -> int:
    return len(LinesMap(path))


def inspect(path: Path) -> Dict[str, Any]:
    m = LinesMap(path)
    return {"kind": "lines", "samples": len(m), "longest": max(map(len, m.lines), default=0)}


def repair(path: Path, n: int) -> None:
    m = LinesMap(path)
    if len(m) < n:
        raise MapFormatError(f"{path / DATA} holds {len(m)} lines; cannot roll back to {n}")
    fd = fs.open_file(path / DATA, os.O_WRONLY)
    try:
        fs.ftruncate(fd, len("".join(s + "\n" for s in m.lines[:n]).encode("utf-8")))
    finally:
        fs.close(fd)


LINES = kinds.register(kinds.Kind(
    "lines", LinesMap, disk="lines", encoder=LinesEncoder, count=count, merger=LinesMerger,
    inspect=inspect, repair=repair,
))
