"""What the tests share: sample checks, the catalogue of every kind of map, the optional-package
policy, the 0.9.0 peer, and Ctrl-C in child processes.

The catalogue
-------------
``CATALOGUE`` lists every kind of map the library writes, each entry knowing how to build a
small map, which samples it holds, and how to open, extend and read it. The guarantee tests
(crash, bad input, read-only, concurrency, pickling, memory, interop, checksums) take their
kinds from ``kind_params()``, so that a new kind or codec added here is covered by every
guarantee at once. A test that cannot cover a kind yet names it in the entry's ``not_in``
with the reason, which pytest prints as a skip. The names, one spelling per kind, live in
``tests/kind_names.py`` (checked against the catalogue at import), which the crash scripts
in ``scripts/`` import too. A test with a per-kind table (test_integrity's ``RACE_AFTER``,
test_memory's big maps, test_interop's ``LAYOUT``) fails until a new kind has its row.

Optional packages
-----------------
numpy and tqdm are the only required packages. A test that needs another one (zstandard,
Pillow, torch, dask, cloudpickle, megatron-core, matplotlib, joblib) skips with a reason
that names the package and the extra that installs it: use ``needs("zstandard")`` as a
mark, ``require("zstandard")`` inside a test, or a catalogue entry's ``needs``. ``.ci/run``
installs them all, so CI skips nothing for a missing package.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

# --- samples compare by type, dtype, shape and every value -------------------------------------


def _check_sample(got: Any, expected: Any, where: str = "sample") -> None:
    """``got`` is a plain ndarray with the dtype, shape and values of ``expected``."""
    expected = np.asarray(expected)
    assert type(got) is np.ndarray, f"{where}: expected a plain np.ndarray, got {type(got).__name__}"
    assert got.dtype == expected.dtype, f"{where}: dtype {got.dtype}, expected {expected.dtype}"
    assert got.shape == expected.shape, f"{where}: shape {got.shape}, expected {expected.shape}"
    nan_aware = expected.dtype.kind in "fc"
    assert np.array_equal(got, expected, equal_nan=nan_aware), f"{where}: values differ:\n{got!r}\nexpected\n{expected!r}"


def _check_samples(got: Sequence[Any], expected: Sequence[Any]) -> None:
    """Every sample of ``got`` matches the one at the same position in ``expected``."""
    got = list(got)
    assert len(got) == len(expected), f"{len(got)} samples, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        _check_sample(g, e, f"sample {i}")


@pytest.fixture
def same_sample() -> Callable[..., None]:
    """Assert one sample equals an expected array (plain ndarray, dtype, shape, values)."""
    return _check_sample


@pytest.fixture
def same_samples() -> Callable[..., None]:
    """Assert a sequence of samples equals a list of expected arrays, sample by sample."""
    return _check_samples


# --- optional packages: skip with the reason -------------------------------------------------------

# The module each optional package is imported as, and the extra of pyproject.toml that installs it.
EXTRAS: Dict[str, Tuple[str, str]] = {
    "zstandard": ("zstandard", "zstd"),
    "PIL": ("Pillow", "images"),
    "torch": ("torch", "torch"),
    "distributed": ("dask[distributed]", "dask"),
    "dask": ("dask[distributed]", "dask"),
    "cloudpickle": ("cloudpickle", "parallel"),
    "joblib": ("joblib", "test"),
    "megatron": ("megatron-core", "test"),
    "matplotlib": ("matplotlib", "plot"),
    "hypothesis": ("hypothesis", "test"),
}


def missing(module: str) -> Optional[str]:
    """Why a test that needs ``module`` cannot run here, or None when it can be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    package, extra = EXTRAS.get(module, (module, "test"))
    return f"{package} is not installed (pip install 'mmap_ninja[{extra}]'; .ci/run installs it)"


def needs(*modules: str) -> pytest.MarkDecorator:
    """A mark that skips a test, with the reason, unless every module in ``modules`` imports."""
    reasons = [r for r in map(missing, modules) if r]
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "all installed")


def require(*modules: str) -> None:
    """Inside a test or fixture: skip it, with the reason, unless every module imports."""
    reasons = [r for r in map(missing, modules) if r]
    if reasons:
        pytest.skip("; ".join(reasons))


# --- the 0.9.0 peer ------------------------------------------------------------------------------

UPSTREAM_MISSING = (
    "needs mmap_ninja 0.9.0: set MMAP_NINJA_UPSTREAM_PYTHON to a Python that has it installed (.ci/run does)"
)


def upstream_python() -> Optional[str]:
    """The interpreter that has mmap_ninja 0.9.0, from $MMAP_NINJA_UPSTREAM_PYTHON, or None."""
    named = os.environ.get("MMAP_NINJA_UPSTREAM_PYTHON")
    return named if named and os.path.exists(named) else None


def upstream_missing() -> str:
    """The skip reason when ``upstream_python()`` is None (says what the variable holds)."""
    return f"{UPSTREAM_MISSING}; now {os.environ.get('MMAP_NINJA_UPSTREAM_PYTHON')!r}"


# --- Ctrl-C in child processes -------------------------------------------------------------------


def restore_ctrl_c() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT.

    A shell starts background jobs (``pytest ... &`` in a script) with SIGINT ignored, children
    inherit that, and Python only turns SIGINT into KeyboardInterrupt when it starts with the
    default disposition: restore it in the child, whatever pytest runs under.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- the catalogue of every kind of map ---------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of map: how to build, open, extend and read a small one."""

    name: str
    sample: Callable[[int], Any]  # sample i of every map of this kind in the tests
    build: Callable[..., None]  # build(path, samples, **options): write a new map (options: checksum=True)
    open: Callable[[Path, bool], Any]  # a reader (writable=False) or a handle to append with
    extend: Callable[[Path, List[Any], Any], None]  # append samples, with a handle or a new writer
    needs: Tuple[str, ...] = ()  # optional packages (module names)
    maps: Tuple[str, ...] = ("",)  # the maps inside (a records map's fields), relative to its path
    not_in: Dict[str, str] = field(default_factory=dict)  # guarantee test -> why not covered yet
    verifiable: bool = True  # mmap_ninja.verify() checks a map of this kind
    verify_at: str = ""  # what verify() is given, relative to the map's path (a Megatron corpus: its prefix)

    def samples(self, count: int, first: int = 0) -> List[Any]:
        """Samples ``first .. first+count-1``."""
        return [self.sample(i) for i in range(first, first + count)]

    def read(self, m: Any, i: int) -> Any:
        """Sample ``i`` of the open map ``m``."""
        return m[i]

    def rows(self, batch: Any) -> List[Any]:
        """The samples of ``m[a:b]``: a list, or for records a dict of columns turned into rows."""
        if isinstance(batch, dict):
            names = list(batch)
            return [dict(zip(names, values)) for values in zip(*(batch[n] for n in names))]
        return list(batch)

    def read_all(self, path: Path) -> List[Any]:
        """Every sample of the map at ``path``, through a reader closed afterwards."""
        m = self.open(path, False)
        try:
            return [self.read(m, i) for i in range(len(m))]
        finally:
            getattr(m, "close", lambda: None)()

    def equal(self, got: Any, want: Any) -> bool:
        """``got`` is ``want``: the same string, or an array of the same dtype, shape and bytes."""
        if isinstance(want, dict):
            return isinstance(got, dict) and sorted(got) == sorted(want) and all(self.equal(got[k], want[k]) for k in want)
        if isinstance(want, str):
            return got == want
        got, want = np.asarray(got), np.asarray(want)
        return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _ragged_open(path: Path, writable: bool) -> Any:
    from mmap_ninja.ragged import RaggedMmap

    return RaggedMmap(path) if writable else RaggedMmap(path, mode="r")  # the default is 0.9.0's


def _ragged_extend(path: Path, samples: List[Any], handle: Any = None) -> None:
    (handle if handle is not None else _ragged_open(path, True)).extend(samples)


def _ragged_build(path: Path, samples: List[Any], **options: Any) -> None:
    from mmap_ninja.ragged import RaggedMmap

    RaggedMmap.from_lists(path, samples, **options).close()


def _strings_build(zstd_level: Optional[int]) -> Callable[..., None]:
    def build(path: Path, samples: List[Any], **options: Any) -> None:
        from mmap_ninja.string import StringsMmap

        StringsMmap.from_strings(path, samples, zstd_level=zstd_level, **options).close()

    return build


def _strings_open(path: Path, writable: bool) -> Any:
    from mmap_ninja.string import StringsMmap

    return StringsMmap(path) if writable else StringsMmap(path, mode="rb")


def _strings_extend(path: Path, samples: List[Any], handle: Any = None) -> None:
    (handle if handle is not None else _strings_open(path, True)).extend(samples)


def _numpy_build(path: Path, samples: List[Any], **options: Any) -> None:
    from mmap_ninja import numpy as np_ninja

    np_ninja.from_ndarray(path, np.stack(samples), **options)


def _numpy_open(path: Path, writable: bool) -> Any:
    from mmap_ninja import numpy as np_ninja

    return np_ninja.open_existing(path, mode="r+" if writable else "r")


def _numpy_extend(path: Path, samples: List[Any], handle: Any = None) -> None:
    from mmap_ninja import numpy as np_ninja

    np_ninja.extend_dir(path, np.stack(samples))  # an np.memmap has a fixed shape: always by path


def _records_sample(i: int) -> Dict[str, Any]:
    return {"image": np.full((i % 3 + 1, 2), i % 251, np.uint8), "label": np.int64(i), "caption": f"record {i} " + "é" * (i % 4)}


RECORD_FIELDS = ("image", "label", "caption")


def _records_build(path: Path, samples: List[Any], **options: Any) -> None:
    from mmap_ninja import RecordsMmap

    schema = {"image": "ragged", "label": "numpy", "caption": "strings"}
    RecordsMmap.from_generator(path, samples, batch_size=max(1, len(samples)), schema=schema, **options).close()


def _records_open(path: Path, writable: bool) -> Any:
    from mmap_ninja import RecordsMmap

    return RecordsMmap(path)


def _records_extend(path: Path, samples: List[Any], handle: Any = None) -> None:
    (handle if handle is not None else _records_open(path, True)).extend(samples)


MEGATRON_PREFIX = "corpus"  # a Megatron corpus is PREFIX.idx + PREFIX.bin: the catalogue keeps it in a folder of its own


def _megatron_build(path: Path, samples: List[Any], **options: Any) -> None:
    from mmap_ninja import megatron

    if options:  # the format is Megatron-LM's: nowhere to record a checksum (guarantees that need one name it in not_in)
        raise TypeError(f"a Megatron corpus takes no options {sorted(options)}")
    Path(path).mkdir(parents=True, exist_ok=True)  # over an existing corpus, write replaces it whole
    megatron.write(Path(path) / MEGATRON_PREFIX, samples, dtype=np.uint16).close()


def _megatron_open(path: Path, writable: bool) -> Any:
    from mmap_ninja import megatron

    return megatron.open(Path(path) / MEGATRON_PREFIX)  # read-only whatever ``writable`` asks: a corpus is written once


def _megatron_extend(path: Path, samples: List[Any], handle: Any = None) -> None:
    raise NotImplementedError("a Megatron corpus is written once (megatron.write), never appended to")


_WRITTEN_ONCE = "a Megatron corpus is written once (megatron.write replaces it whole), never appended to"
MEGATRON_NOT_IN = {
    "concurrency": _WRITTEN_ONCE + "; test_integrity races a rewrite against an open instead",
    "crash": _WRITTEN_ONCE + "; the rewrite's crash safety (the .idx renamed in last) is in test_megatron",
    "checksums": "Megatron-LM's format has no place for checksums; an open checks the .idx against the .bin instead",
    "interop": "mmap_ninja 0.9.0 has no Megatron corpora (test_megatron checks Megatron-LM's own reader reads ours)",
    "bad input": "a corpus has no data.ninja; test_megatron cuts its .idx and .bin and checks the error names the corpus",
}


CATALOGUE: Dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("ragged_flat", lambda i: np.arange(i % 37 + 1, dtype=np.int64) + 1000 * i, _ragged_build, _ragged_open, _ragged_extend),
        Kind("ragged_nested", lambda i: np.full((i % 3 + 1, 2, i % 2 + 1), i % 251, np.uint8), _ragged_build, _ragged_open, _ragged_extend),
        Kind("strings", lambda i: f"sample {i} " + "é漢" * (i % 5), _strings_build(None), _strings_open, _strings_extend),
        Kind("strings_zstd", lambda i: f"zstd sample {i} " + "abc" * (i % 7), _strings_build(3), _strings_open, _strings_extend, needs=("zstandard",)),
        Kind("numpy", lambda i: np.full((3, 2), float(i)), _numpy_build, _numpy_open, _numpy_extend),
        Kind("records", _records_sample, _records_build, _records_open, _records_extend, maps=RECORD_FIELDS,
             not_in={"interop": "mmap_ninja 0.9.0 has no records maps; each field is a map of 0.9.0's layout, crossed as its own kind"}),
        Kind("megatron", lambda i: (np.arange(i % 29 + 1) * 7 + i).astype(np.uint16), _megatron_build, _megatron_open, _megatron_extend,
             not_in=MEGATRON_NOT_IN, verify_at=MEGATRON_PREFIX),
    ]
}


from kind_names import KINDS  # noqa: E402  (the names, importable by the scripts without pytest)

if tuple(CATALOGUE) != KINDS:  # one list of kinds, one spelling each
    raise RuntimeError(f"tests/kind_names.py lists {KINDS}, the catalogue {tuple(CATALOGUE)}: keep them the same")


def kind_params(guarantee: str, names: Optional[Sequence[str]] = None) -> List[Any]:
    """The kinds of the catalogue as pytest params for the guarantee test ``guarantee``.

    ``names`` narrows them (a test about one layout); a kind whose packages are missing is
    skipped with the reason. A kind that names ``guarantee`` in ``not_in`` is left out (the
    reason stays in the catalogue), so that a skip always means a package to install.
    """
    params = []
    for name in names if names is not None else list(CATALOGUE):
        kind = CATALOGUE[name]
        if guarantee in kind.not_in:
            continue
        marks = [needs(*kind.needs)] if kind.needs else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture
def catalogue() -> Dict[str, Kind]:
    """The catalogue of every kind of map (see this module's docstring)."""
    return CATALOGUE


def extend_and_die(open_map: Callable[[], Any], batch: list, kill_after: int) -> int:
    """Fork a writer that extends ``open_map()`` by ``batch`` and is SIGKILLed before its
    ``kill_after``-th file change (scripts/crash_child.py's hook); returns its wait status."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import crash_child

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            crash_child.inject_kill(kill_after, True)
            open_map().extend(batch)
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]
