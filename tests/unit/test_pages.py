"""Documents as pages (pure): recognising PDFs and multi-page TIFFs, TIFF pages and their cap, the page shapes."""

from __future__ import annotations

import dataclasses
import io
import math
import time

import pytest
from PIL import Image, TiffImagePlugin

from devkit.documents import MARKER_SIDE, image_pdf, many_page_tiff, multipage_tiff, page_marker, text_pdf
from sightline.errors import PermanentInputError, TransientError
from sightline.imaging import BUDGETS, MAX_BASE64_BYTES, prepare_image
from sightline.pages import (
    DEFAULT_MAX_PAGES,
    DOCUMENT_BUDGET,
    DOCUMENT_LONGEST_SIDE,
    MAX_TEXT_LAYER_CHARS,
    CorruptDocumentError,
    EncryptedDocumentError,
    PageTooLargeError,
    RenderedDocument,
    RenderedPage,
    RendererFailedError,
    RendererUnavailableError,
    TooManyPagesError,
    check_page_size,
    clean_text_layer,
    document_budget,
    document_kind,
    page_numbers,
    pdf_render_scale,
    prepare_page,
    read_tiff,
)
from tests.unit.images import encode, page, photo

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore::UserWarning:PIL")]

LIMIT = 100_000_000
SIZE = (850, 1100)


def decode(prepared_jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(prepared_jpeg))


def marked_page(image: Image.Image, original: tuple[int, int], count: int) -> int:
    """Which page's marker square the (scaled) image shows: the one dark square of the markers' row."""
    grey = image.convert("L")
    scale = image.width / original[0]
    dark: list[int] = []
    for number in range(1, count + 1):
        left, top = page_marker(number, original)
        centre = (round((left + MARKER_SIDE / 2) * scale), round((top + MARKER_SIDE / 2) * scale))
        level = grey.getpixel(centre)
        assert isinstance(level, int)
        if level < 80:
            dark.append(number)
    assert len(dark) == 1, dark
    return dark[0]


# --- Recognising documents from their bytes.


def test_a_pdf_is_recognised_by_its_header() -> None:
    assert document_kind(text_pdf([["hello"]])) == "pdf"
    assert document_kind(image_pdf(1)) == "pdf"


def test_a_pdf_header_after_junk_within_the_first_kilobyte_still_counts() -> None:
    assert document_kind(b"\x00" * 1000 + text_pdf([["hello"]])) == "pdf"
    assert document_kind(b"\x00" * 1100 + text_pdf([["hello"]])) is None


def test_a_multi_page_tiff_is_a_document_and_a_single_page_tiff_an_image() -> None:
    assert document_kind(multipage_tiff(2)) == "tiff"
    assert document_kind(multipage_tiff(1)) is None
    assert document_kind(encode(page(), "TIFF")) is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_images_are_not_documents(fmt: str) -> None:
    assert document_kind(encode(photo(64, 48), fmt)) is None


def test_an_image_whose_metadata_mentions_pdf_stays_an_image() -> None:
    # imaging.py's order: an image's own signature wins over a "%PDF-" somewhere in the first kilobyte.
    data = encode(photo(64, 48), "JPEG", comment=b"exported from %PDF-1.7 by a scanner")
    assert b"%PDF-" in data[:1024]
    assert document_kind(data) is None


@pytest.mark.parametrize("data", [b"", b"%PD", b"hello world", b"PK\x03\x04rest", b"II*\x00garbage"])
def test_other_bytes_are_not_documents(data: bytes) -> None:
    assert document_kind(data) is None


# --- Multi-page TIFF.


def test_every_tiff_page_is_prepared_in_order() -> None:
    document = read_tiff(multipage_tiff(3, SIZE), max_pages=DEFAULT_MAX_PAGES, max_pixels=LIMIT)

    assert document.kind == "tiff"
    assert document.page_count == 3
    assert [p.number for p in document.pages] == [1, 2, 3]
    for rendered in document.pages:
        image = rendered.image
        assert rendered.text_layer is None
        assert rendered.width_pt is None and rendered.height_pt is None
        assert image.source_format == "TIFF"
        assert image.source_mode == "L"
        assert (image.original_width, image.original_height) == SIZE
        assert image.budget == "high" and image.detail_sent == "high"
        assert image.bytes_sent < MAX_BASE64_BYTES
        sent = decode(image.jpeg)
        assert sent.format == "JPEG"
        assert sent.size == (image.sent_width, image.sent_height)
        assert marked_page(sent, SIZE, 3) == rendered.number


def test_a_page_range_prepares_only_those_pages_and_is_clipped_to_the_document() -> None:
    data = multipage_tiff(4, SIZE)

    only_two = read_tiff(data, max_pages=10, max_pixels=LIMIT, pages=range(2, 3))
    assert only_two.page_count == 4
    assert [p.number for p in only_two.pages] == [2]
    assert marked_page(decode(only_two.pages[0].image.jpeg), SIZE, 4) == 2

    tail = read_tiff(data, max_pages=10, max_pixels=LIMIT, pages=range(3, 50))
    assert [p.number for p in tail.pages] == [3, 4]

    none = read_tiff(data, max_pages=10, max_pixels=LIMIT, pages=range(0))
    assert none.page_count == 4 and none.pages == ()


def test_a_large_scan_is_reduced_to_the_document_budget() -> None:
    # A 300 dpi letter page: the longest side becomes the document size, and no more pixels than that.
    document = read_tiff(multipage_tiff(2, (2550, 3300)), max_pages=10, max_pixels=LIMIT)
    image = document.pages[0].image
    assert (image.original_width, image.original_height) == (2550, 3300)
    assert image.sent_height == DOCUMENT_LONGEST_SIDE
    assert abs(image.sent_width - DOCUMENT_LONGEST_SIDE * 2550 / 3300) <= 1
    assert image.sent_width * image.sent_height <= DOCUMENT_BUDGET.max_pixels


def test_a_small_scan_is_never_enlarged() -> None:
    document = read_tiff(multipage_tiff(2, (600, 800)), max_pages=10, max_pixels=LIMIT)
    assert {(p.image.sent_width, p.image.sent_height) for p in document.pages} == {(600, 800)}


def test_a_bilevel_fax_is_reduced_to_grey_not_to_broken_strokes() -> None:
    """CCITT Group 4 at 1 bit a pixel, the usual multi-page TIFF: shrunk like a document (no nearest neighbour)."""
    data = multipage_tiff(2, (2480, 3508), mode="1", compression="group4")
    document = read_tiff(data, max_pages=10, max_pixels=LIMIT)
    image = document.pages[1].image
    assert image.source_mode == "1"
    sent = decode(image.jpeg).convert("L")
    # Antialiased strokes have intermediate greys; nearest-neighbour would leave pure black and white.
    histogram = sent.histogram()
    assert sum(histogram[60:200]) > 500
    assert marked_page(sent, (2480, 3508), 2) == 2


def test_the_page_cap_is_checked_before_any_page_is_decoded() -> None:
    # Pages far above the pixel limit: decoding any of them would fail differently (PageTooLarge).
    data = multipage_tiff(6, (400, 300))
    started = time.monotonic()
    with pytest.raises(TooManyPagesError, match="more than 5 pages"):
        read_tiff(data, max_pages=5, max_pixels=1)
    assert time.monotonic() - started < 1
    assert read_tiff(data, max_pages=6, max_pixels=LIMIT).page_count == 6


def test_a_tiff_with_a_hundred_thousand_pages_is_refused_quickly() -> None:
    # 10 MB of one-pixel pages: counting them all (Pillow's n_frames, quadratic) would take minutes;
    # the count stops at the cap + 1.
    data = many_page_tiff(100_000)
    assert document_kind(data) == "tiff"
    started = time.monotonic()
    with pytest.raises(TooManyPagesError, match="more than 500 pages"):
        read_tiff(data, max_pages=DEFAULT_MAX_PAGES, max_pixels=LIMIT)
    assert time.monotonic() - started < 2
    small = read_tiff(many_page_tiff(7), max_pages=DEFAULT_MAX_PAGES, max_pixels=LIMIT)
    assert small.page_count == 7 and len(small.pages) == 7


def test_a_page_above_the_pixel_limit_is_refused_by_its_header() -> None:
    data = multipage_tiff(3, (1000, 1000))
    with pytest.raises(PageTooLargeError, match=r"^page 1: .*1,000,000 pixels.*above the limit of 500,000"):
        read_tiff(data, max_pages=10, max_pixels=500_000)
    # A range that skips nothing large: the pages asked for are the ones checked.
    assert read_tiff(data, max_pages=10, max_pixels=LIMIT, pages=range(3, 4)).pages[0].number == 3


def test_a_truncated_tiff_page_is_a_corrupt_document() -> None:
    data = multipage_tiff(3, SIZE, compression="tiff_lzw")
    # Cut inside the last page's strips, after its directory: pages 1–2 are intact.
    with pytest.raises(CorruptDocumentError, match=r"^page 3"):
        read_tiff(_cut_inside_last_page(data), max_pages=10, max_pixels=LIMIT)


def _cut_inside_last_page(data: bytes) -> bytes:
    """The last page's compressed strips overwritten with bytes no LZW stream holds; directories intact."""
    img = Image.open(io.BytesIO(data))
    assert isinstance(img, TiffImagePlugin.TiffImageFile)
    img.seek(2)
    offsets, counts = img.tag_v2[273], img.tag_v2[279]  # StripOffsets, StripByteCounts of the last page
    start = min(offsets)
    end = max(o + n for o, n in zip(offsets, counts, strict=True))
    return data[:start] + b"\xff" * (end - start) + data[end:]


def test_a_tiff_whose_header_is_damaged_is_a_corrupt_document() -> None:
    with pytest.raises(CorruptDocumentError):
        read_tiff(b"II*\x00\xff\xff\xff\x7f", max_pages=10, max_pixels=LIMIT)


def test_colour_tiff_pages_keep_their_colour_and_cmyk_is_converted() -> None:
    red = Image.new("RGB", (300, 200), (220, 20, 20))
    buffer = io.BytesIO()
    red.save(buffer, "TIFF", save_all=True, append_images=[Image.new("CMYK", (300, 200), (0, 255, 255, 0))])
    document = read_tiff(buffer.getvalue(), max_pages=10, max_pixels=LIMIT)
    first, second = (decode(p.image.jpeg).convert("RGB").getpixel((150, 100)) for p in document.pages)
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert first[0] > 180 and first[1] < 80
    assert second[0] > 180 and second[1] < 80  # CMYK (0, 255, 255, 0) is red
    assert document.pages[1].image.source_mode == "CMYK"


# --- Sizes and limits.


def test_the_document_budget_is_the_longest_side_of_a_letter_page() -> None:
    assert document_budget(DOCUMENT_LONGEST_SIDE) == DOCUMENT_BUDGET
    assert DOCUMENT_BUDGET.max_side == DOCUMENT_LONGEST_SIDE
    letter_width = math.ceil(DOCUMENT_LONGEST_SIDE * 612 / 792)
    assert DOCUMENT_BUDGET.max_pixels == DOCUMENT_LONGEST_SIDE * letter_width
    # The measured size (benchmarks/render_size.py): more than the `high` budget's pixels, and said so.
    assert DOCUMENT_BUDGET.max_pixels > BUDGETS["high"].max_pixels


@pytest.mark.parametrize("page_size", [(612, 792), (792, 612), (595.28, 841.89), (200, 600), (1000, 1000), (3, 4)])
def test_a_page_renders_to_the_document_budget_after_pdfiums_rounding(page_size: tuple[float, float]) -> None:
    width_pt, height_pt = page_size
    scale = pdf_render_scale(width_pt, height_pt, max_pixels=LIMIT)
    width, height = math.ceil(width_pt * scale), math.ceil(height_pt * scale)  # pypdfium2's bitmap size
    assert max(width, height) <= DOCUMENT_LONGEST_SIDE
    assert width * height <= DOCUMENT_BUDGET.max_pixels
    assert max(width, height) >= DOCUMENT_LONGEST_SIDE - 1 or width * height >= DOCUMENT_BUDGET.max_pixels * 0.99


def test_a_small_page_is_enlarged_and_a_square_one_kept_within_the_pixel_budget() -> None:
    receipt = pdf_render_scale(200, 600, max_pixels=LIMIT)  # a till receipt: enlarged to the longest side
    assert round(600 * receipt) == DOCUMENT_LONGEST_SIDE
    square = pdf_render_scale(1000, 1000, max_pixels=LIMIT)
    assert round(1000 * square) <= math.isqrt(DOCUMENT_BUDGET.max_pixels)
    tiny_limit = pdf_render_scale(612, 792, max_pixels=10_000)
    assert 612 * 792 * tiny_limit**2 <= 10_000 * 1.0001


def test_page_sizes_are_checked_in_points() -> None:
    check_page_size(1, 612, 792, LIMIT, unit="pt")
    with pytest.raises(PageTooLargeError, match=r"^page 4 is 14,400×14,400 pt \(207,360,000 pixels at 72 dpi\)"):
        check_page_size(4, 14400, 14400, LIMIT, unit="pt")
    with pytest.raises(PageTooLargeError, match="50:1"):
        check_page_size(2, 14400, 100, LIMIT, unit="pt")
    with pytest.raises(CorruptDocumentError, match="no area"):
        check_page_size(3, 0, 792, LIMIT, unit="pt")


def test_a_page_within_the_high_budget_is_prepared_like_an_image_at_high_detail() -> None:
    pixels = page(1100, 1400).convert("RGB")  # within both budgets: no resampling on either side
    prepared = prepare_page(pixels, kind="pdf")
    direct = prepare_image(encode(pixels, "PNG"), "high", max_pixels=LIMIT)
    assert prepared.source_format == "PDF" and prepared.source_mode == "RGB"
    assert prepared.jpeg == direct.jpeg  # imaging's encoder, quality and chroma: the same bytes
    assert (prepared.budget, prepared.detail_sent) == ("high", "high")
    assert prepared.document_like is direct.document_like is True


def test_a_busy_page_steps_down_the_quality_ladder_to_stay_under_one_megabyte() -> None:
    noise = Image.effect_noise((1385, 1792), 80).convert("RGB")  # incompressible: the worst case of a page
    prepared = prepare_page(noise, kind="pdf")
    assert prepared.bytes_sent < MAX_BASE64_BYTES
    assert prepared.jpeg_quality < 85 or prepared.sent_width < 1385


def test_a_paletted_page_with_an_icc_profile_is_prepared() -> None:
    from PIL import ImageCms

    pixels = page(600, 800).convert("P")
    pixels.info["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    prepared = prepare_page(pixels, kind="tiff")
    assert prepared.source_mode == "P" and (prepared.sent_width, prepared.sent_height) == (600, 800)


# --- Text layers, page ranges, shapes.


def test_text_layers_are_plain_text() -> None:
    assert clean_text_layer("Invoice 12\r\nTotal: 4.00\r\n") == "Invoice 12\nTotal: 4.00"
    assert clean_text_layer(" \r\n\x00 ") is None
    assert clean_text_layer("") is None
    long = clean_text_layer("x" * (MAX_TEXT_LAYER_CHARS + 10))
    assert long is not None and len(long) == MAX_TEXT_LAYER_CHARS


def test_page_numbers_are_one_based_clipped_and_ordered() -> None:
    assert page_numbers(3, None) == [1, 2, 3]
    assert page_numbers(3, range(2, 3)) == [2]
    assert page_numbers(3, range(0, 10)) == [1, 2, 3]
    assert page_numbers(3, range(5, 9)) == []
    assert page_numbers(0, None) == []


def test_rendered_pages_and_documents_are_frozen_values() -> None:
    document = read_tiff(multipage_tiff(2, (200, 300)), max_pages=10, max_pixels=LIMIT)
    assert isinstance(document, RenderedDocument)
    rendered = document.pages[0]
    assert isinstance(rendered, RenderedPage)
    assert {f.name for f in dataclasses.fields(RenderedPage)} == {
        "number",
        "image",
        "text_layer",
        "width_pt",
        "height_pt",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        rendered.number = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        document.page_count = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("error", "error_type", "permanent"),
    [
        (EncryptedDocumentError, "EncryptedDocument", True),
        (TooManyPagesError, "TooManyPages", True),
        (CorruptDocumentError, "CorruptDocument", True),
        (PageTooLargeError, "PageTooLarge", True),
        (RendererFailedError, "RendererFailed", True),
        (RendererUnavailableError, "RendererUnavailable", False),
    ],
)
def test_document_errors_are_domain_errors(error: type, error_type: str, permanent: bool) -> None:
    instance = error("reason")
    assert instance.error_type == error_type
    assert instance.permanent is permanent
    assert isinstance(instance, PermanentInputError if permanent else TransientError)
    assert instance.message == "reason"
