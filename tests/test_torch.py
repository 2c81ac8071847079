"""mmap_ninja.torch: datasets over maps, DataLoader workers (fork and spawn), padding, no warnings."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch is not installed (pip install 'mmap_ninja[torch]')"
)


def test_import_mmap_ninja_does_not_import_torch():
    code = (
        "import sys; import mmap_ninja, mmap_ninja.cli, mmap_ninja.convert, mmap_ninja.demo, mmap_ninja.generic; "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert 'PIL' not in sys.modules and 'matplotlib' not in sys.modules; print('clean')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "clean\n", done.stderr


@pytest.fixture
def warn_always():
    """PyTorch gives its non-writable warning once per process; make it fire every time here."""
    import torch

    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(before)


def tokens_and_labels(tmp_path, n=37):
    rng = np.random.default_rng(3)
    token_lists = [rng.integers(1, 1000, rng.integers(0, 12)).astype(np.int32) for _ in range(n)]
    RaggedMmap.from_lists(tmp_path / "tokens", token_lists, dtype=np.int32)
    labels = np.arange(n, dtype=np.int64) * 3
    np_ninja.from_ndarray(tmp_path / "labels", labels)
    return token_lists, labels


def images(tmp_path, n=9):
    rng = np.random.default_rng(4)
    arrays = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in rng.integers(2, 9, (n, 2))]
    RaggedMmap.from_lists(tmp_path / "images", arrays)
    return arrays


@needs_torch
def test_items_are_writable_copies_without_warning(tmp_path, recwarn, warn_always):
    import torch

    from mmap_ninja.torch import MapDataset

    arrays = images(tmp_path)
    dataset = MapDataset(RaggedMmap(tmp_path / "images"))
    assert len(dataset) == len(arrays)
    for i, want in enumerate(arrays):
        got = dataset[i]
        assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
        np.testing.assert_array_equal(got.numpy(), want)
    first = dataset[0]
    first += 1  # the copy is ours to change
    np.testing.assert_array_equal(RaggedMmap(tmp_path / "images")[0], arrays[0])
    assert [w for w in recwarn if "not writable" in str(w.message)] == []


@needs_torch
def test_zero_copy_shares_the_map_without_warning(tmp_path, recwarn, warn_always):
    from mmap_ninja.torch import MapDataset

    arrays = images(tmp_path)
    m = RaggedMmap(tmp_path / "images")
    dataset = MapDataset(m, copy=False)
    for i, want in enumerate(arrays):
        got = dataset[i]
        assert got.data_ptr() == m[i].__array_interface__["data"][0]  # the map's own memory
        np.testing.assert_array_equal(got.numpy(), want)
    assert [w for w in recwarn if "not writable" in str(w.message)] == []


@needs_torch
def test_zipped_maps_and_paths(tmp_path):
    import torch

    from mmap_ninja.torch import MapDataset

    arrays = images(tmp_path, n=5)
    np_ninja.from_ndarray(tmp_path / "labels", np.array([4, 1, 0, 3, 2], np.int64))
    StringsMmap.from_strings(tmp_path / "captions", ["a", "bé", "", "d", "ee"])
    dataset = MapDataset(tmp_path / "images", str(tmp_path / "labels"), StringsMmap(tmp_path / "captions"))
    assert RaggedMmap(tmp_path / "images").mode == "r"
    for i in range(5):
        image, label, caption = dataset[i]
        np.testing.assert_array_equal(image.numpy(), arrays[i])
        assert label.dtype == torch.int64 and label.shape == () and int(label) == [4, 1, 0, 3, 2][i]
        assert caption == ["a", "bé", "", "d", "ee"][i]
    batch = dataset.__getitems__([4, 0])
    assert [int(b[1]) for b in batch] == [2, 4] and [b[2] for b in batch] == ["ee", "a"]
    np.testing.assert_array_equal(batch[0][0].numpy(), arrays[4])
    with pytest.raises(ValueError, match=r"as many samples each; got lengths \[5, 3\]"):
        MapDataset(tmp_path / "images", np.zeros(3))
    with pytest.raises(TypeError, match="at least one map"):
        MapDataset()
    with pytest.raises(TypeError, match="indices must be integers"):
        dataset["0"]


@needs_torch
def test_transform_and_subset(tmp_path):
    import torch
    from torch.utils.data import DataLoader, Subset

    from mmap_ninja.torch import MapDataset, pad_collate

    token_lists, labels = tokens_and_labels(tmp_path)
    dataset = MapDataset(tmp_path / "tokens", tmp_path / "labels", transform=_reverse_tokens)
    tokens, label = dataset[5]
    assert tokens.tolist() == token_lists[5][::-1].tolist() and int(label) == labels[5]
    subset = Subset(MapDataset(tmp_path / "tokens", tmp_path / "labels"), [7, 2, 30])
    (padded, lengths), got_labels = next(iter(DataLoader(subset, batch_size=3, collate_fn=pad_collate)))
    assert got_labels.tolist() == [labels[7], labels[2], labels[30]]
    for row, length, i in zip(padded, lengths.tolist(), [7, 2, 30]):
        assert row[:length].tolist() == token_lists[i].tolist() and set(row[length:].tolist()) <= {0}
    assert isinstance(padded, torch.Tensor) and padded.dtype == torch.int32


def _reverse_tokens(item):
    tokens, label = item
    return tokens.flip(0), label


@needs_torch
def test_pad_collate_from_map_and_from_tensors_agree(tmp_path, recwarn, warn_always):
    import torch

    from mmap_ninja.torch import MapDataset, PadCollate

    token_lists, labels = tokens_and_labels(tmp_path)
    dataset = MapDataset(tmp_path / "tokens", tmp_path / "labels")
    indices = [3, 0, 36, 11, 11]
    collate = PadCollate(pad_value=-1, max_len=6)
    from_map = collate(dataset.__getitems__(indices))  # the RaggedMmap.padded path
    from_tensors = collate([dataset[i] for i in indices])  # the plain-list path
    for (padded, lengths), got_labels in (from_map, from_tensors):
        assert got_labels.tolist() == [labels[i] for i in indices]
        want_lengths = [min(len(token_lists[i]), 6) for i in indices]
        assert lengths.tolist() == want_lengths and lengths.dtype == torch.int64
        assert padded.shape == (5, max(want_lengths)) and padded.dtype == torch.int32
        for row, i, n in zip(padded.tolist(), indices, want_lengths):
            assert row == token_lists[i][:n].tolist() + [-1] * (padded.shape[1] - n)
    assert torch.equal(from_map[0][0], from_tensors[0][0])
    single = PadCollate()(MapDataset(tmp_path / "tokens").__getitems__([1, 2]))
    assert single[1].tolist() == [len(token_lists[1]), len(token_lists[2])]
    arrays = images(tmp_path)
    with pytest.raises(ValueError, match=rf"pads 1-D samples; sample 0 of the batch is \({arrays[0].shape[0]}, "):
        PadCollate()(MapDataset(tmp_path / "images").__getitems__([0, 1]))
    assert [w for w in recwarn if "not writable" in str(w.message)] == []


@needs_torch
def test_pickles_by_reference(tmp_path):
    from mmap_ninja.torch import MapDataset

    RaggedMmap.from_lists(tmp_path / "big", [np.zeros(250_000, np.float64)] * 4)  # 8 MB of samples
    np_ninja.from_ndarray(tmp_path / "labels", np.zeros(4, np.int64))
    dataset = MapDataset(RaggedMmap(tmp_path / "big"), np_ninja.open_existing(tmp_path / "labels"))
    payload = pickle.dumps(dataset)
    assert len(payload) < 2_000
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone[3][0].numpy(), np.zeros(250_000))


def _expected_batches(token_lists, labels, batch_size):
    for first in range(0, len(token_lists), batch_size):
        yield token_lists[first : first + batch_size], labels[first : first + batch_size]


def _check_batches(loader, token_lists, labels, pad_value):
    seen = 0
    for ((padded, lengths), got_labels), (want_tokens, want_labels) in zip(loader, _expected_batches(token_lists, labels, 4)):
        assert got_labels.tolist() == want_labels.tolist()
        assert lengths.tolist() == [len(t) for t in want_tokens]
        for row, want in zip(padded.tolist(), want_tokens):
            assert row == want.tolist() + [pad_value] * (padded.shape[1] - len(want))
        seen += len(want_tokens)
    assert seen == len(token_lists)


@needs_torch
def test_dataloader_two_forked_workers(tmp_path, warn_always):
    from torch.utils.data import DataLoader

    from mmap_ninja.torch import MapDataset, PadCollate

    token_lists, labels = tokens_and_labels(tmp_path)
    dataset = MapDataset(RaggedMmap(tmp_path / "tokens"), np_ninja.open_existing(tmp_path / "labels", mode="r"))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=PadCollate(pad_value=-7), multiprocessing_context="fork")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # forked workers inherit this: a warning there fails the batch
        _check_batches(loader, token_lists, labels, -7)


SPAWN_SCRIPT = """
import sys, warnings
import numpy as np, torch
from torch.utils.data import DataLoader
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.torch import MapDataset, PadCollate

folder = sys.argv[1]
tokens = RaggedMmap(folder + "/tokens")
want_tokens = [t.copy() for t in tokens]
want_labels = np.array(np_ninja.open_existing(folder + "/labels"))

if __name__ == "__main__":
    # zero-copy reads give no warning, and the user's own read-only conversion is still warned
    for i in range(len(tokens)):
        assert MapDataset(tokens, copy=False)[i].tolist() == want_tokens[i].tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.from_numpy(tokens[1])
    assert any("not writable" in str(w.message) for w in caught), "the user's own warning was used up"

    dataset = MapDataset(folder + "/tokens", folder + "/labels")
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=PadCollate(pad_value=-1),
                        multiprocessing_context="spawn")
    seen = 0
    for (padded, lengths), labels in loader:
        for row, n, label in zip(padded.tolist(), lengths.tolist(), labels.tolist()):
            assert row[:n] == want_tokens[seen].tolist() and row[n:] == [-1] * (len(row) - n), seen
            assert label == want_labels[seen], seen
            seen += 1
    assert seen == len(want_tokens), seen
    # unbatched and zero-copy: every item as it comes out of a spawned worker
    dataset = MapDataset(folder + "/tokens", folder + "/labels", copy=False)
    items = list(DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn"))
    assert [t.tolist() for t, _ in items] == [t.tolist() for t in want_tokens]
    assert [int(l) for _, l in items] == want_labels.tolist()
    print("spawn ok")
"""


@needs_torch
def test_dataloader_two_spawned_workers_compare_every_sample(tmp_path):
    """Run in a fresh interpreter with warnings as errors, which spawned workers inherit."""
    tokens_and_labels(tmp_path)
    script = tmp_path / "spawn_check.py"
    script.write_text(textwrap.dedent(SPAWN_SCRIPT))
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "spawn ok"
    assert "not writable" not in done.stderr
