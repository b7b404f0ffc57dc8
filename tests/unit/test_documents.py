"""The document use case on in-memory fakes: pages two by two, per-page failures, the status rule, the cache per
request, the summary pass, and the fan-out's exactly-once assembly under duplicates, reordering and newer versions."""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from sightline.documents import MIN_REQUEST_SECONDS, DocumentTimeBudgetError, split_usage
from sightline.errors import ModelUnavailableError
from sightline.events import ObjectEvent, PageRangeItem
from sightline.pages import EncryptedDocumentError, RendererFailedError, TooManyPagesError
from sightline.pipeline import Pipeline, work_key
from sightline.ports import ModelRequest, ModelUsage
from sightline.profiles import load_profiles_file
from sightline.settings import BUNDLED_PROFILES_FILE, Settings
from tests.support.fakes import (
    FakeContentCache,
    FakeDocumentStore,
    FakeNotifier,
    FakeObjectStore,
    FakePageRenderer,
    FakeResultStore,
    FakeWorkQueue,
    ScriptedModel,
    answer,
    page_text,
    pages_answer,
    requested_pages,
)

pytestmark = pytest.mark.unit

KEY = "documents/report.pdf"
PDF = b"%PDF-1.7\n% a stand-in: the fake renderer decides the pages\n"


def image_parts(request: ModelRequest) -> list[dict[str, Any]]:
    parts = [p for m in request.messages if isinstance(m.get("content"), list) for p in m["content"]]
    return [p for p in parts if p.get("type") == "image_url"]


def event(etag: str = "v1", sequencer: str = "0A", name: str = "ObjectCreated:Put", key: str = KEY) -> ObjectEvent:
    return ObjectEvent(
        bucket="uploads",
        key=key,
        event_name=name,
        event_time="2026-11-26T10:00:00.000Z",
        etag=etag,
        sequencer=sequencer,
    )


@dataclass
class World:
    renderer: FakePageRenderer
    model: ScriptedModel
    range_pages: int = 8
    fan_out: bool = True
    objects: FakeObjectStore = field(default_factory=lambda: FakeObjectStore(bodies={KEY: PDF}))
    results: FakeResultStore = field(default_factory=FakeResultStore)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)
    cache: FakeContentCache = field(default_factory=FakeContentCache)
    documents: FakeDocumentStore = field(default_factory=FakeDocumentStore)
    queue: FakeWorkQueue = field(default_factory=FakeWorkQueue)

    @property
    def pipeline(self) -> Pipeline:
        return Pipeline(
            settings=Settings(
                results_table="results", results_topic_arn="arn:topic", document_range_pages=self.range_pages
            ),
            objects=self.objects,
            results=self.results,
            notifier=self.notifier,
            model=self.model,
            profiles=load_profiles_file(BUNDLED_PROFILES_FILE),
            cache=self.cache,
            renderer=self.renderer,
            documents=self.documents,
            work_queue=self.queue if self.fan_out else None,
        )

    def items(self) -> list[PageRangeItem]:
        return [PageRangeItem.from_message(message) for message in self.queue.sent]

    def record(self, key: str = KEY) -> dict[str, Any]:
        found = self.results.get("uploads", key)
        assert found is not None
        return found


def world(pages: int, model: ScriptedModel | None = None, **options: Any) -> World:
    renderer_options = {k: options.pop(k) for k in ("text_layers", "failing_pages", "document_error") if k in options}
    return World(FakePageRenderer(pages, **renderer_options), model or ScriptedModel(default=pages_answer), **options)


# --- One invocation: a short document.


def test_a_short_document_is_read_two_pages_per_request_in_order_and_assembled() -> None:
    w = world(5, text_layers={2: "Digital text of page 2"})
    outcome = w.pipeline.process(event())
    assert outcome.status == "succeeded"
    page_requests = [r for r in w.model.requests if requested_pages(r)]
    assert sorted(requested_pages(r) for r in page_requests) == [[1, 2], [3, 4], [5]]  # concurrent: any order
    assert all(len(image_parts(r)) == len(requested_pages(r)) <= 2 for r in page_requests)
    assert len(w.model.requests) == 4  # three page requests and one text-only summary
    assert image_parts(w.model.requests[-1]) == []
    record = w.record()
    document = record["document"]
    assert document["pages"] == 5 and document["page_statuses"] == ["succeeded"] * 5 and document["pages_failed"] == []
    assert document["text_layer_pages"] == 1
    assert record["text"].startswith(page_text(1)) and page_text(5) in record["text"]
    # The profile's fields come from the summary pass, validated against the profile's schema.
    assert record["fields"] == {"invoice_number": None, "total": None, "currency": None, "invoice_date": None}
    assert record["usage"]["model_calls"] == 4 and record["usage"]["prompt_tokens"] == 400
    # The full result: per-page JSON and Markdown, one pair of objects per source version.
    result = json.loads(w.documents.read(record["result_uri"]))
    assert [p["page"] for p in result["pages"]] == [1, 2, 3, 4, 5]
    assert result["pages"][1]["text_layer"] == "Digital text of page 2"
    assert sum(p["usage"]["prompt_tokens"] for p in result["pages"]) == 300  # the page shares add up exactly
    markdown = w.documents.read(record["result_markdown_uri"]).decode()
    assert markdown.index("<!-- page 1 -->") < markdown.index("<!-- page 5 -->") and "---" in markdown
    (message, attributes) = w.notifier.published[0]
    assert message["result_uri"] == record["result_uri"] and message["pages"] == 5 and message["pages_failed"] == []
    assert attributes["status"] == "succeeded"


def test_the_text_layer_is_sent_as_an_anchor_beside_its_page() -> None:
    w = world(2, text_layers={1: "INVOICE 2024-117"})
    w.pipeline.process(event())
    texts = [p["text"] for p in w.model.requests[0].messages[1]["content"] if p.get("type") == "text"]
    assert any("INVOICE 2024-117" in text and 'page="1"' in text for text in texts)


def test_a_page_the_model_skips_is_asked_again_alone_and_kept_in_its_place() -> None:
    asked: list[list[int]] = []

    def skips_page_2_once(request: ModelRequest) -> Any:
        asked.append(requested_pages(request))
        return pages_answer(request, skip={2} if asked.count([1, 2]) == 1 and asked[-1] == [1, 2] else set())

    w = world(4, ScriptedModel(default=skips_page_2_once))
    assert w.pipeline.process(event()).status == "succeeded"
    assert sorted(requested_pages(r) for r in w.model.requests if requested_pages(r)) == [[1, 2], [2], [3, 4]]
    result = json.loads(w.documents.read(w.record()["result_uri"]))
    assert [p["text"] for p in result["pages"]] == [page_text(n) for n in (1, 2, 3, 4)]


def test_a_page_skipped_twice_fails_alone_and_the_document_is_partial() -> None:
    w = world(4, ScriptedModel(default=lambda r: pages_answer(r, skip={3})))
    outcome = w.pipeline.process(event())
    assert outcome.status == "partial"
    record = w.record()
    assert record["document"]["pages_failed"] == [3]
    assert record["document"]["page_statuses"] == ["succeeded", "succeeded", "failed", "succeeded"]
    (error,) = record["document"]["page_errors"]
    assert error["page"] == 3 and error["error_type"] == "PageSkipped"
    # Never a silently empty page: the Markdown says the page could not be read, later pages keep their numbers.
    markdown = w.documents.read(record["result_markdown_uri"]).decode()
    assert "Page 3 could not be read" in markdown and "<!-- page 4 -->" in markdown and page_text(4) in markdown
    message, attributes = w.notifier.published[0]
    assert message["pages_failed"] == [3] and attributes["status"] == "partial"


def test_merged_pages_are_detected() -> None:
    def merged(request: ModelRequest) -> Any:
        numbers = requested_pages(request)
        if not numbers:
            return pages_answer(request)  # the summary
        if len(numbers) == 2:
            both = page_text(numbers[0]) + "\n" + page_text(numbers[1])
            return answer(
                json.dumps({"pages": [{"page": f"{numbers[0]}-{numbers[1]}", "description": "", "text": both}]})
            )
        # Asked alone for page 2, it answers for page 1 again.
        return answer(json.dumps({"pages": [{"page": numbers[0] - 1, "description": "", "text": page_text(1)}]}))

    w = world(2, ScriptedModel(default=merged))
    assert w.pipeline.process(event()).status == "partial"
    (error,) = w.record()["document"]["page_errors"]
    assert error["page"] == 2 and error["error_type"] == "PagesMerged"


def test_a_pair_refused_for_one_page_is_retried_page_by_page() -> None:
    def refuses_page_2(request: ModelRequest) -> Any:
        if 2 in requested_pages(request):
            return answer("I'm sorry, but I can't help with that.")
        return pages_answer(request)

    w = world(3, ScriptedModel(default=refuses_page_2))
    assert w.pipeline.process(event()).status == "partial"
    record = w.record()
    assert record["document"]["pages_failed"] == [2]
    assert record["document"]["page_errors"][0]["error_type"] == "ModelRefused"
    assert sorted(requested_pages(r) for r in w.model.requests if requested_pages(r)) == [[1], [1, 2], [2], [3]]
    assert record["usage"]["model_calls"] == 5  # the refused pair is paid and counted too


def test_a_page_the_renderer_fails_on_fails_alone() -> None:
    w = world(5, failing_pages={3: RendererFailedError("the renderer crashed on page 3")})
    assert w.pipeline.process(event()).status == "partial"
    record = w.record()
    assert record["document"]["pages_failed"] == [3]
    assert record["document"]["page_errors"][0]["error_type"] == "RendererFailed"
    assert sorted(requested_pages(r) for r in w.model.requests if requested_pages(r)) == [[1, 2], [4, 5]]


@pytest.mark.parametrize(
    "error", [EncryptedDocumentError("needs a password"), TooManyPagesError("more than 500 pages")]
)
def test_a_refused_document_is_a_failed_record_without_a_model_call(error: Exception) -> None:
    w = world(3, document_error=error)
    outcome = w.pipeline.process(event())
    assert outcome.status == "failed" and w.model.calls == 0
    record = w.record()
    assert record["error_type"] == error.error_type  # type: ignore[attr-defined]
    assert record["document"]["pages"] == 0 and "result_uri" not in record
    assert w.notifier.published[0][1]["status"] == "failed"


def test_a_document_whose_every_page_fails_is_failed() -> None:
    w = world(2, ScriptedModel(default=answer("I cannot help with this request.")))
    assert w.pipeline.process(event()).status == "failed"
    record = w.record()
    assert record["error_type"] == "ModelRefused" and "all 2 pages failed" in record["error_message"]


def test_a_failed_summary_makes_the_document_partial_but_keeps_every_page() -> None:
    def no_summary(request: ModelRequest) -> Any:
        return pages_answer(request) if requested_pages(request) else answer("", finish_reason="length")

    w = world(2, ScriptedModel(default=no_summary))
    assert w.pipeline.process(event()).status == "partial"
    record = w.record()
    assert record["document"]["pages_failed"] == []
    assert record["summary_error"]["error_type"] == "TruncatedModelOutput" and "fields" not in record


def test_a_retry_after_a_transient_failure_does_not_pay_for_the_pages_already_read() -> None:
    calls = {"n": 0}

    def outage_on_pages_5_6(request: ModelRequest) -> Any:
        if requested_pages(request) == [5, 6] and calls["n"] == 0:
            calls["n"] += 1
            raise ModelUnavailableError("HTTP 503")
        return pages_answer(request)

    model = ScriptedModel(default=outage_on_pages_5_6)
    w = world(6, model, fan_out=False)
    with pytest.raises(ModelUnavailableError):
        w.pipeline.process(event())
    assert w.record()["status"] == "processing" and w.record()["last_error_type"] == "ModelUnavailable"
    first_attempt = model.calls
    assert w.pipeline.process(event()).status == "succeeded"
    retried = [requested_pages(r) for r in model.requests[first_attempt:] if requested_pages(r)]
    assert retried == [[5, 6]]  # pages 1–4 came from the cache
    record = w.record()
    # Paid once each: the first attempt's two page requests (carried by the record) and the retry's, plus the summary.
    assert record["usage"]["model_calls"] == 4 and record["cache_hit"] is False


def test_pages_are_not_asked_when_the_time_budget_is_spent() -> None:
    w = world(4, fan_out=False)
    with pytest.raises(DocumentTimeBudgetError):
        w.pipeline.process(event(), deadline=time.monotonic() + MIN_REQUEST_SECONDS / 2)
    assert w.model.calls == 0 and w.record()["last_error_type"] == "DocumentTimeBudget"


def test_identical_documents_under_two_keys_share_the_page_answers() -> None:
    w = world(4)
    w.objects.bodies["documents/copy.pdf"] = PDF
    w.pipeline.process(event())
    paid = w.model.calls
    assert w.pipeline.process(event(key="documents/copy.pdf")).status == "succeeded"
    assert w.model.calls == paid  # the page requests and the summary are all cache hits
    copy = w.record("documents/copy.pdf")
    assert copy["cache_hit"] is True and copy["usage"]["model_calls"] == 0


def test_usage_shares_add_up_to_what_was_paid() -> None:
    usage = ModelUsage(prompt_tokens=7, completion_tokens=3, total_tokens=10, model_calls=1, latency_ms=9)
    shares = split_usage(usage, 2)
    assert sum(s.prompt_tokens for s in shares) == 7 and sum(s.completion_tokens for s in shares) == 3
    assert sum(s.model_calls for s in shares) == 1


# --- Any length: page ranges through the queue.


def run_ranges(w: World, items: list[PageRangeItem]) -> list[str]:
    return [w.pipeline.process_range(item).status for item in items]


def test_a_long_document_fans_out_and_is_assembled_and_notified_exactly_once() -> None:
    w = world(20)
    outcome = w.pipeline.process(event())
    assert outcome.status == "fanned_out" and w.model.calls == 0
    items = w.items()
    assert [(i.first, i.last) for i in items] == [(1, 8), (9, 16), (17, 20)]
    assert w.pipeline.process(event()).status == "duplicate"  # S3 redelivers the event: nothing is sent again
    assert len(w.queue.sent) == 3
    # Duplicates and any order: each range is described once and counted once.
    deliveries = [*items, items[1], items[2], items[0]]
    random.Random(7).shuffle(deliveries)
    statuses = run_ranges(w, deliveries)
    assert statuses.count("succeeded") == 1 and len(w.notifier.published) == 1
    record = w.record()
    assert record["status"] == "succeeded" and record["document"]["pages"] == 20 and record["document"]["ranges"] == 3
    page_requests = [requested_pages(r) for r in w.model.requests if requested_pages(r)]
    assert sorted(n for numbers in page_requests for n in numbers) == list(range(1, 21))  # every page paid once
    assert record["usage"]["model_calls"] == 11  # ten page requests and the summary
    result = json.loads(w.documents.read(record["result_uri"]))
    assert [p["page"] for p in result["pages"]] == list(range(1, 21))
    # Late duplicates after assembly are dropped.
    assert run_ranges(w, items) == ["duplicate"] * 3 and len(w.notifier.published) == 1


def test_a_newer_version_mid_document_drops_the_stale_ranges() -> None:
    w = world(20)
    w.pipeline.process(event(etag="v1", sequencer="0A"))
    old = w.items()
    run_ranges(w, old[:1])
    # A new version is uploaded: its own (short) document is applied
    w.renderer.page_count = 3
    assert w.pipeline.process(event(etag="v2", sequencer="0B")).status == "succeeded"
    assert run_ranges(w, old[1:]) == ["stale", "stale"]
    record = w.record()
    assert record["object"]["etag"] == "v2" and record["document"]["pages"] == 3
    assert len(w.notifier.published) == 1


def test_a_deletion_mid_document_drops_the_stale_ranges() -> None:
    w = world(20)
    w.pipeline.process(event())
    items = w.items()
    run_ranges(w, items[:2])
    assert w.pipeline.process(event(name="ObjectRemoved:Delete", sequencer="0B")).status == "deleted"
    assert run_ranges(w, items[2:]) == ["stale"]
    assert w.record()["status"] == "deleted"
    assert [m["status"] for m, _ in w.notifier.published] == ["deleted"]


def test_the_last_range_waits_for_the_fan_out_mark() -> None:
    # The coordinator sent its ranges but died before marking the record: the last range cannot assemble yet.
    w = world(12)
    w.results.mark_fanout = lambda *a, **k: (_ for _ in ()).throw(ModelUnavailableError("killed"))  # type: ignore[method-assign]
    with pytest.raises(ModelUnavailableError):
        w.pipeline.process(event())
    first = w.items()
    statuses = []
    for item in first:
        try:
            statuses.append(w.pipeline.process_range(item).status)
        except Exception as exc:
            statuses.append(type(exc).__name__)
    assert statuses == ["range_done", "InProgressError"]
    # The event is redelivered: the ranges are sent again and counted once each.
    del w.results.mark_fanout
    assert w.pipeline.process(event()).status == "fanned_out"
    assert run_ranges(w, w.items()[2:]) == ["range_done", "succeeded"]
    assert w.record()["status"] == "succeeded" and len(w.notifier.published) == 1
    assert len([r for r in w.model.requests if requested_pages(r)]) == 6  # every page paid once


def test_a_range_whose_bytes_changed_is_stale() -> None:
    w = world(20)
    w.pipeline.process(event())
    item = w.items()[0]
    w.objects.bodies[KEY] = PDF + b"changed"
    assert w.pipeline.process_range(item).status == "stale"
    assert w.documents.get_json(work_key(item)) is None


def test_url_mode_sends_urls_instead_of_base64() -> None:
    class Host:
        def __init__(self) -> None:
            self.staged: list[bytes] = []

        def url_for(self, jpeg: bytes) -> str:
            self.staged.append(jpeg)
            return f"https://results.example/page-images/{hashlib.sha256(jpeg).hexdigest()}.jpg?X-Amz-Expires=900"

    host = Host()
    w = world(3)
    pipeline = replace(w.pipeline, image_host=host)
    assert pipeline.process(event()).status == "succeeded"
    urls = sorted(p["image_url"]["url"] for r in w.model.requests for p in image_parts(r))
    staged = sorted(
        f"https://results.example/page-images/{hashlib.sha256(j).hexdigest()}.jpg?X-Amz-Expires=900"
        for j in host.staged
    )
    assert len(urls) == 3 and urls == staged  # every page by URL, none inline


def test_an_unreadable_summary_is_repaired_once_without_sending_the_document_again() -> None:
    replies = iter(["not json at all", None])

    def summary_once_garbled(request: ModelRequest) -> Any:
        if requested_pages(request):
            return pages_answer(request)
        reply = next(replies)
        return answer(reply) if reply else pages_answer(request)

    w = world(2, ScriptedModel(default=summary_once_garbled))
    assert w.pipeline.process(event()).status == "succeeded"
    repair = w.model.requests[-1]
    assert page_text(1) not in json.dumps(repair.messages)  # the answer is repaired, the text is not re-sent
    assert w.record()["description"] == "A test document." and w.record()["usage"]["model_calls"] == 3


def test_page_requests_in_flight_are_bounded_per_instance() -> None:
    import threading

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def slow(request: ModelRequest) -> Any:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return pages_answer(request)

    w = world(12, ScriptedModel(default=slow), fan_out=False)
    pipeline = replace(w.pipeline, page_request_slots=threading.Semaphore(2))
    assert pipeline.process(event()).status == "succeeded"
    assert state["most"] == 2  # DOCUMENT_CONCURRENCY is 4, the instance allows 2
