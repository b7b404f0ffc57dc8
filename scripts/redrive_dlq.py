"""Move the upload notifications parked in the dead-letter queue back to the uploads queue after a fix."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import BotoCoreError, ClientError

DEFAULT_STACK_NAME = "sightline"
# SQS allows at most 10 messages per ReceiveMessage / SendMessageBatch / DeleteMessageBatch call.
BATCH_SIZE = 10
# A received batch is sent and deleted within seconds; until then no other consumer may see it.
VISIBILITY_TIMEOUT_SECONDS = 60
# Long polling asks every SQS server, so an empty answer means the queue is empty (short polling samples).
WAIT_SECONDS = 1
# Empty receives in a row after which the dead-letter queue counts as drained.
EMPTY_RECEIVES_TO_STOP = 2
SUMMARY_CHARS = 100


@dataclass
class RedriveReport:
    """What one redrive did: every received message is moved, failed to send, or moved but left behind."""

    received: int = 0
    moved: int = 0  # sent to the uploads queue and deleted from the dead-letter queue
    send_failed: int = 0  # still in the dead-letter queue (visible again at once)
    not_deleted: int = 0  # sent, but the delete failed: in both queues (a second delivery is harmless)
    drained: bool = False  # stopped because the dead-letter queue was empty
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.send_failed == 0 and self.not_deleted == 0


class MissingStackOutputError(LookupError):
    """The stack has no output of that name (not a Sightline stack, or an older template)."""


def stack_outputs(cloudformation: Any, stack_name: str, *names: str) -> list[str]:
    """The values of the named outputs of a CloudFormation stack, in order."""
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    missing = [name for name in names if name not in outputs]
    if missing:
        raise MissingStackOutputError(f"stack {stack_name} has no output {', '.join(missing)}")
    return [outputs[name] for name in names]


def receive_batch(sqs: Any, queue_url: str, count: int) -> list[dict[str, Any]]:
    """Up to `count` (≤ 10) messages with every attribute, hidden from other consumers while handled."""
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=min(count, BATCH_SIZE),
        VisibilityTimeout=VISIBILITY_TIMEOUT_SECONDS,
        WaitTimeSeconds=WAIT_SECONDS,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


def _message_attributes(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Received message attributes in the shape SendMessage accepts (empty list fields dropped)."""
    return {
        name: {part: value for part, value in attribute.items() if value not in (None, [], b"", "")}
        for name, attribute in message.get("MessageAttributes", {}).items()
    }


def _send_entry(entry_id: str, message: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
    attributes = _message_attributes(message)
    if attributes:
        entry["MessageAttributes"] = attributes
    trace_header = message.get("Attributes", {}).get("AWSTraceHeader")
    if trace_header:
        entry["MessageSystemAttributes"] = {"AWSTraceHeader": {"DataType": "String", "StringValue": trace_header}}
    return entry


def _release(sqs: Any, queue_url: str, messages: Sequence[dict[str, Any]]) -> None:
    """Make messages visible again at once, so that a second run need not wait for the visibility timeout."""
    if messages:
        sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}
                for index, message in enumerate(messages)
            ],
        )


def _move_batch(sqs: Any, dlq_url: str, queue_url: str, messages: list[dict[str, Any]], report: RedriveReport) -> None:
    """Send a received batch to the uploads queue and delete from the DLQ exactly the entries that were sent."""
    by_id = {str(index): message for index, message in enumerate(messages)}
    try:
        result = sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[_send_entry(entry_id, message) for entry_id, message in by_id.items()]
        )
    except (ClientError, BotoCoreError) as exc:
        report.send_failed += len(messages)
        report.errors.append(f"send of {len(messages)} message(s) failed, left in the DLQ: {exc}")
        _release(sqs, dlq_url, messages)
        return
    sent = [by_id[entry["Id"]] for entry in result.get("Successful", [])]
    unsent = [by_id[entry["Id"]] for entry in result.get("Failed", [])]
    for entry in result.get("Failed", []):
        reason = f"{entry.get('Code', '?')}: {entry.get('Message', '')}".rstrip(": ")
        report.errors.append(f"send {by_id[entry['Id']]['MessageId']} failed, left in the DLQ: {reason}")
    report.send_failed += len(unsent)
    _release(sqs, dlq_url, unsent)
    if not sent:
        return
    try:
        deleted = sqs.delete_message_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(sent)
            ],
        )
    except (ClientError, BotoCoreError) as exc:
        report.not_deleted += len(sent)
        report.errors.append(f"{len(sent)} message(s) sent but not deleted from the DLQ: {exc}")
        return
    for entry in deleted.get("Failed", []):
        reason = f"{entry.get('Code', '?')}: {entry.get('Message', '')}".rstrip(": ")
        report.errors.append(f"{sent[int(entry['Id'])]['MessageId']} sent but not deleted from the DLQ: {reason}")
    report.not_deleted += len(deleted.get("Failed", []))
    report.moved += len(deleted.get("Successful", []))


def redrive(sqs: Any, dlq_url: str, queue_url: str, max_messages: int | None = None) -> RedriveReport:
    """Move messages from the dead-letter queue to the uploads queue, 10 at a time, with body and attributes.

    Stops when the DLQ is empty (two empty receives in a row), after `max_messages`, or after the first batch
    that did not move entirely (what was not sent stays in the DLQ, visible again; run again once fixed).
    """
    report = RedriveReport()
    empty_receives = 0
    while report.ok and (max_messages is None or report.received < max_messages):
        wanted = BATCH_SIZE if max_messages is None else min(BATCH_SIZE, max_messages - report.received)
        messages = receive_batch(sqs, dlq_url, wanted)
        if not messages:
            empty_receives += 1
            if empty_receives >= EMPTY_RECEIVES_TO_STOP:
                report.drained = True
                break
            continue
        empty_receives = 0
        report.received += len(messages)
        _move_batch(sqs, dlq_url, queue_url, messages, report)
    return report


def summarize(body: str) -> str:
    """One line per message: the S3 events inside a notification, else the start of the body."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("Records"), list):
        events = []
        for record in document["Records"]:
            s3 = record.get("s3", {}) if isinstance(record, dict) else {}
            bucket = s3.get("bucket", {}).get("name", "?")
            key = unquote_plus(str(s3.get("object", {}).get("key", "?")))
            events.append(f"{record.get('eventName', '?')} s3://{bucket}/{key}")
        if events:
            return "; ".join(events)
    if isinstance(document, dict) and document.get("Event") == "s3:TestEvent":
        return f"s3:TestEvent s3://{document.get('Bucket', '?')}"
    flat = " ".join(body.split())
    return flat if len(flat) <= SUMMARY_CHARS else flat[:SUMMARY_CHARS] + "…"


def _sent_at(message: dict[str, Any]) -> str:
    sent_ms = message.get("Attributes", {}).get("SentTimestamp")
    return datetime.fromtimestamp(int(sent_ms) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if sent_ms else "-"


def preview(sqs: Any, dlq_url: str, max_messages: int | None = None) -> list[str]:
    """Summaries of the messages in the DLQ; nothing is moved, and every message is visible again afterwards."""
    held: list[dict[str, Any]] = []  # received, to be released at the end
    seen: set[str] = set()  # a message received again (the listing outlasted its visibility timeout) is shown once
    lines: list[str] = []
    empty_receives = 0
    try:
        while max_messages is None or len(lines) < max_messages:
            wanted = BATCH_SIZE if max_messages is None else min(BATCH_SIZE, max_messages - len(lines))
            messages = receive_batch(sqs, dlq_url, wanted)
            held.extend(messages)
            new = [message for message in messages if message["MessageId"] not in seen]
            if not new:
                empty_receives += 1
                if empty_receives >= EMPTY_RECEIVES_TO_STOP:
                    break
                continue
            empty_receives = 0
            for message in new:
                seen.add(message["MessageId"])
                lines.append(f"{message['MessageId']}  sent {_sent_at(message)}  {summarize(message['Body'])}")
    finally:
        for start in range(0, len(held), BATCH_SIZE):
            _release(sqs, dlq_url, held[start : start + BATCH_SIZE])
    return lines


def _queue_arn(sqs: Any, queue_url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def check_redrive_pair(sqs: Any, dlq_url: str, queue_url: str) -> str | None:
    """Why the pair is wrong (the source queue does not dead-letter into this DLQ), or None when it is right."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
    policy = attributes.get("RedrivePolicy")
    target = json.loads(policy).get("deadLetterTargetArn") if policy else None
    dlq_arn = _queue_arn(sqs, dlq_url)
    if target != dlq_arn:
        return f"{queue_url} does not send its dead letters to {dlq_arn} (its redrive target: {target or 'none'})"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.redrive_dlq",
        description=(
            "Move messages from the uploads dead-letter queue back to the uploads queue (after fixing what made "
            "them fail: the model API key, the provider's rate limit, an outage). Processing is idempotent per "
            "object version, so a message moved twice is harmless."
        ),
    )
    parser.add_argument(
        "--stack-name",
        help=f"read both queue URLs from this CloudFormation stack's outputs (default: {DEFAULT_STACK_NAME})",
    )
    parser.add_argument("--dlq-url", help="dead-letter queue URL (with --queue-url, instead of --stack-name)")
    parser.add_argument("--queue-url", help="uploads (source) queue URL (with --dlq-url, instead of --stack-name)")
    parser.add_argument(
        "--max-messages", type=int, metavar="N", help="move (or show) at most N messages (default: all)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only list what is in the dead-letter queue; move nothing"
    )
    args = parser.parse_args(argv)
    if (args.dlq_url is None) != (args.queue_url is None):
        parser.error("--dlq-url and --queue-url go together")
    if args.dlq_url and args.stack_name:
        parser.error("give either --stack-name or --dlq-url/--queue-url, not both")
    if args.max_messages is not None and args.max_messages < 1:
        parser.error("--max-messages must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sqs = boto3.client("sqs")
    try:
        if args.dlq_url:
            dlq_url, queue_url = args.dlq_url, args.queue_url
        else:
            dlq_url, queue_url = stack_outputs(
                boto3.client("cloudformation"),
                args.stack_name or DEFAULT_STACK_NAME,
                "UploadsDeadLetterQueueUrl",
                "UploadsQueueUrl",
            )
        if args.dry_run:
            lines = preview(sqs, dlq_url, args.max_messages)
            print(f"{len(lines)} message(s) in {dlq_url} (dry run: nothing moved)")
            for line in lines:
                print(f"  {line}")
            return 0
        problem = check_redrive_pair(sqs, dlq_url, queue_url)
        if problem:
            print(f"refusing to redrive: {problem}", file=sys.stderr)
            return 2
        report = redrive(sqs, dlq_url, queue_url, args.max_messages)
    except (ClientError, BotoCoreError, MissingStackOutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"from {dlq_url}\n  to {queue_url}")
    print(
        f"moved {report.moved} of {report.received} received message(s); {report.send_failed} failed to send, "
        f"{report.not_deleted} sent but not deleted from the DLQ"
    )
    for error in report.errors:
        print(f"  {error}", file=sys.stderr)
    if report.drained:
        print("the dead-letter queue is empty")
    elif report.ok:
        print(f"stopped after --max-messages {args.max_messages}; more may be waiting")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
