"""The spend guard: the daily budget holds, the shared breaker pauses calls, and model calls in flight are bounded."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from sightline.answers import AnswerRules
from sightline.errors import (
    BudgetExhaustedError,
    ModelUnavailableError,
    ProviderPausedError,
    ProviderResponseError,
    SettingsError,
)
from sightline.imaging import prepare_image
from sightline.ports import ModelRequest, ModelUsage, Spend
from sightline.pricing import image_tokens, parse_prices
from sightline.prompt import description_request
from sightline.settings import Settings
from sightline.spend import (
    STACK_SCOPE,
    SpendGuard,
    estimate_prompt_tokens,
    image_size_from_header,
    next_utc_midnight_ms,
    utc_day,
)
from tests.support.spend_fakes import BillingModel, FakeProviderBreaker, FakeSpendLedger
from tests.unit.images import encode, photo

pytestmark = pytest.mark.unit

DAY_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW_MS = DAY_START_MS + 13 * 3_600_000  # 13:00 UTC
TODAY = "2026-01-01"
MIDNIGHT_MS = DAY_START_MS + 86_400_000
PRICES = parse_prices(
    """
currency = "USD"
[models."cheap-vl"]
input_per_million = 1.0
output_per_million = 2.0
[models."tiles-vl"]
input_per_million = 0.5
output_per_million = 0.5
image_tokens = "tiles512"
""",
    source="test prices",
)


class Clock:
    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "results_table": "results",
        "results_topic_arn": "arn:aws:sns:us-east-1:123456789012:results",
        "control_table": "control",
        "model_id": "cheap-vl",
        "model_max_output_tokens": 100,
        "model_concurrency": 10,
        "breaker_failures": 0,
    }
    values.update(overrides)
    return Settings(**values)


def text_request(chars: int = 400, max_output_tokens: int | None = 100, model_id: str | None = None) -> ModelRequest:
    """Estimated at chars/4 prompt tokens + max_output_tokens: 200 tokens by default."""
    return ModelRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "x" * chars}]}],
        max_output_tokens=max_output_tokens,
        model_id=model_id,
    )


def guard_for(
    ledger: FakeSpendLedger | None = None,
    breaker: FakeProviderBreaker | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> SpendGuard:
    return SpendGuard.from_settings(settings(**overrides), ledger, breaker, PRICES, clock_ms=clock or Clock())


# --- The budget


def test_the_stack_cap_refuses_the_call_that_would_pass_it_and_defers_it_to_midnight() -> None:
    # GIVEN a stack cap of 500 tokens and calls estimated at 200 that bill 200
    ledger = FakeSpendLedger()
    model = BillingModel(prompt_tokens=100, completion_tokens=100)
    guarded = guard_for(ledger, budget_daily_limit=500).wrap(model, "default")
    # WHEN three calls are made
    guarded.complete(text_request(), None, ModelUsage())
    guarded.complete(text_request(), None, ModelUsage())
    with pytest.raises(BudgetExhaustedError) as refused:
        guarded.complete(text_request(), None, ModelUsage())
    # THEN the third is refused before the model is called, until the next UTC midnight, and counted as deferred
    assert model.calls == 2
    assert refused.value.resume_after_ms == MIDNIGHT_MS
    assert "stack" in refused.value.message and "500 tokens" in refused.value.message
    assert "BUDGET_UNIT=tokens" in refused.value.message
    state = ledger.state(STACK_SCOPE, TODAY)
    assert (state.committed_tokens, state.spent_tokens, state.calls, state.deferrals) == (400, 400, 2, 1)


def test_a_batch_racing_for_the_last_of_the_budget_passes_exactly_as_many_calls_as_fit() -> None:
    # GIVEN a cap of five calls' estimates, and ten calls in flight together (each held until all have started)
    ledger = FakeSpendLedger()
    started = threading.Barrier(5, timeout=5)
    model = BillingModel(prompt_tokens=100, completion_tokens=100, on_call=started.wait)
    guarded = guard_for(ledger, budget_daily_limit=1_000).wrap(model, "default")

    def call(_: int) -> str:
        try:
            guarded.complete(text_request(), None, ModelUsage())
            return "described"
        except BudgetExhaustedError:
            return "deferred"

    # WHEN ten race
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(call, range(10)))
    # THEN five are described and five deferred, and the cap is met, never passed
    assert sorted(outcomes).count("described") == 5 and outcomes.count("deferred") == 5
    assert model.calls == 5 and model.max_in_flight == 5
    state = ledger.state(STACK_SCOPE, TODAY)
    assert (state.committed_tokens, state.calls, state.deferrals) == (1_000, 5, 5)


def test_reservations_are_settled_to_what_the_call_actually_cost() -> None:
    # GIVEN calls estimated at 200 tokens that bill 50 + 30
    ledger = FakeSpendLedger()
    model = BillingModel(prompt_tokens=50, completion_tokens=30)
    guarded = guard_for(ledger, budget_daily_limit=1_000).wrap(model, "default")
    usage = ModelUsage()
    # WHEN one is made
    guarded.complete(text_request(), None, usage)
    # THEN the reservation became the actual spend, and the caller's usage counts the call
    state = ledger.state(STACK_SCOPE, TODAY)
    assert (state.committed_tokens, state.spent_tokens, state.calls) == (80, 80, 1)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.model_calls) == (50, 30, 1)
    # AND the room freed by settling lets calls go that the estimates alone would have refused: 80 + 10 × 80,
    # until the next estimate (200) no longer fits
    for _ in range(10):
        guarded.complete(text_request(), None, ModelUsage())
    assert ledger.state(STACK_SCOPE, TODAY).committed_tokens == 880
    with pytest.raises(BudgetExhaustedError):
        guarded.complete(text_request(), None, ModelUsage())
    assert model.calls == 11


def test_a_call_that_raised_after_it_was_billed_settles_what_it_cost() -> None:
    # GIVEN a call billed 70 + 20 and then refused as a broken body
    ledger = FakeSpendLedger()
    model = BillingModel(
        prompt_tokens=70, completion_tokens=20, raise_after_billing=ProviderResponseError("an HTML page")
    )
    guarded = guard_for(ledger, budget_daily_limit=1_000).wrap(model, "default")
    usage = ModelUsage()
    # WHEN it is made
    with pytest.raises(ProviderResponseError):
        guarded.complete(text_request(), None, usage)
    # THEN what it cost is counted, in the budget and in the caller's usage
    state = ledger.state(STACK_SCOPE, TODAY)
    assert (state.committed_tokens, state.spent_tokens, state.calls) == (90, 90, 1)
    assert usage.total_tokens == 90


def test_a_call_whose_usage_was_not_reported_is_charged_its_estimate() -> None:
    ledger = FakeSpendLedger()
    model = BillingModel(prompt_tokens=None, completion_tokens=None)
    guard_for(ledger, budget_daily_limit=1_000).wrap(model, "default").complete(text_request(), None, ModelUsage())
    assert ledger.state(STACK_SCOPE, TODAY).committed_tokens == 200


def test_a_call_that_failed_before_any_answer_gives_its_reservation_back() -> None:
    ledger = FakeSpendLedger()
    model = BillingModel(unavailable=1)
    with pytest.raises(ModelUnavailableError):
        guard_for(ledger, budget_daily_limit=1_000).wrap(model, "default").complete(text_request(), None, ModelUsage())
    state = ledger.state(STACK_SCOPE, TODAY)
    assert (state.committed_tokens, state.spent_tokens, state.calls) == (0, 0, 0)


def test_a_profile_cap_defers_that_profiles_calls_only() -> None:
    # GIVEN no stack cap, and a cap of 300 tokens for "documents"
    ledger = FakeSpendLedger()
    model = BillingModel(prompt_tokens=100, completion_tokens=100)
    guard = guard_for(ledger, budget_profile_limits=(("documents", 300.0),))
    documents, photos = guard.wrap(model, "documents"), guard.wrap(model, "photos")
    # WHEN each profile makes two calls
    documents.complete(text_request(), None, ModelUsage())
    with pytest.raises(BudgetExhaustedError) as refused:
        documents.complete(text_request(), None, ModelUsage())
    photos.complete(text_request(), None, ModelUsage())
    photos.complete(text_request(), None, ModelUsage())
    # THEN only the capped profile is deferred; the stack counts every call without a cap of its own
    assert "profile#documents" in refused.value.message and "BUDGET_PROFILE_LIMITS" in refused.value.message
    assert model.calls == 3
    assert ledger.state("profile#documents", TODAY).committed_tokens == 200
    assert ledger.state("profile#documents", TODAY).deferrals == 1
    assert ledger.state(STACK_SCOPE, TODAY).committed_tokens == 600
    assert ("reserve", "profile#photos") not in ledger.operations
    assert guard.budget_open("photos", NOW_MS) and guard.budget_open(None, NOW_MS)
    documents.complete(text_request(chars=200, max_output_tokens=50), None, ModelUsage())  # reserves 100: fits
    assert not guard.budget_open("documents", NOW_MS) and guard.budget_open("photos", NOW_MS)


def test_a_refusal_in_a_later_scope_gives_back_the_earlier_scopes_reservation() -> None:
    # GIVEN room in the stack but none left for the profile
    ledger = FakeSpendLedger()
    model = BillingModel(prompt_tokens=100, completion_tokens=100)
    guarded = guard_for(ledger, budget_daily_limit=10_000, budget_profile_limits=(("documents", 250.0),)).wrap(
        model, "documents"
    )
    guarded.complete(text_request(), None, ModelUsage())
    # WHEN the next call is refused by the profile's cap
    with pytest.raises(BudgetExhaustedError):
        guarded.complete(text_request(), None, ModelUsage())
    # THEN the stack holds only the first call: the second one's stack reservation was undone
    assert ledger.state(STACK_SCOPE, TODAY).committed_tokens == 200
    assert ledger.state(STACK_SCOPE, TODAY).deferrals == 0
    assert ledger.state("profile#documents", TODAY).deferrals == 1


def test_a_budget_in_currency_counts_the_models_prices() -> None:
    # GIVEN a cap of 0.001 USD, calls estimated at 100 + 100 tokens (100 × $1/M + 100 × $2/M = 300 micros)
    ledger = FakeSpendLedger()
    model = BillingModel(prompt_tokens=100, completion_tokens=100)
    guarded = guard_for(ledger, budget_daily_limit=0.001, budget_unit="usd").wrap(model, "default")
    # WHEN four calls are made
    for _ in range(3):
        guarded.complete(text_request(), None, ModelUsage())
    with pytest.raises(BudgetExhaustedError) as refused:
        guarded.complete(text_request(), None, ModelUsage())
    # THEN the fourth would pass the cap in currency
    assert "0.0010 USD" in refused.value.message and "BUDGET_UNIT=usd" in refused.value.message
    state = ledger.state(STACK_SCOPE, TODAY)
    assert (state.committed_cost, state.spent_cost, state.committed_tokens) == (900, 900, 600)


def test_a_budget_in_currency_needs_a_price_for_the_model() -> None:
    with pytest.raises(SettingsError, match="'unpriced-vl'"):
        SpendGuard.from_settings(
            settings(model_id="unpriced-vl", budget_daily_limit=5.0, budget_unit="usd"),
            FakeSpendLedger(),
            None,
            PRICES,
        )
    with pytest.raises(SettingsError, match="'profile-vl'"):
        SpendGuard.from_settings(
            settings(budget_daily_limit=5.0, budget_unit="usd"),
            FakeSpendLedger(),
            None,
            PRICES,
            model_ids=["profile-vl"],
        )
    # a budget in tokens needs no price: an unpriced model's cost is counted as 0
    guard = SpendGuard.from_settings(settings(model_id="unpriced-vl", budget_daily_limit=500), None, None, PRICES)
    assert guard.estimate(text_request()) == Spend(tokens=200, cost_micros=0)


def test_no_control_table_or_no_cap_means_no_counter_calls_at_all() -> None:
    # GIVEN a ledger but no cap, and a cap but no ledger
    ledger = FakeSpendLedger()
    model = BillingModel()
    uncapped = guard_for(ledger)
    without_table = guard_for(None, budget_daily_limit=1, control_table=None)
    # WHEN calls are made through both
    for guard in (uncapped, without_table):
        for _ in range(3):
            guard.wrap(model, "default").complete(text_request(), None, ModelUsage())
        assert guard.budget_open("default", NOW_MS) and guard.status(NOW_MS) == []
    # THEN the model was called and no counter was read or written
    assert model.calls == 6
    assert ledger.operations == []


# --- The estimate


def test_an_images_tokens_are_read_from_the_data_urls_jpeg_header() -> None:
    # GIVEN the description request the pipeline sends for a photo
    image = prepare_image(encode(photo(1600, 1200), "JPEG"), "auto", max_pixels=100_000_000)
    request = replace(description_request(image, AnswerRules(), max_output_tokens=300), model_id="cheap-vl")
    text_chars = sum(
        len(part.get("text", ""))
        for message in request.messages
        for part in (message["content"] if isinstance(message["content"], list) else [])
    ) + sum(len(m["content"]) for m in request.messages if isinstance(m["content"], str))
    schema_chars = len(json.dumps(request.json_schema, separators=(",", ":")))
    # WHEN it is estimated
    estimate = guard_for(FakeSpendLedger(), budget_daily_limit=10**6).estimate(request)
    # THEN the estimate is the text and the JSON schema asked for (4 characters a token), the image as sent
    # (28 × 28 patches, from its JPEG header) and the whole output limit
    patches = image_tokens("patch28", image.sent_width, image.sent_height)
    assert patches == image.estimated_image_tokens > 500
    assert estimate.tokens == math.ceil((text_chars + schema_chars) / 4) + patches + 300
    assert estimate.cost_micros == PRICES.models["cheap-vl"].cost_micros(estimate.tokens - 300, 300)


def test_the_header_is_found_behind_large_segments_and_url_images_count_as_the_largest_budget() -> None:
    # a JPEG whose frame header comes after 150 KB of ICC profile
    jpeg = encode(photo(560, 280), "JPEG", icc_profile=b"\0" * 150_000)
    assert image_size_from_header(jpeg) == (560, 280)
    assert image_size_from_header(encode(photo(30, 20), "PNG")) == (30, 20)
    assert image_size_from_header(b"not an image") is None

    def one_image(url: str, detail: str = "auto") -> ModelRequest:
        part = {"type": "image_url", "image_url": {"url": url, "detail": detail}}
        return ModelRequest(messages=[{"role": "user", "content": [part]}])

    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    assert estimate_prompt_tokens(one_image(data_url), "patch28") == 20 * 10
    assert estimate_prompt_tokens(one_image(data_url, "low"), "tiles512") == 85
    # an image by URL: its size is unknown, so the largest budget's (2048 × 882 or 1344 × 1344)
    url_tokens = estimate_prompt_tokens(one_image("https://results.example/page-images/a.jpg"), "patch28")
    assert url_tokens == max(74 * 32, 48 * 48)
    assert estimate_prompt_tokens(one_image("https://x/a.jpg"), "tiles512") == 85 + 170 * 4 * 2


def test_the_request_model_and_the_settings_output_limit_are_used() -> None:
    guard = guard_for(FakeSpendLedger(), budget_daily_limit=10**6, model_max_output_tokens=64)
    # no max_output_tokens in the request: the setting's; another model: its own price
    assert guard.estimate(text_request(max_output_tokens=None)) == Spend(tokens=164, cost_micros=228)
    assert guard.estimate(text_request(model_id="tiles-vl")) == Spend(tokens=200, cost_micros=100)


# --- The breaker


def test_the_breaker_opens_after_n_provider_failures_pauses_calls_and_closes_after_the_cool_down() -> None:
    # GIVEN a breaker opening at 3 failures a minute for 120 s, and a provider that fails three times
    clock = Clock()
    breaker = FakeProviderBreaker(failures=3, window_seconds=60, cooldown_seconds=120)
    model = BillingModel(unavailable=3)
    guard = guard_for(None, breaker, clock, breaker_failures=3)
    guarded = guard.wrap(model, "default")
    # WHEN the first two fail, they are retried as usual (transient)
    for _ in range(2):
        with pytest.raises(ModelUnavailableError):
            guarded.complete(text_request(), None, ModelUsage())
    # AND the third opens the breaker: the item is deferred until the cool-down ends, not failed
    with pytest.raises(ProviderPausedError) as paused:
        guarded.complete(text_request(), None, ModelUsage())
    assert paused.value.resume_after_ms == NOW_MS + 120_000
    assert isinstance(paused.value.__cause__, ModelUnavailableError)
    # THEN while it is open no call goes out, from any wrap of the guard
    clock.now_ms += 60_000
    with pytest.raises(ProviderPausedError) as held:
        guard.wrap(model, "documents").complete(text_request(), None, ModelUsage())
    assert held.value.resume_after_ms == NOW_MS + 120_000
    assert model.calls == 3 and guard.provider_open_until(clock.now_ms) == NOW_MS + 120_000
    # AND after the cool-down calls go again
    clock.now_ms = NOW_MS + 120_001
    assert guard.provider_open_until(clock.now_ms) is None
    guarded.complete(text_request(), None, ModelUsage())
    assert model.calls == 4 and breaker.recorded == 3


def test_other_errors_and_a_missing_breaker_do_not_count_failures() -> None:
    breaker = FakeProviderBreaker(failures=1, window_seconds=60, cooldown_seconds=120)
    billed_then_broken = BillingModel(raise_after_billing=ProviderResponseError("an HTML page"))
    with pytest.raises(ProviderResponseError):
        guard_for(None, breaker).wrap(billed_then_broken, "default").complete(text_request(), None, ModelUsage())
    assert breaker.recorded == 0
    with pytest.raises(ModelUnavailableError):
        guard_for(None, None).wrap(BillingModel(unavailable=1), "default").complete(text_request(), None, ModelUsage())


# --- The bound on calls in flight


def test_model_calls_in_flight_never_exceed_model_concurrency_under_fifty_threads() -> None:
    # GIVEN MODEL_CONCURRENCY=4, and two wraps of one guard (two profiles)
    model = BillingModel(hold_seconds=0.01)
    guard = guard_for(None, model_concurrency=4)
    wraps = [guard.wrap(model, "default"), guard.wrap(model, "documents")]
    start = threading.Barrier(50, timeout=10)

    def call(index: int) -> None:
        start.wait()
        wraps[index % 2].complete(text_request(), None, ModelUsage())

    # WHEN 50 threads call at once
    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(call, range(50)))
    # THEN every call was made, never more than four at a time, and the bound was used
    assert model.calls == 50
    assert model.max_in_flight == 4


def test_a_call_that_cannot_get_a_slot_before_the_deadline_is_transient_and_not_a_provider_failure() -> None:
    breaker = FakeProviderBreaker(failures=1, window_seconds=60, cooldown_seconds=120)
    release = threading.Event()
    model = BillingModel(on_call=lambda: release.wait(5))
    guard = guard_for(None, breaker, model_concurrency=1)
    guarded = guard.wrap(model, "default")
    with ThreadPoolExecutor(max_workers=1) as pool:
        busy = pool.submit(guarded.complete, text_request(), None, ModelUsage())
        while model.in_flight == 0:
            time.sleep(0.001)
        started = time.monotonic()
        with pytest.raises(ModelUnavailableError, match="MODEL_CONCURRENCY"):
            guarded.complete(text_request(), time.monotonic() + 2.2, ModelUsage())
        assert 0.1 < time.monotonic() - started < 2
        release.set()
        busy.result()
    assert breaker.recorded == 0 and model.calls == 1


# --- Status


def test_status_reports_every_scope_against_its_cap() -> None:
    ledger = FakeSpendLedger()
    guard = guard_for(ledger, budget_daily_limit=300, budget_profile_limits=(("documents", 1_000.0),))
    model = BillingModel(prompt_tokens=100, completion_tokens=100)
    guard.wrap(model, "documents").complete(text_request(), None, ModelUsage())
    with pytest.raises(BudgetExhaustedError):
        guard.wrap(model, "photos").complete(text_request(), None, ModelUsage())
    stack, documents = guard.status(NOW_MS)
    assert (stack.scope, stack.day, stack.limit, stack.used, stack.calls, stack.deferrals) == (
        "stack",
        TODAY,
        300,
        200,
        1,
        1,
    )
    assert stack.open and stack.remaining == 100
    assert (documents.scope, documents.limit, documents.used, documents.open) == ("profile#documents", 1_000, 200, True)
    assert documents.to_dict()["spent_tokens"] == 200
    assert guard.budget_open("documents", NOW_MS)
    guard.wrap(model, "documents").complete(text_request(chars=200, max_output_tokens=50), None, ModelUsage())
    assert not guard.budget_open("documents", NOW_MS) and not guard.budget_open(None, NOW_MS)


def test_days_are_utc() -> None:
    assert utc_day(MIDNIGHT_MS - 1) == TODAY and utc_day(MIDNIGHT_MS) == "2026-01-02"
    assert next_utc_midnight_ms(NOW_MS) == MIDNIGHT_MS == next_utc_midnight_ms(MIDNIGHT_MS - 1)
