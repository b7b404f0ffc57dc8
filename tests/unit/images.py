"""Small image factories for the unit tests (deterministic, generated in memory)."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def photo(width: int, height: int) -> Image.Image:
    """A colourful, photo-like picture: gradients and shapes, no large flat white areas."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 5, height // 5), fill=(220, 20, 20))  # red marker at the stored top-left
    draw.ellipse((width // 3, height // 3, width // 2, height // 2), fill=(20, 160, 60))
    return image


def page(width: int = 1240, height: int = 1754) -> Image.Image:
    """A printed page: black lines of text on white."""
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for row in range(40):
        draw.text((80, 80 + row * 40), f"Line {row}: the quick brown fox jumps over the lazy dog", fill=0)
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))
