"""fashion_tf.image_guard: format and declared size from the header, bombs refused before decoding."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from conftest import png_bomb
from fashion_tf.image_guard import UnsafeImage, check_image, image_format, jpeg_size, png_size, read_header


def encoded(mode: str, size=(37, 23), **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, **save_kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mode, save_kwargs",
    [
        ("RGB", {"format": "JPEG"}),
        ("RGB", {"format": "JPEG", "progressive": True}),
        ("L", {"format": "JPEG"}),
        ("CMYK", {"format": "JPEG"}),
        ("RGB", {"format": "JPEG", "exif": b"Exif\x00\x00" + b"\x00" * 300, "icc_profile": b"\x00" * 700}),
        ("RGBA", {"format": "PNG"}),
        ("P", {"format": "PNG"}),
        ("P", {"format": "GIF"}),
        ("RGB", {"format": "BMP"}),
        ("RGB", {"format": "WEBP"}),
    ],
)
def test_header_sizes_match_pillow(mode, save_kwargs):
    header = read_header(encoded(mode, **save_kwargs))
    assert (header.height, header.width) == (23, 37)
    assert header.format == save_kwargs["format"].lower()


def test_header_size_of_broken_bytes_is_none_and_pillow_decides():
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00") is None
    assert jpeg_size(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20) is None
    assert png_size(b"\x89PNG\r\n\x1a\n" + b"\x00" * 4) is None
    assert image_format(b"hello") is None
    for garbage in (b"", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"<html>not an image</html>", bytes(range(256)) * 4):
        with pytest.raises(UnsafeImage) as caught:
            read_header(garbage)
        assert caught.value.reason == "not_image"


def test_a_decompression_bomb_is_refused_from_its_header():
    import resource

    bomb = png_bomb()
    assert len(bomb) < 100_000  # a small file ...
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnsafeImage, match="too_many_pixels: 20000x20000 declared") as caught:
        check_image(bomb)  # ... declaring 400 M pixels, none of them decoded
    assert caught.value.reason == "too_many_pixels"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 50_000  # KiB
    assert check_image(bomb, max_pixels=20_000 * 20_000).pixels == 400_000_000


def test_pixel_limit_is_inclusive():
    data = encoded("RGB", size=(40, 25), format="JPEG")
    assert check_image(data, max_pixels=1000).pixels == 1000
    with pytest.raises(UnsafeImage):
        check_image(data, max_pixels=999)
