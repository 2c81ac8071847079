"""Kill appending writers with SIGKILL at random moments and check that every map survives.

For each kind of map (flat and multi-axis RaggedMmap, StringsMmap plain and zstd, np_ninja)
a map is built from batch 0, then, again and again:

1. a child process appends known batches in a loop (scripts/crash_child.py) and is killed
   with SIGKILL after a random delay (some kills land while it opens or repairs the map,
   most while it appends);
2. the map must open, hold exactly the batches of a prefix of the appends (a whole number
   of batches: every append that reported success, plus at most the one in flight), and
   every sample must equal what was written;
3. on about half of the kills (and always the last of a kind) a new writer appends the next
   batch, which repairs the map: then every file must agree with the commit again (what
   mmap_ninja 0.9.0 needs, since it trusts every shape.ninja) and mmap_ninja 0.9.0, run in
   its own interpreter, must read back exactly the expected samples. On the other kills the
   next child starts on the unrepaired map, so its own repair can be killed too.

Usage::

    python scripts/crash_stress.py --kills 60 --seed 1

The peer interpreter is $MMAP_NINJA_UPSTREAM_PYTHON (a Python that has mmap_ninja 0.9.0);
``--no-peer`` skips the 0.9.0 read-back. ``--writer upstream`` is the control run: the
children append with mmap_ninja 0.9.0 instead, which is expected to fail the checks.
Prints a summary; exits 1 if any check failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crash_child  # noqa: E402  (the writer module beside this script)
from crash_child import KINDS, SAMPLE_DTYPE, make_batch  # noqa: E402

PREFETCH = 300  # batches generated before each fork (more than a child appends before its kill),
# so that the child spends its time appending, not generating

# Shared by this process and the 0.9.0 peer, so both digest samples the same way.
DIGEST_CODE = r'''
import hashlib
import numpy as np

def digest_samples(dtype, samples):
    """(count, sha256) of samples: str, or arrays/scalars converted to ``dtype`` with their shape."""
    h = hashlib.sha256()
    n = 0
    for s in samples:
        n += 1
        if dtype is None:
            b = s.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        else:
            a = np.ascontiguousarray(np.asarray(s, dtype=dtype))
            h.update(repr(a.shape).encode())
            h.update(a.tobytes())
    return n, h.hexdigest()
'''

# Runs under mmap_ninja 0.9.0. Reads requests, one per line, answers one JSON line each:
#   digest<TAB>KIND<TAB>PATH                  count and digest of every sample
#   append<TAB>KIND<TAB>PATH<TAB>SEED<TAB>N   append batch N with 0.9.0 (crash_child's batches)
PEER_SERVER = DIGEST_CODE + r'''
import json
import sys
sys.path.insert(0, sys.argv[1])  # crash_child, which needs only numpy and mmap_ninja
import crash_child
import mmap_ninja
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

print(json.dumps({"version": mmap_ninja.__version__}), flush=True)
for line in sys.stdin:
    request, kind, path, *rest = line.rstrip("\n").split("\t")
    try:
        if request == "append":
            crash_child.appender(kind, path)(crash_child.make_batch(kind, int(rest[0]), int(rest[1])))
            answer = {"ok": True}
        else:
            if kind == "numpy":
                m = np_ninja.open_existing(path)
                dtype = m.dtype.name
            elif kind.startswith("ragged"):
                m = RaggedMmap(path)
                dtype = m.memmap.dtype.name
            else:
                m = StringsMmap(path)
                dtype = None
            n, digest = digest_samples(dtype, (m[i] for i in range(len(m))))
            answer = {"n": n, "digest": digest, "dtype": dtype}
    except Exception as e:
        answer = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(answer), flush=True)
'''

_digest_namespace: Dict[str, Any] = {}
exec(DIGEST_CODE, _digest_namespace)
digest_samples = _digest_namespace["digest_samples"]


def find_peer() -> Optional[str]:
    """The interpreter that has mmap_ninja 0.9.0, or None."""
    named = os.environ.get("MMAP_NINJA_UPSTREAM_PYTHON")
    return named if named and os.path.exists(named) else None


class Peer:
    """A long-lived mmap_ninja 0.9.0 interpreter that digests maps on request."""

    def __init__(self, python: str):
        self.python = python
        here = str(Path(__file__).resolve().parent)
        self.proc = subprocess.Popen([python, "-I", "-c", PEER_SERVER, here], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self.proc.stdout.readline()
        if not hello:
            raise RuntimeError(f"{python} could not start mmap_ninja 0.9.0 (is it installed there?)")
        self.version = json.loads(hello)["version"]
        if self.version != "0.9.0":
            raise RuntimeError(f"{python} has mmap_ninja {self.version}, not 0.9.0")

    def _ask(self, *fields: Any) -> Dict[str, Any]:
        self.proc.stdin.write("\t".join(str(f) for f in fields) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the mmap_ninja 0.9.0 peer died")
        return json.loads(line)

    def digest(self, kind: str, path: Path) -> Dict[str, Any]:
        """{"n", "digest", "dtype"} of every sample as 0.9.0 reads them, or {"error"}."""
        return self._ask("digest", kind, path)

    def append(self, kind: str, path: Path, seed: int, number: int) -> Dict[str, Any]:
        """Append batch ``number`` with 0.9.0: {"ok": True} or {"error"}."""
        return self._ask("append", kind, path, seed, number)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# --- what the files say, read without the library under test ------------------------------


def _shape(array_dir: Path) -> Tuple[int, ...]:
    raw = (array_dir / "shape.ninja").read_bytes()
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


def _array_problems(array_dir: Path, rows: Optional[int]) -> List[str]:
    """Where an array directory disagrees with itself, or with ``rows`` committed samples."""
    shape = _shape(array_dir)
    itemsize = np.dtype((array_dir / "dtype.ninja").read_text()).itemsize
    problems = []
    size = (array_dir / "data.ninja").stat().st_size
    if size != math.prod(shape) * itemsize:
        problems.append(f"{array_dir.name}/data.ninja holds {size} bytes, shape.ninja says {shape}")
    if rows is not None and shape[0] != rows:
        problems.append(f"{array_dir.name}/shape.ninja counts {shape[0]}, the commit {rows}")
    return problems


def _last_end(map_dir: Path, count: int) -> int:
    if count == 0:
        return 0
    with open(map_dir / "ends" / "data.ninja", "rb") as f:
        f.seek(8 * (count - 1))
        return struct.unpack("<q", f.read(8))[0]


def layout_problems(kind: str, map_dir: Path) -> List[str]:
    """Every place where the files hold more (or other) than the committed samples.

    Empty for a map that mmap_ninja 0.9.0 reads and extends correctly. Right after a kill,
    a non-empty answer means the kill left a half-written append behind.
    """
    if kind == "numpy":
        return _array_problems(map_dir, None)
    count = _shape(map_dir / "starts")[0]
    problems = _array_problems(map_dir / "starts", count) + _array_problems(map_dir / "ends", count)
    total = _last_end(map_dir, count)
    if kind.startswith("strings"):
        size = (map_dir / "data.ninja").stat().st_size
        if size != total:
            problems.append(f"data.ninja holds {size} bytes, the strings {total}")
        return problems
    problems += _array_problems(map_dir / "flattened_shapes", count)
    root = _array_problems(map_dir, None)
    if _shape(map_dir)[0] != total:
        root.append(f"shape.ninja counts {_shape(map_dir)[0]} elements, the samples {total}")
    problems += root
    flat = struct.unpack("<i", (map_dir / "shapes_are_flat.ninja").read_bytes())[0]
    if flat:
        problems += ["shapes/" + p for p in _array_problems(map_dir / "shapes", count)]
    else:
        shapes = map_dir / "shapes"
        if _shape(shapes / "starts")[0] != count:
            problems.append(f"shapes/starts counts {_shape(shapes / 'starts')[0]}, the commit {count}")
        problems += ["shapes/" + p for p in layout_problems("ragged_flat", shapes)]
    return problems


# --- one kind of map ----------------------------------------------------------------------


@dataclass
class KindStats:
    kills: int = 0
    injected: int = 0  # kills at a write the child was told to die at
    torn: int = 0  # kills that left a half-written append behind
    repairs: int = 0
    peer_checks: int = 0
    failures: List[str] = field(default_factory=list)


class KindRun:
    """One map of one kind, the batches it should hold, and the checks."""

    def __init__(self, kind: str, folder: Path, seed: int, peer: Optional[Peer]):
        self.kind = kind
        self.path = folder / kind
        self.seed = seed
        self.peer = peer
        self.batches: Dict[int, Any] = {}
        self.ends: List[int] = []  # samples in the map after batches 0..i
        self.count = 0  # batches the map holds, as last verified
        self.stats = KindStats()

    def batch(self, number: int) -> Any:
        """Batch ``number`` (generated once, then cached); extends ``ends`` up to it."""
        while len(self.ends) <= number:
            known = len(self.ends)
            if known not in self.batches:
                self.batches[known] = make_batch(self.kind, self.seed, known)
            self.ends.append((self.ends[-1] if self.ends else 0) + crash_child.batch_size(self.batches[known]))
        return self.batches[number]

    def create(self) -> None:
        """(Re)build the map from batch 0 with this library."""
        from mmap_ninja import numpy as np_ninja
        from mmap_ninja.ragged import RaggedMmap
        from mmap_ninja.string import StringsMmap

        shutil.rmtree(self.path, ignore_errors=True)
        first = self.batch(0)
        if self.kind == "numpy":
            np_ninja.from_ndarray(self.path, first)
        elif self.kind.startswith("ragged"):
            RaggedMmap.from_lists(self.path, first, dtype=SAMPLE_DTYPE[self.kind]).close()
        elif self.kind == "strings_zstd":
            StringsMmap.from_strings(self.path, first, zstd_level=crash_child.ZSTD_LEVEL, zstd_train_dictionary_size=1024).close()
        else:
            StringsMmap.from_strings(self.path, first).close()
        self.count = 1

    def batches_for(self, samples: int) -> Optional[int]:
        """How many whole batches make ``samples`` samples, or None if no prefix does."""
        number = 0
        while True:
            self.batch(number)
            if self.ends[number] == samples:
                return number + 1
            if self.ends[number] > samples:
                return 0 if samples == 0 else None
            number += 1

    def expected_samples(self, batches: int) -> List[Any]:
        out: List[Any] = []
        for number in range(batches):
            out.extend(crash_child.samples_of(self.batch(number)))
        return out

    def read_back(self) -> List[Any]:
        """Every sample, read with this library in read-only mode."""
        from mmap_ninja import numpy as np_ninja
        from mmap_ninja.ragged import RaggedMmap
        from mmap_ninja.string import StringsMmap

        if self.kind == "numpy":
            return [np.array(row) for row in np_ninja.open_existing(self.path, mode="r")]
        if self.kind.startswith("ragged"):
            with RaggedMmap(self.path, mode="r") as m:
                return [np.array(s) for s in m]
        with StringsMmap(self.path, mode="rb") as m:
            return list(m)

    def check_samples(self, low: int, high: int) -> int:
        """The map holds between ``low`` and ``high`` whole batches, all intact: their count."""
        samples = self.read_back()
        batches = self.batches_for(len(samples))
        if batches is None:
            raise AssertionError(f"the map holds {len(samples)} samples, which is not a whole number of batches")
        if not low <= batches <= high:
            raise AssertionError(f"the map holds {batches} batches; the writer had finished {low} and was at most writing one more")
        for i, (got, want) in enumerate(zip(samples, self.expected_samples(batches))):
            if isinstance(want, str):
                ok = got == want
            else:
                want = np.asarray(want)
                ok = got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
            if not ok:
                raise AssertionError(f"sample {i} differs from what was written")
        return batches

    def repair_and_compare(self) -> None:
        """A new writer appends the next batch; the files must then agree, and 0.9.0 read it all."""
        number = self.count
        writer = crash_child.appender(self.kind, str(self.path))
        writer(self.batch(number))
        owner = getattr(writer, "__self__", None)
        if owner is not None:
            owner.close()
        self.count = self.check_samples(number + 1, number + 1)
        self.stats.repairs += 1
        problems = layout_problems(self.kind, self.path)
        if problems:
            raise AssertionError(f"after the repairing append the files still disagree: {problems}")
        if self.peer is not None:
            answer = self.peer.digest(self.kind, self.path)
            expected_n, expected_digest = digest_samples(SAMPLE_DTYPE[self.kind], self.expected_samples(self.count))
            if "error" in answer:
                raise AssertionError(f"mmap_ninja 0.9.0 cannot read the repaired map: {answer['error']}")
            if answer["dtype"] != SAMPLE_DTYPE[self.kind]:
                raise AssertionError(f"mmap_ninja 0.9.0 reads dtype {answer['dtype']}, not {SAMPLE_DTYPE[self.kind]}")
            if (answer["n"], answer["digest"]) != (expected_n, expected_digest):
                raise AssertionError(f"mmap_ninja 0.9.0 reads {answer['n']} samples that differ from the {expected_n} written")
            self.stats.peer_checks += 1


# --- killing writers ----------------------------------------------------------------------


def _start_forked(run: KindRun, first: int, work: Path, kill_after_writes: Optional[int] = None, partial: bool = False) -> Tuple[int, int, Path]:
    """Fork a writer with this library: (pid, fd of its progress pipe, its error file)."""
    for number in range(first, first + PREFETCH):
        run.batch(number)
    error_path = work / f"child-{os.getpid()}-{time.monotonic_ns()}.err"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        crash_child.run_forked(run.kind, str(run.path), run.seed, first, write_fd, str(error_path), run.batches, kill_after_writes, partial)
    os.close(write_fd)
    return pid, read_fd, error_path


def _start_upstream(run: KindRun, first: int, python: str) -> Tuple[subprocess.Popen, int]:
    child = subprocess.Popen([python, "-I", crash_child.__file__, run.kind, str(run.path), str(run.seed), str(first)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return child, child.stdout.fileno()


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def finished_batches(killed: bool, errors: str, progress: bytes, first: int) -> int:
    """The batch count a killed writer reached, from what it reported; raises unless it was
    killed by SIGKILL after reporting batches ``first, first + 1, ...`` in order."""
    if not killed:
        raise AssertionError(f"the writer stopped before it was killed:\n{errors}")
    done = [int(x) for x in progress.split()]
    if done != list(range(first, first + len(done))):
        raise AssertionError(f"the writer reported batches {done[:5]}... out of order")
    return first + len(done)


def _wait_for_suicide(pid: int) -> int:
    """The wait status of a child that kills itself; SIGKILL it after 20 s if it does not."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            return wait_status
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the writer did not reach its injected kill within 20 s")


def kill_cycle(run: KindRun, rng: np.random.Generator, work: Path, repair: bool, upstream_writer: Optional[str], inject: bool) -> None:
    """Start a writer, SIGKILL it at a random moment, check the map; raise AssertionError on failure.

    ``inject``: the writer kills itself at a random write to the map's files (sometimes
    halfway through it) instead of being killed after a random delay.
    """
    first = run.count
    # a few kills land while the child opens or repairs the map, most while it appends
    delay = rng.uniform(0, 0.002) if rng.random() < 0.2 else rng.uniform(0.002, 0.03)
    kill_after_writes, partial = int(rng.integers(1, 200)), bool(rng.random() < 0.3)
    if upstream_writer:
        child, fd = _start_upstream(run, first, upstream_writer)
        time.sleep(0.4 + delay)  # the interpreter starts first
        child.send_signal(signal.SIGKILL)
        progress = child.stdout.read()
        errors = child.stderr.read().decode(errors="replace")
        status = child.wait()
        killed = status == -signal.SIGKILL
    else:
        if inject:
            pid, fd, error_path = _start_forked(run, first, work, kill_after_writes, partial)
            wait_status = _wait_for_suicide(pid)
        else:
            pid, fd, error_path = _start_forked(run, first, work)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            _, wait_status = os.waitpid(pid, 0)
        progress = _read_all(fd)
        os.close(fd)
        killed = os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL
        errors = error_path.read_text() if error_path.exists() else ""
    run.stats.kills += 1
    run.stats.injected += inject
    finished = finished_batches(killed, errors, progress, first)
    if layout_problems(run.kind, run.path):
        run.stats.torn += 1
    run.count = run.check_samples(finished, finished + 1)
    if repair:
        run.repair_and_compare()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60, help="writers to kill, spread across the kinds of map (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches and of the kill schedule")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--no-peer", action="store_true", help="skip the read-back with mmap_ninja 0.9.0")
    parser.add_argument("--writer", choices=("ours", "upstream"), default="ours",
                        help="'upstream': the control run, children append with mmap_ninja 0.9.0 (expected to fail)")
    parser.add_argument("--keep", action="store_true", help="keep the maps (their folder is printed)")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds or args.kills < 1:
        parser.error(f"--kinds must name some of {KINDS} and --kills must be positive")

    peer_python = find_peer()
    need_peer = not args.no_peer or args.writer == "upstream"
    if need_peer and peer_python is None:
        print("no interpreter with mmap_ninja 0.9.0: set MMAP_NINJA_UPSTREAM_PYTHON, or pass --no-peer", file=sys.stderr)
        return 2
    peer = Peer(peer_python) if not args.no_peer and args.writer == "ours" else None
    upstream_writer = peer_python if args.writer == "upstream" else None

    work = Path(tempfile.mkdtemp(prefix="crash-stress-"))
    rng = np.random.default_rng(args.seed)
    runs = {kind: KindRun(kind, work, args.seed, peer) for kind in kinds}
    schedule = [kinds[i % len(kinds)] for i in range(args.kills)]
    last_of_kind = {kind: max(i for i, k in enumerate(schedule) if k == kind) for kind in set(schedule)}
    started = time.monotonic()
    try:
        for run in runs.values():
            run.create()
        for i, kind in enumerate(schedule):
            run = runs[kind]
            repair = i == last_of_kind[kind] or rng.random() < 0.5
            inject = upstream_writer is None and i % 2 == 1  # half the kills injected, half timed
            try:
                kill_cycle(run, rng, work, repair and upstream_writer is None, upstream_writer, inject)
            except Exception as e:  # a failed check (or a map too broken to check): record, start the kind afresh
                run.stats.failures.append(f"kill {i + 1}: {type(e).__name__}: {e}")
                run.create()
    finally:
        if peer is not None:
            peer.close()

    failed = sum(len(r.stats.failures) for r in runs.values())
    writer = "mmap_ninja 0.9.0 (control run)" if upstream_writer else "this library"
    print(f"crash stress: {args.kills} SIGKILLs, writers using {writer}, seed {args.seed}, {time.monotonic() - started:.1f} s")
    print(f"{'kind':<14}{'kills':>6}{'injected':>9}{'torn':>6}{'repairs':>9}{'0.9.0 reads':>13}{'batches':>9}{'samples':>9}{'failures':>10}")
    for kind, run in runs.items():
        s = run.stats
        samples = run.ends[run.count - 1] if run.count else 0
        print(f"{kind:<14}{s.kills:>6}{s.injected:>9}{s.torn:>6}{s.repairs:>9}{s.peer_checks:>13}{run.count:>9}{samples:>9}{len(s.failures):>10}")
    print("injected = the writer killed itself at a random write (timed kills otherwise); "
          "torn = the kill left a half-written append behind (files past the commit)")
    for run in runs.values():
        for failure in run.stats.failures:
            print(f"FAILED {run.kind} {failure}")
    if args.keep or (failed and not upstream_writer):  # the control run is expected to fail
        print(f"maps kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
