"""The read-only map classes of ``mmap_ninja.remote``: the remote variants of the spans maps
(``remote_class(RaggedMmap)``, ...) and ``RemoteArray`` (a same-shape map). Each fetches the
bytes a read needs into the page cache before the local reader reads them.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from . import ondisk, remote_files
from .errors import ReadOnlyMapError
from .remote_client import URLPath, public_options
from .remote_files import RemoteMapFiles, Session


# --- the read-only maps ---------------------------------------------------------------------

_READ_ONLY = ("{url} is a map in object storage, opened read-only: build or change the map locally, "
              "then upload it with mmap_ninja.remote.upload(local, url)")


class _RemoteSpans:
    """What RemoteRaggedMmap and RemoteStringsMmap add to the local readers: fetch the bytes a
    read needs (into the cache the reader maps) before the local reader reads them."""

    _remote = True

    def __init__(self, url: Any, *args: Any, storage_options: Optional[Dict[str, Any]] = None, cache_dir: Any = None,
                 cache_size: Optional[int] = None, **kwargs: Any):
        self._session = Session(str(url), storage_options, cache_dir, cache_size, lazy=True)
        self._url = URLPath(str(url), self._session)
        kwargs["mode"] = "r"  # generic.open_existing asks for "r+b" as 0.9.0 did; writes raise anyway
        if args and isinstance(args[-1], str) and args[-1] in ("r", "r+", "r+b", "rb", "c", "w+"):
            args = args[:-1]
        super().__init__(self._url, *args, **kwargs)

    def _load(self, writable: bool = False) -> None:
        if writable:
            raise ReadOnlyMapError(_READ_ONLY.format(url=self._url))
        self.path = self._url
        self._session.lazy_objects.clear()
        try:
            super()._load()
        except FileNotFoundError:
            raise FileNotFoundError(f"there is no map at {self._url}") from None
        if self._view is None:
            raise FileNotFoundError(f"there is no map at {self._url}")
        self._object = self._session.lazy_objects.get(ondisk.DATA)
        self._itemsize_ = self._view.data.dtype.itemsize

    def _fetch(self, starts: Any, stops: Any, what: str, piece: int = 0) -> None:
        obj = self._object
        if obj is None:
            return
        isz = self._itemsize_
        starts = np.clip(np.asarray(starts, np.int64) * isz, 0, obj.length)
        stops = np.clip(np.asarray(stops, np.int64) * isz, 0, obj.length)
        try:
            obj.ensure(starts, stops, piece)
        except OSError as e:
            raise OSError(f"could not read {what} of the map at {self._url}: {e}") from None

    def _span(self, i: int) -> tuple:
        # what the local reader reads one sample through (ImagesMmap.encoded): fetched first
        start, end = super()._span(i)
        obj = self._object
        if obj is not None and not obj.has(start * self._itemsize_, end * self._itemsize_):
            self._fetch([start], [end], f"sample {i}")
        return start, end

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, (int, np.integer)):
            i = self._position(item)
            obj = self._object
            if obj is not None:
                isz = self._itemsize_
                s, e = self._starts[i] * isz, self._ends[i] * isz
                if not obj.has(s, e):
                    self._fetch([self._starts[i]], [self._ends[i]], f"sample {i}")
            return super().__getitem__(i)
        return self.get_batch(item)

    def _fetch_batch(self, idx: np.ndarray) -> None:
        if len(idx) and self._view is not None:
            order = np.sort(idx)
            what = f"samples {idx[0]}..." if len(idx) > 1 else f"sample {idx[0]}"
            self._fetch(self._view.starts[order], self._view.ends[order], what)

    def get_batch(self, indices: Any) -> List[Any]:
        idx = self._batch_positions(indices)
        self._fetch_batch(idx)
        return super().get_batch(idx)

    def __iter__(self) -> Iterator[Any]:
        n = len(self)
        if not n:
            return
        ends = np.asarray(self._view.ends) * self._itemsize_
        bounds = [0]
        while bounds[-1] < n:
            a = bounds[-1]
            target = (int(self._view.starts[a]) * self._itemsize_) + remote_files.READ_AHEAD
            bounds.append(max(a + 1, min(n, int(np.searchsorted(ends[:n], target, side="right")))))
        windows = list(zip(bounds[:-1], bounds[1:]))
        obj = self._object
        if obj is None or obj.has(0, obj.length):  # all cached and checked: read at local speed
            for a, b in windows:
                yield from super().get_batch(slice(a, b))
            return
        # two windows in flight: the next ones are fetched while this one is read
        with concurrent.futures.ThreadPoolExecutor(2) as pool:

            def fetch(k: int) -> None:
                a, b = windows[k]
                self._fetch(self._view.starts[a:b], self._view.ends[a:b], f"samples {a}..{b - 1}", remote_files.PIECE)

            pending = [pool.submit(fetch, k) for k in range(min(2, len(windows)))]
            for k, (a, b) in enumerate(windows):
                pending.pop(0).result()
                if k + 2 < len(windows):
                    pending.append(pool.submit(fetch, k + 2))
                yield from super().get_batch(slice(a, b))

    def __setitem__(self, key: Any, value: Any) -> None:
        raise ReadOnlyMapError(_READ_ONLY.format(url=self._url))

    def _extend(self, samples: Any, durable: bool, checksum: bool = False) -> None:
        raise ReadOnlyMapError(_READ_ONLY.format(url=self._url))

    def _check_writable(self) -> None:
        raise ReadOnlyMapError(_READ_ONLY.format(url=self._url))

    def _reopen_kwargs(self) -> Dict[str, Any]:
        kwargs = {k: v for k, v in super()._reopen_kwargs().items() if k != "mode"}
        kwargs.update(storage_options=public_options(self._session.client.options), cache_dir=self._session.cache_dir,
                      cache_size=self._session.cache_size)
        return kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._url)!r}, {len(self)} samples)"

    def __reduce__(self) -> tuple:  # by URL and non-secret options: the receiver opens it afresh
        return (_reopen, (self._base, str(self._url), self._reopen_kwargs()))


def _reopen(cls: type, url: str, kwargs: Dict[str, Any]) -> Any:
    return cls(url, **kwargs)


_REMOTE_CLASSES: Dict[type, type] = {}


def remote_class(cls: type) -> type:
    """The read-only remote variant of a map class (RaggedMmap, StringsMmap, or a subclass)."""
    if getattr(cls, "_remote", False):
        return cls
    if cls not in _REMOTE_CLASSES:
        _REMOTE_CLASSES[cls] = type("Remote" + cls.__name__, (_RemoteSpans, cls), {"__module__": __name__, "_base": cls})
    return _REMOTE_CLASSES[cls]



class RemoteArray:
    """A same-shape map in object storage: indexes like the ``np.memmap`` a local map opens as
    (``a[i]``, ``a[idx]``, slices, ``len``, ``shape``, ``dtype``, ``np.asarray(a)``), read-only."""

    def __init__(self, url: str, storage_options: Optional[Dict[str, Any]] = None, cache_dir: Any = None,
                 cache_size: Optional[int] = None):
        self._session = Session(url, storage_options, cache_dir, cache_size, lazy=True)
        self._url = URLPath(url, self._session)
        self.refresh()

    def refresh(self) -> int:
        """Open the newest upload of the map; returns its length."""
        files = RemoteMapFiles(self._url)
        header = ondisk.read_array_header(files)
        self.dtype, self.shape, self._order = header.dtype, tuple(header.shape), header.order
        count = int(np.prod(self.shape)) if self.shape else 1
        self._session.lazy_objects.clear()
        buffer = files.view(ondisk.DATA, count * self.dtype.itemsize)
        self._object = self._session.lazy_objects.get(ondisk.DATA)
        self._array = np.frombuffer(buffer, self.dtype, count).reshape(self.shape, order=self._order) if count else \
            np.empty(self.shape, self.dtype)
        self._row = int(np.prod(self.shape[1:])) * self.dtype.itemsize if self.shape else self.dtype.itemsize
        return len(self)

    @property
    def ndim(self) -> int:
        """The number of axes, as ``np.ndarray.ndim``."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements, as ``np.ndarray.size``."""
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d map")
        return self.shape[0]

    def _rows(self, key: Any) -> Optional[np.ndarray]:
        """The first-axis rows ``key`` reads (None: all of them)."""
        first = key[0] if isinstance(key, tuple) and key else key
        if isinstance(key, tuple) and not key or first is Ellipsis or first is None or self._order == "F" and self.ndim > 1:
            return None
        if isinstance(first, slice):
            return np.arange(len(self))[first]
        return np.atleast_1d(np.arange(len(self))[first])

    def _fetch_rows(self, rows: Optional[np.ndarray], what: str, piece: int = 0) -> None:
        obj = self._object
        if obj is None or not self.shape:
            if obj is not None:
                obj.ensure([0], [obj.length])
            return
        if rows is None:
            starts, stops = [0], [obj.length]
        elif len(rows) > 1 and (np.diff(rows) == 1).all():
            starts, stops = [int(rows[0]) * self._row], [(int(rows[-1]) + 1) * self._row]
        else:
            rows = np.sort(rows)
            starts, stops = rows * self._row, (rows + 1) * self._row
        try:
            obj.ensure(starts, stops, piece)
        except OSError as e:
            raise OSError(f"could not read {what} of the map at {self._url}: {e}") from None

    def __getitem__(self, key: Any) -> Any:
        rows = self._rows(key)
        if rows is None or len(rows) == 1:
            what = "the whole map" if rows is None else f"sample {int(rows[0])}"
        else:
            what = f"samples {int(rows[0])}..."
        if self._object is not None and rows is not None and len(rows) == 1 and self._object.has(int(rows[0]) * self._row, (int(rows[0]) + 1) * self._row):
            return self._array[key]
        self._fetch_rows(rows, what)
        return self._array[key]

    def get_batch(self, indices: Any) -> np.ndarray:
        """The rows at ``indices`` as one array (as a local same-shape field gives them)."""
        return self[np.asarray(indices)]

    def __iter__(self) -> Iterator[Any]:
        step = max(1, remote_files.READ_AHEAD // max(self._row, 1))
        for a in range(0, len(self), step):
            b = min(len(self), a + step)
            self._fetch_rows(np.arange(a, b), f"samples {a}..{b - 1}", remote_files.PIECE)
            yield from self._array[a:b]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self._fetch_rows(None, "the whole map", remote_files.PIECE)
        out = np.array(self._array)
        return out.astype(dtype) if dtype is not None else out

    def __setitem__(self, key: Any, value: Any) -> None:
        raise ReadOnlyMapError(_READ_ONLY.format(url=self._url))

    def __repr__(self) -> str:
        return f"RemoteArray({str(self._url)!r}, shape={self.shape}, dtype={self.dtype.name})"

    def __reduce__(self) -> tuple:
        return (RemoteArray, (str(self._url), public_options(self._session.client.options), self._session.cache_dir,
                              self._session.cache_size))


