"""The control table (CONTROL_TABLE): the day's budget counters and the provider's shared circuit breaker.

Items (hash key ``pk``, every one with a TTL in ``expires_at``):

* ``budget#<scope>#<day>``: ``committed_tokens``/``committed_cost`` (settled spend + reservations in flight),
  ``spent_tokens``/``spent_cost`` (settled only), ``calls`` and ``deferrals``; costs in micros.
* ``breaker#window#<epoch seconds // window>``: ``failures`` counted in that (fixed) window.
* ``breaker``: ``open_until`` (epoch ms) when the breaker last opened.

DynamoDB condition expressions cannot do arithmetic, so a reservation's condition compares the committed spend
with ``cap - amount`` computed here; the ADD and its condition are one atomic UpdateItem, so reservations from
any number of instances never pass the cap together.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sightline.adapters.aws_errors import translate_aws_error
from sightline.adapters.dynamodb import conditional_write, from_item, to_item
from sightline.ports import Spend, SpendState

BUDGET_PREFIX = "budget#"
BREAKER_KEY = "breaker"
BREAKER_WINDOW_PREFIX = "breaker#window#"
# How long ``open_until`` is trusted in-process before it is read again: one GetItem per second per instance
# instead of one per model call. An instance may so start calls up to this long after another opened the breaker
# (and learns at once of an opening it caused itself).
OPEN_UNTIL_CACHE_MS = 1_000
# Breaker items outlive what they describe by this long (TTL), so that `sightline budget status` can still show them.
BREAKER_KEEP_SECONDS = 86_400


def budget_key(scope: str, day: str) -> str:
    return f"{BUDGET_PREFIX}{scope}#{day}"


def _number(item: dict[str, Any], name: str) -> int:
    return int(item.get(name, 0) or 0)


class DynamoDBSpendLedger:
    """The SpendLedger port on the control table."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def _key(self, scope: str, day: str) -> dict[str, Any]:
        return {"Key": to_item({"pk": budget_key(scope, day)})}

    def reserve(self, scope: str, day: str, amount: Spend, cap: Spend, expires_at: int) -> bool:
        conditions: list[str] = []
        values: dict[str, Any] = {
            ":t": amount.tokens,
            ":c": amount.cost_micros,
            ":exp": expires_at,
            ":scope": scope,
            ":day": day,
        }
        for field, cap_value, amount_value, name in (
            ("committed_tokens", cap.tokens, amount.tokens, ":max_t"),
            ("committed_cost", cap.cost_micros, amount.cost_micros, ":max_c"),
        ):
            if cap_value <= 0:
                continue  # no cap on this field
            if amount_value > cap_value:
                return False  # this one call is more than the whole cap: refused without a write
            conditions.append(f"(attribute_not_exists({field}) OR {field} <= {name})")
            values[name] = cap_value - amount_value
        request: dict[str, Any] = {
            **self._key(scope, day),
            "UpdateExpression": (
                "ADD committed_tokens :t, committed_cost :c SET expires_at = :exp, #scope = :scope, #day = :day"
            ),
            "ExpressionAttributeNames": {"#scope": "scope", "#day": "day"},
            "ExpressionAttributeValues": to_item(values),
        }
        if conditions:
            request["ConditionExpression"] = " AND ".join(conditions)
        return conditional_write(self._client, self._table_name, "update_item", **request)

    def settle(self, scope: str, day: str, reserved: Spend, actual: Spend, expires_at: int) -> None:
        """Unconditional: the reservation is replaced by the actual spend even above the cap (it was paid for).
        ``calls`` counts the settlements that cost something (a call that failed before any answer, or a
        reservation undone, costs nothing)."""
        billed = 1 if (actual.tokens or actual.cost_micros) else 0
        conditional_write(
            self._client,
            self._table_name,
            "update_item",
            **self._key(scope, day),
            UpdateExpression=(
                "ADD committed_tokens :dt, committed_cost :dc, spent_tokens :at, spent_cost :ac, calls :n"
                " SET expires_at = :exp, #scope = :scope, #day = :day"
            ),
            ExpressionAttributeNames={"#scope": "scope", "#day": "day"},
            ExpressionAttributeValues=to_item(
                {
                    ":dt": actual.tokens - reserved.tokens,
                    ":dc": actual.cost_micros - reserved.cost_micros,
                    ":at": actual.tokens,
                    ":ac": actual.cost_micros,
                    ":n": billed,
                    ":exp": expires_at,
                    ":scope": scope,
                    ":day": day,
                }
            ),
        )

    def count_deferral(self, scope: str, day: str, expires_at: int) -> None:
        conditional_write(
            self._client,
            self._table_name,
            "update_item",
            **self._key(scope, day),
            UpdateExpression="ADD deferrals :one SET expires_at = :exp, #scope = :scope, #day = :day",
            ExpressionAttributeNames={"#scope": "scope", "#day": "day"},
            ExpressionAttributeValues=to_item({":one": 1, ":exp": expires_at, ":scope": scope, ":day": day}),
        )

    def read(self, scope: str, day: str) -> SpendState:
        try:
            response = self._client.get_item(TableName=self._table_name, ConsistentRead=True, **self._key(scope, day))
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"GetItem {self._table_name}") from exc
        item = from_item(response.get("Item") or {})
        return SpendState(
            committed=Spend(tokens=_number(item, "committed_tokens"), cost_micros=_number(item, "committed_cost")),
            spent=Spend(tokens=_number(item, "spent_tokens"), cost_micros=_number(item, "spent_cost")),
            calls=_number(item, "calls"),
            deferrals=_number(item, "deferrals"),
        )

    def scopes(self, day: str) -> list[str]:
        """Every scope with counters for ``day`` (a Scan: for the status command, not for the function)."""
        found: list[str] = []
        request: dict[str, Any] = {
            "TableName": self._table_name,
            "FilterExpression": "begins_with(pk, :prefix) AND #day = :day",
            "ExpressionAttributeNames": {"#day": "day", "#scope": "scope"},
            "ExpressionAttributeValues": to_item({":prefix": BUDGET_PREFIX, ":day": day}),
            "ProjectionExpression": "#scope",
        }
        try:
            while True:
                response = self._client.scan(**request)
                found.extend(str(from_item(item).get("scope", "")) for item in response.get("Items", []))
                if "LastEvaluatedKey" not in response:
                    break
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"Scan {self._table_name}") from exc
        return sorted(scope for scope in set(found) if scope)


class DynamoDBProviderBreaker:
    """The ProviderBreaker port on the control table: failures counted per fixed window, shared by every instance.

    ``failures`` provider failures within one window of ``window_seconds`` open the breaker for
    ``cooldown_seconds``. After the cool-down calls go again; while the current window already holds the
    threshold, the next failure opens it again at once (a half-open breaker). Windows are fixed, not sliding: a
    burst split by a window boundary counts in two windows.
    """

    def __init__(self, client: Any, table_name: str, failures: int, window_seconds: int, cooldown_seconds: int) -> None:
        if failures < 1 or window_seconds < 1 or cooldown_seconds < 1:
            raise ValueError("the breaker needs failures, window_seconds and cooldown_seconds of at least 1")
        self._client = client
        self._table_name = table_name
        self._failures = failures
        self._window_ms = window_seconds * 1000
        self._cooldown_ms = cooldown_seconds * 1000
        self._lock = threading.Lock()
        self._cached: tuple[int, int | None] | None = None  # (read at, open_until)

    def window_key(self, now_ms: int) -> str:
        return f"{BREAKER_WINDOW_PREFIX}{now_ms // self._window_ms}"

    def open_until(self, now_ms: int) -> int | None:
        """Read at most once a second per instance (OPEN_UNTIL_CACHE_MS): the answer may be that much stale."""
        with self._lock:
            cached = self._cached
        if cached is not None and 0 <= now_ms - cached[0] < OPEN_UNTIL_CACHE_MS:
            until = cached[1]
        else:
            until = self._read_open_until()
            with self._lock:
                self._cached = (now_ms, until)
        return until if until is not None and until > now_ms else None

    def record_failure(self, now_ms: int) -> int | None:
        key = self.window_key(now_ms)
        window_end_s = (now_ms // self._window_ms + 1) * self._window_ms // 1000
        try:
            response = self._client.update_item(
                TableName=self._table_name,
                Key=to_item({"pk": key}),
                UpdateExpression="ADD failures :one SET expires_at = :exp",
                ExpressionAttributeValues=to_item({":one": 1, ":exp": window_end_s + BREAKER_KEEP_SECONDS}),
                ReturnValues="UPDATED_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"UpdateItem {self._table_name}") from exc
        count = _number(from_item(response.get("Attributes") or {}), "failures")
        if count < self._failures:
            return self.open_until(now_ms)
        until = now_ms + self._cooldown_ms
        opened = conditional_write(
            self._client,
            self._table_name,
            "update_item",
            Key=to_item({"pk": BREAKER_KEY}),
            UpdateExpression="SET open_until = :until, opened_at = :now, expires_at = :exp",
            ConditionExpression="attribute_not_exists(open_until) OR open_until < :until",
            ExpressionAttributeValues=to_item(
                {":until": until, ":now": now_ms, ":exp": until // 1000 + BREAKER_KEEP_SECONDS}
            ),
        )
        if not opened:  # already open until later (another instance opened it meanwhile)
            read = self._read_open_until()
            until = read if read is not None else until
        with self._lock:
            self._cached = (now_ms, until)
        return until if until > now_ms else None

    def failures_in_window(self, now_ms: int) -> int:
        """The failures counted in the current window (for the status command)."""
        item = self._get(self.window_key(now_ms))
        return _number(item, "failures")

    def _read_open_until(self) -> int | None:
        item = self._get(BREAKER_KEY)
        return _number(item, "open_until") or None

    def _get(self, key: str) -> dict[str, Any]:
        try:
            response = self._client.get_item(TableName=self._table_name, ConsistentRead=True, Key=to_item({"pk": key}))
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, f"GetItem {self._table_name}") from exc
        return from_item(response.get("Item") or {})
