"""Property tests: any bytes in, a JPEG under 1 MB of base64 or a permanent input error out, quickly.

HYPOTHESIS_PROFILE=deep runs thousands of examples to hunt bugs; the default "ci" profile is small and
derandomized so CI is reproducible and finishes in well under a minute on two cores.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from scripts.make_bad_corpus import sample_images
from sightline.errors import (
    CorruptImageError,
    EmptyObjectError,
    ImageTooLargeError,
    NotAnImageError,
    PermanentInputError,
    UnsupportedImageFormatError,
)
from sightline.imaging import MAX_BASE64_BYTES, PreparedImage, prepare_image

pytestmark = [
    pytest.mark.unit,
    # Pillow warns about the damaged and oversized files these tests feed it on purpose.
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=3000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "deep",
    max_examples=20_000,
    deadline=3000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Applied per test rather than loaded globally, so other modules' Hypothesis settings stay their own.
PROFILE = settings.get_profile("deep" if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else "ci")

LIMIT = 100_000_000
REFUSALS = (EmptyObjectError, NotAnImageError, UnsupportedImageFormatError, CorruptImageError, ImageTooLargeError)
# A hang fails the example instead of stalling CI (the deadline only judges examples that finish).
HARD_TIMEOUT_SECONDS = 20


@cache
def seeds() -> dict[str, bytes]:
    return sample_images()


@contextmanager
def hard_timeout(seconds: int) -> Iterator[None]:
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"prepare_image ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_prepared_or_refused(data: bytes) -> None:
    """The contract: a valid JPEG payload under the limit, or one of the domain's permanent refusals."""
    with hard_timeout(HARD_TIMEOUT_SECONDS):
        try:
            prepared = prepare_image(data, "auto", max_pixels=LIMIT)
        except PermanentInputError as refusal:
            assert isinstance(refusal, REFUSALS), f"unexpected refusal type {type(refusal).__name__}"
            assert refusal.message.strip()
            return
    assert isinstance(prepared, PreparedImage)
    assert prepared.bytes_sent < MAX_BASE64_BYTES
    sent = Image.open(io.BytesIO(prepared.jpeg))
    assert sent.format == "JPEG"
    assert sent.size == (prepared.sent_width, prepared.sent_height)
    assert sent.mode in ("RGB", "L")


# --- Mutations of valid files: the header bytes that hold the dimensions get extra attention.

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING_WORDS = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 30_000, 65_000, 0x7FFFFFFF, 0xFFFFFFFF)
HEADER_BYTES = 64


@st.composite
def positions(draw: st.DrawFn, length: int) -> int:
    """Half the time inside the header, where sizes, depths and offsets live."""
    if length <= 1:
        return 0
    in_header = draw(st.booleans())
    return draw(st.integers(0, min(length, HEADER_BYTES) - 1 if in_header else length - 1))


Mutation = tuple[str, int, int | bytes]  # (kind, position, argument)


@st.composite
def mutations(draw: st.DrawFn, length: int) -> Mutation:
    at = draw(positions(length))
    kind = draw(st.sampled_from(["flip", "byte", "<H", ">H", "<I", ">I", "insert", "delete", "truncate", "copy"]))
    argument: int | bytes
    if kind == "flip":
        argument = draw(st.integers(0, 7))
    elif kind == "byte":
        argument = draw(st.sampled_from(INTERESTING_BYTES) | st.integers(0, 255))
    elif kind in ("<H", ">H", "<I", ">I"):  # 16/32-bit fields: widths, heights, offsets, lengths
        argument = draw(st.sampled_from(INTERESTING_WORDS) | st.integers(0, 0xFFFFFFFF))
    elif kind == "insert":
        argument = draw(st.binary(min_size=1, max_size=16))
    elif kind == "copy":  # a stretch of the file somewhere else: repeated chunks, markers, boxes
        argument = draw(positions(length))
    else:
        argument = draw(st.integers(1, 32))
    return kind, at, argument


def mutate(data: bytes, mutation: Mutation) -> bytes:
    kind, at, argument = mutation
    at = min(at, len(data))
    if kind == "flip" and at < len(data):
        assert isinstance(argument, int)
        return data[:at] + bytes([data[at] ^ (1 << argument)]) + data[at + 1 :]
    if kind == "byte":
        assert isinstance(argument, int)
        return data[:at] + bytes([argument]) + data[at + 1 :]
    if kind in ("<H", ">H", "<I", ">I"):
        assert isinstance(argument, int)
        size = struct.calcsize(kind)
        return data[:at] + struct.pack(kind, argument % (1 << (8 * size))) + data[at + size :]
    if kind == "insert":
        assert isinstance(argument, bytes)
        return data[:at] + argument + data[at:]
    if kind == "delete":
        assert isinstance(argument, int)
        return data[:at] + data[at + argument :]
    if kind == "truncate":
        return data[: max(1, at)]
    if kind == "copy":
        assert isinstance(argument, int)
        return data[:at] + data[argument : argument + 64] + data[at:]
    return data


def repair_png_checksums(data: bytes) -> bytes:
    """Recompute every chunk CRC, so a mutated PNG header reaches the decoder instead of the checksum test."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    repaired, at = bytearray(data), 8
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        end = at + 8 + length
        if end + 4 > len(data):
            break
        struct.pack_into(">I", repaired, end, zlib.crc32(data[at + 4 : end]))
        at = end + 4
    return bytes(repaired)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(seeds())))
    data = seeds()[name]
    for mutation in draw(st.lists(mutations(len(data)), min_size=1, max_size=6)):
        data = mutate(data, mutation)
    return repair_png_checksums(data) if draw(st.booleans()) else data


@PROFILE
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_prepared_or_refused(data: bytes) -> None:
    assert_prepared_or_refused(data)


@PROFILE
@given(st.sampled_from(["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIC", "AVIF"]), st.binary(max_size=2048))
def test_a_valid_signature_followed_by_garbage_is_refused(fmt: str, tail: bytes) -> None:
    magic = {
        "JPEG": b"\xff\xd8\xff",
        "PNG": b"\x89PNG\r\n\x1a\n",
        "GIF": b"GIF89a",
        "WEBP": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
        "TIFF": b"II*\x00",
        "BMP": b"BM" + bytes(12) + b"\x28\x00\x00\x00",
        "HEIC": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        "AVIF": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    }[fmt]
    assert_prepared_or_refused(magic + tail)


@PROFILE
@given(mutated_images())
def test_mutated_images_are_prepared_or_refused(data: bytes) -> None:
    assert_prepared_or_refused(data)


def test_every_seed_is_prepared() -> None:
    """The mutation seeds themselves are valid: a refusal of a mutant means the mutation broke it."""
    for name, data in seeds().items():
        prepared = prepare_image(data, "auto", max_pixels=LIMIT)
        assert prepared.bytes_sent < MAX_BASE64_BYTES, name
