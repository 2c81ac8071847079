"""ImagesMmap: images stored as their encoded bytes, decoded on read.

- files are stored byte for byte (JPEG and PNG), and a file that does not decode is an error
  naming it, or skipped with skip_bad=True, serially and by parallel parts;
- arrays are encoded at the map's quality; m[i], m[idx], iteration, append/extend of arrays
  and of bytes, pickling by reference, refresh, a killed append;
- the decoders agree with Pillow (simplejpeg within libjpeg-turbo's IDCT rounding);
- our RaggedMmap/StringsMmap and mmap_ninja 0.9.0 fail on an images map, never read it.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image", reason="images maps need Pillow (pip install 'mmap_ninja[images]')")

from mmap_ninja import RaggedMmap, StringsMmap, generic  # noqa: E402
from mmap_ninja.errors import MapFormatError  # noqa: E402
from conftest import extend_and_die  # noqa: E402
from mmap_ninja.images import DECODERS, ImagesMmap, pick_decoder  # noqa: E402

RNG = np.random.default_rng(3)
INSTALLED_DECODERS = [d for d in DECODERS if d == "pillow" or pick_decoder() == d]


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth structure plus noise, as JPEG meets in photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 13 + c) * 60 + np.cos(y / 19 - c) * 60 + 128 for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def pillow_decode(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert(mode))


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / "src" / f"img{i}.{'png' if i % 3 == 2 else 'jpg'}"
        path.parent.mkdir(exist_ok=True)
        picture = Image.fromarray(photo(30 + i, 40 + 3 * i, i))
        if i == 4:
            picture = picture.convert("L")  # a grayscale JPEG among colour ones
        picture.save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_from_files_stores_bytes_unchanged(tmp_path, files, n_jobs):
    m = ImagesMmap.from_files(tmp_path / "m", files, batch_size=2, n_jobs=n_jobs)
    assert len(m) == len(files)
    for i, path in enumerate(files):
        assert m.encoded(i) == path.read_bytes()
        got = m[i]
        assert got.dtype == np.uint8 and got.shape == pillow_decode(path.read_bytes()).shape
    assert np.array_equal(m[2], pillow_decode(files[2].read_bytes()))  # PNG: lossless, exact


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_undecodable_file_is_named_or_skipped(tmp_path, files, n_jobs):
    bad = tmp_path / "src" / "broken.jpg"
    bad.write_bytes(files[0].read_bytes()[:200])
    paths = files[:3] + [bad] + files[3:]
    with pytest.raises(ValueError, match="broken.jpg"):
        ImagesMmap.from_files(tmp_path / "m", paths, batch_size=2, n_jobs=n_jobs)
    assert not (tmp_path / "m").exists()
    with pytest.warns(UserWarning, match="broken.jpg"):  # in this process, also when workers read the files
        m = ImagesMmap.from_files(tmp_path / "m", paths, batch_size=2, n_jobs=n_jobs, skip_bad=True)
    assert [m.encoded(i) for i in range(len(m))] == [p.read_bytes() for p in files]


def test_arrays_are_encoded_at_the_quality(tmp_path):
    arrays = [photo(48, 64, i) for i in range(10)]
    low = ImagesMmap.from_generator(tmp_path / "low", iter(arrays), 4, quality=30)
    high = ImagesMmap.from_generator(tmp_path / "high", iter(arrays), 4)
    assert high.codec.quality == 90 and high.codec.mode == "RGB"
    assert sum(len(low.encoded(i)) for i in range(10)) < sum(len(high.encoded(i)) for i in range(10))
    for i, a in enumerate(arrays):
        assert high[i].shape == a.shape and np.abs(high[i].astype(int) - a).mean() < 8
    ImagesMmap.from_indexable(tmp_path / "par", arrays, 3, n_jobs=2)
    assert (tmp_path / "par" / "data.ninja").read_bytes() == (tmp_path / "high" / "data.ninja").read_bytes()


def test_gray_maps_give_h_by_w(tmp_path, files):
    gray = ImagesMmap.from_generator(tmp_path / "g", [photo(20, 30)[..., 1]], 1)
    assert gray.codec.mode == "L" and gray[0].shape == (20, 30)
    m = ImagesMmap.from_files(tmp_path / "l", files, mode="L")
    for i, path in enumerate(files):
        assert np.array_equal(m[i], pillow_decode(path.read_bytes(), "L")), i


@pytest.mark.parametrize("decoder", INSTALLED_DECODERS)
def test_decoders_agree_with_pillow(tmp_path, files, decoder):
    """Same pixels as Pillow's (both use libjpeg-turbo's accurate IDCT and fancy upsampling);
    builds of libjpeg-turbo may round an IDCT differently by 1, never more."""
    arrays = [photo(61, 83, i) for i in range(5)]
    ImagesMmap.from_generator(tmp_path / "m", arrays, 8)
    m = ImagesMmap(tmp_path / "m", decoder=decoder)
    assert m.decoder == decoder
    worst = max(int(np.abs(m[i].astype(int) - pillow_decode(m.encoded(i))).max()) for i in range(len(m)))
    assert worst <= 1, worst


def test_batches_iteration_and_appends(tmp_path, files):
    m = ImagesMmap.from_files(tmp_path / "m", files[:3])
    m.append(photo(10, 12, 9))
    m.extend([files[3].read_bytes(), photo(11, 13, 8)])
    assert len(m) == 6 and m.encoded(4) == files[3].read_bytes()
    with pytest.raises(ValueError, match="sample 6 does not decode"):
        m.extend([b"\xff\xd8 not a jpeg"])
    with pytest.raises(ValueError, match="shape"):
        m.append(np.zeros((4, 4), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        m.append(np.zeros((4, 4, 3), np.float32))
    assert len(ImagesMmap(tmp_path / "m")) == 6  # failed calls wrote nothing
    one_by_one = [m[i] for i in range(len(m))]
    for threads in (1, 2):
        batch = ImagesMmap(tmp_path / "m", threads=threads)[[5, 0, 3, 3]]
        assert all(np.array_equal(a, one_by_one[j]) for a, j in zip(batch, [5, 0, 3, 3]))
    assert all(np.array_equal(a, b) for a, b in zip(m, one_by_one))
    assert all(np.array_equal(a, b) for a, b in zip(m[1:4], one_by_one[1:4]))
    with pytest.raises(TypeError, match="overwritten"):
        m[0] = one_by_one[0]


def test_pickled_by_reference_and_refresh(tmp_path, files):
    m = ImagesMmap.from_files(tmp_path / "m", files[:2], n_jobs=None)
    blob = pickle.dumps(m)
    assert len(blob) < 1000
    other = pickle.loads(blob)
    m.append(files[2].read_bytes(), durable=True)
    assert len(other) == 2 and other.refresh() == 3
    assert np.array_equal(other[2], m[2])
    assert isinstance(generic.open_existing(tmp_path / "m"), ImagesMmap)


def test_new_map_from_appends(tmp_path, files):
    m = ImagesMmap(tmp_path / "new")
    assert len(m) == 0
    m.extend([files[0].read_bytes()])
    assert len(ImagesMmap(tmp_path / "new")) == 1


def test_other_classes_refuse_an_images_map(tmp_path, files):
    ImagesMmap.from_files(tmp_path / "m", files)
    for cls in (RaggedMmap, StringsMmap):
        with pytest.raises(MapFormatError, match="images"):
            cls(tmp_path / "m")


def _append_and_die(path: Path, batch: list, kill_after: int) -> int:
    return extend_and_die(lambda: ImagesMmap(path, threads=1), batch, kill_after)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked writer")
def test_killed_append_is_invisible(tmp_path, files):
    ImagesMmap.from_files(tmp_path / "template", files[:3])
    batch = [p.read_bytes() for p in files[3:]]
    expected = [p.read_bytes() for p in files]
    for k in range(1, 100):
        run = tmp_path / f"run{k}"
        shutil.copytree(tmp_path / "template", run)
        status = _append_and_die(run, batch, k)
        m = ImagesMmap(run, threads=1)
        assert len(m) in (3, len(files))
        assert [m.encoded(i) for i in range(len(m))] == expected[: len(m)]
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0 and len(m) == len(files)
            break
        m.append(batch[0])  # repairs the torn tail, then appends
        assert ImagesMmap(run).encoded(len(m) - 1) == batch[0]
    assert k >= 3


def test_upstream_refuses_an_images_map(tmp_path, files):
    from test_codecs import upstream_tries

    ImagesMmap.from_files(tmp_path / "m", files)
    tried = upstream_tries(tmp_path / "m")
    assert "error" in tried["generic"] and "images" in tried["generic"]["error"], tried
    assert "error" in tried["strings"], tried  # JPEG and PNG bytes are never UTF-8
    assert "error" in tried["ragged"], tried  # no samples: 0.9.0 sees no ragged map there


# --- a records field of images, and the converters -------------------------------------------


def test_records_image_field(tmp_path, files):
    from mmap_ninja.records import RecordsMmap

    records = [{"image": p.read_bytes(), "label": i} for i, p in enumerate(files)] + [{"image": photo(20, 24), "label": 99}]
    r = RecordsMmap.from_generator(tmp_path / "r", iter(records), 3, schema={"image": "image"})
    assert r.fields["image"] == "images"
    assert r["image"].encoded(0) == files[0].read_bytes()
    assert np.array_equal(r[2]["image"], pillow_decode(files[2].read_bytes()))  # PNG: exact
    assert r[len(files)]["image"].shape == (20, 24, 3)
    with pytest.raises(ValueError, match=r"record 8, field 'image'.*does not decode"):
        r.append({"image": b"junk", "label": 5})
    with pytest.raises(ValueError, match=r"record 8, field 'image'"):
        r.append({"image": photo(5, 5)[..., 0], "label": 5})
    assert len(RecordsMmap(tmp_path / "r")) == len(records)
    with pytest.raises(ValueError, match="no dtype"):
        RecordsMmap.from_generator(tmp_path / "bad", iter(records), 3, schema={"image": ("image", "uint8")})


def test_dataloader_decodes_image_fields_in_workers(tmp_path, files):
    torch = pytest.importorskip("torch", reason="needs torch")
    from torch.utils.data import DataLoader

    from mmap_ninja.records import RecordsMmap
    from mmap_ninja.torch import MapDataset

    RecordsMmap.from_indexable(tmp_path / "r", [{"image": p.read_bytes(), "label": i} for i, p in enumerate(files)], 4,
                               schema={"image": "image"})
    seen = []
    for batch in DataLoader(MapDataset(RecordsMmap(tmp_path / "r")), batch_size=3, num_workers=2, collate_fn=list):
        seen += [(int(item["label"]), item["image"]) for item in batch]
    assert sorted(label for label, _ in seen) == list(range(len(files)))
    for label, image in seen:
        assert isinstance(image, torch.Tensor) and tuple(image.shape) == pillow_decode(files[label].read_bytes()).shape


def _imagefolder(tmp_path, files):
    root = tmp_path / "folder"
    for i, path in enumerate(files):
        (root / ("cat" if i % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / ("cat" if i % 2 else "dog") / path.name)
    return root


def test_convert_imagefolder_encoded(tmp_path, files):
    from mmap_ninja import convert
    from mmap_ninja.records import RecordsMmap

    root = _imagefolder(tmp_path, files)
    convert.convert_imagefolder(root, tmp_path / "enc", store="encoded", batch_size=2, n_jobs=2)
    r = RecordsMmap(tmp_path / "enc")
    assert r.fields["image"] == "images"
    stored = sum(len(r["image"].encoded(i)) for i in range(len(r)))
    assert stored == sum(p.stat().st_size for p in files)
    for i in range(len(r)):
        assert r["image"].encoded(i) == (root / r[i]["path"]).read_bytes()
    convert.convert_imagefolder(root, tmp_path / "q", store="encoded", quality=40, max_side=20)
    small = RecordsMmap(tmp_path / "q")
    assert all(max(small[i]["image"].shape[:2]) == 20 for i in range(len(small)))
    with pytest.raises(ValueError, match="quality"):
        convert.convert_imagefolder(root, tmp_path / "x", quality=40)


def test_max_side_keeps_aspect_and_never_enlarges(tmp_path, files):
    from mmap_ninja import convert

    src = tmp_path / "src"
    big = src / "big.png"
    Image.fromarray(photo(90, 160)).save(big)
    convert.convert_images(src, tmp_path / "raw", max_side=64)
    m = RaggedMmap(tmp_path / "raw")
    sizes = {tuple(m[i].shape) for i in range(len(m))}
    assert (36, 64, 3) in sizes  # 90 x 160 -> 36 x 64
    assert (30, 40, 3) in sizes  # 30 x 40: smaller than 64, left as it is
    expected = np.asarray(Image.open(big).convert("RGB").resize((64, 36), Image.LANCZOS))
    assert any(np.array_equal(m[i], expected) for i in range(len(m)))


def test_cli_convert_images_encoded(tmp_path, files):
    from mmap_ninja.cli import main

    bad = tmp_path / "src" / "zz_bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["convert", "images", str(tmp_path / "src"), str(tmp_path / "m"), "--store", "encoded", "--skip-bad", "--quiet"]) == 0
    m = ImagesMmap(tmp_path / "m")
    assert len(m) == len(files) and {m.encoded(i) for i in range(len(m))} == {p.read_bytes() for p in files}
