"""Reading samples out of a user's dataset object, optionally in parallel (joblib)."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Tuple

from .progress import batched


def _fetch(getter: Callable[[int], Any], indices: List[int]) -> List[Any]:
    out = []
    for i in indices:
        try:
            out.append(getter(i))
        except IndexError:
            break
    return out


def _count_of(indexable: Any) -> Optional[int]:
    try:
        return len(indexable)
    except TypeError:
        return None


def iterate_indexable(indexable: Any, batch_size: int, n_jobs: Optional[int] = None) -> Tuple[Iterator[Any], Optional[int]]:
    """The samples ``indexable[0], indexable[1], ...`` in order, and their count if known.

    ``indexable`` has ``__getitem__`` (with or without ``__len__``) or is a function of an
    int; without a length, the first IndexError ends it. ``n_jobs > 1`` fetches each batch
    with joblib, which must then be installed.
    """
    getter = indexable if callable(indexable) and not hasattr(indexable, "__getitem__") else indexable.__getitem__
    total = _count_of(indexable)
    parallel = None
    if n_jobs is not None and n_jobs != 1:
        try:
            from joblib import Parallel, delayed
        except ImportError:
            raise ImportError("n_jobs needs joblib: pip install 'mmap_ninja[parallel]'") from None
        parallel = Parallel(n_jobs=n_jobs)

    def samples() -> Iterator[Any]:
        start = 0
        while total is None or start < total:
            stop = start + batch_size if total is None else min(start + batch_size, total)
            indices = list(range(start, stop))
            if parallel is None:
                batch = _fetch(getter, indices)
            else:
                chunks = list(batched(indices, max(1, len(indices) // (4 * abs(n_jobs)) or 1)))
                batch = [s for part in parallel(delayed(_fetch)(getter, c) for c in chunks) for s in part]
            yield from batch
            if len(batch) < len(indices):
                return
            start = stop

    return samples(), total
