"""The real handler end to end: moto S3 → SQS → handler → DynamoDB + SNS, with the loopback model server."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import pytest
from PIL import Image

import app
from devkit.lambda_emulator import DeliveryReport, FakeLambdaContext, QueueFeeder, lambda_sqs_event, queue_depth
from devkit.model_server import Reply, completion, error_reply
from sightline.imaging import MAX_BASE64_BYTES
from tests.conftest import Deployment, load_event
from tests.unit.images import encode, page, photo

pytestmark = pytest.mark.integration

MODEL_JSON = {
    "description": "A red square in the corner of a gradient.",
    "alt_text": "Image of a red square on a grey gradient",
    "text": "",
    "tags": ["square", "gradient"],
}


def upload(deployment: Deployment, key: str, body: bytes) -> str:
    """Put an object; returns its ETag, as S3 puts it in the event."""
    response = deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key=key, Body=body)
    return str(response["ETag"]).strip('"')


def deliver(deployment: Deployment, *, max_invocations: int = 50) -> DeliveryReport:
    """Feed the upload queue to the real handler as the SQS event source would."""
    feeder = QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, app.lambda_handler)
    return feeder.drain(max_invocations=max_invocations)


def depth(deployment: Deployment, url: str) -> int:
    return queue_depth(deployment.client("sqs"), url)


def answer(content: dict[str, Any] | str, **kwargs: Any) -> Reply:
    text = content if isinstance(content, str) else json.dumps(content)
    return Reply(body=completion(text, model="scripted", prompt_tokens=812, completion_tokens=64, **kwargs))


def sent_image(request: Any) -> Image.Image:
    url = request.body["messages"][-1]["content"][0]["image_url"]["url"]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    return encode(photo(1600, 1200), "JPEG", exif=exif, quality=90)


def test_url_encoded_key_is_described_stored_and_notified(deployment: Deployment, function_env, model) -> None:
    # GIVEN an EXIF-rotated photo under a key S3 must URL-encode in its event
    key = "photos/Summer trip (2026)/café+résumé.jpg"
    upload(deployment, key, rotated_jpeg())
    model.responder.push(answer(MODEL_JSON))
    # WHEN the notification reaches the handler through the queue
    report = deliver(deployment)
    # THEN one record holds the validated answer, the facts and the billed usage
    record = deployment.record(key)
    assert record is not None, "record stored under the decoded key"
    assert record["status"] == "succeeded"
    assert record["description"] == MODEL_JSON["description"]
    assert record["alt_text"] == "A red square on a grey gradient"  # "Image of" removed
    assert record["has_text"] is False and record["text"] == ""
    assert record["usage"] == {
        "prompt_tokens": 812,
        "completion_tokens": 64,
        "total_tokens": 876,
        "model_calls": 1,
        "usage_reported": True,
    }
    assert record["image"]["format"] == "JPEG"
    assert (record["image"]["original_width"], record["image"]["original_height"]) == (1200, 1600)
    assert record["image"]["sent_height"] > record["image"]["sent_width"]
    assert record["object"]["etag"] and record["object"]["size"] > 0
    assert record["schema_version"] == 2 and record["model_id"] == function_env["MODEL_ID"]
    assert (record["profile"], record["task"], record["language"]) == ("photos", "caption", "en")
    # AND the request followed the provider guide's message shape
    (request,) = model.chat_requests
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body["model"] == function_env["MODEL_ID"]
    image_part, text_part = request.body["messages"][-1]["content"]
    assert image_part["type"] == "image_url" and text_part["type"] == "text"
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert image_part["image_url"]["detail"] in ("low", "high", "auto")
    assert len(image_part["image_url"]["url"].split(",", 1)[1]) == record["image"]["bytes_sent"] < MAX_BASE64_BYTES
    assert sent_image(request).height > sent_image(request).width  # sent upright
    # AND exactly one notification, filterable by its attributes
    (notification,) = deployment.received_notifications()
    assert notification["attributes"] == {
        "status": "succeeded",
        "has_text": "false",
        "event": "sightline.image.processed",
        "profile": "photos",
        "task": "caption",
        "language": "en",
    }
    assert notification["message"]["key"] == key
    assert notification["message"]["schema_version"] == 2
    assert notification["message"]["record"] == {
        "table": deployment.resources.table,
        "bucket": deployment.resources.bucket,
        "key": key,
    }
    # AND the message was deleted, nothing retried
    assert report.failed_items == 0
    assert depth(deployment, deployment.resources.queue_url) == 0


def test_png_with_alpha_is_flattened_on_white(deployment: Deployment, function_env, model) -> None:
    logo = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    logo.paste((0, 90, 200, 255), (100, 75, 300, 225))
    upload(deployment, "logos/transparent logo.png", encode(logo, "PNG"))
    deliver(deployment)
    record = deployment.record("logos/transparent logo.png")
    assert record["status"] == "succeeded" and record["image"]["format"] == "PNG"
    corner = sent_image(model.chat_requests[0]).convert("RGB").getpixel((3, 3))
    assert min(corner) > 245


def test_document_text_is_recorded_and_flagged(deployment: Deployment, function_env, model) -> None:
    upload(deployment, "scans/page 1.png", encode(page(), "PNG"))
    model.responder.push(answer({**MODEL_JSON, "text": "Line 0: the quick brown fox\nLine 1"}))
    deliver(deployment)
    record = deployment.record("scans/page 1.png")
    assert record["has_text"] is True and record["text"].startswith("Line 0")
    assert record["image"]["document_like"] is True
    (notification,) = deployment.received_notifications()
    assert notification["attributes"]["has_text"] == "true"
    assert notification["message"]["text"] == record["text"]


@pytest.mark.parametrize(
    ("key", "body", "error_type"),
    [
        ("photos/not-really.jpg", b"<!DOCTYPE html><html><body>404</body></html>", "NotAnImage"),
        ("photos/empty.png", b"", "EmptyObject"),
        ("photos/truncated.jpg", encode(photo(800, 600), "JPEG")[:3000], "CorruptImage"),
        ("docs/contract.pdf.png", b"%PDF-1.7\n1 0 obj", "CorruptDocument"),  # a PDF whatever its name: read as one
    ],
)
def test_bad_input_ends_as_a_failed_record_and_is_not_retried(
    deployment: Deployment, function_env, model, key: str, body: bytes, error_type: str
) -> None:
    upload(deployment, key, body)
    report = deliver(deployment)
    record = deployment.record(key)
    assert record["status"] == "failed"
    assert record["error_type"] == error_type
    assert record["error_message"]
    assert "description" not in record
    assert model.chat_requests == []  # never paid for
    (notification,) = deployment.received_notifications()
    assert notification["attributes"]["status"] == "failed"
    assert notification["message"]["error_type"] == error_type
    assert report.failed_items == 0
    assert depth(deployment, deployment.resources.queue_url) == 0
    assert depth(deployment, deployment.resources.dlq_url) == 0


def test_object_over_the_size_limit_is_refused_before_download(
    deployment: Deployment, function_env, model, monkeypatch
) -> None:
    monkeypatch.setenv("MAX_OBJECT_BYTES", "5000")
    upload(deployment, "big.jpg", encode(photo(800, 600), "JPEG", quality=95))
    deliver(deployment)
    record = deployment.record("big.jpg")
    assert record["status"] == "failed" and record["error_type"] == "ObjectTooLarge"
    assert "5,000" in record["error_message"]


def test_model_rate_limit_is_retried_then_dead_lettered(deployment: Deployment, function_env, model) -> None:
    # GIVEN a model that answers 429 to every call
    model.responder.default = error_reply(429, "Rate limit reached", "rate_limit_error", {"Retry-After": "0"})
    upload(deployment, "photos/a.jpg", encode(photo(300, 200), "JPEG"))
    # WHEN SQS keeps redelivering the failed item
    report = deliver(deployment)
    # THEN it is retried maxReceiveCount times and ends in the DLQ; the record never says the image failed
    assert report.failed_items == deployment.resources.max_receive_count
    assert len(model.chat_requests) == deployment.resources.max_receive_count
    record = deployment.record("photos/a.jpg")
    assert record["status"] == "processing" and record["last_error_type"] == "ModelUnavailable"
    assert deployment.received_notifications() == []
    assert depth(deployment, deployment.resources.dlq_url) == 1


def test_server_error_then_success_yields_one_record_and_one_notification(
    deployment: Deployment, function_env, model
) -> None:
    model.responder.push(error_reply(500, "upstream overloaded", "server_error"), answer(MODEL_JSON))
    upload(deployment, "photos/b.jpg", encode(photo(300, 200), "JPEG"))
    report = deliver(deployment)
    assert report.failed_items == 1
    assert deployment.record("photos/b.jpg")["status"] == "succeeded"
    assert len(deployment.received_notifications()) == 1


def test_in_call_retry_honours_retry_after(deployment: Deployment, function_env, model, monkeypatch) -> None:
    monkeypatch.setenv("MODEL_MAX_ATTEMPTS", "3")
    model.responder.push(error_reply(429, "slow down", "rate_limit_error", {"Retry-After": "0.05"}), answer(MODEL_JSON))
    upload(deployment, "photos/c.jpg", encode(photo(300, 200), "JPEG"))
    report = deliver(deployment)
    assert report.failed_items == 0
    assert len(model.chat_requests) == 2
    assert deployment.record("photos/c.jpg")["status"] == "succeeded"


def test_invalid_json_gets_one_text_only_repair(deployment: Deployment, function_env, model) -> None:
    model.responder.push(answer("Description: a red square. Alt: red square."), answer(MODEL_JSON))
    upload(deployment, "photos/d.jpg", encode(photo(300, 200), "JPEG"))
    deliver(deployment)
    record = deployment.record("photos/d.jpg")
    assert record["status"] == "succeeded"
    assert record["usage"]["model_calls"] == 2 and record["usage"]["prompt_tokens"] == 2 * 812
    repair_request = model.chat_requests[1]
    assert "image_url" not in json.dumps(repair_request.body)


def test_invalid_json_twice_is_a_failed_record_with_the_tokens_paid(
    deployment: Deployment, function_env, model
) -> None:
    model.responder.push(answer("no json here"), answer("still none"))
    upload(deployment, "photos/e.jpg", encode(photo(300, 200), "JPEG"))
    report = deliver(deployment)
    record = deployment.record("photos/e.jpg")
    assert record["status"] == "failed" and record["error_type"] == "InvalidModelOutput"
    assert "repair" in record["error_message"]
    assert record["usage"]["total_tokens"] == 2 * 876
    assert report.failed_items == 0


def test_truncated_answer_is_never_a_success(deployment: Deployment, function_env, model) -> None:
    model.responder.push(answer('{"description": "A red squ', finish_reason="length"))
    upload(deployment, "photos/f.jpg", encode(photo(300, 200), "JPEG"))
    deliver(deployment)
    record = deployment.record("photos/f.jpg")
    assert record["status"] == "failed" and record["error_type"] == "TruncatedModelOutput"


def test_model_rejecting_the_image_is_permanent(deployment: Deployment, function_env, model) -> None:
    model.responder.push(error_reply(400, "image could not be processed", "invalid_request_error"))
    upload(deployment, "photos/g.jpg", encode(photo(300, 200), "JPEG"))
    report = deliver(deployment)
    record = deployment.record("photos/g.jpg")
    assert record["status"] == "failed" and record["error_type"] == "ModelRejectedImage"
    assert report.failed_items == 0


def test_bad_api_key_is_a_configuration_error_not_the_images_fault(deployment: Deployment, function_env, model) -> None:
    model.responder.default = error_reply(401, "Incorrect API key provided", "invalid_request_error")
    upload(deployment, "photos/h.jpg", encode(photo(300, 200), "JPEG"))
    report = deliver(deployment)
    assert report.failed_items == deployment.resources.max_receive_count
    record = deployment.record("photos/h.jpg")
    assert record["status"] == "processing" and record["last_error_type"] == "Configuration"
    assert depth(deployment, deployment.resources.dlq_url) == 1


def test_model_timeout_is_transient(deployment: Deployment, function_env, model, monkeypatch) -> None:
    monkeypatch.setenv("MODEL_TIMEOUT_SECONDS", "1")
    model.responder.push(Reply(delay_seconds=3, body=completion("{}", model="m", prompt_tokens=1, completion_tokens=1)))
    upload(deployment, "photos/i.jpg", encode(photo(300, 200), "JPEG"))
    report = deliver(deployment)
    assert report.failed_items == 1  # the first delivery timed out, the redelivery succeeded
    assert deployment.record("photos/i.jpg")["status"] == "succeeded"


def test_batch_records_are_described_concurrently(deployment: Deployment, function_env, model) -> None:
    # GIVEN a model that takes 1 s per answer and 10 uploads
    model.responder.delay_seconds = 1.0
    deliver(deployment)  # consume the s3:TestEvent S3 sent when the notification was configured
    for index in range(10):
        upload(deployment, f"batch/{index}.jpg", encode(photo(320 + index, 240), "JPEG"))  # distinct contents
    # WHEN they arrive as one batch
    report = deliver(deployment)
    # THEN all ten model calls were in flight at once (the timing itself is printed by `make run`)
    assert report.invocations == 1 and report.messages == 10
    assert model.max_in_flight == 10
    assert all(deployment.record(f"batch/{i}.jpg")["status"] == "succeeded" for i in range(10))


def test_suffix_filter_is_case_insensitive_and_skips_silently(
    deployment: Deployment, function_env, model, monkeypatch
) -> None:
    monkeypatch.setenv("OBJECT_KEY_SUFFIXES", ".jpg,.png")
    upload(deployment, "photos/UPPER.JPG", encode(photo(300, 200), "JPEG"))
    upload(deployment, "notes/readme.txt", b"hello")
    report = deliver(deployment)
    assert deployment.record("photos/UPPER.JPG")["status"] == "succeeded"
    assert deployment.record("notes/readme.txt") is None
    assert report.failed_items == 0 and len(model.chat_requests) == 1


def test_direct_s3_invocation_with_the_event_file(deployment: Deployment, function_env, model) -> None:
    # GIVEN the events/ file `sam local invoke -e events/s3-put.json` uses, pointed at this stack's bucket
    event = load_event("s3-put.json")
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = deployment.resources.bucket
    record["s3"]["object"].pop("versionId")
    etag = upload(deployment, "photos/Summer trip (2026)/café résumé.jpg", encode(photo(300, 200), "JPEG"))
    record["s3"]["object"]["eTag"] = etag
    deployment.received_notifications()
    result = app.lambda_handler(event, FakeLambdaContext())
    assert result == {"processed": [{"key": "photos/Summer trip (2026)/café résumé.jpg", "status": "succeeded"}]}


def test_direct_eventbridge_invocation_with_the_event_file(deployment: Deployment, function_env, model) -> None:
    # GIVEN the events/ file for an EventBridge rule invoking the function directly, pointed at this stack's bucket
    event = load_event("eventbridge-object-created.json")
    detail = event["detail"]
    detail["bucket"]["name"] = deployment.resources.bucket
    detail["object"].pop("version-id")
    detail["object"]["etag"] = upload(
        deployment, "photos/Summer trip (2026)/café résumé.jpg", encode(photo(300, 200), "JPEG")
    )
    # WHEN the handler gets the event itself (no SQS envelope) THEN the key is used as it is, never URL-decoded
    result = app.lambda_handler(event, FakeLambdaContext())
    assert result == {"processed": [{"key": "photos/Summer trip (2026)/café résumé.jpg", "status": "succeeded"}]}
    assert deployment.record("photos/Summer trip (2026)/café résumé.jpg")["object"]["event_name"] == "ObjectCreated:Put"


def test_test_event_and_multi_record_message(deployment: Deployment, function_env, model) -> None:
    sqs_event = load_event("sqs-test-event-and-multi-record.json")
    multi = json.loads(sqs_event["Records"][1]["body"])
    etags = [
        upload(deployment, "inbox/a.png", encode(photo(200, 100), "PNG")),
        upload(deployment, "inbox/b c.png", encode(photo(201, 100), "PNG")),
    ]
    for s3_record, etag in zip(multi["Records"], etags, strict=True):
        s3_record["s3"]["bucket"]["name"] = deployment.resources.bucket
        s3_record["s3"]["object"]["eTag"] = etag
    sqs_event["Records"][1]["body"] = json.dumps(multi)
    result = app.lambda_handler(sqs_event, FakeLambdaContext())
    assert result == {"batchItemFailures": []}
    assert deployment.record("inbox/a.png")["status"] == "succeeded"
    assert deployment.record("inbox/b c.png")["status"] == "succeeded"


def test_unrecognised_message_is_reported_as_a_batch_failure(
    deployment: Deployment, function_env, model, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[str] = []
    add_metric = app.metrics.add_metric
    monkeypatch.setattr(app.metrics, "add_metric", lambda **kw: (counted.append(kw["name"]), add_metric(**kw))[1])
    body = '{"source": "aws.s3", "detail-type": "Object Created", "detail": {"padding": "' + "x" * 5000 + '"}}'
    messages = [
        {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": "not an s3 event"},
        {"MessageId": "m-2", "ReceiptHandle": "r-2", "Body": body},
    ]
    result = app.lambda_handler(lambda_sqs_event(messages, deployment.resources.queue_arn), FakeLambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-2"}]}
    # Not silent: each is logged at WARNING with why and what it began with (bounded), and counted.
    warnings = [r for r in caplog.records if r.getMessage().startswith("queue message is not an S3 event")]
    assert [(r.levelname, r.message_id) for r in warnings] == [("WARNING", "m-1"), ("WARNING", "m-2")]  # type: ignore[attr-defined]
    assert warnings[0].reason == "message body is not JSON"  # type: ignore[attr-defined]
    preview = warnings[1].body_preview  # type: ignore[attr-defined]
    assert preview.startswith('{"source": "aws.s3"') and len(preview.encode()) <= 500
    assert counted.count("UnrecognizedMessages") == 2


def test_missing_table_setting_fails_at_cold_start(deployment: Deployment, function_env, monkeypatch) -> None:
    from sightline.errors import SettingsError

    monkeypatch.delenv("RESULTS_TABLE")
    with pytest.raises(SettingsError, match="RESULTS_TABLE"):
        app.lambda_handler({"Records": []}, FakeLambdaContext())


@pytest.mark.parametrize(
    ("secret_string", "expected_key"),
    [("sk-plain-key", "sk-plain-key"), ('{"api_key": "sk-json-key", "unused_filler": "x"}', "sk-json-key")],
)
def test_deployed_key_comes_from_secrets_manager(
    deployment: Deployment, function_env, model, monkeypatch, secret_string: str, expected_key: str
) -> None:
    # GIVEN the deployed configuration: a secret ARN instead of a plain key in the environment
    arn = deployment.client("secretsmanager").create_secret(Name="model-key", SecretString=secret_string)["ARN"]
    monkeypatch.delenv("MODEL_API_KEY")
    monkeypatch.setenv("MODEL_API_KEY_SECRET_ARN", arn)
    upload(deployment, "photos/keyed.jpg", encode(photo(300, 200), "JPEG"))
    deliver(deployment)
    assert deployment.record("photos/keyed.jpg")["status"] == "succeeded"
    assert model.chat_requests[0].headers["authorization"] == f"Bearer {expected_key}"


def test_secret_not_set_yet_is_a_configuration_error(deployment: Deployment, function_env, model, monkeypatch) -> None:
    # GIVEN the secret as the template creates it, before the operator stored the key
    arn = deployment.client("secretsmanager").create_secret(
        Name="model-key", SecretString='{"api_key": "", "unused_filler": "abc"}'
    )["ARN"]
    monkeypatch.delenv("MODEL_API_KEY")
    monkeypatch.setenv("MODEL_API_KEY_SECRET_ARN", arn)
    upload(deployment, "photos/unkeyed.jpg", encode(photo(300, 200), "JPEG"))
    report = deliver(deployment)
    # THEN nothing is blamed on the image: the item is retried and parked in the DLQ for a redrive
    assert model.chat_requests == []
    record = deployment.record("photos/unkeyed.jpg")
    assert record["status"] == "processing" and record["last_error_type"] == "Configuration"
    assert report.failed_items == deployment.resources.max_receive_count
    assert depth(deployment, deployment.resources.dlq_url) == 1


def test_model_timeout_follows_the_invocations_remaining_time(deployment: Deployment, function_env, model) -> None:
    # GIVEN an invocation with 15 s left, a 30 s model timeout and a model that would answer after 8 s
    model.responder.push(Reply(delay_seconds=8, body=completion("{}", model="m", prompt_tokens=1, completion_tokens=1)))
    deliver(deployment)  # consume the s3:TestEvent
    upload(deployment, "photos/late.jpg", encode(photo(300, 200), "JPEG"))
    sqs = deployment.client("sqs")
    messages = sqs.receive_message(QueueUrl=deployment.resources.queue_url, MaxNumberOfMessages=10)["Messages"]
    result = app.lambda_handler(
        lambda_sqs_event(messages, deployment.resources.queue_arn), FakeLambdaContext(timeout_seconds=15)
    )
    # THEN the call gave up within the time left minus the safety margin, and the item is retried
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    record = deployment.record("photos/late.jpg")
    assert record["status"] == "processing" and record["last_error_type"] == "ModelUnavailable"
    waited = float(re.search(r"timed out \D*([0-9.]+)s", record["last_error_message"]).group(1))  # type: ignore[union-attr]
    assert 2.0 <= waited <= 15 - app.SAFETY_MARGIN_SECONDS
