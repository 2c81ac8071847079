"""The read-only remote variant of RecordsMmap (``mmap_ninja.remote``): records.json from the
store, each field the remote map its kind registers (``kinds.Kind.remote``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from . import kinds
from .errors import MapFormatError, ReadOnlyMapError
from .remote_client import URLPath, public_options
from .remote_files import RemoteMapFiles, Session
from .remote_maps import _READ_ONLY

_CLASS: Dict[str, type] = {}


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
        from .records import RECORDS_FILE

        info = self._read_info()
        maps = {}
        for name, kind in info.fields:
            url = str(self.path / name)
            opener = kinds.get(kind).remote
            if opener is None:
                raise MapFormatError(f"field {name!r} ({url}) is a {kind} map, which cannot be read from object storage")
            m: Any = opener(url, **self._options)
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
    if "records" not in _CLASS:
        from .records import RecordsMmap

        _CLASS["records"] = type("RemoteRecordsMmap", (RemoteRecordsMixin, RecordsMmap), {"__module__": __name__})
    return _CLASS["records"]


