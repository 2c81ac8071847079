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


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(verbose: bool, total: Optional[int], desc: Optional[str] = None, unit: str = "sample") -> Any:
    """A tqdm bar to ``update(n)`` by hand when ``verbose``, else one that does nothing (both context managers)."""
    if not verbose:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)


def check_batch_size(batch_size: Any) -> None:
    """Raise unless ``batch_size`` is a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def batched(iterable: Iterable[Any], batch_size: int) -> Iterator[List[Any]]:
    """Consecutive lists of ``batch_size`` items (the last may be shorter)."""
    check_batch_size(batch_size)
    it = iter(iterable)
    while True:
        batch = list(itertools.islice(it, batch_size))
        if not batch:
            return
        yield batch
        del batch  # hold one batch, not two, while the next is read
