"""Ports: what the use case needs from the outside world, and the value types that cross them.

Adapters (``sightline.adapters``) implement these; unit tests use the in-memory fakes in ``tests/support``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sightline.events import ObjectEvent

# How the answer's JSON shape is asked for: a strict JSON Schema, JSON mode, or the prompt alone.
OutputMode = Literal["json_schema", "json_object", "off"]
OutputModeSetting = Literal["auto", "json_schema", "json_object", "off"]
OUTPUT_MODE_SETTINGS: tuple[OutputModeSetting, ...] = ("auto", "json_schema", "json_object", "off")


# --- Values


@dataclass(frozen=True)
class ObjectFacts:
    """What S3 told us about the object we actually read."""

    etag: str | None
    version_id: str | None
    size: int | None
    content_type: str | None = None
    last_modified: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # user metadata (x-amz-meta-*), names lower-case


@dataclass(frozen=True)
class FetchedObject:
    body: bytes
    facts: ObjectFacts


@dataclass
class ModelUsage:
    """Everything the provider may bill for one object: every call that got an answer, failed ones included."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    model_calls: int = 0
    latency_ms: int = 0
    usage_reported: bool = True

    def add(self, prompt_tokens: int | None, completion_tokens: int | None, latency_ms: int) -> None:
        self.model_calls += 1
        self.latency_ms += latency_ms
        if prompt_tokens is None or completion_tokens is None:
            self.usage_reported = False  # some servers omit usage; say so rather than store zeros as fact
        self.prompt_tokens += prompt_tokens or 0
        self.completion_tokens += completion_tokens or 0
        self.total_tokens = self.prompt_tokens + self.completion_tokens

    def to_item(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "model_calls": self.model_calls,
            "usage_reported": self.usage_reported,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any] | None) -> ModelUsage:
        item = item or {}
        return cls(
            prompt_tokens=int(item.get("prompt_tokens", 0)),
            completion_tokens=int(item.get("completion_tokens", 0)),
            total_tokens=int(item.get("total_tokens", 0)),
            model_calls=int(item.get("model_calls", 0)),
            latency_ms=int(item.get("latency_ms", 0)),
            usage_reported=bool(item.get("usage_reported", True)),
        )


@dataclass(frozen=True)
class ModelRequest:
    """One chat completion to ask for. ``json_schema`` is the answer's shape, for structured output."""

    messages: list[dict[str, Any]]
    json_schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    max_output_tokens: int | None = None  # None: the adapter's configured limit
    model_id: str | None = None  # None: the adapter's configured model


@dataclass(frozen=True)
class ModelAnswer:
    """What one HTTP 200 chat completion said, read from any of the shapes providers send."""

    content: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int
    refusal: str | None = None  # message.refusal (OpenAI-style structured refusals)
    tool_arguments: tuple[str, ...] = ()  # function-call arguments, where a model answered through tools
    output_mode: OutputMode = "off"  # how the JSON shape was asked for in the call that answered
    streamed: bool = False


@dataclass(frozen=True)
class Claim:
    """The answer to 'may this delivery apply its event to the key?'."""

    kind: Literal["claimed", "stale", "duplicate", "in_progress"]
    current: dict[str, Any] | None = None  # the stored record, for stale and duplicate
    # The order the claimed record keeps, when not the event's own: a forced backfill item re-describes the key
    # under the order of the event already applied, so it never outranks a real event.
    order: str | None = None


class ReviewChangedError(Exception):
    """A person reviewed the key's alt text while it was being re-described: store again with this review."""

    def __init__(self, review: dict[str, Any] | None) -> None:
        super().__init__("the key's review changed while it was processed")
        self.review = review


# --- Ports


class ObjectStore(Protocol):
    def fetch(self, event: ObjectEvent, max_bytes: int) -> FetchedObject: ...


class VisionModel(Protocol):
    def complete(self, request: ModelRequest, deadline: float | None, usage: ModelUsage) -> ModelAnswer:
        """One answer. Every HTTP 200 is added to ``usage`` (it may be billed), even one that is then refused.

        Raises the domain's errors only: ModelUnavailableError / ProviderResponseError (transient),
        ConfigurationError, ModelRejectedImageError / RequestTooLargeError / ModelRefusedError (permanent).
        """
        ...


class ResultStore(Protocol):
    def claim(
        self, event: ObjectEvent, *, order: str, version: str, claim_id: str, until_ms: int, now_ms: int
    ) -> Claim: ...

    def complete(self, record: dict[str, Any], claim_id: str) -> bool:
        """Store the record while ``claim_id`` holds the key: False when a newer event took it over.

        Raises ReviewChangedError when the key's review is no longer the one the record carries.
        """
        ...

    def set_review(self, bucket: str, key: str, review: dict[str, Any]) -> bool:
        """A person's reviewed alt text for an existing record; False when there is no record for the key."""
        ...

    def release(self, event: ObjectEvent, claim_id: str, error_type: str, message: str, usage: ModelUsage) -> None: ...

    def claim_notification(self, record: dict[str, Any], until_ms: int, now_ms: int) -> bool: ...

    def mark_notified(self, record: dict[str, Any], notified: bool) -> None: ...

    # Documents split into page ranges (fan-out): the key's record counts the ranges done, once each.

    def get(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The key's record, read consistently."""
        ...

    def mark_fanout(self, event: ObjectEvent, claim_id: str, order: str, *, ranges_total: int, page_count: int) -> bool:
        """The event's document is being described in ranges: release the claim, and make every further delivery
        of the same event a duplicate. False when this delivery no longer holds the claim."""
        ...

    def add_range_done(self, bucket: str, key: str, order: str, range_id: str) -> int | None:
        """Count one finished range (idempotent: a set, not a counter); the number of distinct ranges done, or
        None when the key moved on (a newer version, a deletion, or the document was already assembled)."""
        ...

    def claim_assembly(
        self, bucket: str, key: str, order: str, claim_id: str, until_ms: int, now_ms: int
    ) -> Literal["claimed", "busy", "gone", "not_ready"]:
        """Take the record's claim to assemble the document: "busy" when another delivery holds it, "not_ready"
        when the fan-out is not marked yet, "gone" when the key moved on or was assembled already."""
        ...

    # Deferred items (budget reached, provider paused): parked in the key's record, resumed later.

    def defer(
        self, event: ObjectEvent, claim_id: str, error_type: str, message: str, usage: ModelUsage, resume_after_ms: int
    ) -> bool:
        """Park the claimed event: status ``deferred``, its reason, and the event itself to send again later.
        False when this delivery no longer holds the claim (a newer event took the key)."""
        ...

    def deferred(self, limit: int) -> list[dict[str, Any]]:
        """Parked records (bucket, key, order_key, error_type, deferred_event, deferred_until), oldest first."""
        ...

    def mark_resumed(self, bucket: str, key: str, order: str) -> bool:
        """The parked event was sent again: the record becomes a released claim its event may take. False when the
        key moved on meanwhile (then the sent event is stale, and harmless)."""
        ...


class ContentCache(Protocol):
    def get(self, content_key: str) -> dict[str, Any] | None:
        """A finished entry (a description or a permanent failure), or None."""
        ...

    def claim(self, content_key: str, claim_id: str, until_ms: int, now_ms: int) -> bool: ...

    def put(self, content_key: str, entry: dict[str, Any], ttl_seconds: int | None = None) -> None: ...

    def release(self, content_key: str, claim_id: str) -> None: ...


class Notifier(Protocol):
    def publish(self, message: dict[str, Any], attributes: dict[str, str]) -> None: ...


class DocumentStore(Protocol):
    """The results bucket: documents' results (one per source version) and their page ranges' partial results."""

    def put(self, key: str, body: bytes, content_type: str) -> str:
        """Write an object; returns its s3:// URI."""
        ...

    def get_json(self, key: str) -> dict[str, Any] | None:
        """A JSON object written earlier, or None when there is none."""
        ...


class ImageHost(Protocol):
    """Images by URL (the provider guide's second way): a short-lived URL the model's provider can fetch."""

    def url_for(self, jpeg: bytes) -> str: ...


class WorkQueue(Protocol):
    """The uploads queue, as a place to send work: a long document's page ranges, deferred items sent back."""

    def send(self, messages: list[dict[str, Any]], delay_seconds: int = 0) -> None: ...


class PageRenderer(Protocol):
    """A document's pages as prepared images. Raises the document refusals of ``sightline.pages``."""

    def render(self, data: bytes, pages: range | None = None) -> Any:  # sightline.pages.RenderedDocument
        ...


# --- Spend control: a daily budget kept in shared counters, and a circuit breaker shared by every instance.


@dataclass(frozen=True)
class Spend:
    """An amount of spend: tokens, and their cost in millionths of the pricing table's currency."""

    tokens: int = 0
    cost_micros: int = 0


@dataclass(frozen=True)
class SpendState:
    """One scope's counters for one day. ``committed`` = settled spend + reservations still in flight."""

    committed: Spend
    spent: Spend
    calls: int = 0
    deferrals: int = 0


class SpendLedger(Protocol):
    def reserve(self, scope: str, day: str, amount: Spend, cap: Spend, expires_at: int) -> bool:
        """Atomically add ``amount`` to the scope's committed spend for ``day`` unless that passes ``cap`` (a zero
        field of the cap: no cap on it). False (nothing added) at the cap."""
        ...

    def settle(self, scope: str, day: str, reserved: Spend, actual: Spend, expires_at: int) -> None:
        """The call finished: replace its reservation by what it actually cost."""
        ...

    def count_deferral(self, scope: str, day: str, expires_at: int) -> None: ...

    def read(self, scope: str, day: str) -> SpendState: ...


class ProviderBreaker(Protocol):
    def open_until(self, now_ms: int) -> int | None:
        """When the breaker is open: until when (epoch ms). None when calls may go out."""
        ...

    def record_failure(self, now_ms: int) -> int | None:
        """Count one provider failure (429/5xx/timeout after the adapter's own retries) in the current window;
        returns the open-until time when the breaker is open now (this failure opened it, or it already was)."""
        ...
