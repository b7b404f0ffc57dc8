"""Image preparation: formats by their bytes, orientation, transparency, budgets, refusals."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
from PIL import Image

from sightline.errors import (
    CorruptImageError,
    EmptyObjectError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedImageFormatError,
)
from sightline.imaging import BUDGETS, MAX_BASE64_BYTES, estimate_image_tokens, prepare_image
from tests.unit.images import decode, encode, page, photo

pytestmark = pytest.mark.unit

LIMIT = 100_000_000


def is_red(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 180 and g < 80 and b < 80


@pytest.mark.parametrize(
    ("orientation", "upright_size", "red_corner"),
    [
        (1, (400, 300), (0, 0)),
        (3, (400, 300), (1, 1)),  # rotated 180°: the marker ends bottom-right
        (6, (300, 400), (1, 0)),  # rotated 90° clockwise: top-right
        (8, (300, 400), (0, 1)),  # rotated 90° counter-clockwise: bottom-left
    ],
)
def test_exif_orientation_is_applied(orientation, upright_size, red_corner) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo(400, 300), "JPEG", exif=exif, quality=95)
    prepared = prepare_image(data, "high", max_pixels=LIMIT)
    sent = decode(prepared.jpeg)
    assert (prepared.original_width, prepared.original_height) == upright_size
    assert sent.size == upright_size
    x = 5 if red_corner[0] == 0 else sent.width - 6
    y = 5 if red_corner[1] == 0 else sent.height - 6
    assert is_red(sent.convert("RGB").getpixel((x, y)))
    assert prepared.orientation == orientation


def test_transparency_is_flattened_on_white() -> None:
    logo = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    logo.paste((10, 10, 200, 255), (50, 25, 150, 75))
    prepared = prepare_image(encode(logo, "PNG"), "auto", max_pixels=LIMIT)
    sent = decode(prepared.jpeg).convert("RGB")
    assert all(channel > 245 for channel in sent.getpixel((5, 5)))  # transparent → white, not black
    assert sent.getpixel((100, 50))[2] > 180
    assert prepared.source_format == "PNG" and prepared.source_mode == "RGBA"


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("1", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("P", "GIF"),
        ("RGB", "BMP"),
        ("RGB", "TIFF"),
        ("RGB", "WEBP"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
    ],
)
def test_every_mode_and_format_becomes_a_jpeg(mode: str, fmt: str) -> None:
    source = photo(320, 240).convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        source = Image.linear_gradient("L").resize((320, 240)).convert("I").point(lambda v: v * 257).convert("I;16")
    elif mode in ("I", "F"):
        source = Image.linear_gradient("L").resize((320, 240)).convert(mode).point(lambda v: v * 257)
    prepared = prepare_image(encode(source, fmt), "low", max_pixels=LIMIT)
    sent = decode(prepared.jpeg)
    assert sent.format == "JPEG" and sent.mode in ("RGB", "L")
    if mode in ("I;16", "I", "F"):
        # 16-bit levels are scaled, not clipped: the gradient still spans dark to light
        low, high = sent.convert("L").getextrema()
        assert low < 40 and high > 200


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    sent = decode(prepare_image(data, "low", max_pixels=LIMIT).jpeg).convert("RGB")
    assert is_red(sent.getpixel((32, 32)))


def test_format_comes_from_bytes_not_name() -> None:
    # A PNG is a PNG whatever the key says; the preparer never sees the name at all.
    prepared = prepare_image(encode(photo(100, 80), "PNG"), "low", max_pixels=LIMIT)
    assert prepared.source_format == "PNG"


@pytest.mark.parametrize(
    ("detail", "budget"),
    [("low", BUDGETS["low"]), ("high", BUDGETS["high"])],
)
def test_detail_levels_fit_their_pixel_budgets(detail, budget) -> None:
    prepared = prepare_image(encode(photo(6000, 4000), "JPEG"), detail, max_pixels=LIMIT)
    assert max(prepared.sent_width, prepared.sent_height) <= budget.max_side
    assert prepared.sent_width * prepared.sent_height <= budget.max_pixels * 1.01
    assert prepared.detail_sent == detail
    assert prepared.estimated_image_tokens == estimate_image_tokens(prepared.sent_width, prepared.sent_height)
    assert (prepared.original_width, prepared.original_height) == (6000, 4000)


def test_auto_gives_a_page_more_pixels_than_a_photo() -> None:
    scanned = prepare_image(encode(page(), "PNG"), "auto", max_pixels=LIMIT)
    snapshot = prepare_image(encode(photo(4000, 3000), "JPEG"), "auto", max_pixels=LIMIT)
    assert scanned.document_like and scanned.budget == "high" and scanned.detail_sent == "high"
    assert not snapshot.document_like and snapshot.budget == "standard"
    assert scanned.estimated_image_tokens > snapshot.estimated_image_tokens


def test_small_images_are_not_upscaled() -> None:
    prepared = prepare_image(encode(photo(120, 90), "PNG"), "high", max_pixels=LIMIT)
    assert (prepared.sent_width, prepared.sent_height) == (120, 90)


def test_noise_still_fits_under_one_megabyte_of_base64() -> None:
    # Random noise is the worst case for JPEG: the ladder must still land under the limit.
    noise = Image.frombytes("RGB", (2048, 1536), os.urandom(2048 * 1536 * 3))
    prepared = prepare_image(encode(noise, "PNG"), "high", max_pixels=LIMIT)
    assert prepared.bytes_sent < MAX_BASE64_BYTES
    assert len(prepared.base64) == prepared.bytes_sent


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyObjectError),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", NotAnImageError),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', UnsupportedImageFormatError),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", UnsupportedImageFormatError),
        (zip_bytes(), NotAnImageError),
        (b"just some text that happens to be named .jpg", NotAnImageError),
        (encode(photo(400, 300), "JPEG")[:600], CorruptImageError),
        (encode(photo(400, 300), "PNG")[:300], CorruptImageError),
    ],
)
def test_bad_input_is_refused_with_a_specific_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        prepare_image(data, "auto", max_pixels=LIMIT)
    assert raised.value.permanent and raised.value.message


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # 10000×10000 declared in the header of a tiny file: refused without allocating 300 MB.
    bomb = encode(Image.new("1", (10_000, 10_000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match="100,000,000 pixels"):
        prepare_image(bomb, "auto", max_pixels=50_000_000)


def test_absurd_dimensions_are_refused() -> None:
    with pytest.raises(ImageTooLargeError, match="out of range"):
        prepare_image(encode(Image.new("L", (20_000, 10)), "PNG"), "auto", max_pixels=LIMIT)
