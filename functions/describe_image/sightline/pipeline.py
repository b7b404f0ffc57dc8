"""The use case: one object event in, at most one paid description, one stored record, one notification.

S3 and SQS deliver at least once and out of order. Exactly-once effects come from conditional writes:
a delivery first *claims* the key's record for its event (refused when a newer event was already
applied, or when another delivery holds the claim), writes the result only while it still holds the
claim, and notifies only once per applied event. Identical bytes are described once per model, prompt
and detail: a content cache, claimed the same way, serves every other key with those bytes — failures
included, so ten twins of a file the model refuses cost one call, not ten.
"""

from __future__ import annotations

import email.header
import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sightline.describe import DescribeOptions, describe_image
from sightline.errors import (
    InProgressError,
    InvalidMetadataError,
    ObjectChangedError,
    ObjectTooLargeError,
    PermanentInputError,
    RecordRejectedError,
    SightlineError,
)
from sightline.events import ObjectEvent
from sightline.ordering import order_key, version_token
from sightline.ports import (
    ContentCache,
    ModelUsage,
    Notifier,
    ObjectFacts,
    ObjectStore,
    ResultStore,
    ReviewChangedError,
    VisionModel,
)
from sightline.profiles import Profile, ProfileSet, normalize_language
from sightline.prompt import CONTEXT_MAX_BYTES
from sightline.records import (
    DescribeResult,
    build_deleted_record,
    build_failed_storage_record,
    build_notification,
    build_record,
    with_review,
)
from sightline.settings import Settings
from sightline.text import bounded

# A claim outlives the invocation that took it by this much; after that another delivery may take over.
CLAIM_MARGIN_MS = 30_000
DEFAULT_CLAIM_MS = 15 * 60 * 1000
# A twin waits for the delivery describing identical content this long at most (bounded by the deadline too).
TWIN_WAIT_SECONDS = 120.0
TWIN_POLL_SECONDS = (0.2, 0.5, 1.0, 2.0)
# A shared failure is kept for a day only: it may stem from settings an operator changes (a gateway's limit).
FAILED_CACHE_TTL_SECONDS = 24 * 3600
# Per-object overrides from the object's own S3 user metadata (x-amz-meta-…), read from the GetObject response.
METADATA_PROFILE = "sightline-profile"
METADATA_LANGUAGE = "sightline-language"
METADATA_CONTEXT = "sightline-context"
STORE_ATTEMPTS = 3  # a review written while the key is re-described: store again with it

OutcomeStatus = Literal["succeeded", "failed", "deleted", "skipped", "stale", "duplicate"]


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    event: ObjectEvent
    record: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def usage(self) -> dict[str, Any]:
        return (self.record or {}).get("usage", {})


def content_key(digest: str, options: DescribeOptions) -> str:
    """Identical bytes (their sha256) and everything that changes the answer → the same result may be reused."""
    return f"{digest}|{options.fingerprint}"


def metadata_text(value: str) -> str:
    """S3 user metadata is ASCII: other text arrives as RFC 2047 encoded words (=?UTF-8?B?…?=), decoded here."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return value


def _error_name(exc: BaseException) -> str:
    return exc.error_type if isinstance(exc, SightlineError) else type(exc).__name__


def _error_text(exc: BaseException) -> str:
    return exc.message if isinstance(exc, SightlineError) else f"{type(exc).__name__}: {exc}"


@dataclass
class Pipeline:
    settings: Settings
    objects: ObjectStore
    results: ResultStore
    notifier: Notifier
    model: VisionModel
    profiles: ProfileSet = field(default_factory=lambda: ProfileSet(profiles=(), default=Profile(name="default")))
    cache: ContentCache | None = None
    # Decoding is the memory-hungry step: bound it separately from the network-bound model calls.
    prepare_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(2))
    wall_clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    sleep: Callable[[float], None] = field(default=time.sleep)

    def options(self, profile: Profile, metadata: dict[str, str] | None = None) -> DescribeOptions:
        """The profile's options with the object's own overrides (profile, language, context) applied."""
        metadata = metadata or {}
        language = None
        if METADATA_LANGUAGE in metadata:
            raw = metadata_text(metadata[METADATA_LANGUAGE]).strip()
            language = normalize_language(raw)
            if language is None:
                raise InvalidMetadataError(f"x-amz-meta-{METADATA_LANGUAGE} {raw!r} is not a BCP 47 language tag")
        context = bounded(metadata_text(metadata.get(METADATA_CONTEXT, "")).strip(), CONTEXT_MAX_BYTES) or None
        return DescribeOptions.for_profile(profile, self.settings, language=language, context=context)

    def _profile(self, matched: Profile, metadata: dict[str, str]) -> Profile:
        """The object's own x-amz-meta-sightline-profile wins over the profile its key matched."""
        name = metadata_text(metadata.get(METADATA_PROFILE, "")).strip()
        if not name:
            return matched
        chosen = self.profiles.get(name)
        if chosen is None:
            known = ", ".join([p.name for p in self.profiles.profiles] + (["default"] if self.profiles.default else []))
            raise InvalidMetadataError(f"x-amz-meta-{METADATA_PROFILE} names no profile: {name!r} (known: {known})")
        return chosen

    def process(self, event: ObjectEvent, deadline: float | None = None) -> Outcome:
        """Apply one event. Permanent errors become a failed record; anything else propagates for a retry,
        after the claim is released with the error's type — whatever the exception is."""
        if not (event.is_create or event.is_removal):
            return Outcome("skipped", event, reason=f"{event.event_name} is not handled")
        if not self.settings.accepts_key(event.key):
            return Outcome("skipped", event, reason="key does not match OBJECT_KEY_SUFFIXES")
        matched = self.profiles.for_key(event.key)
        if matched is None:
            return Outcome("skipped", event, reason="no profile matches the key and the profiles file has no default")

        now_ms = self.wall_clock_ms()
        claim_id = uuid.uuid4().hex
        until_ms = now_ms + self._claim_ms(deadline)
        order, version = order_key(event), version_token(event)
        claim = self.results.claim(
            event, order=order, version=version, claim_id=claim_id, until_ms=until_ms, now_ms=now_ms
        )
        if claim.kind == "stale":
            return Outcome("stale", event, reason="a newer event for this key was already applied")
        if claim.kind == "in_progress":
            raise InProgressError(f"another delivery is processing {event.uri} right now")
        if claim.kind == "duplicate":
            assert claim.current is not None
            # Stored earlier; the notification may not have gone out (publish failed after the write).
            self._notify_once(claim.current, until_ms)
            return Outcome("duplicate", event, record=claim.current, reason="this event was already applied")

        # Calls paid by earlier deliveries of this same event (released after a transient error) count too.
        previous = claim.current or {}
        usage = ModelUsage.from_item(previous.get("attempt_usage") if previous.get("order_key") == order else None)
        try:
            record = (
                build_deleted_record(event)
                if event.is_removal
                else self._describe_object(event, matched, claim_id, deadline, usage, previous.get("review"))
            )
        except ObjectChangedError as exc:
            # The key was overwritten after this event: the newer version's own event will be applied.
            self.results.release(event, claim_id, "ObjectChanged", exc.message, usage)
            return Outcome("stale", event, reason=exc.message)
        except BaseException as exc:
            # Transient errors, and any bug: never leave the claim held, always say why.
            self.results.release(event, claim_id, _error_name(exc), _error_text(exc), usage)
            raise
        record.update(order_key=order, version_token=version, notified=False)
        if not self._store(record, claim_id):
            return Outcome("stale", event, reason="a newer event took over this key while it was processed")
        self._notify_once(record, until_ms)
        return Outcome(record["status"], event, record=record, reason=record.get("error_type"))

    def _store(self, record: dict[str, Any], claim_id: str) -> bool:
        for _ in range(STORE_ATTEMPTS - 1):
            try:
                return self._complete(record, claim_id)
            except ReviewChangedError as changed:
                # A person reviewed the alt text meanwhile: their value wins, never our overwrite.
                for name in ("review", "alt_text_reviewed", "review_stale"):
                    record.pop(name, None)
                if changed.review:
                    record.update(with_review(record, changed.review))
        return self._complete(record, claim_id)

    def _complete(self, record: dict[str, Any], claim_id: str) -> bool:
        try:
            return self.results.complete(record, claim_id)
        except RecordRejectedError as exc:
            # Our fault (fields are bounded, so this should not happen): keep the key's facts and the reason
            # instead of retrying the same refused write into the DLQ.
            fallback = build_failed_storage_record(record, exc.message)
            record.clear()
            record.update(fallback)
            return self.results.complete(record, claim_id)

    def _claim_ms(self, deadline: float | None) -> int:
        if deadline is None:
            return DEFAULT_CLAIM_MS
        return max(0, int((deadline - time.monotonic()) * 1000)) + CLAIM_MARGIN_MS

    def _notify_once(self, record: dict[str, Any], until_ms: int) -> None:
        """Published only after the record is stored, and once per applied event."""
        if record.get("notified") or not self.results.claim_notification(record, until_ms, self.wall_clock_ms()):
            return
        try:
            try:
                self.notifier.publish(*build_notification(record, self.settings.results_table))
            except RecordRejectedError:
                # SNS refused the message itself: the record holds every field, so announce it without them.
                self.notifier.publish(*build_notification(record, self.settings.results_table, minimal=True))
        except BaseException:
            self.results.mark_notified(record, notified=False)  # free the notification claim for the retry
            raise
        self.results.mark_notified(record, notified=True)
        record["notified"] = True

    def _describe_object(
        self,
        event: ObjectEvent,
        profile: Profile,
        claim_id: str,
        deadline: float | None,
        usage: ModelUsage,
        review: dict[str, Any] | None,
    ) -> dict[str, Any]:
        facts: ObjectFacts | None = None
        digest = None
        try:
            if event.size is not None and event.size > self.settings.max_object_bytes:
                raise ObjectTooLargeError.for_size(event.size, self.settings.max_object_bytes)
            fetched = self.objects.fetch(event, self.settings.max_object_bytes)
            facts = fetched.facts
            digest = hashlib.sha256(fetched.body).hexdigest()
            profile = self._profile(profile, facts.metadata)
            options = self.options(profile, facts.metadata)
            result = self._describe_content(fetched.body, digest, options, claim_id, deadline, usage)
        except PermanentInputError as exc:
            # Refused before the object's own overrides applied (size, fetch, bad metadata): recorded under the
            # profile chosen so far. Failures of the description itself come back as results, not exceptions.
            result = self.options(profile).failure(exc, usage)
        return build_record(event, facts, result, content_sha256=digest, review=review)

    def _describe_content(
        self,
        body: bytes,
        digest: str,
        options: DescribeOptions,
        claim_id: str,
        deadline: float | None,
        usage: ModelUsage,
    ) -> DescribeResult:
        """The content cache first; on a miss, claim the content so concurrent twins wait instead of paying."""
        if self.cache is None:
            return self._describe(body, options, deadline, usage)
        key = content_key(digest, options)
        cached = self.cache.get(key)
        if cached is None and not self._claim_content(key, claim_id, deadline):
            cached = self._wait_for_twin(key, claim_id, deadline)
        if cached is not None:
            return DescribeResult.from_item(cached).as_cache_hit(options.profile)
        try:
            result = self._describe(body, options, deadline, usage)
        except BaseException:
            self.cache.release(key, claim_id)  # transient failures are not shared: another key may try again
            raise
        self.cache.put(key, result.to_item(), None if result.succeeded else FAILED_CACHE_TTL_SECONDS)
        return result

    def _claim_content(self, key: str, claim_id: str, deadline: float | None) -> bool:
        assert self.cache is not None
        now_ms = self.wall_clock_ms()
        return self.cache.claim(key, claim_id, now_ms + self._claim_ms(deadline), now_ms)

    def _wait_for_twin(self, key: str, claim_id: str, deadline: float | None) -> dict[str, Any] | None:
        """Identical content is being described for another key: wait for its result (success or failure)
        rather than paying again; take the claim over if the other delivery gave it up."""
        assert self.cache is not None
        give_up = time.monotonic() + TWIN_WAIT_SECONDS
        if deadline is not None:
            give_up = min(give_up, deadline)
        for attempt in range(10_000):
            pause = TWIN_POLL_SECONDS[min(attempt, len(TWIN_POLL_SECONDS) - 1)]
            if time.monotonic() + pause > give_up:
                break
            self.sleep(pause)
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            if self._claim_content(key, claim_id, deadline):
                return None  # the other delivery failed transiently and released it: describe it ourselves
        raise InProgressError("identical content is being described for another key right now")

    def _describe(
        self, body: bytes, options: DescribeOptions, deadline: float | None, usage: ModelUsage
    ) -> DescribeResult:
        return describe_image(
            body, options, self.model, deadline=deadline, usage=usage, prepare_slots=self.prepare_slots
        )


__all__ = ["Outcome", "Pipeline", "content_key"]
