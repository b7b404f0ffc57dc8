"""Lambda entry point: S3 events (via SQS, S3 notifications or EventBridge, or invoked directly) → describe each object
concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sightline.adapters.aws_clients import bounded_aws_calls
from sightline.composition import Runtime, get_runtime
from sightline.errors import ConfigurationError, SettingsError, SightlineError
from sightline.events import (
    ObjectEvent,
    PageRangeItem,
    UnrecognizedEventError,
    parse_object_events,
    parse_queue_message_body,
)
from sightline.pipeline import Outcome
from sightline.redaction import redact
from sightline.text import bounded

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# Stop starting model calls this long before the function's timeout, so no item is cut off mid-write: the record is
# stored and announced, or the claim released, in this margin. AWS calls (@bounded_aws_calls) go on until a second
# before the timeout, each attempt only where its worst case (connect + read timeout) still fits.
SAFETY_MARGIN_SECONDS = 10.0


def _deadline(context: LambdaContext) -> float:
    return time.monotonic() + context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_SECONDS


_OUTCOME_METRICS = {
    "succeeded": "ImagesDescribed",
    "partial": "DocumentsPartial",
    "failed": "ImagesFailed",
    "fanned_out": "DocumentsFannedOut",
    "range_done": "PageRangesDone",
    "deleted": "ObjectsDeleted",
    "skipped": "ObjectsSkipped",
    "stale": "StaleEvents",
    "duplicate": "DuplicateDeliveries",
    "deferred": "ItemsDeferred",
}
# Why items were deferred: each has an alarm (template.yaml) saying the cap was hit or the provider paused.
_DEFERRAL_METRICS = {"BudgetExhausted": "BudgetCapReached", "ProviderPaused": "ProviderPaused"}


# Failed records that an operator, not a new upload, fixes: counted with the configuration errors (alarmed).
_CONFIGURATION_FAILURES = {"RequestTooLarge"}


def _record_metrics(outcome: Outcome) -> None:
    metrics.add_metric(name=_OUTCOME_METRICS[outcome.status], unit=MetricUnit.Count, value=1)
    if outcome.status == "deferred" and outcome.reason in _DEFERRAL_METRICS:
        metrics.add_metric(name=_DEFERRAL_METRICS[outcome.reason], unit=MetricUnit.Count, value=1)
    if outcome.reason in _CONFIGURATION_FAILURES:
        metrics.add_metric(name="ConfigurationErrors", unit=MetricUnit.Count, value=1)
    if outcome.status == "succeeded" and (outcome.record or {}).get("cache_hit"):
        metrics.add_metric(name="ContentCacheHits", unit=MetricUnit.Count, value=1)
    usage = outcome.usage
    if outcome.status in ("succeeded", "partial", "failed") and usage.get("model_calls"):
        metrics.add_metric(name="PromptTokens", unit=MetricUnit.Count, value=usage["prompt_tokens"])
        metrics.add_metric(name="CompletionTokens", unit=MetricUnit.Count, value=usage["completion_tokens"])
        metrics.add_metric(
            name="ModelLatency", unit=MetricUnit.Milliseconds, value=(outcome.record or {})["model_latency_ms"]
        )


def _log_outcome(outcome: Outcome) -> None:
    fields: dict[str, Any] = {"bucket": outcome.event.bucket, "key": outcome.event.key, "status": outcome.status}
    if outcome.status == "failed":
        fields["error_type"] = outcome.reason
        fields["error_message"] = (outcome.record or {}).get("error_message")
        logger.warning("object failed permanently", extra=fields)
    elif outcome.status in ("succeeded", "partial"):
        fields["usage"] = outcome.usage
        fields["cache_hit"] = (outcome.record or {}).get("cache_hit")
        document = (outcome.record or {}).get("document")
        if document:
            fields["pages"] = document.get("pages")
            fields["pages_failed"] = document.get("pages_failed")
        logger.info("object described", extra=fields)
    elif outcome.status == "deferred":
        logger.warning("item deferred: no model call started", extra={**fields, "reason": outcome.reason})
    else:  # deleted, skipped, stale, duplicate, fanned_out, range_done
        logger.info(f"event {outcome.status}", extra={**fields, "reason": outcome.reason})


def _apply(runtime: Runtime, work: ObjectEvent | PageRangeItem, deadline: float) -> Outcome:
    if isinstance(work, PageRangeItem):
        return runtime.pipeline.process_range(work, deadline)
    return runtime.pipeline.process(work, deadline)


async def _process_events(
    runtime: Runtime, events: Sequence[ObjectEvent | PageRangeItem], deadline: float
) -> list[Outcome]:
    """All records at once on the worker pool; the first transient error is raised after all have finished."""
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(
        *(loop.run_in_executor(runtime.executor, _apply, runtime, event, deadline) for event in events),
        return_exceptions=True,
    )
    outcomes: list[Outcome] = []
    first_error: BaseException | None = None
    for work, result in zip(events, results, strict=True):
        event = work.event if isinstance(work, PageRangeItem) else work
        if isinstance(result, BaseException):
            error_type = result.error_type if isinstance(result, SightlineError) else type(result).__name__
            logger.warning(
                "object will be retried",
                extra={
                    "bucket": event.bucket,
                    "key": event.key,
                    "error_type": error_type,
                    "error": redact(str(result)),
                },
            )
            metrics.add_metric(name="TransientFailures", unit=MetricUnit.Count, value=1)
            if isinstance(result, ConfigurationError):
                # Our fault, not the image's: the ConfigurationErrors alarm pages someone.
                metrics.add_metric(name="ConfigurationErrors", unit=MetricUnit.Count, value=1)
            first_error = first_error or result
            continue
        _record_metrics(result)
        _log_outcome(result)
        outcomes.append(result)
    if first_error is not None:
        raise first_error
    return outcomes


# Enough of an unrecognized message's body to tell what sent it, never the whole (it may be large).
UNRECOGNIZED_BODY_PREVIEW_BYTES = 500


def _log_unrecognized(message_id: str, body: str, exc: UnrecognizedEventError) -> None:
    metrics.add_metric(name="UnrecognizedMessages", unit=MetricUnit.Count, value=1)
    logger.warning(
        "queue message is not an S3 event: it goes to the dead-letter queue",
        extra={
            "message_id": message_id,
            "reason": exc.message,
            "body_preview": redact(bounded(body or "", UNRECOGNIZED_BODY_PREVIEW_BYTES)),
        },
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@bounded_aws_calls  # an AWS call that would outlast the invocation fails its item (transient) instead
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        runtime = get_runtime()
    except SettingsError as exc:
        # Invalid settings or profiles file: the whole batch is retried (then dead-lettered), and alarmed.
        logger.error("invalid configuration", extra={"error": redact(str(exc))})
        metrics.add_metric(name="ConfigurationErrors", unit=MetricUnit.Count, value=1)
        raise
    deadline = _deadline(context)
    records = event.get("Records") or []

    if records and records[0].get("eventSource") == "aws:sqs":
        # A batch where every item failed is still a partial response: SQS redelivers exactly those items,
        # and the invocation is not counted as a function error that would hide the per-item reasons.
        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

        async def handle_message(record: SQSRecord) -> None:
            try:
                work = parse_queue_message_body(record.body)
            except UnrecognizedEventError as exc:
                # The batch processor logs nothing: say what arrived, then let it fail into the DLQ for a person.
                _log_unrecognized(record.message_id, record.body, exc)
                raise
            await _process_events(runtime, work, deadline)

        # Failed messages are reported as batchItemFailures; SQS redelivers only those.
        return dict(async_process_partial_response(event, handle_message, processor, context))

    # A plain S3 notification or EventBridge event (manual invoke, S3 → Lambda, an EventBridge rule → Lambda):
    # a transient failure fails the invocation.
    outcomes = asyncio.run(_process_events(runtime, parse_object_events(event), deadline))
    return {"processed": [{"key": o.event.key, "status": o.status} for o in outcomes]}
