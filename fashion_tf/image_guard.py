"""The one check on image bytes before anything decodes them: format from the bytes, size from the header.

Download, make_tfrecords, predict and the app all call `check_image` first, so a decompression bomb (a small
file declaring a huge canvas, e.g. a 50 KB 20000x20000 PNG that decodes to 1.2 GB) is refused from its
header everywhere, not only at download. No TensorFlow; Pillow only for formats whose header we don't parse.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default limit (about 0.25 GB of RGBA)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIF_MAGICS = (b"GIF87a", b"GIF89a")
BMP_MAGIC = b"BM"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8) or DAC (CC).
JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class UnsafeImage(ValueError):
    """Bytes that must not be decoded: not an image we can read, or more pixels than allowed."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ImageHeader:
    format: str  # jpeg, png, gif, bmp, or Pillow's lower-case name (webp, tiff, ...)
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


def image_format(data: bytes) -> str | None:
    """jpeg, png, gif or bmp from the leading bytes; None for anything else."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[:6] in GIF_MAGICS:
        return "gif"
    if data.startswith(BMP_MAGIC):
        return "bmp"
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, hopping over segment headers only.

    Pillow's header parse reads every table in Python and was the largest per-image cost of writing
    shards (bench/bench_make_tfrecords.py); None sends the image to Pillow.
    """
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
        elif marker in JPEG_SOF_MARKERS:
            if pos + 9 > end:
                return None
            height, width = int.from_bytes(data[pos + 5: pos + 7], "big"), int.from_bytes(data[pos + 7: pos + 9], "big")
            return (height, width) if height and width else None
        elif marker == 0xDA:  # scan data before any frame header: not a JPEG we can trust
            return None
        else:
            pos += 2 + int.from_bytes(data[pos + 2: pos + 4], "big")
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, which the format fixes at bytes 12-24."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return (height, width) if height and width else None


def gif_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of the GIF's logical screen (bytes 6-10, little-endian)."""
    if len(data) < 10:
        return None
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return (height, width) if height and width else None


def _pillow_header(data: bytes) -> ImageHeader | None:
    """Pillow's lazy open reads the header only; None when it does not recognise the bytes."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                return ImageHeader((image.format or "unknown").lower(), height, width)
    except Image.DecompressionBombError as err:  # over Pillow's hard limit: still a size we can report
        raise UnsafeImage("too_many_pixels", str(err).split(" pixels")[0] + " pixels declared") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types on garbage
        return None


_HEADER_PARSERS = {"jpeg": jpeg_size, "png": png_size, "gif": gif_size}


def read_header(data: bytes) -> ImageHeader:
    """Format and declared size, without decoding pixels; UnsafeImage("not_image") when unreadable."""
    if not data:
        raise UnsafeImage("not_image", "empty")
    fmt = image_format(data)
    size = _HEADER_PARSERS[fmt](data) if fmt in _HEADER_PARSERS else None
    if size is not None:
        return ImageHeader(fmt, size[0], size[1])
    header = _pillow_header(data)
    if header is None or header.height <= 0 or header.width <= 0:
        raise UnsafeImage("not_image", "not a readable image (JPEG, PNG, GIF, BMP, WebP, ...)")
    return ImageHeader(fmt or header.format, header.height, header.width)


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """The header of `data` when it declares at most `max_pixels` pixels; UnsafeImage otherwise."""
    header = read_header(data)
    if header.pixels > max_pixels:
        raise UnsafeImage("too_many_pixels",
                          f"{header.width}x{header.height} declared > {max_pixels:,} pixels allowed")
    return header
