"""Every function's AWS clients: one config, and no attempt started that could outlive the invocation."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import boto3
from botocore.config import Config

from sightline.errors import AwsUnavailableError

# S3, DynamoDB, SNS, SQS and Secrets Manager answer in-region calls within milliseconds (S3 advises retrying a
# small GET or PUT after 2 s): an attempt that has not connected in 2 s, or waits 5 s for a byte, is stalled, and a
# new connection does better than waiting on (botocore's default is 60 s each, and was 30 s here).
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
# Attempts in all, the first included. botocore's `max_attempts` counts retries only: 3 of those were 4 attempts.
TOTAL_MAX_ATTEMPTS = 3
# botocore's standard mode sleeps up to 1 s, then 2 s, between throttled attempts (up to 0.1 s after other errors).
BACKOFF_ALLOWANCE_SECONDS = 2.0
# Kept free at the invocation's end: the handler still has to answer (the batch response) after its last AWS call.
RESERVE_SECONDS = 1.0
DEFAULT_POOL_CONNECTIONS = 10  # botocore's own default


class AwsDeadlineError(AwsUnavailableError):
    """An AWS attempt not started because it could outlast the invocation: transient (the item is retried),
    recorded and logged as ``AwsUnavailable``, with a message that says so."""


@dataclass(frozen=True)
class CallBounds:
    """How long one AWS attempt, and one call with its retries, may take."""

    connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    read_timeout: float = READ_TIMEOUT_SECONDS
    max_attempts: int = TOTAL_MAX_ATTEMPTS
    backoff_allowance: float = BACKOFF_ALLOWANCE_SECONDS

    @property
    def attempt_seconds(self) -> float:
        """The longest a stalled attempt lasts: connecting, then waiting for a byte (the read timeout is per read)."""
        return self.connect_timeout + self.read_timeout

    @property
    def call_seconds(self) -> float:
        """The longest a call lasts without a deadline: every attempt stalls, with the longest sleeps between."""
        return self.max_attempts * self.attempt_seconds + (self.max_attempts - 1) * self.backoff_allowance

    def config(self, max_pool_connections: int = DEFAULT_POOL_CONNECTIONS) -> Config:
        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            max_pool_connections=max_pool_connections,
        )


def may_start_attempt(remaining: float | None, bounds: CallBounds) -> bool:
    """An attempt starts only if it ends, even stalled, before the deadline (None: no deadline is set)."""
    return remaining is None or remaining >= bounds.attempt_seconds


def may_retry(remaining: float | None, bounds: CallBounds) -> bool:
    """A retry is worth its backoff sleep only if the attempt after the sleep may start."""
    return remaining is None or remaining >= bounds.attempt_seconds + bounds.backoff_allowance


class InvocationDeadline:
    """When the running invocation must be done with AWS: read by every client and worker thread of the process.

    Lambda runs one invocation at a time in a process, so one process-wide value is exact there (worker threads do
    not inherit context variables, so a context variable would not reach them). Where several invocations run in one
    process at once (tests, local runs), the latest end counts: no invocation cuts another's calls short.
    """

    def __init__(self, reserve_seconds: float = RESERVE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._reserve = reserve_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ends: dict[object, float] = {}

    @contextmanager
    def invocation(self, remaining_ms: int) -> Iterator[None]:
        """AWS calls inside are bounded by the invocation's remaining time, less the reserve."""
        token = object()
        with self._lock:
            self._ends[token] = self._clock() + remaining_ms / 1000 - self._reserve
        try:
            yield
        finally:
            with self._lock:
                del self._ends[token]

    def remaining(self) -> float | None:
        """Seconds left for AWS calls (negative once past), or None outside an invocation."""
        with self._lock:
            end = max(self._ends.values(), default=None)
        return None if end is None else end - self._clock()


# The process's one deadline: the entry points set it per invocation, every client built here reads it.
AWS_DEADLINE = InvocationDeadline()


class DeadlineGuard:
    """The botocore event handlers that keep one client's attempts inside the invocation."""

    def __init__(self, deadline: InvocationDeadline = AWS_DEADLINE, bounds: CallBounds | None = None) -> None:
        self.deadline = deadline
        self.bounds = bounds or CallBounds()

    def install(self, client: Any) -> Any:
        events = client.meta.events
        events.register("before-send", self.before_send)  # every attempt of every operation of this client
        # First among the service's retry handlers, so that its "no" wins over the standard retry handler's delay.
        events.register_first(f"needs-retry.{client.meta.service_model.service_id.hyphenize()}", self.needs_retry)
        return client

    def before_send(self, event_name: str = "", **_: Any) -> None:
        """Refuse an attempt that could outlast the invocation (botocore does not retry this error)."""
        remaining = self.deadline.remaining()
        if may_start_attempt(remaining, self.bounds):
            return
        operation = " ".join(event_name.split(".")[1:]) or "AWS call"  # before-send.s3.GetObject -> s3 GetObject
        raise AwsDeadlineError(
            f"{operation} not attempted: {max(remaining or 0.0, 0.0):.1f} s left before the invocation's end, and an"
            f" attempt may take {self.bounds.attempt_seconds:.1f} s (connect + read timeout)"
        )

    def needs_retry(self, **_: Any) -> bool | None:
        """False (no retry: the caller gets the last attempt's own error) when no attempt fits after the backoff;
        None leaves the decision to botocore's standard retry handler."""
        return None if may_retry(self.deadline.remaining(), self.bounds) else False

    def before_body_read(self, action: str) -> None:
        """A streamed body is read after its call returned: each chunk starts only if a stalled read still fits."""
        remaining = self.deadline.remaining()
        if remaining is not None and remaining < self.bounds.read_timeout:
            raise AwsDeadlineError(
                f"{action} stopped: {max(remaining, 0.0):.1f} s left before the invocation's end, and a read may"
                f" wait {self.bounds.read_timeout:.1f} s"
            )


def bounded_client(
    service: str,
    session: boto3.session.Session | None = None,
    *,
    guard: DeadlineGuard | None = None,
    max_pool_connections: int = DEFAULT_POOL_CONNECTIONS,
) -> Any:
    """A boto3 client with the bounded config whose attempts never outlive the invocation (``AWS_DEADLINE``)."""
    guard = guard or DeadlineGuard()
    session = session or boto3.session.Session()
    return guard.install(session.client(service, config=guard.bounds.config(max_pool_connections)))


class _RemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


E = TypeVar("E")
C = TypeVar("C", bound=_RemainingTime)
R = TypeVar("R")


def bounded_aws_calls(handler: Callable[[E, C], R]) -> Callable[[E, C], R]:
    """Decorates a Lambda handler: its AWS calls (every thread's) end before the invocation does."""

    @functools.wraps(handler)
    def bounded(event: E, context: C) -> R:
        with AWS_DEADLINE.invocation(context.get_remaining_time_in_millis()):
            return handler(event, context)

    return bounded


__all__ = [
    "AWS_DEADLINE",
    "AwsDeadlineError",
    "CallBounds",
    "DeadlineGuard",
    "InvocationDeadline",
    "bounded_aws_calls",
    "bounded_client",
    "may_retry",
    "may_start_attempt",
]
