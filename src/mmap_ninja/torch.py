"""PyTorch datasets over maps (``pip install 'mmap_ninja[torch]'``).

``import mmap_ninja`` never imports this module or PyTorch; ``import mmap_ninja.torch`` does.

- :class:`MapDataset` reads one map, or several maps zipped (images with labels), as a
  map-style ``torch.utils.data.Dataset``. It pickles by reference (the maps' paths), so
  ``DataLoader(num_workers>0)`` workers, forked or spawned, open the maps themselves and no
  sample data is copied into them.
- :func:`pad_collate` / :class:`PadCollate` batch ragged 1-D samples (token sequences) as a
  padded ``(B, L)`` tensor plus their lengths.

Which calls copy
----------------
- ``MapDataset(..., copy=True)`` (the default): every array sample is copied once, from the
  map into a new writable array, and the tensor shares that array (``torch.from_numpy``). The
  tensor is yours: writing to it is safe and changes nothing on disk. No warning.
- ``copy=False``: the tensor shares the map's memory, no copy at all. Such tensors must be
  treated as read-only: the map is mapped read-only, and writing to one crashes the process
  (SIGSEGV); on a map opened writable (an ``np_ninja`` map with ``mode="r+"``) a write changes
  the file. PyTorch warns about every non-writable array it wraps; that warning is silenced
  for these conversions only, knowingly (and without using up its once-per-process slot, so
  your own code still gets it).
- Batching always builds new tensors: ``default_collate`` stacks samples into one (a copy),
  and the pad collate fills a new padded tensor (for a batch of a ``RaggedMmap`` read by
  ``MapDataset``, straight from the map with ``RaggedMmap.padded``: one vectorised gather).
- Strings come out of a ``StringsMmap`` as Python ``str`` (decoded, so always new objects);
  a batch of them is a list of str.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset, default_collate
except ImportError:  # pragma: no cover - exercised only without torch
    raise ImportError("mmap_ninja.torch needs PyTorch: pip install 'mmap_ninja[torch]'") from None

from .megatron import MegatronMap
from .ragged import RaggedMmap
from .spans import SpansMap
from .wrapped import Wrapped

__all__ = ["MapDataset", "MapBatch", "PadCollate", "pad_collate", "to_tensor"]

_NOT_WRITABLE = "The given NumPy array is not writable"


def _shared_read_only(array: np.ndarray) -> "torch.Tensor":
    """A tensor over ``array``'s memory although it is read-only, without PyTorch's warning.

    ``set_warn_always`` makes PyTorch raise its once-per-process warning without marking it
    as given, so the filter below hides it here and user code converting its own read-only
    arrays is still warned.
    """
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NOT_WRITABLE, category=UserWarning)
            return torch.from_numpy(array)
    finally:
        torch.set_warn_always(warn_always)


def to_tensor(sample: Any, copy: bool = True) -> Any:
    """``sample`` as a tensor when it is a numpy array or scalar; anything else unchanged.

    With ``copy`` the data is copied into a new writable array first; without, the tensor
    shares the sample's memory (read-only for maps: never write to it).
    """
    if isinstance(sample, np.ndarray):
        if copy:
            return torch.from_numpy(np.array(sample, copy=True, subok=False))
        if sample.flags.writeable:
            return torch.from_numpy(sample)
        return _shared_read_only(sample)
    if isinstance(sample, np.generic):
        return torch.from_numpy(np.array(sample))
    return sample


def _open(source: Any) -> Any:
    """A map object for ``source``: maps and sequences as they are, paths opened read-only."""
    if isinstance(source, (str, os.PathLike)):
        from .generic import open_existing

        return open_existing(source, mode="r")
    if not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
        raise TypeError(f"expected a map, a path to one, or a sequence of samples; got {type(source).__name__}")
    return source


def _batch_indexable(source: Any) -> bool:
    """Whether ``source[list_of_indices]`` gives those samples in order (our maps and numpy arrays)."""
    return isinstance(source, (SpansMap, np.ndarray, Wrapped, MegatronMap))


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
    RaggedMmap, StringsMmap or np_ninja maps, paths of maps (opened read-only), or any
    sequences of the same length. ``transform`` is applied to every item after conversion,
    so ``dataset[i] == transform(untransformed[i])``; with ``num_workers > 0`` under spawn it
    must be picklable (a module-level function, not a lambda). See the module docstring for
    ``copy``.
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
        samples = tuple(to_tensor(m[index], self.copy) for m in self.maps)
        item = samples[0] if len(samples) == 1 else samples
        return item if self.transform is None else self.transform(item)

    def __getitems__(self, indices: Sequence[int]) -> MapBatch:
        """The items at ``indices`` (what a DataLoader asks for per batch): each map read once."""
        indices = [int(i) for i in indices]
        columns = [self._column(m, indices) for m in self.maps]
        items = columns[0] if len(columns) == 1 else list(zip(*columns))
        if self.transform is not None:
            items = [self.transform(item) for item in items]
        batch = MapBatch(items)
        batch.maps, batch.indices, batch.transformed = self.maps, indices, self.transform is not None
        return batch

    def _column(self, source: Any, indices: List[int]) -> List[Any]:
        if not _batch_indexable(source):
            return [to_tensor(source[i], self.copy) for i in indices]
        samples = source[indices]
        if isinstance(samples, np.ndarray):  # numpy gathered the rows into a new array: wrap it once
            return list(torch.from_numpy(samples.view(np.ndarray)).unbind(0))
        return [to_tensor(s, self.copy) for s in samples]

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


class PadCollate:
    """A DataLoader ``collate_fn`` that pads ragged 1-D samples: ``(padded (B, L), lengths (B,))``.

    For a batch read by :class:`MapDataset` (without a transform), the fields that come from
    a RaggedMmap are padded straight from the map with ``RaggedMmap.padded``; the other
    fields (labels...) go through ``default_collate``. For any other batch, every field
    whose samples are 1-D tensors is padded. ``max_len`` cuts longer samples. Picklable, so
    it works with spawned workers.
    """

    def __init__(self, pad_value: Any = 0, max_len: Optional[int] = None):
        self.pad_value = pad_value
        self.max_len = max_len

    def __call__(self, batch: Sequence[Any]) -> Any:
        if not len(batch):
            raise ValueError("cannot collate an empty batch")
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
                out.append(default_collate(list(column)))
        return tuple(out) if zipped else out[0]

    def _from_map(self, source: Any, indices: List[int], column: Sequence[Any]) -> Tuple["torch.Tensor", "torch.Tensor"]:
        try:
            padded, lengths = source.padded(indices, pad_value=self.pad_value, max_len=self.max_len)
        except ValueError:  # a map of multi-axis samples
            return _pad_tensors(column, self.pad_value, self.max_len)
        # both are new arrays, so the tensors share them without a copy or a warning
        return torch.from_numpy(padded), torch.from_numpy(np.asarray(lengths, np.int64))

    def __repr__(self) -> str:
        return f"PadCollate(pad_value={self.pad_value!r}, max_len={self.max_len!r})"


def pad_collate(batch: Sequence[Any]) -> Any:
    """``PadCollate()`` with padding 0: pass it as a DataLoader's ``collate_fn``."""
    return PadCollate()(batch)

