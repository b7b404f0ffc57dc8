"""Shapes of what we store (the DynamoDB record) and what we announce (the SNS notification)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sightline.errors import SightlineError
from sightline.events import ObjectEvent
from sightline.imaging import PreparedImage
from sightline.prompt import PROMPT_VERSION, ImageDescription

RECORD_SCHEMA_VERSION = 1
NOTIFICATION_SCHEMA_VERSION = 1
NOTIFICATION_EVENT = "sightline.image.processed"
SUCCEEDED = "succeeded"
FAILED = "failed"
DELETED = "deleted"
PROCESSING = "processing"  # claimed by a delivery; the other fields still describe the previous version
TERMINAL = (SUCCEEDED, FAILED, DELETED)
# SNS messages are capped at 256 KB; the full text always stays in the record.
NOTIFICATION_TEXT_LIMIT = 64_000


@dataclass(frozen=True)
class ObjectFacts:
    """What S3 told us about the object we actually read."""

    etag: str | None
    version_id: str | None
    size: int | None
    content_type: str | None = None
    last_modified: str | None = None


@dataclass
class ModelUsage:
    """Tokens the provider billed across every call made for one object (a repair call included)."""

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
            self.usage_reported = False  # some local servers omit usage; say so rather than store zeros as fact
        self.prompt_tokens += prompt_tokens or 0
        self.completion_tokens += completion_tokens or 0
        self.total_tokens = self.prompt_tokens + self.completion_tokens

    def as_item(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "model_calls": self.model_calls,
            "usage_reported": self.usage_reported,
        }


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _object_item(event: ObjectEvent, facts: ObjectFacts | None) -> dict[str, Any]:
    return {
        "version_id": (facts.version_id if facts else None) or event.version_id,
        "etag": ((facts.etag if facts else None) or event.etag or "").strip('"') or None,
        "size": facts.size if facts and facts.size is not None else event.size,
        "content_type": facts.content_type if facts else None,
        "last_modified": facts.last_modified if facts else None,
        "sequencer": event.sequencer,
        "event_name": event.event_name,
        "event_time": event.event_time,
    }


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


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def build_record(
    *,
    event: ObjectEvent,
    facts: ObjectFacts | None,
    model_id: str,
    detail: str,
    image: dict[str, Any] | None,
    description: ImageDescription | None,
    usage: ModelUsage,
    error: SightlineError | None = None,
    cache_hit: bool = False,
    processed_at: str | None = None,
) -> dict[str, Any]:
    """One record per object key: a success carries the model's fields, a failure its error type and message."""
    record: dict[str, Any] = {
        "bucket": event.bucket,
        "key": event.key,
        "schema_version": RECORD_SCHEMA_VERSION,
        "status": FAILED if error else SUCCEEDED,
        "cache_hit": cache_hit,
        "model_id": model_id,
        "detail": detail,
        "prompt_version": PROMPT_VERSION,
        "object": _drop_none(_object_item(event, facts)),
        "usage": usage.as_item(),
        "processed_at": processed_at or utc_now_iso(),
    }
    if usage.model_calls:
        record["model_latency_ms"] = usage.latency_ms
    if image is not None:
        record["image"] = image
    if description is not None and error is None:
        record.update(
            description=description.description,
            alt_text=description.alt_text,
            text=description.text,
            has_text=description.has_text,
            tags=list(description.tags),
            adjustments=list(description.adjustments),
        )
    else:
        record["has_text"] = False
    if error is not None:
        record["error_type"] = error.error_type
        record["error_message"] = error.message[:2000]
    return record


def build_deleted_record(event: ObjectEvent, processed_at: str | None = None) -> dict[str, Any]:
    """An object-removed event: the key's record says so, and keeps nothing of the deleted image."""
    return {
        "bucket": event.bucket,
        "key": event.key,
        "schema_version": RECORD_SCHEMA_VERSION,
        "status": DELETED,
        "has_text": False,
        "object": _drop_none(_object_item(event, None)),
        "processed_at": processed_at or utc_now_iso(),
    }


def build_notification(record: dict[str, Any], table: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The SNS message (versioned JSON) and its message attributes, which subscribers filter on."""
    text = record.get("text", "")
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
            "text": text[:NOTIFICATION_TEXT_LIMIT] if record["status"] == SUCCEEDED else None,
            "text_truncated": len(text) > NOTIFICATION_TEXT_LIMIT if record["status"] == SUCCEEDED else None,
            "tags": record.get("tags"),
            "model_id": record.get("model_id"),
            "cache_hit": record.get("cache_hit"),
            "error_type": record.get("error_type"),
            "error_message": record.get("error_message"),
            "processed_at": record["processed_at"],
            "record": {"table": table, "bucket": record["bucket"], "key": record["key"]},
        }
    )
    attributes = {
        "status": record["status"],
        "has_text": "true" if record["has_text"] else "false",
        "event": NOTIFICATION_EVENT,
    }
    return message, attributes
