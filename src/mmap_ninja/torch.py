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

``__getitems__`` returns a :class:`MapBatch`: a list that also carries the dataset and the
indices. Its items, when they are tuples or dicts, are built on first use, so that
``PadCollate`` can pad and stack the fields it reads from the maps without any per-sample
tensor (it builds items only for the fields it cannot read itself, such as strings). Any
other collate function touches the list and gets every item, as ``dataset[i]`` gives it.

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

_GATHERED = "gathered"  # the first row of a gathered batch: (batch tensor, its rows)
_SHARED = "shared"  # the first zero-copy item of a same-shape field: all its items

# What the default collate recognises, by the id of the first item. Kept beside the tensors,
# not in their attributes, so that an item pickles (torch.save) as any tensor does; an entry
# goes when its item does (weak reference callback).
_MARKS: Dict[int, Tuple[str, Any, Any]] = {}


def _mark(first: "torch.Tensor", kind: str, value: Any) -> None:
    key = id(first)
    _MARKS[key] = (kind, value, weakref.ref(first, lambda _ref, key=key: _MARKS.pop(key, None)))


def _marked(first: Any, kind: str) -> Any:
    """What ``first`` was marked with as ``kind``, or None."""
    entry = _MARKS.get(id(first))
    if entry is None or entry[0] != kind or entry[2]() is not first:
        return None
    return entry[1]


def _empty_batch(shape: Tuple[int, ...], dtype: np.dtype, crosses: bool = True) -> "torch.Tensor":
    """A new tensor for a batch; in a DataLoader worker, when it ``crosses`` to the main
    process, in shared memory (as ``default_collate`` allocates there), so that sending it
    copies nothing. A batch that a transform will replace never crosses: new shared memory
    costs several times the gather (its pages are zeroed and faulted in one by one)."""
    if not crosses or get_worker_info() is None:  # numpy's allocator asks for huge pages: fewer page faults
        return torch.from_numpy(np.empty(shape, dtype))
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=torch_dtype).set_(storage, 0, shape)


def _rows_of(batch: "torch.Tensor") -> List["torch.Tensor"]:
    """The rows of a freshly gathered batch, marked so that the default collate returns ``batch``."""
    rows = batch.unbind(0)
    if rows:  # weakly: a row that held the others strongly would be a cycle only the collector frees
        _mark(rows[0], _GATHERED, (batch, [weakref.ref(r) for r in rows]))
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
        _mark(items[0], _SHARED, [weakref.ref(t) for t in items])
    return items


def _tensors(samples: List[Any], copy: bool, crosses: bool = True) -> List[Any]:
    """The items of one field of a batch, from its samples as the map gave them."""
    if not copy:
        return _shared_items(samples)
    if _same_shape(samples):
        batch = _empty_batch((len(samples),) + samples[0].shape, samples[0].dtype, crosses)
        np.stack(samples, out=batch.numpy())
        return _rows_of(batch)
    if _ragged_1d(samples):  # one copy into one buffer, cut into views in one call
        lengths = [len(s) for s in samples]
        return list(torch.from_numpy(np.concatenate(samples)).split(lengths))
    return [to_tensor(s, True) for s in samples]


def _collate_tensors(batch: Sequence[Any], *, collate_fn_map: Optional[Dict] = None) -> Any:
    """``default_collate`` of tensors: the rows of a batch ``MapDataset`` gathered, all of them
    in order, give that batch (once); anything else is stacked by PyTorch's own function."""
    gathered = _marked(batch[0], _GATHERED)
    if gathered is not None:
        whole, rows = gathered
        if len(batch) == len(rows) and all(a is row() for a, row in zip(batch, rows)):
            _MARKS.pop(id(batch[0]), None)  # a second collate of the same rows stacks a copy
            return whole
    shared = _marked(batch[0], _SHARED)
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
    if not idx.size:
        return []
    low, high = int(idx.min()), int(idx.max())
    if not (-length <= low and high < length):
        bad = int(idx[(idx < -length) | (idx >= length)][0])
        raise IndexError(f"index {bad} is out of range for a dataset of {length} items")
    return (np.where(idx < 0, idx + length, idx) if low < 0 else idx).tolist()


class MapBatch(list):
    """The items of one batch, as ``MapDataset.__getitems__`` reads them for a DataLoader.

    To every collate function it is a list of the items ``dataset[i]`` gives (same types,
    same values). When the items are tuples or dicts (zipped maps, records) and there is no
    transform, they are built on first use, all at once: :class:`PadCollate` reads the
    fields it pads or stacks straight from the maps (``maps`` and ``indices``) and builds
    items only for the fields it cannot (``column``). Items that are plain tensors or
    strings (one map alone) are built at once, because C code such as ``torch.stack`` or
    ``str.join`` reads a list's memory without asking it for its items.
    """

    def __init__(self, dataset: "MapDataset", indices: List[int], items: Optional[List[Any]] = None):
        super().__init__(() if items is None else items)
        self.dataset = dataset
        self.indices = indices
        self._pending = items is None  # items not built yet: the list's memory is empty

    @property
    def maps(self) -> Tuple[Any, ...]:
        """The dataset's maps, which the batch's items were read from."""
        return self.dataset.maps

    @property
    def transformed(self) -> bool:
        """True when the dataset has a ``transform`` (applied to each item)."""
        return self.dataset.transform is not None

    def _build(self) -> None:
        if self._pending:
            items = self.dataset._items(self.indices)
            list.extend(self, items)
            self._pending = False

    def column(self, field: int) -> List[Any]:
        """The items of one field (of one map of the zip), built from the map when the items
        are not; for a single map, the items themselves."""
        if len(self.maps) == 1:
            self._build()
            return list(list.__iter__(self))
        if not self._pending:
            return [item[field] for item in list.__iter__(self)]
        return self.dataset._column(self.maps[field], self.indices)

    def __len__(self) -> int:
        return len(self.indices) if self._pending else list.__len__(self)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __reduce_ex__(self, protocol: Any) -> Any:  # pickled (or copied) as the plain list it is
        self._build()
        return list, (list(list.__iter__(self)),)


def _building(name: str) -> Callable[..., Any]:
    """``list.<name>``, after the batch's items are built."""
    method = getattr(list, name)

    def call(self: MapBatch, *args: Any, **kwargs: Any) -> Any:
        self._build()
        return method(self, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


for _name in ("__getitem__", "__iter__", "__reversed__", "__contains__", "__eq__", "__ne__", "__lt__", "__le__",
              "__gt__", "__ge__", "__add__", "__mul__", "__rmul__", "__iadd__", "__imul__", "__setitem__",
              "__delitem__", "__repr__", "append", "extend", "insert", "pop", "remove", "clear", "index", "count",
              "copy", "sort", "reverse"):
    setattr(MapBatch, _name, _building(_name))
MapBatch.__hash__ = None  # type: ignore[assignment]  # a list: unhashable


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
        same-shape fields gathered into one batch tensor (see the module docstring). The
        result is a :class:`MapBatch`: a list of those items, built on first use when they
        are tuples or dicts."""
        indices = _positions(indices, len(self))
        lazy = self.transform is None and (len(self.maps) > 1 or isinstance(self.maps[0], RecordsMmap))
        return MapBatch(self, indices, None if lazy else self._items(indices))

    def _items(self, indices: List[int]) -> List[Any]:
        """The items at ``indices`` (checked positions), every map read once."""
        crosses = self.transform is None  # else the transform's outputs are what a collate batches
        columns = [self._column(m, indices, crosses) for m in self.maps]
        items = columns[0] if len(columns) == 1 else list(zip(*columns))
        if self.transform is not None:
            items = [self.transform(item) for item in items]
        return items

    def _column(self, source: Any, indices: List[int], crosses: bool = True) -> List[Any]:
        """The items of one map at ``indices``: each sample once, as a tensor (or str, or dict)."""
        if isinstance(source, RecordsMmap):
            names = list(source.fields)
            fields = [self._column(source[name], indices, crosses) for name in names]
            return [dict(zip(names, values)) for values in zip(*fields)]
        if _gathers_from_map(source):
            plain = source.view(np.ndarray)
            if not self.copy:
                return _shared_items([plain[i : i + 1].reshape(plain.shape[1:]) for i in indices])
            return _rows_of(_gather(source, indices, crosses))
        samples = source[indices] if _batch_indexable(source) else [source[i] for i in indices]
        return _tensors(list(samples), self.copy, crosses)

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


def _gather(source: np.ndarray, indices: List[int], crosses: bool = True) -> "torch.Tensor":
    """Samples ``indices`` of a numeric numpy map gathered straight into one new tensor."""
    plain = source.view(np.ndarray)
    out = _empty_batch((len(indices),) + plain.shape[1:], plain.dtype, crosses)
    np.take(plain, indices, axis=0, out=out.numpy())
    return out


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
        if isinstance(batch, MapBatch) and not batch.transformed:
            return self._from_maps(batch)
        if isinstance(batch[0], dict):
            return self._collate_records(batch, ([item[name] for item in batch] for name in batch[0]))
        zipped = isinstance(batch[0], (tuple, list))
        columns = list(zip(*batch)) if zipped else [list(batch)]
        out = [self._collate_items(column) for column in columns]
        return tuple(out) if zipped else out[0]

    def _from_maps(self, batch: MapBatch) -> Any:
        """A batch that ``MapDataset`` read: each field from its map, items only where needed."""
        maps = batch.maps
        if len(maps) == 1 and isinstance(maps[0], RecordsMmap):
            source = maps[0]
            columns = (_LazyColumn(batch.dataset, source[name], batch.indices) for name in source.fields)
            return self._collate_records(batch, columns, source)
        out = [self._field(source, batch, k) for k, source in enumerate(maps)]
        return tuple(out) if len(maps) > 1 else out[0]

    def _field(self, source: Any, batch: MapBatch, field: int) -> Any:
        if _is_ragged_1d(source):
            return self._padded(source, batch.indices, lambda: batch.column(field))
        if _gathers_from_map(source):
            return _gather(source, batch.indices)
        if isinstance(source, SpansMap) and not isinstance(source, RaggedMmap):
            return list(batch.column(field))  # strings
        return default_collate(batch.column(field))  # labels and the like

    def _collate_items(self, column: Sequence[Any]) -> Any:
        """Items of one field: 1-D tensors padded, strings as a list, anything else
        through ``default_collate``."""
        if all(isinstance(s, torch.Tensor) and s.dim() == 1 for s in column):
            return _pad_tensors(column, self.pad_value, self.max_len)
        if all(isinstance(s, str) for s in column):
            return list(column)
        return default_collate(list(column))

    def _padded(self, source: Any, indices: List[int], items: Callable[[], Sequence[Any]], as_list: bool = False) -> Any:
        """Samples of a ragged map padded straight from it; a map of multi-axis samples is
        stacked when they have one shape (from ``items()``); otherwise they are a list with
        ``as_list`` (a field of a record), an error naming the sample without."""
        try:
            padded, lengths = source.padded(indices, pad_value=self.pad_value, max_len=self.max_len)
        except ValueError:  # samples with several axes
            column = list(items())
            if all(isinstance(v, torch.Tensor) and v.dim() > 1 and v.shape == column[0].shape for v in column):
                return default_collate(column)
            return column if as_list else _pad_tensors(column, self.pad_value, self.max_len)
        # both are new arrays, so the tensors share them without a copy or a warning
        return torch.from_numpy(padded), torch.from_numpy(np.asarray(lengths, np.int64))

    def _collate_records(self, batch: Sequence[Any], columns: Any, source: Optional[RecordsMmap] = None) -> Dict[str, Any]:
        """Records (dicts) as one dict: ragged 1-D fields padded, same-shape fields stacked,
        strings and multi-axis ragged fields as lists. With ``source``, fields are read from it."""
        names = list(source.fields) if source is not None else list(batch[0])
        out: Dict[str, Any] = {}
        for name, column in zip(names, columns):
            kind = source.fields.get(name) if source is not None else None
            if kind == "ragged":
                out[name] = self._padded(source[name], batch.indices, column, as_list=True)  # type: ignore[attr-defined]
            elif kind == "numpy":
                out[name] = _gather(source[name], batch.indices)  # type: ignore[attr-defined]
            else:
                values = column() if callable(column) else column
                if kind == "strings" or all(isinstance(v, str) for v in values):
                    out[name] = list(values)
                elif all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in values):
                    out[name] = _pad_tensors(values, self.pad_value, self.max_len)
                elif all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values):
                    out[name] = default_collate(values)
                else:
                    out[name] = list(values)
        return out

    def __repr__(self) -> str:
        return f"PadCollate(pad_value={self.pad_value!r}, max_len={self.max_len!r})"


class _LazyColumn:
    """The items of one field of a map, read only when called."""

    def __init__(self, dataset: MapDataset, source: Any, indices: List[int]):
        self.dataset, self.source, self.indices = dataset, source, indices

    def __call__(self) -> List[Any]:
        return self.dataset._column(self.source, self.indices)


def pad_collate(batch: Sequence[Any]) -> Any:
    """``PadCollate()`` with padding 0: pass it as a DataLoader's ``collate_fn``."""
    return PadCollate()(batch)

