"""Token corpora in the format of Megatron-LM and fairseq: ``PREFIX.idx`` + ``PREFIX.bin``.

``open(prefix)`` maps a corpus read-only with the reading API of a RaggedMmap of 1-D
samples; ``write(prefix, samples)`` writes one that Megatron-LM's ``IndexedDataset`` reads.
Neither needs Megatron-LM (``megatron-core``) or fairseq installed. The format, its dtype
codes and what an open checks are described in ``megatron_read.py``; writing, ``inspect``
and the conversions to and from a RaggedMmap are in ``megatron_write.py``.
"""

from __future__ import annotations

from typing import Any

from .megatron_read import FAIRSEQ_DTYPES, MAGIC, MEGATRON_DTYPES, MegatronMap, PathLike, is_corpus
from .megatron_write import DOCUMENTS, SEQUENCE_MODES, from_ragged, inspect, to_ragged, write

__all__ = ["MegatronMap", "open", "write", "inspect", "to_ragged", "from_ragged", "MAGIC", "MEGATRON_DTYPES", "FAIRSEQ_DTYPES",
           "is_corpus", "DOCUMENTS", "SEQUENCE_MODES"]


def open(prefix: PathLike, **remote_options: Any) -> MegatronMap:  # noqa: A001 - the module is used as megatron.open
    """Map the corpus ``prefix.idx`` + ``prefix.bin`` read-only (``prefix`` may also name either file).

    A URL prefix (``s3://bucket/corpus``) opens the corpus in object storage (``remote.py``);
    ``remote_options`` are its ``storage_options``, ``cache_dir`` and ``cache_size``."""
    if isinstance(prefix, str) and "://" in prefix:
        from . import remote

        if remote.is_url(prefix):
            return remote.remote_megatron_class()(prefix, **remote_options)
    return MegatronMap(prefix)
