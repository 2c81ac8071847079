"""zstd, one frame per sample (the optional ``zstandard`` package, imported on first use).

The functions ``codecs.ZstdCodec`` is made of; maps use the codec, not these."""

from __future__ import annotations

from typing import Callable, List, Optional


def _zstandard():  # type: ignore[no-untyped-def]
    try:
        import zstandard
    except ImportError:
        raise ImportError("zstd compression needs zstandard: pip install 'mmap_ninja[zstd]'") from None
    return zstandard


def compressor(level: int, dictionary: Optional[bytes]) -> Callable[[bytes], bytes]:
    zstd = _zstandard()
    dict_data = zstd.ZstdCompressionDict(dictionary) if dictionary is not None else None
    return zstd.ZstdCompressor(level=level, dict_data=dict_data).compress


def decompressor(dictionary: Optional[bytes]) -> Callable[[bytes], bytes]:
    zstd = _zstandard()
    dict_data = zstd.ZstdCompressionDict(dictionary) if dictionary is not None else None
    return zstd.ZstdDecompressor(dict_data=dict_data).decompress


def train_dictionary(samples: List[bytes], size: int) -> bytes:
    """A zstd dictionary of at most ``size`` bytes trained on ``samples``."""
    zstd = _zstandard()
    try:
        return zstd.train_dictionary(size, samples).as_bytes()
    except zstd.ZstdError as e:
        raise ValueError(f"could not train a zstd dictionary of {size} bytes on {len(samples)} samples ({e}); "
                         "use more samples or a smaller zstd_train_dictionary_size") from None
