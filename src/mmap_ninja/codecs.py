"""Per-sample codecs: how a map turns one sample into the bytes it stores, and back.

A map stores each sample as one run of bytes between ``starts[i]`` and ``ends[i]``. Without a
codec those bytes are the sample's own (UTF-8 of a string, the elements of an array); with
one, they are what the codec's ``encode`` made of them, and a read runs ``decode``. The span
of a sample then counts *stored bytes*, while the element count of an array sample lives in
``flattened_shapes/`` and its shape in ``shapes/``, as always.

A codec is recorded in the map's small files, so that any reader knows it:

- ``codec.ninja``: the codec's name, ASCII (e.g. ``zstd``), and beside it the codec's own
  files (``zstd_level.ninja``, ``zstd_dict.ninja``; ``image_*.ninja``).
- The one exception keeps mmap_ninja 0.9.0's layout: a zstd-compressed *strings* map has no
  ``codec.ninja``, only 0.9.0's ``zstd_level.ninja`` (and ``zstd_dict.ninja``), as 0.9.0 wrote
  and reads them.

A new codec is one class with a ``name``, ``encode``/``decode`` and ``write``/``read`` of its
record, registered with ``@register``. Codecs import their optional package on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Type

from . import compression, fs, ondisk
from .errors import MapFormatError
from .ondisk import ZSTD_DICT, ZSTD_LEVEL, Where
from .reads import MapFiles

CODEC = "codec.ninja"

_REGISTRY: Dict[str, Type["Codec"]] = {}
_BUILT_IN = {"image": "mmap_ninja.images"}  # codecs registered by a module imported on first use


class Codec:
    """One way of storing a sample's bytes. Subclasses set ``name`` and override the rest."""

    name = ""

    def encode(self, raw: bytes) -> bytes:
        """The stored bytes of one sample."""
        raise NotImplementedError

    def decode(self, stored: Any) -> Any:
        """The sample back from its stored bytes (a bytes-like object)."""
        raise NotImplementedError

    def write(self, map_dir: Path) -> None:
        """Write the codec's own files (its parameters) into ``map_dir``."""

    @classmethod
    def read(cls, files: MapFiles) -> "Codec":
        """The codec as recorded in the map ``files`` reads (a MapFormatError names a bad file)."""
        raise NotImplementedError

    def same_as(self, other: Optional["Codec"]) -> bool:
        """Whether samples stored by ``other`` decode with this codec (maps merge only then)."""
        return other is not None and type(other) is type(self) and self.record() == other.record()

    def record(self) -> tuple:
        """What the codec's files hold, to compare codecs."""
        return ()

    def describe(self) -> str:
        """A few words for ``mmap-ninja info``."""
        return self.name


def register(cls: Type[Codec]) -> Type[Codec]:
    """Make a codec known by its ``name`` (a class decorator)."""
    if not cls.name or not cls.name.isascii() or ":" in cls.name:
        raise ValueError(f"a codec needs an ASCII name without ':', got {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def by_name(name: str, where: Path) -> Type[Codec]:
    """The registered codec class called ``name`` (a MapFormatError naming ``where`` if none)."""
    if name not in _REGISTRY and name in _BUILT_IN:
        import importlib

        importlib.import_module(_BUILT_IN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise MapFormatError(f"{where} names a codec this version does not know: {name!r} (known: {known})") from None


def read(where: Where, kind: str) -> Optional[Codec]:
    """The codec of the map of ``kind`` there (a path or a ``reads.MapFiles``), or None if its
    samples are stored as they are."""
    with ondisk.handle(where) as files:
        if files.exists(CODEC):
            name = ondisk.read_text(files, CODEC)
            return by_name(name, files.file(CODEC)).read(files)
        if kind == "string" and files.exists(ZSTD_LEVEL):
            return ZstdCodec.read(files)  # 0.9.0's record of a compressed strings map
        return None


def write(map_dir: Path, codec: Optional[Codec], kind: str) -> None:
    """Record ``codec`` in the new map at ``map_dir`` (nothing when None)."""
    if codec is None:
        return
    codec.write(map_dir)
    if not (kind == "string" and isinstance(codec, ZstdCodec)):  # 0.9.0's strings need no name
        fs.write_file(map_dir / CODEC, codec.name.encode("ascii"))


@register
class ZstdCodec(Codec):
    """zstd, one frame per sample, optionally with a shared trained dictionary (``zstandard``)."""

    name = "zstd"

    def __init__(self, level: int, dictionary: Optional[bytes] = None):
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"zstd_level must be an int, got {level!r}")
        self.level = level
        self.dictionary = dictionary
        self._compress: Optional[Callable[[bytes], bytes]] = None
        self._decompress: Optional[Callable[[bytes], bytes]] = None

    @classmethod
    def trained(cls, level: int, samples: List[bytes], size: int) -> "ZstdCodec":
        """A codec whose dictionary of at most ``size`` bytes is trained on ``samples``."""
        return cls(level, compression.train_dictionary(samples, size))

    def encode(self, raw: bytes) -> bytes:
        if self._compress is None:
            self._compress = compression.compressor(self.level, self.dictionary)
        return self._compress(raw)

    def decode(self, stored: Any) -> bytes:
        if self._decompress is None:
            self._decompress = compression.decompressor(self.dictionary)
        return self._decompress(stored)

    def decoder(self) -> Callable[[Any], bytes]:
        """``decode`` as a bound C function (no Python frame per sample)."""
        if self._decompress is None:
            self._decompress = compression.decompressor(self.dictionary)
        return self._decompress

    def write(self, map_dir: Path) -> None:
        fs.write_file(map_dir / ZSTD_LEVEL, str(self.level).encode("ascii"))
        if self.dictionary is not None:
            fs.write_file(map_dir / ZSTD_DICT, self.dictionary)

    @classmethod
    def read(cls, files: MapFiles) -> "ZstdCodec":
        level, dictionary = ondisk.read_zstd_settings(files)
        if level is None:
            raise MapFormatError(f"{files.file(ZSTD_LEVEL)} is missing: the map says its samples are zstd frames")
        return cls(level, dictionary)

    def record(self) -> tuple:
        return (self.level, self.dictionary)

    def describe(self) -> str:
        extra = f", dictionary of {len(self.dictionary)} bytes" if self.dictionary else ""
        return f"zstd level {self.level}{extra}"

    def __getstate__(self) -> dict:  # the compressor objects do not pickle; they are made again
        return {"level": self.level, "dictionary": self.dictionary}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["level"], state["dictionary"])  # type: ignore[misc]


def zstd_from_options(level: Optional[int], dictionary: Optional[bytes] = None) -> Optional[ZstdCodec]:
    """The zstd codec a builder's ``zstd_level`` asks for (None: no compression)."""
    return None if level is None else ZstdCodec(level, dictionary)
