"""The header probe against S3 (moto on loopback): the shape of every kind of object from ranged GETs of its
first bytes, never the whole object, and the bytes read counted exactly as S3 served them."""

from __future__ import annotations

import io
import struct
from typing import Any

import boto3
import pytest
from PIL import Image

from devkit.documents import broken_pdf, encrypted_pdf, multipage_tiff, text_pdf
from sightline_cli.probe import HEAD_BYTES, MAX_PROBE_BYTES, RangedObjectReader, probe_object
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

BUCKET = "probe-bucket"
KiB = 1024


class ServedBytes:
    """An S3 client that counts what S3 served (Content-Length of each GetObject) and keeps each Range asked."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.served = 0
        self.ranges: list[str | None] = []
        self.versions: list[str | None] = []

    def get_object(self, **request: Any) -> Any:
        self.ranges.append(request.get("Range"))
        self.versions.append(request.get("VersionId"))
        response = self._client.get_object(**request)
        self.served += response["ContentLength"]
        return response


@pytest.fixture
def s3(aws: boto3.session.Session) -> Any:
    client = aws.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def probe(s3: Any, key: str, body: bytes, **options: Any) -> tuple[Any, ServedBytes]:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    counting = ServedBytes(s3)
    found = probe_object(counting, BUCKET, key, **options)
    assert found.bytes_read == counting.served, "bytes_read is what S3 served"
    assert counting.ranges and all(r and r.startswith("bytes=") for r in counting.ranges), "ranged GETs only"
    assert found.bytes_read <= MAX_PROBE_BYTES
    return found, counting


# --- Objects.


def noise(width: int, height: int) -> Image.Image:
    """Incompressible pixels: the file is as large as such an image gets."""
    return Image.effect_noise((width, height), 80).convert("RGB")


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_with_large_app_segments(total: int, orientation: int = 6) -> bytes:
    """A JPEG with `total` bytes of APP13 segments right after SOI, then its EXIF (orientation), then the frame."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    plain = encode(photo(640, 480), "JPEG", exif=exif.tobytes())
    filler = b""
    while len(filler) < total:
        filler += segment(0xED, b"Photoshop 3.0\x00" + bytes(min(60_000, total - len(filler))))
    return plain[:2] + filler + plain[2:]


def sof_offset(jpeg: bytes) -> int:
    return min(jpeg.find(bytes([0xFF, marker])) for marker in (0xC0, 0xC2) if jpeg.find(bytes([0xFF, marker])) > 0)


def heic(image: Image.Image) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return encode(image, "HEIF", quality=90)


def linearized_pdf(pages: int, padding: int) -> bytes:
    """A linearized PDF: the linearization dictionary, the first page's cross-reference section and the first
    page's objects at the start; the other pages, `padding` bytes of an unused stream and the main
    cross-reference table after them (the hybrid chain any reader follows)."""
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"

    def page(number: int, ref: int) -> list[bytes]:
        content = b"BT /F1 12 Tf 72 700 Td (Page %d of a linearized file) Tj ET" % number
        return [
            b"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
            b"/Contents %d 0 R >>" % (ref + 1),
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        ]

    first_refs = [5]  # objects: 1 linearization, 2 catalog, 3 pages, 4 font, 5-6 page 1, then the rest
    other_refs = [7 + 2 * index for index in range(pages - 1)]
    kids = b" ".join(b"%d 0 R" % ref for ref in first_refs + other_refs)
    first_section = [b"<< /Type /Catalog /Pages 3 0 R >>", b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)]
    first_section += [font, *page(1, 5)]
    rest = [body for index, ref in enumerate(other_refs) for body in page(index + 2, ref)]
    rest.append(b"<< /Length %d >>\nstream\n" % padding + bytes(padding) + b"\nendstream")
    count = 1 + len(first_section) + len(rest)

    def build(length: int, main_xref: int, first_page_end: int) -> tuple[bytes, int, int]:
        out = io.BytesIO()
        out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = {1: out.tell()}
        out.write(
            b"1 0 obj\n<< /Linearized 1 /L %010d /H [0000000000 0000000000] /O 5 /E %010d /N %d /T %010d >>\nendobj\n"
            % (length, first_page_end, pages, main_xref)
        )
        first_xref = out.tell()
        out.write(b"xref\n1 %d\n" % (1 + len(first_section)))
        entries_at = out.tell()
        out.write(b"0000000000 00000 n \n" * (1 + len(first_section)))
        out.write(b"trailer\n<< /Size %d /Root 2 0 R /Prev %010d >>\nstartxref\n0\n%%%%EOF\n" % (count + 1, main_xref))
        for number, body in enumerate(first_section + rest, start=2):
            offsets[number] = out.tell()
            out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
            if number == 1 + len(first_section):
                first_page_end = out.tell()
        main_xref = out.tell()
        out.write(b"xref\n0 1\n0000000000 65535 f \n%d %d\n" % (2 + len(first_section), len(rest)))
        out.write(b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(2 + len(first_section), count + 1)))
        out.write(b"trailer\n<< /Size %d >>\nstartxref\n%d\n%%%%EOF\n" % (count + 1, first_xref))
        data = bytearray(out.getvalue())
        table = b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, 2 + len(first_section)))
        data[entries_at : entries_at + len(table)] = table
        return bytes(data), main_xref, first_page_end

    data, main_xref, first_page_end = build(0, 0, 0)
    data, main_xref, first_page_end = build(len(data), main_xref, first_page_end)
    return data


# --- Images.


def test_a_large_jpeg_is_sized_from_its_first_block(s3: Any) -> None:
    body = encode(noise(2600, 1800), "JPEG", quality=98)
    assert len(body) > 4_000_000
    found, counting = probe(s3, "photos/large.jpg", body)
    assert (found.shape.kind, found.shape.width, found.shape.height) == ("image", 2600, 1800)
    assert found.bytes_read <= 64 * KiB and len(counting.ranges) == 1
    assert found.note is None and found.format == "JPEG"


def test_a_jpeg_whose_frame_follows_200_kb_of_app_segments_skips_them_and_applies_the_exif_orientation(
    s3: Any,
) -> None:
    body = jpeg_with_large_app_segments(200 * KiB, orientation=6)
    assert sof_offset(body) > 200 * KiB
    found, _ = probe(s3, "photos/exif.jpg", body)
    # Orientation 6: stored 640×480, shown upright 480×640.
    assert (found.shape.kind, found.shape.width, found.shape.height) == ("image", 480, 640)
    assert found.bytes_read <= 64 * KiB < len(body)


def test_a_png_and_other_pillow_formats_are_sized_from_their_headers(s3: Any) -> None:
    image = noise(1200, 700)
    for name, fmt, params in (
        ("a.png", "PNG", {}),
        ("a.gif", "GIF", {}),
        ("a.bmp", "BMP", {}),
        ("a.webp", "WEBP", {"quality": 90}),
        ("b.webp", "WEBP", {"lossless": True}),
    ):
        body = encode(image, fmt, **params)
        found, _ = probe(s3, f"images/{name}", body)
        assert (found.shape.kind, found.shape.width, found.shape.height) == ("image", 1200, 700), name
        assert found.bytes_read == min(len(body), HEAD_BYTES), name


def test_a_heic_is_sized_from_its_meta_box_without_the_image_data(s3: Any) -> None:
    body = heic(noise(1000, 600))
    found, _ = probe(s3, "photos/iphone.heic", body)
    assert (found.shape.kind, found.shape.width, found.shape.height) == ("image", 1000, 600)
    assert found.bytes_read <= HEAD_BYTES < len(body) / 10


def test_a_heic_rotated_by_its_irot_property_is_upright_and_its_primary_item_chosen(s3: Any) -> None:
    # GIVEN an ISOBMFF file with the image data first, then a meta box whose primary item (1) has a size and a
    # quarter turn, beside a tile's size declared first (as a grid image has)
    from sightline_cli.probe import _isobmff_shape

    meta_children = box(b"pitm", b"\x00\x00\x00\x00" + struct.pack(">H", 1)) + box(
        b"iprp",
        box(
            b"ipco",
            box(b"ispe", b"\x00\x00\x00\x00" + struct.pack(">II", 512, 512))  # a tile's size, not the image's
            + box(b"ispe", b"\x00\x00\x00\x00" + struct.pack(">II", 4032, 3024))
            + box(b"irot", b"\x01"),
        )
        + box(b"ipma", b"\x00\x00\x00\x00" + struct.pack(">IHB", 1, 1, 2) + bytes([0x82, 0x03])),
    )
    data = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic") + box(b"mdat", bytes(50_000))
    data += box(b"meta", b"\x00\x00\x00\x00" + meta_children)
    s3.put_object(Bucket=BUCKET, Key="photos/rotated.heic", Body=data)
    reader = RangedObjectReader(s3, BUCKET, "photos/rotated.heic")
    # THEN the primary item's size (not the tile's), turned a quarter; the mdat before meta was skipped
    shape = _isobmff_shape(reader)
    assert (shape.width, shape.height) == (3024, 4032)
    assert reader.bytes_read < len(data) / 2


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def test_a_multi_page_tiff_is_a_document_with_its_page_count(s3: Any) -> None:
    body = multipage_tiff(4, (850, 1100))
    found, _ = probe(s3, "scans/batch.tif", body)
    assert (found.shape.kind, found.shape.pages, found.shape.width, found.shape.height) == ("tiff", 4, 850, 1100)
    assert found.bytes_read <= 64 * KiB < len(body) / 10


def test_a_single_page_tiff_is_an_image(s3: Any) -> None:
    found, _ = probe(s3, "scans/one.tif", encode(noise(900, 500), "TIFF"))
    assert (found.shape.kind, found.shape.width, found.shape.height, found.shape.pages) == ("image", 900, 500, None)


# --- PDFs.


def test_a_non_linear_pdf_is_read_from_its_start_and_its_cross_reference_table_at_the_end(s3: Any) -> None:
    lines = [f"Line {n} of a long report with a real text layer" for n in range(30)]
    body = text_pdf([lines] * 600, font_size=10)
    found, counting = probe(s3, "documents/long.pdf", body)
    assert (found.shape.kind, found.shape.pages, found.shape.width, found.shape.height) == ("pdf", 600, 612, 792)
    assert found.shape.text_layer_chars == len("\n".join(lines))
    assert found.bytes_read <= 128 * KiB < len(body) / 4
    assert any(r.endswith(f"-{len(body) - 1}") for r in counting.ranges if r), "the tail was read (the xref table)"


def test_a_linearized_pdf_is_sized_without_reading_its_body(s3: Any) -> None:
    body = linearized_pdf(pages=5, padding=3_000_000)
    found, _ = probe(s3, "documents/linear.pdf", body)
    assert (found.shape.kind, found.shape.pages, found.shape.width, found.shape.height) == ("pdf", 5, 595, 842)
    assert found.shape.text_layer_chars == len("Page 1 of a linearized file")
    assert found.bytes_read <= 64 * KiB


def test_a_rotated_pdf_page_is_sized_as_shown(s3: Any) -> None:
    found, _ = probe(s3, "documents/landscape.pdf", text_pdf([["Turned"]], rotate=90))
    assert (found.shape.width, found.shape.height) == (792, 612)


def test_an_encrypted_pdf_is_refused_from_its_header(s3: Any) -> None:
    found, _ = probe(s3, "documents/secret.pdf", encrypted_pdf([["secret"]], user_password="pw"))
    assert found.shape.kind == "unknown" and found.shape.refusal is not None and "encrypted" in found.shape.refusal


# --- Bad objects: never an exception.


def test_a_jpeg_cut_before_its_frame_header_is_unknown_with_a_note(s3: Any) -> None:
    body = encode(photo(300, 200), "JPEG")
    found, _ = probe(s3, "photos/cut.jpg", body[: sof_offset(body)])
    assert found.shape.kind == "unknown" and found.shape.refusal is None
    assert found.note and "JPEG" in found.note


def test_garbage_html_an_empty_object_and_a_broken_pdf_never_raise(s3: Any) -> None:
    found, _ = probe(s3, "photos/garbage.jpg", bytes(range(256)) * 40)
    assert found.shape.kind == "unknown" and found.shape.refusal and "not an image" in found.shape.refusal
    found, _ = probe(s3, "photos/page.jpg", b"<!DOCTYPE html><html><body>403</body></html>")
    assert found.shape.refusal == "the object is an HTML page, not an image"
    found, _ = probe(s3, "documents/broken.pdf", broken_pdf())
    assert found.shape.kind == "unknown" and found.shape.refusal is None and found.note
    s3.put_object(Bucket=BUCKET, Key="photos/empty.png", Body=b"")
    empty = probe_object(s3, BUCKET, "photos/empty.png")
    assert empty.shape.refusal == "the object is empty (0 bytes)" and empty.bytes_read == 0
    missing = probe_object(s3, BUCKET, "photos/missing.png")
    assert missing.shape.kind == "unknown" and missing.note and "NoSuchKey" in missing.note


def test_segments_skipped_by_seeking_stay_far_below_the_limit(s3: Any) -> None:
    # 1.3 MB of 60 KB APP segments: the walker reads one small block per segment header
    body = jpeg_with_large_app_segments(1_300 * KiB)
    found, _ = probe(s3, "photos/huge-app.jpg", body)
    assert (found.shape.kind, found.shape.width, found.shape.height) == ("image", 480, 640)
    assert found.bytes_read < 256 * KiB


def test_a_header_beyond_the_read_limit_is_unknown_and_the_limit_holds(s3: Any) -> None:
    # GIVEN a JPEG whose frame header follows 1.2 MB of small APP segments, read in order
    plain = encode(photo(64, 48), "JPEG")
    filler = segment(0xED, bytes(2_000)) * 600
    found, counting = probe(s3, "photos/many-segments.jpg", plain[:2] + filler + plain[2:])
    assert found.shape.kind == "unknown" and found.shape.refusal is None
    assert found.note and "not within the first 1.0 MiB" in found.note
    assert MAX_PROBE_BYTES - 64 * KiB < found.bytes_read <= MAX_PROBE_BYTES
    # The reader itself, with a lower limit: a read past it is a short read, flagged
    reader = RangedObjectReader(counting, BUCKET, "photos/many-segments.jpg", max_bytes=64 * KiB)
    assert reader.read(100 * KiB) == b"" and reader.limit_reached
    assert reader.bytes_read <= 64 * KiB


def test_a_version_id_reads_that_version(s3: Any) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=BUCKET, Key="photos/v.jpg", Body=encode(photo(320, 200), "JPEG"))["VersionId"]
    s3.put_object(Bucket=BUCKET, Key="photos/v.jpg", Body=encode(photo(640, 480), "JPEG"))
    counting = ServedBytes(s3)
    found = probe_object(counting, BUCKET, "photos/v.jpg", version_id=first)
    assert (found.shape.width, found.shape.height) == (320, 200)
    assert counting.versions == [first]


def test_the_reader_serves_reads_from_its_cache_and_fetches_only_what_is_missing(s3: Any) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    s3.put_object(Bucket=BUCKET, Key="raw.bin", Body=body)
    counting = ServedBytes(s3)
    reader = RangedObjectReader(counting, BUCKET, "raw.bin", size=len(body))
    assert reader.read_at(10, 100) == body[10:110]
    assert reader.read_at(1000, 5000) == body[1000:6000]  # within the first block fetched
    assert len(counting.ranges) == 1 and reader.bytes_read == HEAD_BYTES
    reader.seek(-10, io.SEEK_END)
    assert reader.read() == body[-10:]
    assert reader.read_at(len(body) + 5, 10) == b""
    assert len(counting.ranges) == 2 and reader.bytes_read == counting.served


def test_the_sample_corpus_is_estimated_from_its_headers_without_a_full_download(s3: Any) -> None:
    """The dry run on `make run`'s samples: every shape is read, never by downloading an object whole (only an
    object smaller than the first block is read entirely), and objects the pipeline refuses cost nothing."""
    from devkit.samples import build_samples
    from sightline.describe import DescribeOptions
    from sightline.estimate import estimate_object
    from sightline.pricing import load_prices
    from sightline.settings import Settings

    settings = Settings(results_table="t", results_topic_arn="a")
    price = load_prices().for_model(settings.model_id)
    total_size = total_read = 0
    for sample in build_samples():
        if not sample.body:  # an empty object is refused from its size: no request at all
            s3.put_object(Bucket=BUCKET, Key=sample.key, Body=b"")
            found = probe_object(s3, BUCKET, sample.key, size=0)
            assert found.bytes_read == 0 and found.shape.refusal is not None
            continue
        found, _ = probe(s3, sample.key, sample.body, size=len(sample.body))
        total_size += len(sample.body)
        total_read += found.bytes_read
        if len(sample.body) > HEAD_BYTES:
            assert found.bytes_read < len(sample.body), f"{sample.key} was downloaded whole"
        assert found.bytes_read <= HEAD_BYTES, f"{sample.key}: {found.bytes_read} bytes read for its header"
        estimate = estimate_object(found.shape, DescribeOptions(model_id=settings.model_id), settings, price)
        if found.shape.refusal is not None:
            assert estimate.requests == 0 and estimate.total_tokens == 0, sample.key
        else:
            assert found.shape.kind != "unknown" and estimate.exact_shape, (sample.key, found.shape)
            assert estimate.requests >= 1 and estimate.image_tokens > 0, sample.key
    assert total_read < total_size / 2
