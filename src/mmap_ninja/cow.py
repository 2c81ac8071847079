"""Copy-on-write mappings: how a map opened read-only is mapped, and how to tell.

A map opened read-only is mapped *private* (``mmap.ACCESS_COPY``, ``MAP_PRIVATE``) from a
file opened read-only, so read-only file systems still work. Its pages stay the page cache's
until something writes to one; that page then becomes a private copy of this process. So a
tensor sharing a sample's memory (``mmap_ninja.torch``) can be written to: the process does
not crash (as it would on a ``PROT_READ`` mapping) and the file never changes.

The arrays a map hands out over such a mapping are still marked read-only, as before: only
code that knows the memory is private (:func:`is_private`) makes writable views of it.

Where a private mapping would cost memory it should not, the map is mapped shared read-only
instead (``ACCESS_READ``, as before) and :func:`is_private` says False, so such samples are
copied rather than shared:

- ``vm.overcommit_memory=2`` (strict accounting, Linux): a private writable mapping is
  charged in full against the commit limit when it is made, although no page is copied
  until written, so opening a 100 GB map would use up 100 GB of the commit limit;
- the kernel refuses the private mapping (``ENOMEM``; under the default heuristic, a single
  mapping larger than RAM plus swap);
- Windows, which charges a copy-on-write view against the commit limit too.
"""

from __future__ import annotations

import errno
import mmap
import sys
from typing import Any, Optional


class PrivateMap(mmap.mmap):
    """A copy-on-write mapping of a file opened read-only: writes stay in this process."""


_strict: Optional[bool] = None


def _strict_overcommit() -> bool:
    """Whether Linux charges private writable mappings in full (``vm.overcommit_memory=2``)."""
    global _strict
    if _strict is None:
        try:
            with open("/proc/sys/vm/overcommit_memory", "rb") as f:
                _strict = f.read().strip() == b"2"
        except OSError:
            _strict = False
    return _strict


def map_read_only(fileno: int, nbytes: int) -> mmap.mmap:
    """The first ``nbytes`` of a file opened read-only: private (copy-on-write) where that is
    free of charge, else shared read-only (see the module docstring)."""
    if sys.platform != "win32" and not _strict_overcommit():
        try:
            return PrivateMap(fileno, nbytes, access=mmap.ACCESS_COPY)
        except OSError as e:
            if e.errno != errno.ENOMEM:
                raise
    return mmap.mmap(fileno, nbytes, access=mmap.ACCESS_READ)


def is_private(array: Any) -> bool:
    """Whether writing to ``array``'s memory stays in this process and cannot crash it.

    True for plain process memory that numpy lets us write, and for arrays over a
    :class:`PrivateMap`; False for arrays over any other mapping (shared: a write would
    reach the file, or crash the process if it is mapped read-only) and for memory that is
    read-only for good (``bytes``).
    """
    base = array
    while hasattr(base, "base") and base.base is not None and not isinstance(base, mmap.mmap):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if isinstance(base, PrivateMap):
        return True
    if isinstance(base, (mmap.mmap, bytes)):
        return False
    return bool(getattr(array, "flags", None) is not None and array.flags.writeable)
