"""Turning what users pass in into arrays a map can store, without losing a value.

A map has one dtype. Samples of another dtype are cast to it only when no value changes
(e.g. int64 samples within the range of an int8 map, or 3.0 into an int map); floats may be
rounded into a narrower float dtype, but never overflow to infinity. Anything else raises.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

from .errors import sample_error

STORABLE_KINDS = "biufc"  # bool, ints, unsigned ints, floats, complex


def as_array(sample: Any, position: int) -> np.ndarray:
    """``sample`` as an ndarray of numbers, or a TypeError naming its position."""
    if sample is None:
        raise sample_error(TypeError, position, "is None; a map stores arrays of numbers")
    try:
        arr = np.asarray(sample)
    except ValueError as e:  # nested lists of unequal lengths
        raise sample_error(TypeError, position, f"cannot be made into an array: {e}") from None
    if arr.dtype.kind not in STORABLE_KINDS:
        raise sample_error(
            TypeError, position,
            f"has dtype {arr.dtype} ({type(sample).__name__}); a map stores arrays of numbers or bools (use StringsMmap for text)",
        )
    return arr


def common_dtype(arrays: Sequence[np.ndarray]) -> np.dtype:
    """The dtype that holds every sample, by numpy's promotion rules.

    Empty samples take no part unless all are empty: ``[]`` is float64 to numpy, and should
    not turn a map of ints into floats.
    """
    non_empty = [a.dtype for a in arrays if a.size] or [a.dtype for a in arrays]
    return np.result_type(*non_empty) if non_empty else np.dtype(np.float64)


def cast_losslessly(arr: np.ndarray, dtype: np.dtype, position: int) -> np.ndarray:
    """``arr`` as ``dtype``, or a ValueError/TypeError if a value would change."""
    if arr.dtype == dtype or np.can_cast(arr.dtype, dtype, "safe"):
        return arr.astype(dtype, copy=False)
    problem = f"has dtype {arr.dtype} and the map holds {dtype}"
    if arr.dtype.kind == "c" and dtype.kind != "c":
        raise sample_error(TypeError, position, f"{problem}: complex values would lose their imaginary part")
    with np.errstate(all="ignore"):
        out = arr.astype(dtype)
        if arr.dtype.kind in "biu" and dtype.kind in "iu":  # a round trip would hide wrap-around
            info = np.iinfo(dtype)
            lossless = arr.size == 0 or (int(arr.min()) >= info.min and int(arr.max()) <= info.max)
        elif arr.dtype.kind in "fc" and dtype.kind in "fc":
            lossless = np.array_equal(np.isfinite(out), np.isfinite(arr))
        else:
            lossless = np.array_equal(out.astype(arr.dtype), arr, equal_nan=arr.dtype.kind in "fc")
    if not lossless:
        raise sample_error(ValueError, position, f"{problem}, which cannot hold all of its values; convert it explicitly if that is what you want")
    return out


def prepare_arrays(samples: Sequence[Any], dtype: Optional[np.dtype], first_position: int = 0) -> List[np.ndarray]:
    """Check and cast a batch of samples; the batch decides the dtype when ``dtype`` is None."""
    arrays = [s if type(s) is np.ndarray else as_array(s, first_position + i) for i, s in enumerate(samples)]
    found = {a.dtype for a in arrays}
    for d in found:
        if d.kind not in STORABLE_KINDS:
            i = next(i for i, a in enumerate(arrays) if a.dtype == d)
            as_array(arrays[i], first_position + i)  # raises, naming the sample
    dtype = common_dtype(arrays) if dtype is None else np.dtype(dtype)
    if dtype.kind not in STORABLE_KINDS:
        raise TypeError(f"a map cannot store dtype {dtype}")
    if found <= {dtype}:  # the common case: nothing to cast
        return arrays
    return [a if a.dtype == dtype else cast_losslessly(a, dtype, first_position + i) for i, a in enumerate(arrays)]


def prepare_strings(strings: Sequence[Any], first_position: int = 0) -> List[bytes]:
    """Encode a batch of str as UTF-8, or raise a TypeError naming what is not a str."""
    try:
        return [s.encode("utf-8") if isinstance(s, str) else _not_a_string(s) for s in strings]
    except _NotAString:
        pass
    bad = next(i for i, s in enumerate(strings) if not isinstance(s, str))
    raise sample_error(TypeError, first_position + bad, f"is {type(strings[bad]).__name__}, not str; a StringsMmap stores str only")


class _NotAString(Exception):
    pass


def _not_a_string(value: Any) -> bytes:
    raise _NotAString

