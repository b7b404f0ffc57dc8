"""Documents, without AWS: a PDF's or multi-page TIFF's rendered pages, described at most two per request,
validated page by page, and assembled into one result.

Rules this module keeps:
- Never a silently empty page. A page the model skipped or merged into its neighbour is asked again alone,
  once; if it is still missing it fails with its own reason (``PageSkipped``, ``PagesMerged``). A request
  that fails permanently for two pages (a refusal, an answer cut at the output limit) is retried page by
  page, so one bad page does not take its neighbour down.
- Page numbers are the document's own: a failed page keeps its place, later pages keep their numbers.
- A request's answer is cached by its page images (and text layers) and the options' fingerprint, so a
  retry after page 7 failed transiently does not pay for pages 1–6 again.
- Status: ``succeeded`` when every page and the summary succeeded; ``failed`` when no page succeeded;
  otherwise ``partial`` (the failed pages are listed; a failed summary means no document-level fields).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sightline.answers import DocumentSummary, PagesAnswer, read_pages_answer, read_summary_answer
from sightline.describe import DescribeOptions, checked_answer, with_image_urls
from sightline.errors import (
    EmptyModelAnswerError,
    InvalidModelOutputError,
    ModelRefusedError,
    PermanentInputError,
    SightlineError,
    TransientError,
    TruncatedModelOutputError,
)
from sightline.pages import EncryptedDocumentError, RenderedPage, TooManyPagesError, page_numbers
from sightline.ports import (
    ContentCache,
    ImageHost,
    ModelAnswer,
    ModelRequest,
    ModelUsage,
    PageRenderer,
    VisionModel,
)
from sightline.profiles import validate_fields
from sightline.prompt import (
    DOCUMENT_PROMPT_VERSION,
    MAX_PAGES_PER_REQUEST,
    page_repair_request,
    page_request,
    summary_repair_request,
    summary_request,
)
from sightline.records import ERROR_MESSAGE_MAX_BYTES, FAILED, SUCCEEDED, image_item
from sightline.text import bounded

PAGE_TEXT_MAX_BYTES = 60_000  # a dense page of print is 6–10 KB: keeps two pages' cache entry far below 400 KB
PAGE_OUTPUT_TOKENS = 4_096  # a dense page of print is ~1,500 tokens of text; room for the JSON around it
SUMMARY_OUTPUT_TOKENS = 2_048
# A request is not started with less time than this left: it would be cut off and paid for nothing.
MIN_REQUEST_SECONDS = 5.0
FAILED_PAGES_TTL_SECONDS = 24 * 3600
PREVIEW_MAX_BYTES = 16_000  # of the assembled text, in the record; the whole text is in the results bucket
PAGE_ERRORS_MAX = 50  # failed pages whose reason the record spells out (all are in the result object)
PAGE_ERROR_MAX_BYTES = 300
RESULT_SCHEMA_VERSION = 1

DocumentStatus = Literal["succeeded", "partial", "failed"]
PARTIAL: Literal["partial"] = "partial"


class PageSkippedError(PermanentInputError):
    """The model answered for the other page of the request but not this one, also when asked for it alone."""

    error_type = "PageSkipped"


class PagesMergedError(PermanentInputError):
    """The model wrote this page's text into another page's entry, also when asked for it alone."""

    error_type = "PagesMerged"


class DocumentTimeBudgetError(TransientError):
    """The invocation's time ran out before every page was asked: retried; the pages already answered are
    served from the cache, not paid again."""

    error_type = "DocumentTimeBudget"


@dataclass(frozen=True)
class PageResult:
    number: int
    status: Literal["succeeded", "failed"]
    description: str = ""
    text: str = ""
    text_truncated: bool = False
    text_layer: str | None = None
    usage: ModelUsage = field(default_factory=ModelUsage)  # this page's share of its request(s)
    error_type: str | None = None
    error_message: str | None = None
    cache_hit: bool = False
    image: dict[str, Any] | None = None
    adjustments: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    @classmethod
    def failed(cls, page: RenderedPage | int, error: SightlineError, usage: ModelUsage | None = None) -> PageResult:
        rendered = page if isinstance(page, RenderedPage) else None
        return cls(
            number=rendered.number if rendered else int(page),  # type: ignore[arg-type]
            status=FAILED,
            text_layer=rendered.text_layer if rendered else None,
            usage=usage or ModelUsage(),
            error_type=error.error_type,
            error_message=bounded(error.message, ERROR_MESSAGE_MAX_BYTES),
            image=image_item(rendered.image) if rendered else None,
        )

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "page": self.number,
            "status": self.status,
            "usage": self.usage.to_item(),
            "cache_hit": self.cache_hit,
        }
        if self.succeeded:
            item.update(description=self.description, text=self.text, text_truncated=self.text_truncated)
        else:
            item.update(error_type=self.error_type, error_message=self.error_message)
        if self.text_layer is not None:
            item["text_layer"] = self.text_layer
        if self.image is not None:
            item["image"] = self.image
        if self.adjustments:
            item["adjustments"] = list(self.adjustments)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> PageResult:
        return cls(
            number=int(item["page"]),
            status=SUCCEEDED if item.get("status") == SUCCEEDED else FAILED,
            description=str(item.get("description", "")),
            text=str(item.get("text", "")),
            text_truncated=bool(item.get("text_truncated", False)),
            text_layer=item.get("text_layer"),
            usage=ModelUsage.from_item(item.get("usage")),
            error_type=item.get("error_type"),
            error_message=item.get("error_message"),
            cache_hit=bool(item.get("cache_hit", False)),
            image=item.get("image"),
            adjustments=tuple(item.get("adjustments") or ()),
        )


def render_pages(
    renderer: PageRenderer, body: bytes, pages: range | None
) -> tuple[int, list[RenderedPage], list[PageResult]]:
    """The page count, the pages rendered and the pages that could not be. A refusal of the whole document
    (encrypted, too many pages, unreadable) is raised; a page the renderer fails on fails alone: after a
    failed range, the pages are rendered one by one, each in its own child process."""
    try:
        document = renderer.render(body, pages)
        return document.page_count, list(document.pages), []
    except (EncryptedDocumentError, TooManyPagesError):
        raise
    except PermanentInputError as whole:
        probe = renderer.render(body, range(1, 1))  # the document itself: raises when it cannot be opened
        numbers = page_numbers(probe.page_count, pages)
        if len(numbers) == 1:
            return probe.page_count, [], [PageResult.failed(numbers[0], whole)]
        rendered: list[RenderedPage] = []
        failed: list[PageResult] = []
        for number in numbers:
            try:
                rendered.extend(renderer.render(body, range(number, number + 1)).pages)
            except PermanentInputError as exc:
                failed.append(PageResult.failed(number, exc))
        return probe.page_count, rendered, failed


def split_usage(usage: ModelUsage, parts: int) -> list[ModelUsage]:
    """A request's usage shared out between its pages: tokens split evenly (the first page takes the rest),
    calls and latency on the first page, so the pages' shares add up to exactly what was paid."""
    shares = []
    for index in range(parts):
        prompt = usage.prompt_tokens // parts + (usage.prompt_tokens % parts if index == 0 else 0)
        completion = usage.completion_tokens // parts + (usage.completion_tokens % parts if index == 0 else 0)
        shares.append(
            ModelUsage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                model_calls=usage.model_calls if index == 0 else 0,
                latency_ms=usage.latency_ms if index == 0 else 0,
                usage_reported=usage.usage_reported,
            )
        )
    return shares


def add_usage(total: ModelUsage, part: ModelUsage) -> None:
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.total_tokens = total.prompt_tokens + total.completion_tokens
    total.model_calls += part.model_calls
    total.latency_ms += part.latency_ms
    total.usage_reported = total.usage_reported and part.usage_reported


def page_groups(pages: Sequence[RenderedPage]) -> list[tuple[RenderedPage, ...]]:
    """Consecutive pages, two by two, in order (the last alone when the count is odd): the provider guide's
    "no more than two images per request"."""
    step = MAX_PAGES_PER_REQUEST
    return [tuple(pages[i : i + step]) for i in range(0, len(pages), step)]


def request_cache_key(pages: Sequence[RenderedPage], options: DescribeOptions, *, anchors: bool) -> str:
    """What the request's answer depends on: the page images, their numbers (the prompt names them), the
    text layers sent as anchors, and everything in the options' fingerprint."""
    digest = hashlib.sha256()
    for page in pages:
        digest.update(f"page {page.number}\n".encode())
        digest.update(hashlib.sha256(page.image.jpeg).digest())
        if anchors and page.text_layer:
            digest.update(hashlib.sha256(page.text_layer.encode("utf-8", "replace")).digest())
    return f"pages|d{DOCUMENT_PROMPT_VERSION}|{digest.hexdigest()}|{'a' if anchors else 'n'}|{options.fingerprint}"


@dataclass
class PageDescriber:
    """Describes rendered pages, two per request, concurrently within the deadline."""

    model: VisionModel
    options: DescribeOptions
    cache: ContentCache | None = None
    image_host: ImageHost | None = None
    concurrency: int = 4
    anchors: bool = True
    owner: str = ""  # who pays: a cached answer paid by the same owner (an earlier attempt) keeps its usage
    request_slots: threading.Semaphore | None = None  # requests in flight across every describer of the instance
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self, pages: Sequence[RenderedPage], deadline: float | None, attempt: ModelUsage) -> list[PageResult]:
        """Every page's result, in page order. A transient error of any request is raised after every other
        request has finished (their answers are cached); ``attempt`` counts every call made, whatever happens."""
        groups = page_groups(pages)
        results: dict[int, PageResult] = {}
        errors: list[BaseException] = []
        out_of_time = threading.Event()

        def run(group: tuple[RenderedPage, ...]) -> None:
            try:
                for result in self._describe_group(group, deadline, attempt, out_of_time):
                    results[result.number] = result
            except BaseException as exc:  # collected: raised after the other requests finish
                errors.append(exc)

        if len(groups) <= 1 or self.concurrency == 1:
            for group in groups:
                run(group)
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(groups)), thread_name_prefix="pages") as pool:
                list(pool.map(run, groups))
        if errors:
            raise next((e for e in errors if not isinstance(e, DocumentTimeBudgetError)), errors[0])
        return [results[page.number] for page in pages]

    def _describe_group(
        self,
        group: tuple[RenderedPage, ...],
        deadline: float | None,
        attempt: ModelUsage,
        out_of_time: threading.Event,
    ) -> list[PageResult]:
        key = request_cache_key(group, self.options, anchors=self.anchors) if self.cache is not None else ""
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                layers = {page.number: page.text_layer for page in group}
                return [replace(r, text_layer=layers.get(r.number)) for r in self._from_cache(cached)]
        usage = ModelUsage()
        try:
            with self.request_slots or contextlib.nullcontext():
                # Checked once a slot is free: the wait for it may have used the time up.
                if out_of_time.is_set() or (deadline is not None and deadline - self.clock() < MIN_REQUEST_SECONDS):
                    out_of_time.set()
                    raise DocumentTimeBudgetError(
                        f"the invocation's time ran out before pages {group[0].number}–{group[-1].number} were asked"
                    )
                results = self._ask_group(group, deadline, usage)
        finally:
            with self._lock:
                add_usage(attempt, usage)
        if self.cache is not None:
            # The text layers are not cached: they come with the rendered pages, and can be long.
            pages = [{k: v for k, v in r.to_item().items() if k != "text_layer"} for r in results]
            entry = {"pages": pages, "owner": self.owner}
            failed = any(not r.succeeded for r in results)
            self.cache.put(key, entry, FAILED_PAGES_TTL_SECONDS if failed else None)
        return results

    def _from_cache(self, entry: dict[str, Any]) -> list[PageResult]:
        own = bool(self.owner) and entry.get("owner") == self.owner
        results = [PageResult.from_item(item) for item in entry.get("pages") or []]
        if own:  # paid by an earlier attempt for this same document: its cost is this document's
            return [replace(r, cache_hit=False) for r in results]
        return [replace(r, cache_hit=True, usage=ModelUsage()) for r in results]

    def _ask_group(
        self, group: tuple[RenderedPage, ...], deadline: float | None, usage: ModelUsage
    ) -> list[PageResult]:
        """One request for the group; then each page it lost, alone. Every call is added to ``usage``; each page's
        result carries its share."""
        try:
            answer = self._ask(group, deadline, usage)
        except PermanentInputError as exc:
            if len(group) == 1:
                return [PageResult.failed(group[0], exc, replace(usage))]
            # One page may be the cause (refused, or too much text for the output limit): each alone.
            paid = replace(usage)
            alone = [result for page in group for result in self._ask_alone(page, deadline, usage)]
            return [replace(alone[0], usage=_sum(paid, alone[0].usage)), *alone[1:]]
        results: list[PageResult] = []
        for page, share in zip(group, split_usage(replace(usage), len(group)), strict=True):
            found = answer.pages.get(page.number)
            if found is not None:
                results.append(
                    PageResult(
                        number=page.number,
                        status=SUCCEEDED,
                        description=found.description,
                        text=found.text,
                        text_truncated=found.text_truncated,
                        text_layer=page.text_layer,
                        usage=share,
                        image=image_item(page.image),
                        adjustments=answer.adjustments,
                    )
                )
                continue
            lost: PermanentInputError = (
                PagesMergedError(f"the model merged page {page.number} into another page's entry")
                if page.number in answer.merged
                else PageSkippedError(f"the model's answer has no entry for page {page.number}")
            )
            if len(group) == 1:
                results.append(PageResult.failed(page, lost, share))
                continue
            # Asked again alone, once: a model that skips one page of two usually reads it fine on its own.
            (again,) = self._ask_alone(page, deadline, usage)
            if not again.succeeded:
                again = replace(
                    again,
                    error_type=lost.error_type,
                    error_message=bounded(
                        f"{lost.message}; asked alone: {again.error_message}", ERROR_MESSAGE_MAX_BYTES
                    ),
                )
            results.append(replace(again, usage=_sum(share, again.usage)))
        return results

    def _ask_alone(self, page: RenderedPage, deadline: float | None, usage: ModelUsage) -> list[PageResult]:
        alone = ModelUsage()
        try:
            return self._ask_group((page,), deadline, alone)
        finally:
            add_usage(usage, alone)

    def _ask(self, group: tuple[RenderedPage, ...], deadline: float | None, usage: ModelUsage) -> PagesAnswer:
        numbers = [page.number for page in group]
        rules = replace(self.options.rules, text_max_bytes=PAGE_TEXT_MAX_BYTES)
        request = page_request(
            group,
            rules,
            anchors=self.anchors,
            instructions=self.options.instructions,
            context=self.options.context,
            max_output_tokens=PAGE_OUTPUT_TOKENS * len(group),
        )
        request = self._sendable(request, [page.image.jpeg for page in group])
        answer = self.model.complete(request, deadline, usage)
        try:
            return _read_pages(answer, numbers, self.options, PAGE_OUTPUT_TOKENS * len(group))
        except (EmptyModelAnswerError, ModelRefusedError, TruncatedModelOutputError):
            raise
        except InvalidModelOutputError as first:
            repair = page_repair_request(
                answer.content, numbers, rules, max_output_tokens=PAGE_OUTPUT_TOKENS * len(group)
            )
            repaired = self.model.complete(replace(repair, model_id=self.options.model_id), deadline, usage)
            try:
                return _read_pages(repaired, numbers, self.options, PAGE_OUTPUT_TOKENS * len(group))
            except InvalidModelOutputError as second:
                raise type(second)(f"{first.message}; after one repair attempt: {second.message}") from None

    def _sendable(self, request: ModelRequest, jpegs: list[bytes]) -> ModelRequest:
        request = replace(request, model_id=self.options.model_id)
        if self.image_host is None:
            return request
        return with_image_urls(request, [self.image_host.url_for(jpeg) for jpeg in jpegs])


def _sum(a: ModelUsage, b: ModelUsage) -> ModelUsage:
    total = replace(a)
    add_usage(total, b)
    return total


def _read_pages(answer: ModelAnswer, numbers: list[int], options: DescribeOptions, limit: int) -> PagesAnswer:
    checked_answer(answer, limit)
    return read_pages_answer(
        answer.content,
        numbers,
        rules=replace(options.rules, text_max_bytes=PAGE_TEXT_MAX_BYTES),
        refusal=answer.refusal,
        tool_arguments=answer.tool_arguments,
    )


# --- The summary: document-level description, label, tags and fields, from the assembled text (text tokens only).


@dataclass(frozen=True)
class SummaryResult:
    status: Literal["succeeded", "failed"]
    description: str = ""
    alt_text: str = ""
    tags: tuple[str, ...] = ()
    fields: Any | None = None
    adjustments: tuple[str, ...] = ()
    error_type: str | None = None
    error_message: str | None = None
    cache_hit: bool = False

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"status": self.status}
        if self.status == SUCCEEDED:
            item.update(description=self.description, alt_text=self.alt_text, tags=list(self.tags))
            if self.fields is not None:
                item["fields"] = self.fields
            if self.adjustments:
                item["adjustments"] = list(self.adjustments)
        else:
            item.update(error_type=self.error_type, error_message=self.error_message)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> SummaryResult:
        return cls(
            status=SUCCEEDED if item.get("status") == SUCCEEDED else FAILED,
            description=str(item.get("description", "")),
            alt_text=str(item.get("alt_text", "")),
            tags=tuple(item.get("tags") or ()),
            fields=item.get("fields"),
            adjustments=tuple(item.get("adjustments") or ()),
            error_type=item.get("error_type"),
            error_message=item.get("error_message"),
        )


def assembled_text(pages: Sequence[PageResult]) -> str:
    """The document's text: every page's, in order, with a form feed between pages (the text a reader copies)."""
    return "\n\f\n".join(page.text for page in pages if page.succeeded)


def summarize(
    pages: Sequence[PageResult],
    options: DescribeOptions,
    model: VisionModel,
    *,
    deadline: float | None,
    usage: ModelUsage,
    cache: ContentCache | None = None,
) -> SummaryResult | None:
    """The second pass over the assembled text: what the document is, its label, tags and the profile's fields.
    None when no page has text (nothing to read). Transient errors propagate."""
    text = "\n\n".join(f"[page {page.number}]\n{page.text}" for page in pages if page.succeeded and page.text)
    if not text.strip():
        return None
    key = ""
    if cache is not None:
        digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
        key = f"summary|d{DOCUMENT_PROMPT_VERSION}|{digest}|{options.fingerprint}"
        cached = cache.get(key)
        if cached is not None:
            return replace(SummaryResult.from_item(cached), cache_hit=True)
    page_count = max(page.number for page in pages)
    request = summary_request(
        text,
        options.rules,
        page_count=page_count,
        instructions=options.instructions,
        context=options.context,
        max_output_tokens=SUMMARY_OUTPUT_TOKENS,
    )
    try:
        answer = model.complete(replace(request, model_id=options.model_id), deadline, usage)
        summary = _read_summary(answer, options)
    except (EmptyModelAnswerError, ModelRefusedError, TruncatedModelOutputError) as exc:
        result = SummaryResult(status=FAILED, error_type=exc.error_type, error_message=exc.message)
    except InvalidModelOutputError as first:
        try:
            # One repair, as for images: the answer alone (not the document again), asked to be the right JSON.
            repair = summary_repair_request(answer.content, options.rules, max_output_tokens=SUMMARY_OUTPUT_TOKENS)
            repaired = model.complete(replace(repair, model_id=options.model_id), deadline, usage)
            summary = _read_summary(repaired, options)
            result = _summary_result(summary, options)
        except PermanentInputError as second:
            result = SummaryResult(
                status=FAILED,
                error_type=second.error_type,
                error_message=bounded(f"{first.message}; after one repair attempt: {second.message}", 2000),
            )
    except PermanentInputError as exc:
        result = SummaryResult(status=FAILED, error_type=exc.error_type, error_message=exc.message)
    else:
        result = _summary_result(summary, options)
    if cache is not None:
        cache.put(key, result.to_item(), None if result.status == SUCCEEDED else FAILED_PAGES_TTL_SECONDS)
    return result


def _read_summary(answer: ModelAnswer, options: DescribeOptions) -> DocumentSummary:
    checked_answer(answer, SUMMARY_OUTPUT_TOKENS)
    return read_summary_answer(
        answer.content, rules=options.rules, refusal=answer.refusal, tool_arguments=answer.tool_arguments
    )


def _summary_result(summary: DocumentSummary, options: DescribeOptions) -> SummaryResult:
    fields: Any | None = None
    notes: list[str] | tuple[str, ...] = ()
    if options.rules.fields_schema is not None:
        fields, notes = validate_fields(options.rules.fields_schema, summary.fields)
    return SummaryResult(
        status=SUCCEEDED,
        description=summary.description,
        alt_text=summary.alt_text,
        tags=tuple(summary.tags),
        fields=fields,
        adjustments=(*summary.adjustments, *notes),
    )


# --- The document's result: the record's fields, the result object and its Markdown rendering.


@dataclass(frozen=True)
class DocumentResult:
    status: DocumentStatus
    kind: str
    page_count: int
    pages: tuple[PageResult, ...]
    summary: SummaryResult | None
    facts: dict[str, Any]  # DescribeOptions.result_facts()
    usage: ModelUsage
    ranges: int = 1
    result_uri: str | None = None
    markdown_uri: str | None = None
    error_type: str | None = None
    error_message: str | None = None

    @property
    def failed_pages(self) -> list[int]:
        return [page.number for page in self.pages if not page.succeeded]

    @property
    def text(self) -> str:
        return assembled_text(self.pages)

    def to_item(self) -> dict[str, Any]:
        """The record's fields: statuses per page, a bounded preview of the text, where the whole result is."""
        text = self.text
        preview = bounded(text, PREVIEW_MAX_BYTES)
        summary = self.summary if self.summary is not None and self.summary.status == SUCCEEDED else None
        first = next((page for page in self.pages if page.succeeded), None)
        item: dict[str, Any] = {
            "status": self.status,
            **self.facts,
            # Nothing was paid for this object: every page and the summary came from the cache.
            "cache_hit": bool(self.pages)
            and all(page.cache_hit for page in self.pages)
            and (self.summary is None or self.summary.cache_hit),
            "usage": self.usage.to_item(),
            "has_text": bool(text.strip()),
            "document": {
                "kind": self.kind,
                "pages": self.page_count,
                "pages_succeeded": sum(1 for page in self.pages if page.succeeded),
                "pages_failed": self.failed_pages,
                "page_statuses": [page.status for page in self.pages],
                "text_layer_pages": sum(1 for page in self.pages if page.text_layer),
                "ranges": self.ranges,
                "page_errors": [
                    {
                        "page": page.number,
                        "error_type": page.error_type,
                        "error_message": bounded(page.error_message or "", PAGE_ERROR_MAX_BYTES),
                    }
                    for page in self.pages
                    if not page.succeeded
                ][:PAGE_ERRORS_MAX],
            },
        }
        if self.usage.model_calls:
            item["model_latency_ms"] = self.usage.latency_ms
        if self.result_uri:
            item["result_uri"] = self.result_uri
        if self.markdown_uri:
            item["result_markdown_uri"] = self.markdown_uri
        if self.status != FAILED:
            item.update(
                description=summary.description if summary else (first.description if first else ""),
                alt_text=summary.alt_text if summary else "",
                text=preview,
                text_truncated=preview != text or any(page.text_truncated for page in self.pages),
                tags=list(summary.tags) if summary else [],
                adjustments=list(summary.adjustments) if summary else [],
                decorative=False,
            )
            if summary is not None and summary.fields is not None:
                item["fields"] = summary.fields
            if self.summary is not None and self.summary.status != SUCCEEDED:
                item["summary_error"] = {
                    "error_type": self.summary.error_type,
                    "error_message": self.summary.error_message,
                }
        if self.error_type:
            item["error_type"] = self.error_type
            item["error_message"] = self.error_message
        return item

    def result_object(self, source: dict[str, Any]) -> dict[str, Any]:
        """The full result, written to the results bucket: every page with its text, text layer and usage."""
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "source": source,
            "status": self.status,
            "kind": self.kind,
            "page_count": self.page_count,
            **self.facts,
            "usage": self.usage.to_item(),
            "summary": self.summary.to_item() if self.summary else None,
            "pages": [page.to_item() for page in self.pages],
            "error_type": self.error_type,
            "error_message": self.error_message,
        }

    def markdown(self, title: str) -> str:
        """The whole text as Markdown: a heading, then each page under a marker, failed pages said as such."""
        lines = [f"# {title}", ""]
        if self.summary is not None and self.summary.status == SUCCEEDED and self.summary.description:
            lines += [f"_{self.summary.description}_", ""]
        for page in self.pages:
            lines += [f"<!-- page {page.number} -->", ""]
            if page.succeeded:
                lines += [page.text if page.text.strip() else "_(no text on this page)_", ""]
            else:
                lines += [f"> **Page {page.number} could not be read** ({page.error_type}): {page.error_message}", ""]
            if page.number != self.pages[-1].number:
                lines += ["---", ""]
        return "\n".join(lines)


def document_result(
    pages: Sequence[PageResult],
    *,
    kind: str,
    page_count: int,
    summary: SummaryResult | None,
    options: DescribeOptions,
    usage: ModelUsage,
    ranges: int = 1,
) -> DocumentResult:
    """The status rule (see the module's doc) applied to the pages and the summary."""
    ordered = tuple(sorted(pages, key=lambda page: page.number))
    failed = [page for page in ordered if not page.succeeded]
    error_type = error_message = None
    if ordered and len(failed) == len(ordered):
        status: DocumentStatus = FAILED
        error_type = failed[0].error_type
        error_message = bounded(
            f"all {len(ordered)} pages failed; page {failed[0].number}: {failed[0].error_message}",
            ERROR_MESSAGE_MAX_BYTES,
        )
    elif failed or (summary is not None and summary.status != SUCCEEDED):
        status = PARTIAL
    else:
        status = SUCCEEDED
    return DocumentResult(
        status=status,
        kind=kind,
        page_count=page_count,
        pages=ordered,
        summary=summary,
        facts={**options.result_facts(), "detail": "high"},
        usage=usage,
        ranges=ranges,
        error_type=error_type,
        error_message=error_message,
    )


def assemble_document(
    pages: Sequence[PageResult],
    *,
    kind: str,
    page_count: int,
    options: DescribeOptions,
    model: VisionModel,
    deadline: float | None,
    usage: ModelUsage,
    cache: ContentCache | None = None,
    ranges: int = 1,
) -> DocumentResult:
    """Every page's result → the document's: the summary pass over the assembled text, then the status rule."""
    summary = None
    if any(page.succeeded for page in pages):
        summary = summarize(pages, options, model, deadline=deadline, usage=usage, cache=cache)
    return document_result(
        pages, kind=kind, page_count=page_count, summary=summary, options=options, usage=usage, ranges=ranges
    )


def document_failure(
    error: PermanentInputError, *, kind: str, options: DescribeOptions, usage: ModelUsage
) -> DocumentResult:
    """The whole document refused before any page was described (encrypted, too many pages, corrupt, …)."""
    return DocumentResult(
        status=FAILED,
        kind=kind,
        page_count=0,
        pages=(),
        summary=None,
        facts={**options.result_facts(), "detail": "high"},
        usage=usage,
        error_type=error.error_type,
        error_message=bounded(error.message, ERROR_MESSAGE_MAX_BYTES),
    )


__all__ = [
    "DocumentResult",
    "DocumentTimeBudgetError",
    "PageDescriber",
    "PageResult",
    "PageSkippedError",
    "PagesMergedError",
    "SummaryResult",
    "assemble_document",
    "assembled_text",
    "document_failure",
    "document_result",
    "page_groups",
    "render_pages",
    "request_cache_key",
    "split_usage",
    "summarize",
]
