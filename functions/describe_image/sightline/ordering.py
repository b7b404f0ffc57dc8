"""Event order and object-version identity, so an older event never overwrites a newer result.

Order keys sort by their first letter before anything else:

- ``b…`` a backfill item (``sightline backfill``, S3 Batch Operations): applies only where no event has been
  applied yet (or only an older backfill item). It never outranks, and so never blocks, a real S3 event.
- ``h…`` an event without a sequencer (some emulators, hand-made test events): ordered by event time among
  themselves, below every real event.
- ``s…`` a real S3 event: ordered by S3's own sequencer.
- ``t…`` written by earlier versions for events without a sequencer: it sorted above every real event and
  blocked them; a real event now takes over such a record (see the claim condition).
"""

from __future__ import annotations

from typing import Any

from sightline.events import ObjectEvent
from sightline.ports import Claim
from sightline.records import DELETED, PROCESSING, TERMINAL

# S3 sequencers are hexadecimal strings of varying length; S3 documents comparing them by padding the
# shorter with leading zeros. Padding to a fixed width makes DynamoDB's string comparison do exactly that.
SEQUENCER_WIDTH = 32
SEQUENCED_PREFIX = "s"
LEGACY_TIMED_PREFIX = "t"


def version_token(event: ObjectEvent) -> str:
    """One object version: its versionId in a versioned bucket, else its ETag."""
    return event.version_id or (event.etag or "").strip('"') or "unknown"


def order_key(event: ObjectEvent) -> str:
    """A string that sorts like the events of one key happened (see the module's docstring)."""
    if event.backfill is not None:
        # Two backfills of one key: the newer object version (LastModified) wins.
        return f"b{event.backfill.last_modified or event.event_time}#{version_token(event)}"
    if event.sequencer:
        return SEQUENCED_PREFIX + event.sequencer.strip().upper().rjust(SEQUENCER_WIDTH, "0")
    return f"h{event.event_time}#{version_token(event)}"


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


def refused_forced_claim(current: dict[str, Any] | None, run: str) -> Claim:
    """Why a forced backfill item (describe again, once per run) may not take the key's record."""
    if current is None:
        return Claim("in_progress")  # changed between the write and the read
    status = current.get("status")
    if status == DELETED:
        return Claim("stale", current)  # the object was deleted after it was listed
    if current.get("forced_run") == run and status in TERMINAL:
        return Claim("duplicate", current)
    if status == PROCESSING:
        return Claim("in_progress", current)  # another delivery is describing it right now: retry later
    return Claim("stale", current)  # parked (its own event resumes it), or forced already in this run
