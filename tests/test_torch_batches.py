"""mmap_ninja.torch batch path: one copy per sample into the batch, safe zero-copy, workers,
DistributedSampler, pin_memory, and torchvision where it installs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import RecordsMmap
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch is not installed (pip install 'mmap_ninja[torch]')"
)


def image_maps(folder: Path, n: int = 12, shape=(6, 5, 3)):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    RaggedMmap.from_lists(folder / "images", list(images))
    np_ninja.from_ndarray(folder / "labels", np.arange(n, dtype=np.int64) * 10)
    return images, np.arange(n, dtype=np.int64) * 10


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_default_collate_returns_the_gathered_batch_without_stacking_again(tmp_path):
    import torch
    from torch.utils.data import DataLoader, default_collate

    from mmap_ninja.torch import MapDataset

    images, labels = image_maps(tmp_path)
    dataset = MapDataset(tmp_path / "images", tmp_path / "labels")
    items = dataset.__getitems__([3, 0, 11, 3])
    got_images, got_labels = default_collate(items)
    np.testing.assert_array_equal(got_images.numpy(), images[[3, 0, 11, 3]])
    assert got_labels.tolist() == labels[[3, 0, 11, 3]].tolist()
    # the items are views of the batch tensor: the collate handed back that tensor, no second copy
    assert got_images.data_ptr() == items[0][0].data_ptr() and got_labels.data_ptr() == items[0][1].data_ptr()
    # a second collate of the same items, or of a part of them, stacks a new tensor
    again = default_collate(items)[0]
    assert again.data_ptr() != got_images.data_ptr() and torch.equal(again, got_images)
    part = default_collate(items[:2])[0]
    assert part.data_ptr() != got_images.data_ptr() and torch.equal(part, got_images[:2])
    # and through a DataLoader spelled as users spell it, shuffled, every batch right
    seen = []
    for batch_images, batch_labels in DataLoader(dataset, batch_size=5, shuffle=True):
        idx = (batch_labels // 10).numpy()
        np.testing.assert_array_equal(batch_images.numpy(), images[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(images)))


def test_a_custom_collate_gets_a_list_of_writable_tensors_of_its_own(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset

    images, labels = image_maps(tmp_path)
    before = digest(tmp_path)
    loader = DataLoader(MapDataset(tmp_path / "images", tmp_path / "labels"), batch_size=4, collate_fn=lambda b: b)
    for k, batch in enumerate(loader):
        assert isinstance(batch, list) and len(batch) == 4
        for j, (image, label) in enumerate(batch):
            assert isinstance(image, torch.Tensor) and image.shape == (6, 5, 3) and image.dtype == torch.uint8
            np.testing.assert_array_equal(image.numpy(), images[4 * k + j])
            assert int(label) == labels[4 * k + j]
            image.fill_(1)  # ours to change
    np.testing.assert_array_equal(RaggedMmap(tmp_path / "images")[0], images[0])
    assert digest(tmp_path) == before


def test_records_zipped_strings_and_ragged_fields(tmp_path):
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset, PadCollate

    rng = np.random.default_rng(1)
    records = [{"image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "label": i, "caption": f"c{i}é",
                "tokens": np.arange(i % 5, dtype=np.int32)} for i in range(10)]
    RecordsMmap.from_generator(tmp_path / "recs", iter(records), batch_size=4)
    StringsMmap.from_strings(tmp_path / "names", [f"n{i}" for i in range(10)])
    dataset = MapDataset(tmp_path / "recs")
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=PadCollate(pad_value=-1))))
    np.testing.assert_array_equal(batch["image"].numpy(), np.stack([r["image"] for r in records[:4]]))
    assert batch["label"].tolist() == [0, 1, 2, 3] and batch["caption"] == ["c0é", "c1é", "c2é", "c3é"]
    tokens, lengths = batch["tokens"]
    assert lengths.tolist() == [0, 1, 2, 3] and tokens[3].tolist() == [0, 1, 2] and tokens[1].tolist() == [0, -1, -1]
    items = dataset.__getitems__([9, 2])
    assert items[0]["caption"] == "c9é" and items[1]["tokens"].tolist() == [0, 1]
    # records zipped with another map, default collate: same-shape fields as one tensor each
    zipped = MapDataset(tmp_path / "recs", tmp_path / "names")
    for k, (recs, names) in enumerate(DataLoader(zipped, batch_size=5, collate_fn=_drop_tokens)):
        np.testing.assert_array_equal(recs["image"].numpy(), np.stack([r["image"] for r in records[5 * k : 5 * k + 5]]))
        assert recs["label"].tolist() == list(range(5 * k, 5 * k + 5)) and list(names) == [f"n{i}" for i in range(5 * k, 5 * k + 5)]


def _drop_tokens(batch):
    from torch.utils.data import default_collate

    return default_collate([({n: v for n, v in r.items() if n != "tokens"}, name) for r, name in batch])


def test_batches_from_workers_are_gathered_in_shared_memory(tmp_path):
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset

    images, labels = image_maps(tmp_path)
    loader = DataLoader(MapDataset(tmp_path / "images", tmp_path / "labels"), batch_size=3, num_workers=2,
                        collate_fn=_collate_and_report, multiprocessing_context="fork")
    for k, ((batch_images, batch_labels), in_shared_memory) in enumerate(loader):
        assert in_shared_memory  # so it crosses to this process without another copy
        np.testing.assert_array_equal(batch_images.numpy(), images[3 * k : 3 * k + 3])
        assert batch_labels.tolist() == labels[3 * k : 3 * k + 3].tolist()


def _collate_and_report(items):
    from torch.utils.data import default_collate

    images, labels = default_collate(items)
    gathered = images.data_ptr() == items[0][0].data_ptr()
    return (images, labels), gathered and images.is_shared() and labels.is_shared()


def test_pin_memory_with_the_batch_path(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset

    images, labels = image_maps(tmp_path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without an accelerator PyTorch warns that it pins nothing
        batches = list(DataLoader(MapDataset(tmp_path / "images", tmp_path / "labels"), batch_size=4, pin_memory=True))
    assert len(batches) == 3
    for k, (batch_images, batch_labels) in enumerate(batches):
        np.testing.assert_array_equal(batch_images.numpy(), images[4 * k : 4 * k + 4])
        if torch.cuda.is_available():
            assert batch_images.is_pinned()


# Writes through every kind of tensor the module hands out, in a child process: on a map
# mapped read-only (the naive version), the first one kills it with SIGSEGV.
WRITES = r"""
import json, sys
import numpy as np, torch
from torch.utils.data import DataLoader
from mmap_ninja import RecordsMmap, megatron, numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.torch import MapDataset, PadCollate, to_tensor

folder = sys.argv[1]
images = RaggedMmap(folder + "/images")
labels = np_ninja.open_existing(folder + "/labels")
records = RecordsMmap(folder + "/recs")
corpus = megatron.open(folder + "/corpus")
written = []

def write(name, tensor):
    tensor.view(-1)[:1] += 1 if tensor.dtype != torch.bool else True
    written.append(name)

for copy in (False, True):
    ds = MapDataset(images, labels, copy=copy)
    image, label = ds[0]
    write(f"item image copy={copy}", image); write(f"item label copy={copy}", label)
    for image, label in ds.__getitems__([1, 2]):
        write(f"batch item image copy={copy}", image); write(f"batch item label copy={copy}", label)
    batch_images, batch_labels = next(iter(DataLoader(ds, batch_size=3)))
    write(f"batch copy={copy}", batch_images); write(f"batch labels copy={copy}", batch_labels)
    rec = MapDataset(records, copy=copy)[1]
    write(f"record image copy={copy}", rec["image"]); write(f"record label copy={copy}", rec["label"])
    for rec in MapDataset(records, copy=copy).__getitems__([0, 2]):
        write(f"record batch image copy={copy}", rec["image"]); write(f"record batch tokens copy={copy}", rec["tokens"])
    write(f"megatron copy={copy}", MapDataset(corpus, copy=copy)[0])
    write(f"megatron batch item copy={copy}", MapDataset(corpus, copy=copy).__getitems__([1])[0])
    write(f"to_tensor copy={copy}", to_tensor(images[3], copy=copy))
    write(f"to_tensor label copy={copy}", to_tensor(labels[4:6], copy=copy))
    (tokens, lengths), _ = PadCollate()(MapDataset(records["tokens"], labels[:4], copy=copy).__getitems__([1, 2]))
    write(f"padded copy={copy}", tokens)
writable = np_ninja.open_existing(folder + "/labels", mode="r+")
write("r+ map copy=False", MapDataset(writable, copy=False)[5])
print(json.dumps(written))
"""


def test_writing_to_any_tensor_never_crashes_nor_changes_a_file(tmp_path):
    from mmap_ninja import megatron

    images, labels = image_maps(tmp_path)
    rng = np.random.default_rng(2)
    RecordsMmap.from_generator(tmp_path / "recs", ({"image": rng.integers(0, 9, (2, 3), dtype=np.uint8), "label": float(i),
                                                    "tokens": np.arange(i + 1, dtype=np.int64)} for i in range(4)), batch_size=2)
    megatron.write(tmp_path / "corpus", [np.array([1, 2, 3], np.int32), np.array([4], np.int32)])
    before = digest(tmp_path)
    script = tmp_path.parent / "writes.py"
    script.write_text(WRITES)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the writer died with exit status {done.returncode}: {done.stderr[-2000:]}"
    assert len(json.loads(done.stdout)) == 2 * 19 + 1
    assert digest(tmp_path) == before  # no file changed
    np.testing.assert_array_equal(np.stack(RaggedMmap(tmp_path / "images")[:]), images)


def test_zero_copy_items_share_the_map_and_a_write_stays_in_this_map_object(tmp_path):
    from mmap_ninja.torch import MapDataset

    images, _ = image_maps(tmp_path)
    m = RaggedMmap(tmp_path / "images")
    dataset = MapDataset(m, copy=False)
    item = dataset[2]
    assert item.data_ptr() == m[2].__array_interface__["data"][0]  # the map's own memory
    assert not m[2].flags.writeable  # the map's own views stay read-only
    item[0, 0, 0] = (int(images[2, 0, 0, 0]) + 1) % 256  # documented: this process's copy of the page
    assert m[2][0, 0, 0] == item[0, 0, 0]
    np.testing.assert_array_equal(RaggedMmap(tmp_path / "images")[2], images[2])  # a new open sees the file


DISTRIBUTED = r"""
import json, os, sys
import numpy as np, torch, torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.torch import MapDataset

def run(rank, folder, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    dataset = MapDataset(folder + "/images", folder + "/labels")  # each rank opens the maps itself
    sampler = DistributedSampler(dataset, shuffle=True, seed=3)
    sampler.set_epoch(1)
    images = RaggedMmap(folder + "/images")
    mine = []
    for batch_images, batch_labels in DataLoader(dataset, batch_size=4, sampler=sampler):
        idx = (batch_labels // 10).tolist()
        assert np.array_equal(batch_images.numpy(), np.stack(images[idx])), idx
        mine += idx
    everyone = [None, None]
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()

if __name__ == "__main__":
    folder, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.multiprocessing.spawn(run, args=(folder, port, out), nprocs=2)
"""


def test_distributed_sampler_ranks_are_disjoint_and_cover_the_map(tmp_path):
    import socket

    image_maps(tmp_path, n=20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script, out = tmp_path.parent / "dist.py", tmp_path.parent / "dist.json"
    script.write_text(DISTRIBUTED)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(port), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = json.loads(out.read_text())
    assert len(first) == len(second) == 10
    assert not set(first) & set(second) and sorted(first + second) == list(range(20))


def test_torchvision_v2_random_resized_crop_over_ragged_images(tmp_path):
    """The docs' example: images of several sizes, cropped and resized to one size per sample."""
    try:
        import torchvision  # noqa: F401
        from torchvision.transforms import v2
    except Exception as e:  # PyPI's torchvision must match the torch build exactly
        pytest.skip(f"torchvision cannot be imported beside this torch ({type(e).__name__}: {e})"[:300])
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset

    rng = np.random.default_rng(5)
    shapes = [(40, 60), (64, 48), (33, 80), (50, 50)] * 3
    RaggedMmap.from_lists(tmp_path / "photos", [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes])
    np_ninja.from_ndarray(tmp_path / "photo_labels", np.arange(len(shapes)) % 3)
    dataset = MapDataset(tmp_path / "photos", tmp_path / "photo_labels", transform=_augment)
    for images, labels in DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2):
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8 and labels.shape == (4,)


def _augment(item):
    from torchvision.transforms import v2

    image, label = item
    pipeline = v2.Compose([v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip()])
    return pipeline(image.permute(2, 0, 1)), label


def test_pad_collate_through_a_dataloader_reads_from_the_map_and_agrees(tmp_path):
    """A DataLoader whose collate_fn is PadCollate gets items only for what PadCollate does
    not read from the maps itself; the batches are those of the full path, field for field."""
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset, PadCollate

    rng = np.random.default_rng(9)
    tokens = [rng.integers(1, 99, rng.integers(0, 7)).astype(np.int16) for _ in range(11)]
    RaggedMmap.from_lists(tmp_path / "tokens", tokens)
    np_ninja.from_ndarray(tmp_path / "labels", rng.integers(0, 5, (11, 2)))
    StringsMmap.from_strings(tmp_path / "texts", [f"t{i}" for i in range(11)])
    images, _ = image_maps(tmp_path / "img", n=11)
    dataset = MapDataset(tmp_path / "tokens", tmp_path / "labels", tmp_path / "texts", tmp_path / "img" / "images")
    order = [[4, 0, 10], [3, 3, 1], [9]]
    collate = PadCollate(pad_value=-1, max_len=5)
    for got, idx in zip(DataLoader(dataset, batch_sampler=order, collate_fn=collate), order):
        want = collate(dataset.__getitems__(idx))  # every item built, as any collate function gets them
        (padded, lengths), labels, texts, imgs = got
        assert torch.equal(padded, want[0][0]) and torch.equal(lengths, want[0][1])
        assert torch.equal(labels, want[1]) and texts == want[2] and torch.equal(imgs, want[3])
        np.testing.assert_array_equal(imgs.numpy(), images[idx])
        assert texts == [f"t{i}" for i in idx]
    # a collate function of one's own, even one that calls PadCollate, still gets every item
    seen = []
    loader = DataLoader(dataset, batch_sampler=order, collate_fn=lambda b: (seen.append(b), collate(b))[1])
    for _ in loader:
        pass
    assert all(isinstance(item[0], torch.Tensor) and isinstance(item[1], torch.Tensor) for b in seen for item in b)


def test_where_a_private_mapping_is_not_free_samples_are_copied_not_shared(tmp_path, monkeypatch):
    """Under strict overcommit (or when the kernel refuses), maps are mapped shared read-only,
    as 0.9.0 maps them, and copy=False copies instead of sharing: still safe to write."""
    from mmap_ninja import reads
    from mmap_ninja.torch import MapDataset

    images, labels = image_maps(tmp_path)
    monkeypatch.setattr(reads, "_strict", True)
    m = RaggedMmap(tmp_path / "images")
    assert not reads.is_private(m[0]) and not m[0].flags.writeable
    item = MapDataset(m, copy=False)[0]
    assert item.data_ptr() != m[0].__array_interface__["data"][0]
    item.fill_(0)  # a copy: the process lives, the map is unchanged
    np.testing.assert_array_equal(m[0], images[0])
    monkeypatch.setattr(reads, "_strict", False)
    for opened in (RaggedMmap(tmp_path / "images")[1], np_ninja.open_existing(tmp_path / "labels")[1:3]):
        assert reads.is_private(opened) and not opened.flags.writeable  # private, yet read-only views


def test_items_a_collate_never_stacks_are_freed_without_the_garbage_collector(tmp_path):
    import gc
    import weakref

    from mmap_ninja.torch import MapDataset

    image_maps(tmp_path)
    for copy in (True, False):
        items = MapDataset(tmp_path / "images", tmp_path / "labels", copy=copy).__getitems__([0, 1, 2])
        refs = [weakref.ref(t) for item in items for t in item]
        gc.disable()
        try:
            del items
            assert all(r() is None for r in refs), f"copy={copy}: items kept alive by a reference cycle"
        finally:
            gc.enable()


def test_a_user_collate_gets_the_items_dataset_i_gives(tmp_path):
    """A batch is built lazily for PadCollate's sake, yet a collate function of one's own sees
    a list of exactly the items ``dataset[i]`` gives: same types, dtypes, shapes and values."""
    import copy

    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset

    rng = np.random.default_rng(3)
    images, labels = image_maps(tmp_path)
    RaggedMmap.from_lists(tmp_path / "tokens", [rng.integers(0, 9, i % 4).astype(np.int32) for i in range(12)])
    StringsMmap.from_strings(tmp_path / "texts", [f"t{i}" for i in range(12)])
    zipped = MapDataset(*(tmp_path / n for n in ("images", "labels", "tokens", "texts")))
    order = [[5, 0, 11], [2, 2], [7]]
    seen = []
    for batch, idx in zip(DataLoader(zipped, batch_sampler=order, collate_fn=lambda b: (seen.append(b), b)[1]), order):
        assert isinstance(batch, list) and len(batch) == len(idx) and bool(batch)
        for got, i in zip(batch, idx):
            want = zipped[i]
            assert type(got) is tuple and len(got) == len(want)
            for g, w in zip(got, want):
                assert type(g) is type(w)
                if isinstance(w, torch.Tensor):
                    assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w)
                else:
                    assert g == w
        assert type(copy.copy(batch)) is list and copy.copy(batch) == list(batch)  # copies as the plain list it is
    assert seen[0][0][3] == "t5" and [t for *_, t in seen[1]] == ["t2", "t2"]
    # one map alone: the list's memory holds the items, for C code that reads it directly
    alone = DataLoader(MapDataset(tmp_path / "images"), batch_size=4, collate_fn=torch.stack)
    np.testing.assert_array_equal(next(iter(alone)).numpy(), images[:4])
    texts = DataLoader(MapDataset(tmp_path / "texts"), batch_size=3, collate_fn=",".join)
    assert next(iter(texts)) == "t0,t1,t2"
    # items save and pickle as any tensors do (what the default collate recognises is not on them)
    import io
    import pickle

    for copy_ in (True, False):
        items = list(MapDataset(tmp_path / "images", tmp_path / "labels", copy=copy_).__getitems__([4, 1]))
        buffer = io.BytesIO()
        torch.save(items, buffer)
        buffer.seek(0)
        for loaded in (torch.load(buffer), pickle.loads(pickle.dumps(items))):
            assert all(torch.equal(a, b) for got, want in zip(loaded, items) for a, b in zip(got, want))
    # built on first use, also when that use is a change
    lazy = zipped.__getitems__([1, 0])
    lazy.append("x")
    assert len(lazy) == 3 and int(lazy[1][1]) == labels[0] and lazy[2] == "x"


def test_pad_collate_through_a_dataloader_builds_no_items(tmp_path, monkeypatch):
    """Tokens and labels through PadCollate: everything comes straight from the maps, not one
    per-sample tensor is made (every item is made by MapDataset._column: counted)."""
    import torch
    from torch.utils.data import DataLoader

    from mmap_ninja import torch as ninja_torch
    from mmap_ninja.torch import MapDataset, PadCollate

    rng = np.random.default_rng(5)
    tokens = [rng.integers(1, 99, rng.integers(0, 9)).astype(np.int32) for _ in range(20)]
    RaggedMmap.from_lists(tmp_path / "tokens", tokens)
    np_ninja.from_ndarray(tmp_path / "labels", np.arange(20, dtype=np.int64))
    RecordsMmap.from_generator(tmp_path / "recs", iter([{"tokens": t, "label": i} for i, t in enumerate(tokens)]), batch_size=8)
    calls = []
    real = ninja_torch.MapDataset._column
    monkeypatch.setattr(ninja_torch.MapDataset, "_column", lambda self, *a: (calls.append(a), real(self, *a))[1])
    for dataset in (MapDataset(tmp_path / "tokens", tmp_path / "labels"), MapDataset(tmp_path / "recs")):
        seen = []
        for batch in DataLoader(dataset, batch_size=6, shuffle=True, collate_fn=PadCollate(pad_value=-1)):
            (padded, lengths), labels = (batch["tokens"], batch["label"]) if isinstance(batch, dict) else batch
            for row, n, i in zip(padded, lengths.tolist(), labels.tolist()):
                assert row[:n].tolist() == tokens[i].tolist() and (row[n:] == -1).all()
            seen += labels.tolist()
        assert sorted(seen) == list(range(20))
    assert calls == []
    # the same batches built item by item (as any other collate gets them) give the same result
    dataset = MapDataset(tmp_path / "tokens", tmp_path / "labels")
    fast = PadCollate()(dataset.__getitems__([3, 1]))
    slow = PadCollate()(list(dataset.__getitems__([3, 1])))
    assert calls and torch.equal(fast[0][0], slow[0][0]) and torch.equal(fast[1], slow[1])
