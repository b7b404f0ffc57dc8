"""Spend control: a daily budget that holds, a circuit breaker shared by every instance, and a bound on model calls.

Pure domain: the shared counters are reached through the ``SpendLedger`` and ``ProviderBreaker`` ports only.

Every model call of a wrapped model (:meth:`SpendGuard.wrap`):

1. waits for one of ``MODEL_CONCURRENCY`` slots of this instance (shared by every wrap of one guard: at most
   MaxConcurrency × MODEL_CONCURRENCY calls are in flight for the whole stack);
2. is refused with ``ProviderPausedError`` while the shared breaker is open;
3. reserves an estimate of what it may cost in every applicable scope for today (UTC): ``stack`` and, when the
   object's profile has a cap of its own, ``profile#<name>``. A scope at its cap refuses, and the call is not made
   (``BudgetExhaustedError``, worth trying again after the next UTC midnight);
4. is made, and its reservation is then settled to what it actually cost (``finally``: a call that raised after an
   HTTP 200 settles what it was billed);
5. when the provider failed (``ModelUnavailableError`` after the adapter's own retries), counts a failure in the
   shared breaker; when that opens it, the error becomes ``ProviderPausedError`` so that the item is deferred
   rather than burning its SQS receive count into the dead-letter queue.

Known limits:

* Reservations are estimates: the prompt (text at ~4 characters a token, each image by the model's
  ``image_tokens`` rule) plus the whole output limit, settled to the actual usage after the call. Calls in flight
  together may therefore be refused near the cap although their actual cost would have fitted; never the opposite.
* A crash (a Lambda timeout, an out-of-memory kill) between reserve and settle leaves that reservation counted
  for the rest of the day: the day's counters are not corrected, they simply stop applying at midnight and
  expire (TTL) a few days later.
* The budget fails closed (the counters cannot be read or written: the call is not made, the error is transient);
  the breaker fails open (an error reading or counting it is logged, and calls go on).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sightline.errors import (
    BudgetExhaustedError,
    ModelUnavailableError,
    ProviderPausedError,
    SettingsError,
)
from sightline.estimate import TEXT_CHARS_PER_TOKEN
from sightline.imaging import BUDGETS
from sightline.ports import (
    ModelAnswer,
    ModelRequest,
    ModelUsage,
    ProviderBreaker,
    Spend,
    SpendLedger,
    SpendState,
    VisionModel,
)
from sightline.pricing import MICROS, ImageTokenRule, ModelPrice, PriceTable, image_tokens
from sightline.settings import BUDGET_UNIT, MODEL_ID, PRICING_FILE, BudgetUnit, Settings

logger = logging.getLogger(__name__)

STACK_SCOPE = "stack"
PROFILE_SCOPE_PREFIX = "profile#"
# A day's counters are kept this long after the day ends (TTL), for `sightline budget status` of recent days.
COUNTER_KEEP_SECONDS = 3 * 86_400
# Prompt text is estimated at this many characters a token (a little generous for English, fine for a cap).
# No call starts with less time than this before the invocation's deadline (the model adapter's own minimum).
MIN_CALL_SECONDS = 2.0
# A JPEG's size is read from its header: decode at most this much of a data URL's base64 looking for it.
_HEADER_SEARCH_BYTES = 256 * 1024
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame, not DHT / JPG / DAC


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def profile_scope(profile: str) -> str:
    return f"{PROFILE_SCOPE_PREFIX}{profile}"


def utc_day(now_ms: int) -> str:
    """The budget day (UTC) of an instant, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y-%m-%d")


def next_utc_midnight_ms(now_ms: int) -> int:
    """When the day of ``now_ms`` ends (UTC): a budget-deferred item is worth trying again from then."""
    day = datetime.fromtimestamp(now_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((day + timedelta(days=1)).timestamp() * 1000)


def counters_expire_at(now_ms: int) -> int:
    """The TTL (epoch seconds) of the day's counters: a few days after the day ends."""
    return next_utc_midnight_ms(now_ms) // 1000 + COUNTER_KEEP_SECONDS


def cap_for(limit: float, unit: BudgetUnit) -> Spend:
    """A daily limit in the budget's unit as a ledger cap (a zero field: no cap on it)."""
    if unit == "usd":
        return Spend(cost_micros=int(limit * MICROS))
    return Spend(tokens=int(limit))


def in_unit(spend: Spend, unit: BudgetUnit) -> float:
    """An amount in the budget's unit: tokens, or the pricing table's currency."""
    return spend.cost_micros / MICROS if unit == "usd" else float(spend.tokens)


def format_amount(value: float, unit: BudgetUnit, currency: str = "USD") -> str:
    if unit == "usd":
        return f"{value:,.4f} {currency}"
    return f"{value:,.0f} tokens"


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ScopeCap:
    """One scope the budget counts, with its daily limit (in the unit) and that limit as a ledger cap."""

    scope: str
    limit: float  # 0: counted, not capped
    cap: Spend

    @property
    def capped(self) -> bool:
        return self.limit > 0


@dataclass(frozen=True)
class ScopeStatus:
    """One scope's counters for one day, against its cap: what ``sightline budget status`` shows."""

    scope: str
    day: str
    unit: BudgetUnit
    limit: float | None  # in the unit; None: not capped
    committed: Spend  # settled spend + reservations in flight
    spent: Spend  # settled spend only
    calls: int
    deferrals: int

    @property
    def used(self) -> float:
        """Committed spend in the unit (what the cap is checked against)."""
        return in_unit(self.committed, self.unit)

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else max(0.0, self.limit - self.used)

    @property
    def open(self) -> bool:
        """Whether new calls may still reserve in this scope (below its cap, or not capped)."""
        return self.limit is None or self.used < self.limit

    def to_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "day": self.day,
            "unit": self.unit,
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "open": self.open,
            "committed_tokens": self.committed.tokens,
            "committed_cost_micros": self.committed.cost_micros,
            "spent_tokens": self.spent.tokens,
            "spent_cost_micros": self.spent.cost_micros,
            "calls": self.calls,
            "deferrals": self.deferrals,
        }


# --- The estimate of one request


def _data_url_payload(url: str) -> bytes | None:
    """The first bytes of a base64 data URL's payload (enough for an image header), else None."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    chars = min(len(data), math.ceil(_HEADER_SEARCH_BYTES / 3) * 4)
    chars -= chars % 4
    try:
        return base64.b64decode(data[:chars], validate=False)
    except (binascii.Error, ValueError):
        return None


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG (its start-of-frame segment) or a PNG (its IHDR), without decoding pixels."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if not data.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _SOF_MARKERS:
            if offset + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return (width, height) if width and height else None
        if marker == 0xDA or length < 2:  # start of scan before any frame: not a JPEG we can size
            return None
        offset += 2 + length
    return None


def _largest_image_tokens(rule: ImageTokenRule, detail: str) -> int:
    """An image whose size we cannot see (sent by URL): the most the largest pixel budget may send."""
    budget = BUDGETS["low"] if detail == "low" else BUDGETS["high"]
    square = math.isqrt(budget.max_pixels)
    long_side = budget.max_side
    short_side = max(1, budget.max_pixels // long_side)
    return max(image_tokens(rule, square, square, detail), image_tokens(rule, long_side, short_side, detail))


def _image_part_tokens(part: dict[str, object], rule: ImageTokenRule) -> int:
    image_url = part.get("image_url")
    url, detail = "", "auto"
    if isinstance(image_url, dict):
        url = str(image_url.get("url") or "")
        detail = str(image_url.get("detail") or "auto")
    elif isinstance(image_url, str):
        url = image_url
    payload = _data_url_payload(url)
    size = image_size_from_header(payload) if payload else None
    if size is None:
        return _largest_image_tokens(rule, detail)
    return image_tokens(rule, size[0], size[1], detail)


def estimate_prompt_tokens(request: ModelRequest, rule: ImageTokenRule) -> int:
    """Text at ~4 characters a token (the JSON schema asked for counts as text too), each image by ``rule``."""
    chars = 0
    images = 0
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, str):
                    chars += len(part)
                elif isinstance(part, dict):
                    if part.get("type") == "image_url":
                        images += _image_part_tokens(part, rule)
                    elif isinstance(part.get("text"), str):
                        chars += len(part["text"])
    if request.json_schema is not None:
        chars += len(json.dumps(request.json_schema, separators=(",", ":")))
    return math.ceil(chars / TEXT_CHARS_PER_TOKEN) + images


# --- The guard


class SpendGuard:
    """The daily budget, the shared breaker and the bound on model calls in flight, around a VisionModel.

    ``ledger`` None (no CONTROL_TABLE) or no cap configured: no counter is read or written at all. ``breaker`` None:
    no breaker. The semaphore of ``settings.model_concurrency`` slots always applies.
    """

    def __init__(
        self,
        settings: Settings,
        ledger: SpendLedger | None,
        breaker: ProviderBreaker | None,
        prices: PriceTable,
        clock_ms: Callable[[], int] = wall_clock_ms,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.prices = prices
        self._ledger = ledger if settings.budget_daily_limit > 0 or settings.budget_profile_limits else None
        self._breaker = breaker
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._slots = threading.BoundedSemaphore(settings.model_concurrency)
        self._unit: BudgetUnit = settings.budget_unit
        self._stack = ScopeCap(
            STACK_SCOPE, settings.budget_daily_limit, cap_for(settings.budget_daily_limit, settings.budget_unit)
        )
        self._profiles = {
            name: ScopeCap(profile_scope(name), limit, cap_for(limit, settings.budget_unit))
            for name, limit in settings.budget_profile_limits
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        ledger: SpendLedger | None,
        breaker: ProviderBreaker | None,
        prices: PriceTable,
        clock_ms: Callable[[], int] = wall_clock_ms,
        *,
        model_ids: Iterable[str] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> SpendGuard:
        """The guard, checked: a budget in currency (BUDGET_UNIT=usd) needs a price for MODEL_ID, and for every
        other model the function may call (``model_ids``: the profiles' own models)."""
        if settings.budget_unit == "usd" and ledger is not None and settings.budget_enabled:
            for model_id in dict.fromkeys([settings.model_id, *model_ids]):
                if prices.for_model(model_id) is None:
                    known = ", ".join(sorted(prices.models)) or "none"
                    raise SettingsError(
                        f"{BUDGET_UNIT}=usd needs a price for the model {model_id!r} ({MODEL_ID} or a profile's model)"
                        f" in the pricing table {prices.source or '(bundled)'}; it prices: {known}. Add it there"
                        f" (or point {PRICING_FILE} at a table that has it), or keep the budget in tokens."
                    )
        return cls(settings, ledger, breaker, prices, clock_ms, monotonic=monotonic)

    # --- What applies

    @property
    def budget_active(self) -> bool:
        return self._ledger is not None

    @property
    def slots(self) -> int:
        return self.settings.model_concurrency

    def scopes_for(self, profile: str | None) -> list[ScopeCap]:
        """The scopes a call for ``profile`` reserves in: the stack always (capped or only counted), the profile's
        own when it has a cap. Empty when the budget is off."""
        if self._ledger is None:
            return []
        scopes = [self._stack]
        if profile is not None and profile in self._profiles:
            scopes.append(self._profiles[profile])
        return scopes

    def price_for(self, model_id: str | None) -> ModelPrice | None:
        """The request's model's price; in a currency budget a model without one is charged at MODEL_ID's price
        (``from_settings`` refuses to start when MODEL_ID has none)."""
        price = self.prices.for_model(model_id or self.settings.model_id)
        if price is None and self._unit == "usd":
            price = self.prices.for_model(self.settings.model_id)
        return price

    def estimate(self, request: ModelRequest) -> Spend:
        """What a request may cost at most (about): its prompt plus its whole output limit."""
        price = self.price_for(request.model_id)
        rule: ImageTokenRule = price.image_tokens if price else "patch28"
        prompt = estimate_prompt_tokens(request, rule)
        output = request.max_output_tokens or self.settings.model_max_output_tokens
        cost = price.cost_micros(prompt, output) if price else 0
        return Spend(tokens=prompt + output, cost_micros=cost)

    def actual(self, request: ModelRequest, used: ModelUsage, estimate: Spend) -> Spend:
        """What the calls counted in ``used`` (this call's usage alone) cost. A call whose usage the provider did
        not report is charged its estimate: a budget never under-counts."""
        tokens = used.prompt_tokens + used.completion_tokens
        price = self.price_for(request.model_id)
        cost = price.cost_micros(used.prompt_tokens, used.completion_tokens) if price else 0
        if used.model_calls and (not used.usage_reported or tokens == 0):
            return Spend(tokens=max(tokens, estimate.tokens), cost_micros=max(cost, estimate.cost_micros))
        return Spend(tokens=tokens, cost_micros=cost)

    # --- Wrapping a model

    def wrap(self, model: VisionModel, profile: str) -> VisionModel:
        """``model`` with this guard around every call, counted for ``profile``."""
        return _GuardedModel(self, model, profile)

    def _complete(
        self, model: VisionModel, profile: str, request: ModelRequest, deadline: float | None, usage: ModelUsage
    ) -> ModelAnswer:
        self._acquire(deadline)
        try:
            now_ms = self._clock_ms()
            paused_until = self.provider_open_until(now_ms)
            if paused_until is not None:
                raise ProviderPausedError(
                    f"model calls are paused until {_iso(paused_until)}: the provider failed repeatedly"
                    f" (429/5xx/timeouts) across instances and the shared circuit breaker is open",
                    resume_after_ms=paused_until,
                )
            scopes = self.scopes_for(profile)
            day = utc_day(now_ms)
            expires_at = counters_expire_at(now_ms)
            estimate = self.estimate(request) if scopes else Spend()
            reserved = self._reserve(scopes, day, estimate, expires_at, now_ms)
            own = ModelUsage()  # this call's usage alone, even when the caller shares ``usage`` between threads
            try:
                return self._call(model, request, deadline, own)
            finally:
                _merge_usage(usage, own)
                if reserved:
                    self._settle(reserved, day, estimate, self.actual(request, own, estimate), expires_at)
        finally:
            self._slots.release()

    def _acquire(self, deadline: float | None) -> None:
        if deadline is None:
            self._slots.acquire()
            return
        wait = deadline - self._monotonic() - MIN_CALL_SECONDS
        if wait <= 0 or not self._slots.acquire(timeout=wait):
            # Not the provider's failure: no breaker count. Transient, so the item is retried later.
            raise ModelUnavailableError(
                f"no time left for a model call: all {self.slots} model call slots of this instance"
                " (MODEL_CONCURRENCY) stayed busy until the invocation's deadline"
            )

    def _reserve(self, scopes: list[ScopeCap], day: str, estimate: Spend, expires_at: int, now_ms: int) -> list[str]:
        assert self._ledger is not None or not scopes
        reserved: list[str] = []
        try:
            for scope in scopes:
                assert self._ledger is not None
                if not self._ledger.reserve(scope.scope, day, estimate, scope.cap, expires_at):
                    self._settle(reserved, day, estimate, Spend(), expires_at)
                    reserved = []
                    self._count_deferral(scope.scope, day, expires_at)
                    resume = next_utc_midnight_ms(now_ms)
                    raise BudgetExhaustedError(
                        f"the daily budget of {scope.scope} is reached: its cap is"
                        f" {format_amount(scope.limit, self._unit, self.prices.currency)} per UTC day"
                        f" ({'BUDGET_DAILY_LIMIT' if scope.scope == STACK_SCOPE else 'BUDGET_PROFILE_LIMITS'},"
                        f" {BUDGET_UNIT}={self._unit}) and this call would reserve about"
                        f" {format_amount(in_unit(estimate, self._unit), self._unit, self.prices.currency)};"
                        f" resumes after {_iso(resume)}",
                        resume_after_ms=resume,
                    )
                reserved.append(scope.scope)
        except BaseException:
            self._settle(reserved, day, estimate, Spend(), expires_at)  # undo what this call reserved
            raise
        return reserved

    def _settle(self, scopes: list[str], day: str, reserved: Spend, actual: Spend, expires_at: int) -> None:
        """Never raises: a settle that fails leaves the reservation counted (over, never under, the cap); failing
        the item instead would pay for its call again."""
        assert self._ledger is not None or not scopes
        for scope in scopes:
            try:
                assert self._ledger is not None
                self._ledger.settle(scope, day, reserved, actual, expires_at)
            except Exception as exc:
                logger.warning("budget settle failed for %s %s (reservation stays counted): %s", scope, day, exc)

    def _count_deferral(self, scope: str, day: str, expires_at: int) -> None:
        try:
            assert self._ledger is not None
            self._ledger.count_deferral(scope, day, expires_at)
        except Exception as exc:
            logger.warning("counting a budget deferral failed for %s %s: %s", scope, day, exc)

    def _call(
        self, model: VisionModel, request: ModelRequest, deadline: float | None, usage: ModelUsage
    ) -> ModelAnswer:
        try:
            return model.complete(request, deadline, usage)
        except ModelUnavailableError as exc:
            if self._breaker is None:
                raise
            try:
                open_until = self._breaker.record_failure(self._clock_ms())
            except Exception as error:  # the breaker fails open: the item is retried as the error says
                logger.warning("counting a provider failure in the breaker failed: %s", error)
                raise exc from None
            if open_until is None:
                raise
            raise ProviderPausedError(
                f"the provider keeps failing ({exc.message}); the shared circuit breaker is open:"
                f" model calls pause until {_iso(open_until)}",
                resume_after_ms=open_until,
            ) from exc

    # --- Questions the resumer and the status command ask

    def budget_open(self, profile: str | None, now_ms: int) -> bool:
        """Whether every capped scope for ``profile`` (the stack alone for None) is below its cap today: then
        items deferred for the budget may go again. Always True when the budget is off."""
        if self._ledger is None:
            return True
        day = utc_day(now_ms)
        for scope in self.scopes_for(profile):
            if scope.capped and not self._status(scope.scope, day, scope.limit).open:
                return False
        return True

    def provider_open_until(self, now_ms: int) -> int | None:
        """Until when (epoch ms) the shared breaker holds calls back; None when calls may go out."""
        if self._breaker is None:
            return None
        try:
            until = self._breaker.open_until(now_ms)
        except Exception as exc:  # fails open: the breaker protects the provider, it must not stop the stack
            logger.warning("reading the provider breaker failed (calls go on): %s", exc)
            return None
        return until if until is not None and until > now_ms else None

    def status(self, now_ms: int, extra_scopes: Iterable[str] = ()) -> list[ScopeStatus]:
        """Today's counters of every configured scope (the stack first), and of ``extra_scopes`` (e.g. found in
        the table) without a cap of their own. Empty when the budget is off."""
        if self._ledger is None:
            return []
        day = utc_day(now_ms)
        found: dict[str, float | None] = {self._stack.scope: self._stack.limit or None}
        for cap in self._profiles.values():
            found[cap.scope] = cap.limit
        for scope in extra_scopes:
            found.setdefault(scope, None)
        return [self._status(scope, day, limit) for scope, limit in found.items()]

    def _status(self, scope: str, day: str, limit: float | None) -> ScopeStatus:
        assert self._ledger is not None
        state: SpendState = self._ledger.read(scope, day)
        return ScopeStatus(
            scope=scope,
            day=day,
            unit=self._unit,
            limit=limit or None,
            committed=state.committed,
            spent=state.spent,
            calls=state.calls,
            deferrals=state.deferrals,
        )


class _GuardedModel:
    """A VisionModel whose calls go through a SpendGuard, counted for one profile."""

    def __init__(self, guard: SpendGuard, model: VisionModel, profile: str) -> None:
        self._guard = guard
        self._model = model
        self.profile = profile

    def complete(self, request: ModelRequest, deadline: float | None, usage: ModelUsage) -> ModelAnswer:
        return self._guard._complete(self._model, self.profile, request, deadline, usage)

    def __getattr__(self, name: str) -> object:  # the wrapped adapter's own properties (output_mode, stream)
        return getattr(self._model, name)


def _merge_usage(total: ModelUsage, part: ModelUsage) -> None:
    """Add one call's usage to the caller's (what ``ModelUsage.add`` would have done, call by call)."""
    total.model_calls += part.model_calls
    total.latency_ms += part.latency_ms
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.total_tokens = total.prompt_tokens + total.completion_tokens
    total.usage_reported = total.usage_reported and part.usage_reported


__all__ = [
    "STACK_SCOPE",
    "ScopeCap",
    "ScopeStatus",
    "SpendGuard",
    "cap_for",
    "counters_expire_at",
    "estimate_prompt_tokens",
    "image_size_from_header",
    "next_utc_midnight_ms",
    "profile_scope",
    "utc_day",
]
