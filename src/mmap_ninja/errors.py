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


# --- errors about one sample -------------------------------------------------------------------
#
# An error about one sample of a dataset carries attributes besides its message, so that
# other modules (records, convert, the build engine) read which sample and what went wrong
# instead of parsing messages:
#   ``sample``   the sample's index (of the dataset when the build knows it, else of the map)
#   ``problem``  the message without "sample N " in front, to say it again in other words
#   ``noun``     "sample", or "record" for a record of a records map
# and, when a dataset's own code raised it, ``reason``: the message of that first error.
# The error keeps the type users catch (TypeError, ValueError, the dataset's own type), and
# attributes pickle with it across worker processes.


def sample_error(error_type: type, index: int, problem: str, noun: str = "sample") -> BaseException:
    """A new ``error_type("sample {index} {problem}")`` that carries ``sample`` and ``problem``.

    ``noun`` is what the sample is called ("record" in a records map); a ``problem`` that
    starts with "," follows the index directly ("record 3, field 'image': ...").
    """
    error = error_type(f"{noun} {index}{'' if problem.startswith(',') else ' '}{problem}")
    error.sample, error.problem, error.noun = index, problem, noun
    return error


def sample_of(error: BaseException) -> "int | None":
    """The index of the sample ``error`` is about, or None for an error about no one sample."""
    index = getattr(error, "sample", None)
    return index if type(index) is int else None


def renumbered(error: BaseException, index: int) -> BaseException:
    """``error`` about the same sample, named by ``index`` (its index in the dataset)."""
    if sample_of(error) == index or getattr(error, "problem", None) is None:
        return error
    again = sample_error(type(error), index, error.problem, getattr(error, "noun", "sample"))
    for name in ("reason",):
        if hasattr(error, name):
            setattr(again, name, getattr(error, name))
    again.__cause__ = error.__cause__
    return again


def name_sample(error: BaseException, index: int) -> BaseException:
    """The error a dataset raised on sample ``index``, of the same type, naming the sample."""
    problem = f"of the dataset raised {type(error).__name__}: {error}"
    try:
        named = sample_error(type(error), index, problem)
    except Exception:  # an exception type with another constructor: keep it, add a note
        named = error
        named.sample, named.problem = index, problem
        if hasattr(error, "add_note"):
            error.add_note(f"sample {index} {problem}")
    named.reason = str(error)
    if named is not error:
        named.__cause__ = error
    return named
