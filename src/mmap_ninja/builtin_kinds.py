"""The kinds of maps this library ships, registered in ``kinds`` (see its docstring).

Imported by ``kinds`` on its first lookup. Records' machinery is imported only when a
records map is opened or built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from . import layout, megatron
from . import numpy as np_ninja
from .build import ArrayEncoder, RaggedEncoder, StringsEncoder
from .check import check_map
from .kinds import Kind, register
from .merging import ArrayMerger, RaggedMerger, StringsMerger
from .ragged import RaggedMmap
from .images import ImagesField
from .records_fields import ArrayField, RaggedField, StringsField
from .string import StringsMmap


def _spans_opener(cls: type, default_mode: str) -> Any:
    def open_spans_map(path: Path, mode: Optional[str] = None, count: Optional[int] = None, **options: Any) -> Any:
        m = cls.__new__(cls)
        m._limit = count  # before __init__, which maps the samples
        m.__init__(path, mode=mode or default_mode, **options)
        return m

    return open_spans_map


def _array_count(path: Path) -> int:
    return layout.read_array_header(path).shape[0]


def _remote_spans(cls: type) -> Any:
    # the remote modules (and obstore) are imported only when a map in object storage is opened
    def open_remote(url: str, **options: Any) -> Any:
        from .remote_maps import remote_class

        return remote_class(cls)(url, **options)

    return open_remote


def _remote_array(url: str, **options: Any) -> Any:
    from .remote_maps import RemoteArray

    return RemoteArray(url, **options)


# ragged and strings maps open writable as in 0.9.0 (files are opened for writing only when a
# sample is overwritten); same-shape maps read-only
register(Kind(
    "ragged", _spans_opener(RaggedMmap, "r+b"), wraps=True, disk="ragged",
    encoder=lambda options: RaggedEncoder(options.get("dtype"), options.get("zstd_level"), options.get("zstd_train_dictionary_size"),
                                          options.get("zstd_dictionary")),
    count=layout.committed_count, merger=RaggedMerger, inspect=check_map, repair=layout.roll_back, field=RaggedField,
    remote=_remote_spans(RaggedMmap), shapes=True, opens_as="RaggedMmap",
))
register(Kind(
    "strings", _spans_opener(StringsMmap, "r+b"), disk="string",
    encoder=lambda options: StringsEncoder(options.get("zstd_level"), options.get("zstd_train_dictionary_size"),
                                           options.get("zstd_dictionary")),
    count=layout.committed_count, merger=StringsMerger, inspect=check_map, repair=layout.roll_back, field=StringsField,
    remote=_remote_spans(StringsMmap), unit="string", stored_as="str (UTF-8)", opens_as="StringsMmap",
))
register(Kind(
    "numpy", lambda path, mode=None, count=None: np_ninja.open_existing(path, mode or "r", rows=count), disk="numpy",
    encoder=lambda options: ArrayEncoder(options.get("dtype")),
    count=_array_count, merger=ArrayMerger, inspect=check_map, repair=layout.roll_back, field=ArrayField,
    remote=_remote_array, array=True, opens_as="np_ninja / np.memmap",
))


def _open_images(path: Path, mode: Optional[str] = None, count: Optional[int] = None, **options: Any) -> Any:
    from .images import ImagesMmap

    return _spans_opener(ImagesMmap, "r")(path, mode, count, **options)


def _remote_images(url: str, **options: Any) -> Any:
    from .images import ImagesMmap

    return _remote_spans(ImagesMmap)(url, **options)


def _images_encoder(options: Dict[str, Any]) -> Any:
    from .images import ImagesEncoder

    return ImagesEncoder(**options)


# images maps (images.py): encoded bytes, read-only by default (images are never overwritten);
# Pillow is imported only when one is opened or built
register(Kind(
    "images", _open_images, disk="images", encoder=_images_encoder,
    count=layout.committed_count, merger=StringsMerger, inspect=check_map, repair=layout.roll_back, field=ImagesField,
    remote=_remote_images, unit="image", stored_as="uint8 images, stored encoded", opens_as="ImagesMmap, mmap_ninja.images",
))


def _open_records(path: Path, mode: Optional[str] = None, count: Optional[int] = None) -> Any:
    from .records import RecordsMmap

    return RecordsMmap(path, mode or "r")


def _records_product(options: Dict[str, Any]) -> Any:
    from .records_build import RecordsProduct

    return RecordsProduct(options.get("hints"), options.get("classes"))


def _records_count(path: Path) -> int:
    from .records_file import read_records_file

    return read_records_file(path).count


def _is_records(path: Path) -> bool:
    from .records_file import is_records_dir

    return is_records_dir(path)


def _remote_records(url: str, **options: Any) -> Any:
    from .remote_records import remote_records_class

    return remote_records_class()(url, **options)


register(Kind("records", _open_records, count=_records_count, is_map=_is_records, product=_records_product, remote=_remote_records,
              checksummed="values"))  # a record has one value per field
register(Kind("megatron", lambda path, mode=None, count=None: megatron.open(path), inspect=megatron.inspect,
              count=lambda path: len(megatron.open(path)), is_map=megatron.is_corpus,
              opens_as="Megatron-LM / fairseq corpus, mmap_ninja.megatron"))
