"""Maps cross between this library and the released mmap_ninja 0.9.0, in both directions.

For every kind of map of the catalogue that 0.9.0 has (``conftest.py``; records maps and
Megatron corpora say why not there) and a matrix of edge cases, each case filed under the
catalogue's kind it makes, plus the catalogue's own samples of each kind:
- we write, 0.9.0 reads;                 - 0.9.0 writes, we read;
- we write, 0.9.0 appends, we read;      - 0.9.0 writes, we append, 0.9.0 reads;
- we write, 0.9.0 appends, we append, 0.9.0 reads.
0.9.0 runs in its own interpreter (MMAP_NINJA_UPSTREAM_PYTHON) on tests/peer/upstream_job.py.
All of its work is batched into two subprocesses for the whole module; arrays cross as .npz,
everything else as JSON. Every sample is compared (type, dtype, shape, values).

0.9.0 cannot memory-map a zero-byte file, so it cannot open a map whose samples hold no
bytes at all (no samples, or only empty ones); those cases are tested elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap, generic
from mmap_ninja import numpy as np_ninja

from conftest import CATALOGUE, missing, needs, upstream_missing, upstream_python


UPSTREAM_PYTHON = upstream_python()
if UPSTREAM_PYTHON is None:
    pytest.skip(f"interoperability tests {upstream_missing()}", allow_module_level=True)

PEER_SCRIPT = Path(__file__).resolve().parent / "peer" / "upstream_job.py"
RNG = np.random.default_rng(2024)


# -- the cases -----------------------------------------------------------------------------


def spread(dtype: str, shape: tuple) -> np.ndarray:
    """Values of ``dtype`` over its whole range (signs, the largest ints, imaginary parts)."""
    count = int(np.prod(shape))
    kind = np.dtype(dtype).kind
    if kind == "b":
        flat = RNG.integers(0, 2, count).astype(bool)
    elif kind in "iu":
        info = np.iinfo(dtype)
        flat = RNG.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
    elif kind == "c":
        flat = (RNG.standard_normal(count) * 1e3 + 1j * RNG.standard_normal(count)).astype(dtype)
    else:
        flat = (RNG.standard_normal(count) * 100).astype(dtype)
    return flat.reshape(shape)


def tokens(count: int, dtype: str = "int32", low: int = 1, high: int = 20) -> List[np.ndarray]:
    return [spread(dtype, (int(RNG.integers(low, high + 1)),)) for _ in range(count)]


def images(count: int, dtype: str = "uint8", order: str = "C") -> List[np.ndarray]:
    return [np.asarray(spread(dtype, (int(RNG.integers(1, 7)), int(RNG.integers(1, 7)), 3)), order=order) for _ in range(count)]


@dataclass
class RaggedCase:
    samples: List[np.ndarray]
    more: List[np.ndarray]  # appended by the other library
    again: List[np.ndarray]  # appended after that, by the first
    upstream_writes: bool = True  # False: 0.9.0 cannot read back what it writes for these samples
    batch_size: Optional[int] = None  # build with from_generator in batches of this size


def scalars(values: List[Any], dtype: str) -> List[np.ndarray]:
    return [np.array(v, dtype) for v in values]


RAGGED: Dict[str, RaggedCase] = {
    "tokens": RaggedCase(tokens(30), tokens(3), tokens(2)),
    "tokens-with-empty": RaggedCase(
        [np.zeros(0, np.int64), *tokens(3, "int64"), np.zeros(0, np.int64), *tokens(2, "int64"), np.zeros(0, np.int64)],
        [np.zeros(0, np.int64), *tokens(2, "int64")],
        [*tokens(1, "int64"), np.zeros(0, np.int64)],
    ),
    "one-token-each": RaggedCase(tokens(12, "uint16", 1, 1), tokens(2, "uint16", 1, 1), tokens(1, "uint16", 1, 1)),
    "built-in-batches": RaggedCase(tokens(11, "int32"), tokens(4), tokens(3), batch_size=4),
    "images": RaggedCase(images(9), images(2), images(2)),
    "images-fortran-order": RaggedCase(images(5, "float32", "F"), images(2, "float32", "F"), images(1, "float32", "F")),
    "images-in-batches": RaggedCase(images(7, "int16"), images(3, "int16"), images(1, "int16"), batch_size=3),
    "scalars": RaggedCase(scalars([1.5, -2.25, 0.0, 1e300], "float64"), scalars([3.0], "float64"), scalars([-1.0, 2.0], "float64")),
    "scalars-1d-and-empty": RaggedCase(
        [np.array(5, np.int16), np.arange(3, dtype=np.int16), np.zeros(0, np.int16), np.array(-7, np.int16), np.arange(1, dtype=np.int16)],
        [np.array(9, np.int16), np.arange(4, dtype=np.int16)],
        [np.zeros(0, np.int16), np.array(1, np.int16)],
    ),
    "mixed-ndim": RaggedCase(
        [spread("float32", (2, 3)), spread("float32", (4,)), spread("float32", (2, 3, 4)), np.zeros((0, 3), np.float32), spread("float32", (1, 1, 1, 1)), np.zeros((2, 0, 1), np.float32)],
        [spread("float32", (3, 1)), spread("float32", (5,))],
        [spread("float32", (1, 2, 2)), np.zeros((0,), np.float32)],
    ),
    # 0.9.0 records a 0-d sample of a multi-axis map with shape (0,), which it cannot read back
    # itself; we record (): 0.9.0 reads ours as 0-d arrays
    "mixed-ndim-with-scalar": RaggedCase(
        [spread("int32", (2, 2)), np.array(42, np.int32), spread("int32", (3,)), np.array(-1, np.int32)],
        [spread("int32", (1, 4))],
        [np.array(7, np.int32), spread("int32", (2, 1))],
        upstream_writes=False,
    ),
    "one-sample": RaggedCase([spread("float64", (3, 2))], [spread("float64", (2, 2))], [spread("float64", (1, 2))]),
    **{
        f"dtype-{dtype}": RaggedCase(tokens(6, dtype, 1, 9), tokens(2, dtype, 1, 9), tokens(1, dtype, 1, 9))
        for dtype in ("bool", "float16", "int8", "uint64", "complex64")
    },
    "dtype-complex64-images": RaggedCase(images(4, "complex64"), images(1, "complex64"), images(1, "complex64")),
}


def corpus(count: int) -> List[str]:
    """Strings alike enough to train a zstd dictionary on, with non-ASCII text."""
    return [f"review {i}: {'good' if i % 3 else 'bad'} film, {'très ' * (i % 4)}{'★' * (i % 5)} 映画 {i * 7}" for i in range(count)]


NON_ASCII = ["🙂", "👩‍👩‍👧 family", "中文字符", "日本語のテキスト", "한국어", "naïve café", "עברית", "e\u0301", "\U0010ffff"]


@dataclass
class StringsCase:
    strings: List[str]
    more: List[str]
    again: List[str]
    zstd_level: Optional[int] = None
    zstd_train_dictionary_size: Optional[int] = None


STRINGS: Dict[str, StringsCase] = {
    "ascii": StringsCase(["hello", "world", "a", "tab\tnewline\n"], ["more"], ["and", "again"]),
    "non-ascii": StringsCase(NON_ASCII, ["Ünïcödé ✓", "🚀"], ["終わり"]),
    "with-empty": StringsCase(["", "x", "", "yz", "🙂", ""], ["", "é"], ["", ""]),
    "long": StringsCase(["α" * 50_000, "b" * 100_000, "c"], ["d" * 70_000], ["é" * 3]),
    "one-string": StringsCase(["only one"], ["two"], ["three"]),
    "zstd": StringsCase(NON_ASCII + ["", "plain ascii " * 20], ["zstd more", ""], ["🙂 again"], zstd_level=3),
    "zstd-level-19-empty": StringsCase(["", "a", "", "中"], [""], ["b"], zstd_level=19),
    "zstd-dictionary": StringsCase(corpus(300) + ["", "🙂"], corpus(5) + [""], ["after 中"], zstd_level=3, zstd_train_dictionary_size=2048),
}


@dataclass
class NumpyCase:
    array: np.ndarray
    more: np.ndarray
    again: np.ndarray
    order: str = "C"


def numpy_case(dtype: str, row: tuple, count: int = 7, order: str = "C") -> NumpyCase:
    return NumpyCase(spread(dtype, (count, *row)), spread(dtype, (2, *row)), spread(dtype, (1, *row)), order)


NUMPY: Dict[str, NumpyCase] = {
    "float32-rows": numpy_case("float32", (5,)),
    "images": numpy_case("uint8", (4, 5, 3)),
    "scalars": numpy_case("int64", ()),
    "one-sample": numpy_case("float64", (3, 3), count=1),
    **{f"dtype-{d}": numpy_case(d, (3,)) for d in ("bool", "float16", "int8", "uint64", "complex64")},
    "fortran-order": numpy_case("float64", (4, 3), count=5, order="F"),
    "fortran-order-2d": numpy_case("int16", (6,), count=4, order="F"),
}


@dataclass
class EmptyCase:
    """A map 0.9.0 leaves with no bytes of data: we read it, append, and 0.9.0 reads that."""

    kind: str
    op: Dict[str, Any]  # what 0.9.0 does (an upstream_job operation without id and path)
    expected: List[Any]  # what the map holds
    more: List[Any]  # what we append


EMPTY_FLOATS = [np.zeros(0, np.float64), np.zeros(0, np.float64)]
EMPTY: Dict[str, EmptyCase] = {
    # from_strings([]) makes an empty directory
    "strings-none": EmptyCase("strings", {"op": "write_strings", "strings": []}, [], ["x", ""]),
    # writes every file, then fails to map the zero-byte data.ninja when it opens the map
    "strings-only-empty": EmptyCase("strings", {"op": "write_strings", "strings": ["", ""]}, ["", ""], ["abc"]),
    # numpy pads the zero-byte data.ninja to one byte, beyond what the offsets cover
    "ragged-only-empty": EmptyCase("ragged_flat", {"op": "write_ragged", "samples": EMPTY_FLOATS}, EMPTY_FLOATS, [np.arange(2.0)]),
    # constructing a map on a new path makes an empty directory
    "ragged-opened": EmptyCase("ragged_flat", {"op": "open_only", "kind": "ragged"}, [], [np.arange(3)]),
    "strings-opened": EmptyCase("strings", {"op": "open_only", "kind": "string"}, [], ["é"]),
}


# -- running 0.9.0 ------------------------------------------------------------------------


@dataclass
class Job:
    """A batch of operations for the peer, with the arrays they need."""

    ops: List[Dict[str, Any]] = field(default_factory=list)
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)

    def key(self, array: np.ndarray) -> str:
        name = f"i{len(self.arrays)}"
        self.arrays[name] = array
        return name

    def add(self, op_id: str, op: str, path: Path, **details: Any) -> None:
        self.ops.append({"id": op_id, "op": op, "path": str(path), **details})

    def run(self, job_dir: Path) -> "PeerResults":
        job_dir.mkdir(parents=True)
        (job_dir / "job.json").write_text(json.dumps(self.ops, ensure_ascii=False), encoding="utf-8")
        np.savez(job_dir / "inputs.npz", **self.arrays)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # never let it import our library
        done = subprocess.run([UPSTREAM_PYTHON, str(PEER_SCRIPT), str(job_dir)], cwd=job_dir, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"mmap_ninja 0.9.0 job failed:\n{done.stderr}"
        results = json.loads((job_dir / "results.json").read_text(encoding="utf-8"))
        with np.load(job_dir / "results.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return PeerResults(results, arrays)


@dataclass
class PeerResults:
    by_id: Dict[str, Any]
    arrays: Dict[str, np.ndarray]

    def get(self, op_id: str) -> Dict[str, Any]:
        result = self.by_id[op_id]
        assert "error" not in result, f"mmap_ninja 0.9.0 failed at {op_id}:\n{result['error']}"
        return result


# The class of 0.9.0 (and ours) that writes each kind of the catalogue that 0.9.0 has.
LAYOUT = {"ragged_flat": "ragged", "ragged_nested": "ragged", "strings": "strings", "strings_zstd": "strings", "numpy": "numpy"}


def write_ours(kind: str, path: Path, case: Any) -> None:
    kind = LAYOUT[kind]
    if kind == "ragged":
        if case.batch_size:
            RaggedMmap.from_generator(path, iter(case.samples), batch_size=case.batch_size)
        else:
            RaggedMmap.from_lists(path, case.samples)
    elif kind == "strings":
        StringsMmap.from_strings(path, case.strings, zstd_level=case.zstd_level, zstd_train_dictionary_size=case.zstd_train_dictionary_size)
    else:
        np_ninja.from_ndarray(path, np.asarray(case.array, order=case.order))


def append_ours(kind: str, path: Path, items: Any) -> None:
    kind = LAYOUT[kind]
    if kind == "ragged":
        RaggedMmap(path).extend(items)
    elif kind == "strings":
        with StringsMmap(path) as m:
            m.extend(items)
    else:
        np_ninja.extend_dir(path, items)


def add_upstream_write(job: Job, op_id: str, kind: str, path: Path, case: Any) -> None:
    kind = LAYOUT[kind]
    if kind == "ragged":
        job.add(op_id, "write_ragged", path, samples=[job.key(s) for s in case.samples], batch_size=case.batch_size)
    elif kind == "strings":
        job.add(op_id, "write_strings", path, strings=case.strings, zstd_level=case.zstd_level, zstd_train_dictionary_size=case.zstd_train_dictionary_size)
    else:
        job.add(op_id, "write_numpy", path, array=job.key(case.array), order=case.order)


def add_upstream_append(job: Job, op_id: str, kind: str, path: Path, items: Any) -> None:
    kind = LAYOUT[kind]
    if kind == "ragged":
        job.add(op_id, "extend_ragged", path, samples=[job.key(s) for s in items])
    elif kind == "strings":
        job.add(op_id, "extend_strings", path, strings=items)
    else:
        job.add(op_id, "extend_numpy", path, array=job.key(items))


def kind_of(layout: str, case: Any) -> str:
    """The catalogue's kind a case of a layout makes (a ragged map of samples not all 1-D has nested shapes)."""
    if layout == "ragged":
        return "ragged_flat" if all(np.ndim(s) == 1 for s in [*case.samples, *case.more, *case.again]) else "ragged_nested"
    if layout == "strings":
        return "strings_zstd" if case.zstd_level is not None else "strings"
    return "numpy"


def catalogue_case(kind: str) -> Any:
    """The catalogue's own samples of ``kind`` as a case: 9 written, 3 more, then 2 again."""
    k, layout = CATALOGUE[kind], LAYOUT[kind]
    first, more, again = k.samples(9), k.samples(3, 9), k.samples(2, 12)
    if layout == "ragged":
        return RaggedCase(first, more, again)
    if layout == "strings":
        return StringsCase(first, more, again, zstd_level=3 if kind == "strings_zstd" else None)
    return NumpyCase(np.stack(first), np.stack(more), np.stack(again))


# Every kind of the catalogue crosses, or says in its not_in why 0.9.0 has no such map.
CROSSING = [name for name, k in CATALOGUE.items() if "interop" not in k.not_in]
assert sorted(CROSSING) == sorted(LAYOUT), f"name 0.9.0's class of {sorted(set(CROSSING) - set(LAYOUT))} in LAYOUT, or 'interop' in its not_in"
CASES: Dict[str, Dict[str, Any]] = {kind: {"catalogue": catalogue_case(kind)} for kind in CROSSING}
for layout, cases in (("ragged", RAGGED), ("strings", STRINGS), ("numpy", NUMPY)):
    for case_name, case in cases.items():
        CASES[kind_of(layout, case)][case_name] = case
ALL = [(kind, name) for kind, cases in CASES.items() for name in cases]


def needs_of(kind: str, name: str) -> tuple:
    """The optional packages our side needs for a case: its kind's (zstandard for the compressed strings)."""
    return CATALOGUE[kind].needs


# The cases this interpreter can build and read; the others skip with the reason (see params()).
RUNNABLE = [(k, n) for k, n in ALL if not any(missing(m) for m in needs_of(k, n))]


def params(pairs: list) -> list:
    """``(kind, name)`` pairs as pytest params that skip, with the reason, without their packages."""
    return [pytest.param(k, n, marks=[needs(*needs_of(k, n))] if needs_of(k, n) else []) for k, n in pairs]


def upstream_writes(kind: str, name: str) -> bool:
    return getattr(CASES[kind][name], "upstream_writes", True)


def appendable_by_us(kind: str, name: str) -> bool:
    """Fortran-order multi-axis maps (only 0.9.0 writes them) take no appends: ours refuses,
    and 0.9.0 appends rows as if the file were in C order."""
    return not (kind == "numpy" and CASES[kind][name].order == "F")


class Exchange:
    """Every map of this module, built and crossed between the libraries once.

    A step of ours that fails is recorded under its label and raised again by the tests that
    need it, so one broken case does not hide the others.
    """

    def __init__(self, root: Path):
        self.root = root
        self.our_failures: Dict[str, BaseException] = {}
        first, second = Job(), Job()
        for kind, name in RUNNABLE:
            case = CASES[kind][name]
            # we write; 0.9.0 reads, and appends to a copy (which we append to again, then it reads)
            self.step(f"write {kind} {name}", write_ours, kind, self.ours(kind, name), case)
            first.add(f"read {kind} {name}", "read", self.ours(kind, name))
            self.step(f"write {kind} {name}", write_ours, kind, self.ours_appended(kind, name), case)
            add_upstream_append(first, f"append {kind} {name}", kind, self.ours_appended(kind, name), case.more)
            # 0.9.0 writes; we read, and append to a copy that 0.9.0 then reads
            if upstream_writes(kind, name):
                add_upstream_write(first, f"write {kind} {name}", kind, self.upstream(kind, name), case)
                add_upstream_write(first, f"write copy {kind} {name}", kind, self.upstream_appended(kind, name), case)
        for name, empty in EMPTY.items():
            op = dict(empty.op)
            if op["op"] == "write_ragged":
                op["samples"] = [first.key(a) for a in op["samples"]]
            first.add(f"leave empty {name}", op.pop("op"), self.upstream_empty(name), **op)
        self.first = first.run(root / "job-1")
        for kind, name in RUNNABLE:
            case = CASES[kind][name]
            chain = self.chain(kind, name)
            if "error" not in self.first.by_id[f"append {kind} {name}"]:
                shutil.copytree(self.ours_appended(kind, name), chain)
                self.step(f"append again {kind} {name}", append_ours, kind, chain, case.again)
                second.add(f"read chain {kind} {name}", "read", chain)
            if upstream_writes(kind, name) and appendable_by_us(kind, name) and "error" not in self.first.by_id[f"write copy {kind} {name}"]:
                self.step(f"append to 0.9.0 map {kind} {name}", append_ours, kind, self.upstream_appended(kind, name), case.more)
                second.add(f"read appended {kind} {name}", "read", self.upstream_appended(kind, name))
        for name, empty in EMPTY.items():
            shutil.copytree(self.upstream_empty(name), self.upstream_empty_appended(name))
            self.step(f"append empty {name}", append_ours, empty.kind, self.upstream_empty_appended(name), empty.more)
            second.add(f"read appended empty {name}", "read", self.upstream_empty_appended(name))
        self.second = second.run(root / "job-2")

    def step(self, label: str, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as e:  # noqa: BLE001 - re-raised by the tests of this case
            self.our_failures.setdefault(label, e)

    def ours_did(self, *labels: str) -> None:
        """Raise again what failed in our steps of these labels."""
        for label in labels:
            if label in self.our_failures:
                raise self.our_failures[label]

    def ours(self, kind: str, name: str) -> Path:
        return self.root / "ours" / f"{kind}-{name}"

    def ours_appended(self, kind: str, name: str) -> Path:
        return self.root / "ours-then-0.9.0" / f"{kind}-{name}"

    def chain(self, kind: str, name: str) -> Path:
        return self.root / "ours-then-0.9.0-then-ours" / f"{kind}-{name}"

    def upstream(self, kind: str, name: str) -> Path:
        return self.root / "0.9.0" / f"{kind}-{name}"

    def upstream_appended(self, kind: str, name: str) -> Path:
        return self.root / "0.9.0-then-ours" / f"{kind}-{name}"

    def upstream_empty(self, name: str) -> Path:
        return self.root / "0.9.0-empty" / name

    def upstream_empty_appended(self, name: str) -> Path:
        return self.root / "0.9.0-empty-then-ours" / name


@pytest.fixture(scope="module")
def exchange(tmp_path_factory) -> Exchange:
    return Exchange(tmp_path_factory.mktemp("interop"))


# -- what each side should see -------------------------------------------------------------


def expected_items(kind: str, name: str, *parts: str) -> Any:
    """The samples of a case, followed by the named appended parts ("more", "again")."""
    case = CASES[kind][name]
    kind = LAYOUT[kind]
    if kind == "ragged":
        return list(case.samples) + [s for p in parts for s in getattr(case, p)]
    if kind == "strings":
        return list(case.strings) + [s for p in parts for s in getattr(case, p)]
    return np.concatenate([case.array] + [getattr(case, p) for p in parts])


def check_sample(got: Any, expected: np.ndarray, where: str) -> None:
    assert type(got) is np.ndarray, f"{where}: {type(got).__name__}, not a plain ndarray"
    assert got.dtype == expected.dtype and got.shape == expected.shape, f"{where}: {got.dtype}{got.shape}, expected {expected.dtype}{expected.shape}"
    assert np.array_equal(got, expected, equal_nan=expected.dtype.kind in "fc"), f"{where}: {got!r} != {expected!r}"


def check_upstream_sample(results: PeerResults, got: Dict[str, str], expected: np.ndarray, flat_map: bool, where: str) -> None:
    """A sample as 0.9.0 read it: an array, or a Python scalar for a 0-d sample of a map of 1-D samples."""
    if "python" in got:
        assert expected.ndim == 0 and flat_map, f"{where}: 0.9.0 read a Python {got['python']}, expected an array of shape {expected.shape}"
        assert got["python"] == type(expected.item()).__name__, f"{where}: 0.9.0 read a {got['python']}, expected {type(expected.item()).__name__}"
        assert results.arrays[got["value"]].item() == expected.item(), f"{where}: {results.arrays[got['value']]} != {expected}"
    else:
        assert not (expected.ndim == 0 and flat_map), f"{where}: 0.9.0 reads a 0-d sample of a flat map as a Python scalar"
        check_sample(results.arrays[got["array"]], expected, where)


def check_upstream_read(results: PeerResults, op_id: str, kind: str, expected: Any) -> None:
    """What 0.9.0 read (one by one and all at once) is exactly ``expected``."""
    got = results.get(op_id)
    kind = LAYOUT[kind]
    assert got["kind"] == {"ragged": "ragged", "strings": "string", "numpy": "numpy"}[kind]
    assert got["len"] == len(expected)
    if kind == "ragged":
        assert got["generic_type"] == "RaggedMmap"
        flat_map = all(np.ndim(s) <= 1 for s in expected)
        assert len(got["samples"]) == len(got["batch"]) == len(expected)
        for i, e in enumerate(expected):
            check_upstream_sample(results, got["samples"][i], np.asarray(e), flat_map, f"{op_id}: m[{i}]")
            check_upstream_sample(results, got["batch"][i], np.asarray(e), flat_map, f"{op_id}: m[:][{i}]")
    elif kind == "strings":
        assert got["generic_type"] == "StringsMmap"
        assert got["strings"] == expected
        assert got["batch"] == expected
    else:
        assert got["generic_type"] == "memmap"
        check_sample(results.arrays[got["whole"]["array"]], expected, f"{op_id}: the whole array")
        assert len(got["samples"]) == len(expected)
        for i, e in enumerate(expected):
            check_sample(results.arrays[got["samples"][i]["array"]], np.asarray(e), f"{op_id}: m[{i}]")


def check_ours_read(kind: str, path: Path, expected: Any) -> None:
    """What this library reads at ``path`` (by its class and by generic.open_existing) is ``expected``."""
    is_map = (path / "type.ninja").exists()  # else an empty directory: a map only to the classes
    kind = LAYOUT[kind]
    if kind == "ragged":
        for m in (RaggedMmap(path), generic.open_existing(path)) if is_map else (RaggedMmap(path),):
            assert isinstance(m, RaggedMmap) and len(m) == len(expected)
            for i, e in enumerate(expected):
                check_sample(m[i], np.asarray(e), f"{path.name}: m[{i}]")
            for i, (g, e) in enumerate(zip(m[:], expected)):
                check_sample(g, np.asarray(e), f"{path.name}: m[:][{i}]")
            for i, (g, e) in enumerate(zip(m[::-1], expected[::-1])):
                check_sample(g, np.asarray(e), f"{path.name}: m[::-1][{i}]")
    elif kind == "strings":
        with StringsMmap(path) as m:
            assert len(m) == len(expected)
            assert [m[i] for i in range(len(m))] == expected
            assert m[:] == expected and list(m) == expected
        if is_map:
            assert list(generic.open_existing(path)) == expected
    else:
        for m in (np_ninja.open_existing(path), generic.open_existing(path)):
            assert isinstance(m, np.memmap)
            check_sample(np.asarray(m), expected, f"{path.name}: the whole array")
            for i, e in enumerate(expected):
                got = m[i]
                if expected.ndim == 1:
                    assert isinstance(got, np.generic) and got.dtype == expected.dtype and got == e
                else:
                    check_sample(got, e, f"{path.name}: m[{i}]")


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, name", params(ALL))
def test_upstream_reads_what_we_wrote(exchange, kind, name):
    exchange.ours_did(f"write {kind} {name}")
    check_upstream_read(exchange.first, f"read {kind} {name}", kind, expected_items(kind, name))


@pytest.mark.parametrize("kind, name", params([(k, n) for k, n in ALL if upstream_writes(k, n)]))
def test_we_read_what_upstream_wrote(exchange, kind, name):
    exchange.first.get(f"write {kind} {name}")
    check_ours_read(kind, exchange.upstream(kind, name), expected_items(kind, name))


@pytest.mark.parametrize("kind, name", params(ALL))
def test_we_read_after_upstream_appended_to_our_map(exchange, kind, name):
    exchange.ours_did(f"write {kind} {name}")
    exchange.first.get(f"append {kind} {name}")
    check_ours_read(kind, exchange.ours_appended(kind, name), expected_items(kind, name, "more"))


@pytest.mark.parametrize("kind, name", params([(k, n) for k, n in ALL if upstream_writes(k, n) and appendable_by_us(k, n)]))
def test_upstream_reads_after_we_appended_to_its_map(exchange, kind, name):
    exchange.first.get(f"write copy {kind} {name}")
    exchange.ours_did(f"append to 0.9.0 map {kind} {name}")
    expected = expected_items(kind, name, "more")
    check_upstream_read(exchange.second, f"read appended {kind} {name}", kind, expected)
    check_ours_read(kind, exchange.upstream_appended(kind, name), expected)


@pytest.mark.parametrize("kind, name", params(ALL))
def test_upstream_reads_after_both_appended_in_turn(exchange, kind, name):
    exchange.ours_did(f"write {kind} {name}")
    exchange.first.get(f"append {kind} {name}")
    exchange.ours_did(f"append again {kind} {name}")
    expected = expected_items(kind, name, "more", "again")
    check_upstream_read(exchange.second, f"read chain {kind} {name}", kind, expected)
    check_ours_read(kind, exchange.chain(kind, name), expected)


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_we_read_maps_upstream_leaves_without_data(exchange, name):
    check_ours_read(EMPTY[name].kind, exchange.upstream_empty(name), EMPTY[name].expected)


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_upstream_reads_after_we_appended_to_its_map_without_data(exchange, name):
    empty = EMPTY[name]
    exchange.ours_did(f"append empty {name}")
    expected = empty.expected + empty.more
    check_upstream_read(exchange.second, f"read appended empty {name}", empty.kind, expected)
    check_ours_read(empty.kind, exchange.upstream_empty_appended(name), expected)


def test_upstream_writes_fortran_order_that_we_read_but_do_not_extend(exchange):
    path = exchange.upstream("numpy", "fortran-order")
    assert (path / "order.ninja").read_text() == "F"
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="Fortran"):
        np_ninja.extend_dir(path, NUMPY["fortran-order"].more)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
    check_ours_read("numpy", path, NUMPY["fortran-order"].array)


def test_we_write_the_files_upstream_writes(exchange):
    """Beside the lock file, a map of ours holds the same file names as 0.9.0's."""
    for kind, name in RUNNABLE:
        if not upstream_writes(kind, name):
            continue
        ours = sorted(str(p.relative_to(exchange.ours(kind, name))) for p in exchange.ours(kind, name).rglob("*") if p.name != ".writer.lock")
        theirs = sorted(str(p.relative_to(exchange.upstream(kind, name))) for p in exchange.upstream(kind, name).rglob("*"))
        assert ours == theirs, f"{kind} {name}"
