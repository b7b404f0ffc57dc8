"""Does the PDF's text layer beside the page image ("anchor") lower the character error rate of a page's text?

The legibility corpus of benchmarks/render_size.py: a letter page of Helvetica at 8 and at 10 pt (a PDF
written by hand, with a real text layer). Each page is rendered by the function's own renderer
(`page_renderer.render_document`: PDFium in its child process, prepared at the document budget), asked as the
function asks a page (`prompt.page_request(..., anchors=True/False)`) through the function's own adapter
(`OpenAIVisionModel`, the real openai client), and the answer read as the function reads it
(`answers.read_pages_answer`). The CER of the page's "text" is measured against the PDF's text layer, line by
line (devkit.legibility: spaces are not compared).

The endpoint is `--base-url` with `--model` (key in MODEL_API_KEY) for a real vision model; without it, the
embedded offline OCR stand-in (devkit.ocr_model.OcrResponder on loopback), which reads only the image and
ignores the anchor by construction: equal figures there say nothing about a real model.

    python -m benchmarks.anchors              # the OCR stand-in: ~2 minutes on 2 CPUs (full-page OCR, 4 requests)
    MODEL_API_KEY=... python -m benchmarks.anchors --base-url https://api.novita.ai/openai \\
        --model qwen/qwen2.5-vl-72b-instruct --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "functions" / "describe_image", ROOT):  # runnable as a script, as well as from the Makefile
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import openai  # noqa: E402

from benchmarks.render_size import MARGIN, POINT_SIZES, digital_text, page_lines  # noqa: E402
from devkit.documents import text_pdf  # noqa: E402
from devkit.legibility import character_error_rate  # noqa: E402
from sightline.adapters.model import OpenAIVisionModel  # noqa: E402
from sightline.adapters.page_renderer import (  # noqa: E402
    DEFAULT_DOCUMENT_SECONDS,
    DEFAULT_MEMORY_MB,
    DEFAULT_PAGE_SECONDS,
    render_document,
)
from sightline.answers import AnswerRules, read_pages_answer  # noqa: E402
from sightline.describe import checked_answer  # noqa: E402
from sightline.documents import PAGE_OUTPUT_TOKENS, PAGE_TEXT_MAX_BYTES  # noqa: E402
from sightline.errors import SightlineError  # noqa: E402
from sightline.pages import RenderedPage  # noqa: E402
from sightline.ports import ModelUsage  # noqa: E402
from sightline.prompt import page_request  # noqa: E402

MAX_PIXELS = 100_000_000  # the template's MAX_IMAGE_PIXELS
PLACEHOLDER_KEY = "not-needed"  # for a keyless local server given with --base-url


@dataclass(frozen=True)
class Page:
    point_size: int
    rendered: RenderedPage
    truth: tuple[str, ...]  # the PDF's text layer, line by line


@dataclass(frozen=True)
class Measurement:
    cer: float | None  # None: the request failed (error says why)
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    error: str = ""


def corpus(point_sizes: Sequence[int]) -> list[Page]:
    """The legibility corpus, rendered by the function's renderer."""
    pages = []
    for pt in point_sizes:
        data = text_pdf([page_lines(pt)], font_size=pt, margin=MARGIN)
        document = render_document(
            data,
            max_pages=1,
            max_pixels=MAX_PIXELS,
            page_seconds=DEFAULT_PAGE_SECONDS,
            document_seconds=DEFAULT_DOCUMENT_SECONDS,
            memory_mb=DEFAULT_MEMORY_MB,
        )
        (rendered,) = document.pages
        if not rendered.text_layer:
            raise SystemExit(f"the {pt} pt page has no text layer: the anchor cannot be measured")
        pages.append(Page(pt, rendered, digital_text(data)))
    return pages


def measure(model: OpenAIVisionModel, page: Page, *, anchors: bool) -> Measurement:
    rules = AnswerRules(task="document", text_max_bytes=PAGE_TEXT_MAX_BYTES)
    request = page_request([page.rendered], rules, anchors=anchors, max_output_tokens=PAGE_OUTPUT_TOKENS)
    usage = ModelUsage()
    started = time.perf_counter()
    try:
        answer = model.complete(request, None, usage)
        checked_answer(answer, PAGE_OUTPUT_TOKENS)
        read = read_pages_answer(
            answer.content,
            [page.rendered.number],
            rules=rules,
            refusal=answer.refusal,
            tool_arguments=answer.tool_arguments,
        )
    except SightlineError as exc:
        return Measurement(None, usage.prompt_tokens or None, None, time.perf_counter() - started, str(exc))
    seconds = time.perf_counter() - started
    entry = read.pages.get(page.rendered.number)
    if entry is None:
        return Measurement(None, answer.prompt_tokens, answer.completion_tokens, seconds, "the page was not answered")
    cer = character_error_rate(entry.text.splitlines(), page.truth)
    return Measurement(cer, answer.prompt_tokens, answer.completion_tokens, seconds)


@contextlib.contextmanager
def endpoint(base_url: str | None, model_id: str | None) -> Iterator[tuple[str, str, str, bool]]:
    """(base URL, model id, what it is, whether it is the OCR stand-in)."""
    if base_url:
        if not model_id:
            raise SystemExit("--base-url needs --model")
        keyed = "MODEL_API_KEY given" if os.environ.get("MODEL_API_KEY") else "no MODEL_API_KEY: a placeholder key"
        yield base_url, model_id, f"{base_url}, model {model_id} ({keyed})", False
        return
    from devkit.model_server import DEFAULT_MODEL, ModelServer
    from devkit.ocr_model import OcrResponder

    responder = OcrResponder()
    responder.warm_up()  # the OCR engine's load is not a request's time
    with ModelServer(responder) as server:
        label = f"{server.base_url} (embedded offline OCR stand-in, devkit.ocr_model.OcrResponder)"
        yield server.base_url, model_id or DEFAULT_MODEL, label, True


def _cell(values: list[Measurement]) -> tuple[str, str, str]:
    """CER (mean, and range over repeats), prompt tokens, completion tokens."""
    cers = [m.cer for m in values if m.cer is not None]
    failed = len(values) - len(cers)
    if cers:
        cer = f"{statistics.mean(cers):.3f}"
        if len(cers) > 1:
            cer += f" ({min(cers):.3f}–{max(cers):.3f})"
    else:
        cer = "—"
    if failed:
        cer += f", {failed} failed"
    prompts = [m.prompt_tokens for m in values if m.prompt_tokens is not None]
    completions = [m.completion_tokens for m in values if m.completion_tokens is not None]
    prompt = f"{statistics.mean(prompts):,.0f}" if prompts else "not reported"
    completion = f"{statistics.mean(completions):,.0f}" if completions else "not reported"
    return cer, prompt, completion


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint with a vision model (key: MODEL_API_KEY)")
    parser.add_argument("--model", help="the model id at --base-url")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(POINT_SIZES), help="point sizes of the print")
    parser.add_argument("--repeats", type=int, default=1, help="requests per page and setting (a VLM varies)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model call")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    started = time.perf_counter()
    pages = corpus(args.sizes)
    render_seconds = time.perf_counter() - started
    with endpoint(args.base_url, args.model) as (base_url, model_id, label, stand_in):
        client = openai.OpenAI(
            api_key=os.environ.get("MODEL_API_KEY") or PLACEHOLDER_KEY,
            base_url=base_url,
            timeout=args.timeout,
            max_retries=0,  # the adapter retries, as in the function
        )
        model = OpenAIVisionModel(
            client, model_id, max_output_tokens=PAGE_OUTPUT_TOKENS, timeout_seconds=args.timeout, max_attempts=3
        )
        print(f"Endpoint: {label}")
        lines = ", ".join(f"{len(page.truth)} lines at {page.point_size} pt" for page in pages)
        image = pages[0].rendered.image
        print(
            f"Corpus: letter pages of Helvetica ({lines}), rendered by the function's renderer in {render_seconds:.1f}s"
            f" and sent at {image.sent_width}×{image.sent_height} ({image.detail_sent});"
            f" one page per request, {args.repeats} request(s) per page and setting"
        )
        results: dict[tuple[int, bool], list[Measurement]] = {}
        for page in pages:
            for anchors in (False, True):
                results[page.point_size, anchors] = [measure(model, page, anchors=anchors) for _ in range(args.repeats)]
        header = f"{'print':>6}  {'anchor':>6}  {'CER vs text layer':>22}  {'prompt tokens/page':>18}  "
        print("\n" + header + f"{'completion tokens/page':>22}  {'s/request':>9}")
        for page in pages:
            for anchors in (False, True):
                values = results[page.point_size, anchors]
                cer, prompt, completion = _cell(values)
                seconds = statistics.mean(m.seconds for m in values)
                print(
                    f"{page.point_size:>4} pt  {'on' if anchors else 'off':>6}  {cer:>22}  {prompt:>18}  "
                    f"{completion:>22}  {seconds:>9.1f}"
                )
        for page in pages:
            off, on = results[page.point_size, False], results[page.point_size, True]
            off_cers, on_cers = [m.cer for m in off if m.cer is not None], [m.cer for m in on if m.cer is not None]
            off_tokens = [m.prompt_tokens for m in off if m.prompt_tokens is not None]
            on_tokens = [m.prompt_tokens for m in on if m.prompt_tokens is not None]
            effect = (
                f"CER {statistics.mean(on_cers) - statistics.mean(off_cers):+.3f}"
                if off_cers and on_cers
                else "CER not comparable (failed requests)"
            )
            if off_tokens and on_tokens:
                effect += f", prompt tokens {statistics.mean(on_tokens) - statistics.mean(off_tokens):+,.0f}"
            print(f"anchor on − off, {page.point_size} pt: {effect}")
        for (pt, anchors), values in results.items():
            for value in values:
                if value.error:
                    print(f"!! {pt} pt, anchor {'on' if anchors else 'off'}: {value.error}")
        for page in pages:
            layer = character_error_rate((page.rendered.text_layer or "").splitlines(), page.truth)
            anchor_chars = _anchor_chars(page)
            print(
                f"reference, {page.point_size} pt: the anchor itself (the renderer's text layer) has CER {layer:.3f}"
                f" against the truth; it adds {anchor_chars:,} characters to the prompt"
            )
        if stand_in:
            print(
                "\nNOTE: the embedded OCR stand-in reads only the page image and ignores the anchor by construction,"
                " so equal CERs with the anchor on and off here say nothing about a real vision model. Its prompt"
                " tokens are the devkit's estimate (one per 28×28 patch, text / 4), not a tokenizer's count. The real"
                " measurement needs --base-url (and --model, key in MODEL_API_KEY) with a vision model."
            )
    return 1 if any(value.error for values in results.values() for value in values) else 0


def _anchor_chars(page: Page) -> int:
    """How many characters the anchor adds to the request's text (the instruction's anchor sentence included)."""
    rules = AnswerRules(task="document")

    def text_chars(anchors: bool) -> int:
        request = page_request([page.rendered], rules, anchors=anchors)
        content = request.messages[-1]["content"]
        return sum(len(part.get("text", "")) for part in content if part.get("type") == "text")

    return text_chars(True) - text_chars(False)


if __name__ == "__main__":
    raise SystemExit(main())
