"""Decoding image bytes under one pixel limit, whichever decoder reads them and wherever they came from.

A few kilobytes of JPEG, PNG or TIFF can announce gigapixels: the decoder would allocate them before
finding the data missing.  Every image this library decodes (from the network, the cache or an
archive on disk) goes through :func:`decode`, which reads the dimensions from the header first and
refuses an image larger than :attr:`isicarchive.limits.Limits.max_pixels`.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from . import limits
from .errors import ImageTooLargeError

__all__ = ["ImageTooLargeError", "check_pixels", "decode"]

#: frames of a multi-page TIFF looked at while adding up its pixels (each costs one IFD read)
_MOST_FRAMES = 4096


def _announced(data: bytes) -> int | None:
    """Pixels an image's header announces (all frames of a TIFF together); None when no header is read."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                total = width * height
                frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
                for frame in range(1, min(frames, _MOST_FRAMES)):
                    image.seek(frame)
                    total += image.size[0] * image.size[1]
                if frames > _MOST_FRAMES:
                    total += (frames - _MOST_FRAMES) * width * height
                return total
        except Image.DecompressionBombError as exc:
            sizes = [int(word) for word in str(exc).replace("(", " ").split() if word.isdigit()]
            return sizes[0] if sizes else limits.current().max_pixels + 1
        except Exception:  # noqa: BLE001 - Pillow raises anything on a header it cannot read
            pass
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff_pages(data)
    return None


def _tiff_pages(data: bytes) -> int | None:
    """Pixels of every page of a TIFF Pillow cannot read (BigTIFF, unusual compressions), by tifffile."""
    try:
        import tifffile
    except ImportError:
        return None  # without tifffile, imageio has no other TIFF reader than Pillow's, which failed
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            total = 0
            for number, page in enumerate(tiff.pages):
                if number >= _MOST_FRAMES:
                    return limits.current().max_pixels + 1
                total += int(getattr(page, "imagewidth", 0)) * int(getattr(page, "imagelength", 0))
            return total
    except Exception:  # noqa: BLE001 - a header tifffile cannot read either: imageio will fail on it
        return None


def check_pixels(data: bytes, what: str) -> None:
    """:class:`ImageTooLargeError` when the image ``data`` announces more pixels than the limit."""
    limit = limits.current().max_pixels
    announced = _announced(data)
    if announced is not None and announced > limit:
        raise ImageTooLargeError(
            f"{what}: the image announces {announced:,} pixels, more than the limit of {limit:,} "
            "(a decompression bomb, or a very large scan: isicarchive.limits.configure(max_pixels=…) or "
            "ISICARCHIVE_MAX_PIXELS raises it)")


def decode(data: bytes, what: str, extension: str | None = None) -> Any:
    """The pixels of image bytes (a numpy array), their size checked against the limit first."""
    import imageio.v3 as iio
    from PIL import Image

    check_pixels(data, what)
    limit = limits.current().max_pixels
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        # Pillow refuses twice its own limit: a limit raised here lifts Pillow's too (never lowers it)
        Image.MAX_IMAGE_PIXELS = limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit has been applied
        return iio.imread(data, extension=extension) if extension else iio.imread(data)
