"""PDF and multi-page TIFF factories for the demo and the tests: deterministic, in memory, nothing beyond Pillow.

PDFs with a text layer are written by hand (PDF 1.4 syntax, Helvetica `Tj` text objects, a classic
cross-reference table with exact byte offsets), so the tests know exactly what text each page holds.
The encrypted PDF uses the standard security handler, revision 2 (40-bit RC4), written by hand from
the algorithms of ISO 32000-1 §7.6.3 (algorithms 2, 3 and 4): pypdfium2 cannot encrypt, and a real
/Encrypt dictionary with a user password is what makes PDFium answer "incorrect password" (it
checks /U on load), exactly as for a document a person protected.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

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

LETTER = (612.0, 792.0)  # US letter in points (1/72 in)


def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font, so output is identical on every machine with this Pillow."""
    return ImageFont.load_default(size=size)  # type: ignore[return-value]


# --- Writing PDF syntax by hand.


def _literal(text: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252), the encoding the Helvetica font dictionary declares."""
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< " + dictionary + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def pdf_from_objects(objects: Sequence[bytes], *, trailer_extra: bytes = b"") -> bytes:
    """A complete PDF from numbered object bodies (object 1 must be the catalog), with an exact xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the binary comment marks the file as binary for transfer tools
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n" % (len(objects) + 1))
    out.write(b"0000000000 65535 f \n")
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R %s>>\n" % (len(objects) + 1, trailer_extra))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def _text_content(
    lines: Sequence[str],
    font_size: float,
    page_size: tuple[float, float],
    margin: float,
    heading_size: float | None = None,
) -> bytes:
    """Lines of text from the top-left margin down; with `heading_size`, the first line is set that large."""
    first_size = heading_size or font_size
    top = page_size[1] - margin - first_size
    parts = [b"BT /F1 %g Tf %g TL %g %g Td" % (first_size, first_size * 1.4, margin, top)]
    for index, line in enumerate(lines):
        if index == 1 and heading_size:  # a heading's line feed, then the body size and leading
            parts.append(b"T* /F1 %g Tf %g TL" % (font_size, font_size * 1.4))
            parts.append(_literal(line) + b" Tj")
        else:
            parts.append((b"" if index == 0 else b"T* ") + _literal(line) + b" Tj")
    parts.append(b"ET")
    return b"\n".join(parts) if lines else b""


def _page_objects(
    pages: Sequence[Sequence[str]],
    font_size: float,
    page_size: tuple[float, float],
    margin: float,
    first: int,
    rotate: int = 0,
    heading_size: float | None = None,
) -> tuple[list[bytes], list[int]]:
    """Page and content objects numbered from `first`; font is object 3. Returns (objects, page numbers)."""
    objects: list[bytes] = []
    page_refs = []
    for index, lines in enumerate(pages):
        page_number = first + 2 * index
        page_refs.append(page_number)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] /Rotate %d /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % (page_size[0], page_size[1], rotate, page_number + 1)
        )
        objects.append(_stream(b"", _text_content(lines, font_size, page_size, margin, heading_size)))
    return objects, page_refs


def _document(page_objects: list[bytes], page_refs: list[int]) -> list[bytes]:
    kids = b" ".join(b"%d 0 R" % ref for ref in page_refs)
    return [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_refs)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        *page_objects,
    ]


def text_pdf(
    pages: Sequence[Sequence[str]],
    *,
    font_size: float = 12,
    page_size: tuple[float, float] = LETTER,
    margin: float = 72,
    rotate: int = 0,
    heading_size: float | None = None,
) -> bytes:
    """A PDF whose page i shows pages[i] as lines of Helvetica text: a real text layer, no images.

    An empty list of lines gives an empty page (the 600-page document is 600 of those). `rotate` sets every
    page's /Rotate (degrees clockwise when shown). With `heading_size`, each page's first line is a heading
    set in that size.
    """
    page_objects, page_refs = _page_objects(
        pages, font_size, page_size, margin, first=4, rotate=rotate, heading_size=heading_size
    )
    return pdf_from_objects(_document(page_objects, page_refs))


def oversized_page_pdf(side: float = 14400) -> bytes:
    """One page of side × side points: 14,400 pt (200 in, 5.08 m) is the largest page PDF 1.x allows."""
    return text_pdf([["A page the size of a billboard"]], page_size=(side, side))


def content_bomb_pdf(megabytes: int = 300) -> bytes:
    """One letter page whose content stream deflates from ~300 KB to `megabytes` MB of blanks.

    PDFium inflates a page's whole content stream when it loads the page, whatever the render size, so
    this valid PDF needs more memory than a small limit allows: the memory-limit case. (A huge image
    XObject is no such bomb: PDFium decodes images scaled down, row by row.)
    """
    compressor = zlib.compressobj(1)
    blanks = b" " * (1 << 20)
    stream = b"".join(compressor.compress(blanks) for _ in range(megabytes)) + compressor.compress(b"BT ET")
    stream += compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        _stream(b"/Filter /FlateDecode", stream),
    ]
    return pdf_from_objects(objects)


def broken_pdf() -> bytes:
    """A PDF cut off after its header and half its catalog: no object PDFium can rebuild a document from."""
    return text_pdf([["This text never arrives"]])[:40]


# --- The standard security handler, revision 2 (RC4, 40-bit key), by hand.

_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _pad(password: str) -> bytes:
    return (password.encode("latin-1") + _PASSWORD_PAD)[:32]


def encrypted_pdf(pages: Sequence[Sequence[str]], *, user_password: str, owner_password: str = "owner") -> bytes:
    """A text PDF encrypted with the standard security handler (V1, R2, RC4 40-bit).

    With a non-empty user password, PDFium needs that password to open it (FPDF_ERR_PASSWORD); with an
    empty one it opens like any PDF (only permissions are restricted), as real "protected" PDFs do.
    Strings and streams are encrypted with each object's own key, so the password really unlocks the text.
    """
    permissions = -44  # print and copy allowed, the rest refused: a typical value
    file_id = hashlib.md5(b"sightline-test-document").digest()
    owner_key = hashlib.md5(_pad(owner_password or user_password)).digest()[:5]  # algorithm 3
    o_entry = _rc4(owner_key, _pad(user_password))
    key = hashlib.md5(_pad(user_password) + o_entry + struct.pack("<i", permissions) + file_id).digest()[:5]  # alg. 2
    u_entry = _rc4(key, _PASSWORD_PAD)  # algorithm 4

    def object_key(number: int) -> bytes:
        return hashlib.md5(key + number.to_bytes(3, "little") + (0).to_bytes(2, "little")).digest()[:10]

    page_objects, page_refs = _page_objects(pages, 12, LETTER, 72, first=4)
    objects = _document(page_objects, page_refs)
    for index, ref in enumerate(page_refs):  # the content streams follow their pages
        content_number = ref + 1
        plain = _text_content(pages[index], 12, LETTER, 72)
        objects[content_number - 1] = _stream(b"", _rc4(object_key(content_number), plain))
    encrypt_number = len(objects) + 1
    objects.append(
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (o_entry.hex().encode(), u_entry.hex().encode(), permissions)
    )
    file_id_hex = file_id.hex().encode()
    return pdf_from_objects(
        objects, trailer_extra=b"/Encrypt %d 0 R /ID [<%s> <%s>] " % (encrypt_number, file_id_hex, file_id_hex)
    )


# --- Raster documents through Pillow.


def _scan(number: int, size: tuple[int, int], mode: str = "L") -> Image.Image:
    """A page image showing its own number in large print."""
    page = Image.new(mode, size, "white" if mode != "1" else 1)
    draw = ImageDraw.Draw(page)
    draw.text((size[0] // 10, size[1] // 10), f"Page {number}", fill="black" if mode != "1" else 0, font=font(60))
    ink = "black" if mode != "1" else 0
    for row in range(8):
        y = size[1] // 4 + row * size[1] // 12
        draw.text((size[0] // 10, y), f"Line {row + 1} of page {number}", fill=ink, font=font(32))
    left, top = page_marker(number, size)
    draw.rectangle((left, top, left + MARKER_SIDE, top + MARKER_SIDE), fill=ink)
    return page


MARKER_SIDE = 40


def page_marker(number: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the black square that says which page this is (it moves right page by page)."""
    return 40 + (number - 1) * 2 * MARKER_SIDE, size[1] - 2 * MARKER_SIDE


def image_pdf(count: int = 2, size: tuple[int, int] = (850, 1100)) -> bytes:
    """An image-only PDF (a scan): Pillow's PDF writer, one JPEG page per image, no text layer at all."""
    pages = [_scan(number, size).convert("RGB") for number in range(1, count + 1)]
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:], resolution=100.0)
    return out.getvalue()


def multipage_tiff(count: int = 3, size: tuple[int, int] = (850, 1100), *, mode: str = "L", **params: object) -> bytes:
    """A multi-page TIFF (a fax or a scanner's batch): page i shows 'Page i'. Extra save parameters pass through."""
    pages = [_scan(number, size, mode) for number in range(1, count + 1)]
    out = io.BytesIO()
    pages[0].save(out, "TIFF", save_all=True, append_images=pages[1:], **params)
    return out.getvalue()


def many_page_tiff(count: int) -> bytes:
    """A TIFF of `count` one-pixel grey pages written by hand (102 bytes a page), in milliseconds.

    Pillow's writer appends page by page and slows down with every page; this writes the directories
    directly, every one pointing at the same pixel: a small file with a huge page count, as an attack has.
    """
    pixel_offset = 8
    first_ifd = 10  # header (8) + the pixel (1) + a pad byte: IFDs start on a word boundary
    ifd_size = 2 + 8 * 12 + 4
    entries = [  # (tag, type SHORT=3 / LONG=4, value)
        (256, 3, 1),  # ImageWidth
        (257, 3, 1),  # ImageLength
        (258, 3, 8),  # BitsPerSample
        (259, 3, 1),  # Compression: none
        (262, 3, 1),  # PhotometricInterpretation: black is zero
        (273, 4, pixel_offset),  # StripOffsets
        (278, 3, 1),  # RowsPerStrip
        (279, 4, 1),  # StripByteCounts
    ]
    body = b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
    ifds = []
    for index in range(count):
        next_ifd = first_ifd + (index + 1) * ifd_size if index + 1 < count else 0
        ifds.append(struct.pack("<H", len(entries)) + body + struct.pack("<I", next_ifd))
    return b"II*\x00" + struct.pack("<I", first_ifd) + b"\x80\x00" + b"".join(ifds)
