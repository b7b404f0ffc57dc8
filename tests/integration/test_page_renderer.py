"""The PDF renderer in its child process: pages and text layers, refusals, and a renderer that hangs,
crashes or runs out of memory failing its document only. Integration tier: every test spawns processes."""

from __future__ import annotations

import functools
import io
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image

from devkit.documents import (
    broken_pdf,
    content_bomb_pdf,
    encrypted_pdf,
    image_pdf,
    multipage_tiff,
    oversized_page_pdf,
    pdf_from_objects,
    text_pdf,
)
from sightline.adapters.page_renderer import RENDERER_START_SECONDS, render_document
from sightline.imaging import MAX_BASE64_BYTES
from sightline.pages import (
    DOCUMENT_LONGEST_SIDE,
    CorruptDocumentError,
    EncryptedDocumentError,
    PageTooLargeError,
    RenderedDocument,
    RendererFailedError,
    RendererUnavailableError,
    TooManyPagesError,
)

pytestmark = pytest.mark.integration

LIMITS = {
    "max_pages": 500,
    "max_pixels": 100_000_000,
    "page_seconds": 20.0,
    "document_seconds": 60.0,
    "memory_mb": 1024,
}
THREE_PAGES = [
    ["Invoice 2026-0042", "Bill to: Harbour Street Bakery"],
    ["Item 1: flour, 25 kg sacks x 12"],
    ["Total due within 30 days: 696.48 GBP", "Thank you (really) for your business"],
]
HOOKS = ("SIGHTLINE_RENDER_TEST_HANG", "SIGHTLINE_RENDER_TEST_CRASH", "SIGHTLINE_RENDER_TEST_PAGE_DELAY")


@pytest.fixture(autouse=True)
def _no_test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HOOKS:
        monkeypatch.delenv(name, raising=False)


def render(data: bytes, **overrides: Any) -> RenderedDocument:
    limits: dict[str, Any] = LIMITS | overrides
    return render_document(data, **limits)


@functools.cache
def three_page_pdf() -> bytes:
    return text_pdf(THREE_PAGES)


# --- Pages.


def test_a_text_pdf_renders_every_page_in_order_with_its_text_layer() -> None:
    document = render(three_page_pdf())

    assert document.kind == "pdf"
    assert document.page_count == 3
    assert [p.number for p in document.pages] == [1, 2, 3]
    assert [p.text_layer for p in document.pages] == ["\n".join(lines) for lines in THREE_PAGES]
    for rendered in document.pages:
        image = rendered.image
        assert (rendered.width_pt, rendered.height_pt) == (612.0, 792.0)
        assert image.source_format == "PDF"
        assert image.budget == "high" and image.detail_sent == "high"
        assert image.bytes_sent < MAX_BASE64_BYTES
        sent = Image.open(io.BytesIO(image.jpeg))
        assert sent.format == "JPEG" and sent.size == (image.sent_width, image.sent_height)
        # Letter at the document size: the longest side the measurement chose.
        assert image.sent_height == DOCUMENT_LONGEST_SIDE
        assert image.sent_width == math.ceil(DOCUMENT_LONGEST_SIDE * 612 / 792)
        assert (image.original_width, image.original_height) == (image.sent_width, image.sent_height)


def test_the_rendered_page_shows_the_text_of_that_page() -> None:
    first, _, third = render(three_page_pdf()).pages
    top_left = (0.1, 0.08, 0.6, 0.14)  # where the first line of text is printed, as fractions of the page

    def ink(page_jpeg: bytes) -> int:
        img = Image.open(io.BytesIO(page_jpeg)).convert("L")
        w, h = img.size
        box = img.crop((int(top_left[0] * w), int(top_left[1] * h), int(top_left[2] * w), int(top_left[3] * h)))
        return sum(box.histogram()[:128])

    assert ink(first.image.jpeg) > 500 and ink(third.image.jpeg) > 500
    assert first.image.jpeg != third.image.jpeg


def test_a_rotated_page_is_rendered_as_shown() -> None:
    (rendered,) = render(text_pdf([["Landscape"]], rotate=90)).pages
    assert (rendered.width_pt, rendered.height_pt) == (792.0, 612.0)
    assert (rendered.image.sent_width, rendered.image.sent_height) == (
        DOCUMENT_LONGEST_SIDE,
        math.ceil(DOCUMENT_LONGEST_SIDE * 612 / 792),
    )
    assert rendered.text_layer == "Landscape"


def test_an_image_only_pdf_has_no_text_layer() -> None:
    document = render(image_pdf(2))
    assert document.page_count == 2
    assert [p.text_layer for p in document.pages] == [None, None]
    assert all(p.image.sent_width > 500 for p in document.pages)


def test_a_page_range_renders_only_those_pages() -> None:
    document = render(three_page_pdf(), pages=range(2, 3))
    assert document.page_count == 3
    assert [(p.number, p.text_layer) for p in document.pages] == [(2, "Item 1: flour, 25 kg sacks x 12")]

    assert [p.number for p in render(three_page_pdf(), pages=range(2, 100)).pages] == [2, 3]
    count_only = render(three_page_pdf(), pages=range(0))
    assert count_only.page_count == 3 and count_only.pages == ()


def test_a_multi_page_tiff_goes_through_pillow() -> None:
    document = render(multipage_tiff(3))
    assert document.kind == "tiff" and document.page_count == 3
    assert [p.text_layer for p in document.pages] == [None, None, None]


def test_anything_else_is_not_for_the_renderer() -> None:
    with pytest.raises(ValueError, match="neither"):
        render(b"just text")


# --- Refusals: permanent, with a reason.


def test_an_encrypted_pdf_that_needs_a_password_is_refused() -> None:
    with pytest.raises(EncryptedDocumentError, match="needs a password"):
        render(encrypted_pdf(THREE_PAGES, user_password="s3cret"))


def test_an_encrypted_pdf_with_an_empty_user_password_opens() -> None:
    # Permissions only (a "protected" PDF anyone can read): PDFium opens it and decrypts its text.
    document = render(encrypted_pdf(THREE_PAGES, user_password=""))
    assert [p.text_layer for p in document.pages] == ["\n".join(lines) for lines in THREE_PAGES]


def test_a_pdf_above_the_page_cap_is_refused_before_any_rendering() -> None:
    started = time.monotonic()
    with pytest.raises(TooManyPagesError, match="600 pages, above the limit of 500"):
        render(text_pdf([[]] * 600), page_seconds=3.0)
    assert time.monotonic() - started < 3.0  # 600 pages rendered would take far longer


def test_a_broken_pdf_is_a_corrupt_document() -> None:
    with pytest.raises(CorruptDocumentError, match="damaged or truncated"):
        render(broken_pdf())


def test_an_enormous_page_is_refused_from_its_size() -> None:
    with pytest.raises(PageTooLargeError, match=r"page 1 is 14,400×14,400 pt .* above the limit of 100,000,000"):
        render(oversized_page_pdf(14400))


def test_an_oversized_page_later_in_the_document_fails_before_page_one_renders() -> None:
    # Page sizes are all checked before the first page is rendered; a range that skips the page renders.
    data = _two_sizes_pdf()
    with pytest.raises(PageTooLargeError, match=r"^page 2 "):
        render(data, max_pixels=1_000_000, pages=None)
    assert [p.number for p in render(data, max_pixels=1_000_000, pages=range(1, 2)).pages] == [1]


def _two_sizes_pdf() -> bytes:
    return pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 2000 2000] >>",
        ]
    )


# --- A renderer that misbehaves fails its document, quickly, and nothing else.


def test_a_renderer_that_hangs_is_stopped_at_the_page_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHTLINE_RENDER_TEST_HANG", "2")
    started = time.monotonic()
    with pytest.raises(RendererFailedError, match=r"took longer than 1 s on page 2"):
        render(three_page_pdf(), page_seconds=1.0)
    assert time.monotonic() - started < 1.0 + RENDERER_START_SECONDS / 4


def test_a_document_that_takes_too_long_in_total_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHTLINE_RENDER_TEST_PAGE_DELAY", "0.6")  # each page well within its own limit
    started = time.monotonic()
    with pytest.raises(RendererFailedError, match=r"did not finish the document within 1.5 s \(stopped on page [23],"):
        render(text_pdf([["page"]] * 5), page_seconds=5.0, document_seconds=1.5)
    assert time.monotonic() - started < 1.5 + RENDERER_START_SECONDS / 4


def test_a_renderer_that_crashes_fails_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHTLINE_RENDER_TEST_CRASH", "3")
    with pytest.raises(RendererFailedError, match=r"crashed \(SIGSEGV\) on page 3"):
        render(three_page_pdf())
    monkeypatch.delenv("SIGHTLINE_RENDER_TEST_CRASH")
    assert render(three_page_pdf()).page_count == 3  # the next document is unaffected


def test_a_document_that_exhausts_the_memory_limit_fails_naming_it() -> None:
    with pytest.raises(RendererFailedError, match=r"exceeded its 256 MB memory limit on page 1"):
        render(content_bomb_pdf(300), memory_mb=256)


def test_a_memory_limit_too_small_to_start_is_not_the_documents_fault() -> None:
    with pytest.raises(RendererUnavailableError, match="memory limit"):
        render(three_page_pdf(), memory_mb=40)


def test_concurrent_documents_each_get_their_own_renderer() -> None:
    documents = [text_pdf([[f"Document {n} page {p}"] for p in range(1, 4)]) for n in range(8)]
    threads: set[int] = set()

    def job(index: int) -> list[str | None]:
        threads.add(threading.get_ident())
        return [p.text_layer for p in render(documents[index]).pages]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, range(len(documents))))

    assert results == [[f"Document {n} page {p}" for p in range(1, 4)] for n in range(8)]
    assert len(threads) > 1
