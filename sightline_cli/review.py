"""`sightline review set` and `sightline review apply`: a person's alt text for a key, kept across every later
re-description.

``set`` stores one key's; ``apply`` stores every entry of a review file (JSON Lines, what the gallery page of
`sightline report` downloads; the format is ``sightline.gallery.read_review_file``'s). Each entry says which bytes
the reviewer saw (``content_sha256``): when the key's image changed since, the review is stored all the same and
marked stale (``review_stale``), as a re-description would mark it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scripts.redrive_dlq import DEFAULT_STACK_NAME, MissingStackOutputError, stack_outputs
from sightline.adapters.dynamodb import DynamoDBResultStore, conditional_write, from_item, to_item
from sightline.errors import SightlineError
from sightline.gallery import ReviewEntry, ReviewFileError, read_review_file
from sightline.records import utc_now_iso
from sightline.text import bounded

REVIEW_MAX_BYTES = 2_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_parser = actions.add_parser("set", help="store a reviewed alt text for one key")
    source = set_parser.add_mutually_exclusive_group()
    source.add_argument(
        "--stack-name", help=f"read the table and bucket from this stack (default: {DEFAULT_STACK_NAME})"
    )
    source.add_argument("--table", help="results table name (with --bucket, instead of --stack-name)")
    set_parser.add_argument("--bucket", help="the uploads bucket (default: the stack's)")
    set_parser.add_argument("--key", required=True, help="the object key, as stored (decoded)")
    set_parser.add_argument("--alt-text", required=True, help="the reviewed alt text ('' for a decorative image)")
    set_parser.add_argument("--by", default=None, help="who reviewed it (default: the local user name)")

    apply_parser = actions.add_parser(
        "apply", help="store the reviewed alt text of every entry of a review file (the gallery's download)"
    )
    apply_parser.add_argument("file", metavar="FILE", help="the review file (JSON Lines); - for standard input")
    apply_source = apply_parser.add_mutually_exclusive_group()
    apply_source.add_argument(
        "--stack-name", help=f"read the table and bucket from this stack (default: {DEFAULT_STACK_NAME})"
    )
    apply_source.add_argument("--table", help="results table name (instead of --stack-name)")
    apply_parser.add_argument(
        "--bucket",
        help="only entries for this bucket (default: the stack's; with --table: any); others are failures",
    )
    apply_parser.add_argument(
        "--by", default=None, help="who reviewed the entries that do not say (default: the local user name)"
    )
    apply_parser.add_argument("--dry-run", action="store_true", help="check every entry, store nothing")


def review_for(record: dict[str, Any], alt_text: str, by: str) -> dict[str, Any]:
    """What is stored: the text, who and when, and which content it was reviewed against (for review_stale)."""
    return {
        "alt_text": bounded(alt_text.strip(), REVIEW_MAX_BYTES),
        "reviewed_by": bounded(by, 200),
        "reviewed_at": utc_now_iso(),
        "content_sha256": record.get("content_sha256"),
        "version_token": record.get("version_token"),
    }


def set_review(client: Any, table: str, bucket: str, key: str, alt_text: str, by: str) -> dict[str, Any] | None:
    """Store the review on the key's record; None when the key has no record."""
    item = client.get_item(TableName=table, Key={"bucket": {"S": bucket}, "key": {"S": key}}, ConsistentRead=True)
    if "Item" not in item:
        return None
    review = review_for(from_item(item["Item"]), alt_text, by)
    return review if DynamoDBResultStore(client, table).set_review(bucket, key, review) else None


Outcome = Literal["applied", "unchanged", "missing", "failed"]


@dataclass(frozen=True)
class ApplyResult:
    entry: ReviewEntry
    outcome: Outcome
    stale: bool = False  # applied, but the key's image changed since the reviewer saw it
    detail: str = ""


@dataclass
class ApplyReport:
    results: list[ApplyResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)

    @property
    def stale(self) -> int:
        return sum(1 for result in self.results if result.stale)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0

    def summary(self, dry_run: bool = False) -> str:
        verb = "would be applied" if dry_run else "applied"
        return (
            f"{self.count('applied'):,} {verb} ({self.stale:,} stale: the image changed since it was reviewed), "
            f"{self.count('unchanged'):,} unchanged, {self.count('missing'):,} missing, "
            f"{self.count('failed'):,} failed" + (" (dry run: nothing stored)" if dry_run else "")
        )


def _seen_content(entry: ReviewEntry, record: dict[str, Any]) -> str | None:
    """The bytes the reviewer saw: the entry's digest; without one, the record's when the entry names the record's
    version (or none), else unknown (None: the review then counts as stale)."""
    if entry.content_sha256:
        return entry.content_sha256
    current = record.get("version_token")
    if not entry.version or not current or entry.version == current:
        sha = record.get("content_sha256")
        return str(sha) if sha else None
    return None


def apply_entry(
    client: Any, table: str, entry: ReviewEntry, by: str, *, expected_bucket: str | None = None, dry_run: bool = False
) -> ApplyResult:
    """Store one entry's reviewed alt text on its key's record (``review_for`` + ``set_review``), marked stale when
    the record's bytes are not the ones the reviewer saw. A key without a record (or deleted) is ``missing``."""
    if expected_bucket and entry.bucket != expected_bucket:
        return ApplyResult(entry, "failed", detail=f"not this deployment's bucket ({expected_bucket})")
    item = client.get_item(
        TableName=table, Key={"bucket": {"S": entry.bucket}, "key": {"S": entry.key}}, ConsistentRead=True
    )
    if "Item" not in item:
        return ApplyResult(entry, "missing", detail=f"no record in {table}")
    record = from_item(item["Item"])
    if record.get("status") == "deleted":
        return ApplyResult(entry, "missing", detail="the object was deleted")
    seen = _seen_content(entry, record)
    review = review_for(record, entry.alt_text, entry.reviewed_by or by)
    review["content_sha256"] = seen
    review["version_token"] = entry.version or record.get("version_token")
    review = {name: value for name, value in review.items() if value is not None}
    stale = seen is None or seen != record.get("content_sha256")
    current = record.get("review") if isinstance(record.get("review"), dict) else None
    if (
        current is not None
        and record.get("alt_text_reviewed") == review["alt_text"]
        and current.get("content_sha256") == seen
    ):
        return ApplyResult(entry, "unchanged", stale=False, detail="the same reviewed alt text is stored")
    if dry_run:
        return ApplyResult(entry, "applied", stale=stale)
    if not DynamoDBResultStore(client, table).set_review(entry.bucket, entry.key, review):
        return ApplyResult(entry, "missing", detail=f"no record in {table}")
    if stale:  # set_review says "not stale": correct it, unless a re-description has stored the record since
        condition = "review.reviewed_at = :at"
        values: dict[str, Any] = {":at": review["reviewed_at"], ":true": True}
        if seen is not None:
            condition += " AND (attribute_not_exists(content_sha256) OR content_sha256 <> :seen)"
            values[":seen"] = seen
        conditional_write(
            client,
            table,
            "update_item",
            Key={"bucket": {"S": entry.bucket}, "key": {"S": entry.key}},
            UpdateExpression="SET review_stale = :true",
            ConditionExpression=condition,
            ExpressionAttributeValues=to_item(values),
        )
    return ApplyResult(entry, "applied", stale=stale)


def apply_reviews(
    client: Any,
    table: str,
    entries: Sequence[ReviewEntry],
    by: str,
    *,
    expected_bucket: str | None = None,
    dry_run: bool = False,
) -> ApplyReport:
    """Every entry in turn; one entry's AWS error fails that entry, not the rest."""
    report = ApplyReport()
    for entry in entries:
        try:
            result = apply_entry(client, table, entry, by, expected_bucket=expected_bucket, dry_run=dry_run)
        except (ClientError, BotoCoreError, SightlineError) as exc:
            result = ApplyResult(entry, "failed", detail=str(exc))
        report.results.append(result)
    return report


def _read_entries(path: str) -> list[ReviewEntry]:
    if path == "-":
        return read_review_file(sys.stdin, source="standard input")
    with open(path, encoding="utf-8-sig") as stream:
        return read_review_file(stream, source=path)


def _run_apply(args: argparse.Namespace) -> int:
    try:
        entries = _read_entries(args.file)
    except ReviewFileError as exc:
        print(f"error: the review file is invalid, nothing was applied:\n{exc}", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"error: cannot read {args.file}: {reason}", file=sys.stderr)
        return 1
    try:
        if args.table:
            table, bucket = args.table, args.bucket
        else:
            table, stack_bucket = stack_outputs(
                boto3.client("cloudformation"),
                args.stack_name or DEFAULT_STACK_NAME,
                "ResultsTableName",
                "UploadsBucketName",
            )
            bucket = args.bucket or stack_bucket
        report = apply_reviews(
            boto3.client("dynamodb"),
            table,
            entries,
            args.by or getpass.getuser(),
            expected_bucket=bucket,
            dry_run=args.dry_run,
        )
    except (ClientError, BotoCoreError, MissingStackOutputError, SightlineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for result in report.results:
        where = f"s3://{result.entry.bucket}/{result.entry.key} (line {result.entry.line})"
        if result.outcome == "failed":
            print(f"failed: {where}: {result.detail}", file=sys.stderr)
        elif result.outcome == "missing":
            print(f"missing: {where}: {result.detail}")
        elif result.stale:
            print(f"stale: {where}: the image changed since it was reviewed (stored, marked review_stale)")
    print(report.summary(args.dry_run))
    return 0 if report.ok else 1


def run(args: argparse.Namespace) -> int:
    if args.action == "apply":
        return _run_apply(args)
    try:
        if args.table:
            if not args.bucket:
                print("sightline review set: --table needs --bucket", file=sys.stderr)
                return 2
            table, bucket = args.table, args.bucket
        else:
            cloudformation = boto3.client("cloudformation")
            table, stack_bucket = stack_outputs(
                cloudformation, args.stack_name or DEFAULT_STACK_NAME, "ResultsTableName", "UploadsBucketName"
            )
            bucket = args.bucket or stack_bucket
        review = set_review(
            boto3.client("dynamodb"), table, bucket, args.key, args.alt_text, args.by or getpass.getuser()
        )
    except (ClientError, BotoCoreError, MissingStackOutputError, SightlineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if review is None:
        print(f"error: no record for s3://{bucket}/{args.key} in {table}", file=sys.stderr)
        return 1
    print(
        f"reviewed alt text stored for s3://{bucket}/{args.key} by {review['reviewed_by']} at {review['reviewed_at']}"
    )
    return 0
