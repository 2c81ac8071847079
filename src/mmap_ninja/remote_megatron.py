"""The read-only remote variant of MegatronMap (``mmap_ninja.remote``): a Megatron-LM corpus
PREFIX.idx + PREFIX.bin in object storage, the .idx fetched whole at open, the .bin by ranges.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import remote_files
from .remote_client import URLPath, public_options
from .remote_files import RemoteMapFiles, Session

_CLASS: Dict[str, type] = {}


def remote_megatron_class() -> type:
    """RemoteMegatronMap: a Megatron-LM corpus PREFIX.idx + PREFIX.bin in object storage."""
    if "megatron" not in _CLASS:
        from .megatron import MegatronMap

        _CLASS["megatron"] = type("RemoteMegatronMap", (RemoteMegatronMixin, MegatronMap), {"__module__": __name__})
    return _CLASS["megatron"]


class RemoteMegatronMixin:
    """The remote variant of MegatronMap: the .idx fetched whole at open, the .bin by ranges."""

    _remote = True

    def __init__(self, prefix: str, storage_options: Optional[Dict[str, Any]] = None, cache_dir: Any = None,
                 cache_size: Optional[int] = None):
        prefix = str(prefix)
        if prefix.endswith(".idx") or prefix.endswith(".bin"):
            prefix = prefix[:-4]
        self.prefix = prefix
        self.idx_path = prefix + ".idx"
        self.bin_path = prefix + ".bin"
        self._options = dict(storage_options=storage_options, cache_dir=cache_dir, cache_size=cache_size)
        self._load()

    def _load(self) -> None:
        folder, name = self.prefix.rsplit("/", 1)
        session = Session(folder, self._options["storage_options"], self._options["cache_dir"], self._options["cache_size"],
                          lazy={name + ".bin"})
        try:
            files = RemoteMapFiles(URLPath(folder, session))
        except FileNotFoundError:
            raise FileNotFoundError(f"there is no Megatron corpus at {self.prefix} ({self.idx_path} does not exist)") from None
        self._install(*self._load_from(files, name))
        self._object = session.lazy_objects.get(name + ".bin")

    def refresh(self) -> int:
        """Open the newest upload of the corpus; returns its length."""
        self._load()
        return self._n

    def _fetch_spans(self, idx: np.ndarray, what: str, piece: int = 0) -> None:
        if self._object is None or not len(idx):
            return
        idx = np.sort(idx)
        starts = self._pointers_np[idx]
        stops = starts + self._lengths_np[idx] * self.dtype.itemsize
        try:
            self._object.ensure(np.clip(starts, 0, self._data_bytes), np.clip(stops, 0, self._data_bytes), piece)
        except OSError as e:
            raise OSError(f"could not read {what} of the corpus at {self.prefix}: {e}") from None

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, (int, np.integer)):
            from .indexing import position

            i = position(item, self._n)
            p = int(self._pointers_np[i])
            if self._object is not None and not self._object.has(p, p + int(self._lengths_np[i]) * self.dtype.itemsize):
                self._fetch_spans(np.array([i]), f"sequence {i}")
            return super().__getitem__(i)
        return self.get_batch(item)

    def _positions(self, indices: Any) -> np.ndarray:
        from .indexing import positions

        idx = positions(indices, self._n)
        return np.array([idx], np.int64) if isinstance(idx, int) else idx

    def get_batch(self, indices: Any) -> List[np.ndarray]:
        idx = self._positions(indices)
        self._fetch_spans(idx, f"sequences {idx[0]}..." if len(idx) else "sequences")
        return super().get_batch(idx)

    def padded(self, indices: Any, pad_value: Any = 0, max_len: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        idx = self._positions(indices)
        self._fetch_spans(idx, f"sequences {idx[0]}..." if len(idx) else "sequences")
        return super().padded(idx, pad_value, max_len)

    def __iter__(self) -> Iterator[np.ndarray]:
        step = 1
        if self._n:
            step = max(1, int(remote_files.READ_AHEAD // max(1, self._data_bytes / self._n)))
        for a in range(0, self._n, step):
            b = min(self._n, a + step)
            self._fetch_spans(np.arange(a, b), f"sequences {a}..{b - 1}", remote_files.PIECE)
            yield from super().get_batch(slice(a, b))

    def __repr__(self) -> str:
        return "Remote" + super().__repr__()

    def __reduce__(self) -> tuple:
        options = dict(self._options, storage_options=public_options(self._options["storage_options"]))
        return (_reopen_megatron, (self.prefix, options))


def _reopen_megatron(prefix: str, options: Dict[str, Any]) -> Any:
    return remote_megatron_class()(prefix, **options)


