"""The one build engine: maps and records built serially, by worker processes and on Dask
through one interface; the Skip sentinel; structured sample errors; records readers that
never map what a writer may cut (issue 17, defects 2 and 6)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, RecordsMmap, Skip
from mmap_ninja.errors import MapFormatError, WorkerDiedError, sample_of
from mmap_ninja.records import RECORDS_FILE
from mmap_ninja.skip import AllSkippedError


def tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


class SkipsEvery:
    """Records (or arrays) whose index divisible by ``k`` is skipped."""

    def __init__(self, n: int, k: int, records: bool):
        self.n, self.k, self.records = n, k, records

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i % self.k == 0:
            return Skip(f"number {i} is unlucky")
        image = np.full((i % 3 + 1, 2), i, np.uint8)
        return {"image": image, "label": i, "caption": f"n{i}"} if self.records else image


@pytest.mark.parametrize("records", [False, True])
def test_skip_leaves_samples_out_serial_and_parallel_alike(tmp_path, records):
    from mmap_ninja.parallel import build_indexable
    from mmap_ninja.records_build import RecordsProduct

    dataset = SkipsEvery(50, 7, records)
    product = RecordsProduct() if records else "ragged"
    serial = build_indexable(tmp_path / "s", product, dataset, 4, None, False)
    parallel = build_indexable(tmp_path / "p", RecordsProduct() if records else "ragged", dataset, 4, 2, False)
    assert serial == parallel == [(i, f"number {i} is unlucky") for i in range(0, 50, 7)]
    assert tree_hashes(tmp_path / "s") == tree_hashes(tmp_path / "p")
    kept = [i for i in range(50) if i % 7]
    got = RecordsMmap(tmp_path / "p") if records else RaggedMmap(tmp_path / "p")
    assert len(got) == len(kept)
    first = got[0]["label"] if records else got[0][0, 0]
    assert first == kept[0]


def test_every_sample_skipped_publishes_nothing(tmp_path):
    with pytest.raises(AllSkippedError, match="every one of the 6 samples"):
        RaggedMmap.from_indexable(tmp_path / "m", [Skip("no")] * 6, 2, n_jobs=2)
    assert not (tmp_path / "m").exists()


def test_an_error_after_skipped_samples_names_the_dataset_index(tmp_path):
    data = [Skip("x"), np.arange(2), Skip("y"), np.arange(2), np.array([0.5])]
    for jobs in (None, 2):
        with pytest.raises(ValueError) as caught:
            RaggedMmap.from_indexable(tmp_path / f"m{jobs}", data, 2, n_jobs=jobs)
        assert sample_of(caught.value) == 4 and str(caught.value).startswith("sample 4 has dtype float64")




def test_records_of_a_local_class_build_with_jobs_2(tmp_path):
    class Local:
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return {"x": np.arange(i % 4), "y": i}

    r = RecordsMmap.from_indexable(tmp_path / "p", Local(), 4, n_jobs=2)
    RecordsMmap.from_indexable(tmp_path / "s", Local(), 4)
    assert tree_hashes(tmp_path / "p") == tree_hashes(tmp_path / "s") and len(r) == 30 and r[29]["y"] == 29


class RecordsDieAt:
    def __len__(self):
        return 40

    def __getitem__(self, i):
        if i == 25:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"x": np.arange(3), "y": i}


def test_a_killed_records_worker_is_a_worker_died_error(tmp_path):
    with pytest.raises(WorkerDiedError, match=r"samples 24 to 27 .*exit code -9"):
        RecordsMmap.from_indexable(tmp_path / "m", RecordsDieAt(), 4, n_jobs=2)
    assert not (tmp_path / "m").exists()


class CountsReads:
    def __init__(self, log: str):
        self.log = log

    def __len__(self):
        return 24

    def __getitem__(self, i):
        with open(self.log, "a") as f:
            f.write(f"{i}\n")
        return {"x": np.arange(2) + i}


def test_a_parallel_records_build_reads_each_record_once(tmp_path):
    log = tmp_path / "reads"
    RecordsMmap.from_indexable(tmp_path / "m", CountsReads(str(log)), 4, n_jobs=2)
    reads = sorted(int(line) for line in log.read_text().split())
    assert reads == list(range(24))  # the first batch too: read once, by the caller, as the first part


def test_records_build_on_dask(tmp_path):
    distributed = pytest.importorskip("distributed")
    from mmap_ninja import dask as mdask

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster, distributed.Client(cluster) as client:
        r = mdask.from_indexable(tmp_path / "d", SkipsEvery(30, 5, True), "records", batch_size=4, client=client)
    from mmap_ninja.records_build import build_records

    build_records(tmp_path / "s", SkipsEvery(30, 5, True), 4)
    assert isinstance(r, RecordsMmap) and len(r) == 24
    assert tree_hashes(tmp_path / "d") == tree_hashes(tmp_path / "s")


# -- issue 17 ---------------------------------------------------------------------------------


def test_records_file_with_no_fields_is_a_map_format_error(tmp_path):
    path = tmp_path / "ds"
    RecordsMmap.from_generator(path, [{"a": 1}], 4)
    doc = json.loads((path / RECORDS_FILE).read_text())
    doc["fields"], doc["count"] = [], 0
    (path / RECORDS_FILE).write_text(json.dumps(doc))
    with pytest.raises(MapFormatError, match=f"{path / RECORDS_FILE}.*no fields"):
        RecordsMmap(path)


RACE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from mmap_ninja import RaggedMmap, RecordsMmap, layout, reads

    path, where = Path(sys.argv[1]), sys.argv[2]
    n = 512  # the offsets of n records fill one page exactly: the tail's lie on the next one
    records = [{"image": np.full((i % 3 + 1, 2), i % 200, np.uint8), "label": i} for i in range(n)]
    RecordsMmap.from_generator(path, records, 128)
    # a killed writer's tail: the image field alone holds two more samples
    RaggedMmap(path / "image").extend([np.full((3000, 2), 9, np.uint8)] * 2)
    real = reads.LocalMapFiles.view
    done = []

    def racing(files, name, nbytes, access="r"):
        # the next writer cuts the tail back right when this reader maps the image offsets
        if files.file(name).absolute() == (path / "image" / "ends" / layout.DATA).absolute() and not done:
            done.append(1)
            if where == "before":
                layout.roll_back(path / "image", n)
                return real(files, name, nbytes, access)
            mapped = real(files, name, nbytes, access)
            layout.roll_back(path / "image", n)
            return mapped
        return real(files, name, nbytes, access)

    reads.LocalMapFiles.view = racing
    r = RecordsMmap(path)
    assert done, "the hook did not run"
    assert len(r) == n and [int(r[i]["image"][0, 0]) for i in range(n)] == [i % 200 for i in range(n)]
    print("ok")
    """
)


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_reader_racing_the_cut_of_a_killed_writers_tail(tmp_path, where):
    """Defect 2 of issue 17: the reader maps only the committed records, never the cut tail
    (before: SIGBUS or a raw 'mmap length is greater than file size')."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    done = subprocess.run([sys.executable, "-c", RACE, str(tmp_path / "ds"), where], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_an_open_racing_a_rebuild_sees_one_version_of_every_field(tmp_path, monkeypatch):
    """Records' one-version open: a rebuild at the path between two fields' opens (hook)
    gives the old records or the new ones, never old images with new labels."""
    import mmap_ninja.records as records_module

    path = tmp_path / "ds"
    old = [{"image": np.full(i % 3 + 1, 1, np.int32), "label": 1} for i in range(6)]
    new = [{"image": np.full(i % 3 + 1, 2, np.int32), "label": 2} for i in range(6)]
    RecordsMmap.from_generator(path, old, 4)
    real = records_module.open_field
    opened = []

    def racing(field_dir, kind, mode, count=None):
        opened.append(field_dir.name)
        if len(opened) == 2:  # the image field is open: the map is rebuilt before the label field is
            RecordsMmap.from_generator(path, new, 4)
        return real(field_dir, kind, mode, count)

    monkeypatch.setattr(records_module, "open_field", racing)
    r = RecordsMmap(path)
    assert len(opened) > 2  # the open was retried
    values = {(int(r[i]["image"][0]), int(r[i]["label"])) for i in range(len(r))}
    assert values == {(2, 2)}


CTRL_C = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from mmap_ninja import RecordsMmap

    class Slow:
        def __len__(self):
            return 64

        def __getitem__(self, i):
            if i >= 8:
                time.sleep(60)  # a worker stuck on a sample
            return {"x": np.arange(3), "y": i}

    print("started", flush=True)
    RecordsMmap.from_indexable(sys.argv[1], Slow(), 4, n_jobs=2)
    """
)


def test_ctrl_c_stops_a_parallel_records_build_at_once(tmp_path):
    import time

    out = tmp_path / "maps" / "out"
    out.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while not [p for p in out.parent.iterdir() if ".parts-" in p.name]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        time.sleep(1.5)  # the workers are stuck on their samples
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err and took < 15, (took, err[-1000:])
    assert list(out.parent.iterdir()) == []  # no map, no parts, no partial build
