"""ImagesMmap: a list of images stored as their encoded bytes (JPEG, PNG), decoded on read.

An images map is a spans map of bytes, as a strings map is (``layout.py``: ``type.ninja`` =
``images``), whose codec record (``codecs.py``) says how new arrays are encoded and what
``m[i]`` returns::

    codec.ninja          image
    image_mode.ninja     RGB (m[i] is H x W x 3 uint8) or L (H x W)
    image_format.ninja   jpeg or png: how appended arrays are encoded
    image_quality.ninja  the JPEG quality of appended arrays (1..95)

Bytes given as they are (files, encoded images) are stored unchanged, whatever their
format, once they have been checked to decode.

Decoding uses the fastest decoder installed, chosen once per map: ``simplejpeg`` for JPEG
when installed (libjpeg-turbo with the accurate IDCT and fancy upsampling: Pillow's
settings), Pillow for everything else and always as the fallback. Both give Pillow's result;
see ``docs/images.md`` for how they may differ (IDCT rounding of libjpeg-turbo builds).
Needs the ``images`` extra (Pillow; simplejpeg optional).
"""

from __future__ import annotations

import io
import itertools
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import build, codecs, fs, layout, ondisk, parallel
from .reads import MapFiles
from .errors import MapFormatError
from .progress import batched, progress
from .skip import Skip
from .spans import SpansMap

__all__ = ["ImagesMmap", "pick_decoder", "DECODERS"]

MODE = "image_mode.ninja"
FORMAT = "image_format.ninja"
QUALITY = "image_quality.ninja"

MODES = ("RGB", "L")
FORMATS = ("jpeg", "png")
_JPEG_MAGIC = b"\xff\xd8"
_CHUNK = 64  # images decoded together while iterating
DECODERS = ("simplejpeg", "pillow")


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("images maps need Pillow: pip install 'mmap_ninja[images]'") from None
    return Image


def _simplejpeg() -> Any:
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def pick_decoder(name: Optional[str] = None) -> str:
    """The decoder ``name`` asks for, or the fastest installed: "simplejpeg", else "pillow"."""
    if name is None:
        return "simplejpeg" if _simplejpeg() is not None else "pillow"
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}: use one of {DECODERS} or None (the fastest installed)")
    if name == "simplejpeg" and _simplejpeg() is None:
        raise ImportError("decoder='simplejpeg' needs simplejpeg: pip install simplejpeg (or pip install 'mmap_ninja[images]')")
    return name


class CheckedBytes(bytes):
    """Encoded image bytes already known to decode (not checked again when stored)."""


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L conversion (ITU-R 601-2 luma, its fixed-point rounding)."""
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


@codecs.register
class ImageCodec(codecs.Codec):
    """Images as JPEG or PNG bytes: ``encode`` takes an array, ``decode`` gives one."""

    name = "image"

    def __init__(self, mode: str = "RGB", format: str = "jpeg", quality: int = 90, decoder: Optional[str] = None):
        if mode not in MODES:
            raise ValueError(f"unknown image mode {mode!r}: use 'RGB' (H x W x 3) or 'L' (H x W)")
        if format not in FORMATS:
            raise ValueError(f"unknown image format {format!r}: use 'jpeg' or 'png'")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
            raise ValueError(f"quality must be an int from 1 to 95, got {quality!r}")
        _pillow()  # fail now, naming the extra, rather than at the first image
        self.mode, self.format, self.quality = mode, format, quality
        self.decoder = pick_decoder(decoder)
        self._jpeg = _simplejpeg() if self.decoder == "simplejpeg" else None

    # -- the record ---------------------------------------------------------------------------

    def write(self, map_dir: Path) -> None:
        fs.write_file(map_dir / MODE, self.mode.encode("ascii"))
        fs.write_file(map_dir / FORMAT, self.format.encode("ascii"))
        fs.write_file(map_dir / QUALITY, str(self.quality).encode("ascii"))

    @classmethod
    def read(cls, files: MapFiles, decoder: Optional[str] = None) -> "ImageCodec":
        mode, format, quality = (ondisk.read_text(files, name) for name in (MODE, FORMAT, QUALITY))
        try:
            return cls(mode, format, int(quality), decoder)
        except ValueError as e:
            raise MapFormatError(f"{files.path}: its image codec record is invalid ({e})") from None

    def record(self) -> tuple:
        return (self.mode, self.format, self.quality)

    def describe(self) -> str:
        extra = f" quality {self.quality}" if self.format == "jpeg" else ""
        return f"encoded images, mode {self.mode}; arrays appended as {self.format}{extra}; decoded by {self.decoder}"

    def __getstate__(self) -> dict:
        return {"mode": self.mode, "format": self.format, "quality": self.quality, "decoder": self.decoder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # -- encoding -------------------------------------------------------------------------------

    def check_array(self, image: Any, index: int) -> np.ndarray:
        """``image`` as the uint8 array this map stores, or an error naming sample ``index``."""
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise TypeError(f"sample {index}: an image must be a uint8 array, got dtype {arr.dtype}")
        expected = "H x W" if self.mode == "L" else "H x W x 3"
        if (arr.ndim != 2 if self.mode == "L" else (arr.ndim != 3 or arr.shape[2] != 3)) or 0 in arr.shape:
            raise ValueError(f"sample {index}: this map holds {self.mode} images ({expected}), got an array of shape {arr.shape}")
        return np.ascontiguousarray(arr)

    def encode(self, image: Any, index: int = 0) -> bytes:  # type: ignore[override]
        arr = self.check_array(image, index)
        out = io.BytesIO()
        picture = _pillow().fromarray(arr, self.mode)
        if self.format == "jpeg":
            picture.save(out, "JPEG", quality=self.quality)
        else:
            picture.save(out, "PNG")
        return out.getvalue()

    def checked(self, data: Any, name: str) -> CheckedBytes:
        """Encoded bytes stored as given, once they are known to decode (else a ValueError naming ``name``)."""
        if isinstance(data, CheckedBytes):
            return data
        data = CheckedBytes(data)
        try:
            self.decode(data)
        except Exception as e:
            why = "not an image format Pillow reads" if type(e).__name__ == "UnidentifiedImageError" else f"{type(e).__name__}: {e}"
            raise ValueError(f"{name} does not decode as an image ({why})") from None
        return data

    def stored(self, value: Any, index: int, name: Optional[str] = None) -> bytes:
        """What the map stores for ``value``: bytes as they are (once they decode), an array
        encoded; errors name ``name`` (default: sample ``index``)."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.checked(value, name or f"sample {index}")
        return self.encode(value, index)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, stored: Any) -> np.ndarray:
        jpeg = self._jpeg
        if jpeg is not None and bytes(stored[:2]) == _JPEG_MAGIC:
            colorspace = jpeg.decode_jpeg_header(stored)[2]
            if colorspace in ("YCbCr", "Gray"):  # else (CMYK, YCCK) Pillow converts as it does
                if self.mode == "RGB":
                    return jpeg.decode_jpeg(stored, colorspace="RGB", fastdct=False, fastupsample=False)
                if colorspace == "Gray":
                    return jpeg.decode_jpeg(stored, colorspace="GRAY", fastdct=False, fastupsample=False)[:, :, 0]
                return _luma(jpeg.decode_jpeg(stored, colorspace="RGB", fastdct=False, fastupsample=False))
        with _pillow().open(io.BytesIO(stored)) as picture:
            if picture.mode != self.mode:
                picture = picture.convert(self.mode)
            return np.array(picture)


def field_codec() -> ImageCodec:
    """The codec of a records field of kind "images": RGB, arrays appended as JPEG at quality 90."""
    return ImageCodec("RGB", "jpeg", 90)


class ImagesField:
    """A records field of images (kind "images", also spelled "image"): RGB, stored encoded.

    Values are encoded bytes, checked to decode, or H x W x 3 uint8 arrays, encoded as JPEG at
    quality 90 (``field_codec``); ``r[i][name]`` is decoded. See ``records_fields.RaggedField``
    for what each method does.
    """

    grows_in_place = True
    has_dtype = False

    @staticmethod
    def spec_from(field: str, values: Sequence[Any], first: int, dtype: Any) -> Any:
        from .records_schema import FieldSpec

        return FieldSpec("images")  # what the values are is checked once, by convert

    @staticmethod
    def convert(field: str, spec: Any, values: Sequence[Any], first: int) -> List[bytes]:
        from .records_schema import record_error

        codec, out = field_codec(), []
        for i, v in enumerate(values):
            try:
                out.append(codec.stored(v, first + i, "its value"))
            except (TypeError, ValueError) as e:
                raise record_error(type(e), first + i, f", field {field!r}: {str(e).replace(f'sample {first + i}: ', '')}") from None
        return out

    @staticmethod
    def spec(field_dir: Path) -> Any:
        from .records_schema import FieldSpec

        layout.expect_kind(field_dir, "images")
        return FieldSpec("images")

    @staticmethod
    def create(field_dir: Path, spec: Any) -> None:
        encoder = ImagesEncoder()
        encoder.codec = field_codec()
        encoder.create_empty(field_dir)

    @staticmethod
    def writer(field_dir: Path, spec: Any) -> Any:
        return layout.SpansWriter(field_dir, 1, with_shapes=False)

    @staticmethod
    def append(writer: Any, column: List[bytes], durable: bool) -> None:
        writer.append(column, np.fromiter(map(len, column), np.int64, len(column)), None, durable)


class ImagesEncoder:
    """The builder's encoder (see build.py) for images maps: arrays are encoded by the map's
    codec; bytes are stored as they are once they decode."""

    kind = "images"

    def __init__(self, mode: Optional[str] = None, format: str = "jpeg", quality: int = 90):
        self.codec: Optional[ImageCodec] = None if mode is None else ImageCodec(mode, format, quality)
        self._format, self._quality = format, quality
        ImageCodec("RGB", format, quality)  # checks the options now

    def _codec_for(self, sample: Any) -> ImageCodec:
        if self.codec is None:  # the first sample decides: 2-D arrays are L, all else RGB
            mode = "L" if not isinstance(sample, (bytes, bytearray, memoryview)) and np.ndim(sample) == 2 else "RGB"
            self.codec = ImageCodec(mode, self._format, self._quality)
        return self.codec

    def encode(self, batch: Sequence[Any], position: int, piece: Optional[int] = None) -> Iterator[tuple]:
        if not len(batch):
            return
        codec = self._codec_for(batch[0])
        stored = [codec.stored(sample, position + i) for i, sample in enumerate(batch)]
        yield (stored, np.fromiter((len(b) for b in stored), np.int64, len(stored)), None)

    def create(self, map_dir: Path, first: Any = None) -> layout.SpansWriter:
        if self.codec is None:
            self.codec = ImageCodec("RGB", self._format, self._quality)
        layout.create_spans(map_dir, "images", np.dtype(np.uint8))
        codecs.write(map_dir, self.codec, "images")
        return layout.SpansWriter(map_dir, 1, with_shapes=False)

    def create_empty(self, map_dir: Path) -> None:
        self.create(map_dir).close()

    @staticmethod
    def append(writer: layout.SpansWriter, piece: tuple, durable: bool, published: bool) -> int:
        writer.append(piece[0], piece[1], None, durable=durable)
        return len(piece[1])


class _FileReader:
    """``paths[i]`` -> the file's bytes, checked to decode (picklable, for parallel builds).

    A file that does not decode raises a ValueError naming it, or with ``skip_bad`` is
    ``Skip(why)``, which every build leaves out and reports (see skip.py).
    """

    def __init__(self, paths: Sequence[Union[str, os.PathLike]], mode: str, skip_bad: bool):
        self.paths = [str(p) for p in paths]
        self.codec = ImageCodec(mode)
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self.paths):
            raise IndexError(f"file {i} of {len(self.paths)}")
        try:
            with open(self.paths[i], "rb") as f:
                return self.codec.checked(f.read(), f"{self.paths[i]} (sample {i})")
        except (OSError, ValueError) as e:
            if not self.skip_bad:
                raise ValueError(str(e) if isinstance(e, ValueError) else f"{self.paths[i]} (sample {i}) cannot be read ({e})") from None
            return Skip(str(e))


class ImagesMmap(SpansMap):
    """A list of images stored as their encoded bytes, memory-mapped from ``out_dir``.

    ``m[i]`` is the decoded image (H x W x 3 uint8; H x W for ``mode="L"`` maps), a new array
    each time; ``m.encoded(i)`` the stored bytes; ``m[idx]`` (a slice, list, integer array or
    boolean mask) a list decoded by a small pool of ``threads`` threads (the decoders release
    the GIL). ``decoder`` picks "simplejpeg" or "pillow" (default: the fastest installed).
    A path with no map yet is an empty map that ``append`` and ``extend`` fill.
    """

    _kind = "images"

    def __init__(self, out_dir: Union[str, os.PathLike], mode: str = "r", decoder: Optional[str] = None, threads: Optional[int] = None):
        self._decoder_name = decoder
        pick_decoder(decoder)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.threads = threads or min(8, os.cpu_count() or 1)
        self._pool: Any = None
        self._pool_pid = -1
        self._pool_lock = threading.Lock()
        super().__init__(out_dir, mode)

    def _read_extra(self, files: MapFiles) -> Any:
        if not files.exists(codecs.CODEC):
            raise MapFormatError(f"{files.file(codecs.CODEC)} is missing: an images map records how its images are encoded")
        codec = codecs.read(files, self._kind)
        if not isinstance(codec, ImageCodec):
            raise MapFormatError(f"{files.file(codecs.CODEC)}: an images map cannot hold {codec.name!r} samples")
        return codec

    def _install(self, view: Optional[layout.SpansView], extra: Any) -> None:
        self._buffer = view.buffer if view else b""
        self.codec: Optional[ImageCodec] = None
        if view is not None:
            self.codec = ImageCodec(extra.mode, extra.format, extra.quality, self._decoder_name)

    @property
    def decoder(self) -> str:
        """The decoder this map uses: "simplejpeg" or "pillow"."""
        return self.codec.decoder if self.codec is not None else pick_decoder(self._decoder_name)

    # -- reading -----------------------------------------------------------------------------

    def encoded(self, index: int) -> bytes:
        """The stored bytes of image ``index`` (a JPEG or PNG file's content)."""
        start, end = self._span(self._position(index))
        return self._buffer[start:end]

    def _image(self, i: int, start: int, end: int) -> np.ndarray:
        try:
            return self.codec.decode(self._buffer[start:end])
        except Exception as e:
            raise MapFormatError(f"{self.path / layout.DATA}: image {i} cannot be decoded ({type(e).__name__}: {e})") from None

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, (int, np.integer)):
            i = self._position(item)
            return self._image(i, *self._span(i))
        return self.get_batch(item)

    def get_batch(self, indices: Any) -> List[np.ndarray]:
        """The images at ``indices`` (a slice, list, integer array or boolean mask), in order,
        decoded by the map's thread pool."""
        idx = self._batch_positions(indices)
        starts, ends = self._batch_spans(idx)
        jobs = list(zip(idx.tolist(), starts.tolist(), ends.tolist()))
        if self.threads == 1 or len(jobs) < 2:
            return [self._image(*job) for job in jobs]
        return list(self._thread_pool().map(lambda job: self._image(*job), jobs))

    def _thread_pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # a pool does not survive fork
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mmap_ninja-decode")
                self._pool_pid = os.getpid()
            return self._pool

    def __iter__(self) -> Iterator[np.ndarray]:
        chunks = (self.get_batch(slice(first, min(first + _CHUNK, self._len))) for first in range(0, self._len, _CHUNK))
        return itertools.chain.from_iterable(chunks)

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False)
        self._pool = None
        super().close()

    # -- writing -----------------------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("the images of an images map cannot be overwritten in place: their encoded sizes differ; rebuild the map instead")

    def append(self, image: Any, durable: bool = False) -> None:
        """Add one image: an array (encoded with the map's format and quality) or encoded bytes
        (stored as given, once they decode)."""
        self.extend([image], durable=durable)

    def extend(self, images: Iterable[Any], verbose: bool = False, durable: bool = False) -> None:
        """Add images at the end, all or none (see ``append``); a bad one raises and writes nothing."""
        self._extend(list(progress(images, verbose)), durable)

    def _new_encoder(self) -> ImagesEncoder:
        codec = self.codec
        if codec is None:
            return ImagesEncoder()
        encoder = ImagesEncoder(codec.mode, codec.format, codec.quality)
        encoder.codec = codec  # the map's decoder checks appended bytes
        return encoder

    def _reopen_kwargs(self) -> dict:
        return {"mode": self.mode, "decoder": self._decoder_name, "threads": self.threads}

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        out_dir: Union[str, os.PathLike],
        paths: Sequence[Union[str, os.PathLike]],
        batch_size: int = 256,
        verbose: bool = False,
        n_jobs: Optional[int] = None,
        skip_bad: bool = False,
        mode: str = "RGB",
        durable: bool = False,
    ) -> "ImagesMmap":
        """A new map of the image files at ``paths``, their bytes stored unchanged.

        Every file is checked to decode; one that does not raises a ValueError naming it, or
        with ``skip_bad=True`` is left out with a warning naming it. ``mode`` is what ``m[i]``
        gives: "RGB" (H x W x 3) or "L" (H x W). ``n_jobs=k`` reads and checks with k processes.
        """
        reader = _FileReader(paths, mode, skip_bad)
        skipped = parallel.build_indexable(out_dir, "images", reader, batch_size, n_jobs, verbose, {"mode": mode}, durable)
        for _, why in skipped:
            warnings.warn(f"skipped: {why}", stacklevel=2)
        return cls(out_dir)

    @classmethod
    def from_generator(
        cls,
        out_dir: Union[str, os.PathLike],
        sample_generator: Iterable[Any],
        batch_size: int,
        quality: int = 90,
        verbose: bool = False,
        format: str = "jpeg",
        mode: Optional[str] = None,
        durable: bool = False,
        total: Optional[int] = None,
    ) -> "ImagesMmap":
        """A new map of the images of an iterable: uint8 arrays (encoded as ``format`` at
        ``quality``) or encoded bytes (stored as they are, once they decode).

        ``mode`` is "RGB" or "L"; without it, the first image decides (H x W arrays: "L").
        Memory stays bounded by one batch; the map appears at ``out_dir`` only when complete.
        """
        encoder = ImagesEncoder(mode, format, quality)
        build.write(out_dir, encoder, batched(progress(sample_generator, verbose, total), batch_size), durable)
        return cls(out_dir)

    @classmethod
    def from_indexable(
        cls,
        out_dir: Union[str, os.PathLike],
        indexable: Any,
        batch_size: int,
        n_jobs: Optional[int] = None,
        quality: int = 90,
        verbose: bool = False,
        format: str = "jpeg",
        mode: Optional[str] = None,
        durable: bool = False,
    ) -> "ImagesMmap":
        """A new map of ``indexable[0], indexable[1], ...`` (see ``from_generator``), built by
        ``n_jobs`` worker processes in parts when asked, byte-identical to the serial build."""
        if mode is None and parallel.resolve_jobs(n_jobs) > 1:  # every part must agree on it
            first = next(build.indexed_batches(indexable, 0, 1, 1), [])
            mode = ImagesEncoder(None, format, quality)._codec_for(first[0]).mode if first else "RGB"
        options = {"mode": mode, "format": format, "quality": quality}
        ImagesEncoder(**options)  # checks the options
        parallel.build_indexable(out_dir, "images", indexable, batch_size, n_jobs, verbose, options, durable)
        return cls(out_dir)
