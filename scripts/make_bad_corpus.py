"""Bad-input corpus for image preparation: what it must refuse, with the error each case must raise.

`python scripts/make_bad_corpus.py OUTDIR` writes every case as a file plus `manifest.json` (for `make run`
or manual uploads); the unit tests call `build_bad_corpus()` directly and need nothing on disk.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw
from pillow_heif import register_heif_opener

register_heif_opener()


@dataclass(frozen=True)
class BadCase:
    """One object the preparer must refuse: its bytes, the error class it must raise and why."""

    name: str
    data: bytes
    expected: str  # class name in sightline.errors
    why: str


# --- Small valid images (also the seeds of the fuzz tests).


def picture(width: int = 48, height: int = 32) -> Image.Image:
    """A small colourful picture: a gradient, a red block top-left, a green disc."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 4, height // 4), fill=(220, 20, 20))
    draw.ellipse((width // 2, height // 3, width - 4, height - 4), fill=(20, 160, 60))
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _animated(fmt: str, **params: object) -> bytes:
    frames = [picture(), picture().transpose(Image.Transpose.ROTATE_180)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params)


def sample_images() -> dict[str, bytes]:
    """One small valid file per format and flavour the preparer accepts."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif_bytes = exif.tobytes()  # bytes: some encoders (AVIF) remove the tag from an Exif object they are given
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    grey = Image.linear_gradient("L").resize((32, 24))
    rgba = picture().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    samples = {
        "jpeg": encode(picture(), "JPEG", quality=90),
        "jpeg_progressive_exif": encode(picture(), "JPEG", progressive=True, exif=exif),
        "jpeg_cmyk": encode(picture().convert("CMYK"), "JPEG"),
        "jpeg_icc_exif": encode(picture(), "JPEG", icc_profile=srgb, exif=exif_bytes),
        "png": encode(picture(), "PNG"),
        "png_palette_trns": encode(picture().convert("P"), "PNG", transparency=0),
        "png_rgba_interlaced": encode(rgba, "PNG", interlace=True),
        "png_16bit_grey": encode(grey.convert("I").point(lambda v: v * 257).convert("I;16"), "PNG"),
        "png_icc_exif": encode(picture(), "PNG", icc_profile=srgb, exif=exif_bytes),
        "gif_grey_transparent": encode(grey, "GIF", transparency=0),
        "gif_animated": _animated("GIF"),
        "webp_lossy": encode(picture(), "WEBP", quality=70),
        "webp_lossless_alpha": encode(rgba, "WEBP", lossless=True),
        "webp_animated": _animated("WEBP"),
        "webp_exif_icc": encode(picture(), "WEBP", exif=exif_bytes, icc_profile=srgb),
        "tiff_lzw": encode(picture(), "TIFF", compression="tiff_lzw"),
        "tiff_multipage": encode(picture(), "TIFF", save_all=True, append_images=[picture(24, 16)]),
        "tiff_float": encode(grey.convert("F"), "TIFF"),
        "tiff_16bit_oriented": encode(grey.convert("I;16B"), "TIFF", tiffinfo={0x0112: 6}),
        "tiff_cmyk_icc": encode(picture().convert("CMYK"), "TIFF", icc_profile=srgb),
        "bmp": encode(picture(), "BMP"),
        "bmp_palette": encode(picture().convert("P"), "BMP"),
        "mpo": encode(picture(), "MPO", save_all=True, append_images=[picture(48, 32)]),
        "heic": encode(picture(64, 48), "HEIF", quality=50),
        "heic_alpha_rotated": encode(rgba, "HEIF", quality=50, exif=exif_bytes),
    }
    if "AVIF" in Image.SAVE:
        samples["avif"] = encode(picture(64, 48), "AVIF", quality=50)
        samples["avif_alpha_rotated"] = encode(rgba, "AVIF", quality=50, exif=exif_bytes)
    return samples


# --- Building blocks for hand-made headers.


def png_file(width: int, height: int, idat: bytes | None = None, *, colour_type: int = 2, depth: int = 8) -> bytes:
    """A PNG whose IHDR declares any size; the IDAT holds one row of pixels unless given."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\x00" + b"\x80" * 3 * min(width, 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif_file(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF with a logical screen and a first frame of any size, holding one pixel of LZW data."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, *frame, 0)
    return header + descriptor + b"\x02\x02\x44\x01\x00" + b";"


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG whose SOF header is rewritten to declare another size."""
    data = bytearray(encode(picture(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_with_size(width: int, height: int) -> bytes:
    """A real little-endian TIFF whose ImageWidth/ImageLength tags are rewritten."""
    data = bytearray(encode(picture(), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    (count,) = struct.unpack_from("<H", data, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag = struct.unpack_from("<H", data, entry)[0]
        if tag in (256, 257):  # rewritten as LONG so any size fits
            struct.pack_into("<HHII", data, entry, tag, 4, 1, width if tag == 256 else height)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(picture(), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def webp_lossless_with_size(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header (14 bits per side) declares another size."""
    data = bytearray(encode(picture(), "WEBP", lossless=True))
    vp8l = data.index(b"VP8L") + 8  # after the chunk id and size: the 0x2f signature byte
    bits = struct.unpack_from("<I", data, vp8l + 1)[0]
    bits = (bits & ~0x0FFFFFFF) | (width - 1) | ((height - 1) << 14)
    struct.pack_into("<I", data, vp8l + 1, bits)
    return bytes(data)


def heic_with_ispe(heic: bytes, width: int, height: int) -> bytes:
    """Rewrite every 'ispe' (image spatial extent) box: the declared size libheif checks the stream against."""
    data = bytearray(heic)
    at = data.find(b"ispe")
    while at >= 0:
        struct.pack_into(">II", data, at + 8, width, height)
        at = data.find(b"ispe", at + 4)
    return bytes(data)


def jpeg_scan_bomb(extra_scans: int) -> bytes:
    """A valid progressive JPEG with one of its (dozen-byte) refinement scans repeated: LJT-01-003."""
    data = encode(picture(), "JPEG", progressive=True)
    starts = [at for at in range(len(data) - 1) if data[at] == 0xFF and data[at + 1] == 0xDA]
    last_scan, end = starts[-1], data.rindex(b"\xff\xd9")
    return data[:last_scan] + data[last_scan:end] * (extra_scans + 1) + data[end:]


def zip_file(names: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in names.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def flip_bytes(data: bytes, start: int, count: int) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start : start + count]) + data[start + count :]


def elf_header() -> bytes:
    """The first bytes of a 64-bit little-endian x86-64 ELF executable."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x401000, 64, 0, 0, 64, 56, 1, 64, 0, 0) + bytes(56)


# --- The corpus.

HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n"
SVG_DRAWING = b'<?xml version="1.0"?>\n<!-- logo -->\n<svg xmlns="http://www.w3.org/2000/svg" width="10"/>'
PDF_START = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
PSD_HEADER = b"8BPS\x00\x01" + bytes(6) + b"\x00\x03" + struct.pack(">II", 32, 48) + b"\x00\x08\x00\x03"
EXE_HEADER = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(48)
JSON_METADATA = json.dumps({"width": 640, "height": 480, "url": "https://example.com/a.jpg"}).encode()
DOCX = {"[Content_Types].xml": "<Types/>", "word/document.xml": "<w:document/>"}


def _refused(expected: str, *cases: tuple[str, bytes, str]) -> list[BadCase]:
    return [BadCase(name, data, expected, why) for name, data, why in cases]


def build_bad_corpus() -> list[BadCase]:
    """Every case the preparer must refuse, each with the exact error class and the reason."""
    samples = sample_images()
    jpeg, png, heic = samples["jpeg"], samples["png"], samples["heic"]
    idat = png.index(b"IDAT")
    square_heic = encode(picture(64, 64), "HEIF", quality=50)  # no crop box: the 'ispe' size is the image size
    corpus = [
        BadCase("empty.jpg", b"", "EmptyObjectError", "zero bytes"),
        # Not images at all, whatever the key says.
        *_refused(
            "NotAnImageError",
            ("error_page.jpg", HTML_PAGE, "an HTML error page saved under an image name"),
            ("archive.jpg", zip_file({"a.txt": "hello"}), "a ZIP archive"),
            ("report.png", zip_file(DOCX), "a Word document (a ZIP inside)"),
            ("notes.png", b"Meeting notes\n- buy more coffee\n- ship the release\n", "plain text"),
            ("bmw_invoice.bmp", b"BMW service invoice, total 420.00 EUR\n", "text starting with BMP's 'BM' magic"),
            ("metadata.jpg", JSON_METADATA, "JSON metadata instead of the image"),
            ("program.jpg", elf_header(), "a Linux executable"),
            ("setup.png", EXE_HEADER, "a Windows executable"),
            ("backup.jpg", gzip.compress(png, mtime=0), "a gzip file"),
            ("noise.jpg", random.Random(7).randbytes(4096), "random bytes"),
        ),
        *_refused(
            "UnsupportedImageFormatError",
            ("drawing.png", SVG_DRAWING, "SVG is vector, not raster"),
            ("scan.jpg", PDF_START, "PDF input is not supported yet"),
            ("layers.png", PSD_HEADER, "a Photoshop document"),
        ),
        # Truncated or corrupt, per format.
        *_refused(
            "CorruptImageError",
            ("jpeg_soi_only.jpg", b"\xff\xd8\xff", "a JPEG start marker and nothing else"),
            ("jpeg_cut_in_header.jpg", jpeg[:120], "a JPEG cut inside its header"),
            ("jpeg_cut_in_data.jpg", jpeg[: len(jpeg) // 2], "a JPEG cut in the middle of its pixel data"),
            ("png_signature_only.png", png[:8], "the PNG signature and nothing else"),
            ("png_cut_in_data.png", png[: idat + 40], "a PNG cut inside its IDAT chunk"),
            ("png_broken_zlib.png", flip_bytes(png, idat + 10, 16), "a PNG whose compressed pixel data is damaged"),
            ("png_zero_width.png", png_file(0, 10), "a PNG declaring zero columns"),
            ("gif_cut.gif", samples["gif_animated"][:40], "a GIF cut before its first frame ends"),
            ("webp_cut.webp", samples["webp_lossy"][:60], "a WebP cut inside its bitstream"),
            ("tiff_cut.tif", samples["tiff_lzw"][:200], "a TIFF cut before its directory"),
            ("bmp_cut.bmp", samples["bmp"][:200], "a BMP cut inside its pixel rows"),
            ("mpo_cut.jpg", samples["mpo"][:300], "an MPO (multi-picture JPEG) cut in its header"),
            ("heic_cut.heic", heic[: len(heic) // 2], "a HEIC cut in half"),
            ("heic_stream_larger.heic", heic_with_ispe(heic, 8, 8), "a HEVC stream larger than the declared size"),
        ),
        # Decompression bombs: refused from the header, before any pixel is decoded.
        *_refused(
            "ImageTooLargeError",
            ("png_30000x30000.png", png_file(30_000, 30_000), "900 million pixels declared in a 60-byte file"),
            ("png_12000x9000.png", png_file(12_000, 9_000, colour_type=0, depth=1), "above our limit, below Pillow's"),
            ("gif_huge_screen.gif", gif_file((65_535, 65_535), (1, 1)), "a GIF logical screen of 65535×65535"),
            ("gif_frame_beyond_screen.gif", gif_file((10, 10), (20_000, 20_000)), "a 10×10 GIF with a huge frame"),
            ("tiff_40000x40000.tif", tiff_with_size(40_000, 40_000), "a TIFF declaring 1.6 billion pixels"),
            ("jpeg_65000x65000.jpg", jpeg_with_size(65_000, 65_000), "a JPEG header claiming 65000×65000"),
            ("webp_16384x16384.webp", webp_lossless_with_size(16_384, 16_384), "a lossless WebP of 268 megapixels"),
            ("bmp_20000x20000.bmp", bmp_with_size(20_000, 20_000), "a BMP declaring 400 million pixels"),
            ("heic_60000x60000.heic", heic_with_ispe(square_heic, 60_000, 60_000), "a HEIC of 3.6 gigapixels"),
            ("heic_crop_hides_extent.heic", heic_with_ispe(heic, 60_000, 60_000), "a 64×48 crop of a 60000² image"),
            ("jpeg_scan_bomb.jpg", jpeg_scan_bomb(600), "600 extra progressive scans: minutes of decoding"),
            # Absurd shapes, whatever the pixel count.
            ("strip_1x100000.png", png_file(1, 100_000, colour_type=0), "a 1×100000 strip"),
            ("banner_20000x10.png", png_file(20_000, 10, colour_type=0), "a 2000:1 banner"),
            ("jpeg_31000x1000.jpg", jpeg_with_size(31_000, 1_000), "a side above 30,000 px"),
        ),
    ]
    if "avif" in samples:
        avif = samples["avif"]
        corpus.append(BadCase("avif_cut.avif", avif[: len(avif) // 2], "CorruptImageError", "an AVIF cut in half"))
    return corpus


def write_corpus(outdir: Path) -> list[dict[str, object]]:
    """Write every case as a file plus manifest.json (name, expected error class, why, size)."""
    outdir.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, object]] = []
    for case in build_bad_corpus():
        (outdir / case.name).write_bytes(case.data)
        manifest.append({"name": case.name, "expected": case.expected, "why": case.why, "bytes": len(case.data)})
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/make_bad_corpus.py OUTDIR", file=sys.stderr)
        return 2
    manifest = write_corpus(Path(argv[0]))
    print(f"wrote {len(manifest)} bad inputs and manifest.json to {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
