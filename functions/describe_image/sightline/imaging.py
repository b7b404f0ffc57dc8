"""Image preparation: bytes of any common image in, the smallest legible base64 JPEG payload out.

Pure: no AWS, no network. Every refusal is one of the domain's permanent errors.
"""

from __future__ import annotations

import array
import base64
import io
import math
import re
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from PIL import Image, ImageChops, ImageCms, ImageFilter, UnidentifiedImageError
from pillow_heif import register_heif_opener

from sightline.errors import (
    CorruptImageError,
    EmptyObjectError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedImageFormatError,
)
from sightline.pricing import image_tokens
from sightline.settings import Detail

# The provider's guide: base64 payloads "should ideally be under 1MB". Stay under the decimal megabyte.
MAX_BASE64_BYTES = 1_000_000
# HEIC/HEIF (iPhone photos) through libheif; depth and auxiliary maps are never used, so never parsed.
register_heif_opener(depth_images=False, aux_images=False)
# Formats we decode (MPO opens through the JPEG plugin). Restricting Pillow's sniffing keeps exotic,
# rarely-audited decoders out of reach; a format this Pillow build lacks is simply not offered.
# AVIF before HEIF: both are 'ftyp' files, and only Pillow's AVIF plugin decodes AV1 here.
Image.init()
ACCEPTED_FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF") if f in Image.OPEN)
FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF"}
FORMAT_NAMES |= {"AVIF": "AVIF", "HEIF": "HEIC/HEIF", "MPO": "MPO (JPEG)"}
SUPPORTED = ", ".join(FORMAT_NAMES[f] for f in ACCEPTED_FORMATS)
# Absurd shapes (a 1×100000 strip) are refused even when the pixel count is fine.
MAX_SIDE = 30_000
MAX_ASPECT_RATIO = 50
# Each progressive scan costs a pass over every block, and a scan can be a dozen bytes: a small file with
# thousands of scans decodes for minutes (libjpeg-turbo's "LJT-01-003"). Real encoders write about ten.
MAX_JPEG_SCANS = 500
JPEG_QUALITIES = (85, 78, 70, 60)
WHITE = (255, 255, 255)

# Our own pixel limit is checked from the header; Pillow's warning under its hard limit is noise. A module-level
# filter, not warnings.catch_warnings(), which is not thread-safe (two images are decoded at once).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

BudgetName = Literal["low", "standard", "high"]


@dataclass(frozen=True)
class PixelBudget:
    """How many pixels a detail level may send: the image is scaled to fit both bounds."""

    name: BudgetName
    max_side: int
    max_pixels: int


# Qwen2.5-VL bills one token per 28×28 patch; OpenAI-style detail=low is one 512px tile.
# low: one 512px tile (≈ 340 patches). standard: a photo (≈ 750 patches).
# high: a page of print stays legible (≈ 2300 patches, e.g. 1130×1600 for A4).
BUDGETS: dict[BudgetName, PixelBudget] = {
    "low": PixelBudget("low", max_side=512, max_pixels=512 * 512),
    "standard": PixelBudget("standard", max_side=1024, max_pixels=768 * 768),
    "high": PixelBudget("high", max_side=2048, max_pixels=1344 * 1344),
}

# EXIF orientation → the transpose that shows the image upright (same table as ImageOps.exif_transpose,
# applied here after downscaling so the rotation works on the small image, not the original).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    jpeg: bytes
    source_format: str
    source_mode: str
    original_width: int  # upright, after EXIF orientation
    original_height: int
    sent_width: int
    sent_height: int
    jpeg_quality: int
    budget: BudgetName
    detail_sent: Detail
    document_like: bool
    orientation: int

    @property
    def base64(self) -> str:
        return base64.b64encode(self.jpeg).decode("ascii")

    @property
    def bytes_sent(self) -> int:
        """Size of the base64 payload put in the request."""
        return 4 * math.ceil(len(self.jpeg) / 3)

    @property
    def data_url(self) -> str:
        return f"data:image/jpeg;base64,{self.base64}"

    @property
    def estimated_image_tokens(self) -> int:
        return estimate_image_tokens(self.sent_width, self.sent_height)


def estimate_image_tokens(width: int, height: int) -> int:
    """Qwen2.5-VL style estimate: one token per 28×28 patch (the default model's billing; pricing.toml's "patch28")."""
    return image_tokens("patch28", width, height)


# --- Recognising what the bytes are.

# BMP's only magic is "BM", which plain text can start with too; a real BMP also has a known DIB header size.
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)

# Images in formats we do not decode: (magic bytes, offset, what the object is).
_UNSUPPORTED_IMAGES: tuple[tuple[bytes, int, str], ...] = (
    (b"8BPS", 0, "a Photoshop document (PSD)"),
    (b"\x00\x00\x01\x00", 0, "a Windows icon (ICO)"),
    (b"\x00\x00\x02\x00", 0, "a Windows cursor (CUR)"),
    (b"icns", 0, "an Apple icon (ICNS)"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", 0, "a JPEG 2000 codestream"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "a JPEG XL image"),
    (b"\xff\x0a", 0, "a JPEG XL image"),
    (b"DICM", 128, "a DICOM medical image"),
    (b"qoif", 0, "a QOI image"),
    (b"v/1\x01", 0, "an OpenEXR image"),
    (b"#?RADIANCE", 0, "a Radiance HDR image"),
    (b"DDS ", 0, "a DirectDraw texture (DDS)"),
    (b"%!PS", 0, "a PostScript/EPS document"),
    (b"\xc5\xd0\xd3\xc6", 0, "an EPS document"),
    (b"ftypcrx ", 4, "a Canon CR3 raw photo"),
    (b"ftypavif", 4, "an AVIF image (this build has no AVIF decoder)"),
)
# Common files that are not images at all.
_NON_IMAGES: tuple[tuple[bytes, int, str], ...] = (
    (b"PK\x03\x04", 0, "a ZIP archive (or an Office document)"),
    (b"PK\x05\x06", 0, "an empty ZIP archive"),
    (b"\x1f\x8b", 0, "a gzip-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive"),
    (b"Rar!\x1a\x07", 0, "a RAR archive"),
    (b"BZh", 0, "a bzip2-compressed file"),
    (b"\xfd7zXZ\x00", 0, "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", 0, "a Zstandard-compressed file"),
    (b"\x7fELF", 0, "a Linux executable (ELF)"),
    (b"MZ", 0, "a Windows executable (EXE/DLL)"),
    (b"\xcf\xfa\xed\xfe", 0, "a macOS executable (Mach-O)"),
    (b"\xce\xfa\xed\xfe", 0, "a macOS executable (Mach-O)"),
    (b"\xca\xfe\xba\xbe", 0, "a Mach-O universal binary or Java class file"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "a legacy Microsoft Office document"),
    (b"SQLite format 3\x00", 0, "an SQLite database"),
    (b"{\\rtf", 0, "an RTF document"),
    (b"ID3", 0, "an MP3 audio file"),
    (b"OggS", 0, "an Ogg audio/video file"),
    (b"fLaC", 0, "a FLAC audio file"),
    (b"\x1aE\xdf\xa3", 0, "a Matroska/WebM video"),
    (b"WAVE", 8, "a WAV audio file"),
    (b"AVI ", 8, "an AVI video"),
    (b"ftyp", 4, "an MP4/QuickTime video or other ISO media file"),
)
_NETPBM = re.compile(rb"P[1-7]\s+#?")


def _image_signature(data: bytes) -> str | None:
    """The accepted format whose magic bytes start the data, by Pillow's own tests (None: no image we take)."""
    prefix = data[:16]
    for fmt in ACCEPTED_FORMATS:
        accept = Image.OPEN[fmt][1]
        if accept is not None and accept(prefix) is True:
            if fmt == "BMP" and int.from_bytes(data[14:18], "little") not in _BMP_HEADER_SIZES:
                continue
            return fmt
    return None


def _refuse_non_image(data: bytes) -> NoReturn:
    """Name what the object is when it is not an image we decode, instead of a generic 'cannot identify'."""
    for magic, offset, what in _UNSUPPORTED_IMAGES:
        if data.startswith(magic, offset):
            raise UnsupportedImageFormatError(f"the object is {what}; supported formats: {SUPPORTED}")
    # The PDF header may follow up to a kilobyte of junk.
    if b"%PDF-" in data[:1024]:
        raise UnsupportedImageFormatError("the object is a PDF document; PDF input is not supported yet")
    for magic, offset, what in _NON_IMAGES:
        if data.startswith(magic, offset):
            raise NotAnImageError(f"the object is {what}, not an image")
    head = data[:4096].removeprefix(b"\xef\xbb\xbf").lstrip()
    lowered = head.lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in lowered[:1024]:
        raise NotAnImageError("the object is an HTML page, not an image")
    if b"<svg" in lowered:
        raise UnsupportedImageFormatError("the object is an SVG vector drawing; only raster images are supported")
    if lowered.startswith(b"<?xml"):
        raise NotAnImageError("the object is an XML document, not an image")
    if _NETPBM.match(head):
        raise UnsupportedImageFormatError(f"the object is a Netpbm (PBM/PGM/PPM) image; supported formats: {SUPPORTED}")
    if _is_text(head):
        kind = "JSON" if head.startswith((b"{", b"[")) else "plain text"
        raise NotAnImageError(f"the object is {kind}, not an image")
    raise NotAnImageError(f"the object's bytes are not an image in any supported format ({SUPPORTED})")


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # a character cut at the end of the sample is still text
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(char.isprintable() or char in "\t\n\r\f" for char in text)


def _reason(exc: BaseException) -> str:
    """The decoder's own words, short; its exception type when it gave none."""
    text = str(exc).strip() if not isinstance(exc, KeyError) else ""
    return (text or type(exc).__name__)[:200]


def _bomb_error(exc: Image.DecompressionBombError, max_pixels: int) -> ImageTooLargeError:
    """Pillow's own hard limit tripped (about 179 million pixels): say it like our limit, before any decoding."""
    declared = re.search(r"\((\d+) pixels\)", str(exc))
    count = f"{int(declared[1]):,} pixels" if declared else "more pixels than can be decoded safely"
    return ImageTooLargeError(f"the image's header declares {count}, above the limit of {max_pixels:,}; not decoded")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    signature = _image_signature(data)
    if signature is None:
        _refuse_non_image(data)
    name = FORMAT_NAMES[signature]
    article = "an" if name in ("AVIF", "MPO (JPEG)") else "a"
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, max_pixels) from None
    except UnidentifiedImageError:
        raise CorruptImageError(f"the object starts like {article} {name} image, but its header is damaged") from None
    except MemoryError:
        raise ImageTooLargeError(f"the {name} header asks for more memory than is available") from None
    # Decoders meet hostile bytes with a wide, undocumented range of exceptions (the fuzz tests saw OSError,
    # ValueError, SyntaxError, EOFError, RuntimeError from libavif/libheif, IndexError from GIF frame parsing):
    # all of them mean the file is damaged, never that retrying could help.
    except Exception as exc:
        raise CorruptImageError(f"the {name} header cannot be read ({_reason(exc)})") from None


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise CorruptImageError(f"the image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}×{height} ({width * height:,} pixels), above the limit of {max_pixels:,}"
        )
    if max(width, height) > MAX_SIDE:
        raise ImageTooLargeError(
            f"the image's dimensions are out of range ({width}×{height}): sides above {MAX_SIDE:,} px are refused"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageTooLargeError(
            f"the image's dimensions are out of range ({width}×{height}): "
            f"shapes longer than {MAX_ASPECT_RATIO}:1 are refused"
        )


def _check_jpeg_scans(data: bytes) -> None:
    # Entropy-coded data never holds FF DA (a data FF is followed by 00 or a restart marker), so counting
    # the bytes counts the scans of every image in the file: an upper bound for the one we decode.
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLargeError(
            f"the JPEG has {scans:,} scans (at most {MAX_JPEG_SCANS} are accepted): decoding it would take minutes"
        )


def _decode(img: Image.Image, source_format: str, detail: Detail, max_pixels: int) -> None:
    """Load the pixels of the first frame (HEIF: the primary image), where Image.open left every plugin."""
    name = FORMAT_NAMES.get(source_format, source_format)
    try:
        # Decode no more than the largest budget needs: JPEG scales in the DCT domain (1/2, 1/4, 1/8).
        if source_format in ("JPEG", "MPO"):
            largest = BUDGETS["high"] if detail == "auto" else BUDGETS[detail]
            img.draft(None, _target_size(img.width, img.height, largest))
        img.load()
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, max_pixels) from None
    except MemoryError:
        raise ImageTooLargeError(f"the {name} image needs more memory to decode than is available") from None
    except Exception as exc:  # see _open: any decoder failure is the file's
        if "Security limit exceeded" in str(exc):  # libheif refuses sizes its header understated, before decoding
            raise ImageTooLargeError(f"the {name} image exceeds the decoder's size limits ({_reason(exc)})") from None
        raise CorruptImageError(f"the {name} image data is truncated or corrupt ({_reason(exc)})") from None


# Bytes a pixel takes in Pillow's memory, by mode (multi-band images are stored 4 bytes a pixel, RGB included).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_GREY_OUTPUT_MODES = ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def decode_footprint(data: bytes, detail: Detail) -> int:
    """About how many bytes preparing ``data`` holds at its peak, from the header alone (nothing is decoded).

    What the header cannot tell is counted as the bytes themselves: preparation refuses such data before
    decoding anything.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _footprint(Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS), detail, len(data))
    except Exception:  # the same data is refused, with its reason, by prepare_image
        return len(data)


def _footprint(img: Image.Image, detail: Detail, data_bytes: int) -> int:
    """The decoded pixels of an opened, not yet decoded image (a JPEG at the DCT scale its budget lets it decode
    at), the 8-bit image they become, an RGBA copy where tRNS transparency makes one, and the bytes themselves."""
    width, height, mode, source_format = img.width, img.height, img.mode, img.format or ""
    if source_format in ("JPEG", "MPO"):
        largest = BUDGETS["high"] if detail == "auto" else BUDGETS[detail]
        wanted_width, wanted_height = _target_size(width, height, largest)
        scale = next((s for s in (8, 4, 2) if width / s >= wanted_width and height / s >= wanted_height), 1)
        width, height = math.ceil(width / scale), math.ceil(height / scale)
    decoded = _MODE_BYTES.get(mode, 4)
    if source_format in ("AVIF", "HEIF"):
        decoded *= 2  # the decoder's own buffer beside Pillow's copy
    output = 1 if mode in _GREY_OUTPUT_MODES else 4
    alpha_copy = 4 if "transparency" in img.info and mode in ("L", "RGB") else 0
    return width * height * (decoded + output + alpha_copy) + data_bytes


def _exif_orientation(img: Image.Image) -> int:
    """EXIF orientation 1–8 of the loaded image; 1 when absent or unreadable (bad metadata keeps the pixels)."""
    # Read after load: PNG may keep eXIf after the pixels. Decoders that orient the pixels themselves (TIFF in
    # Pillow, HEIF/HEIC in libheif) have removed the tag by then, so nothing is rotated twice.
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # EXIF parsers raise anything on damaged metadata
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION_TRANSPOSE else 1


def target_size(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    """The size an image of ``width`` × ``height`` (upright) is sent at within ``budget``."""
    return _target_size(width, height, budget)


def _target_size(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    scale = min(1.0, budget.max_side / max(width, height), math.sqrt(budget.max_pixels / (width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


# --- Pixels: every mode to 8-bit RGB or L.

_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _to_rgb_or_l(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 'RGB' or 'L', flattening transparency on white and mapping deep modes to 8 bits."""
    mode = img.mode
    if mode in _DEEP_MODES:
        return _deep_to_l(img)
    if mode == "1":
        return img.convert("L")
    if mode == "P" and "transparency" in img.info and _flatten_palette_on_white(img):
        return img.convert("RGB")
    if mode in ("P", "L", "RGB") and "transparency" in img.info:
        # tRNS transparency (PNG, GIF): make it an alpha channel, then flatten it like one.
        img = img.convert("LA" if mode == "L" else "RGBA")
    if img.mode in _ALPHA_MODES:
        return _flatten_on_white(img)
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode in ("L", "RGB"):
        return img
    return img.convert("RGB")  # P without transparency, RGBX, YCbCr, LAB, HSV


def _flatten_palette_on_white(img: Image.Image) -> bool:
    """Flatten a palette image's transparency on white in its palette (256 entries), not in its pixels.

    Compositing is per pixel with that pixel's entry's alpha, so compositing each entry on white is the same
    result, without the RGBA copy (4 bytes a pixel) and the RGB copy beside it: a 100 MP palette PNG stays
    within its own 100 MB plus the RGB image it becomes. False: a transparency Pillow did not read as an index or
    per-entry alphas (the caller then goes through RGBA).
    """
    palette = img.getpalette("RGB")
    transparency = img.info.get("transparency")
    if not palette:
        return False
    entries = len(palette) // 3
    if isinstance(transparency, int):
        alphas = [0 if index == transparency else 255 for index in range(entries)]
    elif isinstance(transparency, bytes):
        alphas = list(transparency[:entries]) + [255] * (entries - len(transparency[:entries]))
    else:
        return False
    flat = [
        (value * alphas[index // 3] + 255 * (255 - alphas[index // 3]) + 127) // 255
        for index, value in enumerate(palette[: entries * 3])
    ]
    img.putpalette(flat, "RGB")
    del img.info["transparency"]
    return True


# Rows flattened at a time: the RGB copy and the alpha channel exist for one strip, never for the whole image.
_FLATTEN_STRIP_ROWS = 256


def _flatten_on_white(img: Image.Image) -> Image.Image:
    """Composite on white: transparent areas (logos, icons, cut-outs) must not turn black."""
    grey = img.mode in ("LA", "La")
    if img.mode in ("La", "RGBa", "PA"):
        img = img.convert("LA" if grey else "RGBA")  # straight alpha: Pillow only converts La to LA
    background = Image.new("L" if grey else "RGB", img.size, 255 if grey else WHITE)
    for top in range(0, img.height, _FLATTEN_STRIP_ROWS):
        box = (0, top, img.width, min(top + _FLATTEN_STRIP_ROWS, img.height))
        strip = img.crop(box)
        background.paste(strip.convert("L" if grey else "RGB"), box, mask=strip.getchannel("A"))
    return background


def _deep_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale → 8 bits, scaled rather than clipped."""
    if img.mode.startswith("I;16"):
        # 16-bit samples span 0–65535 whatever the image shows: absolute levels, so dark stays dark.
        scale, offset = 255.0 / 65535.0, 0.0
    else:
        low, high = _finite_extrema(img)
        if low >= 0 and 0 < high <= 1.0:
            scale, offset = 255.0, 0.0  # normalised float data
        elif low >= 0 and high <= 255:
            scale, offset = 1.0, 0.0
        elif low >= 0 and high <= 65535:
            scale, offset = 255.0 / 65535.0, 0.0
        else:
            span = (high - low) or 1.0
            scale, offset = 255.0 / span, -low * 255.0 / span
    floats = img if img.mode == "F" else img.convert("F")
    # NaN becomes 0 and ±inf clips to 0/255 in the final conversion.
    return floats.point(lambda value: value * scale + offset).convert("L")


def _finite_extrema(img: Image.Image) -> tuple[float, float]:
    """Lowest and highest value, ignoring NaN and ±inf (float TIFFs mark missing data with them)."""
    low, high = img.getextrema()  # single band: two numbers
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    # One NaN makes Pillow's extrema NaN: look at a sample instead, small enough to scan in Python.
    sample = img.resize((min(img.width, 512), min(img.height, 512)), Image.Resampling.NEAREST)
    values = [value for value in array.array("f", sample.tobytes()) if math.isfinite(value)]
    return (min(values), max(values)) if values else (0.0, 0.0)


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    if img.format in ("JPEG", "MPO") and "adobe" not in img.info:
        # Pillow reads every CMYK JPEG as Photoshop's inverted CMYK; without Adobe's APP14 marker it is plain.
        img = ImageChops.invert(img)
    source = _icc_profile(img.info.get("icc_profile"), "CMYK")
    if source is not None:
        try:
            converted = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken profile is not worth refusing the image: fall back to the plain conversion
    return img.convert("RGB")


def _icc_profile(icc: object, colour_space: str) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile when it parses and describes the pixels' colour space; else None."""
    if not isinstance(icc, bytes) or not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    return profile if space == colour_space else None


def _convert_icc_to_srgb(img: Image.Image, icc: object) -> Image.Image:
    """Colour-managed RGB (Display P3, Adobe RGB…) → sRGB, which is what the model assumes."""
    source = _icc_profile(icc, "RGB") if img.mode == "RGB" else None
    if source is None:
        return img
    try:
        if "srgb" in (ImageCms.getProfileDescription(source) or "").lower():
            return img
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        pass  # no readable description: convert anyway
    try:
        converted = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img
    return converted if converted is not None else img


def looks_like_document(img: Image.Image) -> bool:
    """Marks on a flat, light (or dark) background, drawn with sharp edges: a page, a receipt, a screenshot.

    Measured on a box-reduced copy of at most ~768 px: the share of background pixels, and how much of
    what is not background is edge. Text is nearly all edge (ratio above 1); a product shot on white or a
    bright sky above a building is flat inside its shapes (ratio below 0.15).
    """
    factor = max(1, math.ceil(max(img.size) / 768))
    probe = (img.reduce(factor) if factor > 1 else img).convert("L")
    histogram = probe.histogram()
    total = sum(histogram) or 1
    background = max(sum(histogram[200:]), sum(histogram[:56])) / total  # light paper or dark mode
    if background < 0.6:
        return False
    edges = probe.filter(ImageFilter.FIND_EDGES).histogram()
    strong_edges = sum(edges[48:]) / total
    return strong_edges >= 0.01 and strong_edges / max(1 - background, 1e-6) >= 0.3


def _encode(img: Image.Image, subsampling: str) -> tuple[bytes, int]:
    """The highest quality of the ladder whose base64 fits; (b'', 0) when none does."""
    for quality in JPEG_QUALITIES:
        buffer = io.BytesIO()
        # No optimize=True: it halves encoding speed for 2–5% fewer bytes, and bytes are not what is billed.
        img.save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
        if 4 * math.ceil(buffer.tell() / 3) < MAX_BASE64_BYTES:
            return buffer.getvalue(), quality
    return b"", 0


def fit_and_encode(
    pixels: Image.Image, budget: PixelBudget, *, as_document: bool, orientation: int = 1
) -> tuple[Image.Image, bytes, int]:
    """Downscale within the budget, orient, and encode a JPEG under the base64 bound: (image sent, JPEG, quality).

    Used for images and for document pages alike.
    """
    # Text in colour loses legibility with 4:2:0 chroma subsampling; photos do not. Likewise text keeps
    # Lanczos after a gentle box reduction; photos lose nothing visible to a shorter filter, at half the cost.
    subsampling = "4:4:4" if as_document else "4:2:0"
    resample, reducing_gap = (Image.Resampling.LANCZOS, 2.0) if as_document else (Image.Resampling.HAMMING, 1.25)
    jpeg, quality = b"", 0
    while not jpeg:
        width, height = _target_size(pixels.width, pixels.height, budget)
        resized = pixels
        if (width, height) != pixels.size:
            resized = pixels.resize((width, height), resample, reducing_gap=reducing_gap)
        if orientation in _ORIENTATION_TRANSPOSE:
            resized = resized.transpose(_ORIENTATION_TRANSPOSE[orientation])
        jpeg, quality = _encode(resized, subsampling)
        # Gentlest means first: quality only drops inside the ladder; only then do we give up pixels.
        budget = PixelBudget(budget.name, int(budget.max_side * 0.85), int(budget.max_pixels * 0.7))
    return resized, jpeg, quality


def prepare_image(
    data: bytes, detail: Detail, *, max_pixels: int, reserve: Callable[[int], AbstractContextManager[Any]] | None = None
) -> PreparedImage:
    """Decode, orient, flatten, downscale to the detail's pixel budget and encode a JPEG under 1 MB of base64.

    ``reserve(footprint)``, when given, is held from decoding to the encoded JPEG (the instance's decode budget):
    the footprint comes from the header already read, and data refused from its header never waits for it.
    """
    if not data:
        raise EmptyObjectError("the object is empty (0 bytes)")
    img = _open(data, max_pixels)
    _check_dimensions(img.width, img.height, max_pixels)
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        _check_jpeg_scans(data)  # only progressive decoding makes a pass over the image per scan
    with reserve(_footprint(img, detail, len(data))) if reserve else nullcontext():
        return _prepare_opened(img, detail, max_pixels)


def _prepare_opened(img: Image.Image, detail: Detail, max_pixels: int) -> PreparedImage:
    source_format = img.format or "UNKNOWN"
    source_mode = img.mode
    stored_width, stored_height = img.size
    _decode(img, source_format, detail, max_pixels)
    orientation = _exif_orientation(img)
    icc = img.info.get("icc_profile")
    try:
        pixels = _to_rgb_or_l(img)
    except (ValueError, OSError) as exc:  # a mode or palette Pillow cannot convert
        raise CorruptImageError(f"the image's pixels cannot be converted to RGB ({_reason(exc)})") from None
    if source_mode != "CMYK":
        pixels = _convert_icc_to_srgb(pixels, icc)

    document_like = looks_like_document(pixels)
    budget_name: BudgetName
    budget_name = ("high" if document_like else "standard") if detail == "auto" else detail
    detail_sent: Detail = detail if detail != "auto" else ("high" if document_like else "auto")
    resized, jpeg, quality = fit_and_encode(
        pixels, BUDGETS[budget_name], as_document=document_like, orientation=orientation
    )
    upright = (stored_height, stored_width) if orientation in (5, 6, 7, 8) else (stored_width, stored_height)
    return PreparedImage(
        jpeg=jpeg,
        source_format=source_format,
        source_mode=source_mode,
        original_width=upright[0],
        original_height=upright[1],
        sent_width=resized.width,
        sent_height=resized.height,
        jpeg_quality=quality,
        budget=budget_name,
        detail_sent=detail_sent,
        document_like=document_like,
        orientation=orientation,
    )
