"""In-memory fakes of the spend-control ports (SpendLedger, ProviderBreaker) and a model that bills and fails on cue.

The ledger and the breaker keep the DynamoDB adapters' semantics (sightline.adapters.control_table): a reservation
is refused when it would pass a capped field, settle is unconditional, failures are counted per fixed window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sightline.errors import ModelUnavailableError, SightlineError
from sightline.ports import ModelAnswer, ModelRequest, ModelUsage, Spend, SpendState


@dataclass
class _Counters:
    committed_tokens: int = 0
    committed_cost: int = 0
    spent_tokens: int = 0
    spent_cost: int = 0
    calls: int = 0
    deferrals: int = 0
    expires_at: int = 0


class FakeSpendLedger:
    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], _Counters] = {}
        self.operations: list[tuple[str, str]] = []  # (method, scope), in order
        self.lock = threading.Lock()

    def _at(self, scope: str, day: str, expires_at: int) -> _Counters:
        counters = self.counters.setdefault((scope, day), _Counters())
        counters.expires_at = expires_at
        return counters

    def reserve(self, scope: str, day: str, amount: Spend, cap: Spend, expires_at: int) -> bool:
        with self.lock:
            self.operations.append(("reserve", scope))
            current = self.counters.get((scope, day), _Counters())
            if cap.tokens > 0 and current.committed_tokens + amount.tokens > cap.tokens:
                return False
            if cap.cost_micros > 0 and current.committed_cost + amount.cost_micros > cap.cost_micros:
                return False
            counters = self._at(scope, day, expires_at)
            counters.committed_tokens += amount.tokens
            counters.committed_cost += amount.cost_micros
            return True

    def settle(self, scope: str, day: str, reserved: Spend, actual: Spend, expires_at: int) -> None:
        with self.lock:
            self.operations.append(("settle", scope))
            counters = self._at(scope, day, expires_at)
            counters.committed_tokens += actual.tokens - reserved.tokens
            counters.committed_cost += actual.cost_micros - reserved.cost_micros
            counters.spent_tokens += actual.tokens
            counters.spent_cost += actual.cost_micros
            counters.calls += 1 if (actual.tokens or actual.cost_micros) else 0

    def count_deferral(self, scope: str, day: str, expires_at: int) -> None:
        with self.lock:
            self.operations.append(("count_deferral", scope))
            self._at(scope, day, expires_at).deferrals += 1

    def read(self, scope: str, day: str) -> SpendState:
        with self.lock:
            self.operations.append(("read", scope))
            c = self.counters.get((scope, day), _Counters())
            return SpendState(
                committed=Spend(c.committed_tokens, c.committed_cost),
                spent=Spend(c.spent_tokens, c.spent_cost),
                calls=c.calls,
                deferrals=c.deferrals,
            )

    def state(self, scope: str, day: str) -> _Counters:
        with self.lock:
            return self.counters.get((scope, day), _Counters())


class FakeProviderBreaker:
    def __init__(self, failures: int, window_seconds: int, cooldown_seconds: int) -> None:
        self.failures = failures
        self.window_ms = window_seconds * 1000
        self.cooldown_ms = cooldown_seconds * 1000
        self.windows: dict[int, int] = {}
        self.until: int | None = None
        self.recorded = 0
        self.lock = threading.Lock()

    def open_until(self, now_ms: int) -> int | None:
        with self.lock:
            return self.until if self.until is not None and self.until > now_ms else None

    def record_failure(self, now_ms: int) -> int | None:
        with self.lock:
            self.recorded += 1
            window = now_ms // self.window_ms
            self.windows[window] = self.windows.get(window, 0) + 1
            if self.windows[window] >= self.failures:
                until = now_ms + self.cooldown_ms
                if self.until is None or self.until < until:
                    self.until = until
            return self.until if self.until is not None and self.until > now_ms else None


@dataclass
class BillingModel:
    """A VisionModel that bills ``prompt_tokens``/``completion_tokens`` per call (as an HTTP 200 would) and can
    fail: ``unavailable`` calls raise ModelUnavailableError before any answer, ``raise_after_billing`` raises that
    error after the call was billed. Counts the calls in flight."""

    prompt_tokens: int | None = 100
    completion_tokens: int | None = 100
    unavailable: int = 0  # the next this many calls fail with ModelUnavailableError (nothing billed)
    raise_after_billing: SightlineError | None = None
    hold_seconds: float = 0.0
    on_call: Callable[[], None] | None = None
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[ModelRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def complete(self, request: ModelRequest, deadline: float | None, usage: ModelUsage) -> ModelAnswer:
        with self.lock:
            self.calls += 1
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fail = self.unavailable > 0
            if fail:
                self.unavailable -= 1
        try:
            if self.on_call is not None:
                self.on_call()
            if self.hold_seconds:
                time.sleep(self.hold_seconds)
            if fail:
                raise ModelUnavailableError("HTTP 503: upstream overloaded")
            usage.add(self.prompt_tokens, self.completion_tokens, 5)
            if self.raise_after_billing is not None:
                raise self.raise_after_billing
            return ModelAnswer(
                content='{"alt_text": "a cat"}',
                finish_reason="stop",
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                latency_ms=5,
            )
        finally:
            with self.lock:
                self.in_flight -= 1
