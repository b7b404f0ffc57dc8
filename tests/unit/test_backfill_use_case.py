"""The use case with backfill items, forced re-descriptions and deferrals (budget, provider breaker), on fakes."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from sightline.errors import ConfigurationError, ModelUnavailableError
from sightline.events import BACKFILL_EVENT_NAME, Backfill, ObjectEvent, PageRangeItem, parse_queue_message_body
from sightline.ordering import order_key
from sightline.pipeline import Pipeline
from sightline.pricing import PriceTable
from sightline.profiles import Profile, ProfileSet
from sightline.resume import due, resume_deferred
from sightline.settings import Settings
from sightline.spend import SpendGuard
from tests.support.fakes import FakeWorkQueue, ScriptedModel
from tests.support.spend_fakes import FakeProviderBreaker, FakeSpendLedger
from tests.unit.test_use_case import BUCKET, IMAGE, World, event, good_answer

pytestmark = pytest.mark.unit

NOW_MS = 1_795_000_000_000  # 2026-11-18, mid-day UTC


def backfill_item(
    key: str, *, run: str = "run-1", force: bool = False, profile: str | None = None, modified: str = "2026-01-01"
) -> ObjectEvent:
    return ObjectEvent(
        bucket=BUCKET,
        key=key,
        event_name=BACKFILL_EVENT_NAME,
        event_time="2026-11-26T12:00:00.000Z",
        version_id="v-0A",  # the version a real event with sequencer 0A (tests.unit.test_use_case.event) names
        etag="etag",
        backfill=Backfill(run=run, force=force, profile=profile, last_modified=modified),
    )


def hand_made(key: str, time: str = "2030-01-01T00:00:00.000Z") -> ObjectEvent:
    return ObjectEvent(bucket=BUCKET, key=key, event_name="ObjectCreated:Put", event_time=time, etag="etag")


# --- Order keys


def test_a_backfill_item_sorts_below_every_real_and_every_hand_made_event() -> None:
    backfill = order_key(backfill_item("a.png", modified="2099-12-31"))
    real = order_key(event("a.png", sequencer="00"))
    timed = order_key(hand_made("a.png", time="1970-01-01T00:00:00.000Z"))
    assert backfill < timed < real
    # Two backfills of one key: the later LastModified (the newer object version) sorts higher.
    assert order_key(backfill_item("a.png", modified="2026-01-01")) < order_key(
        backfill_item("a.png", modified="2026-02-01")
    )


# --- Backfill items against real events, both ways round


def test_a_backfill_item_describes_a_key_without_record_and_a_later_real_event_still_applies() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    first = world.pipeline.process(backfill_item("a.png"))
    assert first.status == "succeeded" and world.model.calls == 1
    assert world.record("a.png")["order_key"].startswith("b")
    # The key's real event (uploaded before notifications existed, or delivered late) applies afterwards: the
    # record moves to the real order, served by the content cache (nothing paid twice), and is announced.
    later = world.pipeline.process(event("a.png", sequencer="0A"))
    assert later.status == "succeeded" and world.model.calls == 1
    assert world.record("a.png")["order_key"].startswith("s")
    assert len(world.notifier.published) == 2


def test_a_backfill_item_for_a_key_a_real_event_described_is_stale_and_pays_nothing() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    assert world.pipeline.process(event("a.png", sequencer="0A")).status == "succeeded"
    before = world.record("a.png")
    outcome = world.pipeline.process(backfill_item("a.png"))
    assert outcome.status == "stale" and "already has a record" in (outcome.reason or "")
    assert world.model.calls == 1 and world.record("a.png") == before
    assert len(world.notifier.published) == 1


def test_a_backfill_item_never_blocks_a_real_event_that_arrives_while_it_is_processed() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    item = backfill_item("a.png")
    claim = world.results.claim(
        item, order=order_key(item), version="v-0A", claim_id="backfill", until_ms=2**62, now_ms=0
    )
    assert claim.kind == "claimed"
    # A real event claims over the backfill item's live claim (it outranks it); the backfill's store then fails.
    assert world.pipeline.process(event("a.png", sequencer="0B", version="v-0B")).status == "succeeded"
    assert world.record("a.png")["order_key"] == order_key(event("a.png", sequencer="0B"))


def test_a_newer_backfill_replaces_an_older_backfill_record_but_not_the_other_way_round() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    assert world.pipeline.process(backfill_item("a.png", modified="2026-01-01")).status == "succeeded"
    assert world.pipeline.process(backfill_item("a.png", modified="2026-03-01", run="run-2")).status == "succeeded"
    assert world.pipeline.process(backfill_item("a.png", modified="2026-02-01", run="run-3")).status == "stale"


def test_a_hand_made_event_no_longer_blocks_later_real_events() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    assert world.pipeline.process(hand_made("a.png", time="2099-01-01T00:00:00.000Z")).status == "succeeded"
    assert world.pipeline.process(event("a.png", sequencer="01")).status == "succeeded"
    assert world.record("a.png")["order_key"].startswith("s")


def test_a_record_ordered_by_the_old_too_high_key_is_taken_over_by_a_real_event() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    world.results.items[(BUCKET, "a.png")] = {
        "bucket": BUCKET,
        "key": "a.png",
        "order_key": "t2099-01-01T00:00:00.000Z#etag",  # written by the previous release
        "status": "succeeded",
        "claim_until": 0,
    }
    assert world.pipeline.process(event("a.png", sequencer="01")).status == "succeeded"


# --- Forced re-descriptions


def test_a_forced_item_pays_again_once_per_run_keeps_the_real_order_and_a_real_event_still_applies() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    assert world.pipeline.process(event("a.png", sequencer="0A")).status == "succeeded"
    real_order = world.record("a.png")["order_key"]
    forced = backfill_item("a.png", force=True, run="run-7")
    outcome = world.pipeline.process(forced)
    assert outcome.status == "succeeded"
    assert world.model.calls == 2  # the content cache was not read
    record = world.record("a.png")
    assert record["order_key"] == real_order and record["forced_run"] == "run-7"
    assert len(world.notifier.published) == 2
    # The same item delivered again, in the same run: nothing is paid.
    assert world.pipeline.process(forced).status == "duplicate" and world.model.calls == 2
    # Another key with the same bytes now gets the new answer from the cache.
    world.upload("twin.png", IMAGE)
    assert world.pipeline.process(event("twin.png", sequencer="01")).status == "succeeded"
    assert world.model.calls == 2
    # A newer real event for the key still applies.
    assert world.pipeline.process(event("a.png", sequencer="0B", version="v-0B")).status == "succeeded"


def test_a_forced_item_for_a_deleted_key_is_stale() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    world.pipeline.process(event("a.png", sequencer="0A"))
    world.pipeline.process(event("a.png", sequencer="0B", name="ObjectRemoved:Delete"))
    assert world.pipeline.process(backfill_item("a.png", force=True)).status == "stale"
    assert world.model.calls == 1


# --- The run's profile


def profiled_world(model: ScriptedModel) -> World:
    world = World(model)
    world.pipeline.profiles = ProfileSet(
        profiles=(Profile(name="alt-text", task="alt_text"),), default=Profile(name="default")
    )
    return world


def test_the_backfill_profile_wins_over_the_key_and_an_unknown_one_is_the_operators_error() -> None:
    world = profiled_world(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    assert world.pipeline.process(backfill_item("a.png", profile="alt-text")).status == "succeeded"
    assert world.record("a.png")["profile"] == "alt-text"
    world.upload("b.png", b"another object")
    with pytest.raises(ConfigurationError, match="no profile: 'nope'"):
        world.pipeline.process(backfill_item("b.png", profile="nope"))


# --- Deferrals


def guarded(world: World, settings: Settings, ledger: FakeSpendLedger, breaker: FakeProviderBreaker | None) -> None:
    world.pipeline.spend_guard = SpendGuard(
        settings, ledger, breaker, PriceTable(currency="USD", models={}), clock_ms=lambda: NOW_MS
    )


def budget_settings(limit: float) -> Settings:
    return Settings(
        results_table="results",
        results_topic_arn="arn:topic",
        control_table="control",
        budget_daily_limit=limit,
        model_max_output_tokens=100,
    )


def test_at_the_budget_cap_an_item_is_parked_not_failed_and_resumes_when_the_day_turns() -> None:
    world = World(ScriptedModel(default=good_answer()))
    ledger = FakeSpendLedger()
    guarded(world, budget_settings(10**9), ledger, None)
    world.upload("a.png")
    world.upload("b.png", b"\x89PNG" + IMAGE[4:] + b"different")
    first = world.pipeline.process(event("a.png", sequencer="01"))
    assert first.status == "succeeded"
    guard = world.pipeline.spend_guard
    assert guard is not None
    spent = ledger.read("stack", "2026-11-18").committed.tokens  # settled to what the call actually cost
    assert 0 < spent < guard.estimate(world.model.requests[0]).tokens
    # The cap leaves less room than the next call's reservation: it is refused before the call starts.
    guarded(world, budget_settings(spent + guard.estimate(world.model.requests[0]).tokens - 1), ledger, None)
    second = world.pipeline.process(event("b.png", sequencer="02"))
    assert second.status == "deferred" and second.reason == "BudgetExhausted"
    parked = world.record("b.png")
    assert parked["status"] == "deferred" and parked["error_type"] == "BudgetExhausted"
    assert parked["deferred_until"] > NOW_MS and world.model.calls == 1
    assert world.notifier.published and len(world.notifier.published) == 1  # a deferral is not announced
    # Not due yet: nothing is sent.
    queue = FakeWorkQueue()
    report = resume_deferred(world.results, queue, ready=due(NOW_MS), limit=100)
    assert (report.resumed, report.left) == (0, 1) and not queue.sent
    # The day turned (a fresh ledger day): the resumer sends the very event back, and it is described.
    tomorrow = int(parked["deferred_until"]) + 1
    report = resume_deferred(world.results, queue, ready=due(tomorrow), limit=100)
    assert report.resumed == 1 and world.record("b.png")["status"] == "processing"
    resent = parse_queue_message_body(json.dumps(queue.sent[0]))
    assert resent == [event("b.png", sequencer="02")]
    world.pipeline.spend_guard = None
    assert world.pipeline.process(resent[0]).status == "succeeded"
    assert world.record("b.png")["status"] == "succeeded" and world.model.calls == 2


def test_a_parked_item_whose_key_moved_on_is_not_sent_back() -> None:
    world = World(ScriptedModel(default=good_answer()))
    guarded(world, budget_settings(1), FakeSpendLedger(), None)
    world.upload("a.png")
    assert world.pipeline.process(event("a.png", sequencer="01")).status == "deferred"
    world.pipeline.spend_guard = None
    assert world.pipeline.process(event("a.png", sequencer="02", version="v-02")).status == "succeeded"
    queue = FakeWorkQueue()
    report = resume_deferred(world.results, queue, ready=lambda record: True, limit=10)
    assert report.resumed == 0 and not queue.sent


def test_an_open_breaker_parks_items_instead_of_burning_their_receive_count() -> None:
    world = World(ScriptedModel(default=ModelUnavailableError("HTTP 503 from the provider")))
    breaker = FakeProviderBreaker(failures=2, window_seconds=60, cooldown_seconds=120)
    guarded(world, Settings(results_table="r", results_topic_arn="t", control_table="c"), FakeSpendLedger(), breaker)
    for index in range(4):
        world.upload(f"{index}.png", IMAGE + bytes([index]))
    # The first failure is an ordinary transient error: SQS retries it.
    with pytest.raises(ModelUnavailableError):
        world.pipeline.process(event("0.png", sequencer="01"))
    # The second opens the breaker: that item is parked; the next ones are parked without a call.
    outcomes = [world.pipeline.process(event(f"{i}.png", sequencer=f"0{i + 1}")) for i in (1, 2, 3)]
    assert [o.status for o in outcomes] == ["deferred"] * 3
    assert {o.reason for o in outcomes} == {"ProviderPaused"}
    assert world.model.calls == 2
    assert world.record("3.png")["deferred_until"] == NOW_MS + 120_000


def test_a_deferred_page_range_goes_back_to_the_queue_with_a_delay() -> None:
    queue = FakeWorkQueue()
    world = World(ScriptedModel(default=good_answer()))
    world.pipeline.work_queue = queue

    def deferring(item: PageRangeItem, deadline: float | None) -> Any:
        from sightline.errors import BudgetExhaustedError

        raise BudgetExhaustedError("cap", resume_after_ms=world.pipeline.wall_clock_ms() + 3_600_000)

    world.pipeline._process_range = deferring  # type: ignore[method-assign]
    item = PageRangeItem(
        event=replace(event("doc.pdf"), size=10),
        order="s1",
        version="v",
        first=9,
        last=16,
        index=2,
        ranges_total=3,
        range_pages=8,
        page_count=20,
        kind="pdf",
        content_sha256="0" * 64,
    )
    outcome = Pipeline.process_range(world.pipeline, item)
    assert outcome.status == "deferred"
    assert queue.sent == [item.to_message()] and queue.delays == [3600]
