"""``mmap-ninja convert`` (a folder of files, a Megatron corpus or an image folder into a map)
and ``mmap-ninja export megatron``: their parsers and what they run. The KIND of
``convert KIND`` names a source of files ("text", "images", "npy", ...), not a kind of map.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

from .cli_args import CommandError, count_text as _count, jobs as _jobs, positive_int as _positive_int

_ORDER_NOTE = ("Files are sorted by their path relative to SRC_DIR, folder by folder, by code point; hidden files are "
               "ignored. The map appears at OUT only once every file is in: an interrupted run leaves nothing there.")


def add_convert_commands(commands: Any, debug: argparse.ArgumentParser) -> None:
    """``convert KIND ...`` and ``export megatron ...``, sub-commands of ``commands``."""
    convert = commands.add_parser("convert", parents=[debug], help="turn a folder of files into a map",
                                  description="One sample per file, files sorted by their path relative to SRC_DIR.")
    sources = convert.add_subparsers(dest="kind", metavar="KIND", required=True)
    helps = {
        "text": "UTF-8 text files (*.txt) -> a StringsMmap",
        "images": "image files -> a RaggedMmap of HxWxC uint8 arrays (needs Pillow)",
        "npy": ".npy files, one array each -> a RaggedMmap",
    }
    for source, help_text in helps.items():
        sub = sources.add_parser(source, parents=[debug], help=help_text, description=help_text + ". " + _ORDER_NOTE)
        sub.add_argument("src_dir", metavar="SRC_DIR", help="folder to read, recursively")
        sub.add_argument("out", metavar="OUT", help="map directory to write (must not exist, unless --overwrite)")
        sub.add_argument("--batch-size", type=_positive_int, default=256 if source == "images" else 1024,
                         help="samples written at a time (memory holds one batch; default %(default)s)")
        sub.add_argument("--pattern", action="append", metavar="GLOB",
                         help="file names to take (repeatable; default " + " ".join(_default_patterns(source)) + ")")
        sub.add_argument("--skip-bad", action="store_true", help="leave unreadable files out (listed on stderr) instead of stopping")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing map at OUT (once the new one is complete)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.add_argument("--jobs", type=_jobs, default=1, metavar="K",
                         help="worker processes reading the files and building parts (default 1; -1: one per core)")
        if source == "images":
            sub.add_argument("--mode", default="RGB", help="Pillow mode to convert every image to (default RGB: HxWx3; L: HxW; 'keep' keeps each file's own)")
            _add_store_arguments(sub)
        elif source == "npy":
            sub.add_argument("--dtype", help="dtype of the map (default: the first batch's); values must fit exactly")
        else:
            sub.add_argument("--zstd-level", type=int, help="compress each string with zstd at this level (needs zstandard)")
        sub.set_defaults(run=_run_convert)
    _add_megatron_commands(sources, commands, debug)
    _add_imagefolder_parser(sources, debug)


# --- convert ------------------------------------------------------------------------------


def _run_convert(args: argparse.Namespace) -> int:
    from . import convert

    options: Dict[str, Any] = {}
    if args.kind in ("images", "imagefolder"):
        options["mode"] = None if args.mode == "keep" else args.mode
        options.update(store=args.store, quality=args.quality, max_side=args.max_side)
    if args.kind == "npy" and args.dtype:
        options["dtype"] = args.dtype
    elif args.kind == "text" and args.zstd_level is not None:
        options["zstd_level"] = args.zstd_level
    if getattr(args, "jobs", 1) != 1:
        options["n_jobs"] = args.jobs
    out = Path(args.out)
    if out.exists() and not args.overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise CommandError(f"{out} already exists; pass --overwrite to replace the map there")
    try:
        result = convert.CONVERTERS[args.kind](
            args.src_dir,
            args.out,
            batch_size=args.batch_size,
            patterns=args.pattern or None,
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
            verbose=not args.quiet,
            **options,
        )
    except convert.ConversionError as e:
        raise CommandError(f"{e}; nothing was written to {args.out}") from e
    except KeyboardInterrupt:
        print(f"mmap-ninja: interrupted; nothing was written to {args.out}", file=sys.stderr)
        raise SystemExit(130) from None
    for _, why in result.skipped:
        print(f"skipped: {why}", file=sys.stderr)
    skipped = f", left out {_count(len(result.skipped), 'unreadable file')}" if result.skipped else ""
    print(f"wrote {result.samples:,} samples to {result.out_dir}{skipped}")
    return 0


# --- Megatron corpora: convert megatron / export megatron ------------------------------------


def _run_convert_megatron(args: argparse.Namespace) -> int:
    from . import megatron

    try:
        out = megatron.to_ragged(args.prefix, args.out, batch_size=args.batch_size, overwrite=args.overwrite, verbose=not args.quiet)
    except FileExistsError as e:
        raise CommandError(f"{e}; pass --overwrite" if "overwrite=True" in str(e) else str(e)) from None
    except KeyboardInterrupt:
        print(f"mmap-ninja: interrupted; nothing was written to {args.out}", file=sys.stderr)
        raise SystemExit(130) from None
    corpus = megatron.open(args.prefix)
    print(f"wrote {len(corpus):,} sequences ({corpus.num_documents:,} documents) to {out}")
    return 0


def _run_export_megatron(args: argparse.Namespace) -> int:
    from . import megatron

    prefix = args.prefix
    if not args.overwrite and any(os.path.exists(prefix + ext) for ext in (".idx", ".bin")):
        raise CommandError(f"a corpus already exists at {prefix} (.idx/.bin); pass --overwrite to replace it")
    try:
        corpus = megatron.from_ragged(args.map, prefix, dtype=args.dtype, batch_size=args.batch_size, verbose=not args.quiet)
    except KeyboardInterrupt:
        print(f"mmap-ninja: interrupted; no corpus was written at {prefix}", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"wrote {len(corpus):,} sequences ({corpus.num_documents:,} documents, {corpus.dtype}) to {prefix}.idx and {prefix}.bin")
    return 0


def _add_megatron_commands(sources: Any, commands: Any, debug: argparse.ArgumentParser) -> None:
    """``convert megatron PREFIX OUT`` and ``export megatron MAP PREFIX``."""
    text = ("a Megatron-LM / fairseq corpus (PREFIX.idx + PREFIX.bin) -> a RaggedMmap; its document indices go to "
            "OUT/documents (a same-shape int64 map)")
    sub = sources.add_parser("megatron", parents=[debug], help=text, description=text + ". OUT appears only complete.")
    sub.add_argument("prefix", metavar="PREFIX", help="the corpus: PREFIX.idx and PREFIX.bin")
    sub.add_argument("out", metavar="OUT", help="map directory to write (must not exist, unless --overwrite)")
    _write_options(sub, "map at OUT (once the new one is complete)")
    sub.set_defaults(run=_run_convert_megatron)

    export = commands.add_parser("export", parents=[debug], help="write a map in another library's format",
                                 description="Write a map as files another library reads.")
    formats = export.add_subparsers(dest="format", metavar="FORMAT", required=True)
    text = ("a RaggedMmap of 1-D samples -> a Megatron-LM corpus PREFIX.idx + PREFIX.bin; documents from MAP/documents "
            "when there, else one per sample")
    sub = formats.add_parser("megatron", parents=[debug], help=text, description=text + ". The .idx appears last, only complete.")
    sub.add_argument("map", metavar="MAP", help="a RaggedMmap directory")
    sub.add_argument("prefix", metavar="PREFIX", help="where to write PREFIX.idx and PREFIX.bin")
    sub.add_argument("--dtype", help="token dtype (uint8, int8, int16, int32, int64, float32, float64, uint16; default: the map's)")
    _write_options(sub, "corpus at PREFIX")
    sub.set_defaults(run=_run_export_megatron)


def _write_options(sub: argparse.ArgumentParser, replaced: str) -> None:
    sub.add_argument("--batch-size", type=_positive_int, default=1024, help="sequences written at a time (default %(default)s)")
    sub.add_argument("--overwrite", action="store_true", help=f"replace an existing {replaced}")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")


# --- records: convert imagefolder ----------------------------------------------------------


def _add_store_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--store", choices=("raw", "encoded"), default="raw",
                     help="raw: decoded arrays (fastest reads, largest); encoded: the files' own bytes, decoded on read (default %(default)s)")
    sub.add_argument("--quality", type=_positive_int, metavar="Q", help="with --store encoded: encode every image again as JPEG at quality Q (1-95)")
    sub.add_argument("--max-side", type=_positive_int, metavar="N",
                     help="shrink every image whose longer side exceeds N pixels to N (aspect kept, Lanczos; never enlarged)")


def _add_imagefolder_parser(sources: Any, debug: argparse.ArgumentParser) -> None:
    help_text = "a folder with one subfolder of images per class -> a RecordsMmap of image, label, path (needs Pillow)"
    sub = sources.add_parser("imagefolder", parents=[debug], help=help_text, description=help_text + ". Classes are the "
                           "subfolders sorted by name, as torchvision's ImageFolder sorts them (label i is class i); their "
                           "names are stored with the map. The map appears at OUT only once every image is in.")
    sub.add_argument("src_dir", metavar="ROOT", help="folder with one subfolder per class")
    sub.add_argument("out", metavar="OUT", help="records map directory to write (must not exist, unless --overwrite)")
    sub.add_argument("--jobs", type=_jobs, default=1, metavar="K",
                     help="worker processes decoding the images and building parts (default 1; -1: one per core)")
    sub.add_argument("--batch-size", type=_positive_int, default=256, help="records written at a time (default %(default)s)")
    sub.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (listed on stderr) instead of stopping")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing map at OUT (once the new one is complete)")
    sub.add_argument("--pattern", action="append", metavar="GLOB",
                     help="image file names to take (repeatable; default: ImageFolder's extensions, " + " ".join(_default_patterns("imagefolder")) + ")")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_argument("--mode", default="RGB", help="Pillow mode to convert every image to (default RGB: HxWx3; 'keep' keeps each file's own)")
    _add_store_arguments(sub)
    sub.set_defaults(run=_run_convert)


def _default_patterns(source: str) -> Sequence[str]:
    from .convert import DEFAULT_PATTERNS

    return DEFAULT_PATTERNS[source]
