"""The writer that scripts/records_crash_stress.py kills: it extends one RecordsMmap with known
batches of records, forever.

Every batch is a pure function of (seed, batch number), so whoever checks the map can rebuild
what a prefix of completed extends must look like. After each extend returns, the writer
reports the batch number on a file descriptor, one line per batch.

The records have a field of every kind: ``image`` (ragged, 2-D and 3-D uint8: nested shapes),
``tokens`` (ragged 1-D int32, with 0-d and empty samples: a flat shapes table), ``label``
(same-shape int64 scalars), ``box`` (same-shape float32 rows of 4) and ``caption`` (strings with
multi-byte UTF-8).

``writer="naive"`` is the control: it appends field by field with the field classes and lets
the record count follow the first field, as a dataset without a count of its own would; the
stress run is expected to catch it.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crash_child  # noqa: E402  (inject_kill: the same kill points as the single-map stress run)

FIELDS = ("image", "tokens", "label", "box", "caption")
SCHEMA = {"image": ("ragged", "uint8"), "tokens": ("ragged", "int32"), "label": ("numpy", "int64"),
          "box": ("numpy", "float32"), "caption": "strings"}
# the kinds of crash_stress.layout_problems and of its 0.9.0 peer, per field
CRASH_KIND = {"image": "ragged_nested", "tokens": "ragged_flat", "label": "numpy", "box": "numpy", "caption": "strings"}
DTYPE = {"image": "uint8", "tokens": "int32", "label": "int64", "box": "float32", "caption": None}
_TEXT = "abcdefghij klmnop éß漢字🙂\n"

Record = Dict[str, Any]


def make_batch(seed: int, number: int) -> List[Record]:
    """Batch ``number``: always the same records for the same arguments; small, so that a
    kill often lands between the steps of an extend."""
    rng = np.random.default_rng([seed, 97, number])
    records = []
    for _ in range(int(rng.integers(1, 12))):
        h, w = (int(x) for x in rng.integers(0, 9, 2))
        shape = (h, w, 3) if rng.random() < 0.7 else (h, w)
        roll = rng.random()
        if roll < 0.05:
            tokens = np.array(rng.integers(-(2**31), 2**31), np.int32)  # 0-d
        elif roll < 0.1:
            tokens = np.empty(0, np.int32)
        else:
            tokens = rng.integers(-(2**31), 2**31, int(rng.integers(1, 60)), dtype=np.int32)
        caption = "".join(_TEXT[i] for i in rng.integers(0, len(_TEXT), int(rng.integers(0, 40))))
        records.append({
            "image": rng.integers(0, 256, shape, dtype=np.uint8),
            "tokens": tokens,
            "label": int(rng.integers(-5, 1000)),
            "box": rng.standard_normal(4).astype(np.float32),
            "caption": caption,
        })
    return records


def create(path: str, seed: int) -> None:
    """(Re)build the map from batch 0."""
    from mmap_ninja.records import RecordsMmap

    RecordsMmap.from_generator(path, make_batch(seed, 0), batch_size=64, schema=SCHEMA).close()


def _naive_extender(path: str) -> Callable[[List[Record]], None]:
    from mmap_ninja import numpy as np_ninja
    from mmap_ninja.ragged import RaggedMmap
    from mmap_ninja.records import RecordsInfo, read_records_file, write_records_file
    from mmap_ninja.string import StringsMmap

    root = Path(path)

    def extend(records: List[Record]) -> None:
        for name in FIELDS:
            values = [r[name] for r in records]
            if name in ("label", "box"):
                np_ninja.extend_dir(root / name, np.stack([np.asarray(v, DTYPE[name]) for v in values]))
            elif name == "caption":
                StringsMmap(root / name).extend(values)
            else:
                RaggedMmap(root / name).extend(values)
            if name == FIELDS[0]:  # no count of its own: the records are what the first field holds
                info = read_records_file(root)
                write_records_file(root, RecordsInfo(len(RaggedMmap(root / name)), info.fields, info.classes))

    return extend


def extender(path: str, writer: str = "ours") -> Callable[[List[Record]], None]:
    """A function that adds one batch of records to the map at ``path``."""
    if writer == "naive":
        return _naive_extender(path)
    from mmap_ninja.records import RecordsMmap

    return RecordsMmap(path).extend


def inject_rename_kill(after_renames: int, before: bool) -> None:
    """SIGKILL this process at its ``after_renames``-th os.replace, just before or just after it
    (add_field publishes its field, then a new records file, by renames)."""
    calls = 0
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        nonlocal calls
        calls += 1
        if calls >= after_renames and before:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if calls >= after_renames:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


def inject_commit_kill(after_commits: int, before: bool) -> None:
    """SIGKILL this process at its ``after_commits``-th write to records.json (the commit of
    an extend), just before it or just after it."""
    calls = 0
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: Any, offset: int) -> int:
        nonlocal calls
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("records.json"):
            return real_pwrite(fd, data, offset)
        calls += 1
        if calls >= after_commits and before:
            os.kill(os.getpid(), signal.SIGKILL)
        done = real_pwrite(fd, data, offset)
        if calls >= after_commits:
            os.kill(os.getpid(), signal.SIGKILL)
        return done

    os.pwrite = pwrite


def run_forked(path: str, seed: int, first_batch: int, progress_fd: int, error_path: str, prepared: Dict[int, List[Record]],
               writer: str = "ours", kill_after_writes: Optional[int] = None, partial_write: bool = False,
               kill_at_commit: Optional[int] = None, before_commit: bool = False) -> None:
    """The body of a forked writer: extends until killed; never returns; a traceback goes to ``error_path``."""
    try:
        if kill_after_writes is not None:
            crash_child.inject_kill(kill_after_writes, partial_write)
        if kill_at_commit is not None:
            inject_commit_kill(kill_at_commit, before_commit)
        extend = extender(path, writer)
        number = first_batch
        while True:
            batch = prepared.get(number)
            extend(batch if batch is not None else make_batch(seed, number))
            os.write(progress_fd, b"%d\n" % number)
            number += 1
    except BaseException:
        with open(error_path, "w") as f:
            f.write(traceback.format_exc())
    finally:
        os._exit(1)
