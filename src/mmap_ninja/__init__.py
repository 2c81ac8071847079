"""mmap_ninja: store a dataset once in memory-mapped files, then read any sample by index, fast.

A drop-in replacement for mmap_ninja 0.9.0: the same imports, calls and files on disk.
"""

from .errors import MapBusyError, MapFormatError, ReadOnlyMapError
from .generic import open_existing
from .numpy import append as np_append
from .numpy import extend as np_extend
from .numpy import extend_dir as np_extend_dir
from .numpy import from_generator as np_from_generator
from .numpy import from_ndarray as np_from_ndarray
from .numpy import open_existing as np_open_existing
from .parts import concatenate
from .ragged import RaggedMmap
from .skip import Skip
from .string import StringsMmap
from .verification import VerifyReport, verify
from .wrapped import Wrapped


def _version() -> str:
    """The installed distribution's version; pyproject.toml's when running from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmap_ninja")
    except PackageNotFoundError:  # not installed (PYTHONPATH=src): keep in step with pyproject.toml (a test checks)
        return "1.0.0"


__version__ = _version()


def __getattr__(name: str) -> object:
    # records' machinery (five modules) is imported on first use, not by ``import mmap_ninja``
    if name == "RecordsMmap":
        from .records import RecordsMmap

        return RecordsMmap
    raise AttributeError(f"module 'mmap_ninja' has no attribute {name!r}")

__all__ = [
    "RaggedMmap",
    "RecordsMmap",
    "StringsMmap",
    "Wrapped",
    "Skip",
    "verify",
    "VerifyReport",
    "open_existing",
    "concatenate",
    "np_from_ndarray",
    "np_from_generator",
    "np_open_existing",
    "np_extend",
    "np_extend_dir",
    "np_append",
    "MapFormatError",
    "MapBusyError",
    "ReadOnlyMapError",
    "__version__",
]
