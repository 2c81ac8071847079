"""Reading token corpora in the format of Megatron-LM and fairseq: ``PREFIX.idx`` + ``PREFIX.bin``.

The public module is ``megatron.py``; writing, inspection and conversion are in ``megatron_write.py``.

``open(prefix)`` maps a corpus read-only with the reading API of a RaggedMmap of 1-D
samples; ``write(prefix, samples)`` writes one that Megatron-LM's ``IndexedDataset`` reads.
Neither needs Megatron-LM (``megatron-core``) or fairseq installed.

The format (``MMapIndexedDataset``)
-----------------------------------
``PREFIX.bin`` holds every sequence's elements, concatenated, little-endian, in the dtype
named by the index; nothing else. ``PREFIX.idx`` holds, little-endian, without padding::

    offset  size    field
    0       9       magic  b"MMIDIDX\\x00\\x00"
    9       8       version, uint64: 1
    17      1       dtype code, uint8 (table below)
    18      8       sequence count N, uint64
    26      8       document index count D, uint64       (Megatron-LM only)
    ...     4 N     sequence lengths, int32: elements of each sequence
    ...     8 N     sequence pointers, int64: byte offset of each sequence in PREFIX.bin
    ...     8 D     document indices, int64              (Megatron-LM only)
    ...     1 N     sequence modes, int8                 (Megatron-LM multimodal only)

Document ``j`` is sequences ``document_indices[j]`` to ``document_indices[j + 1]``: the
indices start at 0, never decrease (an empty document repeats a value) and end at N, so
``D`` is the number of documents plus one. fairseq's index stops after the pointers (no
documents): it is told apart by its size, ``26 + 12 N`` bytes, which no Megatron index can
have; we show it as one document per sequence. Megatron-LM's reader is told by its caller
whether sequence modes follow; we tell it from the size (``34 + 12 N + 8 D`` bytes without,
``+ N`` with), and ``sequence_modes`` is None without them.

dtype codes
-----------
=====  ==================================  ===================
code   Megatron-LM (``DType``)             fairseq
=====  ==================================  ===================
1      uint8                               uint8
2      int8                                int8
3      int16                               int16
4      int32                               int32
5      int64                               int64
6      float64                             float64
7      **float32**                         **float64**
8      uint16                              uint16
9      (none)                              uint32
10     (none)                              uint64
=====  ==================================  ===================

Code 7 is float32 to Megatron-LM but float64 to fairseq (and to early Megatron-LM, which
copied fairseq's table); code 6 was float32 in some forks. So for codes 6 and 7 the element
size is taken from the data: the last sequence's pointer plus its length times the element
size must end the ``.bin`` exactly, as every writer makes it; only when that cannot tell
(no elements) the format's own table decides. Codes 9 and 10 are read as fairseq's. We
write Megatron-LM's codes 1-8 only, so ``write`` refuses uint32 and uint64.

Checks
------
Opening checks the header, that the ``.idx`` size matches its counts exactly, the document
indices (all of them, in chunks of bounded memory) and that the last sequence fits in the
``.bin``; every read checks the sequences it returns (pointer aligned to the element size,
length not negative, inside the ``.bin``). A problem raises :class:`MapFormatError` naming
the file, never an assertion or a crash. ``validate()`` checks every sequence at once.

Views and lifetime
------------------
``m[i]`` is a read-only view of the mapped ``.bin``. Each view keeps the mapping alive, so
a view stays valid after the map is closed or dropped (Megatron-LM's own reader unmaps in
``__del__``, and a view used after that crashes the process).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import reads
from .errors import MapFormatError
from .indexing import position, positions

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
MEGATRON_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float32", 8: "uint16"}
FAIRSEQ_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float64", 8: "uint16", 9: "uint32", 10: "uint64"}
_CODE_OF = {np.dtype(name): code for code, name in MEGATRON_DTYPES.items()}
_HEAD = struct.Struct("<9sQBQ")  # magic, version, dtype code, sequence count
_DOCS = struct.Struct("<Q")  # document index count (Megatron-LM)
_MAX_LENGTH = np.iinfo(np.int32).max
_CHUNK = 1 << 20  # rows checked or written at a time, to bound memory on huge corpora
_EMPTY_MV = memoryview(np.empty(0, np.int64))
_WAIT_FOR_WRITER = 5.0  # seconds an open waits for a writer that is between removing the .idx and renaming the new one in

PathLike = Union[str, "os.PathLike[str]"]


def _prefix(path: PathLike) -> str:
    """The corpus prefix of ``path``: as given, or without a trailing ``.idx`` / ``.bin``."""
    text = os.fspath(path)
    if (text.endswith(".idx") or text.endswith(".bin")) and os.path.isfile(text) and not os.path.isfile(text + ".idx"):
        return text[:-4]
    return text


def is_corpus(path: PathLike) -> bool:
    """Whether ``path`` names a Megatron/fairseq corpus (``path.idx`` exists, or ``path`` is one of its files)."""
    return os.path.isfile(_prefix(path) + ".idx")


def _int_view(buf: Any, offset: int, count: int, code: str, native: np.ndarray) -> memoryview:
    """A memoryview of ``count`` little-endian ints in ``buf``: indexing one gives a Python int, fast.

    Cast from the raw bytes, because numpy exports its views of the index's unaligned tables
    in a format that memoryviews cannot index.
    """
    if sys.byteorder != "little" or not count:
        return memoryview(native)
    return memoryview(buf)[offset : offset + count * struct.calcsize(code)].cast(code)


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order (a copy on big-endian machines only)."""
    native = np.dtype(arr.dtype.name)  # "=": memoryviews refuse numpy's explicit "<" formats
    return arr.view(native) if arr.dtype.isnative else arr.astype(native)


class MegatronMap:
    """A Megatron-LM or fairseq corpus mapped read-only, read like a RaggedMmap of 1-D samples.

    ``m[i]`` is sequence ``i`` as a zero-copy, read-only 1-D ndarray; slices, lists, integer
    arrays and boolean masks give lists. ``dtype``, ``sequence_lengths``,
    ``document_indices`` (int64, as Megatron-LM's), ``document(j)`` and ``sequence_modes``
    (int8, or None) describe the corpus. Pickles by reference to its prefix.
    """

    def __init__(self, prefix: PathLike):
        self.prefix = _prefix(prefix)
        self.idx_path = self.prefix + ".idx"
        self.bin_path = self.prefix + ".bin"
        self._load()

    # -- opening -------------------------------------------------------------------------

    def _fail(self, path: str, problem: str) -> MapFormatError:
        return MapFormatError(f"{path}: {problem}")

    def _load(self) -> None:
        """Map one version of the pair: the ``.idx`` is checked to be the same file after the
        ``.bin`` was opened (``write`` removes the old ``.idx`` before it replaces the ``.bin``),
        else the open is retried; a missing ``.idx`` while a writer's partial files are there
        is waited for."""
        folder, name = os.path.split(self.prefix)
        waited = 0.0
        for _ in range(100 * reads.RETRIES):
            with reads.open_map_files(folder or ".") as files:
                before = files.file_version(name + ".idx")
                if before is None and waited < _WAIT_FOR_WRITER and any(n.startswith(name + ".") and ".partial-" in n for n in files.list()):
                    time.sleep(0.001)
                    waited += 0.001
                    continue
                try:
                    loaded = self._load_from(files, name)
                except MapFormatError:  # the new .bin against the old .idx: a rewrite, not damage, if the .idx went too
                    if files.file_version(name + ".idx") == before:
                        raise
                    continue
                if files.file_version(name + ".idx") == before:
                    return self._install(*loaded)
            waited = 0.0
        raise MapFormatError(f"{self.idx_path} was replaced during every one of {100 * reads.RETRIES} opens; try again")

    def _load_from(self, files: reads.MapFiles, name: str) -> tuple:
        idx = self.idx_path
        try:
            size = files.size(name + ".idx")
        except MapFormatError:
            raise FileNotFoundError(f"there is no Megatron corpus at {self.prefix} ({idx} does not exist)") from None
        if size < _HEAD.size:
            raise self._fail(idx, f"holds {size} bytes, fewer than the {_HEAD.size} of an index header: it is truncated or not an index")
        buf = files.view(name + ".idx", size)
        magic, version, code, n = _HEAD.unpack_from(buf, 0)
        if magic != MAGIC:
            raise self._fail(idx, f"does not start with the magic {MAGIC!r} of a Megatron-LM/fairseq index (found {bytes(magic)!r})")
        if version != VERSION:
            raise self._fail(idx, f"has index version {version}; only version {VERSION} exists")
        fairseq = size == _HEAD.size + 12 * n
        if fairseq:
            d, offset, modes = n + 1, _HEAD.size, False
        else:
            if size < _HEAD.size + _DOCS.size:
                raise self._fail(idx, f"holds {size} bytes but counts {n} sequences: it is truncated")
            (d,) = _DOCS.unpack_from(buf, _HEAD.size)
            offset = _HEAD.size + _DOCS.size
            plain = offset + 12 * n + 8 * d
            modes = size == plain + n and n > 0
            if size != plain and not modes:
                raise self._fail(
                    idx,
                    f"holds {size} bytes but its header counts {n} sequences and {d} document indices, which take "
                    f"{plain} bytes ({plain + n} with sequence modes): it is truncated or damaged",
                )
        table = FAIRSEQ_DTYPES if fairseq else MEGATRON_DTYPES
        if code not in table and code not in FAIRSEQ_DTYPES:
            known = ", ".join(f"{c}={name}" for c, name in MEGATRON_DTYPES.items())
            raise self._fail(idx, f"has dtype code {code}, which is not one of Megatron-LM's ({known}) nor fairseq's 9=uint32, 10=uint64")
        lengths = np.frombuffer(buf, "<i4", n, offset)
        pointers = np.frombuffer(buf, "<i8", n, offset + 4 * n)
        try:
            bin_size = files.size(name + ".bin")
        except MapFormatError:
            raise MapFormatError(f"{self.bin_path} is missing (its index {idx} exists)") from None
        dtype = np.dtype(table.get(code) or FAIRSEQ_DTYPES[code])
        if code in (6, 7):
            dtype = _float_dtype(lengths, pointers, bin_size, dtype)
        itemsize = dtype.itemsize
        if n:
            last_end = int(pointers[-1]) + int(lengths[-1]) * itemsize
            if lengths[-1] < 0 or pointers[-1] < 0 or last_end != bin_size:
                raise MapFormatError(
                    f"{self.bin_path} holds {bin_size} bytes but the last sequence ({n - 1}) of {idx} ends at byte "
                    f"{last_end}: the .bin is truncated or extended, its dtype is not {dtype.name}, or the index does not belong to it"
                )
            _check_pointers(idx, lengths, pointers, itemsize)
        if fairseq:
            documents = np.arange(n + 1, dtype=np.int64)
        else:
            documents = np.frombuffer(buf, "<i8", d, offset + 12 * n)
            _check_documents(idx, documents, n)
        bin_buf = files.view(name + ".bin", bin_size)
        return buf, fairseq, dtype, lengths, pointers, documents, modes, code, n, d, offset, bin_buf, bin_size

    def _install(self, buf: Any, fairseq: bool, dtype: np.dtype, lengths: np.ndarray, pointers: np.ndarray, documents: np.ndarray,
                 modes: bool, code: int, n: int, d: int, offset: int, bin_buf: Any, bin_size: int) -> None:
        itemsize = dtype.itemsize
        self.format = "fairseq" if fairseq else "megatron"
        self.dtype = np.dtype(dtype.name)
        self.sequence_lengths = lengths
        self.sequence_pointers = pointers
        self.document_indices = documents
        self.sequence_modes = np.frombuffer(buf, np.int8, n, offset + 12 * n + 8 * d) if modes else None
        self.dtype_code = code
        self._data = np.frombuffer(bin_buf, dtype.newbyteorder("<"), bin_size // itemsize)
        for table in (self._data, self.sequence_lengths, pointers, documents, self.sequence_modes):
            if isinstance(table, np.ndarray) and table.flags.writeable:  # over a copy-on-write mapping
                table.flags.writeable = False
        self._data_bytes = bin_size
        self._n = n
        self._size = len(self._data)
        self._shift = itemsize.bit_length() - 1
        self._mask = itemsize - 1
        self._lengths_np = _native(lengths)
        self._pointers_np = _native(pointers)
        self._lengths = _int_view(buf, offset, n, "i", self._lengths_np)
        self._pointers = _int_view(buf, offset + 4 * n, n, "q", self._pointers_np)

    # -- reading -------------------------------------------------------------------------

    def __getitem__(self, item: Any) -> Any:
        if type(item) is int:
            try:  # memoryviews take negative indices and raise IndexError past the end
                p = self._pointers[item]
                k = self._lengths[item]
            except IndexError:
                pass
            else:
                s = p >> self._shift
                e = s + k
                if p & self._mask == 0 <= s <= e <= self._size:
                    return self._data[s:e]
        if isinstance(item, (int, np.integer)):
            return self._sequence(position(item, self._n))
        return self.get_batch(item)

    def _sequence(self, i: int) -> np.ndarray:
        p, k = int(self._pointers[i]), int(self._lengths[i])
        s = p >> self._shift
        if p & self._mask or not 0 <= s <= s + k <= self._size:
            raise MapFormatError(self._bad_sequence(i, p, k))
        return self._data[s : s + k]

    def _bad_sequence(self, i: int, p: int, k: int) -> str:
        if k < 0:
            return f"{self.idx_path}: sequence {i} has a negative length {k}"
        if p & self._mask:
            return f"{self.idx_path}: sequence {i} starts at byte {p}, not a multiple of its {self._mask + 1}-byte elements"
        return f"{self.idx_path}: sequence {i} lies at bytes {p}..{p + k * (self._mask + 1)}, outside the {self._data_bytes} of {self.bin_path}"

    def _spans(self, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Element offsets (start, end) of the sequences at positions ``idx``, checked."""
        pointers = self._pointers_np[idx]
        lengths = self._lengths_np[idx]
        starts = pointers >> self._shift
        ends = starts + lengths  # int64
        if len(idx) and not (((0 <= starts) & (starts <= ends) & (ends <= self._size)).all() and not (self._mask and (pointers & self._mask).any())):
            bad = (pointers & self._mask != 0) | (starts < 0) | (lengths < 0) | (ends > self._size)
            j = int(np.argmax(bad))
            raise MapFormatError(self._bad_sequence(int(idx[j]), int(pointers[j]), int(lengths[j])))
        return starts, ends

    def get_batch(self, indices: Any) -> List[np.ndarray]:
        """The sequences at ``indices`` (a slice, list, integer array or boolean mask), in order."""
        idx = positions(indices, self._n)
        if isinstance(idx, int):
            idx = np.array([idx], np.int64)
        starts, ends = self._spans(idx)
        data = self._data
        return [data[s:e] for s, e in zip(starts.tolist(), ends.tolist())]

    def padded(self, indices: Any, pad_value: Any = 0, max_len: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """A batch of sequences as one ``(B, L)`` array padded with ``pad_value``, and their lengths.

        ``L`` is the longest sequence of the batch, capped at ``max_len`` (longer ones are cut).
        """
        idx = positions(indices, self._n)
        if isinstance(idx, int):
            idx = np.array([idx], np.int64)
        starts, ends = self._spans(idx)
        lengths = ends - starts
        if max_len is not None:
            lengths = np.minimum(lengths, max_len)
        width = int(lengths.max()) if len(lengths) else 0
        out = np.full((len(idx), width), pad_value, dtype=self.dtype)
        columns = np.arange(width)
        mask = columns < lengths[:, None]
        out[mask] = self._data[(starts[:, None] + columns)[mask]]
        return out, lengths

    def get_single(self, index: int) -> np.ndarray:
        """``self[index]`` for one integer index."""
        return self[int(index)] if isinstance(index, (int, np.integer)) else self[index]

    def get_multiple(self, indices: Any) -> List[np.ndarray]:
        """``self[indices]`` for a slice or a list of indices."""
        return self.get_batch(indices)

    @property
    def num_documents(self) -> int:
        """How many documents the corpus has (``len(document_indices) - 1``)."""
        return len(self.document_indices) - 1

    def document(self, j: int) -> List[np.ndarray]:
        """The sequences of document ``j`` (negative counts from the end), in order."""
        j = position(j, self.num_documents)
        return self.get_batch(slice(int(self.document_indices[j]), int(self.document_indices[j + 1])))

    def validate(self) -> None:
        """Check every sequence (in chunks of bounded memory); MapFormatError names the first bad one."""
        for start in range(0, self._n, _CHUNK):
            self._spans(np.arange(start, min(start + _CHUNK, self._n)))

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, self._n, 1024):
            yield from self.get_batch(slice(start, start + 1024))

    def __repr__(self) -> str:
        return f"MegatronMap({self.prefix!r}, {self._n} sequences, {self.num_documents} documents, {self.dtype})"

    def close(self) -> None:
        """Forget the corpus; views already returned stay valid (each keeps the mapping alive)."""
        self._data = np.empty(0, self.dtype)
        self._n = self._size = 0
        self._lengths = self._pointers = _EMPTY_MV
        self._lengths_np = self._pointers_np = np.empty(0, np.int64)

    def __enter__(self) -> "MegatronMap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        return (MegatronMap, (self.prefix,))


def _float_dtype(lengths: np.ndarray, pointers: np.ndarray, bin_size: int, default: np.dtype) -> np.dtype:
    """float32 or float64 for codes 6 and 7, whose meaning differs between tables: see the module docstring."""
    if len(lengths):
        fits = [d for d in (np.dtype(np.float32), np.dtype(np.float64)) if int(pointers[-1]) + int(lengths[-1]) * d.itemsize == bin_size]
        if len(fits) == 1:
            return fits[0]
    return default


def _check_pointers(idx: str, lengths: np.ndarray, pointers: np.ndarray, itemsize: int) -> None:
    """Every pointer is the prefix sum of the lengths before it times the element size (as
    every writer lays sequences out), in chunks of bounded memory."""
    at = 0
    for start in range(0, len(lengths), _CHUNK):
        sizes = lengths[start : start + _CHUNK].astype(np.int64) * itemsize
        expected = np.cumsum(sizes) - sizes + at
        bad = (pointers[start : start + _CHUNK] != expected) | (sizes < 0)
        if bad.any():
            j = int(np.argmax(bad))
            i = start + j
            if sizes[j] < 0:
                raise MapFormatError(f"{idx}: sequence {i} has a negative length {int(lengths[i])}")
            if i == 0:
                raise MapFormatError(f"{idx}: sequence 0 starts at byte {int(pointers[0])}, not 0")
            raise MapFormatError(f"{idx}: sequence {i - 1} has {int(lengths[i - 1])} elements of {itemsize} bytes, so sequence {i} "
                                 f"should start at byte {int(expected[j])}, but starts at {int(pointers[i])}")
        at = int(expected[-1] + sizes[-1])


def _check_documents(idx: str, documents: np.ndarray, n: int) -> None:
    if not len(documents):
        raise MapFormatError(f"{idx}: has no document indices; there must be at least one (0)")
    if documents[0] != 0:
        raise MapFormatError(f"{idx}: the document indices start at {documents[0]}, not 0")
    if documents[-1] != n:
        raise MapFormatError(f"{idx}: the document indices end at {documents[-1]}, not at the sequence count {n}")
    for start in range(0, len(documents) - 1, _CHUNK):
        chunk = documents[start : start + _CHUNK + 1]
        down = np.diff(chunk) < 0
        if down.any():
            j = start + int(np.argmax(down))
            raise MapFormatError(f"{idx}: the document indices decrease at document {j}: {documents[j]} then {documents[j + 1]}")
