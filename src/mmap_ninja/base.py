"""Where mmap_ninja 0.9.0 kept ``Wrapped`` and its file helpers; kept so that its imports keep working."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from . import layout
from .wrapped import Wrapped

__all__ = ["Wrapped"]


def _str_to_file(inp: str, file: Union[str, os.PathLike], encoding: str = "utf-8") -> None:
    """Compatibility alias for 0.9.0's private helper (its own tests call it): write ``inp`` to ``file``.

    Not part of the API: use the map classes to write maps.
    """
    layout._write_file(Path(file), inp.encode(encoding))
