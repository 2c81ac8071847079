"""``records.json``: the small file that lists a records map's fields and commits its records.

See ``records.py`` for the layout and the commit protocol. Reading checks the file whole and
raises ``MapFormatError`` naming it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

from . import fs
from .errors import MapFormatError
from .reads import MapFiles, open_map_files
from .records_schema import KINDS, RECORDS_FILE, check_field_name

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "mmap_ninja.records"
VERSION = 1


class RecordsInfo(NamedTuple):
    """What ``records.json`` says: the committed record count, the fields in order, the classes."""

    count: int
    fields: Tuple[Tuple[str, str], ...]  # (name, kind)
    classes: Optional[Tuple[str, ...]] = None


def is_records_dir(path: PathLike) -> bool:
    """Whether ``path`` is a records map (a directory with ``records.json``)."""
    try:
        with open_map_files(path) as files:
            return files.exists(RECORDS_FILE) and not files.is_dir(RECORDS_FILE)
    except (FileNotFoundError, NotADirectoryError, MapFormatError):  # nothing there, or a file
        return False


def read_records_file(path: Union[PathLike, MapFiles]) -> RecordsInfo:
    """Read and check ``records.json`` of the records map at ``path`` (or of a handle's version of it)."""
    if not isinstance(path, MapFiles):
        try:
            with open_map_files(path) as files:
                return read_records_file(files)
        except FileNotFoundError:
            raise MapFormatError(f"{path} holds no records map: {RECORDS_FILE} is missing") from None
    files = path
    path, file = files.path, files.path / RECORDS_FILE
    if not files.exists(RECORDS_FILE):
        raise MapFormatError(f"{path} holds no records map: {RECORDS_FILE} is missing")
    try:
        raw = files.read(RECORDS_FILE)
    except IsADirectoryError:
        raise MapFormatError(f"{file} is a directory, not a file") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MapFormatError(f"{file} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MapFormatError(f"{file} does not describe a records map (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise MapFormatError(f"{file} has version {doc.get('version')!r}; this library reads version {VERSION}")
    count, fields, classes = doc.get("count"), doc.get("fields"), doc.get("classes")
    if type(count) is not int or count < 0:
        raise MapFormatError(f"{file}: count is {count!r}, not a record count")
    if not isinstance(fields, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str) and f.get("kind") in KINDS for f in fields):
        raise MapFormatError(f"{file}: fields should be a list of {{\"name\": str, \"kind\": one of {KINDS}}}")
    if not fields:
        raise MapFormatError(f"{file} lists no fields; a records map has at least one")
    names = [f["name"] for f in fields]
    for name in names:
        try:
            check_field_name(name, names)
        except (TypeError, ValueError) as e:
            raise MapFormatError(f"{file}: {e}") from None
    if len(set(names)) != len(names):
        raise MapFormatError(f"{file} names a field twice")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise MapFormatError(f"{file}: classes should be a list of str")
    return RecordsInfo(count, tuple((f["name"], f["kind"]) for f in fields), None if classes is None else tuple(classes))


_COUNT_AT = b'{"count": '  # what records.json begins with; the count follows in 20 characters
_COUNT_WIDTH = 20


def write_records_file(path: Path, info: RecordsInfo, durable: bool = False) -> None:
    """Replace ``records.json`` in one step (write a new file, rename it over the old one)."""
    doc: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "fields": [{"name": n, "kind": k} for n, k in info.fields]}
    if info.classes is not None:
        doc["classes"] = list(info.classes)
    text = _COUNT_AT + str(info.count).rjust(_COUNT_WIDTH).encode("ascii") + b"," + json.dumps(doc, indent=1)[1:].encode("utf-8")
    tmp = path / f".{RECORDS_FILE}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fs.write_file(tmp, text)
        if durable:
            fs.sync_path(tmp)
        fs.replace(tmp, path / RECORDS_FILE)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fs.sync_path(path)


def read_count(fd: int) -> Optional[int]:
    """The committed count at the head of an open ``records.json``; None if it is laid out otherwise."""
    head = fs.pread(fd, len(_COUNT_AT) + _COUNT_WIDTH + 1, 0)
    digits = head[len(_COUNT_AT):-1]
    if head.startswith(_COUNT_AT) and head.endswith(b",") and digits.strip().isdigit():
        return int(digits)
    return None


def commit_count(path: Path, info: RecordsInfo, durable: bool = False, fd: Optional[int] = None) -> None:
    """Publish ``info.count`` records: one write of the count's 20 bytes in ``records.json``
    (``fd``: the file, open for writing, else it is opened here)."""
    own = fd is None
    if own:
        fd = fs.open_file(path / RECORDS_FILE, os.O_RDWR)
    try:
        if read_count(fd) is not None and len(str(info.count)) <= _COUNT_WIDTH:
            fs.pwrite(fd, str(info.count).rjust(_COUNT_WIDTH).encode("ascii"), len(_COUNT_AT))  # the commit
            if durable:
                fs.fsync(fd)
            return
    finally:
        if own:
            fs.close(fd)
    write_records_file(path, info, durable)  # laid out otherwise (edited by hand): rewrite it whole


def _remove_stale_records_files(path: Path) -> None:
    """Remove new records files that writers killed before their rename left behind."""
    with open_map_files(path) as files:
        names = [n for n in files.list() if n.startswith(f".{RECORDS_FILE}.tmp-")]
    for name in names:
        try:
            pid = int(name.split(".tmp-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if not fs.process_alive(pid):
            fs.rmtree(path / name)
