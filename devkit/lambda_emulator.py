"""Deliver SQS messages to the real handler the way the Lambda SQS event source does, without Docker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class FakeLambdaContext:
    """The attributes powertools reads from a Lambda context, with a real countdown."""

    function_name: str = "sightline-describe-image"
    memory_limit_in_mb: int = 2048
    timeout_seconds: float = 120.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:sightline-describe-image"
    log_group_name: str = "/aws/lambda/sightline-describe-image"
    log_stream_name: str = "local"
    function_version: str = "$LATEST"
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def lambda_sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """SQS ReceiveMessage output → the event document Lambda's event source mapping hands the function."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


@dataclass
class DeliveryReport:
    invocations: int = 0
    messages: int = 0
    failed_items: int = 0
    batch_seconds: list[float] = field(default_factory=list)


class QueueFeeder:
    """Poll a queue, invoke the handler with each batch, delete what succeeded.

    Reported failures become visible again after `retry_delay_seconds` (a real queue waits for the
    visibility timeout, 6× the function timeout), so redelivery, maxReceiveCount and the move to the
    dead-letter queue happen in seconds. Several feeders on one queue behave like concurrent instances.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        function_timeout: float = 120.0,
        retry_delay_seconds: int = 0,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._batch_size = batch_size
        self._function_timeout = function_timeout
        self._retry_delay_seconds = retry_delay_seconds

    @classmethod
    def for_stack(cls, sqs: Any, stack: Any, handler: Handler, *, retry_delay_seconds: int = 0) -> QueueFeeder:
        """A feeder for the uploads queue of a deployed stack, with the template's batch size and timeout."""
        return cls(
            sqs,
            stack.queue_url,
            stack.queue_arn,
            handler,
            batch_size=stack.batch_size,
            function_timeout=stack.function_timeout,
            retry_delay_seconds=retry_delay_seconds,
        )

    def deliver_once(self, report: DeliveryReport) -> int:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        started = time.perf_counter()
        result = self._handler(
            lambda_sqs_event(messages, self._queue_arn),
            FakeLambdaContext(timeout_seconds=self._function_timeout),
        )
        report.batch_seconds.append(time.perf_counter() - started)
        report.invocations += 1
        report.messages += len(messages)
        failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
        report.failed_items += len(failed)
        for message in messages:
            if message["MessageId"] in failed:
                self._sqs.change_message_visibility(
                    QueueUrl=self._queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self._retry_delay_seconds,
                )
            else:
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def drain(self, *, max_invocations: int = 200, idle_polls: int = 2, max_seconds: float = 300) -> DeliveryReport:
        """Deliver until the queue holds nothing, visible or in flight, for `idle_polls` polls in a row."""
        report = DeliveryReport()
        idle = 0
        give_up = time.monotonic() + max_seconds
        while report.invocations < max_invocations and idle < idle_polls and time.monotonic() < give_up:
            if self.deliver_once(report):
                idle = 0
                continue
            # Messages waiting out a retry delay (or held by another feeder) are not done yet.
            idle = idle + 1 if queue_depth(self._sqs, self._queue_url) == 0 else 0
            time.sleep(0.05)
        return report


def queue_depth(sqs: Any, url: str) -> int:
    """Visible plus in-flight messages."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def read_sns_notifications(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Drain a queue subscribed to an SNS topic: each JSON message with its message attributes."""
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            envelope = json.loads(message["Body"])
            found.append(
                {
                    "message": json.loads(envelope["Message"]),
                    "attributes": {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()},
                }
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def s3_notification(
    bucket: str,
    key: str,
    *,
    event_name: str = "ObjectCreated:Put",
    etag: str | None = None,
    version_id: str | None = None,
    size: int | None = None,
    sequencer: str | None = None,
    event_time: str = "2026-11-25T08:00:00.000Z",
) -> dict[str, Any]:
    """An S3 event notification as S3 writes it: the key URL-encoded, a sequencer per key."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key, safe="/")}
    for name, value in (("eTag", etag), ("versionId", version_id), ("size", size), ("sequencer", sequencer)):
        if value is not None:
            obj[name] = value
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": event_time,
                "eventName": event_name,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": obj,
                },
            }
        ]
    }
