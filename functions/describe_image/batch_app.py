"""S3 Batch Operations entry point: each task (one object of the job's manifest) becomes a backfill item.

The job's report says per object what happened: ``queued`` (sent to the uploads queue, described there like an
upload), ``skipped: <reason>`` (nothing to do; reported as Succeeded, because a job fails once more than half its
tasks fail and an intentional skip is not a failure), TemporaryFailure (throttling, an AWS outage, any SQS error:
Batch Operations retries the task) or PermanentFailure (a malformed task or job argument, denied access).

Invocation schema 1.0 (the default) gives the bucket as ``s3BucketArn``; 2.0 gives ``s3Bucket`` and the job's
``userArguments``: ``force`` ("true": describe again, once per job, without the content cache) and ``profile`` (the
profile for every object of the job). The job id is the backfill run id. Keys are URL-decoded as AWS documents
them (a CSV manifest holds them URL-encoded); a key not found decoded is tried once as given.

Environment: RESULTS_TABLE, UPLOADS_QUEUE_URL, OBJECT_KEY_SUFFIXES (optional), PROFILES_FILE (optional).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import (
    S3BatchOperationEvent,
    S3BatchOperationResponse,
    S3BatchOperationResponseRecord,
)
from aws_lambda_powertools.utilities.data_classes.s3_batch_operation_event import S3BatchOperationTask
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_clients import bounded_aws_calls, bounded_client
from sightline.adapters.aws_errors import translate_aws_error
from sightline.adapters.dynamodb import from_item
from sightline.backfill import (
    ListedObject,
    backfill_event,
    listed_object,
    select_profile,
    skip_reason,
    unknown_profile_reason,
)
from sightline.errors import ConfigurationError, ObjectNotFoundError, SettingsError, TransientError
from sightline.events import s3_notification
from sightline.profiles import ProfileSet, load_profiles_file
from sightline.settings import RESULTS_TABLE, Settings, load_settings
from sightline.text import bounded

UPLOADS_QUEUE_URL = "UPLOADS_QUEUE_URL"
SCHEMA_VERSIONS = ("1.0", "2.0")
RESULT_STRING_MAX_BYTES = 1_000  # a line of the job's completion report
QUEUED = "queued"
MISSING = "skipped: the object no longer exists"

ResultCode = Literal["Succeeded", "TemporaryFailure", "PermanentFailure"]
logger = Logger()


@dataclass(frozen=True)
class BatchRuntime:
    """What every invocation of a warm instance shares: clients, settings and the profiles, read once."""

    s3: Any
    dynamodb: Any
    sqs: Any
    table: str
    queue_url: str
    settings: Settings
    profiles: ProfileSet


@lru_cache(maxsize=1)
def get_batch_runtime() -> BatchRuntime:
    """Read the environment and the profiles file once per cold start (a failure is not cached: it is retried)."""
    env = os.environ
    table = env.get(RESULTS_TABLE, "").strip()
    queue_url = env.get(UPLOADS_QUEUE_URL, "").strip()
    missing = [name for name, value in ((RESULTS_TABLE, table), (UPLOADS_QUEUE_URL, queue_url)) if not value]
    if missing:
        raise SettingsError(f"{' and '.join(missing)} required and empty")
    settings = load_settings(env, require_stack=False)
    # Seconds, not minutes, and never past the invocation: a slow AWS call becomes a TemporaryFailure that Batch
    # Operations retries.
    session = boto3.session.Session()
    return BatchRuntime(
        s3=bounded_client("s3", session),
        dynamodb=bounded_client("dynamodb", session),
        sqs=bounded_client("sqs", session),
        table=table,
        queue_url=queue_url,
        settings=settings,
        profiles=load_profiles_file(settings.profiles_file),
    )


class TaskFailure(Exception):
    """The task's result when it is not Succeeded: TemporaryFailure is retried by Batch Operations."""

    def __init__(self, code: ResultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class JobArguments:
    run: str
    force: bool
    profile: str | None


def job_arguments(event: S3BatchOperationEvent) -> JobArguments:
    """The run id (the job id) and the 2.0 user arguments; a malformed value fails every task permanently."""
    job = event.get("job")
    if not isinstance(job, dict) or not isinstance(job.get("id"), str) or not job["id"].strip():
        raise TaskFailure("PermanentFailure", "the event has no job.id")
    arguments = event.job.user_arguments
    if not isinstance(arguments, dict):
        raise TaskFailure("PermanentFailure", "job.userArguments is not a map")
    unknown = sorted(set(arguments) - {"force", "profile"})
    if unknown:
        raise TaskFailure("PermanentFailure", f"unknown job.userArguments {', '.join(map(repr, unknown))}")
    raw_force = str(arguments.get("force") or "false").strip().lower()
    if raw_force not in ("true", "false", "1", "0", "yes", "no"):
        raise TaskFailure("PermanentFailure", f"job.userArguments.force must be true or false, got {raw_force!r}")
    profile = str(arguments.get("profile") or "").strip() or None
    return JobArguments(run=job["id"].strip(), force=raw_force in ("true", "1", "yes"), profile=profile)


def _temporary_or_permanent(exc: Exception, action: str, *, always_temporary: bool = False) -> TaskFailure:
    error = translate_aws_error(exc, action)
    if always_temporary or (isinstance(error, TransientError) and not isinstance(error, ConfigurationError)):
        return TaskFailure("TemporaryFailure", error.message)
    return TaskFailure("PermanentFailure", error.message)


def _head(runtime: BatchRuntime, bucket: str, key: str, version_id: str | None) -> ListedObject | None:
    """The object version's facts; None when it (or that version) no longer exists."""
    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    try:
        head = runtime.s3.head_object(**request)
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if status == 405:  # the named version is a delete marker
            return None
        if isinstance(translate_aws_error(exc, "HeadObject", reading_object=True), ObjectNotFoundError):
            return None
        if status == 403:
            raise TaskFailure(
                "PermanentFailure",
                f"HeadObject s3://{bucket}/{key} denied (the function needs s3:GetObject, s3:GetObjectVersion and "
                "s3:ListBucket: without ListBucket S3 answers a missing key with 403)",
            ) from None
        raise _temporary_or_permanent(exc, f"HeadObject s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise _temporary_or_permanent(exc, f"HeadObject s3://{bucket}/{key}") from None
    return listed_object(
        bucket,
        key,
        size=head.get("ContentLength", 0),
        etag=head.get("ETag"),
        version_id=head.get("VersionId") or version_id,
        last_modified=head.get("LastModified") or datetime.now(UTC),
    )


def _record(runtime: BatchRuntime, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        response = runtime.dynamodb.get_item(
            TableName=runtime.table,
            Key={"bucket": {"S": bucket}, "key": {"S": key}},
            ConsistentRead=True,
            ProjectionExpression="version_token, #status, #object",
            ExpressionAttributeNames={"#status": "status", "#object": "object"},
        )
    except (ClientError, BotoCoreError) as exc:
        raise _temporary_or_permanent(exc, f"GetItem {runtime.table}") from None
    return from_item(response["Item"]) if "Item" in response else None


def _task_object(task: S3BatchOperationTask) -> tuple[str, list[str], str | None]:
    """Bucket, the key's candidates (decoded, then as given) and the version, or a PermanentFailure."""
    raw_key = task.get("s3Key")
    if not isinstance(raw_key, str) or not raw_key:
        raise TaskFailure("PermanentFailure", "the task has no s3Key")
    arn = task.s3_bucket_arn
    if arn is not None and (not isinstance(arn, str) or ":::" not in arn or not arn.split(":::")[-1]):
        raise TaskFailure("PermanentFailure", f"the task's s3BucketArn {arn!r} is not a bucket ARN")
    bucket = task.s3_bucket if arn else task.get("s3Bucket")
    if not isinstance(bucket, str) or not bucket:
        raise TaskFailure("PermanentFailure", "the task has neither s3Bucket nor s3BucketArn")
    version_id = task.s3_version_id
    if version_id is not None and not isinstance(version_id, str):
        raise TaskFailure("PermanentFailure", "the task's s3VersionId is not a string")
    decoded = unquote_plus(raw_key)
    return bucket, ([decoded, raw_key] if decoded != raw_key else [decoded]), version_id or None


def handle_task(runtime: BatchRuntime, task: S3BatchOperationTask, job: JobArguments) -> str:
    """One object → its result string (Succeeded), or a TaskFailure."""
    if job.profile and runtime.profiles.get(job.profile) is None:
        raise TaskFailure(
            "PermanentFailure", f"job.userArguments.profile: {unknown_profile_reason(job.profile, runtime.profiles)}"
        )
    bucket, keys, version_id = _task_object(task)
    obj = None
    for key in keys:
        obj = _head(runtime, bucket, key, version_id)
        if obj is not None:
            break
    if obj is None:
        return MISSING
    choice = select_profile(obj.key, runtime.profiles, runtime.settings, job.profile)
    if choice.skip is not None:
        return f"skipped: {choice.skip}"
    reason = skip_reason(obj, _record(runtime, obj.bucket, obj.key), force=job.force)
    if reason is not None:
        return f"skipped: {reason}"
    event = backfill_event(obj, run=job.run, force=job.force, profile=job.profile, now=datetime.now(UTC))
    try:
        runtime.sqs.send_message(
            QueueUrl=runtime.queue_url, MessageBody=s3_notification([event], runtime.sqs.meta.region_name or "")
        )
    except (ClientError, BotoCoreError) as exc:
        raise _temporary_or_permanent(exc, "SendMessage to the uploads queue", always_temporary=True) from None
    return QUEUED


def _result(task_id: str, code: ResultCode, text: str) -> S3BatchOperationResponseRecord:
    return S3BatchOperationResponseRecord(
        task_id=task_id, result_code=code, result_string=bounded(text, RESULT_STRING_MAX_BYTES)
    )


def _task_result(
    runtime: BatchRuntime, task: S3BatchOperationTask, job: JobArguments
) -> S3BatchOperationResponseRecord:
    task_id = str(task.get("taskId") or "")
    code: ResultCode = "Succeeded"
    try:
        text = handle_task(runtime, task, job)
    except TaskFailure as failure:
        code, text = failure.code, failure.message
    except TransientError as exc:  # an AWS call not attempted for lack of time (AwsDeadlineError): retried
        code, text = "TemporaryFailure", exc.message
    except Exception as exc:  # a bug must not lose the task's line in the report: retried, and logged
        logger.exception("task failed unexpectedly", extra={"task_id": task_id})
        code, text = "TemporaryFailure", f"{type(exc).__name__}: {exc}"
    logger.info("task done", extra={"task_id": task_id, "s3_key": task.get("s3Key"), "code": code, "result": text})
    return _result(task_id, code, text)


@logger.inject_lambda_context(clear_state=True)
@bounded_aws_calls
def lambda_handler(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
    batch = S3BatchOperationEvent(dict(event))
    schema = str(event.get("invocationSchemaVersion") or "")
    response = S3BatchOperationResponse(
        invocation_schema_version=schema or "1.0",
        invocation_id=str(event.get("invocationId") or ""),
        treat_missing_keys_as="PermanentFailure",
    )
    raw_tasks = event.get("tasks")
    tasks = [
        S3BatchOperationTask(t if isinstance(t, dict) else {})
        for t in (raw_tasks if isinstance(raw_tasks, list) else [])
    ]
    failure: TaskFailure | None = None
    runtime: BatchRuntime | None = None
    job = JobArguments(run="", force=False, profile=None)
    try:
        if schema not in SCHEMA_VERSIONS:
            raise TaskFailure("PermanentFailure", f"invocationSchemaVersion {schema!r} is not 1.0 or 2.0")
        job = job_arguments(batch)
        runtime = get_batch_runtime()
    except TaskFailure as exc:
        failure = exc
    except SettingsError as exc:
        # Our configuration, not the objects: every task fails permanently with the reason, and the job stops.
        logger.error("invalid configuration", extra={"error": str(exc)})
        failure = TaskFailure("PermanentFailure", f"configuration: {exc}")
    for task in tasks:
        if failure is not None or runtime is None:
            failure = failure or TaskFailure("PermanentFailure", "the function is not configured")
            response.add_result(_result(str(task.get("taskId") or ""), failure.code, failure.message))
        else:
            response.add_result(_task_result(runtime, task, job))
    if len(response.results) == 1:
        return response.asdict()
    # Batch Operations sends one task per invocation; more (or none) are answered in the same shape.
    return {
        "invocationSchemaVersion": response.invocation_schema_version,
        "treatMissingKeysAs": response.treat_missing_keys_as,
        "invocationId": response.invocation_id,
        "results": [result.asdict() for result in response.results],
    }
