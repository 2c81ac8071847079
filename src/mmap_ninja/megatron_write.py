"""Writing token corpora in the format of Megatron-LM and fairseq, inspecting and converting them.

The format is described in ``megatron_read.py``; the public module is ``megatron.py``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from . import fs
from .errors import MapFormatError
from .megatron_read import _CHUNK, _CODE_OF, _DOCS, _HEAD, _MAX_LENGTH, MAGIC, MEGATRON_DTYPES, VERSION, MegatronMap, PathLike, _prefix
from .progress import batched, progress
from .samples import as_array, cast_losslessly, common_dtype, prepare_arrays

# -- writing ---------------------------------------------------------------------------------


def _storable(dtype: Any, where: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in _CODE_OF:
        names = ", ".join(MEGATRON_DTYPES.values())
        raise TypeError(f"{where} dtype {dtype}, which a Megatron-LM corpus cannot hold; it holds {names}")
    return dtype


def _source_batches(samples: Any, batch_size: int, verbose: bool) -> Iterator[List[Any]]:
    """Batches of samples; maps are read a batch at a time with ``get_batch``."""
    total = len(samples) if hasattr(samples, "__len__") else None
    if hasattr(samples, "get_batch") and total is not None:
        flat: Iterable[Any] = (s for a in range(0, total, batch_size) for s in samples.get_batch(slice(a, a + batch_size)))
    else:
        flat = samples
    return batched(progress(flat, verbose, total, desc="writing corpus"), batch_size)


def _encode_batch(batch: List[Any], dtype: Optional[np.dtype], first: int) -> Tuple[np.ndarray, np.ndarray, np.dtype]:
    """The batch's elements concatenated (little-endian, in ``dtype``), its lengths, and the dtype."""
    arrays = [s if type(s) is np.ndarray else as_array(s, first + i) for i, s in enumerate(batch)]
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"sample {first + i} has shape {a.shape}; a Megatron corpus holds 1-D token sequences")
    if dtype is None:
        dtype = _storable(common_dtype(arrays), f"samples {first}..{first + len(arrays) - 1} have")
    lengths = np.fromiter((a.size for a in arrays), np.int64, len(arrays))
    too_long = lengths > _MAX_LENGTH
    if too_long.any():
        i = int(np.argmax(too_long))
        raise ValueError(f"sample {first + i} has {lengths[i]} elements; a Megatron index records lengths as int32 (at most {_MAX_LENGTH})")
    found = {a.dtype for a in arrays}
    if len(found) == 1:  # the common case: one cast check for the whole batch
        flat = np.concatenate(arrays) if len(arrays) > 1 else arrays[0].reshape(-1)
        try:
            flat = cast_losslessly(flat, dtype, first)
        except (TypeError, ValueError):
            prepare_arrays(arrays, dtype, first)  # raises, naming the sample
            raise
    else:
        flat = np.concatenate(prepare_arrays(arrays, dtype, first))
    return flat.astype(dtype.newbyteorder("<"), copy=False), lengths, dtype


def _document_indices(document_ends: Any) -> np.ndarray:
    ends = np.asarray(list(document_ends) if not hasattr(document_ends, "__len__") else document_ends)
    if ends.ndim != 1 or (ends.size and ends.dtype.kind not in "iu"):
        raise TypeError(f"document_ends must be a 1-D sequence of sequence counts (ints), got {ends.dtype} of shape {ends.shape}")
    indices = np.concatenate([[0], ends.astype(np.int64)])
    down = np.diff(indices) < 0
    if down.any():
        j = int(np.argmax(down))
        raise ValueError(f"document_ends must not decrease: document {j} ends at {indices[j + 1]}, before {indices[j]}")
    return indices


def _remove_stale_partials(folder: Path, pattern: str) -> None:
    """Remove the ``*.partial-PID-*`` files and folders matching ``pattern`` whose writer ``PID`` has died."""
    for leftover in folder.glob(pattern):
        try:
            pid = int(leftover.name.rsplit(".partial-", 1)[1].split("-")[0])
        except ValueError:  # not named by us
            continue
        if fs.process_alive(pid):
            continue
        if leftover.is_dir():
            fs.rmtree(leftover)
        else:
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass


def write(
    prefix: PathLike,
    samples: Iterable[Any],
    dtype: Any = None,
    document_ends: Optional[Iterable[int]] = None,
    batch_size: int = 1024,
    verbose: bool = False,
    sequence_modes: Optional[Iterable[int]] = None,
) -> MegatronMap:
    """Write ``samples`` (1-D arrays, or a RaggedMmap/MegatronMap of them) as ``prefix.bin`` + ``prefix.idx``.

    ``dtype`` is one of Megatron-LM's (uint8, int8, int16, int32, int64, float64, float32,
    uint16); without it the first batch decides. A sample that is not 1-D, or whose values
    ``dtype`` cannot hold exactly, raises an error naming it. ``document_ends`` gives the
    sequence count at the end of each document (default: one document per sequence);
    ``sequence_modes`` (one int8 per sequence) makes a multimodal index. Memory holds one
    batch of ``batch_size`` samples; ``verbose`` shows a progress bar.

    Crash-safe: both files are written under temporary names and renamed into place, the
    ``.idx`` last, so a corpus at ``prefix`` is either the old one, whole, or the new one,
    whole (in between there is no ``prefix.idx``). Returns the new corpus, opened.
    """
    prefix = os.fspath(prefix)
    if dtype is not None:
        dtype = _storable(dtype, "the requested")
    documents = None if document_ends is None else _document_indices(document_ends)
    modes = None if sequence_modes is None else np.asarray(list(sequence_modes) if not hasattr(sequence_modes, "__len__") else sequence_modes)
    if modes is not None:
        if modes.ndim != 1 or (modes.size and modes.dtype.kind not in "iu"):
            raise TypeError(f"sequence_modes must be a 1-D sequence of ints, got {modes.dtype} of shape {modes.shape}")
        modes = cast_losslessly(modes, np.dtype(np.int8), 0) if modes.size else modes.astype(np.int8)
    folder = os.path.dirname(prefix)
    if folder:
        fs.makedirs(folder)
    folder_path, name = os.path.split(prefix)
    _remove_stale_partials(Path(folder_path or "."), f"{name}.*.partial-*")
    tag = f"partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_bin, tmp_idx, tmp_ptr = (f"{prefix}.{part}.{tag}" for part in ("bin", "idx", "pointers"))
    created: List[str] = []
    try:
        with contextlib.ExitStack() as stack:
            files = []
            for path in (tmp_bin, tmp_idx, tmp_ptr):
                files.append(stack.enter_context(builtins.open(path, "x+b")))  # read too: copy_range preads
                created.append(path)
            bin_file, idx_file, ptr_file = files
            idx_file.seek(_HEAD.size + _DOCS.size)
            count, byte_offset = 0, 0
            for batch in _source_batches(samples, batch_size, verbose):
                flat, lengths, dtype = _encode_batch(batch, dtype, count)
                del batch
                bin_file.write(flat.data if flat.flags.c_contiguous else flat.tobytes())
                sizes = lengths * dtype.itemsize
                pointers = byte_offset + np.cumsum(sizes) - sizes
                idx_file.write(lengths.astype("<i4").tobytes())
                ptr_file.write(pointers.astype("<i8").tobytes())
                count += len(lengths)
                byte_offset += int(sizes.sum())
                del flat
            if dtype is None:
                raise ValueError("no samples were given and no dtype: a Megatron index needs a dtype; pass dtype=")
            ptr_file.flush()
            idx_file.flush()
            pointers_at = _HEAD.size + _DOCS.size + 4 * count
            fs.copy_range(ptr_file.fileno(), idx_file.fileno(), 8 * count, 0, pointers_at)
            idx_file.seek(pointers_at + 8 * count)  # explicit: with no sequences the file is still empty here
            if documents is None:
                for start in range(0, count + 1, _CHUNK):
                    idx_file.write(np.arange(start, min(start + _CHUNK, count + 1), dtype="<i8").tobytes())
                doc_count = count + 1
            else:
                if documents[-1] != count:
                    raise ValueError(f"document_ends ends at {documents[-1]} sequences, but {count} samples were given")
                idx_file.write(documents.astype("<i8").tobytes())
                doc_count = len(documents)
            if modes is not None:
                if len(modes) != count:
                    raise ValueError(f"sequence_modes has {len(modes)} entries, but {count} samples were given")
                idx_file.write(modes.tobytes())
            idx_file.flush()
            fs.pwrite(idx_file.fileno(), _HEAD.pack(MAGIC, VERSION, _CODE_OF[dtype], count) + _DOCS.pack(doc_count), 0)
        os.unlink(tmp_ptr)
        created.remove(tmp_ptr)
        # the old pair stays whole until here; then no .idx until the new pair is in place
        try:
            os.unlink(prefix + ".idx")
        except FileNotFoundError:
            pass
        fs.replace(tmp_bin, prefix + ".bin")
        created.remove(tmp_bin)
        fs.replace(tmp_idx, prefix + ".idx")
        created.remove(tmp_idx)
    except BaseException:
        for path in created:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        raise
    return MegatronMap(prefix)


# -- inspection (mmap-ninja info) -------------------------------------------------------------


def inspect(prefix: PathLike) -> Dict[str, Any]:
    """What ``mmap-ninja info`` reports about a corpus: counts, dtype, lengths, health.

    ``health`` is "healthy" or "unhealthy" (``problems`` says why). Reads the index and
    checks every sequence against the ``.bin`` size, never the tokens.
    """
    prefix = _prefix(prefix)
    report: Dict[str, Any] = {
        "path": prefix,
        "kind": "megatron",
        "format": None,
        "samples": None,
        "documents": None,
        "tokens": None,
        "dtype": None,
        "dtype_code": None,
        "multimodal": None,
        "lengths": None,
        "shapes": [],
        "bytes_on_disk": sum(os.path.getsize(p) for p in (prefix + ".idx", prefix + ".bin") if os.path.isfile(p)),
        "compression": "none",
        "health": "healthy",
        "problems": [],
    }
    try:
        m = MegatronMap(prefix)
        report.update(format=m.format, samples=len(m), documents=m.num_documents, dtype=m.dtype.name,
                      dtype_code=m.dtype_code, multimodal=m.sequence_modes is not None)
        m.validate()
        lengths = m.sequence_lengths
        report["tokens"] = int(lengths.sum(dtype=np.int64))
        if len(lengths):
            q = np.percentile(lengths, [0, 10, 50, 90, 99, 100])
            report["lengths"] = dict(zip(("min", "p10", "median", "p90", "p99", "max"), (float(x) for x in q)))
            report["lengths"]["mean"] = float(lengths.mean())
            report["shapes"] = [{"ndim": 1, "samples": len(m), "axes": [{"min": int(q[0]), "median": float(q[2]), "max": int(q[-1])}]}]
    except MapFormatError as e:
        report["health"] = "unhealthy"
        report["problems"] = [str(e)]
    return report


# -- conversion to and from a RaggedMmap (mmap-ninja convert / export) ----------------------------

DOCUMENTS = "documents"  # beside a converted corpus's samples: its document_indices, int64
SEQUENCE_MODES = "sequence_modes"  # and its sequence modes (int8), when it had them


def to_ragged(prefix: PathLike, out_dir: PathLike, batch_size: int = 1024, overwrite: bool = False, verbose: bool = False) -> Path:
    """Convert the corpus at ``prefix`` into a RaggedMmap at ``out_dir``.

    The document indices are kept in ``out_dir/documents`` (a same-shape int64 map, as
    ``document_indices``), and the sequence modes of a multimodal corpus in
    ``out_dir/sequence_modes``. The map appears at ``out_dir`` only complete, documents
    included; an existing map there is replaced only with ``overwrite``.
    """
    from . import layout
    from .numpy import from_ndarray
    from .ragged import RaggedMmap

    corpus = MegatronMap(prefix)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out_dir} already exists; pass overwrite=True to replace the map there")
        layout.check_can_build(out_dir)  # only ever replaces a map
    # everything is staged in one folder named as the library names builds of out_dir, so that
    # a killed conversion's leftovers go with the next build or conversion there
    fs.makedirs(out_dir.parent)
    _remove_stale_partials(out_dir.parent, f".{out_dir.name}.partial-*")
    stage_root = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-megatron-{uuid.uuid4().hex[:8]}"
    fs.mkdir(stage_root)
    stage = stage_root / "map"
    try:
        RaggedMmap.from_generator(stage, corpus, batch_size, verbose=verbose, dtype=corpus.dtype, total=len(corpus))
        from_ndarray(stage / DOCUMENTS, np.asarray(corpus.document_indices, np.int64))
        if corpus.sequence_modes is not None:
            from_ndarray(stage / SEQUENCE_MODES, np.asarray(corpus.sequence_modes))
        if out_dir.exists() and any(out_dir.iterdir()):
            fs.swap_in(stage, out_dir, stage_root / "old")  # one atomic step where the system has one
        else:
            fs.replace(stage, out_dir)
    finally:
        fs.rmtree(stage_root)
    return out_dir


def from_ragged(map_dir: PathLike, prefix: PathLike, dtype: Any = None, batch_size: int = 1024, verbose: bool = False) -> MegatronMap:
    """Write the RaggedMmap of 1-D samples at ``map_dir`` as the corpus ``prefix`` (see ``write``).

    Document boundaries come from ``map_dir/documents`` when it is there (as ``to_ragged``
    leaves them), else every sample is a document; ``map_dir/sequence_modes`` likewise.
    """
    from .numpy import open_existing as open_array
    from .ragged import RaggedMmap

    source = RaggedMmap(map_dir, mode="r")
    extras = {}
    for name, key in ((DOCUMENTS, "document_ends"), (SEQUENCE_MODES, "sequence_modes")):
        path = Path(map_dir) / name
        if path.is_dir():
            values = np.asarray(open_array(path, mode="r"))
            if name == DOCUMENTS and (values.ndim != 1 or not len(values) or values[0] != 0):
                raise MapFormatError(f"{path} should hold document indices starting at 0, found {values[:3]}... of shape {values.shape}")
            extras[key] = values[1:] if name == DOCUMENTS else values
    return write(prefix, source, dtype=dtype, batch_size=batch_size, verbose=verbose, **extras)
