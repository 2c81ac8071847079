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
cache on local disk), ``remote_proxy`` (requests of forked processes), ``remote_upload``,
``remote_files`` (``Session``, ``RemoteMapFiles``: one listing of a map's objects),
``remote_maps`` (the read-only spans maps and ``RemoteArray``), ``remote_records`` and
``remote_megatron``. This one is the public face: ``open_existing`` opens whichever kind the
URL holds, by the remote reader its kind registers (``kinds.Kind.remote``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from . import kinds, ondisk
from .errors import MapFormatError
from .remote_client import NON_SECRET, Client, URLPath, is_url, public_options, split_url  # noqa: F401 - public names
from .remote_files import RemoteMapFiles, Session
from .remote_maps import RemoteArray, remote_class
from .remote_megatron import remote_megatron_class
from .remote_records import remote_records_class

__all__ = ["upload", "open_existing", "is_url", "URLPath", "Client", "Session", "RemoteMapFiles", "RemoteArray", "remote_class",
           "remote_records_class", "remote_megatron_class", "public_options", "split_url", "NON_SECRET"]


def remote_kind(url: str, storage_options: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The kind of the map at ``url`` (from its ``type.ninja``), or None where there is none."""
    files = RemoteMapFiles(URLPath(url, Session(url, storage_options)))
    return ondisk.read_kind(files)


def open_existing(url: str, wrapper_fn: Any = None, mode: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
                  cache_dir: Any = None, cache_size: Optional[int] = None) -> Any:
    """Open the map at ``url`` read-only, whichever kind it is (see ``generic.open_existing``)."""
    disk = remote_kind(url, storage_options)
    opts = dict(storage_options=storage_options, cache_dir=cache_dir, cache_size=cache_size)
    if disk is None:
        files = RemoteMapFiles(URLPath(url, Session(url, storage_options)))
        if files.exists("records.json"):
            return remote_records_class()(url, **opts)
    kind = kinds.by_disk(disk)
    if kind is None:
        raise MapFormatError(f"{url} holds no map: {ondisk.KIND} is missing")
    if kind.remote is None:
        raise MapFormatError(f"{url} holds a {kind.name} map, which cannot be read from object storage")
    if kind.wraps:  # the map passes its samples through wrapper_fn itself
        return kind.remote(url, wrapper_fn=wrapper_fn, **opts)
    data = kind.remote(url, **opts)
    if wrapper_fn is None:
        return data
    from .wrapped import Wrapped

    return Wrapped(data, wrapper_fn)


def upload(local: Any, url: str, storage_options: Optional[Dict[str, Any]] = None, verbose: bool = False,
           part_size: int = 16 * 1024 * 1024, jobs: int = 8) -> None:
    """Copy the map (or Megatron corpus) at ``local`` to ``url``, its commit record last (see ``remote_upload``)."""
    from .remote_upload import upload as _upload

    _upload(local, url, storage_options, verbose, part_size, jobs)
