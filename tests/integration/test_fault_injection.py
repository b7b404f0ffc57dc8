"""Fault injection: 200 object versions delivered the way S3, SQS and Lambda do, with a failing model.

Duplicated (30%) and reordered notifications, two function instances polling at once, failed items
redelivered until maxReceiveCount and then dead-lettered, and a model that fails 30% of its calls
(429 with Retry-After, 500, timeouts, invalid JSON, truncated output), plus a few images the model
always refuses with 503, which must end in the dead-letter queue. Seeded: the same run every time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import pytest
import resume_app

import app
from devkit.lambda_emulator import FakeLambdaContext, QueueFeeder, s3_notification
from devkit.model_server import ChatRequest, Reply, completion, error_reply
from sightline.adapters.dynamodb import from_item
from sightline.ordering import SEQUENCER_WIDTH
from tests.conftest import Deployment
from tests.unit.images import encode, page, photo

pytestmark = pytest.mark.integration

SEED = 20261125
VERSIONS = 200
DUPLICATE_SHARE = 0.30
MODEL_FAILURE_SHARE = 0.30


@dataclass
class Version:
    """One object version the suite created, and the notification S3 would send for it."""

    key: str
    version_id: str
    content: str  # sha256 of the bytes
    kind: str  # photo, document, copy, bad, overwrite
    sequencer: int


class FlakyModel:
    """A model that fails a seeded 30% of calls in five ways and counts the answers it got paid for."""

    FAULTS = ("rate_limit", "server_error", "timeout", "invalid_json", "truncated")

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.good_answers = 0

    @staticmethod
    def always_unavailable(request: ChatRequest) -> bool:
        """About one image in 25 meets an outage that outlasts every retry: its item is dead-lettered."""
        images = request.images
        return bool(images) and int(hashlib.sha256(images[0].data).hexdigest(), 16) % 25 == 0

    def __call__(self, request: ChatRequest) -> Reply:
        if self.always_unavailable(request):
            with self._lock:
                self.faults["outage"] += 1
            return error_reply(503, "model overloaded", "server_error")
        with self._lock:
            fault = self._random.choice(self.FAULTS) if self._random.random() < MODEL_FAILURE_SHARE else None
            self.faults[fault or "ok"] += 1
            if fault is None:
                self.good_answers += 1
        if fault == "rate_limit":
            return error_reply(429, "Rate limit reached", "rate_limit_error", {"Retry-After": "0.05"})
        if fault == "server_error":
            return error_reply(500, "upstream error", "server_error")
        if fault == "timeout":
            return Reply(delay_seconds=0.6, body=self._answer(request, "late"))  # the client gave up at 0.3 s
        if fault == "invalid_json":
            return Reply(body=self._answer(request, "Sure! The picture shows something.", raw=True))
        if fault == "truncated":
            return Reply(body=self._answer(request, '{"description": "A pic', raw=True, finish_reason="length"))
        return Reply(body=self._answer(request, "ok"))

    @staticmethod
    def _answer(request: ChatRequest, tag: str, *, raw: bool = False, finish_reason: str = "stop") -> dict[str, Any]:
        images = request.images
        seen = hashlib.sha256(images[0].data).hexdigest()[:12] if images else "repair"
        content = (
            tag
            if raw
            else json.dumps({"description": f"Image {seen}.", "alt_text": f"Image {seen}", "text": "", "tags": [tag]})
        )
        return completion(
            content, model=request.model, prompt_tokens=100, completion_tokens=20, finish_reason=finish_reason
        )


def build_uploads(deployment: Deployment, rng: random.Random) -> tuple[list[Version], list[tuple[str, int]]]:
    """200 object versions (photos, documents, copies, bad inputs, overwrites) and a few deletions."""
    s3 = deployment.client("s3")
    bucket = deployment.resources.bucket
    sequencer = iter(range(0xF0, 0x100000))  # crosses hex widths ("FF" → "100"): S3's padding rule matters
    bodies: dict[str, bytes] = {}
    versions: list[Version] = []

    def upload(key: str, body: bytes, kind: str) -> None:
        response = s3.put_object(Bucket=bucket, Key=key, Body=body)
        content = hashlib.sha256(body).hexdigest()
        bodies[content] = body
        versions.append(Version(key, response["VersionId"], content, kind, next(sequencer)))

    for index in range(90):
        upload(f"photos/{index:03d} holiday+pic.jpg", encode(photo(96 + index, 64), "JPEG"), "photo")
    for index in range(20):
        upload(f"docs/scan {index:02d}.png", encode(page(200 + index, 280), "PNG"), "document")
    originals = [v for v in versions if v.kind == "photo"]
    for index in range(30):  # the same bytes under another key: the content cache's work
        upload(f"copies/copy-{index:02d}.jpg", bodies[rng.choice(originals).content], "copy")
    bad = [b"", b"<!DOCTYPE html><html>nope</html>", b"%PDF-1.7\n", encode(photo(120, 90), "JPEG")[:400]]
    for index in range(20):
        upload(
            f"bad/file-{index:02d}.jpg",
            bad[index % len(bad)] + (b" " * (index // len(bad)) if index % 4 else b""),
            "bad",
        )
    for index, original in enumerate(rng.sample(originals, 40)):  # overwrites of existing keys
        upload(original.key, encode(photo(400 + index, 64), "JPEG"), "overwrite")
    assert len(versions) == VERSIONS

    deletions: list[tuple[str, int]] = []
    for key in rng.sample(sorted({v.key for v in versions}), 12):
        s3.delete_object(Bucket=bucket, Key=key)
        deletions.append((key, next(sequencer)))
    return versions, deletions


def hex_sequencer(value: int) -> str:
    return f"{value:X}"


def notifications_for(deployment: Deployment, versions: list[Version], deletions: list[tuple[str, int]]) -> list[str]:
    bucket = deployment.resources.bucket
    bodies = [
        json.dumps(s3_notification(bucket, v.key, version_id=v.version_id, sequencer=hex_sequencer(v.sequencer)))
        for v in versions
    ]
    bodies += [
        json.dumps(s3_notification(bucket, key, event_name="ObjectRemoved:Delete", sequencer=hex_sequencer(seq)))
        for key, seq in deletions
    ]
    return bodies


def scan(deployment: Deployment, table: str) -> list[dict[str, Any]]:
    pages = deployment.client("dynamodb").get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return [from_item(item) for page_ in pages for item in page_["Items"]]


def drain_queue_bodies(deployment: Deployment, url: str) -> list[dict[str, Any]]:
    sqs = deployment.client("sqs")
    found = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def test_fault_injection_suite(deployment: Deployment, function_env, model, monkeypatch, capsys) -> None:
    rng = random.Random(SEED)
    flaky = FlakyModel(SEED)
    model.responder.default = flaky
    monkeypatch.setenv("MODEL_TIMEOUT_SECONDS", "0.3")
    monkeypatch.setenv("MODEL_MAX_ATTEMPTS", "2")
    # Bursts of failures open the shared breaker, which parks items instead of dead-lettering them. The suite runs
    # in about a minute, so the breaker counts in 10 s windows (its default minute would hold the whole run's 30%
    # failures and keep reopening), with a short cool-down, and the resume function runs between rounds as its
    # schedule would. tests/integration/test_spend_control.py tests the breaker itself.
    monkeypatch.setenv("BREAKER_WINDOW_SECONDS", "10")
    monkeypatch.setenv("BREAKER_COOLDOWN_SECONDS", "1")
    resources = deployment.resources

    # GIVEN 200 object versions and 12 deletions, their notifications duplicated and shuffled
    versions, deletions = build_uploads(deployment, rng)
    sqs = deployment.client("sqs")
    sqs.purge_queue(QueueUrl=resources.queue_url)  # moto's own S3 notifications carry no sequencer: ours do
    bodies = notifications_for(deployment, versions, deletions)
    duplicates = rng.sample(bodies, int(len(bodies) * DUPLICATE_SHARE))
    deliveries = bodies + duplicates
    rng.shuffle(deliveries)
    for start in range(0, len(deliveries), 10):
        sqs.send_message_batch(
            QueueUrl=resources.queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(deliveries[start : start + 10])],
        )

    # WHEN two function instances poll the queue at once; failed items come back after 1 s
    feeders = [QueueFeeder.for_stack(sqs, resources, app.lambda_handler, retry_delay_seconds=1) for _ in range(2)]
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda f=f: reports.append(f.drain(max_invocations=500))) for f in feeders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    resumed = parked_rounds = 0
    give_up = time.monotonic() + 240
    while any(r.get("status") == "deferred" for r in scan(deployment, resources.table)):
        parked_rounds += 1
        assert time.monotonic() < give_up, f"parked items keep coming back after {parked_rounds} rounds"
        time.sleep(1.1)  # the cool-down
        resumed += resume_app.lambda_handler({}, FakeLambdaContext())["resumed"]
        threads = [threading.Thread(target=lambda f=f: reports.append(f.drain(max_invocations=500))) for f in feeders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # THEN every object version ends in exactly one terminal state
    records = {(r["bucket"], r["key"]): r for r in scan(deployment, resources.table)}
    notifications = deployment.received_notifications()
    dead = drain_queue_bodies(deployment, resources.dlq_url)
    dead_versions = {
        (record["s3"]["object"]["key"], record["s3"]["object"].get("versionId") or record["eventName"])
        for body in dead
        for record in body["Records"]
    }
    by_version: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for notification in notifications:
        message = notification["message"]
        by_version[(message["key"], message.get("version_id"))].append(message)

    newest_applied: dict[str, str] = {key: str(r["order_key"]) for (_, key), r in records.items()}
    states: Counter[str] = Counter()
    lost: list[Any] = []
    for version in versions:
        published = by_version.get((version.key, version.version_id), [])
        statuses = [m["status"] for m in published]
        assert len(statuses) <= 1, f"{version.key} {version.version_id} notified {len(statuses)} times"
        order = "s" + hex_sequencer(version.sequencer).rjust(SEQUENCER_WIDTH, "0")
        encoded = quote_plus(version.key, safe="/")
        if statuses:
            states[statuses[0]] += 1
            if statuses[0] == "failed":
                assert published[0]["error_type"], "a failed version says why"
        elif newest_applied.get(version.key, "") > order:
            states["superseded"] += 1  # a newer event for its key was applied first: nothing to do
        elif (encoded, version.version_id) in dead_versions:
            states["dead-lettered"] += 1
        else:
            states["lost"] += 1
            lost.append((version.key, records.get((resources.bucket, version.key))))
    assert states["lost"] == 0, f"no object version may be lost: {lost}"

    # AND no stale overwrite, no resurrection: once an event is applied to a key, no older one is
    def padded(sequencer: str) -> str:
        return sequencer.rjust(SEQUENCER_WIDTH, "0")

    applied_by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for notification in notifications:
        applied_by_key[notification["message"]["key"]].append(notification["message"])
    stale_overwrites = resurrections = 0
    for key, applied in applied_by_key.items():
        applied.sort(key=lambda m: m["processed_at"])
        for earlier, later in itertools.pairwise(applied):
            if padded(later["sequencer"]) < padded(earlier["sequencer"]):
                stale_overwrites += 1
                resurrections += earlier["status"] == "deleted"
        newest = max(applied, key=lambda m: padded(m["sequencer"]))
        record = records[(resources.bucket, key)]
        if record["status"] == "processing":
            # A newer event holds the key and was dead-lettered: never an older one.
            assert record["order_key"] > "s" + padded(newest["sequencer"]), f"{key} went back in time"
            assert record.get("last_error_type"), f"{key} says why it is still processing"
        else:
            assert record["order_key"] == "s" + padded(newest["sequencer"]), f"{key} holds its newest applied event"
            assert record["status"] == newest["status"]
    assert stale_overwrites == 0 and resurrections == 0
    deleted_notifications = [n for n in notifications if n["message"]["status"] == "deleted"]
    assert len(deleted_notifications) == len({n["message"]["key"] for n in deleted_notifications})

    # AND one success notification per succeeded version; the model was paid once per distinct content
    succeeded_contents = {
        v.content
        for v in versions
        if any(m["status"] == "succeeded" for m in by_version.get((v.key, v.version_id), []))
    }
    # Successes and permanent failures are both shared with twins; the paid successes are the first kind.
    ready = [
        e
        for e in scan(deployment, function_env["CONTENT_CACHE_TABLE"])
        if e.get("state") == "ready" and e.get("status") == "succeeded"
    ]
    succeeded_paid = sum(
        1 for n in notifications if n["message"]["status"] == "succeeded" and not n["message"]["cache_hit"]
    )

    summary = [
        ("object versions", VERSIONS),
        ("deletions", len(deletions)),
        ("deliveries (with 30% duplicates)", len(deliveries)),
        ("invocations (2 instances)", sum(r.invocations for r in reports)),
        ("items reported failed", sum(r.failed_items for r in reports)),
        ("model calls", sum(flaky.faults.values())),
        *((f"  model {name}", count) for name, count in sorted(flaky.faults.items())),
        ("versions succeeded", states["succeeded"]),
        ("versions failed (with a reason)", states["failed"]),
        ("versions superseded before processing", states["superseded"]),
        ("versions dead-lettered", states["dead-lettered"]),
        ("items parked by the breaker and resumed", resumed),
        ("rounds of the resume function", parked_rounds),
        ("versions lost", states["lost"]),
        ("success notifications", sum(1 for n in notifications if n["message"]["status"] == "succeeded")),
        ("deleted notifications", len(deleted_notifications)),
        ("paid successful model answers", flaky.good_answers),
        ("distinct contents described (cache)", len(ready)),
        ("distinct contents among succeeded versions", len(succeeded_contents)),
        ("successes described by the model (not cache)", succeeded_paid),
        ("stale overwrites", stale_overwrites),
        ("resurrections", resurrections),
        ("DLQ messages", len(dead)),
    ]
    with capsys.disabled():
        print("\nFault-injection summary")
        for name, value in summary:
            print(f"  {name:<48} {value:>6}")

    assert states["succeeded"] == sum(1 for n in notifications if n["message"]["status"] == "succeeded")
    assert flaky.good_answers == len(ready), "each paid successful answer is cached once: no content paid twice"
    assert succeeded_contents <= {e["content_key"].split("|")[0] for e in ready}
    assert succeeded_paid <= len(ready)
