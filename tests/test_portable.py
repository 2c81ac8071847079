"""mmap_ninja without the POSIX calls it prefers: as on Windows, or on a system without them.

Each test runs Python in a subprocess that hides ``fcntl``, ``os.pread``, ``os.pwrite``,
``os.pwritev``, ``os.copy_file_range`` and ``renameat2`` before mmap_ninja is imported, so
that mmap_ninja falls back to seek-and-write, a lock file (or ``msvcrt.locking``) and two
renames. The build, read, append, extend and rebuild tests of the core test files then run
a second time in that mode.

What the lock-file fallback cannot guarantee the way ``flock`` does (that the lock dies with
its process) is tested for its documented behaviour: the lock file names the process, and
the next writer removes it once that process is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

HERE = Path(__file__).resolve().parent

# Prepended to every script run in the portable mode. argv[1] says which lock to leave:
# "lockfile" (no fcntl, no msvcrt) or "msvcrt" (a stand-in msvcrt with its semantics).
HIDE = r'''
import ctypes, os, sys
assert "mmap_ninja" not in sys.modules
import fcntl as _real_fcntl
LOCK_MODE = sys.argv.pop(1)
if LOCK_MODE == "msvcrt":
    import errno, types
    _msvcrt = types.ModuleType("msvcrt")
    _msvcrt.LK_UNLCK, _msvcrt.LK_NBLCK = 0, 2
    def _locking(fd, mode, nbytes):
        # like Windows: a byte range from the file position, held per handle; here by flock
        if os.lseek(fd, 0, os.SEEK_CUR) != 0 or nbytes != 1:
            raise AssertionError("mmap_ninja must lock the first byte")
        try:
            _real_fcntl.flock(fd, _real_fcntl.LOCK_UN if mode == 0 else _real_fcntl.LOCK_EX | _real_fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(errno.EDEADLK, "Resource deadlock avoided") from None
    _msvcrt.locking = _locking
    sys.modules["msvcrt"] = _msvcrt
else:
    sys.modules["msvcrt"] = None
sys.modules["fcntl"] = None  # import fcntl now raises ImportError
for _name in ("pread", "pwrite", "pwritev", "preadv", "copy_file_range"):
    if hasattr(os, _name):
        delattr(os, _name)

class _NoRenameat2(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "renameat2":
            raise AttributeError(name)
        return super().__getattr__(name)

ctypes.CDLL = _NoRenameat2
from mmap_ninja import fs as _fs
assert _fs.fcntl is None and (_fs.msvcrt is None) == (LOCK_MODE == "lockfile")
'''

RUN_PYTEST = r'''
import pytest
sys.exit(pytest.main(sys.argv[1:]))
'''

# The build, read, append, extend and rebuild tests. Left out: joblib's (its workers would not
# inherit the mode) and the many-indexing ones (reads go through memory maps, the same everywhere).
CORE_TESTS = ["test_ragged.py", "test_strings.py", "test_numpy_maps.py"]
LEFT_OUT = "not joblib and not slices and not index_lists and not padded and not iter_chunks and not boolean_masks"


def portable(script: str, *args: str, lock: str = "lockfile", **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HIDE + script, lock, *args], cwd=HERE, text=True, **kwargs)


def test_core_tests_pass_without_fcntl_pread_pwrite_and_renameat2(tmp_path):
    args = [*CORE_TESTS, "-q", "-x", "-p", "no:cacheprovider", "-k", LEFT_OUT, "--basetemp", str(tmp_path / "t")]
    proc = portable(RUN_PYTEST, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-5000:]
    assert " passed" in out and "failed" not in out, out[-2000:]


FALLBACKS = r'''
import numpy as np
from pathlib import Path
from mmap_ninja import RaggedMmap
root = Path(sys.argv[1])
a, b = root / "a", root / "b"
a.mkdir(); b.mkdir(); (a / "x").write_bytes(b"a"); (b / "x").write_bytes(b"b")
assert _fs.exchange(a, b) is False  # renameat2 is hidden
m = RaggedMmap.from_lists(root / "m", [np.arange(3)])
m.extend([np.arange(5)] * 3)
RaggedMmap.from_lists(root / "m", [np.arange(2)] * 2)  # rebuilt over the map: two renames
m = RaggedMmap(root / "m")
assert len(m) == 2 and m[1].tolist() == [0, 1]
assert sorted(p.name for p in root.iterdir()) == ["a", "b", "m"], list(root.iterdir())
print("ok")
'''


def test_fallbacks_are_the_ones_used(tmp_path):
    proc = portable(FALLBACKS, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip().endswith("ok"), out


# A writer that stops in its first write, holding the lock, until its stdin says go.
PAUSED_WRITER = r'''
import numpy as np
from mmap_ninja import RaggedMmap
m = RaggedMmap(sys.argv[1])
real = _fs.pwritev
def paused(fd, buffers, offset):
    if not getattr(paused, "done", False):
        paused.done = True
        print("paused", flush=True)
        sys.stdin.readline()
    return real(fd, buffers, offset)
_fs.pwritev = paused
m.extend([np.full(4, 7)] * 2)
print("appended", flush=True)
'''

SECOND_WRITER = r'''
import numpy as np
from mmap_ninja import MapBusyError, RaggedMmap
m = RaggedMmap(sys.argv[1])
try:
    m.extend([np.full(2, 9)])
except MapBusyError as e:
    print("busy:", e)
else:
    print("appended", len(m))
'''


def run_second_writer(path: Path, lock: str) -> str:
    proc = portable(SECOND_WRITER, str(path), lock=lock, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.strip()


def start_paused_writer(path: Path, lock: str) -> subprocess.Popen:
    writer = portable(PAUSED_WRITER, str(path), lock=lock, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout.readline().strip() == "paused", writer.stderr.read()
    return writer


def make_map(path: Path) -> None:
    import numpy as np

    from mmap_ninja import RaggedMmap

    RaggedMmap.from_lists(path, [np.arange(3)] * 3)


def read_lengths(path: Path) -> List[int]:
    from mmap_ninja import RaggedMmap

    return [len(s) for s in RaggedMmap(path)]


@pytest.mark.parametrize("lock", ["lockfile", "msvcrt"])
def test_second_writer_process_is_refused_then_admitted_after_the_first_finishes(tmp_path, lock):
    path = tmp_path / "m"
    make_map(path)
    writer = start_paused_writer(path, lock)
    try:
        out = run_second_writer(path, lock)
        assert out.startswith("busy:") and str(path) in out, out
        if lock == "lockfile":
            assert f"process {writer.pid}" in out and ".writer.lock.held" in out, out
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "appended"
    finally:
        writer.kill()
        writer.wait()
    assert not (path / ".writer.lock.held").exists()
    assert run_second_writer(path, lock) == "appended 6"
    assert read_lengths(path) == [3, 3, 3, 4, 4, 2]


@pytest.mark.parametrize("lock", ["lockfile", "msvcrt"])
def test_writer_killed_holding_the_lock_does_not_block_the_next_one(tmp_path, lock):
    """flock and msvcrt locks die with the process; the lock file is removed by the next writer
    once no process has the id it names. Either way the half-done append is repaired."""
    path = tmp_path / "m"
    make_map(path)
    writer = start_paused_writer(path, lock)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert (path / ".writer.lock.held").exists() == (lock == "lockfile")  # what the fallback leaves
    assert run_second_writer(path, lock) == "appended 4"
    assert read_lengths(path) == [3, 3, 3, 2]


SAME_PROCESS = r'''
import numpy as np
from mmap_ninja import MapBusyError, RaggedMmap
first, second = RaggedMmap(sys.argv[1]), RaggedMmap(sys.argv[1])
real = _fs.pwritev
def nested(fd, buffers, offset):
    _fs.pwritev = real
    try:
        second.extend([np.arange(1)])
    except MapBusyError:
        print("busy")
    return real(fd, buffers, offset)
_fs.pwritev = nested
first.extend([np.arange(2)])
second.extend([np.arange(5)])
print([len(s) for s in RaggedMmap(sys.argv[1])])
'''


@pytest.mark.parametrize("lock", ["lockfile", "msvcrt"])
def test_second_handle_in_the_same_process_is_refused(tmp_path, lock):
    path = tmp_path / "m"
    make_map(path)
    proc = portable(SAME_PROCESS, str(path), lock=lock, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split() == ["busy", "[3,", "3,", "3,", "2,", "5]"], out


def test_lock_file_of_a_live_process_is_respected(tmp_path):
    """A lock file naming a running process (here: this one) is never removed by another writer."""
    path = tmp_path / "m"
    make_map(path)
    (path / ".writer.lock.held").write_text(str(os.getpid()))
    out = run_second_writer(path, "lockfile")
    assert out.startswith("busy:") and f"process {os.getpid()}" in out, out
    assert (path / ".writer.lock.held").read_text() == str(os.getpid())
