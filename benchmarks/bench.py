#!/usr/bin/env python
"""Speed benchmark: this repository's mmap_ninja against the released mmap_ninja 0.9.0
(and, where it fits, Hugging Face ``datasets`` as an optional peer column).

    python benchmarks/bench.py --quick            # development: small data, 1 repetition
    python benchmarks/bench.py --json out.json    # the full run (~10 minutes on 2 cores)

Each library runs in its own *worker* process (this same file, ``--worker``), started with
``python -I`` so that neither can import the other: ours from the repository's ``src``,
0.9.0 from its own virtualenv (``--upstream-python``). The driver sends each workload to
both workers in turn (ours, 0.9.0, 0.9.0, ours, ...), keeps the best of the repetitions,
checks the checksum of what each side read against the data generator's ground truth, and
prints one table. HF ``datasets`` runs in a third worker, from a virtualenv of its own
(``--hf-python``), on the read and iteration workloads it has an equivalent for; without
it that column says why it is empty. Timings are with a warm page cache; see
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REPO_SRC = REPO / "src"
UPSTREAM_VERSION = "0.9.0"
HF_VERSION = "5.2.0"

sys.path.insert(0, str(HERE))
import workloads as wl  # noqa: E402  (numpy only; safe under either interpreter)

import numpy as np  # noqa: E402

# batch sizes given to from_generator (and used to build the read maps)
FROMGEN_BATCH = {"images": 100, "tokens": 1_000, "imdb": 1_000}
APPEND_BASE = 100  # samples in the map before the append loop starts


# =========================================================================================
# the worker: runs workloads with one library, answers the driver over a pipe
# =========================================================================================


def _import_library(side: str) -> Any:
    """Import mmap_ninja for ``side`` and prove it is the right one."""
    if side == "ours":
        sys.path.insert(0, str(REPO_SRC))
    else:  # never let the release see the repository
        sys.path[:] = [p for p in sys.path if not Path(p or ".").resolve().is_relative_to(REPO_SRC)]
    import mmap_ninja

    where = Path(mmap_ninja.__file__).resolve()
    if side == "ours" and not where.is_relative_to(REPO_SRC):
        raise RuntimeError(f"the 'ours' worker imported mmap_ninja from {where}, not from {REPO_SRC}")
    if side == "upstream":
        if where.is_relative_to(REPO):
            raise RuntimeError(f"the 0.9.0 worker imported this repository's mmap_ninja ({where})")
        if getattr(mmap_ninja, "__version__", None) != UPSTREAM_VERSION:
            raise RuntimeError(f"the 0.9.0 worker found mmap_ninja {getattr(mmap_ninja, '__version__', '?')} at {where}")
    return mmap_ninja


class Worker:
    """Workload implementations. Each returns seconds (timed part only), a count of units,
    and the checksum of some samples it produced with the indices of those samples."""

    def __init__(self, side: str, workdir: Path, mode: str):
        self.side = side
        self.workdir = workdir
        self.mode = mode
        self.mn = _import_library(side)
        self.cache: Dict[str, Any] = {}
        self.warmed: set = set()

    # -- helpers ---------------------------------------------------------------------------

    def src(self, name: str) -> wl.Source:
        key = "src:" + name
        if key not in self.cache:
            self.cache[key] = wl.source(self.workdir, name, self.mode)
        return self.cache[key]

    def map_path(self, name: str) -> Path:
        return map_path(self.workdir, name, len(self.src(name)))

    def opened(self, name: str, kind: str) -> Any:
        key = f"map:{name}"
        if key not in self.cache:
            path = self.map_path(name)
            if kind == "ragged":
                self.cache[key] = self.mn.RaggedMmap(path)
            elif kind == "string":
                self.cache[key] = self.mn.StringsMmap(path)
            else:
                self.cache[key] = self.mn.np_open_existing(path)
        return self.cache[key]

    def scratch(self, label: str) -> Path:
        path = self.workdir / "scratch" / f"{self.side}-{os.getpid()}-{label}"
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def timed(self, key: str, fn: Callable[[], Any]) -> Tuple[float, Any]:
        """Run ``fn`` once untimed the first time (page tables, caches), then time it."""
        if key not in self.warmed:
            fn()
            self.warmed.add(key)
        gc.collect()
        gc.disable()  # like timeit: the collector's pauses are noise here
        try:
            t0 = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t0
        finally:
            gc.enable()
        return seconds, out

    def timed_stream(self, key: str, stream: Callable[[], Iterator[Any]], length: int, keep: Sequence[int]) -> Tuple[float, List[Any]]:
        """Time consuming ``stream()`` (``length`` items expected) at C speed, keeping the
        items at positions ``keep`` (sorted) for verification and dropping the rest at once,
        as a training loop would. One extra item past ``length`` would be kept too, so a
        stream of the wrong length cannot pass verification."""
        mask = [False] * (length + 1)
        for position in keep:
            mask[position] = True
        mask[length] = True
        return self.timed(key, lambda: list(itertools.compress(stream(), mask)))

    # -- preparing the shared read maps (ours builds them once; both sides read them) -------

    def op_prepare(self) -> Dict[str, Any]:
        built = []
        for name, kind in (("images", "ragged"), ("tokens", "ragged"), ("imdb", "string"), ("sameshape", "numpy"),
                           ("open_ragged", "ragged"), ("open_strings", "string"), ("imdb_mixed", "string"),
                           ("sameshape64", "numpy")):
            path = self.map_path(name)
            if (path.parent / (path.name + ".done")).exists():
                continue
            src = self.src(name)
            shutil.rmtree(path, ignore_errors=True)
            if kind == "ragged":
                self.mn.RaggedMmap.from_generator(path, src.samples(), batch_size=10_000)
            elif kind == "string":
                self.mn.StringsMmap.from_generator(path, src.samples(), batch_size=10_000)
            else:
                self.mn.np_from_ndarray(path, np.asarray(src.values).reshape((len(src), *src.shapes[0].tolist())))
            (path.parent / (path.name + ".done")).write_text(str(len(src)))
            built.append(name)
        return {"built": built}

    # -- single random reads ---------------------------------------------------------------

    def op_read(self, name: str, kind: str, how: str = "index") -> Dict[str, Any]:
        n = len(self.src(name))
        idx = wl.random_indices(n, wl.SIZES[self.mode]["single_reads"], seed=10)
        reader = self._reader(name, kind, how)
        keep = range(wl.VERIFY_COUNT)
        seconds, out = self.timed_stream(f"read:{name}:{how}", lambda: map(reader, idx), len(idx), keep)
        return {"seconds": seconds, "count": len(idx), "checksum": wl.checksum(out), "indices": idx[: wl.VERIFY_COUNT]}

    def _reader(self, name: str, kind: str, how: str) -> Callable[[int], Any]:
        if how == "index":
            m = self.opened(name, kind)
            return m.__getitem__ if kind != "numpy" else (lambda i: m[i])
        if how == "view":  # a plain ndarray over the same file, indexed the same way
            m = self.opened(name, kind)
            view = np.memmap(self.map_path(name) / "data.ninja", dtype=m.dtype, mode="r", shape=m.shape).view(np.ndarray)
            return lambda i: view[i]
        src = self.src(name)
        off_mem = memoryview(np.array(src.offsets))
        if how == "arrow":  # offsets + values files, memory-mapped, Python ints from a memoryview
            offsets = memoryview(np.load(src.folder / "offsets.npy", mmap_mode="r").view(np.ndarray))
            values = np.load(src.folder / "values.npy", mmap_mode="r").view(np.ndarray)
            return lambda i: values[offsets[i] : offsets[i + 1]]
        if how == "floor":  # everything in memory: the cost of slicing alone
            if src.kind == "text":
                blob = bytes(src.values)
                return lambda i: blob[off_mem[i] : off_mem[i + 1]].decode()
            flat = np.array(src.values)
            if name == "sameshape":
                rows = flat.reshape((len(src),) + wl.SAMESHAPE_ROW)
                return rows.__getitem__
            if src.shapes is not None:
                shapes = [tuple(s) for s in src.shapes.tolist()]
                return lambda i: flat[off_mem[i] : off_mem[i + 1]].reshape(shapes[i])
            return lambda i: flat[off_mem[i] : off_mem[i + 1]]
        if how == "files":
            folder = files_path(self.workdir, name, len(src))
            if src.kind == "text":
                paths = [str(text_file(folder, i)) for i in range(len(src))]

                def read_text(i: int) -> str:
                    with open(paths[i], "rb") as f:
                        return f.read().decode("utf-8")

                return read_text
            count = len(list(folder.glob("*.npy")))
            paths = [str(folder / f"{i}.npy") for i in range(count)]
            return lambda i: np.load(paths[i])
        raise ValueError(how)

    def op_read_files_subset(self, name: str) -> Dict[str, Any]:
        """Random reads from the first ``token_files`` samples stored as .npy files."""
        count = wl.SIZES[self.mode]["token_files"]
        idx = wl.random_indices(count, wl.SIZES[self.mode]["single_reads"], seed=11)
        reader = self._reader(name, "ragged", "files")
        keep = range(wl.VERIFY_COUNT)
        seconds, out = self.timed_stream(f"files:{name}", lambda: map(reader, idx), len(idx), keep)
        return {"seconds": seconds, "count": len(idx), "checksum": wl.checksum(out), "indices": idx[: wl.VERIFY_COUNT]}

    # -- batches of 256 by one index array ---------------------------------------------------

    def op_batch(self, name: str, kind: str, how: str = "index") -> Dict[str, Any]:
        n = len(self.src(name))
        batches = list(wl.random_batches(n, wl.SIZES[self.mode]["batches"], seed=20))
        m = self.opened(name, kind)
        fn = {"index": lambda: m.__getitem__, "get_batch": lambda: m.get_batch, "padded": lambda: m.padded}[how]()
        checked_batches = 4
        seconds, out = self.timed_stream(f"batch:{name}:{how}", lambda: map(fn, batches), len(batches), range(checked_batches))
        if how == "padded":
            samples = [row[:length] for rows, lengths in out for row, length in zip(rows, lengths.tolist())]
        else:
            samples = [s for batch in out for s in batch]
        indices = [int(i) for b in batches[:checked_batches] for i in b]
        return {"seconds": seconds, "count": len(batches), "checksum": wl.checksum(samples), "indices": indices}

    # -- building maps ----------------------------------------------------------------------

    def _materialised(self, name: str) -> List[Any]:
        """Every sample of ``name`` in memory (fresh ndarrays / str), as a generator would make them."""
        key = "samples:" + name
        if key not in self.cache:
            src = self.src(name)
            if src.kind == "text":
                self.cache[key] = list(src.samples())
            else:
                values, off = np.array(src.values), src.offsets_list()
                shapes = [tuple(s) for s in src.shapes.tolist()] if src.shapes is not None else None
                self.cache[key] = [values[off[i] : off[i + 1]] if shapes is None else values[off[i] : off[i + 1]].reshape(shapes[i])
                                   for i in range(len(src))]
        return self.cache[key]

    def _verify_map(self, m: Any, n: int, seed: int) -> Dict[str, Any]:
        idx = wl.random_indices(n, wl.VERIFY_COUNT, seed)
        return {"length": len(m), "checksum": wl.checksum([m[i] for i in idx]), "indices": idx}

    def op_from_generator(self, name: str, kind: str) -> Dict[str, Any]:
        samples = self._materialised(name)
        out_dir = self.scratch(f"fromgen-{name}")
        cls = self.mn.RaggedMmap if kind == "ragged" else self.mn.StringsMmap
        gc.collect()
        t0 = time.perf_counter()
        cls.from_generator(out_dir, iter(samples), batch_size=FROMGEN_BATCH[name])
        seconds = time.perf_counter() - t0
        result = {"seconds": seconds, "count": len(samples), **self._verify_map(cls(out_dir), len(samples), seed=30)}
        shutil.rmtree(out_dir, ignore_errors=True)
        return result

    def op_append(self, name: str, kind: str, durable: bool = False) -> Dict[str, Any]:
        count = wl.SIZES[self.mode]["durable_appends" if durable else "appends"]
        samples = self._materialised(name)[: APPEND_BASE + count]
        out_dir = self.scratch(f"append-{name}")
        if kind == "ragged":
            m = self.mn.RaggedMmap.from_lists(out_dir, samples[:APPEND_BASE])
        else:
            m = self.mn.StringsMmap.from_strings(out_dir, samples[:APPEND_BASE])
        new = samples[APPEND_BASE:]
        kwargs = {"durable": True} if durable else {}
        gc.collect()
        t0 = time.perf_counter()
        for s in new:
            m.append(s, **kwargs)
        seconds = time.perf_counter() - t0
        reopened = (self.mn.RaggedMmap if kind == "ragged" else self.mn.StringsMmap)(out_dir)
        result = {"seconds": seconds, "count": len(new), **self._verify_map(reopened, len(samples), seed=31)}
        if hasattr(m, "close") and self.side == "ours":
            m.close()
        shutil.rmtree(out_dir, ignore_errors=True)
        return result

    # -- iterating every string ----------------------------------------------------------------

    def op_iterate(self, name: str, how: str = "iter") -> Dict[str, Any]:
        n = len(self.src(name))
        if how == "files":
            reader = self._reader(name, "string", "files")
            stream = lambda: map(reader, range(n))  # noqa: E731
        elif how == "iter":
            m = self.opened(name, "string")
            stream = lambda: iter(m)  # noqa: E731
        elif how == "for":
            m = self.opened(name, "string")
            return for_loop(self, f"iterate:{name}:for", m, n)
        elif how == "floor_for":  # the pure-Python floor: in-memory bytes, 256 strings decoded at a time
            src = self.src(name)
            blob, off = bytes(src.values), src.offsets_list()

            def decoded() -> Iterator[str]:
                for first in range(0, n, 256):
                    yield [blob[s:e].decode() for s, e in zip(off[first : first + 256], off[first + 1 : first + 257])]

            return for_loop(self, f"iterate:{name}:floor", _Restartable(lambda: itertools.chain.from_iterable(decoded())), n)
        else:
            m = self.opened(name, "string")
            stream = lambda: itertools.chain.from_iterable(m.iter_chunks())  # noqa: E731
        idx = sorted(set(wl.random_indices(n, wl.VERIFY_COUNT, seed=40)) | {n - 1})  # n - 1: a short stream fails
        seconds, out = self.timed_stream(f"iterate:{name}:{how}", stream, n, idx)
        # one item more than kept means the stream was longer than the map
        length = n + 1 if len(out) > len(idx) else n if len(out) == len(idx) else -1
        return {"seconds": seconds, "count": n, "length": length, "checksum": wl.checksum(out[: len(idx)]), "indices": idx}

    # -- the protocol ----------------------------------------------------------------------------

    def op_hello(self) -> Dict[str, Any]:
        return {"file": self.mn.__file__, "version": getattr(self.mn, "__version__", "?"), "python": sys.version.split()[0],
                "numpy": np.__version__}


def for_loop(worker: Any, key: str, iterable: Any, n: int) -> Dict[str, Any]:
    """Time ``for s in iterable`` written as a user writes it, keeping a few strings to verify."""
    idx = sorted(set(wl.random_indices(n, wl.VERIFY_COUNT, seed=40)) | {n - 1})
    mask = [False] * (n + 1)
    for position in idx:
        mask[position] = True
    mask[n] = True  # one string too many would be kept, and fail verification

    def loop() -> List[Any]:
        kept = []
        for s, keep in zip(iterable, mask):
            if keep:
                kept.append(s)
        return kept

    seconds, out = worker.timed(key, loop)
    length = n + 1 if len(out) > len(idx) else n if len(out) == len(idx) else -1
    return {"seconds": seconds, "count": n, "length": length, "checksum": wl.checksum(out[: len(idx)]), "indices": idx}


class HFWorker:
    """The workloads that Hugging Face ``datasets`` has an equivalent for, on the same data
    (datasets saved with ``save_to_disk`` and memory-mapped by ``load_from_disk``)."""

    def __init__(self, workdir: Path, mode: str):
        import datasets

        self.datasets = datasets
        self.workdir = workdir
        self.mode = mode
        self.cache: Dict[str, Any] = {}
        self.warmed: set = set()
        datasets.disable_progress_bars()

    timed = Worker.timed
    timed_stream = Worker.timed_stream
    src = Worker.src

    def path(self, name: str) -> Path:
        return Path(self.workdir) / "hf" / f"{name}-{len(self.src(name))}"

    def op_hello(self) -> Dict[str, Any]:
        return {"file": self.datasets.__file__, "version": self.datasets.__version__, "python": sys.version.split()[0],
                "numpy": np.__version__}

    def op_prepare(self) -> Dict[str, Any]:
        built = []
        for name in ("imdb", "imdb_mixed", "sameshape64"):
            path = self.path(name)
            if (path.parent / (path.name + ".done")).exists():
                continue
            src = self.src(name)
            shutil.rmtree(path, ignore_errors=True)
            if src.kind == "text":
                ds = self.datasets.Dataset.from_dict({"text": list(src.samples())})
            else:
                shape = tuple(src.shapes[0].tolist())
                features = self.datasets.Features({"x": self.datasets.Array2D(shape=shape, dtype=str(src.values.dtype))})
                ds = self.datasets.Dataset.from_dict({"x": np.asarray(src.values).reshape((len(src), *shape))}, features=features)
            ds.save_to_disk(str(path))
            (path.parent / (path.name + ".done")).write_text(str(len(src)))
            built.append(name)
        return {"built": built}

    def opened(self, name: str) -> Any:
        key = "ds:" + name
        if key not in self.cache:
            ds = self.datasets.load_from_disk(str(self.path(name)))
            self.cache[key] = ds.with_format("numpy") if self.src(name).kind == "array" else ds
        return self.cache[key]

    def op_read(self, name: str, kind: str, how: str = "index") -> Dict[str, Any]:
        n = len(self.src(name))
        count = wl.SIZES[self.mode]["single_reads"] if kind == "string" else min(2_000, wl.SIZES[self.mode]["single_reads"])
        idx = wl.random_indices(n, count, seed=10)  # a prefix of the others' indices (HF's array reads are slow)
        ds = self.opened(name)
        column = "text" if kind == "string" else "x"
        keep = range(min(wl.VERIFY_COUNT, count))
        seconds, out = self.timed_stream(f"read:{name}", lambda: (ds[i][column] for i in idx), len(idx), keep)
        return {"seconds": seconds, "count": len(idx), "checksum": wl.checksum(out), "indices": idx[: len(keep)]}

    def op_iterate(self, name: str, how: str = "for") -> Dict[str, Any]:
        ds = self.opened(name)  # rows as a user iterates them: ds.iter(batch_size=1000)
        rows = _Restartable(lambda: itertools.chain.from_iterable(b["text"] for b in ds.iter(batch_size=1_000)))
        return for_loop(self, f"iterate:{name}", rows, len(self.src(name)))


class _Restartable:
    """An iterable whose every ``iter()`` starts afresh (timed() runs the loop twice)."""

    def __init__(self, make: Callable[[], Iterator[Any]]):
        self.make = make

    def __iter__(self) -> Iterator[Any]:
        return self.make()


def worker_main(side: str, workdir: Path, mode: str) -> None:
    """Answer one JSON request per line on stdin with one JSON line on the original stdout."""
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything the library prints goes to stderr, never into the protocol
    worker = HFWorker(workdir, mode) if side == "hf" else Worker(side, workdir, mode)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = {"ok": True, **getattr(worker, "op_" + request.pop("op"))(**request)}
        except Exception:
            result = {"ok": False, "error": traceback.format_exc()}
        answer.write(json.dumps(result) + "\n")
        answer.flush()


# =========================================================================================
# probes: one fresh process per measurement (opening cost, peak memory)
# =========================================================================================


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def probe_main(args: argparse.Namespace) -> None:
    mn = _import_library(args.side)
    import mmap_ninja.ragged  # noqa: F401  (import everything the probe will touch, before measuring)
    import mmap_ninja.string  # noqa: F401

    cls = mn.RaggedMmap if args.kind == "ragged" else mn.StringsMmap
    if args.probe == "open":
        gc.collect()
        before = _status_kb("VmRSS")
        t0 = time.perf_counter()
        m = cls(args.path)
        seconds = time.perf_counter() - t0
        after = _status_kb("VmRSS")
        result = {"seconds": seconds, "rss_added_kb": after - before, "length": len(m),
                  "checksum": wl.checksum([m[i] for i in (0, 123_456, len(m) - 1)]), "indices": [0, 123_456, len(m) - 1]}
    else:  # peak memory of from_generator on a stream much larger than one batch
        lengths = wl.peak_token_lengths(args.total_mb).tolist()
        per_sample = 4 * sum(lengths) / len(lengths)
        batch_size = max(1, int(args.batch_mb * 1_000_000 / per_sample))
        make = wl.peak_token_sample if args.kind == "ragged" else wl.peak_string_sample
        stream = (make(i, length) for i, length in enumerate(lengths))
        out_dir = Path(args.path)
        shutil.rmtree(out_dir, ignore_errors=True)
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            reset = True
        except OSError:
            reset = False
        before = _status_kb("VmRSS")
        t0 = time.perf_counter()
        m = cls.from_generator(out_dir, stream, batch_size=batch_size)
        seconds = time.perf_counter() - t0
        peak = _status_kb("VmHWM")
        idx = [0, len(lengths) // 2, len(lengths) - 1]
        result = {"seconds": seconds, "peak_added_kb": peak - before, "hwm_reset": reset, "length": len(m),
                  "batch_bytes": int(batch_size * per_sample), "total_bytes": int(4 * sum(lengths)),
                  "checksum": wl.checksum([m[i] for i in idx]),
                  "expected": wl.checksum([make(i, lengths[i]) for i in idx])}
        del m
        shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(result))


# =========================================================================================
# the driver
# =========================================================================================


def map_path(workdir: Path, name: str, n: int) -> Path:
    return Path(workdir) / "maps" / f"{name}-{n}"


def files_path(workdir: Path, name: str, n: int) -> Path:
    return Path(workdir) / "files" / f"{name}-{n}"


def text_file(folder: Path, i: int) -> Path:
    return folder / f"{i // 1000:04d}" / f"{i:07d}.txt"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _isolated_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"
    return env


class WorkerProcess:
    def __init__(self, side: str, python: str, workdir: Path, mode: str):
        self.side = side
        self.python = python
        self.proc = subprocess.Popen(
            [python, "-I", str(Path(__file__).resolve()), "--worker", side, "--workdir", str(workdir), "--mode", mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_isolated_env(), cwd=str(workdir),
        )

    def call(self, op: str, **params: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker died (exit code {self.proc.wait()})")
        result = json.loads(line)
        if not result.pop("ok"):
            raise RuntimeError(f"the {self.side} worker failed on {op} {params}:\n{result['error']}")
        return result

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run_probe(python: str, side: str, workdir: Path, *args: str) -> Dict[str, Any]:
    out = subprocess.run([python, "-I", str(Path(__file__).resolve()), "--side", side, *args], capture_output=True, text=True,
                         env=_isolated_env(), cwd=str(workdir))
    if out.returncode != 0:
        raise RuntimeError(f"the {side} probe {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peer_python(what: str, candidates: Sequence[Optional[str]], cache_dir: Path, venv_name: str,
                 packages: Sequence[str]) -> Optional[str]:
    """The first existing interpreter of ``candidates``, else one of a virtualenv made once in
    ``cache_dir`` with ``packages``; None (saying why) when it cannot be had."""
    for python in candidates:
        if python:
            if Path(python).exists():
                return python
            log(f"{what} interpreter {python} does not exist; ignoring it")
    venv = cache_dir / venv_name
    python = venv / "bin" / "python"
    if python.exists():
        return str(python)
    log(f"no {what} interpreter given; creating one in {venv}")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True, capture_output=True, text=True)
        return str(python)
    except subprocess.CalledProcessError as e:
        log(f"{what} cannot be installed ({' '.join((e.stderr or str(e)).strip().splitlines()[-1:])}); leaving it out")
    except OSError as e:
        log(f"{what} cannot be installed ({e}); leaving it out")
    shutil.rmtree(venv, ignore_errors=True)
    return None


def find_upstream(requested: Optional[str], cache_dir: Path) -> Optional[str]:
    """An interpreter that has mmap_ninja 0.9.0, or None (then only ours is measured)."""
    candidates = [requested, os.environ.get("MMAP_NINJA_UPSTREAM_PYTHON")]  # else a virtualenv of its own, cached
    return _peer_python(f"mmap_ninja {UPSTREAM_VERSION}", candidates, cache_dir, f"venv-mmap_ninja-{UPSTREAM_VERSION}",
                        [f"mmap_ninja=={UPSTREAM_VERSION}", "zstandard"])


def find_hf(requested: Optional[str], cache_dir: Path) -> Optional[str]:
    """An interpreter that has Hugging Face datasets, or None (then its column stays empty)."""
    candidates = [requested, os.environ.get("MMAP_NINJA_HF_PYTHON")]  # else a virtualenv of its own, cached
    return _peer_python(f"HF datasets {HF_VERSION}", candidates, cache_dir, f"venv-datasets-{HF_VERSION}",
                        [f"datasets=={HF_VERSION}", f"numpy=={np.__version__}"])


def prepare_files(workdir: Path, mode: str) -> None:
    """The file baselines: images and tokens as .npy files, reviews as .txt files."""
    for name, count_key in (("images", "images"), ("tokens", "token_files")):
        src = wl.source(workdir, name, mode)
        folder = files_path(workdir, name, len(src))
        if (folder / ".done").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(wl.SIZES[mode][count_key]):
            np.save(folder / f"{i}.npy", np.ascontiguousarray(src.sample(i)))
        (folder / ".done").touch()
    src = wl.source(workdir, "imdb", mode)
    folder = files_path(workdir, "imdb", len(src))
    if not (folder / ".done").exists():
        off = src.offsets_list()
        values = src.values
        for i in range(len(src)):
            path = text_file(folder, i)
            if i % 1000 == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(values[off[i] : off[i + 1]].tobytes())
        (folder / ".done").touch()


def warm(*folders: Path) -> None:
    """Read every file under ``folders`` once, so the page cache holds them."""
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                with open(os.path.join(root, name), "rb", buffering=0) as f:
                    while f.read(16 << 20):
                        pass


# -- results ---------------------------------------------------------------------------------


class Row:
    """One line of the table. ``ours``/``upstream`` are per-unit costs (lower is better)
    unless ``higher_is_better``; a baseline row has ``baseline_of`` (the row it is compared to)."""

    def __init__(self, label: str, unit: str, target: str = "", min_ratio: Optional[float] = None,
                 higher_is_better: bool = False, baseline_of: Optional["Row"] = None, absolute: Optional[Tuple[float, str]] = None):
        self.label, self.unit, self.target, self.min_ratio = label, unit, target, min_ratio
        self.higher_is_better = higher_is_better
        self.baseline_of = baseline_of
        self.absolute = absolute  # (limit, "ours below this") for absolute targets
        self.ours: Optional[float] = None
        self.upstream: Optional[float] = None
        self.hf: Optional[float] = None  # Hugging Face datasets, where it has an equivalent
        self.wrong: List[str] = []
        self.ratio_override: Optional[float] = None

    def ratio(self) -> Optional[float]:
        if self.ratio_override is not None:
            return self.ratio_override
        if self.baseline_of is not None:
            ref = self.baseline_of.ours
            if ref is None or self.ours is None or ref == 0:
                return None
            return self.ours / ref
        if self.ours is None or self.upstream is None or self.ours == 0:
            return None
        return self.ours / self.upstream if self.higher_is_better else self.upstream / self.ours

    def met(self) -> str:
        if self.wrong:
            return "NO: wrong data"
        if self.absolute is not None:
            if self.ours is None:
                return "?"
            return "yes" if self.ours < self.absolute[0] else "NO"
        if self.min_ratio is None:
            return ""
        r = self.ratio()
        if r is None:
            return "?"
        return "yes" if r >= self.min_ratio else f"NO ({r / self.min_ratio:.0%} of target)"

    def as_dict(self) -> Dict[str, Any]:
        return {"workload": self.label, "unit": self.unit, "ours": self.ours, "upstream": self.upstream, "hf": self.hf, "ratio": self.ratio(),
                "target": self.target, "met": self.met(), "wrong": self.wrong, "baseline_of": self.baseline_of.label if self.baseline_of else None}


def fmt_value(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":  # seconds per unit: pick a readable scale
        for scale, name in ((1e-6, "ns"), (1e-3, "µs"), (1.0, "ms")):
            if value < scale:
                return f"{value / scale * 1e3:.3g} {name}"
        return f"{value:.3g} s"
    if unit == "samples/s":
        return f"{value / 1e3:,.1f}k/s" if value < 1e6 else f"{value / 1e6:.2f}M/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.3g} {unit}"


def render(rows: List[Row]) -> str:
    header = ["workload", "ours", UPSTREAM_VERSION, "ratio", "target", "met?", f"HF {HF_VERSION}"]
    lines = []
    for r in rows:
        ratio = r.ratio()
        ours = "WRONG " + fmt_value(r.ours, r.unit) if r.wrong and any(w.startswith("ours") or w.startswith("baseline") for w in r.wrong) else fmt_value(r.ours, r.unit)
        up = fmt_value(r.upstream, r.unit)
        if any(w.startswith("0.9.0") for w in r.wrong):
            up = "WRONG " + up
        hf = fmt_value(r.hf, r.unit)
        if any(w.startswith("HF") for w in r.wrong):
            hf = "WRONG " + hf
        lines.append([r.label, ours, up, "-" if ratio is None else f"{ratio:.2f}x", r.target, r.met(), hf])
    widths = [max(len(str(x[i])) for x in lines + [header]) for i in range(len(header))]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    for line in lines:
        out.append(" | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) if i < 4 or i == 6 else str(c).ljust(w)
                              for i, (c, w) in enumerate(zip(line, widths))))
    return "\n".join(out)


# -- running -----------------------------------------------------------------------------------


class Driver:
    def __init__(self, args: argparse.Namespace, upstream: Optional[str], hf: Optional[str] = None):
        self.args = args
        self.hf_python = hf
        self.mode = "quick" if args.quick else "full"
        self.workdir: Path = args.workdir
        self.reps = 1 if args.quick else args.repetitions
        self.upstream_python = upstream
        self.workers: Dict[str, WorkerProcess] = {}
        self.rows: List[Row] = []
        self.sources: Dict[str, wl.Source] = {}
        self.meta: Dict[str, Any] = {}

    def src(self, name: str) -> wl.Source:
        if name not in self.sources:
            self.sources[name] = wl.source(self.workdir, name, self.mode)
        return self.sources[name]

    def sides(self) -> List[str]:
        return ["ours"] + (["upstream"] if "upstream" in self.workers else [])

    def row(self, *a: Any, **k: Any) -> Row:
        r = Row(*a, **k)
        self.rows.append(r)
        return r

    def check(self, row: Row, who: str, name: str, result: Dict[str, Any], expected_length: Optional[int] = None) -> None:
        if expected_length is not None and result.get("length") != expected_length:
            row.wrong.append(f"{who}: {result.get('length')} samples, expected {expected_length}")
        expected = wl.expected_checksum(self.src(name), result["indices"])
        if result["checksum"] != expected:
            row.wrong.append(f"{who}: checksum of {len(result['indices'])} samples differs from the ground truth")
        if row.wrong:
            log(f"  !! {row.label}: {row.wrong}")

    def measure(self, row: Row, name: str, op: str, params: Dict[str, Any], reps: Optional[int] = None,
                ours_only: Optional[Dict[str, Any]] = None, expected_length: Optional[int] = None, baseline: bool = False,
                hf: Optional[Dict[str, Any]] = None) -> None:
        """Alternate the sides for ``reps`` repetitions; keep each side's best per-unit time.

        ``hf``: the parameters of HF datasets' equivalent workload, run in the same rotation."""
        reps = reps or self.reps
        sides = ["ours"] if (baseline or ours_only is not None) else self.sides()
        if hf is not None and "hf" in self.workers:
            sides = sides + ["hf"]
        best: Dict[str, float] = {}
        for rep in range(reps):
            for side in (sides if rep % 2 == 0 else sides[::-1]):
                call_params = ours_only if (side == "ours" and ours_only is not None) else hf if side == "hf" else params
                result = self.workers[side].call(op, **call_params)
                who = "baseline" if baseline else ("ours" if side == "ours" else "HF datasets" if side == "hf" else UPSTREAM_VERSION)
                if rep == 0:
                    self.check(row, who, name, result, expected_length)
                per_unit = result["seconds"] / result["count"]
                best[side] = min(best.get(side, float("inf")), per_unit)
        to_value = (lambda s: 1.0 / s) if row.higher_is_better else (lambda s: s)
        row.ours = to_value(best["ours"])
        if "upstream" in best:
            row.upstream = to_value(best["upstream"])
        if "hf" in best:
            row.hf = to_value(best["hf"])
        log(f"  {row.label}: ours {fmt_value(row.ours, row.unit)}  0.9.0 {fmt_value(row.upstream, row.unit)}  ratio {row.ratio() or 0:.2f}"
            + (f"  HF {fmt_value(row.hf, row.unit)}" if row.hf is not None else ""))

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        log(f"preparing data in {self.workdir} (cached between runs)")
        for name in wl.MAKERS:
            self.src(name)
        prepare_files(self.workdir, self.mode)
        self.workers["ours"] = WorkerProcess("ours", sys.executable, self.workdir, self.mode)
        self.meta["ours"] = self.workers["ours"].call("hello")
        built = self.workers["ours"].call("prepare")["built"]
        log(f"data ready in {time.perf_counter() - t0:.1f} s (built maps: {built or 'none, all cached'})")
        if self.upstream_python:
            self.workers["upstream"] = WorkerProcess("upstream", self.upstream_python, self.workdir, self.mode)
            self.meta["upstream"] = self.workers["upstream"].call("hello")
        if self.hf_python:
            try:
                self.workers["hf"] = WorkerProcess("hf", self.hf_python, self.workdir, self.mode)
                self.meta["hf"] = self.workers["hf"].call("hello")
                hf_built = self.workers["hf"].call("prepare")["built"]
                log(f"HF datasets ready (built: {hf_built or 'none, all cached'})")
            except RuntimeError as e:
                log(f"HF datasets cannot run ({str(e).strip().splitlines()[-1]}); its column stays empty")
                self.workers.pop("hf", None)
                self.meta["hf"] = f"not measured: {e}"
        log(f"ours: {self.meta['ours']}\n0.9.0: {self.meta.get('upstream', 'not measured')}\nHF: {self.meta.get('hf', 'not measured')}")

    def stop(self) -> None:
        for w in self.workers.values():
            w.close()

    def run(self) -> None:
        s = wl.SIZES[self.mode]
        w = self.workdir
        mp = lambda name: map_path(w, name, len(self.src(name)))  # noqa: E731

        log("single random reads")
        # -- ragged: images
        warm(mp("images"), files_path(w, "images", len(self.src("images"))))
        r = self.row("ragged read: image (HxWx3 uint8)", "s", ">= 8x", 8)
        self.measure(r, "images", "read", {"name": "images", "kind": "ragged"})
        b = self.row("  baseline: .npy files (np.load)", "s", baseline_of=r)
        self.measure(b, "images", "read", {"name": "images", "kind": "ragged", "how": "files"}, baseline=True)
        b = self.row("  floor: in-memory ndarray view+reshape", "s", baseline_of=r)
        self.measure(b, "images", "read", {"name": "images", "kind": "ragged", "how": "floor"}, baseline=True)
        # -- ragged: tokens
        warm(mp("tokens"), self.src("tokens").folder, files_path(w, "tokens", len(self.src("tokens"))))
        r = self.row("ragged read: token sequence (int32)", "s", ">= 8x", 8)
        self.measure(r, "tokens", "read", {"name": "tokens", "kind": "ragged"})
        b = self.row("  baseline: Arrow-like offsets+values", "s", baseline_of=r)
        self.measure(b, "tokens", "read", {"name": "tokens", "kind": "ragged", "how": "arrow"}, baseline=True)
        b = self.row(f"  baseline: .npy files ({s['token_files']:,} of them)", "s", baseline_of=r)
        self.measure(b, "tokens", "read_files_subset", {"name": "tokens"}, baseline=True)
        b = self.row("  floor: in-memory ndarray view", "s", baseline_of=r)
        self.measure(b, "tokens", "read", {"name": "tokens", "kind": "ragged", "how": "floor"}, baseline=True)
        # -- strings
        warm(mp("imdb"), files_path(w, "imdb", len(self.src("imdb"))))
        warm(w / "hf")
        r = self.row("strings read: IMDB-sized review", "s", ">= 3x", 3)
        self.measure(r, "imdb", "read", {"name": "imdb", "kind": "string"}, hf={"name": "imdb", "kind": "string"})
        b = self.row("  baseline: .txt files (open+read+decode)", "s", baseline_of=r)
        self.measure(b, "imdb", "read", {"name": "imdb", "kind": "string", "how": "files"}, baseline=True)
        b = self.row("  floor: in-memory bytes slice+decode", "s", baseline_of=r)
        self.measure(b, "imdb", "read", {"name": "imdb", "kind": "string", "how": "floor"}, baseline=True)
        # -- same-shape
        warm(mp("sameshape"))
        r = self.row("np_ninja read: 28x28 uint8 row", "s", ">= 5x", 5)
        self.measure(r, "sameshape", "read", {"name": "sameshape", "kind": "numpy"})
        b = self.row("  floor: in-memory ndarray row", "s", baseline_of=r)
        self.measure(b, "sameshape", "read", {"name": "sameshape", "kind": "numpy", "how": "floor"}, baseline=True)
        warm(mp("sameshape64"))
        rows64 = f"{len(self.src('sameshape64')):,}"
        r = self.row(f"np_ninja read: 64x64 float32 row of {rows64}, m[i]", "s", ">= 5x", 5)
        self.measure(r, "sameshape64", "read", {"name": "sameshape64", "kind": "numpy"}, hf={"name": "sameshape64", "kind": "numpy"})
        b = self.row("  baseline: plain ndarray view of the file, v[i]", "s", ">= 0.95 (within 1.05x)", 1 / 1.05, baseline_of=r)
        self.measure(b, "sameshape64", "read", {"name": "sameshape64", "kind": "numpy", "how": "view"}, baseline=True)

        log("batches of 256 by one index array")
        r = self.row("ragged batch of 256: tokens, m[idx]", "s", ">= 20x", 20)
        self.measure(r, "tokens", "batch", {"name": "tokens", "kind": "ragged"})
        for how in ("get_batch", "padded"):
            o = self.row(f"  ours m.{how}(idx)", "s", ">= 20x", 20)
            self.measure(o, "tokens", "batch", {}, ours_only={"name": "tokens", "kind": "ragged", "how": how})
            o.upstream = r.upstream
        r = self.row("ragged batch of 256: images, m[idx]", "s", ">= 20x", 20)
        self.measure(r, "images", "batch", {"name": "images", "kind": "ragged"})
        o = self.row("  ours m.get_batch(idx)", "s", ">= 20x", 20)
        self.measure(o, "images", "batch", {}, ours_only={"name": "images", "kind": "ragged", "how": "get_batch"})
        o.upstream = r.upstream
        r = self.row("strings batch of 256: m[idx]", "s", ">= 4x", 4)
        self.measure(r, "imdb", "batch", {"name": "imdb", "kind": "string"})

        log("iterating every string")
        n_imdb = len(self.src("imdb"))
        r = self.row(f"iterate {n_imdb:,} strings: list(m)", "s", ">= 3x", 3)
        self.measure(r, "imdb", "iterate", {"name": "imdb"}, expected_length=n_imdb)
        o = self.row("  ours iter_chunks()", "s", ">= 3x", 3)
        self.measure(o, "imdb", "iterate", {}, ours_only={"name": "imdb", "how": "chunks"}, expected_length=n_imdb)
        o.upstream = r.upstream
        txt = self.row(f"  baseline: {n_imdb:,} .txt files, ours faster by", "s", ">= 10x", 10, baseline_of=r)
        self.measure(txt, "imdb", "iterate", {"name": "imdb", "how": "files"}, baseline=True, expected_length=n_imdb)
        if r.upstream:
            o = self.row("  baseline: the .txt files, 0.9.0 faster by", "s")
            o.ours = txt.ours
            o.ratio_override = txt.ours / r.upstream
        warm(mp("imdb_mixed"))
        n_mixed = len(self.src("imdb_mixed"))
        r = self.row(f"iterate {n_mixed:,} strings, 27% non-ASCII: for s in m", "s", "<= 0.38 µs", absolute=(0.38e-6, "µs"))
        self.measure(r, "imdb_mixed", "iterate", {"name": "imdb_mixed", "how": "for"}, expected_length=n_mixed,
                     hf={"name": "imdb_mixed"})
        b = self.row("  floor: in-memory bytes, slice+decode each, for s in", "s", baseline_of=r)
        self.measure(b, "imdb_mixed", "iterate", {"name": "imdb_mixed", "how": "floor_for"}, baseline=True, expected_length=n_mixed)

        log("from_generator")
        fg_reps = 1 if self.args.quick else max(1, self.reps - 2)
        for name, kind, label in (("images", "ragged", f"{len(self.src('images')):,} images"),
                                  ("tokens", "ragged", f"{len(self.src('tokens')):,} token sequences"),
                                  ("imdb", "string", f"{len(self.src('imdb')):,} IMDB strings")):
            warm(self.src(name).folder)
            r = self.row(f"from_generator: {label}", "samples/s", ">= 3x", 3, higher_is_better=True)
            self.measure(r, name, "from_generator", {"name": name, "kind": kind}, reps=fg_reps, expected_length=len(self.src(name)))

        log("one-sample appends")
        ap_reps = 1 if self.args.quick else 2
        for name, kind in (("tokens", "ragged"), ("imdb", "string")):
            what = "ragged (tokens)" if kind == "ragged" else "strings (IMDB)"
            r = self.row(f"append x{s['appends']:,}: {what}", "s", ">= 20x", 20)
            self.measure(r, name, "append", {"name": name, "kind": kind}, reps=ap_reps, expected_length=APPEND_BASE + s["appends"])
            o = self.row(f"  ours durable=True (fsync) x{s['durable_appends']}, vs 0.9.0 plain", "s")
            self.measure(o, name, "append", {}, ours_only={"name": name, "kind": kind, "durable": True}, reps=1,
                         expected_length=APPEND_BASE + s["durable_appends"])
            o.upstream = r.upstream

        log("opening a map of 1,000,000 samples (fresh process each time)")
        for name, kind in (("open_ragged", "ragged"), ("open_strings", "string")):
            self.measure_open(name, kind)

        log("peak memory of from_generator")
        for kind in ("ragged", "string"):
            self.measure_peak(kind)

    def measure_open(self, name: str, kind: str) -> None:
        path = map_path(self.workdir, name, len(self.src(name)))
        warm(path)
        n = len(self.src(name))
        t = self.row(f"open {n:,}-sample {kind} map: time", "s", "< 5 ms", absolute=(5e-3, "ms"))
        m = self.row(f"open {n:,}-sample {kind} map: added RSS", "MB", "< 2 MB", absolute=(2.0, "MB"))
        best: Dict[str, Dict[str, float]] = {}
        for rep in range(max(3, self.reps)):
            for side in (self.sides() if rep % 2 == 0 else self.sides()[::-1]):
                python = sys.executable if side == "ours" else self.upstream_python
                res = run_probe(python, side, self.workdir, "--probe", "open", "--kind", kind, "--path", str(path))
                if rep == 0:
                    self.check(t, "ours" if side == "ours" else UPSTREAM_VERSION, name, res, expected_length=n)
                b = best.setdefault(side, {"seconds": float("inf"), "mb": float("inf")})
                b["seconds"] = min(b["seconds"], res["seconds"])
                b["mb"] = min(b["mb"], res["rss_added_kb"] / 1024)
        t.ours, m.ours = best["ours"]["seconds"], best["ours"]["mb"]
        if "upstream" in best:
            t.upstream, m.upstream = best["upstream"]["seconds"], best["upstream"]["mb"]
        m.wrong = t.wrong
        log(f"  {t.label}: ours {fmt_value(t.ours, 's')} {m.ours:.2f} MB; 0.9.0 {fmt_value(t.upstream, 's')} {m.upstream or 0:.2f} MB")

    def measure_peak(self, kind: str) -> None:
        s = wl.SIZES[self.mode]
        limit = 1.5 * s["peak_batch_mb"]  # "bounded by about one batch"
        r = self.row(f"peak RSS from_generator {kind}: {s['peak_total_mb']} MB in {s['peak_batch_mb']} MB batches", "MB",
                     f"< 1.5 batches ({limit:g} MB)", absolute=(limit, "MB"))
        for side in self.sides():
            python = sys.executable if side == "ours" else self.upstream_python
            out = self.workdir / "scratch" / f"peak-{side}-{kind}"
            res = run_probe(python, side, self.workdir, "--probe", "peak", "--kind", kind, "--path", str(out),
                            "--total-mb", str(s["peak_total_mb"]), "--batch-mb", str(s["peak_batch_mb"]))
            who = "ours" if side == "ours" else UPSTREAM_VERSION
            if res["checksum"] != res["expected"] or res["length"] != len(wl.peak_token_lengths(s["peak_total_mb"])):
                r.wrong.append(f"{who}: the built map does not hold the generated samples")
            value = res["peak_added_kb"] / 1024
            if side == "ours":
                r.ours = value
            else:
                r.upstream = value
            log(f"  {r.label}: {who} peak +{value:.1f} MB (data {res['total_bytes'] / 1e6:.0f} MB, batch {res['batch_bytes'] / 1e6:.1f} MB, "
                f"{res['seconds']:.1f} s, HWM reset: {res['hwm_reset']})")


def machine_description() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and 1 repetition (for development)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / f"mmap-ninja-bench-{os.getuid()}",
                        help="where generated data and maps are cached between runs (default: %(default)s)")
    parser.add_argument("--upstream-python", default=None,
                        help="python of a virtualenv with mmap_ninja==0.9.0 (default: $MMAP_NINJA_UPSTREAM_PYTHON, "
                             f"else one created once in the cache dir)")
    parser.add_argument("--no-upstream", action="store_true", help="measure ours only")
    parser.add_argument("--hf-python", default=None,
                        help=f"python of a virtualenv with datasets=={HF_VERSION} (default: $MMAP_NINJA_HF_PYTHON, "
                             "else one created once in the cache dir)")
    parser.add_argument("--no-hf", action="store_true", help="leave out the HF datasets column")
    parser.add_argument("--repetitions", type=int, default=5, help="repetitions per workload in a full run (best is kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    # internal: worker and probe modes
    parser.add_argument("--worker", choices=["ours", "upstream", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--probe", choices=["open", "peak"], help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["ours", "upstream"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--total-mb", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-mb", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        worker_main(args.worker, args.workdir, args.mode)
        return
    if args.probe:
        probe_main(args)
        return

    started = time.perf_counter()
    args.workdir = args.workdir.resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmap-ninja-bench"
    upstream = None if args.no_upstream else find_upstream(args.upstream_python, cache)
    hf = None if args.no_hf else find_hf(args.hf_python, cache)
    driver = Driver(args, upstream, hf)
    try:
        driver.start()
        driver.run()
    finally:
        driver.stop()
    elapsed = time.perf_counter() - started
    table = render(driver.rows)
    print(f"mmap_ninja benchmark ({driver.mode}, best of {driver.reps}; {machine_description()}; {elapsed:.0f} s)")
    print(table)
    print("ratio: 0.9.0 / ours (>1: ours faster). Baseline rows: baseline / ours (>1: ours faster than the baseline).")
    if "hf" not in driver.workers:
        print(f"HF datasets: {driver.meta.get('hf', 'not measured (--no-hf)' if args.no_hf else 'not measured: no interpreter')}")
    wrong = [(r.label, w) for r in driver.rows for w in r.wrong]
    if wrong:
        print("WRONG DATA: " + "; ".join(f"{label}: {w}" for label, w in wrong))
    if args.json:
        args.json.write_text(json.dumps({"mode": driver.mode, "repetitions": driver.reps, "machine": machine_description(),
                                         "seconds": elapsed, "libraries": driver.meta,
                                         "rows": [r.as_dict() for r in driver.rows]}, indent=2))
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
