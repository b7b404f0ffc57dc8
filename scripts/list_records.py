"""List result records by status, newest first, with the reason each failed (or is still being retried)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scripts.redrive_dlq import DEFAULT_STACK_NAME, MissingStackOutputError, stack_outputs
from sightline.adapters.dynamodb import from_item
from sightline.records import DEFERRED, DELETED, FAILED, PARTIAL, PROCESSING, SUCCEEDED

STATUSES = (FAILED, PARTIAL, PROCESSING, DEFERRED, SUCCEEDED, DELETED)
STATUS_INDEX = "status-index"  # template.yaml ResultsTable: status (HASH) + processed_at (RANGE)

DEFAULT_LIMIT = 50
MESSAGE_CHARS = 100
# A processing item is claimed by a delivery; only these attributes say who it is and why it is retried.
_PROCESSING_ATTRIBUTES = ("bucket", "key", "status", "processed_at", "last_error_type", "last_error_message")


def _query_index(client: Any, table: str, status: str, limit: int) -> list[dict[str, Any]]:
    """Records with `status` from the GSI, newest processed_at first, at most `limit`."""
    found: list[dict[str, Any]] = []
    start: dict[str, Any] = {}
    while len(found) < limit:
        page = client.query(
            TableName=table,
            IndexName=STATUS_INDEX,
            KeyConditionExpression="#status = :status",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":status": {"S": status}},
            ScanIndexForward=False,
            Limit=limit - len(found),
            **start,
        )
        found.extend(from_item(item) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    return found[:limit]


def _scan_processing(client: Any, table: str, limit: int) -> list[dict[str, Any]]:
    """Claimed items (in flight, waiting for a retry, or parked in the DLQ): a filtered scan, since a key
    processed for the first time has no processed_at and so is not in the index."""
    names = {f"#a{index}": name for index, name in enumerate(_PROCESSING_ATTRIBUTES)}
    status_name = next(alias for alias, name in names.items() if name == "status")
    found: list[dict[str, Any]] = []
    start: dict[str, Any] = {}
    while len(found) < limit:
        page = client.scan(
            TableName=table,
            FilterExpression=f"{status_name} = :status",
            ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":status": {"S": "processing"}},
            **start,
        )
        found.extend(from_item(item) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    # Never processed before (no processed_at) first, then the most recent earlier result first.
    found.sort(key=lambda record: (record.get("processed_at") is None, record.get("processed_at", "")), reverse=True)
    return found[:limit]


def list_records(dynamodb_client: Any, table: str, status: str = "failed", limit: int = DEFAULT_LIMIT) -> list[dict]:
    """Records with this status, newest first; `processing` ones carry last_error_type/last_error_message."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if status == "processing":
        return _scan_processing(dynamodb_client, table, limit)
    return _query_index(dynamodb_client, table, status, limit)


def _reason(record: dict[str, Any]) -> tuple[str, str]:
    """Error type and message; for a processing record the last transient error (an older failed result's
    error_type may still be on the item)."""
    if record.get("status") == "processing":
        return record.get("last_error_type", ""), record.get("last_error_message", "")
    return record.get("error_type", ""), record.get("error_message", "")


def _cut(text: str, width: int = MESSAGE_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """Aligned columns: processed_at, s3://bucket/key, error type, message cut to ~100 characters."""
    rows = [("PROCESSED AT", "OBJECT", "ERROR TYPE", "MESSAGE")]
    for record in records:
        error_type, message = _reason(record)
        rows.append(
            (
                record.get("processed_at") or "-",
                f"s3://{record.get('bucket', '?')}/{record.get('key', '?')}",
                error_type or "-",
                _cut(message) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.list_records",
        description=(
            "List Sightline result records by status, newest first, with their error type and message. "
            "'processing' lists items claimed but not finished (being retried, or parked in the dead-letter "
            "queue) with their last transient error."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--stack-name", help=f"read the table name from this CloudFormation stack (default: {DEFAULT_STACK_NAME})"
    )
    source.add_argument("--table", help="results table name (instead of --stack-name)")
    parser.add_argument("--status", choices=STATUSES, default="failed", help="records to list (default: failed)")
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, metavar="N", help=f"at most N records (default: {DEFAULT_LIMIT})"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        table = (
            args.table
            or stack_outputs(boto3.client("cloudformation"), args.stack_name or DEFAULT_STACK_NAME, "ResultsTableName")[
                0
            ]
        )
        records = list_records(boto3.client("dynamodb"), table, args.status, args.limit)
    except (ClientError, BotoCoreError, MissingStackOutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False, sort_keys=True, default=str))
        return 0
    print(format_table(records))
    more = " (limit reached; --limit N for more)" if len(records) == args.limit else ""
    print(f"\n{len(records)} {args.status} record(s) in {table}{more}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
