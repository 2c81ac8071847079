"""Wrapped: a map (or any sequence) whose samples pass through a function when read."""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

__all__ = ["Wrapped"]


class Wrapped:
    """``data`` with ``wrapper_fn`` applied to what is read (after a copy when asked).

    ``w[item]`` is ``wrapper_fn(data[item])`` for any index, as in mmap_ninja 0.9.0: for a
    slice the function receives the whole batch (a list, or an array for a same-shape map);
    iterating applies it to each sample. Pickles by reference when ``data`` does (every map
    of this library does).
    """

    def __init__(self, data: Any, wrapper_fn: Callable[[Any], Any], copy_before_wrapper_fn: bool = True):
        self.data = data
        self.wrapper_fn = wrapper_fn
        self.copy_before_wrapper_fn = copy_before_wrapper_fn

    def _wrap(self, sample: Any) -> Any:
        return self.wrapper_fn(copy.copy(sample) if self.copy_before_wrapper_fn else sample)

    def __getitem__(self, item: Any) -> Any:
        return self._wrap(self.data[item])

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"Wrapped({self.data!r}, {self.wrapper_fn!r})"
