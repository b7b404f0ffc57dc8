"""An S3 object's shape from its first bytes: what the cost estimate needs, never the whole object.

`probe_object` reads the object through `RangedObjectReader`, a read-only, seekable file over ranged GETs
(`Range: bytes=a-b`, with the VersionId when given) with a block cache and a count of the bytes S3 returned. It
starts with the first HEAD_BYTES; a read past what is cached fetches more: twice the previous fetch when it
continues it (a long header read in order), SPARSE_BYTES when it jumps (a marker after a skipped segment, a PDF's
cross-reference table at the end), never more than MAX_PROBE_BYTES in all.

Per format, the least that tells the size:

- JPEG (and MPO): the markers are walked, segments skipped by seeking, so a 200 KB EXIF or ICC block costs one
  more small read; the EXIF orientation is read from the APP1 segment's first IFD (5-8: width and height swap).
- HEIC/HEIF and AVIF: the ISOBMFF boxes (`meta` → `iprp` → `ipco`/`ipma`): the primary item's `ispe` (its
  size) and `irot` (a quarter turn swaps width and height). pillow-heif and Pillow's AVIF plugin read the whole
  stream, so they are not used here.
- WebP: the first chunk's header (VP8, VP8L or VP8X canvas). Its EXIF orientation is not read: it is usually
  after the pixels, and a swap of width and height does not change what the image costs.
- PNG, GIF, BMP and TIFF: Pillow, which reads headers lazily. A TIFF's pages are counted one directory at a time
  (never `n_frames`, which walks every directory of a hostile file), up to MAX_DOCUMENT_PAGES.
- PDF: pypdfium2 over the same reader (PDFium reads what it needs: the trailer, the cross-reference table, the
  page tree): the page count, the first page's size in points and, within TEXT_PROBE_BYTES more, the length of
  the first page's text layer. PDFium is not thread-safe, so one PDF at a time per process (a lock).

A bad object never raises: an empty object, or bytes that are no image (what `sightline.imaging` says of
them), come back as a shape with a `refusal` (the pipeline refuses it before any model call); a header that
cannot be read, or that is not within the read limit, as `ObjectShape("unknown")` with a note. S3 errors
(no such key, access denied) are notes as well.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image

from sightline.errors import PermanentInputError
from sightline.estimate import ObjectShape, human_bytes
from sightline.imaging import _image_signature, _refuse_non_image
from sightline.pages import _count_frames, clean_text_layer
from sightline.settings import MAX_DOCUMENT_PAGES

__all__ = [
    "BLOCK_BYTES",
    "HEAD_BYTES",
    "MAX_PROBE_BYTES",
    "SPARSE_BYTES",
    "TEXT_PROBE_BYTES",
    "Probe",
    "ProbeLimitError",
    "ProbeReadError",
    "RangedObjectReader",
    "probe_object",
]

BLOCK_BYTES = 4 * 1024  # the cache's unit: every fetch is whole blocks
HEAD_BYTES = 16 * 1024  # the first fetch: the whole header of most images
SPARSE_BYTES = 8 * 1024  # a fetch that does not continue the previous one
MAX_PROBE_BYTES = 1024 * 1024  # never more per object
TEXT_PROBE_BYTES = 128 * 1024  # a PDF's first page text layer: read only within this much more
META_MAX_BYTES = 256 * 1024  # an ISOBMFF `meta` box (item locations, properties): a few KB in practice
_ORIENTATION_TAG = 0x0112
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_PDFIUM_LOCK = threading.Lock()


class ProbeLimitError(OSError):
    """The header is further in than the probe may read (MAX_PROBE_BYTES)."""


class ProbeReadError(OSError):
    """S3 refused or failed a ranged GET (no such key or version, access denied, network)."""


@dataclass(frozen=True)
class Probe:
    """What the probe learnt: the shape, the bytes S3 returned for it, and a note when something is unusual
    (the shape unknown or refused, and why). ``format`` is the format the bytes start like (JPEG, PDF, …)."""

    shape: ObjectShape
    bytes_read: int
    note: str | None = None
    format: str | None = None
    requests: int = 0


class RangedObjectReader(io.RawIOBase):
    """A read-only, seekable file over an S3 object, fetched by ranged GETs into a block cache.

    ``bytes_read`` counts the bytes S3 returned, ``requests`` the GETs. Python callers use ``read_at``, which
    raises ProbeLimitError / ProbeReadError; ``readinto`` (what Pillow and PDFium call) returns a short read
    instead, with ``limit_reached`` or ``error`` set, because PDFium reads through a C callback that cannot raise.
    """

    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        size: int | None = None,
        head_bytes: int = HEAD_BYTES,
        max_bytes: int = MAX_PROBE_BYTES,
    ) -> None:
        super().__init__()
        self._s3 = s3_client
        self._request: dict[str, str] = {"Bucket": bucket, "Key": key}
        if version_id:
            self._request["VersionId"] = version_id
        self._size = size
        self._head_bytes = max(BLOCK_BYTES, head_bytes)
        self.max_bytes = max_bytes
        self._blocks: dict[int, bytes] = {}
        self._position = 0
        self._last_end = -1  # where the previous fetch ended (a fetch continuing it grows)
        self._last_length = 0
        self.bytes_read = 0
        self.requests = 0
        self.limit_reached = False
        self.error: str | None = None

    # --- The object.

    @property
    def size(self) -> int:
        """The object's length: given, or learnt from the first GET's Content-Range."""
        if self._size is None:
            self._fetch(0, self._head_bytes)
        assert self._size is not None
        return self._size

    def _fetch(self, start: int, length: int) -> None:
        last = start + length - 1
        if self._size is not None:
            last = min(last, self._size - 1)
        try:
            response = self._s3.get_object(**self._request, Range=f"bytes={start}-{last}")
            body = response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidRange" and start == 0:  # a range of an empty object
                self._size = 0
                return
            raise ProbeReadError(f"GetObject failed: {code or exc}") from None
        except BotoCoreError as exc:
            raise ProbeReadError(f"GetObject failed: {exc}") from None
        self.requests += 1
        self.bytes_read += len(body)
        found = _CONTENT_RANGE.match(str(response.get("ContentRange") or ""))
        if found and found[3] != "*":
            self._size = int(found[3])
        elif self._size is None:  # a server that ignored the range sent the whole object: that is its size
            self._size = len(body)
        for offset in range(0, len(body), BLOCK_BYTES):
            self._blocks[(start + offset) // BLOCK_BYTES] = body[offset : offset + BLOCK_BYTES]
        self._last_end, self._last_length = start + len(body), len(body)

    def _ensure(self, start: int, end: int) -> None:
        """Fetch every missing block of [start, end)."""
        block = start // BLOCK_BYTES
        last_block = (end - 1) // BLOCK_BYTES
        while block <= last_block:
            if block in self._blocks:
                block += 1
                continue
            needed = 1
            while block + needed <= last_block and block + needed not in self._blocks:
                needed += 1
            offset = block * BLOCK_BYTES
            if not self._blocks:
                wanted = self._head_bytes
            elif offset == self._last_end:
                wanted = 2 * self._last_length  # a header read in order: grow
            else:
                wanted = SPARSE_BYTES
            length = max(needed * BLOCK_BYTES, wanted)
            # Never fetch what is cached already, nor past the end.
            run = needed
            while run * BLOCK_BYTES < length and block + run not in self._blocks:
                run += 1
            length = min(length, run * BLOCK_BYTES, self.size - offset)
            remaining = self.max_bytes - self.bytes_read
            required = min(needed * BLOCK_BYTES, self.size - offset)
            if required > remaining:
                self.limit_reached = True
                raise ProbeLimitError(f"the header is not within the first {human_bytes(self.max_bytes)} read")
            self._fetch(offset, min(length, max(required, remaining - remaining % BLOCK_BYTES)))
            if any(block + index not in self._blocks for index in range(needed)):
                raise ProbeReadError(f"GetObject returned fewer bytes than asked for at offset {offset}")
            block += needed

    def read_at(self, offset: int, count: int) -> bytes:
        """``count`` bytes from ``offset`` (fewer at the end of the object)."""
        end = min(offset + count, self.size)
        if offset >= end:
            return b""
        self._ensure(offset, end)
        first, last = offset // BLOCK_BYTES, (end - 1) // BLOCK_BYTES
        data = b"".join(self._blocks[block] for block in range(first, last + 1))
        return data[offset - first * BLOCK_BYTES : end - first * BLOCK_BYTES]

    # --- The file protocol (what Pillow and PDFium read through).

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence == io.SEEK_END:
            offset += self.size
        elif whence != io.SEEK_SET:
            raise ValueError(f"invalid whence {whence}")
        if offset < 0:
            raise ValueError("negative seek position")
        self._position = offset
        return offset

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self.read_at(self._position, len(view))
        except ProbeLimitError:
            return 0
        except ProbeReadError as exc:
            self.error = str(exc)
            return 0
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


# --- Formats.


def _u16(data: bytes, offset: int, order: str = ">") -> int:
    return int(struct.unpack_from(order + "H", data, offset)[0])


def _u32(data: bytes, offset: int, order: str = ">") -> int:
    return int(struct.unpack_from(order + "I", data, offset)[0])


def _upright(width: int, height: int, orientation: int) -> tuple[int, int]:
    """EXIF orientations 5-8 turn the image a quarter: shown upright, width and height swap."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag of an EXIF block's first IFD (the TIFF structure after "Exif\\0\\0"); 1 if absent."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    ifd = _u32(tiff, 4, order)
    if ifd + 2 > len(tiff):
        return 1
    for index in range(_u16(tiff, ifd, order)):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            break
        if _u16(tiff, entry, order) == _ORIENTATION_TAG:
            value = _u16(tiff, entry + 8, order)
            return value if 1 <= value <= 8 else 1
    return 1


# Start-of-frame markers: every SOFn but DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
EXIF_READ_BYTES = 4 * 1024  # of an APP1 segment: its first IFD, where Orientation is


def _jpeg_shape(reader: RangedObjectReader) -> ObjectShape:
    """Walk the markers to the first start-of-frame, skipping segments by seeking."""
    position = 2  # after SOI
    orientation = 1
    while True:
        header = reader.read_at(position, 4)
        if len(header) < 2 or header[0] != 0xFF:
            raise ValueError("the JPEG's markers are damaged before its frame header")
        marker = header[1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (0xD9, 0xDA) or len(header) < 4:
            raise ValueError("the JPEG has no frame header before its image data")
        length = _u16(header, 2)
        if length < 2:
            raise ValueError("the JPEG has a segment of impossible length")
        if marker in _SOF_MARKERS:
            frame = reader.read_at(position + 4, 5)
            if len(frame) < 5:
                raise ValueError("the JPEG's frame header is truncated")
            height, width = _u16(frame, 1), _u16(frame, 3)
            if not width or not height:
                raise ValueError(f"the JPEG's frame header declares {width}×{height}")
            width, height = _upright(width, height, orientation)
            return ObjectShape("image", width, height)
        if marker == 0xE1 and orientation == 1:
            payload = reader.read_at(position + 4, min(length - 2, EXIF_READ_BYTES))
            if payload.startswith(b"Exif\x00\x00"):
                orientation = _exif_orientation(payload[6:])
        position += 2 + length


def _webp_shape(head: bytes) -> ObjectShape:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
    elif chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = _u16(head, 26, "<") & 0x3FFF, _u16(head, 28, "<") & 0x3FFF
    else:
        raise ValueError(f"the WebP's first chunk {chunk!r} is not an image header")
    return ObjectShape("image", width, height)


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """ISOBMFF boxes inside data[start:end]: (type, payload start, payload end)."""
    end = len(data) if end is None else end
    found = []
    position = start
    while position + 8 <= end:
        size, kind = _u32(data, position), data[position + 4 : position + 8]
        header = 8
        if size == 1 and position + 16 <= end:
            size, header = int(struct.unpack_from(">Q", data, position + 8)[0]), 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            break
        found.append((kind, position + header, position + size))
        position += size
    return found


def _top_level_meta(reader: RangedObjectReader) -> bytes:
    """The payload of the file's `meta` box, found by skipping the top-level boxes before it (mdat too)."""
    position = 0
    for _ in range(64):  # ftyp, meta, mdat, maybe free/skip/uuid: a handful in real files
        header = reader.read_at(position, 16)
        if len(header) < 8:
            break
        size, kind, length = _u32(header, 0), header[4:8], 8
        if size == 1 and len(header) == 16:
            size, length = int(struct.unpack_from(">Q", header, 8)[0]), 16
        elif size == 0:
            size = reader.size - position
        if size < length:
            break
        if kind == b"meta":
            return reader.read_at(position + length, min(size - length, META_MAX_BYTES))
        position += size
    raise ValueError("the file has no readable `meta` box")


def _isobmff_shape(reader: RangedObjectReader) -> ObjectShape:
    """The primary item's `ispe` (size) and `irot` (rotation) from the `meta` box."""
    meta = _top_level_meta(reader)
    primary = None
    properties: list[tuple[bytes, bytes]] = []
    associations: dict[int, list[int]] = {}
    for kind, start, end in _boxes(meta, 4):  # a full box: version and flags first
        if kind == b"pitm":
            primary = _u16(meta, start + 4) if meta[start] == 0 else _u32(meta, start + 4)
        elif kind == b"iprp":
            for child, child_start, child_end in _boxes(meta, start, end):
                if child == b"ipco":
                    properties = [(t, meta[s:e]) for t, s, e in _boxes(meta, child_start, child_end)]
                elif child == b"ipma":
                    associations.update(_item_properties(meta[child_start:child_end]))
    chosen = associations.get(primary, []) if primary is not None else []
    own = [properties[index - 1] for index in chosen if 0 < index <= len(properties)]
    ispe = next((payload for kind, payload in own if kind == b"ispe"), None)
    if ispe is None:  # no association read: the first size declared
        ispe = next((payload for kind, payload in properties if kind == b"ispe"), None)
    if ispe is None or len(ispe) < 12:
        raise ValueError("the file declares no image size (`ispe`)")
    width, height = _u32(ispe, 4), _u32(ispe, 8)
    irot = next((payload for kind, payload in own if kind == b"irot"), b"")
    if irot and irot[0] & 1:  # 90 or 270 degrees
        width, height = height, width
    return ObjectShape("image", width, height)


def _item_properties(ipma: bytes) -> dict[int, list[int]]:
    """An `ipma` box: item id → its property indices (1-based into `ipco`)."""
    version, flags = ipma[0], int.from_bytes(ipma[1:4], "big")
    count = _u32(ipma, 4)
    position = 8
    items: dict[int, list[int]] = {}
    for _ in range(count):
        if version < 1:
            item, position = _u16(ipma, position), position + 2
        else:
            item, position = _u32(ipma, position), position + 4
        associations, position = ipma[position], position + 1
        indices = []
        for _ in range(associations):
            if flags & 1:
                indices.append(_u16(ipma, position) & 0x7FFF)
                position += 2
            else:
                indices.append(ipma[position] & 0x7F)
                position += 1
        items[item] = indices
    return items


def _pillow_shape(reader: RangedObjectReader, signature: str) -> ObjectShape:
    """PNG, GIF, BMP, TIFF: Pillow reads their headers lazily (nothing is decoded)."""
    reader.seek(0)
    with Image.open(cast(IO[bytes], reader), formats=(signature,)) as img:
        width, height = img.size
        orientation = 1
        if signature == "TIFF":
            orientation = int(getattr(img, "tag_v2", {}).get(_ORIENTATION_TAG, 1) or 1)
            pages = _count_frames(img, MAX_DOCUMENT_PAGES)
            if pages > 1:
                return ObjectShape("tiff", width, height, pages=pages)
        elif "exif" in img.info:  # PNG's eXIf before the pixels; never getexif(), which may decode the image
            with contextlib.suppress(Exception):
                exif = Image.Exif()
                exif.load(img.info["exif"])
                orientation = int(exif.get(_ORIENTATION_TAG, 1))
    width, height = _upright(width, height, orientation)
    return ObjectShape("image", width, height)


def _pdf_shape(reader: RangedObjectReader) -> tuple[ObjectShape, str | None]:
    """Page count, first page size (points, rotation applied) and first page text-layer length, via PDFium."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(reader)
        except pdfium.PdfiumError as exc:
            _raise_reader_failure(reader)
            if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
                return ObjectShape("unknown", refusal="the PDF is encrypted and needs a password to open"), None
            return ObjectShape("unknown"), f"the PDF cannot be opened ({exc})"
        try:
            pages = len(pdf)
            width, height = pdf.get_page_size(0)
            _raise_reader_failure(reader)
            text_chars = _first_page_text_chars(pdf, reader)
        finally:
            pdf.close()
    shape = ObjectShape("pdf", round(width), round(height), pages=pages, text_layer_chars=text_chars)
    note = None if text_chars is not None else "the first page's text layer was not read (beyond the read limit)"
    return shape, note


def _first_page_text_chars(pdf: Any, reader: RangedObjectReader) -> int | None:
    """Characters of the first page's text layer, as the renderer keeps it; None when it costs too many bytes."""
    import pypdfium2 as pdfium

    full_limit = reader.max_bytes
    reader.max_bytes = min(full_limit, reader.bytes_read + TEXT_PROBE_BYTES)
    try:
        page = pdf[0]
        textpage = page.get_textpage()
        chars = len(clean_text_layer(textpage.get_text_bounded()) or "") if textpage.count_chars() > 0 else 0
        textpage.close()
        page.close()
    except pdfium.PdfiumError:
        return None
    finally:
        reached, reader.max_bytes = reader.limit_reached, full_limit
        reader.limit_reached = False
    return None if reached or reader.error else chars


def _raise_reader_failure(reader: RangedObjectReader) -> None:
    """What PDFium or Pillow saw as a short read was the reader's limit or an S3 error: say that instead."""
    if reader.error:
        raise ProbeReadError(reader.error)
    if reader.limit_reached:
        raise ProbeLimitError(f"the header is not within the first {human_bytes(reader.max_bytes)} read")


def _shape(reader: RangedObjectReader) -> tuple[ObjectShape, str | None, str | None]:
    """(shape, note, format)."""
    size = reader.size
    if size == 0:
        return ObjectShape("unknown", refusal="the object is empty (0 bytes)"), "empty object", None
    head = reader.read_at(0, min(size, HEAD_BYTES))
    signature = _image_signature(head)
    parsers: dict[str, Callable[[], ObjectShape]] = {
        "JPEG": lambda: _jpeg_shape(reader),
        "HEIF": lambda: _isobmff_shape(reader),
        "AVIF": lambda: _isobmff_shape(reader),
        "WEBP": lambda: _webp_shape(head),
    }
    if signature is None and b"%PDF-" in head[:1024]:
        signature = "PDF"
    if signature is not None:
        try:
            if signature == "PDF":
                shape, note = _pdf_shape(reader)
                return shape, note or shape.refusal, signature
            parse = parsers.get(signature) or (lambda: _pillow_shape(reader, signature))
            return parse(), None, signature
        except (ProbeLimitError, ProbeReadError):
            raise
        except Image.DecompressionBombError:
            return ObjectShape("unknown", refusal="the image's header declares too many pixels"), None, signature
        except Exception as exc:  # parsers meet hostile bytes with any exception: the header is damaged
            _raise_reader_failure(reader)
            reason = str(exc).strip() or type(exc).__name__
            return ObjectShape("unknown"), f"the {signature} header cannot be read ({reason[:200]})", signature
    try:
        _refuse_non_image(head)  # the pipeline's own words for what the object is
    except PermanentInputError as exc:
        return ObjectShape("unknown", refusal=exc.message), exc.message, None
    return ObjectShape("unknown"), "the object's bytes are not a known image or document", None


def probe_object(
    s3_client: Any, bucket: str, key: str, *, version_id: str | None = None, size: int | None = None
) -> Probe:
    """The object's shape from ranged GETs of its first bytes (at most MAX_PROBE_BYTES). Never raises for a bad
    object or a failed GET: the shape is then "unknown" and the note says why."""
    reader = RangedObjectReader(s3_client, bucket, key, version_id=version_id, size=size)
    signature = None
    try:
        shape, note, signature = _shape(reader)
    except ProbeLimitError as exc:
        shape, note = ObjectShape("unknown"), str(exc)
    except ProbeReadError as exc:
        shape, note = ObjectShape("unknown"), str(exc)
    return Probe(shape=shape, bytes_read=reader.bytes_read, note=note, format=signature, requests=reader.requests)
