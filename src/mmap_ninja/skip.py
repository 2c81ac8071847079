"""``Skip``: what a dataset returns in place of a sample to leave it out of the map.

Any builder that reads a dataset by index (``from_indexable`` of every kind, serial, with
``n_jobs`` or on Dask, and ``mmap-ninja convert --skip-bad``) leaves such a sample out and
reports its index and reason; the map holds the other samples, in order. A build in which
every sample is skipped raises instead of publishing an empty map.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Skip", "AllSkippedError"]


class Skip(NamedTuple):
    """Return ``Skip("why")`` from ``dataset[i]`` to leave sample ``i`` out of the map."""

    reason: str = ""


class AllSkippedError(ValueError):
    """Every sample of the dataset was skipped, so no map was written."""
