"""`sightline backfill`: describe what an existing bucket already holds, through the uploads queue.

Lists the bucket (or reads an S3 Inventory), decides per object whether it is worth describing (the suffix filter,
the profiles, the key's record in the results table) and sends each object left as one backfill item to the
uploads queue, where the function describes it like an upload. A backfill item never outranks a real S3 event.

Ctrl-C is safe: objects are handled in chunks of up to 100, a chunk is sent whole or not at all, and the position
after every chunk is saved in a checkpoint file. Running the same command again resumes the run where it stopped.
``--dry-run`` sends nothing and estimates what the run would cost instead.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import shlex
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from scripts.redrive_dlq import DEFAULT_STACK_NAME, MissingStackOutputError
from sightline.adapters.dynamodb import from_item
from sightline.backfill import (
    ListedObject,
    backfill_event,
    iso_z,
    listed_object,
    select_profile,
    skip_reason,
    unknown_profile_reason,
)
from sightline.errors import SettingsError
from sightline.events import s3_notification
from sightline.profiles import ProfileSet, load_profiles_file
from sightline.settings import BUNDLED_PROFILES_FILE, Settings, load_settings

CHUNK_SIZE = 100  # objects whose records one BatchGetItem reads; the unit of the checkpoint
SEND_BATCH = 10  # SQS SendMessageBatch takes at most 10 messages
DEFAULT_RATE = 50.0  # objects queued per second
CHECKPOINT_DIR = ".sightline"
CHECKPOINT_VERSION = 1
EXIT_INTERRUPTED = 130
RETRY_ATTEMPTS = 8  # BatchGetItem's unprocessed keys and SendMessageBatch's failed entries
RETRY_BASE_SECONDS = 0.05
RETRY_MAX_SECONDS = 5.0

BEFORE_SINCE = "last modified before --since"
FOLDER_PLACEHOLDER = "a folder placeholder (an empty key ending in /)"

Position = dict[str, Any]


class BackfillError(Exception):
    """What stops a run with a message (exit 1): an unreadable inventory, an AWS error retries did not fix."""


# --- Pure parts: dates, the rate limiter, counts and the checkpoint ------------------------------------------------


def parse_since(text: str) -> datetime:
    """``--since``: a date (midnight UTC) or an ISO-8601 date and time (UTC unless it names an offset)."""
    raw = text.strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-01-31) or an ISO date and time (2026-01-31T12:00:00Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


class RateLimiter:
    """A token bucket: on average at most ``rate`` objects a second, in bursts of at most a second's worth."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError("the rate must be above 0")
        self.rate = float(rate)
        self.capacity = max(self.rate, float(SEND_BATCH))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._last = clock()

    def _refill(self, cap: float) -> None:
        now = self._clock()
        self._tokens = min(cap, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self, count: int = 1) -> float:
        """Wait until ``count`` objects may go; returns the seconds waited. An interruption while waiting takes
        nothing from the bucket."""
        cap = max(self.capacity, float(count))
        self._refill(cap)
        waited = 0.0
        if self._tokens < count:
            waited = (count - self._tokens) / self.rate
            self._sleep(waited)
            self._refill(cap)
        self._tokens -= count
        return waited


@dataclass
class Counts:
    """What a run did so far (what a checkpoint stores)."""

    listed: int = 0
    listed_bytes: int = 0
    queued: int = 0
    queued_bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def add(self, other: Counts) -> None:
        self.listed += other.listed
        self.listed_bytes += other.listed_bytes
        self.queued += other.queued
        self.queued_bytes += other.queued_bytes
        self.skipped.update(other.skipped)

    def to_json(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "listed_bytes": self.listed_bytes,
            "queued": self.queued,
            "queued_bytes": self.queued_bytes,
            "skipped": dict(sorted(self.skipped.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Counts:
        return cls(
            listed=int(data.get("listed", 0)),
            listed_bytes=int(data.get("listed_bytes", 0)),
            queued=int(data.get("queued", 0)),
            queued_bytes=int(data.get("queued_bytes", 0)),
            skipped=Counter({str(k): int(v) for k, v in (data.get("skipped") or {}).items()}),
        )


@dataclass
class Checkpoint:
    """Where a run is: its id, the position after the last chunk sent whole, and its counts so far."""

    run: str
    params: dict[str, Any]  # what the run covers: a checkpoint of other parameters is never resumed
    position: Position | None = None  # None: from the start
    counts: Counts = field(default_factory=Counts)
    total: int | None = None  # objects the source holds, when known (an inventory; a forced run's survey)
    done: bool = False
    started_at: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "run": self.run,
            "params": self.params,
            "position": self.position,
            "counts": self.counts.to_json(),
            "total": self.total,
            "done": self.done,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        if data.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {data.get('version')!r}, expected {CHECKPOINT_VERSION}")
        if not isinstance(data.get("run"), str) or not isinstance(data.get("params"), dict):
            raise ValueError("checkpoint has no run id or parameters")
        position = data.get("position")
        if position is not None and not isinstance(position, dict):
            raise ValueError("checkpoint position is not an object")
        total = data.get("total")
        return cls(
            run=data["run"],
            params=dict(data["params"]),
            position=position,
            counts=Counts.from_json(data.get("counts") or {}),
            total=int(total) if total is not None else None,
            done=bool(data.get("done", False)),
            started_at=str(data.get("started_at", "")),
            updated_at=str(data.get("updated_at", "")),
        )


def run_params(
    *, bucket: str, prefix: str, since: datetime | None, profile: str | None, force: bool, inventory: str | None
) -> dict[str, Any]:
    """What identifies a run: the same command (same parameters) resumes it."""
    return {
        "bucket": bucket,
        "prefix": prefix,
        "since": iso_z(since) if since else None,
        "profile": profile,
        "force": force,
        "inventory": inventory,
    }


def default_checkpoint_path(params: Mapping[str, Any], directory: Path | str = CHECKPOINT_DIR) -> Path:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    return Path(directory) / f"backfill-{digest}.json"


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Atomic: the file is the previous checkpoint or this one, never half of either (a temporary file, fsynced,
    renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.updated_at = iso_z(datetime.now(UTC))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(checkpoint.to_json(), handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``; None when there is none. An unreadable one is an error (never overwritten
    silently: --restart does that)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackfillError(f"cannot read the checkpoint {path}: {exc.strerror or exc}") from None
    try:
        return Checkpoint.from_json(json.loads(text))
    except (ValueError, TypeError, AttributeError) as exc:
        raise BackfillError(f"the checkpoint {path} is not readable ({exc}); --restart starts over") from None


# --- S3 Inventory ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InventoryFile:
    key: str
    size: int = 0


@dataclass(frozen=True)
class InventoryManifest:
    """An S3 Inventory's manifest.json: which bucket it lists, the CSV columns, and its data files."""

    source_bucket: str
    destination_bucket: str  # where the data files are
    columns: tuple[str, ...]
    files: tuple[InventoryFile, ...]
    created: datetime


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri[5:].startswith("/"):
        raise BackfillError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    if not key:
        raise BackfillError(f"{uri!r} names no object")
    return bucket, key


def parse_manifest(text: str | bytes, manifest_bucket: str, source: str = "manifest.json") -> InventoryManifest:
    """Read a manifest.json; only CSV inventories are readable here (ORC and Parquet need a columnar reader)."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise BackfillError(f"{source} is not JSON: is it the inventory's manifest.json?") from None
    if not isinstance(document, dict):
        raise BackfillError(f"{source} is not an S3 Inventory manifest")
    file_format = str(document.get("fileFormat", "")).strip()
    if file_format.upper() != "CSV":
        raise BackfillError(
            f"{source}: the inventory is {file_format or 'of no stated format'}; only CSV inventories can be read. "
            "Add a CSV inventory configuration to the bucket (or run without --inventory to list the bucket)."
        )
    schema = document.get("fileSchema")
    if not isinstance(schema, str) or not schema.strip():
        raise BackfillError(f"{source} has no fileSchema")
    columns = tuple(name.strip() for name in schema.split(","))
    for required in ("Bucket", "Key"):
        if required not in columns:
            raise BackfillError(f"{source}: the fileSchema has no {required} column")
    files = document.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("key"), str) for f in files):
        raise BackfillError(f"{source} has no list of files")
    destination = str(document.get("destinationBucket") or manifest_bucket)
    destination = destination.split(":::")[-1] if destination.startswith("arn:") else destination
    try:
        created = datetime.fromtimestamp(int(document.get("creationTimestamp", 0)) / 1000, UTC)
    except (TypeError, ValueError):
        created = datetime.fromtimestamp(0, UTC)
    return InventoryManifest(
        source_bucket=str(document.get("sourceBucket", "")),
        destination_bucket=destination,
        columns=columns,
        files=tuple(InventoryFile(key=f["key"], size=int(f.get("size") or 0)) for f in files),
        created=created,
    )


def _inventory_time(text: str, fallback: datetime) -> datetime:
    if not text:
        return fallback
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def inventory_object(row: Sequence[str], manifest: InventoryManifest, where: str = "") -> ListedObject | None:
    """One CSV row as an object; None for a delete marker or a version that is not the current one."""
    if len(row) != len(manifest.columns):
        raise BackfillError(f"inventory {where}: {len(row)} fields, the fileSchema names {len(manifest.columns)}")
    fields = dict(zip(manifest.columns, row, strict=True))
    if fields.get("IsDeleteMarker", "").strip().lower() == "true":
        return None
    if fields.get("IsLatest", "true").strip().lower() == "false":
        return None
    try:
        return listed_object(
            fields["Bucket"],
            unquote_plus(fields["Key"]),  # the CSV holds keys URL-encoded
            size=int(fields.get("Size") or 0),
            etag=fields.get("ETag") or None,
            version_id=fields.get("VersionId") or None,
            last_modified=_inventory_time(fields.get("LastModifiedDate", "").strip(), manifest.created),
        )
    except ValueError as exc:
        raise BackfillError(f"inventory {where}: {exc}") from None


def inventory_rows(
    lines: Iterable[str], manifest: InventoryManifest, file_index: int, start_row: int = 0
) -> Iterator[tuple[int, ListedObject | None]]:
    """(row index, object or None) for the rows of one data file from ``start_row`` on."""
    for index, row in enumerate(csv.reader(lines)):
        if index < start_row or not row:
            continue
        yield index, inventory_object(row, manifest, f"file {file_index} row {index}")


# --- Sources: (object, position after it) --------------------------------------------------------------------------

Source = Callable[[Position | None], Iterator[tuple[ListedObject, Position]]]


def list_current_objects(
    s3: Any, bucket: str, prefix: str, position: Position | None
) -> Iterator[tuple[ListedObject, Position]]:
    """An unversioned bucket: ListObjectsV2, resumed after the last key handled (StartAfter)."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if position and position.get("start_after"):
        params["StartAfter"] = position["start_after"]
    for page in s3.get_paginator("list_objects_v2").paginate(**params):
        for item in page.get("Contents", []):
            obj = listed_object(
                bucket,
                item["Key"],
                size=item.get("Size", 0),
                etag=item.get("ETag"),
                version_id=None,
                last_modified=item["LastModified"],
            )
            yield obj, {"start_after": item["Key"]}


def list_latest_versions(
    s3: Any, bucket: str, prefix: str, position: Position | None
) -> Iterator[tuple[ListedObject, Position]]:
    """A versioned bucket: the current version of each key, leaving out keys whose current version is a delete
    marker (ListObjectVersions, resumed after the last key handled: KeyMarker)."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if position and position.get("key_marker"):
        params["KeyMarker"] = position["key_marker"]
    for page in s3.get_paginator("list_object_versions").paginate(**params):
        for item in page.get("Versions", []):
            if not item.get("IsLatest"):
                continue
            obj = listed_object(
                bucket,
                item["Key"],
                size=item.get("Size", 0),
                etag=item.get("ETag"),
                version_id=item.get("VersionId"),
                last_modified=item["LastModified"],
            )
            yield obj, {"key_marker": item["Key"]}


def _open_text(body: IO[bytes], gzipped: bool) -> IO[str]:
    raw: Any = gzip.GzipFile(fileobj=body) if gzipped else io.BytesIO(body.read())
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def inventory_objects(
    s3: Any, manifest: InventoryManifest, bucket: str, prefix: str, position: Position | None
) -> Iterator[tuple[ListedObject, Position]]:
    """The inventory's current objects of ``bucket`` under ``prefix``, resumed at (file index, row)."""
    start_file = int((position or {}).get("file", 0))
    start_row = int((position or {}).get("row", 0))
    for file_index, data_file in enumerate(manifest.files):
        if file_index < start_file:
            continue
        try:
            body = s3.get_object(Bucket=manifest.destination_bucket, Key=data_file.key)["Body"]
        except ClientError as exc:
            raise BackfillError(f"cannot read s3://{manifest.destination_bucket}/{data_file.key}: {exc}") from None
        text = _open_text(body, data_file.key.endswith(".gz"))
        try:
            first = start_row if file_index == start_file else 0
            for row_index, obj in inventory_rows(text, manifest, file_index, first):
                if obj is None or obj.bucket != bucket or not obj.key.startswith(prefix):
                    continue
                yield obj, {"file": file_index, "row": row_index + 1}
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise BackfillError(f"inventory file {data_file.key} is unreadable: {exc}") from None
        finally:
            text.close()


def read_manifest(s3: Any, uri: str) -> InventoryManifest:
    bucket, key = parse_s3_uri(uri)
    try:
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        raise BackfillError(f"cannot read the inventory manifest {uri}: {exc}") from None
    return parse_manifest(text, bucket, uri)


# --- AWS: the records of a chunk, and sending it --------------------------------------------------------------------


def _backoff(attempt: int, sleep: Callable[[float], None]) -> None:
    sleep(min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**attempt))


_RECORD_NAMES = {"#k": "key", "#s": "status", "#o": "object", "#v": "version_token"}


def fetch_records(
    dynamodb: Any, table: str, bucket: str, keys: Sequence[str], sleep: Callable[[float], None] = time.sleep
) -> dict[str, dict[str, Any]]:
    """The records of up to 100 keys (BatchGetItem, retrying unprocessed keys with backoff), by key."""
    unique = list(dict.fromkeys(keys))
    if len(unique) > 100:
        raise ValueError("BatchGetItem reads at most 100 keys")
    found: dict[str, dict[str, Any]] = {}
    request: dict[str, Any] = {
        table: {
            "Keys": [{"bucket": {"S": bucket}, "key": {"S": key}} for key in unique],
            "ProjectionExpression": ", ".join(_RECORD_NAMES),
            "ExpressionAttributeNames": _RECORD_NAMES,
            "ConsistentRead": True,
        }
    }
    for attempt in range(RETRY_ATTEMPTS + 1):
        if not unique:
            break
        try:
            response = dynamodb.batch_get_item(RequestItems=request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            transient = status >= 500 or any(part in code for part in ("Throughput", "Throttl", "LimitExceeded"))
            if attempt < RETRY_ATTEMPTS and transient:
                _backoff(attempt, sleep)
                continue
            raise
        for item in response.get("Responses", {}).get(table, []):
            record = from_item(item)
            found[str(record["key"])] = record
        request = response.get("UnprocessedKeys") or {}
        if not request:
            return found
        _backoff(attempt, sleep)
    raise BackfillError(f"BatchGetItem on {table} left keys unprocessed after {RETRY_ATTEMPTS} retries")


def send_batch(sqs: Any, queue_url: str, bodies: Sequence[str], sleep: Callable[[float], None] = time.sleep) -> None:
    """Up to 10 messages in one SendMessageBatch; failed entries are sent again with backoff until every one is in
    (an entry the queue refuses as malformed, SenderFault, is not retried)."""
    pending = {str(index): body for index, body in enumerate(bodies)}
    for attempt in range(RETRY_ATTEMPTS + 1):
        entries = [{"Id": entry_id, "MessageBody": body} for entry_id, body in pending.items()]
        try:
            result = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if attempt < RETRY_ATTEMPTS and (status >= 500 or "Throttl" in code or "RequestThrottled" in code):
                _backoff(attempt, sleep)
                continue
            raise
        for entry in result.get("Successful", []):
            pending.pop(entry["Id"], None)
        refused = [entry for entry in result.get("Failed", []) if entry.get("SenderFault")]
        if refused:
            first = refused[0]
            raise BackfillError(
                f"the queue refused {len(refused)} message(s): {first.get('Code')}: {first.get('Message')}"
            )
        if not pending:
            return
        _backoff(attempt, sleep)
    raise BackfillError(f"{len(pending)} message(s) still not accepted by the queue after {RETRY_ATTEMPTS} retries")


# --- Ctrl-C ---------------------------------------------------------------------------------------------------------


class InterruptGuard:
    """Ctrl-C stops at once between chunks; once a chunk's first message is sent, the chunk is finished first (a
    second Ctrl-C stops at once: the checkpoint then stays at the chunk before, and at most that chunk is sent again
    on resume, which the pipeline tolerates)."""

    def __init__(self) -> None:
        self.requested = False
        self.holding = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.holding and not self.requested:
            self.requested = True
            print(
                "\ninterrupt: finishing the chunk being sent, then stopping (Ctrl-C again to stop now)", file=sys.stderr
            )
            return
        raise KeyboardInterrupt

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


# --- The run --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    bucket: str
    queue_url: str
    table: str
    function_name: str | None = None


@dataclass
class Candidate:
    obj: ListedObject
    profile: str


class _Planner:
    """Decides per object: the filters that need no AWS call, then the records of a whole chunk."""

    def __init__(
        self, *, settings: Settings, profiles: ProfileSet, override: str | None, since: datetime | None
    ) -> None:
        self.settings = settings
        self.profiles = profiles
        self.override = override
        self.since = since

    def prefilter(self, obj: ListedObject) -> tuple[str | None, str | None]:
        """(profile, None) to look the record up, or (None, skip reason)."""
        if self.since is not None and obj.last_modified < self.since:
            return None, BEFORE_SINCE
        if obj.key.endswith("/") and obj.size == 0:
            return None, FOLDER_PLACEHOLDER
        choice = select_profile(obj.key, self.profiles, self.settings, self.override)
        return choice.profile, choice.skip


@dataclass
class _Survey:
    entries: int = 0
    candidates: int = 0
    candidate_bytes: int = 0


def _survey(source: Iterator[tuple[ListedObject, Position]], planner: _Planner, err: IO[str]) -> _Survey:
    """A first pass over the source (no record read): how many objects it holds (the progress bar's total), and how
    many a forced run would describe again."""
    survey = _Survey()
    with tqdm(unit=" obj", desc="counting", file=err, dynamic_ncols=True, disable=None) as progress:
        for obj, _position in source:
            survey.entries += 1
            profile, _skip = planner.prefilter(obj)
            if profile is not None:
                survey.candidates += 1
                survey.candidate_bytes += obj.size
            progress.update(1)
    return survey


def _chunks(source: Iterator[tuple[ListedObject, Position]]) -> Iterator[list[tuple[ListedObject, Position]]]:
    chunk: list[tuple[ListedObject, Position]] = []
    for entry in source:
        chunk.append(entry)
        if len(chunk) >= CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def human_bytes(size: float) -> str:
    """Binary units, as the estimate's table writes them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TiB"  # pragma: no cover


def render_summary(counts: Counts, *, dry_run: bool, force: bool) -> str:
    lines = [
        f"listed   {counts.listed:>10,} objects  {human_bytes(counts.listed_bytes)}",
        f"queued   {counts.queued:>10,} objects  {human_bytes(counts.queued_bytes)}"
        + ("  (dry run: would be queued)" if dry_run else ""),
        f"skipped  {counts.skipped_total:>10,} objects",
    ]
    for reason, count in sorted(counts.skipped.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {count:>16,}  {reason}")
    if force and counts.queued:
        described = "would be described again and paid for" if dry_run else "will be described again and paid for"
        lines.append(f"{counts.queued:,} objects {described} (the content cache is bypassed)")
    return "\n".join(lines)


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this run: the same parameters (so the same checkpoint)."""
    words = ["sightline", "backfill"]
    if args.stack_name:
        words += ["--stack-name", args.stack_name]
    for flag, value in (("--bucket", args.bucket), ("--queue-url", args.queue_url), ("--table", args.table)):
        if value:
            words += [flag, value]
    for flag, value in (
        ("--prefix", args.prefix or None),
        ("--since", args.since_text),
        ("--profile", args.profile),
        ("--inventory", args.inventory),
        ("--rate", None if args.rate == DEFAULT_RATE else f"{args.rate:g}"),
        ("--checkpoint", args.checkpoint),
        ("--profiles-file", args.profiles_file),
    ):
        if value:
            words += [flag, str(value)]
    if args.force:
        words.append("--force")
    if args.yes:
        words.append("--yes")
    return shlex.join(words)


class _Run:
    """One backfill run (or dry run): the source, the decisions per chunk, the queue and the checkpoint."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        target: Target,
        planner: _Planner,
        source: Source,
        s3: Any,
        dynamodb: Any,
        sqs: Any,
        checkpoint: Checkpoint,
        checkpoint_path: Path | None,
    ) -> None:
        self.args = args
        self.target = target
        self.planner = planner
        self.source = source
        self.s3 = s3
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.checkpoint = checkpoint
        self.checkpoint_path = checkpoint_path
        self.limiter = RateLimiter(args.rate)
        self.region = str(getattr(getattr(sqs, "meta", None), "region_name", "") or "")
        self.estimator: _DryRunEstimator | None = None

    def _decide(self, chunk: list[tuple[ListedObject, Position]], pending: Counts) -> list[Candidate]:
        candidates: list[Candidate] = []
        for obj, _position in chunk:
            pending.listed += 1
            pending.listed_bytes += obj.size
            profile, reason = self.planner.prefilter(obj)
            if profile is None:
                pending.skip(reason or "skipped")
            else:
                candidates.append(Candidate(obj, profile))
        if not candidates:
            return []
        records = fetch_records(self.dynamodb, self.target.table, self.target.bucket, [c.obj.key for c in candidates])
        chosen: list[Candidate] = []
        for candidate in candidates:
            reason = skip_reason(candidate.obj, records.get(candidate.obj.key), force=self.args.force)
            if reason is None:
                chosen.append(candidate)
            else:
                pending.skip(reason)
        return chosen

    def _send(self, chosen: list[Candidate], guard: InterruptGuard) -> None:
        """Send the chunk whole. An interruption before its first message leaves it unsent (KeyboardInterrupt); after
        it, the rest is sent without waiting and ``guard.requested`` says to stop after the checkpoint."""
        sent = 0
        now = datetime.now(UTC)
        for start in range(0, len(chosen), SEND_BATCH):
            batch = chosen[start : start + SEND_BATCH]
            if not guard.requested:
                try:
                    self.limiter.acquire(len(batch))
                except KeyboardInterrupt:
                    if sent == 0:
                        raise
                    guard.requested = True
            guard.holding = True
            bodies = [
                s3_notification(
                    [
                        backfill_event(
                            c.obj, run=self.checkpoint.run, force=self.args.force, profile=self.args.profile, now=now
                        )
                    ],
                    self.region,
                )
                for c in batch
            ]
            send_batch(self.sqs, self.target.queue_url, bodies)
            sent += len(batch)

    def execute(self, progress: Any) -> bool:
        """Process every chunk from the checkpoint's position; False when interrupted (the checkpoint is saved)."""
        checkpoint = self.checkpoint
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, checkpoint)  # the run id is kept even if stopped in the first chunk
        with InterruptGuard() as guard:
            try:
                for chunk in _chunks(self.source(checkpoint.position)):
                    pending = Counts()
                    chosen = self._decide(chunk, pending)
                    if self.estimator is not None:
                        self.estimator.add(chosen)
                    else:
                        self._send(chosen, guard)
                    guard.holding = True  # from here until the checkpoint is saved, Ctrl-C waits
                    for candidate in chosen:
                        pending.queued += 1
                        pending.queued_bytes += candidate.obj.size
                    checkpoint.counts.add(pending)
                    checkpoint.position = chunk[-1][1]
                    if self.checkpoint_path is not None:
                        save_checkpoint(self.checkpoint_path, checkpoint)
                    guard.holding = False
                    progress.update(len(chunk))
                    progress.set_postfix(
                        queued=checkpoint.counts.queued, skipped=checkpoint.counts.skipped_total, refresh=False
                    )
                    if guard.requested:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                return False
        return True


class _DryRunEstimator:
    """--dry-run: each object that would be queued is probed (a few KB read) and its cost estimated."""

    def __init__(self, s3: Any, settings: Settings, profiles: ProfileSet, pricing: str | None) -> None:
        from sightline.describe import DescribeOptions
        from sightline.estimate import EstimateReport, estimate_object
        from sightline.pricing import load_prices
        from sightline_cli.probe import probe_object

        self._options_for = DescribeOptions.for_profile
        self._estimate = estimate_object
        self._probe = probe_object
        self.prices = load_prices(pricing)
        self.report = EstimateReport()
        self.s3 = s3
        self.settings = settings
        self.profiles = profiles
        self._options: dict[str, Any] = {}

    def add(self, chosen: list[Candidate]) -> None:
        for candidate in chosen:
            options = self._options.get(candidate.profile)
            if options is None:
                profile = self.profiles.get(candidate.profile)
                assert profile is not None  # chosen by select_profile
                options = self._options[candidate.profile] = self._options_for(profile, self.settings)
            obj = candidate.obj
            probe = self._probe(self.s3, obj.bucket, obj.key, version_id=obj.version_id, size=obj.size)
            price = self.prices.for_model(options.model_id)
            estimate = self._estimate(probe.shape, options, self.settings, price)
            self.report.add(candidate.profile, options.detail, options.model_id, obj.size, estimate, probe.bytes_read)

    def render(self) -> str:
        return str(self.report.render(self.prices))


# --- The command ----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Describe the objects a bucket already holds: list them (or read an S3 Inventory), skip those already "
        "described, and send the rest to the uploads queue as backfill items (a real upload's event always wins "
        "over them). Ctrl-C is safe: run the same command again to resume."
    )
    parser.add_argument(
        "--stack-name", help=f"read the bucket, queue and table from this stack (default: {DEFAULT_STACK_NAME})"
    )
    parser.add_argument("--bucket", help="the uploads bucket (with --queue-url and --table, instead of --stack-name)")
    parser.add_argument("--queue-url", help="the uploads queue URL (with --bucket and --table)")
    parser.add_argument("--table", help="the results table (with --bucket and --queue-url)")
    parser.add_argument("--prefix", default="", help="only keys starting with this prefix")
    parser.add_argument(
        "--since",
        dest="since_text",
        metavar="DATE",
        help="only objects last modified at or after this date (2026-01-31) or time (2026-01-31T12:00:00Z), UTC",
    )
    parser.add_argument("--profile", help="describe every object of the run with this profile (instead of by key)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="describe again objects already described (once per run; the content cache is bypassed: paid again)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="send nothing; estimate the run's cost (reads a few KB per object)"
    )
    parser.add_argument(
        "--inventory",
        metavar="S3_URI",
        help="read the objects from an S3 Inventory (CSV) manifest, s3://bucket/path/manifest.json, "
        "instead of listing the bucket",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        metavar="N",
        help=f"objects queued per second (default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help=f"where progress is saved (default: {CHECKPOINT_DIR}/backfill-<hash of the run's parameters>.json)",
    )
    parser.add_argument("--restart", action="store_true", help="ignore a saved checkpoint and start a new run")
    parser.add_argument(
        "--profiles-file", metavar="FILE", help="the profiles file (default: the one bundled with the function)"
    )
    parser.add_argument("--pricing", metavar="FILE", help="--dry-run: the pricing table (default: the bundled one)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation (--force)")


def _check_args(args: argparse.Namespace) -> str | None:
    explicit = [args.bucket, args.queue_url, args.table]
    if any(explicit) and not all(explicit):
        return "--bucket, --queue-url and --table go together"
    if any(explicit) and args.stack_name:
        return "give either --stack-name or --bucket/--queue-url/--table, not both"
    if not args.rate > 0:
        return "--rate must be above 0"
    if args.since_text:
        try:
            args.since = parse_since(args.since_text)
        except argparse.ArgumentTypeError as exc:
            return f"--since: {exc}"
    else:
        args.since = None
    return None


def _target(args: argparse.Namespace, cloudformation: Callable[[], Any]) -> Target:
    if args.bucket:
        return Target(bucket=args.bucket, queue_url=args.queue_url, table=args.table)
    stack_name = args.stack_name or DEFAULT_STACK_NAME
    stack = cloudformation().describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    names = ("UploadsBucketName", "UploadsQueueUrl", "ResultsTableName")
    missing = [name for name in names if name not in outputs]
    if missing:
        raise MissingStackOutputError(f"stack {stack_name} has no output {', '.join(missing)}")
    return Target(
        bucket=outputs["UploadsBucketName"],
        queue_url=outputs["UploadsQueueUrl"],
        table=outputs["ResultsTableName"],
        function_name=outputs.get("DescribeImageFunctionName"),
    )


def _settings(target: Target, lambda_client: Callable[[], Any], err: IO[str]) -> tuple[Settings, str]:
    """The deployed function's settings when it can be read, else the local environment's."""
    if target.function_name:
        try:
            configuration = lambda_client().get_function_configuration(FunctionName=target.function_name)
            env = (configuration.get("Environment") or {}).get("Variables") or {}
            return load_settings(env, require_stack=False), f"function {target.function_name}"
        except (ClientError, BotoCoreError, SettingsError) as exc:
            print(f"note: the function's settings are not readable ({exc}); using the local environment", file=err)
    return load_settings(os.environ, require_stack=False), "the local environment"


def _profiles_path(args: argparse.Namespace, settings: Settings, err: IO[str]) -> str:
    if args.profiles_file:
        return str(args.profiles_file)
    if settings.profiles_file and Path(settings.profiles_file).is_file():
        return settings.profiles_file
    print(
        f"note: the function's profiles file {settings.profiles_file} is not here; using the bundled one "
        "(--profiles-file to name a copy)",
        file=err,
    )
    return BUNDLED_PROFILES_FILE


def _confirm(message: str, args: argparse.Namespace, err: IO[str]) -> int | None:
    """None to go on, else the exit status."""
    print(message, file=err)
    if args.yes:
        return None
    if not sys.stdin.isatty():
        print("error: stdin is not a terminal: confirm with --yes", file=err)
        return 2
    try:
        answer = input("Queue them? [y/N] ").strip().lower()
    except EOFError:
        answer = ""
    if answer not in ("y", "yes"):
        print("nothing queued", file=err)
        return 1
    return None


def _is_versioned(s3: Any, bucket: str) -> bool:
    return s3.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")


def run(args: argparse.Namespace, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    problem = _check_args(args)
    if problem:
        print(f"sightline backfill: {problem}", file=err)
        return 2
    session = boto3.session.Session()
    s3, dynamodb, sqs = session.client("s3"), session.client("dynamodb"), session.client("sqs")
    checkpoint: Checkpoint | None = None
    try:
        target = _target(args, lambda: session.client("cloudformation"))
        settings, settings_source = _settings(target, lambda: session.client("lambda"), err)
        profiles = load_profiles_file(_profiles_path(args, settings, err))
        if args.profile and profiles.get(args.profile) is None:
            print(f"sightline backfill: --profile: {unknown_profile_reason(args.profile, profiles)}", file=err)
            return 2
        planner = _Planner(settings=settings, profiles=profiles, override=args.profile, since=args.since)
        source = _source(args, s3, target)
        params = run_params(
            bucket=target.bucket,
            prefix=args.prefix,
            since=args.since,
            profile=args.profile,
            force=args.force,
            inventory=args.inventory,
        )
        checkpoint, checkpoint_path = _checkpoint(args, params, err)
        print(f"settings from {settings_source}; {len(profiles.profiles)} profile(s)", file=err)
        total = checkpoint.total
        if args.force or (args.inventory and total is None):
            survey = _survey(source(checkpoint.position), planner, err)
            if total is None:
                total = checkpoint.counts.listed + survey.entries
                checkpoint.total = total
            if args.force and not args.dry_run:
                message = (
                    f"{survey.candidates:,} objects ({human_bytes(survey.candidate_bytes)}) will be described again and "
                    "paid for (the content cache is bypassed)"
                )
                status = _confirm(message, args, err)
                if status is not None:
                    return status
        runner = _Run(
            args,
            target=target,
            planner=planner,
            source=source,
            s3=s3,
            dynamodb=dynamodb,
            sqs=sqs,
            checkpoint=checkpoint,
            checkpoint_path=None if args.dry_run else checkpoint_path,
        )
        if args.dry_run:
            runner.estimator = _DryRunEstimator(s3, settings, profiles, args.pricing)
        where = f"s3://{target.bucket}/{args.prefix}" + (f" (inventory {args.inventory})" if args.inventory else "")
        print(f"{'dry run' if args.dry_run else 'run ' + checkpoint.run}: {where} → {target.queue_url}", file=err)
        with tqdm(
            total=total,
            initial=checkpoint.counts.listed,
            unit=" obj",
            desc="listed",
            file=err,
            dynamic_ncols=True,
            disable=None,
        ) as progress:
            finished = runner.execute(progress)
    except KeyboardInterrupt:
        print("\ninterrupted before anything was queued", file=err)
        return EXIT_INTERRUPTED
    except (ClientError, BotoCoreError, MissingStackOutputError, SettingsError, BackfillError) as exc:
        print(f"error: {exc}", file=err)
        if checkpoint is not None and not args.dry_run and checkpoint.counts.queued:
            print(f"the run can be resumed where it stopped: {resume_command(args)}", file=err)
        return 1
    if not finished and not args.dry_run:
        checkpoint = load_checkpoint(checkpoint_path) or checkpoint  # what was sent whole (a second Ctrl-C cuts short)
    print(render_summary(checkpoint.counts, dry_run=args.dry_run, force=args.force), file=out)
    if args.dry_run:
        assert runner.estimator is not None
        print("", file=out)
        print(runner.estimator.render(), file=out)
        if not finished:
            print("\ninterrupted: the estimate covers the objects listed so far", file=err)
            return EXIT_INTERRUPTED
        return 0
    if not finished:
        print(
            f"\ninterrupted: the checkpoint {checkpoint_path} holds run {checkpoint.run}; nothing was sent half-way.\n"
            f"resume with: {resume_command(args)}",
            file=err,
        )
        return EXIT_INTERRUPTED
    checkpoint.done = True
    save_checkpoint(checkpoint_path, checkpoint)
    print(f"run {checkpoint.run} done (checkpoint {checkpoint_path} marked done)", file=err)
    return 0


def _source(args: argparse.Namespace, s3: Any, target: Target) -> Source:
    if args.inventory:
        manifest = read_manifest(s3, args.inventory)
        if manifest.source_bucket and manifest.source_bucket != target.bucket:
            raise BackfillError(
                f"the inventory lists s3://{manifest.source_bucket}, not the uploads bucket s3://{target.bucket}"
            )
        if args.since and "LastModifiedDate" not in manifest.columns:
            raise BackfillError("--since needs the inventory's LastModifiedDate field, which it does not have")
        return lambda position: inventory_objects(s3, manifest, target.bucket, args.prefix, position)
    if _is_versioned(s3, target.bucket):
        return lambda position: list_latest_versions(s3, target.bucket, args.prefix, position)
    return lambda position: list_current_objects(s3, target.bucket, args.prefix, position)


def _checkpoint(args: argparse.Namespace, params: dict[str, Any], err: IO[str]) -> tuple[Checkpoint, Path]:
    path = Path(args.checkpoint) if args.checkpoint else default_checkpoint_path(params)
    fresh = Checkpoint(run=uuid.uuid4().hex, params=params, started_at=iso_z(datetime.now(UTC)))
    if args.dry_run or args.restart:
        return fresh, path
    saved = load_checkpoint(path)
    if saved is None:
        return fresh, path
    if saved.params != params:
        raise BackfillError(
            f"the checkpoint {path} belongs to a run of other parameters ({json.dumps(saved.params)}); "
            "use another --checkpoint, or --restart to overwrite it"
        )
    if saved.done:
        print(f"the previous run {saved.run} of these parameters finished; starting a new run", file=err)
        return fresh, path
    print(
        f"resuming run {saved.run} from {path}: {saved.counts.listed:,} listed, {saved.counts.queued:,} queued so far",
        file=err,
    )
    return saved, path
