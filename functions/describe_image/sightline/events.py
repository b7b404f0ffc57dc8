"""Turn S3 notifications (direct, or inside SQS/SNS envelopes) into object references."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event

from sightline.errors import SightlineError

TEST_EVENT = "s3:TestEvent"


class UnrecognizedEventError(SightlineError):
    """A message that is not an S3 notification. It cannot be recorded against an object,
    so it is reported as a batch failure and ends in the dead-letter queue for a person to see."""

    error_type = "UnrecognizedEvent"


@dataclass(frozen=True)
class ObjectEvent:
    """One S3 object version an event talks about, with the key already URL-decoded."""

    bucket: str
    key: str
    event_name: str
    event_time: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None

    @property
    def is_create(self) -> bool:
        return self.event_name.startswith("ObjectCreated")

    @property
    def is_removal(self) -> bool:
        """Deletes, delete markers and lifecycle expirations."""
        return self.event_name.startswith(("ObjectRemoved", "LifecycleExpiration"))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_notification(notification: dict[str, Any]) -> list[ObjectEvent]:
    """Records of one S3 notification document; the S3 test event yields none."""
    if notification.get("Event") == TEST_EVENT:
        return []
    if not isinstance(notification.get("Records"), list):
        raise UnrecognizedEventError("message has no S3 'Records' list")
    events = []
    for record in S3Event(notification).records:
        if record.get("eventSource") != "aws:s3":
            raise UnrecognizedEventError(f"record from {record.get('eventSource')!r}, expected aws:s3")
        obj = record.s3.get_object
        events.append(
            ObjectEvent(
                bucket=record.s3.bucket.name,
                # S3 URL-encodes keys in events ('+' for space, %2F, UTF-8 escapes) and powertools'
                # S3Object.key returns them raw: decode here, or every key with a space is 'not found'.
                key=unquote_plus(obj.key),
                event_name=record.event_name,
                event_time=record.event_time,
                version_id=obj.get("versionId") or None,
                etag=obj.get("eTag") or None,
                size=obj.get("size"),
                sequencer=obj.get("sequencer") or None,
            )
        )
    return events


def parse_queue_message_body(body: str) -> list[ObjectEvent]:
    """An SQS message body: an S3 notification, or one wrapped in an SNS envelope (S3 → SNS → SQS)."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        raise UnrecognizedEventError("message body is not JSON") from None
    if not isinstance(document, dict):
        raise UnrecognizedEventError("message body is not a JSON object")
    if document.get("Type") == "Notification" and isinstance(document.get("Message"), str):
        return parse_queue_message_body(document["Message"])
    return parse_s3_notification(document)
