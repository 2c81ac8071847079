"""PyTorch datasets over maps (``pip install 'mmap_ninja[torch]'``).

``import mmap_ninja`` never imports this module or PyTorch; ``import mmap_ninja.torch`` does.

- :class:`MapDataset` reads one map, or several maps zipped (images with labels), as a
  map-style ``torch.utils.data.Dataset``. It pickles by reference (the maps' paths), so
  ``DataLoader(num_workers>0)`` workers, forked or spawned, open the maps themselves and no
  sample data is copied into them.
- :func:`pad_collate` / :class:`PadCollate` batch ragged 1-D samples (token sequences) as a
  padded ``(B, L)`` tensor plus their lengths.

The batch path
--------------
A DataLoader (PyTorch >= 2.2) asks ``MapDataset.__getitems__`` for the whole batch. With
``copy=True`` (the default), the samples of a field that have one shape are gathered from
the map straight into one new ``(B, ...)`` tensor (one copy of each sample; in a worker, in
shared memory, so that the batch crosses to the main process without another copy), and the
batch's items are views of its rows. ``default_collate`` (and ``PadCollate``) recognise
those rows, in that order, and return the gathered tensor itself instead of stacking them
again: registered in ``default_collate_fn_map`` for ``torch.Tensor``, as PyTorch documents
for extending ``default_collate``; every other batch of tensors is stacked as before. A
collate function of your own gets what it always got: a list of items, each a writable
tensor of its own (here, a row of the gathered batch).

Which calls copy
----------------
- ``copy=True`` (the default): every tensor handed out is new memory: ``dataset[i]`` copies
  the sample once; a batch gathers each sample once into the batch tensor. Writing to them
  is yours to do and changes nothing else.
- ``copy=False``: ``dataset[i]`` and a batch's items share the map's memory, no copy. Maps
  opened read-only are mapped copy-on-write (see ``mmap_ninja.reads``): writing to such a
  tensor never crashes the process and never changes the file, but later reads of that
  sample *through the same opened map in this process* see the write (the page became this
  process's own copy). Memory that cannot be shared that safely (a map opened ``r+``, a
  mapping the kernel would not make private, a read-only buffer) is copied instead. The
  default collate then stacks the items into the batch tensor: still one copy per sample.
- Padding always builds new tensors (``RaggedMmap.padded`` gathers straight from the map).
- Strings come out of a ``StringsMmap`` as Python ``str``; a batch of them is a list of str.
- A :class:`~mmap_ninja.records.RecordsMmap` gives dicts: each field as a tensor, strings as
  ``str``. ``PadCollate`` batches them as a dict too: ragged 1-D fields padded, same-shape
  fields stacked, strings and multi-axis ragged fields (images of several sizes) as lists.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset, default_collate, get_worker_info
    from torch.utils.data._utils.collate import default_collate_fn_map
except ImportError:  # pragma: no cover - exercised only without torch
    raise ImportError("mmap_ninja.torch needs PyTorch: pip install 'mmap_ninja[torch]'") from None

from . import reads
from .megatron import MegatronMap
from .ragged import RaggedMmap
from .records import RecordsMmap
from .spans import SpansMap
from .wrapped import Wrapped

__all__ = ["MapDataset", "MapBatch", "PadCollate", "pad_collate", "to_tensor"]

_NUMERIC = "biufc"  # numpy dtype kinds a tensor can hold


def to_tensor(sample: Any, copy: bool = True) -> Any:
    """``sample`` as a tensor when it is a numpy array or scalar; anything else unchanged.

    With ``copy`` the data is copied into new memory. Without, the tensor shares the
    sample's memory where writing to it can neither crash the process nor change a file
    (copy-on-write maps, writable process memory), and copies it otherwise.
    """
    if isinstance(sample, np.ndarray):
        if not copy and reads.is_private(sample):
            shared = sample.view(np.ndarray)
            if not shared.flags.writeable:
                shared.flags.writeable = True  # private memory: numpy allows it, and so may we
            try:
                return torch.from_numpy(shared)
            except ValueError:  # negative strides and the like: torch needs a copy
                pass
        return torch.from_numpy(np.array(sample, copy=True, subok=False, order="C"))
    if isinstance(sample, np.generic):
        return torch.from_numpy(np.array(sample))
    return sample


def _to_tensors(sample: Any, copy: bool) -> Any:
    """``to_tensor`` of a sample, or of every field of a record (a dict)."""
    if isinstance(sample, dict):
        return {name: to_tensor(value, copy) for name, value in sample.items()}
    return to_tensor(sample, copy)


def _open(source: Any) -> Any:
    """A map object for ``source``: maps and sequences as they are, paths opened read-only."""
    if isinstance(source, (str, os.PathLike)):
        from .generic import open_existing
        from .records import is_records_dir

        return RecordsMmap(source, mode="r") if is_records_dir(source) else open_existing(source, mode="r")
    if not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
        raise TypeError(f"expected a map, a path to one, or a sequence of samples; got {type(source).__name__}")
    return source


def _batch_indexable(source: Any) -> bool:
    """Whether ``source[list_of_indices]`` gives those samples in order (our maps)."""
    return isinstance(source, (SpansMap, Wrapped, MegatronMap))


# --- gathering a batch into one tensor ---------------------------------------------------------

_GATHERED = "_mmap_ninja_gathered"  # on the first row of a gathered batch: (batch tensor, its rows)
_SHARED = "_mmap_ninja_shared"  # on the first zero-copy item of a same-shape field: all its items


def _empty_batch(shape: Tuple[int, ...], dtype: np.dtype) -> "torch.Tensor":
    """A new tensor for a batch; in a DataLoader worker, in shared memory (as
    ``default_collate`` allocates there), so that sending it to the main process copies nothing."""
    if get_worker_info() is None:  # numpy's allocator asks for huge pages: fewer page faults
        return torch.from_numpy(np.empty(shape, dtype))
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=torch_dtype).set_(storage, 0, shape)


def _rows_of(batch: "torch.Tensor") -> List["torch.Tensor"]:
    """The rows of a freshly gathered batch, marked so that the default collate returns ``batch``."""
    rows = batch.unbind(0)
    if rows:  # weakly: a row that held the others strongly would be a cycle only the collector frees
        setattr(rows[0], _GATHERED, (batch, [weakref.ref(r) for r in rows]))
    return list(rows)


def _same_shape(samples: Sequence[Any]) -> bool:
    """Whether ``samples`` are numeric arrays of one shape and dtype (one tensor can hold them)."""
    if not samples or not all(type(s) is np.ndarray for s in samples):
        return False
    first = samples[0]
    if first.dtype.kind not in _NUMERIC:
        return False
    return all(s.shape == first.shape and s.dtype == first.dtype for s in samples)


def _ragged_1d(samples: Sequence[Any]) -> bool:
    """Whether ``samples`` are numeric 1-D arrays of one dtype (token sequences)."""
    if not samples or not all(type(s) is np.ndarray and s.ndim == 1 for s in samples):
        return False
    dtype = samples[0].dtype
    return dtype.kind in _NUMERIC and all(s.dtype == dtype for s in samples)


def _shared_items(samples: Sequence[Any]) -> List[Any]:
    """Zero-copy items of one field; when they have one shape, marked so that the default
    collate gathers them with one copy (numpy's, which is faster than ``torch.stack`` for
    small dtypes) into a new batch tensor, in shared memory in a worker."""
    items = [to_tensor(s, False) for s in samples]
    if _same_shape(samples):
        setattr(items[0], _SHARED, [weakref.ref(t) for t in items])
    return items


def _tensors(samples: List[Any], copy: bool) -> List[Any]:
    """The items of one field of a batch, from its samples as the map gave them."""
    if not copy:
        return _shared_items(samples)
    if _same_shape(samples):
        batch = _empty_batch((len(samples),) + samples[0].shape, samples[0].dtype)
        np.stack(samples, out=batch.numpy())
        return _rows_of(batch)
    if _ragged_1d(samples):  # one copy into one buffer, cut into views in one call
        lengths = [len(s) for s in samples]
        return list(torch.from_numpy(np.concatenate(samples)).split(lengths))
    return [to_tensor(s, True) for s in samples]


def _collate_tensors(batch: Sequence[Any], *, collate_fn_map: Optional[Dict] = None) -> Any:
    """``default_collate`` of tensors: the rows of a batch ``MapDataset`` gathered, all of them
    in order, give that batch (once); anything else is stacked by PyTorch's own function."""
    gathered = getattr(batch[0], _GATHERED, None)
    if gathered is not None:
        whole, rows = gathered
        if len(batch) == len(rows) and all(a is row() for a, row in zip(batch, rows)):
            delattr(batch[0], _GATHERED)  # a second collate of the same rows stacks a copy
            return whole
    shared = getattr(batch[0], _SHARED, None)
    if shared is not None and len(batch) == len(shared) and all(a is item() for a, item in zip(batch, shared)):
        arrays = [t.numpy() for t in batch]
        whole = _empty_batch((len(arrays),) + arrays[0].shape, arrays[0].dtype)
        np.stack(arrays, out=whole.numpy())
        return whole
    return _stack_tensors(batch, collate_fn_map=collate_fn_map)


_stack_tensors = default_collate_fn_map[torch.Tensor]
if getattr(_stack_tensors, "__module__", None) != __name__:  # not twice, e.g. on a reload
    default_collate_fn_map[torch.Tensor] = _collate_tensors


def _positions(indices: Sequence[Any], length: int) -> List[int]:
    """``indices`` as non-negative ints below ``length`` (negative ones count from the end)."""
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu" and not (idx.size == 0 or idx.dtype == object and all(isinstance(i, (int, np.integer)) for i in idx.tolist())):
        raise TypeError(f"MapDataset indices must be integers, not {idx.dtype}")
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    if idx.size and not (-length <= idx.min() and idx.max() < length):
        bad = int(idx[(idx < -length) | (idx >= length)][0])
        raise IndexError(f"index {bad} is out of range for a dataset of {length} items")
    return np.where(idx < 0, idx + length, idx).tolist()


def _padded_by_the_caller(frame: Any) -> bool:
    """Whether the batch being read goes straight to a ``PadCollate``: the caller is a
    DataLoader fetcher (PyTorch's ``_MapDatasetFetcher.fetch`` calls ``__getitems__`` and
    hands the result to its ``collate_fn``) whose collate function is exactly ``PadCollate``.
    Then the ragged 1-D fields it pads from the map need no per-sample tensors at all. Any
    other caller, or a PyTorch whose fetcher looks different, gets every item as usual."""
    fetcher = frame.f_locals.get("self") if frame is not None and frame.f_code.co_name == "fetch" else None
    return type(getattr(fetcher, "collate_fn", None)) is PadCollate and getattr(fetcher, "dataset", None) is not None


def _pads_from_map(source: Any) -> bool:
    """Whether ``PadCollate`` pads this map's samples straight from it (1-D samples only)."""
    if isinstance(source, MegatronMap):
        return True
    return isinstance(source, RaggedMmap) and source.wrapper_fn is None and getattr(source, "_shape_width", 0) == 1


class MapBatch(list):
    """The items of one batch, as ``MapDataset`` reads them for a DataLoader.

    A plain list of items to every collate function; ``pad_collate`` also uses where they
    came from (``maps`` and ``indices``) to pad ragged samples straight from the map.
    """

    maps: Tuple[Any, ...] = ()
    indices: List[int] = []
    transformed = False


class MapDataset(Dataset):
    """Samples of one map, or of several maps zipped, for ``torch.utils.data.DataLoader``.

    ``MapDataset(images)[i]`` is sample ``i`` as a tensor; ``MapDataset(images, labels)[i]``
    is the tuple ``(images[i], labels[i])`` as tensors (strings stay ``str``). ``maps`` are
    RaggedMmap, StringsMmap, RecordsMmap or np_ninja maps, paths of maps (opened
    read-only), or any sequences of the same length. ``transform`` is applied to every item
    after conversion, so ``dataset[i] == transform(untransformed[i])``; with
    ``num_workers > 0`` under spawn it must be picklable (a module-level function, not a
    lambda). See the module docstring for ``copy`` and for how batches are gathered.
    """

    def __init__(self, *maps: Any, transform: Optional[Callable[[Any], Any]] = None, copy: bool = True):
        if not maps:
            raise TypeError("MapDataset needs at least one map")
        self.maps = tuple(_open(m) for m in maps)
        lengths = [len(m) for m in self.maps]
        if len(set(lengths)) > 1:
            raise ValueError(f"maps zipped together must have as many samples each; got lengths {lengths}")
        self.transform = transform
        self.copy = copy

    def __len__(self) -> int:
        return len(self.maps[0])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"MapDataset indices must be integers, not {type(index).__name__}")
        samples = tuple(_to_tensors(m[index], self.copy) for m in self.maps)
        item = samples[0] if len(samples) == 1 else samples
        return item if self.transform is None else self.transform(item)

    def __getitems__(self, indices: Sequence[int]) -> MapBatch:
        """The items at ``indices`` (what a DataLoader asks for per batch): each map read once,
        same-shape fields gathered into one batch tensor (see the module docstring)."""
        indices = _positions(indices, len(self))
        lean = self.transform is None and _padded_by_the_caller(sys._getframe(1))
        columns = [self._column(m, indices, lean) for m in self.maps]
        items = columns[0] if len(columns) == 1 else list(zip(*columns))
        if self.transform is not None:
            items = [self.transform(item) for item in items]
        batch = MapBatch(items)
        batch.maps, batch.indices, batch.transformed = self.maps, indices, self.transform is not None
        return batch

    def _column(self, source: Any, indices: List[int], lean: bool = False) -> List[Any]:
        if lean and (_pads_from_map(source) or _gathers_from_map(source)):
            return [None] * len(indices)  # PadCollate reads these from the map itself
        if isinstance(source, RecordsMmap):
            names = list(source.fields)
            alone = lean and len(self.maps) == 1  # PadCollate pads a record's fields only when it comes alone
            fields = [self._column(source[name], indices, alone) for name in names]
            return [dict(zip(names, values)) for values in zip(*fields)]
        if isinstance(source, np.ndarray) and source.ndim and source.dtype.kind in _NUMERIC:
            plain = source.view(np.ndarray)
            if not self.copy:
                return _shared_items([plain[i : i + 1].reshape(plain.shape[1:]) for i in indices])
            batch = _empty_batch((len(indices),) + plain.shape[1:], plain.dtype)
            np.take(plain, indices, axis=0, out=batch.numpy())
            return _rows_of(batch)
        samples = source[indices] if _batch_indexable(source) else [source[i] for i in indices]
        return _tensors(list(samples), self.copy)

    def __repr__(self) -> str:
        maps = ", ".join(repr(m) if isinstance(m, (SpansMap, Wrapped)) else type(m).__name__ for m in self.maps)
        return f"MapDataset({maps}, {len(self)} items, copy={self.copy})"


# --- padding ragged samples -------------------------------------------------------------------


def _pad_tensors(samples: Sequence["torch.Tensor"], pad_value: Any, max_len: Optional[int]) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """1-D tensors as one (B, L) tensor filled with ``pad_value`` past each length, and the lengths."""
    bad = next((i for i, s in enumerate(samples) if not isinstance(s, torch.Tensor) or s.dim() != 1), None)
    if bad is not None:
        what = tuple(samples[bad].shape) if isinstance(samples[bad], torch.Tensor) else type(samples[bad]).__name__
        raise ValueError(f"pad_collate pads 1-D samples; sample {bad} of the batch is {what}")
    lengths = torch.tensor([len(s) for s in samples], dtype=torch.int64)
    if max_len is not None:
        lengths = lengths.clamp(max=max_len)
    width = int(lengths.max()) if len(samples) else 0
    dtype = samples[0].dtype if samples else torch.float32
    out = torch.full((len(samples), width), pad_value, dtype=dtype)
    mask = torch.arange(width) < lengths[:, None]
    if width:
        out[mask] = torch.cat([s[:width] for s in samples]).to(dtype)
    return out, lengths


def _is_ragged_1d(source: Any) -> bool:
    return (isinstance(source, RaggedMmap) and source.wrapper_fn is None) or isinstance(source, MegatronMap)


def _gathers_from_map(source: Any) -> bool:
    """Whether a batch of ``source`` can be gathered into one tensor straight from it."""
    return isinstance(source, np.ndarray) and source.ndim > 0 and source.dtype.kind in _NUMERIC


def _stack(source: Any, batch: Any, column: Sequence[Any]) -> Any:
    """``default_collate`` of a column, or, where ``MapDataset`` left it to the collate
    (``None`` items), the same-shape samples gathered from the map into one tensor."""
    if column and column[0] is None:
        plain = source.view(np.ndarray)
        out = _empty_batch((len(batch.indices),) + plain.shape[1:], plain.dtype)
        np.take(plain, batch.indices, axis=0, out=out.numpy())
        return out
    return default_collate(list(column))


class PadCollate:
    """A DataLoader ``collate_fn`` that pads ragged 1-D samples: ``(padded (B, L), lengths (B,))``.

    For a batch read by :class:`MapDataset` (without a transform), the fields that come from
    a RaggedMmap of 1-D samples are padded straight from the map with ``RaggedMmap.padded``
    (multi-axis samples of one shape are stacked); the other fields (labels...) go through
    ``default_collate``, strings stay lists of ``str``. For any other batch, every field
    whose samples are 1-D tensors is padded. ``max_len`` cuts longer samples. Picklable, so
    it works with spawned workers.
    """

    def __init__(self, pad_value: Any = 0, max_len: Optional[int] = None):
        self.pad_value = pad_value
        self.max_len = max_len

    def __call__(self, batch: Sequence[Any]) -> Any:
        if not len(batch):
            raise ValueError("cannot collate an empty batch")
        if isinstance(batch[0], dict):
            return self._collate_records(batch)
        zipped = isinstance(batch[0], (tuple, list))
        columns = list(zip(*batch)) if zipped else [list(batch)]
        sources: Sequence[Any] = ()
        if isinstance(batch, MapBatch) and not batch.transformed and len(batch.maps) == len(columns):
            sources = batch.maps
        out = []
        for field, column in enumerate(columns):
            source = sources[field] if sources else None
            if source is not None and _is_ragged_1d(source):
                out.append(self._from_map(source, batch.indices, column))  # type: ignore[attr-defined]
            elif source is None and all(isinstance(s, torch.Tensor) and s.dim() == 1 for s in column):
                out.append(_pad_tensors(column, self.pad_value, self.max_len))
            elif source is not None and isinstance(source, SpansMap) and not isinstance(source, RaggedMmap):
                out.append(list(column))  # strings
            else:
                out.append(_stack(source, batch, column))
        return tuple(out) if zipped else out[0]

    def _from_map(self, source: Any, indices: List[int], column: Sequence[Any]) -> Tuple["torch.Tensor", "torch.Tensor"]:
        try:
            padded, lengths = source.padded(indices, pad_value=self.pad_value, max_len=self.max_len)
        except ValueError:  # a map of multi-axis samples: stacked when they have one shape
            if all(isinstance(v, torch.Tensor) and v.dim() > 1 and v.shape == column[0].shape for v in column):
                return default_collate(list(column))
            return _pad_tensors(column, self.pad_value, self.max_len)
        # both are new arrays, so the tensors share them without a copy or a warning
        return torch.from_numpy(padded), torch.from_numpy(np.asarray(lengths, np.int64))

    def _collate_records(self, batch: Sequence[Any]) -> Dict[str, Any]:
        """Records (dicts) as one dict: ragged 1-D fields padded, same-shape fields stacked,
        strings and multi-axis ragged fields as lists."""
        source = None
        if isinstance(batch, MapBatch) and not batch.transformed and len(batch.maps) == 1 and isinstance(batch.maps[0], RecordsMmap):
            source = batch.maps[0]
        out: Dict[str, Any] = {}
        for name in batch[0]:
            column = [item[name] for item in batch]
            kind = source.fields.get(name) if source is not None else None
            if kind == "ragged":
                try:
                    padded, lengths = source[name].padded(batch.indices, pad_value=self.pad_value, max_len=self.max_len)
                except ValueError:  # samples with several axes: they cannot share one tensor
                    out[name] = list(column)
                else:
                    out[name] = (torch.from_numpy(padded), torch.from_numpy(np.asarray(lengths, np.int64)))
            elif kind == "numpy":
                out[name] = _stack(source[name], batch, column)
            elif kind == "strings" or all(isinstance(v, str) for v in column):
                out[name] = list(column)
            elif all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in column):
                out[name] = _pad_tensors(column, self.pad_value, self.max_len)
            elif all(isinstance(v, torch.Tensor) and v.shape == column[0].shape for v in column):
                out[name] = default_collate(column)
            else:
                out[name] = list(column)
        return out

    def __repr__(self) -> str:
        return f"PadCollate(pad_value={self.pad_value!r}, max_len={self.max_len!r})"


def pad_collate(batch: Sequence[Any]) -> Any:
    """``PadCollate()`` with padding 0: pass it as a DataLoader's ``collate_fn``."""
    return PadCollate()(batch)

