"""The local cache of objects read from object storage: fetched pages kept on disk and mapped.

Layout, under the cache directory (``cache_dir=``; default ``$MMAP_NINJA_CACHE_DIR``, else
``$XDG_CACHE_HOME/mmap_ninja``, else ``~/.cache/mmap_ninja``)::

    <sha256(url)[:32]>/<sha256(etag)[:16]>-<size>/data    the object, sparse, at its own offsets
                                                   /pages   8 bytes per page: crc32, length

One directory per *version* of an object (its ETag and length): an object changed in the store
has another ETag, so its bytes land in another directory and the old ones are never served
for it. A page (``page_size`` bytes, the last one shorter) is fetched, written into ``data``
at its offset, and only then its entry (crc32 and length) is written into ``pages``: a reader
trusts a page only when its entry holds the page's length and, the first time this process
uses it, the crc32 of the bytes matches. A process killed between the two writes leaves a page
without an entry, fetched again; a page whose bytes do not match its entry is fetched again,
never served.

Several processes (DataLoader workers, ranks) share one cache directory: they create the files
with ``O_CREAT`` (never replacing one another's), map ``data`` shared, and write whole pages
of the same object version, that is the same bytes, so concurrent fetches of one page are
harmless. Every write goes through ``fs.py``.

``cache_size`` bounds the bytes the cache holds on disk. When an object version is opened
and whenever the pages fetched since the last check pass a tenth of the bound, the least
recently opened *other* versions are removed until the cache fits. A map being read is never
evicted page by page, so a sequential epoch never evicts the pages it is about to read again
(no thrashing); a single map larger than the bound is kept whole while it is read (the bound
is then exceeded, and said so by ``CacheStats``).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import zlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import fs

PAGE_SIZE = 64 * 1024  # a random small sample costs one GET of about this much (measured: ~ a 4 KB GET on loopback)
COALESCE = 1024 * 1024  # missing pages this close are fetched in one request (as obstore's get_ranges does)
_ENTRY = np.dtype([("crc", "<u4"), ("length", "<u4")])
CACHE_ENV = "MMAP_NINJA_CACHE_DIR"

Fetch = Callable[[List[Tuple[int, int]]], List[bytes]]  # byte ranges -> their bytes


def default_cache_dir() -> Path:
    """``$MMAP_NINJA_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmap_ninja``, else ``~/.cache/mmap_ninja``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmap_ninja"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def disk_usage(root: Path) -> int:
    """Bytes allocated on disk under ``root`` (sparse files count what they hold)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class Cache:
    """One cache directory with an optional size bound (bytes; None: unbounded)."""

    def __init__(self, root: Optional[os.PathLike] = None, size: Optional[int] = None, page_size: int = PAGE_SIZE):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.size = size
        self.page_size = int(page_size)
        self._since_check = 0

    def open(self, url: str, etag: str, length: int, fetch: Fetch) -> "CachedObject":
        """The cached copy of one version of an object (its pages fetched on demand by ``fetch``)."""
        folder = self.root / _digest(url, 32) / f"{_digest(etag, 16)}-{length}"
        fs.makedirs(folder)
        try:  # its age, for eviction: the least recently opened goes first
            os.utime(folder)
        except OSError:
            pass
        obj = CachedObject(self, folder, length, fetch)
        self.evict(keep=folder)
        return obj

    def fetched(self, nbytes: int, keep: Path) -> None:
        """Count ``nbytes`` newly cached in ``keep``; check the bound every tenth of it."""
        self._since_check += nbytes
        if self.size is not None and self._since_check * 10 >= self.size:
            self._since_check = 0
            self.evict(keep)

    def evict(self, keep: Optional[Path] = None) -> None:
        """Remove the least recently opened object versions until the cache fits its bound."""
        if self.size is None or not self.root.exists():
            return
        versions = []
        for top in os.scandir(self.root):
            if top.is_dir():
                for v in os.scandir(top.path):
                    if v.is_dir():
                        versions.append((v.stat().st_mtime, Path(v.path)))
        used = {p: disk_usage(p) for _, p in versions}
        total = sum(used.values())
        for _, path in sorted(versions):
            if total <= self.size:
                break
            if path == keep:  # being read now
                continue
            # a process still reading a removed version keeps its open files (unlinked) and maps
            fs.rmtree(path)
            total -= used[path]


class CachedObject:
    """One object version in the cache: ``buffer`` maps all of it; ``ensure`` fills byte ranges."""

    def __init__(self, cache: Cache, folder: Path, length: int, fetch: Fetch):
        self.cache = cache
        self.folder = folder
        self.length = length
        self.page = cache.page_size
        self.pages = -(-length // self.page)
        self._fetch = fetch
        self._data_fd = fs.open_file(folder / "data", os.O_RDWR | os.O_CREAT)
        self._table_fd = fs.open_file(folder / "pages", os.O_RDWR | os.O_CREAT)
        for fd, size in ((self._data_fd, length), (self._table_fd, self.pages * _ENTRY.itemsize)):
            if os.fstat(fd).st_size != size:  # idempotent: every opener sets the same size
                fs.ftruncate(fd, size)
        self.buffer = mmap.mmap(self._data_fd, length, access=mmap.ACCESS_READ) if length else b""
        self._table_map = mmap.mmap(self._table_fd, self.pages * _ENTRY.itemsize, access=mmap.ACCESS_READ) if self.pages else b""
        self._table = np.frombuffer(self._table_map, _ENTRY, self.pages)
        self.known = bytearray(self.pages)  # 1: checked by this process and valid
        self._expected = np.full(self.pages, self.page, np.uint32)
        if self.pages:
            self._expected[-1] = length - (self.pages - 1) * self.page

    def close(self) -> None:
        for fd in (self._data_fd, self._table_fd):
            if fd >= 0:
                fs.close(fd)
        self._data_fd = self._table_fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def has(self, start: int, stop: int) -> bool:
        """Whether bytes ``start:stop`` are known valid here (a quick check, no I/O)."""
        if stop <= start:
            return True
        known = self.known
        first, last = start // self.page, (stop - 1) // self.page
        if first == last:
            return known[first] == 1
        return known.find(0, first, last + 1) < 0

    def _missing(self, pages: np.ndarray) -> np.ndarray:
        """Of ``pages``, those not valid in the cache; pages found valid become known."""
        known = np.frombuffer(self.known, np.uint8)
        pages = pages[known[pages] == 0]
        if not len(pages):
            return pages
        entries = self._table[pages]
        present = entries["length"] == self._expected[pages]
        missing = []
        for p, ok, crc in zip(pages.tolist(), present.tolist(), entries["crc"].tolist()):
            if ok and zlib.crc32(self.buffer[p * self.page : p * self.page + int(self._expected[p])]) == crc:
                self.known[p] = 1
            else:
                missing.append(p)
        return np.array(missing, np.int64)

    def ensure(self, starts: Sequence[int], stops: Sequence[int], piece: int = 0, coalesce: int = COALESCE) -> None:
        """Make bytes ``starts[i]:stops[i]`` valid in ``buffer``, fetching the missing pages in
        one concurrent request. Runs of missing pages less than ``coalesce`` bytes apart are
        fetched as one range (the pages between come along and are cached too: fewer, larger
        requests, which is what a store serves fastest); ranges are cut at ``piece`` bytes
        (0: not cut), so a long run is fetched by several connections at once."""
        starts = np.asarray(starts, np.int64)
        stops = np.asarray(stops, np.int64)
        keep = stops > starts
        if not keep.all():
            starts, stops = starts[keep], stops[keep]
        if not len(starts):
            return
        first = np.clip(starts // self.page, 0, max(self.pages - 1, 0))
        last = np.clip((stops - 1) // self.page, 0, max(self.pages - 1, 0))
        counts = last - first + 1
        if counts.max() == 1:
            pages = np.unique(first)
        else:
            pages = np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(first.tolist(), last.tolist())]))
        missing = self._missing(pages)
        if not len(missing):
            return
        # runs of consecutive pages, each one range (cut into pieces of at most `piece` bytes)
        breaks = np.flatnonzero(np.diff(missing) > max(1, coalesce // self.page)) + 1
        ranges = []
        per_piece = max(1, piece // self.page) if piece else 1 << 62
        for run in np.split(missing, breaks):
            first_page, last_page = int(run[0]), int(run[-1])
            for a in range(first_page, last_page + 1, per_piece):
                b = min(a + per_piece, last_page + 1)
                ranges.append((a * self.page, min(b * self.page, self.length)))
        blobs = self._fetch(ranges)
        for (a, b), blob in zip(ranges, blobs):
            if len(blob) != b - a:
                raise OSError(f"the store returned {len(blob)} bytes for bytes {a}..{b} of the object")
            self._store(a, blob)
        self.cache.fetched(sum(b - a for a, b in ranges), self.folder)

    def _store(self, offset: int, blob: bytes) -> None:
        """Write fetched pages, then their entries (see the module docstring for the order)."""
        view = memoryview(blob).cast("B")
        done = 0
        while done < len(view):  # pwrite may write less than asked
            done += fs.pwrite(self._data_fd, view[done:], offset + done)
        first = offset // self.page
        n = -(-len(view) // self.page)
        entries = np.empty(n, _ENTRY)
        for k in range(n):
            chunk = view[k * self.page : (k + 1) * self.page]
            entries[k] = (zlib.crc32(chunk), len(chunk))
        fs.pwrite(self._table_fd, entries.tobytes(), first * _ENTRY.itemsize)
        self.known[first : first + n] = b"\x01" * n
