"""In-memory fakes of the use case's ports, with the same conditional semantics as the DynamoDB adapters."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sightline.errors import ObjectNotFoundError, RecordRejectedError
from sightline.events import ObjectEvent
from sightline.ordering import refused_claim, refused_forced_claim
from sightline.ports import (
    Claim,
    FetchedObject,
    ModelAnswer,
    ModelRequest,
    ModelUsage,
    ObjectFacts,
    ReviewChangedError,
)
from sightline.records import DEFERRED, FAILED, PARTIAL, PROCESSING, SUCCEEDED


@dataclass
class FakeObjectStore:
    bodies: dict[str, bytes] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)

    def fetch(self, event: ObjectEvent, max_bytes: int) -> FetchedObject:
        if event.key not in self.bodies:
            raise ObjectNotFoundError(f"GetObject {event.uri} failed: NoSuchKey")
        body = self.bodies[event.key]
        facts = ObjectFacts(
            etag=event.etag, version_id=event.version_id, size=len(body), metadata=self.metadata.get(event.key, {})
        )
        return FetchedObject(body=body, facts=facts)


class FakeResultStore:
    """One record per (bucket, key), claimed and completed under the same conditions as DynamoDBResultStore."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.reject_next_complete = 0  # how many complete() calls to refuse as DynamoDB's ValidationException

    def get(self, bucket: str, key: str) -> dict[str, Any] | None:
        with self.lock:
            item = self.items.get((bucket, key))
            return copy.deepcopy(item) if item else None

    def claim(
        self, event: ObjectEvent, *, order: str, version: str, claim_id: str, until_ms: int, now_ms: int
    ) -> Claim:
        with self.lock:
            current = self.items.get((event.bucket, event.key))
            claimable = (
                current is None
                or str(current["order_key"]) < order
                or (order.startswith("s") and str(current["order_key"]).startswith("t"))
                or (
                    current["order_key"] == order
                    and (
                        (
                            current["status"] == PROCESSING
                            and current["claim_until"] < now_ms
                            and current.get("fanout_order") != order
                        )
                        or current["status"] == DEFERRED
                    )
                )
            )
            if claimable:
                return Claim("claimed", self._take(event, claim_id, until_ms, order_key=order, version_token=version))
            backfill = event.backfill
            if backfill is None or not backfill.force:
                return refused_claim(copy.deepcopy(current), order)
            assert current is not None
            run = backfill.run
            forced = (current["status"] in (SUCCEEDED, PARTIAL, FAILED) and current.get("forced_run") != run) or (
                current.get("forced_run") == run
                and (
                    (current["status"] == PROCESSING and current["claim_until"] < now_ms)
                    or current["status"] == DEFERRED
                )
            )
            if not forced:
                return refused_forced_claim(copy.deepcopy(current), run)
            previous = self._take(event, claim_id, until_ms, version_token=version, forced_run=run)
            assert previous is not None
            return Claim("claimed", previous, order=str(previous["order_key"]))

    def _take(self, event: ObjectEvent, claim_id: str, until_ms: int, **fields: Any) -> dict[str, Any] | None:
        current = self.items.get((event.bucket, event.key))
        previous = copy.deepcopy(current)
        item = current if current is not None else {"bucket": event.bucket, "key": event.key}
        for name in ("ranges_done", "fanout_order", "ranges_total", "fanout_pages", "deferred_event", "deferred_until"):
            item.pop(name, None)
        item.update(status=PROCESSING, claim_id=claim_id, claim_until=until_ms, notified=False, **fields)
        self.items[(event.bucket, event.key)] = item
        return previous

    def defer(
        self, event: ObjectEvent, claim_id: str, error_type: str, message: str, usage: ModelUsage, resume_after_ms: int
    ) -> bool:
        with self.lock:
            current = self.items.get((event.bucket, event.key))
            if current is None or current.get("claim_id") != claim_id:
                return False
            current.update(
                status=DEFERRED,
                claim_until=0,
                error_type=error_type,
                error_message=message,
                attempt_usage=usage.to_item(),
                deferred_event=json.dumps(event.to_s3_record()),
                deferred_until=resume_after_ms,
            )
            return True

    def deferred(self, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(i) for i in self.items.values() if i.get("status") == DEFERRED][:limit]

    def mark_resumed(self, bucket: str, key: str, order: str) -> bool:
        with self.lock:
            current = self.items.get((bucket, key))
            if current is None or current.get("order_key") != order or current.get("status") != DEFERRED:
                return False
            current.update(status=PROCESSING, claim_until=0)
            current.pop("deferred_event", None)
            current.pop("deferred_until", None)
            return True

    def complete(self, record: dict[str, Any], claim_id: str) -> bool:
        with self.lock:
            if self.reject_next_complete:
                self.reject_next_complete -= 1
                raise RecordRejectedError("PutItem failed: ValidationException: Item size has exceeded the limit")
            current = self.items.get((record["bucket"], record["key"]))
            if current is None or current.get("claim_id") != claim_id:
                return False
            if (current.get("review") or {}).get("reviewed_at") != (record.get("review") or {}).get("reviewed_at"):
                raise ReviewChangedError(copy.deepcopy(current.get("review")))
            self.items[(record["bucket"], record["key"])] = {
                **copy.deepcopy(record),
                "claim_id": claim_id,
                "claim_until": 0,
            }
            return True

    def set_review(self, bucket: str, key: str, review: dict[str, Any]) -> bool:
        with self.lock:
            current = self.items.get((bucket, key))
            if current is None:
                return False
            current.update(
                review=copy.deepcopy(review), alt_text_reviewed=review.get("alt_text", ""), review_stale=False
            )
            return True

    def release(self, event: ObjectEvent, claim_id: str, error_type: str, message: str, usage: ModelUsage) -> None:
        with self.lock:
            current = self.items.get((event.bucket, event.key))
            if current is not None and current.get("claim_id") == claim_id:
                current.update(
                    claim_until=0, last_error_type=error_type, last_error_message=message, attempt_usage=usage.to_item()
                )

    def claim_notification(self, record: dict[str, Any], until_ms: int, now_ms: int) -> bool:
        with self.lock:
            current = self.items.get((record["bucket"], record["key"]))
            if (
                current is None
                or current.get("order_key") != record["order_key"]
                or current.get("notified")
                or current.get("notify_until", 0) >= now_ms
            ):
                return False
            current["notify_until"] = until_ms
            return True

    def mark_notified(self, record: dict[str, Any], notified: bool) -> None:
        with self.lock:
            current = self.items.get((record["bucket"], record["key"]))
            if current is not None and current.get("order_key") == record["order_key"]:
                current.update(notified=notified, notify_until=0)

    def mark_fanout(self, event: ObjectEvent, claim_id: str, order: str, *, ranges_total: int, page_count: int) -> bool:
        with self.lock:
            current = self.items.get((event.bucket, event.key))
            if (
                current is None
                or current.get("claim_id") != claim_id
                or current.get("order_key") != order
                or current.get("status") != PROCESSING
            ):
                return False
            current.update(fanout_order=order, ranges_total=ranges_total, fanout_pages=page_count, claim_until=0)
            return True

    def add_range_done(self, bucket: str, key: str, order: str, range_id: str) -> int | None:
        with self.lock:
            current = self.items.get((bucket, key))
            if current is None or current.get("order_key") != order or current.get("status") != PROCESSING:
                return None
            done = current.setdefault("ranges_done", set())
            done.add(range_id)
            return len(done)

    def claim_assembly(self, bucket: str, key: str, order: str, claim_id: str, until_ms: int, now_ms: int) -> Any:
        with self.lock:
            current = self.items.get((bucket, key)) or {}
            if current.get("order_key") != order or current.get("status") != PROCESSING:
                return "gone"
            if current.get("fanout_order") != order:
                return "not_ready"
            if current.get("claim_until", 0) >= now_ms:
                return "busy"
            current.update(claim_id=claim_id, claim_until=until_ms)
            return "claimed"


class FakeDocumentStore:
    """The results bucket in memory."""

    def __init__(self, bucket: str = "results-bucket") -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()

    def put(self, key: str, body: bytes, content_type: str) -> str:
        with self.lock:
            self.objects[key] = (body, content_type)
        return f"s3://{self.bucket}/{key}"

    def get_json(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.objects.get(key)
        return json.loads(found[0]) if found else None

    def read(self, uri: str) -> bytes:
        return self.objects[uri.removeprefix(f"s3://{self.bucket}/")][0]


@dataclass
class FakeWorkQueue:
    sent: list[dict[str, Any]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    delays: list[int] = field(default_factory=list)

    def send(self, messages: list[dict[str, Any]], delay_seconds: int = 0) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.extend(copy.deepcopy(messages))
        self.delays.extend([delay_seconds] * len(messages))


class FakeContentCache:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def get(self, content_key: str) -> dict[str, Any] | None:
        with self.lock:
            entry = self.entries.get(content_key)
            return copy.deepcopy(entry) if entry and entry.get("state") == "ready" else None

    def claim(self, content_key: str, claim_id: str, until_ms: int, now_ms: int) -> bool:
        with self.lock:
            entry = self.entries.get(content_key)
            if entry is not None and not (entry["state"] == "pending" and entry["claim_until"] < now_ms):
                return False
            self.entries[content_key] = {"state": "pending", "claim_id": claim_id, "claim_until": until_ms}
            return True

    def put(self, content_key: str, entry: dict[str, Any], ttl_seconds: int | None = None) -> None:
        with self.lock:
            self.entries[content_key] = {**copy.deepcopy(entry), "state": "ready", "ttl_seconds": ttl_seconds}

    def release(self, content_key: str, claim_id: str) -> None:
        with self.lock:
            entry = self.entries.get(content_key)
            if entry is not None and entry["state"] == "pending" and entry["claim_id"] == claim_id:
                entry["claim_until"] = 0


@dataclass
class FakeNotifier:
    published: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)  # raised, in order, before publishing

    def publish(self, message: dict[str, Any], attributes: dict[str, str]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.published.append((message, attributes))


Script = ModelAnswer | BaseException | Callable[[ModelRequest], ModelAnswer]


def answer(content: str | None = None, **fields: Any) -> ModelAnswer:
    """A completion as the adapter returns it: 100 prompt and 20 completion tokens unless told otherwise."""
    values: dict[str, Any] = {
        "content": content or "",
        "finish_reason": "stop",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "latency_ms": 5,
    }
    values.update(fields)
    return ModelAnswer(**values)


class ScriptedModel:
    """Answers (or raises) from a script, then from a default; counts every call like the real adapter.

    An exception in the script stands for a call that got no HTTP 200, so no usage is added.
    """

    def __init__(self, *script: Script, default: Script | None = None, delay: float = 0.0) -> None:
        self.script: list[Script] = list(script)
        self.default = default
        self.delay = delay
        self.requests: list[ModelRequest] = []
        self.lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.requests)

    def complete(self, request: ModelRequest, deadline: float | None, usage: ModelUsage) -> ModelAnswer:
        with self.lock:
            self.requests.append(request)
            step = self.script.pop(0) if self.script else self.default
        if self.delay:
            time.sleep(self.delay)
        if step is None:
            raise AssertionError("the model was called more often than scripted")
        if isinstance(step, BaseException):
            raise step
        result = step if isinstance(step, ModelAnswer) else step(request)
        usage.add(result.prompt_tokens, result.completion_tokens, result.latency_ms)
        return result


# --- Documents


def page_image(number: int, size: tuple[int, int] = (306, 396)) -> Any:
    """A small page with its number drawn on it (each page's JPEG differs, as real pages do)."""
    from PIL import Image, ImageDraw

    from sightline.pages import prepare_page

    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).text((20, 20 + 7 * (number % 40)), f"page {number}", fill=0)
    return prepare_page(image, kind="pdf")


class FakePageRenderer:
    """Renders a document of `page_count` pages (whatever the bytes), failing the pages it is told to, the way
    the child-process renderer fails: the whole call raises."""

    def __init__(
        self,
        page_count: int,
        *,
        text_layers: dict[int, str] | None = None,
        failing_pages: dict[int, BaseException] | None = None,
        document_error: BaseException | None = None,
        kind: str = "pdf",
    ) -> None:
        self.page_count = page_count
        self.text_layers = text_layers or {}
        self.failing_pages = failing_pages or {}
        self.document_error = document_error
        self.kind = kind
        self.calls: list[range | None] = []
        self.lock = threading.Lock()

    def render(self, data: bytes, pages: range | None = None) -> Any:
        from sightline.pages import RenderedDocument, RenderedPage, page_numbers

        with self.lock:
            self.calls.append(pages)
        if self.document_error is not None:
            raise self.document_error
        numbers = page_numbers(self.page_count, pages)
        for number in numbers:
            if number in self.failing_pages:
                raise self.failing_pages[number]
        rendered = tuple(
            RenderedPage(number=n, image=page_image(n), text_layer=self.text_layers.get(n)) for n in numbers
        )
        return RenderedDocument(kind=self.kind, page_count=self.page_count, pages=rendered)  # type: ignore[arg-type]


PAGES_LINE = re.compile(r"^Pages in this request: (\d+(?:, \d+)*)$", re.MULTILINE)


def requested_pages(request: ModelRequest) -> list[int]:
    """The page numbers a page request names (its instruction's first line); [] for other requests."""
    for message in request.messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part.get("type") == "text" and (found := PAGES_LINE.search(str(part.get("text", "")))):
                return [int(n) for n in found.group(1).split(", ")]
    return []


def page_text(number: int) -> str:
    return f"Text of page {number}.\nSecond line of page {number}."


def pages_answer(
    request: ModelRequest,
    *,
    skip: set[int] = frozenset(),  # type: ignore[assignment]
    text: Callable[[int], str] = page_text,
) -> ModelAnswer:
    """A model that reads every page it is shown (but those in `skip`); answers summaries as a summary."""
    numbers = requested_pages(request)
    if not numbers:
        return answer(
            json.dumps({"description": "A test document.", "alt_text": "Test document", "tags": ["test"], "fields": {}})
        )
    pages = [{"page": n, "description": f"Page {n}.", "text": text(n)} for n in numbers if n not in skip]
    return answer(json.dumps({"pages": pages}))
