"""Deterministic benchmark images (photos, a screenshot, a scan, 16-bit, CMYK, HEIC), cached under .build/."""

from __future__ import annotations

import argparse
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Bump when a generator changes so stale cached files are not reused.
VERSION = 1
CACHE_DIR = Path(__file__).resolve().parent.parent / ".build" / "bench-corpus" / f"v{VERSION}"
EXIF_ORIENTATION = 0x0112
VOCABULARY = (
    "the image pipeline reads each object once decodes it at reduced scale and sends a small jpeg to the "
    "model invoice total amount due date account number reference payment terms customer order shipping "
    "address settings profile dashboard analytics report export filter search notifications billing team project"
)


@dataclass(frozen=True)
class Sample:
    name: str
    description: str
    path: Path
    data: bytes = field(repr=False)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _photo(width: int, height: int, seed: int, grain: float = 7.0) -> Image.Image:
    """Photo-like RGB: a smooth colour field, mid-frequency texture, a gradient, shapes and sensor grain."""
    rng = _rng(seed)
    field_ = rng.integers(0, 256, (max(2, height // 400), max(2, width // 400), 3), dtype=np.uint8)
    base = Image.fromarray(field_).resize((width, height), Image.Resampling.BICUBIC)
    texture = rng.integers(0, 256, (height // 6, width // 6), dtype=np.uint8)
    detail = Image.fromarray(texture).resize((width, height), Image.Resampling.BICUBIC)
    gradient = Image.linear_gradient("L").resize((width, height))
    img = Image.blend(base, Image.merge("RGB", (gradient, detail, gradient)), 0.35)
    draw = ImageDraw.Draw(img)
    for _ in range(120):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        side = int(rng.integers(width // 40, width // 6))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + side, y + side * 0.7), fill=colour)
        else:
            draw.rectangle((x, y, x + side, y + side // 2), fill=colour)
    pixels = np.asarray(img).copy()
    for top in range(0, height, 512):  # grain in bands: a 50 MP int16 copy at once would need 300 MB
        band = pixels[top : top + 512].astype(np.int16)
        band += rng.normal(0, grain, band.shape).astype(np.int16)
        pixels[top : top + 512] = np.clip(band, 0, 255)
    return Image.fromarray(pixels)


def _camera_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Sightline"  # Make
    exif[0x0110] = "Bench Camera"  # Model
    exif[EXIF_ORIENTATION] = orientation
    return exif.tobytes()


def _jpeg(img: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _photo_jpeg(width: int, height: int, seed: int, orientation: int = 1) -> bytes:
    return _jpeg(_photo(width, height, seed), quality=90, exif=_camera_exif(orientation))


def _words(rng: np.random.Generator, count: int) -> str:
    words = VOCABULARY.split()
    return " ".join(words[int(i)] for i in rng.integers(0, len(words), count))


def _screenshot() -> bytes:
    """A 4000×3000 HiDPI app window: flat panels, buttons, a chart and lines of UI text."""
    rng = _rng(3)
    width, height = 4000, 3000
    img = Image.new("RGB", (width, height), (245, 246, 248))
    draw = ImageDraw.Draw(img)
    small, body, title = (ImageFont.load_default(size) for size in (26, 32, 48))
    draw.rectangle((0, 0, width, 110), fill=(32, 36, 48))
    draw.text((40, 30), "Sightline | Dashboard", font=title, fill=(255, 255, 255))
    draw.rectangle((0, 110, 620, height), fill=(235, 237, 242))
    for row in range(24):
        y = 160 + row * 100
        draw.rounded_rectangle((30, y, 590, y + 76), 14, fill=(221, 226, 240) if row == 2 else (235, 237, 242))
        draw.ellipse((50, y + 18, 90, y + 58), fill=(90, 110, 200))
        draw.text((110, y + 20), _words(rng, 2).title(), font=body, fill=(40, 44, 56))
    for column in range(3):
        for row in range(2):
            x, y = 680 + column * 1100, 160 + row * 1420
            draw.rounded_rectangle((x, y, x + 1040, y + 1360), 24, fill=(255, 255, 255), outline=(220, 223, 230))
            draw.text((x + 40, y + 36), _words(rng, 3).title(), font=title, fill=(20, 24, 32))
            if (column + row) % 2:
                points = [(x + 40 + i * 24, y + 520 - int(v)) for i, v in enumerate(rng.integers(0, 360, 41))]
                draw.line(points, fill=(60, 120, 220), width=6)
                text_top = y + 560
            else:
                text_top = y + 130
            for line in range((y + 1180 - text_top) // 46):
                draw.text((x + 40, text_top + line * 46), _words(rng, 8), font=small, fill=(70, 74, 86))
            draw.rounded_rectangle((x + 40, y + 1240, x + 340, y + 1320), 16, fill=(60, 120, 220))
            draw.text((x + 90, y + 1262), "Open report", font=body, fill=(255, 255, 255))
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png16() -> bytes:
    """A 4000×3000 RGB PNG at 16 bits per channel (Pillow cannot write one): Sub-filtered rows, zlib."""
    width, height = 4000, 3000
    rng = _rng(5)
    # A denoised RAW export: less grain than the camera JPEGs; the low byte still carries information.
    pixels = np.asarray(_photo(width, height, seed=5, grain=3.0)).astype(np.uint16) * 257
    pixels += rng.integers(0, 16, pixels.shape, dtype=np.uint16)
    raw = pixels.astype(">u2").view(np.uint8).reshape(height, width * 6)
    filtered = raw.copy()
    filtered[:, 6:] -= raw[:, :-6]  # filter 1 (Sub): each byte minus the same byte of the previous pixel
    rows = np.hstack([np.ones((height, 1), np.uint8), filtered])
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16-bit, truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def _cmyk_jpeg() -> bytes:
    """Inverted CMYK with an Adobe APP14 marker, as Photoshop writes it (no ICC profile)."""
    return _jpeg(_photo(4000, 3000, seed=6).convert("CMYK"), quality=90)


def _heic() -> bytes:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(_photo(4000, 3000, seed=7)).save(buffer, format="HEIF", quality=85)
    return buffer.getvalue()


def _scanned_page() -> bytes:
    """An A4 page scanned at 300 dpi: ~10 pt black text (≈ 40 px) on slightly tinted, noisy paper."""
    rng = _rng(8)
    width, height = 2480, 3508
    img = Image.new("RGB", (width, height), (242, 240, 234))
    draw = ImageDraw.Draw(img)
    body, heading = ImageFont.load_default(40), ImageFont.load_default(64)
    draw.text((250, 260), "Quarterly Statement", font=heading, fill=(20, 20, 24))
    y = 420
    while y < height - 300:
        words = int(rng.integers(8, 15)) if rng.random() > 0.12 else 0  # blank lines between paragraphs
        draw.text((250, y), _words(rng, words), font=body, fill=(28, 28, 32))
        y += 58
    img = img.filter(ImageFilter.GaussianBlur(0.7))  # optics
    pixels = np.asarray(img).astype(np.int16)
    pixels += rng.normal(0, 4, pixels.shape).astype(np.int16)
    return _jpeg(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), quality=90)


GENERATORS: dict[str, tuple[str, str, Callable[[], bytes]]] = {
    "photo-24mp": ("24 MP JPEG 6000×4000", "jpg", lambda: _photo_jpeg(6000, 4000, seed=1)),
    "photo-50mp": ("50 MP JPEG 8660×5773", "jpg", lambda: _photo_jpeg(8660, 5773, seed=2)),
    "screenshot-12mp": ("12 MP PNG screenshot 4000×3000", "png", _screenshot),
    "rotated-24mp": ("JPEG 6000×4000, EXIF orientation 6", "jpg", lambda: _photo_jpeg(6000, 4000, 4, orientation=6)),
    "png16-12mp": ("16-bit RGB PNG 4000×3000", "png", _png16),
    "cmyk-12mp": ("CMYK JPEG 4000×3000 (Adobe)", "jpg", _cmyk_jpeg),
    "heic-12mp": ("HEIC 4000×3000", "heic", _heic),
    "scan-a4": ("A4 scan at 300 dpi 2480×3508 JPEG", "jpg", _scanned_page),
}
# The timed inputs; the scan only feeds the bytes/tokens comparison.
TIMED = tuple(name for name in GENERATORS if name != "scan-a4")
LARGE_JPEGS = ("photo-24mp", "photo-50mp", "rotated-24mp")


def load(name: str, cache_dir: Path = CACHE_DIR) -> Sample:
    """The named sample, generated on first use and read from the cache afterwards."""
    description, suffix, generate = GENERATORS[name]
    path = cache_dir / f"{name}.{suffix}"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(generate())
        partial.replace(path)
    return Sample(name, description, path, path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = parser.parse_args(argv)
    for name in GENERATORS:
        sample = load(name, args.cache_dir)
        print(f"{name:16} {len(sample.data) / 1e6:7.2f} MB  {sample.description}  ({sample.path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
