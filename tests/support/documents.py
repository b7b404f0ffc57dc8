"""PDF and multi-page TIFF factories for the tests; they live in devkit/documents.py, which `make run` uses too."""

from __future__ import annotations

from devkit.documents import (
    LETTER,
    MARKER_SIDE,
    broken_pdf,
    content_bomb_pdf,
    encrypted_pdf,
    font,
    image_pdf,
    many_page_tiff,
    multipage_tiff,
    oversized_page_pdf,
    page_marker,
    pdf_from_objects,
    text_pdf,
)

__all__ = [
    "LETTER",
    "MARKER_SIDE",
    "broken_pdf",
    "content_bomb_pdf",
    "encrypted_pdf",
    "font",
    "image_pdf",
    "many_page_tiff",
    "multipage_tiff",
    "oversized_page_pdf",
    "page_marker",
    "pdf_from_objects",
    "text_pdf",
]
