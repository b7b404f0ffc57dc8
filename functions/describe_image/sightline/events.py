"""Turn S3 events (S3 notifications, direct or inside SQS/SNS envelopes, or S3 events through EventBridge) into
object references."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event

from sightline.errors import SightlineError

TEST_EVENT = "s3:TestEvent"


class UnrecognizedEventError(SightlineError):
    """A message that is not an S3 event (notification or EventBridge). It cannot be recorded against an object,
    so it is reported as a batch failure and ends in the dead-letter queue for a person to see."""

    error_type = "UnrecognizedEvent"


BACKFILL_EVENT_NAME = "ObjectCreated:Backfill"
# Our own block beside an S3 record's fields: S3 never writes it, so an event carrying it was made by us.
SIGHTLINE_FIELD = "sightline"


@dataclass(frozen=True)
class Backfill:
    """What makes an event a backfill item (``sightline backfill``, S3 Batch Operations, a resumed deferral of
    either): it never outranks a real S3 event for the key."""

    run: str  # the backfill run: a forced item is applied once per run
    force: bool = False  # describe again, even a version already described, without the content cache
    profile: str | None = None  # the operator's profile for every object of the run (wins over key and metadata)
    last_modified: str | None = None  # the listed version's LastModified: orders two backfills of one key

    def to_item(self) -> dict[str, Any]:
        return {"run": self.run, "force": self.force, "profile": self.profile, "last_modified": self.last_modified}

    @classmethod
    def from_item(cls, item: Any) -> Backfill:
        if not isinstance(item, dict) or not isinstance(item.get("run"), str) or not item["run"]:
            raise UnrecognizedEventError("the record's sightline.backfill block has no run id")
        profile = item.get("profile")
        last_modified = item.get("last_modified")
        if not isinstance(item.get("force", False), bool) or not isinstance(profile, str | None):
            raise UnrecognizedEventError("the record's sightline.backfill block is malformed")
        return cls(
            run=item["run"][:128],
            force=bool(item.get("force", False)),
            profile=profile or None,
            last_modified=str(last_modified) if last_modified else None,
        )


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
    backfill: Backfill | None = None  # None: a real S3 event (or a hand-made one shaped like it)

    def to_s3_record(self, region: str = "") -> dict[str, Any]:
        """The event as one record of an S3 notification, the shape the uploads queue carries (a parked event is
        sent back in it; backfill items are made in it)."""
        obj: dict[str, Any] = {"key": quote_plus(self.key, safe="/")}
        for name, value in (
            ("size", self.size),
            ("eTag", self.etag),
            ("versionId", self.version_id),
            ("sequencer", self.sequencer),
        ):
            if value is not None:
                obj[name] = value
        record: dict[str, Any] = {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": region,
            "eventTime": self.event_time,
            "eventName": self.event_name,
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": self.bucket, "arn": f"arn:aws:s3:::{self.bucket}"},
                "object": obj,
            },
        }
        if self.backfill is not None:
            record[SIGHTLINE_FIELD] = {"backfill": self.backfill.to_item()}
        return record

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
                backfill=_backfill(record.raw_event),
            )
        )
    return events


def _backfill(record: dict[str, Any]) -> Backfill | None:
    block = record.get(SIGHTLINE_FIELD)
    if block is None:
        return None
    if not isinstance(block, dict) or "backfill" not in block:
        raise UnrecognizedEventError("the record's sightline block is not a backfill item")
    return Backfill.from_item(block["backfill"])


# S3 events through EventBridge (IntakeRoute=EventBridge): the bucket sends every event to the default bus, and the
# stack's rule forwards these two detail types to the uploads queue. The body of the queue message is the event.
EVENTBRIDGE_SOURCE = "aws.s3"
OBJECT_CREATED = "Object Created"
OBJECT_DELETED = "Object Deleted"
# detail.reason of an Object Created event (the S3 API that made the object) → the S3 notification's name of the
# same change, so a record says the same whichever route delivered it.
_CREATED_BY = {
    "PutObject": "ObjectCreated:Put",
    "POST Object": "ObjectCreated:Post",
    "CopyObject": "ObjectCreated:Copy",
    "CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
}
LIFECYCLE_EXPIRATION_REASON = "Lifecycle Expiration"
# detail.deletion-type of an Object Deleted event → the suffix of the S3 notification's name.
_DELETION_TYPES = {"Permanently Deleted": "Delete", "Delete Marker Created": "DeleteMarkerCreated"}


def is_eventbridge_event(document: dict[str, Any]) -> bool:
    """An EventBridge event (any source): it has a detail type and a source, and no S3 'Records'."""
    return "detail-type" in document and "source" in document and "Records" not in document


def parse_eventbridge_event(event: dict[str, Any]) -> list[ObjectEvent]:
    """The object an S3 ``Object Created`` / ``Object Deleted`` event delivered by EventBridge talks about.

    The event carries the object's sequencer, version id and ETag, so it orders and deduplicates exactly like the S3
    notification of the same change (same sequencer → same order key). Its key is NOT URL-encoded: S3 documents the
    encoding for notifications only, and EventBridge events carry the key as stored (a key with ':' arrives as ':',
    not '%3A'). Decoding it would turn a literal '+' into a space and miss the object.
    """
    source, detail_type = event.get("source"), event.get("detail-type")
    if source != EVENTBRIDGE_SOURCE:
        raise UnrecognizedEventError(f"EventBridge event from {source!r}, expected {EVENTBRIDGE_SOURCE}")
    if detail_type not in (OBJECT_CREATED, OBJECT_DELETED):
        raise UnrecognizedEventError(
            f"S3 event of detail-type {detail_type!r} through EventBridge: only {OBJECT_CREATED!r} and "
            f"{OBJECT_DELETED!r} are handled (the rule that sent it matches too much)"
        )
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise UnrecognizedEventError(f"EventBridge {detail_type!r} event has no 'detail' object")
    bucket = detail.get("bucket")
    name = bucket.get("name") if isinstance(bucket, dict) else None
    if not isinstance(name, str) or not name:
        raise UnrecognizedEventError(f"EventBridge {detail_type!r} event has no detail.bucket.name")
    obj = detail.get("object")
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not obj["key"]:
        raise UnrecognizedEventError(f"EventBridge {detail_type!r} event has no detail.object.key")
    key: str = obj["key"]
    event_time = event.get("time")
    if not isinstance(event_time, str) or not event_time:
        raise UnrecognizedEventError(f"EventBridge {detail_type!r} event has no time")
    size = obj.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise UnrecognizedEventError(f"EventBridge {detail_type!r} event has an invalid detail.object.size {size!r}")
    return [
        ObjectEvent(
            bucket=name,
            key=key,
            event_name=_eventbridge_event_name(detail_type, detail),
            event_time=event_time,
            version_id=_optional_text(obj, "version-id", detail_type),
            etag=_optional_text(obj, "etag", detail_type),
            size=size,
            sequencer=_optional_text(obj, "sequencer", detail_type),
        )
    ]


def _optional_text(obj: dict[str, Any], name: str, detail_type: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise UnrecognizedEventError(f"EventBridge {detail_type!r} event has an invalid detail.object.{name} {value!r}")
    return value or None


def _eventbridge_event_name(detail_type: str, detail: dict[str, Any]) -> str:
    """The S3 notification's event name for the same change: ObjectCreated:Put, ObjectRemoved:DeleteMarkerCreated,
    LifecycleExpiration:Delete... (what ObjectEvent.is_create / is_removal read, and what records show)."""
    reason = detail.get("reason")
    reason = reason if isinstance(reason, str) else ""
    if detail_type == OBJECT_CREATED:
        return _CREATED_BY.get(reason) or ("ObjectCreated:" + reason.replace(" ", "") if reason else "ObjectCreated")
    prefix = "LifecycleExpiration" if reason == LIFECYCLE_EXPIRATION_REASON else "ObjectRemoved"
    deletion = _DELETION_TYPES.get(str(detail.get("deletion-type")))
    return f"{prefix}:{deletion}" if deletion else prefix


def parse_object_events(document: dict[str, Any]) -> list[ObjectEvent]:
    """An S3 notification document or an S3 event delivered by EventBridge, whichever route the stack uses."""
    if is_eventbridge_event(document):
        return parse_eventbridge_event(document)
    return parse_s3_notification(document)


def s3_notification(events: list[ObjectEvent], region: str = "") -> str:
    """An S3 notification document (JSON) holding these events: what the uploads queue receives from S3."""
    return json.dumps({"Records": [event.to_s3_record(region) for event in events]}, separators=(",", ":"))


PAGE_RANGE_MESSAGE = "sightline.page-range"
PAGE_RANGE_VERSION = 1


@dataclass(frozen=True)
class PageRangeItem:
    """Pages first..last of one document version, to be described by whichever invocation receives it.

    Sent by the invocation that received the object's own event (it claimed the key for ``order``); carries
    what the record needs about the object so the assembling invocation does not read it again.
    """

    event: ObjectEvent
    order: str  # the applied event's order key: a newer event for the key makes this item stale
    version: str
    first: int
    last: int  # inclusive
    index: int  # 1-based
    ranges_total: int
    range_pages: int  # every range but the last has this many pages
    page_count: int
    kind: str  # "pdf" or "tiff"
    content_sha256: str
    content_type: str | None = None
    last_modified: str | None = None

    @property
    def range_id(self) -> str:
        return f"{self.first:05d}-{self.last:05d}"

    @property
    def pages(self) -> range:
        return range(self.first, self.last + 1)

    def to_message(self) -> dict[str, Any]:
        event = self.event
        return {
            "type": PAGE_RANGE_MESSAGE,
            "version": PAGE_RANGE_VERSION,
            "object": {
                "bucket": event.bucket,
                "key": event.key,
                "event_name": event.event_name,
                "event_time": event.event_time,
                "version_id": event.version_id,
                "etag": event.etag,
                "size": event.size,
                "sequencer": event.sequencer,
                "content_type": self.content_type,
                "last_modified": self.last_modified,
                "content_sha256": self.content_sha256,
                "backfill": event.backfill.to_item() if event.backfill else None,
            },
            "order": self.order,
            "version_token": self.version,
            "first": self.first,
            "last": self.last,
            "index": self.index,
            "ranges_total": self.ranges_total,
            "range_pages": self.range_pages,
            "page_count": self.page_count,
            "kind": self.kind,
        }

    @classmethod
    def from_message(cls, document: dict[str, Any]) -> PageRangeItem:
        try:
            obj = document["object"]
            item = cls(
                event=ObjectEvent(
                    bucket=str(obj["bucket"]),
                    key=str(obj["key"]),
                    event_name=str(obj["event_name"]),
                    event_time=str(obj["event_time"]),
                    version_id=obj.get("version_id"),
                    etag=obj.get("etag"),
                    size=obj.get("size"),
                    sequencer=obj.get("sequencer"),
                    backfill=Backfill.from_item(obj["backfill"]) if obj.get("backfill") is not None else None,
                ),
                order=str(document["order"]),
                version=str(document["version_token"]),
                first=int(document["first"]),
                last=int(document["last"]),
                index=int(document["index"]),
                ranges_total=int(document["ranges_total"]),
                range_pages=int(document["range_pages"]),
                page_count=int(document["page_count"]),
                kind=str(document["kind"]),
                content_sha256=str(obj["content_sha256"]),
                content_type=obj.get("content_type"),
                last_modified=obj.get("last_modified"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UnrecognizedEventError(f"page-range item is malformed ({type(exc).__name__}: {exc})") from None
        if not (
            1 <= item.first <= item.last <= item.page_count
            and 1 <= item.index <= item.ranges_total
            and item.range_pages >= 1
            and item.kind in ("pdf", "tiff")
        ):
            raise UnrecognizedEventError(f"page-range item has impossible pages {item.first}-{item.last}")
        return item


def parse_queue_message_body(body: str) -> list[ObjectEvent | PageRangeItem]:
    """An SQS message body: an S3 notification, one wrapped in an SNS envelope (S3 → SNS → SQS), an S3 event from
    an EventBridge rule (S3 → EventBridge → SQS), or one of our own page-range items."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        raise UnrecognizedEventError("message body is not JSON") from None
    if not isinstance(document, dict):
        raise UnrecognizedEventError("message body is not a JSON object")
    if document.get("Type") == "Notification" and isinstance(document.get("Message"), str):
        return parse_queue_message_body(document["Message"])
    if document.get("type") == PAGE_RANGE_MESSAGE:
        if document.get("version") != PAGE_RANGE_VERSION:
            raise UnrecognizedEventError(f"page-range item of unknown version {document.get('version')!r}")
        return [PageRangeItem.from_message(document)]
    return list(parse_object_events(document))
