"""Open any map by what is on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

from . import layout
from .errors import MapFormatError

__all__ = ["open_existing"]


def open_existing(out_dir: Union[str, os.PathLike], wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: Optional[str] = None, **remote_options: Any) -> Any:
    """Open the map at ``out_dir``, whichever kind it is: a RaggedMmap, a StringsMmap or an
    ``np.memmap``. With ``wrapper_fn``, samples pass through it when read.

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
    kind = layout.read_kind(out_dir)
    if kind == "ragged":
        from .ragged import RaggedMmap

        return RaggedMmap(out_dir, wrapper_fn=wrapper_fn, mode=mode or "r+b")
    if kind == "string":
        from .string import StringsMmap

        data: Any = StringsMmap(out_dir, mode=mode or "r+b")
    elif kind == "numpy":
        from .numpy import open_existing as open_array

        data = open_array(out_dir, mode=mode or "r")
    else:
        raise MapFormatError(f"{out_dir} holds no map: {layout.KIND} is missing")
    if wrapper_fn is None:
        return data
    from .wrapped import Wrapped

    return Wrapped(data, wrapper_fn)
