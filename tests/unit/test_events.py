"""Event intake: S3 notifications, SQS and SNS envelopes, key decoding, the S3 test event."""

from __future__ import annotations

import json

import pytest

from sightline.events import UnrecognizedEventError, parse_queue_message_body, parse_s3_notification
from tests.conftest import load_event

pytestmark = pytest.mark.unit


def test_keys_are_url_decoded_plus_percent_and_unicode() -> None:
    # GIVEN the event S3 sends for "photos/Summer trip (2026)/café résumé.jpg"
    (event,) = parse_s3_notification(load_event("s3-put.json"))
    # THEN '+' is a space, %28/%29 are parentheses and the UTF-8 escapes are decoded
    assert event.key == "photos/Summer trip (2026)/café résumé.jpg"
    assert event.version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert event.etag == "0123456789abcdef0123456789abcdef"
    assert event.size == 1024
    assert event.sequencer == "0062A5F3E8F1B2C3D4"
    assert event.is_create


def test_encoded_slash_and_multipart_upload() -> None:
    (event,) = parse_s3_notification(load_event("s3-multipart.json"))
    assert event.key == "scans/invoice 42.png"
    assert event.event_name == "ObjectCreated:CompleteMultipartUpload"
    assert event.is_create


def test_literal_plus_arrives_as_percent_2b() -> None:
    notification = load_event("s3-put.json")
    notification["Records"][0]["s3"]["object"]["key"] = "a%2Bb+c.jpg"
    (event,) = parse_s3_notification(notification)
    assert event.key == "a+b c.jpg"


def test_s3_test_event_yields_nothing() -> None:
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})
    assert parse_queue_message_body(body) == []


def test_one_message_may_hold_several_records() -> None:
    sqs_event = load_event("sqs-test-event-and-multi-record.json")
    test_event, multi = (record["body"] for record in sqs_event["Records"])
    assert parse_queue_message_body(test_event) == []
    assert [e.key for e in parse_queue_message_body(multi)] == ["inbox/a.png", "inbox/b c.png"]


def test_sns_envelope_is_unwrapped() -> None:
    inner = json.dumps(load_event("s3-put.json"))
    body = json.dumps({"Type": "Notification", "MessageId": "m", "Message": inner})
    (event,) = parse_queue_message_body(body)
    assert event.key.endswith("café résumé.jpg")


@pytest.mark.parametrize(
    "body",
    ["not json", "[1, 2]", json.dumps({"hello": "world"}), json.dumps({"Records": [{"eventSource": "aws:sqs"}]})],
)
def test_unrecognized_messages_are_refused_clearly(body: str) -> None:
    with pytest.raises(UnrecognizedEventError):
        parse_queue_message_body(body)


def test_removal_events_are_not_creations() -> None:
    notification = load_event("s3-put.json")
    notification["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    (event,) = parse_s3_notification(notification)
    assert not event.is_create
