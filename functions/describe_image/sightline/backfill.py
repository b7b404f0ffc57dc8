"""Backfill items: the objects a bucket already holds, turned into events for the uploads queue. Pure, no AWS.

Two producers use this: ``sightline backfill`` (it lists the bucket or reads an S3 Inventory) and the S3 Batch
Operations function (``batch_app``, one task per object). Both decide per object whether it is worth a message
(:func:`select_profile`, :func:`skip_reason`) and then send :func:`backfill_event` as one S3-shaped notification
(:func:`sightline.events.s3_notification`).

A backfill item never outranks a real S3 event: the pipeline applies it only where the key has no record (or a
record an older backfill item wrote). Skipping here saves the message, the invocation and the object read for
keys the pipeline would refuse anyway; the pipeline's own checks stay the authority.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sightline.events import BACKFILL_EVENT_NAME, Backfill, ObjectEvent
from sightline.profiles import DEFAULT_PROFILE_NAME, ProfileSet
from sightline.records import DEFERRED, DELETED, FAILED, PARTIAL, PROCESSING, SUCCEEDED
from sightline.settings import OBJECT_KEY_SUFFIXES, Settings

DESCRIBED = (SUCCEEDED, PARTIAL, FAILED)

# Skip reasons: the summary of a run and the S3 Batch Operations report group objects by these texts.
ALREADY_DESCRIBED = "already described"
BEING_DESCRIBED = "being described"
DEFERRED_REASON = "deferred: resumes by itself"
OTHER_VERSION = "recorded for another version (a real event owns the key)"
SUFFIX_FILTERED = f"key does not match {OBJECT_KEY_SUFFIXES}"
NO_PROFILE = "no profile matches the key and the profiles file has no default"


def iso_z(moment: datetime) -> str:
    """ISO-8601 in UTC with a Z, to the millisecond (the shape of S3's eventTime). A naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_version_id(version_id: str | None) -> str | None:
    """S3 answers "null" for an object written while versioning was off or suspended: it has no version of its own,
    and its events name none, so neither does ours (the ETag identifies it, as for a real event)."""
    return None if not version_id or version_id == "null" else version_id


def clean_etag(etag: str | None) -> str | None:
    """S3 events carry the ETag without quotes; listings and HeadObject quote it."""
    return (etag or "").strip().strip('"') or None


@dataclass(frozen=True)
class ListedObject:
    """One current object version, as a listing, an inventory row or HeadObject tells it."""

    bucket: str
    key: str  # decoded
    size: int
    etag: str | None  # without quotes
    version_id: str | None  # None in an unversioned bucket (and for S3's "null" version)
    last_modified: datetime

    @property
    def version_token(self) -> str | None:
        """What a record of this version holds as ``version_token`` (:func:`sightline.ordering.version_token`)."""
        return self.version_id or self.etag

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def listed_object(
    bucket: str, key: str, *, size: Any, etag: str | None, version_id: str | None, last_modified: datetime
) -> ListedObject:
    """A ListedObject from the fields as S3 gives them (quoted ETag, "null" version, size as any number)."""
    return ListedObject(
        bucket=bucket,
        key=key,
        size=int(size or 0),
        etag=clean_etag(etag),
        version_id=clean_version_id(version_id),
        last_modified=last_modified if last_modified.tzinfo else last_modified.replace(tzinfo=UTC),
    )


def backfill_event(obj: ListedObject, *, run: str, force: bool, profile: str | None, now: datetime) -> ObjectEvent:
    """The event that asks the pipeline to describe this object version as part of backfill run ``run``."""
    return ObjectEvent(
        bucket=obj.bucket,
        key=obj.key,
        event_name=BACKFILL_EVENT_NAME,
        event_time=iso_z(now),
        version_id=obj.version_id,
        etag=obj.etag,
        size=obj.size,
        backfill=Backfill(run=run, force=force, profile=profile or None, last_modified=iso_z(obj.last_modified)),
    )


def _record_tokens(record: Mapping[str, Any]) -> set[str]:
    """The version a record describes: its version_token, and the version id and ETag its object facts hold (an
    event without a versionId leaves the ETag as the token, though the facts read name the version)."""
    tokens = {str(record["version_token"]).strip('"')} if record.get("version_token") else set()
    facts = record.get("object")
    if isinstance(facts, dict):
        tokens |= {str(value).strip('"') for value in (facts.get("version_id"), facts.get("etag")) if value}
    return tokens


def skip_reason(obj: ListedObject, record: Mapping[str, Any] | None, *, force: bool) -> str | None:
    """Why this object is not worth a backfill item, judged from the key's record; None: enqueue it.

    - no record, or the key's record says it was deleted: enqueue;
    - being described right now, or parked (deferred, resumed by itself): skip, even with ``force``;
    - a record of this very version that is finished (succeeded, partial, failed): skip unless ``force``;
    - a record of another version: a real event owns the key; skip unless ``force`` (the pipeline still decides).
    """
    if record is None:
        return None
    status = record.get("status")
    if status == DELETED:
        return None
    if status == PROCESSING:
        return BEING_DESCRIBED
    if status == DEFERRED:
        return DEFERRED_REASON
    if force:
        return None
    ours = {token for token in (obj.version_id, obj.etag) if token}
    if ours & _record_tokens(record):
        return ALREADY_DESCRIBED if status in DESCRIBED else f"already recorded ({status})"
    return OTHER_VERSION


@dataclass(frozen=True)
class ProfileChoice:
    """The profile an object would be described with, or why it is not described at all."""

    profile: str | None = None
    skip: str | None = None

    @property
    def skipped(self) -> bool:
        return self.skip is not None


def known_profiles(profiles: ProfileSet) -> list[str]:
    return [p.name for p in profiles.profiles] + ([DEFAULT_PROFILE_NAME] if profiles.default else [])


def unknown_profile_reason(name: str, profiles: ProfileSet) -> str:
    return f"no profile named {name!r} (known: {', '.join(known_profiles(profiles)) or 'none'})"


def select_profile(key: str, profiles: ProfileSet, settings: Settings, override: str | None) -> ProfileChoice:
    """The profile the pipeline would use for the key, in its order: the suffix filter, then the operator's
    profile for the run (``override``, wins over the key's match) or the key's match, else the default.

    (An object's own ``x-amz-meta-sightline-profile`` is read by the pipeline; a listing cannot see it.)
    """
    if not settings.accepts_key(key):
        return ProfileChoice(skip=SUFFIX_FILTERED)
    if override:
        if profiles.get(override) is None:
            return ProfileChoice(skip=unknown_profile_reason(override, profiles))
        return ProfileChoice(profile=override)
    matched = profiles.for_key(key)
    if matched is None:
        return ProfileChoice(skip=NO_PROFILE)
    return ProfileChoice(profile=matched.name)
