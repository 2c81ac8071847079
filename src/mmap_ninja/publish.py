"""Publishing a map: built in a private directory beside its path, swapped in whole.

A new map is built in a private sibling directory ``.NAME.partial-PID-*`` and renamed into
place when complete, so a map either exists whole or not at all; an existing map at that
path is swapped out in one step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two
renames, see ``fs.swap_in``). Every write, fsync and rename goes through ``fs``. Leftovers of a
killed build are removed by the next build of the same path.

A reader that opens the map while it is swapped reads the old version or the new one
whole (``reads.py``: one directory handle per open).
"""

from __future__ import annotations

import functools
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from . import checksums, fs
from .ondisk import read_kind


def link_tree(src: Path, dst: Path, skip: set) -> None:
    """A copy of the tree ``src`` at ``dst`` made of hard links (copies where links fail)."""
    fs.mkdir(dst)
    for entry in os.scandir(src):
        if entry.name in skip:
            continue
        if entry.is_dir(follow_symlinks=False):
            link_tree(Path(entry.path), dst / entry.name, set())
        else:
            fs.link_or_copy(Path(entry.path), dst / entry.name)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def is_map(path: Path) -> bool:
    """Whether ``path`` holds a map (which a new build may replace)."""
    return read_kind(path) is not None


def check_can_build(out_dir: Path, replaceable: Callable[[Path], bool] = is_map, what: str = "a map") -> None:
    """Raise unless ``out_dir`` is free, an empty directory, or ``what`` we may replace."""
    if not out_dir.exists() or _is_empty_dir(out_dir):
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a directory for {what}")
    if not replaceable(out_dir):
        raise FileExistsError(f"{out_dir} holds files that are not {what}; refusing to overwrite them")


@contextmanager
def building(out_dir: Path, durable: bool = False, replaceable: Callable[[Path], bool] = is_map, what: str = "a map") -> Iterator[Path]:
    """A private directory to build a map in; on success it replaces ``out_dir`` at once.

    With ``durable``, every file and directory is fsynced before and after the rename.
    ``replaceable`` says what may be replaced at ``out_dir`` (a map; for a dataset of
    several maps, such a dataset), ``what`` names it in errors.
    """
    out_dir = Path(out_dir).absolute()
    check = functools.partial(check_can_build, out_dir, replaceable, what)
    check()
    fs.makedirs(out_dir.parent)
    remove_stale_partials(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(tmp)
    try:
        yield tmp
        if checksums.requested():  # checksum=True: the map appears with its checksums/
            checksums.add_tree(tmp)
        if durable:
            sync_tree(tmp)
        publish(tmp, out_dir, durable, check)
    except BaseException:
        fs.rmtree(tmp)
        raise


def publish(tmp: Path, out_dir: Path, durable: bool = False, check: Optional[Callable[[], None]] = None) -> None:
    if not out_dir.exists() or _is_empty_dir(out_dir):
        fs.replace(tmp, out_dir)
        if durable:
            fs.sync_path(out_dir.parent)
        return
    # again: something else may have appeared at out_dir meanwhile
    (check or functools.partial(check_can_build, out_dir))()
    aside = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
    old = fs.swap_in(tmp, out_dir, aside)
    if durable:  # the swap first: removing the old map's files must not reach the disk before it
        fs.sync_path(out_dir.parent)
    fs.rmtree(old)


def sync_tree(root: Path) -> None:
    paths: List[Path] = []
    for folder, _, files in os.walk(root):
        paths.extend(Path(folder) / name for name in files)
        paths.append(Path(folder))
    fs.sync_paths(paths)


def remove_stale_partials(out_dir: Path) -> None:
    """Remove what builds of ``out_dir`` killed before they finished left beside it."""
    for leftover in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            pid = int(leftover.name.rsplit(".partial-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if not fs.process_alive(pid):
            fs.rmtree(leftover)


