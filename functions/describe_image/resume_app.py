"""Scheduled entry point (every minute): send parked items back to the uploads queue once their reason is gone.

Items are parked (status ``deferred``) when the day's budget is reached or the provider's shared breaker is
open. A budget deferral is due after the next UTC midnight and goes only while the stack's budget has room; a
provider deferral is due at the end of the cool-down and goes only while the breaker is closed.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sightline.adapters.aws_clients import bounded_aws_calls
from sightline.adapters.dynamodb import DynamoDBResultStore
from sightline.adapters.work_queue import SqsWorkQueue
from sightline.composition import aws_client, build_spend_guard
from sightline.errors import SettingsError
from sightline.resume import due, resume_deferred
from sightline.settings import WORK_QUEUE_URL, Settings, load_settings
from sightline.spend import SpendGuard

logger = Logger()
metrics = Metrics()

# Parked items sent back per run (a minute): a day's backlog drains over a few runs, the queue absorbs the rest.
RESUME_PER_RUN = 2_000


@lru_cache(maxsize=1)
def _runtime() -> tuple[Settings, DynamoDBResultStore, SqsWorkQueue, SpendGuard]:
    settings = load_settings()
    if not settings.work_queue_url:
        raise SettingsError(f"{WORK_QUEUE_URL} is required: parked items are sent back to the uploads queue")
    session = boto3.session.Session()
    dynamodb = aws_client("dynamodb", session)
    return (
        settings,
        DynamoDBResultStore(dynamodb, settings.results_table),
        SqsWorkQueue(aws_client("sqs", session), settings.work_queue_url),
        build_spend_guard(settings, dynamodb),
    )


def ready_check(guard: SpendGuard, now_ms: int) -> Any:
    """A parked record may go when its time has come and its reason no longer holds."""
    is_due = due(now_ms)
    budget_open = guard.budget_open(None, now_ms)
    provider_closed = guard.provider_open_until(now_ms) is None

    def ready(record: dict[str, Any]) -> bool:
        reason = record.get("error_type")
        if reason == "BudgetExhausted" and not budget_open:
            return False
        if reason == "ProviderPaused" and not provider_closed:
            return False
        return is_due(record)

    return ready


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@bounded_aws_calls  # a call that would outlast the run fails it (AwsUnavailable); the next run, a minute on, resumes
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _, results, queue, guard = _runtime()
    now_ms = int(time.time() * 1000)
    report = resume_deferred(results, queue, ready=ready_check(guard, now_ms), limit=RESUME_PER_RUN)
    metrics.add_metric(name="DeferredResumed", unit=MetricUnit.Count, value=report.resumed)
    metrics.add_metric(name="DeferredWaiting", unit=MetricUnit.Count, value=report.left)
    logger.info(
        "parked items resumed", extra={"resumed": report.resumed, "left": report.left, "skipped": report.skipped}
    )
    return {"resumed": report.resumed, "left": report.left, "skipped": report.skipped}


__all__ = ["lambda_handler", "ready_check"]
