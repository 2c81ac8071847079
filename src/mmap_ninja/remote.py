"""Maps in object storage (``s3://``, ``gs://``, ``az://``): opened by URL, read-only, through
the read seam (``reads.MapFiles``) with a local page cache (``remote_cache.py``).

Network discipline, and why:

* Opening lists the map's objects once (one LIST) and fetches every small file in one
  concurrent round (type, dtype, shapes, ...); the offset tables are fetched whole, once
  (they are what any index needs); no sample byte is fetched at open.
* ``m[i]`` fetches the page(s) holding sample ``i`` as one ranged GET; ``m[idx]`` fetches the
  pages of all its samples as sorted ranges in one concurrent request; iteration reads ahead
  in windows of ``READ_AHEAD`` bytes, several ranges at once, the next window fetched while the
  current one is consumed. Every GET carries ``If-Match`` with the ETag seen at open, so an
  object replaced meanwhile is an error (``refresh()`` sees the new upload), never mixed bytes.
* Transient errors (5xx, dropped connections, timeouts) are retried by the client with
  exponential backoff for up to ``retry_timeout`` seconds (storage option, default 30); a read
  that still fails raises ``OSError`` naming the map's URL and the sample.

Credentials come from the client's usual sources (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``, ...; an ``http://`` endpoint
is allowed) or from ``storage_options``. They are never part of a message, a repr or a
pickle: a pickled map carries its URL and the non-secret options (``NON_SECRET``); the process
that unpickles it takes credentials from its own environment. The client (obstore, whose
runtime is not fork-safe) is created lazily in each process that reads.

Modules: ``remote_client`` (URLs, the obstore client, secrets), ``remote_cache`` (the page
cache on local disk), ``remote_proxy`` (requests of forked processes), ``remote_upload``;
this one holds the opened maps (``Session``, ``RemoteMapFiles``, the read-only map classes).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import ondisk, reads
from .errors import MapFormatError, ReadOnlyMapError
from .remote_cache import Cache, CachedObject
from .remote_client import NON_SECRET, Client, URLPath, is_url, public_options, split_url  # noqa: F401 - public names

__all__ = ["upload", "open_existing", "is_url", "URLPath", "Client", "Session", "RemoteMapFiles", "RemoteArray", "remote_class",
           "remote_records_class", "remote_megatron_class", "public_options", "split_url", "NON_SECRET"]

SMALL = 64 * 1024  # files up to this size are fetched whole at open, all at once
READ_AHEAD = 64 * 1024 * 1024  # bytes per read-ahead window of an iteration
PIECE = 8 * 1024 * 1024  # a window is fetched as ranges of this size, concurrently


# --- one opened map: listing, small files, cached objects ---------------------------------


class Session:
    """The connection, the cache and the options of one remote map (URL ``url``)."""

    def __init__(self, url: str, storage_options: Optional[Dict[str, Any]] = None, cache_dir: Any = None,
                 cache_size: Optional[int] = None, lazy: Any = False):
        self.url = url.rstrip("/")
        bucket_url, self.prefix = split_url(self.url)
        self.client = Client(bucket_url, storage_options)
        self.cache_dir, self.cache_size = cache_dir, cache_size
        self.cache = Cache(cache_dir, cache_size)
        # files the map fills on demand (its samples), not fetched whole at view()
        self.lazy = {ondisk.DATA} if lazy is True else set(lazy or ())
        self.lazy_objects: Dict[str, CachedObject] = {}

    def __repr__(self) -> str:
        return f"Session({self.url!r})"

    def key(self, rel: str) -> str:
        """The object key of the map's file ``rel`` (its path relative to the map)."""
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def listing(self) -> Tuple[Dict[str, Tuple[int, str]], Dict[str, bytes]]:
        """Every object under the map: ``{relative name: (size, etag)}``, and the small files' bytes."""
        entries = {}
        cut = len(self.prefix) + 1 if self.prefix else 0
        for meta in self.client.list(self.prefix):
            entries[meta["path"][cut:]] = (int(meta["size"]), meta.get("e_tag") or "")
        small = [name for name, (size, _) in entries.items() if size <= SMALL and not name.endswith("data.ninja")]
        blobs = self.client.get_many([self.key(n) for n in small], [entries[n][1] for n in small]) if small else []
        return entries, dict(zip(small, blobs))

    def cached(self, rel: str, size: int, etag: str) -> CachedObject:
        """The map's file ``rel`` (of ``size`` bytes, version ``etag``) read through the local cache."""
        key = self.key(rel)
        client = self.client

        def fetch(ranges: List[Tuple[int, int]]) -> List[Any]:
            return client.get_ranges(key, etag, ranges)

        return self.cache.open(f"{self.url}/{rel}", etag or "-", size, fetch)


def _version(entries: Dict[str, Tuple[int, str]]) -> str:
    h = hashlib.sha256()
    for name in sorted(entries):
        size, etag = entries[name]
        h.update(f"{name}\0{size}\0{etag}\n".encode())
    return h.hexdigest()


class RemoteMapFiles(reads.MapFiles):
    """The files of a map in object storage, as listed once (one version, see ``moved()``)."""

    pinned = False

    def __init__(self, path: Any, _parent: Optional["RemoteMapFiles"] = None, _rel: str = ""):
        self.path = path if isinstance(path, URLPath) else URLPath(str(path))
        if _parent is None:
            if self.path.session is None:  # opened through the seam alone: eager, no lazy data
                self.path.session = Session(str(self.path))
            self.session = self.path.session
            self._entries, self._small = self.session.listing()
            if not self._entries:
                raise FileNotFoundError(f"there is no map at {self.path}")
            self._version = _version(self._entries)
        else:
            self.session = _parent.session
            self._entries, self._small, self._version = _parent._entries, _parent._small, _parent._version
        self._rel = _rel

    def _name(self, name: str) -> str:
        return self._rel + name.strip("/")

    def _entry(self, name: str) -> Tuple[int, str]:
        try:
            return self._entries[self._name(name)]
        except KeyError:
            raise MapFormatError(f"{self.file(name)} is missing") from None

    def read(self, name: str) -> bytes:
        rel = self._name(name)
        if rel in self._small:
            return self._small[rel]
        size, etag = self._entry(name)
        return self.session.client.get(self.session.key(rel), etag)

    def exists(self, name: str) -> bool:
        return self._name(name) in self._entries or self._has_dir(name)

    def is_dir(self, name: str) -> bool:
        return self._has_dir(name)

    def _has_dir(self, name: str) -> bool:
        prefix = self._name(name).rstrip("/") + "/" if name else self._rel
        return any(k.startswith(prefix) for k in self._entries)

    def size(self, name: str) -> int:
        return self._entry(name)[0]

    def list(self, name: str = "") -> List[str]:
        prefix = self._name(name).rstrip("/") + "/" if name else self._rel
        found = {k[len(prefix):].split("/", 1)[0] for k in self._entries if k.startswith(prefix)}
        if not found and name:
            raise MapFormatError(f"{self.file(name)} is missing")
        return sorted(found)

    def sub(self, name: str) -> "RemoteMapFiles":
        if not self._has_dir(name):
            raise MapFormatError(f"{self.file(name)} is missing")
        return RemoteMapFiles(self.path / name.strip("/"), _parent=self, _rel=self._name(name).rstrip("/") + "/")

    def view(self, name: str, nbytes: int, access: str = "r") -> reads.Buffer:
        if access != "r":
            raise ReadOnlyMapError(f"{self.path} is a map in object storage, opened read-only")
        size, etag = self._entry(name)
        if size < nbytes:
            raise MapFormatError(f"{self.file(name)} holds {size} bytes but the map needs {nbytes}: it is truncated")
        if nbytes == 0:
            return b""
        rel = self._name(name)
        obj = self.session.cached(rel, size, etag)
        if rel in self.session.lazy:  # the samples: the map fetches what it reads
            self.session.lazy_objects[rel] = obj
        else:
            try:
                obj.ensure([0], [nbytes], PIECE)
            except OSError as e:
                raise OSError(f"could not read {self.file(name)}: {e}") from None
        return obj.buffer

    def read_ranges(self, name: str, starts: Sequence[int], stops: Sequence[int]) -> List[Any]:
        size, etag = self._entry(name)
        obj = self.session.cached(self._name(name), size, etag)
        obj.ensure(starts, stops)
        buffer = memoryview(obj.buffer)
        return [buffer[int(s):int(e)] for s, e in zip(starts, stops)]

    def version(self) -> str:
        return self._version

    def file_version(self, name: str) -> Any:
        entry = self._entries.get(self._name(name))
        return None if entry is None else entry

    def moved(self) -> bool:
        try:
            entries, _ = Session(str(self.path), self.session.client.options).listing()
        except OSError:
            return False
        return _version(entries) != self._version


def _open_files(path: Any) -> RemoteMapFiles:
    return RemoteMapFiles(path)


reads.register_opener(is_url, _open_files)


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
            target = (int(self._view.starts[a]) * self._itemsize_) + READ_AHEAD
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
                self._fetch(self._view.starts[a:b], self._view.ends[a:b], f"samples {a}..{b - 1}", PIECE)

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


def _remote_ragged() -> type:
    from .ragged import RaggedMmap

    return remote_class(RaggedMmap)


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
        step = max(1, READ_AHEAD // max(self._row, 1))
        for a in range(0, len(self), step):
            b = min(len(self), a + step)
            self._fetch_rows(np.arange(a, b), f"samples {a}..{b - 1}", PIECE)
            yield from self._array[a:b]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self._fetch_rows(None, "the whole map", PIECE)
        out = np.array(self._array)
        return out.astype(dtype) if dtype is not None else out

    def __setitem__(self, key: Any, value: Any) -> None:
        raise ReadOnlyMapError(_READ_ONLY.format(url=self._url))

    def __repr__(self) -> str:
        return f"RemoteArray({str(self._url)!r}, shape={self.shape}, dtype={self.dtype.name})"

    def __reduce__(self) -> tuple:
        return (RemoteArray, (str(self._url), public_options(self._session.client.options), self._session.cache_dir,
                              self._session.cache_size))


class RemoteRecordsMixin:
    """The read-only remote variant of RecordsMmap: records.json from the store, each field a
    remote map (whose reads fetch what they need)."""

    _remote = True

    def __init__(self, url: Any, mode: str = "r", storage_options: Optional[Dict[str, Any]] = None, cache_dir: Any = None,
                 cache_size: Optional[int] = None):
        self._options = dict(storage_options=storage_options, cache_dir=cache_dir, cache_size=cache_size)
        self.path = URLPath(str(url))
        self.mode = "r"
        self._maps: Dict[str, Any] = {}
        self._load()

    def _read_info(self) -> Any:
        from .records import RECORDS_FILE, read_records_file

        session = Session(str(self.path), self._options["storage_options"])
        files = RemoteMapFiles(URLPath(str(self.path), session))
        if not files.exists(RECORDS_FILE):
            raise MapFormatError(f"{self.path} holds no records map: {RECORDS_FILE} is missing")
        return read_records_file(files)

    def _load(self) -> None:
        from .ragged import RaggedMmap
        from .records import RECORDS_FILE
        from .string import StringsMmap

        info = self._read_info()
        maps = {}
        for name, kind in info.fields:
            url = str(self.path / name)
            if kind == "ragged":
                m: Any = remote_class(RaggedMmap)(url, **self._options)
            elif kind == "strings":
                m = remote_class(StringsMmap)(url, **self._options)
            else:
                m = RemoteArray(url, **self._options)
            if len(m) < info.count:
                raise MapFormatError(f"field {name!r} ({url}) holds {len(m)} samples, but {self.path / RECORDS_FILE} counts {info.count} records")
            maps[name] = m
        self._info, self._count, self._kinds, self._maps = info, info.count, dict(info.fields), maps
        self._specs = None
        self._stale, self._appender, self._file_identity = False, None, None  # never written to

    def refresh(self) -> int:
        """Open the newest upload of the records map; returns its length."""
        self._load()
        return self._count

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise ReadOnlyMapError(_READ_ONLY.format(url=self.path))

    append = extend = add_field = __setitem__ = _read_only

    def close(self) -> None:
        self._maps = {}
        self._count = 0

    def __repr__(self) -> str:
        return "Remote" + super().__repr__()

    def __reduce__(self) -> tuple:
        options = dict(self._options, storage_options=public_options(self._options["storage_options"]))
        return (_reopen_records, (str(self.path), options))


def _reopen_records(url: str, options: Dict[str, Any]) -> Any:
    return remote_records_class()(url, **options)


def remote_records_class() -> type:
    """RemoteRecordsMmap (made on first use, so that records.py is imported only when needed)."""
    if "records" not in _REMOTE_CLASSES_BY_NAME:
        from .records import RecordsMmap

        _REMOTE_CLASSES_BY_NAME["records"] = type("RemoteRecordsMmap", (RemoteRecordsMixin, RecordsMmap), {"__module__": __name__})
    return _REMOTE_CLASSES_BY_NAME["records"]


def remote_megatron_class() -> type:
    """RemoteMegatronMap: a Megatron-LM corpus PREFIX.idx + PREFIX.bin in object storage."""
    if "megatron" not in _REMOTE_CLASSES_BY_NAME:
        from .megatron import MegatronMap

        _REMOTE_CLASSES_BY_NAME["megatron"] = type("RemoteMegatronMap", (RemoteMegatronMixin, MegatronMap), {"__module__": __name__})
    return _REMOTE_CLASSES_BY_NAME["megatron"]


_REMOTE_CLASSES_BY_NAME: Dict[str, type] = {}


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
            step = max(1, int(READ_AHEAD // max(1, self._data_bytes / self._n)))
        for a in range(0, self._n, step):
            b = min(self._n, a + step)
            self._fetch_spans(np.arange(a, b), f"sequences {a}..{b - 1}", PIECE)
            yield from super().get_batch(slice(a, b))

    def __repr__(self) -> str:
        return "Remote" + super().__repr__()

    def __reduce__(self) -> tuple:
        options = dict(self._options, storage_options=public_options(self._options["storage_options"]))
        return (_reopen_megatron, (self.prefix, options))


def _reopen_megatron(prefix: str, options: Dict[str, Any]) -> Any:
    return remote_megatron_class()(prefix, **options)


def remote_kind(url: str, storage_options: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The kind of the map at ``url`` (from its ``type.ninja``), or None where there is none."""
    files = RemoteMapFiles(URLPath(url, Session(url, storage_options)))
    return ondisk.read_kind(files)


def open_existing(url: str, wrapper_fn: Any = None, mode: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
                  cache_dir: Any = None, cache_size: Optional[int] = None) -> Any:
    """Open the map at ``url`` read-only, whichever kind it is (see ``generic.open_existing``)."""
    kind = remote_kind(url, storage_options)
    opts = dict(storage_options=storage_options, cache_dir=cache_dir, cache_size=cache_size)
    if kind is None:
        files = RemoteMapFiles(URLPath(url, Session(url, storage_options)))
        if files.exists("records.json"):
            return remote_records_class()(url, **opts)
    if kind == "ragged":
        return _remote_ragged()(url, wrapper_fn=wrapper_fn, **opts)
    if kind == "string":
        from .string import StringsMmap

        data: Any = remote_class(StringsMmap)(url, **opts)
    elif kind == "numpy":
        data = RemoteArray(url, **opts)
    else:
        raise MapFormatError(f"{url} holds no map: {ondisk.KIND} is missing")
    if wrapper_fn is None:
        return data
    from .wrapped import Wrapped

    return Wrapped(data, wrapper_fn)


def upload(local: Any, url: str, storage_options: Optional[Dict[str, Any]] = None, verbose: bool = False,
           part_size: int = 16 * 1024 * 1024, jobs: int = 8) -> None:
    """Copy the map (or Megatron corpus) at ``local`` to ``url``, its commit record last (see ``remote_upload``)."""
    from .remote_upload import upload as _upload

    _upload(local, url, storage_options, verbose, part_size, jobs)
