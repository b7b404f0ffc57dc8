"""`sightline usage`: what the records say was billed (tokens, cost), beside what the estimate says for them.

Reads the results table (a Scan of the few attributes needed), groups the records by profile or by UTC day, and
prints per group: records, model calls, cache hits, the billed prompt and completion tokens (`usage`) and their
cost by the pricing table (`model_id`), then the estimate for the same records (`sightline.estimate`, from the
facts each record keeps: the image's size, a document's page count) and the estimate's error against the bill.
Only records that paid are compared: cache hits and records without a model call (refused before the model) are
counted apart, and records whose provider did not report usage (`usage_reported` false: the bill is unknown) are
flagged and left out of the comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sightline.describe import DescribeOptions
from sightline.estimate import ASSUMED_PAGE_TEXT_CHARS, Estimate, ObjectShape, estimate_object
from sightline.pricing import PriceTable
from sightline.profiles import DEFAULT_PROFILE_NAME, TASKS, ProfileSet, Task
from sightline.settings import DETAILS, Detail, Settings

__all__ = [
    "CONTEXT_STAND_IN_CHARS",
    "PROJECTED_ATTRIBUTES",
    "UsageGroup",
    "UsageReport",
    "add_arguments",
    "parse_since",
    "record_estimate",
    "record_options",
    "record_shape",
    "run",
    "scan_records",
    "usage_report",
]

# A record says a context was used, not what it was: this many characters are assumed (the limit is 1,000 bytes).
CONTEXT_STAND_IN_CHARS = 200
# What the report reads of each record: nested paths keep the large ones (page statuses, text) out of the scan.
PROJECTED_ATTRIBUTES = (
    "bucket",
    "key",
    "status",
    "profile",
    "task",
    "language",
    "detail",
    "model_id",
    "usage",
    "cache_hit",
    "context_used",
    "processed_at",
    "image.original_width",
    "image.original_height",
    "document.kind",
    "document.pages",
    "document.text_layer_pages",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scripts.redrive_dlq import DEFAULT_STACK_NAME

    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--stack-name", help=f"read the results table from this CloudFormation stack (default: {DEFAULT_STACK_NAME})"
    )
    source.add_argument("--table", help="results table name (instead of --stack-name)")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="DATE",
        help="only records processed at or after DATE (YYYY-MM-DD, or an ISO 8601 time; UTC unless it says)",
    )
    parser.add_argument("--by", choices=("profile", "day"), default="profile", help="group by (default: profile)")
    parser.add_argument("--pricing", metavar="FILE", help="pricing table (default: the bundled pricing.toml)")
    parser.add_argument(
        "--profiles-file",
        metavar="FILE",
        help="the profiles file, for each profile's instructions and fields (default: PROFILES_FILE or the bundled one)",
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")


def parse_since(text: str) -> str:
    """A date or an ISO 8601 time → the UTC prefix records' processed_at (…T…Z) compare against as strings."""
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def scan_records(dynamodb_client: Any, table: str, since: str | None = None) -> Iterator[dict[str, Any]]:
    """Every record processed at or after ``since`` (all without it), with only PROJECTED_ATTRIBUTES."""
    from sightline.adapters.dynamodb import from_item

    names: dict[str, str] = {}
    paths = []
    for attribute in PROJECTED_ATTRIBUTES:
        parts = []
        for part in attribute.split("."):
            alias = next((a for a, n in names.items() if n == part), None) or f"#a{len(names)}"
            names[alias] = part
            parts.append(alias)
        paths.append(".".join(parts))
    request: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": ", ".join(paths),
        "ExpressionAttributeNames": names,
    }
    if since:
        processed = next(a for a, n in names.items() if n == "processed_at")
        request["FilterExpression"] = f"{processed} >= :since"
        request["ExpressionAttributeValues"] = {":since": {"S": since}}
    for page in dynamodb_client.get_paginator("scan").paginate(**request):
        for item in page.get("Items", []):
            yield from_item(item)


# --- From a record to the estimate's inputs.


def record_shape(record: dict[str, Any]) -> ObjectShape:
    """What the record knows of the object's shape: a document's kind, page count and pages with a text layer,
    an image's upright size. A document's page size is not kept (a letter page is assumed)."""
    document = record.get("document")
    if isinstance(document, dict) and document.get("kind") in ("pdf", "tiff"):
        pages = _int(document.get("pages"))
        return ObjectShape(
            document["kind"], pages=pages or None, text_layer_pages=_int(document.get("text_layer_pages"))
        )
    image = record.get("image")
    if isinstance(image, dict):
        width, height = _int(image.get("original_width")), _int(image.get("original_height"))
        if width and height:
            return ObjectShape("image", width, height)
    return ObjectShape("unknown")


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def record_options(record: dict[str, Any], profiles: ProfileSet | None, settings: Settings) -> DescribeOptions:
    """The options the record was described with: its own model, detail, task and language; the instructions and
    fields of its profile as the profiles file has them now."""
    from sightline.answers import AnswerRules

    name = str(record.get("profile") or DEFAULT_PROFILE_NAME)
    profile = profiles.get(name) if profiles is not None else None
    task: Task = next((t for t in TASKS if t == record.get("task")), profile.task if profile else "caption")
    detail: Detail = next((d for d in DETAILS if d == record.get("detail")), settings.image_detail)
    rules = AnswerRules(
        task=task,
        language=str(record.get("language") or (profile.language if profile else "en")),
        alt_text_max_chars=profile.alt_text_max_chars if profile else 125,
        fields_schema=profile.fields if profile is not None and task == "document" else None,
    )
    return DescribeOptions(
        model_id=str(record.get("model_id") or (profile.model if profile else None) or settings.model_id),
        detail=detail,
        max_image_pixels=settings.max_image_pixels,
        max_output_tokens=settings.model_max_output_tokens,
        rules=rules,
        profile=name,
        instructions=profile.instructions if profile else "",
        context="x" * CONTEXT_STAND_IN_CHARS if record.get("context_used") else None,
    )


def record_estimate(
    record: dict[str, Any], profiles: ProfileSet | None, settings: Settings, prices: PriceTable
) -> Estimate:
    options = record_options(record, profiles, settings)
    return estimate_object(record_shape(record), options, settings, prices.for_model(options.model_id))


# --- The report.


@dataclass
class UsageGroup:
    """One group's records. Billed figures are every record's; estimated ones only those of the compared records
    (paid, usage reported), beside the billed figures of the same records."""

    records: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    no_call: int = 0  # no model call and not from the cache: refused or failed before the model
    usage_not_reported: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    unpriced: Counter[str] = field(default_factory=Counter)  # model id → records without a price
    compared: int = 0
    compared_prompt_tokens: int = 0
    compared_completion_tokens: int = 0
    compared_cost: float = 0.0
    estimated_requests: int = 0
    estimated_prompt_tokens: int = 0
    estimated_completion_tokens: int = 0
    estimated_cost: float = 0.0

    def add(self, record: dict[str, Any], prices: PriceTable, estimate: Callable[[dict[str, Any]], Estimate]) -> None:
        usage: dict[str, Any] = record["usage"] if isinstance(record.get("usage"), dict) else {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        calls = int(usage.get("model_calls") or 0)
        reported = usage.get("usage_reported", True) is not False
        self.records += 1
        self.model_calls += calls
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        model_id = str(record.get("model_id") or "")
        price = prices.for_model(model_id)
        if price is not None:
            self.cost += price.cost(prompt, completion)
        elif calls:
            self.unpriced[model_id or "(no model id)"] += 1
        if record.get("cache_hit"):
            self.cache_hits += 1
            return
        if not calls:
            self.no_call += 1
            return
        if not reported:
            self.usage_not_reported += 1
            return
        guess = estimate(record)
        self.compared += 1
        self.compared_prompt_tokens += prompt
        self.compared_completion_tokens += completion
        self.estimated_requests += guess.requests
        self.estimated_prompt_tokens += guess.prompt_tokens
        self.estimated_completion_tokens += guess.completion_tokens
        if price is not None:
            self.compared_cost += price.cost(prompt, completion)
            self.estimated_cost += price.cost(guess.prompt_tokens, guess.completion_tokens)

    def merge(self, other: UsageGroup) -> None:
        for name in self.__dataclass_fields__:
            if name == "unpriced":
                self.unpriced.update(other.unpriced)
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def errors(self) -> dict[str, float | None]:
        """(estimated − billed) / billed, in %, of the compared records: prompt, completion, total tokens, cost."""
        billed_total = self.compared_prompt_tokens + self.compared_completion_tokens
        estimated_total = self.estimated_prompt_tokens + self.estimated_completion_tokens
        return {
            "prompt_tokens": _error(self.estimated_prompt_tokens, self.compared_prompt_tokens),
            "completion_tokens": _error(self.estimated_completion_tokens, self.compared_completion_tokens),
            "total_tokens": _error(estimated_total, billed_total),
            "cost": _error(self.estimated_cost, self.compared_cost) if not self.unpriced else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "model_calls": self.model_calls,
            "cache_hits": self.cache_hits,
            "no_call": self.no_call,
            "usage_not_reported": self.usage_not_reported,
            "billed": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "cost": self.cost,
            "unpriced": dict(self.unpriced),
            "compared": {
                "records": self.compared,
                "billed": {
                    "prompt_tokens": self.compared_prompt_tokens,
                    "completion_tokens": self.compared_completion_tokens,
                    "cost": self.compared_cost,
                },
                "estimated": {
                    "requests": self.estimated_requests,
                    "prompt_tokens": self.estimated_prompt_tokens,
                    "completion_tokens": self.estimated_completion_tokens,
                    "cost": self.estimated_cost,
                },
                "error_percent": self.errors(),
            },
        }


def _error(estimated: float, billed: float) -> float | None:
    return None if not billed else 100 * (estimated - billed) / billed


@dataclass
class UsageReport:
    by: str
    currency: str
    groups: dict[str, UsageGroup]
    since: str | None = None
    source: str = ""
    # Mean billed output tokens per call of image records, by task: what `estimate_object(completion_tokens=…)`
    # takes to calibrate the estimate to this provider and these images.
    observed_completion: dict[str, int] = field(default_factory=dict)
    documents_compared: int = 0

    @property
    def total(self) -> UsageGroup:
        total = UsageGroup()
        for group in self.groups.values():
            total.merge(group)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": self.since,
            "by": self.by,
            "currency": self.currency,
            "groups": {name: group.to_dict() for name, group in sorted(self.groups.items())},
            "total": self.total.to_dict(),
            "observed_completion_tokens_per_call": self.observed_completion,
        }

    def render(self) -> str:
        header: tuple[str, ...] = (
            self.by.upper(),
            "RECORDS",
            "CALLS",
            "CACHE HITS",
            "NO CALL",
            "PROMPT TOK",
            "OUTPUT TOK",
        )
        header += (f"COST ({self.currency})", "COMPARED", "EST PROMPT", "EST OUTPUT", f"EST COST ({self.currency})")
        header += ("ERR PROMPT", "ERR OUTPUT", "ERR COST")
        rows: list[tuple[str, ...]] = [header]
        for name, group in sorted(self.groups.items()):
            rows.append((name + ("*" if group.usage_not_reported else ""), *_cells(group)))
        total = self.total
        rows.append(("TOTAL" + ("*" if total.usage_not_reported else ""), *_cells(total)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        scope = f"since {self.since}" if self.since else "all records"
        lines.insert(0, f"Usage in {self.source or 'the results table'}, {scope}, by {self.by}:")
        lines.append("")
        lines.append(
            f"Compared: the {total.compared:,} record(s) that paid for model calls; ERR is (estimated − billed) / "
            "billed. Billed is what the provider reported; estimated is `sightline.estimate` from the record's facts."
        )
        lines.append(
            f"Not compared: {total.cache_hits:,} cache hit(s) (no cost), {total.no_call:,} record(s) without a model "
            "call (refused or failed before the model)."
        )
        if total.usage_not_reported:
            lines.append(
                f"* {total.usage_not_reported:,} record(s) whose provider did not report usage (usage_reported "
                "false): their billed tokens are counted as 0, and they are not compared."
            )
        for model_id, count in sorted(total.unpriced.items()):
            lines.append(f"No price for {model_id} ({count:,} record(s)): not in the cost.")
        if self.documents_compared:
            lines.append(
                f"Documents ({self.documents_compared:,} compared): a record keeps no page size or text-layer length, "
                f"so a letter page and {ASSUMED_PAGE_TEXT_CHARS:,} characters of text a page are assumed."
            )
        if self.observed_completion:
            observed = ", ".join(f"{task} {tokens:,}" for task, tokens in sorted(self.observed_completion.items()))
            lines.append(f"Observed output tokens per image call, by task: {observed}.")
        return "\n".join(lines)


def _cells(group: UsageGroup) -> tuple[str, ...]:
    errors = group.errors()
    return (
        f"{group.records:,}",
        f"{group.model_calls:,}",
        f"{group.cache_hits:,}",
        f"{group.no_call:,}",
        f"{group.prompt_tokens:,}",
        f"{group.completion_tokens:,}",
        _money(group.cost) + ("+?" if group.unpriced else ""),
        f"{group.compared:,}",
        f"{group.estimated_prompt_tokens:,}",
        f"{group.estimated_completion_tokens:,}",
        _money(group.estimated_cost) if not group.unpriced else "-",
        _percent(errors["prompt_tokens"]),
        _percent(errors["completion_tokens"]),
        _percent(errors["cost"]),
    )


def _money(value: float) -> str:
    return f"{value:,.4f}" if value < 100 else f"{value:,.2f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def _group_name(record: dict[str, Any], by: str) -> str:
    if by == "day":
        processed = str(record.get("processed_at") or "")
        try:
            return datetime.fromisoformat(processed.replace("Z", "+00:00")).astimezone(UTC).date().isoformat()
        except ValueError:
            return "(unknown)"
    return str(record.get("profile") or DEFAULT_PROFILE_NAME)


def usage_report(
    records: Iterable[dict[str, Any]],
    *,
    by: str,
    prices: PriceTable,
    profiles: ProfileSet | None,
    settings: Settings,
    since: str | None = None,
    source: str = "",
) -> UsageReport:
    """Records (as `scan_records` yields them) grouped and summed, each paid record beside its estimate."""
    groups: dict[str, UsageGroup] = defaultdict(UsageGroup)
    calls_by_task: Counter[str] = Counter()
    output_by_task: Counter[str] = Counter()

    documents = 0

    def estimate(record: dict[str, Any]) -> Estimate:
        nonlocal documents
        documents += "document" in record
        return record_estimate(record, profiles, settings, prices)

    for record in records:
        if "usage" not in record:  # deleted keys, and keys claimed for the first time: nothing billed
            continue
        groups[_group_name(record, by)].add(record, prices, estimate)
        usage = record["usage"] if isinstance(record["usage"], dict) else {}
        calls = int(usage.get("model_calls") or 0)
        if calls and "document" not in record and usage.get("usage_reported", True) is not False:
            calls_by_task[str(record.get("task") or "caption")] += calls
            output_by_task[str(record.get("task") or "caption")] += int(usage.get("completion_tokens") or 0)
    observed = {task: round(output_by_task[task] / calls) for task, calls in calls_by_task.items()}
    return UsageReport(
        by=by,
        currency=prices.currency,
        groups=dict(groups),
        since=since,
        source=source,
        observed_completion=observed,
        documents_compared=documents,
    )


def run(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from scripts.redrive_dlq import DEFAULT_STACK_NAME, MissingStackOutputError, stack_outputs
    from sightline.errors import SightlineError
    from sightline.pricing import load_prices
    from sightline.profiles import load_profiles_file
    from sightline.settings import load_settings

    try:
        settings = load_settings(require_stack=False)
        prices = load_prices(args.pricing)
        profiles = load_profiles_file(args.profiles_file or settings.profiles_file)
        table = (
            args.table
            or (
                stack_outputs(
                    boto3.client("cloudformation"), args.stack_name or DEFAULT_STACK_NAME, "ResultsTableName"
                )[0]
            )
        )
        report = usage_report(
            scan_records(boto3.client("dynamodb"), table, args.since),
            by=args.by,
            prices=prices,
            profiles=profiles,
            settings=settings,
            since=args.since,
            source=table,
        )
    except (ClientError, BotoCoreError, MissingStackOutputError, SightlineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, sort_keys=True))
    else:
        print(report.render())
    return 0
