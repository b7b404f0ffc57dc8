"""`sightline export`: one row per object version for a CMS import, as CSV or JSON Lines.

Each key's record is one row at its current version (``version``: the record's version token, the S3 versionId or
else the ETag). ``alt_text`` is the reviewed alt text where a person set one (``alt_text_source`` says which), else
the model's. Deleted keys are left out; rows of objects not described (failed, still processing, deferred) carry
their status and no model fields. Columns and formats: ``sightline.gallery`` (CSV: RFC 4180, UTF-8, a header row,
tags joined with "; ", cells a spreadsheet would run as a formula prefixed with a single quote; JSONL: exact values).
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import IO

from sightline_cli.records_source import add_profiles_argument, add_source_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("csv", "jsonl"), required=True, help="csv (RFC 4180) or jsonl")
    add_source_arguments(parser)
    parser.add_argument("--out", metavar="FILE", help="write here instead of to standard output")
    add_profiles_argument(parser)


def run(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from scripts.redrive_dlq import MissingStackOutputError
    from sightline.errors import SettingsError, SightlineError
    from sightline.gallery import export_rows, gallery_items, write_csv, write_jsonl
    from sightline_cli.records_source import load_profile_set, load_records, resolve_table

    try:
        profiles = load_profile_set(args.profiles_file)
        table = resolve_table(args)
        records = load_records(
            boto3.client("dynamodb"), table, prefix=args.prefix, statuses=args.status, profiles=args.profile
        )
    except (ClientError, BotoCoreError, MissingStackOutputError, SightlineError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = export_rows(gallery_items(records, profiles, None, include_deleted=bool(args.status)))
    write = write_csv if args.format == "csv" else write_jsonl
    try:
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="") as stream:
                count = write(rows, stream)
        else:
            out: IO[str] = sys.stdout
            if isinstance(out, io.TextIOWrapper) and (out.encoding or "").lower().replace("-", "") != "utf8":
                out.reconfigure(encoding="utf-8")  # the rows are UTF-8 whatever the locale says
            count = write(rows, out)
            out.flush()
    except OSError as exc:
        print(f"error: cannot write {args.out or 'standard output'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{count:,} row(s) from {table}" + (f" written to {args.out}" if args.out else ""), file=sys.stderr)
    return 0
