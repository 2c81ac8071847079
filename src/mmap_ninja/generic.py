"""Open any map by what is on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

from . import kinds, layout
from .errors import MapFormatError

__all__ = ["open_existing"]


def open_existing(out_dir: Union[str, os.PathLike], wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: Optional[str] = None, **remote_options: Any) -> Any:
    """Open the map at ``out_dir``, whichever kind it is: a RaggedMmap, a StringsMmap, an
    ImagesMmap or an ``np.memmap``. With ``wrapper_fn``, samples pass through it when read.

    Without ``mode``, as in mmap_ninja 0.9.0: ragged and strings maps allow overwriting samples
    ("r+b"; files are opened for writing only when a sample is overwritten), same-shape maps
    are opened read-only ("r").
    """
    if isinstance(out_dir, str) and "://" in out_dir:
        from . import remote

        if remote.is_url(out_dir):  # a map in object storage, read-only
            return remote.open_existing(out_dir, wrapper_fn, mode, **remote_options)
    out_dir = Path(out_dir)
    if not out_dir.exists():
        raise FileNotFoundError(f"there is no map at {out_dir}")
    kind = kinds.by_disk(layout.read_kind(out_dir))
    if kind is None:
        raise MapFormatError(f"{out_dir} holds no map: {layout.KIND} is missing")
    if kind.wraps:  # the map applies wrapper_fn itself (a RaggedMmap, as in 0.9.0)
        return kind.open(out_dir, mode, wrapper_fn=wrapper_fn)
    data = kind.open(out_dir, mode)
    if wrapper_fn is None:
        return data
    from .wrapped import Wrapped

    return Wrapped(data, wrapper_fn)
