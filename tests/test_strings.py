"""StringsMmap: building (plain and zstd), reading by every kind of index, writing in place, appending.

Every test compares every string it reads with what was written.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import List

import numpy as np
import pytest

from mmap_ninja import ReadOnlyMapError, StringsMmap

from conftest import needs

needs_zstd = needs("zstandard")

TEXTS = [
    "hello",
    "",
    "naïve café",
    "🙂🚀 emoji 👩‍👩‍👧",
    "中文字符 日本語のテキスト 한국어",
    "tab\tnew\nline\r\n",
    "",
    "a" * 1000,
    "\x00nul inside\x00",
    "Ünïcödé ✓",
]


def corpus(count: int = 300) -> List[str]:
    """Strings alike enough for a zstd dictionary to train on (with some non-ASCII)."""
    return [f"review {i}: the film was {'good' if i % 3 else 'bad'}, {'très ' * (i % 4)}{'★' * (i % 6)}" for i in range(count)]


def written(path: Path) -> List[str]:
    """What a fresh handle reads, string by string."""
    m = StringsMmap(path)
    try:
        return [m[i] for i in range(len(m))]
    finally:
        m.close()


# -- building ------------------------------------------------------------------------------


def test_from_strings_round_trip(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", TEXTS)
    assert len(m) == len(TEXTS)
    assert [m[i] for i in range(len(TEXTS))] == TEXTS
    assert written(tmp_path / "s") == TEXTS
    assert all(type(s) is str for s in m)


@needs_zstd
@pytest.mark.parametrize("level", [1, 3, 19])
def test_from_strings_zstd(tmp_path, level):
    m = StringsMmap.from_strings(tmp_path / "s", TEXTS, zstd_level=level)
    assert m.zstd_level == level
    assert (tmp_path / "s" / "zstd_level.ninja").read_text() == str(level)
    assert not (tmp_path / "s" / "zstd_dict.ninja").exists()
    assert list(m) == TEXTS and written(tmp_path / "s") == TEXTS


@needs_zstd
def test_from_strings_zstd_with_a_trained_dictionary(tmp_path):
    strings = corpus() + TEXTS
    m = StringsMmap.from_strings(tmp_path / "s", strings, zstd_level=3, zstd_train_dictionary_size=2048)
    dictionary = (tmp_path / "s" / "zstd_dict.ninja").read_bytes()
    assert 0 < len(dictionary) <= 2048
    assert [m[i] for i in range(len(strings))] == strings
    assert written(tmp_path / "s") == strings
    # a dictionary makes the small strings smaller than plain zstd does
    plain = StringsMmap.from_strings(tmp_path / "plain", strings, zstd_level=3)
    assert (tmp_path / "s" / "data.ninja").stat().st_size < (tmp_path / "plain" / "data.ninja").stat().st_size
    assert list(plain) == strings


def test_dictionary_size_without_a_level_is_refused(tmp_path):
    with pytest.raises(ValueError):
        StringsMmap.from_strings(tmp_path / "s", corpus(), zstd_train_dictionary_size=1024)
    assert not (tmp_path / "s").exists()


@needs_zstd
def test_too_few_strings_for_a_dictionary_say_so(tmp_path):
    with pytest.raises(ValueError, match="dictionary"):
        StringsMmap.from_strings(tmp_path / "s", ["a", "b"], zstd_level=1, zstd_train_dictionary_size=4096)


def test_only_empty_strings(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["", "", ""])
    assert list(m) == ["", "", ""] and written(tmp_path / "s") == ["", "", ""]
    m.append("now some text")
    assert written(tmp_path / "s") == ["", "", "", "now some text"]


def test_from_strings_empty_list_is_an_empty_map_that_extend_fills(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", [])
    assert len(m) == 0 and list(m) == [] and m[:] == [] and list(m.iter_chunks()) == []
    with pytest.raises(IndexError):
        m[0]
    m.extend(["x", "", "ÿ"])
    assert written(tmp_path / "s") == ["x", "", "ÿ"]


@needs_zstd
def test_empty_zstd_map_compresses_what_is_appended(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", [], zstd_level=5)
    m.extend(["compressed later", ""])
    assert StringsMmap(tmp_path / "s").zstd_level == 5
    assert written(tmp_path / "s") == ["compressed later", ""]


def test_from_strings_verbose_shows_a_progress_bar(tmp_path, capfd):
    StringsMmap.from_strings(tmp_path / "s", TEXTS, verbose=True)
    assert capfd.readouterr().err != ""
    StringsMmap.from_strings(tmp_path / "q", TEXTS)
    StringsMmap.from_strings(tmp_path / "r", TEXTS, verbose=False)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("batch_size", [1, 3, len(TEXTS), 10_000])
def test_from_generator(tmp_path, batch_size):
    m = StringsMmap.from_generator(tmp_path / "s", (t for t in TEXTS), batch_size=batch_size)
    assert list(m) == TEXTS and written(tmp_path / "s") == TEXTS


@needs_zstd
def test_from_generator_zstd_trains_on_the_first_batch(tmp_path):
    strings = corpus(400)
    m = StringsMmap.from_generator(tmp_path / "s", iter(strings), batch_size=250, zstd_level=2, zstd_train_dictionary_size=1024)
    assert (tmp_path / "s" / "zstd_dict.ninja").exists()
    assert list(m) == strings and written(tmp_path / "s") == strings


def test_from_generator_that_yields_nothing(tmp_path):
    m = StringsMmap.from_generator(tmp_path / "s", iter([]), batch_size=4)
    assert len(m) == 0 and list(m) == []
    m.append("first")
    assert written(tmp_path / "s") == ["first"]


def test_from_generator_verbose(tmp_path, capfd):
    StringsMmap.from_generator(tmp_path / "s", iter(TEXTS), batch_size=4, verbose=True)
    assert capfd.readouterr().err != ""
    StringsMmap.from_generator(tmp_path / "q", iter(TEXTS), batch_size=4)
    assert capfd.readouterr() == ("", "")


@needs_zstd
def test_from_strings_replaces_an_existing_map(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", corpus(50), zstd_level=3)
    m = StringsMmap.from_strings(tmp_path / "s", ["only"])
    assert list(m) == ["only"] and written(tmp_path / "s") == ["only"]
    assert not (tmp_path / "s" / "zstd_level.ninja").exists()


# -- indexing ------------------------------------------------------------------------------


@pytest.fixture(params=["plain", pytest.param("zstd", marks=needs_zstd)])
def texts(request, tmp_path):
    level = 3 if request.param == "zstd" else None
    return StringsMmap.from_strings(tmp_path / "s", TEXTS, zstd_level=level)


def test_int_indexing_incl_negative_and_numpy_ints(texts):
    n = len(TEXTS)
    for i in range(-n, n):
        assert texts[i] == TEXTS[i]
        assert texts[np.int64(i)] == TEXTS[i] and texts[np.uint8(i % n)] == TEXTS[i % n]
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            texts[bad]


@pytest.mark.parametrize("item", [slice(None), slice(2, 5), slice(None, None, 3), slice(None, None, -1), slice(8, 1, -2), slice(50, 60)], ids=str)
def test_slices(texts, item):
    assert texts[item] == TEXTS[item]
    assert texts.get_batch(item) == TEXTS[item]


def test_lists_arrays_and_masks(texts):
    order = [4, 0, 4, -1, 3]
    expected = [TEXTS[i] for i in order]
    assert texts[order] == expected
    assert texts[np.array(order)] == expected
    assert texts.get_batch(tuple(order)) == expected
    mask = np.array([len(t) > 5 for t in TEXTS])
    assert texts[mask] == [t for t in TEXTS if len(t) > 5]
    assert texts[[]] == []


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 256])
def test_iter_chunks(texts, chunk_size):
    chunks = list(texts.iter_chunks(chunk_size))
    assert all(1 <= len(c) <= chunk_size for c in chunks)
    assert [len(c) for c in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
    assert [s for c in chunks for s in c] == TEXTS


def test_iter_chunks_ascii_runs(tmp_path):
    strings = ["abc", "", "de", "f" * 300, "g"] * 60 + ["ü"]
    m = StringsMmap.from_strings(tmp_path / "s", strings)
    assert [s for c in m.iter_chunks(7) for s in c] == strings
    assert list(m) == strings


def test_len_and_iteration(texts):
    assert len(texts) == len(TEXTS)
    assert list(iter(texts)) == TEXTS


# -- writing -------------------------------------------------------------------------------


def test_setitem_same_byte_length(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["hello", "naïve", "🙂", ""])
    m[0] = "HELLO"
    m[1] = "naïvE"
    m[-2] = "a€"  # 4 bytes, like the emoji
    m[3] = ""
    assert list(m) == ["HELLO", "naïvE", "a€", ""]
    assert written(tmp_path / "s") == ["HELLO", "naïvE", "a€", ""]


def test_setitem_slice_and_list(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["aa", "bb", "cc", "dd"])
    m[1:3] = ["BB", "CC"]
    m[[3, 0]] = ["DD", "AA"]
    assert written(tmp_path / "s") == ["AA", "BB", "CC", "DD"]


def test_setitem_other_byte_length_writes_nothing(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["abc", "def"])
    with pytest.raises(ValueError):
        m[0] = "abcd"
    with pytest.raises(ValueError):
        m[0] = "ab"
    with pytest.raises(ValueError):
        m[0] = "abé"  # three characters, four bytes
    with pytest.raises(ValueError):
        m[:] = ["xyz", "too long"]  # checked before the first is written
    assert written(tmp_path / "s") == ["abc", "def"]


def test_setitem_read_only(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["abc"])
    m = StringsMmap(tmp_path / "s", mode="rb")
    with pytest.raises(ReadOnlyMapError):
        m[0] = "xyz"
    assert written(tmp_path / "s") == ["abc"]


@pytest.mark.parametrize("level", [None, pytest.param(3, marks=needs_zstd)])
def test_append_and_extend(tmp_path, level):
    m = StringsMmap.from_strings(tmp_path / "s", TEXTS[:3], zstd_level=level)
    m.append(TEXTS[3])
    m.extend(TEXTS[4:7])
    m.extend(t for t in TEXTS[7:])
    m.extend([])
    assert len(m) == len(TEXTS)
    assert [m[i] for i in range(len(m))] == TEXTS and m[-1] == TEXTS[-1]
    assert written(tmp_path / "s") == TEXTS


@needs_zstd
def test_extend_with_a_dictionary_uses_it(tmp_path):
    strings = corpus(300)
    m = StringsMmap.from_strings(tmp_path / "s", strings[:250], zstd_level=3, zstd_train_dictionary_size=1024)
    m.extend(strings[250:])
    assert written(tmp_path / "s") == strings


def test_extend_verbose(tmp_path, capfd):
    m = StringsMmap.from_strings(tmp_path / "s", ["a"])
    m.extend(["b", "c"], verbose=True)
    assert capfd.readouterr().err != ""
    m.extend(["d"])
    assert capfd.readouterr() == ("", "")
    assert written(tmp_path / "s") == ["a", "b", "c", "d"]


def test_constructor_on_a_new_path_is_an_empty_map_that_append_fills(tmp_path):
    m = StringsMmap(tmp_path / "new")
    assert len(m) == 0 and list(m) == [] and m[:] == []
    m.append("")
    m.append("中")
    m.extend(["🙂", "x"])
    assert list(m) == ["", "中", "🙂", "x"]
    assert written(tmp_path / "new") == ["", "中", "🙂", "x"]


def test_another_handle_sees_appended_strings(tmp_path):
    writer = StringsMmap.from_strings(tmp_path / "s", ["a"])
    reader = StringsMmap(tmp_path / "s")
    writer.extend(["b", "ç"])
    assert reader.refresh() == 3 and list(reader) == ["a", "b", "ç"] and reader[-1] == "ç"


def test_a_handle_notices_strings_appended_by_another_when_asked_past_its_end(tmp_path):
    """spans.py promises: appended samples are noticed "when asked for one past its end"."""
    writer = StringsMmap.from_strings(tmp_path / "s", ["a"])
    reader = StringsMmap(tmp_path / "s")
    writer.extend(["b", "ç"])
    assert reader[2] == "ç"


def test_close_and_context_manager(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["a", "b"])
    m.close()
    m.close()  # closing twice is harmless
    with StringsMmap(tmp_path / "s") as again:
        assert list(again) == ["a", "b"]
    assert written(tmp_path / "s") == ["a", "b"]


def test_pickles_by_reference(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["x" * 100_000, "é"])
    data = pickle.dumps(m)
    assert len(data) < 2000
    assert list(pickle.loads(data)) == ["x" * 100_000, "é"]


def test_non_str_is_refused_and_nothing_is_written(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", ["a"])
    with pytest.raises(TypeError):
        m.extend(["b", b"bytes", "c"])
    assert written(tmp_path / "s") == ["a"]


def test_durable_builders_and_appends_store_the_same_strings(tmp_path):
    a = StringsMmap.from_strings(tmp_path / "a", TEXTS[:5], durable=True)
    a.extend(TEXTS[5:], durable=True)
    b = StringsMmap.from_generator(tmp_path / "b", iter(TEXTS[:-1]), batch_size=3, durable=True)
    b.append(TEXTS[-1], durable=True)
    assert written(tmp_path / "a") == TEXTS and written(tmp_path / "b") == TEXTS


def test_from_generator_total_sets_the_bar_length(tmp_path, capfd):
    StringsMmap.from_generator(tmp_path / "s", iter(["a", "b"]), batch_size=1, verbose=True, total=2)
    assert "2/2" in capfd.readouterr().err
