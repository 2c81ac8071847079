"""The files of one map in object storage: the session (client, cache, options) and
``RemoteMapFiles``, the read seam (``reads.MapFiles``) over one listing of the map's objects.

Part of ``mmap_ninja.remote`` (see its docstring for the network discipline); the window and
piece sizes of reads live here, so that every remote reader takes them from one place.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import ondisk, reads
from .errors import MapFormatError, ReadOnlyMapError
from .remote_cache import Cache, CachedObject
from .remote_client import Client, URLPath, is_url, split_url

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

