"""Iterating a strings map: exact strings whatever mix of ASCII and non-ASCII runs it holds.

The iterator decodes a run of ASCII strings in one call and checks for such runs only now
and then once a run was not ASCII, so these maps switch between the two kinds of run at
many places, and every string must come back exact.
"""

from __future__ import annotations

import random

import pytest

from mmap_ninja import StringsMmap
from mmap_ninja.errors import MapFormatError
from mmap_ninja.string import _ASCII_RETRY, _CHUNK


def _mixed_texts(n: int, non_ascii_rate: float, seed: int) -> list:
    rng = random.Random(seed)
    words = ["the", "film", "a", "", "plot", "<br />", "x" * 50]
    odd = ["café", "—", "’s", "naïve", "日本", "🎬", "\u00a0"]
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        if rng.random() < non_ascii_rate:
            pos = rng.randint(0, len(text))
            text = text[:pos] + rng.choice(odd) + text[pos:]
        out.append(text)
    return out


def _layout() -> list:
    """Mixed runs, then enough ASCII runs to be checked again, then mixed, then ASCII, ..."""
    ascii_run = _CHUNK * (_ASCII_RETRY + 3)
    return (_mixed_texts(_CHUNK * 3, 0.3, 1) + _mixed_texts(ascii_run, 0.0, 2) + _mixed_texts(_CHUNK * 2 + 17, 0.02, 3)
            + _mixed_texts(_CHUNK * 5, 0.0, 4) + ["é"] + _mixed_texts(700, 0.0, 5))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    texts = _layout()
    path = tmp_path_factory.mktemp("iter") / "m"
    StringsMmap.from_strings(path, texts)
    return path, texts


def test_for_loop_gives_every_string_exactly(mixed) -> None:
    path, texts = mixed
    m = StringsMmap(path)
    got = []
    for s in m:
        got.append(s)
    assert len(got) == len(texts)
    wrong = [i for i, (g, t) in enumerate(zip(got, texts)) if g != t]
    assert not wrong, f"strings {wrong[:5]} differ"
    assert list(m) == texts  # a second pass over the same object, past its earlier checks


@pytest.mark.parametrize("chunk_size", [1, 5, _CHUNK, 1000])
def test_iter_chunks_of_mixed_runs(mixed, chunk_size: int) -> None:
    path, texts = mixed
    chunks = list(StringsMmap(path).iter_chunks(chunk_size))
    assert [s for c in chunks for s in c] == texts
    assert all(len(c) == chunk_size for c in chunks[:-1])


def test_iteration_sees_strings_appended_before_it_starts(mixed, tmp_path) -> None:
    _, texts = mixed
    m = StringsMmap.from_strings(tmp_path / "m", texts[:300])
    m.extend(["naïve", "plain"])
    assert list(m) == texts[:300] + ["naïve", "plain"]


def test_a_string_that_is_not_utf8_is_named_while_iterating(tmp_path) -> None:
    texts = _mixed_texts(_CHUNK * 3, 0.0, 6)
    texts[_CHUNK + 5] = "abcdef"
    m = StringsMmap.from_strings(tmp_path / "m", texts)
    start = int(m._view.starts[_CHUNK + 5])
    del m
    with open(tmp_path / "m" / "data.ninja", "r+b") as f:  # corrupt one string in an ASCII run
        f.seek(start + 2)
        f.write(b"\xff")
    with pytest.raises(MapFormatError, match=f"string {_CHUNK + 5} "):
        list(StringsMmap(tmp_path / "m"))
    with pytest.raises(MapFormatError, match=f"string {_CHUNK + 5} "):
        list(StringsMmap(tmp_path / "m").iter_chunks(7))
