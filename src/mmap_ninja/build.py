"""The one builder: batches of samples -> a map, through a small encoder per kind.

Also what the build engine (``parallel.py``, ``dask.py``) needs of a map of one kind: a
``MapProduct`` builds a range of a dataset into a part, merges parts in order and creates
an empty map; ``records_build.RecordsProduct`` does the same for records.

An encoder turns a batch into what the layout's writers take (buffers, element counts and
shape records for ragged and strings maps; rows for same-shape maps), decides the map's
layout from the first batch, and lays out the map. ``build_into`` writes into a private
directory (a part); ``write`` publishes the result at ``out_dir`` in one step. Appends to
an existing map use the same encoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import codecs, fs, kinds, layout
from .errors import name_sample, renumbered, sample_of, sample_error
from .samples import STORABLE_KINDS, as_array, cast_losslessly, common_dtype, prepare_arrays, prepare_strings
from .shapes import LENGTHS, ShapeRecord
from .skip import Skip

_STRINGS_PIECE = 1024  # strings encoded and written together: memory holds the batch, not also its encoding


class ZstdOption:
    """The ``zstd_level`` / ``zstd_train_dictionary_size`` words of a builder, as a codec.

    The dictionary, if asked for, is trained on the first batch's samples (their raw bytes).
    """

    def __init__(self, zstd_level: Optional[int], train_dictionary_size: Optional[int], dictionary: Optional[bytes]):
        if train_dictionary_size is not None and zstd_level is None:
            raise ValueError("zstd_train_dictionary_size needs a zstd_level")
        self.level = zstd_level
        self._train_size = train_dictionary_size if dictionary is None else None
        self.codec: Optional[codecs.ZstdCodec] = None
        if zstd_level is not None and self._train_size is None:
            self.codec = codecs.ZstdCodec(zstd_level, dictionary)

    def ready(self, first_batch: Callable[[], List[bytes]]) -> Optional[codecs.ZstdCodec]:
        """The codec, trained on ``first_batch()`` if it still needs its dictionary."""
        if self._train_size is not None:
            self.codec = codecs.ZstdCodec.trained(self.level, first_batch(), self._train_size)
            self._train_size = None
        return self.codec


class RaggedEncoder:
    """Arrays of any shape and one dtype (the first batch's, unless given), stored raw or
    zstd-compressed one by one (``zstd_level``, optionally with a dictionary)."""

    def __init__(self, dtype: Any = None, zstd_level: Optional[int] = None, train_dictionary_size: Optional[int] = None, dictionary: Optional[bytes] = None):
        self.dtype = None if dtype is None else np.dtype(dtype)
        self._zstd = ZstdOption(zstd_level, train_dictionary_size, dictionary)

    @property
    def codec(self) -> Optional[codecs.ZstdCodec]:
        return self._zstd.codec

    def encode(self, batch: Sequence[Any], position: int, piece: Optional[int] = None) -> List[tuple]:
        arrays = prepare_arrays(batch, self.dtype, position)
        if not arrays:
            return []
        if self.dtype is None:
            self.dtype = arrays[0].dtype
        lengths = np.array([a.size for a in arrays], np.int64)
        shapes = ShapeRecord.of(arrays, lengths)
        codec = self._zstd.ready(lambda: [a.tobytes() for a in arrays])
        if codec is None:
            return [(arrays, lengths, shapes)]
        stored = [codec.encode(a.tobytes()) for a in arrays]
        sizes = np.fromiter((len(b) for b in stored), np.int64, len(stored))
        return [(stored, sizes, shapes, lengths)]

    def create(self, map_dir: Path, first: tuple) -> layout.SpansWriter:
        return self._create(map_dir, first[2].needed_layout())

    def _create(self, map_dir: Path, shape_layout: Any = LENGTHS) -> layout.SpansWriter:
        codec = self.codec
        layout.create_spans(map_dir, "ragged", self.dtype, shape_layout, codec.name if codec else None)
        codecs.write(map_dir, codec, "ragged")
        return layout.SpansWriter(map_dir, 1 if codec else self.dtype.itemsize, with_shapes=True)

    def create_empty(self, map_dir: Path) -> None:
        if self.dtype is not None:  # else the map stays an empty directory: the first append decides
            self._create(map_dir).close()

    @staticmethod
    def append(writer: layout.SpansWriter, piece: tuple, durable: bool, published: bool) -> int:
        writer.make_room(piece[2], published, durable)
        writer.append(*piece[:3], durable=durable, counts=piece[3] if len(piece) > 3 else None)
        return len(piece[1])


class StringsEncoder:
    """str samples as UTF-8, optionally zstd-compressed one by one (with a dictionary)."""

    def __init__(self, zstd_level: Optional[int] = None, train_dictionary_size: Optional[int] = None, dictionary: Optional[bytes] = None):
        self.zstd_level = zstd_level
        self._zstd = ZstdOption(zstd_level, train_dictionary_size, dictionary)

    @property
    def dictionary(self) -> Optional[bytes]:
        return self._zstd.codec.dictionary if self._zstd.codec is not None else None

    def encode(self, batch: Sequence[Any], position: int, piece: Optional[int] = None) -> Iterator[tuple]:
        codec = self._zstd.ready(lambda: prepare_strings(batch, position))
        piece = piece or max(1, len(batch))
        for first in range(0, len(batch), piece):
            buffers = prepare_strings(batch[first : first + piece], position + first)
            if codec is not None:
                buffers = [codec.encode(b) for b in buffers]
            yield (buffers, np.fromiter((len(b) for b in buffers), np.int64, len(buffers)), None)

    def create(self, map_dir: Path, first: Any = None) -> layout.SpansWriter:
        layout.create_spans(map_dir, "string", np.dtype(np.uint8))
        codecs.write(map_dir, self._zstd.codec, "string")
        return layout.SpansWriter(map_dir, 1, with_shapes=False)

    def create_empty(self, map_dir: Path) -> None:
        self.create(map_dir).close()

    @staticmethod
    def append(writer: layout.SpansWriter, piece: tuple, durable: bool, published: bool) -> int:
        writer.append(*piece, durable=durable)
        return len(piece[1])


class ArrayEncoder:
    """Samples of one shape and dtype (the first batch's, unless the dtype is given)."""

    def __init__(self, dtype: Any = None, row_shape: Optional[tuple] = None):
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.row_shape = row_shape

    def encode(self, batch: Any, position: int, piece: Optional[int] = None) -> List[np.ndarray]:
        if isinstance(batch, np.ndarray):  # a whole array of rows (from_ndarray, extend)
            rows = as_rows(batch, self.dtype, self.row_shape, position)
        else:
            arrays = [as_array(s, position + i) for i, s in enumerate(batch)]
            if not arrays:
                return []
            if self.row_shape is None:
                self.row_shape = arrays[0].shape
            for i, a in enumerate(arrays):
                if a.shape != self.row_shape:
                    raise sample_error(ValueError, position + i, f"has shape {a.shape}, but the map holds samples of shape {self.row_shape}")
            dtype = common_dtype(arrays) if self.dtype is None else self.dtype
            rows = np.stack([cast_losslessly(a, dtype, position + i) for i, a in enumerate(arrays)])
        if self.dtype is None:
            if rows.dtype.kind not in STORABLE_KINDS:
                raise TypeError(f"a map cannot store dtype {rows.dtype}")
            self.dtype, self.row_shape = rows.dtype, rows.shape[1:]
        return [rows] if len(rows) else []

    def create(self, map_dir: Path, first: np.ndarray) -> layout.ArrayWriter:
        return layout.ArrayWriter(map_dir, layout.create_array(map_dir, self.dtype, self.row_shape))

    def create_empty(self, map_dir: Path) -> None:
        if self.dtype is None or self.row_shape is None:
            raise ValueError("no samples were given; a same-shape map needs one to know its shape and dtype")
        layout.create_array(map_dir, self.dtype, self.row_shape)

    @staticmethod
    def append(writer: layout.ArrayWriter, rows: np.ndarray, durable: bool, published: bool) -> int:
        writer.append(rows, durable)
        return len(rows)


def as_rows(arr: Any, dtype: Optional[np.dtype], row_shape: Optional[tuple], first_position: int) -> np.ndarray:
    """An array whose axis 0 counts samples, checked (and cast losslessly) for a same-shape map."""
    arr = as_array(arr, first_position)
    if arr.ndim == 0:
        raise ValueError("expected an array whose first axis counts samples, got a 0-d value")
    if row_shape is not None and arr.shape[1:] != tuple(row_shape):
        raise ValueError(f"samples have shape {arr.shape[1:]}, but this map holds samples of shape {tuple(row_shape)}")
    if dtype is None:
        return arr
    try:
        return cast_losslessly(arr, dtype, first_position)
    except (TypeError, ValueError):
        for i, row in enumerate(arr):  # name the first sample at fault, not the batch
            cast_losslessly(row, dtype, first_position + i)
        raise


Encoder = Any  # RaggedEncoder | StringsEncoder | ArrayEncoder


def encoder_for(kind: str, options: Dict[str, Any]) -> Encoder:
    """A new encoder of ``kind`` (a name in ``kinds``) with the builder's options."""
    encoder = kinds.get(kind).encoder
    if encoder is None:
        raise ValueError(f"maps of kind {kind!r} are not built from samples one by one")
    return encoder(options)


class _Range(NamedTuple):
    path: str
    start: int
    stop: int  # one past the last sample read


class Part(_Range):
    """A finished part: its map directory and the dataset's index range it holds.

    Unpacks as ``(path, start, stop)``; ``skipped`` lists the (index, reason) of the samples
    the dataset left out (``Skip``).
    """

    def __new__(cls, path: str, start: int, stop: int, skipped: Sequence[Tuple[int, str]] = ()) -> "Part":
        part = super().__new__(cls, path, start, stop)
        part.skipped = tuple(skipped)
        return part

    def __reduce__(self) -> tuple:
        return (Part, (self.path, self.start, self.stop, self.skipped))

    @property
    def count(self) -> int:
        """The samples the part holds."""
        return self.stop - self.start - len(self.skipped)


class Batch(list):
    """A batch of samples read from a dataset, and where they came from.

    ``first`` is the dataset index of its first sample; ``indices`` the index of every
    sample when some were skipped (None: ``first, first + 1, ...``).
    """

    first: int = 0
    indices: Optional[List[int]] = None

    def dataset_index(self, offset: int) -> int:
        """The dataset index of the batch's sample number ``offset``."""
        return self.first + offset if self.indices is None else self.indices[offset]


class Reading:
    """What reading a range of a dataset found: where it ended, and the samples skipped."""

    def __init__(self, start: int):
        self.stop = start  # one past the last index read
        self.skipped: List[Tuple[int, str]] = []

    def part(self, path: Any, start: int) -> Part:
        return Part(str(path), start, self.stop, tuple(self.skipped))


def indexed_batches(indexable: Any, start: int, stop: int, batch_size: int, reading: Optional[Reading] = None) -> Iterator[Batch]:
    """Batches of ``indexable[start:stop]``; an IndexError ends it early (no ``__len__``).

    A sample the dataset returns as ``Skip`` is left out and noted in ``reading``; an error
    the dataset raises names the sample (``errors.name_sample``).
    """
    reading = reading if reading is not None else Reading(start)
    getter = indexable if callable(indexable) and not hasattr(indexable, "__getitem__") else indexable.__getitem__
    for first in range(start, stop, batch_size):
        batch = Batch()
        batch.first = first
        for i in range(first, min(first + batch_size, stop)):
            try:
                sample = getter(i)
            except IndexError:
                if batch:
                    yield batch
                return
            except Exception as e:
                raise name_sample(e, i) from e
            reading.stop = i + 1
            if isinstance(sample, Skip):
                reading.skipped.append((i, sample.reason))
                if batch.indices is None:
                    batch.indices = list(range(first, i))
                continue
            batch.append(sample)
            if batch.indices is not None:
                batch.indices.append(i)
        yield batch
        del batch


def build_into(
    map_dir: Path,
    encoder: Encoder,
    batches: Iterable[Any],
    on_batch: Optional[Callable[[int], None]] = None,
    first_position: int = 0,
) -> int:
    """Write every batch into the private, empty directory ``map_dir``; returns the sample count.

    ``first_position`` is the dataset index of the first sample: errors name samples by it,
    or by the dataset's index when a ``Batch`` says (samples were skipped). Nothing is
    fsynced here: a durable build syncs the whole directory once, before it is published
    (``layout.building``).
    """
    writer = None
    position = first_position
    try:
        for batch in batches:
            batch_start = position
            try:
                for piece in encoder.encode(batch, position, _STRINGS_PIECE):
                    if writer is None:
                        writer = encoder.create(map_dir, piece)
                    with writer.locked(lock=False):
                        position += encoder.append(writer, piece, False, published=False)
                    del piece
            except (TypeError, ValueError) as e:
                raise in_dataset(e, batch, batch_start) from e.__cause__
            if on_batch is not None:
                on_batch(read_count(batch))
            del batch  # hold one batch, not two, while the next is read
        if writer is None:
            encoder.create_empty(map_dir)
    finally:
        if writer is not None:
            writer.close()
    return position - first_position


def read_count(batch: Any) -> int:
    """How many samples of the dataset a batch stands for (skipped ones included)."""
    if isinstance(batch, Batch) and batch.indices is not None:
        return (batch.indices[-1] + 1 if batch.indices else batch.first) - batch.first
    return len(batch)


def in_dataset(error: BaseException, batch: Any, batch_start: int) -> BaseException:
    """``error`` naming its sample by the dataset's index (the encoder numbered the batch's
    samples from ``batch_start``, which differs once samples were skipped)."""
    index = sample_of(error)
    if index is None or not isinstance(batch, Batch) or not 0 <= index - batch_start < len(batch):
        return error
    return renumbered(error, batch.dataset_index(index - batch_start))


def write(out_dir: Any, encoder: Encoder, batches: Iterable[Any], durable: bool = False, on_batch: Optional[Callable[[int], None]] = None) -> None:
    """Build a map from batches; it appears at ``out_dir`` only when complete."""
    with layout.building(Path(out_dir), durable) as tmp:
        build_into(tmp, encoder, batches, on_batch)


class MapProduct:
    """A map of one kind as the build engine (``parallel.py``, ``dask.py``) builds it.

    The engine's interface, which ``records_build.RecordsProduct`` implements too:
    ``prepare`` (read what must be read once, before any worker starts), ``build_into`` a
    directory (a range of the dataset: a part, or the whole map when serial), ``merger``
    (parts, in order) and ``finish`` (the merged map, or an empty one).
    """

    replaceable = staticmethod(layout.is_map)  # what layout.building may replace at out_dir
    what = "a map"

    def __init__(self, kind: str, options: Optional[Dict[str, Any]] = None):
        self._kind = kinds.get(kind)  # travels to worker processes with the product (see kinds.Kind)
        self.kind, self.options = self._kind.name, dict(options or {})

    def prepare(self, workdir: Path, indexable: Any, count: Optional[int], batch_size: int) -> Optional[Part]:
        """Nothing to decide up front: each part's first batch decides its own dtype, and the
        merge casts the others to the first part's."""
        return None

    def build_into(self, path: Path, indexable: Any, start: int, stop: int, batch_size: int,
                   on_batch: Optional[Callable[[int], None]] = None) -> Part:
        """Build ``indexable[start:stop]`` into the existing, empty directory ``path``."""
        reading = Reading(start)
        batches = indexed_batches(indexable, start, stop, batch_size, reading)
        build_into(path, self._kind.encoder(self.options), batches, on_batch, start)
        return reading.part(path, start)

    def merger(self, tmp: Path) -> Any:
        return self._kind.merger(tmp, True)  # one dataset: errors name its samples, not the parts

    def finish(self, tmp: Path, merger: Any) -> None:
        if not merger.count:  # no samples at all: the serial builder decides what an empty map is
            self._kind.encoder(self.options).create_empty(tmp)


def build_part(part_dir: Path, product: Any, indexable: Any, start: int, stop: int, batch_size: int,
               on_batch: Optional[Callable[[int], None]] = None) -> Part:
    """Build ``indexable[start:stop]`` as a part at ``part_dir`` (a new directory) of ``product``."""
    fs.mkdir(part_dir)  # raises if it exists: a part is always built in a new directory
    return product.build_into(Path(part_dir), indexable, start, stop, batch_size, on_batch)
