"""Deterministic sample files (pure Pillow) for the local demo: good images, a PDF and broken uploads."""

from __future__ import annotations

import email.header
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFilter

from devkit.documents import LETTER, font, text_pdf

__all__ = [
    "CMS_CONTEXT",
    "DOCUMENT_KEY",
    "DOCUMENT_LINES",
    "LOGO_KEY",
    "REPORT_KEY",
    "REPORT_PAGES",
    "SCAN_LINES",
    "Sample",
    "build_samples",
    "document_image",
    "font",
    "report_pdf",
    "scanned_page",
    "write_samples",
]

Expect = Literal["succeeded", "failed"]

# Space, parentheses, non-ASCII and "+" all need care when S3 URL-encodes keys in events.
DOCUMENT_KEY = "inbox/Quarterly report (final) ü+1.png"  # the `documents` profile (prefix inbox/)
LOGO_KEY = "cms/produkte/acme-logo.png"  # the German alt-text profile `cms-de` (prefix cms/)
CMS_CONTEXT = "Produktseite: ACME Espressomaschine „Barista“ – Logo im Seitenkopf"
CMS_CONTEXT_HEADER = email.header.Header(CMS_CONTEXT, "utf-8").encode(maxlinelen=0)  # one line: no folding
DOCUMENT_SIZE = (1000, 1400)
DOCUMENT_LINES: tuple[str, ...] = (
    "Quarterly Report",
    "Northwind Imaging Ltd",
    "Revenue grew 12 percent this quarter",
    "Invoice number 4821",
    "Total due: 1,250.00 EUR",
    "Thank you for your business",
)


@dataclass(frozen=True)
class Sample:
    """One demo object: its S3 key, bytes, declared content type and the expected pipeline outcome."""

    key: str
    body: bytes
    content_type: str
    expect: Expect
    text: str = ""  # Text drawn into the image, one line per "\n" (ground truth for OCR).
    metadata: dict[str, str] = field(default_factory=dict)  # S3 user metadata (x-amz-meta-…)


def document_image(lines: tuple[str, ...] = DOCUMENT_LINES, size: tuple[int, int] = DOCUMENT_SIZE) -> Image.Image:
    """A white page with a title and lines of clear black text."""
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    y = 140
    for index, line in enumerate(lines):
        line_font = font(60 if index == 0 else 44)
        draw.text((90, y), line, fill=(20, 20, 20), font=line_font)
        y += 130 if index == 0 else 95
    # A rule and a faint footer box make it look like a scanned form, not just text.
    draw.line((90, 250, size[0] - 90, 250), fill=(120, 120, 120), width=3)
    draw.rectangle((90, size[1] - 220, size[0] - 90, size[1] - 120), outline=(170, 170, 170), width=2)
    return page


REPORT_KEY = "documents/quarterly-report.pdf"  # the `documents` profile (prefix documents/), task document
# Three letter pages, a heading and eight lines each, different on every page: text to OCR and to summarise.
REPORT_PAGES: tuple[tuple[str, ...], ...] = (
    (
        "Quarterly Report: Third Quarter 2026",
        "Northwind Imaging Ltd, 40 Harbour Lane, Leith",
        "Prepared for the board meeting of 12 October",
        "Revenue for the quarter was 4.82 million EUR",
        "This is 12 percent more than in the second quarter",
        "Orders from hospitals grew fastest, by 21 percent",
        "Gross margin held steady at 38 percent",
        "Operating costs rose by 3 percent to 2.1 million",
        "Cash at the end of September: 1.65 million EUR",
    ),
    (
        "Products and Customers",
        "The X-40 scanner shipped to 14 new customers",
        "Average delivery time fell from 9 to 6 days",
        "Support tickets per customer dropped by a third",
        "Two distributors signed in Norway and Portugal",
        "The largest order, from Lothian Health, was 410,000 EUR",
        "Returns stayed below 1 percent of units sold",
        "Customer satisfaction survey score: 8.7 out of 10",
        "The service contract renewal rate reached 94 percent",
    ),
    (
        "Outlook and Risks",
        "We expect fourth quarter revenue of 5.1 million EUR",
        "Hiring plan: six engineers and two sales staff",
        "The new factory line opens in February 2027",
        "Component prices may rise by up to 8 percent",
        "Currency risk is hedged until the end of June",
        "Invoice 2026-3307 remains unpaid after 60 days",
        "The board is asked to approve the 2027 budget",
        "Signed: Morag Lindsay, Chief Financial Officer",
    ),
)
REPORT_BODY_PT = 16  # 36 px at 1792 px for the letter page's 792 pt: clearly legible to OCR
REPORT_HEADING_PT = 22


def report_pdf(pages: tuple[tuple[str, ...], ...] = REPORT_PAGES) -> bytes:
    """A letter-sized PDF of Helvetica text, one heading and eight lines a page, with a real text layer."""
    return text_pdf(pages, font_size=REPORT_BODY_PT, heading_size=REPORT_HEADING_PT, page_size=LETTER)


# An invoice with digits, punctuation and mixed case: the text a document-intake user needs verbatim.
SCAN_LINES: tuple[str, ...] = (
    "Invoice 2026-1187 issued on 14 November 2026",
    "Bill to: Harbour Street Bakery, 12 Quay Road, Leith",
    "Item 1: flour, 25 kg sacks x 12 at 18.40 each",
    "Item 2: unsalted butter, 10 kg blocks x 6 at 54.10",
    "Item 3: delivery and handling surcharge 35.00",
    "Subtotal 580.40  VAT 20 percent 116.08",
    "Total due within 30 days: 696.48 GBP",
    "Payment reference HSB-7781, sort code 80-22-60",
    "Questions? accounts@northwind.example or 0131 496 0000",
    "Thank you for your continued business with us",
)


def scanned_page(text_px: int = 40, lines: tuple[str, ...] = SCAN_LINES) -> Image.Image:
    """An A4 page scanned at 300 dpi (2480×3508): grey-tinted paper, sensor noise, slight blur.

    40 px text is about 10 pt print at 300 dpi; 33 px about 8 pt.
    """
    size = (2480, 3508)
    page = Image.new("L", size, 246)
    draw = ImageDraw.Draw(page)
    line_font = font(text_px)
    for index, line in enumerate(lines):
        draw.text((220, 300 + index * int(text_px * 2.2)), line, fill=25, font=line_font)
    noisy = Image.blend(page, Image.effect_noise(size, 10), 0.06)
    return noisy.filter(ImageFilter.GaussianBlur(0.6)).convert("RGB")


def _png(image: Image.Image) -> bytes:
    out = BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _jpeg(image: Image.Image, **params: object) -> bytes:
    out = BytesIO()
    image.save(out, format="JPEG", quality=90, **params)
    return out.getvalue()


def _transparent_logo() -> Image.Image:
    logo = Image.new("RGBA", (640, 320), (0, 0, 0, 0))
    draw = ImageDraw.Draw(logo)
    draw.ellipse((30, 40, 270, 280), fill=(230, 90, 30, 255))
    draw.rounded_rectangle((110, 120, 190, 200), radius=18, fill=(255, 255, 255, 200))
    draw.text((300, 115), "ACME", fill=(30, 60, 160, 255), font=font(96))
    return logo


def _upright_portrait() -> Image.Image:
    """The scene as it should be displayed: an arrow pointing up with TOP above it."""
    width, height = 600, 800
    image = Image.new("RGB", (width, height), (235, 240, 250))
    draw = ImageDraw.Draw(image)
    draw.text((width // 2, 90), "TOP", fill=(200, 30, 30), font=font(110), anchor="mm")
    centre = width // 2
    draw.polygon([(centre, 190), (centre - 150, 400), (centre + 150, 400)], fill=(40, 110, 60))
    draw.rectangle((centre - 55, 400, centre + 55, 700), fill=(40, 110, 60))
    draw.text((width // 2, 750), "bottom", fill=(90, 90, 90), font=font(40), anchor="mm")
    return image


def _exif_rotated_jpeg() -> bytes:
    # Orientation 6 means "rotate 90 degrees clockwise to display", so store the upright
    # scene rotated 90 degrees counter-clockwise: landscape pixels, portrait when shown.
    stored = _upright_portrait().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(stored, exif=exif)


def _sunset() -> Image.Image:
    width, height = 1200, 800
    sky = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(sky)
    horizon = int(height * 0.62)
    for y in range(horizon):
        t = y / horizon
        draw.line((0, y, width, y), fill=(int(60 + 195 * t), int(40 + 110 * t), int(120 - 60 * t)))
    draw.ellipse((760, horizon - 170, 1000, horizon + 70), fill=(255, 200, 90))
    # The sea is drawn after the sun so the sun sets behind the horizon.
    for y in range(horizon, height):
        t = (y - horizon) / (height - horizon)
        draw.line((0, y, width, y), fill=(int(40 - 20 * t), int(50 - 20 * t), int(90 - 40 * t)))
    for i, y in enumerate(range(horizon + 20, height - 40, 28)):
        half = max(8, 110 - 9 * i)
        draw.line((880 - half, y, 880 + half, y), fill=(240, 170, 90), width=4)
    draw.polygon([(0, horizon), (220, 330), (430, horizon)], fill=(50, 40, 70))
    draw.polygon([(300, horizon), (560, 280), (820, horizon)], fill=(70, 50, 80))
    draw.rectangle((0, horizon, width, horizon + 6), fill=(255, 170, 80))
    return sky


_NOT_AN_IMAGE = (
    b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n"
    b"<body><h1>Forbidden</h1><p>You don't have permission to access this resource.</p></body></html>\n"
)


def build_samples() -> list[Sample]:
    """All demo samples, built in memory; the same bytes on every call."""
    logo = _transparent_logo()
    return [
        Sample(DOCUMENT_KEY, _png(document_image()), "image/png", "succeeded", "\n".join(DOCUMENT_LINES)),
        Sample(
            LOGO_KEY,
            _png(logo),
            "image/png",
            "succeeded",
            "ACME",
            # What a CMS knows about where the image is used; non-ASCII as RFC 2047, as S3 metadata must be ASCII.
            metadata={"sightline-context": CMS_CONTEXT_HEADER},
        ),
        Sample("photos/rotated-exif.jpg", _exif_rotated_jpeg(), "image/jpeg", "succeeded", "TOP\nbottom"),
        Sample("photos/sunset.JPG", _jpeg(_sunset()), "image/jpeg", "succeeded"),
        # A 3-page PDF: pages rendered and read two at a time, then one summary over the assembled text.
        Sample(
            REPORT_KEY,
            report_pdf(),
            "application/pdf",
            "succeeded",
            "\n".join(line for page in REPORT_PAGES for line in page),
        ),
        Sample("photos/not-really.jpg", _NOT_AN_IMAGE, "image/jpeg", "failed"),
        Sample("photos/empty.png", b"", "image/png", "failed"),
    ]


def upload_sample(s3: Any, bucket: str, sample: Sample) -> None:
    """Put a sample into the bucket with its content type and user metadata, as a client would upload it."""
    s3.put_object(
        Bucket=bucket, Key=sample.key, Body=sample.body, ContentType=sample.content_type, Metadata=sample.metadata
    )


def write_samples(directory: Path) -> list[Path]:
    """Write every sample under `directory` at its key's path and return the paths."""
    directory = Path(directory)
    paths: list[Path] = []
    for sample in build_samples():
        path = directory / sample.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sample.body)
        paths.append(path)
    return paths
