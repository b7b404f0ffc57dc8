"""The functions make exactly the AWS calls their roles grant: each runs on the emulated stack while every call it
makes is recorded as the IAM action and stack resource that authorize it, and compared with tests/support/iam.py.

moto enforces no IAM: a call the role lacks passes every other test and is refused in production, and a grant no
call uses only widens the role. tests/unit/test_template.py checks that the template grants exactly CALLS; this
test checks that the code calls exactly CALLS, so the flows below exercise every call CALLS declares.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from itertools import count
from typing import Any

import batch_app
import pytest
import resume_app

import app
from devkit.documents import text_pdf
from devkit.lambda_emulator import FakeLambdaContext, QueueFeeder, lambda_sqs_event, s3_notification
from devkit.model_server import ChatRequest, Reply, default_reply, error_reply
from sightline import composition
from tests.conftest import Deployment
from tests.integration.test_documents import lines, page_reader, requested_pages
from tests.support.aws_calls import CallRecorder
from tests.support.iam import CALLS, FUNCTION_ROLES, LIST_BUCKET
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

DESCRIBE = "DescribeImageFunctionRole"
RESUME = "ResumeDeferredFunctionRole"
BATCH = "BatchBackfillFunctionRole"
# The stack's resources a call can name (the physical ids CloudFormation reports); the secret is added by the test.
NAMED_TYPES = {"AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::SNS::Topic"}
SECRET_ID = "ModelApiKeySecret"
API_KEY = "test-key"  # function_env's key (already registered for redaction), here read from the secret instead


def stack_logical_ids(deployment: Deployment) -> dict[str, str]:
    resources = deployment.client("cloudformation").describe_stack_resources(StackName="sightline")["StackResources"]
    # Moto lists a resource whose Condition is false without a logical id or type: it is not deployed.
    return {r["PhysicalResourceId"]: r["LogicalResourceId"] for r in resources if r.get("ResourceType") in NAMED_TYPES}


def restart(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """New settings take effect at the next cold start of every function."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    composition.get_runtime.cache_clear()
    resume_app._runtime.cache_clear()
    batch_app.get_batch_runtime.cache_clear()


@pytest.fixture
def cold_starts(function_env: dict[str, str]) -> Iterator[None]:
    """Runtimes built in this test (and the secret's cached client and value) do not outlive it."""
    composition._secrets.cache_clear()
    yield
    composition._secrets.cache_clear()
    batch_app.get_batch_runtime.cache_clear()


def answer(request: ChatRequest) -> Reply:
    """Document pages and the summary as a document model answers them; images with the default answer."""
    if requested_pages(request) or not request.images:
        return page_reader()(request)
    return default_reply(request)


class Uploads:
    """Objects put by the test (not recorded) and the S3 events it delivers by hand, in order (a sequencer each)."""

    def __init__(self, deployment: Deployment, recorder: CallRecorder) -> None:
        self.deployment = deployment
        self.recorder = recorder
        self.bucket = deployment.resources.bucket
        self._sequencer = count(0x1000)
        self._sizes = count()

    def put(self, key: str, body: bytes | None = None) -> dict[str, Any]:
        if body is None:  # bytes of its own: identical bytes would be served from the content cache
            step = next(self._sizes)
            body = encode(photo(240 + step, 180 + step), "JPEG")
        response = self.deployment.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)
        return {"etag": response["ETag"].strip('"'), "version_id": response.get("VersionId"), "size": len(body)}

    def event(self, key: str, **object_fields: Any) -> dict[str, Any]:
        return s3_notification(self.bucket, key, sequencer=f"{next(self._sequencer):018X}", **object_fields)

    def describe(self, *events: dict[str, Any]) -> None:
        """One SQS batch of these events through the describe function; none may fail."""
        messages = [{"MessageId": f"m{i}", "ReceiptHandle": "r", "Body": json.dumps(e)} for i, e in enumerate(events)]
        sqs_event = lambda_sqs_event(messages, self.deployment.resources.queue_arn)
        with self.recorder.acting_as(DESCRIBE):
            assert app.lambda_handler(sqs_event, FakeLambdaContext()) == {"batchItemFailures": []}

    def drain(self) -> None:
        """What the functions sent to the uploads queue (page ranges, resumed items), through the describe function."""
        sqs = self.deployment.client("sqs")
        handler = self.recorder.as_role(DESCRIBE, app.lambda_handler)
        report = QueueFeeder.for_stack(sqs, self.deployment.resources, handler).drain(max_invocations=20)
        assert report.failed_items == 0

    def status(self, key: str) -> str | None:
        return (self.deployment.record(key) or {}).get("status")


def batch_task(bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
    """An S3 Batch Operations invocation (schema 2.0) of one task."""
    return {
        "invocationSchemaVersion": "2.0",
        "invocationId": "aW52b2NhdGlvbg",
        "job": {"id": "f3cc4f60-61f6-4a2b-8a21-d07600c373ce", "userArguments": {}},
        "tasks": [{"taskId": "dGFzaw", "s3Bucket": bucket, "s3Key": key, "s3VersionId": version_id}],
    }


def differences(role: str, recorder: CallRecorder) -> list[str]:
    """What the role's calls needed beyond its grants (refused in production), and grants no call used."""
    granted, made = CALLS[role], recorder.made(role)
    problems = []
    for resource, actions in sorted(made.items()):
        for action in sorted(actions - granted.get(resource, set())):
            examples = [str(c) for c in recorder.calls_of(role) if (c.resource, c.action) == (resource, action)]
            problems.append(f"{role}: {action} on {resource} is called but not granted, e.g. {examples[:3]}")
    # s3:ListBucket is granted for the answer to a missing key (404, not 403): no call needs to name it.
    for resource, actions in sorted(granted.items()):
        for action in sorted(actions - {LIST_BUCKET} - made.get(resource, set())):
            problems.append(f"{role}: {action} on {resource} is granted but no flow of this test called it")
    return problems


def test_the_functions_make_exactly_the_calls_their_roles_grant(
    deployment: Deployment, function_env: dict[str, str], cold_starts: None, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the stack with its events delivered by hand (the bucket's notifications off), the model's key in the
    # stack's secret (the local stack has none: created here), a daily budget, page ranges of two pages, and images
    # sent to the model by presigned URL
    resources = deployment.resources
    s3, sqs = deployment.client("s3"), deployment.client("sqs")
    s3.put_bucket_notification_configuration(Bucket=resources.bucket, NotificationConfiguration={})
    sqs.purge_queue(QueueUrl=resources.queue_url)
    secret = deployment.client("secretsmanager").create_secret(
        Name="sightline-model-api-key", SecretString=json.dumps({"api_key": API_KEY})
    )
    monkeypatch.delenv("MODEL_API_KEY")
    restart(
        monkeypatch,
        MODEL_API_KEY_SECRET_ARN=secret["ARN"],
        BUDGET_DAILY_LIMIT="1000000",
        BUDGET_UNIT="tokens",
        DOCUMENT_RANGE_PAGES="2",
        MODEL_IMAGE_TRANSPORT="url",
        UPLOADS_QUEUE_URL=resources.queue_url,  # the batch function's name for it
    )
    recorder = CallRecorder({**stack_logical_ids(deployment), secret["ARN"]: SECRET_ID})
    recorder.install(monkeypatch)
    model.responder.default = answer
    uploads = Uploads(deployment, recorder)

    # WHEN the describe function describes a photo (its event names the version), a duplicate delivery of that
    # event, a photo whose event names no version (an unversioned bucket's), that photo's deletion, and a
    # three-page PDF, which it splits into two page ranges sent back to its queue and then described
    first = uploads.put("photos/first.jpg")
    first_event = uploads.event("photos/first.jpg", **first)
    uploads.describe(first_event)
    uploads.describe(first_event)
    plain = uploads.put("photos/plain.jpg")
    uploads.describe(uploads.event("photos/plain.jpg", etag=plain["etag"], size=plain["size"]))
    marker = s3.delete_object(Bucket=resources.bucket, Key="photos/plain.jpg")
    uploads.describe(
        uploads.event(
            "photos/plain.jpg", event_name="ObjectRemoved:DeleteMarkerCreated", version_id=marker["VersionId"]
        )
    )
    pdf = uploads.put("documents/report.pdf", text_pdf([lines(n) for n in (1, 2, 3)]))
    uploads.describe(uploads.event("documents/report.pdf", **pdf))
    uploads.drain()
    assert [uploads.status(k) for k in ("photos/first.jpg", "photos/plain.jpg", "documents/report.pdf")] == [
        "succeeded",
        "deleted",
        "succeeded",
    ]
    assert deployment.record("documents/report.pdf")["document"]["ranges"] == 2
    assert model.chat_requests and {r.headers["authorization"] for r in model.chat_requests} == {f"Bearer {API_KEY}"}

    # AND a photo is parked because the provider failed and the breaker (one failure, one second) opened; the
    # resume function sends it back once the cool-down is over, and the describe function describes it
    restart(monkeypatch, BREAKER_FAILURES="1", BREAKER_COOLDOWN_SECONDS="1")
    model.responder.push(error_reply(503, "overloaded", "server_error"))
    paused = uploads.put("photos/paused.jpg")
    uploads.describe(uploads.event("photos/paused.jpg", **paused))
    parked = deployment.record("photos/paused.jpg") or {}
    assert (parked.get("status"), parked.get("error_type")) == ("deferred", "ProviderPaused")
    time.sleep(max(0.0, int(parked["deferred_until"]) / 1000 - time.time()) + 0.05)  # waits; asserts no duration
    with recorder.acting_as(RESUME):
        report = resume_app.lambda_handler({}, FakeLambdaContext(function_name="sightline-resume-deferred"))
    assert report["resumed"] == 1, report
    uploads.drain()
    assert uploads.status("photos/paused.jpg") == "succeeded"

    # AND the batch function gets an S3 Batch Operations task for an object already described (no version named:
    # skipped) and one for a new object's version (queued)
    new = uploads.put("photos/backfilled.jpg")
    results = []
    for key, version_id in (("photos/first.jpg", None), ("photos/backfilled.jpg", new["version_id"])):
        with recorder.acting_as(BATCH):
            response = batch_app.lambda_handler(batch_task(resources.bucket, key, version_id), FakeLambdaContext())
        results.append((response["results"][0]["resultCode"], response["results"][0]["resultString"]))
    assert results == [("Succeeded", "skipped: already described"), ("Succeeded", "queued")]

    # THEN each function's calls needed exactly what its role is granted: nothing more (it would be refused in
    # production), nothing less (the role would be wider than the code)
    assert set(FUNCTION_ROLES) == {DESCRIBE, RESUME, BATCH}
    problems = [problem for role in FUNCTION_ROLES for problem in differences(role, recorder)]
    assert not problems, "\n".join(problems)
