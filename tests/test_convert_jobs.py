"""`mmap-ninja convert ... --jobs K`: worker processes read the files, and the map is the serial one."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from mmap_ninja.cli import main
from mmap_ninja import Skip
from mmap_ninja.convert import ConversionError, FileSamples, _read_npy
from mmap_ninja.ragged import RaggedMmap

from conftest import restore_ctrl_c

needs_pillow = pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="Pillow is not installed (pip install 'mmap_ninja[images]')")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(folder: Path) -> Dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def nothing_left(folder: Path, out: Path) -> bool:
    """No map at ``out`` and no private build or part directory beside it."""
    return not out.exists() and [p.name for p in folder.iterdir() if p.name.startswith(f".{out.name}.")] == []


def same_as_serial(capsys, tmp_path: Path, *argv) -> Dict[str, str]:
    """Convert with --jobs 1 and --jobs 2; both succeed and write the same bytes."""
    one, two = tmp_path / "jobs1", tmp_path / "jobs2"
    code1, out1, err1 = run(capsys, *argv, one, "--quiet")
    code2, out2, err2 = run(capsys, *argv, two, "--quiet", "--jobs", "2")
    assert (code1, code2) == (0, 0), (err1, err2)
    assert out2 == out1.replace(str(one), str(two)) and err2 == err1
    files = digest(one)
    assert files and digest(two) == files
    return files


def save_npy(folder: Path, arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        np.save(folder / f"{i:03d}.npy", a)


def test_npy_jobs_2_writes_the_serial_bytes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    # varying numbers of axes too, so the shape layout must agree across parts
    arrays = [rng.integers(-50, 50, size=tuple(rng.integers(1, 5, size=i % 3)), dtype=np.int16) for i in range(41)]
    save_npy(tmp_path / "src", arrays)
    same_as_serial(capsys, tmp_path, "convert", "npy", tmp_path / "src", "--batch-size", "4")
    got = RaggedMmap(tmp_path / "jobs2")
    assert got.dtype == np.int16 and len(got) == len(arrays)
    for g, a in zip(got, arrays):
        assert np.shape(g) == a.shape and np.array_equal(g, a)


@needs_pillow
def test_images_jobs_2_writes_the_serial_bytes(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(23):
        pixels = rng.integers(0, 256, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / ("sub" if i % 2 else "") / f"{i:02d}.png")
    same_as_serial(capsys, tmp_path, "convert", "images", src, "--batch-size", "3")


def test_text_jobs_2_writes_the_serial_bytes(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(37):
        (src / f"{i:02d}.txt").write_text(f"review {i} " + "ça va 🎬 " * (i % 5), encoding="utf-8")
    same_as_serial(capsys, tmp_path, "convert", "text", src, "--batch-size", "5")


def test_bad_file_with_jobs_2_names_it_and_leaves_nothing(tmp_path, capsys):
    save_npy(tmp_path / "src", [np.arange(3, dtype=np.int32)] * 12)
    (tmp_path / "src" / "007.npy").write_bytes(b"not numpy")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "convert", "npy", tmp_path / "src", out, "--quiet", "--jobs", "2", "--batch-size", "2")
    assert code == 1 and stdout == ""
    assert err.startswith(f"mmap-ninja: error: {tmp_path / 'src' / '007.npy'} is not a readable .npy file")
    assert err.rstrip().endswith(f"nothing was written to {out}")
    assert nothing_left(tmp_path, out)


def test_value_the_map_cannot_hold_with_jobs_2_names_the_file(tmp_path, capsys):
    arrays = [np.arange(4, dtype=np.int32)] * 9 + [np.array([0.5, 1.5])]  # fractions cannot go into int32
    save_npy(tmp_path / "src", arrays)
    out = tmp_path / "out"
    code, _, err = run(capsys, "convert", "npy", tmp_path / "src", out, "--quiet", "--jobs", "2", "--batch-size", "3")
    assert code == 1 and err.startswith(f"mmap-ninja: error: {tmp_path / 'src' / '009.npy'}: ")
    assert "float64" in err and nothing_left(tmp_path, out)


def test_skip_bad_with_jobs_2_reports_the_files_and_writes_the_serial_bytes(tmp_path, capsys):
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 1000, size=int(rng.integers(1, 6)), dtype=np.int16) for _ in range(30)]
    save_npy(tmp_path / "src", arrays)
    bad = [0, 1, 2, 13, 14, 29]  # a run at the start (no readable file before it), one mid-way, the last file
    for i in bad:
        (tmp_path / "src" / f"{i:03d}.npy").write_bytes(b"broken")
    same_as_serial(capsys, tmp_path, "convert", "npy", tmp_path / "src", "--batch-size", "2", "--skip-bad")
    code, stdout, err = run(capsys, "convert", "npy", tmp_path / "src", tmp_path / "again", "--quiet", "--skip-bad", "--jobs", "2",
                            "--batch-size", "2")
    assert code == 0 and stdout == f"wrote 24 samples to {tmp_path / 'again'}, left out 6 unreadable files\n"
    reported = [line for line in err.splitlines() if line.startswith("skipped: ")]
    assert reported == [f"skipped: {tmp_path / 'src' / f'{i:03d}.npy'} is not a readable .npy file" + line.split(".npy file", 1)[1]
                        for i, line in zip(bad, reported)]
    got = RaggedMmap(tmp_path / "again")
    kept = [a for i, a in enumerate(arrays) if i not in bad]
    # the stand-ins for the bad files never reached the map: int16 from the first good batch
    assert got.dtype == np.int16 and len(got) == len(kept) and all(np.array_equal(g, a) for g, a in zip(got, kept))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_skip_bad_with_jobs_2_and_no_readable_file(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for i in range(5):
        (tmp_path / "src" / f"{i}.npy").write_bytes(b"broken")
    out = tmp_path / "out"
    code, _, err = run(capsys, "convert", "npy", tmp_path / "src", out, "--quiet", "--skip-bad", "--jobs", "2", "--batch-size", "1")
    assert code == 1 and "none of the 5 files could be read" in err
    assert nothing_left(tmp_path, out)


def test_file_samples_pickle_and_skip_bad_files_by_index(tmp_path):
    """With skip_bad, a bad file is the Skip sentinel (any dataset may return it), naming the file."""
    save_npy(tmp_path / "src", [np.full(2, i, np.int8) for i in range(5)])
    (tmp_path / "src" / "001.npy").write_bytes(b"x")
    (tmp_path / "src" / "002.npy").write_bytes(b"x")
    files = sorted((tmp_path / "src").iterdir())
    dataset = pickle.loads(pickle.dumps(FileSamples(files, _read_npy, skip_bad=True)))
    got = [dataset[i] for i in range(len(dataset))]
    assert [g.tolist() for i, g in enumerate(got) if i not in (1, 2)] == [[0, 0], [3, 3], [4, 4]]
    assert isinstance(got[1], Skip) and isinstance(got[2], Skip) and str(files[2]) in got[2].reason
    with pytest.raises(ConversionError, match="001.npy is not a readable"):
        FileSamples(files, _read_npy)[1]
    with pytest.raises(IndexError):
        dataset[5]


def test_sigint_with_jobs_2_and_skip_bad_leaves_nothing(tmp_path):
    """Ctrl-C while workers read: exit 130, no map, no private folder (notes, parts) beside OUT."""
    src = tmp_path / "src"
    save_npy(src, [np.arange(3, dtype=np.int32)] * 20)
    (src / "zz.npy").write_bytes(b"broken")  # something to note
    os.mkfifo(src / "010b.npy")  # reading it blocks a worker until we interrupt
    out = tmp_path / "maps" / "out"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmap_ninja", "convert", "npy", str(src), str(out), "--jobs", "2", "--skip-bad", "--batch-size", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_ctrl_c,
    )
    try:
        deadline = time.monotonic() + 60
        while not [p for p in out.parent.iterdir() if p.name.startswith(".out.partial-")]:
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion did not start"
            time.sleep(0.05)
        time.sleep(1.0)  # the workers are started and one waits on the FIFO
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.rstrip().endswith(f"mmap-ninja: interrupted; nothing was written to {out}")
    assert list(out.parent.iterdir()) == []
