"""Backfill items: which objects are worth one, the event they become, profiles, inventories, rate, checkpoints."""

from __future__ import annotations

import argparse
import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sightline.backfill import (
    ALREADY_DESCRIBED,
    BEING_DESCRIBED,
    DEFERRED_REASON,
    NO_PROFILE,
    OTHER_VERSION,
    SUFFIX_FILTERED,
    ListedObject,
    backfill_event,
    listed_object,
    select_profile,
    skip_reason,
)
from sightline.events import BACKFILL_EVENT_NAME, Backfill, parse_queue_message_body, s3_notification
from sightline.ordering import version_token
from sightline.profiles import load_profiles
from sightline.settings import load_settings
from sightline_cli.backfill import (
    BackfillError,
    Checkpoint,
    Counts,
    RateLimiter,
    default_checkpoint_path,
    inventory_rows,
    load_checkpoint,
    parse_manifest,
    parse_since,
    render_summary,
    resume_command,
    run_params,
    save_checkpoint,
)

pytestmark = pytest.mark.unit

MODIFIED = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
NOW = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)


def versioned(key: str = "photos/a b+c.jpg", version: str = "v2") -> ListedObject:
    return listed_object("uploads", key, size=1234, etag='"0123abcd"', version_id=version, last_modified=MODIFIED)


def unversioned(key: str = "photos/a.jpg", etag: str = '"0123abcd"') -> ListedObject:
    return listed_object("uploads", key, size=1234, etag=etag, version_id="null", last_modified=MODIFIED)


def record(status: str, token: str | None, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"bucket": "uploads", "key": "photos/a.jpg", "status": status, **fields}
    if token is not None:
        item["version_token"] = token
    return item


# --- Which objects get a backfill item -----------------------------------------------------------------------------


def test_a_key_without_a_record_or_with_a_deleted_one_is_enqueued() -> None:
    assert skip_reason(versioned(), None, force=False) is None
    assert skip_reason(versioned(), record("deleted", "v1"), force=False) is None
    assert skip_reason(versioned(), record("deleted", "v2"), force=True) is None


@pytest.mark.parametrize("status", ["succeeded", "partial", "failed"])
def test_the_same_version_already_described_is_skipped_unless_forced(status: str) -> None:
    assert skip_reason(versioned(), record(status, "v2"), force=False) == ALREADY_DESCRIBED
    assert skip_reason(versioned(), record(status, "v2"), force=True) is None


def test_an_unversioned_object_is_the_same_version_by_its_etag_without_quotes() -> None:
    obj = unversioned()
    assert (obj.version_id, obj.etag, obj.version_token) == (None, "0123abcd", "0123abcd")
    assert skip_reason(obj, record("succeeded", "0123abcd"), force=False) == ALREADY_DESCRIBED
    assert skip_reason(unversioned(etag='"ffff"'), record("succeeded", "0123abcd"), force=False) == OTHER_VERSION


def test_the_version_is_also_recognised_from_the_records_object_facts() -> None:
    # An event without a versionId leaves the ETag as token; the facts read from S3 name the version.
    described = record("succeeded", "0123abcd", object={"version_id": "v2", "etag": "0123abcd"})
    assert skip_reason(versioned(), described, force=False) == ALREADY_DESCRIBED
    old = record("succeeded", None, object={"version_id": "v1", "etag": "9999"})
    assert skip_reason(versioned(), old, force=False) == OTHER_VERSION


@pytest.mark.parametrize("force", [False, True])
def test_a_key_being_described_or_deferred_is_skipped_even_when_forced(force: bool) -> None:
    assert skip_reason(versioned(), record("processing", "v2"), force=force) == BEING_DESCRIBED
    assert skip_reason(versioned(), record("processing", "v1"), force=force) == BEING_DESCRIBED
    assert skip_reason(versioned(), record("deferred", "v2"), force=force) == DEFERRED_REASON


def test_a_record_of_another_version_belongs_to_a_real_event_unless_forced() -> None:
    assert skip_reason(versioned(), record("succeeded", "v1"), force=False) == OTHER_VERSION
    assert skip_reason(versioned(), record("failed", "v1"), force=False) == OTHER_VERSION
    assert skip_reason(versioned(), record("succeeded", "v1"), force=True) is None


# --- The event -----------------------------------------------------------------------------------------------------


def test_a_backfill_event_carries_the_listed_version_and_the_run() -> None:
    event = backfill_event(versioned(), run="run-1", force=True, profile="photos", now=NOW)
    assert event.event_name == BACKFILL_EVENT_NAME and event.is_create
    assert event.event_time == "2026-11-25T08:00:00.000Z"
    assert (event.bucket, event.key, event.version_id, event.etag, event.size) == (
        "uploads",
        "photos/a b+c.jpg",
        "v2",
        "0123abcd",
        1234,
    )
    assert event.sequencer is None
    assert event.backfill == Backfill(
        run="run-1", force=True, profile="photos", last_modified="2025-03-04T05:06:07.890Z"
    )
    assert version_token(event) == "v2"


def test_the_message_is_one_s3_shaped_notification_that_parses_back_to_the_same_event() -> None:
    event = backfill_event(
        versioned(key="photos/Sommer (2026)/café+résumé 1.jpg"), run="r", force=False, profile=None, now=NOW
    )
    body = s3_notification([event], "us-east-1")
    document = json.loads(body)
    (s3_record,) = document["Records"]
    assert s3_record["eventSource"] == "aws:s3" and s3_record["eventName"] == BACKFILL_EVENT_NAME
    assert s3_record["s3"]["object"]["key"] == "photos/Sommer+%282026%29/caf%C3%A9%2Br%C3%A9sum%C3%A9+1.jpg"
    assert "sequencer" not in s3_record["s3"]["object"]
    assert s3_record["sightline"] == {
        "backfill": {"run": "r", "force": False, "profile": None, "last_modified": "2025-03-04T05:06:07.890Z"}
    }
    assert parse_queue_message_body(body) == [event]


def test_unversioned_event_has_no_version_id() -> None:
    event = backfill_event(unversioned(), run="r", force=False, profile=None, now=NOW)
    assert event.version_id is None and version_token(event) == "0123abcd"
    assert "versionId" not in json.loads(s3_notification([event]))["Records"][0]["s3"]["object"]


# --- Profiles --------------------------------------------------------------------------------------------------------

PROFILES = """
profiles:
  - name: photos
    match: {prefixes: ["photos/"]}
  - name: cms-de
    task: alt_text
    language: de
    match: {prefixes: ["cms/"]}
"""


def test_profile_selection_follows_the_pipeline_suffix_filter_override_key_default() -> None:
    profiles = load_profiles(PROFILES + "default:\n  task: caption\n")
    settings = load_settings({"OBJECT_KEY_SUFFIXES": ".jpg,.PNG"}, require_stack=False)
    assert select_profile("photos/A.JPG", profiles, settings, None).profile == "photos"
    assert select_profile("cms/x.png", profiles, settings, None).profile == "cms-de"
    assert select_profile("other/x.png", profiles, settings, None).profile == "default"
    skipped = select_profile("photos/notes.txt", profiles, settings, None)
    assert skipped.skipped and skipped.skip == SUFFIX_FILTERED and skipped.profile is None
    # the operator's profile wins over the key's match
    assert select_profile("photos/a.jpg", profiles, settings, "cms-de").profile == "cms-de"
    assert select_profile("photos/a.jpg", profiles, settings, "default").profile == "default"
    unknown = select_profile("photos/a.jpg", profiles, settings, "nope")
    assert unknown.skip == "no profile named 'nope' (known: photos, cms-de, default)"


def test_without_a_default_profile_an_unmatched_key_is_skipped() -> None:
    profiles = load_profiles(PROFILES)
    settings = load_settings({}, require_stack=False)
    assert select_profile("other/x.jpg", profiles, settings, None).skip == NO_PROFILE
    assert select_profile("other/x.jpg", profiles, settings, "photos").profile == "photos"


# --- S3 Inventory ----------------------------------------------------------------------------------------------------

SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"


def manifest(**changes: Any) -> dict[str, Any]:
    document = {
        "sourceBucket": "uploads",
        "destinationBucket": "arn:aws:s3:::inventories",
        "version": "2016-11-30",
        "creationTimestamp": "1764057600000",
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": [{"key": "uploads/daily/data/one.csv.gz", "size": 120, "MD5checksum": "x"}],
    }
    document.update(changes)
    return document


def csv_text(*rows: list[str]) -> str:
    return "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in rows)


def test_a_csv_manifest_gives_columns_files_and_the_destination_bucket() -> None:
    parsed = parse_manifest(json.dumps(manifest()), "inventories", "s3://inventories/m.json")
    assert parsed.source_bucket == "uploads" and parsed.destination_bucket == "inventories"
    assert parsed.columns[:3] == ("Bucket", "Key", "VersionId") and len(parsed.columns) == 9
    assert [f.key for f in parsed.files] == ["uploads/daily/data/one.csv.gz"]


@pytest.mark.parametrize("file_format", ["ORC", "Parquet"])
def test_orc_and_parquet_inventories_are_refused_with_a_clear_message(file_format: str) -> None:
    with pytest.raises(BackfillError, match=f"the inventory is {file_format}; only CSV inventories can be read"):
        parse_manifest(json.dumps(manifest(fileFormat=file_format)), "inventories")


def test_a_manifest_without_key_column_or_files_is_refused() -> None:
    with pytest.raises(BackfillError, match="no Key column"):
        parse_manifest(json.dumps(manifest(fileSchema="Bucket, Size")), "inventories")
    with pytest.raises(BackfillError, match="no list of files"):
        parse_manifest(json.dumps(manifest(files="x")), "inventories")
    with pytest.raises(BackfillError, match="not JSON"):
        parse_manifest(b"\x1f\x8b", "inventories")


def test_inventory_rows_decode_keys_and_leave_out_old_versions_and_delete_markers() -> None:
    parsed = parse_manifest(json.dumps(manifest()), "inventories")
    text = csv_text(
        ["uploads", "photos/Sommer+%282026%29/caf%C3%A9%2B1.jpg", "v3", "true", "false", "2048",
         "2025-03-04T05:06:07.000Z", "0123abcd", "STANDARD"],
        ["uploads", "photos/old.jpg", "v1", "false", "false", "10", "2024-01-01T00:00:00.000Z", "aa", "STANDARD"],
        ["uploads", "photos/gone.jpg", "v9", "true", "true", "", "2025-01-01T00:00:00.000Z", "", ""],
        ["uploads", "photos/null.jpg", "null", "true", "false", "7", "2025-01-01T00:00:00.000Z", "bb", "STANDARD"],
    )  # fmt: skip
    rows = list(inventory_rows(io.StringIO(text, newline=""), parsed, 0))
    assert [index for index, _ in rows] == [0, 1, 2, 3]
    first, old, marker, null = (obj for _, obj in rows)
    assert old is None and marker is None
    assert first == ListedObject(
        bucket="uploads",
        key="photos/Sommer (2026)/café+1.jpg",
        size=2048,
        etag="0123abcd",
        version_id="v3",
        last_modified=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    )
    assert null is not None and null.version_id is None and null.version_token == "bb"
    # resuming at row 3 of the file reads only what follows
    assert [index for index, _ in inventory_rows(io.StringIO(text, newline=""), parsed, 0, start_row=3)] == [3]


def test_an_inventory_of_current_versions_only_has_no_is_latest_column() -> None:
    parsed = parse_manifest(json.dumps(manifest(fileSchema="Bucket, Key, Size, LastModifiedDate, ETag")), "inv")
    text = gzip.decompress(
        gzip.compress(csv_text(["uploads", "a+b.png", "5", "2025-01-01T00:00:00.000Z", "cc"]).encode())
    )
    ((_, obj),) = list(inventory_rows(io.StringIO(text.decode(), newline=""), parsed, 0))
    assert obj is not None and (obj.key, obj.size, obj.version_id, obj.etag) == ("a b.png", 5, None, "cc")


def test_a_row_that_does_not_fit_the_schema_is_an_error_naming_it() -> None:
    parsed = parse_manifest(json.dumps(manifest()), "inventories")
    with pytest.raises(BackfillError, match="file 4 row 0: 2 fields, the fileSchema names 9"):
        list(inventory_rows(io.StringIO('"uploads","a.jpg"\n'), parsed, 4))


# --- --since, the rate limiter, the checkpoint -----------------------------------------------------------------------


def test_since_takes_a_date_or_a_time_in_utc() -> None:
    assert parse_since("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_since("2026-01-31T12:30:00Z") == datetime(2026, 1, 31, 12, 30, tzinfo=UTC)
    assert parse_since("2026-01-31T12:30:00+02:00") == datetime(2026, 1, 31, 10, 30, tzinfo=UTC)
    assert parse_since("2026-01-31T12:30") == datetime(2026, 1, 31, 12, 30, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("last tuesday")


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_rate_limiter_allows_a_seconds_burst_then_holds_the_average_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(50, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        assert limiter.acquire(10) == 0  # the first second's worth goes at once
    for _ in range(95):
        limiter.acquire(10)
    # 1,000 objects at 50/s: the 950 after the burst take 19 s
    assert sum(fake.slept) == pytest.approx(19.0)
    assert max(fake.slept) == pytest.approx(0.2)


def test_the_rate_limiter_refills_while_idle_and_a_slow_rate_waits_for_a_large_batch() -> None:
    fake = FakeTime()
    limiter = RateLimiter(2, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire(10)  # the burst is at least one send batch
    assert limiter.acquire(10) == pytest.approx(5.0)
    fake.now += 60  # idle: the bucket fills up to its capacity only
    assert limiter.acquire(10) == 0
    assert limiter.acquire(4) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_an_interrupted_wait_takes_nothing_from_the_bucket() -> None:
    fake = FakeTime()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    limiter = RateLimiter(10, clock=fake.clock, sleep=interrupted)
    limiter.acquire(10)
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire(10)
    fake.now += 1.0
    assert limiter.acquire(10) == 0  # the second's refill is whole


def test_a_checkpoint_round_trips_through_its_file(tmp_path: Path) -> None:
    params = run_params(
        bucket="uploads", prefix="photos/", since=datetime(2026, 1, 1, tzinfo=UTC), profile=None, force=True,
        inventory=None,
    )  # fmt: skip
    counts = Counts(listed=250, listed_bytes=9_000, queued=200, queued_bytes=8_000)
    counts.skip("already described")
    counts.skip("already described")
    checkpoint = Checkpoint(run="abc", params=params, position={"key_marker": "photos/b.jpg"}, counts=counts, total=900)
    path = default_checkpoint_path(params, tmp_path / ".sightline")
    save_checkpoint(path, checkpoint)
    loaded = load_checkpoint(path)
    assert loaded == checkpoint and loaded is not None and loaded.updated_at.endswith("Z")
    assert loaded.counts.skipped_total == 2
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert load_checkpoint(tmp_path / "none.json") is None
    path.write_text("{not json")
    with pytest.raises(BackfillError, match="--restart starts over"):
        load_checkpoint(path)


def test_the_default_checkpoint_is_named_by_the_runs_parameters() -> None:
    base: dict[str, Any] = {
        "bucket": "uploads", "prefix": "", "since": None, "profile": None, "force": False, "inventory": None,
    }  # fmt: skip
    same = default_checkpoint_path(dict(base))
    assert same == default_checkpoint_path(dict(reversed(list(base.items()))))
    assert same.parent == Path(".sightline") and same.name.startswith("backfill-") and same.suffix == ".json"
    for name, value in (("prefix", "a/"), ("force", True), ("profile", "photos"), ("inventory", "s3://i/m.json")):
        assert default_checkpoint_path({**base, name: value}) != same


def test_the_summary_and_the_resume_command() -> None:
    counts = Counts(listed=12, listed_bytes=3_500_000, queued=9, queued_bytes=3_000_000)
    counts.skip("already described")
    counts.skip("already described")
    counts.skip("being described")
    text = render_summary(counts, dry_run=False, force=True)
    assert "listed" in text and "3.3 MiB" in text
    assert "2  already described" in text and "1  being described" in text
    assert "9 objects will be described again and paid for (the content cache is bypassed)" in text
    args = argparse.Namespace(
        stack_name="prod", bucket=None, queue_url=None, table=None, prefix="old photos/", since_text="2026-01-01",
        profile=None, inventory=None, rate=50.0, checkpoint=None, profiles_file=None, force=True, yes=True,
    )  # fmt: skip
    assert resume_command(args) == (
        "sightline backfill --stack-name prod --prefix 'old photos/' --since 2026-01-01 --force --yes"
    )
