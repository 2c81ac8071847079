"""RaggedMmap: a list of numpy arrays of varying shapes, stored once, read by index."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import build, checksums, codecs, layout, parallel
from .build import RaggedEncoder
from .errors import MapFormatError
from .progress import batched, progress
from .samples import as_array, cast_losslessly
from .spans import SpansMap

__all__ = ["RaggedMmap"]

_LEGACY_KEYS = {"starts_key": "starts", "ends_key": "ends", "shapes_key": "shapes", "flattened_shapes_key": "flattened_shapes"}


def _check_legacy_keys(keys: dict) -> None:
    for name, value in keys.items():
        if _LEGACY_KEYS.get(name, object()) != value:
            raise TypeError(f"unexpected argument {name}={value!r}")


class RaggedMmap(SpansMap):
    """A list of numpy arrays of varying shapes (and one dtype), memory-mapped from ``out_dir``.

    ``m[i]`` is an ndarray view of sample ``i`` with its shape; slices, lists, integer arrays
    and boolean masks give lists. A path with no map yet is an empty map that ``append`` and
    ``extend`` fill. With ``wrapper_fn``, every sample read is passed through it (after a copy
    when ``copy_before_wrapper_fn``). ``mode="r+"`` allows overwriting samples in place.
    A map built with ``zstd_level`` stores each sample zstd-compressed on its own: ``m[i]``
    then decompresses one sample into a new (writable) array.
    """

    _kind = "ragged"

    def __init__(
        self,
        out_dir: Union[str, os.PathLike],
        wrapper_fn: Optional[Callable[[np.ndarray], Any]] = None,
        mode: str = "r",
        copy_before_wrapper_fn: bool = True,
        **legacy_keys: str,
    ):
        _check_legacy_keys(legacy_keys)
        self.wrapper_fn = wrapper_fn
        self.copy_before_wrapper_fn = copy_before_wrapper_fn
        super().__init__(out_dir, mode)

    def _install(self, view: Optional[layout.SpansView], extra: Any) -> None:
        self._data = view.data if view else np.empty(0)
        self.dtype: Optional[np.dtype] = view.dtype if view else None
        self._codec: Optional[codecs.Codec] = None
        if view is not None and view.codec is not None:
            self._codec = extra
            if self._codec is None or self._codec.name != view.codec:
                raise MapFormatError(f"{self.path / layout.DTYPE} says its samples are {view.codec!r}-encoded, but {codecs.CODEC} disagrees")
            self._decode_bytes = self._codec.decoder() if isinstance(self._codec, codecs.ZstdCodec) else self._codec.decode
            self._counts = memoryview(view.counts)
            self._stored = memoryview(view.data)
        shapes = view.shapes if view else None
        self._shape_width = 1
        if isinstance(shapes, np.ndarray):
            self._shape_width = shapes.shape[1]
            self._flat_shapes = memoryview(shapes.reshape(-1))
        elif shapes is not None:
            self._shape_width = 0
            self._nested = shapes
            self._shape_starts = memoryview(shapes.starts)
            self._shape_ends = memoryview(shapes.ends)
            self._shape_values = memoryview(shapes.data)
            self._shape_count = len(shapes.data)
            # the shape tuples' own lengths (their ndims), to check the tuples' offsets against
            ndims = shapes.shapes if isinstance(shapes.shapes, np.ndarray) and shapes.shapes.shape[1:] == (1,) else None
            self._shape_ndims = ndims.reshape(-1) if ndims is not None else None
        # the fast path serves 1-D raw samples of a flat map with no wrapper, while all samples are mapped
        self._fast = view is not None and self._shape_width == 1 and self.wrapper_fn is None and self._codec is None
        # the same for encoded samples: one decompression, checked against the recorded length
        self._coded_fast = view is not None and self._shape_width == 1 and self.wrapper_fn is None and self._codec is not None

    def _read_extra(self, files: Any) -> Any:
        return codecs.read(files, self._kind)

    def _after_append(self, count: int) -> None:
        super()._after_append(count)
        self._fast = self._coded_fast = False  # until the new samples are mapped; _load() sets them again

    # -- reading -------------------------------------------------------------------------

    def __getitem__(self, item: Any) -> Any:
        if type(item) is int:
            if self._fast:
                try:  # memoryviews take negative indices and raise IndexError past the end
                    start, end = self._starts[item], self._ends[item]
                except IndexError:
                    pass
                else:
                    # a 1-D sample's recorded length is its element count; anything else (a 0-d
                    # sample, or files that disagree) takes the slow path, which says which
                    if self._flat_shapes[item] == end - start and 0 <= start <= end <= self._total:
                        return self._data[start:end]
            elif self._coded_fast and item > 0:
                try:  # raises IndexError for the last sample and past the end: the slow path serves those
                    start, end, before, after = self._starts[item], self._ends[item], self._ends[item - 1], self._starts[item + 1]
                except IndexError:
                    pass
                else:
                    # back to back with its neighbours, and as many elements as recorded: else the
                    # slow path says what is wrong
                    if start == before and start <= end == after <= self._total:
                        try:
                            sample = np.frombuffer(self._decode_bytes(self._stored[start:end]), self.dtype)
                        except Exception:
                            pass
                        else:
                            if len(sample) == self._flat_shapes[item] == self._counts[item]:
                                return sample
            elif -self._n <= item < self._n == self._len:  # after an append, -1 is a new sample
                sample = self._sample(item + self._n if item < 0 else item)
                return sample if self.wrapper_fn is None else self._wrap(sample)
        if isinstance(item, (int, np.integer)):
            return self._wrap(self._sample(self._position(item)))
        return self.get_batch(item)

    def _sample(self, i: int) -> np.ndarray:
        start, end = self._span(i)
        flat = self._data[start:end] if self._codec is None else self._decoded(i, start, end)
        end, start = len(flat), 0  # from here on, spans count elements
        width = self._shape_width
        if width == 1:
            row = self._flat_shapes[i]
            if row == end - start:
                return flat
            if row == 0 and end - start == 1:
                return flat.reshape(())
            shape: Any = (row,)
        elif width > 1:
            shape = tuple(self._flat_shapes[i * width : (i + 1) * width])
        else:  # the tuple's offsets were checked with the chunk of sample i, by _span(i) above
            shape = self._shape_values[self._shape_starts[i] : self._shape_ends[i]].tolist()
        try:
            return flat.reshape(shape)
        except ValueError:
            raise MapFormatError(f"{self.path / layout.SHAPES}: sample {i} has {end - start} elements but shape {shape}") from None

    def _check_block(self, first: int, stop: int) -> None:
        """The shape tuples of samples ``first..stop-1`` of a nested map lie back to back, each
        right after its neighbour's and as long as its recorded ndim, within the table: else an
        empty sample could take its neighbour's shape. Vectorised, once per chunk (see SpansMap)."""
        if self._shape_width != 0 or stop <= first:
            return
        nested, total = self._nested, self._shape_count
        s, e = np.asarray(nested.starts[first:stop]), np.asarray(nested.ends[first:stop])
        before = np.empty_like(e)
        before[0] = nested.ends[first - 1] if first else 0
        before[1:] = e[:-1]
        after = np.empty_like(s)
        after[:-1] = s[1:]
        after[-1] = nested.starts[stop] if stop < self._n else total  # the last tuple ends the table
        bad = (s < 0) | (s != before) | (s > e) | (e != after) | (e > total)
        if self._shape_ndims is not None:
            bad |= self._shape_ndims[first:stop] != e - s
        if bad.any():
            j = int(np.argmax(bad))
            raise MapFormatError(f"{self.path / layout.SHAPES}: the shape of sample {first + j} lies at {int(s[j])}..{int(e[j])}, not right after "
                                 f"the shape before it ({int(before[j])}) and before the one after it ({int(after[j])})")

    def _decoded(self, i: int, start: int, end: int) -> np.ndarray:
        """The elements of encoded sample ``i`` (stored at ``start:end``), decoded into a new array."""
        try:
            raw = self._decode_bytes(self._stored[start:end])
        except Exception as e:  # a frame that does not decompress
            raise MapFormatError(f"{self.path / layout.DATA}: sample {i} cannot be decoded ({e})") from None
        count = int(self._counts[i])
        if len(raw) != count * self.dtype.itemsize:
            raise MapFormatError(f"{self.path / layout.DATA}: sample {i} decodes to {len(raw)} bytes, its {count} elements need {count * self.dtype.itemsize}")
        return np.frombuffer(raw, self.dtype, count)  # read-only: encoded samples are never overwritten in place

    def _wrap(self, sample: np.ndarray) -> Any:
        if self.wrapper_fn is None:
            return sample
        return self.wrapper_fn(sample.copy() if self.copy_before_wrapper_fn else sample)

    def get_batch(self, indices: Any) -> List[Any]:
        """The samples at ``indices`` (a slice, list, integer array or boolean mask), in order."""
        idx = self._batch_positions(indices)
        if self._codec is not None:
            return [self._wrap(self._sample(i)) for i in idx.tolist()]
        shapes = self._batch_shapes(idx) if self._shape_width != 1 and len(idx) else None
        if shapes is None and (self._shape_width != 1 or self._view is None):
            return [self._wrap(self._sample(i)) for i in idx.tolist()]
        starts, ends = self._batch_spans(idx)
        data = self._data
        if shapes is not None:
            try:
                out = [data[s:e].reshape(h) for s, e, h in zip(starts.tolist(), ends.tolist(), shapes)]
            except ValueError:  # a shape that does not fit its data: let _sample name it
                out = [self._sample(i) for i in idx.tolist()]
        else:
            out = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
            recorded = self._view.shapes[idx, 0]
            for j in np.flatnonzero(recorded != ends - starts).tolist():  # 0-d samples, or corrupt files
                out[j] = self._sample(int(idx[j]))
        if self.wrapper_fn is not None:
            out = [self._wrap(s) for s in out]
        return out

    def _batch_shapes(self, idx: np.ndarray) -> Optional[List[List[int]]]:
        """The shapes of a batch of multi-axis samples gathered in one step, when they all
        have the same number of axes (else None: the caller reads them one by one)."""
        width = self._shape_width
        if width > 1:
            table = np.asarray(self._flat_shapes).reshape(-1, width)
            return table[idx].tolist()
        self._check_batch(idx)  # the chunks' offsets and shape tuples, once (_check_block)
        nested = self._nested
        starts, ends = nested.starts[idx], nested.ends[idx]
        ndim = int(ends[0] - starts[0])
        if not (ends - starts == ndim).all():
            return None  # axes differ: one by one
        return nested.data[starts[:, None] + np.arange(ndim)].tolist()

    def padded(self, indices: Any, pad_value: Any = 0, max_len: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """A batch of 1-D samples as one ``(B, L)`` array padded with ``pad_value``, and their lengths.

        ``L`` is the longest sample of the batch, capped at ``max_len`` (longer samples are
        cut). Filled by one vectorised gather, without a Python loop over samples.
        """
        if self._shape_width != 1:
            raise ValueError("padded() needs a map of 1-D samples; this one holds multi-axis samples")
        idx = self._batch_positions(indices)
        if self._codec is not None:  # decoded one by one, then padded as below
            samples = [self._sample(i).reshape(-1) for i in idx.tolist()]
            lengths = np.array([len(s) for s in samples], np.int64)
            if max_len is not None:
                lengths = np.minimum(lengths, max_len)
            out = np.full((len(idx), int(lengths.max()) if len(lengths) else 0), pad_value, dtype=self.dtype or np.float64)
            for row, (sample, n) in enumerate(zip(samples, lengths.tolist())):
                out[row, :n] = sample[:n]
            return out, lengths
        starts, ends = self._batch_spans(idx)
        lengths = ends - starts
        if len(idx):  # what m[i] checks: the recorded length (0 with one element: a 0-d sample)
            recorded = self._view.shapes[idx, 0]
            wrong = (recorded != lengths) & ~((recorded == 0) & (lengths == 1))
            if wrong.any():
                self._sample(int(idx[int(np.argmax(wrong))]))  # raises, naming the file and the sample
        if max_len is not None:
            lengths = np.minimum(lengths, max_len)
        width = int(lengths.max()) if len(lengths) else 0
        out = np.full((len(idx), width), pad_value, dtype=self.dtype or np.float64)
        columns = np.arange(width)
        mask = columns < lengths[:, None]
        out[mask] = self._data[(starts[:, None] + columns)[mask]]
        return out, lengths

    # -- writing -------------------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        """Overwrite samples in place with arrays of the same shape (needs ``mode="r+"``).

        Every value is checked before any is written. Not crash-atomic: a process killed
        during the write can leave a sample half old, half new.
        """
        if self._codec is not None:
            raise ValueError(f"{self.path} stores its samples {self._codec.describe()}: they cannot be overwritten in place; rebuild the map instead")
        self._check_writable()
        if isinstance(key, (int, np.integer)):
            pairs = [(self._position(key), value)]
        else:
            idx = self._batch_positions(key).tolist()
            values = list(value)
            if len(values) != len(idx):
                raise ValueError(f"{len(idx)} samples selected but {len(values)} values given")
            pairs = list(zip(idx, values))
        checked = []
        for i, v in pairs:
            arr = cast_losslessly(as_array(v, i), self.dtype, i)
            current = self._sample(i).shape
            if arr.shape != current:
                raise ValueError(f"sample {i} has shape {current}; a new value must have the same shape, got {arr.shape}")
            checked.append((i, arr))
        for i, arr in checked:
            start, end = self._span(i)
            self._data[start:end] = arr.reshape(-1)
        checksums.overwrite(self.path, {i: np.ascontiguousarray(arr) for i, arr in checked})

    def append(self, array: Any, durable: bool = False, checksum: bool = False) -> None:
        """Add one sample at the end (see ``extend``)."""
        self.extend([array], durable=durable, checksum=checksum)

    def extend(self, arrays: Iterable[Any], durable: bool = False, checksum: bool = False) -> None:
        """Add samples at the end, all or none.

        Each sample is cast to the map's dtype if no value changes, else nothing is written and
        a TypeError/ValueError names it. The new samples become visible to readers at once
        and survive a crash of this process; ``durable=True`` also fsyncs them, to survive a
        power loss. A map with checksums gets those of the new samples; ``checksum=True``
        first gives checksums to a map that has none.
        """
        self._extend(list(arrays), durable, checksum)

    def _new_encoder(self) -> RaggedEncoder:
        codec = self._codec
        if isinstance(codec, codecs.ZstdCodec):  # appends compress with the map's level and dictionary
            return RaggedEncoder(self.dtype, codec.level, dictionary=codec.dictionary)
        return RaggedEncoder(self.dtype)

    @property
    def zstd_level(self) -> Optional[int]:
        """The zstd level the samples are compressed with, or None if they are stored raw."""
        return self._codec.level if isinstance(self._codec, codecs.ZstdCodec) else None

    def _itemsize(self) -> int:
        return self.dtype.itemsize if self.dtype is not None and self._codec is None else 1

    def _reopen_kwargs(self) -> dict:
        return {"mode": self.mode, "wrapper_fn": self.wrapper_fn, "copy_before_wrapper_fn": self.copy_before_wrapper_fn}

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_lists(
        cls,
        out_dir: Union[str, os.PathLike],
        lists: Sequence[Any],
        dtype: Any = None,
        mode: str = "r+",
        wrapper_fn: Optional[Callable[[np.ndarray], Any]] = None,
        durable: bool = False,
        checksum: bool = False,
        zstd_level: Optional[int] = None,
        zstd_train_dictionary_size: Optional[int] = None,
        **legacy_keys: str,
    ) -> "RaggedMmap":
        """Write ``lists`` (arrays or nested lists of numbers) as a new map at ``out_dir``.

        Without ``dtype``, numpy's promotion rules over all samples decide it. An existing map
        at ``out_dir`` is replaced once the new one is complete; other files are never touched.
        ``checksum=True`` records a CRC-32 of every sample, which ``verify()`` checks.
        ``zstd_level`` compresses each sample on its own (``m[i]`` stays one lookup and one
        decompression); ``zstd_train_dictionary_size`` first trains a shared dictionary of that
        many bytes on the samples (both need ``zstandard``). mmap_ninja 0.9.0 cannot read such
        a map, and refuses to open it.
        """
        _check_legacy_keys(legacy_keys)
        with checksums.recording(checksum):
            build.write(out_dir, RaggedEncoder(dtype, zstd_level, zstd_train_dictionary_size), [list(lists)], durable)
        return cls(out_dir, wrapper_fn=wrapper_fn, mode=mode)

    @classmethod
    def from_generator(
        cls,
        out_dir: Union[str, os.PathLike],
        sample_generator: Iterable[Any],
        batch_size: int,
        verbose: bool = False,
        dtype: Any = None,
        mode: str = "r+",
        wrapper_fn: Optional[Callable[[np.ndarray], Any]] = None,
        durable: bool = False,
        total: Optional[int] = None,
        checksum: bool = False,
        zstd_level: Optional[int] = None,
        zstd_train_dictionary_size: Optional[int] = None,
        **legacy_keys: str,
    ) -> "RaggedMmap":
        """Write samples from an iterable, ``batch_size`` at a time, as a new map at ``out_dir``.

        Memory stays bounded by one batch. The first batch decides the dtype (unless given).
        The map appears at ``out_dir`` only once the iterable is exhausted; if it raises or the
        process dies, nothing is left at ``out_dir``. ``verbose`` shows a progress bar (with
        ``total`` when given). ``zstd_level`` and ``zstd_train_dictionary_size`` are
        ``from_lists``'s; a dictionary is trained on the first batch.
        """
        _check_legacy_keys(legacy_keys)
        encoder = RaggedEncoder(dtype, zstd_level, zstd_train_dictionary_size)
        with checksums.recording(checksum):
            build.write(out_dir, encoder, batched(progress(sample_generator, verbose, total), batch_size), durable)
        return cls(out_dir, wrapper_fn=wrapper_fn, mode=mode)

    @classmethod
    def from_indexable(
        cls,
        out_dir: Union[str, os.PathLike],
        indexable: Any,
        batch_size: int,
        n_jobs: Optional[int] = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> "RaggedMmap":
        """Write ``indexable[0], indexable[1], ...`` as a new map (see ``from_generator``).

        ``indexable`` has ``__getitem__`` (with or without ``__len__``; without, the first
        IndexError ends it) or is a function of an int. ``n_jobs=k`` builds with k worker
        processes (-1: one per core), each writing parts of contiguous index ranges that are
        then merged: the map is byte-identical to the serial build. The dataset must then be
        picklable. ``kwargs`` are ``from_generator``'s (``dtype``, ``mode``, ``wrapper_fn``,
        ``durable``, ``checksum``, ``zstd_level``, ``zstd_train_dictionary_size``; a dictionary
        is trained on the first batch, before the workers start).
        """
        _check_legacy_keys({k: kwargs.pop(k) for k in list(kwargs) if k.endswith("_key")})
        mode, wrapper_fn = kwargs.pop("mode", "r+"), kwargs.pop("wrapper_fn", None)
        durable, checksum = kwargs.pop("durable", False), kwargs.pop("checksum", False)
        options = {"dtype": kwargs.pop("dtype", None)}
        zstd_level, train_size = kwargs.pop("zstd_level", None), kwargs.pop("zstd_train_dictionary_size", None)
        if kwargs:
            raise TypeError(f"unexpected argument {next(iter(kwargs))}")
        encoder = RaggedEncoder(options["dtype"], zstd_level, train_size)  # checks the options
        options.update(zstd_level=zstd_level, zstd_train_dictionary_size=train_size)
        if train_size is not None and parallel.resolve_jobs(n_jobs) > 1:  # one dictionary for every part
            first = next(build.indexed_batches(indexable, 0, batch_size, batch_size), [])
            encoder.encode(first, 0)
            options = {"dtype": options["dtype"], "zstd_level": zstd_level, "zstd_dictionary": encoder.codec.dictionary if encoder.codec else None}
        with checksums.recording(checksum):
            parallel.build_indexable(out_dir, "ragged", indexable, batch_size, n_jobs, verbose, options, durable)
        return cls(out_dir, wrapper_fn=wrapper_fn, mode=mode)
