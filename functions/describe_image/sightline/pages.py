"""Documents as pages: recognise a PDF or a multi-page TIFF from its bytes, and prepare each page for the model.

Pure: no AWS, no network, no subprocess. The PDF renderer (PDFium) runs in a child process, in
`sightline.adapters.page_renderer`; the multi-page TIFF path is here, in process, through Pillow, as a
single-page TIFF is in `sightline.imaging`.

Every page, rendered or decoded, is prepared by imaging's own steps (pixel conversion, ICC to sRGB, the JPEG
encoder and its quality ladder, the 1 MB payload bound) at the document budget below, and sent at detail
`high`. Every refusal is a permanent error of this module (or of `sightline.errors`).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from sightline.errors import (
    CorruptImageError,
    ImageTooLargeError,
    PermanentInputError,
    TransientError,
)

# Private helpers of imaging.py are used on purpose, so that a page is prepared by exactly the code an image
# is (pixel conversion, sizing, the refusal messages), never by a copy of it.
from sightline.imaging import (
    MAX_ASPECT_RATIO,
    PixelBudget,
    PreparedImage,
    _check_dimensions,
    _convert_icc_to_srgb,
    _image_signature,
    _reason,
    _to_rgb_or_l,
    fit_and_encode,
    looks_like_document,
)

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DOCUMENT_BUDGET",
    "DOCUMENT_LONGEST_SIDE",
    "MAX_TEXT_LAYER_CHARS",
    "CorruptDocumentError",
    "DocumentKind",
    "EncryptedDocumentError",
    "PageTooLargeError",
    "RenderedDocument",
    "RenderedPage",
    "RendererFailedError",
    "RendererUnavailableError",
    "TooManyPagesError",
    "check_page_size",
    "clean_text_layer",
    "document_budget",
    "document_kind",
    "page_numbers",
    "pdf_render_scale",
    "prepare_page",
    "read_tiff",
]

DocumentKind = Literal["pdf", "tiff"]

#: Documents with more pages are refused before any page is rendered or decoded (a setting; this is its default).
DEFAULT_MAX_PAGES = 500

#: The longest side, in pixels, a document page is rendered (PDF) or scaled down (TIFF) to. Measured with
#: `python -m benchmarks.render_size`: a letter page full of Helvetica (61 lines at 8 pt, 48 at 10 pt) is
#: rendered by PDFium at each size and prepared as sent; RapidOCR's recogniser reads it line by line, and its
#: character error rate (CER) is taken against the PDF's own text layer:
#:
#:   longest side   sent        ≈ tokens   CER 8 pt   CER 10 pt   base64 (8 / 10 pt)
#:   1288 (olmOCR)  996×1288    1,656      16.1 %     2.1 %       464 / 502 KB
#:   1600           1237×1600   2,610       4.3 %     0.1 %       653 / 686 KB
#:   1792           1385×1792   3,200       1.0 %     0.0 %       763 / 800 KB
#:   2048           1583×2048   4,218       0.0 %     0.2 %       928 / 967 KB
#:
#: 1792 px (64 Qwen2.5-VL patches of 28 px) is the smallest size within 2 CER points of the digital text at
#: both 8 and 10 pt. What limits small print below it is the JPEG at quality 85 as much as the pixels: the
#: same renders read unencoded reach about 0.5 % at 1600 px. It costs ~3,200 image tokens a letter page, above the
#: `high` budget's ~2,300 (1,183×1,530 for letter), which legible 8 pt print does not fit in.
DOCUMENT_LONGEST_SIDE = 1792


def document_budget(longest_side: int) -> PixelBudget:
    """The pixels of a page: `longest_side` for a letter-shaped page, and never more pixels than that letter
    page has (a square page is not billed more tokens than a letter page)."""
    letter_width = math.ceil(longest_side * 612 / 792)
    return PixelBudget("high", max_side=longest_side, max_pixels=longest_side * letter_width)


#: The budget every page is sized to (PreparedImage.budget says "high": pages are sent with detail=high).
DOCUMENT_BUDGET = document_budget(DOCUMENT_LONGEST_SIDE)

#: A page's text layer is cut at this many characters (a dense page of print holds about 6,000).
MAX_TEXT_LAYER_CHARS = 100_000

# How a prepared page says where it came from (PreparedImage.source_format).
_SOURCE_FORMATS: dict[DocumentKind, str] = {"pdf": "PDF", "tiff": "TIFF"}


# --- The domain's refusals of documents. Defined here, beside the code that raises them.


class EncryptedDocumentError(PermanentInputError):
    """The PDF needs a password to open (or uses a security handler PDFium does not support)."""

    error_type = "EncryptedDocument"


class TooManyPagesError(PermanentInputError):
    """More pages than the page cap: refused from the page count, before any page is rendered."""

    error_type = "TooManyPages"


class CorruptDocumentError(PermanentInputError):
    """The PDF (or a TIFF page) cannot be parsed: truncated, damaged, or not what its header says."""

    error_type = "CorruptDocument"


class PageTooLargeError(PermanentInputError):
    """A page larger than the pixel limit, or of an absurd shape: refused from its size, before rendering."""

    error_type = "PageTooLarge"


class RendererFailedError(PermanentInputError):
    """The PDF renderer crashed, hung or ran out of memory on this document. Permanent for the document: the
    same bytes would do the same again; the function and the other records of the batch are unaffected."""

    error_type = "RendererFailed"


class RendererUnavailableError(TransientError):
    """The renderer could not be started at all (no process, no pypdfium2, too little memory to start).

    Not the document's fault: retried, then dead-lettered, like any configuration problem.
    """

    error_type = "RendererUnavailable"


# --- What comes out.


@dataclass(frozen=True)
class RenderedPage:
    number: int  # 1-based, in the document's order
    image: PreparedImage  # prepared at the document budget (budget "high"); original_* is the page's raster size
    text_layer: str | None  # the PDF's own text on this page; None for a page without text, and for TIFF pages
    width_pt: float | None = None  # PDF pages: the page's size in points (1/72 in), as displayed (rotation applied)
    height_pt: float | None = None


@dataclass(frozen=True)
class RenderedDocument:
    kind: DocumentKind
    page_count: int  # pages in the document, not only the ones rendered
    pages: tuple[RenderedPage, ...]  # the requested pages, in order


# --- Recognising a document from its bytes.


def document_kind(data: bytes) -> DocumentKind | None:
    """'pdf', 'tiff' (a TIFF of more than one page) or None (anything else: an image, or not ours).

    The same order as imaging.py: an image's own signature wins, so a JPEG whose metadata happens to
    contain "%PDF-" stays an image; otherwise a "%PDF-" header anywhere in the first kilobyte (readers
    accept leading junk) makes a PDF. A single-page TIFF is an image and stays on the image path.
    """
    signature = _image_signature(data)
    if signature == "TIFF":
        try:
            with Image.open(io.BytesIO(data), formats=("TIFF",)) as img:
                return "tiff" if _count_frames(img, 1) > 1 else None
        except Exception:  # a damaged TIFF is the image path's to refuse, with its own words
            return None
    if signature is None and b"%PDF-" in data[:1024]:
        return "pdf"
    return None


def _count_frames(img: Image.Image, limit: int) -> int:
    """The number of pages of a TIFF, counting no further than limit + 1.

    Never `n_frames` on untrusted input: it walks the whole IFD chain, and a small file can hold millions
    of empty IFDs. One page at a time, because Pillow miscounts when a seek jumps past the end (it records
    the requested frame + 1 as the frame count). Pillow stops a chain that loops back on itself.
    """
    count = 1
    try:
        while count <= limit:
            try:
                img.seek(count)
            except EOFError:
                break
            count += 1
    finally:
        with contextlib.suppress(Exception):
            img.seek(0)
    return count


def page_numbers(page_count: int, pages: range | None) -> list[int]:
    """The 1-based page numbers to render: all of them, or those of `pages` the document has, in order.

    A range past the end is clipped (a fan-out of fixed-size ranges needs no page count first), and an
    empty range renders nothing: a cheap way to learn the page count and run the refusals.
    """
    if pages is None:
        return list(range(1, page_count + 1))
    return sorted({number for number in pages if 1 <= number <= page_count})


# --- A page's pixels to a prepared image.


def pdf_render_scale(width_pt: float, height_pt: float, *, max_pixels: int) -> float:
    """Pixels per point that render a page of this size to the document budget.

    The longest side becomes DOCUMENT_LONGEST_SIDE (small pages are enlarged, large ones reduced), within
    the budget's pixel count, and never more pixels than `max_pixels`.
    """
    area = width_pt * height_pt
    most = min(DOCUMENT_BUDGET.max_pixels, max_pixels)
    scale = min(DOCUMENT_BUDGET.max_side / max(width_pt, height_pt), math.sqrt(most / area))
    # PDFium's bitmap is ceil(side × scale) pixels: keep the rounded-up size within the bounds too, giving up
    # first a float's rounding error (1600.0000000000002 px), then up to a row or a column.
    step = 1e-12
    while (
        math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > most
        or math.ceil(max(width_pt, height_pt) * scale) > DOCUMENT_BUDGET.max_side
    ):
        scale *= 1 - step
        step = min(step * 10, 1e-3)
    return scale


def check_page_size(number: int, width: float, height: float, max_pixels: int, *, unit: str) -> None:
    """Refuse a page by its size before it is rendered or decoded: PageTooLarge or CorruptDocument.

    For a PDF page the pixels are counted at 72 dpi (one pixel a point): a 14,400 pt square page, the
    largest PDF allows, is 207 million of them.
    """
    if not (width > 0 and height > 0) or not (math.isfinite(width) and math.isfinite(height)):
        raise CorruptDocumentError(f"page {number} has no area ({width:g}×{height:g} {unit})")
    pixels = width * height
    if pixels > max_pixels:
        raise PageTooLargeError(
            f"page {number} is {width:,.0f}×{height:,.0f} {unit} ({pixels:,.0f} pixels"
            f"{' at 72 dpi' if unit == 'pt' else ''}), above the limit of {max_pixels:,}"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise PageTooLargeError(
            f"page {number} is {width:,.0f}×{height:,.0f} {unit}: shapes longer than {MAX_ASPECT_RATIO}:1 are refused"
        )


def prepare_page(pixels: Image.Image, *, kind: DocumentKind) -> PreparedImage:
    """A page's decoded pixels (any Pillow mode) → a JPEG payload under 1 MB of base64, at the document budget.

    imaging's own steps: the conversion to 8-bit RGB or L (a fax's 1-bit page is not shrunk by nearest
    neighbour), ICC to sRGB, document detection (recorded only), then `fit_and_encode` as for a document-like
    image (Lanczos, 4:4:4 chroma, quality given up before pixels), always, since a page is a document.
    `prepare_image` itself cannot be reused here: it caps every image at the `high` budget's pixel count, and
    legible 8 pt print needs more (see DOCUMENT_LONGEST_SIDE).
    The page's size was checked (max_pixels) before it was rendered or decoded.
    """
    source_mode = pixels.mode
    original = pixels.size
    try:
        converted = _to_rgb_or_l(pixels)
    except (ValueError, OSError) as exc:  # a mode or palette Pillow cannot convert
        raise CorruptImageError(f"the page's pixels cannot be converted to RGB ({_reason(exc)})") from None
    if source_mode != "CMYK":  # CMYK was converted with its profile already
        converted = _convert_icc_to_srgb(converted, pixels.info.get("icc_profile"))
    document_like = looks_like_document(converted)
    resized, jpeg, quality = fit_and_encode(converted, DOCUMENT_BUDGET, as_document=True)
    return PreparedImage(
        jpeg=jpeg,
        source_format=_SOURCE_FORMATS[kind],
        source_mode=source_mode,
        original_width=original[0],
        original_height=original[1],
        sent_width=resized.width,
        sent_height=resized.height,
        jpeg_quality=quality,
        budget="high",
        detail_sent="high",
        document_like=document_like,
        orientation=1,  # PDFium applies /Rotate; Pillow applies a TIFF page's orientation when it decodes it
    )


def clean_text_layer(text: str) -> str | None:
    """PDFium's page text → plain text: lines joined by \\n, no NULs, cut at MAX_TEXT_LAYER_CHARS; None if empty."""
    cleaned = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()
    return cleaned[:MAX_TEXT_LAYER_CHARS] or None


# --- Multi-page TIFF: every page through Pillow, in process.


def read_tiff(data: bytes, *, max_pages: int, max_pixels: int, pages: range | None = None) -> RenderedDocument:
    """Every page (or the requested ones) of a multi-page TIFF, prepared at the document budget.

    Pillow has no page cap of its own: the page count is checked against `max_pages` by walking the IFD
    chain one page at a time, at most max_pages + 1 of them, before any page is decoded. Each page's size is checked from its
    header (the image limits: `max_pixels`, sides, shape) before it is decoded.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=("TIFF",))
    except Image.DecompressionBombError:
        raise PageTooLargeError("page 1 has more pixels than can be decoded safely") from None
    except Exception as exc:
        raise CorruptDocumentError(f"the TIFF's header cannot be read ({_reason(exc)})") from None
    with img:
        try:
            page_count = _count_frames(img, max_pages)
            if page_count > max_pages:
                raise TooManyPagesError(f"the TIFF has more than {max_pages:,} pages, the limit; none was decoded")
        except PermanentInputError:
            raise
        except Exception as exc:
            raise CorruptDocumentError(f"the TIFF's page directory is damaged ({_reason(exc)})") from None
        rendered = tuple(_tiff_page(img, number, max_pixels) for number in page_numbers(page_count, pages))
    return RenderedDocument(kind="tiff", page_count=page_count, pages=rendered)


def _tiff_page(img: Image.Image, number: int, max_pixels: int) -> RenderedPage:
    try:
        img.seek(number - 1)
    except Exception as exc:
        raise CorruptDocumentError(f"page {number} of the TIFF cannot be read ({_reason(exc)})") from None
    try:
        _check_dimensions(img.width, img.height, max_pixels)
    except ImageTooLargeError as exc:
        raise PageTooLargeError(f"page {number}: {exc.message}") from None
    except CorruptImageError as exc:
        raise CorruptDocumentError(f"page {number}: {exc.message}") from None
    try:
        img.load()
    except Image.DecompressionBombError:
        raise PageTooLargeError(f"page {number} has more pixels than can be decoded safely") from None
    except MemoryError:
        raise PageTooLargeError(f"page {number} needs more memory to decode than is available") from None
    except Exception as exc:  # as in imaging: any decoder failure is the file's
        raise CorruptDocumentError(f"page {number} of the TIFF is truncated or corrupt ({_reason(exc)})") from None
    try:
        prepared = prepare_page(img, kind="tiff")
    except ImageTooLargeError as exc:
        raise PageTooLargeError(f"page {number}: {exc.message}") from None
    except (CorruptImageError, ValueError, OSError) as exc:
        raise CorruptDocumentError(f"page {number} of the TIFF cannot be converted ({_reason(exc)})") from None
    return RenderedPage(number=number, image=prepared, text_layer=None)
