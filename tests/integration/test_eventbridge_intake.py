"""Both intake routes on the emulated stack: S3 notifications, and S3 → EventBridge rule → the same queue.

Moto routes the EventBridge events with the template's own rule (pattern and target); devkit.stack only makes the
events S3's documented shape (see emulate_documented_s3_eventbridge_events).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

import app
from devkit.lambda_emulator import DeliveryReport, FakeLambdaContext, QueueFeeder, lambda_sqs_event, s3_notification
from sightline.events import ObjectEvent, parse_queue_message_body
from tests.conftest import Deployment, deploy_with_subscriber
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

ROUTES = ("S3Notifications", "EventBridge")


@pytest.fixture(params=ROUTES)
def deployment(aws: boto3.session.Session, request: pytest.FixtureRequest) -> Deployment:
    """Replaces tests/conftest.py's: the stack deployed with each IntakeRoute (function_env builds on this one)."""
    return deploy_with_subscriber(aws, IntakeRoute=request.param)


def route(deployment: Deployment) -> str:
    return "EventBridge" if deployment.resources.event_rule_arn else "S3Notifications"


def queued_bodies(deployment: Deployment) -> list[dict[str, Any]]:
    """Every message now in the uploads queue (taken off it), S3's test event left out."""
    sqs, bodies = deployment.client("sqs"), []
    while messages := sqs.receive_message(QueueUrl=deployment.resources.queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            sqs.delete_message(QueueUrl=deployment.resources.queue_url, ReceiptHandle=message["ReceiptHandle"])
            body = json.loads(message["Body"])
            if body.get("Event") != "s3:TestEvent":
                bodies.append(body)
    return bodies


def keys_of(bodies: list[dict[str, Any]]) -> list[str]:
    events = [event for body in bodies for event in parse_queue_message_body(json.dumps(body))]
    return [event.key for event in events if isinstance(event, ObjectEvent)]


def drain(deployment: Deployment) -> tuple[DeliveryReport, list[dict[str, Any]]]:
    """Runs the handler on the uploads queue until it is empty, as the SQS event source would; and what it read."""
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.extend(json.loads(record["body"]) for record in event["Records"])
        return app.lambda_handler(event, context)

    report = QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, handler).drain(max_seconds=30)
    return report, [body for body in seen if body.get("Event") != "s3:TestEvent"]


def put(deployment: Deployment, key: str, body: bytes) -> dict[str, Any]:
    return deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key=key, Body=body)


def statuses(deployment: Deployment) -> list[str]:
    return [n["attributes"]["status"] for n in deployment.received_notifications()]


def test_an_upload_is_described_through_either_route(deployment: Deployment, function_env, model) -> None:
    # GIVEN an image under a key with spaces, a plus, parentheses, non-ASCII letters and an upper-case suffix
    key = "inbox/Summer trip (2026)/café+crème.JPG"
    put(deployment, key, encode(photo(300, 200), "JPEG"))
    # WHEN the queue is handed to the function
    report, bodies = drain(deployment)
    # THEN the event arrived in the route's own shape, and the object is described once
    assert report.failed_items == 0
    shape = "detail-type" if route(deployment) == "EventBridge" else "Records"
    assert [shape in body for body in bodies] == [True]
    assert keys_of(bodies) == [key]
    record = deployment.record(key)
    assert record is not None and record["status"] == "succeeded"
    assert len(model.chat_requests) == 1
    assert statuses(deployment) == ["succeeded"]


def test_eventbridge_lets_through_only_image_and_pdf_keys_whatever_their_case(deployment: Deployment) -> None:
    # GIVEN a text file, an upper-case JPEG suffix and a PDF
    for key in ("notes/readme.txt", "notes/IMG_0001.JPG", "notes/scan.Pdf", "notes/no-suffix"):
        put(deployment, key, b"bytes")
    queued = sorted(keys_of(queued_bodies(deployment)))
    if route(deployment) == "EventBridge":
        # THEN the rule forwards the image and the document only: the others never cost an invocation
        assert queued == ["notes/IMG_0001.JPG", "notes/scan.Pdf"]
    else:
        # (S3 notifications have no case-insensitive suffix filter: everything arrives, the function sorts it out)
        assert queued == ["notes/IMG_0001.JPG", "notes/no-suffix", "notes/readme.txt", "notes/scan.Pdf"]


def test_a_deletion_marks_the_record_deleted_through_either_route(deployment: Deployment, function_env, model) -> None:
    key = "gone/photo 1.png"
    version = put(deployment, key, encode(photo(300, 200), "PNG"))["VersionId"]
    drain(deployment)
    assert deployment.record(key)["status"] == "succeeded"
    # WHEN the (only) version is deleted: moto reports no delete markers, on either route
    deployment.client("s3").delete_object(Bucket=deployment.resources.bucket, Key=key, VersionId=version)
    report, bodies = drain(deployment)
    # THEN the record says deleted, and subscribers hear of it
    assert report.failed_items == 0 and keys_of(bodies) == [key]
    assert deployment.record(key)["status"] == "deleted"
    assert statuses(deployment) == ["succeeded", "deleted"]
    assert len(model.chat_requests) == 1


def invoke(deployment: Deployment, body: str) -> dict[str, Any]:
    message = {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": body}
    return app.lambda_handler(lambda_sqs_event([message], deployment.resources.queue_arn), FakeLambdaContext())


@pytest.mark.parametrize("deployment", ["EventBridge"], indirect=True)
@pytest.mark.parametrize("first", ["EventBridge", "S3Notifications"], ids=["eventbridge-first", "notification-first"])
def test_one_change_delivered_through_both_routes_has_one_effect(
    deployment: Deployment, function_env, model, first: str
) -> None:
    # GIVEN an upload's EventBridge event, and S3's notification of the same change (same sequencer, version and
    # ETag), as a bucket notifying both ways would deliver them
    key = "twice/a b+c.jpg"
    put(deployment, key, encode(photo(300, 200), "JPEG"))
    (bridged,) = queued_bodies(deployment)
    (event,) = parse_queue_message_body(json.dumps(bridged))
    assert isinstance(event, ObjectEvent) and event.sequencer and event.version_id
    notified = s3_notification(
        deployment.resources.bucket,
        key,
        etag=event.etag,
        version_id=event.version_id,
        size=event.size,
        sequencer=event.sequencer,
        event_time=bridged["time"].replace("Z", ".000Z"),  # S3 notifications give milliseconds
    )
    deliveries = {"EventBridge": json.dumps(bridged), "S3Notifications": json.dumps(notified)}
    second = "S3Notifications" if first == "EventBridge" else "EventBridge"
    # WHEN both are delivered, one after the other
    assert invoke(deployment, deliveries[first]) == {"batchItemFailures": []}
    assert invoke(deployment, deliveries[second]) == {"batchItemFailures": []}
    # THEN the model is asked once, the record is written once and subscribers hear of it once
    assert len(model.chat_requests) == 1
    assert deployment.record(key)["status"] == "succeeded"
    assert statuses(deployment) == ["succeeded"]


def test_with_a_prefix_the_rule_forwards_only_keys_under_it(aws: boto3.session.Session) -> None:
    deployment = deploy_with_subscriber(aws, IntakeRoute="EventBridge", ObjectKeyPrefix="inbox/")
    for key in ("inbox/a.jpg", "elsewhere/b.jpg", "inbox/c.txt"):
        put(deployment, key, b"bytes")
    # The prefix takes the suffixes' place in the pattern (one test per field): the text file reaches the function,
    # which skips it (ObjectKeySuffixes) or records it as not an image, as with S3 notifications.
    assert sorted(keys_of(queued_bodies(deployment))) == ["inbox/a.jpg", "inbox/c.txt"]
