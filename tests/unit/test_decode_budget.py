"""The decode budget (decoded-pixel memory in flight), the footprint estimate it admits images by, and the
low-memory flattening of transparency that keeps one image at the pixel limit inside it."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image, ImageChops

from sightline.decode_budget import MIB, DecodeBudget, capacity_for
from sightline.errors import NotAnImageError
from sightline.imaging import _flatten_on_white, _to_rgb_or_l, decode_footprint, prepare_image
from tests.unit.images import encode, photo

pytestmark = pytest.mark.unit


def wait_until(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_capacity_is_half_the_function_memory_with_a_floor() -> None:
    assert capacity_for(2048) == 1024 * MIB
    assert capacity_for(3008) == 1504 * MIB
    assert capacity_for(128) == 256 * MIB


def test_reservations_that_fit_run_together_and_one_that_does_not_waits() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []
    with budget.reserve(40), budget.reserve(60):
        assert budget.in_use == 100
        waiter = threading.Thread(target=lambda: (budget.reserve(10).__enter__(), order.append("small")))
        waiter.start()
        time.sleep(0.05)
        assert order == []  # no room: waits
    waiter.join(5)
    assert order == ["small"]


def test_an_image_larger_than_the_budget_runs_alone_instead_of_never() -> None:
    budget = DecodeBudget(100)
    with budget.reserve(10_000) as weight:
        assert weight == 100 and budget.in_use == 100
    assert budget.in_use == 0


def test_first_come_first_served_a_large_image_is_not_overtaken_by_small_ones() -> None:
    budget = DecodeBudget(100)
    entered: list[str] = []
    release_first = threading.Event()

    def hold(name: str, weight: int, until: threading.Event | None = None) -> None:
        with budget.reserve(weight):
            entered.append(name)
            if until is not None:
                until.wait(5)

    first = threading.Thread(target=hold, args=("first", 60, release_first))
    first.start()
    wait_until(lambda: entered == ["first"])
    large = threading.Thread(target=hold, args=("large", 80))
    large.start()
    wait_until(lambda: len(budget._waiting) == 1)
    small = threading.Thread(target=hold, args=("small", 10))  # would fit now, but the large one came first
    small.start()
    wait_until(lambda: len(budget._waiting) == 2)
    assert entered == ["first"]
    release_first.set()
    for thread in (first, large, small):
        thread.join(5)
    assert entered == ["first", "large", "small"]


def test_a_reservation_is_returned_when_the_block_raises() -> None:
    budget = DecodeBudget(100)
    with pytest.raises(RuntimeError), budget.reserve(70):
        raise RuntimeError("decoder failed")
    assert budget.in_use == 0


def test_footprint_counts_pixels_by_mode_and_a_jpeg_at_its_dct_scale() -> None:
    rgba = encode(Image.new("RGBA", (2000, 1000), (0, 0, 0, 0)), "PNG")
    assert decode_footprint(rgba, "auto") == 2000 * 1000 * (4 + 4) + len(rgba)
    grey = encode(Image.new("L", (2000, 1000), 128), "PNG")
    assert decode_footprint(grey, "auto") == 2000 * 1000 * (1 + 1) + len(grey)
    palette = encode(Image.new("P", (2000, 1000)), "PNG", transparency=0)
    assert decode_footprint(palette, "auto") == 2000 * 1000 * (1 + 4) + len(palette)
    # A 8000x6000 JPEG sent at most ~2048 px wide decodes at 1/2 or smaller: far less than its full size.
    jpeg = encode(photo(8000, 6000), "JPEG", quality=60)
    assert decode_footprint(jpeg, "high") <= 4000 * 3000 * 8 + len(jpeg)
    assert decode_footprint(jpeg, "low") < decode_footprint(jpeg, "high")


def test_footprint_of_what_is_not_an_image_is_its_bytes() -> None:
    assert decode_footprint(b"<html>not an image</html>", "auto") == len(b"<html>not an image</html>")
    assert decode_footprint(b"", "auto") == 0


@pytest.mark.parametrize("transparency", ["index", "alphas"])
def test_palette_transparency_flattened_in_the_palette_equals_flattening_the_rgba_pixels(transparency: str) -> None:
    source = photo(300, 200).quantize(64)
    if transparency == "index":
        source.info["transparency"] = 5
    else:
        source.info["transparency"] = bytes((index * 37) % 256 for index in range(64))
    expected = _flatten_on_white(source.convert("RGBA"))  # what the pixels composite to, the long way
    actual = _to_rgb_or_l(source.copy())
    assert actual.mode == "RGB"
    difference = ImageChops.difference(actual, expected)
    assert max(high for _, high in difference.getextrema()) <= 1  # rounding only


def test_flattening_in_strips_equals_flattening_at_once() -> None:
    image = photo(300, 700).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize((300, 700)))
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image.convert("RGB"), mask=image.getchannel("A"))
    assert ImageChops.difference(_flatten_on_white(image), background).getbbox() is None


def test_a_transparent_palette_png_prepares_as_before_on_white() -> None:
    logo = Image.new("P", (400, 200), 0)
    logo.putpalette([0, 0, 0, 200, 30, 30] + [0, 0, 0] * 254)
    logo.paste(1, (100, 50, 300, 150))
    prepared = prepare_image(encode(logo, "PNG", transparency=0), "auto", max_pixels=100_000_000)
    sent = Image.open(io.BytesIO(prepared.jpeg)).convert("RGB")
    corner = sent.getpixel((2, 2))
    centre = sent.getpixel((sent.width // 2, sent.height // 2))
    assert all(channel >= 245 for channel in corner)  # transparent → white, not black
    assert centre[0] > 150 and centre[1] < 80  # the red mark kept


def test_preparation_holds_its_footprint_while_it_decodes_and_a_refused_header_never_waits() -> None:
    reserved: list[int] = []
    budget = DecodeBudget(10**12)

    def reserve(footprint: int):
        reserved.append(footprint)
        return budget.reserve(footprint)

    data = encode(Image.new("RGBA", (300, 200), (0, 0, 0, 0)), "PNG")
    prepare_image(data, "auto", max_pixels=100_000_000, reserve=reserve)
    assert reserved == [decode_footprint(data, "auto")] and budget.in_use == 0
    with pytest.raises(NotAnImageError, match="an HTML page, not an image"):
        prepare_image(b"<html>not an image</html>", "auto", max_pixels=100_000_000, reserve=reserve)
    assert len(reserved) == 1
