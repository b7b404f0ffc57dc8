"""Operator scripts against the moto stack: redriving the dead-letter queue and listing records by status."""

from __future__ import annotations

import json
from typing import Any

import pytest

import app
from devkit.lambda_emulator import DeliveryReport, QueueFeeder, queue_depth
from devkit.model_server import default_reply, error_reply
from scripts import list_records as list_records_script
from scripts import redrive_dlq
from scripts.list_records import list_records
from scripts.redrive_dlq import redrive
from sightline import records
from tests.conftest import Deployment
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

RATE_LIMITED = error_reply(429, "Rate limit reached", "rate_limit_error", {"Retry-After": "0"})
HTML = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"


def upload(deployment: Deployment, key: str, body: bytes) -> None:
    deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key=key, Body=body)


def feeder(deployment: Deployment) -> QueueFeeder:
    return QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, app.lambda_handler)


def deliver(deployment: Deployment) -> DeliveryReport:
    """Feed the upload queue to the real handler until it is empty (failures retried, then dead-lettered)."""
    return feeder(deployment).drain(max_invocations=50)


def depth(deployment: Deployment, url: str) -> int:
    return queue_depth(deployment.client("sqs"), url)


def visible(deployment: Deployment, url: str) -> int:
    attributes = deployment.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def distinct_jpeg(index: int) -> bytes:
    """Different bytes per upload: identical content would wait for one shared description (content cache)."""
    return encode(photo(300 + index, 200), "JPEG")


def park_in_dlq(deployment: Deployment, model: Any, *keys: str) -> None:
    """Uploads that a rate-limited model keeps failing until SQS moves their notifications to the DLQ."""
    model.responder.default = RATE_LIMITED
    for index, key in enumerate(keys):
        upload(deployment, key, distinct_jpeg(index))
    deliver(deployment)
    assert depth(deployment, deployment.resources.dlq_url) == len(keys)
    assert depth(deployment, deployment.resources.queue_url) == 0


@pytest.fixture
def queues(deployment: Deployment) -> Deployment:
    """The stack with an empty uploads queue (the s3:TestEvent from setting up the notification discarded)."""
    deployment.client("sqs").purge_queue(QueueUrl=deployment.resources.queue_url)
    return deployment


def status(deployment: Deployment, key: str) -> str | None:
    record = deployment.record(key)
    return None if record is None else record["status"]


def success_notifications(deployment: Deployment) -> list[dict[str, Any]]:
    return [n for n in deployment.received_notifications() if n["attributes"]["status"] == "succeeded"]


class FirstEntryFails:
    """An SQS client whose SendMessageBatch reports the first entry of every batch as failed."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        first, *rest = Entries
        result = self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=rest) if rest else {}
        failure = {"Id": first["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}
        return {"Successful": result.get("Successful", []), "Failed": [*result.get("Failed", []), failure]}


# --- redrive_dlq


def test_redrive_after_the_model_is_fixed_describes_each_upload_once(
    deployment: Deployment, function_env, model
) -> None:
    # GIVEN two uploads parked in the DLQ by a model that answered 429 to every call
    keys = ["photos/rate limited 1.jpg", "photos/rate limited 2.jpg"]
    park_in_dlq(deployment, model, *keys)
    assert [status(deployment, key) for key in keys] == ["processing", "processing"]
    assert deployment.received_notifications() == []
    # WHEN the operator fixes the model and redrives the DLQ
    model.responder.default = default_reply
    report = redrive(deployment.client("sqs"), deployment.resources.dlq_url, deployment.resources.queue_url, None)
    # THEN both messages are back in the uploads queue and gone from the DLQ
    assert (report.received, report.moved, report.send_failed, report.not_deleted) == (2, 2, 0, 0)
    assert report.ok and report.drained
    assert depth(deployment, deployment.resources.dlq_url) == 0
    assert depth(deployment, deployment.resources.queue_url) == 2
    # AND once the queue is drained again both are described, stored and announced exactly once
    assert deliver(deployment).failed_items == 0
    for key in keys:
        record = deployment.record(key) or {}
        assert record.get("status") == "succeeded", record
        assert "last_error_type" not in record
    assert sorted(n["message"]["key"] for n in success_notifications(deployment)) == keys
    assert depth(deployment, deployment.resources.dlq_url) == 0
    assert depth(deployment, deployment.resources.queue_url) == 0


def test_redrive_stops_at_max_messages(queues: Deployment) -> None:
    sqs = queues.client("sqs")
    for index in range(12):
        sqs.send_message(QueueUrl=queues.resources.dlq_url, MessageBody=f"message {index}")
    report = redrive(sqs, queues.resources.dlq_url, queues.resources.queue_url, 11)
    assert (report.received, report.moved) == (11, 11)
    assert report.ok and not report.drained
    assert depth(queues, queues.resources.dlq_url) == 1
    assert depth(queues, queues.resources.queue_url) == 11


def test_redrive_keeps_body_and_message_attributes(queues: Deployment) -> None:
    sqs = queues.client("sqs")
    attributes = {
        "origin": {"DataType": "String", "StringValue": "manual"},
        "attempt": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    sqs.send_message(QueueUrl=queues.resources.dlq_url, MessageBody="not an S3 event", MessageAttributes=attributes)
    assert redrive(sqs, queues.resources.dlq_url, queues.resources.queue_url).moved == 1
    (message,) = sqs.receive_message(QueueUrl=queues.resources.queue_url, MessageAttributeNames=["All"])["Messages"]
    assert message["Body"] == "not an S3 event"
    assert {name: {k: v for k, v in a.items() if v} for name, a in message["MessageAttributes"].items()} == attributes


def test_only_entries_that_were_sent_are_deleted_from_the_dlq(queues: Deployment) -> None:
    # GIVEN three messages in the DLQ and an SQS that refuses the first entry of each SendMessageBatch
    sqs = queues.client("sqs")
    for index in range(3):
        sqs.send_message(QueueUrl=queues.resources.dlq_url, MessageBody=f"message {index}")
    # WHEN the redrive runs
    report = redrive(FirstEntryFails(sqs), queues.resources.dlq_url, queues.resources.queue_url, None)
    # THEN the refused message stays in the DLQ, visible at once; it stops there and says why
    assert (report.received, report.moved, report.send_failed) == (3, 2, 1)
    assert not report.ok and not report.drained
    assert "InternalError: injected" in report.errors[0]
    assert depth(queues, queues.resources.queue_url) == 2
    assert visible(queues, queues.resources.dlq_url) == 1
    # AND a second run moves it
    again = redrive(sqs, queues.resources.dlq_url, queues.resources.queue_url)
    assert (again.moved, again.drained) == (1, True)
    assert depth(queues, queues.resources.queue_url) == 3


def test_dry_run_lists_the_dlq_and_moves_nothing(deployment: Deployment, function_env, model, capsys) -> None:
    park_in_dlq(deployment, model, "photos/c (1).jpg", "photos/d.jpg")
    long_body = "x" * 300
    deployment.client("sqs").send_message(QueueUrl=deployment.resources.dlq_url, MessageBody=long_body)
    argv = ["--dlq-url", deployment.resources.dlq_url, "--queue-url", deployment.resources.queue_url, "--dry-run"]
    capsys.readouterr()  # the function's metrics
    assert redrive_dlq.main(argv) == 0
    out = capsys.readouterr().out
    bucket = deployment.resources.bucket
    assert out.startswith(f"3 message(s) in {deployment.resources.dlq_url} (dry run: nothing moved)")
    assert f"ObjectCreated:Put s3://{bucket}/photos/c (1).jpg" in out  # the key decoded from the event
    assert f"ObjectCreated:Put s3://{bucket}/photos/d.jpg" in out
    assert "x" * 100 + "…" in out and "x" * 101 not in out
    # nothing moved, and every message is visible again for the real redrive
    assert visible(deployment, deployment.resources.dlq_url) == 3
    assert depth(deployment, deployment.resources.queue_url) == 0


def test_main_redrives_the_stack_named_on_the_command_line(deployment: Deployment, function_env, model, capsys) -> None:
    park_in_dlq(deployment, model, "photos/e.jpg")
    capsys.readouterr()  # the function's metrics
    assert redrive_dlq.main(["--stack-name", "sightline"]) == 0
    out = capsys.readouterr().out
    assert "moved 1 of 1 received message(s); 0 failed to send, 0 sent but not deleted from the DLQ" in out
    assert "the dead-letter queue is empty" in out
    assert depth(deployment, deployment.resources.queue_url) == 1


def test_main_refuses_queues_given_the_wrong_way_round(queues: Deployment, capsys) -> None:
    queues.client("sqs").send_message(QueueUrl=queues.resources.queue_url, MessageBody="keep me")
    argv = ["--dlq-url", queues.resources.queue_url, "--queue-url", queues.resources.dlq_url]
    assert redrive_dlq.main(argv) == 2
    assert "refusing to redrive" in capsys.readouterr().err
    assert depth(queues, queues.resources.queue_url) == 1
    assert depth(queues, queues.resources.dlq_url) == 0


def test_main_rejects_half_a_queue_pair(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        redrive_dlq.main(["--dlq-url", "https://sqs.example/dlq"])
    assert exit_info.value.code == 2
    assert "--dlq-url and --queue-url go together" in capsys.readouterr().err


# --- list_records


def test_the_scripts_know_every_status_the_function_writes() -> None:
    assert set(list_records_script.STATUSES) == {records.PROCESSING, records.DEFERRED, *records.TERMINAL}


def test_failed_records_are_listed_newest_first_and_retries_with_their_last_error(
    deployment: Deployment, function_env, model
) -> None:
    # GIVEN an HTML page named .jpg, then (later) an empty file: two failed records
    upload(deployment, "inbox/not an image.jpg", HTML)
    deliver(deployment)
    upload(deployment, "inbox/empty.png", b"")
    deliver(deployment)
    # AND an upload whose first delivery the model rate-limited (it waits for its next delivery)
    model.responder.default = RATE_LIMITED
    upload(deployment, "inbox/retrying.jpg", distinct_jpeg(0))
    feeder(deployment).deliver_once(DeliveryReport())
    table, dynamodb = deployment.resources.table, deployment.client("dynamodb")
    # WHEN the operator lists failed records
    failed = list_records(dynamodb, table, "failed", 10)
    # THEN they come from the status index, newest first, with their reasons
    assert [(r["key"], r["error_type"]) for r in failed] == [
        ("inbox/empty.png", "EmptyObject"),
        ("inbox/not an image.jpg", "NotAnImage"),
    ]
    assert failed[0]["processed_at"] > failed[1]["processed_at"]
    assert all(r["error_message"] and r["bucket"] == deployment.resources.bucket for r in failed)
    assert list_records(dynamodb, table, "failed", 1) == failed[:1]
    # AND the item being retried is listed as processing, with its last transient error
    (retrying,) = list_records(dynamodb, table, "processing", 10)
    assert retrying["key"] == "inbox/retrying.jpg"
    assert retrying["last_error_type"] == "ModelUnavailable"
    assert "429" in retrying["last_error_message"] or "rate" in retrying["last_error_message"].lower()
    assert list_records(dynamodb, table, "succeeded", 10) == []


def test_an_unknown_status_is_refused(deployment: Deployment) -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        list_records(deployment.client("dynamodb"), deployment.resources.table, "pending", 10)


def test_main_prints_the_table_for_the_stack(deployment: Deployment, function_env, model, capsys) -> None:
    upload(deployment, "inbox/not an image.jpg", HTML)
    upload(deployment, "inbox/empty.png", b"")
    deliver(deployment)
    bucket = deployment.resources.bucket
    capsys.readouterr()  # the function's metrics

    assert list_records_script.main(["--stack-name", "sightline"]) == 0
    out = capsys.readouterr().out
    header, *rows, blank, footer = out.splitlines()
    assert header.split() == ["PROCESSED", "AT", "OBJECT", "ERROR", "TYPE", "MESSAGE"]
    assert len(rows) == 2 and blank == ""
    assert {row.split("  ")[1].strip() for row in rows} == {
        f"s3://{bucket}/inbox/not an image.jpg",
        f"s3://{bucket}/inbox/empty.png",
    }
    assert any("NotAnImage" in row for row in rows) and any("EmptyObject" in row for row in rows)
    assert footer == f"2 failed record(s) in {deployment.resources.table}"

    assert list_records_script.main(["--table", deployment.resources.table, "--json", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    (line,) = out.splitlines()
    assert json.loads(line)["status"] == "failed"

    assert list_records_script.main(["--stack-name", "sightline", "--status", "processing"]) == 0
    assert capsys.readouterr().out.endswith(f"0 processing record(s) in {deployment.resources.table}\n")


def test_main_reports_a_missing_stack(deployment: Deployment, capsys) -> None:
    assert list_records_script.main(["--stack-name", "no-such-stack"]) == 1
    assert "error:" in capsys.readouterr().err
