"""``durable=True`` against power loss: every crash state a file system may leave, checked.

SIGKILL tests (test_crash.py) prove that a killed *process* leaves a map that opens; the
kernel still writes everything the process wrote. A power loss loses what was not yet made
durable by an fsync, in any combination. In the manner of ALICE (Pillai et al., OSDI 2014)
and CrashMonkey (Mohan et al., OSDI 2018), these tests

1. record every operation a sequence of durable calls (build, append, extend, rebuild)
   issues through ``mmap_ninja.fs``, the one module that changes files: creates, writes,
   truncates, fsyncs, mkdirs, renames, exchanges, removals, directory fsyncs;
2. for every prefix of that log (a power loss after each operation), build the states the
   disk may hold: what an fsync had made durable, plus any subset of the rest (see
   ``crash_states`` for the model and its bounds);
3. check each state: the map opens, holds exactly the samples of some prefix of the calls
   (calls are atomic), and holds every sample of every durable call that had returned.

A model of the file system (inodes, directory entries, file bytes) is kept beside the real
one while recording; at the end the two must agree byte for byte, so a write that bypassed
``fs`` fails the test instead of escaping the replay.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import pytest

from mmap_ninja import commit, fs, layout, publish, verify
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

PAGE = 4096  # a write may reach the disk in part: page by page, in any combination
ALL_SUBSETS_UP_TO = 6  # pending operations up to which every subset is tried
RANDOM_SUBSETS = 12  # beyond it: structured subsets plus this many random ones

# Functions of fs that change files, each recorded; and those that do not (or only through
# the recorded ones). A new function in fs must be put in one of the two.
RECORDED = ("open_file", "close", "write_file", "touch", "pwrite", "pwritev", "ftruncate", "copy_range",
            "fsync", "fsync_all", "sync_path", "sync_paths", "mkdir", "replace", "exchange", "rmtree", "link_or_copy")
NOT_CHANGING = ("pread", "makedirs", "swap_in", "process_alive", "WriterLock")

FILE, DIR = "file", "dir"


# --- the log and the model of the file system ---------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One recorded operation. ``ino`` is a file or directory; entry operations act on the
    names ``a`` (and ``b``) in directory ``ino``."""

    kind: str  # create, unlink, rename, exchange, write, truncate, fsync, returned
    ino: int = -1
    a: str = ""
    b: str = ""
    target: int = -1  # create: the new inode
    offset: int = 0
    data: bytes = b""
    size: int = 0
    label: str = ""  # returned: which call
    inos: Tuple[int, ...] = ()  # fsync: the files and directories, all synced by one call

    @property
    def is_entry(self) -> bool:
        return self.kind in ("create", "unlink", "rename", "exchange")

    @property
    def is_data(self) -> bool:
        return self.kind in ("write", "truncate")


class Model:
    """Inodes: a file is a bytearray, a directory a dict of name -> inode. Inode 0 is the root."""

    def __init__(self, root: Path):
        self.root = root
        self.nodes: Dict[int, Any] = {}
        self.types: Dict[int, str] = {}
        self._linked: Dict[int, int] = {}  # the disk's inode numbers: hard links share one
        self._load(root, 0)

    def _load(self, path: Path, ino: int) -> None:
        self.types[ino] = DIR
        self.nodes[ino] = {}
        for child in sorted(path.iterdir()):
            if child.is_file() and child.stat().st_ino in self._linked:
                self.nodes[ino][child.name] = self._linked[child.stat().st_ino]
                continue
            child_ino = self.new(FILE if child.is_file() else DIR)
            self.nodes[ino][child.name] = child_ino
            if child.is_file():
                self._linked[child.stat().st_ino] = child_ino
                self.nodes[child_ino] = bytearray(child.read_bytes())
            else:
                self._load(child, child_ino)

    def new(self, type_: str) -> int:
        ino = len(self.types)
        self.types[ino] = type_
        self.nodes[ino] = bytearray() if type_ == FILE else {}
        return ino

    def lookup(self, path: Any) -> Tuple[int, str, Optional[int]]:
        """(parent directory inode, name, inode or None) of a path inside the root."""
        rel = Path(os.path.abspath(path)).relative_to(self.root)
        parent = 0
        parts = rel.parts
        if not parts:
            return -1, "", 0
        for part in parts[:-1]:
            parent = self.nodes[parent][part]
        return parent, parts[-1], self.nodes[parent].get(parts[-1])

    def tree(self, ino: int = 0) -> Dict[str, Any]:
        return {name: (bytes(self.nodes[c]) if self.types[c] == FILE else self.tree(c))
                for name, c in self.nodes[ino].items()}


def disk_tree(path: Path) -> Dict[str, Any]:
    return {c.name: (c.read_bytes() if c.is_file() else disk_tree(c)) for c in path.iterdir()}


def apply(op: Op, get: Callable[[int], Any], put: Callable[[int, Any], None]) -> None:
    """Apply ``op`` to a state read by ``get`` and written by ``put``; an operation whose
    names are missing in this state (its create was lost) does nothing, as on a disk."""
    if op.is_entry:
        entries = dict(get(op.ino))
        if op.kind == "create":
            entries[op.a] = op.target
        elif op.kind == "unlink":
            entries.pop(op.a, None)
        elif op.kind == "rename" and op.a in entries:
            entries[op.b] = entries.pop(op.a)
        elif op.kind == "exchange" and op.a in entries and op.b in entries:
            entries[op.a], entries[op.b] = entries[op.b], entries[op.a]
        put(op.ino, entries)
    elif op.kind == "write":
        content = bytearray(get(op.ino))
        if len(content) < op.offset:
            content.extend(bytes(op.offset - len(content)))
        content[op.offset : op.offset + len(op.data)] = op.data
        put(op.ino, content)
    elif op.kind == "truncate":
        content = bytearray(get(op.ino))
        del content[op.size :]
        content.extend(bytes(op.size - len(content)))
        put(op.ino, content)


class Recorder:
    """Wraps the changing functions of fs; logs each call's effect and applies it to a Model."""

    def __init__(self, root: Path):
        self.model = Model(root)
        self.log: List[Op] = []
        self.fds: Dict[int, int] = {}
        self._depth = 0
        self._saved: Dict[str, Any] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator["Recorder"]:
        for name in RECORDED:
            real = getattr(fs, name)
            self._saved[name] = real
            setattr(fs, name, self._wrap(name, real))
        try:
            yield self
        finally:
            for name, real in self._saved.items():
                setattr(fs, name, real)

    def returned(self, label: str) -> None:
        self.log.append(Op("returned", label=label))

    def _wrap(self, name: str, real: Callable) -> Callable:
        @functools.wraps(real)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._depth:  # inside another recorded call: that one records the effect
                return real(*args, **kwargs)
            before = self._before(name, args)
            self._depth += 1
            try:
                result = real(*args, **kwargs)
            finally:
                self._depth -= 1
            self._after(name, args, kwargs, before, result)
            return result

        return wrapper

    def _emit(self, op: Op) -> None:
        self.log.append(op)
        m = self.model
        apply(op, m.nodes.__getitem__, m.nodes.__setitem__)

    def _create(self, parent: int, name: str, type_: str) -> int:
        ino = self.model.new(type_)
        self.model.nodes[ino] = bytearray() if type_ == FILE else {}
        self._emit(Op("create", parent, name, target=ino))
        return ino

    def _before(self, name: str, args: Sequence) -> Any:
        if name in ("open_file", "write_file", "touch", "mkdir", "sync_path"):
            return self.model.lookup(args[0])
        if name == "sync_paths":
            return [self.model.lookup(p) for p in args[0]]
        if name == "link_or_copy":
            return self.model.lookup(args[0]), self.model.lookup(args[1])
        if name == "rmtree":
            found = self.model.lookup(args[0])
            return found if found[2] is not None else None
        if name == "copy_range":
            src = self.model.nodes[self.fds[args[0]]]
            return bytes(src[args[3] : args[3] + args[2]])
        return None

    def _after(self, name: str, args: Sequence, kwargs: Dict, before: Any, result: Any) -> None:
        m = self.model
        if name in ("open_file", "write_file", "touch"):
            parent, base, ino = before
            flags = args[1] if name == "open_file" else os.O_CREAT | (os.O_TRUNC if name == "write_file" else 0)
            if ino is None:
                ino = self._create(parent, base, FILE)
            elif flags & os.O_TRUNC and m.nodes[ino]:
                self._emit(Op("truncate", ino, size=0))
            if name == "open_file":
                self.fds[result] = ino
            elif name == "write_file" and args[1]:
                self._emit(Op("write", ino, data=bytes(memoryview(args[1]).cast("B"))))
        elif name == "close":
            self.fds.pop(args[0], None)
        elif name in ("pwrite", "pwritev"):
            data = bytes(memoryview(args[1]).cast("B")) if name == "pwrite" else b"".join(bytes(memoryview(b).cast("B")) for b in args[1])
            self._emit(Op("write", self.fds[args[0]], offset=args[2], data=data[:result]))
        elif name == "copy_range":
            self._emit(Op("write", self.fds[args[1]], offset=args[4], data=before))
        elif name == "ftruncate":
            self._emit(Op("truncate", self.fds[args[0]], size=args[1]))
        elif name == "fsync":
            self.log.append(Op("fsync", inos=(self.fds[args[0]],)))
        elif name == "fsync_all":
            self.log.append(Op("fsync", inos=tuple(self.fds[fd] for fd in args[0])))
        elif name == "sync_path":
            self.log.append(Op("fsync", inos=(before[2],)))
        elif name == "sync_paths":
            self.log.append(Op("fsync", inos=tuple(ino for _, _, ino in before)))
        elif name == "mkdir":
            if before[2] is None:
                self._create(before[0], before[1], DIR)
        elif name in ("replace", "exchange"):
            if name == "exchange" and not result:
                return
            src, dst = m.lookup(args[0]), m.lookup(args[1])
            if src[0] != dst[0]:
                raise NotImplementedError("the harness models renames within one directory only")
            self._emit(Op("rename" if name == "replace" else "exchange", src[0], src[1], dst[1]))
        elif name == "link_or_copy":
            (_, _, src), (parent, base, _) = before
            if os.stat(args[0]).st_ino == os.stat(args[1]).st_ino:  # a second name for the same file
                self._emit(Op("create", parent, base, target=src))
            else:
                copy = self._create(parent, base, FILE)
                self._emit(Op("write", copy, data=bytes(m.nodes[src])))
        elif name == "rmtree" and before is not None:
            self._unlink_tree(before[0], before[1], before[2])

    def _unlink_tree(self, parent: int, name: str, ino: int) -> None:
        """rmtree removes entries one by one, deepest first: one unlink each."""
        if self.model.types[ino] == DIR:
            for child_name, child in list(self.model.nodes[ino].items()):
                self._unlink_tree(ino, child_name, child)
        self._emit(Op("unlink", parent, name))


# --- crash states -----------------------------------------------------------------------------


def pieces(op: Op) -> List[Op]:
    """A write as the page-sized pieces that may reach the disk independently."""
    if op.kind != "write" or len(op.data) <= PAGE:
        return [op]
    cuts = [op.offset] + list(range((op.offset // PAGE + 1) * PAGE, op.offset + len(op.data), PAGE)) + [op.offset + len(op.data)]
    return [Op("write", op.ino, offset=a, data=op.data[a - op.offset : b - op.offset]) for a, b in zip(cuts, cuts[1:])]


def subsets(n: int, seed: int) -> Iterator[Tuple[int, ...]]:
    """Which of ``n`` pending operations reached the disk: all combinations for small ``n``;
    else none, all, every prefix and suffix (in order or reversed order of persistence),
    all but one, only one, and random ones."""
    if n <= ALL_SUBSETS_UP_TO:
        for mask in range(1 << n):
            yield tuple(i for i in range(n) if mask >> i & 1)
        return
    seen: Set[Tuple[int, ...]] = set()
    everything = tuple(range(n))
    candidates = [everything[:i] for i in range(n + 1)] + [everything[i:] for i in range(n)]
    candidates += [everything[:i] + everything[i + 1 :] for i in range(n)] + [(i,) for i in range(n)]
    rng = random.Random(seed)
    candidates += [tuple(i for i in range(n) if rng.random() < 0.5) for _ in range(RANDOM_SUBSETS)]
    for c in candidates:
        if c not in seen:
            seen.add(c)
            yield c


@dataclass
class CrashState:
    after: int  # operations issued before the power loss
    returned: int  # durable calls that had returned
    tree: Optional[Dict[str, Any]]  # the map directory as the disk holds it (None: absent)
    digest: str = field(default="")


def _relevant(durable: Dict[int, Any], types: Dict[int, str], pending: List[Op], name: str) -> List[Op]:
    """The pending operations that can change what the disk holds at ``/name``.

    Others (in directories that never end up there, on other names in the root) cannot
    change the verdict; leaving them out keeps the subsets few.
    """
    names = {name}  # root names whose entry can end up at /name
    root_ops = [op for op in pending if op.is_entry and op.ino == 0]
    grew = True
    while grew:
        grew = False
        for op in root_ops:
            if op.kind in ("rename", "exchange") and (op.b in names or (op.kind == "exchange" and op.a in names)):
                new = {op.a, op.b} - names
                if new:
                    names |= new
                    grew = True
    inodes = {durable[0][n] for n in names if n in durable[0]} | {op.target for op in root_ops if op.kind == "create" and op.a in names}
    stack = list(inodes)
    while stack:
        ino = stack.pop()
        if types[ino] != DIR:
            continue
        children = set(durable.get(ino, {}).values()) | {op.target for op in pending if op.kind == "create" and op.ino == ino}
        for child in children - inodes:
            inodes.add(child)
            stack.append(child)
    kept = []
    for op in pending:
        if op.ino == 0 and op.is_entry:
            if op.a in names or op.b in names:
                kept.append(op)
        elif op.ino in inodes:
            kept.append(op)
    return kept


def _tree_of(get: Callable[[int], Any], types: Dict[int, str], ino: int) -> Dict[str, Any]:
    return {n: (bytes(get(c)) if types[c] == FILE else _tree_of(get, types, c)) for n, c in get(ino).items()}


def _digest(tree: Optional[Dict[str, Any]]) -> str:
    h = hashlib.sha1()

    def walk(t: Dict[str, Any], prefix: str) -> None:
        for n in sorted(t):
            if isinstance(t[n], dict):
                h.update(f"d{prefix}/{n}\0".encode())
                walk(t[n], f"{prefix}/{n}")
            else:
                h.update(f"f{prefix}/{n}\0{len(t[n])}\0".encode())
                h.update(t[n])

    if tree is None:
        return "absent"
    walk(tree, "")
    return h.hexdigest()


def crash_states(start: Model, types: Dict[int, str], log: List[Op], name: str) -> Iterator[CrashState]:
    """Every distinct state of ``/name`` a power loss may leave, at every point of ``log``.

    The model: an fsync of a file makes its earlier writes and truncates durable; an fsync
    of a directory makes its earlier creates, removals and renames durable (an fsync of a
    file does not make its name durable). Anything not yet durable may be lost, and each
    write in part, page by page; whatever survives may have reached the disk in any order.
    Operations on different inodes commute and the page cache holds the latest bytes of
    each page, so "any order" is covered by applying every subset of the pending
    operations in program order. A power loss during an fsync leaves a state already
    found before it (the fsync made some pending operations durable: a subset), so the
    fsyncs of one ``fsync_all`` are one step of the log. Pages torn within themselves, and
    garbage in place of lost bytes, are not modelled (journaled file systems in ordered mode
    do not show them). Where the pending operations are many, ``subsets`` bounds the search.
    """
    durable = {ino: (bytearray(v) if start.types[ino] == FILE else dict(v)) for ino, v in start.nodes.items()}
    pending: List[Op] = []
    returned = 0
    for k in range(len(log) + 1):
        relevant = _relevant(durable, types, pending, name)
        seen: Set[str] = set()
        for chosen in subsets(len(relevant), seed=k):
            overlay: Dict[int, Any] = {}

            def get(ino: int) -> Any:
                if ino in overlay:
                    return overlay[ino]
                if ino in durable:
                    return durable[ino]
                return b"" if types[ino] == FILE else {}

            for i in chosen:
                apply(relevant[i], get, overlay.__setitem__)
            root = get(0)
            tree = _tree_of(get, types, root[name]) if name in root and types[root[name]] == DIR else None
            digest = _digest(tree)
            if digest not in seen:
                seen.add(digest)
                yield CrashState(k, returned, tree, digest)
        if k == len(log):
            break
        op = log[k]
        if op.kind == "returned":
            returned += 1
        elif op.kind == "fsync":
            made_durable = [p for p in pending if p.ino in op.inos and (p.is_entry if types[p.ino] == DIR else p.is_data)]
            for p in made_durable:
                apply(p, lambda ino: durable.get(ino, b"" if types[ino] == FILE else {}), durable.__setitem__)
            pending = [p for p in pending if not any(p is q for q in made_durable)]
        else:
            pending.extend(pieces(op))


# --- scenarios and the checker ----------------------------------------------------------------


CHECKSUMMED = "ragged_checksums"  # a ragged map built with checksum=True: its checksums/ must survive too


def sample(kind: str, i: int) -> Any:
    """Sample ``i``: known from its position; ragged samples span pages, so writes tear."""
    if kind in ("ragged", CHECKSUMMED):
        return np.arange(i * 700, i * 700 + 40 + 100 * (i % 4), dtype=np.int64)
    if kind == "ragged_nested":
        return np.full((i % 3 + 1, 2, i % 2 + 1)[: 1 + i % 3], i, np.int16)
    if kind == "strings":
        return f"sample {i} " + "é漢" * (i * 37 % 300)
    return np.full((16, 40), float(i), np.float64)  # 5,120 bytes a row


def build(kind: str, path: Path, samples: List[Any], durable: bool) -> Any:
    if kind == "numpy":
        return np_ninja.from_generator(path, iter(samples), batch_size=2, durable=durable)
    if kind == "strings":
        return StringsMmap.from_generator(path, iter(samples), batch_size=2, durable=durable)
    return RaggedMmap.from_generator(path, iter(samples), batch_size=2, durable=durable, checksum=kind == CHECKSUMMED)


def extend(kind: str, path: Path, samples: List[Any], handle: Any = None, durable: bool = True) -> Any:
    if kind == "numpy":
        np_ninja.extend_dir(path, np.stack(samples), durable=durable)
        return None
    if handle is None:
        handle = StringsMmap(path) if kind == "strings" else RaggedMmap(path)
    if len(samples) == 1:
        handle.append(samples[0], durable=durable)
    else:
        handle.extend(samples, durable=durable)
    return handle


def read_all(kind: str, path: Path) -> List[Any]:
    if kind == "numpy":
        m = np_ninja.open_existing(path, mode="r")
        out = [np.array(m[i]) for i in range(len(m))]
        del m
        return out
    m = StringsMmap(path, mode="rb") if kind == "strings" else RaggedMmap(path, mode="r")
    try:
        return [s if kind == "strings" else np.array(s) for s in m]
    finally:
        m.close()


def same(kind: str, got: List[Any], want: List[Any]) -> bool:
    if len(got) != len(want):
        return False
    if kind == "strings":
        return got == want
    return all(g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes() for g, w in zip(got, want))


def materialize(tree: Dict[str, Any], path: Path) -> None:
    path.mkdir()
    for n, content in tree.items():
        if isinstance(content, dict):
            materialize(content, path / n)
        else:
            (path / n).write_bytes(content)


@dataclass
class Scenario:
    kind: str
    root: Path
    versions: List[Optional[List[Any]]]  # the map's samples before any call, and after each
    log: List[Op]
    start: Model  # the files before the first recorded call
    types: Dict[int, str]  # every inode's type, also of those the calls created


FRESH, EXISTING, UPGRADE = "build-append-extend", "repair-extend-rebuild", "upgrade-append"


def record(kind: str, root: Path, scenario: str) -> Scenario:
    """Record durable calls on ``root/m``.

    FRESH: a build from nothing, an append, an extend by a new handle.
    EXISTING: the map exists (built without durable) with the tail a killed append left; an
    extend by a new handle (which repairs first), then a rebuild over it.
    UPGRADE (ragged): a map of 1-D samples gets a 2-D one, which upgrades its shapes layout
    (a hard-linked rebuild swapped in), then one more sample.
    """
    path = root / "m"
    existing = scenario == EXISTING
    if scenario == UPGRADE:
        first = [sample(kind, i) for i in range(4)]
        build(kind, path, first, durable=False)
        versions: List[Optional[List[Any]]] = [first]
    elif existing:
        first = [sample(kind, i) for i in range(4)]
        build(kind, path, first, durable=False)
        for data in path.rglob("data.ninja"):
            with open(data, "ab") as f:
                f.write(b"\xee" * 5000)
        versions = [first]
    else:
        versions = [None]
    recorder = Recorder(root)
    start = Model(root)
    with recorder.recording():
        if scenario == UPGRADE:
            wide = np.arange(12, dtype=np.int64).reshape(3, 4)
            handle = extend(kind, path, [wide])
            recorder.returned("extend")
            versions.append(first + [wide])
            extend(kind, path, [sample(kind, 4)], handle)
            recorder.returned("append")
            versions.append(first + [wide, sample(kind, 4)])
            handle.close()
        elif existing:
            more = [sample(kind, i) for i in range(4, 7)]
            extend(kind, path, more)
            recorder.returned("extend")
            versions.append(first + more)
            rebuilt = [sample(kind, i) for i in range(100, 103)]  # told apart from the first ones
            build(kind, path, rebuilt, durable=True)
            recorder.returned("rebuild")
            versions.append(rebuilt)
        else:
            samples = [sample(kind, i) for i in range(9)]
            handle = build(kind, path, samples[:5], durable=True)
            recorder.returned("build")
            versions.append(samples[:5])
            handle = extend(kind, path, samples[5:6], handle if kind != "numpy" else None)
            recorder.returned("append")
            versions.append(samples[:6])
            extend(kind, path, samples[6:])
            recorder.returned("extend")
            versions.append(samples)
            if handle is not None:
                handle.close()
    assert recorder.model.tree() == disk_tree(root), "a change to the files was not made through mmap_ninja.fs"
    return Scenario(kind, root, versions, recorder.log, start, recorder.model.types)


@dataclass
class Report:
    states: int = 0
    checked: int = 0
    violations: List[str] = field(default_factory=list)


def check(scenario: Scenario, work: Path, max_violations: int = 3) -> Report:
    """Open every crash state of the scenario's map and compare it with what is allowed.

    The states are written to ``work``, or to memory (/dev/shm) where there is one.
    """
    report = Report()
    work.mkdir(exist_ok=True)
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        work = Path(tempfile.mkdtemp(prefix="power-loss-", dir="/dev/shm"))
    try:
        return _check(scenario, work, max_violations, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check(scenario: Scenario, work: Path, max_violations: int, report: Report) -> Report:
    verdicts: Dict[Tuple[str, int], Optional[str]] = {}
    for state in crash_states(scenario.start, scenario.types, scenario.log, "m"):
        report.states += 1
        allowed = scenario.versions[state.returned : state.returned + 2]
        key = (state.digest, state.returned)
        if key not in verdicts:
            verdicts[key] = _verdict(scenario.kind, state, allowed, work / f"s{report.checked}")
            report.checked += 1
        if verdicts[key] is not None:
            report.violations.append(f"power loss after operation {state.after} of {len(scenario.log)} "
                                     f"({_describe(scenario.log, state.after)}), {state.returned} calls returned: {verdicts[key]}")
            if len(report.violations) >= max_violations:
                break
    return report


def _describe(log: List[Op], after: int) -> str:
    if after == 0:
        return "before any"
    op = log[after - 1]
    return f"last {op.kind}" + (f" {op.label}" if op.label else "")


def _verdict(kind: str, state: CrashState, allowed: List[Optional[List[Any]]], where: Path) -> Optional[str]:
    if state.tree is None:
        return None if None in allowed else "the map is gone"
    materialize(state.tree, where)
    try:
        return _verdict_of_files(kind, where, allowed)
    finally:
        shutil.rmtree(where)


def _verdict_of_files(kind: str, where: Path, allowed: List[Optional[List[Any]]]) -> Optional[str]:
    """The map must open and hold an allowed version; then the next writer (one handle, which
    also reads: opening a map costs more than the rest) repairs it and appends after it."""
    handle = None
    try:
        if kind == "numpy":
            got = read_all(kind, where)
        else:
            handle = StringsMmap(where) if kind == "strings" else RaggedMmap(where)
            got = [s if kind == "strings" else np.array(s) for s in handle]
    except Exception as e:
        return f"the map does not open: {type(e).__name__}: {e}"
    try:
        if not any(v is not None and same(kind, got, v) for v in allowed):
            sizes = [None if v is None else len(v) for v in allowed]
            return f"it holds {len(got)} samples, not exactly the samples of a prefix of the calls (allowed: {sizes} samples)"
        if kind == CHECKSUMMED and not verify(where).ok:
            return f"verify finds damage: {verify(where).problems}"
        try:
            extend(kind, where, [sample(kind, 50)], handle, durable=False)
            after = read_all(kind, where) if kind == "numpy" else [s if kind == "strings" else np.array(s) for s in handle]
            if not same(kind, after, got + [sample(kind, 50)]):
                return "an append after the power loss reads back wrong"
            if kind == CHECKSUMMED and not (verify(where).ok and verify(where).not_covered == 0 and verify(where).has_checksums):
                return f"after an append, the checksums do not cover every sample: {verify(where)}"
        except Exception as e:
            return f"an append after the power loss fails: {type(e).__name__}: {e}"
        return None
    finally:
        if handle is not None:
            handle.close()


# --- tests ------------------------------------------------------------------------------------

KINDS = ["ragged", "strings", "numpy"]
SLOW_KINDS = ["ragged_nested"]  # shapes as a map of their own: many more files and states


def test_every_changing_function_of_fs_is_recorded():
    public = {n for n in dir(fs) if not n.startswith("_") and callable(getattr(fs, n)) and getattr(getattr(fs, n), "__module__", "") == fs.__name__}
    assert public - set(RECORDED) - set(NOT_CHANGING) == set(), "add the new fs function to RECORDED or NOT_CHANGING"


SCENARIOS = [(k, s) for k in KINDS for s in (FRESH, EXISTING)] + [("ragged", UPGRADE)]
SCENARIOS += [(CHECKSUMMED, s) for s in (FRESH, EXISTING)]
SCENARIOS += [pytest.param(k, s, marks=pytest.mark.stress) for k in SLOW_KINDS for s in (FRESH, EXISTING)]


@pytest.mark.parametrize("kind, name", SCENARIOS)
def test_durable_calls_survive_power_loss_at_every_point(tmp_path, kind, name):
    (tmp_path / "disk").mkdir()
    scenario = record(kind, tmp_path / "disk", name)
    report = check(scenario, tmp_path / "states")
    assert report.violations == [], "\n".join(report.violations)
    assert report.checked >= 10  # the crash states are really explored
    # every durable call syncs something before it returns (the crash states are really explored)
    calls, synced = 0, False
    for op in scenario.log:
        synced = synced or (op.kind == "fsync" and bool(op.inos))
        if op.kind == "returned":
            assert synced, f"durable call {calls} ({op.label}) returned without an fsync"
            calls, synced = calls + 1, False
    assert calls >= 2


@contextlib.contextmanager
def planted(monkeypatch, bug: str, kind: str) -> Iterator[None]:
    """A plausible bug in the commit order, planted for one recording: the commit protocol
    and the publish see an fs that leaves out or delays some fsyncs (above fs, so the
    recorder logs what is done)."""
    planted_fs = _Planted(bug, kind)
    monkeypatch.setattr(commit, "fs", planted_fs)
    monkeypatch.setattr(publish, "fs", planted_fs)
    yield


def _path_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class _Planted:
    def __init__(self, bug: str, kind: str):
        self.bug, self.kind = bug, kind
        self.deferred: List[str] = []  # data files whose fsync waits for the commit's

    def __getattr__(self, name: str) -> Any:
        return getattr(fs, name)

    def _is_commit(self, fd: int) -> bool:
        path = Path(_path_of(fd))
        return path.name == layout.SHAPE and (self.kind == "numpy" or path.parent.name == layout.STARTS)

    def _keep(self, fd: int) -> bool:
        """Whether the planted bug still fsyncs this file now."""
        path = Path(_path_of(fd))
        if self.bug == "no fsync of data.ninja":
            return path.name != layout.DATA
        if self.bug == "commit before the data is synced" and path.name == layout.DATA:
            self.deferred.append(str(path))
            return False
        if self.bug == "counts published without fsync":
            return path.name != layout.SHAPE or self._is_commit(fd)
        if self.bug == "no fsync of the commit":
            return not self._is_commit(fd)
        return True

    def fsync(self, fd: int) -> None:
        if self._keep(fd):
            fs.fsync(fd)
        if self.deferred and self._is_commit(fd):  # the data only after the commit
            fs.sync_paths(self.deferred)
            self.deferred.clear()

    def fsync_all(self, fds: Sequence[int]) -> None:
        fs.fsync_all([fd for fd in fds if self._keep(fd)])

    def sync_paths(self, paths: Sequence[Any]) -> None:
        if self.bug == "build renamed before its files are synced":
            return
        if self.bug == "no fsync of the directory":
            paths = [p for p in paths if not Path(p).is_dir()]
        fs.sync_paths(paths)

    def sync_path(self, path: Any) -> None:
        if not (self.bug == "no fsync of the directory" and Path(path).is_dir()):
            fs.sync_path(path)


BUGS = ["no fsync of data.ninja", "commit before the data is synced", "no fsync of the commit",
        "build renamed before its files are synced", "no fsync of the directory"]
SPANS_BUGS = ["counts published without fsync"]  # a same-shape map has one count, the commit


@pytest.mark.parametrize("kind, bug", [(k, b) for k in KINDS for b in BUGS] + [(k, b) for k in ("ragged", "strings") for b in SPANS_BUGS])
def test_a_broken_commit_order_is_caught(tmp_path, monkeypatch, kind, bug):
    (tmp_path / "disk").mkdir()
    with planted(monkeypatch, bug, kind):
        scenario = record(kind, tmp_path / "disk", FRESH)
    report = check(scenario, tmp_path / "states", max_violations=1)
    assert report.violations, f"the checker missed the planted bug ({bug}) in {report.states} crash states"
    print(f"{kind}, {bug}: {report.violations[0]}")


def test_a_change_that_bypasses_fs_is_noticed(tmp_path):
    """The recorder's model must match the disk; a write around fs would escape the replay."""
    root = tmp_path / "disk"
    root.mkdir()
    recorder = Recorder(root)
    with recorder.recording():
        RaggedMmap.from_lists(root / "m", [np.arange(3)], durable=True).close()
        assert recorder.model.tree() == disk_tree(root)
        with open(root / "m" / "data.ninja", "ab") as f:
            f.write(b"x")
    assert recorder.model.tree() != disk_tree(root)
