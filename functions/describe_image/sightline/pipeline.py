"""The use case: one object event in, one stored record and one notification out."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sightline.errors import (
    InvalidModelOutputError,
    ObjectTooLargeError,
    PermanentInputError,
    TruncatedModelOutputError,
)
from sightline.events import ObjectEvent
from sightline.imaging import PreparedImage, prepare_image
from sightline.prompt import ImageDescription, build_messages, build_repair_messages, parse_description
from sightline.records import FAILED, ModelUsage, ObjectFacts, build_notification, build_record
from sightline.settings import Settings

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


class ObjectStore(Protocol):
    def fetch(self, event: ObjectEvent, max_bytes: int) -> FetchedObject: ...


class ResultStore(Protocol):
    def put(self, record: dict[str, Any]) -> None: ...


class Notifier(Protocol):
    def publish(self, message: dict[str, Any], attributes: dict[str, str]) -> None: ...


class VisionModel(Protocol):
    def complete(self, messages: list[dict[str, Any]], deadline: float | None) -> ModelAnswer: ...


@dataclass(frozen=True)
class Outcome:
    status: Literal["succeeded", "failed", "skipped"]
    event: ObjectEvent
    record: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def usage(self) -> dict[str, Any]:
        return (self.record or {}).get("usage", {})


@dataclass
class Pipeline:
    settings: Settings
    objects: ObjectStore
    results: ResultStore
    notifier: Notifier
    model: VisionModel
    # Decoding is the memory-hungry step: bound it separately from the network-bound model calls.
    prepare_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(2))

    def process(self, event: ObjectEvent, deadline: float | None = None) -> Outcome:
        """Describe one object. Permanent errors become a failed record; transient errors propagate."""
        if not event.is_create:
            return Outcome("skipped", event, reason=f"{event.event_name} is not an object creation")
        if not self.settings.accepts_key(event.key):
            return Outcome("skipped", event, reason="key does not match OBJECT_KEY_SUFFIXES")

        facts: ObjectFacts | None = None
        image: PreparedImage | None = None
        description: ImageDescription | None = None
        usage = ModelUsage()
        error: PermanentInputError | None = None
        try:
            if event.size is not None and event.size > self.settings.max_object_bytes:
                raise ObjectTooLargeError.for_size(event.size, self.settings.max_object_bytes)
            fetched = self.objects.fetch(event, self.settings.max_object_bytes)
            facts = fetched.facts
            with self.prepare_slots:
                image = prepare_image(
                    fetched.body, self.settings.image_detail, max_pixels=self.settings.max_image_pixels
                )
            description = self._describe(image, usage, deadline)
        except PermanentInputError as exc:
            error = exc

        record = build_record(
            event=event,
            facts=facts,
            model_id=self.settings.model_id,
            detail=self.settings.image_detail,
            image=image,
            description=description,
            usage=usage,
            error=error,
        )
        self.results.put(record)
        # Published only after the record is stored, so a subscriber can always read what it is told about.
        message, attributes = build_notification(record, self.settings.results_table)
        self.notifier.publish(message, attributes)
        return Outcome(record["status"], event, record=record, reason=record.get("error_type"))

    def _describe(self, image: PreparedImage, usage: ModelUsage, deadline: float | None) -> ImageDescription:
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


__all__ = ["FAILED", "FetchedObject", "ModelAnswer", "Outcome", "Pipeline"]
