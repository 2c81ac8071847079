"""Platform calls in one place: what differs between Linux, macOS and Windows.

Every module that changes files on disk goes through these functions, for two reasons:

* a portable fallback lives next to each fast path (``pwritev`` or seek and write,
  ``flock`` or ``msvcrt.locking`` or a lock file, ``renameat2`` or two renames);
* the power-loss tests (tests/test_power_loss.py) record every write, truncate, fsync,
  rename and mkdir of a build or an append here, and replay them as a crash would.

Which call is used is decided when the call is made, not at import, so that a test may
hide one (or wrap it) at any time. For the same reason the functions here call each other
through the module (``pwrite``, not ``os.pwrite``), and code that changes a map's files calls
only these: ``open_file`` (creating or truncating), ``write_file``, ``touch``, ``pwrite``,
``pwritev``, ``ftruncate``, ``copy_range``, ``fsync``, ``fsync_all``, ``sync_path``,
``sync_paths``, ``mkdir``,
``makedirs``, ``replace``, ``swap_in`` (``exchange``) and ``rmtree``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import List, Optional, Sequence, Union

from .errors import MapBusyError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

try:
    import msvcrt
except ImportError:  # everywhere but Windows
    msvcrt = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]

_COPY_PIECE = 1 << 24  # bytes per buffered copy step where copy_file_range is missing
_BINARY = getattr(os, "O_BINARY", 0)  # Windows opens in text mode (\n -> \r\n) without it
# Seek-then-write is two calls: one file offset per descriptor must not be moved by another
# thread in between. Writers of one map are already one at a time; this guards the rest.
_SEEK_LOCK = threading.Lock()


# --- files ---------------------------------------------------------------------------------


def open_file(path: PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` in binary mode on every platform."""
    return os.open(path, flags | _BINARY, mode)


def close(fd: int) -> None:
    os.close(fd)


def write_file(path: PathLike, content: bytes) -> None:
    """Create or overwrite a small file with ``content``."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        view, done = memoryview(content).cast("B"), 0
        while done < view.nbytes:
            done += pwrite(fd, view[done:], done)
    finally:
        os.close(fd)


def touch(path: PathLike) -> None:
    """Create an empty file, or leave an existing one as it is."""
    os.close(open_file(path, os.O_WRONLY | os.O_CREAT))


def mkdir(path: PathLike, exist_ok: bool = False) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        if not (exist_ok and os.path.isdir(path)):
            raise


def makedirs(path: PathLike) -> None:
    """Create ``path`` and its missing parents, one ``mkdir`` each (so each can be recorded)."""
    path = Path(path)
    if path.is_dir():
        return
    makedirs(path.parent)
    mkdir(path, exist_ok=True)


def rmtree(path: PathLike) -> None:
    """Remove a directory tree, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)


def link_or_copy(src: PathLike, dst: PathLike) -> None:
    """``dst`` as a hard link to ``src`` (the same file), or a copy where links are not supported."""
    try:
        os.link(src, dst)
    except OSError:  # FAT, some network file systems
        shutil.copy2(src, dst)


def replace(src: PathLike, dst: PathLike) -> None:
    os.replace(src, dst)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        if n == 0:
            raise OSError(f"could not write to file descriptor {fd}")
        data = data[n:]


# --- positioned reads and writes -------------------------------------------------------------


def pread(fd: int, count: int, offset: int) -> bytes:
    """Up to ``count`` bytes from ``offset`` (fewer only at the end of the file)."""
    native = getattr(os, "pread", None)
    if native is not None:
        return native(fd, count, offset)
    pieces, got = [], 0
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        while got < count:
            piece = os.read(fd, count - got)
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
    return b"".join(pieces)


def pwrite(fd: int, data: bytes, offset: int) -> int:
    """Write ``data`` at ``offset``; returns the bytes written (all of them in the fallback)."""
    native = getattr(os, "pwrite", None)
    if native is not None:
        return native(fd, data, offset)
    view = memoryview(data).cast("B")
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        _write_all(fd, view)
    return view.nbytes


def pwritev(fd: int, buffers: Sequence, offset: int) -> int:
    """Write buffers back to back from ``offset``; returns the bytes written.

    Raises ValueError (or BufferError) for a buffer that is not C-contiguous, as ``os.pwritev`` does.
    """
    native = getattr(os, "pwritev", None)
    if native is not None:
        return native(fd, buffers, offset)
    views = [memoryview(b) for b in buffers]
    for v in views:
        if not v.c_contiguous:  # as os.pwritev, which asks for a simple (C-contiguous) buffer
            raise ValueError("pwritev needs C-contiguous buffers")
    views = [v if v.ndim == 1 and v.format == "B" else v.cast("B") for v in views if v.nbytes]
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        for v in views:
            _write_all(fd, v)
    return sum(v.nbytes for v in views)


def ftruncate(fd: int, size: int) -> None:
    os.ftruncate(fd, size)


def copy_range(src_fd: int, dst_fd: int, count: int, src_offset: int, dst_offset: int) -> None:
    """Copy ``count`` bytes between two files at the given offsets (in-kernel where possible)."""
    copy = getattr(os, "copy_file_range", None)
    while count > 0 and copy is not None:
        try:
            done = copy(src_fd, dst_fd, count, src_offset, dst_offset)
        except OSError:  # not supported for these files (another file system): copy by hand
            break
        if done == 0:
            raise OSError(f"file {src_fd} ended {count} bytes early")
        count, src_offset, dst_offset = count - done, src_offset + done, dst_offset + done
    while count > 0:
        piece = pread(src_fd, min(count, _COPY_PIECE), src_offset)
        if not piece:
            raise OSError(f"file {src_fd} ended {count} bytes early")
        written = pwrite(dst_fd, piece, dst_offset)
        count, src_offset, dst_offset = count - written, src_offset + written, dst_offset + written


# --- durability ------------------------------------------------------------------------------


def fsync(fd: int) -> None:
    """Make a file's written bytes durable (on macOS through the drive's cache: F_FULLFSYNC)."""
    full = getattr(fcntl, "F_FULLFSYNC", None) if fcntl is not None else None
    if full is not None:
        try:
            fcntl.fcntl(fd, full)
            return
        except OSError:  # a file system without it (network, FAT): the plain fsync
            pass
    os.fsync(fd)




def fsync_all(fds: Sequence[int]) -> None:
    """fsync several files, one after another.

    One call, so that durability is one step wherever it is recorded or replaced. Issuing
    them from threads at once (to share journal commits) was measured slower on an idle
    ext4 machine (a ragged durable append: 1.8 ms against 1.4 ms), so they run in order.
    """
    for fd in fds:
        fsync(fd)


def sync_paths(paths: Sequence[PathLike]) -> None:
    """``sync_path`` of several files and directories at once (see ``fsync_all``)."""
    fds: List[int] = []
    try:
        for path in paths:
            if not (os.name == "nt" and os.path.isdir(path)):
                fds.append(open_file(path, os.O_RDONLY))
        fsync_all(fds)
    finally:
        for fd in fds:
            os.close(fd)


def sync_path(path: PathLike) -> None:
    """fsync a file or a directory (a directory's fsync makes its entries durable).

    Windows cannot open a directory as a file; there NTFS's journal orders the entries and
    this is a no-op for directories.
    """
    if os.name == "nt" and os.path.isdir(path):
        return
    fd = open_file(path, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


# --- replacing a directory ------------------------------------------------------------------


def exchange(a: PathLike, b: PathLike) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the system or the file system cannot.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(new: PathLike, target: PathLike, aside: PathLike) -> Path:
    """Put directory ``new`` at ``target``, an existing directory; returns where the old one is.

    With ``renameat2`` the two trade places in one step (the old one ends at ``new``), so
    ``target`` always holds a whole map. Elsewhere, two renames: the old one moves to
    ``aside``, then ``new`` to ``target``; in between ``target`` does not exist. On Windows
    a directory with a file open or mapped by any process cannot be renamed; that is
    reported, and the old map stays in place.
    """
    if exchange(new, target):
        return Path(new)
    try:
        replace(target, aside)
    except PermissionError as e:
        raise PermissionError(
            f"cannot replace the map at {target}: a process has one of its files open or mapped "
            f"(on Windows a map in use cannot be replaced); close it and build again"
        ) from e
    try:
        replace(new, target)
    except BaseException:
        replace(aside, target)  # put the old map back
        raise
    return Path(aside)


# --- processes and the writer lock ----------------------------------------------------------


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (True when unsure: callers then keep its files)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        try:
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return not ok or code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    """An exclusive, non-blocking lock that admits one writer at a time to a map.

    Each lock object is its own holder, also within one process. In order of preference:

    * ``fcntl.flock`` on ``path`` (Linux, macOS, every POSIX system);
    * ``msvcrt.locking`` of the first byte of ``path`` (Windows).

    Both die with the process that holds them. Where neither exists, the lock is the file
    ``path + ".held"``, created exclusively and holding the writer's process id; it outlives
    a killed writer, and the next writer removes it only when no process with that id runs.
    """

    def __init__(self, path: Path, busy_message: str):
        self.path = Path(path)
        self.held_path = Path(str(path) + ".held")
        self.busy_message = busy_message
        self._fd = -1
        self._holds_file = False

    def acquire(self) -> None:
        """Take the lock, or raise MapBusyError with ``busy_message`` if another holder has it."""
        if fcntl is None and msvcrt is None:
            self._acquire_file()
            return
        if self._fd < 0:
            self._fd = open_file(self.path, os.O_RDWR | os.O_CREAT)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MapBusyError(self.busy_message) from None
            return
        os.lseek(self._fd, 0, os.SEEK_SET)  # msvcrt locks bytes from the file position
        try:
            msvcrt.locking(self._fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            raise MapBusyError(self.busy_message) from None

    def release(self) -> None:
        if self._holds_file:
            self._holds_file = False
            try:
                os.unlink(self.held_path)
            except FileNotFoundError:
                pass
        elif self._fd < 0:
            return
        elif fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        else:
            os.lseek(self._fd, 0, os.SEEK_SET)
            msvcrt.locking(self._fd, msvcrt.LK_UNLCK, 1)

    def close(self) -> None:
        if self._holds_file:
            self.release()
        if self._fd >= 0:
            os.close(self._fd)  # also drops an flock or msvcrt lock still held
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def _acquire_file(self) -> None:
        for _ in range(2):  # a second try after removing the file of a writer that died
            try:
                fd = open_file(self.held_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pid = self._holder()
                if pid is None or process_alive(pid):
                    holder = "" if pid is None else f" (process {pid})"
                    raise MapBusyError(
                        f"{self.busy_message}{holder}; if no such writer runs, remove {self.held_path}"
                    ) from None
                try:
                    os.unlink(self.held_path)
                except FileNotFoundError:
                    pass
                continue
            try:
                _write_all(fd, memoryview(str(os.getpid()).encode("ascii")))
            finally:
                os.close(fd)
            self._holds_file = True
            return
        raise MapBusyError(self.busy_message)

    def _holder(self) -> Optional[int]:
        try:
            with open(self.held_path, "rb") as f:
                return int(f.read().decode("ascii"))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):  # being written this instant, or damaged
            return None
