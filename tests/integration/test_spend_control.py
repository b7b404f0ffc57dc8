"""Spend control on the emulated stack, through the real handler: the budget cap reached mid-batch (nothing lost,
resumed), the provider's breaker opening and closing (no receive count burned into the DLQ)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import resume_app

import app
from devkit.lambda_emulator import FakeLambdaContext, QueueFeeder, queue_depth
from devkit.model_server import default_reply, error_reply
from sightline.composition import get_runtime
from tests.conftest import Deployment
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration


def upload_all(deployment: Deployment, prefix: str, count: int) -> list[str]:
    """Objects with distinct bytes (no content-cache hits); the bucket's own notifications queue their events."""
    s3 = deployment.client("s3")
    keys = [f"{prefix}/{index}.jpg" for index in range(count)]
    for index, key in enumerate(keys):
        s3.put_object(Bucket=deployment.resources.bucket, Key=key, Body=encode(photo(300 + index, 200), "JPEG"))
    return keys


def statuses(deployment: Deployment, keys: list[str]) -> dict[str, str]:
    return {key: (deployment.record(key) or {}).get("status", "none") for key in keys}


def restart_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """New settings take effect at the next cold start."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_runtime.cache_clear()
    resume_app._runtime.cache_clear()


def test_the_budget_cap_reached_mid_batch_parks_the_rest_and_nothing_is_lost(
    deployment: Deployment, function_env: dict[str, str], model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a daily cap in tokens that holds a few of the six images (each reserves ~its prompt + 1,024 output
    # tokens and then costs ~1,100), and a batch of six
    restart_with(monkeypatch, BUDGET_DAILY_LIMIT="5000", BUDGET_UNIT="tokens")
    keys = upload_all(deployment, "budget", 6)
    sqs = deployment.client("sqs")
    feeder = QueueFeeder.for_stack(sqs, deployment.resources, app.lambda_handler)
    report = feeder.drain()
    # THEN some are described, the others parked (not failed, not retried, not dead-lettered), and the queue is empty
    first = statuses(deployment, keys)
    described = [k for k, s in first.items() if s == "succeeded"]
    parked = [k for k, s in first.items() if s == "deferred"]
    assert described and parked and len(described) + len(parked) == 6, first
    assert report.failed_items == 0
    assert queue_depth(sqs, deployment.resources.queue_url) == 0
    assert queue_depth(sqs, deployment.resources.dlq_url) == 0
    assert len(model.chat_requests) == len(described)
    assert all(deployment.record(k)["error_type"] == "BudgetExhausted" for k in parked)
    notified = {n["message"]["key"] for n in deployment.received_notifications()}
    assert notified == set(described)  # a parked item is not announced
    # WHEN the scheduled resumer runs before the day has turned, nothing is sent back
    assert resume_app.lambda_handler({}, FakeLambdaContext())["resumed"] == 0
    # WHEN the operator raises the cap and resumes at once (sightline budget resume)
    restart_with(monkeypatch, BUDGET_DAILY_LIMIT="0")
    from sightline_cli.main import main

    assert (
        main(
            [
                "budget",
                "resume",
                "--results-table",
                deployment.resources.table,
                "--queue-url",
                deployment.resources.queue_url,
            ]
        )
        == 0
    )
    feeder.drain()
    # THEN every image is described, each paid exactly once, and announced once (the parked ones now)
    assert set(statuses(deployment, keys).values()) == {"succeeded"}
    assert len(model.chat_requests) == 6
    assert sorted(n["message"]["key"] for n in deployment.received_notifications()) == sorted(parked)


def test_the_breaker_opens_on_a_burst_of_provider_failures_and_closes_after_the_cool_down(
    deployment: Deployment, function_env: dict[str, str], model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a provider answering 503 to everything, a breaker opening at 3 failures with a 2 s cool-down
    restart_with(monkeypatch, BREAKER_FAILURES="3", BREAKER_COOLDOWN_SECONDS="2", MODEL_MAX_ATTEMPTS="1")
    model.responder.default = error_reply(503, "overloaded", "server_error")
    keys = upload_all(deployment, "breaker", 8)
    sqs = deployment.client("sqs")
    feeder = QueueFeeder.for_stack(sqs, deployment.resources, app.lambda_handler)
    feeder.drain()
    # THEN the breaker opened: every item is parked, none reached the DLQ, and calls stopped after the burst
    assert set(statuses(deployment, keys).values()) == {"deferred"}
    assert {deployment.record(k)["error_type"] for k in keys} == {"ProviderPaused"}
    assert queue_depth(sqs, deployment.resources.dlq_url) == 0
    calls_during_outage = len(model.chat_requests)
    assert 3 <= calls_during_outage < 8 + 3
    # WHEN the provider recovers and the cool-down passes, the scheduled resumer sends them back
    model.responder.default = default_reply
    time.sleep(2.2)
    assert resume_app.lambda_handler({}, FakeLambdaContext())["resumed"] == 8
    feeder.drain()
    # THEN the breaker is closed again and every item is described
    assert set(statuses(deployment, keys).values()) == {"succeeded"}
    assert queue_depth(sqs, deployment.resources.dlq_url) == 0
