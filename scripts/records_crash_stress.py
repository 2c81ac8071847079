"""Kill writers extending a RecordsMmap with SIGKILL at random moments; every field must survive, together.

A records map with a field of every kind (see scripts/records_crash_child.py) is built from
batch 0, then, again and again:

1. a child process extends it with known batches of records in a loop and is killed with
   SIGKILL: after a random delay, or by itself at a random write to a field's files
   (sometimes halfway through it), or just before or after the write that commits the
   record count;
2. the map must open and hold exactly the records of a prefix of the extends (every one
   that reported success, plus at most the one in flight), each record equal, field by
   field, to what was written; every field must open alone with its own class and hold at
   least that many samples;
3. on about half of the kills (and always the last) a new writer extends the map by the next
   batch, which cuts every field back to the committed count first: then every field alone
   must hold exactly the records, its files must agree with its commit (what mmap_ninja
   0.9.0 needs), and mmap_ninja 0.9.0, in its own interpreter, must read each field back
   exactly. On the other kills the next child starts on the unrepaired map, so its own
   repair can be killed too.

Usage::

    python scripts/records_crash_stress.py --kills 60 --seed 1

The 0.9.0 peer is found as in scripts/crash_stress.py ($MMAP_NINJA_UPSTREAM_PYTHON);
``--no-peer`` skips it. ``--writer naive`` is the control run: the children append field by
field with no record count of their own, which is expected to fail the checks.
Prints a summary; exits 1 if any check failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records_crash_child as child  # noqa: E402
from crash_stress import Peer, _read_all, _wait_for_suicide, digest_samples, find_peer, finished_batches, layout_problems  # noqa: E402

PREFETCH = 300  # batches generated before each fork, more than a child extends before its kill


@dataclass
class Stats:
    kills: int = 0
    at_write: int = 0  # the writer killed itself at a write to a field's files
    at_commit: int = 0  # ... just before or after the write that commits the record count
    uneven: int = 0  # kills that left fields holding more samples than the record count
    repairs: int = 0
    peer_checks: int = 0
    failures: List[str] = field(default_factory=list)


def _same(got: Any, want: Any, dtype: Optional[str]) -> bool:
    if dtype is None:
        return got == want
    want = np.asarray(want, dtype)
    got = np.asarray(got)
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


class RecordsRun:
    """One records map, the batches it should hold, and the checks."""

    def __init__(self, folder: Path, seed: int, peer: Optional[Peer], writer: str):
        self.path = folder / "records"
        self.seed = seed
        self.peer = peer
        self.writer = writer
        self.batches: Dict[int, List[Dict[str, Any]]] = {}
        self.ends: List[int] = []  # records in the map after batches 0..i
        self.count = 0  # batches the map holds, as last verified
        self.stats = Stats()

    def batch(self, number: int) -> List[Dict[str, Any]]:
        while len(self.ends) <= number:
            known = len(self.ends)
            if known not in self.batches:
                self.batches[known] = child.make_batch(self.seed, known)
            self.ends.append((self.ends[-1] if self.ends else 0) + len(self.batches[known]))
        return self.batches[number]

    def create(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.batch(0)
        child.create(str(self.path), self.seed)
        self.count = 1

    def batches_for(self, records: int) -> Optional[int]:
        number = 0
        while True:
            self.batch(number)
            if self.ends[number] == records:
                return number + 1
            if self.ends[number] > records:
                return None
            number += 1

    def expected(self, batches: int) -> List[Dict[str, Any]]:
        return [r for number in range(batches) for r in self.batch(number)]

    def field_lengths(self) -> Dict[str, int]:
        from mmap_ninja import generic

        return {name: len(generic.open_existing(self.path / name, mode="r")) for name in child.FIELDS}

    def check(self, low: int, high: int) -> int:
        """The map holds between ``low`` and ``high`` whole batches of intact records: their count."""
        from mmap_ninja.records import RecordsMmap

        with RecordsMmap(self.path) as r:
            n = len(r)
            batches = self.batches_for(n)
            if batches is None:
                raise AssertionError(f"the map holds {n} records, which is not a whole number of batches")
            if not low <= batches <= high:
                raise AssertionError(f"the map holds {batches} batches; the writer had finished {low} and was at most writing one more")
            expected = self.expected(batches)
            for i, (got, want) in enumerate(zip(r, expected)):  # the batch path
                for name in child.FIELDS:
                    if not _same(got[name], want[name], child.DTYPE[name]):
                        raise AssertionError(f"record {i}, field {name!r} differs from what was written")
            for i in np.random.default_rng(n).integers(0, n, min(n, 20)).tolist():  # the single-record path
                got = r[i]
                if not all(_same(got[name], expected[i][name], child.DTYPE[name]) for name in child.FIELDS):
                    raise AssertionError(f"r[{i}] differs from what was written")
        lengths = self.field_lengths()
        short = {name: k for name, k in lengths.items() if k < n}
        if short:
            raise AssertionError(f"fields hold fewer samples than the {n} records: {short}")
        if any(k > n for k in lengths.values()):
            self.stats.uneven += 1
        return batches

    def repair_and_compare(self) -> None:
        """A new writer extends the map by the next batch; then every field alone must agree."""
        from mmap_ninja.records import RecordsMmap

        number = self.count
        with RecordsMmap(self.path) as r:
            r.extend(self.batch(number))
        self.count = self.check(number + 1, number + 1)
        self.stats.repairs += 1
        records = self.ends[self.count - 1]
        lengths = self.field_lengths()
        if set(lengths.values()) != {records}:
            raise AssertionError(f"after the repairing extend the fields hold {lengths} samples, the map {records} records")
        for name in child.FIELDS:
            problems = layout_problems(child.CRASH_KIND[name], self.path / name)
            if problems:
                raise AssertionError(f"after the repairing extend the files of field {name!r} disagree: {problems}")
        if self.peer is None:
            return
        expected = self.expected(self.count)
        for name in child.FIELDS:
            answer = self.peer.digest(child.CRASH_KIND[name], self.path / name)
            if "error" in answer:
                raise AssertionError(f"mmap_ninja 0.9.0 cannot read field {name!r}: {answer['error']}")
            want = digest_samples(child.DTYPE[name], [r[name] for r in expected])
            if (answer["n"], answer["digest"]) != want:
                raise AssertionError(f"mmap_ninja 0.9.0 reads {answer['n']} samples of field {name!r} that differ from the {want[0]} written")
        self.stats.peer_checks += 1


def _start(run: RecordsRun, first: int, work: Path, **kill: Any) -> Tuple[int, int, Path]:
    for number in range(first, first + PREFETCH):
        run.batch(number)
    error_path = work / f"child-{os.getpid()}-{time.monotonic_ns()}.err"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child.run_forked(str(run.path), run.seed, first, write_fd, str(error_path), run.batches, run.writer, **kill)
    os.close(write_fd)
    return pid, read_fd, error_path


def kill_cycle(run: RecordsRun, rng: np.random.Generator, work: Path, how: str, repair: bool) -> None:
    """Start a writer, have it SIGKILLed (``how``: "timed", "write" or "commit"), check the map."""
    first = run.count
    if how == "write":
        pid, fd, error_path = _start(run, first, work, kill_after_writes=int(rng.integers(1, 400)), partial_write=bool(rng.random() < 0.3))
        wait_status = _wait_for_suicide(pid)
    elif how == "commit":
        pid, fd, error_path = _start(run, first, work, kill_at_commit=int(rng.integers(1, 6)), before_commit=bool(rng.random() < 0.5))
        wait_status = _wait_for_suicide(pid)
    else:
        pid, fd, error_path = _start(run, first, work)
        time.sleep(rng.uniform(0, 0.002) if rng.random() < 0.2 else rng.uniform(0.002, 0.04))
        os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
    progress = _read_all(fd)
    os.close(fd)
    run.stats.kills += 1
    run.stats.at_write += how == "write"
    run.stats.at_commit += how == "commit"
    errors = error_path.read_text() if error_path.exists() else ""
    killed = os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL
    finished = finished_batches(killed, errors, progress, first)
    run.count = run.check(finished, finished + 1)
    if repair:
        run.repair_and_compare()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60, help="writers to kill (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the records and of the kill schedule")
    parser.add_argument("--no-peer", action="store_true", help="skip the read-back of each field with mmap_ninja 0.9.0")
    parser.add_argument("--writer", choices=("ours", "naive"), default="ours",
                        help="'naive': the control run, children append field by field without a record count (expected to fail)")
    parser.add_argument("--keep", action="store_true", help="keep the map (its folder is printed)")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be positive")
    peer = None
    if not args.no_peer:
        python = find_peer()
        if python is None or not Path(python).exists():
            print("no interpreter with mmap_ninja 0.9.0: set MMAP_NINJA_UPSTREAM_PYTHON, or pass --no-peer", file=sys.stderr)
            return 2
        peer = Peer(python)

    work = Path(tempfile.mkdtemp(prefix="records-crash-stress-"))
    rng = np.random.default_rng(args.seed)
    run = RecordsRun(work, args.seed, peer, args.writer)
    started = time.monotonic()
    try:
        run.create()
        for i in range(args.kills):
            how = ("timed", "write", "commit")[i % 3]
            repair = i == args.kills - 1 or rng.random() < 0.5
            try:
                kill_cycle(run, rng, work, how, repair)
            except Exception as e:  # a failed check: record it, start afresh
                run.stats.failures.append(f"kill {i + 1} ({how}): {type(e).__name__}: {e}")
                run.create()
    finally:
        if peer is not None:
            peer.close()

    s = run.stats
    writer = "a naive field-by-field writer (control run)" if args.writer == "naive" else "RecordsMmap.extend"
    print(f"records crash stress: {args.kills} SIGKILLs, writers using {writer}, seed {args.seed}, {time.monotonic() - started:.1f} s")
    print(f"{'kills':>6}{'at write':>10}{'at commit':>11}{'uneven':>8}{'repairs':>9}{'0.9.0 reads':>13}{'batches':>9}{'records':>9}{'failures':>10}")
    records = run.ends[run.count - 1] if run.count else 0
    print(f"{s.kills:>6}{s.at_write:>10}{s.at_commit:>11}{s.uneven:>8}{s.repairs:>9}{s.peer_checks:>13}{run.count:>9}{records:>9}{len(s.failures):>10}")
    print("uneven = the kill left fields holding more samples than the record count (cut back by the next writer)")
    for failure in s.failures:
        print(f"FAILED {failure}")
    if args.keep or (s.failures and args.writer == "ours"):
        print(f"map kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
