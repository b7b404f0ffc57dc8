"""Where the CLI reads records from: the results table (by stack or by name), filtered; shared by `sightline
export` and `sightline report`.

    add_source_arguments(parser)         # --stack-name | --table, --prefix, --status ..., --profile ...
    table = resolve_table(args)          # --table, else the stack's ResultsTableName output
    records = load_records(boto3.client("dynamodb"), table, prefix=args.prefix, statuses=args.status,
                           profiles=args.profile)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from scripts.redrive_dlq import DEFAULT_STACK_NAME, stack_outputs
from sightline.profiles import ProfileSet

__all__ = [
    "STATUSES",
    "add_profiles_argument",
    "add_source_arguments",
    "load_profile_set",
    "load_records",
    "resolve_table",
]

STATUSES = ("succeeded", "partial", "failed", "processing", "deferred", "deleted")
# DynamoDB allows at most 100 operands in one IN (...) comparison.
_MAX_IN = 100
# Internal bookkeeping no reader of records needs (the deferred event can be large).
_LEFT_OUT = ("deferred_event", "claim_id", "claim_until", "notify_until", "attempt_usage", "fanout_pages")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--stack-name | --table, and the filters --prefix, --status, --profile (both repeatable or with several
    values: ``--status failed partial``)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--stack-name", help=f"read the results table from this CloudFormation stack (default: {DEFAULT_STACK_NAME})"
    )
    source.add_argument("--table", help="results table name (instead of --stack-name)")
    parser.add_argument("--prefix", default=None, help="only keys starting with this prefix (case-sensitive)")
    parser.add_argument(
        "--status",
        action="extend",
        nargs="+",
        choices=STATUSES,
        metavar="STATUS",
        help=f"only records with these statuses ({', '.join(STATUSES)}; default: all but deleted)",
    )
    parser.add_argument("--profile", action="extend", nargs="+", metavar="NAME", help="only records of these profiles")


def add_profiles_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profiles-file",
        metavar="FILE",
        help="the profiles file, for each profile's alt-text limit (default: PROFILES_FILE or the bundled one)",
    )


def resolve_table(args: argparse.Namespace, cloudformation: Any | None = None) -> str:
    """``--table``, else the ``ResultsTableName`` output of ``--stack-name`` (default ``sightline``).

    Raises botocore's ClientError (no such stack) or MissingStackOutputError.
    """
    table = getattr(args, "table", None)
    if table:
        return str(table)
    if cloudformation is None:
        import boto3

        cloudformation = boto3.client("cloudformation")
    stack = getattr(args, "stack_name", None) or DEFAULT_STACK_NAME
    return stack_outputs(cloudformation, stack, "ResultsTableName")[0]


def load_profile_set(path: str | None = None) -> ProfileSet:
    """The profiles file at ``path``, else PROFILES_FILE, else the bundled one. Raises ProfilesError/SettingsError."""
    from sightline.profiles import load_profiles_file
    from sightline.settings import load_settings

    return load_profiles_file(path or load_settings(require_stack=False).profiles_file)


def _in(name: str, values: Sequence[str], label: str, attribute_values: dict[str, Any]) -> str:
    unique = list(dict.fromkeys(values))
    if len(unique) > _MAX_IN:
        raise ValueError(f"at most {_MAX_IN} values for {label}, got {len(unique)}")
    placeholders = []
    for index, value in enumerate(unique):
        placeholder = f":{label}{index}"
        attribute_values[placeholder] = {"S": value}
        placeholders.append(placeholder)
    return f"{name} IN ({', '.join(placeholders)})"


def load_records(
    dynamodb: Any,
    table: str,
    *,
    prefix: str | None = None,
    statuses: Sequence[str] | None = None,
    profiles: Sequence[str] | None = None,
    bucket: str | None = None,
    include_deleted: bool = False,
) -> list[dict[str, Any]]:
    """Every record of the results table that passes the filters, as plain Python values (``from_item``),
    sorted by bucket and key.

    ``dynamodb`` is a boto3 DynamoDB client. ``prefix``: keys starting with it; ``statuses``/``profiles``: any of
    these (None or empty: all); ``bucket``: only that bucket's records (a Query on the partition key instead of a
    Scan). Deleted records are left out unless ``statuses`` names ``deleted`` or ``include_deleted``. Pages
    through the whole table (paginator); the internal claim and deferral bookkeeping is left out.
    """
    from sightline.adapters.dynamodb import from_item

    names: dict[str, str] = {"#key": "key"}
    values: dict[str, Any] = {}
    filters: list[str] = []
    key_condition: list[str] = []
    if bucket:
        names["#bucket"] = "bucket"
        values[":bucket"] = {"S": bucket}
        key_condition.append("#bucket = :bucket")
    if prefix:
        values[":prefix"] = {"S": prefix}
        (key_condition if bucket else filters).append("begins_with(#key, :prefix)")
    if statuses:
        names["#status"] = "status"
        filters.append(_in("#status", statuses, "status", values))
    elif not include_deleted:
        names["#status"] = "status"
        values[":deleted"] = {"S": "deleted"}
        filters.append("(attribute_not_exists(#status) OR #status <> :deleted)")
    if profiles:
        names["#profile"] = "profile"
        filters.append(_in("#profile", profiles, "profile", values))
    request: dict[str, Any] = {"TableName": table}
    if key_condition:
        request["KeyConditionExpression"] = " AND ".join(key_condition)
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    used = " ".join([*key_condition, *filters])
    names = {alias: name for alias, name in names.items() if alias in used}
    if names:
        request["ExpressionAttributeNames"] = names
    if values:
        request["ExpressionAttributeValues"] = values
    operation = "query" if key_condition else "scan"
    records: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator(operation).paginate(**request):
        for item in page.get("Items", []):
            record = from_item(item)
            for name in _LEFT_OUT:
                record.pop(name, None)
            records.append(record)
    records.sort(key=lambda record: (str(record.get("bucket", "")), str(record.get("key", ""))))
    return records
