"""StringsMmap: a list of str stored as UTF-8 (optionally zstd-compressed per string)."""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import build, checksums, codecs, layout, parallel, reads
from .build import StringsEncoder
from .errors import MapFormatError
from .progress import batched, progress
from .spans import CHUNK_BITS, SpansMap

__all__ = ["StringsMmap"]

_CHUNK = 256  # strings decoded together when iterating: large enough to amortise, small enough for the cache
_ASCII_RETRY = 32  # runs decoded one string at a time before checking again for an all-ASCII run


class StringsMmap(SpansMap):
    """A list of str, memory-mapped from ``out_dir``; ``s[i]`` is a str, slices give lists.

    A path with no map yet is an empty map that ``append`` and ``extend`` fill. Maps written
    with ``zstd_level`` are decompressed transparently (needs the ``zstandard`` package).
    """

    _kind = "string"

    def __init__(self, out_dir: Union[str, os.PathLike], mode: str = "r+b", **legacy_keys: str):
        for name, value in legacy_keys.items():
            if {"starts_key": "starts", "ends_key": "ends"}.get(name) != value:
                raise TypeError(f"unexpected argument {name}={value!r}")
        super().__init__(out_dir, mode)

    def _read_extra(self, files: reads.MapFiles) -> Any:
        codec = codecs.read(files, self._kind)
        if codec is not None and not isinstance(codec, codecs.ZstdCodec):
            raise MapFormatError(f"{files.file(codecs.CODEC)}: a strings map cannot hold {codec.name!r} samples")
        return codec

    def _install(self, view: Optional[layout.SpansView], extra: Any) -> None:
        self._buffer = view.buffer if view else b""  # slicing an mmap gives bytes, the fastest to decode
        self._bytes = memoryview(self._buffer)
        codec = extra if view else None
        self._codec: Optional[codecs.ZstdCodec] = codec
        self.zstd_level = codec.level if codec is not None else None
        self._decompress = codec.decoder() if codec is not None else None
        # the fast path serves uncompressed strings, while all strings are mapped
        self._plain = view is not None and self._decompress is None
        self._ascii_probe = 0  # runs until _consecutive next checks for an all-ASCII run

    def _after_append(self, count: int) -> None:
        super()._after_append(count)
        self._plain = False  # until the new strings are mapped; _load() sets it again

    # -- reading -------------------------------------------------------------------------

    def __getitem__(self, item: Any) -> Any:
        if type(item) is int and self._plain and item >= 0:
            try:  # memoryviews raise IndexError past the end
                start, end = self._starts[item], self._ends[item]
            except IndexError:
                pass
            else:
                if self._sound[item >> CHUNK_BITS]:  # the offsets of its chunk were checked (spans.py)
                    try:
                        return self._buffer[start:end].decode()
                    except UnicodeDecodeError:
                        pass  # the slow path says which file is corrupt
        if isinstance(item, (int, np.integer)):
            return self._string(self._position(item))
        return self.get_batch(item)

    def _decode(self, i: int, raw: Any) -> str:
        try:
            if self._decompress is not None:
                raw = self._decompress(raw)
            return str(raw, "utf-8")
        except Exception as e:  # bad UTF-8, or a zstd frame that does not decompress
            raise MapFormatError(f"{self.path / layout.DATA}: string {i} cannot be decoded ({e})") from None

    def _string(self, i: int) -> str:
        start, end = self._span(i)
        return self._decode(i, self._bytes[start:end])

    def get_batch(self, indices: Any) -> List[str]:
        """The strings at ``indices`` (a slice, list, integer array or boolean mask), in order."""
        idx = self._batch_positions(indices)
        starts, ends = self._batch_spans(idx)
        raw = self._buffer
        if self._decompress is None:
            try:
                return [raw[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist())]
            except UnicodeDecodeError:
                pass  # fall through to name the corrupt string
        return [self._decode(i, raw[s:e]) for i, s, e in zip(idx.tolist(), starts.tolist(), ends.tolist())]

    def iter_chunks(self, chunk_size: int = _CHUNK) -> Iterator[List[str]]:
        """Every string, as lists of up to ``chunk_size`` consecutive strings."""
        for first in range(0, self._len, chunk_size):
            yield self._consecutive(first, min(first + chunk_size, self._len))

    def _consecutive(self, first: int, stop: int) -> List[str]:
        """Strings ``first..stop-1``, decoded straight from the map's bytes.

        A run of ASCII strings is decoded in one call and sliced. Whether a run is ASCII is
        only checked while runs keep being ASCII, and then once every ``_ASCII_RETRY`` runs:
        on text with some non-ASCII strings in every run that check would be wasted work.
        """
        if stop > self._n:
            self._load()
        if self._decompress is None and self._view is not None and stop > first:
            self._check_chunks(first, stop)
            starts, ends = self._view.starts[first:stop], self._view.ends[first:stop]
            low, high = int(starts[0]), int(ends[-1])
            raw = self._buffer
            self._ascii_probe -= 1
            if self._ascii_probe <= 0:
                chunk = raw[low:high]
                if chunk.isascii():  # then byte offsets are character offsets
                    self._ascii_probe = 0
                    text = chunk.decode("ascii")
                    return [text[s:e] for s, e in zip((starts - low).tolist(), (ends - low).tolist())]
                self._ascii_probe = _ASCII_RETRY
            try:
                return [raw[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist())]
            except UnicodeDecodeError:
                pass  # get_batch names the string that is not UTF-8
        return self.get_batch(slice(first, stop))

    def __iter__(self) -> Iterator[str]:
        # a C-level chain: no Python frame is resumed per string
        return itertools.chain.from_iterable(self.iter_chunks())

    # -- writing -------------------------------------------------------------------------

    def _encode(self, strings: Sequence[Any], first_position: int) -> List[bytes]:
        pieces = list(self._new_encoder().encode(strings, first_position))
        return pieces[0][0] if pieces else []

    def __setitem__(self, key: Any, value: Any) -> None:
        """Overwrite strings in place with strings of the same stored byte length (``mode="r+b"``).

        Strings of a zstd-compressed map cannot be overwritten: whether a new value would
        compress to the same length is not something a caller can predict.
        """
        self._check_writable()
        if self.zstd_level is not None:
            raise ValueError(f"{self.path} is zstd-compressed: its strings cannot be overwritten in place; rebuild the map instead")
        if isinstance(key, (int, np.integer)):
            idx, values = [self._position(key)], [value]
        else:
            idx, values = self._batch_positions(key).tolist(), list(value)
            if len(values) != len(idx):
                raise ValueError(f"{len(idx)} strings selected but {len(values)} values given")
        checked = []
        for i, v in zip(idx, values):
            (raw,) = self._encode([v], i)
            start, end = self._span(i)
            if len(raw) != end - start:
                raise ValueError(f"string {i} takes {end - start} bytes; a new value must take as many, got {len(raw)}")
            checked.append((start, end, raw))
        for start, end, raw in checked:
            self._bytes[start:end] = raw
        checksums.overwrite(self.path, {i: raw for i, (_, _, raw) in zip(idx, checked)})

    def append(self, string: str, durable: bool = False, checksum: bool = False) -> None:
        """Add one string at the end."""
        self.extend([string], durable=durable, checksum=checksum)

    def extend(self, list_of_strings: Iterable[str], verbose: bool = False, durable: bool = False, checksum: bool = False) -> None:
        """Add strings at the end, all or none; a non-str raises TypeError and writes nothing.

        A map with checksums gets those of the new strings; ``checksum=True`` first gives
        checksums to a map that has none."""
        self._extend(list(progress(list_of_strings, verbose)), durable, checksum)

    def _new_encoder(self) -> StringsEncoder:
        codec = self._codec
        return StringsEncoder(codec.level, dictionary=codec.dictionary) if codec is not None else StringsEncoder()

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_strings(
        cls,
        out_dir: Union[str, os.PathLike],
        strings: Sequence[str],
        mode: str = "r+b",
        verbose: bool = False,
        zstd_level: Optional[int] = None,
        zstd_train_dictionary_size: Optional[int] = None,
        durable: bool = False,
        checksum: bool = False,
        **legacy_keys: str,
    ) -> "StringsMmap":
        """Write ``strings`` as a new map at ``out_dir`` (replacing a map there once complete).

        ``zstd_level`` compresses each string on its own; ``zstd_train_dictionary_size`` first
        trains a shared dictionary of that many bytes on the strings (both need ``zstandard``).
        ``checksum=True`` records a CRC-32 of every string's stored bytes, which ``verify()`` checks.
        """
        strings = list(progress(strings, verbose))
        with checksums.recording(checksum):
            build.write(out_dir, StringsEncoder(zstd_level, zstd_train_dictionary_size), [strings], durable)
        return cls(out_dir, mode=mode, **legacy_keys)

    @classmethod
    def from_generator(
        cls,
        out_dir: Union[str, os.PathLike],
        sample_generator: Iterable[str],
        batch_size: int,
        verbose: bool = False,
        mode: str = "r+b",
        zstd_level: Optional[int] = None,
        zstd_train_dictionary_size: Optional[int] = None,
        durable: bool = False,
        total: Optional[int] = None,
        checksum: bool = False,
    ) -> "StringsMmap":
        """Write strings from an iterable, ``batch_size`` at a time, as a new map.

        Memory stays bounded by one batch; the map appears only once the iterable is
        exhausted. A dictionary, if asked for, is trained on the first batch.
        """
        batches = batched(progress(sample_generator, verbose, total), batch_size)
        with checksums.recording(checksum):
            build.write(out_dir, StringsEncoder(zstd_level, zstd_train_dictionary_size), batches, durable)
        return cls(out_dir, mode=mode)

    @classmethod
    def from_indexable(
        cls,
        out_dir: Union[str, os.PathLike],
        indexable: Any,
        batch_size: int,
        n_jobs: Optional[int] = None,
        verbose: bool = False,
        mode: str = "r+b",
        zstd_level: Optional[int] = None,
        zstd_train_dictionary_size: Optional[int] = None,
        durable: bool = False,
        checksum: bool = False,
    ) -> "StringsMmap":
        """Write the strings ``indexable[0], indexable[1], ...`` as a new map.

        ``n_jobs=k`` builds with k worker processes (-1: one per core), byte-identical to
        the serial build (see ``RaggedMmap.from_indexable``). A dictionary, if asked for, is
        trained on the first batch, here before the workers start.
        """
        encoder = StringsEncoder(zstd_level, zstd_train_dictionary_size)  # checks the options
        options: dict = {"zstd_level": zstd_level, "zstd_train_dictionary_size": zstd_train_dictionary_size}
        if zstd_train_dictionary_size is not None and parallel.resolve_jobs(n_jobs) > 1:
            first = next(build.indexed_batches(indexable, 0, batch_size, batch_size), [])
            list(encoder.encode(first, 0))
            options = {"zstd_level": zstd_level, "zstd_dictionary": encoder.dictionary}
        with checksums.recording(checksum):
            parallel.build_indexable(out_dir, "string", indexable, batch_size, n_jobs, verbose, options, durable)
        return cls(out_dir, mode=mode)
