"""Writing images: what each format can hold, and encoders that keep metadata and frames.

:func:`check_writable` refuses, from shape and dtype alone, what a format cannot hold, so a
run stops before computing. :class:`FrameWriter` encodes one frame or many: TIFF pages are
written as each frame arrives; GIF, PNG (APNG) and WebP animations are assembled at the end
with their durations, loop count and disposal. PNG is written by :mod:`convcli.io.png`, TIFF by
tifffile, the rest through Pillow. Metadata goes where the format holds it
(:mod:`convcli.io.image_meta`).
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from convcli.errors import ConvcliError, join_or
from convcli.io.decoding import JpegSettings, Metadata, reason
from convcli.io.image_meta import pillow_save_options, png_chunks, tiff_tags
from convcli.io.pixels import OUT_DTYPES
from convcli.io.png import encode_apng, encode_png

Array = npt.NDArray[Any]

#: Image format name -> file extensions (the first is the one written).
IMAGE_FORMATS: Final[dict[str, tuple[str, ...]]] = {
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "tiff": (".tif", ".tiff"),
    "bmp": (".bmp",),
    "gif": (".gif",),
    "webp": (".webp",),
}
#: Formats that hold several frames (pages).
MULTI_FRAME_FORMATS: Final = ("gif", "png", "webp", "tiff")
#: JPEG and WebP quality when none is given (and no JPEG input's tables are kept).
DEFAULT_QUALITY: Final = 95
#: zlib level of TIFF output and of the PNG pieces deflated with zlib's default strategy
#: (see :func:`convcli.io.png.encode_png`): zlib's and Pillow's default. Measured on 1280x960
#: RGB: level 1 is about 2x faster but 2-25% larger, level 9 at most 3% smaller but up to 6x
#: slower.
PNG_COMPRESS_LEVEL: Final = 6
LABELS: Final = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "gif": "GIF",
    "webp": "WebP",
}


@dataclass(frozen=True)
class Animation:
    """Timing of a multi-frame image: per-frame durations (ms) and disposal, loop count.

    ``loop`` is the number of repeats (0: forever), None when the input had no loop setting.
    """

    durations: tuple[int, ...] = ()
    loop: int | None = None
    disposal: tuple[int, ...] = ()


@dataclass(frozen=True)
class _WriteRule:
    """What a format can hold."""

    dtypes: tuple[str, ...]
    #: Channel counts it holds (None: any).
    channels: tuple[int, ...] | None
    #: Largest width or height.
    max_side: int


_WRITE_RULES: Final = {
    "png": _WriteRule(("uint8", "uint16"), (1, 2, 3, 4), 2**31 - 1),
    "jpeg": _WriteRule(("uint8",), (1, 3), 65_500),  # libjpeg's JPEG_MAX_DIMENSION
    "tiff": _WriteRule(("uint8", "uint16", "float32"), None, 2**32 - 1),
    "bmp": _WriteRule(("uint8",), (1, 3), 2**31 - 1),  # Pillow writes RGBA BMPs it reads as RGB
    "gif": _WriteRule(("uint8",), (1, 3), 65_535),
    "webp": _WriteRule(("uint8",), (1, 2, 3, 4), 16_383),  # gray is stored as RGB
}
_CHANNEL_NAMES: Final = {1: "gray", 2: "gray + alpha", 3: "RGB", 4: "RGBA"}


def check_writable(pixels_shape: tuple[int, ...], dtype: str, format: str, *, name: str) -> None:
    """Refuse, from shape and dtype alone, pixels that ``format`` cannot hold.

    Parameters
    ----------
    pixels_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    dtype : str
        The pixel dtype to be written.
    format : str
        A key of :data:`IMAGE_FORMATS`.
    name : str
        The output path or ``"<stdout>"``, used in messages.

    Raises
    ------
    ConvcliError
        Unknown format, a shape that is no image, or a dtype, channel count or size the
        format cannot hold; the message names a format (or .npy) that can.
    """
    rule = _WRITE_RULES.get(format)
    if rule is None:
        raise ConvcliError(
            f"{name}: unknown image format {format!r}; "
            f"expected one of {join_or(tuple(_WRITE_RULES))}"
        )
    label = LABELS[format]
    shape = tuple(int(n) for n in pixels_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ConvcliError(
            f"{name}: an image is (height, width) or (height, width, channels), not {shape}; "
            "write .npy or .npz"
        )
    try:
        dtype_name = np.dtype(dtype).name
    except TypeError as exc:
        raise ConvcliError(f"{name}: unknown dtype {dtype!r}") from exc
    channels = shape[2] if len(shape) == 3 else 1
    if dtype_name not in rule.dtypes:
        if dtype_name == "float32":
            fix = "write TIFF or .npy, or pass --out-dtype uint8"
        elif dtype_name == "uint16":
            fix = "write PNG or TIFF, or pass --out-dtype uint8"
        else:
            fix = f"images hold {join_or(OUT_DTYPES)}: pass --out-dtype, or write .npy"
        raise ConvcliError(f"{name}: {label} cannot hold {dtype_name} data; {fix}")
    if rule.channels is not None and channels not in rule.channels:
        holders = [
            LABELS[other]
            for other, other_rule in _WRITE_RULES.items()
            if dtype_name in other_rule.dtypes
            and (other_rule.channels is None or channels in other_rule.channels)
        ]
        if channels not in _CHANNEL_NAMES:
            holders += [".npy", ".npz"]
        what = _CHANNEL_NAMES.get(channels, f"{channels} channels")
        raise ConvcliError(
            f"{name}: {label} cannot hold {what} images ({channels} channels); "
            f"write {join_or(tuple(holders))}"
        )
    height, width = shape[:2]
    if max(height, width) > rule.max_side:
        raise ConvcliError(
            f"{name}: {label} images are at most {rule.max_side:,} pixels on a side, "
            f"not {width}x{height}; write TIFF or .npy"
        )


def check_frames(count: int, format: str, *, name: str) -> None:
    """Refuse several frames to a format that holds one (JPEG, BMP)."""
    if count > 1 and format not in MULTI_FRAME_FORMATS:
        raise ConvcliError(
            f"{name}: {LABELS[format]} holds one frame, not {count}; pass --frames first "
            f"(or --frames N), or write {join_or(tuple(LABELS[f] for f in MULTI_FRAME_FORMATS))}"
        )


@contextlib.contextmanager
def _encoding_errors(name: str, format: str) -> Iterator[None]:
    """An encoder's failure as one ConvcliError naming the output and the format."""
    try:
        yield
    except ConvcliError:
        raise
    except MemoryError as error:
        raise ConvcliError(f"{name}: cannot encode {LABELS[format]}: out of memory") from error
    except (OSError, ValueError, TypeError, KeyError, struct.error, zlib.error) as error:
        raise ConvcliError(f"{name}: cannot encode {LABELS[format]}: {reason(error)}") from error


class FrameWriter:
    """Encode the frames of one output image as they come; :meth:`finish` gives the bytes.

    Parameters
    ----------
    format : str
        A key of :data:`IMAGE_FORMATS`.
    name : str
        The output path or ``"<stdout>"``, for messages.
    quality : int, optional
        JPEG/WebP quality. None: a JPEG input's own tables (``jpeg``) for JPEG output, else
        :data:`DEFAULT_QUALITY`.
    metadata : Metadata
        What to carry (an empty :class:`Metadata` for ``--strip``).
    animation : Animation
        Durations, loop and disposal of the frames.
    jpeg : JpegSettings, optional
        The quantization tables and subsampling of a JPEG input.
    has_alpha : bool, optional
        Whether 2 or 4 channels end with alpha (the default) or are plain channels, which
        TIFF marks as unspecified extra samples.
    """

    def __init__(
        self,
        format: str,
        *,
        name: str,
        quality: int | None = None,
        metadata: Metadata | None = None,
        animation: Animation | None = None,
        jpeg: JpegSettings | None = None,
        has_alpha: bool | None = None,
    ) -> None:
        if format not in _WRITE_RULES:
            check_writable((1, 1), "uint8", format, name=name)  # raises the unknown-format error
        if quality is not None and not 1 <= quality <= 100:
            raise ConvcliError(f"{name}: quality must be between 1 and 100, not {quality}")
        self.format = format
        self.name = name
        self.quality = quality
        self.metadata = metadata or Metadata()
        self.animation = animation or Animation()
        self.jpeg = jpeg
        self.has_alpha = has_alpha
        self.frames: list[Array] = []
        self.count = 0
        #: dtype of the frames written (the first one's).
        self.dtype: np.dtype[Any] | None = None
        self._tiff: Any = None
        self._buffer = io.BytesIO()

    def add(self, pixels: Array) -> None:
        """Append one frame: ``(H, W)`` or ``(H, W, C)`` (C = 1 is written as gray)."""
        array = np.asarray(pixels)
        check_writable(array.shape, str(array.dtype), self.format, name=self.name)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        array = np.ascontiguousarray(array)
        if self.count and self.format != "tiff":
            first = self.frames[0]
            if array.shape != first.shape or array.dtype != first.dtype:
                raise ConvcliError(
                    f"{self.name}: frame {self.count} is {array.shape} {array.dtype}, the first "
                    f"{first.shape} {first.dtype}; {LABELS[self.format]} frames share one size"
                )
        check_frames(self.count + 1, self.format, name=self.name)
        if self.dtype is None:
            self.dtype = array.dtype
        with _encoding_errors(self.name, self.format):
            if self.format == "tiff":
                self._add_tiff_page(array)
            else:
                self.frames.append(array)
        self.count += 1

    def finish(self) -> bytes:
        """The file's bytes; the same frames always give the same bytes."""
        if not self.count:
            raise ConvcliError(f"{self.name}: no frame to write")
        with _encoding_errors(self.name, self.format):
            if self.format == "tiff":
                self._tiff.close()
                return self._buffer.getvalue()
            if self.format == "png":
                return self._png()
            return self._pillow()

    def _add_tiff_page(self, array: Array) -> None:
        import tifffile

        if self._tiff is None:
            self._tiff = tifffile.TiffWriter(self._buffer, bigtiff=False)
        channels = array.shape[2] if array.ndim == 3 else 1
        options: dict[str, Any] = {
            "photometric": "rgb" if channels in (3, 4) else "minisblack",
            "compression": "zlib",
            "compressionargs": {"level": PNG_COMPRESS_LEVEL},
            "metadata": None,  # no JSON ImageDescription
        }
        if array.dtype.kind == "u":
            options["predictor"] = "horizontal"
        if channels > 1:
            options["planarconfig"] = "contig"
        if channels in (2, 4):  # the last sample is alpha unless the source said otherwise
            alpha = self.has_alpha is not False
            options["extrasamples"] = ("unassalpha",) if alpha else ("unspecified",)
        if self.count == 0:
            options.update(tiff_tags(self.metadata))
        self._tiff.write(array, contiguous=False, **options)

    def _png(self) -> bytes:
        chunks = png_chunks(self.metadata)
        if self.count == 1:
            return encode_png(self.frames[0], level=PNG_COMPRESS_LEVEL, ancillary=chunks)
        return encode_apng(
            self.frames,
            level=PNG_COMPRESS_LEVEL,
            durations=self.animation.durations,
            loop=self.animation.loop or 0,
            disposal=self.animation.disposal,
            ancillary=chunks,
        )

    def _pillow(self) -> bytes:
        from PIL import Image as PILImage

        # each array goes as soon as Pillow holds its copy: the two are never both whole
        images = []
        while self.frames:
            images.append(PILImage.fromarray(self.frames.pop(0)))
        options: dict[str, Any] = {}
        if self.format in ("jpeg", "webp"):
            options.update(pillow_save_options(self.metadata, self.format))
        if self.format == "jpeg":
            if self.quality is None and self.jpeg is not None:
                options["qtables"] = [list(table) for table in self.jpeg.qtables]
                options["subsampling"] = self.jpeg.subsampling
            else:
                quality = self.quality or DEFAULT_QUALITY
                options["quality"] = quality
                options["subsampling"] = 0 if quality >= 90 else 2  # as ImageMagick
        elif self.format == "webp":
            options["quality"] = self.quality or DEFAULT_QUALITY
        if self.count > 1:
            options["save_all"] = True
            options["append_images"] = images[1:]
            if self.animation.durations:
                options["duration"] = list(self.animation.durations)
            options["loop"] = self.animation.loop or 0
            if self.format == "gif" and self.animation.disposal:
                options["disposal"] = list(self.animation.disposal)
        out = io.BytesIO()
        images[0].save(
            out,
            format={"jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}[self.format],
            **options,
        )
        return out.getvalue()


def encode_image(
    pixels: Array,
    *,
    format: str,
    quality: int | None = None,
    name: str,
    metadata: Metadata | None = None,
) -> bytes:
    """Encode one image as a file's bytes, deterministically.

    Parameters
    ----------
    pixels : ndarray
        ``(H, W)`` or ``(H, W, C)``; ``(H, W, 1)`` is written as gray. 2 and 4 channels are
        gray + alpha and RGBA.
    format : str
        A key of :data:`IMAGE_FORMATS`. PNG: uint8 or uint16, 1-4 channels. JPEG: uint8 gray
        or RGB (4:4:4 chroma at quality >= 90, else 4:2:0, as ImageMagick). TIFF: uint8, uint16
        or float32 with any channel count, deflate-compressed. BMP: uint8 gray or RGB. GIF:
        uint8 gray or RGB (RGB is quantized to 256 colors). WebP: uint8; gray is stored as RGB.
    quality : int, optional
        JPEG and WebP quality, 1-100 (default :data:`DEFAULT_QUALITY`); ignored by lossless
        formats.
    name : str
        The output path or ``"<stdout>"``, used in messages.
    metadata : Metadata, optional
        ICC profile, EXIF, XMP, resolution and text to write where the format holds them.

    Raises
    ------
    ConvcliError
        The format cannot hold the pixels (see :func:`check_writable`), or encoding failed.
    """
    writer = FrameWriter(format, name=name, quality=quality, metadata=metadata)
    writer.add(pixels)
    return writer.finish()
