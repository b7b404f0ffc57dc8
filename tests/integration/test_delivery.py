"""Exactly-once effects on at-least-once events: duplicates, content cache, ordering, deletions, publish retries."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

import app
from devkit.lambda_emulator import FakeLambdaContext, lambda_sqs_event, s3_notification
from sightline.composition import get_runtime
from sightline.errors import AwsUnavailableError
from tests.conftest import Deployment
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration


def put(deployment: Deployment, key: str, body: bytes) -> dict[str, Any]:
    response = deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key=key, Body=body)
    return {"etag": response["ETag"].strip('"'), "version_id": response.get("VersionId"), "size": len(body)}


def invoke(deployment: Deployment, *notifications: dict[str, Any]) -> dict[str, Any]:
    """One invocation with one SQS message per notification, as the event source would batch them."""
    messages = [
        {"MessageId": f"m-{index}", "ReceiptHandle": f"r-{index}", "Body": json.dumps(notification)}
        for index, notification in enumerate(notifications)
    ]
    return app.lambda_handler(lambda_sqs_event(messages, deployment.resources.queue_arn), FakeLambdaContext())


def created(deployment: Deployment, key: str, obj: dict[str, Any], sequencer: str) -> dict[str, Any]:
    return s3_notification(deployment.resources.bucket, key, sequencer=sequencer, **obj)


def removed(deployment: Deployment, key: str, sequencer: str) -> dict[str, Any]:
    return s3_notification(deployment.resources.bucket, key, event_name="ObjectRemoved:Delete", sequencer=sequencer)


def success_notifications(deployment: Deployment) -> list[dict[str, Any]]:
    return [n for n in deployment.received_notifications() if n["attributes"]["status"] == "succeeded"]


def test_a_duplicate_delivery_is_not_paid_or_notified_twice(deployment: Deployment, function_env, model) -> None:
    obj = put(deployment, "dup/a.jpg", encode(photo(300, 200), "JPEG"))
    event = created(deployment, "dup/a.jpg", obj, "0055AED6DCD90281E5")
    assert invoke(deployment, event) == {"batchItemFailures": []}
    assert invoke(deployment, event) == {"batchItemFailures": []}
    assert len(model.chat_requests) == 1
    assert len(success_notifications(deployment)) == 1
    assert deployment.record("dup/a.jpg")["notified"] is True


def test_concurrent_duplicates_in_two_instances_pay_once(deployment: Deployment, function_env, model) -> None:
    # GIVEN a slow model and the same event delivered to two function instances at once
    model.responder.delay_seconds = 0.5
    obj = put(deployment, "dup/b.jpg", encode(photo(300, 200), "JPEG"))
    event = created(deployment, "dup/b.jpg", obj, "0055AED6DCD90281E6")
    # Warm instances: a cold start in one thread only would let the other finish before it even claims.
    get_runtime()
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(invoke(deployment, event))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN one wins and describes; the other is told to retry later (its retry finds the result)
    assert len(model.chat_requests) == 1
    assert sorted(len(r["batchItemFailures"]) for r in results) == [0, 1]
    assert invoke(deployment, event) == {"batchItemFailures": []}
    assert len(model.chat_requests) == 1
    assert len(success_notifications(deployment)) == 1


def test_identical_bytes_under_another_key_reuse_the_description(deployment: Deployment, function_env, model) -> None:
    body = encode(photo(300, 200), "JPEG")
    first = put(deployment, "cache/original.jpg", body)
    copy = put(deployment, "cache/copy of original.jpg", body)
    invoke(deployment, created(deployment, "cache/original.jpg", first, "01"))
    invoke(deployment, created(deployment, "cache/copy of original.jpg", copy, "01"))
    assert len(model.chat_requests) == 1
    original, reused = deployment.record("cache/original.jpg"), deployment.record("cache/copy of original.jpg")
    assert original["cache_hit"] is False and original["usage"]["total_tokens"] > 0
    assert reused["cache_hit"] is True and reused["usage"]["total_tokens"] == 0
    assert reused["description"] == original["description"] and reused["image"] == original["image"]
    assert len(success_notifications(deployment)) == 2


def test_an_older_event_never_overwrites_a_newer_result(deployment: Deployment, function_env, model) -> None:
    old = put(deployment, "order/x.jpg", encode(photo(300, 200), "JPEG"))
    new = put(deployment, "order/x.jpg", encode(photo(310, 200), "JPEG"))
    # S3 compares sequencers by padding the shorter one with zeros: "FF" < "0100".
    invoke(deployment, created(deployment, "order/x.jpg", new, "0100"))
    invoke(deployment, created(deployment, "order/x.jpg", old, "FF"))
    record = deployment.record("order/x.jpg")
    assert record["version_token"] == (new["version_id"] or new["etag"])
    assert len(model.chat_requests) == 1


def test_deletion_marks_deleted_and_a_late_create_does_not_resurrect(
    deployment: Deployment, function_env, model
) -> None:
    obj = put(deployment, "gone/y.jpg", encode(photo(300, 200), "JPEG"))
    invoke(deployment, removed(deployment, "gone/y.jpg", "0200"))  # the delete arrives first
    invoke(deployment, created(deployment, "gone/y.jpg", obj, "0100"))  # then its older create
    record = deployment.record("gone/y.jpg")
    assert record["status"] == "deleted"
    assert model.chat_requests == []
    (notification,) = deployment.received_notifications()
    assert notification["attributes"]["status"] == "deleted"


def test_publish_failure_is_retried_without_calling_the_model_again(
    deployment: Deployment, function_env, model, monkeypatch
) -> None:
    obj = put(deployment, "pub/z.jpg", encode(photo(300, 200), "JPEG"))
    event = created(deployment, "pub/z.jpg", obj, "0A")
    # GIVEN SNS fails once, after the record was written
    notifier = get_runtime().pipeline.notifier
    real_publish = notifier.publish
    calls = {"n": 0}

    def flaky_publish(message: dict[str, Any], attributes: dict[str, str]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AwsUnavailableError("SNS Publish failed: InternalError")
        real_publish(message, attributes)

    monkeypatch.setattr(notifier, "publish", flaky_publish)
    assert invoke(deployment, event) == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}
    assert deployment.record("pub/z.jpg")["status"] == "succeeded"
    assert deployment.record("pub/z.jpg")["notified"] is False
    # WHEN SQS redelivers
    assert invoke(deployment, event) == {"batchItemFailures": []}
    # THEN the notification goes out once, and the model was asked once
    assert len(model.chat_requests) == 1
    assert len(success_notifications(deployment)) == 1
    assert deployment.record("pub/z.jpg")["notified"] is True


def test_an_event_for_bytes_since_overwritten_is_stale(deployment: Deployment, function_env, model) -> None:
    # Unversioned view: the event names an ETag the object no longer has.
    put(deployment, "changed/w.jpg", encode(photo(300, 200), "JPEG"))
    event = s3_notification(
        deployment.resources.bucket, "changed/w.jpg", etag="0" * 32, sequencer="01", event_name="ObjectCreated:Put"
    )
    assert invoke(deployment, event) == {"batchItemFailures": []}
    assert model.chat_requests == []
    assert deployment.received_notifications() == []
