"""Progress bars and batching for the long-running builders."""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, List, Optional


def progress(iterable: Iterable, verbose: bool, total: Optional[int] = None, desc: Optional[str] = None) -> Iterable:
    """``iterable`` wrapped in a tqdm bar when ``verbose``, unchanged otherwise."""
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(iterable, total=total, desc=desc, unit="sample")


def batched(iterable: Iterable[Any], batch_size: int) -> Iterator[List[Any]]:
    """Consecutive lists of ``batch_size`` items (the last may be shorter)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    it = iter(iterable)
    while True:
        batch = list(itertools.islice(it, batch_size))
        if not batch:
            return
        yield batch
        del batch  # hold one batch, not two, while the next is read
