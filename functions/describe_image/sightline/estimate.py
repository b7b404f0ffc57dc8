"""What describing an object will cost, before it is described: requests, tokens and, with a price, money.

Pure: no AWS, no network. From an object's shape (what its header tells: an image's size, a document's page
count and first page) and the options the pipeline would use, it applies the pipeline's own sizing
(`imaging.target_size` within `imaging.BUDGETS`, `pages.pdf_render_scale` and `pages.DOCUMENT_BUDGET`), builds
the pipeline's own requests (`prompt.description_request`, `prompt.page_request`, `prompt.summary_request`) to
count their text, and counts the images by the provider's rule (`pricing.image_tokens`).

What cannot be known before the model answers, or from a header, is a stated figure (the constants below):

- **Text tokens** are counted as one per TEXT_CHARS_PER_TOKEN characters of the request's text (system message,
  instruction, context, text layers; the JSON Schema sent as `response_format` is not counted). A real
  tokenizer differs: English prose is close to 4 characters a token, German longer words somewhat fewer
  tokens per character, Chinese or Japanese about one token per character.
- **Per request**, REQUEST_OVERHEAD_TOKENS for the chat template, role markers and image placeholders.
- **Output** is a typical answer per task (COMPLETION_TOKENS), never the `max_tokens` ceiling. Repair calls,
  retries and answers cut at the output limit are not in the estimate.
- **`detail: auto`** picks the `high` budget for document-like images (a page, a receipt, a screenshot), which
  only the pixels tell: the estimate takes the profile's task instead (`document` → high, else the photo budget),
  so a screenshot under a caption profile costs more than estimated.
- **An image of unknown size** (its header could not be read) is estimated at the largest size its budget
  allows, the worst case (`exact_shape` False, `assumption` "image size").
- **A document of unknown page count** is estimated at ASSUMED_DOCUMENT_PAGES pages (`assumption` "page count");
  a PDF page of unknown size as a US letter page, a TIFF page of unknown size as the largest page the document
  budget sends (`assumption` "page size").
- **A document page's text** is that of the first page's text layer when the probe read it, else
  ASSUMED_PAGE_TEXT_CHARS: it sizes the text-layer anchor sent beside each page (PDFs with a text layer,
  unless DOCUMENT_TEXT_ANCHOR is off), each page's transcription (output) and the summary request's input.
- **Refused objects** (empty, not an image, too large, too many pages, encrypted) cost nothing: the pipeline
  refuses them before any model call (`refused` says why).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from sightline.describe import DescribeOptions
from sightline.errors import PermanentInputError
from sightline.imaging import BUDGETS, BudgetName, PreparedImage, _check_dimensions, target_size
from sightline.pages import DOCUMENT_BUDGET, RenderedPage, check_page_size, pdf_render_scale
from sightline.ports import ModelRequest
from sightline.pricing import ImageTokenRule, ModelPrice, PriceTable, image_tokens
from sightline.prompt import MAX_PAGES_PER_REQUEST, description_request, page_request, summary_request
from sightline.settings import Detail, Settings

__all__ = [
    "ASSUMED_DOCUMENT_PAGES",
    "ASSUMED_PAGE_TEXT_CHARS",
    "COMPLETION_TOKENS",
    "REQUEST_OVERHEAD_TOKENS",
    "TEXT_CHARS_PER_TOKEN",
    "Estimate",
    "EstimateReport",
    "ObjectShape",
    "estimate_object",
    "human_bytes",
    "text_tokens",
]

ShapeKind = Literal["image", "pdf", "tiff", "unknown"]

TEXT_CHARS_PER_TOKEN = 4  # what the devkit's model server counts too; see the module docstring for languages
REQUEST_OVERHEAD_TOKENS = 50  # chat template, role markers, image placeholder tokens: an order of magnitude
# A typical answer per task, in tokens: caption and alt text are a JSON object of a few sentences, a short alt
# text and ten tags (about 500-600 characters); a document image adds its transcription (one page of text).
ANSWER_TOKENS_WITHOUT_TEXT = {"caption": 150, "alt_text": 140, "document": 160}
# A full letter page of 10 pt print: its text layer measured +1,223 prompt tokens as an anchor
# (benchmarks/anchors.py; 8 pt: +1,534, near the 6,000-character anchor limit). Documents are mostly less
# dense (an invoice, a letter: 1,500-3,000 characters), so this errs on the side of spending less than estimated.
ASSUMED_PAGE_TEXT_CHARS = 4_800
ASSUMED_DOCUMENT_PAGES = 10  # a PDF or TIFF whose page count could not be read
LETTER_PT = (612.0, 792.0)
# One page's entry in a page answer besides its text: {"page": 7, "description": "<one sentence>", "text": "…"}.
PAGE_ANSWER_CHARS = 160
# The summary answer: description, label, tags (as an image's answer), plus each extracted field.
SUMMARY_ANSWER_TOKENS = 150
FIELD_ANSWER_TOKENS = 15
COMPLETION_TOKENS = {
    "caption": ANSWER_TOKENS_WITHOUT_TEXT["caption"],
    "alt_text": ANSWER_TOKENS_WITHOUT_TEXT["alt_text"],
    "document": ANSWER_TOKENS_WITHOUT_TEXT["document"] + ASSUMED_PAGE_TEXT_CHARS // TEXT_CHARS_PER_TOKEN,
}
# Aspect ratios tried for the worst case of an image of unknown size (the token rules are not monotonic in it).
_WORST_CASE_ASPECTS = ((1, 1), (4, 3), (3, 2), (16, 9), (2, 1), (3, 1), (3, 4), (2, 3), (9, 16), (1, 2), (1, 3))

ASSUMED_IMAGE_SIZE = "image size"
ASSUMED_PAGE_COUNT = "page count"
ASSUMED_PAGE_SIZE = "page size"


@dataclass(frozen=True)
class ObjectShape:
    """What an object's header says, as far as the estimate needs it.

    ``image``: width/height are the upright pixels. ``pdf``: width/height are the first page's size in points
    (rotation applied), ``pages`` its page count. ``tiff`` (more than one page; a single-page TIFF is an
    image): width/height the first page's pixels. ``unknown``: the header could not be read (estimated as the
    worst-case image) or, with ``refusal``, the pipeline refuses the object before any model call.
    """

    kind: ShapeKind
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    # PDF: characters of the first page's text layer (0: none, a scan); None: not read.
    text_layer_chars: int | None = None
    # Documents: how many pages have a text layer, when known (a record says so); None: as the first page.
    text_layer_pages: int | None = None
    refusal: str | None = None  # why the pipeline refuses the object from its header (empty, not an image, …)


@dataclass(frozen=True)
class Estimate:
    """Requests and tokens for one object. ``prompt_tokens`` includes ``image_tokens``.

    ``exact_shape`` is False when the shape was not known and ``assumption`` was used instead: "image size"
    (the budget's largest image, the worst case), "page count" (ASSUMED_DOCUMENT_PAGES) or "page size" (a
    letter page for a PDF, the document budget's largest page for a TIFF). ``refused``: the pipeline refuses
    the object before any model call, so it costs nothing.
    """

    requests: int
    prompt_tokens: int
    completion_tokens: int
    image_tokens: int
    exact_shape: bool
    assumption: str | None = None
    refused: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _refused(reason: str) -> Estimate:
    return Estimate(0, 0, 0, 0, exact_shape=True, refused=reason)


def text_tokens(chars: int) -> int:
    """Tokens of ``chars`` characters of text (TEXT_CHARS_PER_TOKEN a token)."""
    return chars // TEXT_CHARS_PER_TOKEN


def _request_text_chars(request: ModelRequest) -> int:
    """Characters of every text part of the request (images and the response_format schema left out)."""
    chars = 0
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(part.get("text", "")) for part in content if part.get("type") == "text")
    return chars


def _stand_in_image(width: int, height: int, budget: BudgetName, detail_sent: Detail) -> PreparedImage:
    """A prepared image with no pixels: the requests' text depends on its size and detail only."""
    return PreparedImage(
        jpeg=b"",
        source_format="JPEG",
        source_mode="RGB",
        original_width=width,
        original_height=height,
        sent_width=width,
        sent_height=height,
        jpeg_quality=85,
        budget=budget,
        detail_sent=detail_sent,
        document_like=budget == "high",
        orientation=1,
    )


# --- Images.


def _image_budget(options: DescribeOptions) -> tuple[BudgetName, Detail]:
    """The budget and the detail sent. `auto` decides from the pixels in the pipeline; here from the task."""
    if options.detail == "low":
        return "low", "low"
    if options.detail == "high" or options.rules.task == "document":
        return "high", "high"
    return "standard", "auto"


@functools.lru_cache(maxsize=64)
def _worst_case_size(budget: BudgetName, rule: ImageTokenRule, detail_sent: Detail) -> tuple[int, int]:
    """The size within the budget that the rule bills most for, over common aspect ratios."""
    sizes = [target_size(100_000 * w, 100_000 * h, BUDGETS[budget]) for w, h in _WORST_CASE_ASPECTS]
    return max(sizes, key=lambda size: image_tokens(rule, size[0], size[1], detail_sent))


@functools.lru_cache(maxsize=256)
def _image_request_chars(options: DescribeOptions) -> int:
    request = description_request(
        _stand_in_image(1, 1, "standard", "auto"),
        options.rules,
        instructions=options.instructions,
        context=options.context,
        max_output_tokens=options.max_output_tokens,
    )
    return _request_text_chars(request)


def _image_completion(options: DescribeOptions, typical: dict[str, int] | None) -> int:
    return (typical or COMPLETION_TOKENS).get(options.rules.task, COMPLETION_TOKENS[options.rules.task])


def _estimate_image(
    shape: ObjectShape, options: DescribeOptions, rule: ImageTokenRule, typical: dict[str, int] | None
) -> Estimate:
    budget, detail_sent = _image_budget(options)
    assumption = None
    if shape.width and shape.height:
        try:
            _check_dimensions(shape.width, shape.height, options.max_image_pixels)
        except PermanentInputError as exc:
            return _refused(exc.message)
        width, height = target_size(shape.width, shape.height, BUDGETS[budget])
    else:
        assumption = ASSUMED_IMAGE_SIZE
        width, height = _worst_case_size(budget, rule, detail_sent)
    tokens = image_tokens(rule, width, height, detail_sent)
    prompt = tokens + text_tokens(_image_request_chars(options)) + REQUEST_OVERHEAD_TOKENS
    return Estimate(
        requests=1,
        prompt_tokens=prompt,
        completion_tokens=_image_completion(options, typical),
        image_tokens=tokens,
        exact_shape=assumption is None,
        assumption=assumption,
    )


# --- Documents.


def _page_group_sizes(pages: int, settings: Settings) -> list[int]:
    """Pages per request: two by two within each page range (a range is described by one invocation)."""
    fan_out = settings.work_queue_url is not None and pages > settings.document_range_pages
    step = settings.document_range_pages if fan_out else pages
    sizes: list[int] = []
    for first in range(0, pages, step):
        in_range = min(step, pages - first)
        sizes += [MAX_PAGES_PER_REQUEST] * (in_range // MAX_PAGES_PER_REQUEST)
        sizes += [in_range % MAX_PAGES_PER_REQUEST] if in_range % MAX_PAGES_PER_REQUEST else []
    return sizes


@functools.lru_cache(maxsize=256)
def _page_request_chars(options: DescribeOptions, count: int, anchor_chars: int) -> int:
    """Text characters of a request for ``count`` pages, each with a text layer of ``anchor_chars`` (0: none)."""
    image = _stand_in_image(1, 1, "high", "high")
    layer = "x" * anchor_chars if anchor_chars else None
    pages = [RenderedPage(number=number, image=image, text_layer=layer) for number in range(1, count + 1)]
    request = page_request(
        pages,
        options.rules,
        anchors=anchor_chars > 0,
        instructions=options.instructions,
        context=options.context,
    )
    return _request_text_chars(request)


@functools.lru_cache(maxsize=256)
def _summary_request_chars(options: DescribeOptions, pages: int, text_chars: int) -> int:
    # The pages' transcriptions joined as documents.summarize joins them; the prompt bounds the length.
    page_text = "x" * text_chars
    text = "\n\n".join(f"[page {number}]\n{page_text}" for number in range(1, pages + 1))
    request = summary_request(
        text, options.rules, page_count=pages, instructions=options.instructions, context=options.context
    )
    return _request_text_chars(request)


def _fields_count(options: DescribeOptions) -> int:
    properties = (options.rules.fields_schema or {}).get("properties")
    return len(properties) if isinstance(properties, dict) else 0


def _page_pixels(shape: ObjectShape, settings: Settings) -> tuple[tuple[int, int], bool]:
    """The size a page is rendered (PDF) or decoded (TIFF) at, and whether its size was known.
    Raises PermanentInputError when the pipeline would refuse the page from its size."""
    if shape.kind == "pdf":
        known = bool(shape.width and shape.height)
        width_pt, height_pt = (float(shape.width or 0), float(shape.height or 0)) if known else LETTER_PT
        check_page_size(1, width_pt, height_pt, settings.max_image_pixels, unit="pt")
        scale = pdf_render_scale(width_pt, height_pt, max_pixels=settings.max_image_pixels)
        return (math.ceil(width_pt * scale), math.ceil(height_pt * scale)), known
    if shape.width and shape.height:
        _check_dimensions(shape.width, shape.height, settings.max_image_pixels)
        return (shape.width, shape.height), True
    letter_width = math.ceil(DOCUMENT_BUDGET.max_side * LETTER_PT[0] / LETTER_PT[1])
    return (letter_width, DOCUMENT_BUDGET.max_side), False


def _estimate_document(
    shape: ObjectShape, options: DescribeOptions, settings: Settings, rule: ImageTokenRule
) -> Estimate:
    assumptions: list[str] = []
    pages = shape.pages
    if pages is None or pages < 1:
        pages = ASSUMED_DOCUMENT_PAGES
        assumptions.append(ASSUMED_PAGE_COUNT)
    elif pages > settings.document_max_pages:
        return _refused(f"{pages:,} pages, above DOCUMENT_MAX_PAGES ({settings.document_max_pages:,})")
    try:
        rendered, size_known = _page_pixels(shape, settings)
    except PermanentInputError as exc:
        return _refused(exc.message)
    if not size_known:
        assumptions.append(ASSUMED_PAGE_SIZE)
    sent = target_size(rendered[0], rendered[1], DOCUMENT_BUDGET)
    page_tokens = image_tokens(rule, sent[0], sent[1], "high")

    # The text of a page: the first page's text layer when it was read, else the stated assumption.
    layer_chars = shape.text_layer_chars
    page_text = layer_chars if layer_chars else ASSUMED_PAGE_TEXT_CHARS
    anchor_pages = 0  # pages sent with their text layer beside them
    if shape.kind == "pdf" and settings.document_text_anchor:
        known_pages = shape.text_layer_pages
        anchor_pages = min(known_pages, pages) if known_pages is not None else (0 if layer_chars == 0 else pages)

    groups = _page_group_sizes(pages, settings)
    # Every page anchored or none is exact; a record's count of anchored pages is spread evenly.
    share = anchor_pages / pages
    prompt_chars = sum(
        _page_request_chars(options, size, 0) * (1 - share) + _page_request_chars(options, size, page_text) * share
        for size in groups
    )
    prompt_chars += _summary_request_chars(options, pages, page_text)
    requests = len(groups) + 1
    images = page_tokens * pages
    prompt = images + text_tokens(round(prompt_chars)) + REQUEST_OVERHEAD_TOKENS * requests
    completion = text_tokens(pages * (page_text + PAGE_ANSWER_CHARS))
    completion += SUMMARY_ANSWER_TOKENS + FIELD_ANSWER_TOKENS * _fields_count(options)
    return Estimate(
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        image_tokens=images,
        exact_shape=not assumptions,
        assumption=", ".join(assumptions) or None,
    )


def estimate_object(
    shape: ObjectShape,
    options: DescribeOptions,
    settings: Settings,
    price: ModelPrice | None,
    *,
    completion_tokens: dict[str, int] | None = None,
) -> Estimate:
    """Requests and tokens to describe one object of this shape with these options (see the module docstring for
    every assumption). ``price`` gives the image-token rule; None: "patch28".
    ``completion_tokens`` replaces COMPLETION_TOKENS (typical output tokens per image request, by task), e.g.
    with figures measured by `sightline usage`."""
    if shape.refusal:
        return _refused(shape.refusal)
    rule: ImageTokenRule = price.image_tokens if price is not None else "patch28"
    if shape.kind in ("pdf", "tiff"):
        return _estimate_document(shape, options, settings, rule)
    return _estimate_image(shape, options, rule, completion_tokens)


# --- The report: per profile and detail, with totals.


def human_bytes(count: float) -> str:
    """1,536 → "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@dataclass
class _Group:
    objects: int = 0
    bytes: int = 0
    requests: int = 0
    image_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    bytes_read: int = 0
    assumed: int = 0
    refused: int = 0

    def add(self, size_bytes: int, estimate: Estimate, bytes_read: int) -> None:
        self.objects += 1
        self.bytes += size_bytes
        self.requests += estimate.requests
        self.image_tokens += estimate.image_tokens
        self.prompt_tokens += estimate.prompt_tokens
        self.completion_tokens += estimate.completion_tokens
        self.bytes_read += bytes_read
        self.assumed += not estimate.exact_shape
        self.refused += estimate.refused is not None

    def merged(self, other: _Group) -> _Group:
        return _Group(*(a + b for a, b in zip(self.counts(), other.counts(), strict=True)))

    def counts(self) -> tuple[int, ...]:
        return (
            self.objects,
            self.bytes,
            self.requests,
            self.image_tokens,
            self.prompt_tokens,
            self.completion_tokens,
            self.bytes_read,
            self.assumed,
            self.refused,
        )


@dataclass
class EstimateReport:
    """Estimates added object by object, summed per (profile, detail, model), rendered as a table."""

    _groups: dict[tuple[str, str, str], _Group] = field(default_factory=dict)
    _assumptions: Counter[str] = field(default_factory=Counter)

    def add(
        self, profile: str, detail: str, model_id: str, size_bytes: int, estimate: Estimate, bytes_read: int
    ) -> None:
        self._groups.setdefault((profile, detail, model_id), _Group()).add(size_bytes, estimate, bytes_read)
        if estimate.assumption:
            for assumption in estimate.assumption.split(", "):
                self._assumptions[assumption] += 1

    @property
    def objects(self) -> int:
        return self._total().objects

    def _total(self) -> _Group:
        total = _Group()
        for group in self._groups.values():
            total = total.merged(group)
        return total

    def _cost(self, prices: PriceTable, model_id: str, group: _Group) -> float | None:
        price = prices.for_model(model_id)
        return None if price is None else price.cost(group.prompt_tokens, group.completion_tokens)

    def to_dict(self, prices: PriceTable | None = None) -> dict[str, Any]:
        """The report as JSON-ready data; costs (in the table's currency) only with ``prices``."""
        rows = []
        total_cost = 0.0
        unpriced: set[str] = set()
        for (profile, detail, model_id), group in sorted(self._groups.items()):
            row: dict[str, Any] = {
                "profile": profile,
                "detail": detail,
                "model_id": model_id,
                **_group_dict(group),
            }
            if prices is not None:
                cost = self._cost(prices, model_id, group)
                row["cost"] = cost
                if cost is None:
                    unpriced.add(model_id)
                else:
                    total_cost += cost
            rows.append(row)
        total = self._total()
        data: dict[str, Any] = {
            "groups": rows,
            "total": _group_dict(total),
            "bytes_read": {
                "total": total.bytes_read,
                "per_object": total.bytes_read / total.objects if total.objects else 0,
                "objects_bytes": total.bytes,
            },
            "assumed": {"objects": total.assumed, "by_assumption": dict(sorted(self._assumptions.items()))},
            "refused": total.refused,
            "assumptions": {
                "text_chars_per_token": TEXT_CHARS_PER_TOKEN,
                "request_overhead_tokens": REQUEST_OVERHEAD_TOKENS,
                "completion_tokens_per_task": dict(COMPLETION_TOKENS),
                "page_text_chars": ASSUMED_PAGE_TEXT_CHARS,
                "document_pages_when_unknown": ASSUMED_DOCUMENT_PAGES,
            },
        }
        if prices is not None:
            data["currency"] = prices.currency
            data["total"]["cost"] = total_cost
            data["no_price_for"] = sorted(unpriced)
        return data

    def render(self, prices: PriceTable) -> str:
        """A table per profile and detail, a total line, the bytes read and the objects whose shape was assumed."""
        header: tuple[str, ...] = ("PROFILE", "DETAIL", "MODEL", "OBJECTS", "BYTES", "REQUESTS", "IMAGE TOK")
        header += ("PROMPT TOK", "OUTPUT TOK", f"PRICE ({prices.currency})")
        rows: list[tuple[str, ...]] = [header]
        total_cost = 0.0
        unpriced: list[str] = []
        for (profile, detail, model_id), group in sorted(self._groups.items()):
            cost = self._cost(prices, model_id, group)
            if cost is None:
                unpriced.append(model_id)
            else:
                total_cost += cost
            rows.append((profile, detail, model_id, *_cells(group), _money(cost, model_id)))
        total = self._total()
        rows.append(("TOTAL", "", "", *_cells(total), _money(total_cost, "") + (" + unpriced" if unpriced else "")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        numeric = range(3, len(header))
        lines = [
            "  ".join(
                cell.rjust(w) if i in numeric else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        per_object = total.bytes_read / total.objects if total.objects else 0
        lines.append("")
        lines.append(
            f"Bytes read for the estimate: {human_bytes(total.bytes_read)} in total, {human_bytes(per_object)} per "
            f"object ({_share(total.bytes_read, total.bytes)} of the objects' {human_bytes(total.bytes)})"
        )
        if total.assumed:
            detail = ", ".join(f"{name} for {count:,}" for name, count in sorted(self._assumptions.items()))
            lines.append(
                f"Shape assumed for {total.assumed:,} object(s), {detail}: an unknown image size is the largest the "
                f"budget sends, an unknown page count {ASSUMED_DOCUMENT_PAGES} pages, an unknown page size letter"
            )
        else:
            lines.append("Shape assumed for 0 objects: every size and page count was read from the object's header")
        if total.refused:
            lines.append(f"Refused before any model call (no cost): {total.refused:,} object(s)")
        for model_id in sorted(set(unpriced)):
            lines.append(f"No price for {model_id} in {prices.source or 'the pricing table'}: not in the total")
        lines.append(
            f"Assumed: {TEXT_CHARS_PER_TOKEN} characters a text token, {REQUEST_OVERHEAD_TOKENS} tokens a request, "
            f"typical answers ({', '.join(f'{task} {n}' for task, n in COMPLETION_TOKENS.items())} output tokens), "
            f"{ASSUMED_PAGE_TEXT_CHARS:,} characters a document page unless its text layer was read; "
            "repairs and retries not included"
        )
        return "\n".join(lines)


def _group_dict(group: _Group) -> dict[str, Any]:
    return {
        "objects": group.objects,
        "bytes": group.bytes,
        "requests": group.requests,
        "image_tokens": group.image_tokens,
        "prompt_tokens": group.prompt_tokens,
        "completion_tokens": group.completion_tokens,
        "bytes_read": group.bytes_read,
        "assumed": group.assumed,
        "refused": group.refused,
    }


def _cells(group: _Group) -> tuple[str, ...]:
    return (
        f"{group.objects:,}",
        human_bytes(group.bytes),
        f"{group.requests:,}",
        f"{group.image_tokens:,}",
        f"{group.prompt_tokens:,}",
        f"{group.completion_tokens:,}",
    )


def _money(cost: float | None, model_id: str) -> str:
    if cost is None:
        return f"no price for {model_id}"
    return f"{cost:,.4f}" if cost < 100 else f"{cost:,.2f}"


def _share(part: int, whole: int) -> str:
    if not whole:
        return "0 %"
    share = 100 * part / whole
    return f"{share:.3f} %" if share < 0.1 else f"{share:.1f} %"
