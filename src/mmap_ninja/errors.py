"""Exceptions that mmap_ninja raises beyond Python's built-in ones."""

__all__ = ["MapFormatError", "MapBusyError", "ReadOnlyMapError", "WorkerDiedError"]


class MapFormatError(ValueError):
    """A map's files are missing, truncated or do not agree with each other.

    The message names the file at fault. Nothing is read from a map in this state; fix or
    rebuild it.
    """


class MapBusyError(RuntimeError):
    """Another writer (another process, or another handle in this one) is appending to the map."""


class ReadOnlyMapError(PermissionError):
    """The map was opened read-only, so its samples cannot be overwritten."""


class WorkerDiedError(RuntimeError):
    """A worker process of a parallel build died (killed by the OS, e.g. out of memory).

    The message names the samples it was building. Nothing was written at the map's path.
    """
