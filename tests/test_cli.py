"""The mmap-ninja command: info, convert, demo, exit codes."""

from __future__ import annotations

import importlib.util
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import numpy as np_ninja
from mmap_ninja.cli import HEALTHY, NEEDS_REPAIR, UNHEALTHY, inspect_map, main
from mmap_ninja.convert import convert_text, list_files
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap

from conftest import restore_ctrl_c, upstream_missing, upstream_python

needs_pillow = pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="Pillow is not installed (pip install 'mmap_ninja[images]')")


def run(capsys, *argv: str):
    """Run the command in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder: Path) -> list:
    """Private build directories left beside the maps."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def set_count(shape_file: Path, count: int) -> None:
    """Roll a commit file back, as if the append that wrote past it had been killed."""
    with open(shape_file, "r+b") as f:
        f.write(struct.pack("<Q", count))


# --- info -------------------------------------------------------------------------------------


def test_info_ragged_images(tmp_path, capsys):
    shapes = [(4, 6, 3), (8, 2, 3), (6, 10, 3)]
    RaggedMmap.from_lists(tmp_path / "m", [np.zeros(s, np.uint8) for s in shapes])
    report = inspect_map(tmp_path / "m")
    assert report["kind"] == "ragged" and report["samples"] == 3 and report["dtype"] == "uint8"
    assert report["health"] == HEALTHY and report["problems"] == []
    assert report["compression"] == "none"
    (group,) = report["shapes"]
    assert group["ndim"] == 3 and group["samples"] == 3
    assert group["axes"] == [
        {"min": 4, "median": 6.0, "max": 8},
        {"min": 2, "median": 6.0, "max": 10},
        {"min": 3, "median": 3.0, "max": 3},
    ]
    on_disk = sum(f.stat().st_size for f in (tmp_path / "m").rglob("*") if f.is_file())
    assert report["bytes_on_disk"] == on_disk
    code, out, err = run(capsys, "info", tmp_path / "m")
    assert code == 0 and err == ""
    assert "kind:          ragged (RaggedMmap)" in out
    assert "samples:       3" in out
    assert "health:        healthy" in out
    assert "                    1          2          6         10" in out


def test_info_mixed_axes_and_scalars(tmp_path):
    RaggedMmap.from_lists(tmp_path / "tok", [np.arange(5), np.arange(2), np.int64(7), np.arange(9)])
    report = inspect_map(tmp_path / "tok")
    assert report["health"] == HEALTHY
    assert report["shapes"] == [
        {"ndim": 0, "samples": 1, "axes": []},
        {"ndim": 1, "samples": 3, "axes": [{"min": 2, "median": 5.0, "max": 9}]},
    ]
    RaggedMmap.from_lists(tmp_path / "mixed", [np.zeros((2, 3)), np.zeros(4), np.zeros((1, 2, 5))])
    report = inspect_map(tmp_path / "mixed")
    assert report["health"] == HEALTHY
    assert [(g["ndim"], g["samples"]) for g in report["shapes"]] == [(1, 1), (2, 1), (3, 1)]
    assert report["shapes"][2]["axes"][2] == {"min": 5, "median": 5.0, "max": 5}


def test_info_strings_and_numpy(tmp_path, capsys):
    StringsMmap.from_strings(tmp_path / "s", ["abc", "", "ça"])
    report = inspect_map(tmp_path / "s")
    assert report["kind"] == "string" and report["samples"] == 3 and report["dtype"] == "str (UTF-8)"
    assert report["shapes"][0]["axes"] == [{"min": 0, "median": 3.0, "max": 3}]
    np_ninja.from_ndarray(tmp_path / "n", np.zeros((5, 2, 7), np.float32))
    report = inspect_map(tmp_path / "n")
    assert report["kind"] == "numpy" and report["samples"] == 5 and report["dtype"] == "float32"
    assert report["shapes"] == [{"ndim": 2, "samples": 5, "axes": [{"min": 2, "median": 2.0, "max": 2}, {"min": 7, "median": 7.0, "max": 7}]}]
    assert report["health"] == HEALTHY
    code, out, _ = run(capsys, "info", tmp_path / "n", "--json")
    assert code == 0 and '"kind": "numpy"' in out


def test_info_zstd_strings(tmp_path):
    pytest.importorskip("zstandard", reason="zstandard is not installed (pip install 'mmap_ninja[zstd]')")
    StringsMmap.from_strings(tmp_path / "z", ["a great film"] * 20, zstd_level=5)
    assert inspect_map(tmp_path / "z")["compression"] == "zstd level 5"


def test_info_needs_repair_after_a_killed_append(tmp_path, capsys):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.zeros((2, 3), np.int16), np.ones((4, 1), np.int16)])
    m.extend([np.full((3, 3), 5, np.int16)])
    m.close()
    set_count(tmp_path / "m" / "starts" / "shape.ninja", 2)  # killed just before the commit
    report = inspect_map(tmp_path / "m")
    assert report["health"] == NEEDS_REPAIR and report["samples"] == 2
    assert any("ends/shape.ninja counts 1 samples past the 2 committed" in p for p in report["problems"])
    code, out, _ = run(capsys, "info", tmp_path / "m")
    assert code == 0 and "health:        needs repair on next append" in out
    # the next append cuts the tail, and the map is healthy again
    RaggedMmap(tmp_path / "m", mode="r+").append(np.zeros((1, 1), np.int16))
    assert inspect_map(tmp_path / "m")["health"] == HEALTHY


def test_info_needs_repair_numpy_and_strings(tmp_path):
    np_ninja.from_ndarray(tmp_path / "n", np.arange(6).reshape(3, 2))
    np_ninja.extend_dir(tmp_path / "n", np.arange(4).reshape(2, 2))
    set_count(tmp_path / "n" / "shape.ninja", 3)
    report = inspect_map(tmp_path / "n")
    assert report["health"] == NEEDS_REPAIR and report["samples"] == 3
    assert report["problems"] == [f"{tmp_path / 'n' / 'data.ninja'} holds 32 bytes past the committed 3 samples (the tail of an interrupted append)"]
    s = StringsMmap.from_strings(tmp_path / "s", ["one", "two"])
    s.extend(["three"])
    s.close()
    set_count(tmp_path / "s" / "starts" / "shape.ninja", 2)
    report = inspect_map(tmp_path / "s")
    assert report["health"] == NEEDS_REPAIR and report["samples"] == 2


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: os.truncate(d / "data.ninja", 10), "data.ninja holds 10 bytes but the map needs 52"),
        (lambda d: set_count(d / "ends" / "shape.ninja", 1), "ends/shape.ninja counts 1 samples, the map needs 3"),
        (lambda d: (d / "type.ninja").write_text("banana"), "names an unknown kind of map: 'banana'"),
        (lambda d: os.remove(d / "flattened_shapes" / "data.ninja"), "flattened_shapes/data.ninja is missing"),
        (lambda d: (d / "dtype.ninja").write_text("float99"), "names an unknown dtype: 'float99'"),
    ],
)
def test_info_corrupt_map_is_unhealthy_exit_1(tmp_path, capsys, damage, message):
    RaggedMmap.from_lists(tmp_path / "m", [np.zeros((2, 2), np.float32), np.ones((2, 3), np.float32), np.ones((1, 3), np.float32)])
    damage(tmp_path / "m")
    report = inspect_map(tmp_path / "m")
    assert report["health"] == UNHEALTHY
    assert message in report["problems"][0]
    code, out, err = run(capsys, "info", tmp_path / "m")
    assert code == 1
    assert "health:        unhealthy" in out
    assert err.count("\n") == 1 and err.startswith("mmap-ninja: error: the map at") and message in err
    assert "Traceback" not in err


def test_info_offsets_that_disagree_with_the_lengths(tmp_path):
    RaggedMmap.from_lists(tmp_path / "m", [np.zeros(3), np.zeros(2)])
    with open(tmp_path / "m" / "flattened_shapes" / "data.ninja", "r+b") as f:
        f.write(struct.pack("<q", 7))
    report = inspect_map(tmp_path / "m")
    assert report["health"] == UNHEALTHY
    assert report["problems"] == [f"{tmp_path / 'm' / 'flattened_shapes'}: sample 0 has 7 elements there but 3 by its offsets"]


def test_info_not_a_map(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    code, _, err = run(capsys, "info", tmp_path / "plain")
    assert code == 1 and "holds no map (type.ninja is missing)" in err
    code, _, err = run(capsys, "info", tmp_path / "missing")
    assert code == 1 and err == f"mmap-ninja: error: there is no map at {tmp_path / 'missing'}\n"


# --- exit codes and the entry points ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["convert"], ["convert", "csv", "a", "b"], ["convert", "text", "a", "b", "--batch-size", "0"], ["info"], ["demo", "--n", "-3"], ["demo", "--n", "0", "--images", "0"]],
)
def test_usage_errors_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage: mmap-ninja" in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "info" in out and "convert" in out and "demo" in out


def test_python_m_and_debug(tmp_path):
    missing = tmp_path / "missing"
    plain = subprocess.run([sys.executable, "-m", "mmap_ninja", "info", str(missing)], capture_output=True, text=True)
    assert plain.returncode == 1 and plain.stderr == f"mmap-ninja: error: there is no map at {missing}\n"
    debug = subprocess.run([sys.executable, "-m", "mmap_ninja", "info", str(missing), "--debug"], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "CommandError" in debug.stderr
    usage = subprocess.run([sys.executable, "-m", "mmap_ninja", "convert", "text"], capture_output=True, text=True)
    assert usage.returncode == 2


# --- convert text -------------------------------------------------------------------------------


def write_texts(folder: Path, files: dict) -> None:
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def test_convert_text_order_and_exact_content(tmp_path, capsys):
    src = tmp_path / "src"
    write_texts(src, {
        "b.txt": "second\r\nline",
        "a/z.txt": "first: a/ sorts before b.txt",
        "B.txt": "upper case sorts first",
        "c/d/e.TXT": "ça va 🎬\n",
        "a/.hidden.txt": "never",
        ".git/x.txt": "never",
        "notes.md": "not text by pattern",
        "empty.txt": "",
    })
    code, out, err = run(capsys, "convert", "text", src, tmp_path / "out", "--batch-size", "2")
    assert code == 0, err
    assert out == f"wrote 5 samples to {tmp_path / 'out'}\n"
    assert "5/5" in err  # the progress bar has a total
    assert list(StringsMmap(tmp_path / "out")) == [
        "upper case sorts first",
        "first: a/ sorts before b.txt",
        "second\r\nline",
        "ça va 🎬\n",
        "",
    ]
    assert leftovers(tmp_path) == []


def test_convert_text_bad_utf8_names_the_file_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    write_texts(src, {"a.txt": "fine", "sub/bad.txt": b"caf\xe9", "z.txt": "fine too"})
    code, out, err = run(capsys, "convert", "text", src, tmp_path / "out", "--quiet")
    assert code == 1 and out == ""
    assert err == f"mmap-ninja: error: {src / 'sub' / 'bad.txt'} is not UTF-8 text (byte 3 is b'\\xe9'); nothing was written to {tmp_path / 'out'}\n"
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    code, out, err = run(capsys, "convert", "text", src, tmp_path / "out", "--quiet", "--skip-bad")
    assert code == 0
    assert out == f"wrote 2 samples to {tmp_path / 'out'}, left out 1 unreadable file\n"
    assert f"skipped: {src / 'sub' / 'bad.txt'} is not UTF-8 text" in err
    assert list(StringsMmap(tmp_path / "out")) == ["fine", "fine too"]


def test_convert_refuses_to_overwrite_without_flag(tmp_path, capsys):
    src = tmp_path / "src"
    write_texts(src, {"a.txt": "new"})
    StringsMmap.from_strings(tmp_path / "out", ["old", "older"])
    code, _, err = run(capsys, "convert", "text", src, tmp_path / "out", "--quiet")
    assert code == 1 and "already exists; pass --overwrite" in err
    assert list(StringsMmap(tmp_path / "out")) == ["old", "older"]
    code, _, _ = run(capsys, "convert", "text", src, tmp_path / "out", "--quiet", "--overwrite")
    assert code == 0 and list(StringsMmap(tmp_path / "out")) == ["new"]


def test_convert_failures_exit_1(tmp_path, capsys):
    code, _, err = run(capsys, "convert", "text", tmp_path / "nowhere", tmp_path / "out")
    assert code == 1 and err == f"mmap-ninja: error: {tmp_path / 'nowhere'} does not exist; nothing was written to {tmp_path / 'out'}\n"
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "convert", "text", tmp_path / "empty", tmp_path / "out")
    assert code == 1 and "found no files matching *.txt" in err
    write_texts(tmp_path / "allbad", {"x.txt": b"\xff"})
    code, _, err = run(capsys, "convert", "text", tmp_path / "allbad", tmp_path / "out", "--skip-bad", "--quiet")
    assert code == 1 and "none of the 1 files could be read" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_list_files_patterns(tmp_path):
    write_texts(tmp_path, {"a.TXT": "", "b.txt": "", "c.csv": "", "d/e.csv": ""})
    assert [p.name for p in list_files(tmp_path, ["*.txt"])] == ["a.TXT", "b.txt"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_files(tmp_path, ["*.csv", "*.TXT"])] == ["a.TXT", "b.txt", "c.csv", "d/e.csv"]


def test_convert_text_python_api(tmp_path):
    write_texts(tmp_path / "src", {"1.txt": "x", "2.txt": "y"})
    result = convert_text(tmp_path / "src", tmp_path / "out")
    assert result.samples == 2 and result.skipped == [] and result.out_dir == tmp_path / "out"


def test_sigint_leaves_nothing_at_out(tmp_path):
    """Ctrl-C in the middle of a conversion: exit 130, no map, no private build directory."""
    src = tmp_path / "src"
    write_texts(src, {f"{i:03d}.txt": f"review {i}" for i in range(20)})
    os.mkfifo(src / "zz.txt")  # sorts last; reading it blocks until we interrupt
    out = tmp_path / "maps" / "out"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmap_ninja", "convert", "text", str(src), str(out), "--batch-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_ctrl_c,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until the build has written samples into its private directory
            partial = [p for p in out.parent.iterdir() if ".partial-" in p.name]
            if partial and (partial[0] / "starts" / "shape.ninja").exists():
                with open(partial[0] / "starts" / "shape.ninja", "rb") as f:
                    if struct.unpack("<Q", f.read(8))[0] >= 20:
                        break
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion did not start"
            time.sleep(0.05)
        assert not out.exists()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.rstrip().endswith(f"mmap-ninja: interrupted; nothing was written to {out}")
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []


# --- convert images and npy -----------------------------------------------------------------------


@needs_pillow
def test_convert_images_exact_pixels_and_bad_files(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    (src / "cats").mkdir(parents=True)
    expected = []
    for i, (h, w) in enumerate([(5, 7), (9, 3), (4, 4)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / "cats" / f"{i}.png")
        expected.append(pixels)
    gray = rng.integers(0, 256, (6, 2), dtype=np.uint8)
    Image.fromarray(gray).save(src / "gray.png")  # converted to RGB by default
    code, out, err = run(capsys, "convert", "images", src, tmp_path / "out", "--quiet")
    assert code == 0, err
    images = RaggedMmap(tmp_path / "out")
    assert len(images) == 4
    for got, want in zip(images, expected + [np.repeat(gray[..., None], 3, axis=2)]):
        np.testing.assert_array_equal(got, want)

    (src / "cats" / "1b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    code, _, err = run(capsys, "convert", "images", src, tmp_path / "out2", "--quiet")
    assert code == 1 and f"{src / 'cats' / '1b.png'} is not a readable image" in err
    assert not (tmp_path / "out2").exists() and leftovers(tmp_path) == []
    code, out, err = run(capsys, "convert", "images", src, tmp_path / "out2", "--quiet", "--skip-bad", "--mode", "L")
    assert code == 0 and "left out 1 unreadable file" in out and "1b.png" in err
    images = RaggedMmap(tmp_path / "out2")
    assert [im.shape for im in images] == [(5, 7), (9, 3), (4, 4), (6, 2)]
    np.testing.assert_array_equal(images[3], gray)


def test_convert_images_without_pillow_says_so(tmp_path, capsys, monkeypatch):
    (tmp_path / "src").mkdir()
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes "from PIL import Image" fail
    code, _, err = run(capsys, "convert", "images", tmp_path / "src", tmp_path / "out")
    assert code == 1 and "converting images needs Pillow: pip install 'mmap_ninja[images]'" in err


def test_convert_npy(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    arrays = [np.arange(6, dtype=np.int32).reshape(2, 3), np.arange(4, dtype=np.int32), np.array(7, np.int32)]
    for i, a in enumerate(arrays):
        np.save(src / f"{i}.npy", a)
    code, _, err = run(capsys, "convert", "npy", src, tmp_path / "out", "--quiet", "--batch-size", "1")
    assert code == 0, err
    got = RaggedMmap(tmp_path / "out")
    assert got.dtype == np.int32 and len(got) == 3
    for g, a in zip(got, arrays):
        np.testing.assert_array_equal(g, a)
        assert np.shape(g) == a.shape

    np.save(src / "3.npy", np.array([0.5, 1.5]))  # fractions cannot go into the int32 map
    code, _, err = run(capsys, "convert", "npy", src, tmp_path / "bad", "--quiet", "--batch-size", "1")
    assert code == 1 and err.startswith(f"mmap-ninja: error: {src / '3.npy'}: sample 3 has dtype float64")
    assert not (tmp_path / "bad").exists()
    (src / "3.npy").write_bytes(b"not numpy")
    code, _, err = run(capsys, "convert", "npy", src, tmp_path / "bad", "--quiet")
    assert code == 1 and f"{src / '3.npy'} is not a readable .npy file" in err
    code, _, _ = run(capsys, "convert", "npy", src, tmp_path / "f", "--quiet", "--skip-bad", "--dtype", "float32")
    assert code == 0 and RaggedMmap(tmp_path / "f").dtype == np.float32


# --- demo ---------------------------------------------------------------------------------------


@needs_pillow
def test_demo_small_prints_the_table_and_cleans_up(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, out, err = run(capsys, "demo", "--n", "120", "--images", "6")
    assert code == 0, err
    assert "generated 120 review-like text files" in out
    assert "text (120 reviews" in out and "images (6 JPEGs" in out
    assert out.count("read all, in order (read + decode)") == 2
    assert "read 120 at random (read + decode)" in out and "read 6 at random (read + decode)" in out
    assert out.count("disk usage (allocated blocks)") == 2
    assert "measured warm" in out
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone


@needs_pillow
def test_demo_keep_is_deterministic_and_maps_match_files(tmp_path, capsys):
    from PIL import Image

    code, out, _ = run(capsys, "demo", "--n", "40", "--images", "3", "--keep", tmp_path / "a")
    assert code == 0 and f"kept in {tmp_path / 'a'}" in out
    texts = list_files(tmp_path / "a" / "texts", ["*.txt"])
    assert len(texts) == 40
    lengths = [p.stat().st_size for p in texts]
    assert 300 < np.mean(lengths) < 3000  # review-sized
    assert list(StringsMmap(tmp_path / "a" / "texts_mmap")) == [p.read_text(encoding="utf-8") for p in texts]
    images = RaggedMmap(tmp_path / "a" / "images_mmap")
    for path, array in zip(list_files(tmp_path / "a" / "images", ["*.jpg"]), images):
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), array)
            assert 64 <= im.size[0] <= 256 and 64 <= im.size[1] <= 256
    run(capsys, "demo", "--n", "40", "--images", "0", "--keep", tmp_path / "b")
    assert [p.read_bytes() for p in texts] == [p.read_bytes() for p in list_files(tmp_path / "b" / "texts", ["*.txt"])]
    code, _, err = run(capsys, "demo", "--n", "5", "--keep", tmp_path / "a")
    assert code == 1 and "is not empty; --keep needs a new or empty folder" in err


def test_demo_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'mmap_ninja[plot]')")
    code, out, err = run(capsys, "demo", "--n", "30", "--images", "0", "--plot", tmp_path / "chart.png")
    assert code == 0, err
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"saved the chart to {tmp_path / 'chart.png'}" in out


def test_demo_without_pillow_runs_the_text_part(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    code, out, _ = run(capsys, "demo", "--n", "20", "--keep", tmp_path / "d")
    assert code == 0
    assert "(no images: Pillow is not installed; pip install 'mmap_ninja[demo]' for them)" in out
    assert "text (20 reviews" in out and "images (" not in out


def _upstream_python():
    found = upstream_python()
    if found is None:
        pytest.skip(upstream_missing())
    return found


def test_info_on_maps_written_by_0_9_0(tmp_path):
    script = (
        "import numpy as np, sys\n"
        "from mmap_ninja.ragged import RaggedMmap\n"
        "from mmap_ninja.string import StringsMmap\n"
        "from mmap_ninja import numpy as np_ninja\n"
        "d = sys.argv[1]\n"
        "RaggedMmap.from_lists(d + '/r', [np.zeros((2, 5, 3), np.uint8), np.zeros((4, 1, 3), np.uint8)])\n"
        "RaggedMmap.from_lists(d + '/t', [np.arange(3), np.arange(5), np.arange(1)])\n"
        "StringsMmap.from_strings(d + '/s', ['ab', 'cde'])\n"
        "np_ninja.from_ndarray(d + '/n', np.zeros((4, 2)))\n"
    )
    # -I: the caller's PYTHONPATH (src/ in the README's command) must not put ours in 0.9.0's place
    done = subprocess.run([_upstream_python(), "-I", "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    reports = {name: inspect_map(tmp_path / name) for name in "rtsn"}
    assert {name: r["health"] for name, r in reports.items()} == dict.fromkeys("rtsn", HEALTHY)
    assert reports["r"]["shapes"][0]["axes"] == [{"min": 2, "median": 3.0, "max": 4}, {"min": 1, "median": 3.0, "max": 5}, {"min": 3, "median": 3.0, "max": 3}]
    assert reports["t"]["shapes"] == [{"ndim": 1, "samples": 3, "axes": [{"min": 1, "median": 3.0, "max": 5}]}]
    assert reports["s"]["samples"] == 2 and reports["n"]["samples"] == 4
