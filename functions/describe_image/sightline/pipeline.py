"""The use case: one object event in, at most one paid description, one stored record, one notification.

S3 and SQS deliver at least once and out of order. Exactly-once effects come from conditional writes:
a delivery first *claims* the key's record for its event (refused when a newer event was already
applied, or when another delivery holds the claim), writes the result only while it still holds the
claim, and notifies only once per applied event. Identical bytes are described once per model, prompt
and detail: a content cache, claimed the same way, serves every other key with those bytes.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sightline.errors import (
    InProgressError,
    InvalidModelOutputError,
    ObjectChangedError,
    ObjectTooLargeError,
    PermanentInputError,
    TransientError,
    TruncatedModelOutputError,
)
from sightline.events import ObjectEvent
from sightline.imaging import PreparedImage, prepare_image
from sightline.ordering import order_key, version_token
from sightline.prompt import PROMPT_VERSION, ImageDescription, build_messages, build_repair_messages, parse_description
from sightline.records import (
    ModelUsage,
    ObjectFacts,
    build_deleted_record,
    build_notification,
    build_record,
    image_item,
)
from sightline.settings import Settings

# A claim outlives the invocation that took it by this much; after that another delivery may take over.
CLAIM_MARGIN_MS = 30_000
DEFAULT_CLAIM_MS = 15 * 60 * 1000

# --- Ports: what the use case needs from the outside world. Adapters implement them.


@dataclass(frozen=True)
class FetchedObject:
    body: bytes
    facts: ObjectFacts


@dataclass(frozen=True)
class ModelAnswer:
    content: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int


@dataclass(frozen=True)
class Claim:
    """The answer to 'may this delivery apply its event to the key?'."""

    kind: Literal["claimed", "stale", "duplicate", "in_progress"]
    current: dict[str, Any] | None = None  # the stored record, for stale and duplicate


class ObjectStore(Protocol):
    def fetch(self, event: ObjectEvent, max_bytes: int) -> FetchedObject: ...


class ResultStore(Protocol):
    def claim(
        self, event: ObjectEvent, *, order: str, version: str, claim_id: str, until_ms: int, now_ms: int
    ) -> Claim: ...

    def complete(self, record: dict[str, Any], claim_id: str) -> bool: ...

    def release(self, event: ObjectEvent, claim_id: str, error: TransientError) -> None: ...

    def claim_notification(self, record: dict[str, Any], until_ms: int, now_ms: int) -> bool: ...

    def mark_notified(self, record: dict[str, Any], notified: bool) -> None: ...


class ContentCache(Protocol):
    def get(self, content_key: str) -> dict[str, Any] | None: ...

    def claim(self, content_key: str, claim_id: str, until_ms: int, now_ms: int) -> bool: ...

    def put(self, content_key: str, entry: dict[str, Any]) -> None: ...

    def release(self, content_key: str, claim_id: str) -> None: ...


class Notifier(Protocol):
    def publish(self, message: dict[str, Any], attributes: dict[str, str]) -> None: ...


class VisionModel(Protocol):
    def complete(self, messages: list[dict[str, Any]], deadline: float | None) -> ModelAnswer: ...


OutcomeStatus = Literal["succeeded", "failed", "deleted", "skipped", "stale", "duplicate"]


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    event: ObjectEvent
    record: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def usage(self) -> dict[str, Any]:
        return (self.record or {}).get("usage", {})


@dataclass
class Attempt:
    """What one object's processing has gathered so far: kept for the record even when a later step fails."""

    usage: ModelUsage = field(default_factory=ModelUsage)
    image: dict[str, Any] | None = None


@dataclass(frozen=True)
class Described:
    """What the description step produced, from the model or from the content cache."""

    image: dict[str, Any] | None
    description: ImageDescription | None
    cache_hit: bool = False


def content_key(body: bytes, settings: Settings) -> str:
    """Identical bytes, same model, prompt and detail → the same answer may be reused."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{digest}|{settings.model_id}|p{PROMPT_VERSION}|{settings.image_detail}"


def _description_entry(described: Described, usage: ModelUsage) -> dict[str, Any]:
    assert described.description is not None
    return {
        "image": described.image,
        "description": described.description.description,
        "alt_text": described.description.alt_text,
        "text": described.description.text,
        "tags": list(described.description.tags),
        "adjustments": list(described.description.adjustments),
        "usage": usage.as_item(),
    }


def _described_from_entry(entry: dict[str, Any]) -> Described:
    return Described(
        image=entry.get("image"),
        description=ImageDescription(
            description=entry["description"],
            alt_text=entry["alt_text"],
            text=entry.get("text", ""),
            tags=tuple(entry.get("tags", ())),
            adjustments=tuple(entry.get("adjustments", ())),
        ),
        cache_hit=True,
    )


@dataclass
class Pipeline:
    settings: Settings
    objects: ObjectStore
    results: ResultStore
    notifier: Notifier
    model: VisionModel
    cache: ContentCache | None = None
    # Decoding is the memory-hungry step: bound it separately from the network-bound model calls.
    prepare_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(2))
    wall_clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def process(self, event: ObjectEvent, deadline: float | None = None) -> Outcome:
        """Apply one event. Permanent errors become a failed record; transient errors propagate for a retry."""
        if not (event.is_create or event.is_removal):
            return Outcome("skipped", event, reason=f"{event.event_name} is not handled")
        if not self.settings.accepts_key(event.key):
            return Outcome("skipped", event, reason="key does not match OBJECT_KEY_SUFFIXES")

        now_ms = self.wall_clock_ms()
        claim_id = uuid.uuid4().hex
        until_ms = now_ms + self._claim_ms(deadline)
        order, version = order_key(event), version_token(event)
        claim = self.results.claim(
            event,
            order=order,
            version=version,
            claim_id=claim_id,
            until_ms=until_ms,
            now_ms=now_ms,
        )
        if claim.kind == "stale":
            return Outcome("stale", event, reason="a newer event for this key was already applied")
        if claim.kind == "in_progress":
            raise InProgressError(f"another delivery is processing {event.uri} right now")
        if claim.kind == "duplicate":
            assert claim.current is not None
            # Stored earlier; the notification may not have gone out (publish failed after the write).
            self._notify_once(claim.current, until_ms)
            return Outcome("duplicate", event, record=claim.current, reason="this event was already applied")

        try:
            record = (
                build_deleted_record(event) if event.is_removal else self._describe_object(event, claim_id, deadline)
            )
        except ObjectChangedError as exc:
            # The key was overwritten after this event: the newer version's own event will be applied.
            self.results.release(event, claim_id, InProgressError(exc.message))
            return Outcome("stale", event, reason=exc.message)
        except TransientError as exc:
            self.results.release(event, claim_id, exc)
            raise
        record.update(order_key=order, version_token=version, notified=False)
        if not self.results.complete(record, claim_id):
            return Outcome("stale", event, reason="a newer event took over this key while it was processed")
        self._notify_once(record, until_ms)
        return Outcome(record["status"], event, record=record, reason=record.get("error_type"))

    def _claim_ms(self, deadline: float | None) -> int:
        if deadline is None:
            return DEFAULT_CLAIM_MS
        return max(0, int((deadline - time.monotonic()) * 1000)) + CLAIM_MARGIN_MS

    def _notify_once(self, record: dict[str, Any], until_ms: int) -> None:
        """Published only after the record is stored, and once per applied event."""
        if record.get("notified") or not self.results.claim_notification(record, until_ms, self.wall_clock_ms()):
            return
        message, attributes = build_notification(record, self.settings.results_table)
        try:
            self.notifier.publish(message, attributes)
        except TransientError:
            self.results.mark_notified(record, notified=False)  # free the notification claim for the retry
            raise
        self.results.mark_notified(record, notified=True)
        record["notified"] = True

    def _describe_object(self, event: ObjectEvent, claim_id: str, deadline: float | None) -> dict[str, Any]:
        facts: ObjectFacts | None = None
        described: Described | None = None
        attempt = Attempt()
        error: PermanentInputError | None = None
        try:
            if event.size is not None and event.size > self.settings.max_object_bytes:
                raise ObjectTooLargeError.for_size(event.size, self.settings.max_object_bytes)
            fetched = self.objects.fetch(event, self.settings.max_object_bytes)
            facts = fetched.facts
            described = self._describe_content(fetched.body, claim_id, attempt, deadline)
        except PermanentInputError as exc:
            error = exc
        return build_record(
            event=event,
            facts=facts,
            model_id=self.settings.model_id,
            detail=self.settings.image_detail,
            image=described.image if described else attempt.image,
            description=described.description if described else None,
            usage=attempt.usage,
            error=error,
            cache_hit=described.cache_hit if described else False,
        )

    def _describe_content(self, body: bytes, claim_id: str, attempt: Attempt, deadline: float | None) -> Described:
        """The content cache first; on a miss, claim the content so concurrent twins wait instead of paying."""
        if self.cache is None:
            return self._describe_image(body, attempt, deadline)
        key = content_key(body, self.settings)
        cached = self.cache.get(key)
        if cached is not None:
            return _described_from_entry(cached)
        now_ms = self.wall_clock_ms()
        if not self.cache.claim(key, claim_id, now_ms + self._claim_ms(deadline), now_ms):
            raise InProgressError("identical content is being described for another key right now")
        try:
            described = self._describe_image(body, attempt, deadline)
        except BaseException:
            self.cache.release(key, claim_id)  # failures are not cached: another key may try again
            raise
        self.cache.put(key, _description_entry(described, attempt.usage))
        return described

    def _describe_image(self, body: bytes, attempt: Attempt, deadline: float | None) -> Described:
        with self.prepare_slots:
            image = prepare_image(body, self.settings.image_detail, max_pixels=self.settings.max_image_pixels)
        attempt.image = image_item(image)
        return Described(image=attempt.image, description=self._ask_model(image, attempt.usage, deadline))

    def _ask_model(self, image: PreparedImage, usage: ModelUsage, deadline: float | None) -> ImageDescription:
        answer = self.model.complete(build_messages(image), deadline)
        usage.add(answer.prompt_tokens, answer.completion_tokens, answer.latency_ms)
        if answer.finish_reason == "length":
            raise TruncatedModelOutputError(
                f"the answer hit the output limit of {self.settings.model_max_output_tokens} tokens"
            )
        try:
            return parse_description(answer.content)
        except InvalidModelOutputError as first:
            # One text-only repair attempt: cheaper than the image again, and most format slips are fixable.
            repair = self.model.complete(build_repair_messages(answer.content), deadline)
            usage.add(repair.prompt_tokens, repair.completion_tokens, repair.latency_ms)
            try:
                if repair.finish_reason == "length":
                    raise TruncatedModelOutputError("the repaired answer hit the output limit") from None
                return parse_description(repair.content)
            except InvalidModelOutputError as second:
                raise type(second)(f"{first.message}; after one repair attempt: {second.message}") from None


__all__ = ["Claim", "FetchedObject", "ModelAnswer", "Outcome", "Pipeline", "content_key"]
