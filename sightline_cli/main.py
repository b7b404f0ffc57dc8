"""The `sightline` command: one entry point, a subcommand per operator task."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sightline_cli import describe, review


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sightline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    describe_parser = commands.add_parser(
        "describe", help="describe local image files (the configured provider, or the offline endpoint)"
    )
    describe.add_arguments(describe_parser)
    describe_parser.set_defaults(run=describe.run)

    review_parser = commands.add_parser("review", help="set a reviewed alt text that no re-description overwrites")
    review.add_arguments(review_parser)
    review_parser.set_defaults(run=review.run)

    # The existing operator scripts, under the one command; their own options follow the subcommand.
    commands.add_parser("records", help="list records by status with their reasons", add_help=False)
    commands.add_parser("redrive", help="move the dead-letter queue back to the uploads queue", add_help=False)

    args, rest = parser.parse_known_args(argv)
    if args.command == "records":
        from scripts.list_records import main as records_main

        return records_main(rest)
    if args.command == "redrive":
        from scripts.redrive_dlq import main as redrive_main

        return redrive_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.run(args))
