"""A writer killed at any instant leaves a map with exactly the samples of its finished appends,
and the next append repairs the files so that mmap_ninja 0.9.0 reads and extends them again.

mmap_ninja 0.9.0 writes data, offsets and shape files one after another, each shape file by
truncate-then-write, so a kill between them leaves lengths that disagree (see the control
run of scripts/crash_stress.py, marked stress below). These tests build such half-written
states by hand, kill forked writers at every single write of an append, and run a short
version of the random-kill stress script.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import pytest

from mmap_ninja import generic, verify
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import crash_child  # noqa: E402
from crash_child import KINDS  # noqa: E402
from crash_stress import KindRun, Peer, find_peer, layout_problems  # noqa: E402

from conftest import CATALOGUE, kind_params, missing, needs, upstream_missing, upstream_python  # noqa: E402

SEED = 11


def kind_needs(kind: str) -> list:
    """The skip marks of a kind of scripts/crash_child.py (whose kinds are the catalogue's, by name)."""
    return [needs(*CATALOGUE[kind].needs)] if CATALOGUE[kind].needs else []


@pytest.fixture(scope="module")
def peer():
    """A running mmap_ninja 0.9.0 interpreter, or skip."""
    python = upstream_python()
    if python is None:
        pytest.skip(upstream_missing())
    server = Peer(python)
    yield server
    server.close()


def commit_file(kind: str, map_dir: Path) -> Path:
    return map_dir / "shape.ninja" if kind == "numpy" else map_dir / "starts" / "shape.ninja"


def shape_files(map_dir: Path) -> Dict[Path, bytes]:
    return {p: p.read_bytes() for p in map_dir.rglob("shape.ninja")}


def append_then_unpublish(run: KindRun, keep_published: Callable[[Path], bool]) -> None:
    """Append the next batch for real, then roll back every shape file but those kept.

    The commit file is always rolled back: the state of a writer killed just before its
    commit, after it published the other shape files that ``keep_published`` selects.
    """
    before = shape_files(run.path)
    crash_child.appender(run.kind, str(run.path))(run.batch(run.count))
    commit = commit_file(run.kind, run.path)
    for path, content in before.items():
        if path == commit or not keep_published(path):
            path.write_bytes(content)


def append_garbage_tails(map_dir: Path) -> None:
    """Bytes past the end of every data file, as a killed append leaves them: here nonsense,
    including offsets far beyond the data and negative ones."""
    rng = np.random.default_rng(0)
    for data in map_dir.rglob("data.ninja"):
        with open(data, "ab") as f:
            if data.parent.name in ("starts", "ends", "flattened_shapes"):
                f.write(np.array([2**40, -5, 3, 2**62], "<i8").tobytes())
            else:
                f.write(rng.integers(0, 256, 1000, dtype=np.uint8).tobytes())


TORN_STATES = {
    "nothing published": lambda run: append_then_unpublish(run, lambda p: False),
    "all but the commit published": lambda run: append_then_unpublish(run, lambda p: True),
    "only the nested shapes map published": lambda run: append_then_unpublish(run, lambda p: "shapes" in p.relative_to(run.path).parts),
    "garbage tails": lambda run: append_garbage_tails(run.path),
}


def torn_map(tmp_path: Path, kind: str, state: str, peer: Optional[Peer] = None) -> KindRun:
    """A map of ``kind`` holding batch 0 and the leftovers of a killed append of batch 1."""
    run = KindRun(kind, tmp_path, SEED, peer)
    run.create()
    TORN_STATES[state](run)
    assert layout_problems(kind, run.path), "the simulation should have left files past the commit"
    return run


def torn_cases():
    for kind in KINDS:
        for state in TORN_STATES:
            if kind == "numpy" and state != "garbage tails" and state != "nothing published":
                continue  # a same-shape map has only its commit file
            if state == "only the nested shapes map published" and kind != "ragged_nested":
                continue
            yield pytest.param(kind, state, id=f"{kind}-{state.replace(' ', '_')}", marks=kind_needs(kind))


@pytest.mark.parametrize("kind, state", list(torn_cases()))
def test_killed_append_is_invisible_then_repaired(tmp_path, kind, state):
    run = torn_map(tmp_path, kind, state)
    # readers see exactly batch 0, sample for sample, through every way of opening
    assert run.check_samples(1, 1) == 1
    assert len(generic.open_existing(run.path, mode="r")) == len(run.expected_samples(1))
    # the next writer (a fresh one, as after a restart) repairs, appends, and leaves files that agree
    run.repair_and_compare()
    assert run.count == 2
    assert layout_problems(kind, run.path) == []
    assert run.check_samples(2, 2) == 2


@pytest.mark.parametrize("kind, state", list(torn_cases()))
def test_upstream_reads_and_extends_a_repaired_map(tmp_path, kind, state, peer):
    run = torn_map(tmp_path, kind, state, peer)
    run.repair_and_compare()  # also asks 0.9.0 for a digest of every sample
    assert run.stats.peer_checks == 1
    # 0.9.0 appends at the end of every file ("ab"): a tail left behind would shift its samples
    assert peer.append(kind, run.path, SEED, 2) == {"ok": True}
    assert run.check_samples(3, 3) == 3


def test_repaired_map_is_what_upstream_needs_for_numpy(tmp_path, peer):
    """A same-shape map with a data tail: 0.9.0 would append after the tail; after our
    repair its appended rows land right after the committed ones."""
    rows = np.arange(24, dtype=np.float64).reshape(4, 6)
    np_ninja.from_ndarray(tmp_path / "m", rows)
    with open(tmp_path / "m" / "data.ninja", "ab") as f:
        f.write(b"\xff" * 40)  # part of a row: a killed append
    np.testing.assert_array_equal(np_ninja.open_existing(tmp_path / "m", mode="r"), rows)
    np_ninja.extend_dir(tmp_path / "m", rows[:1] + 100)
    code = (
        "import sys, numpy as np; from mmap_ninja import numpy as np_ninja; "
        "np_ninja.extend_dir(sys.argv[1], np.full((1, 6), 7.0)); print(np_ninja.open_existing(sys.argv[1]).tolist())"
    )
    result = subprocess.run([peer.python, "-I", "-c", code, str(tmp_path / "m")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = np.concatenate([rows, rows[:1] + 100, np.full((1, 6), 7.0)])
    assert eval(result.stdout) == expected.tolist()
    np.testing.assert_array_equal(np_ninja.open_existing(tmp_path / "m", mode="r"), expected)


# --- a forked writer killed at each of its writes, in turn ---------------------------------


def _append_once_and_die_at(run_dir: Path, kind: str, batch, kill_after_writes: int, partial: bool) -> int:
    """Fork a writer that appends ``batch`` and kills itself at that write; its wait status."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            crash_child.inject_kill(kill_after_writes, partial)
            crash_child.appender(kind, str(run_dir))(batch)
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


@pytest.mark.parametrize("partial", [False, True], ids=["whole_writes", "half_writes"])
@pytest.mark.parametrize("kind", [pytest.param(k, marks=kind_needs(k)) for k in KINDS])
def test_kill_at_every_write_of_a_repairing_append(tmp_path, kind, partial):
    """Start from a torn map, so that the writer first repairs, then appends; kill it at its
    1st, 2nd, ... write (all of a call's bytes, or half of them) until one append completes.
    After each kill the map holds batch 0, or batches 0 and 1, intact; the next append then
    repairs whatever the kill left, and the files agree again."""
    template = torn_map(tmp_path / "template", kind, "garbage tails")
    batch = template.batch(1)
    write_number, torn_after_kill = 0, 0
    while True:
        write_number += 1
        assert write_number < 200, "the append never completed"
        run = KindRun(kind, tmp_path / f"kill-{write_number}", SEED, None)
        shutil.copytree(template.path, run.path)
        status = _append_once_and_die_at(run.path, kind, batch, write_number, partial)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, "the writer failed instead of appending"
            assert run.check_samples(2, 2) == 2
            break
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        torn_after_kill += bool(layout_problems(kind, run.path))
        run.count = run.check_samples(1, 2)
        run.repair_and_compare()
        assert layout_problems(kind, run.path) == []
        shutil.rmtree(run.path)
    # the enumeration must have reached the repair and every step of the append
    assert write_number >= 4 and torn_after_kill >= 1, (write_number, torn_after_kill)


# --- builds that are killed ------------------------------------------------------------------


def _build_and_die(out_dir: Path, die_after: int) -> int:
    """Fork a process that builds a map from a generator that SIGKILLs it after some samples."""
    pid = os.fork()
    if pid == 0:
        try:
            def samples():
                for i in range(10_000):
                    if i == die_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield np.full(i % 7 + 1, i, np.int64)

            RaggedMmap.from_generator(out_dir, samples(), batch_size=16)
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def test_killed_build_leaves_no_map_and_the_old_one_whole(tmp_path):
    out = tmp_path / "m"
    status = _build_and_die(out, die_after=100)
    assert os.WIFSIGNALED(status)
    assert not out.exists()  # never a half-built map at the path
    old = [np.arange(3), np.arange(5)]
    RaggedMmap.from_lists(out, old)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name], "the next build removes what the killed one left"
    status = _build_and_die(out, die_after=50)  # a killed rebuild of an existing map
    assert os.WIFSIGNALED(status)
    with RaggedMmap(out, mode="r") as m:
        assert len(m) == 2
        for got, want in zip(m, old):
            np.testing.assert_array_equal(got, want)


# --- the random-kill stress script ------------------------------------------------------------


def _run_stress(*args: str, timeout: float) -> subprocess.CompletedProcess:
    extra = [] if find_peer() else ["--no-peer"]
    if missing("zstandard"):  # the zstd strings kind has its own tests above, which skip with the reason
        extra += ["--kinds", ",".join(k for k in KINDS if k != "strings_zstd")]
    return subprocess.run([sys.executable, str(SCRIPTS / "crash_stress.py"), *args, *extra], capture_output=True, text=True, timeout=timeout)


def test_crash_stress_short_run():
    result = _run_stress("--kills", "8", "--seed", "3", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 SIGKILLs" in result.stdout and "FAILED" not in result.stdout


@pytest.mark.stress
@pytest.mark.parametrize("seed", [1, 2])
def test_crash_stress_full_run(seed):
    result = _run_stress("--kills", "60", "--seed", str(seed), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)


@pytest.mark.stress
def test_crash_stress_catches_upstream_writers(peer):
    """The control: the same harness with mmap_ninja 0.9.0 as the writer finds broken maps."""
    result = subprocess.run([sys.executable, str(SCRIPTS / "crash_stress.py"), "--kills", "20", "--seed", "5", "--writer", "upstream"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout


# --- every kind of the catalogue: an append killed before each change to its files ----------------

MUTATING = ("write_file", "touch", "mkdir", "makedirs", "rmtree", "link_or_copy", "replace", "pwrite", "pwritev",
            "ftruncate", "copy_range", "exchange", "swap_in")
KILLED = 37


def _append_killed_before_change(kind: str, path: Path, first: int, count: int, change: int) -> bool:
    """Fork a writer that appends samples ``first..first+count-1`` and dies (os._exit) just
    before its ``change``-th call that changes a file; True if it was killed, False if it finished."""
    from mmap_ninja import fs

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            calls = [0]

            def dying(real: Callable) -> Callable:
                def call(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == change:
                        os._exit(KILLED)
                    return real(*args, **kwargs)
                return call

            for name in MUTATING:
                setattr(fs, name, dying(getattr(fs, name)))
            CATALOGUE[kind].extend(path, CATALOGUE[kind].samples(count, first))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, KILLED), status
    return os.WEXITSTATUS(status) == KILLED


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "checksums"])
@pytest.mark.parametrize("kind", kind_params("crash"))
def test_every_kind_survives_an_append_killed_before_any_change(tmp_path, kind, checksum):
    """Every kind of the catalogue, with and without checksums: a writer killed before any
    of its changes leaves the old samples or the new ones, never other; verify() finds it
    sound; the next append repairs what the kill left and every sample verifies."""
    k = CATALOGUE[kind]
    template = tmp_path / "template"
    k.build(template, k.samples(6), **({"checksum": True} if checksum else {}))
    change, finished = 1, False
    while not finished:
        path = tmp_path / f"m{change}"
        shutil.copytree(template, path)
        finished = not _append_killed_before_change(kind, path, 6, 3, change)
        got = k.read_all(path)
        assert len(got) in (6, 9) and all(k.equal(g, w) for g, w in zip(got, k.samples(len(got)))), (change, len(got))
        assert finished or len(got) == 6 or change > 1, "nothing may be visible before the first change"
        report = verify(path)
        assert report.ok, (change, str(report))
        k.extend(path, k.samples(2, len(got)))
        again = k.read_all(path)
        assert len(again) == len(got) + 2 and all(k.equal(g, w) for g, w in zip(again, k.samples(len(again)))), change
        report = verify(path)
        assert report.ok and report.not_covered == 0 and report.checked == (len(again) * len(k.maps) if checksum else 0), (change, str(report))
        shutil.rmtree(path)
        change += 1
    assert change > 3, "the append made fewer changes than a commit needs: the kills were not exercised"
