"""The `sightline` command: one entry point, a subcommand per operator task."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Subcommand → (module, help). Each module has add_arguments(parser) and run(args) -> exit status; imported only
# when its subcommand runs, so `sightline describe` does not load boto3's paginators or tqdm.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "describe": ("sightline_cli.describe", "describe local files (the configured provider, or the offline endpoint)"),
    "backfill": (
        "sightline_cli.backfill",
        "describe what an existing bucket already holds (--dry-run: the cost first)",
    ),
    "usage": ("sightline_cli.usage", "billed tokens and cost from the records, beside the estimate"),
    "budget": ("sightline_cli.budget", "the day's spend against the caps, the provider breaker; resume deferred items"),
    "report": ("sightline_cli.report", "a static HTML gallery to review alt text and captions (opens from disk)"),
    "export": ("sightline_cli.export", "one row per object version for a CMS import (csv or jsonl)"),
    "review": ("sightline_cli.review", "set reviewed alt text (one key, or a review file from the gallery)"),
    "smoke": (
        "sightline_cli.smoke",
        "after a deploy: upload a test image, wait for its record and notification, report, delete it",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sightline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = list(argv) if argv is not None else None
    chosen = _chosen_command(argv)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)

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


def _chosen_command(argv: list[str] | None) -> str | None:
    import sys

    words = argv if argv is not None else sys.argv[1:]
    return next((word for word in words if not word.startswith("-")), None)
