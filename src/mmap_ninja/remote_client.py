"""The object-storage client of the remote maps: URLs, obstore stores made per process, requests
with If-Match, errors as OSError without secrets, and which options are secret.

obstore is imported lazily (the ``remote`` extra). Its runtime does not survive ``fork``: a
process forked after its parent used it sends its requests through ``remote_proxy``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import threading
from datetime import timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "azure")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
CONCURRENCY = 16
# options that are safe to print and to pickle; every other key is treated as a secret
NON_SECRET = {"endpoint", "endpoint_url", "region", "default_region", "allow_http", "virtual_hosted_style_request",
              "retry_timeout", "max_retries", "timeout", "connect_timeout", "s3_express", "request_payer",
              "skip_signature", "unsigned_payload", "checksum_algorithm", "imdsv1_fallback", "account_name",
              "container_name", "use_emulator", "project_id", "disable_tagging"}
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AZURE_STORAGE_ACCOUNT_KEY",
               "AZURE_STORAGE_SAS_TOKEN", "GOOGLE_SERVICE_ACCOUNT_KEY")
_EXTRA_MESSAGE = "reading maps from object storage needs obstore: pip install 'mmap_ninja[remote]'"


def is_url(where: Any) -> bool:
    """Whether ``where`` is an object-storage URL this module opens (``s3://bucket/prefix``...)."""
    if isinstance(where, URLPath):
        return True
    if not isinstance(where, str):
        return False
    m = _URL.match(where)
    return bool(m) and m.group(1).lower() in SCHEMES


def _obstore() -> Any:
    global _RUNTIME_PID
    try:
        import obstore
    except ImportError:
        raise ImportError(_EXTRA_MESSAGE) from None
    if _RUNTIME_PID is None:
        _RUNTIME_PID = os.getpid()
    return obstore


# The process whose obstore runtime is started (inherited by fork, where it no longer works)
_RUNTIME_PID: Optional[int] = None


def _forked() -> bool:
    """Whether this process was forked from one that used obstore (its requests go through a helper)."""
    return _RUNTIME_PID is not None and _RUNTIME_PID != os.getpid()


# --- secrets ------------------------------------------------------------------------------


def public_options(options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The options that may be printed and pickled (no credentials)."""
    return {k: v for k, v in (options or {}).items() if k.lower() in NON_SECRET}


def _scrub(text: str, options: Optional[Dict[str, Any]]) -> str:
    """``text`` with every secret value (from ``options`` or the environment) replaced by ***."""
    secrets = [str(v) for k, v in (options or {}).items() if k.lower() not in NON_SECRET and v]
    secrets += [os.environ[name] for name in _SECRET_ENV if os.environ.get(name)]
    for s in sorted(secrets, key=len, reverse=True):
        if len(s) >= 4:
            text = text.replace(s, "***")
    # signed query strings and authorisation headers, whatever their values
    return re.sub(r"(?i)(signature|credential|authorization|x-amz-security-token)([=:]\s*)[^&\s\"']+", r"\1\2***", text)


# --- a location ---------------------------------------------------------------------------


class URLPath(str):
    """A map's URL, usable where readers use a ``Path`` for messages (``/`` joins with ``/``).

    ``session`` (not pickled, not printed) is the connection and cache its reads go through.
    """

    session: Any = None  # remote.Session

    def __new__(cls, url: str, session: Any = None) -> "URLPath":
        self = super().__new__(cls, url.rstrip("/"))
        self.session = session
        return self

    def __truediv__(self, name: Any) -> "URLPath":
        return URLPath(f"{self}/{name}", self.session)

    @property
    def name(self) -> str:
        """The last component of the URL, as ``Path.name``."""
        return self.rsplit("/", 1)[-1]

    def absolute(self) -> "URLPath":
        """The URL itself (a URL is already absolute), as ``Path.absolute``."""
        return self

    def __reduce__(self) -> tuple:
        return (URLPath, (str(self),))


def split_url(url: str) -> Tuple[str, str]:
    """``("s3://bucket", "prefix/of/map")`` from ``"s3://bucket/prefix/of/map"``."""
    m = _URL.match(url)
    if not m:
        raise ValueError(f"{url!r} is not an object-storage URL (s3://bucket/prefix)")
    rest = url[m.end():]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return f"{m.group(1)}://{bucket}", key.strip("/")


class Client:
    """An obstore store for one bucket, created lazily in each process (not fork-safe)."""

    def __init__(self, bucket_url: str, storage_options: Optional[Dict[str, Any]] = None):
        self.bucket_url = bucket_url
        self.options = dict(storage_options or {})
        self._store: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client({self.bucket_url!r}, {public_options(self.options)!r})"

    def __reduce__(self) -> tuple:
        return (Client, (self.bucket_url, public_options(self.options)))

    @property
    def store(self) -> Any:
        """The obstore store, made on first use in each process."""
        if self._store is None or self._pid != os.getpid():
            with self._lock:
                if self._store is None or self._pid != os.getpid():
                    self._store = self._make_store()
                    self._pid = os.getpid()
        return self._store

    def _make_store(self) -> Any:
        _obstore()
        from obstore.store import from_url

        config = {k: v for k, v in self.options.items() if k not in ("retry_timeout", "max_retries", "timeout", "connect_timeout")}
        endpoint = config.get("endpoint") or config.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or ""
        client_options: Dict[str, Any] = {"timeout": str(self.options.get("timeout", "60s")),
                                          "connect_timeout": str(self.options.get("connect_timeout", "5s"))}
        if str(endpoint).startswith("http://"):
            client_options["allow_http"] = True
        if "endpoint_url" in config:
            config["endpoint"] = config.pop("endpoint_url")
        retry = {"max_retries": int(self.options.get("max_retries", 10)),
                 "retry_timeout": timedelta(seconds=float(self.options.get("retry_timeout", 30))),
                 "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2}}
        try:
            return from_url(self.bucket_url, config=config or None, client_options=client_options, retry_config=retry)
        except Exception as e:  # a bad option: say which without echoing values
            raise ValueError(f"cannot connect to {self.bucket_url}: {_scrub(str(e), self.options)}") from None

    def error(self, what: str, e: BaseException) -> OSError:
        """An OSError about ``what`` for a client error, with every secret removed."""
        name = type(e).__name__
        text = _scrub(str(e).strip().splitlines()[0] if str(e).strip() else name, self.options)
        if name == "NotFoundError":
            return FileNotFoundError(f"{what}: not found in the store")
        if name in ("PreconditionError", "_Changed"):
            return OSError(f"{what}: the object changed in the store since the map was opened; call refresh() to read the new version")
        return OSError(f"{what}: {name}: {text}")

    # -- requests -------------------------------------------------------------------------

    def _proxied(self, method: str, *args: Any) -> Any:
        from .remote_proxy import proxy

        return proxy().call(self.bucket_url, self.options, method, args)

    def list(self, prefix: str) -> List[Dict[str, Any]]:
        """obstore's metadata of every object under ``prefix``."""
        if _forked():
            return self._proxied("list", prefix)
        obstore = _obstore()
        try:
            return list(obstore.list(self.store, prefix=prefix + "/" if prefix else None).collect())
        except Exception as e:
            raise self.error(f"listing {self.bucket_url}/{prefix}", e) from None

    def get(self, key: str, etag: Optional[str] = None) -> bytes:
        """The object ``key`` (refused if its version is no longer ``etag``, when given)."""
        return self.get_many([key], [etag])[0]

    def get_many(self, keys: Sequence[str], etags: Sequence[Optional[str]], ranges: Optional[Sequence[Tuple[int, int]]] = None) -> List[bytes]:
        """Objects (or byte ranges of them), concurrently; each request carries If-Match."""
        if _forked():
            return self._proxied("get_many", list(keys), list(etags), None if ranges is None else list(ranges))
        obstore = _obstore()
        store = self.store

        def options(i: int) -> Dict[str, Any]:
            o: Dict[str, Any] = {}
            if etags[i]:
                o["if_match"] = etags[i]
            if ranges is not None:
                o["range"] = ranges[i]
            return o

        try:
            if len(keys) == 1:  # no event loop for one request
                return [bytes(obstore.get(store, keys[0], options=options(0)).bytes())]

            async def fetch_all() -> List[bytes]:
                limit = asyncio.Semaphore(CONCURRENCY)

                async def one(i: int) -> bytes:
                    async with limit:
                        result = await obstore.get_async(store, keys[i], options=options(i))
                        return bytes(await result.bytes_async())

                return await asyncio.gather(*(one(i) for i in range(len(keys))))

            return _run(fetch_all())
        except Exception as e:
            what = f"{self.bucket_url}/{keys[0]}" + (f" (bytes {ranges[0][0]}..{ranges[-1][1]})" if ranges else "")
            raise self.error(f"reading {what}", e) from None

    def get_ranges(self, key: str, etag: Optional[str], ranges: Sequence[Tuple[int, int]]) -> List[Any]:
        """Byte ranges of one object, fetched in parallel by the client (each range one request),
        then a HEAD that checks the object still has ``etag``: a range read while the object was
        replaced is refused as If-Match would refuse it (get_ranges takes no If-Match)."""
        if len(ranges) == 1:
            return self.get_many([key], [etag], ranges)
        if _forked():
            return self._proxied("get_ranges", key, etag, list(ranges))
        obstore = _obstore()
        try:
            blobs = obstore.get_ranges(self.store, key, starts=[a for a, _ in ranges], ends=[b for _, b in ranges], coalesce=0)
            if etag and obstore.head(self.store, key).get("e_tag") != etag:
                raise _Changed()
            return blobs
        except Exception as e:
            what = f"{self.bucket_url}/{key} (bytes {ranges[0][0]}..{ranges[-1][1]})"
            raise self.error(f"reading {what}", e) from None

    def put(self, key: str, data: Any, part_size: Optional[int] = None) -> None:
        """Write an object; chunks (an iterator of buffers) go as one multipart upload, parts in parallel."""
        if _forked():
            return self._proxied("put", key, data if isinstance(data, bytes) else b"".join(bytes(c) for c in data))
        obstore = _obstore()
        try:
            if part_size:
                obstore.put(self.store, key, data, chunk_size=part_size, max_concurrency=8, use_multipart=True)
            else:
                obstore.put(self.store, key, data)
        except Exception as e:
            raise self.error(f"writing {self.bucket_url}/{key}", e) from None

    def delete(self, key: str) -> None:
        """Remove the object ``key``; one already gone is not an error."""
        if _forked():
            return self._proxied("delete", key)
        obstore = _obstore()
        try:
            obstore.delete(self.store, key)
        except Exception as e:
            if type(e).__name__ != "NotFoundError":
                raise self.error(f"deleting {self.bucket_url}/{key}", e) from None


class _Changed(Exception):
    """The object's ETag is not the one the map was opened with."""


def _run(coro: Any) -> Any:
    """Run a coroutine to completion, also from inside a running event loop (in a thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
