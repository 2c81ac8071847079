"""What an index into a map means: one sample, or an ordered batch of positions."""

from __future__ import annotations

import operator
from typing import Any, Union

import numpy as np


def position(item: Any, length: int) -> int:
    """A single index as a position in ``range(length)``, or IndexError/TypeError."""
    if isinstance(item, (bool, np.bool_)) or not hasattr(item, "__index__"):
        raise TypeError(f"map indices must be integers, slices, integer arrays or boolean masks, not {type(item).__name__}")
    i = operator.index(item)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {operator.index(item)} is out of range for a map of {length} samples")
    return i


def positions(item: Any, length: int) -> Union[int, np.ndarray]:
    """``item`` as one position (int), or as an int64 array of positions for a batch."""
    if isinstance(item, slice):
        return np.arange(*item.indices(length), dtype=np.int64)
    if isinstance(item, (list, tuple, np.ndarray, range)):
        arr = np.asarray(item)
        if arr.ndim != 1:
            raise TypeError(f"a batch index must be 1-D, got shape {arr.shape}")
        if arr.dtype == bool:
            if len(arr) != length:
                raise IndexError(f"boolean mask of length {len(arr)} for a map of {length} samples")
            return np.flatnonzero(arr)
        if arr.size == 0:
            return np.empty(0, np.int64)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"a batch index must hold integers or bools, not {arr.dtype}")
        arr = arr.astype(np.int64)
        bad = (arr < -length) | (arr >= length)
        if bad.any():
            raise IndexError(f"index {arr[bad][0]} is out of range for a map of {length} samples")
        return np.where(arr < 0, arr + length, arr)
    return position(item, length)
