"""``verify``: read every sample of a map and check it against its checksum and the format.

``verify(path)`` runs the one check of a map (``check.py``: every invariant of the format),
then, if the map records checksums (``checksums.py``), reads every committed sample's stored
bytes and compares their CRC-32 with the recorded one. It reports the first bad sample of
each data file and how many are bad; it never changes the map (it only maps files for
reading). A map without checksums gets its invariants checked only, and the report says
so, as it does for a Megatron-LM corpus (``PREFIX`` of ``PREFIX.idx`` + ``PREFIX.bin``),
whose format has no place for checksums. ``mmap-ninja verify MAP`` prints the report and exits 1 on damage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from . import check, checksums, kinds
from .errors import MapFormatError
from .ondisk import DATA, SHAPE, read_array_header, read_kind
from .opening import map_array, open_spans
from .progress import progress_bar
from .reads import MapFiles, read_one_version

PathLike = Union[str, Path]
_GROUP = 1 << 16  # samples checked between two updates of the progress bar


@dataclass
class VerifyReport:
    """What ``verify`` found. ``ok`` is False when anything is damaged."""

    path: str
    kind: Optional[str] = None
    samples: Optional[int] = None
    checked: int = 0  # samples whose checksum was compared
    not_covered: int = 0  # samples without a recorded checksum (appended by 0.9.0, or none at all)
    has_checksums: bool = False
    bytes_checked: int = 0
    problems: List[str] = field(default_factory=list)  # each names its file (and the first bad sample)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (``problems`` is empty)."""
        return not self.problems

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.kind or 'no map'}, {self.samples if self.samples is not None else '?'} samples"]
        if self.has_checksums:
            found = kinds.find(self.kind)
            unit = found.checksummed if found is not None else "samples"
            lines.append(f"  checksums: {self.checked} {unit} checked ({self.bytes_checked} bytes)"
                         + (f", {self.not_covered} not covered" if self.not_covered else ""))
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  DAMAGED: {p}" for p in self.problems]
        lines.append("  verdict: " + ("ok" if self.ok else "damaged"))
        return "\n".join(lines)


def verify(path: PathLike, verbose: bool = False) -> VerifyReport:
    """Check every invariant of the map (or records map) at ``path`` and, where it records
    checksums, every sample's stored bytes. Never changes the map. See the module docstring."""
    from . import megatron  # here, so that `import mmap_ninja` does not load the Megatron modules
    from .records import is_records_dir, read_records_file

    path = Path(path)
    if megatron.is_corpus(path):  # PREFIX.idx exists, or path is the .idx or .bin: as megatron.open reads it
        return _verify_megatron(path)
    if is_records_dir(path):
        report = VerifyReport(str(path), kind="records")
        try:
            info = read_records_file(path)
        except MapFormatError as e:
            report.problems.append(str(e))
            return report
        report.samples = info.count
        fields_with = 0
        for name, _ in info.fields:
            sub = _verify_map(path / name, info.count, verbose, f"{name}")
            report.checked += sub.checked
            report.not_covered += sub.not_covered
            report.bytes_checked += sub.bytes_checked
            report.problems += sub.problems
            fields_with += sub.has_checksums
        report.has_checksums = fields_with > 0
        if fields_with < len(info.fields):
            report.notes.append(f"{len(info.fields) - fields_with} of {len(info.fields)} fields record no checksums: "
                                "their invariants were checked, not their samples' bytes")
        return report
    return _verify_map(path, None, verbose)


def _verify_megatron(path: Path) -> VerifyReport:
    """``verify`` of a Megatron-LM / fairseq corpus: the checks of its open (through the read
    seam: header, sizes, pointers against lengths, document indices) and of ``validate()``
    (every sequence inside the ``.bin``). The format has no place for checksums."""
    from . import megatron

    report = VerifyReport(str(path), kind="megatron")
    try:
        with megatron.MegatronMap(path) as corpus:
            report.samples = len(corpus)
            corpus.validate()
    except (MapFormatError, FileNotFoundError) as e:
        report.problems.append(str(e))
        return report
    report.notes.append("no checksums (Megatron-LM's format has no place for them): invariants checked only")
    return report


def _verify_map(path: Path, count: Optional[int], verbose: bool, label: Optional[str] = None) -> VerifyReport:
    """``verify`` of one map; ``count``: the samples a dataset committed (its field may hold more)."""
    report = VerifyReport(str(path))
    try:
        found = check.check_map(path)
    except FileNotFoundError:
        found = {"health": check.UNHEALTHY, "problems": [f"{path} is missing"], "kind": None}
    report.kind, report.samples = found.get("kind"), found.get("samples")
    if found["health"] == check.UNHEALTHY:
        report.problems += found["problems"]
        return report
    if found["health"] == check.NEEDS_REPAIR:
        report.notes += [f"{t} (harmless: readers never see it; the next append cuts it)" for t in found["problems"]]
    if count is not None:
        if report.samples is not None and report.samples < count:
            report.problems.append(f"{path} holds {report.samples} samples, its dataset committed {count}")
            return report
        report.samples = count
    if not checksums.has_checksums(path):
        report.notes.append("no checksums recorded (build with checksum=True to record them): invariants checked only")
        return report
    report.has_checksums = True
    try:
        read_one_version(path, lambda files: _compare(files, report, verbose, label))
    except MapFormatError as e:
        report.problems.append(str(e))
    return report


def _compare(files: MapFiles, report: VerifyReport, verbose: bool, label: Optional[str]) -> None:
    kind = read_kind(files)
    n = report.samples or 0
    with files.sub(checksums.DIR) as table:
        header = read_array_header(table)
        if header.dtype != checksums.CRC or len(header.shape) != 1:
            raise MapFormatError(f"{table.file(SHAPE)}: checksums should be uint32 of shape (n,), found {header.dtype.name} {header.shape}")
        rows = min(n, header.shape[0])
        recorded = map_array(table, header, rows)
    if kinds.by_disk(kind).array:
        header = read_array_header(files)
        row_bytes = int(np.prod(header.shape[1:], dtype=np.int64)) * header.dtype.itemsize
        starts = np.arange(rows, dtype=np.int64) * row_bytes
        ends = starts + row_bytes
        buffer = files.view(DATA, rows * row_bytes, "r") if rows else b""
    else:
        view = open_spans(files, kind, count=n)
        itemsize = view.data.dtype.itemsize
        starts, ends = view.starts[:rows] * itemsize, view.ends[:rows] * itemsize
        buffer = view.buffer if rows else b""
    report.not_covered = n - rows
    if report.not_covered:
        report.notes.append(f"{files.file(checksums.DIR)}: samples {rows}..{n - 1} have no checksum (appended by a writer "
                            "that does not record them); the next append of mmap_ninja adds them")
    bad_first, bad_count = -1, 0
    with progress_bar(verbose, rows, f"verifying {label or files.path.name}") as bar:
        for first in range(0, rows, _GROUP):
            stop = min(rows, first + _GROUP)
            got = checksums.crcs_of(buffer, starts[first:stop], ends[first:stop])
            wrong = np.flatnonzero(got != recorded[first:stop])
            if len(wrong):
                bad_first = first + int(wrong[0]) if bad_first < 0 else bad_first
                bad_count += len(wrong)
            report.checked += stop - first
            report.bytes_checked += int(ends[stop - 1] - starts[first]) if stop > first else 0
            bar.update(stop - first)
    if bad_count:
        report.problems.append(f"{files.file(DATA)}: sample {bad_first} does not match its checksum "
                               f"({bad_count} of {rows} samples do not)")


def run_cli(path: str, quiet: bool = False) -> int:
    """``mmap-ninja verify PATH``: print the report; 0 if the map is sound, 1 if damaged."""
    report = verify(path, verbose=not quiet)
    print(report)
    return 0 if report.ok else 1


__all__ = ["VerifyReport", "verify"]
