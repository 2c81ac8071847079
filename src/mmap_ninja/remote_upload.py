"""Upload a local map (or a Megatron corpus) to object storage, its commit record last."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence

from . import ondisk, reads
from .errors import MapFormatError
from .remote import Session

def _walk(files: reads.MapFiles, rel: str = "") -> List[str]:
    """Every file of the map (relative, '/'-separated), through the read seam."""
    out = []
    for name in files.list(rel):
        path = f"{rel}/{name}" if rel else name
        if name.startswith(".") or name == ondisk.LOCK:
            continue
        out.extend(_walk(files, path) if files.is_dir(path) else [path])
    return out


def _commit_files(names: Sequence[str]) -> List[str]:
    """Of a map's files, the one that publishes it (its sample count), uploaded last."""
    for candidate in (ondisk.COMMIT, ondisk.SHAPE, "records.json"):
        if candidate in names:
            return [candidate]
    return []


def _chunks(buffer: Any, size: int) -> Iterator[memoryview]:
    view = memoryview(buffer)
    for a in range(0, len(view), size):
        yield view[a:a + size]


def upload(local: Any, url: str, storage_options: Optional[Dict[str, Any]] = None, verbose: bool = False,
           part_size: int = 16 * 1024 * 1024, jobs: int = 8) -> None:
    """Copy the map at ``local`` to ``url`` (``s3://bucket/prefix``), files in parallel and large
    files as multipart uploads (parts in parallel), with the map's commit record (its sample
    count) written last, after deleting the one there: a reader opening ``url`` meanwhile finds
    no map, never a map with missing bytes. One version of the local map is copied (its files
    are read through one ``reads.MapFiles`` handle).
    """
    from .megatron import is_corpus
    from .progress import progress_bar

    local_text = os.fspath(local)
    if is_corpus(local_text):
        with reads.open_map_files(os.path.dirname(local_text) or ".") as files:
            corpus = not files.is_dir(os.path.basename(local_text))
        if corpus:
            return _upload_corpus(local_text, url, storage_options, part_size)
    try:
        files = reads.open_map_files(local)
    except FileNotFoundError:
        raise FileNotFoundError(f"there is no map at {local}") from None
    with files:
        names = _walk(files)
        if ondisk.KIND not in names and "records.json" not in names:
            raise MapFormatError(f"{local} holds no map: {ondisk.KIND} is missing")
        session = Session(url, storage_options)
        client = session.client
        last = _commit_files(names)
        for name in last:  # a map already there stops being one until the new one is whole
            client.delete(session.key(name))

        def send(rel: str) -> None:
            size = files.size(rel)
            if size <= part_size:
                client.put(session.key(rel), files.read(rel))
            else:
                client.put(session.key(rel), _chunks(files.view(rel, size), part_size), part_size=part_size)

        with progress_bar(verbose, len(names), "upload", unit="file") as bar:
            with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
                for _ in pool.map(send, [n for n in names if n not in last]):
                    bar.update(1)
            for rel in last:
                send(rel)
                bar.update(1)


def _upload_corpus(prefix: str, url: str, storage_options: Optional[Dict[str, Any]], part_size: int) -> None:
    """A Megatron corpus: PREFIX.bin first, PREFIX.idx (its commit record) last."""
    from .megatron_read import _prefix

    prefix = _prefix(prefix)
    folder, name = os.path.split(prefix)
    url = url[:-4] if url.endswith(".idx") or url.endswith(".bin") else url
    bucket_folder, remote_name = url.rstrip("/").rsplit("/", 1)
    session = Session(bucket_folder, storage_options)
    with reads.open_map_files(folder or ".") as files:
        session.client.delete(session.key(remote_name + ".idx"))
        for ext in (".bin", ".idx"):
            size = files.size(name + ext)
            data = files.read(name + ext) if size <= part_size else _chunks(files.view(name + ext, size), part_size)
            session.client.put(session.key(remote_name + ext), data, None if size <= part_size else part_size)
