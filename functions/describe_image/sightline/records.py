"""Shapes of what we store (the DynamoDB record), cache (by content) and announce (the SNS notification).

Every string that reaches AWS is storable UTF-8 and bounded in bytes here, so no answer of any size or
encoding can produce an item (400 KB) or a message (256 KB) that AWS refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from sightline.answers import ImageDescription
from sightline.events import ObjectEvent
from sightline.imaging import PreparedImage
from sightline.ports import ModelUsage, ObjectFacts
from sightline.text import bounded, utf8_size

# 2: profiles (profile, task, language, decorative, fields, context_used, review). See the README's migration note.
RECORD_SCHEMA_VERSION = 2
NOTIFICATION_SCHEMA_VERSION = 2
NOTIFICATION_EVENT = "sightline.image.processed"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
DELETED = "deleted"
PARTIAL = "partial"  # a document some of whose pages failed (listed in the record)
PROCESSING = "processing"  # claimed by a delivery; the other fields still describe the previous version
# Parked (budget reached, provider paused): not the object's fault; its event is sent again when the reason is gone.
DEFERRED = "deferred"
TERMINAL = (SUCCEEDED, PARTIAL, FAILED, DELETED)
WITH_CONTENT = (SUCCEEDED, PARTIAL)

ERROR_MESSAGE_MAX_BYTES = 2_000
# SNS accepts 262,144 bytes per message. The OCR text is the only large field: it is cut to this many bytes
# in the notification (flagged), and the message as a whole is checked against the limit below.
NOTIFICATION_TEXT_MAX_BYTES = 64_000
SNS_MESSAGE_MAX_BYTES = 262_144
SNS_MESSAGE_BUDGET_BYTES = SNS_MESSAGE_MAX_BYTES - 8_192  # attributes and envelope count too

ResultStatus = Literal["succeeded", "failed"]


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def image_item(image: PreparedImage) -> dict[str, Any]:
    """The image facts stored in a record (and in the content cache, so a cache hit has them too)."""
    return {
        "format": image.source_format,
        "mode": image.source_mode,
        "original_width": image.original_width,
        "original_height": image.original_height,
        "sent_width": image.sent_width,
        "sent_height": image.sent_height,
        "bytes_sent": image.bytes_sent,
        "jpeg_quality": image.jpeg_quality,
        "detail_sent": image.detail_sent,
        "budget": image.budget,
        "document_like": image.document_like,
        "exif_orientation": image.orientation,
        "estimated_image_tokens": image.estimated_image_tokens,
    }


@dataclass(frozen=True)
class DescribeResult:
    """What describing one object's content produced: a validated description or a permanent failure.

    The one place the description's fields are listed: ``to_item`` is what the record and the content
    cache store, ``from_item`` reads either back.
    """

    status: ResultStatus
    model_id: str
    detail: str
    prompt_version: str
    profile: str = "default"
    task: str = "caption"
    language: str = "en"
    context_used: bool = False
    usage: ModelUsage = field(default_factory=ModelUsage)
    image: dict[str, Any] | None = None
    description: ImageDescription | None = None
    error_type: str | None = None
    error_message: str | None = None
    output_mode: str | None = None
    cache_hit: bool = False

    @classmethod
    def failed(cls, error_type: str, message: str, **fields: Any) -> DescribeResult:
        return cls(
            status="failed",
            error_type=error_type,
            error_message=bounded(message, ERROR_MESSAGE_MAX_BYTES),
            **fields,
        )

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def as_cache_hit(self, profile: str) -> DescribeResult:
        """Served from the cache: no call was made for this object, so it carries no usage of its own; the
        profile is this object's (another profile with the same settings may have paid for the answer)."""
        return replace(self, cache_hit=True, usage=ModelUsage(), profile=profile)

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "status": self.status,
            "cache_hit": self.cache_hit,
            "model_id": self.model_id,
            "detail": self.detail,
            "prompt_version": self.prompt_version,
            "profile": self.profile,
            "task": self.task,
            "language": self.language,
            "context_used": self.context_used,
            "usage": self.usage.to_item(),
            "has_text": False,
        }
        if self.usage.model_calls:
            item["model_latency_ms"] = self.usage.latency_ms
        if self.output_mode:
            item["output_mode"] = self.output_mode
        if self.image is not None:
            item["image"] = self.image
        answer = self.description
        if answer is not None and self.succeeded:
            item.update(
                description=answer.description,
                alt_text=answer.alt_text,
                text=answer.text,
                text_truncated=answer.text_truncated,
                has_text=answer.has_text,
                tags=list(answer.tags),
                adjustments=list(answer.adjustments),
                decorative=answer.decorative,
            )
            if answer.fields is not None:
                item["fields"] = answer.fields
        if not self.succeeded:
            item["error_type"] = self.error_type
            item["error_message"] = self.error_message
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DescribeResult:
        description = None
        if item.get("status") == SUCCEEDED:
            description = ImageDescription(
                description=str(item.get("description", "")),
                alt_text=str(item.get("alt_text", "")),
                text=str(item.get("text", "")),
                tags=tuple(item.get("tags") or ()),
                adjustments=tuple(item.get("adjustments") or ()),
                text_truncated=bool(item.get("text_truncated", False)),
                decorative=bool(item.get("decorative", False)),
                fields=item.get("fields"),
            )
        usage = ModelUsage.from_item(item.get("usage"))
        if usage.model_calls and "model_latency_ms" in item:
            usage.latency_ms = int(item["model_latency_ms"])
        return cls(
            status=SUCCEEDED if item.get("status") == SUCCEEDED else FAILED,
            model_id=str(item.get("model_id", "")),
            detail=str(item.get("detail", "")),
            prompt_version=str(item.get("prompt_version", "")),
            profile=str(item.get("profile", "default")),
            task=str(item.get("task", "caption")),
            language=str(item.get("language", "en")),
            context_used=bool(item.get("context_used", False)),
            usage=usage,
            image=item.get("image"),
            description=description,
            error_type=item.get("error_type"),
            error_message=item.get("error_message"),
            output_mode=item.get("output_mode"),
            cache_hit=bool(item.get("cache_hit", False)),
        )


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _object_item(event: ObjectEvent, facts: ObjectFacts | None) -> dict[str, Any]:
    return _drop_none(
        {
            "version_id": (facts.version_id if facts else None) or event.version_id,
            "etag": ((facts.etag if facts else None) or event.etag or "").strip('"') or None,
            "size": facts.size if facts and facts.size is not None else event.size,
            "content_type": bounded(facts.content_type, 256) if facts and facts.content_type else None,
            "last_modified": facts.last_modified if facts else None,
            "sequencer": event.sequencer,
            "event_name": event.event_name,
            "event_time": event.event_time,
        }
    )


class ResultItem(Protocol):
    def to_item(self) -> dict[str, Any]: ...


def build_record(
    event: ObjectEvent,
    facts: ObjectFacts | None,
    result: ResultItem,
    *,
    content_sha256: str | None = None,
    review: dict[str, Any] | None = None,
    processed_at: str | None = None,
) -> dict[str, Any]:
    """One record per object key: the object's facts plus what describing it produced.

    A person's reviewed alt text (``review``) is kept across re-descriptions of the key, never overwritten;
    ``review_stale`` says the image changed since the person reviewed it.
    """
    record = {
        "bucket": event.bucket,
        "key": event.key,
        "schema_version": RECORD_SCHEMA_VERSION,
        "object": _object_item(event, facts),
        "processed_at": processed_at or utc_now_iso(),
        **result.to_item(),
    }
    if content_sha256:
        record["content_sha256"] = content_sha256
    if review:
        record.update(with_review(record, review))
    return record


def with_review(record: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
    """The review fields of a record: the reviewed alt text, and whether the image changed since."""
    return {
        "review": review,
        "alt_text_reviewed": review.get("alt_text", ""),
        "review_stale": review.get("content_sha256") != record.get("content_sha256"),
    }


def build_deleted_record(event: ObjectEvent, processed_at: str | None = None) -> dict[str, Any]:
    """An object-removed event: the key's record says so, and keeps nothing of the deleted image."""
    return {
        "bucket": event.bucket,
        "key": event.key,
        "schema_version": RECORD_SCHEMA_VERSION,
        "status": DELETED,
        "has_text": False,
        "object": _object_item(event, None),
        "processed_at": processed_at or utc_now_iso(),
    }


def build_failed_storage_record(record: dict[str, Any], reason: str) -> dict[str, Any]:
    """The record to store when DynamoDB refused the full one: the key's facts and why, nothing large."""
    names = (
        "bucket",
        "key",
        "schema_version",
        "object",
        "processed_at",
        "usage",
        "order_key",
        "version_token",
        "profile",
        "task",
        "language",
        "review",
        "alt_text_reviewed",
    )
    kept = {name: record[name] for name in names if name in record}
    return {
        **kept,
        "status": FAILED,
        "has_text": False,
        "notified": False,
        "error_type": "RecordRejected",
        "error_message": bounded(f"the result could not be stored: {reason}", ERROR_MESSAGE_MAX_BYTES),
    }


def _message_size(message: dict[str, Any]) -> int:
    return utf8_size(json.dumps(message, ensure_ascii=False, separators=(",", ":")))


NOTIFICATION_PAGES_FAILED_MAX = 5_000  # page numbers listed in a notification (MAX_DOCUMENT_PAGES: all of them)


def _document_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A document's notification says where its full result is, how many pages it has and which failed."""
    document = record.get("document")
    if not isinstance(document, dict):
        return {}
    failed = list(document.get("pages_failed") or [])
    return {
        "result_uri": record.get("result_uri"),
        "result_markdown_uri": record.get("result_markdown_uri"),
        "pages": document.get("pages"),
        "pages_failed": failed[:NOTIFICATION_PAGES_FAILED_MAX],
    }


def build_notification(
    record: dict[str, Any], table: str, *, minimal: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """The SNS message (versioned JSON) and its message attributes, which subscribers filter on.

    ``minimal`` leaves out the description fields: the fallback when SNS refused the full message.
    """
    succeeded = record["status"] in WITH_CONTENT
    text, text_cut = record.get("text", ""), False
    if succeeded:
        cut = bounded(text, NOTIFICATION_TEXT_MAX_BYTES)
        text, text_cut = cut, cut != text
    message = _drop_none(
        {
            "schema_version": NOTIFICATION_SCHEMA_VERSION,
            "event": NOTIFICATION_EVENT,
            "status": record["status"],
            "bucket": record["bucket"],
            "key": record["key"],
            "version_id": record["object"].get("version_id"),
            "etag": record["object"].get("etag"),
            "sequencer": record["object"].get("sequencer"),
            "has_text": record["has_text"],
            "description": record.get("description"),
            "alt_text": record.get("alt_text"),
            "text": text if succeeded else None,
            "text_truncated": (text_cut or bool(record.get("text_truncated"))) if succeeded else None,
            "tags": record.get("tags"),
            "decorative": record.get("decorative"),
            "fields": record.get("fields"),
            "alt_text_reviewed": record.get("alt_text_reviewed"),
            "review_stale": record.get("review_stale"),
            "profile": record.get("profile"),
            "task": record.get("task"),
            "language": record.get("language"),
            "model_id": record.get("model_id"),
            "cache_hit": record.get("cache_hit"),
            "error_type": record.get("error_type"),
            "error_message": record.get("error_message"),
            **_document_fields(record),
            "processed_at": record["processed_at"],
            "record": {"table": table, "bucket": record["bucket"], "key": record["key"]},
        }
    )
    if minimal or _message_size(message) > SNS_MESSAGE_BUDGET_BYTES:
        for name in ("description", "alt_text", "text", "tags", "fields"):
            message.pop(name, None)
        message["content_omitted"] = True  # read the record for the fields
    attributes = {
        "status": record["status"],
        "has_text": "true" if record["has_text"] else "false",
        "event": NOTIFICATION_EVENT,
        # Subscribers filter on these: an alt-text consumer subscribes to {"task": ["alt_text"]}.
        **{name: str(record[name]) for name in ("profile", "task", "language") if record.get(name)},
    }
    return message, attributes
