"""Every read of a map's files, in one place: the mirror of ``fs.py`` (which every write uses).

A reader asks a :class:`MapFiles` handle for one map directory, never the file system:

* ``read(name) -> bytes``: a small file whole (``type.ninja``, ``dtype.ninja``, ``shape.ninja``);
* ``exists(name)``, ``size(name)``, ``list(name="")``: what is there, how long, which entries;
* ``sub(name) -> MapFiles``: the handle of a subdirectory (``starts``, ``shapes``), of the
  same version of the map as its parent;
* ``view(name, nbytes, access="r")``: the first ``nbytes`` of a data file as a buffer that
  numpy can wrap; locally a zero-copy memory map (``access`` "r" read-only, "w" writable,
  "c" copy-on-write), a remote implementation may fetch the bytes instead;
* ``read_ranges(name, starts, stops)``: a batch of byte ranges of one file at once (locally
  slices of ``view``; remotely one batched request), for readers that do not map.

``name`` is a path relative to the handle's directory, ``/``-separated (``"starts/shape.ninja"``).
Every error is :class:`MapFormatError` naming the file (``path(name)``), except
``FileNotFoundError`` from :func:`open_map_files` when the directory itself is missing.

One version per open
--------------------
A map at a path may be replaced while a reader opens it (a rebuild swaps a new directory in;
see ``publish.py``). :class:`LocalMapFiles` opens the directory once (``O_DIRECTORY``) and
every file relative to that descriptor (``dir_fd``), so all the files it reads belong to the
directory that was at the path when the handle was taken, whatever renames happen meanwhile.
The swapping writer then removes that old directory; a file not opened yet is then missing.
:func:`read_one_version` therefore retries an open whose files went missing or disagree when
the directory at the path is no longer the one the handle holds (``moved()``): the retry
opens the new version whole. Where ``dir_fd`` is not supported (Windows) files are opened by
path and the handle checks, after the open, that the directory still is the one it started
with (same test, same retry).

Copy-on-write
-------------
``view(..., access="r")`` maps *private* (``mmap.ACCESS_COPY``, ``MAP_PRIVATE``) from a file
opened read-only, so read-only file systems still work. Its pages stay the page cache's until
something writes to one; that page then becomes a private copy of this process. So a tensor
sharing a sample's memory (``mmap_ninja.torch``) can be written to: the process does not
crash (as it would on a ``PROT_READ`` mapping) and the file never changes. The arrays a map
hands out over such a mapping are still marked read-only: only code that knows the memory is
private (:func:`is_private`) makes writable views of it. Where a private mapping would cost
memory it should not, the view is mapped shared read-only instead and :func:`is_private`
says False, so such samples are copied rather than shared:

- ``vm.overcommit_memory=2`` (strict accounting, Linux): a private writable mapping is
  charged in full against the commit limit when it is made, although no page is copied
  until written, so opening a 100 GB map would use up 100 GB of the commit limit;
- the kernel refuses the private mapping (``ENOMEM``; under the default heuristic, a single
  mapping larger than RAM plus swap);
- Windows, which charges a copy-on-write view against the commit limit too.

A second implementation (object storage) subclasses :class:`MapFiles`; its ``version()``
is whatever identifies one published version there (an etag of the commit file, a
generation number), and ``moved()`` compares it with the current one.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from .errors import MapFormatError

PathLike = Union[str, "os.PathLike[str]"]
Buffer = Union[mmap.mmap, bytes, bytearray]
T = TypeVar("T")

_BINARY = getattr(os, "O_BINARY", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_SMALL_FILE = 1 << 16  # read size for the small files
_ACCESS = {"r": mmap.ACCESS_READ, "w": mmap.ACCESS_WRITE, "c": mmap.ACCESS_COPY}
RETRIES = 8  # opens of a map that was replaced meanwhile, before its error is believed


class MapFiles:
    """The files of one map directory, as one version of the map (see the module docstring).

    Subclasses implement the methods that raise NotImplementedError; ``close`` releases what
    the handle holds (buffers returned by ``view`` stay valid after it).
    """

    path: Path  # the directory, for messages and for what cannot be read through the handle
    pinned = False  # True when every file read is of one version by construction (no check needed)

    def file(self, name: str) -> Path:
        """The path of ``name`` for messages."""
        return self.path / name

    def read(self, name: str) -> bytes:
        """The whole content of a small file."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        """Whether ``name`` (a file or a directory) is there."""
        raise NotImplementedError

    def is_dir(self, name: str) -> bool:
        """Whether ``name`` is a directory."""
        raise NotImplementedError

    def size(self, name: str) -> int:
        """The byte size of a file."""
        raise NotImplementedError

    def list(self, name: str = "") -> List[str]:
        """The names of the entries of a directory (the handle's own by default), sorted."""
        raise NotImplementedError

    def sub(self, name: str) -> "MapFiles":
        """The handle of the subdirectory ``name``, of the same version."""
        raise NotImplementedError

    def view(self, name: str, nbytes: int, access: str = "r") -> Buffer:
        """The first ``nbytes`` of a file as a buffer (MapFormatError if it holds fewer)."""
        raise NotImplementedError

    def read_ranges(self, name: str, starts: Sequence[int], stops: Sequence[int]) -> List[Any]:
        """The bytes ``starts[i]:stops[i]`` of a file, for every i (each a bytes-like object)."""
        end = int(max(stops)) if len(stops) else 0
        buffer = memoryview(self.view(name, end)).toreadonly()  # also over a copy-on-write mapping
        return [buffer[int(s) : int(e)] for s, e in zip(starts, stops)]

    def version(self) -> Any:
        """What identifies the version this handle reads."""
        raise NotImplementedError

    def file_version(self, name: str) -> Any:
        """What identifies the current content of one file (None if missing): for files that
        are replaced one by one (a Megatron ``.idx`` + ``.bin`` pair), not a map directory."""
        raise NotImplementedError

    def moved(self) -> bool:
        """Whether the path now holds another version than this handle (a rebuild swapped it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the handle (views it returned stay valid)."""

    def __enter__(self) -> "MapFiles":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- copy-on-write mappings (see the module docstring) ------------------------------------


class PrivateMap(mmap.mmap):
    """A copy-on-write mapping of a file opened read-only: writes stay in this process."""


_strict: Optional[bool] = None


def _strict_overcommit() -> bool:
    """Whether Linux charges private writable mappings in full (``vm.overcommit_memory=2``)."""
    global _strict
    if _strict is None:
        try:
            with open("/proc/sys/vm/overcommit_memory", "rb") as f:
                _strict = f.read().strip() == b"2"
        except OSError:
            _strict = False
    return _strict


def map_read_only(fileno: int, nbytes: int) -> mmap.mmap:
    """The first ``nbytes`` of a file opened read-only: private (copy-on-write) where that is
    free of charge, else shared read-only (see the module docstring)."""
    if sys.platform != "win32" and not _strict_overcommit():
        try:
            return PrivateMap(fileno, nbytes, access=mmap.ACCESS_COPY)
        except OSError as e:
            if e.errno != errno.ENOMEM:
                raise
    return mmap.mmap(fileno, nbytes, access=mmap.ACCESS_READ)


def is_private(array: Any) -> bool:
    """Whether writing to ``array``'s memory stays in this process and cannot crash it.

    True for plain process memory that numpy lets us write, and for arrays over a
    :class:`PrivateMap`; False for arrays over any other mapping (shared: a write would
    reach the file, or crash the process if it is mapped read-only) and for memory that is
    read-only for good (``bytes``).
    """
    base = array
    while hasattr(base, "base") and base.base is not None and not isinstance(base, mmap.mmap):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if isinstance(base, PrivateMap):
        return True
    if isinstance(base, (mmap.mmap, bytes)):
        return False
    return bool(getattr(array, "flags", None) is not None and array.flags.writeable)


def _identity(st: os.stat_result) -> Tuple[int, int]:
    return (st.st_dev, st.st_ino)


class LocalMapFiles(MapFiles):
    """A map directory on a local file system, every file opened relative to one descriptor."""

    def __init__(self, path: PathLike, _fd: Optional[int] = None, _root: Optional["LocalMapFiles"] = None):
        self.path = Path(path)
        self._root = _root  # the handle whose directory this one is under (for moved())
        self._fd = -1
        if _fd is not None:
            self._fd = _fd
        elif os.open in os.supports_dir_fd and _DIRECTORY:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | _DIRECTORY)
            except NotADirectoryError:
                raise MapFormatError(f"{self.path} is a file, not a map directory") from None
        else:  # no dir_fd here: paths, and the identity of the directory checked by moved()
            st = os.stat(self.path)
            if not stat.S_ISDIR(st.st_mode):
                raise MapFormatError(f"{self.path} is a file, not a map directory")
        self._id = _identity(os.fstat(self._fd) if self._fd >= 0 else os.stat(self.path))
        self.pinned = self._fd >= 0

    # -- opening one file --------------------------------------------------------------------

    def _open(self, name: str, flags: int = os.O_RDONLY) -> int:
        try:
            if self._fd >= 0:
                return os.open(name, flags | _BINARY, dir_fd=self._fd)
            return os.open(self.path / name, flags | _BINARY)
        except FileNotFoundError:
            raise MapFormatError(f"{self.file(name)} is missing") from None
        except NotADirectoryError:
            raise MapFormatError(f"{self.file(name)} is missing: a file stands where its folder should be") from None
        except IsADirectoryError:
            raise MapFormatError(f"{self.file(name)} is a directory, not a file") from None
        except OSError as e:  # named relative to the directory: name the whole path instead
            raise OSError(e.errno, e.strerror, str(self.file(name))) from None

    def _stat(self, name: str) -> Optional[os.stat_result]:
        try:
            if self._fd >= 0:
                return os.stat(name, dir_fd=self._fd, follow_symlinks=True)
            return os.stat(self.path / name)
        except (FileNotFoundError, NotADirectoryError):
            return None

    # -- the interface -----------------------------------------------------------------------

    def read(self, name: str) -> bytes:
        # os-level calls: a map has a dozen small files, and io's buffered objects cost more than the reads
        fd = self._open(name)
        try:
            chunks = [_read_some(fd, self.file(name))]
            while len(chunks[-1]) == _SMALL_FILE or (len(chunks) > 1 and chunks[-1]):
                chunks.append(_read_some(fd, self.file(name)))
        finally:
            os.close(fd)
        return b"".join(chunks)

    def exists(self, name: str) -> bool:
        return self._stat(name) is not None

    def is_dir(self, name: str) -> bool:
        st = self._stat(name)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def size(self, name: str) -> int:
        st = self._stat(name)
        if st is None:
            raise MapFormatError(f"{self.file(name)} is missing")
        return st.st_size

    def list(self, name: str = "") -> List[str]:
        try:
            if self._fd >= 0 and not name:
                return sorted(os.listdir(self._fd))
            if self._fd >= 0:
                fd = self._open(name, os.O_RDONLY | _DIRECTORY)
                try:
                    return sorted(os.listdir(fd))
                finally:
                    os.close(fd)
            return sorted(os.listdir(self.path / name))
        except (FileNotFoundError, NotADirectoryError):
            raise MapFormatError(f"{self.file(name)} is missing") from None

    def sub(self, name: str) -> "LocalMapFiles":
        root = self._root or self
        if self._fd < 0:
            if not self.is_dir(name):
                raise MapFormatError(f"{self.file(name)} is missing")
            return LocalMapFiles(self.file(name), _root=root)
        fd = self._open(name, os.O_RDONLY | _DIRECTORY)
        return LocalMapFiles(self.file(name), _fd=fd, _root=root)

    def view(self, name: str, nbytes: int, access: str = "r") -> Buffer:
        fd = self._open(name, os.O_RDWR if access == "w" else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < nbytes:
                raise MapFormatError(f"{self.file(name)} holds {size} bytes but the map needs {nbytes}: it is truncated")
            if nbytes == 0:  # mmap refuses empty mappings
                return b"" if access == "r" else bytearray()
            if access == "r":  # copy-on-write where possible: a write to a sample cannot crash nor reach the file
                return map_read_only(fd, nbytes)
            return mmap.mmap(fd, nbytes, access=_ACCESS[access])
        finally:
            os.close(fd)

    def version(self) -> Tuple[int, int]:
        return self._id

    def file_version(self, name: str) -> Any:
        st = self._stat(name)
        return None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def moved(self) -> bool:
        root = self._root or self
        try:
            return _identity(os.stat(root.path)) != root._id
        except FileNotFoundError:
            return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # a handle forgotten without close() must not leak its descriptor
        try:
            self.close()
        except OSError:
            pass


def _read_some(fd: int, path: Path) -> bytes:
    try:
        return os.read(fd, _SMALL_FILE)
    except IsADirectoryError:
        raise MapFormatError(f"{path} is a directory, not a file") from None


# The implementation for paths; object storage plugs its own in here (a path-like with a scheme).
_OPENERS: List[Tuple[Callable[[PathLike], bool], Callable[[PathLike], MapFiles]]] = []


def register_opener(accepts: Callable[[PathLike], bool], opener: Callable[[PathLike], MapFiles]) -> None:
    """Let ``opener`` make the handles of the locations ``accepts`` says yes to (e.g. ``s3://``)."""
    _OPENERS.insert(0, (accepts, opener))


def open_map_files(path: PathLike) -> MapFiles:
    """A handle on the map directory at ``path`` (FileNotFoundError if there is nothing there)."""
    for accepts, opener in _OPENERS:
        if accepts(path):
            return opener(path)
    return LocalMapFiles(path)


def read_one_version(path: PathLike, read: Callable[[MapFiles], T], retries: int = RETRIES) -> T:
    """``read(files)`` of one whole version of the map at ``path``.

    A MapFormatError is retried on a new handle when the map at ``path`` was replaced while
    ``read`` ran (the handle ``moved()``); otherwise, or after ``retries`` replacements in a
    row, it is raised. A handle that is not ``pinned`` is checked after a success too. The handle is closed afterwards: ``read`` keeps views, not the handle.
    """
    for attempt in range(retries + 1):
        files = open_map_files(path)
        try:
            result = read(files)
            if files.pinned or attempt == retries or not files.moved():
                return result
        except MapFormatError:
            if attempt == retries or not files.moved():
                raise
        finally:
            files.close()
    raise AssertionError("unreachable")


def as_array(buffer: Buffer, dtype: np.dtype, count: int) -> np.ndarray:
    """``count`` items of ``dtype`` over ``buffer`` (a view, no copy)."""
    return np.frombuffer(buffer, dtype, count)
