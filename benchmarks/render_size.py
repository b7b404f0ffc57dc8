"""Which size to render document pages at: offline OCR of 8 and 10 pt print, per candidate longest side.

A letter page of Helvetica (a PDF written by hand, with a real text layer) is rendered by PDFium at each
candidate longest side and prepared exactly as a page is sent (`pages.prepare_page`: the `high` budget, the
JPEG ladder). RapidOCR, the repo's offline OCR, reads the prepared JPEG; its character error rate (CER) is
measured against the page's digital text, read back from the PDF's own text layer, line by line (see
`read_line_by_line`). The chosen size is the smallest whose CER is within 2 points of the
digital text at both sizes of print (`sightline.pages.DOCUMENT_LONGEST_SIDE`).

    python -m benchmarks.render_size            # the table (about a minute: OCR of ~440 lines)
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy
import pypdfium2 as pdfium
from PIL import Image, ImageOps
from rapidocr_onnxruntime import RapidOCR

import sightline.pages as pages
from devkit.documents import LETTER, text_pdf
from devkit.legibility import character_error_rate
from devkit.samples import SCAN_LINES
from sightline.imaging import estimate_image_tokens

# olmOCR's size; about our `high` budget's 2,300 tokens; 64 Qwen patches; the `high` budget's longest side.
CANDIDATES = (1288, 1600, 1792, 2048)
REFERENCE = (1024,)  # printed for the shape of the curve, never chosen
POINT_SIZES = (8, 10)
MAX_CER_INCREASE = 0.02  # the bound: within 2 points of the digital text
MARGIN = 54  # points: 3/4 in
# Full-width lines of invoice text (amounts, references, an address), as many as fill the page.
WIDE_LINES = tuple(f"{a}  |  {b}" for a, b in zip(SCAN_LINES, SCAN_LINES[3:] + SCAN_LINES[:3], strict=True))


def page_lines(point_size: int) -> tuple[str, ...]:
    count = int((LETTER[1] - 2 * MARGIN) / (point_size * 1.4))
    return tuple(WIDE_LINES[i % len(WIDE_LINES)] for i in range(count))


def digital_text(data: bytes) -> tuple[str, ...]:
    """The page's text layer, line by line: what a PDF-aware reader gets without OCR."""
    with pdfium.PdfDocument(data) as pdf:
        text = pdf[0].get_textpage().get_text_bounded()
    return tuple(line for line in text.replace("\r\n", "\n").split("\n") if line.strip())


def read_line_by_line(engine: Any, sent: Image.Image, point_size: int, count: int) -> list[str]:
    """OCR each printed line on its own, cut from the page where the PDF we wrote put it.

    RapidOCR's text detector drops whole lines of dense small print at any size (and finds nothing in a
    lone wide line), which would measure the detector; its recogniser alone, on each line, measures what
    this benchmark is about: whether the glyphs are legible at this resolution.
    """
    scale = sent.height / LETTER[1]
    leading = point_size * 1.4
    read: list[str] = []
    for index in range(count):
        baseline = MARGIN + point_size + index * leading  # points from the top (the writer's Td and TL)
        top, bottom = (baseline - 1.0 * point_size) * scale, (baseline + 0.4 * point_size) * scale
        band = sent.crop((0, round(top), sent.width, round(bottom)))
        ink = ImageOps.invert(band.convert("L")).point(lambda level: 255 if level > 40 else 0).getbbox()
        if ink is None:
            read.append("")
            continue
        line = ImageOps.expand(band.crop(ink), border=6, fill="white")
        result, _ = engine(numpy.asarray(line), use_det=False, use_cls=False)
        read.append("".join(text for text, _score in result or []))
    return read


def render(data: bytes) -> Image.Image:
    """The page as the renderer's child renders it, at the budget in force (pages.DOCUMENT_BUDGET)."""
    with pdfium.PdfDocument(data) as pdf:
        page = pdf[0]
        width, height = page.get_size()
        scale = pages.pdf_render_scale(width, height, max_pixels=100_000_000)
        return page.render(scale=scale, fill_color=(255, 255, 255, 255), draw_annots=True).to_pil()


def measure(candidates: Sequence[int]) -> list[dict[str, object]]:
    engine = RapidOCR()  # the offline OCR of devkit/ocr_model.py, its recogniser called directly
    original_budget = pages.DOCUMENT_BUDGET
    rows: list[dict[str, object]] = []
    documents = {pt: text_pdf([page_lines(pt)], font_size=pt, margin=MARGIN) for pt in POINT_SIZES}
    truths = {pt: digital_text(data) for pt, data in documents.items()}
    for pt, truth in truths.items():
        written = "".join(page_lines(pt)).replace(" ", "")
        assert "".join(truth).replace(" ", "") == written, "the text layer is the text written"
    try:
        for side in candidates:
            pages.DOCUMENT_BUDGET = pages.document_budget(side)
            row: dict[str, object] = {"size": side}
            for pt, data in documents.items():
                started = time.perf_counter()
                pixels = render(data)
                prepared = pages.prepare_page(pixels, kind="pdf")
                elapsed = time.perf_counter() - started
                sent = Image.open(io.BytesIO(prepared.jpeg))
                read = read_line_by_line(engine, sent.convert("RGB"), pt, len(truths[pt]))
                row[f"cer{pt}"] = character_error_rate(read, truths[pt])
                row["rendered"] = f"{pixels.width}×{pixels.height}"
                row["sent"] = f"{prepared.sent_width}×{prepared.sent_height}"
                row["tokens"] = estimate_image_tokens(prepared.sent_width, prepared.sent_height)
                row[f"bytes{pt}"] = prepared.bytes_sent
                row[f"ms{pt}"] = elapsed * 1000
            rows.append(row)
    finally:
        pages.DOCUMENT_BUDGET = original_budget
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(CANDIDATES), help="candidate longest sides")
    args = parser.parse_args(argv)
    rows = measure([*REFERENCE, *args.sizes])
    lines = ", ".join(f"{len(page_lines(pt))} lines at {pt} pt" for pt in POINT_SIZES)
    print(
        f"Letter page ({LETTER[0]:g}×{LETTER[1]:g} pt) of Helvetica ({lines}); CER of RapidOCR vs the PDF's text layer"
    )
    print(
        f"{'longest side':>22}  {'rendered':>10}  {'sent':>10}  {'tokens':>6}  {'CER 8 pt':>8}  {'CER 10 pt':>9}  {'base64 B, 8/10 pt':>15}  render+prepare"
    )
    chosen = None
    for row in rows:
        reference = row["size"] in REFERENCE
        label = f"{row['size']} (reference)" if reference else str(row["size"])
        print(
            f"{label:>22}  {row['rendered']!s:>10}  {row['sent']!s:>10}  {row['tokens']:>6,}  "
            f"{row['cer8']:>8.3f}  {row['cer10']:>9.3f}  {row['bytes8']:>7,}/{row['bytes10']:<7,}  {row['ms8']:>5.0f} ms"
        )
        within = all(row[f"cer{pt}"] <= MAX_CER_INCREASE for pt in POINT_SIZES)  # type: ignore[operator]
        if chosen is None and not reference and within:
            chosen = row["size"]
    print(f"smallest size within {MAX_CER_INCREASE * 100:g} CER points of the digital text at 8 and 10 pt: {chosen}")
    print(f"configured: DOCUMENT_LONGEST_SIDE = {pages.DOCUMENT_LONGEST_SIDE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
