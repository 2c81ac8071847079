"""Readers and writers at the same time: readers keep what they have and pick up appends on
refresh(); a second writer is refused with MapBusyError instead of interleaving its bytes.

mmap_ninja 0.9.0 has no lock: two processes appending at once both write at the old end of
the offsets, so one's samples are lost or mixed with the other's; and its readers trust
shape files that a writer rewrites (truncate, then write) while they read them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

from mmap_ninja import MapBusyError
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import CATALOGUE, kind_params  # noqa: E402  (tests/ is on sys.path, see READER_PROCESS)

KINDS = kind_params("concurrency")


def sample(kind: str, i: int) -> Any:
    """Sample ``i`` of every map in these tests: known from its position alone."""
    return CATALOGUE[kind].sample(i)


def create(kind: str, path: Path, count: int) -> None:
    CATALOGUE[kind].build(path, CATALOGUE[kind].samples(count))


def open_reader(kind: str, path: Path) -> Any:
    return CATALOGUE[kind].open(path, False)


def append_batch(kind: str, path: Path, first: int, count: int, handle: Any = None) -> None:
    """Append samples ``first .. first+count-1`` with ``handle`` or a new writer."""
    CATALOGUE[kind].extend(path, CATALOGUE[kind].samples(count, first), handle)


def equal(got: Any, want: Any) -> bool:
    return CATALOGUE["ragged_flat"].equal(got, want)


def garbage_tails(path: Path) -> None:
    """What a killed append leaves: bytes past the committed end of every data file."""
    for data in path.rglob("data.ninja"):
        with open(data, "ab") as f:
            f.write(b"\xee" * 4096)


# --- readers in this process ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_reader_opened_before_appends_keeps_its_samples_and_refreshes(tmp_path, kind):
    path = tmp_path / "m"
    create(kind, path, 20)
    early = open_reader(kind, path)
    views = [early[i] for i in range(20)]  # views into the mapped files, for ragged and numpy maps
    n = 20
    for round_number in range(6):
        if round_number % 2:
            garbage_tails(path)  # the next writer repairs: it truncates files this reader has mapped
        append_batch(kind, path, n, 15)
        n += 15
        for i in range(20):
            assert equal(views[i], sample(kind, i)) and equal(early[i], sample(kind, i)), (round_number, i)
    late = open_reader(kind, path)
    assert len(late) == n and all(equal(late[i], sample(kind, i)) for i in range(n))
    if kind == "numpy":  # an np.memmap has a fixed shape: reopening is its refresh
        assert len(early) == 20
        return
    assert early.refresh() == n and len(early) == n
    assert all(equal(early[i], sample(kind, i)) for i in range(n))
    assert all(equal(s, sample(kind, i)) for i, s in enumerate(CATALOGUE[kind].rows(early[:])))
    assert all(equal(views[i], sample(kind, i)) for i in range(20))


@pytest.mark.parametrize("kind", ["ragged_flat", "strings", "numpy"])
def test_reader_keeps_its_samples_when_the_map_is_rebuilt(tmp_path, kind):
    """A builder replaces the map at its path in one step; an open reader keeps the old files."""
    path = tmp_path / "m"
    create(kind, path, 10)
    reader = open_reader(kind, path)
    views = [reader[i] for i in range(10)]
    if kind == "numpy":
        np_ninja.from_ndarray(path, np.zeros((3, 3, 2)))
    elif kind == "strings":
        StringsMmap.from_strings(path, ["other"] * 3)
    else:
        RaggedMmap.from_lists(path, [np.zeros(2, np.int64)] * 3)
    assert all(equal(reader[i], sample(kind, i)) and equal(views[i], sample(kind, i)) for i in range(10))
    assert len(open_reader(kind, path)) == 3


# --- a reader in another process while this one appends ----------------------------------------------

READER_PROCESS = r'''
import os, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from test_concurrency import equal, open_reader, sample
from pathlib import Path

kind, path, done_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[4])
m = open_reader(kind, path)
first = len(m)
kept = [m[i] for i in range(first)]  # held for the whole run: must never change
print("ready", flush=True)
seen, last = set(), 0
finished = False
while not finished:
    finished = done_file.exists()  # checked before reading: the last pass sees the final map
    if kind == "numpy":
        m = open_reader(kind, path)
        n = len(m)
    else:
        n = m.refresh()
    assert n >= last, f"the length went back from {last} to {n}"
    for i in list(range(max(0, n - 40), n)) + list(range(0, n, 97)):
        assert equal(m[i], sample(kind, i)), f"sample {i} of {n} is wrong"
    assert all(equal(kept[i], sample(kind, i)) for i in range(first)), "a sample held from the start changed"
    if n != last:
        print(n, flush=True)
    seen.add(n)
    last = n
final = int(done_file.read_text())
assert last == final, (last, final)
assert all(equal(m[i], sample(kind, i)) for i in range(final))
print(f"ok {len(seen)}", flush=True)
'''


@pytest.mark.parametrize("kind", KINDS)
def test_reader_process_while_writer_appends_and_repairs(tmp_path, kind):
    path, done = tmp_path / "m", tmp_path / "done"
    create(kind, path, 50)
    reader = subprocess.Popen([sys.executable, "-c", READER_PROCESS, kind, str(path), str(Path(__file__).parent), str(done)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        n = 50
        for batch in range(60):
            if batch % 4 == 3:
                garbage_tails(path)  # a fresh writer repairs it (truncates) while the reader reads
            append_batch(kind, path, n, 7)
            n += 7
            if batch % 10 == 9:  # let the reader catch up now and then, so it sees many lengths
                while int(reader.stdout.readline() or n) < n:
                    pass
        (tmp_path / "done.tmp").write_text(str(n))
        os.replace(tmp_path / "done.tmp", done)  # whole: the reader reads it as soon as it exists
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith("ok ")
    assert int(out.strip().splitlines()[-1].split()[1]) >= 6  # it read the map at 6 lengths at least


# --- two writers ----------------------------------------------------------------------------------------


def _fork_writer_paused_mid_append(kind: str, path: Path, first: int, count: int) -> tuple:
    """Fork a writer that stops at its first write to the map's files, holding the writer lock.

    Returns (pid, a pipe it reports on, a pipe that lets it go on).
    """
    paused_r, paused_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(paused_r)
            os.close(go_w)
            real_pwritev, real_pwrite = os.pwritev, os.pwrite
            state = {"paused": False}

            def pause() -> None:
                if not state["paused"]:
                    state["paused"] = True
                    os.write(paused_w, b"p")
                    os.read(go_r, 1)

            def pwritev(fd: int, buffers: Any, offset: int) -> int:
                pause()
                return real_pwritev(fd, buffers, offset)

            def pwrite(fd: int, data: Any, offset: int) -> int:
                pause()
                return real_pwrite(fd, data, offset)

            os.pwritev, os.pwrite = pwritev, pwrite
            append_batch(kind, path, first, count)
            code = 0
        finally:
            os._exit(code)
    os.close(paused_w)
    os.close(go_r)
    assert os.read(paused_r, 1) == b"p"
    return pid, paused_r, go_w


@pytest.mark.parametrize("then", ["finishes", "is killed"])
@pytest.mark.parametrize("kind", KINDS)
def test_second_writer_is_refused_while_another_process_appends(tmp_path, kind, then):
    path = tmp_path / "m"
    create(kind, path, 10)
    own = None if kind == "numpy" else open_reader(kind, path)  # a handle of this process, used to append
    pid, paused, go = _fork_writer_paused_mid_append(kind, path, 10, 5)
    try:
        with pytest.raises(MapBusyError, match=str(path)):
            append_batch(kind, path, 10, 3, own)
        with pytest.raises(MapBusyError):
            append_batch(kind, path, 10, 3)  # a fresh handle too
        reader = open_reader(kind, path)
        assert len(reader) == 10 and all(equal(reader[i], sample(kind, i)) for i in range(10))
        if own is not None:
            assert len(own) == 10
    finally:
        if then == "finishes":
            os.write(go, b"g")
        else:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(paused)
        os.close(go)
    if then == "finishes":
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        expected = 15
    else:
        assert os.WIFSIGNALED(status)
        expected = 10  # the lock died with the process; its half-started append is repaired
    append_batch(kind, path, expected, 3, own)
    reader = open_reader(kind, path)
    assert len(reader) == expected + 3
    assert all(equal(reader[i], sample(kind, i)) for i in range(expected + 3))


def test_second_handle_in_the_same_process_is_refused(tmp_path):
    """The lock is per handle, not per process: a thread appending holds off another handle."""
    path = tmp_path / "m"
    create("ragged_flat", path, 4)
    paused, go = threading.Event(), threading.Event()
    appender_thread = None
    real_pwritev = os.pwritev

    def pwritev(fd: int, buffers: Any, offset: int) -> int:
        if threading.current_thread() is appender_thread and not paused.is_set():
            paused.set()
            go.wait(30)
        return real_pwritev(fd, buffers, offset)

    errors: List[BaseException] = []

    def append_in_thread() -> None:
        try:
            append_batch("ragged_flat", path, 4, 2, RaggedMmap(path))
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    os.pwritev = pwritev
    try:
        appender_thread = threading.Thread(target=append_in_thread)
        appender_thread.start()
        assert paused.wait(30)
        with pytest.raises(MapBusyError):
            append_batch("ragged_flat", path, 4, 2, RaggedMmap(path))
        go.set()
        appender_thread.join(30)
    finally:
        os.pwritev = real_pwritev
        go.set()
    assert errors == []
    m = RaggedMmap(path)
    assert len(m) == 6 and all(equal(m[i], sample("ragged_flat", i)) for i in range(6))


WRITER_BATCHES, WRITER_BATCH_SIZE = 40, 3


def _writer_with_retries(path: Path, writer_id: int) -> None:
    """Append batches of samples that name this writer, retrying while the map is busy."""
    handle = RaggedMmap(path)
    retries = 0
    for batch in range(WRITER_BATCHES):
        samples = [np.array([writer_id, batch, j, 0, 0], np.int64)[: 3 + j] for j in range(WRITER_BATCH_SIZE)]
        while True:
            try:
                handle.extend(samples)
                break
            except MapBusyError:
                retries += 1
                time.sleep(0.0002)
    print(f"writer {writer_id}: {retries} retries")


@pytest.mark.parametrize("writers", [2, 3])
def test_writers_in_several_processes_never_interleave(tmp_path, writers):
    path = tmp_path / "m"
    RaggedMmap.from_lists(path, [np.array([-1, -1, -1], np.int64)])
    pids = []
    for writer_id in range(writers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _writer_with_retries(path, writer_id)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    m = RaggedMmap(path)
    assert len(m) == 1 + writers * WRITER_BATCHES * WRITER_BATCH_SIZE
    next_batch = [0] * writers
    for first in range(1, len(m), WRITER_BATCH_SIZE):  # each batch whole and in place, each writer in order
        writer_id, batch = int(m[first][0]), int(m[first][1])
        assert batch == next_batch[writer_id], (first, writer_id, batch)
        next_batch[writer_id] += 1
        for j in range(WRITER_BATCH_SIZE):
            np.testing.assert_array_equal(m[first + j], np.array([writer_id, batch, j, 0, 0], np.int64)[: 3 + j])
    assert next_batch == [WRITER_BATCHES] * writers
