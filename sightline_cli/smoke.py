"""`sightline smoke`: the operator's smoke test after a deploy, one upload through the whole deployed path.

It uploads a small image made in memory (a few words of clear text and a unique run id drawn on it, so a model has
something to read) to the stack's uploads bucket, waits for that object version's record in the results table, and
reports what came back: bucket → S3 notification or EventBridge rule → queue → function → model → record →
notification. Then it deletes the test object (unless ``--keep``).

    sightline smoke [--stack-name NAME] [--key KEY] [--timeout SECONDS] [--keep] [--json]

Exit status: 0 the record succeeded and was notified; 1 the record failed, was deferred, or the delivery stopped on
a configuration error (the reason and what to do are printed); 2 no terminal record (or no notification) within
``--timeout`` (what to check is printed); 3 the test could not run (no such stack, the upload refused, a key the
stack would not process or that holds an object already, the results table unreadable).

The default key, ``<ObjectKeyPrefix>sightline-smoke/<UTC time>-<run id>.png``, passes the stack's own filters: the
prefix of its S3 notification or EventBridge rule (the ObjectKeyPrefix parameter, read from DescribeStacks since the
stack has no output for it) and OBJECT_KEY_SUFFIXES (the ObjectKeySuffixes parameter; when it has no ``.png``, the
image is written as the first of JPEG or WebP it accepts). Under no ObjectKeyPrefix the key matches none of the
bundled profiles, so it gets the ``default`` profile (under ``inbox/`` it would be a ``documents`` item); a profiles
file without a default skips it, so pass a ``--key`` that a profile matches.

Cleanup deletes the exact version uploaded (DeleteObject with its VersionId): in the versioned uploads bucket that is
a permanent delete, which leaves nothing behind. A plain DeleteObject would leave a delete marker and keep the image
as a noncurrent version until UploadsNoncurrentVersionDays expire it (never, with 0). S3 reports the permanent delete
(ObjectRemoved:Delete, or EventBridge "Object Deleted", deletion-type "Permanently Deleted") to the pipeline like
any removal: its sequencer is newer than the creation's, so the key's record becomes ``deleted`` (the description
fields dropped) and a ``deleted`` notification is published. The record itself stays, as every deleted key's does.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from scripts.redrive_dlq import DEFAULT_STACK_NAME

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "EXIT_FAILED",
    "EXIT_NOT_RUN",
    "EXIT_OK",
    "EXIT_TIMED_OUT",
    "SMOKE_FOLDER",
    "SetupError",
    "SmokeReport",
    "StackTarget",
    "Verdict",
    "add_arguments",
    "choose_suffix",
    "hints_for",
    "image_format_for_key",
    "judge",
    "key_refusal",
    "make_key",
    "make_test_image",
    "new_run_id",
    "render_text",
    "run",
    "wait_for_record",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the record failed or was deferred, or the delivery stopped on a configuration error
EXIT_TIMED_OUT = 2
EXIT_NOT_RUN = 3  # no such stack, the upload refused, a key the stack would not process

SMOKE_FOLDER = "sightline-smoke/"
# Long enough for the queue's batching window (5 s), a cold start, and a slow model answered on its third attempt
# (MODEL_TIMEOUT_SECONDS 30 × MODEL_MAX_ATTEMPTS 3); a transient failure's retry waits for the queue's visibility
# timeout (6 × FunctionTimeout), far longer, so waiting longer by default would rarely change the answer.
DEFAULT_TIMEOUT_SECONDS = 180.0
# Polling backs off: an answer usually comes within seconds, and a long wait should not hammer the table.
POLL_FIRST_SECONDS = 1.0
POLL_LONGEST_SECONDS = 8.0
EXCERPT_CHARS = 160
# The image formats the test image may be written in, by key suffix (all decoded by the function, all in the
# EventBridge rule's suffix list), in the order they are preferred: PNG keeps the text's edges sharp.
WRITERS: dict[str, tuple[str, str]] = {
    ".png": ("PNG", "image/png"),
    ".jpg": ("JPEG", "image/jpeg"),
    ".jpeg": ("JPEG", "image/jpeg"),
    ".webp": ("WEBP", "image/webp"),
}
IMAGE_SIZE = (720, 260)
TITLE = "Sightline smoke test"
# template.yaml DescribeImageFunctionLogGroup: its LogGroupName, used when the function's configuration is unreadable.
LOG_GROUP_PATTERN = "/aws/lambda/{stack}-describe-image"
CONFIGURATION = "Configuration"

State = Literal["waiting", "succeeded", "partial", "failed", "deferred", "deleted", "blocked"]


class SetupError(Exception):
    """The smoke test cannot reach a verdict: nothing was uploaded (no stack, a refused key or upload), or the record
    could not be read (the test object is then deleted all the same, and the message says so)."""


# --- Pure parts: the key, the image, judging a record, hints, the report.


def choose_suffix(accepted: Sequence[str]) -> str:
    """The test image's key suffix: ``.png`` unless the stack's OBJECT_KEY_SUFFIXES leaves it out."""
    if not accepted:
        return ".png"
    wanted = {suffix.strip().lower() for suffix in accepted}
    for suffix in WRITERS:
        if suffix in wanted:
            return suffix
    raise SetupError(
        f"the stack processes only keys ending in {', '.join(accepted)} (ObjectKeySuffixes), none of the formats the"
        f" smoke test writes ({', '.join(WRITERS)}): pass --key with one of them if the stack should take it"
    )


def new_run_id() -> str:
    """Eight hex digits: drawn on the image (its bytes are unique, so no content-cache hit) and part of the key."""
    return uuid.uuid4().hex[:8]


def make_key(prefix: str, suffix: str, now: datetime, run_id: str) -> str:
    """``<prefix>sightline-smoke/<UTC time>-<run id><suffix>``: sorted by time, unique per run."""
    return f"{prefix}{SMOKE_FOLDER}{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{run_id}{suffix}"


def key_refusal(key: str, prefix: str, suffixes: Sequence[str]) -> str | None:
    """Why the stack would never process ``key`` (outside its prefix or suffixes), or None."""
    if prefix and not key.startswith(prefix):
        return f"the key does not start with the stack's ObjectKeyPrefix {prefix!r}: no event would reach the queue"
    if suffixes and not key.lower().endswith(tuple(suffix.lower() for suffix in suffixes)):
        return f"the key does not end with one of the stack's ObjectKeySuffixes ({', '.join(suffixes)}): skipped"
    return None


def image_format_for_key(key: str) -> tuple[str, str]:
    """(Pillow format, content type) for the key's suffix; PNG for any other key (the function sniffs the bytes)."""
    for suffix, writer in WRITERS.items():
        if key.lower().endswith(suffix):
            return writer
    return WRITERS[".png"]


def make_test_image(run_id: str, now: datetime, image_format: str = "PNG") -> bytes:
    """A white card with three lines of large black text: the title, the run id and the UTC time."""
    from PIL import Image, ImageDraw, ImageFont

    card = Image.new("RGB", IMAGE_SIZE, "white")
    draw = ImageDraw.Draw(card)
    lines = ((TITLE, 52), (f"run {run_id}", 44), (f"{now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC", 36))
    y = 30
    for text, size in lines:
        # Pillow's bundled scalable font: the same pixels on every machine, no font file to find.
        draw.text((40, y), text, fill=(15, 15, 15), font=ImageFont.load_default(size=size))
        y += int(size * 1.6)
    draw.rectangle((8, 8, IMAGE_SIZE[0] - 9, IMAGE_SIZE[1] - 9), outline=(60, 90, 160), width=4)
    out = io.BytesIO()
    card.save(out, format=image_format, **({"quality": 92} if image_format in ("JPEG", "WEBP") else {}))
    return out.getvalue()


def _is_this_version(record: dict[str, Any], versions: Sequence[str]) -> bool:
    """The record is about the object uploaded: the claim writes version_token (the event's versionId, or its ETag
    when the event has none) before anything else, and the stored record names the version read. The ETag counts
    too: the run id makes the bytes, and so the ETag, unique to this run."""
    obj = record.get("object") if isinstance(record.get("object"), dict) else {}
    found = {str(record.get("version_token") or ""), str((obj or {}).get("version_id") or "")} - {""}
    return bool(found & {version for version in versions if version})


@dataclass(frozen=True)
class Verdict:
    """What the key's record says of the uploaded version right now."""

    state: State
    detail: str  # one phrase: where the item is, or why it ended
    record: dict[str, Any] | None = None  # the record, when it is this version's

    @property
    def terminal(self) -> bool:
        return self.state != "waiting"

    @property
    def notified(self) -> bool:
        return bool(self.record and self.record.get("notified"))

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: an end state, notified when it is one that is announced."""
        return self.terminal and (self.notified or self.state in ("deferred", "deleted", "blocked"))

    @property
    def exit_code(self) -> int:
        if self.state == "succeeded" and self.notified:
            return EXIT_OK
        if self.state in ("waiting", "succeeded"):  # succeeded, not announced: the last hop did not happen
            return EXIT_TIMED_OUT
        return EXIT_FAILED


def _error(record: dict[str, Any], prefix: str = "") -> str:
    error_type = record.get(f"{prefix}error_type") or "?"
    message = " ".join(str(record.get(f"{prefix}error_message") or "").split())
    return f"{error_type}: {message}" if message else str(error_type)


def judge(record: dict[str, Any] | None, versions: Sequence[str], now_ms: int) -> Verdict:
    """The verdict on the object uploaded (its version id and ETag: ``versions``) from its key's record (None: no
    record yet)."""
    if record is None:
        return Verdict("waiting", "no record yet")
    if not _is_this_version(record, versions):
        return Verdict("waiting", f"the key's record is about another version ({record.get('version_token', '?')})")
    status = record.get("status")
    if status in ("succeeded", "partial", "failed"):
        if status == "succeeded":
            return Verdict("succeeded", "succeeded", record)
        return Verdict(status, f"{status}: {_error(record)}", record)
    if status == "deferred":
        return Verdict("deferred", f"deferred: {_error(record)}", record)
    if status == "deleted":
        return Verdict("deleted", "deleted: the object was removed before its description was recorded", record)
    if status == "processing":
        claimed_until = int(record.get("claim_until") or 0)
        if claimed_until > now_ms:
            return Verdict("waiting", "processing: a delivery is describing it now", record)
        if record.get("last_error_type"):
            if record.get("last_error_type") == CONFIGURATION:
                # Retried only after the queue's visibility timeout, and failing the same way until someone fixes
                # it: no point waiting.
                return Verdict(
                    "blocked", f"processing, stopped by a configuration error: {_error(record, 'last_')}", record
                )
            return Verdict(
                "waiting",
                f"processing; the last delivery failed with {_error(record, 'last_')} (SQS delivers it again after"
                " the queue's visibility timeout, then moves it to the dead-letter queue)",
                record,
            )
        return Verdict("waiting", "processing: claimed, waiting for a delivery", record)
    return Verdict("waiting", f"status {status!r}", record)


def _with_stack(command: str, stack_name: str) -> str:
    return command if stack_name == DEFAULT_STACK_NAME else f"{command} --stack-name {stack_name}"


def hints_for(
    error_type: str | None, *, stack_name: str = DEFAULT_STACK_NAME, secret_arn: str | None = None
) -> list[str]:
    """What to do about an error type (README "Errors: what is retried and what is not")."""
    if not error_type:
        return []
    secret = secret_arn or "<ModelApiKeySecretArn output>"
    redrive = _with_stack("sightline redrive", stack_name)
    if error_type == CONFIGURATION:
        return [
            "a configuration error: the model answered 401/403 (no or a wrong API key), 402 (out of balance) or 404"
            " (ModelBaseUrl or ModelId wrong), or AWS refused the function an action (the message says which)",
            f"store the model API key: aws secretsmanager put-secret-value --secret-id {secret} --secret-string '<key>'",
            f"then move what failed meanwhile back from the dead-letter queue: {redrive}",
        ]
    if error_type == "BudgetExhausted":
        return [
            f"the day's spend cap is reached: {_with_stack('sightline budget status', stack_name)}",
            "raise BudgetDailyLimit (or the profile's cap), or wait for midnight UTC; parked items go back with"
            f" {_with_stack('sightline budget resume', stack_name)}",
        ]
    if error_type == "ProviderPaused":
        return [
            "the provider breaker is open after a burst of 429/5xx answers:"
            f" {_with_stack('sightline budget status', stack_name)}; parked items resume when it closes",
        ]
    if error_type in ("ModelUnavailable", "InvalidProviderResponse"):
        return [
            "the provider failed (429, 5xx, a timeout, or a body that is not a completion): check ModelBaseUrl and"
            f" the provider's status; SQS retries it, then the dead-letter queue ({redrive} --dry-run)",
        ]
    if error_type in (
        "InvalidModelOutput",
        "TruncatedModelOutput",
        "RepetitiveModelOutput",
        "EmptyModelAnswer",
        "ModelRejectedImage",
        "ModelRefused",
    ):
        return [
            "the model answered, but not with a usable description: check that ModelId is a vision model that"
            " takes images, and ModelOutputMode (the error message quotes the model)",
        ]
    if error_type == "RequestTooLarge":
        return ["a gateway refused the request's size: lower ImageDetail or raise the gateway's limit"]
    if error_type == "ObjectNotFound":
        return ["the function could not read the test object: it was deleted early, or the function lacks s3:GetObject"]
    return [f"see the function's log for {error_type}"]


@dataclass
class SmokeReport:
    """One smoke run: what was uploaded, what the record said, what to check, what was cleaned up."""

    stack: str
    bucket: str
    key: str
    version_id: str
    run_id: str
    size: int
    timeout_seconds: float
    verdict: Verdict
    seen_after_seconds: float
    record_after_seconds: float | None = None  # processed_at − the upload's completion (two clocks: approximate)
    cost: float | None = None
    currency: str | None = None
    hints: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # what to look at, by name (timed out, failed)
    cleanup: str = ""

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def result(self) -> str:
        if self.exit_code == EXIT_TIMED_OUT:
            return "timed_out"
        return self.verdict.state

    @property
    def run_id_read(self) -> bool | None:
        record = self.verdict.record or {}
        if self.verdict.state not in ("succeeded", "partial"):
            return None
        return self.run_id.lower() in str(record.get("text", "")).lower()

    def to_dict(self) -> dict[str, Any]:
        record = self.verdict.record or {}
        return {
            "result": self.result,
            "exit_code": self.exit_code,
            "stack": self.stack,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "run_id": self.run_id,
            "bytes": self.size,
            "status": record.get("status"),
            "state": self.verdict.detail,
            "record_after_seconds": _rounded(self.record_after_seconds),
            "seen_after_seconds": _rounded(self.seen_after_seconds),
            "timeout_seconds": self.timeout_seconds,
            "profile": record.get("profile"),
            "task": record.get("task"),
            "language": record.get("language"),
            "model_id": record.get("model_id"),
            "cache_hit": record.get("cache_hit"),
            "alt_text": record.get("alt_text"),
            "description": record.get("description"),
            "text": record.get("text"),
            "run_id_read": self.run_id_read,
            "image": record.get("image"),
            "usage": record.get("usage"),
            "model_latency_ms": record.get("model_latency_ms"),
            "cost": self.cost,
            "currency": self.currency,
            "notified": record.get("notified") if record else None,
            "error_type": record.get("error_type") or record.get("last_error_type"),
            "error_message": record.get("error_message") or record.get("last_error_message"),
            "hints": self.hints,
            "checks": self.checks,
            "cleanup": self.cleanup,
        }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def _excerpt(text: Any, width: int = EXCERPT_CHARS) -> str:
    flat = " | ".join(" ".join(line.split()) for line in str(text or "").splitlines() if line.strip())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _usage_line(report: SmokeReport, record: dict[str, Any]) -> str | None:
    if "usage" not in record:  # not stored yet (processing, deferred): what the attempts paid is not final
        return None
    usage = record["usage"] or {}
    if record.get("cache_hit"):
        return "none: the answer came from the content cache"
    if not usage.get("model_calls"):
        return "no billed model call"
    parts = [
        f"{usage['model_calls']} model call(s), {usage.get('prompt_tokens', 0):,} prompt +"
        f" {usage.get('completion_tokens', 0):,} completion tokens"
    ]
    if not usage.get("usage_reported", True):
        parts.append("(the provider did not report all of it)")
    if report.cost is not None:
        parts.append(f"≈ {report.cost:.6f} {report.currency} (pricing.toml)")
    else:
        parts.append(f"(no price for {record.get('model_id')} in pricing.toml)")
    if record.get("model_latency_ms"):
        parts.append(f"{int(record['model_latency_ms']):,} ms at the model")
    return ", ".join(parts)


def render_text(report: SmokeReport) -> str:
    verdict, record = report.verdict, report.verdict.record or {}
    rows: list[tuple[str, str]] = [
        ("uploaded", f"s3://{report.bucket}/{report.key} (version {report.version_id}, {report.size:,} bytes)"),
    ]
    if verdict.terminal:
        seconds = report.record_after_seconds
        after = f"{seconds:.1f} s after the upload, " if seconds is not None else ""
        rows.append(("record", f"{verdict.detail} ({after}seen after {report.seen_after_seconds:.1f} s)"))
    else:
        rows.append(("record", f"{verdict.detail} (after {report.seen_after_seconds:.1f} s)"))
    if record.get("profile"):
        model = f", model {record['model_id']}" if record.get("model_id") else ""
        cached = ", from the content cache" if record.get("cache_hit") else ""
        rows.append(("profile", f"{record['profile']} ({record.get('task')}, {record.get('language')}){model}{cached}"))
    if verdict.state in ("succeeded", "partial"):
        rows.append(("alt text", f'"{record.get("alt_text", "")}"'))
        rows.append(("description", _excerpt(record.get("description")) or "(none)"))
        read = " (the run id was read back)" if report.run_id_read else " (the run id was not read back)"
        rows.append(("text", (_excerpt(record.get("text")) or "(none)") + read))
    usage = _usage_line(report, record)
    if usage:
        rows.append(("usage", usage))
    if verdict.state in ("succeeded", "partial", "failed"):
        rows.append(
            ("notified", "yes (published to the results topic)" if verdict.notified else "NO (notified is false)")
        )
    rows.extend(report.checks.items())
    rows.append(("cleanup", report.cleanup))
    width = max(len(name) for name, _ in rows)
    lines = [f"Sightline smoke test of stack {report.stack} (run {report.run_id})"]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    lines.append(_headline(report))
    lines += [f"hint: {hint}" for hint in report.hints]
    return "\n".join(lines)


def _headline(report: SmokeReport) -> str:
    verdict, record = report.verdict, report.verdict.record or {}
    if report.exit_code == EXIT_OK:
        return "OK: bucket → queue → function → model → record → notification all work."
    if report.exit_code == EXIT_TIMED_OUT:
        if verdict.terminal:
            return f"TIMED OUT after {report.timeout_seconds:g} s: the record is {verdict.state}, but not notified."
        return f"TIMED OUT after {report.timeout_seconds:g} s without a terminal record ({verdict.detail})."
    error_type = record.get("error_type") or record.get("last_error_type")
    why = {
        "failed": f"the record failed ({error_type})",
        "partial": f"the record is partial: some pages failed ({error_type})",
        "deferred": f"the item was deferred ({error_type}): no model call was made",
        "blocked": f"the delivery stopped on a configuration error ({error_type}); SQS retries it, then the DLQ",
        "deleted": "the test object was deleted before it was described",
    }
    return f"FAILED: {why.get(verdict.state, verdict.detail)}."


# --- Waiting: consistent reads of the key's record, backing off.


def wait_for_record(
    read: Callable[[], dict[str, Any] | None],
    versions: Sequence[str],
    timeout_seconds: float,
    *,
    on_change: Callable[[Verdict], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> tuple[Verdict, float]:
    """Read the record until it is settled or ``timeout_seconds`` have passed: (the last verdict, seconds waited).

    The reads come 1 s apart, doubling to 8 s, and 1 s again after each change (the notification follows the
    record within moments); the last read is made at the deadline.
    """
    started = clock()
    deadline = started + timeout_seconds
    interval = POLL_FIRST_SECONDS
    last_detail = None
    while True:
        verdict = judge(read(), versions, wall_ms())
        if verdict.detail != last_detail:
            last_detail, interval = verdict.detail, POLL_FIRST_SECONDS
            if on_change:
                on_change(verdict)
        if verdict.settled:
            return verdict, clock() - started
        remaining = deadline - clock()
        if remaining <= 0:
            return verdict, clock() - started
        sleep(min(interval, remaining))
        interval = min(interval * 2, POLL_LONGEST_SECONDS)


# --- The stack, and the AWS side.


@dataclass(frozen=True)
class StackTarget:
    """What the smoke test needs of a deployed stack: its outputs and the parameters that filter keys."""

    stack_name: str
    bucket: str
    table: str
    queue_url: str | None = None
    dlq_url: str | None = None
    function_name: str | None = None
    secret_arn: str | None = None
    key_prefix: str = ""
    key_suffixes: tuple[str, ...] = ()
    intake_route: str = "S3Notifications"

    @classmethod
    def from_stack(cls, stack: dict[str, Any]) -> StackTarget:
        """From a DescribeStacks ``Stacks[0]``. Raises SetupError when an output every Sightline stack has is missing."""
        outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
        parameters = {item["ParameterKey"]: item.get("ParameterValue", "") for item in stack.get("Parameters", [])}
        name = str(stack.get("StackName", ""))
        missing = [output for output in ("UploadsBucketName", "ResultsTableName") if output not in outputs]
        if missing:
            raise SetupError(f"stack {name} has no output {', '.join(missing)} (not a Sightline stack?)")
        suffixes = tuple(s.strip().lower() for s in parameters.get("ObjectKeySuffixes", "").split(",") if s.strip())
        return cls(
            stack_name=name,
            bucket=outputs["UploadsBucketName"],
            table=outputs["ResultsTableName"],
            queue_url=outputs.get("UploadsQueueUrl"),
            dlq_url=outputs.get("UploadsDeadLetterQueueUrl"),
            function_name=outputs.get("DescribeImageFunctionName"),
            secret_arn=outputs.get("ModelApiKeySecretArn"),
            key_prefix=parameters.get("ObjectKeyPrefix", ""),
            key_suffixes=suffixes,
            intake_route=parameters.get("IntakeRoute", "S3Notifications") or "S3Notifications",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Upload a small test image to the stack's uploads bucket, wait for its record in the results table and its"
        " notification, print what came back, and delete the test object."
    )
    parser.epilog = (
        f"exit status: {EXIT_OK} succeeded and notified; {EXIT_FAILED} the record failed, was deferred, or the delivery"
        f" stopped on a configuration error; {EXIT_TIMED_OUT} no terminal record (or no notification) within"
        f" --timeout; {EXIT_NOT_RUN} the test could not run (no such stack, upload refused, a key the stack would not"
        " process or that exists)"
    )
    parser.add_argument(
        "--stack-name", default=DEFAULT_STACK_NAME, help=f"the deployed stack (default: {DEFAULT_STACK_NAME})"
    )
    parser.add_argument(
        "--key",
        help=f"upload the test image under this key (default: <ObjectKeyPrefix>{SMOKE_FOLDER}<UTC time>-<run id>.png)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"wait at most this long for the record and its notification (default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument("--keep", action="store_true", help="leave the test object in the bucket (default: delete it)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the report")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _read_record(dynamodb: Any, table: str, bucket: str, key: str) -> dict[str, Any] | None:
    from sightline.adapters.dynamodb import from_item, to_item

    # Consistent: the record the function has just written, not a replica's older view.
    item = dynamodb.get_item(TableName=table, Key=to_item({"bucket": bucket, "key": key}), ConsistentRead=True)
    return from_item(item["Item"]) if "Item" in item else None


def _queue_counts(sqs: Any, url: str) -> tuple[int, int, int]:
    """(visible, in flight, visibility timeout in seconds) of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "VisibilityTimeout"],
    )["Attributes"]
    return (
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        int(attributes.get("VisibilityTimeout", 0)),
    )


def _log_group(session: Any, target: StackTarget) -> str:
    """The function's log group from its configuration, else the name template.yaml gives it."""
    from botocore.exceptions import BotoCoreError, ClientError

    if target.function_name:
        try:
            configuration = session.client("lambda").get_function_configuration(FunctionName=target.function_name)
            group = (configuration.get("LoggingConfig") or {}).get("LogGroup")
            if group:
                return str(group)
        except (ClientError, BotoCoreError):
            pass
    return LOG_GROUP_PATTERN.format(stack=target.stack_name)


def _checks(session: Any, target: StackTarget, verdict: Verdict) -> dict[str, str]:
    """Where to look when no good record came: the queues, the dead-letter queue, the function's log."""
    from botocore.exceptions import BotoCoreError, ClientError

    checks: dict[str, str] = {}
    sqs = session.client("sqs")
    dead = None
    if target.dlq_url:
        try:
            dead, _, _ = _queue_counts(sqs, target.dlq_url)
            redrive = _with_stack("sightline redrive", target.stack_name)
            checks["dead letters"] = f"{dead} message(s) in the dead-letter queue ({redrive} --dry-run lists them)"
        except (ClientError, BotoCoreError) as exc:
            checks["dead letters"] = f"cannot read the dead-letter queue: {exc}"
    if target.queue_url and not verdict.terminal:
        try:
            waiting, in_flight, visibility = _queue_counts(sqs, target.queue_url)
            checks["uploads queue"] = _queue_reading(waiting, in_flight, visibility, dead, verdict, target)
        except (ClientError, BotoCoreError) as exc:
            checks["uploads queue"] = f"cannot read the uploads queue: {exc}"
    checks["function log"] = _log_group(session, target)
    return checks


def _queue_reading(
    waiting: int, in_flight: int, visibility: int, dead: int | None, verdict: Verdict, target: StackTarget
) -> str:
    counts = f"{waiting} waiting, {in_flight} in flight"
    if in_flight:
        return f"{counts}: a delivery is running, or failed and waits out the visibility timeout ({visibility} s)"
    if waiting:
        function = target.function_name or "the describe function"
        return (
            f"{counts}: nothing is consuming the queue; is {function}'s SQS event source mapping enabled"
            " (aws lambda list-event-source-mappings --function-name …)?"
        )
    if verdict.record is None and not dead:
        route = (
            "the EventBridge rule (IntakeRoute=EventBridge; the bucket's EventBridge setting)"
            if target.intake_route == "EventBridge"
            else "the bucket's event notifications (IntakeRoute=S3Notifications)"
        )
        return (
            f"{counts}: either the upload's event never reached the queue (check {route}) or the function skipped the"
            " key (OBJECT_KEY_SUFFIXES, or no profile matches it and the profiles file has no default): its log says"
        )
    return counts


def _exists(s3: Any, bucket: str, key: str) -> bool:
    """Whether the key has a current object; an answer other than found or 404 (no s3:ListBucket: 403) is a no."""
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def _delete_version(s3: Any, bucket: str, key: str, version_id: str | None) -> str:
    """Delete exactly what was uploaded; a version-specific delete leaves no delete marker and no old version."""
    from botocore.exceptions import BotoCoreError, ClientError

    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    try:
        s3.delete_object(**request)
    except (ClientError, BotoCoreError) as exc:
        how = f" --version-id {version_id}" if version_id else ""
        return f"NOT deleted ({exc}); delete it with: aws s3api delete-object --bucket {bucket} --key {key}{how}"
    if version_id:
        return (
            f"deleted version {version_id} (a permanent delete: no delete marker, nothing left in the bucket);"
            " the key's record becomes 'deleted' and a 'deleted' notification follows"
        )
    return "deleted (unversioned bucket); the key's record becomes 'deleted' and a 'deleted' notification follows"


def _kept(bucket: str, key: str, version_id: str | None) -> str:
    how = f" --version-id {version_id}" if version_id else ""
    return f"kept (--keep); delete it with: aws s3api delete-object --bucket {bucket} --key {key}{how}"


def _cost(record: dict[str, Any]) -> tuple[float | None, str | None]:
    from sightline.errors import SettingsError
    from sightline.pricing import load_prices

    usage = record.get("usage") or {}
    if not usage.get("model_calls"):
        return None, None
    try:
        prices = load_prices()
    except SettingsError:
        return None, None
    price = prices.for_model(str(record.get("model_id", "")))
    if price is None:
        return None, None
    return price.cost(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))), prices.currency


def _seconds_after(processed_at: Any, uploaded: datetime) -> float | None:
    if not isinstance(processed_at, str):
        return None
    try:
        written = datetime.fromisoformat(processed_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (written - uploaded).total_seconds())


def smoke(
    session: Any,
    target: StackTarget,
    *,
    key: str | None,
    timeout_seconds: float,
    keep: bool,
    progress: Callable[[str], None],
) -> SmokeReport:
    """Upload, wait, report, clean up. Raises SetupError (nothing uploaded) and botocore errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    now = datetime.now(UTC)
    run_id = new_run_id()
    s3 = session.client("s3")
    if key is None:
        key = make_key(target.key_prefix, choose_suffix(target.key_suffixes), now, run_id)
    elif _exists(s3, target.bucket, key):
        # Overwriting would make the test image the key's current version, and deleting it afterwards marks the
        # key's record deleted although the older version is current again.
        raise SetupError(
            f"s3://{target.bucket}/{key} exists: the smoke test never overwrites an object; pick a new key"
        )
    refusal = key_refusal(key, target.key_prefix, target.key_suffixes)
    if refusal:
        raise SetupError(f"{key}: {refusal}")
    image_format, content_type = image_format_for_key(key)
    body = make_test_image(run_id, now, image_format)
    try:
        put = s3.put_object(Bucket=target.bucket, Key=key, Body=body, ContentType=content_type)
    except (ClientError, BotoCoreError) as exc:
        raise SetupError(f"the upload to s3://{target.bucket}/{key} was refused: {exc}") from exc
    uploaded = datetime.now(UTC)
    version_id = put.get("VersionId") or None
    etag = str(put.get("ETag", "")).strip('"')
    version = version_id or etag
    progress(f"uploaded s3://{target.bucket}/{key} (version {version}); waiting up to {timeout_seconds:g} s")
    dynamodb = session.client("dynamodb")
    try:
        verdict, waited = wait_for_record(
            lambda: _read_record(dynamodb, target.table, target.bucket, key),
            [version, etag],
            timeout_seconds,
            on_change=lambda verdict: progress(f"  {verdict.detail}"),
        )
    except BaseException as exc:
        # Interrupted, or the table unreadable: the test object goes all the same, and the reason says so.
        cleanup = _kept(target.bucket, key, version_id) if keep else _delete_version(s3, target.bucket, key, version_id)
        if isinstance(exc, ClientError | BotoCoreError):
            raise SetupError(f"cannot read the record in {target.table}: {exc}; the test object: {cleanup}") from exc
        raise
    record = verdict.record or {}
    report = SmokeReport(
        stack=target.stack_name,
        bucket=target.bucket,
        key=key,
        version_id=version,
        run_id=run_id,
        size=len(body),
        timeout_seconds=timeout_seconds,
        verdict=verdict,
        seen_after_seconds=waited,
        record_after_seconds=_seconds_after(record.get("processed_at"), uploaded) if verdict.terminal else None,
    )
    report.cost, report.currency = _cost(record)
    if report.exit_code != EXIT_OK:
        error_type = record.get("error_type") or record.get("last_error_type")
        report.hints = hints_for(error_type, stack_name=target.stack_name, secret_arn=target.secret_arn)
        if verdict.state in ("succeeded", "partial", "failed") and not verdict.notified:
            report.hints.append(
                "the record is stored but its notification was not published: the function's log has the SNS error"
                " (a deleted results topic, a missing sns:Publish); the retry publishes it"
            )
        report.checks = _checks(session, target, verdict)
    report.cleanup = (
        _kept(target.bucket, key, version_id) if keep else _delete_version(s3, target.bucket, key, version_id)
    )
    return report


def _describe_stack(session: Any, stack_name: str) -> StackTarget:
    from botocore.exceptions import ClientError

    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise SetupError(f"cannot read stack {stack_name}: {exc}") from exc
    return StackTarget.from_stack(stacks[0])


def run(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    session = boto3.session.Session()
    try:
        target = _describe_stack(session, args.stack_name)
        report = smoke(session, target, key=args.key, timeout_seconds=args.timeout, keep=args.keep, progress=progress)
    except (SetupError, ClientError, BotoCoreError) as exc:
        if args.json:
            print(json.dumps({"result": "not_run", "exit_code": EXIT_NOT_RUN, "error": str(exc)}, indent=2))
        print(f"sightline smoke: {exc}", file=sys.stderr)
        return EXIT_NOT_RUN
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2, default=str))
    else:
        print(render_text(report))
    return report.exit_code
