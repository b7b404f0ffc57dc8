"""Image preparation: bytes of any common image in, the smallest legible base64 JPEG payload out.

Pure: no AWS, no network. Every refusal is one of the domain's permanent errors.
"""

from __future__ import annotations

import base64
import io
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageCms, UnidentifiedImageError

from sightline.errors import (
    CorruptImageError,
    EmptyObjectError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedImageFormatError,
)
from sightline.settings import Detail

# The provider's guide: base64 payloads "should ideally be under 1MB". Stay under the decimal megabyte.
MAX_BASE64_BYTES = 1_000_000
# Formats we decode (MPO opens through the JPEG plugin). Restricting Pillow's sniffing keeps exotic,
# rarely-audited decoders out of reach; a format this Pillow build lacks is simply not offered.
Image.init()
ACCEPTED_FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF") if f in Image.OPEN)
# Absurd shapes (a 1×100000 strip) are refused even when the pixel count is fine.
MAX_SIDE = 30_000
MAX_ASPECT_RATIO = 50
JPEG_QUALITIES = (85, 78, 70, 60)
WHITE = (255, 255, 255)

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
    """Qwen2.5-VL style estimate: one token per 28×28 patch (the default model's billing)."""
    return math.ceil(width / 28) * math.ceil(height / 28)


def _sniff_non_image(data: bytes) -> None:
    """Name the common non-images precisely instead of a generic 'cannot identify'."""
    head = data[:512].lstrip()
    lowered = head.lower()
    if head.startswith(b"%PDF"):
        raise UnsupportedImageFormatError("the object is a PDF document; PDF input is not supported yet")
    if head.startswith(b"PK\x03\x04"):
        raise NotAnImageError("the object is a ZIP archive (or an Office document), not an image")
    if b"<svg" in lowered:
        raise UnsupportedImageFormatError("the object is an SVG vector drawing; only raster images are supported")
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        raise NotAnImageError("the object is an HTML page, not an image")


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit right after reading the header.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image has too many pixels to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise NotAnImageError("the object's bytes are not a supported image format") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise CorruptImageError(f"the image header cannot be read: {exc}") from None


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise CorruptImageError(f"the image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}×{height} ({width * height:,} pixels), above the limit of {max_pixels:,}"
        )
    if max(width, height) > MAX_SIDE or max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageTooLargeError(f"the image's dimensions are out of range ({width}×{height})")


def _target_size(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    scale = min(1.0, budget.max_side / max(width, height), math.sqrt(budget.max_pixels / (width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb_or_l(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 'RGB' or 'L', flattening transparency on white and mapping deep modes to 8 bits."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _deep_to_l(img)
    if mode == "1":
        return img.convert("L")
    if mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode in ("L", "RGB"):
        return img
    return img.convert("RGB")


def _deep_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale → 8 bits, keeping absolute levels where the range is standard."""
    img = img.convert("F") if img.mode != "F" else img
    low, high = img.getextrema()  # single band: two numbers
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    if low >= 0 and high <= 1.0 and high > 0:
        scale, offset = 255.0, 0.0  # normalised float data
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif low >= 0 and high <= 65535:
        scale, offset = 255.0 / 65535.0, 0.0
    else:
        span = (high - low) or 1.0
        scale, offset = 255.0 / span, -low * 255.0 / span
    return img.point(lambda value: value * scale + offset).convert("L")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile is not worth refusing the image: fall back to the plain conversion
    return img.convert("RGB")


def _convert_icc_to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Colour-managed RGB (Display P3, Adobe RGB…) → sRGB, which is what the model assumes."""
    if not icc or img.mode != "RGB":
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(source) or "").lower():
            return img
        converted = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        return converted if converted is not None else img
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img


def looks_like_document(img: Image.Image) -> bool:
    """Dark marks on a light, mostly flat background: a page, a receipt, a screenshot of text."""
    probe = img.convert("L")
    probe.thumbnail((768, 768), Image.Resampling.BOX)  # large enough that thin strokes stay dark
    histogram = probe.histogram()
    total = sum(histogram) or 1
    background = sum(histogram[200:]) / total
    ink = sum(histogram[:140]) / total
    return background >= 0.6 and 0.003 <= ink <= 0.35


def _encode(img: Image.Image, subsampling: str) -> tuple[bytes, int]:
    """The highest quality of the ladder whose base64 fits; (b'', 0) when none does."""
    for quality in JPEG_QUALITIES:
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality, optimize=True, subsampling=subsampling)
        if 4 * math.ceil(buffer.tell() / 3) < MAX_BASE64_BYTES:
            return buffer.getvalue(), quality
    return b"", 0


def prepare_image(data: bytes, detail: Detail, *, max_pixels: int) -> PreparedImage:
    """Decode, orient, flatten, downscale to the detail's pixel budget and encode a JPEG under 1 MB of base64."""
    if not data:
        raise EmptyObjectError("the object is empty (0 bytes)")
    _sniff_non_image(data)
    img = _open(data)
    source_format = img.format or "UNKNOWN"
    source_mode = img.mode
    stored_width, stored_height = img.size
    _check_dimensions(stored_width, stored_height, max_pixels)
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except (OSError, SyntaxError, ValueError, struct.error, TypeError):
        orientation = 1  # unreadable EXIF is not a reason to refuse the pixels
    icc = img.info.get("icc_profile")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if getattr(img, "is_animated", False):
                img.seek(0)  # first frame of animated GIF/WebP/APNG
            # Decode no more than the largest budget needs: JPEG scales in the DCT domain (1/2, 1/4, 1/8).
            if source_format in ("JPEG", "MPO"):
                largest = BUDGETS["high"] if detail == "auto" else BUDGETS[detail]
                img.draft(None, _target_size(stored_width, stored_height, largest))
            img.load()
            pixels = _to_rgb_or_l(img)
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image has too many pixels to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, MemoryError) as exc:
        raise CorruptImageError(f"the image data is truncated or corrupt: {exc}") from None
    if source_mode != "CMYK":
        pixels = _convert_icc_to_srgb(pixels, icc)

    document_like = looks_like_document(pixels)
    budget_name: BudgetName
    budget_name = ("high" if document_like else "standard") if detail == "auto" else detail
    detail_sent: Detail = detail if detail != "auto" else ("high" if document_like else "auto")
    # Text in colour loses legibility with 4:2:0 chroma subsampling; photos do not.
    subsampling = "4:4:4" if document_like else "4:2:0"

    budget = BUDGETS[budget_name]
    jpeg, quality = b"", 0
    while not jpeg:
        width, height = _target_size(pixels.width, pixels.height, budget)
        resized = pixels
        if (width, height) != pixels.size:
            resized = pixels.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
        if orientation in _ORIENTATION_TRANSPOSE:
            resized = resized.transpose(_ORIENTATION_TRANSPOSE[orientation])
        jpeg, quality = _encode(resized, subsampling)
        # Gentlest means first: quality only drops inside the ladder; only then do we give up pixels.
        budget = PixelBudget(budget.name, int(budget.max_side * 0.85), int(budget.max_pixels * 0.7))
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
