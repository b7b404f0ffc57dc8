"""Event intake through EventBridge: S3's Object Created / Object Deleted events, raw keys, one order per change."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sightline.events import (
    ObjectEvent,
    UnrecognizedEventError,
    parse_eventbridge_event,
    parse_object_events,
    parse_queue_message_body,
    parse_s3_notification,
    s3_notification,
)
from sightline.ordering import order_key, version_token
from tests.conftest import load_event

pytestmark = pytest.mark.unit


def created(**object_fields: Any) -> dict[str, Any]:
    event = load_event("eventbridge-object-created.json")
    event["detail"]["object"].update(object_fields)
    return event


def deleted(**detail_fields: Any) -> dict[str, Any]:
    event = load_event("eventbridge-object-deleted.json")
    event["detail"].update(detail_fields)
    return event


def only(events: list[ObjectEvent]) -> ObjectEvent:
    (event,) = events
    return event


def test_an_object_created_event_names_the_object_version() -> None:
    # GIVEN the event S3 sends EventBridge for "photos/Summer trip (2026)/café résumé.jpg"
    event = only(parse_eventbridge_event(load_event("eventbridge-object-created.json")))
    # THEN the key is taken as it is (EventBridge does not URL-encode it), with the version, ETag, size, sequencer
    assert event.bucket == "sightline-uploads-123456789012-us-east-1"
    assert event.key == "photos/Summer trip (2026)/café résumé.jpg"
    assert event.version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert event.etag == "0123456789abcdef0123456789abcdef"
    assert event.size == 1024
    assert event.sequencer == "0062A5F3E8F1B2C3D4"
    assert event.event_name == "ObjectCreated:Put"
    assert event.event_time == "2026-11-25T08:00:00Z"
    assert event.is_create and not event.is_removal
    assert event.backfill is None


@pytest.mark.parametrize("key", ["a+b.jpg", "100%25 done.png", "café+crème/été 2026.JPG", "x%2By.jpg", "a:b=c.jpg"])
def test_keys_are_never_url_decoded(key: str) -> None:
    # A '+' is a plus and '%25' is three characters: decoding would look up another object.
    assert only(parse_eventbridge_event(created(key=key))).key == key


def test_the_same_change_through_either_route_is_one_version_with_one_order() -> None:
    # GIVEN one upload as the S3 notification and as the EventBridge event describe it (same sequencer)
    notified = only(parse_s3_notification(load_event("s3-put.json")))
    bridged = only(parse_eventbridge_event(load_event("eventbridge-object-created.json")))
    # THEN both name the same object version and sort at the same place: the second delivery is a duplicate
    assert (bridged.bucket, bridged.key, bridged.version_id, bridged.etag, bridged.size, bridged.event_name) == (
        notified.bucket,
        notified.key,
        notified.version_id,
        notified.etag,
        notified.size,
        notified.event_name,
    )
    assert order_key(bridged) == order_key(notified)
    assert version_token(bridged) == version_token(notified)


def test_sequencers_compare_like_s3_compares_them_whatever_their_case_or_padding() -> None:
    # S3's own EventBridge example writes "617f08299329d189"; notifications write "00617F08299329D189".
    short = only(parse_eventbridge_event(created(sequencer="617f08299329d189")))
    padded = only(parse_eventbridge_event(created(sequencer="00617F08299329D189")))
    later = only(parse_eventbridge_event(created(sequencer="00617F0837B476E463")))
    assert order_key(short) == order_key(padded) < order_key(later)


def test_a_parked_eventbridge_event_resent_in_the_s3_shape_keeps_its_order() -> None:
    # Deferred items go back to the queue as S3 notification records: the key is encoded there and decoded again.
    event = only(parse_eventbridge_event(created(key="a+b c/ü.jpg")))
    (resent,) = parse_queue_message_body(s3_notification([event]))
    assert isinstance(resent, ObjectEvent)
    assert resent.key == "a+b c/ü.jpg"
    assert order_key(resent) == order_key(event)
    assert version_token(resent) == version_token(event)


@pytest.mark.parametrize(
    ("reason", "event_name"),
    [
        ("PutObject", "ObjectCreated:Put"),
        ("POST Object", "ObjectCreated:Post"),
        ("CopyObject", "ObjectCreated:Copy"),
        ("CompleteMultipartUpload", "ObjectCreated:CompleteMultipartUpload"),
        ("SomeFutureApi", "ObjectCreated:SomeFutureApi"),
        (None, "ObjectCreated"),
    ],
)
def test_every_creation_is_a_creation_named_like_its_s3_notification(reason: str | None, event_name: str) -> None:
    event = load_event("eventbridge-object-created.json")
    event["detail"]["reason"] = reason
    parsed = only(parse_eventbridge_event(event))
    assert parsed.event_name == event_name
    assert parsed.is_create and not parsed.is_removal


@pytest.mark.parametrize(
    ("reason", "deletion_type", "event_name"),
    [
        ("DeleteObject", "Delete Marker Created", "ObjectRemoved:DeleteMarkerCreated"),
        ("DeleteObject", "Permanently Deleted", "ObjectRemoved:Delete"),
        ("Lifecycle Expiration", "Delete Marker Created", "LifecycleExpiration:DeleteMarkerCreated"),
        ("Lifecycle Expiration", "Permanently Deleted", "LifecycleExpiration:Delete"),
        ("DeleteObject", None, "ObjectRemoved"),
    ],
)
def test_every_deletion_is_a_removal_named_like_its_s3_notification(
    reason: str, deletion_type: str | None, event_name: str
) -> None:
    parsed = only(parse_eventbridge_event(deleted(reason=reason, **{"deletion-type": deletion_type})))
    assert parsed.event_name == event_name
    assert parsed.is_removal and not parsed.is_create
    assert parsed.size is None  # deletion events carry no size
    assert parsed.version_id == "1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF"


def test_a_deletion_after_the_upload_outranks_it() -> None:
    upload = only(parse_eventbridge_event(load_event("eventbridge-object-created.json")))
    removal = only(parse_eventbridge_event(load_event("eventbridge-object-deleted.json")))
    assert order_key(removal) > order_key(upload)


def test_the_queue_message_body_is_the_event() -> None:
    # GIVEN the SQS event `sam local invoke -e events/sqs-eventbridge-object-created.json` uses
    (record,) = load_event("sqs-eventbridge-object-created.json")["Records"]
    (event,) = parse_queue_message_body(record["body"])
    assert isinstance(event, ObjectEvent)
    assert event.key == "photos/Summer trip (2026)/café résumé.jpg"
    assert event.sequencer == "0062A5F3E8F1B2C3D4"


def test_an_eventbridge_event_inside_an_sns_envelope_is_unwrapped() -> None:
    inner = json.dumps(load_event("eventbridge-object-created.json"))
    body = json.dumps({"Type": "Notification", "MessageId": "m", "Message": inner})
    (event,) = parse_queue_message_body(body)
    assert isinstance(event, ObjectEvent) and event.is_create


def test_parse_object_events_takes_either_shape() -> None:
    bridged = only(parse_object_events(load_event("eventbridge-object-created.json")))
    notified = only(parse_object_events(load_event("s3-put.json")))
    assert order_key(bridged) == order_key(notified)


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    event = copy.deepcopy(load_event("eventbridge-object-created.json"))
    node = event
    for name in path[:-1]:
        node = node[name]
    del node[path[-1]]
    return event


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event("eventbridge-object-created.json"))
    node = event
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    return event


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (_with(("source",), "aws.ec2"), "EventBridge event from 'aws.ec2', expected aws.s3"),
        (_with(("detail-type",), "Object Tags Added"), "detail-type 'Object Tags Added'"),
        (_with(("detail-type",), "Object Restore Completed"), "only 'Object Created' and 'Object Deleted'"),
        (_without(("detail",)), "has no 'detail' object"),
        (_with(("detail",), "oops"), "has no 'detail' object"),
        (_without(("detail", "bucket")), "has no detail.bucket.name"),
        (_with(("detail", "bucket", "name"), ""), "has no detail.bucket.name"),
        (_without(("detail", "object")), "has no detail.object.key"),
        (_without(("detail", "object", "key")), "has no detail.object.key"),
        (_with(("detail", "object", "key"), ""), "has no detail.object.key"),
        (_with(("detail", "object", "key"), 7), "has no detail.object.key"),
        (_without(("time",)), "has no time"),
        (_with(("detail", "object", "size"), "1024"), "invalid detail.object.size '1024'"),
        (_with(("detail", "object", "size"), -1), "invalid detail.object.size -1"),
        (_with(("detail", "object", "size"), True), "invalid detail.object.size True"),
        (_with(("detail", "object", "version-id"), 5), "invalid detail.object.version-id 5"),
        (_with(("detail", "object", "sequencer"), ["x"]), "invalid detail.object.sequencer"),
        (_with(("detail", "object", "etag"), {"x": 1}), "invalid detail.object.etag"),
    ],
)
def test_a_malformed_eventbridge_event_is_refused_with_its_reason(event: dict[str, Any], reason: str) -> None:
    with pytest.raises(UnrecognizedEventError) as refused:
        parse_queue_message_body(json.dumps(event))
    assert reason in refused.value.message


def test_an_eventbridge_event_with_records_is_still_read_as_an_s3_notification() -> None:
    # Only an event without 'Records' is taken for an EventBridge event; the S3 shape wins otherwise.
    notification = load_event("s3-put.json")
    notification.update({"source": "aws.s3", "detail-type": "Object Created"})
    assert only(parse_object_events(notification)).key == "photos/Summer trip (2026)/café résumé.jpg"
