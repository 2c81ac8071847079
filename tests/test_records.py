"""RecordsMmap: datasets of several fields that commit together.

A naive dataset appends field by field and takes its length from the fields; these tests
fail on one: a bad record in a batch, an error in a later field, or a kill between two
fields leaves fields of different lengths, which the checks below see (each field is also
opened alone).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import generic, layout
from mmap_ninja import numpy as np_ninja
from mmap_ninja.errors import MapBusyError, MapFormatError
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.records import RECORDS_FILE, FieldError, RecordsMmap, check_field_name
from mmap_ninja.string import StringsMmap

from conftest import require

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import records_crash_child  # noqa: E402
from crash_stress import find_peer, layout_problems  # noqa: E402
from records_crash_stress import RecordsRun  # noqa: E402


def make_records(n: int, seed: int = 0, first: int = 0) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(first, first + n):
        out.append({
            "image": rng.integers(0, 256, (int(rng.integers(1, 6)), int(rng.integers(1, 6)), 3), dtype=np.uint8),
            "label": i % 7,
            "caption": f"a dog n°{i} 🐕" * (i % 3),
            "boxes": rng.standard_normal((i % 4, 4)).astype(np.float32),
            "tokens": np.arange(i % 9, dtype=np.int32),
            "score": float(i) / 2,
            "flag": bool(i % 2),
        })
    return out


def same_value(got: Any, want: Any) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and got == want
    want = np.asarray(want)
    got = np.asarray(got)
    return got.shape == want.shape and np.array_equal(got, want) and (got.dtype == want.dtype or want.dtype.kind in "ifb")


def check_records(r: RecordsMmap, expected: List[Dict[str, Any]]) -> None:
    assert len(r) == len(expected)
    for i, want in enumerate(expected):
        got = r[i]
        assert list(got) == list(want), i
        for name in want:
            assert same_value(got[name], want[name]), (i, name)


def field_lengths(path: Path) -> Dict[str, int]:
    """Each field opened alone, with the library's generic opener."""
    names = [f["name"] for f in json.loads((path / RECORDS_FILE).read_text())["fields"]]
    return {n: len(generic.open_existing(path / n, mode="r")) for n in names}


@pytest.fixture
def built(tmp_path):
    records = make_records(40)
    r = RecordsMmap.from_generator(tmp_path / "ds", records, batch_size=16)
    return tmp_path / "ds", r, records


# --- building and kinds -------------------------------------------------------------------------


def test_kinds_from_the_first_batch_and_values_read_back(built):
    path, r, records = built
    assert r.fields == {"image": "ragged", "label": "numpy", "caption": "strings", "boxes": "ragged",
                        "tokens": "ragged", "score": "numpy", "flag": "numpy"}
    assert r["label"].dtype == np.int64 and r["score"].dtype == np.float64 and r["flag"].dtype == np.bool_
    assert r["boxes"].dtype == np.float32 and r["image"].dtype == np.uint8
    check_records(r, records)
    assert isinstance(r[3]["image"], np.ndarray) and isinstance(r[3]["caption"], str)
    assert r[-1]["label"] == records[-1]["label"]
    assert mmap_ninja.RecordsMmap is RecordsMmap
    with pytest.raises(IndexError):
        r[40]


def test_each_field_is_an_ordinary_map(built):
    path, r, records = built
    images = RaggedMmap(path / "image")
    assert len(images) == 40 and all(np.array_equal(images[i], records[i]["image"]) for i in range(40))
    captions = generic.open_existing(path / "caption")
    assert isinstance(captions, StringsMmap) and list(captions) == [x["caption"] for x in records]
    labels = np_ninja.open_existing(path / "label")
    assert labels.tolist() == [x["label"] for x in records]
    assert r["image"].path == path / "image"
    with pytest.raises(FieldError, match="no field 'nope'"):
        r["nope"]


def test_batches_are_dicts_of_lists_and_arrays(built):
    path, r, records = built
    for index in (slice(3, 17), slice(None, None, -3), [5, 0, 5, 39], np.array([2, -1]), np.arange(40) % 3 == 0, slice(7, 7)):
        batch = r[index]
        want = [records[i] for i in np.arange(40)[index].tolist()]
        assert set(batch) == set(r.fields)
        for name, kind in r.fields.items():
            values = batch[name]
            if kind == "numpy":
                assert type(values) is np.ndarray and values.tolist() == [x[name] for x in want], (index, name)
            else:
                assert isinstance(values, list) and len(values) == len(want)
                assert all(same_value(g, w[name]) for g, w in zip(values, want)), (index, name)
    assert r.get_batch([1])["caption"] == [records[1]["caption"]]


def test_iteration_gives_every_record(built):
    path, r, records = built
    got = list(r)
    assert len(got) == 40
    for g, want in zip(got, records):
        assert all(same_value(g[n], want[n]) for n in want)


def test_schema_fixes_kinds_and_dtypes(tmp_path):
    records = [{"x": np.zeros(3, np.int16), "y": 1, "z": [1, 2]} for _ in range(4)]
    r = RecordsMmap.from_generator(tmp_path / "a", records, 2, schema={"x": "ragged", "y": ("numpy", "int8"), "z": {"kind": "ragged", "dtype": "float32"}})
    assert r.fields == {"x": "ragged", "y": "numpy", "z": "ragged"}
    assert r["y"].dtype == np.int8 and r["z"].dtype == np.float32 and r["x"].dtype == np.int16
    with pytest.raises(ValueError, match="unknown kind 'tensor'"):
        RecordsMmap.from_generator(tmp_path / "b", records, 2, schema={"x": "tensor"})
    with pytest.raises(ValueError, match="strings field has no dtype"):
        RecordsMmap.from_generator(tmp_path / "b", records, 2, schema={"x": ("strings", "int8")})
    with pytest.raises(FieldError, match="no field 'w', which the schema names"):
        RecordsMmap.from_generator(tmp_path / "b", records, 2, schema={"w": "numpy"})
    assert not (tmp_path / "b").exists()


def test_same_shape_field_meeting_another_shape_names_the_record(tmp_path):
    records = [{"v": np.zeros(3)}, {"v": np.zeros(3)}, {"v": np.zeros(3)}, {"v": np.zeros(4)}]
    with pytest.raises(ValueError, match=r"record 3, field 'v' has shape \(4,\)"):
        RecordsMmap.from_generator(tmp_path / "a", records, 2)  # the first batch decided: same-shape
    with pytest.raises(ValueError, match=r"record 3, field 'v' has shape \(4,\)"):
        RecordsMmap.from_generator(tmp_path / "a", records, 8, schema={"v": "numpy"})
    assert not (tmp_path / "a").exists()
    r = RecordsMmap.from_generator(tmp_path / "a", records, 8)  # one batch with two shapes: ragged
    assert r.fields == {"v": "ragged"} and r[3]["v"].shape == (4,)


def test_bad_values_in_a_build_name_the_record_and_leave_nothing(tmp_path):
    good = make_records(10)
    cases = [
        ({"caption": 5}, TypeError, "record 7, field 'caption' is int, not str"),
        ({"label": "x"}, TypeError, "record 7, field 'label'"),
        ({"label": 2.5}, ValueError, "record 7, field 'label'"),
        ({"image": np.zeros((2, 2, 3), np.float64) + 0.5}, ValueError, "record 7, field 'image'"),
        ({"label": None}, TypeError, "record 7, field 'label'"),
    ]
    for change, error, message in cases:
        records = [dict(x) for x in good]
        records[7].update(change)
        with pytest.raises(error, match=message):
            RecordsMmap.from_generator(tmp_path / "ds", records, 4)
        assert not (tmp_path / "ds").exists()
    with pytest.raises(ValueError, match="no records"):
        RecordsMmap.from_generator(tmp_path / "ds", [], 4)
    with pytest.raises(TypeError, match="record 0 is list, not a dict"):
        RecordsMmap.from_generator(tmp_path / "ds", [[1, 2]], 4)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a\\b", "x:y", "tab\there", "trail.", "trail ", "CON", "nul.txt", RECORDS_FILE, "é" * 200])
def test_field_names_must_be_directory_names(tmp_path, name):
    with pytest.raises(ValueError, match="cannot be the name of a field"):
        RecordsMmap.from_generator(tmp_path / "ds", [{name: 1}], 4)
    assert not (tmp_path / "ds").exists()


def test_field_names_other_checks(tmp_path):
    with pytest.raises(TypeError, match="field names are str"):
        RecordsMmap.from_generator(tmp_path / "ds", [{3: 1}], 4)
    with pytest.raises(ValueError, match="differ only in case"):
        RecordsMmap.from_generator(tmp_path / "ds", [{"Label": 1, "label": 2}], 4)
    assert check_field_name("image_2") == "image_2"


def test_rebuild_replaces_a_records_map_but_not_other_files(tmp_path):
    RecordsMmap.from_generator(tmp_path / "ds", make_records(5), 4)
    r = RecordsMmap.from_generator(tmp_path / "ds", [{"only": 1}], 4)
    assert r.fields == {"only": "numpy"} and len(r) == 1
    assert not (tmp_path / "ds" / "image").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        RecordsMmap.from_generator(tmp_path / "mine", [{"only": 1}], 4)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_verbose_shows_a_bar_and_quiet_shows_nothing(tmp_path, capfd):
    RecordsMmap.from_generator(tmp_path / "a", make_records(5), 4)
    assert capfd.readouterr().err == ""
    RecordsMmap.from_generator(tmp_path / "b", make_records(5), 4, verbose=True)
    assert "records: " in capfd.readouterr().err
    RecordsMmap.from_indexable(tmp_path / "c", make_records(5), 4, verbose=True)
    assert "5/5" in capfd.readouterr().err


def test_pickles_by_reference(tmp_path):
    small = RecordsMmap.from_generator(tmp_path / "small", make_records(3), 4)
    big = RecordsMmap.from_generator(tmp_path / "big", make_records(400), 64)
    assert len(pickle.dumps(big)) < 4096
    assert abs(len(pickle.dumps(big)) - len(pickle.dumps(small))) < 16
    again = pickle.loads(pickle.dumps(big))
    check_records(again, make_records(400))


def test_refresh_and_reads_past_the_end_see_appends_from_another_handle(built):
    path, r, records = built
    other = RecordsMmap(path)
    more = make_records(3, seed=5, first=40)
    other.extend(more)
    assert len(r) == 40
    assert r[41]["label"] == more[1]["label"]  # past the end: the map looks again
    assert len(r) == 43
    other.append(make_records(1, seed=6, first=43)[0])
    assert r.refresh() == 44
    check_records(r, records + more + make_records(1, seed=6, first=43))


# --- appending ------------------------------------------------------------------------------


def test_append_and_extend_commit_every_field(built):
    path, r, records = built
    more = make_records(5, seed=1, first=40)
    r.extend(more[:4])
    r.append(more[4])
    check_records(r, records + more)
    assert set(field_lengths(path).values()) == {45}
    check_records(RecordsMmap(path), records + more)
    assert json.loads((path / RECORDS_FILE).read_text())["count"] == 45


BAD_RECORDS = [
    ("missing field", {"drop": "label"}, FieldError, r"record 42 has no field 'label'"),
    ("extra field", {"add": ("extra", 1)}, FieldError, r"record 42 has a field 'extra' that the map does not have"),
    ("str in an int field", {"set": ("label", "seven")}, TypeError, r"record 42, field 'label'"),
    ("float in an int field", {"set": ("label", 7.5)}, ValueError, r"record 42, field 'label'"),
    ("int out of range", {"set": ("image", np.full((2, 2, 3), 300))}, ValueError, r"record 42, field 'image'"),
    ("other shape in a same-shape field", {"set": ("score", [1.0, 2.0])}, ValueError, r"record 42, field 'score' has shape \(2,\)"),
    ("negative in a uint8 field", {"set": ("image", np.full((2, 2, 3), -1))}, ValueError, r"record 42, field 'image'"),
    ("number in a strings field", {"set": ("caption", 3)}, TypeError, r"record 42, field 'caption' is int, not str"),
    ("complex in a float field", {"set": ("boxes", np.ones((1, 4), complex))}, TypeError, r"record 42, field 'boxes'"),
    ("not a dict", {"replace": [1, 2, 3]}, TypeError, r"record 42 is list, not a dict"),
]


@pytest.mark.parametrize("what, change, error, message", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_a_bad_record_writes_nothing_in_any_field(built, what, change, error, message):
    """The bad record is the third of a batch whose first fields a naive writer would append."""
    path, r, records = built
    batch = make_records(5, seed=2, first=40)
    bad = dict(batch[2])
    if "drop" in change:
        del bad[change["drop"]]
    if "add" in change:
        bad[change["add"][0]] = change["add"][1]
    if "set" in change:
        bad[change["set"][0]] = change["set"][1]
    batch[2] = change.get("replace", bad)
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(error, match=message):
        r.extend(batch)
    with pytest.raises(error, match=message.replace("42", "40")):
        r.append(batch[2])
    assert len(r) == 40 and set(field_lengths(path).values()) == {40}
    check_records(RecordsMmap(path), records)
    after = {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and p.name != layout.LOCK}
    assert after == {p: c for p, c in before.items() if p.name != layout.LOCK}


def test_a_ragged_field_of_1d_samples_takes_one_of_more_axes(built):
    path, r, records = built
    more = make_records(2, first=40)
    more[1]["tokens"] = np.arange(6, dtype=np.int32).reshape(2, 3)
    r.extend(more)
    assert r[41]["tokens"].shape == (2, 3) and r[41]["tokens"].tolist() == [[0, 1, 2], [3, 4, 5]]
    check_records(RecordsMmap(path), records + more)
    assert set(field_lengths(path).values()) == {42}


def test_an_error_in_a_later_field_undoes_the_earlier_ones(built, monkeypatch):
    path, r, records = built
    real = layout.ArrayWriter.append  # the writer every append to a same-shape field goes through

    def fail_on_score(writer, rows, durable=False, source=None):
        if Path(writer.dir).name == "score":
            raise OSError(28, "No space left on device")
        return real(writer, rows, durable, source)

    monkeypatch.setattr(layout.ArrayWriter, "append", fail_on_score)
    with pytest.raises(OSError, match="No space left"):
        r.extend(make_records(3, seed=3, first=40))  # image and label were appended before score
    monkeypatch.undo()
    assert len(r) == 40 and set(field_lengths(path).values()) == {40}
    r.extend(make_records(3, seed=3, first=40))
    check_records(RecordsMmap(path), records + make_records(3, seed=3, first=40))


def test_a_field_holding_more_than_the_count_is_cut_back_by_the_next_writer(built):
    """The state a writer killed between two fields leaves behind, made by hand."""
    path, r, records = built
    RaggedMmap(path / "image").extend([np.ones((1, 1, 3), np.uint8)] * 2)
    StringsMmap(path / "caption").extend(["half-written"])
    np_ninja.extend_dir(path / "label", np.array([99]))
    assert field_lengths(path)["image"] == 42
    fresh = RecordsMmap(path)
    assert len(fresh) == 40
    check_records(fresh, records)
    more = make_records(2, seed=4, first=40)
    fresh.extend(more)
    assert set(field_lengths(path).values()) == {42}
    check_records(RecordsMmap(path), records + more)
    for name, kind in (("image", "ragged_nested"), ("caption", "strings"), ("label", "numpy"), ("tokens", "ragged_flat")):
        assert layout_problems(kind, path / name) == []


def test_a_field_holding_fewer_than_the_count_is_refused(built):
    path, r, records = built
    doc = json.loads((path / RECORDS_FILE).read_text())
    doc["count"] = 41
    (path / RECORDS_FILE).write_text(json.dumps(doc))
    with pytest.raises(MapFormatError, match="holds 40 samples, but .* counts 41 records"):
        RecordsMmap(path)


def test_writers_take_turns(built):
    path, r, records = built
    with layout.hold_writer_lock(path):
        with pytest.raises(MapBusyError):
            r.append(make_records(1, first=40)[0])
    assert len(RecordsMmap(path)) == 40


def test_a_reader_during_appends_sees_whole_intact_records(tmp_path):
    """A reader process checks the map again and again while a writer process extends it."""
    run = _kill_run(tmp_path)
    for number in range(40):
        run.batch(number)
    pid = os.fork()
    if pid == 0:
        try:
            extend = records_crash_child.extender(str(run.path))
            for number in range(1, 40):
                extend(run.batch(number))
                time.sleep(0.005)  # so that the reader meets the map at many lengths
        finally:
            os._exit(0)
    seen = set()
    reader = RecordsMmap(run.path)
    while True:
        done = os.waitpid(pid, os.WNOHANG)[0] == pid
        batches = run.check(1, 40)  # opens the map afresh: whole batches, every record equal
        seen.add(batches)
        reader.refresh()  # and a reader that stays open sees the same
        assert run.batches_for(len(reader)) is not None
        last = reader[len(reader) - 1]
        assert last["caption"] == run.expected(run.batches_for(len(reader)))[-1]["caption"]
        if done:
            break
    assert batches == 40 and len(seen) > 1


def test_durable_builds_appends_and_fields(tmp_path):
    r = RecordsMmap.from_generator(tmp_path / "ds", make_records(10), 4, durable=True)
    r.extend(make_records(3, first=10), durable=True)
    r.add_field("w", list(range(13)), durable=True)
    r2 = RecordsMmap.from_indexable(tmp_path / "ds2", make_records(40), 8, n_jobs=2, durable=True)
    check_records(RecordsMmap(tmp_path / "ds"), [{**x, "w": i} for i, x in enumerate(make_records(10) + make_records(3, first=10))])
    check_records(r2, make_records(40))


def test_opening_what_is_not_a_records_map(tmp_path):
    with pytest.raises(FileNotFoundError, match="no records map"):
        RecordsMmap(tmp_path / "nothing")
    RaggedMmap.from_lists(tmp_path / "plain", [np.zeros(2)])
    with pytest.raises(MapFormatError, match="records.json is missing"):
        RecordsMmap(tmp_path / "plain")
    RecordsMmap.from_generator(tmp_path / "ds", make_records(3), 4)
    (tmp_path / "ds" / RECORDS_FILE).write_text("{not json")
    with pytest.raises(MapFormatError, match="not valid JSON"):
        RecordsMmap(tmp_path / "ds")
    (tmp_path / "ds" / RECORDS_FILE).write_text(json.dumps({"format": "mmap_ninja.records", "version": 1, "count": 3,
                                                            "fields": [{"name": "image", "kind": "ragged"}, {"name": "gone", "kind": "numpy"}]}))
    with pytest.raises(MapFormatError, match="gone is missing"):
        RecordsMmap(tmp_path / "ds")


# --- add_field -------------------------------------------------------------------------------------


def test_add_field(built):
    path, r, records = built
    held = r["image"]
    r.add_field("prediction", [np.full(i % 3, i, np.float32) for i in range(40)])
    r.add_field("note", [f"n{i}" for i in range(40)], kind="strings")
    r.add_field("weight", list(range(40)), kind="numpy", dtype="int16")
    assert r.fields["prediction"] == "ragged" and r.fields["note"] == "strings" and r["weight"].dtype == np.int16
    again = RecordsMmap(path)
    assert list(again.fields)[-3:] == ["prediction", "note", "weight"]
    assert again[7]["note"] == "n7" and again[7]["prediction"].tolist() == [7.0] and again[7]["weight"] == 7
    assert len(held) == 40 and np.array_equal(held[3], records[3]["image"])  # a map the user holds still works
    r.extend([{**x, "prediction": np.zeros(1, np.float32), "note": "", "weight": 1} for x in make_records(2, first=40)])
    assert set(field_lengths(path).values()) == {42}


def test_add_field_refuses_without_writing(built):
    path, r, records = built
    before = sorted(p.name for p in path.iterdir() if p.name != layout.LOCK)
    with pytest.raises(ValueError, match="one value per record: the map has 40 records, got 39"):
        r.add_field("p", range(39))
    with pytest.raises(ValueError, match="already has a field 'label'"):
        r.add_field("label", range(40))
    with pytest.raises(ValueError, match="cannot be the name of a field"):
        r.add_field("a/b", range(40))
    with pytest.raises(ValueError, match="differ only in case"):
        r.add_field("LABEL", range(40))
    values = list(range(40))
    values[20] = "x"
    with pytest.raises(TypeError, match="record 20, field 'p'"):
        r.add_field("p", values)
    many = list(range(40))
    many[39] = np.zeros(2)
    with pytest.raises(ValueError, match="record 39, field 'p' has shape"):
        r.add_field("p", many, kind="numpy")
    assert sorted(p.name for p in path.iterdir() if p.name != layout.LOCK) == before
    assert list(RecordsMmap(path).fields) == list(r.fields) and "p" not in r.fields


@pytest.mark.parametrize("before", [True, False], ids=["before the commit", "after the commit"])
def test_add_field_killed_is_all_or_nothing(built, before):
    path, r, records = built
    values = [str(i) for i in range(40)]
    # the field's map is published by a rename, then the records file by another: kill at the second
    pid = os.fork()
    if pid == 0:
        try:
            records_crash_child.inject_rename_kill(2, before)
            RecordsMmap(path).add_field("text", values)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    again = RecordsMmap(path)
    if before:
        assert "text" not in again.fields
        again.add_field("text", values)  # replaces the unlisted folder the kill left
    assert again.fields["text"] == "strings" and again[5]["text"] == "5"
    check_records(again, [{**x, "text": str(i)} for i, x in enumerate(records)])


# --- killed writers ------------------------------------------------------------------------------------


def _kill_run(tmp_path: Path, writer: str = "ours") -> RecordsRun:
    run = RecordsRun(tmp_path, seed=4, peer=None, writer=writer)
    run.create()
    return run


def _extend_killed_at(run: RecordsRun, work: Path, **kill: Any) -> bool:
    """Fork a writer that extends by the next batch and is killed as told; False if it finished."""
    number = run.count
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        prepared = {number: run.batch(number), number + 1: None}
        try:
            if kill.get("kill_after_writes"):
                records_crash_child.crash_child.inject_kill(kill["kill_after_writes"], kill.get("partial_write", False))
            if kill.get("kill_at_commit"):
                records_crash_child.inject_commit_kill(kill["kill_at_commit"], kill.get("before_commit", False))
            records_crash_child.extender(str(run.path), run.writer)(prepared[number])
            os.write(write_fd, b"done")
        finally:
            os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    finished = os.read(read_fd, 10) == b"done"
    os.close(read_fd)
    if finished:
        return False
    assert os.WIFSIGNALED(status), "the writer neither finished nor was killed"
    return True


def _kill_at_every_write(tmp_path: Path, writer: str, partial: bool, stop_at_failure: bool = False) -> List[str]:
    """Kill an extend at each of its writes in turn; the failed checks (none for a sound writer)."""
    run = _kill_run(tmp_path, writer)
    failures = []
    for at in range(1, 400):
        before = run.count
        killed = _extend_killed_at(run, tmp_path, kill_after_writes=at, partial_write=partial)
        try:
            run.count = run.check(before, before + 1)
            run.repair_and_compare()  # the next writer cuts every field back first
        except AssertionError as e:
            failures.append(f"killed at write {at}: {e}")
            run.create()
        except MapFormatError as e:
            failures.append(f"killed at write {at}: {e}")
            run.create()
        if not killed or (failures and stop_at_failure):
            break
    else:
        raise AssertionError("the extend never finished")
    return failures


def test_kill_at_every_write_of_an_extend(tmp_path):
    assert _kill_at_every_write(tmp_path, "ours", False) == []


@pytest.mark.stress
def test_kill_at_every_write_of_an_extend_half_written(tmp_path):
    assert _kill_at_every_write(tmp_path, "ours", True) == []


def test_kill_at_every_write_catches_a_naive_writer(tmp_path):
    """The same checks fail when fields are appended one by one with no count of their own."""
    failures = _kill_at_every_write(tmp_path, "naive", False, stop_at_failure=True)
    assert failures, "a field-by-field writer passed the checks: they cannot see torn records"


@pytest.mark.parametrize("before", [True, False])
def test_kill_at_the_commit(tmp_path, before):
    run = _kill_run(tmp_path)
    assert _extend_killed_at(run, tmp_path, kill_at_commit=1, before_commit=before)
    run.count = run.check(1 if before else 2, 1 if before else 2)
    run.repair_and_compare()


def test_the_commit_is_one_write_in_place(built):
    path, r, records = built
    raw = (path / RECORDS_FILE).read_bytes()
    assert raw.startswith(b'{"count":                   40,')
    r.extend(make_records(2, first=40))
    assert (path / RECORDS_FILE).read_bytes() == raw.replace(b"                  40,", b"                  42,", 1)
    doc = json.loads((path / RECORDS_FILE).read_bytes())
    (path / RECORDS_FILE).write_text(json.dumps(doc))  # another layout (edited by hand): rewritten whole
    r.extend(make_records(1, first=42))
    assert json.loads((path / RECORDS_FILE).read_text())["count"] == 43
    assert (path / RECORDS_FILE).read_bytes().startswith(b'{"count":                   43,')
    check_records(RecordsMmap(path), records + make_records(2, first=40) + make_records(1, first=42))


def _stress(*args: str, timeout: float) -> subprocess.CompletedProcess:
    peer = [] if find_peer() and Path(find_peer()).exists() else ["--no-peer"]
    return subprocess.run([sys.executable, str(SCRIPTS / "records_crash_stress.py"), *args, *peer],
                          capture_output=True, text=True, timeout=timeout)


def test_records_crash_stress_short_run():
    result = _stress("--kills", "6", "--seed", "3", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 6 SIGKILLs" in result.stdout


@pytest.mark.stress
@pytest.mark.parametrize("seed", [1, 2])
def test_records_crash_stress_full_run(seed):
    result = _stress("--kills", "60", "--seed", str(seed), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "60 SIGKILLs" in result.stdout


@pytest.mark.stress
def test_records_crash_stress_catches_a_naive_writer():
    result = _stress("--kills", "30", "--seed", "5", "--writer", "naive", timeout=900)
    assert result.returncode == 1 and "FAILED" in result.stdout, result.stdout + result.stderr


# --- parallel builds by parts ----------------------------------------------------------------------------


def _files(path: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != layout.LOCK}


class Failing:
    """A dataset whose record 37 raises (pickles by reference: a module-level class)."""

    def __init__(self, n: int):
        self.records = make_records(n)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if i == 37:
            raise RuntimeError("cannot decode")
        return self.records[i]


def test_parallel_build_by_parts_equals_the_serial_build(tmp_path):
    records = make_records(150, seed=9)
    records[120]["tokens"] = np.arange(6, dtype=np.int32).reshape(3, 2)  # a later part upgrades its shape layout
    serial = RecordsMmap.from_indexable(tmp_path / "serial", records, batch_size=16)
    parallel = RecordsMmap.from_indexable(tmp_path / "parallel", records, batch_size=16, n_jobs=2)
    assert parallel.fields == serial.fields
    check_records(parallel, records)
    assert _files(tmp_path / "parallel") == _files(tmp_path / "serial")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parallel", "serial"]  # no parts left behind


def test_parallel_build_names_the_failing_record_and_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="sample 37 of the dataset raised RuntimeError: cannot decode"):
        RecordsMmap.from_indexable(tmp_path / "ds", Failing(100), batch_size=8, n_jobs=2)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="sample 37"):
        RecordsMmap.from_indexable(tmp_path / "ds", Failing(100), batch_size=8)
    assert list(tmp_path.iterdir()) == []


def test_indexables_without_len_or_shorter_than_it(tmp_path):
    records = make_records(30)

    class Short:
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return records[i]  # IndexError at 30

    r = RecordsMmap.from_indexable(tmp_path / "a", Short(), batch_size=4)
    check_records(r, records)
    r = RecordsMmap.from_indexable(tmp_path / "b", lambda i: records[i], batch_size=4, n_jobs=2)  # no len: serial
    check_records(r, records)
    with pytest.raises(ValueError, match="n_jobs"):
        RecordsMmap.from_indexable(tmp_path / "c", records, batch_size=4, n_jobs=0)


# --- mmap_ninja 0.9.0 opens every field alone ------------------------------------------------------------


UPSTREAM_READ = """
import json, sys
import numpy as np
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap
path = sys.argv[1]
out = {}
out["image"] = [RaggedMmap(path + "/image")[i].tolist() for i in range(40)]
out["tokens"] = [RaggedMmap(path + "/tokens")[i].tolist() for i in range(40)]
out["caption"] = list(StringsMmap(path + "/caption"))
out["label"] = np_ninja.open_existing(path + "/label").tolist()
print(json.dumps(out))
"""


def test_upstream_opens_each_field_alone(built):
    python = find_peer()
    if python is None or not Path(python).exists():
        pytest.skip("needs mmap_ninja 0.9.0: set MMAP_NINJA_UPSTREAM_PYTHON to an interpreter that has it (.ci/run does)")
    path, r, records = built
    done = subprocess.run([python, "-I", "-c", UPSTREAM_READ, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["image"] == [x["image"].tolist() for x in records]
    assert got["tokens"] == [x["tokens"].tolist() for x in records]
    assert got["caption"] == [x["caption"] for x in records]
    assert got["label"] == [x["label"] for x in records]


# --- PyTorch -----------------------------------------------------------------------------------------------

def _needs_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("needs torch: pip install 'mmap_ninja[torch]'")


def _check_collated(batch: Dict[str, Any], want: List[Dict[str, Any]], pad: int) -> None:
    import torch

    padded, lengths = batch["tokens"]
    assert lengths.tolist() == [len(x["tokens"]) for x in want]
    for row, n, x in zip(padded.tolist(), lengths.tolist(), want):
        assert row[:n] == x["tokens"].tolist() and row[n:] == [pad] * (len(row) - n)
    assert isinstance(batch["label"], torch.Tensor) and batch["label"].tolist() == [x["label"] for x in want]
    assert batch["score"].dtype == torch.float64 and batch["score"].tolist() == [x["score"] for x in want]
    assert batch["caption"] == [x["caption"] for x in want]
    assert [t.tolist() for t in batch["image"]] == [x["image"].tolist() for x in want]  # several sizes: a list
    assert [t.tolist() for t in batch["boxes"]] == [x["boxes"].tolist() for x in want]


def test_map_dataset_gives_dicts_of_tensors(built):
    _needs_torch()
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset, PadCollate

    path, r, records = built
    dataset = MapDataset(r)
    item = dataset[5]
    assert set(item) == set(r.fields)
    assert isinstance(item["image"], torch.Tensor) and item["image"].tolist() == records[5]["image"].tolist()
    assert item["label"].dtype == torch.int64 and int(item["label"]) == records[5]["label"]
    assert isinstance(item["caption"], str) and item["caption"] == records[5]["caption"]
    batch = dataset.__getitems__([3, 1, 4])
    assert [b["caption"] for b in batch] == [records[i]["caption"] for i in (3, 1, 4)]
    assert all(b["image"].tolist() == records[i]["image"].tolist() for b, i in zip(batch, (3, 1, 4)))
    assert all(int(b["label"]) == records[i]["label"] for b, i in zip(batch, (3, 1, 4)))
    loader = DataLoader(dataset, batch_size=6, collate_fn=PadCollate(pad_value=-3))
    seen = 0
    for b in loader:
        _check_collated(b, records[seen:seen + 6], -3)
        seen += len(b["caption"])
    assert seen == 40
    # items that did not come from the map straight (a transform): padded from the tensors
    transformed = MapDataset(r, transform=dict)
    b = PadCollate(pad_value=-3)(transformed.__getitems__([0, 1, 2]))
    assert b["tokens"][1].tolist() == [0, 1, 2] and b["caption"] == [records[i]["caption"] for i in range(3)]


def test_dataloader_two_forked_workers(built):
    _needs_torch()
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset, PadCollate

    path, r, records = built
    loader = DataLoader(MapDataset(r), batch_size=7, num_workers=2, collate_fn=PadCollate(pad_value=-1), multiprocessing_context="fork")
    seen = 0
    for b in loader:
        _check_collated(b, records[seen:seen + 7], -1)
        seen += len(b["caption"])
    assert seen == 40
    items = list(DataLoader(MapDataset(r), batch_size=None, num_workers=2, multiprocessing_context="fork"))
    assert [x["caption"] for x in items] == [x["caption"] for x in records]
    assert [x["image"].tolist() for x in items] == [x["image"].tolist() for x in records]
    assert [int(x["label"]) for x in items] == [x["label"] for x in records]


SPAWN_SCRIPT = """
import sys
import numpy as np
from torch.utils.data import DataLoader
from mmap_ninja.records import RecordsMmap
from mmap_ninja.torch import MapDataset, PadCollate

sys.path.insert(0, sys.argv[2])
from test_records import _check_collated, make_records

if __name__ == "__main__":
    records = make_records(40)
    dataset = MapDataset(RecordsMmap(sys.argv[1]))
    seen = 0
    loader = DataLoader(dataset, batch_size=7, num_workers=2, collate_fn=PadCollate(pad_value=-1), multiprocessing_context="spawn")
    for b in loader:
        _check_collated(b, records[seen:seen + 7], -1)
        seen += len(b["caption"])
    assert seen == 40, seen
    print("spawn ok")
"""


def test_dataloader_two_spawned_workers_compare_every_sample(built, tmp_path):
    _needs_torch()
    path, r, records = built
    script = tmp_path / "spawn_check.py"
    script.write_text(textwrap.dedent(SPAWN_SCRIPT))
    done = subprocess.run([sys.executable, str(script), str(path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "spawn ok"


# --- the command line: convert imagefolder, info -------------------------------------------------------------


class _Done:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """``mmap-ninja ARGS`` run in this process: (exit code, stdout, stderr)."""
    from mmap_ninja.cli import main

    def run(*args: str) -> _Done:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return _Done(code, out, err)

    return run


def test_the_command_runs_as_a_program(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mmap_ninja", "convert", "imagefolder", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--jobs K" in done.stdout and "--skip-bad" in done.stdout and "torchvision" in done.stdout


@pytest.fixture
def image_folder(tmp_path):
    require("PIL")
    from PIL import Image
    rng = np.random.default_rng(1)
    root = tmp_path / "root"
    files = {}
    # code point order: "B" < "a" < "a b" < "c"; ImageFolder's order too
    for cls in ["c", "a", "B", "a b"]:
        for rel in ["2.png", "10.png", "sub/1.png", "sub/deeper/0.jpg", "z.PNG"]:
            path = root / cls / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3), dtype=np.uint8)
            Image.fromarray(image).save(path, quality=95)
            files[path] = np.asarray(Image.open(path).convert("RGB"))
    (root / "a" / ".hidden.png").write_bytes(b"not an image")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "c" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    return root, files


def _imagefolder_order(root: Path) -> List[tuple]:
    """What torchvision's ImageFolder lists: classes sorted, files by sorted(os.walk) then name."""
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    out = []
    for label, cls in enumerate(classes):
        for folder, _, names in sorted(os.walk(root / cls)):
            for name in sorted(names):
                if name.lower().endswith((".png", ".jpg")) and not name.startswith("."):
                    out.append((Path(folder, name), label))
    return classes, out


def test_convert_imagefolder(image_folder, tmp_path, cli):
    root, files = image_folder
    done = cli("convert", "imagefolder", str(root), str(tmp_path / "out"), "--quiet", "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "wrote 20 samples" in done.stdout
    r = RecordsMmap(tmp_path / "out")
    classes, order = _imagefolder_order(root)
    assert r.classes == classes == ["B", "a", "a b", "c", "empty"]
    assert r.fields == {"image": "ragged", "label": "numpy", "path": "strings"} and r["label"].dtype == np.int64
    assert len(r) == len(order) == 20
    for i, (path, label) in enumerate(order):
        rec = r[i]
        assert rec["path"] == path.relative_to(root).as_posix() and rec["label"] == label
        assert np.array_equal(rec["image"], files[path])
    assert r[0]["path"] == "B/10.png" and r[3]["path"] == "B/sub/1.png"  # a class's own files before its subfolders'


def test_convert_imagefolder_jobs_give_the_same_map(image_folder, tmp_path, cli):
    root, _ = image_folder
    assert cli("convert", "imagefolder", str(root), str(tmp_path / "one"), "--quiet", "--batch-size", "3").returncode == 0
    done = cli("convert", "imagefolder", str(root), str(tmp_path / "two"), "--quiet", "--batch-size", "3", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_convert_imagefolder_bad_files(image_folder, tmp_path, cli):
    root, _ = image_folder
    (root / "a" / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    done = cli("convert", "imagefolder", str(root), str(out), "--quiet")
    assert done.returncode == 1 and "broken.png is not a readable image" in done.stderr and "nothing was written" in done.stderr
    assert not out.exists()
    for jobs in ("1", "2"):
        done = cli("convert", "imagefolder", str(root), str(out), "--skip-bad", "--jobs", jobs, "--batch-size", "3", "--overwrite", "--quiet")
        assert done.returncode == 0, done.stderr
        assert "skipped:" in done.stderr and "broken.png" in done.stderr and "left out 1 unreadable file" in done.stdout
        r = RecordsMmap(out)
        assert len(r) == 20 and "a/broken.png" not in list(r["path"])
    done = cli("convert", "imagefolder", str(root), str(out), "--quiet")
    assert done.returncode == 1 and "already exists" in done.stderr


def test_convert_imagefolder_progress_bar(image_folder, tmp_path, cli):
    root, _ = image_folder
    done = cli("convert", "imagefolder", str(root), str(tmp_path / "out"))
    assert done.returncode == 0 and "20/20" in done.stderr


def test_info_of_a_records_map(built, tmp_path, cli):
    path, r, records = built
    done = cli("info", str(path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "kind:          records (RecordsMmap)" in out and "records:       40" in out and "health:        healthy" in out
    assert "field 'image':" in out and "uint8" in out and "samples with 3 axes" in out and "str (UTF-8)" in out
    report = json.loads(cli("info", str(path), "--json").stdout)
    assert report["records"] == 40 and [f["field"] for f in report["fields"]] == list(r.fields)
    assert {f["field"]: f["dtype"] for f in report["fields"]}["label"] == "int64"
    # an interrupted extend: one field holds more than the records
    RaggedMmap(path / "image").append(np.zeros((1, 1, 3), np.uint8))
    done = cli("info", str(path))
    assert done.returncode == 0 and "needs repair on next append" in done.stdout
    assert "field 'image' holds 1 samples past the 40 committed records" in done.stdout
    # a field that holds fewer: unhealthy
    doc = json.loads((path / RECORDS_FILE).read_text())
    doc["count"] = 45
    (path / RECORDS_FILE).write_text(json.dumps(doc))
    done = cli("info", str(path))
    assert done.returncode == 1 and "unhealthy" in done.stdout and "fewer than the 45 committed records" in done.stdout


def test_info_lists_the_classes(image_folder, tmp_path, cli):
    root, _ = image_folder
    assert cli("convert", "imagefolder", str(root), str(tmp_path / "out"), "--quiet").returncode == 0
    done = cli("info", str(tmp_path / "out"))
    assert "classes:       5: 0 B, 1 a, 2 a b, 3 c, 4 empty" in done.stdout
    assert json.loads(cli("info", str(tmp_path / "out"), "--json").stdout)["classes"] == ["B", "a", "a b", "c", "empty"]


def test_convert_imagefolder_patterns(image_folder, tmp_path):
    from mmap_ninja.convert import convert_imagefolder

    root, _ = image_folder
    result = convert_imagefolder(root, tmp_path / "out", patterns=["*.jpg"])
    r = RecordsMmap(tmp_path / "out")
    assert result.samples == len(r) == 4 and list(r["path"]) == ["B/sub/deeper/0.jpg", "a/sub/deeper/0.jpg", "a b/sub/deeper/0.jpg", "c/sub/deeper/0.jpg"]
    assert r["label"].tolist() == [0, 1, 2, 3] and r.classes == ["B", "a", "a b", "c", "empty"]


def test_parallel_build_shows_one_bar_of_records(tmp_path, capfd):
    RecordsMmap.from_indexable(tmp_path / "ds", make_records(40), batch_size=8, n_jobs=2, verbose=True)
    assert "40/40" in capfd.readouterr().err
    RecordsMmap.from_indexable(tmp_path / "ds", make_records(40), batch_size=8, n_jobs=2)
    assert capfd.readouterr().err == ""


def test_info_of_a_broken_records_map(built, cli):
    path, r, records = built
    RaggedMmap.from_lists(path / "orphan", [np.zeros(2)])  # what an add_field killed before its commit leaves
    done = cli("info", str(path))
    assert done.returncode == 0 and "not a field:   orphan" in done.stdout
    shutil.rmtree(path / "caption")
    done = cli("info", str(path))
    assert done.returncode == 1 and "unhealthy" in done.stdout and "caption" in done.stdout
    (path / RECORDS_FILE).write_text("{broken")
    done = cli("info", str(path), "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["health"] == "unhealthy"
