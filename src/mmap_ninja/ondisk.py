"""The on-disk format of a map: its files, its vocabulary, and the decoding of its small files.

The format is that of mmap_ninja 0.9.0, so either library reads what the other wrote.

Vocabulary (one meaning per word, everywhere in the code)
---------------------------------------------------------
*map*
    a directory holding one of the *kinds* below (``type.ninja`` names it).
*kind*
    what ``type.ninja`` holds: ``numpy`` (a same-shape map, or any *array directory*),
    ``ragged`` (a ragged map), ``string`` (a strings map).
*sample*
    one item of a map: a row of a same-shape map, an array of a ragged map, a str.
*count*
    the number of *committed* samples: what the *commit file* says.
*element*
    one item of ``dtype`` in ``data.ninja`` (a byte for strings).
*offsets*
    ``starts`` and ``ends``: element offsets of every sample in ``data.ninja``.
*length*
    ``ends[i] - starts[i]``: the element count of sample ``i``.
*total*
    ``ends[count - 1]``: the elements the committed samples cover (0 when none).
*shape layout*
    how a ragged map records its samples' shapes (see ``shapes.py``).
*tail*
    bytes or rows past what the commit covers: left by an append that was killed, ignored
    by readers, cut by the next writer (the *repair*).

Files
-----
Integers in binary files are little-endian; text files are ASCII without a newline.

*Array directory* (``type.ninja`` = ``numpy``; the same-shape map, and every offset table)::

    data.ninja    raw bytes of the array, in the order of order.ninja
    dtype.ninja   numpy's dtype.name, e.g. "float32" (exactly: no other spelling is read)
    shape.ninja   one uint64 per axis; axis 0 counts the samples
    order.ninja   "C" or "F"
    type.ninja    "numpy"

*Ragged map* (``type.ninja`` = ``ragged``): the directory is an array directory of all
samples flattened (C order) and concatenated, and beside it::

    starts/            array directory, int64: element offset where sample i begins
    ends/              array directory, int64: element offset where sample i ends
    flattened_shapes/  array directory, int64: element count of sample i (written for
                       0.9.0; this library does not need it)
    shapes_are_flat.ninja   int32: 1 if shapes/ is an (n, k) array directory, else 0
    shapes/            flat: row i is the shape of sample i (k = 1 holds 1-D lengths, and
                       0 for a 0-d sample); not flat: a ragged map whose sample i is the
                       shape of sample i as a 1-D int64 array

*Strings map* (``type.ninja`` = ``string``)::

    data.ninja         UTF-8 bytes of every string, concatenated (no header files)
    starts/, ends/     array directories, int64: byte offsets of string i
    zstd_level.ninja   optional, ASCII int: every string is a zstd frame
    zstd_dict.ninja    optional: the zstd dictionary the frames were made with

*Images map* (``type.ninja`` = ``images``; not in 0.9.0): a strings map whose samples are
encoded images (JPEG, PNG) instead of UTF-8, with the codec record below (``codec.ninja`` =
``image``). mmap_ninja 0.9.0 refuses the kind; its ``StringsMmap`` opened on one fails to
decode JPEG or PNG bytes as UTF-8.

*Encoded samples* (``codecs.py``; not in 0.9.0, except zstd strings above): a map whose
samples pass through a codec records it in ``codec.ninja`` (the codec's name) and the codec's
own files. Its ``starts/``/``ends/`` then count *stored bytes*, not elements; the element
counts of a ragged map are in ``flattened_shapes/`` (which this library then needs) and its
shapes in ``shapes/``. A ragged map's data directory then holds bytes and its ``dtype.ninja``
reads ``CODEC:DTYPE`` (e.g. ``zstd:int32``), which numpy refuses as a dtype: mmap_ninja 0.9.0
fails to open such a map instead of reading stored bytes as elements.

Invariants (what every writer makes true, and what readers check)
------------------------------------------------------------------
Samples lie back to back: ``starts[0] == 0``, ``starts[i] == ends[i - 1]``, every length
is >= 0 and ``total`` lies within ``data.ninja`` (within ``shape.ninja``'s element count for
a ragged map). A shape's product is the sample's length. The commit file is
``starts/shape.ninja`` for ragged and strings maps and ``shape.ninja`` for an array
directory; every other table counts at least ``count`` rows. How the files change is the
commit protocol (``commit.py``); how a map is replaced whole is ``publish.py``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import MapFormatError
from .reads import MapFiles, PathLike, open_map_files
from .shapes import NESTED, ShapeLayout, table_layout

DATA = "data.ninja"
DTYPE = "dtype.ninja"
SHAPE = "shape.ninja"
ORDER = "order.ninja"
KIND = "type.ninja"
STARTS = "starts"
ENDS = "ends"
FLATTENED_SHAPES = "flattened_shapes"
SHAPES = "shapes"
SHAPES_ARE_FLAT = "shapes_are_flat.ninja"
ZSTD_LEVEL = "zstd_level.ninja"
ZSTD_DICT = "zstd_dict.ninja"
LOCK = ".writer.lock"
COMMIT = f"{STARTS}/{SHAPE}"  # the commit file of a ragged or strings map

KINDS = ("numpy", "ragged", "string", "images")
BYTE_KINDS = ("string", "images")  # spans maps whose data.ninja is bare bytes, without header files
_ADDED_KINDS: set = set()  # what type.ninja may also hold: kinds registered in ``kinds`` by users


def add_kind(disk: str) -> None:
    """Let ``type.ninja`` hold ``disk`` (a kind registered in ``kinds``)."""
    _ADDED_KINDS.add(disk)
OFFSET = np.dtype("<i8")

Where = Union[MapFiles, PathLike]  # a handle, or a path to take a handle of for one call


class _Handle:
    """``with _Handle(where) as files``: the handle given, or one opened for the block."""

    def __init__(self, where: Where):
        self._own = not isinstance(where, MapFiles)
        self.files = open_map_files(where) if self._own else where

    def __enter__(self) -> MapFiles:
        return self.files

    def __exit__(self, *exc: object) -> None:
        if self._own:
            self.files.close()


def handle(where: Where) -> _Handle:
    return _Handle(where)


def read_text(files: MapFiles, name: str) -> str:
    raw = files.read(name)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MapFormatError(f"{files.file(name)} is not ASCII text") from None


def read_kind(where: Where) -> Optional[str]:
    """The kind of map there ("numpy", "ragged", "string"), or None if it holds none."""
    try:
        h = handle(where)
    except FileNotFoundError:
        return None
    with h as files:
        if not files.exists(KIND):
            return None
        kind = read_text(files, KIND)
        if kind not in KINDS and kind not in _ADDED_KINDS:
            raise MapFormatError(f"{files.file(KIND)} names an unknown kind of map: {kind!r}")
        return kind


def expect_kind(where: Where, kind: str) -> None:
    with handle(where) as files:
        found = read_kind(files)
        if found != kind:
            what = "no map" if found is None else f"a {found!r} map"
            raise MapFormatError(f"{files.path} holds {what}, not a {kind!r} map")


def read_shape(files: MapFiles, name: str = SHAPE) -> Tuple[int, ...]:
    raw = files.read(name)
    if len(raw) % 8:
        raise MapFormatError(f"{files.file(name)} holds {len(raw)} bytes, not a whole number of uint64s")
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


def shape_bytes(shape: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(shape)}Q", *shape)


def parse_dtype(name: str, where: object) -> np.dtype:
    """The dtype ``name`` spells, which must be exactly its ``dtype.name`` (as writers write it)."""
    try:
        dtype = np.dtype(name)
    except Exception:  # numpy raises TypeError, ValueError or SyntaxError on malformed names
        raise MapFormatError(f"{where} names an unknown dtype: {name!r}") from None
    if dtype.name != name or dtype.fields is not None or dtype.subdtype is not None:
        raise MapFormatError(f"{where} holds {name!r}, which is not a dtype name as maps store them (numpy's dtype.name)")
    if dtype.hasobject or dtype.itemsize == 0:
        raise MapFormatError(f"{where} names a dtype that cannot be memory-mapped: {name!r}")
    return dtype


def read_dtype(files: MapFiles, name: str = DTYPE) -> np.dtype:
    return parse_dtype(read_text(files, name), files.file(name))


def read_flat_flag(where: Where) -> bool:
    with handle(where) as files:
        raw = files.read(SHAPES_ARE_FLAT)
        if len(raw) != 4 or struct.unpack("<i", raw)[0] not in (0, 1):
            raise MapFormatError(f"{files.file(SHAPES_ARE_FLAT)} is not a 0/1 int32")
        return struct.unpack("<i", raw)[0] == 1


class ArrayHeader(NamedTuple):
    dtype: np.dtype
    shape: Tuple[int, ...]
    order: str
    codec: Optional[str] = None  # a ragged map of encoded samples: its codec's name; dtype is then the samples'


def read_array_header(where: Where, kind: str = "numpy", coded: bool = False) -> ArrayHeader:
    """Dtype, shape and order of an array directory, checked against each other.

    ``coded``: the data directory of a ragged map may read ``CODEC:DTYPE`` (encoded samples).
    """
    with handle(where) as files:
        expect_kind(files, kind)
        codec, text = None, read_text(files, DTYPE)
        if coded and ":" in text:
            codec, text = text.split(":", 1)
            if not codec:
                raise MapFormatError(f"{files.file(DTYPE)} names no codec before ':'")
        dtype = parse_dtype(text, files.file(DTYPE))
        shape = read_shape(files)
        order = read_text(files, ORDER)
        if order not in ("C", "F"):
            raise MapFormatError(f"{files.file(ORDER)} holds {order!r}, not 'C' or 'F'")
        if not shape:
            raise MapFormatError(f"{files.file(SHAPE)} is empty: a map needs a sample axis")
        return ArrayHeader(dtype, shape, order, codec)


def read_shapes_header(where: Where) -> Tuple[ShapeLayout, Optional[ArrayHeader]]:
    """The shape layout of a ragged map, and the header of its (n, k) table when flat."""
    with handle(where) as files:
        if not read_flat_flag(files):
            return NESTED, None
        with files.sub(SHAPES) as table:
            header = read_array_header(table)
        if header.dtype != OFFSET or len(header.shape) != 2 or header.shape[1] < 1:
            raise MapFormatError(f"{files.file(SHAPES)} should be an (n, k) int64 array, found {header.dtype.name} {header.shape}")
        return table_layout(header.shape[1]), header


def read_shape_layout(where: Where) -> ShapeLayout:
    """The shape layout of a ragged map (see ``shapes.py``), from its flag and ``shapes/``."""
    return read_shapes_header(where)[0]


def read_zstd_settings(where: Where) -> Tuple[Optional[int], Optional[bytes]]:
    """The zstd level and dictionary of a strings map (None, None when uncompressed)."""
    with handle(where) as files:
        level = None
        if files.exists(ZSTD_LEVEL):
            text = read_text(files, ZSTD_LEVEL)
            try:
                level = int(text)
            except ValueError:
                raise MapFormatError(f"{files.file(ZSTD_LEVEL)} is not an integer: {text!r}") from None
        dictionary = files.read(ZSTD_DICT) if files.exists(ZSTD_DICT) else None
        return level, dictionary


def committed_count(where: Where) -> int:
    """The number of samples a ragged or strings map has published."""
    with handle(where) as files:
        shape = read_shape(files, COMMIT)
        if len(shape) != 1:
            raise MapFormatError(f"{files.file(COMMIT)} should hold one count, found {shape}")
        return shape[0]
