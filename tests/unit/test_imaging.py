"""Image preparation: formats by their bytes, orientation, transparency, budgets, refusals."""

from __future__ import annotations

import io
import itertools
import os
import struct
import zipfile
import zlib

import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw, PngImagePlugin

from devkit.samples import font, scanned_page
from sightline.errors import (
    CorruptImageError,
    EmptyObjectError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedImageFormatError,
)
from sightline.imaging import BUDGETS, MAX_BASE64_BYTES, estimate_image_tokens, looks_like_document, prepare_image
from tests.unit.images import decode, encode, page, photo

pytestmark = [
    pytest.mark.unit,
    # Pillow warns about the damaged and oversized files these tests feed it on purpose.
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

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


# --- Every real-world input: right orientation, colours and size.

RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 170, 60), (30, 60, 200), (240, 220, 40)


def quadrants(
    width: int = 96, height: int = 64, colours: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE, YELLOW)
):
    """Top-left, top-right, bottom-left, bottom-right in four colours: shows orientation and colour at once."""
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    for index, colour in enumerate(colours):
        x, y = (index % 2) * half_w, (index // 2) * half_h
        image.paste(colour, (x, y, x + half_w, y + half_h))
    return image


def assert_quadrants(sent: Image.Image, colours=(RED, GREEN, BLUE, YELLOW), tolerance: int = 24) -> None:
    rgb = sent.convert("RGB")
    for index, colour in enumerate(colours):
        x = rgb.width // 4 if index % 2 == 0 else 3 * rgb.width // 4
        y = rgb.height // 4 if index < 2 else 3 * rgb.height // 4
        pixel = rgb.getpixel((x, y))
        assert all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True)), (index, pixel, colour)


def prepared(data: bytes, detail: str = "high"):
    result = prepare_image(data, detail, max_pixels=LIMIT)
    return result, decode(result.jpeg)


@pytest.mark.parametrize(
    ("fmt", "params", "source_format"),
    [
        ("JPEG", {"quality": 92}, "JPEG"),
        ("JPEG", {"quality": 92, "progressive": True}, "JPEG"),
        ("PNG", {}, "PNG"),
        ("PNG", {"interlace": True}, "PNG"),
        ("WEBP", {"quality": 90}, "WEBP"),
        ("WEBP", {"lossless": True}, "WEBP"),
        ("GIF", {}, "GIF"),
        ("BMP", {}, "BMP"),
        ("TIFF", {}, "TIFF"),
        ("TIFF", {"compression": "tiff_lzw"}, "TIFF"),
        ("TIFF", {"compression": "jpeg"}, "TIFF"),
        ("HEIF", {"quality": 90}, "HEIF"),
        ("AVIF", {"quality": 90}, "AVIF"),
    ],
)
def test_each_format_keeps_size_orientation_and_colours(fmt: str, params: dict, source_format: str) -> None:
    if fmt not in Image.SAVE:
        pytest.skip(f"this Pillow cannot write {fmt}")
    result, sent = prepared(encode(quadrants(), fmt, **params))
    assert result.source_format == source_format
    assert (result.original_width, result.original_height) == (96, 64) == sent.size
    assert_quadrants(sent)


def test_mpo_uses_the_primary_image() -> None:
    # MPO (3D and multi-shot cameras): Pillow writes it as a JPEG with further images appended.
    left, right = quadrants(), quadrants(colours=(BLUE, BLUE, BLUE, BLUE))
    result, sent = prepared(encode(left, "MPO", save_all=True, append_images=[right], quality=92))
    assert result.source_format == "MPO"
    assert_quadrants(sent)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_use_the_first_frame(fmt: str) -> None:
    frames = [quadrants(), quadrants(colours=(BLUE, BLUE, BLUE, BLUE))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert_quadrants(prepared(data)[1])


def test_multi_page_tiff_uses_the_first_page() -> None:
    pages = [quadrants(), quadrants(colours=(BLUE, BLUE, BLUE, BLUE))]
    assert_quadrants(prepared(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))[1])


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()  # bytes: some encoders (AVIF) remove the tag from an Exif object they are given


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "HEIF", "AVIF"])
def test_orientation_is_applied_in_every_format(fmt: str) -> None:
    # Stored sideways with orientation 6 (rotate 90° clockwise to view): upright, the stored top-left is top-right.
    stored = quadrants(96, 64)
    params = {"tiffinfo": {0x0112: 6}} if fmt == "TIFF" else {"exif": exif_with_orientation(6)}
    result, sent = prepared(
        encode(stored, fmt, quality=92, **params) if fmt != "TIFF" else encode(stored, fmt, **params)
    )
    assert (result.original_width, result.original_height) == (64, 96) == sent.size
    assert_quadrants(sent, colours=(BLUE, RED, YELLOW, GREEN))


def test_heic_with_transparency_is_flattened_on_white() -> None:
    image = quadrants().convert("RGBA")
    image.paste((0, 0, 0, 0), (48, 0, 96, 32))  # top-right fully transparent
    result, sent = prepared(encode(image, "HEIF", quality=90))
    assert result.source_mode == "RGBA"
    assert_quadrants(sent, colours=(RED, (255, 255, 255), BLUE, YELLOW))


# --- CMYK and colour profiles.


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _icc_desc(text: str) -> bytes:
    ascii_text = text.encode() + b"\x00"
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)


def _icc(device_class: bytes, colour_space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """A minimal ICC v2.1 profile (header, tag table, tags), enough for LittleCMS."""
    table, body = b"", b""
    start = 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    header = struct.pack(">I", start + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + device_class + colour_space + pcs
    header += bytes(12) + b"acsp" + b"APPL" + bytes(4 + 4 + 4 + 8 + 4) + d50 + bytes(4 + 16 + 28)
    return header + struct.pack(">I", len(tags)) + table + body


def rgb_icc(name: str, primaries: tuple[tuple[float, float, float], ...], gamma: float) -> bytes:
    """A matrix/TRC RGB profile from D50-adapted primaries, the way Display P3 and Adobe RGB are built."""

    def xyz(values: tuple[float, ...]) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in values)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    red, green, blue = primaries
    tags = [(b"desc", _icc_desc(name)), (b"wtpt", xyz((0.9642, 1.0, 0.8249)))]
    tags += [(b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)), (b"bXYZ", xyz(blue))]
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    return _icc(b"mntr", b"RGB ", b"XYZ ", tags)


DISPLAY_P3 = rgb_icc("Display P3", ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841)), 2.2)
ADOBE_RGB = rgb_icc(
    "Adobe RGB (1998)", ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)), 563 / 256
)
# Press inks are duller than naive 255-minus-CMYK: a coated-paper cyan is Lab (55, -37, -50), sRGB ≈ (0, 145, 210).
INK_LAB = {"C": (55, -37, -50), "M": (48, 74, -3), "Y": (89, -5, 93), "K": (16, 0, 0)}


def cmyk_icc() -> bytes:
    """A CMYK → Lab printer profile (lut8, 2-point grid): single inks at press Lab values, overprints naive."""
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    grid = b""
    for c, m, y, k in itertools.product((0, 1), repeat=4):  # the first channel varies slowest, as ICC orders it
        inks = [name for name, on in zip("CMYK", (c, m, y, k), strict=True) if on]
        if len(inks) == 1:
            lightness, a, b = INK_LAB[inks[0]]
            grid += bytes([round(lightness * 255 / 100), a + 128, b + 128])
        else:
            rgb = tuple(round(255 * (1 - v) * (1 - k)) for v in (c, m, y))
            grid += bytes(ImageCms.applyTransform(Image.new("RGB", (1, 1), rgb), to_lab).getpixel((0, 0)))
    ramp = bytes(range(256))
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + grid + ramp * 3
    return _icc(b"prtr", b"CMYK", b"Lab ", [(b"desc", _icc_desc("Coated press CMYK")), (b"A2B0", lut)])


def through_profile(colour: tuple[int, ...], icc: bytes, mode: str) -> tuple[int, ...]:
    """What LittleCMS makes of one colour in the given profile: the expected sRGB value."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    pixel = Image.new(mode, (1, 1), colour)
    return ImageCms.profileToProfile(pixel, source, ImageCms.createProfile("sRGB"), outputMode="RGB").getpixel((0, 0))


def test_cmyk_jpeg_as_photoshop_writes_it_is_converted() -> None:
    # Photoshop stores CMYK JPEGs inverted and says so in an Adobe APP14 marker; Pillow writes them the same way.
    data = encode(quadrants().convert("CMYK"), "JPEG", quality=95)
    assert b"Adobe" in data
    result, sent = prepared(data)
    assert result.source_mode == "CMYK"
    assert_quadrants(sent)


def test_cmyk_jpeg_without_the_adobe_marker_is_not_inverted() -> None:
    # Other writers store plain CMYK with no APP14 marker: store inverted samples, then drop the marker.
    inverted = ImageChops.invert(quadrants().convert("CMYK"))
    data = encode(inverted, "JPEG", quality=95)
    app14 = data.index(b"Adobe") - 4  # the FF EE marker and the segment length come first
    assert data[app14 : app14 + 2] == b"\xff\xee"
    (length,) = struct.unpack_from(">H", data, app14 + 2)
    plain = data[:app14] + data[app14 + 2 + length :]
    assert b"Adobe" not in plain
    assert_quadrants(prepared(plain)[1])


def test_cmyk_jpeg_with_an_icc_profile_converts_through_the_profile() -> None:
    cyan = (255, 0, 0, 0)
    data = encode(Image.new("CMYK", (64, 64), cyan), "JPEG", quality=95, icc_profile=cmyk_icc())
    pixel = prepared(data)[1].convert("RGB").getpixel((32, 32))
    expected = through_profile(cyan, cmyk_icc(), "CMYK")
    assert expected[1] < 200  # the press cyan, visibly duller than the naive (0, 255, 255)
    assert all(abs(a - b) <= 8 for a, b in zip(pixel, expected, strict=True)), (pixel, expected)


def test_cmyk_tiff_with_an_icc_profile_converts_through_the_profile() -> None:
    cyan = (255, 0, 0, 0)
    data = encode(Image.new("CMYK", (64, 64), cyan), "TIFF", icc_profile=cmyk_icc())
    pixel = prepared(data)[1].convert("RGB").getpixel((32, 32))
    expected = through_profile(cyan, cmyk_icc(), "CMYK")
    assert all(abs(a - b) <= 8 for a, b in zip(pixel, expected, strict=True)), (pixel, expected)


@pytest.mark.parametrize(
    ("fmt", "icc"), [("JPEG", DISPLAY_P3), ("PNG", ADOBE_RGB), ("WEBP", DISPLAY_P3), ("TIFF", ADOBE_RGB)]
)
def test_wide_gamut_rgb_is_converted_to_srgb(fmt: str, icc: bytes) -> None:
    colour = (200, 100, 50)
    params = {"quality": 98} if fmt in ("JPEG", "WEBP") else {}
    data = encode(Image.new("RGB", (64, 64), colour), fmt, icc_profile=icc, **params)
    pixel = prepared(data)[1].convert("RGB").getpixel((32, 32))
    expected = through_profile(colour, icc, "RGB")
    assert max(abs(a - b) for a, b in zip(expected, colour, strict=True)) >= 15  # the profile matters
    assert all(abs(a - b) <= 6 for a, b in zip(pixel, expected, strict=True)), (pixel, expected)


def test_an_srgb_profile_leaves_the_pixels_alone() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(quadrants(), "PNG", icc_profile=srgb)
    assert_quadrants(prepared(data)[1], tolerance=6)


def test_a_broken_icc_profile_does_not_refuse_the_image() -> None:
    data = encode(quadrants(), "JPEG", quality=92, icc_profile=b"not a profile" * 20)
    assert_quadrants(prepared(data)[1])


def test_broken_exif_does_not_refuse_the_image() -> None:
    data = encode(quadrants(), "JPEG", quality=92, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    result, sent = prepared(data)
    assert result.orientation == 1
    assert_quadrants(sent)


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_out_of_range_orientation_means_upright(orientation: int) -> None:
    result, sent = prepared(encode(quadrants(), "JPEG", quality=92, exif=exif_with_orientation(orientation)))
    assert result.orientation == 1
    assert_quadrants(sent)


# --- Every mode, transparency on white, deep images scaled.

WHITE = (255, 255, 255)


def png_chunks(width: int, height: int, colour_type: int, depth: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG from raw scanlines (filter byte included): for depths and types Pillow does not write."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_16_bit_rgb_png_keeps_its_colours() -> None:
    # Each 16-bit sample is the 8-bit colour × 257: the result must be the 8-bit colour, not clipped white.
    row = b"\x00" + b"".join(struct.pack(">HHH", *(v * 257 for v in RED)) for _ in range(32))
    sent = prepared(png_chunks(32, 8, colour_type=2, depth=16, rows=row * 8))[1]
    assert_quadrants(sent, colours=(RED,) * 4, tolerance=6)


# 200 of 65535 is near black: a 16-bit image that happens to use only low levels must not come out bright.
@pytest.mark.parametrize(("level", "expected"), [(0, 0), (200, 1), (0x4000, 64), (0x8000, 128), (0xFFFF, 255)])
def test_16_bit_grey_png_is_scaled_not_clipped(level: int, expected: int) -> None:
    rows = (b"\x00" + struct.pack(">H", level) * 16) * 16
    result, sent = prepared(png_chunks(16, 16, colour_type=0, depth=16, rows=rows))
    assert result.source_mode == "I;16"
    assert abs(sent.convert("L").getpixel((8, 8)) - expected) <= 2


def test_16_bit_grey_with_alpha_png_is_flattened_on_white() -> None:
    opaque_black, transparent = struct.pack(">HH", 0, 0xFFFF), struct.pack(">HH", 0, 0)
    rows = (b"\x00" + opaque_black * 8 + transparent * 8) * 16
    sent = prepared(png_chunks(16, 16, colour_type=4, depth=16, rows=rows))[1].convert("L")
    assert sent.getpixel((2, 8)) < 20 and sent.getpixel((13, 8)) > 235


def tiff_16_bit_rgb(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """An uncompressed little-endian 16-bit RGB TIFF (Pillow reads these but cannot write them)."""
    pixels = struct.pack("<HHH", *(v * 257 for v in colour)) * (width * height)
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, 8 + 2 + 12 * 9 + 4),  # BitsPerSample: offset of three SHORTs after the IFD
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4 + 6),  # StripOffsets
        (277, 3, 1, 3),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<HHH", 16, 16, 16) + pixels


def test_16_bit_rgb_tiff_keeps_its_colours() -> None:
    assert_quadrants(prepared(tiff_16_bit_rgb(32, 16, GREEN))[1], colours=(GREEN,) * 4, tolerance=6)


def horizontal_gradient(width: int, height: int) -> Image.Image:
    """Black on the left to white on the right."""
    return Image.linear_gradient("L").transpose(Image.Transpose.TRANSPOSE).resize((width, height))


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_grey_tiff_is_scaled_not_clipped(mode: str) -> None:
    gradient = horizontal_gradient(256, 16).convert("I").point(lambda v: v * 257)
    data = encode(gradient.convert(mode), "TIFF")
    result, sent = prepared(data)
    assert result.source_mode == mode
    grey = sent.convert("L")
    assert grey.getpixel((2, 8)) < 8 and abs(grey.getpixel((128, 8)) - 128) <= 4 and grey.getpixel((253, 8)) > 247


def test_float_tiff_with_missing_values_keeps_its_range() -> None:
    # Scientific float TIFFs mark missing data with NaN; one NaN must not turn the whole image black.
    image = horizontal_gradient(64, 16).convert("F").point(lambda v: v / 255)
    image.putpixel((0, 0), float("nan"))
    sent = prepared(encode(image, "TIFF"))[1].convert("L")
    assert sent.getpixel((60, 8)) > 220 and sent.getpixel((3, 8)) < 30


# (mode, colour in that mode, expected RGB on white). Alpha 0 must give white, alpha 255 the colour.
MODE_CASES = [
    ("1", 1, WHITE),
    ("L", 81, (81, 81, 81)),
    ("LA", (81, 0), WHITE),
    ("LA", (81, 255), (81, 81, 81)),
    ("La", (40, 128), (168, 168, 168)),  # premultiplied: straight 80 at half alpha over white
    ("RGB", RED, RED),
    ("RGBA", (*RED, 0), WHITE),
    ("RGBA", (*RED, 255), RED),
    ("RGBa", (110, 15, 15, 128), (238, 143, 143)),  # premultiplied RED at half alpha over white
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("YCbCr", (76, 85, 255), (254, 0, 0)),
    ("LAB", (138, 209, 198), (254, 0, 0)),
    ("HSV", (0, 255, 255), (255, 0, 0)),
    ("I;16", 0x8000, (128, 128, 128)),
    ("I;16B", 0xFFFF, WHITE),
    ("I", 40000, (156, 156, 156)),
    ("F", 0.5, (128, 128, 128)),
]


@pytest.mark.parametrize(("mode", "colour", "expected"), MODE_CASES)
def test_every_pillow_mode_becomes_rgb_or_l(mode: str, colour, expected: tuple[int, int, int]) -> None:
    # Some modes (La, RGBa, HSV) have no file format of their own: the conversion is checked directly.
    from sightline.imaging import _to_rgb_or_l

    converted = _to_rgb_or_l(Image.new(mode, (4, 4), colour))
    assert converted.mode in ("RGB", "L")
    pixel = converted.convert("RGB").getpixel((1, 1))
    assert all(abs(a - b) <= 6 for a, b in zip(pixel, expected, strict=True)), (mode, pixel, expected)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("1", "BMP"), ("LA", "TIFF"), ("PA", "TIFF"), ("YCbCr", "TIFF"), ("LAB", "TIFF"), ("I", "TIFF"), ("CMYK", "TIFF")],
)
def test_modes_as_files_keep_their_colours(mode: str, fmt: str) -> None:
    colours: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE, YELLOW)
    if mode in ("1", "LA", "I"):  # greyscale modes: the quadrants' grey levels (1: black and white)
        levels = [Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0)) for colour in colours]
        if mode == "1":
            levels = [0 if level < 128 else 255 for level in levels]
        colours = tuple((level, level, level) for level in levels)
    image = quadrants().convert("L" if mode == "I" else mode, dither=Image.Dither.NONE)
    if mode == "I":
        image = image.convert("I").point(lambda v: v * 257)  # 16-bit levels in a 32-bit image
    assert_quadrants(prepared(encode(image, fmt))[1], colours=colours, tolerance=24 if mode == "PA" else 8)


def test_palette_png_with_trns_is_flattened_on_white() -> None:
    image = quadrants().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    transparent_index = image.getpixel((70, 10))  # the top-right (green) quadrant's palette entry
    result, sent = prepared(encode(image, "PNG", transparency=transparent_index))
    assert result.source_mode == "P"
    assert_quadrants(sent, colours=(RED, WHITE, BLUE, YELLOW))


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_greyscale_with_a_transparent_colour_is_flattened_on_white(fmt: str) -> None:
    # tRNS on a greyscale PNG, or a greyscale GIF (Pillow reads it as mode L): the keyed grey becomes white.
    image = Image.new("L", (64, 64), 0)
    image.paste(100, (32, 0, 64, 64))
    sent = prepared(encode(image, fmt, transparency=0))[1]
    grey = sent.convert("L")
    assert grey.getpixel((10, 32)) > 245 and abs(grey.getpixel((50, 32)) - 100) <= 4


def test_rgb_png_with_a_transparent_colour_is_flattened_on_white() -> None:
    sent = prepared(encode(quadrants(), "PNG", transparency=GREEN))[1]
    assert_quadrants(sent, colours=(RED, WHITE, BLUE, YELLOW))


def test_webp_and_avif_alpha_is_flattened_on_white() -> None:
    for fmt in ("WEBP", "AVIF"):
        image = quadrants().convert("RGBA")
        image.paste((0, 0, 0, 0), (48, 0, 96, 32))
        assert_quadrants(prepared(encode(image, fmt, quality=95))[1], colours=(RED, WHITE, BLUE, YELLOW))


# --- Refusals.


def test_a_damaged_header_is_corrupt_not_an_unknown_format() -> None:
    # The magic bytes say PNG: a broken IHDR is a corrupt PNG, not "not an image".
    data = bytearray(encode(quadrants(), "PNG"))
    data[12:16] = b"IHDX"
    with pytest.raises(CorruptImageError, match="starts like a PNG"):
        prepare_image(bytes(data), "auto", max_pixels=LIMIT)


def test_a_progressive_jpeg_with_too_many_scans_is_refused_before_decoding() -> None:
    from scripts.make_bad_corpus import jpeg_scan_bomb

    with pytest.raises(ImageTooLargeError, match="scans"):
        prepare_image(jpeg_scan_bomb(600), "auto", max_pixels=LIMIT)


def test_an_html_page_with_inline_svg_is_html() -> None:
    page = b"<!DOCTYPE html><html><body><svg viewBox='0 0 1 1'></svg></body></html>"
    with pytest.raises(NotAnImageError, match="HTML"):
        prepare_image(page, "auto", max_pixels=LIMIT)


def test_an_image_whose_metadata_mentions_svg_is_still_an_image() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Source", "<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert_quadrants(prepared(encode(quadrants(), "PNG", pnginfo=info))[1])


def _ui_screenshot(background: tuple[int, int, int], ink: tuple[int, int, int]) -> Image.Image:
    shot = Image.new("RGB", (1600, 1000), background)
    draw = ImageDraw.Draw(shot)
    for row in range(12):
        draw.text((60, 120 + row * 60), f"def function_{row}(argument): return value", fill=ink, font=font(26))
    return shot


def _flat_shapes(background: tuple[int, int, int], shape: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (1600, 1200), background)
    ImageDraw.Draw(image).ellipse((500, 300, 1100, 900), fill=shape)
    return image


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("8 pt scan", lambda: scanned_page(28), True),
        ("light screenshot", lambda: _ui_screenshot((245, 246, 248), (30, 30, 30)), True),
        ("dark-mode screenshot", lambda: _ui_screenshot((20, 22, 26), (220, 220, 220)), True),
        ("photo", lambda: photo(1600, 1200), False),
        ("product on white", lambda: _flat_shapes((250, 250, 250), (200, 40, 40)), False),
        ("moon at night", lambda: _flat_shapes((10, 10, 20), (250, 250, 230)), False),
    ],
)
def test_document_detection(name: str, make, expected: bool) -> None:
    assert looks_like_document(make()) is expected, name
