"""The writer that scripts/crash_stress.py kills: it appends known batches to one map, forever.

Every batch is a pure function of (kind, seed, batch number), so whoever checks the map can
rebuild exactly what a prefix of completed appends must look like. After each append
returns, the writer reports the batch number on a file descriptor, one line per batch.

It runs in two ways:
- forked by crash_stress.py, writing with this library (no interpreter start-up per kill);
- executed as ``python crash_child.py KIND PATH SEED FIRST_BATCH`` by any interpreter, e.g.
  the one that has mmap_ninja 0.9.0, for the control run that shows what a naive append does.
It needs only numpy and mmap_ninja, and uses only calls both libraries share.

Besides being killed from outside at a random time, a forked writer can be told to kill
itself during its N-th write to a map file (``inject_kill``), optionally after writing only
half of that call's bytes: this reaches every step of the commit protocol, and repairs too.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))  # also under python -I
from kind_names import KINDS as ALL_KINDS  # noqa: E402  (the names of tests/conftest.py's catalogue)

# Left out here, with the reason; every other kind of the catalogue is appended to and killed.
NOT_HERE = {
    "records": "a records map is several maps committed together: scripts/records_crash_stress.py kills its writers",
    "megatron": "a Megatron corpus is written once, never appended to (tests/test_megatron.py kills its writes)",
}
KINDS = tuple(k for k in ALL_KINDS if k not in NOT_HERE)

# numpy dtype of every sample of a kind (None: str samples)
SAMPLE_DTYPE = {"ragged_flat": "int32", "ragged_nested": "uint8", "strings": None, "strings_zstd": None, "numpy": "float64"}
if set(SAMPLE_DTYPE) != set(KINDS):  # a kind new to the catalogue needs batches here, or a reason in NOT_HERE
    raise RuntimeError(f"crash_child.py makes batches for {sorted(SAMPLE_DTYPE)}, not for {sorted(set(KINDS) - set(SAMPLE_DTYPE))}")

ZSTD_LEVEL = 3
NUMPY_ROW_SHAPE = (6, 5)
# ASCII, 2-, 3- and 4-byte UTF-8, and a newline: offsets are bytes, not characters
_CODEPOINTS = np.array([ord(c) for c in "abcdefghijklmnopqrstuvwxyz    éß漢字🙂\n"], "<u4")

Batch = Union[List[Any], np.ndarray]


def make_batch(kind: str, seed: int, number: int) -> Batch:
    """Batch ``number`` of a map of ``kind``: always the same samples for the same arguments.

    Samples are small, so that a writer spends its time in the steps of an append rather than
    in copying bytes, and a random kill often lands between them.
    """
    rng = np.random.default_rng([seed, KINDS.index(kind), number])
    if kind == "ragged_flat":
        samples: List[Any] = []
        for _ in range(int(rng.integers(1, 32))):
            roll = rng.random()
            if roll < 0.04:  # a 0-d sample, recorded with length 0 in the shapes table
                samples.append(np.array(rng.integers(-(2**31), 2**31), np.int32))
            elif roll < 0.08:
                samples.append(np.empty(0, np.int32))
            else:
                samples.append(rng.integers(-(2**31), 2**31, int(rng.integers(1, 300)), dtype=np.int32))
        return samples
    if kind == "ragged_nested":  # images and masks: 2-D and 3-D samples, hence nested shapes/
        samples = []
        for _ in range(int(rng.integers(1, 16))):
            h, w = (int(x) for x in rng.integers(1, 16, 2))
            if rng.random() < 0.05:
                h = 0
            shape = (h, w, 3) if rng.random() < 0.7 else (h, w)
            samples.append(rng.integers(0, 256, shape, dtype=np.uint8))
        return samples
    if kind in ("strings", "strings_zstd"):
        count = 300 if number == 0 and kind == "strings_zstd" else int(rng.integers(1, 64))  # enough to train a dictionary
        lengths = rng.integers(0, 120, count)
        text = _CODEPOINTS[rng.integers(0, len(_CODEPOINTS), int(lengths.sum()))].tobytes().decode("utf-32-le")
        ends = np.cumsum(lengths).tolist()
        return [text[end - length : end] for end, length in zip(ends, lengths.tolist())]
    if kind == "numpy":
        return rng.standard_normal((int(rng.integers(1, 100)), *NUMPY_ROW_SHAPE))
    raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")


def batch_size(batch: Batch) -> int:
    """Samples in a batch (rows for the numpy kind)."""
    return len(batch)


def samples_of(batch: Batch) -> List[Any]:
    """The batch as a list of samples, as a reader returns them one by one."""
    return list(batch)


def appender(kind: str, path: str) -> Callable[[Batch], None]:
    """A function that appends one batch to the map at ``path`` with the imported mmap_ninja."""
    if kind == "numpy":
        from mmap_ninja import numpy as np_ninja

        return lambda batch: np_ninja.extend_dir(path, batch)
    if kind.startswith("ragged"):
        from mmap_ninja.ragged import RaggedMmap

        return RaggedMmap(path).extend
    from mmap_ninja.string import StringsMmap

    return StringsMmap(path).extend


def append_forever(kind: str, path: str, seed: int, first_batch: int, progress_fd: int, prepared: Optional[Dict[int, Batch]] = None) -> None:
    """Append batches ``first_batch, first_batch + 1, ...`` until killed; report each one done.

    ``prepared`` holds batches already generated, so that the writer spends its time appending.
    """
    prepared = prepared or {}
    append = appender(kind, path)
    number = first_batch
    while True:
        batch = prepared.get(number)
        if batch is None:
            batch = make_batch(kind, seed, number)
        append(batch)
        os.write(progress_fd, b"%d\n" % number)
        number += 1


def inject_kill(after_calls: int, partial: bool) -> None:
    """Make this process SIGKILL itself at its ``after_calls``-th positional write or truncate.

    The library writes map files only with os.pwrite, os.pwritev and os.ftruncate (looked up
    on ``os`` at each call), so wrapping those reaches every step of an append or a repair.
    With ``partial``, that last write puts only the first half of its bytes on disk.
    """
    calls = 0
    real_pwrite, real_pwritev, real_ftruncate = os.pwrite, os.pwritev, os.ftruncate

    def due() -> bool:
        nonlocal calls
        calls += 1
        return calls >= after_calls

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if not due():
            return real_pwrite(fd, data, offset)
        data = memoryview(data).tobytes()
        real_pwrite(fd, data[: len(data) // 2] if partial else data, offset)
        die()
        return 0

    def pwritev(fd: int, buffers: Any, offset: int) -> int:
        if not due():
            return real_pwritev(fd, buffers, offset)
        views = [memoryview(b) for b in buffers]
        if not all(v.c_contiguous for v in views):  # as the real call does: the library then retries with copies
            raise BufferError("non-contiguous buffer")
        joined = b"".join(v.tobytes() for v in views)
        real_pwrite(fd, joined[: len(joined) // 2] if partial else joined, offset)
        die()
        return 0

    def ftruncate(fd: int, length: int) -> None:
        real_ftruncate(fd, length)
        if due():
            die()

    os.pwrite, os.pwritev, os.ftruncate = pwrite, pwritev, ftruncate


def run_forked(kind: str, path: str, seed: int, first_batch: int, progress_fd: int, error_path: str, prepared: Dict[int, Batch],
               kill_after_writes: Optional[int] = None, partial_write: bool = False) -> None:
    """The body of a forked writer: never returns; a traceback goes to ``error_path``."""
    code = 1
    try:
        if kill_after_writes is not None:
            inject_kill(kill_after_writes, partial_write)
        append_forever(kind, path, seed, first_batch, progress_fd, prepared)
    except BaseException:
        with open(error_path, "w") as f:
            f.write(traceback.format_exc())
    finally:
        os._exit(code)


def main(argv: List[str]) -> int:
    """``crash_child.py KIND PATH SEED FIRST_BATCH``: append forever, report batches on stdout."""
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    kind, path, seed, first_batch = argv[0], argv[1], int(argv[2]), int(argv[3])
    append_forever(kind, path, seed, first_batch, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
