"""`sightline review set`: a person's alt text for a key, kept across every later re-description."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scripts.redrive_dlq import DEFAULT_STACK_NAME, MissingStackOutputError, stack_outputs
from sightline.adapters.dynamodb import DynamoDBResultStore, from_item
from sightline.errors import SightlineError
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


def run(args: argparse.Namespace) -> int:
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
