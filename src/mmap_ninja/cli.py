"""The ``mmap-ninja`` command (also ``python -m mmap_ninja``): info, convert, export, demo.

Exit codes: 0 success, 1 failure (one line on stderr; ``--debug`` shows the traceback),
2 usage error, 130 interrupted (Ctrl-C).

``convert`` and ``export`` live in ``cli_convert.py``; what the sub-commands share (the one-line
error, the numeric argument types) in ``cli_args.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence


from . import check, kinds, reads
from .errors import MapFormatError

from .check import HEALTHY, NEEDS_REPAIR, UNHEALTHY
from .cli_args import CommandError, count_text as _count, non_negative_int as _non_negative_int
from .cli_convert import add_convert_commands


# --- info ---------------------------------------------------------------------------------


def inspect_map(path: "os.PathLike[str] | str") -> Dict[str, Any]:
    """What ``mmap-ninja info`` reports about the map at ``path``, as a dict (``check.check_map``).

    ``health`` is "healthy", "needs repair on next append" (the tail of an interrupted append
    lies beyond the committed samples: readers ignore it, the next append cuts it) or
    "unhealthy" (``problems`` says why; readers raise MapFormatError).
    """
    path = Path(path)
    from . import megatron

    if megatron.is_corpus(path):  # PREFIX, PREFIX.idx or PREFIX.bin of a Megatron corpus
        return megatron.inspect(path)
    try:
        return check.check_map(path)
    except FileNotFoundError:
        raise CommandError(f"there is no map at {path}") from None
    except check.NotAMap as e:
        raise CommandError(str(e)) from None
    except MapFormatError as e:  # not even a directory
        raise CommandError(str(e)) from None


def _bytes_on_disk(path: Path) -> int:
    with reads.open_map_files(path) as files:
        return check.bytes_on_disk(files)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{size:,.1f} {unit} ({n:,} bytes)"
        size /= 1024
    raise AssertionError("unreachable")


def _format_number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


_PROBLEMS_SHOWN = 6


def format_report(report: Dict[str, Any]) -> str:
    """The report of ``inspect_map`` as the text ``mmap-ninja info`` prints."""
    lines = [f"path:          {report['path']}"]
    if report["kind"]:
        opens_as = kinds.find(report["kind"]).opens_as
        lines.append(f"kind:          {report['kind']}" + (f" ({opens_as})" if opens_as else ""))
    if report["samples"] is not None:
        lines.append(f"samples:       {report['samples']:,}")
    if report["dtype"]:
        lines.append(f"dtype:         {report['dtype']}" + (", Fortran order" if report.get("order") == "F" else ""))
    for group in report["shapes"]:
        unit = group.get("unit")
        if unit:
            title = f"{unit} ({group['samples']:,} samples)"
        elif group["ndim"] == 0:
            title = f"{_count(group['samples'], 'sample')} with 0 axes (scalars)"
        else:
            title = f"{_count(group['samples'], 'sample')} with {_count(group['ndim'], 'axis', 'axes')}"
        lines.append(f"shape:         {title}")
        if group["axes"]:
            lines.append(f"               {'axis':>6} {'min':>10} {'median':>10} {'max':>10}")
            for a, stats in enumerate(group["axes"]):
                cells = " ".join(f"{_format_number(stats[k]):>10}" for k in ("min", "median", "max"))
                lines.append(f"               {'bytes' if unit else a:>6} {cells}")
    if report["kind"] == "megatron":
        lines.extend(_megatron_lines(report))
    lines.append(f"on disk:       {_human_bytes(report['bytes_on_disk'])}")
    if report["kind"]:
        lines.append(f"compression:   {report['compression']}")
    health = report["health"]
    lines.append(f"health:        {health}")
    shown = report["problems"][:_PROBLEMS_SHOWN]
    for problem in shown:
        lines.append(f"               - {problem}")
    if len(report["problems"]) > len(shown):
        lines.append(f"               - and {len(report['problems']) - len(shown)} more (--json lists all)")
    if health == NEEDS_REPAIR:
        lines.append("               (readers see every committed sample; the next append cuts the tail)")
    return "\n".join(lines)


def _megatron_lines(report: Dict[str, Any]) -> List[str]:
    """The lines of a Megatron corpus's report beyond those every map has."""
    lines = []
    if report["format"]:
        modes = ", multimodal (sequence modes)" if report["multimodal"] else ""
        lines.append(f"format:        {report['format']} .idx, dtype code {report['dtype_code']}{modes}")
    if report["documents"] is not None:
        lines.append(f"documents:     {report['documents']:,}")
    if report["tokens"] is not None:
        lines.append(f"tokens:        {report['tokens']:,}")
    if report["lengths"]:
        stats = report["lengths"]
        names = ("min", "p10", "median", "p90", "p99", "max", "mean")
        lines.append("lengths:       " + " ".join(f"{k:>9}" for k in names))
        lines.append("               " + " ".join(f"{_format_number(stats[k]):>9}" for k in names))
    return lines


def _run_info(args: argparse.Namespace) -> int:
    from .records import is_records_dir

    if is_records_dir(args.path):
        return _run_records_info(args)
    report = inspect_map(args.path)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    if report["health"] == UNHEALTHY:
        raise CommandError(f"the map at {args.path} is unhealthy: {report['problems'][0]}")
    return 0


# --- info of a records map (RecordsMmap) ---------------------------------------------------


def inspect_records(path: "os.PathLike[str] | str") -> Dict[str, Any]:
    """What ``mmap-ninja info`` reports about the records map at ``path``, as a dict.

    Every field is inspected as a map of its own (``inspect_map``); the whole is "healthy"
    when every field is and holds exactly the committed records, "needs repair on next
    append" when a field holds more (an interrupted append: readers see the committed
    records, the next append cuts the rest), and "unhealthy" when a field holds fewer, is
    missing or unhealthy itself.
    """
    from . import records

    path = Path(path)
    report: Dict[str, Any] = {"path": str(path), "kind": "records", "records": None, "classes": None, "fields": [],
                              "bytes_on_disk": _bytes_on_disk(path), "health": HEALTHY, "problems": [], "unlisted": []}
    try:
        info = records.read_records_file(path)
    except MapFormatError as e:
        report.update(health=UNHEALTHY, problems=[str(e)])
        return report
    report["records"] = info.count
    report["classes"] = None if info.classes is None else list(info.classes)
    worst = {HEALTHY: 0, NEEDS_REPAIR: 1, UNHEALTHY: 2}
    health = HEALTHY
    for name, kind in info.fields:
        try:
            field = inspect_map(path / name)
        except CommandError as e:
            field = {"path": str(path / name), "kind": None, "samples": None, "health": UNHEALTHY, "problems": [str(e)]}
        field["field"], field["field_kind"] = name, kind
        if field.get("kind") not in (None, kinds.get(kind).disk):
            field["health"] = UNHEALTHY
            field["problems"] = [f"{records.RECORDS_FILE} lists it as {kind!r}, but it holds a {field['kind']!r} map"] + field["problems"]
        held = field.get("samples")
        if held is not None and held < info.count:
            field["health"] = UNHEALTHY
            report["problems"].append(f"field {name!r} holds {held:,} samples, fewer than the {info.count:,} committed records")
        elif held is not None and held > info.count:
            if field["health"] == HEALTHY:
                field["health"] = NEEDS_REPAIR
            report["problems"].append(f"field {name!r} holds {held - info.count:,} samples past the {info.count:,} committed "
                                      "records (the tail of an interrupted append)")
        report["problems"] += [f"field {name!r}: {p}" for p in field["problems"]]
        if worst[field["health"]] > worst[health]:
            health = field["health"]
        report["fields"].append(field)
    listed = {name for name, _ in info.fields}
    with reads.open_map_files(path) as files:
        report["unlisted"] = [n for n in files.list() if files.is_dir(n) and not n.startswith(".") and n not in listed]
    report["health"] = health
    return report


def format_records_report(report: Dict[str, Any]) -> str:
    """The report of ``inspect_records`` as the text ``mmap-ninja info`` prints."""
    lines = [f"path:          {report['path']}", "kind:          records (RecordsMmap)"]
    if report["records"] is not None:
        lines.append(f"records:       {report['records']:,}")
    if report["classes"] is not None:
        lines.append(f"classes:       {len(report['classes']):,}: " + ", ".join(f"{i} {c}" for i, c in enumerate(report["classes"])))
    if report["fields"]:
        names = ", ".join(f"{f['field']} ({f['field_kind']})" for f in report["fields"])
        lines.append(f"fields:        {len(report['fields'])}: {names}")
    lines.append(f"on disk:       {_human_bytes(report['bytes_on_disk'])}")
    lines.append(f"health:        {report['health']}")
    shown = report["problems"][:_PROBLEMS_SHOWN]
    lines += [f"               - {p}" for p in shown]
    if len(report["problems"]) > len(shown):
        lines.append(f"               - and {len(report['problems']) - len(shown)} more (--json lists all)")
    if report["health"] == NEEDS_REPAIR:
        lines.append("               (readers see every committed record; the next append cuts the rest)")
    if report["unlisted"]:
        lines.append(f"not a field:   {', '.join(report['unlisted'])} (folders not in records.json, e.g. an interrupted add_field)")
    for field in report["fields"]:
        lines.append("")
        lines.append(f"field {field['field']!r}:")
        if field.get("kind") is None:
            lines.append(f"  health:      {field['health']}: {field['problems'][0] if field['problems'] else ''}")
            continue
        lines += ["  " + line.replace(":  ", ":", 1) if line.strip() else line for line in format_report(field).split("\n")]
    return "\n".join(lines)


def _run_records_info(args: argparse.Namespace) -> int:
    report = inspect_records(args.path)
    print(json.dumps(report, indent=2) if args.json else format_records_report(report))
    if report["health"] == UNHEALTHY:
        raise CommandError(f"the records map at {args.path} is unhealthy: {report['problems'][0] if report['problems'] else 'see above'}")
    return 0


# --- demo ---------------------------------------------------------------------------------


def _run_demo(args: argparse.Namespace) -> int:
    from . import demo

    demo.run(n_texts=args.n, n_images=args.images, plot=args.plot, keep=args.keep, seed=args.seed)
    return 0


# --- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mmap-ninja``."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of a failure")
    parser = argparse.ArgumentParser(
        prog="mmap-ninja",
        description="Inspect maps, convert folders of files into maps, and see how much faster maps are.",
        epilog="Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.",
        parents=[debug],
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser("info", parents=[debug], help="describe a map and check that it is healthy",
                               description="Describe the map at PATH and check its files agree. Exits 1 if it is unhealthy.")
    info.add_argument("path", metavar="PATH", help="a map directory, or the PREFIX of a Megatron corpus")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(run=_run_info)

    verify = commands.add_parser("verify", parents=[debug], help="read every sample and check it against its checksum",
                                 description="Check every invariant of the map (or records map) at PATH and, if it was built "
                                 "with checksum=True, every sample's stored bytes. Never changes the map. Exits 1 if it is damaged.")
    verify.add_argument("path", metavar="PATH", help="a map directory, a records map, or the PREFIX of a Megatron corpus")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(run=lambda args: _verification().run_cli(args.path, args.quiet))

    add_convert_commands(commands, debug)

    upload = commands.add_parser("upload", parents=[debug], help="copy a map to object storage (needs the remote extra)",
                                 description="Copy the map at LOCAL_MAP to URL (s3://bucket/prefix), its commit record last, "
                                 "so that a reader never opens a half-uploaded map. Credentials from the AWS_* variables.")
    upload.add_argument("local", metavar="LOCAL_MAP", help="a map directory")
    upload.add_argument("url", metavar="URL", help="where to put it, e.g. s3://bucket/prefix")
    upload.add_argument("--quiet", action="store_true", help="no progress bar")
    upload.set_defaults(run=_run_upload)

    demo = commands.add_parser("demo", parents=[debug], help="build a text corpus and images, convert them, compare read speed",
                               description="Generate a review-like text corpus and a set of images in a temporary folder, "
                               "convert both, and time reading the files against reading the maps.")
    demo.add_argument("--n", type=_non_negative_int, default=DEMO_TEXTS, help="number of text files (default %(default)s)")
    demo.add_argument("--images", type=_non_negative_int, default=DEMO_IMAGES, help="number of image files (default %(default)s)")
    demo.add_argument("--plot", metavar="FILE.png", help="also save a bar chart (needs matplotlib)")
    demo.add_argument("--keep", metavar="DIR", help="generate into DIR (new or empty) and keep everything there")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the generated data (default %(default)s)")
    demo.set_defaults(run=_run_demo)
    return parser


def _run_upload(args: argparse.Namespace) -> int:
    from .remote import upload

    upload(args.local, args.url, verbose=not args.quiet)
    return 0


DEMO_TEXTS = 100_000
DEMO_IMAGES = 2_000


def _verification():  # type: ignore[no-untyped-def]
    from . import verification  # imported when used: most commands never need it

    return verification


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = " ".join(str(error).split()) or type(error).__name__
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``mmap-ninja`` with ``argv`` (default: the process's arguments); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "demo" and not (args.n or args.images):
            parser.error("demo: --n and --images are both 0; nothing to compare")
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    debug = getattr(args, "debug", False)
    try:
        return args.run(args)
    except SystemExit as e:
        return int(e.code or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("mmap-ninja: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (| head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit does not complain again
        return 1
    except Exception as e:
        if debug:
            raise
        print(f"mmap-ninja: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
