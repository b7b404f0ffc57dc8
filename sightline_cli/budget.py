"""`sightline budget`: today's spend against the caps, the provider's breaker, and resuming deferred items.

``status`` reads the control table's counters for today (UTC) per scope, compares them with the caps the deployed
function runs with (its environment, or ``--limit/--unit/--profile-limits``), shows the shared breaker and counts
the items parked as ``deferred``. ``resume`` sends parked items back to the uploads queue at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scripts.redrive_dlq import DEFAULT_STACK_NAME, MissingStackOutputError, stack_outputs
from sightline.adapters.control_table import DynamoDBProviderBreaker, DynamoDBSpendLedger
from sightline.adapters.dynamodb import to_item
from sightline.errors import SettingsError, SightlineError
from sightline.pricing import PriceTable
from sightline.settings import (
    BREAKER_COOLDOWN_SECONDS,
    BREAKER_FAILURES,
    BREAKER_WINDOW_SECONDS,
    BUDGET_DAILY_LIMIT,
    BUDGET_PROFILE_LIMITS,
    BUDGET_UNIT,
    BUDGET_UNITS,
    CONTROL_TABLE,
    Settings,
    load_settings,
)
from sightline.spend import ScopeStatus, SpendGuard, format_amount, utc_day, wall_clock_ms

STATUS_INDEX = "status-index"  # template.yaml ResultsTable: status (HASH) + processed_at (RANGE)
DEFERRED = "deferred"
REASONS = ("BudgetExhausted", "ProviderPaused")
DEFAULT_RESUME_LIMIT = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    status = actions.add_parser("status", help="today's spend per scope against the caps, the breaker, parked items")
    source = status.add_mutually_exclusive_group()
    source.add_argument("--stack-name", help=f"read names and caps from this stack (default: {DEFAULT_STACK_NAME})")
    source.add_argument("--control-table", help="the control table (with --results-table, instead of --stack-name)")
    status.add_argument("--results-table", help="the results table, to count the parked items")
    status.add_argument("--limit", type=float, help=f"the stack's daily cap ({BUDGET_DAILY_LIMIT}), in --unit")
    status.add_argument("--unit", choices=BUDGET_UNITS, help=f"the caps' unit ({BUDGET_UNIT})")
    status.add_argument("--profile-limits", help=f"caps per profile, 'name=limit,...' ({BUDGET_PROFILE_LIMITS})")
    status.add_argument("--json", action="store_true", help="one JSON object instead of text")

    resume = actions.add_parser("resume", help="send the parked (deferred) items back to the uploads queue now")
    target = resume.add_mutually_exclusive_group()
    target.add_argument(
        "--stack-name", help=f"read the table and queue from this stack (default: {DEFAULT_STACK_NAME})"
    )
    target.add_argument("--results-table", help="the results table (with --queue-url, instead of --stack-name)")
    resume.add_argument("--queue-url", help="the uploads queue")
    resume.add_argument("--reason", choices=REASONS, help="only the items deferred for this reason")
    resume.add_argument("--limit", type=int, default=DEFAULT_RESUME_LIMIT, help="at most this many items")
    resume.add_argument("--dry-run", action="store_true", help="list what would be resumed, send nothing")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "status":
            return _status(args)
        return _resume(args)
    except (ClientError, BotoCoreError, MissingStackOutputError, SightlineError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# --- status


@dataclass
class StatusReport:
    day: str
    unit: str
    currency: str
    caps_source: str  # where the caps came from, or why they are unknown
    scopes: list[ScopeStatus]
    breaker_enabled: bool
    breaker_open_until: int | None
    breaker_failures_in_window: int
    breaker_threshold: int
    parked: int | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "unit": self.unit,
            "currency": self.currency,
            "caps_source": self.caps_source,
            "scopes": [scope.to_dict() for scope in self.scopes],
            "breaker": {
                "enabled": self.breaker_enabled,
                "open": self.breaker_open_until is not None,
                "open_until": _iso(self.breaker_open_until) if self.breaker_open_until else None,
                "failures_in_window": self.breaker_failures_in_window,
                "threshold": self.breaker_threshold,
            },
            "parked": self.parked,
            "notes": self.notes,
        }


def _flag_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if args.limit is not None:
        env[BUDGET_DAILY_LIMIT] = repr(args.limit)
    if args.unit:
        env[BUDGET_UNIT] = args.unit
    if args.profile_limits:
        env[BUDGET_PROFILE_LIMITS] = args.profile_limits
    return env


def function_environment(lambda_client: Any, function_name: str) -> dict[str, str]:
    configuration = lambda_client.get_function_configuration(FunctionName=function_name)
    return dict((configuration.get("Environment") or {}).get("Variables") or {})


def _resolve_status_names(args: argparse.Namespace) -> tuple[str, str | None, dict[str, str] | None, str]:
    """(control table, results table, the function's environment or None, where the caps come from)."""
    flags = _flag_env(args)
    if args.control_table:
        source = "the command's flags" if flags else "none given (--limit/--unit/--profile-limits)"
        return args.control_table, args.results_table, None, source
    stack = args.stack_name or DEFAULT_STACK_NAME
    cloudformation = boto3.client("cloudformation")
    (control_table,) = stack_outputs(cloudformation, stack, "ControlTableName")
    results_table = args.results_table
    if results_table is None:
        try:
            (results_table,) = stack_outputs(cloudformation, stack, "ResultsTableName")
        except MissingStackOutputError:
            results_table = None
    if flags:
        return control_table, results_table, None, "the command's flags"
    try:
        (function_name,) = stack_outputs(cloudformation, stack, "DescribeImageFunctionName")
        env = function_environment(boto3.client("lambda"), function_name)
    except (MissingStackOutputError, ClientError, BotoCoreError) as exc:
        return control_table, results_table, None, f"unavailable: cannot read the function's configuration ({exc})"
    return control_table, results_table, env, f"the environment of {function_name}"


def count_parked(client: Any, results_table: str) -> int:
    """Items whose status is ``deferred``, counted on the results table's status index."""
    count = 0
    request: dict[str, Any] = {
        "TableName": results_table,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#status = :status",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": to_item({":status": DEFERRED}),
        "Select": "COUNT",
    }
    while True:
        response = client.query(**request)
        count += int(response.get("Count", 0))
        if "LastEvaluatedKey" not in response:
            return count
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def budget_status(
    dynamodb: Any,
    control_table: str,
    results_table: str | None,
    env: dict[str, str],
    caps_source: str,
    now_ms: int,
) -> StatusReport:
    """Today's report from the function's settings (``env``: its environment or the flags' equivalent)."""
    settings: Settings = load_settings({**env, CONTROL_TABLE: control_table}, require_stack=False)
    ledger = DynamoDBSpendLedger(dynamodb, control_table)
    breaker = DynamoDBProviderBreaker(
        dynamodb,
        control_table,
        failures=max(1, settings.breaker_failures),
        window_seconds=settings.breaker_window_seconds,
        cooldown_seconds=settings.breaker_cooldown_seconds,
    )
    # Status only reads counters: the prices matter to the function's reservations, not to this report.
    guard = SpendGuard(settings, ledger, breaker, PriceTable(currency="USD", models={}))
    day = utc_day(now_ms)
    scopes = guard.status(now_ms, extra_scopes=ledger.scopes(day))
    if not scopes:  # no cap known: every scope found today, uncapped
        scopes = [
            ScopeStatus(
                scope=scope,
                day=day,
                unit=settings.budget_unit,
                limit=None,
                committed=state.committed,
                spent=state.spent,
                calls=state.calls,
                deferrals=state.deferrals,
            )
            for scope in ledger.scopes(day)
            for state in (ledger.read(scope, day),)
        ]
    notes: list[str] = []
    parked: int | None = None
    if results_table:
        parked = count_parked(dynamodb, results_table)
    else:
        notes.append("parked items not counted: no results table (--results-table)")
    if not settings.breaker_enabled:
        notes.append(f"the breaker is off ({BREAKER_FAILURES}=0)")
    return StatusReport(
        day=day,
        unit=settings.budget_unit,
        currency="USD",
        caps_source=caps_source,
        scopes=scopes,
        breaker_enabled=settings.breaker_enabled,
        breaker_open_until=breaker.open_until(now_ms),
        breaker_failures_in_window=breaker.failures_in_window(now_ms),
        breaker_threshold=settings.breaker_failures,
        parked=parked,
        notes=notes,
    )


def _status(args: argparse.Namespace) -> int:
    control_table, results_table, function_env, caps_source = _resolve_status_names(args)
    env = dict(function_env or {})
    # Only the budget and breaker settings are taken from the function; the flags win over them.
    env = {
        name: value
        for name, value in env.items()
        if name
        in (
            BUDGET_DAILY_LIMIT,
            BUDGET_UNIT,
            BUDGET_PROFILE_LIMITS,
            BREAKER_FAILURES,
            BREAKER_WINDOW_SECONDS,
            BREAKER_COOLDOWN_SECONDS,
        )
    }
    env.update(_flag_env(args))
    report = budget_status(boto3.client("dynamodb"), control_table, results_table, env, caps_source, wall_clock_ms())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_status(report))
    return 0


def render_status(report: StatusReport) -> str:
    lines = [f"Budget for {report.day} (UTC), in {report.unit}; caps from {report.caps_source}"]
    if not report.scopes:
        lines.append("  no spend counted today (no cap configured, or nothing called yet)")
    for scope in report.scopes:
        used = format_amount(scope.used, scope.unit, report.currency)
        if scope.limit is None:
            against = "no cap"
        else:
            share = 100 * scope.used / scope.limit if scope.limit else 0
            state = "open" if scope.open else "CAP REACHED"
            against = f"of {format_amount(scope.limit, scope.unit, report.currency)} ({share:.1f}%, {state})"
        lines.append(
            f"  {scope.scope:<28} {used} {against}; spent {scope.spent.tokens:,} tokens"
            f" / {scope.spent.cost_micros / 1e6:,.4f} {report.currency}, {scope.calls:,} calls,"
            f" {scope.deferrals:,} deferrals"
        )
    if not report.breaker_enabled:
        lines.append("Provider breaker: off")
    elif report.breaker_open_until is not None:
        lines.append(
            f"Provider breaker: OPEN until {_iso(report.breaker_open_until)}"
            f" ({report.breaker_failures_in_window} failures in the current window, threshold"
            f" {report.breaker_threshold})"
        )
    else:
        lines.append(
            f"Provider breaker: closed ({report.breaker_failures_in_window} failures in the current window,"
            f" threshold {report.breaker_threshold})"
        )
    if report.parked is not None:
        lines.append(f"Parked (deferred) items: {report.parked:,}")
    lines.extend(f"note: {note}" for note in report.notes)
    return "\n".join(lines)


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- resume


def _resolve_resume_names(args: argparse.Namespace) -> tuple[str, str]:
    if args.results_table:
        if not args.queue_url:
            raise SettingsError("--results-table needs --queue-url")
        return args.results_table, args.queue_url
    stack = args.stack_name or DEFAULT_STACK_NAME
    table, queue_url = stack_outputs(boto3.client("cloudformation"), stack, "ResultsTableName", "UploadsQueueUrl")
    return table, args.queue_url or queue_url


def _resume(args: argparse.Namespace) -> int:
    from sightline.adapters.dynamodb import DynamoDBResultStore
    from sightline.adapters.work_queue import SqsWorkQueue
    from sightline.resume import resume_deferred

    if args.limit < 1:
        raise SettingsError("--limit must be at least 1")
    table, queue_url = _resolve_resume_names(args)
    results = DynamoDBResultStore(boto3.client("dynamodb"), table)
    reason: str | None = args.reason

    def ready(record: dict[str, Any]) -> bool:
        """The operator resumes at once: every parked item, or those deferred for the chosen reason."""
        return reason is None or record.get("error_type") == reason

    if args.dry_run:
        parked = [record for record in results.deferred(args.limit) if ready(record)]
        for record in parked:
            print(f"would resume s3://{record.get('bucket')}/{record.get('key')} ({record.get('error_type')})")
        print(f"{len(parked)} parked item(s) would be resumed (dry run: nothing sent)")
        return 0
    queue = SqsWorkQueue(boto3.client("sqs"), queue_url)
    report = resume_deferred(results, queue, ready=ready, limit=args.limit)
    for key in getattr(report, "keys", []):
        print(f"resumed {key}")
    print(f"resumed {report.resumed}, left {report.left}, skipped {report.skipped}")
    return 0
