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
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sightline.decode_budget import DecodeBudget, capacity_for
from sightline.describe import DescribeOptions, describe_image
from sightline.documents import (
    DocumentResult,
    PageDescriber,
    PageResult,
    add_usage,
    assemble_document,
    document_failure,
    render_pages,
)
from sightline.errors import (
    ConfigurationError,
    DeferredError,
    InProgressError,
    InvalidMetadataError,
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PermanentInputError,
    RecordRejectedError,
    SightlineError,
)
from sightline.events import ObjectEvent, PageRangeItem
from sightline.ordering import order_key, version_token
from sightline.pages import DocumentKind, RenderedPage, document_kind
from sightline.ports import (
    ContentCache,
    DocumentStore,
    FetchedObject,
    ImageHost,
    ModelUsage,
    Notifier,
    ObjectFacts,
    ObjectStore,
    PageRenderer,
    ResultStore,
    ReviewChangedError,
    VisionModel,
    WorkQueue,
)
from sightline.profiles import Profile, ProfileSet, normalize_language
from sightline.prompt import CONTEXT_MAX_BYTES
from sightline.records import (
    PROCESSING,
    DescribeResult,
    build_deleted_record,
    build_failed_storage_record,
    build_notification,
    build_record,
    with_review,
)
from sightline.redaction import redact
from sightline.settings import Settings
from sightline.spend import SpendGuard
from sightline.text import bounded

RESULTS_PREFIX = "results/"  # keep in step with the results bucket's lifecycle rules (template.yaml)
WORK_PREFIX = "work/"

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

OutcomeStatus = Literal[
    "succeeded",
    "partial",
    "failed",
    "deleted",
    "skipped",
    "stale",
    "duplicate",
    "fanned_out",
    "range_done",
    "deferred",
]
# A deferred page range goes back to the queue with a delay (SQS allows 15 minutes at most): never sooner than this.
MIN_RANGE_DEFER_SECONDS = 60


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    event: ObjectEvent
    record: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def usage(self) -> dict[str, Any]:
        return (self.record or {}).get("usage", {})


@dataclass(frozen=True)
class FanOut:
    """The document is too long for one invocation: it goes out as page ranges."""

    facts: ObjectFacts
    digest: str
    page_count: int
    kind: DocumentKind


# S3 keys are at most 1,024 bytes: a result's key names its source when it fits, and a hash of it otherwise.
RESULT_KEY_MAX_BYTES = 1_000


def source_version(event: ObjectEvent, facts: ObjectFacts) -> str:
    """The object version that was read: its versionId, else its ETag, else what the event said."""
    return facts.version_id or facts.etag or version_token(event)


def result_prefix(event: ObjectEvent, facts: ObjectFacts) -> str:
    """Where a document's result objects go: one prefix per source object version, never overwritten by another."""
    version = source_version(event, facts)
    readable = f"{RESULTS_PREFIX}{event.bucket}/{event.key}/{version}/"
    if len(readable.encode()) + len("document.json") <= RESULT_KEY_MAX_BYTES:
        return readable
    digest = hashlib.sha256(f"{event.bucket}/{event.key}".encode()).hexdigest()
    return f"{RESULTS_PREFIX}_hashed/{digest}/{hashlib.sha256(version.encode()).hexdigest()[:32]}/"


def work_key(item: PageRangeItem) -> str:
    """A page range's partial result: per key, applied event and range (a newer event never reads it)."""
    digest = hashlib.sha256(f"{item.event.bucket}/{item.event.key}#{item.order}".encode()).hexdigest()
    return f"{WORK_PREFIX}{digest}/pages-{item.range_id}.json"


def _forced(event: ObjectEvent) -> bool:
    return event.backfill is not None and event.backfill.force


@dataclass(frozen=True)
class RefreshingCache:
    """The content cache for a forced item: nothing is read from it (every answer is paid for again), and what is
    described replaces the entry, so the keys that share the content get the new answer."""

    cache: ContentCache

    def get(self, content_key: str) -> dict[str, Any] | None:
        return None

    def claim(self, content_key: str, claim_id: str, until_ms: int, now_ms: int) -> bool:
        return True

    def put(self, content_key: str, entry: dict[str, Any], ttl_seconds: int | None = None) -> None:
        self.cache.put(content_key, entry, ttl_seconds)

    def release(self, content_key: str, claim_id: str) -> None:
        return None


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
    return exc.message if isinstance(exc, SightlineError) else redact(f"{type(exc).__name__}: {exc}")


@dataclass
class Pipeline:
    settings: Settings
    objects: ObjectStore
    results: ResultStore
    notifier: Notifier
    model: VisionModel
    profiles: ProfileSet = field(default_factory=lambda: ProfileSet(profiles=(), default=Profile(name="default")))
    cache: ContentCache | None = None
    # Decoding is the memory-hungry step: bounded by the bytes of pixels in flight (not by the model calls, which
    # wait on the network), so ten images at the pixel limit never decode at once.
    decode_budget: DecodeBudget = field(default_factory=lambda: DecodeBudget(capacity_for(2048)))
    # Page requests in flight in this instance, whatever the number of page ranges in its batch: a batch of ten
    # ranges must not put 10 × DOCUMENT_CONCURRENCY requests on the provider's rate limit at once.
    page_request_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(16))
    wall_clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    sleep: Callable[[float], None] = field(default=time.sleep)
    # Documents: the renderer (PDF in a child process), the results bucket, the queue long documents fan out
    # through, and the image host for URL mode (None: base64, the default).
    renderer: PageRenderer | None = None
    documents: DocumentStore | None = None
    work_queue: WorkQueue | None = None
    image_host: ImageHost | None = None
    # Spend control: every model call goes through it (calls in flight, the daily budget, the provider breaker).
    spend_guard: SpendGuard | None = None

    def _model(self, options: DescribeOptions) -> VisionModel:
        """The model as this object's calls see it: bounded, budgeted and paused under its profile's name."""
        if self.spend_guard is None:
            return self.model
        return self.spend_guard.wrap(self.model, options.profile)

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

    def _backfill_profile(self, event: ObjectEvent) -> Profile | None:
        """The operator's profile for a backfill run (``--profile``); it wins over the key's and the metadata's."""
        name = event.backfill.profile if event.backfill else None
        if not name:
            return None
        profile = self.profiles.get(name)
        if profile is None:
            # The operator's mistake, not the object's: the item goes to the DLQ with this reason, alarmed.
            raise ConfigurationError(f"the backfill names no profile: {name!r}")
        return profile

    def _profile(self, matched: Profile, metadata: dict[str, str], event: ObjectEvent | None = None) -> Profile:
        """The object's own x-amz-meta-sightline-profile wins over the profile its key matched; a backfill run's
        profile wins over both."""
        chosen = self._backfill_profile(event) if event is not None else None
        if chosen is not None:
            return chosen
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
        matched = self._backfill_profile(event) or self.profiles.for_key(event.key)
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
            if event.backfill is not None:
                return Outcome("stale", event, reason="backfill item: the key already has a record of its own event")
            return Outcome("stale", event, reason="a newer event for this key was already applied")
        order = claim.order or order  # a forced backfill item keeps the order of the event already applied
        if claim.kind == "in_progress":
            raise InProgressError(f"another delivery is processing {event.uri} right now")
        if claim.kind == "duplicate":
            assert claim.current is not None
            if claim.current.get("status") == PROCESSING:  # fanned out: the page ranges finish and notify
                return Outcome("duplicate", event, reason="the document's page ranges are being described")
            # Stored earlier; the notification may not have gone out (publish failed after the write).
            self._notify_once(claim.current, until_ms)
            return Outcome("duplicate", event, record=claim.current, reason="this event was already applied")

        # Calls paid by earlier deliveries of this same event (released after a transient error) count too.
        previous = claim.current or {}
        usage = ModelUsage.from_item(previous.get("attempt_usage") if previous.get("order_key") == order else None)
        try:
            if event.is_removal:
                record = build_deleted_record(event)
            else:
                described = self._describe_object(event, matched, claim_id, deadline, usage, previous.get("review"))
                if isinstance(described, FanOut):
                    return self._fan_out(event, described, order, version, claim_id)
                record = described
        except ObjectChangedError as exc:
            # The key was overwritten after this event: the newer version's own event will be applied.
            self.results.release(event, claim_id, "ObjectChanged", exc.message, usage)
            return Outcome("stale", event, reason=exc.message)
        except DeferredError as exc:
            # Budget reached or provider paused: parked in the record, sent again when the reason is gone.
            if not self.results.defer(event, claim_id, exc.error_type, exc.message, usage, exc.resume_after_ms):
                return Outcome("stale", event, reason="a newer event took over this key while it was processed")
            return Outcome("deferred", event, reason=exc.error_type)
        except BaseException as exc:
            # Transient errors, and any bug: never leave the claim held, always say why.
            self.results.release(event, claim_id, _error_name(exc), _error_text(exc), usage)
            raise
        record.update(order_key=order, version_token=version, notified=False)
        # A forced run applies once: the record remembers the last one, whichever event stores it afterwards.
        forced_run = event.backfill.run if _forced(event) and event.backfill else previous.get("forced_run")
        if forced_run:
            record["forced_run"] = forced_run
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
    ) -> dict[str, Any] | FanOut:
        facts: ObjectFacts | None = None
        digest = None
        try:
            if event.size is not None and event.size > self.settings.max_object_bytes:
                raise ObjectTooLargeError.for_size(event.size, self.settings.max_object_bytes)
            fetched = self.objects.fetch(event, self.settings.max_object_bytes)
            facts = fetched.facts
            digest = hashlib.sha256(fetched.body).hexdigest()
            profile = self._profile(profile, facts.metadata, event)
            options = self.options(profile, facts.metadata)
            kind = document_kind(fetched.body)
            if kind is not None:
                return self._describe_document(event, fetched, digest, kind, options, deadline, usage, review)
            result = self._describe_content(fetched.body, digest, options, claim_id, deadline, usage, event)
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
        event: ObjectEvent,
    ) -> DescribeResult:
        """The content cache first; on a miss, claim the content so concurrent twins wait instead of paying."""
        cache = self._cache_for(event)
        if cache is None:
            return self._describe(body, options, deadline, usage)
        key = content_key(digest, options)
        cached = cache.get(key)
        if cached is None and not self._claim_content(cache, key, claim_id, deadline):
            cached = self._wait_for_twin(cache, key, claim_id, deadline)
        if cached is not None:
            return DescribeResult.from_item(cached).as_cache_hit(options.profile)
        try:
            result = self._describe(body, options, deadline, usage)
        except BaseException:
            cache.release(key, claim_id)  # transient failures are not shared: another key may try again
            raise
        cache.put(key, result.to_item(), None if result.succeeded else FAILED_CACHE_TTL_SECONDS)
        return result

    def _claim_content(self, cache: ContentCache, key: str, claim_id: str, deadline: float | None) -> bool:
        now_ms = self.wall_clock_ms()
        return cache.claim(key, claim_id, now_ms + self._claim_ms(deadline), now_ms)

    def _wait_for_twin(
        self, cache: ContentCache, key: str, claim_id: str, deadline: float | None
    ) -> dict[str, Any] | None:
        """Identical content is being described for another key: wait for its result (success or failure)
        rather than paying again; take the claim over if the other delivery gave it up."""
        give_up = time.monotonic() + TWIN_WAIT_SECONDS
        if deadline is not None:
            give_up = min(give_up, deadline)
        for attempt in range(10_000):
            pause = TWIN_POLL_SECONDS[min(attempt, len(TWIN_POLL_SECONDS) - 1)]
            if time.monotonic() + pause > give_up:
                break
            self.sleep(pause)
            cached = cache.get(key)
            if cached is not None:
                return cached
            if self._claim_content(cache, key, claim_id, deadline):
                return None  # the other delivery failed transiently and released it: describe it ourselves
        raise InProgressError("identical content is being described for another key right now")

    def _describe(
        self, body: bytes, options: DescribeOptions, deadline: float | None, usage: ModelUsage
    ) -> DescribeResult:
        return describe_image(
            body,
            options,
            self._model(options),
            deadline=deadline,
            usage=usage,
            decode_budget=self.decode_budget,
            image_host=self.image_host,
        )

    # --- Documents: PDFs and multi-page TIFFs.

    def _describe_document(
        self,
        event: ObjectEvent,
        fetched: FetchedObject,
        digest: str,
        kind: DocumentKind,
        options: DescribeOptions,
        deadline: float | None,
        usage: ModelUsage,
        review: dict[str, Any] | None,
    ) -> dict[str, Any] | FanOut:
        """A short document is described here, whole; a longer one is split into page ranges (FanOut) when a work
        queue is configured. The first range is rendered first: it runs every refusal and counts the pages."""
        step = self.settings.document_range_pages
        fan_out = self.work_queue is not None
        facts = fetched.facts
        try:
            page_count, rendered, failed = self._render_pages(fetched.body, range(1, step + 1) if fan_out else None)
        except PermanentInputError as exc:
            result = document_failure(exc, kind=kind, options=options, usage=usage)
            return build_record(event, facts, result, content_sha256=digest, review=review)
        if page_count > step and fan_out:
            return FanOut(facts=facts, digest=digest, page_count=page_count, kind=kind)
        owner = self._owner(event, facts)
        pages = self._page_describer(options, owner, event).describe(rendered, deadline, usage)
        result = self._finish_document(
            event,
            facts,
            [*pages, *failed],
            kind=kind,
            page_count=page_count,
            options=options,
            deadline=deadline,
            usage=usage,
        )
        return build_record(event, facts, result, content_sha256=digest, review=review)

    def _renderer(self) -> PageRenderer:
        if self.renderer is None:
            raise ConfigurationError("documents need a page renderer; the function is built without one")
        return self.renderer

    def _render_pages(self, body: bytes, pages: range | None) -> tuple[int, list[RenderedPage], list[PageResult]]:
        # Rendering is memory-hungry (a child process each): it takes half the decode budget, as two renders or a
        # render beside an image decode of the same size did under the fixed slots before.
        with self.decode_budget.reserve(self.decode_budget.capacity // 2):
            return render_pages(self._renderer(), body, pages)

    def _cache_for(self, event: ObjectEvent) -> ContentCache | None:
        """The content cache as a forced item uses it: written, never read."""
        if self.cache is not None and _forced(event):
            return RefreshingCache(self.cache)
        return self.cache

    def _page_describer(self, options: DescribeOptions, owner: str, event: ObjectEvent) -> PageDescriber:
        return PageDescriber(
            model=self._model(options),
            options=options,
            cache=self._cache_for(event),
            image_host=self.image_host,
            concurrency=self.settings.document_concurrency,
            anchors=self.settings.document_text_anchor,
            owner=owner,
            request_slots=self.page_request_slots,
        )

    @staticmethod
    def _owner(event: ObjectEvent, facts: ObjectFacts) -> str:
        return f"{event.bucket}/{event.key}#{source_version(event, facts)}"

    def _finish_document(
        self,
        event: ObjectEvent,
        facts: ObjectFacts,
        pages: list[PageResult],
        *,
        kind: str,
        page_count: int,
        options: DescribeOptions,
        deadline: float | None,
        usage: ModelUsage,
        ranges: int = 1,
    ) -> DocumentResult:
        """The summary pass over the assembled text, the status rule, and the result objects in the bucket."""
        result = assemble_document(
            pages,
            kind=kind,
            page_count=page_count,
            options=options,
            model=self._model(options),
            deadline=deadline,
            usage=usage,
            cache=self._cache_for(event),
            ranges=ranges,
        )
        if self.documents is None:
            return result
        prefix = result_prefix(event, facts)
        source = {
            "bucket": event.bucket,
            "key": event.key,
            "version_id": facts.version_id,
            "etag": facts.etag,
            "size": facts.size,
            "content_type": facts.content_type,
        }
        body = json.dumps(result.result_object(source), ensure_ascii=False, separators=(",", ":")).encode()
        json_uri = self.documents.put(prefix + "document.json", body, "application/json")
        markdown = result.markdown(title=event.key).encode()
        markdown_uri = self.documents.put(prefix + "document.md", markdown, "text/markdown; charset=utf-8")
        return replace(result, result_uri=json_uri, markdown_uri=markdown_uri)

    def _fan_out(self, event: ObjectEvent, fan_out: FanOut, order: str, version: str, claim_id: str) -> Outcome:
        """Send the document's page ranges through the queue, then mark the record: from then on the ranges'
        own items finish the document, and every further delivery of this event is a duplicate."""
        assert self.work_queue is not None
        step = self.settings.document_range_pages
        facts = fan_out.facts
        total = -(-fan_out.page_count // step)
        located = replace(event, version_id=facts.version_id or event.version_id, etag=facts.etag or event.etag)
        items = [
            PageRangeItem(
                event=located,
                order=order,
                version=version,
                first=first,
                last=min(first + step - 1, fan_out.page_count),
                index=index,
                ranges_total=total,
                range_pages=step,
                kind=fan_out.kind,
                page_count=fan_out.page_count,
                content_sha256=fan_out.digest,
                content_type=facts.content_type,
                last_modified=facts.last_modified,
            )
            for index, first in enumerate(range(1, fan_out.page_count + 1, step), start=1)
        ]
        self.work_queue.send([item.to_message() for item in items])
        if not self.results.mark_fanout(event, claim_id, order, ranges_total=total, page_count=fan_out.page_count):
            return Outcome("stale", event, reason="a newer event took over this key while its pages were sent")
        return Outcome("fanned_out", event, reason=f"{fan_out.page_count} pages sent as {total} page ranges of {step}")

    def process_range(self, item: PageRangeItem, deadline: float | None = None) -> Outcome:
        """Describe one page range of a document; the delivery that counts the last range assembles it.

        A range held back (budget reached, provider paused) goes back to the queue with a delay, as a new message:
        the document's record stays ``processing`` and no receive count is burned."""
        try:
            return self._process_range(item, deadline)
        except DeferredError as exc:
            queue = self.work_queue
            if queue is None:
                raise
            wait_s = (exc.resume_after_ms - self.wall_clock_ms()) / 1000
            queue.send([item.to_message()], delay_seconds=int(max(MIN_RANGE_DEFER_SECONDS, wait_s)))
            return Outcome("deferred", item.event, reason=exc.error_type)

    def _process_range(self, item: PageRangeItem, deadline: float | None) -> Outcome:
        event = item.event
        current = self.results.get(event.bucket, event.key)
        if current is None or current.get("order_key") != item.order:
            return Outcome("stale", event, reason="a newer event for this key was applied: the page range is dropped")
        if current.get("status") != PROCESSING:
            return Outcome("duplicate", event, reason="the document was already assembled")
        partial_key = work_key(item)
        documents = self._documents()
        if documents.get_json(partial_key) is None:
            try:
                partial = self._describe_range(item, deadline)
            except (ObjectChangedError, ObjectNotFoundError) as exc:
                return Outcome("stale", event, reason=f"the object version is gone ({exc.message})")
            if partial is None:
                return Outcome("stale", event, reason="the object's bytes are not the ones the document was split from")
            documents.put(partial_key, json.dumps(partial, ensure_ascii=False).encode(), "application/json")
        done = self.results.add_range_done(event.bucket, event.key, item.order, item.range_id)
        if done is None:
            return Outcome("stale", event, reason="the key moved on while the page range was described")
        if done < item.ranges_total:
            return Outcome(
                "range_done", event, reason=f"pages {item.first}–{item.last}: {done} of {item.ranges_total} ranges done"
            )
        return self._assemble(item, current, deadline)

    def _documents(self) -> DocumentStore:
        if self.documents is None:
            raise ConfigurationError("page ranges need the results bucket (RESULTS_BUCKET)")
        return self.documents

    def _range_facts(self, item: PageRangeItem, metadata: dict[str, str]) -> ObjectFacts:
        return ObjectFacts(
            etag=item.event.etag,
            version_id=item.event.version_id,
            size=item.event.size,
            content_type=item.content_type,
            last_modified=item.last_modified,
            metadata=metadata,
        )

    def _range_options(self, item: PageRangeItem, metadata: dict[str, str]) -> DescribeOptions:
        matched = self.profiles.for_key(item.event.key) or self.profiles.default or Profile(name="default")
        profile = self._profile(matched, metadata, item.event)
        return self.options(profile, metadata)

    def _describe_range(self, item: PageRangeItem, deadline: float | None) -> dict[str, Any] | None:
        """The range's pages described: the partial result the assembler reads (None: not the same bytes)."""
        fetched = self.objects.fetch(item.event, self.settings.max_object_bytes)
        if hashlib.sha256(fetched.body).hexdigest() != item.content_sha256:
            return None
        metadata = fetched.facts.metadata
        options = self._range_options(item, metadata)  # the same metadata the document's own delivery accepted
        try:
            _, rendered, failed = self._render_pages(fetched.body, item.pages)
        except PermanentInputError as exc:  # the document opened for the coordinator; not for this range
            rendered, failed = [], [PageResult.failed(number, exc) for number in item.pages]
        usage = ModelUsage()
        owner = self._owner(item.event, fetched.facts)
        pages = self._page_describer(options, owner, item.event).describe(rendered, deadline, usage)
        return {
            "range": item.range_id,
            "metadata": metadata,
            "pages": [page.to_item() for page in sorted([*pages, *failed], key=lambda p: p.number)],
        }

    def _assemble(self, item: PageRangeItem, current: dict[str, Any], deadline: float | None) -> Outcome:
        """Every range is counted: take the record's claim, read the ranges' results, summarise, store, notify."""
        event = item.event
        claim_id = uuid.uuid4().hex
        now_ms = self.wall_clock_ms()
        until_ms = now_ms + self._claim_ms(deadline)
        state = self.results.claim_assembly(event.bucket, event.key, item.order, claim_id, until_ms, now_ms)
        if state == "not_ready":
            raise InProgressError(f"the fan-out of {event.uri} is not marked yet: assembling later")
        if state != "claimed":
            return Outcome("duplicate", event, reason=f"the document is assembled by another delivery ({state})")
        usage = ModelUsage()
        try:
            pages: list[PageResult] = []
            metadata: dict[str, str] = {}
            documents = self._documents()
            for first in range(1, item.page_count + 1, item.range_pages):
                last = min(first + item.range_pages - 1, item.page_count)
                partial = documents.get_json(work_key(replace(item, first=first, last=last)))
                if partial is None:
                    raise InProgressError(
                        f"pages {first}–{last} of {event.uri} are counted but their result is missing"
                    )
                metadata = partial.get("metadata") or metadata
                pages.extend(PageResult.from_item(page) for page in partial.get("pages") or [])
            for page in pages:
                add_usage(usage, page.usage)
            facts = self._range_facts(item, metadata)
            options = self._range_options(item, metadata)
            result = self._finish_document(
                event,
                facts,
                pages,
                kind=item.kind,
                page_count=item.page_count,
                options=options,
                deadline=deadline,
                usage=usage,
                ranges=item.ranges_total,
            )
            record = build_record(
                event, facts, result, content_sha256=item.content_sha256, review=current.get("review")
            )
        except BaseException as exc:
            self.results.release(event, claim_id, _error_name(exc), _error_text(exc), usage)
            raise
        record.update(order_key=item.order, version_token=item.version, notified=False)
        if current.get("forced_run"):
            record["forced_run"] = current["forced_run"]
        if not self._store(record, claim_id):
            return Outcome("stale", event, reason="a newer event took over this key while the document was assembled")
        self._notify_once(record, until_ms)
        return Outcome(record["status"], event, record=record, reason=record.get("error_type"))


__all__ = ["FanOut", "Outcome", "Pipeline", "content_key", "result_prefix", "work_key"]
