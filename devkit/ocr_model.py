"""An honest offline stand-in for a vision model: reads text with RapidOCR and says it cannot caption.

It answers the three request shapes the pipeline sends: one image to describe; document pages (one or two
page images plus a "Pages in this request: 7, 8" line) with the OCR'd text of each page; and the text-only
document summary (a <document_text pages="N"> part) with a summary built from that text.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from devkit.model_server import (
    ChatRequest,
    ModelServer,
    Reply,
    completion,
    error_reply,
    estimate_prompt_tokens,
    image_url_error_reply,
)

__all__ = ["NO_CAPTION_DESCRIPTION", "OcrBox", "OcrResponder", "main", "order_lines"]

log = logging.getLogger(__name__)

MODEL_ID = "local-ocr"
NO_CAPTION_DESCRIPTION = (
    "No caption model is configured: this local endpoint only reads text (offline OCR with RapidOCR). "
    "Set MODEL_API_KEY and MODEL_BASE_URL to describe images with a real vision model."
)
NO_TEXT_ALT = "Image (no caption model configured)"
ALT_PREFIX = "Image containing the text: "
ALT_TEXT_LIMIT = 125
DOCUMENT_TAGS = ("local-ocr", "document")
DOCUMENT_ALT_LIMIT = 100
NO_TEXT_DOCUMENT_ALT = "Document"
PAGE_DESCRIPTION = "Page {page} of a document (read by local OCR; no caption model configured)"

# The request shapes of document intake (sightline/prompt.py writes them).
PAGES_LINE = re.compile(r"^Pages in this request: (\d+(?:, \d+)*)$", re.M)
DOCUMENT_TEXT = re.compile(r"<document_text\b([^>]*)>(.*?)(?:</document_text>|\Z)", re.S)
PAGES_ATTRIBUTE = re.compile(r"""\bpages\s*=\s*["']?(\d+)""")
MARKUP_LINE = re.compile(r"^</?[A-Za-z_][^<>]*>$")  # a line that is only a tag, e.g. a page marker


@dataclass(frozen=True)
class OcrBox:
    """One detected text fragment with its axis-aligned bounds."""

    text: str
    left: float
    top: float
    right: float
    bottom: float
    score: float = 1.0

    @property
    def centre_y(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def height(self) -> float:
        return self.bottom - self.top


def order_lines(boxes: Sequence[OcrBox]) -> list[str]:
    """Group boxes into lines (top to bottom) and each line's boxes left to right.

    A box joins the current line when its vertical centre is within about half a line
    height of the line's centre, so words the detector split apart stay on one line.
    """
    lines: list[list[OcrBox]] = []
    for box in sorted(boxes, key=lambda b: (b.centre_y, b.left)):
        if lines:
            line = lines[-1]
            line_centre = statistics.fmean(b.centre_y for b in line)
            line_height = max(statistics.median(b.height for b in line), box.height)
            if abs(box.centre_y - line_centre) <= line_height / 2:
                line.append(box)
                continue
        lines.append([box])
    return [" ".join(b.text for b in sorted(line, key=lambda b: b.left)) for line in lines]


def _alt_text(lines: Sequence[str]) -> str:
    words = " ".join(lines).split()
    if not words:
        return NO_TEXT_ALT
    alt = ALT_PREFIX + " ".join(words)
    if len(alt) <= ALT_TEXT_LIMIT:
        return alt
    cut = alt[: ALT_TEXT_LIMIT - 3]
    if " " in cut[len(ALT_PREFIX) :]:  # End on a whole word when there is one to end on.
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "..."


def _decode(data: bytes) -> Image.Image:
    """Decode to RGB as a viewer would show it: EXIF orientation applied, alpha over white."""
    with Image.open(BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")


class OcrResponder:
    """A ModelServer responder that answers the Sightline JSON shape from OCR alone."""

    def __init__(self, *, min_score: float = 0.5, model_id: str = MODEL_ID) -> None:
        self.min_score = min_score
        self.model_id = model_id
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        # RapidOCR's ONNX sessions are not safe to call concurrently.
        self._call_lock = threading.Lock()

    def _get_engine(self) -> Any:
        with self._engine_lock:
            if self._engine is None:
                # Imported lazily: loading onnxruntime and the models takes a noticeable moment.
                from rapidocr_onnxruntime import RapidOCR

                self._engine = RapidOCR()
            return self._engine

    def warm_up(self) -> None:
        """Build the OCR engine now instead of on the first request."""
        self._get_engine()

    def read_boxes(self, image: Image.Image) -> list[OcrBox]:
        engine = self._get_engine()
        with self._call_lock:
            result, _elapsed = engine(image)
        boxes: list[OcrBox] = []
        for points, text, score in result or []:
            if float(score) < self.min_score or not str(text).strip():
                continue
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            boxes.append(OcrBox(str(text).strip(), min(xs), min(ys), max(xs), max(ys), float(score)))
        return boxes

    def read_lines(self, image: Image.Image) -> list[str]:
        """OCR an image and return its text lines in reading order."""
        return order_lines(self.read_boxes(image))

    def __call__(self, request: ChatRequest) -> Reply:
        refusal = image_url_error_reply(request)
        if refusal is not None:
            return refusal
        try:
            images = request.images
        except ValueError as exc:
            return error_reply(400, f"Invalid image data URL: {exc}", "invalid_request_error", code="invalid_image")
        if not images:
            if _document_text(request) is not None:
                return self._reply(request, _summary_answer(request))
            return error_reply(
                400,
                "This local OCR endpoint needs an image_url part with a data URL or a loopback http(s) URL.",
                "invalid_request_error",
                code="missing_image",
            )
        pages = _pages_in_request(request)
        if pages is not None and len(pages) != len(images):
            return error_reply(
                400,
                f"The request lists pages {', '.join(map(str, pages))} but holds {len(images)} image(s).",
                "invalid_request_error",
                code="page_count_mismatch",
            )
        try:
            decoded = [_decode(part.data) for part in images]  # all of them before any OCR: fail fast
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            # The same status and code OpenAI answers for undecodable images.
            return error_reply(
                400,
                "You uploaded an unsupported image. Please make sure your image is valid.",
                "invalid_request_error",
                code="invalid_image_format",
            )
        read = [self.read_lines(image) for image in decoded]
        if pages is not None:
            entries = [
                {"page": page, "description": PAGE_DESCRIPTION.format(page=page), "text": "\n".join(lines)}
                for page, lines in zip(pages, read, strict=True)
            ]
            return self._reply(request, {"pages": entries})
        all_lines = [line for lines in read for line in lines]
        return self._reply(
            request,
            {
                "description": NO_CAPTION_DESCRIPTION,
                "alt_text": _alt_text(all_lines),
                "text": "\n".join(all_lines),
                "tags": ["local-ocr", "has-text" if all_lines else "no-text"],
            },
        )

    def _reply(self, request: ChatRequest, answer: dict[str, Any]) -> Reply:
        content = json.dumps(answer, ensure_ascii=False)
        body = completion(
            content,
            model=request.model or self.model_id,
            prompt_tokens=estimate_prompt_tokens(request),
            completion_tokens=len(content) // 4,
        )
        return Reply(body=body)


def _pages_in_request(request: ChatRequest) -> list[int] | None:
    """The page numbers of a page request ("Pages in this request: 7, 8"), or None for any other request."""
    for text in request.text_parts:
        match = PAGES_LINE.search(text)
        if match:
            return [int(number) for number in match.group(1).split(", ")]
    return None


def _document_text(request: ChatRequest) -> tuple[int | None, str] | None:
    """(page count or None, text) of a summary request's <document_text> part; None for any other request."""
    for text in request.text_parts:
        match = DOCUMENT_TEXT.search(text)
        if match:
            count = PAGES_ATTRIBUTE.search(match.group(1))
            return (int(count.group(1)) if count else None), match.group(2)
    return None


def _first_line(text: str) -> str:
    """The first line with text, skipping lines that are only markup (page markers and the like)."""
    for line in text.splitlines():
        line = " ".join(line.split())
        if line and not MARKUP_LINE.match(line):
            return line
    return ""


def _summary_answer(request: ChatRequest) -> dict[str, Any]:
    """What OCR alone can say about a document: its length and how it begins; every field unknown (null)."""
    count, text = _document_text(request) or (None, "")
    first = _first_line(text)
    document = f"A {count}-page document" if count is not None else "A document"
    answer: dict[str, Any] = {
        "description": f"{document} beginning: {first[:DOCUMENT_ALT_LIMIT]}" if first else f"{document} without text",
        "alt_text": first[:DOCUMENT_ALT_LIMIT] or NO_TEXT_DOCUMENT_ALT,
        "tags": list(DOCUMENT_TAGS),
    }
    fields = _fields_schema(request)
    if fields is not None:
        answer["fields"] = dict.fromkeys(_properties(fields))
    return answer


def _properties(schema: dict[str, Any]) -> list[str]:
    """The property names of an object schema, also when it is wrapped in anyOf/oneOf (a nullable object)."""
    properties = schema.get("properties")
    if isinstance(properties, dict):
        return list(properties)
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            if isinstance(option, dict) and isinstance(option.get("properties"), dict):
                return list(option["properties"])
    return []


def _fields_schema(request: ChatRequest) -> dict[str, Any] | None:
    """The "fields" property of the json_schema the request asks for, or None when it asks for none."""
    json_schema = (request.response_format or {}).get("json_schema")
    schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    fields = properties.get("fields") if isinstance(properties, dict) else None
    return fields if isinstance(fields, dict) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve OcrResponder on loopback until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    responder = OcrResponder()
    responder.warm_up()
    with ModelServer(responder, host=args.host, port=args.port, models=[responder.model_id]) as server:
        log.info("OCR model endpoint at %s (model %s); Ctrl-C to stop", server.base_url, responder.model_id)
        stop = threading.Event()
        # Stop cleanly on SIGTERM too (process managers, `kill`), not only on Ctrl-C.
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        log.info("stopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
