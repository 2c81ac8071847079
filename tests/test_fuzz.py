"""Fuzzing the small files of small maps: a reader either returns the right samples or raises a
ValueError (MapFormatError); it never crashes, and never returns other samples unless a
committed part of the map (the sample count, dtype, kind, offsets or shapes of the
committed samples) was changed.

Reads run in this process: a segfault or SIGBUS would end the test run, which fails it.
Each example copies a template map (a few KB), changes one file and reads every sample in
several ways (by int index, numpy int, batch, iteration, wrapper), so a few hundred examples
take a few seconds.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis: pip install 'mmap_ninja[test]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mmap_ninja import generic  # noqa: E402
from mmap_ninja.errors import MapFormatError  # noqa: E402
from mmap_ninja import numpy as np_ninja  # noqa: E402
from mmap_ninja.ragged import RaggedMmap  # noqa: E402
from mmap_ninja.string import StringsMmap  # noqa: E402

from conftest import CATALOGUE, kind_params, missing  # noqa: E402

# Examples per kind and test. The default run is derandomized, so it tests the same cases
# every time; MMAP_NINJA_FUZZ_EXAMPLES=5000 runs a long, random campaign.
_CAMPAIGN = os.environ.get("MMAP_NINJA_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_CAMPAIGN or 40), derandomize=not _CAMPAIGN, deadline=None,
                suppress_health_check=[HealthCheck.too_slow], database=None)

SAMPLES: Dict[str, List[Any]] = {
    "ragged_flat": [np.arange(3, dtype=np.int16), np.array(7, np.int16), np.empty(0, np.int16), np.arange(5, dtype=np.int16) * -3],
    "ragged_nested": [np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=np.float32), np.ones((1, 2, 2), np.float32)],
    "strings": ["abc", "", "dé漢", "x" * 20],
    "strings_zstd": ["abc" * 5, "", "dé漢" * 3, "x" * 20],
    "numpy": list(np.arange(24, dtype=np.int32).reshape(4, 3, 2)),
}

PLAUSIBLE_TEXT = [b"numpy", b"ragged", b"string", b"int64", b"int32", b"float32", b"uint8", b"bool", b"float16", b"complex64",
                  b"object", b"V8", b"S3", b"<U2", b"C", b"F", b"3", b"-1", b"", b"\x00", b"1e3"]


def build(kind: str, path: Path) -> None:
    CATALOGUE[kind].build(path, SAMPLES[kind])


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("templates")
    paths = {}
    for kind in SAMPLES:
        if any(missing(m) for m in CATALOGUE[kind].needs):
            continue  # its tests skip with the reason
        build(kind, folder / kind)
        paths[kind] = folder / kind
        assert_same(read_every_way(kind, folder / kind), SAMPLES[kind])  # healthy to begin with
    return paths


def files_of(map_dir: Path) -> List[str]:
    return sorted(str(p.relative_to(map_dir)) for p in map_dir.rglob("*") if p.is_file() and p.name != ".writer.lock")


def read_every_way(kind: str, path: Path) -> List[Any]:
    """Every sample, read by int, numpy int, batch, iteration and through a wrapper; all must agree."""
    if kind == "numpy":
        m = np_ninja.open_existing(path, mode="r")
        rows = [np.array(m[i]) for i in range(len(m))]
        assert_same([np.array(r) for r in m], rows)
        assert_same([np.array(r) for r in generic.open_existing(path, mode="r")], rows)
        return rows
    cls = StringsMmap if kind.startswith("strings") else RaggedMmap
    m = cls(path)
    by_int = [m[i] for i in range(len(m))]
    for other in ([cls(path)[np.int64(i)] for i in range(len(m))], cls(path)[:], list(cls(path)), cls(path)[np.ones(len(m), bool)]):
        assert_same(other, by_int)
    if cls is RaggedMmap:
        assert_same(RaggedMmap(path, wrapper_fn=np.copy)[:], by_int)
    else:
        assert_same([s for chunk in StringsMmap(path).iter_chunks(3) for s in chunk], by_int)
    return by_int


def assert_same(got: List[Any], want: List[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, str):
            assert type(g) is str and g == w
        else:
            g, w = np.asarray(g), np.asarray(w)
            assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes()


def read_outcome(kind: str, path: Path) -> Any:
    """The samples, or the ValueError the read raised (any other exception fails the test)."""
    try:
        return read_every_way(kind, path)
    except ValueError as e:  # MapFormatError, and numpy's own complaints about impossible dtypes/shapes
        return e


def well_formed(kind: str, samples: List[Any]) -> None:
    """What a reader returns is always samples of the right type, whatever the files say."""
    for s in samples:
        if kind.startswith("strings"):
            assert type(s) is str
        else:
            assert isinstance(s, np.ndarray)


def mutated_copy(template: Path, mutate: Callable[[Path], None]) -> tuple:
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = work / "m"
    shutil.copytree(template, path)
    mutate(path)
    return work, path


# --- changes outside the committed parts: the same samples, or an error ---------------------------


def _commit(kind: str) -> str:
    return "shape.ninja" if kind == "numpy" else "starts/shape.ninja"


@st.composite
def uncommitted_change(draw, kind: str, files: List[str]) -> Callable[[Path], None]:
    """A change a writer killed mid-append could make, or one a reader has no business reading."""
    options = ["tail"]
    shape_files = [f for f in files if f.endswith("shape.ninja") and f != _commit(kind)]
    if shape_files:
        options.append("count")
    if any(f.startswith("flattened_shapes/") for f in files):
        options.append("flattened_shapes")
    if kind == "strings_zstd":
        options.append("zstd_level")
    choice = draw(st.sampled_from(options))
    if choice == "tail":  # bytes past the committed end of a data file
        target = draw(st.sampled_from([f for f in files if f.endswith("data.ninja")]))
        tail = draw(st.binary(min_size=1, max_size=64))

        def mutate(path: Path) -> None:
            with open(path / target, "ab") as f:
                f.write(tail)

        return mutate
    if choice == "count":  # the sample axis of a table whose length the commit does not come from
        target = draw(st.sampled_from(shape_files))
        value = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 40)))
        return lambda path: _write_head(path / target, struct.pack("<Q", value))
    if choice == "flattened_shapes":  # a table 0.9.0 writes and this reader does not need
        target = draw(st.sampled_from([f for f in files if f.startswith("flattened_shapes/")]))
        content = draw(st.one_of(st.binary(max_size=40), st.sampled_from(PLAUSIBLE_TEXT)))
        return lambda path: (path / target).write_bytes(content)
    level = draw(st.integers(-7, 22))
    return lambda path: (path / "zstd_level.ninja").write_text(str(level))


def _write_head(path: Path, head: bytes) -> None:
    content = bytearray(path.read_bytes())
    content[: len(head)] = head
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("kind", kind_params("fuzz", list(SAMPLES)))
@FUZZ
@given(data=st.data())
def test_uncommitted_changes_give_the_same_samples_or_an_error(templates, kind, data):
    template = templates[kind]
    mutate = data.draw(uncommitted_change(kind, files_of(template)))
    work, path = mutated_copy(template, mutate)
    try:
        outcome = read_outcome(kind, path)
        if not isinstance(outcome, ValueError):
            assert_same(outcome, SAMPLES[kind])
    finally:
        shutil.rmtree(work)


def test_tails_alone_are_always_ignored(templates):
    """Bytes past the committed end of every data file at once: not even an error."""
    for kind, template in templates.items():
        def add_tails(path: Path) -> None:
            for f in files_of(path):
                if f.endswith("data.ninja"):
                    with open(path / f, "ab") as out:
                        out.write(b"\xff" * 24)

        work, path = mutated_copy(template, add_tails)
        try:
            assert_same(read_every_way(kind, path), SAMPLES[kind])
        finally:
            shutil.rmtree(work)


# --- any change: an error or well-formed samples, never a crash ----------------------------------


@st.composite
def any_change(draw, files: List[str]) -> Callable[[Path], None]:
    small = [f for f in files if f.endswith(".ninja") and not f.endswith("data.ninja")]
    offsets = [f for f in files if f.endswith("data.ninja") and f.split("/")[-2:-1] in (["starts"], ["ends"], ["shapes"], ["flattened_shapes"])]
    choice = draw(st.sampled_from(["content", "int64", "truncate", "delete"] if offsets else ["content", "truncate", "delete"]))
    if choice == "content":  # any bytes, or a plausible value, in a small file
        target = draw(st.sampled_from(small))
        content = draw(st.one_of(
            st.binary(max_size=24),
            st.sampled_from(PLAUSIBLE_TEXT),
            st.lists(st.integers(0, 2**64 - 1), max_size=3).map(lambda v: struct.pack(f"<{len(v)}Q", *v)),
            st.integers(-(2**31), 2**31 - 1).map(lambda v: struct.pack("<i", v)),
        ))
        return lambda path: (path / target).write_bytes(content)
    if choice == "int64":  # a committed offset or shape rewritten
        target = draw(st.sampled_from(offsets))
        row = draw(st.integers(0, 5))
        value = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 40)))

        def mutate(path: Path) -> None:
            values = np.fromfile(path / target, "<i8")
            if len(values):
                values[row % len(values)] = value
                values.tofile(path / target)

        return mutate
    target = draw(st.sampled_from(files))
    if choice == "truncate":
        keep = draw(st.floats(0, 1))
        return lambda path: (path / target).write_bytes((path / target).read_bytes()[: int(keep * (path / target).stat().st_size)])
    return lambda path: (path / target).unlink()


@pytest.mark.parametrize("kind", kind_params("fuzz", list(SAMPLES)))
@FUZZ
@given(data=st.data())
def test_any_change_gives_an_error_or_well_formed_samples(templates, kind, data):
    template = templates[kind]
    mutate = data.draw(any_change(files_of(template)))
    work, path = mutated_copy(template, mutate)
    try:
        outcome = read_outcome(kind, path)
        if not isinstance(outcome, ValueError):
            well_formed(kind, outcome)
    finally:
        shutil.rmtree(work)


# --- damage to each file: the original samples, or a MapFormatError naming a file -------------------
#
# Every file of every kind of map is deleted, truncated, extended, flipped, nudged by one (each
# offset), retyped (dtype spellings that are not a dtype.name) and swapped with another file.
# The outcome must be the original samples or a MapFormatError naming a file of the map. What
# no check can tell without checksums is left out, and said in docs/integrity.md: the sample
# bytes themselves (data.ninja of the map, flips and swaps), the row shape of a same-shape
# map, the last offset of a strings map (the end of the data), the axis lengths of a sample with
# no elements (a product with a 0 in it is 0 whatever the others), and a 0-d sample against its
# one-element 1-D twin (these templates hold none).

STRICT_SAMPLES: Dict[str, List[Any]] = {
    "ragged_flat": [np.arange(3, dtype=np.int16), np.empty(0, np.int16), np.arange(5, dtype=np.int16) * -3, np.arange(2, dtype=np.int16)],
    "ragged_nested": [np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=np.float32), np.ones((1, 2, 2), np.float32),
                      np.zeros((0, 3), np.float32)],
    "strings": ["abc", "", "dé漢", "x" * 20],
    "strings_zstd": ["abc" * 5, "", "dé漢" * 3, "x" * 20],
    "numpy": list(np.arange(24, dtype=np.int32).reshape(4, 3, 2)),
}
BAD_SPELLINGS = [b">i2", b"S2", b"i1,i1", b"(2,)f2", b"<f4", b"((", b"int"]


def _payload(kind: str, name: str) -> bool:
    """The map's own data.ninja: sample bytes, which only checksums can vouch for."""
    return name == "data.ninja"


def damage_cases(kind: str, template: Path) -> List[tuple]:
    files = files_of(template)
    cases: List[tuple] = []
    for f in files:
        size = (template / f).stat().st_size
        cases.append((f, "delete", None))
        for keep in sorted({0, size // 2, max(size - 1, 0)}):
            if keep < size:
                cases.append((f, "truncate", keep))
        cases += [(f, "extend", b"\x01"), (f, "extend", b"\x01" * 8)]
        if not _payload(kind, f):
            cases += [(f, "flip", at) for at in sorted({0, size // 2, size - 1}) if size]
        if f.endswith("dtype.ninja"):
            cases += [(f, "retype", s) for s in BAD_SPELLINGS]
        if f.split("/")[-2:-1] in (["starts"], ["ends"]) and f.endswith("data.ninja"):
            count = size // 8
            for row in range(count):
                if kind.startswith("strings") and f == "ends/data.ninja" and row == count - 1:
                    continue  # the end of a strings map's data: see above
                cases += [(f, "nudge", (row, +1)), (f, "nudge", (row, -1))]
    others = [f for f in files if not _payload(kind, f)]
    cases += [(a, "swap", b) for i, a in enumerate(others) for b in others[i + 1 :]]
    if kind == "numpy":
        cases = [c for c in cases if not (c[0] == "shape.ninja" and c[1] in ("flip", "nudge"))]  # the row shape: see above
    if kind == "ragged_nested":  # the axis lengths of the empty last sample, (0, 3): see above
        dims = (template / "shapes" / "data.ninja").stat().st_size
        cases = [c for c in cases if not (c[0] == "shapes/data.ninja" and c[1] == "flip" and c[2] >= dims - 16)]
    return cases


def apply_damage(path: Path, f: str, how: str, arg: Any) -> None:
    target = path / f
    if how == "delete":
        target.unlink()
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[:arg])
    elif how == "extend":
        target.write_bytes(target.read_bytes() + arg)
    elif how == "flip":
        raw = bytearray(target.read_bytes())
        raw[arg] ^= 0x01
        target.write_bytes(bytes(raw))
    elif how == "retype":
        target.write_bytes(arg)
    elif how == "nudge":
        values = np.frombuffer(target.read_bytes(), "<i8").copy()
        values[arg[0]] += arg[1]
        target.write_bytes(values.tobytes())
    else:  # swap
        a, b = target.read_bytes(), (path / arg).read_bytes()
        target.write_bytes(b)
        (path / arg).write_bytes(a)


@pytest.fixture(scope="module")
def strict_templates(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("strict")
    paths = {}
    for kind, samples in STRICT_SAMPLES.items():
        if any(missing(m) for m in CATALOGUE[kind].needs):
            continue  # its tests skip with the reason
        CATALOGUE[kind].build(folder / kind, samples)
        paths[kind] = folder / kind
    return paths


def _run_damage(kind: str, template: Path, cases: List[tuple]) -> List[str]:
    wrong = []
    for f, how, arg in cases:
        work, path = mutated_copy(template, lambda p: apply_damage(p, f, how, arg))
        try:
            try:
                got = read_every_way(kind, path)
            except MapFormatError as e:
                if str(path) not in str(e):
                    wrong.append(f"{kind}: {how} {f} {arg!r}: the error names no file of the map: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - anything else is a failure, reported with its case
                wrong.append(f"{kind}: {how} {f} {arg!r}: {type(e).__name__}: {e}")
                continue
            try:
                assert_same(got, STRICT_SAMPLES[kind])
            except AssertionError:
                wrong.append(f"{kind}: {how} {f} {arg!r}: other samples were read: {got!r}")
        finally:
            shutil.rmtree(work)
    return wrong


DEFAULT_DAMAGE_CASES = 70  # per kind, drawn with a fixed seed; -m stress runs every case


@pytest.mark.parametrize("kind", kind_params("fuzz", list(STRICT_SAMPLES)))
def test_damage_to_any_file_gives_the_samples_or_an_error_naming_a_file(strict_templates, kind):
    import random

    cases = damage_cases(kind, strict_templates[kind])
    cases = random.Random(kind).sample(cases, min(DEFAULT_DAMAGE_CASES, len(cases)))
    wrong = _run_damage(kind, strict_templates[kind], cases)
    assert not wrong, f"{len(wrong)} of {len(cases)} cases:\n" + "\n".join(wrong[:20])


@pytest.mark.stress
@pytest.mark.parametrize("kind", kind_params("fuzz", list(STRICT_SAMPLES)))
def test_damage_to_any_file_every_case(strict_templates, kind):
    cases = damage_cases(kind, strict_templates[kind])
    wrong = _run_damage(kind, strict_templates[kind], cases)
    assert not wrong, f"{len(wrong)} of {len(cases)} cases:\n" + "\n".join(wrong[:20])
