"""Event order and object-version identity, so an older event never overwrites a newer result."""

from __future__ import annotations

from typing import Any

from sightline.events import ObjectEvent
from sightline.ports import Claim
from sightline.records import TERMINAL

# S3 sequencers are hexadecimal strings of varying length; S3 documents comparing them by padding the
# shorter with leading zeros. Padding to a fixed width makes DynamoDB's string comparison do exactly that.
SEQUENCER_WIDTH = 32


def version_token(event: ObjectEvent) -> str:
    """One object version: its versionId in a versioned bucket, else its ETag."""
    return event.version_id or (event.etag or "").strip('"') or "unknown"


def order_key(event: ObjectEvent) -> str:
    """A string that sorts like the events of one key happened.

    With a sequencer (every real S3 event of a put or delete) the order is S3's own. Without one
    (some emulators, hand-made events) the event time decides, to the millisecond, with the version
    token breaking ties deterministically.
    """
    if event.sequencer:
        return "s" + event.sequencer.strip().upper().rjust(SEQUENCER_WIDTH, "0")
    return f"t{event.event_time}#{version_token(event)}"


def refused_claim(current: dict[str, Any] | None, order: str) -> Claim:
    """Why a claim for the event ordered ``order`` was refused, judged from the key's current record."""
    if current is None or str(current.get("order_key", "")) < order:
        return Claim("in_progress")  # changed between the write and the read: let the retry decide
    if str(current["order_key"]) > order:
        return Claim("stale", current)
    if current.get("status") in TERMINAL:
        return Claim("duplicate", current)
    if current.get("fanout_order") == order:
        # The event's document is being described in page ranges: its delivery's work is done.
        return Claim("duplicate", current)
    return Claim("in_progress", current)
