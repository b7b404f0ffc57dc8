"""Text stays legible: offline OCR reads a `high` preparation of a scanned page as well as the original."""

from __future__ import annotations

import functools
import io

import pytest
from PIL import Image

from devkit.legibility import character_error_rate
from devkit.ocr_model import OcrResponder
from devkit.samples import SCAN_LINES, scanned_page
from sightline.imaging import prepare_image

pytestmark = pytest.mark.integration

# The bound: the prepared page's character error rate within 2 points of the original's.
MAX_CER_INCREASE = 0.02


@functools.cache
def ocr() -> OcrResponder:
    engine = OcrResponder()
    engine.warm_up()
    return engine


@functools.cache
def scan_and_its_cer(text_px: int) -> tuple[bytes, float]:
    """The scanned page as a camera/scanner JPEG, and the CER of OCR on the full-resolution original."""
    page = scanned_page(text_px)
    original = io.BytesIO()
    page.save(original, "JPEG", quality=92)
    return original.getvalue(), character_error_rate(ocr().read_lines(page), SCAN_LINES)


@pytest.mark.parametrize("text_px", [40, 33], ids=["10pt", "8pt"])
@pytest.mark.parametrize("detail", ["high", "auto"])
def test_prepared_scan_reads_as_well_as_the_original(text_px: int, detail: str) -> None:
    original, original_cer = scan_and_its_cer(text_px)
    prepared = prepare_image(original, detail, max_pixels=100_000_000)
    assert prepared.budget == "high", "a scanned page must get the high budget, also under auto"

    prepared_cer = character_error_rate(ocr().read_lines(Image.open(io.BytesIO(prepared.jpeg))), SCAN_LINES)

    print(
        f"{text_px}px {detail}: CER original {original_cer:.3f}, prepared {prepared_cer:.3f}, {prepared.bytes_sent:,} B"
    )
    assert prepared_cer - original_cer <= MAX_CER_INCREASE
