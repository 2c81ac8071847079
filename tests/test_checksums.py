"""Payload checksums (checksum=True) and verify: every kind of map of the catalogue.

A map built or extended with checksums holds checksums/ (a uint32 array directory) that
0.9.0 ignores; verify() and `mmap-ninja verify` read every sample, name the file and the
first bad sample of each, exit 1 on damage and never change the map.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap, verify
from mmap_ninja import numpy as np_ninja
from mmap_ninja.checksums import DIR

from conftest import CATALOGUE, kind_params, upstream_missing, upstream_python

KINDS = kind_params("checksums")
N = 12


def files_of(root: Path) -> Dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rows(map_dir: Path) -> int:
    return struct.unpack("<Q", (map_dir / DIR / "shape.ninja").read_bytes()[:8])[0]


def maps_of(kind: str, path: Path):
    return [path / m if m else path for m in CATALOGUE[kind].maps]


@pytest.mark.parametrize("kind", KINDS)
def test_built_and_appended_samples_all_verify(tmp_path, kind):
    k, path = CATALOGUE[kind], tmp_path / "m"
    k.build(path, k.samples(N), checksum=True)
    report = verify(path)
    assert report.ok and report.has_checksums and report.not_covered == 0, str(report)
    assert report.checked == N * len(k.maps)
    k.extend(path, k.samples(5, N))  # no checksum=True: a map that has them keeps them
    report = verify(path)
    assert report.ok and report.checked == (N + 5) * len(k.maps) and report.not_covered == 0, str(report)
    assert all(rows(m) == N + 5 for m in maps_of(kind, path))
    assert all(k.equal(got, want) for got, want in zip(k.read_all(path), k.samples(N + 5)))


@pytest.mark.parametrize("kind", KINDS)
def test_a_changed_byte_is_reported_with_its_file_and_sample_and_nothing_is_written(tmp_path, kind):
    k, path = CATALOGUE[kind], tmp_path / "m"
    k.build(path, k.samples(N), checksum=True)
    data = maps_of(kind, path)[-1] / "data.ninja"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01  # the last byte belongs to the last sample
    data.write_bytes(bytes(raw))
    before = files_of(path)
    report = verify(path)
    assert not report.ok
    assert len(report.problems) == 1 and str(data) in report.problems[0] and f"sample {N - 1} " in report.problems[0], report.problems
    assert files_of(path) == before
    done = subprocess.run([sys.executable, "-m", "mmap_ninja", "verify", "--quiet", str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "DAMAGED" in done.stdout and str(data) in done.stdout, done.stdout + done.stderr
    assert files_of(path) == before


@pytest.mark.parametrize("kind", KINDS)
def test_checksum_true_on_append_adds_them_to_a_map_without(tmp_path, kind):
    k, path = CATALOGUE[kind], tmp_path / "m"
    k.build(path, k.samples(N))
    report = verify(path)
    assert report.ok and not report.has_checksums and any("no checksums" in n for n in report.notes), str(report)
    if kind == "numpy":
        np_ninja.extend_dir(path, np.stack(k.samples(3, N)), checksum=True)
    else:
        handle = k.open(path, True)
        handle.extend(k.samples(3, N), checksum=True)
    report = verify(path)
    assert report.ok and report.checked == (N + 3) * len(k.maps), str(report)


def test_without_checksums_invariants_are_still_checked(tmp_path):
    RaggedMmap.from_lists(tmp_path / "m", [np.arange(3), np.arange(4)])
    (tmp_path / "m" / "ends" / "data.ninja").write_bytes(struct.pack("<2q", 3, 99))
    report = verify(tmp_path / "m")
    assert not report.ok and "99" in report.problems[0], str(report)  # sample 1 ends at 99, past the data
    done = subprocess.run([sys.executable, "-m", "mmap_ninja", "verify", "--quiet", str(tmp_path / "m")], capture_output=True, text=True)
    assert done.returncode == 1


def test_a_megatron_corpus_has_its_invariants_verified_and_damage_named(tmp_path):
    from mmap_ninja import megatron

    prefix = tmp_path / "corpus"
    megatron.write(prefix, [np.arange(i + 1, dtype=np.uint16) for i in range(5)]).close()
    cli = [sys.executable, "-m", "mmap_ninja", "verify", "--quiet"]
    report = verify(prefix)
    assert report.ok and report.kind == "megatron" and report.samples == 5 and not report.has_checksums, str(report)
    assert any("no checksums" in n and "invariants checked only" in n for n in report.notes), str(report)
    assert verify(tmp_path / "corpus.idx").ok  # either file names the corpus, as for open
    assert subprocess.run(cli + [str(prefix)], capture_output=True, text=True).returncode == 0
    before = files_of(tmp_path)

    idx = bytearray((tmp_path / "corpus.idx").read_bytes())
    struct.pack_into("<q", idx, 34 + 4 * 5 + 8 * 2, 7)  # sequence 2 starts at byte 7, not at 6 after 1 + 2 tokens
    (tmp_path / "corpus.idx").write_bytes(bytes(idx))
    report = verify(prefix)
    assert not report.ok and "corpus.idx" in report.problems[0] and "sequence 2" in report.problems[0], str(report)
    done = subprocess.run(cli + [str(prefix)], capture_output=True, text=True)
    assert done.returncode == 1 and "corpus.idx" in done.stdout and "damaged" in done.stdout, done.stdout + done.stderr

    (tmp_path / "corpus.idx").write_bytes(before["corpus.idx"])
    (tmp_path / "corpus.bin").write_bytes(before["corpus.bin"][:-2])  # the last token cut off
    done = subprocess.run(cli + [str(prefix)], capture_output=True, text=True)
    assert done.returncode == 1 and "corpus.bin" in done.stdout, done.stdout + done.stderr


def test_cli_verify_of_a_sound_map_exits_0_and_shows_a_progress_bar(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", ["a", "bb", "ccc"], checksum=True)
    done = subprocess.run([sys.executable, "-m", "mmap_ninja", "verify", str(tmp_path / "s")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 samples checked" in done.stdout and "verdict: ok" in done.stdout
    assert "verifying" in done.stderr  # the bar (tqdm writes to stderr)


def test_a_killed_append_leaves_checksums_the_next_append_cuts_or_completes(tmp_path):
    path = tmp_path / "m"
    m = RaggedMmap.from_lists(path, [np.arange(i + 1) for i in range(4)], checksum=True)
    table = path / DIR
    # ahead of the commit (killed between the checksums and the map's commit): ignored, then cut
    with open(table / "data.ninja", "ab") as f:
        f.write(b"\xaa" * 8)
    (table / "shape.ninja").write_bytes(struct.pack("<Q", 6))
    assert verify(path).ok and verify(path).checked == 4
    RaggedMmap(path).append(np.arange(7))
    assert rows(path) == 5 and (table / "data.ninja").stat().st_size == 20 and verify(path).ok
    # behind (samples appended by a writer that records none): reported, then completed
    (table / "shape.ninja").write_bytes(struct.pack("<Q", 3))
    (table / "data.ninja").write_bytes((table / "data.ninja").read_bytes()[:12])
    report = verify(path)
    assert report.ok and report.not_covered == 2 and any("samples 3..4 have no checksum" in n for n in report.notes), str(report)
    RaggedMmap(path).append(np.arange(2))
    report = verify(path)
    assert report.ok and report.checked == 6 and report.not_covered == 0, str(report)
    del m


def test_overwriting_samples_in_place_updates_their_checksums(tmp_path):
    r = RaggedMmap.from_lists(tmp_path / "r", [np.arange(3), np.arange(4)], mode="r+", checksum=True)
    r[1] = np.arange(4) * 5
    s = StringsMmap.from_strings(tmp_path / "s", ["abc", "de"], checksum=True)
    s[0] = "xyz"
    assert verify(tmp_path / "r").ok and verify(tmp_path / "s").ok


def test_parallel_builds_with_checksums_equal_the_serial_build(tmp_path):
    samples = [np.arange(i % 9, dtype=np.int32) for i in range(300)]
    RaggedMmap.from_indexable(tmp_path / "serial", samples, batch_size=16, checksum=True)
    RaggedMmap.from_indexable(tmp_path / "parallel", samples, batch_size=16, n_jobs=2, checksum=True)
    assert files_of(tmp_path / "serial") == files_of(tmp_path / "parallel")
    assert verify(tmp_path / "parallel").checked == 300


UPSTREAM_READS_AND_EXTENDS = r"""
import sys, numpy as np
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap
from mmap_ninja import numpy as np_ninja
import mmap_ninja
assert mmap_ninja.__version__ == "0.9.0", mmap_ninja.__file__
d = sys.argv[1]
r = RaggedMmap(d + "/r"); assert [a.tolist() for a in r] == [[0], [0, 1], [0, 1, 2]]; r.extend([np.arange(5)])
s = StringsMmap(d + "/s"); assert s[:] == ["a", "bc"]; s.extend(["new"])
n = np_ninja.open_existing(d + "/n"); assert n.shape == (2, 3); np_ninja.extend_dir(d + "/n", np.ones((1, 3)))
print("ok")
"""


def test_0_9_0_opens_reads_and_extends_a_map_with_checksums(tmp_path):
    python = upstream_python()
    if python is None:
        pytest.skip(upstream_missing())
    RaggedMmap.from_lists(tmp_path / "r", [np.arange(i + 1) for i in range(3)], checksum=True)
    StringsMmap.from_strings(tmp_path / "s", ["a", "bc"], checksum=True)
    np_ninja.from_ndarray(tmp_path / "n", np.zeros((2, 3)), checksum=True)
    done = subprocess.run([python, "-I", "-c", UPSTREAM_READS_AND_EXTENDS, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    for name, count in (("r", 4), ("s", 3), ("n", 3)):
        report = verify(tmp_path / name)
        assert report.ok and report.not_covered == 1 and report.samples == count, str(report)  # 0.9.0's sample
    RaggedMmap(tmp_path / "r").append(np.arange(2))
    StringsMmap(tmp_path / "s").append("x")
    np_ninja.extend_dir(tmp_path / "n", np.ones((1, 3)))
    for name, count in (("r", 5), ("s", 4), ("n", 4)):
        report = verify(tmp_path / name)
        assert report.ok and report.not_covered == 0 and report.checked == count, str(report)


@pytest.mark.parametrize("kind", KINDS)
def test_a_writer_opened_before_checksums_were_added_keeps_them(tmp_path, kind):
    """Another handle adds checksums (checksum=True on its append) while this one is open:
    this one's next append records the checksums of its samples too."""
    k, path = CATALOGUE[kind], tmp_path / "m"
    k.build(path, k.samples(N))
    early = None if kind == "numpy" else k.open(path, True)
    k.extend(path, k.samples(2, N), early)  # its writer is open now, with no table to keep
    if kind == "numpy":
        np_ninja.extend_dir(path, np.stack(k.samples(1, N + 2)), checksum=True)
    else:
        k.open(path, True).extend(k.samples(1, N + 2), checksum=True)
    k.extend(path, k.samples(3, N + 3), early)
    report = verify(path)
    assert report.ok and report.not_covered == 0 and report.checked == (N + 6) * len(k.maps), str(report)
