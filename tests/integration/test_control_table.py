"""The control table's adapters on the deployed (moto) table: budget counters that hold under concurrency, and a
circuit breaker shared by every instance."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.config import Config

from sightline.adapters.control_table import (
    BREAKER_KEY,
    OPEN_UNTIL_CACHE_MS,
    DynamoDBProviderBreaker,
    DynamoDBSpendLedger,
    budget_key,
)
from sightline.adapters.dynamodb import from_item
from sightline.errors import BudgetExhaustedError, ConfigurationError
from sightline.ports import ModelRequest, ModelUsage, Spend
from sightline.pricing import PriceTable
from sightline.settings import Settings
from sightline.spend import SpendGuard, counters_expire_at, utc_day
from tests.conftest import Deployment
from tests.support.spend_fakes import BillingModel

pytestmark = pytest.mark.integration

NOW_MS = 1_767_225_600_000 + 13 * 3_600_000  # 2026-01-01T13:00:00Z
DAY = "2026-01-01"
EXPIRES_AT = counters_expire_at(NOW_MS)


def dynamodb(deployment: Deployment) -> Any:
    return deployment.session.client("dynamodb", config=Config(max_pool_connections=32))


def item(deployment: Deployment, pk: str) -> dict[str, Any]:
    client = deployment.client("dynamodb")
    found = client.get_item(TableName=deployment.resources.control_table, Key={"pk": {"S": pk}}, ConsistentRead=True)
    return from_item(found.get("Item") or {})


def test_twenty_concurrent_reservations_never_pass_the_cap(deployment: Deployment) -> None:
    # GIVEN a cap of 10 reservations' worth of tokens and of cost
    ledger = DynamoDBSpendLedger(dynamodb(deployment), deployment.resources.control_table)
    amount = Spend(tokens=1_000, cost_micros=700)
    cap = Spend(tokens=10_000, cost_micros=7_000)
    # WHEN 20 threads reserve at once
    with ThreadPoolExecutor(max_workers=20) as pool:
        granted = list(pool.map(lambda _: ledger.reserve("stack", DAY, amount, cap, EXPIRES_AT), range(20)))
    # THEN exactly ten were granted, and the committed spend is the cap, not a token more
    assert granted.count(True) == 10
    state = ledger.read("stack", DAY)
    assert state.committed == cap
    # AND a cost cap alone holds the same way (a token cap of 0 is no cap)
    with ThreadPoolExecutor(max_workers=20) as pool:
        granted = list(
            pool.map(lambda _: ledger.reserve("profile#documents", DAY, amount, Spend(cost_micros=3_500), 1), range(20))
        )
    assert granted.count(True) == 5 and ledger.read("profile#documents", DAY).committed.cost_micros == 3_500


def test_a_reservation_larger_than_the_whole_cap_is_refused_without_a_write(deployment: Deployment) -> None:
    ledger = DynamoDBSpendLedger(deployment.client("dynamodb"), deployment.resources.control_table)
    assert not ledger.reserve("stack", DAY, Spend(tokens=501), Spend(tokens=500), EXPIRES_AT)
    assert item(deployment, budget_key("stack", DAY)) == {}
    assert ledger.reserve("stack", DAY, Spend(tokens=500), Spend(tokens=500), EXPIRES_AT)
    assert not ledger.reserve("stack", DAY, Spend(tokens=1), Spend(tokens=500), EXPIRES_AT)


def test_settle_replaces_the_reservation_with_the_actual_spend(deployment: Deployment) -> None:
    ledger = DynamoDBSpendLedger(deployment.client("dynamodb"), deployment.resources.control_table)
    reserved = Spend(tokens=1_300, cost_micros=1_040)
    assert ledger.reserve("stack", DAY, reserved, Spend(tokens=2_000), EXPIRES_AT)
    assert ledger.reserve("stack", DAY, reserved, Spend(tokens=2_000), EXPIRES_AT) is False
    # a finished call: what it cost replaces its reservation
    ledger.settle("stack", DAY, reserved, Spend(tokens=420, cost_micros=336), EXPIRES_AT)
    # an undone reservation (refused by another scope): nothing spent, no call counted
    assert ledger.reserve("stack", DAY, reserved, Spend(tokens=2_000), EXPIRES_AT)
    ledger.settle("stack", DAY, reserved, Spend(), EXPIRES_AT)
    ledger.count_deferral("stack", DAY, EXPIRES_AT)
    state = ledger.read("stack", DAY)
    assert state.committed == Spend(tokens=420, cost_micros=336) == state.spent
    assert (state.calls, state.deferrals) == (1, 1)
    assert ledger.scopes(DAY) == ["stack"] and ledger.scopes("2026-01-02") == []
    # the item carries its TTL, its scope and its day
    stored = item(deployment, budget_key("stack", DAY))
    assert stored["expires_at"] == EXPIRES_AT and (stored["scope"], stored["day"]) == ("stack", DAY)
    assert EXPIRES_AT == 1_767_225_600 + 86_400 + 3 * 86_400  # three days after the day ended


def test_the_breaker_is_shared_by_two_instances_and_closes_after_the_cool_down(deployment: Deployment) -> None:
    # GIVEN two instances' breakers on one table: 3 failures a minute open it for 30 s
    table = deployment.resources.control_table
    first = DynamoDBProviderBreaker(
        deployment.client("dynamodb"), table, failures=3, window_seconds=60, cooldown_seconds=30
    )
    second = DynamoDBProviderBreaker(
        deployment.client("dynamodb"), table, failures=3, window_seconds=60, cooldown_seconds=30
    )
    now = NOW_MS
    # WHEN the first counts two failures and the second one more
    assert first.record_failure(now) is None
    assert first.record_failure(now + 10) is None
    until = second.record_failure(now + 20)
    # THEN the third opens it for the cool-down, for both
    assert until == now + 20 + 30_000
    assert second.open_until(now + 21) == until
    # the first still has its own read of a moment ago (at most OPEN_UNTIL_CACHE_MS old), then sees it open
    assert first.open_until(now + 500) is None
    assert first.open_until(now + 10 + OPEN_UNTIL_CACHE_MS) == until
    assert first.failures_in_window(now + 30) == 3
    # AND a failure while open does not shorten it; one from the other instance extends it from its own time
    assert first.record_failure(now + 40) == now + 40 + 30_000
    assert second.open_until(now + 41 + OPEN_UNTIL_CACHE_MS) == now + 40 + 30_000
    # AND after the cool-down it is closed again, and a failure in a new window does not reopen it
    later = now + 40 + 30_000 + 1
    assert first.open_until(later) is None and second.open_until(later) is None
    next_window = (later // 60_000 + 1) * 60_000
    assert first.record_failure(next_window) is None
    # the items expire (TTL): the window's after its end, the breaker's after its cool-down
    window = item(deployment, first.window_key(now))
    assert window["failures"] == 4 and window["expires_at"] >= (now // 60_000 + 1) * 60
    breaker = item(deployment, BREAKER_KEY)
    assert breaker["open_until"] == now + 40 + 30_000 and breaker["expires_at"] >= breaker["open_until"] // 1000


def test_the_template_expires_the_items_by_their_ttl_attribute() -> None:
    # moto's CloudFormation does not apply TimeToLiveSpecification, so the template itself is checked
    from devkit.stack import DEFAULT_TEMPLATE_PATH, load_sam_template

    table = load_sam_template(DEFAULT_TEMPLATE_PATH)["Resources"]["ControlTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]


def test_a_missing_table_is_configuration_not_a_refusal(deployment: Deployment) -> None:
    ledger = DynamoDBSpendLedger(deployment.client("dynamodb"), "no-such-table")
    with pytest.raises(ConfigurationError):
        ledger.reserve("stack", DAY, Spend(tokens=1), Spend(tokens=10), EXPIRES_AT)
    breaker = DynamoDBProviderBreaker(deployment.client("dynamodb"), "no-such-table", 3, 60, 30)
    with pytest.raises(ConfigurationError):
        breaker.record_failure(NOW_MS)


def test_the_guard_on_the_table_defers_at_the_cap_and_the_status_command_reports_it(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a guard on the deployed table with a stack cap of 500 tokens, calls estimated at 200 and billed 150
    table = deployment.resources.control_table
    settings = Settings(
        results_table=deployment.resources.table,
        results_topic_arn=deployment.resources.topic_arn,
        control_table=table,
        budget_daily_limit=500,
        model_max_output_tokens=100,
    )
    client = deployment.client("dynamodb")
    now_ms = int(time.time() * 1000)
    guard = SpendGuard.from_settings(
        settings, DynamoDBSpendLedger(client, table), None, PriceTable("USD", {}), clock_ms=lambda: now_ms
    )
    model = BillingModel(prompt_tokens=100, completion_tokens=50)
    guarded = guard.wrap(model, "default")
    request = ModelRequest(messages=[{"role": "user", "content": "x" * 400}], max_output_tokens=100)
    # WHEN four calls are made
    for _ in range(3):
        guarded.complete(request, None, ModelUsage())
    with pytest.raises(BudgetExhaustedError):
        guarded.complete(request, None, ModelUsage())
    # THEN three fit (150 + 150 + 200 reserved ≤ 500), the fourth is deferred
    assert model.calls == 3
    assert guard.budget_open("default", now_ms)  # 450 < 500: below the cap, though too little for that call
    # AND `sightline budget status` shows it against the cap given on the command line
    from sightline_cli.main import main

    status = main(
        [
            "budget", "status", "--control-table", table, "--results-table", deployment.resources.table,
            "--limit", "500", "--json",
        ]
    )  # fmt: skip
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    (stack,) = report["scopes"]
    assert report["day"] == utc_day(now_ms)
    assert (stack["scope"], stack["limit"], stack["used"], stack["calls"], stack["deferrals"]) == (
        "stack",
        500,
        450,
        3,
        1,
    )
    assert report["parked"] == 0 and report["breaker"]["open"] is False
    # AND as text, with the stack name: the caps cannot be read from a function the local stack does not run
    assert main(["budget", "status", "--stack-name", "sightline"]) == 0
    text = capsys.readouterr().out
    assert "caps from unavailable" in text and "stack" in text and "no cap" in text


def test_budget_resume_sends_the_parked_items_of_the_chosen_reason_back_at_once(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two items parked, one for the budget and one for the provider
    from sightline.adapters.dynamodb import DynamoDBResultStore
    from sightline.events import ObjectEvent
    from sightline.ordering import order_key, version_token
    from sightline_cli.main import main

    resources = deployment.resources
    results = DynamoDBResultStore(deployment.client("dynamodb"), resources.table)
    now_ms = int(time.time() * 1000)
    for key, reason in (("budget.jpg", "BudgetExhausted"), ("paused.jpg", "ProviderPaused")):
        event = ObjectEvent(resources.bucket, key, "ObjectCreated:Put", "2026-01-01T00:00:00.000Z", etag="e", size=3)
        claim = results.claim(
            event, order=order_key(event), version=version_token(event), claim_id=key, until_ms=now_ms + 60_000,
            now_ms=now_ms,
        )  # fmt: skip
        assert claim.kind == "claimed"
        assert results.defer(event, key, reason, "held back", ModelUsage(), resume_after_ms=now_ms + 3_600_000)
    table_args = ["--results-table", resources.table, "--queue-url", resources.queue_url]
    # WHEN the operator asks what would be resumed, then resumes the budget's items now
    assert main(["budget", "resume", *table_args, "--reason", "BudgetExhausted", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert (
        main(["budget", "status", "--control-table", resources.control_table, "--results-table", resources.table]) == 0
    )
    status = capsys.readouterr().out
    assert main(["budget", "resume", *table_args, "--reason", "BudgetExhausted"]) == 0
    done = capsys.readouterr().out
    # THEN the dry run sent nothing, the status counted both, and only the budget's item went back to the queue
    assert "budget.jpg" in dry and "paused.jpg" not in dry and "1 parked item(s) would be resumed" in dry
    assert "Parked (deferred) items: 2" in status
    assert "resumed 1, left 1, skipped 0" in done
    sqs = deployment.client("sqs")
    received = sqs.receive_message(QueueUrl=resources.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [json.loads(message["Body"]) for message in received.get("Messages", [])]
    keys = [record["s3"]["object"]["key"] for body in bodies for record in body.get("Records", [])]
    assert keys == ["budget.jpg"]
    assert (deployment.record("paused.jpg") or {}).get("status") == "deferred"
