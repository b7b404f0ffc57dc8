"""The PDF renderer's child process: `python -m sightline.render_worker --memory-mb N --cpu-seconds S`.

One document per process. PDFium is not thread-safe (not even across documents) and has no sandbox, so
`sightline.adapters.page_renderer` starts one of these per document and watches it: a crash, a hang or
memory exhaustion here ends this process only.

Protocol (all integers big-endian):
- stdin: a request, `u32 length` + JSON {max_pages, max_pixels, first, last}, then the PDF's bytes to EOF;
- stdout: frames, `u32 header length` + `u32 payload length` + JSON header + payload:
  {"type": "ready"} once the imports are done; {"type": "opened", "page_count": n} once the document
  opened and passed the page cap; {"type": "page", "number", "width_pt", "height_pt", "text_layer", "image":
  {PreparedImage fields but jpeg}} with the JPEG as payload, one a page; then {"type": "done"}; or, instead of
  the rest, {"type": "error", "error_type", "message", "page"}.

The memory limit (RLIMIT_AS) and a CPU-time backstop are set before anything else is imported.

Test hooks, honoured only when their environment variable is set (never set in a deployment):
SIGHTLINE_RENDER_TEST_HANG=<page> sleeps forever before rendering that page (1-based);
SIGHTLINE_RENDER_TEST_CRASH=<page> dies of a segmentation fault there, as a PDFium bug would;
SIGHTLINE_RENDER_TEST_PAGE_DELAY=<seconds> sleeps that long before every page.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import struct
import sys
import time
from typing import Any, BinaryIO

PDFIUM_OUT_OF_MEMORY = "Memory"  # error_type of the frame a MemoryError becomes


def _limit_resources(memory_mb: int, cpu_seconds: int) -> None:
    """Address space (PDFium aborts when an allocation fails), CPU time as a backstop, no core dumps."""
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that started it goes away (an orphan never renders on)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(3)


class Channel:
    """Length-prefixed frames on a private copy of stdout; fd 1 itself goes to stderr, so a stray write
    from native code cannot corrupt the protocol."""

    def __init__(self) -> None:
        self._out: BinaryIO = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        encoded = json.dumps(header, ensure_ascii=True).encode("ascii")
        self._out.write(struct.pack(">II", len(encoded), len(payload)) + encoded + payload)
        self._out.flush()

    def error(self, error_type: str, message: str, page: int | None = None) -> None:
        self.send({"type": "error", "error_type": error_type, "message": message, "page": page})


class Refusal(Exception):
    def __init__(self, error_type: str, message: str, page: int | None = None) -> None:
        super().__init__(message)
        self.error_type, self.message, self.page = error_type, message, page


def _read_request(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack(">I", stream.read(4))
    request = json.loads(stream.read(length))
    return request, stream.read()


def _test_hook(name: str, number: int) -> bool:
    value = os.environ.get(name)
    return value is not None and value.strip() == str(number)


def _run(channel: Channel, request: dict[str, Any], data: bytes) -> None:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    from sightline.errors import SightlineError
    from sightline.pages import check_page_size, clean_text_layer, page_numbers, pdf_render_scale, prepare_page

    max_pages: int = request["max_pages"]
    max_pixels: int = request["max_pixels"]
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = exc.err_code
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise Refusal("EncryptedDocument", "the PDF is encrypted and needs a password to open") from None
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise Refusal(
                "EncryptedDocument", "the PDF is protected by a security handler that is not supported"
            ) from None
        if code == pdfium_c.FPDF_ERR_SUCCESS:
            raise Refusal("CorruptDocument", "the PDF has no pages") from None
        raise Refusal("CorruptDocument", "the PDF is damaged or truncated and cannot be opened") from None
    page_count = len(pdf)
    if page_count > max_pages:
        raise Refusal(
            "TooManyPages", f"the PDF has {page_count:,} pages, above the limit of {max_pages:,}; none was rendered"
        )
    channel.send({"type": "opened", "page_count": page_count})

    first, last = request["first"], request["last"]
    wanted = page_numbers(page_count, None if first is None else range(first, last))
    sizes = {}
    for number in wanted:  # every requested page's size first: an oversized page 40 fails before page 1 renders
        try:
            width, height = pdf.get_page_size(number - 1)
        except pdfium.PdfiumError:
            raise Refusal("CorruptDocument", f"page {number} of the PDF cannot be read", number) from None
        try:
            check_page_size(number, width, height, max_pixels, unit="pt")
        except SightlineError as exc:
            raise Refusal(exc.error_type, exc.message, number) from None
        sizes[number] = (width, height)

    delay = float(os.environ.get("SIGHTLINE_RENDER_TEST_PAGE_DELAY") or 0)
    for number in wanted:
        if delay:
            time.sleep(delay)
        if _test_hook("SIGHTLINE_RENDER_TEST_HANG", number):
            while True:
                time.sleep(3600)
        if _test_hook("SIGHTLINE_RENDER_TEST_CRASH", number):
            import ctypes

            ctypes.string_at(0)  # SIGSEGV
        width, height = sizes[number]
        try:
            page = pdf[number - 1]
            scale = pdf_render_scale(width, height, max_pixels=max_pixels)
            bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255), draw_annots=True)
            pixels = bitmap.to_pil()
            textpage = page.get_textpage()
            text = clean_text_layer(textpage.get_text_bounded()) if textpage.count_chars() > 0 else None
        except pdfium.PdfiumError as exc:
            if "bitmap" in str(exc).lower():  # PDFium returns no bitmap when it cannot allocate one
                raise Refusal(PDFIUM_OUT_OF_MEMORY, f"no memory for the bitmap of page {number}", number) from None
            raise Refusal("CorruptDocument", f"page {number} of the PDF cannot be rendered ({exc})", number) from None
        try:
            prepared = prepare_page(pixels, kind="pdf")
        except SightlineError as exc:
            raise Refusal("RendererFailed", f"page {number} could not be prepared: {exc.message}", number) from None
        image = {
            "source_format": prepared.source_format,
            "source_mode": prepared.source_mode,
            "original_width": prepared.original_width,
            "original_height": prepared.original_height,
            "sent_width": prepared.sent_width,
            "sent_height": prepared.sent_height,
            "jpeg_quality": prepared.jpeg_quality,
            "budget": prepared.budget,
            "detail_sent": prepared.detail_sent,
            "document_like": prepared.document_like,
            "orientation": prepared.orientation,
        }
        header = {"type": "page", "number": number, "width_pt": width, "height_pt": height, "text_layer": text}
        channel.send(header | {"image": image}, prepared.jpeg)
        for resource_ in (textpage, bitmap, page):
            resource_.close()
    channel.send({"type": "done"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sightline.render_worker")
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    args = parser.parse_args(argv)
    _limit_resources(args.memory_mb, args.cpu_seconds)
    _die_with_parent()
    channel = Channel()
    try:
        import pypdfium2  # noqa: F401  (imported here, under the limits, so a failure is reported as such)

        import sightline.pages  # noqa: F401
    except MemoryError:
        channel.error("Unavailable", f"the PDF renderer cannot start within its {args.memory_mb:,} MB memory limit")
        return 1
    except ImportError as exc:
        if "memory" in str(exc).lower() or "failed to map" in str(exc).lower():
            channel.error("Unavailable", f"the PDF renderer cannot start within its {args.memory_mb:,} MB memory limit")
        else:
            channel.error("Unavailable", f"the PDF renderer cannot be loaded ({exc})")
        return 1
    channel.send({"type": "ready"})
    try:
        request, data = _read_request(sys.stdin.buffer)
        _run(channel, request, data)
    except Refusal as refusal:
        channel.error(refusal.error_type, refusal.message, refusal.page)
        return 0
    except MemoryError:
        channel.error(PDFIUM_OUT_OF_MEMORY, "Python ran out of memory")
        return 1
    except BrokenPipeError:
        return 1  # the parent gave up on us
    return 0


if __name__ == "__main__":
    sys.exit(main())
