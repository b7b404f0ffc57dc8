"""The PDF renderer: PDFium (pypdfium2) in a child process, one document per process, watched from here.

PDFium is not thread-safe, not even across documents, and has no sandbox (pypdfium2's documentation: "To
parallelize expensive pdfium tasks such as rendering, consider processes instead of threads"). So each
`render_document` call starts its own `python -m sightline.render_worker`, writes the PDF to its stdin and
reads length-prefixed results from its stdout (see render_worker for the protocol). Plain pipes and
`subprocess.Popen`, not `multiprocessing`: Lambda has no /dev/shm, which multiprocessing's queues and pools
need. Any number of threads may call `render_document` at once; each gets its own child.

The child limits its own address space (RLIMIT_AS) before it imports PDFium. Here: a wall-clock limit for
opening the document and for each page, and one for the whole document; on expiry the child is killed.
The document's limit runs from the moment the child is ready (its start-up, ~0.2 s, has a limit of its own,
RENDERER_START_SECONDS), so a call takes at most about RENDERER_START_SECONDS + document_seconds.
A crash, a hang or exhausted memory becomes `RendererFailedError` naming the page; a renderer that cannot
start at all is `RendererUnavailableError` (transient: not the document's fault).

The child is isolation for stability (crashes, hangs, memory), not a security sandbox: it runs with the
function's own permissions and environment.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
from typing import Any, NoReturn

from sightline.errors import PermanentInputError
from sightline.imaging import MAX_BASE64_BYTES, PreparedImage
from sightline.pages import (
    CorruptDocumentError,
    EncryptedDocumentError,
    PageTooLargeError,
    RenderedDocument,
    RenderedPage,
    RendererFailedError,
    RendererUnavailableError,
    TooManyPagesError,
    document_kind,
    page_numbers,
    read_tiff,
)
from sightline.settings import Settings

__all__ = [
    "DEFAULT_DOCUMENT_SECONDS",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_PAGE_SECONDS",
    "RENDERER_START_SECONDS",
    "ChildProcessPageRenderer",
    "render_document",
    "render_pdf",
]

# Suggested settings (the caller passes its own): a page of print renders in a fraction of a second.
DEFAULT_PAGE_SECONDS = 15.0
DEFAULT_DOCUMENT_SECONDS = 90.0
DEFAULT_MEMORY_MB = 1024
#: The child's start (interpreter, pypdfium2, Pillow) is not the document's time; it has its own limit.
RENDERER_START_SECONDS = 20.0

_WORKER_MODULE = "sightline.render_worker"
_MAX_HEADER_BYTES = 2_000_000  # a page's header carries its text layer (≤ 100,000 characters, JSON-escaped)
_MAX_PAYLOAD_BYTES = MAX_BASE64_BYTES  # a prepared JPEG is smaller than its base64
_EXIT_GRACE_SECONDS = 2.0
_STDERR_TAIL = 4096

_REFUSALS: dict[str, type[PermanentInputError]] = {
    "EncryptedDocument": EncryptedDocumentError,
    "TooManyPages": TooManyPagesError,
    "CorruptDocument": CorruptDocumentError,
    "PageTooLarge": PageTooLargeError,
    "RendererFailed": RendererFailedError,
}
_BUDGETS = ("low", "standard", "high")
_DETAILS = ("low", "high", "auto")


def render_document(
    data: bytes,
    *,
    max_pages: int,
    max_pixels: int,
    page_seconds: float,
    document_seconds: float,
    memory_mb: int,
    pages: range | None = None,
) -> RenderedDocument:
    """Every page (or `pages`, 1-based, clipped to the document) of a PDF or a multi-page TIFF, prepared.

    PDFs render in a child process (see the module's doc); a multi-page TIFF is read in this process by
    Pillow (`pages.read_tiff`: the time and memory limits do not apply to it). Raises the document errors
    of `sightline.pages`; ValueError for bytes that are neither (sniff with `pages.document_kind` first).
    """
    kind = document_kind(data)
    if kind == "tiff":
        return read_tiff(data, max_pages=max_pages, max_pixels=max_pixels, pages=pages)
    if kind != "pdf":
        raise ValueError("the data is neither a PDF nor a multi-page TIFF")
    return render_pdf(
        data,
        max_pages=max_pages,
        max_pixels=max_pixels,
        page_seconds=page_seconds,
        document_seconds=document_seconds,
        memory_mb=memory_mb,
        pages=pages,
    )


def render_pdf(
    data: bytes,
    *,
    max_pages: int,
    max_pixels: int,
    page_seconds: float,
    document_seconds: float,
    memory_mb: int,
    pages: range | None = None,
) -> RenderedDocument:
    """Render a PDF's pages in a fresh child process; see render_document."""
    if pages is not None and pages.step != 1:
        raise ValueError("pages must be a range with step 1")
    request = json.dumps(
        {
            "max_pages": max_pages,
            "max_pixels": max_pixels,
            "first": None if pages is None else pages.start,
            "last": None if pages is None else pages.stop,
        }
    ).encode("ascii")
    command = [
        sys.executable,
        "-m",
        _WORKER_MODULE,
        "--memory-mb",
        str(memory_mb),
        "--cpu-seconds",
        str(math.ceil(document_seconds + RENDERER_START_SECONDS)),  # a backstop for an orphaned child
    ]
    if not sys.executable:
        raise RendererUnavailableError("the PDF renderer cannot be started: no Python interpreter path")
    env = dict(os.environ)
    # The child must import exactly what this process imports (the function's code, the layer's packages),
    # whatever way the runtime put them on sys.path.
    env["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
    except OSError as exc:
        raise RendererUnavailableError(f"the PDF renderer cannot be started ({exc.strerror or exc})") from None
    conversation = _Conversation(
        process,
        struct.pack(">I", len(request)) + request + data,
        pages=pages,
        page_seconds=page_seconds,
        document_seconds=document_seconds,
        memory_mb=memory_mb,
    )
    try:
        return conversation.run()
    finally:
        conversation.close()


class _Conversation:
    """One child, one document: feed it, read its frames, enforce the clocks, explain how it ended."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        stdin_data: bytes,
        *,
        pages: range | None,
        page_seconds: float,
        document_seconds: float,
        memory_mb: int,
    ) -> None:
        self.process = process
        self.pages = pages
        self.page_seconds = page_seconds
        self.document_seconds = document_seconds
        self.memory_mb = memory_mb
        # The document's clock starts when the child is ready to read it: its start-up has a limit of its own.
        self.document_deadline = math.inf
        self.phase_deadline = time.monotonic() + RENDERER_START_SECONDS
        self.state = "starting"  # starting → opening → pages → done
        self.page_count = 0
        self.wanted: list[int] = []
        self.rendered: list[RenderedPage] = []
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.to_write = memoryview(stdin_data)
        self.selector = selectors.DefaultSelector()
        assert process.stdin and process.stdout and process.stderr
        self.stdin_fd = process.stdin.fileno()
        os.set_blocking(self.stdin_fd, False)
        self.selector.register(self.stdin_fd, selectors.EVENT_WRITE, "stdin")
        self.selector.register(process.stdout.fileno(), selectors.EVENT_READ, "stdout")
        self.selector.register(process.stderr.fileno(), selectors.EVENT_READ, "stderr")
        self.stdout_open = True

    # --- Where the child is, for the messages.

    @property
    def current_page(self) -> int | None:
        done = len(self.rendered)
        return self.wanted[done] if self.state == "pages" and done < len(self.wanted) else None

    def where(self) -> str:
        if self.state == "opening":
            return "while opening the document"
        page = self.current_page
        if page is not None:
            return f"on page {page}"
        return "after the last page" if self.state == "pages" else "while starting"

    # --- The loop.

    def run(self) -> RenderedDocument:
        while self.stdout_open:
            now = time.monotonic()
            deadline = min(self.phase_deadline, self.document_deadline)
            if now >= deadline:
                self._timed_out(document=self.document_deadline <= self.phase_deadline)
            for key, _ in self.selector.select(deadline - now):
                if key.data == "stdin":
                    self._write()
                elif key.data == "stdout":
                    self._read_stdout()
                else:
                    self._read_stderr()
        return self._after_stdout_closed()

    def _write(self) -> None:
        try:
            written = os.write(self.stdin_fd, self.to_write[: 1 << 16])
        except BlockingIOError:
            return
        except OSError:  # BrokenPipeError: the child is gone; its exit says why
            written = len(self.to_write)
        self.to_write = self.to_write[written:]
        if not self.to_write:
            self.selector.unregister(self.stdin_fd)
            assert self.process.stdin
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def _read_stderr(self) -> None:
        assert self.process.stderr
        chunk = os.read(self.process.stderr.fileno(), 1 << 16)
        if not chunk:
            self.selector.unregister(self.process.stderr.fileno())
            return
        self.stderr += chunk
        del self.stderr[:-_STDERR_TAIL]

    def _read_stdout(self) -> None:
        assert self.process.stdout
        chunk = os.read(self.process.stdout.fileno(), 1 << 20)
        if not chunk:
            self.selector.unregister(self.process.stdout.fileno())
            self.stdout_open = False
            return
        self.stdout += chunk
        while len(self.stdout) >= 8:
            header_length, payload_length = struct.unpack_from(">II", self.stdout)
            if header_length > _MAX_HEADER_BYTES or payload_length > _MAX_PAYLOAD_BYTES:
                self._fail(f"the PDF renderer sent an oversized result {self.where()}")
            end = 8 + header_length + payload_length
            if len(self.stdout) < end:
                return
            try:
                header = json.loads(bytes(self.stdout[8 : 8 + header_length]))
            except ValueError:
                self._fail(f"the PDF renderer sent an unreadable result {self.where()}")
            payload = bytes(self.stdout[8 + header_length : end])
            del self.stdout[:end]
            self._frame(header, payload)

    def _frame(self, header: Any, payload: bytes) -> None:
        kind = header.get("type") if isinstance(header, dict) else None
        now = time.monotonic()
        if kind == "ready" and self.state == "starting":
            self.state = "opening"
            self.phase_deadline = now + self.page_seconds
            self.document_deadline = now + self.document_seconds
        elif kind == "opened" and self.state == "opening" and _is_int(header.get("page_count")):
            self.page_count = header["page_count"]
            self.wanted = page_numbers(self.page_count, self.pages)
            self.state = "pages"
            self.phase_deadline = now + self.page_seconds
        elif kind == "page" and self.current_page is not None:
            self.rendered.append(self._page(header, payload, self.current_page))
            self.phase_deadline = now + self.page_seconds
        elif kind == "done" and self.state == "pages" and self.current_page is None:
            self.state = "done"
        elif kind == "error":
            self._refused(header)
        else:
            self._fail(f"the PDF renderer answered out of turn {self.where()} ({str(kind)[:40]})")

    def _page(self, header: dict[str, Any], jpeg: bytes, expected: int) -> RenderedPage:
        image = header.get("image")
        text = header.get("text_layer")
        width, height = header.get("width_pt"), header.get("height_pt")
        valid = (
            header.get("number") == expected
            and isinstance(image, dict)
            and set(image) == _IMAGE_FIELDS
            and all(_is_int(image[name]) and image[name] > 0 for name in _IMAGE_SIZES)
            and _is_int(image["jpeg_quality"])
            and _is_int(image["orientation"])
            and isinstance(image["source_format"], str)
            and isinstance(image["source_mode"], str)
            and image["budget"] in _BUDGETS
            and image["detail_sent"] in _DETAILS
            and isinstance(image["document_like"], bool)
            and (text is None or isinstance(text, str))
            and isinstance(width, (int, float))
            and isinstance(height, (int, float))
            and jpeg.startswith(b"\xff\xd8")
        )
        if not valid:
            self._fail(f"the PDF renderer sent a malformed result for page {expected}")
        assert isinstance(image, dict) and isinstance(width, (int, float)) and isinstance(height, (int, float))
        return RenderedPage(
            number=expected,
            image=PreparedImage(jpeg=jpeg, **image),
            text_layer=text,
            width_pt=float(width),
            height_pt=float(height),
        )

    # --- Endings.

    def _after_stdout_closed(self) -> RenderedDocument:
        remaining = min(self.document_deadline - time.monotonic(), _EXIT_GRACE_SECONDS)
        try:
            returncode = self.process.wait(timeout=max(remaining, 0.01))
        except subprocess.TimeoutExpired:
            returncode = None
        if self.state == "done" and returncode == 0:
            return RenderedDocument(kind="pdf", page_count=self.page_count, pages=tuple(self.rendered))
        if returncode is None:
            self._fail(f"the PDF renderer stopped answering {self.where()} and did not exit")
        self._exited(returncode)

    def _exited(self, returncode: int) -> NoReturn:
        stderr = self.stderr.decode("utf-8", "replace").strip()
        where = self.where()
        if self.state == "starting":
            # Before the document was even read: the interpreter or its imports failed, which under a small
            # RLIMIT_AS shows up in many shapes (MemoryError, "failed to map segment", SystemError, SIGSEGV).
            ended = f"signal {_signal_name(-returncode)}" if returncode < 0 else f"status {returncode}"
            raise RendererUnavailableError(
                f"the PDF renderer could not start within its {self.memory_mb:,} MB memory limit "
                f"(exited with {ended}{_last_line(stderr)})"
            )
        memory = f"the PDF renderer exceeded its {self.memory_mb:,} MB memory limit {where}"
        if returncode < 0:
            signal_number = -returncode
            # PDFium answers a failed allocation by calling abort() without a word (FX_OutOfMemoryTerminate),
            # and a C++ allocation failure aborts through std::terminate: both are the memory limit.
            if signal_number == signal.SIGABRT and (not stderr or "bad_alloc" in stderr):
                self._fail(memory)
            name = _signal_name(signal_number)
            if signal_number == signal.SIGKILL:
                self._fail(f"the PDF renderer was killed ({name}) {where}, likely by the system for lack of memory")
            self._fail(f"the PDF renderer crashed ({name}) {where}{_last_line(stderr)}")
        if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
            self._fail(memory)
        if returncode == 0:
            self._fail(f"the PDF renderer stopped without finishing {where}")
        self._fail(f"the PDF renderer exited with status {returncode} {where}{_last_line(stderr)}")

    def _refused(self, header: dict[str, Any]) -> NoReturn:
        error_type = header.get("error_type")
        message = str(header.get("message") or "the PDF renderer gave no reason")[:500]
        if error_type == "Memory":
            self._fail(f"the PDF renderer exceeded its {self.memory_mb:,} MB memory limit {self.where()}")
        if error_type == "Unavailable":
            raise RendererUnavailableError(message)
        self._kill()
        raise _REFUSALS.get(str(error_type), RendererFailedError)(message)

    def _timed_out(self, *, document: bool) -> NoReturn:
        self._kill()
        where = self.where()
        if self.state == "starting":
            raise RendererUnavailableError(f"the PDF renderer did not start within {RENDERER_START_SECONDS:g} s")
        if document:
            self._fail(
                f"the PDF renderer did not finish the document within {self.document_seconds:g} s "
                f"(stopped {where}, {len(self.rendered)} of {len(self.wanted) or '?'} pages done)"
            )
        if self.state == "opening":
            self._fail(f"the PDF renderer took longer than {self.page_seconds:g} s to open the document")
        self._fail(f"the PDF renderer took longer than {self.page_seconds:g} s {where}")

    def _fail(self, message: str) -> NoReturn:
        self._kill()
        if self.state == "starting":
            raise RendererUnavailableError(message)
        raise RendererFailedError(message)

    def _kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()

    def close(self) -> None:
        self._kill()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=5)
        self.selector.close()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_IMAGE_SIZES = ("original_width", "original_height", "sent_width", "sent_height")
_IMAGE_FIELDS = {
    *_IMAGE_SIZES,
    "source_format",
    "source_mode",
    "jpeg_quality",
    "budget",
    "detail_sent",
    "document_like",
    "orientation",
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""


class ChildProcessPageRenderer:
    """The PageRenderer port: `render_document` with the function's settings."""

    def __init__(
        self, *, max_pages: int, max_pixels: int, page_seconds: float, document_seconds: float, memory_mb: int
    ) -> None:
        self.max_pages = max_pages
        self.max_pixels = max_pixels
        self.page_seconds = page_seconds
        self.document_seconds = document_seconds
        self.memory_mb = memory_mb

    @classmethod
    def from_settings(cls, settings: Settings) -> ChildProcessPageRenderer:
        return cls(
            max_pages=settings.document_max_pages,
            max_pixels=settings.max_image_pixels,
            page_seconds=settings.render_page_seconds,
            document_seconds=settings.render_document_seconds,
            memory_mb=settings.render_memory_mb,
        )

    def render(self, data: bytes, pages: range | None = None) -> RenderedDocument:
        return render_document(
            data,
            max_pages=self.max_pages,
            max_pixels=self.max_pixels,
            page_seconds=self.page_seconds,
            document_seconds=self.document_seconds,
            memory_mb=self.memory_mb,
            pages=pages,
        )
