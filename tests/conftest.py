"""Shared checks for the core API tests: samples compare by type, dtype, shape and every value."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pytest


def _check_sample(got: Any, expected: Any, where: str = "sample") -> None:
    """``got`` is a plain ndarray with the dtype, shape and values of ``expected``."""
    expected = np.asarray(expected)
    assert type(got) is np.ndarray, f"{where}: expected a plain np.ndarray, got {type(got).__name__}"
    assert got.dtype == expected.dtype, f"{where}: dtype {got.dtype}, expected {expected.dtype}"
    assert got.shape == expected.shape, f"{where}: shape {got.shape}, expected {expected.shape}"
    nan_aware = expected.dtype.kind in "fc"
    assert np.array_equal(got, expected, equal_nan=nan_aware), f"{where}: values differ:\n{got!r}\nexpected\n{expected!r}"


def _check_samples(got: Sequence[Any], expected: Sequence[Any]) -> None:
    """Every sample of ``got`` matches the one at the same position in ``expected``."""
    got = list(got)
    assert len(got) == len(expected), f"{len(got)} samples, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        _check_sample(g, e, f"sample {i}")


@pytest.fixture
def same_sample() -> Callable[..., None]:
    """Assert one sample equals an expected array (plain ndarray, dtype, shape, values)."""
    return _check_sample


@pytest.fixture
def same_samples() -> Callable[..., None]:
    """Assert a sequence of samples equals a list of expected arrays, sample by sample."""
    return _check_samples
