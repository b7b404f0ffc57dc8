"""Resuming parked items: every deferred record's event is sent back to the uploads queue once its reason is gone.

Run every minute by the scheduled resume function, and at once by ``sightline budget resume``. The send comes
first and the record is marked after it: a crash in between sends the event twice, and the claim applies it once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sightline.ports import ResultStore, WorkQueue

SEND_CHUNK = 10  # one SendMessageBatch


@dataclass
class ResumeReport:
    resumed: int = 0  # sent again
    left: int = 0  # still parked: their reason holds (budget still reached, provider still paused)
    skipped: int = 0  # the key moved on while parked, or the record was unreadable
    keys: list[str] = field(default_factory=list)  # s3://bucket/key of the resumed records, for the operator


def due(now_ms: int) -> Callable[[dict[str, Any]], bool]:
    """The default readiness: the time the deferral named has come (next UTC day, end of the cool-down)."""
    return lambda record: int(record.get("deferred_until") or 0) <= now_ms


def resume_deferred(
    results: ResultStore,
    queue: WorkQueue,
    *,
    ready: Callable[[dict[str, Any]], bool],
    limit: int,
) -> ResumeReport:
    """Send back up to ``limit`` parked events for which ``ready(record)`` holds (readiness is the caller's: see
    ``due``)."""
    report = ResumeReport()
    ready_records: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for record in results.deferred(limit):
        try:
            event_record = json.loads(str(record["deferred_event"]))
        except (KeyError, ValueError):
            report.skipped += 1
            continue
        if not ready(record):
            report.left += 1
            continue
        ready_records.append((record, event_record))
    for start in range(0, len(ready_records), SEND_CHUNK):
        chunk = ready_records[start : start + SEND_CHUNK]
        queue.send([{"Records": [event_record]} for _, event_record in chunk])
        for record, _ in chunk:
            if results.mark_resumed(str(record["bucket"]), str(record["key"]), str(record["order_key"])):
                report.resumed += 1
                report.keys.append(f"s3://{record['bucket']}/{record['key']}")
            else:
                report.skipped += 1  # a newer event took the key: the event just sent is stale, and harmless
    return report
