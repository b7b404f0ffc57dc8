"""Deadlines on AWS calls: the bounds' arithmetic, the invocation's deadline, and the guard's decisions (no sockets)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from devkit.stack import DEFAULT_TEMPLATE_PATH, load_sam_template
from sightline.adapters.aws_clients import (
    AWS_DEADLINE,
    RESERVE_SECONDS,
    AwsDeadlineError,
    CallBounds,
    DeadlineGuard,
    InvocationDeadline,
    bounded_aws_calls,
    may_retry,
    may_start_attempt,
)
from sightline.adapters.s3 import BODY_CHUNK_BYTES, S3ObjectStore
from sightline.errors import PermanentInputError, TransientError
from sightline.events import ObjectEvent

pytestmark = pytest.mark.unit

BOUNDS = CallBounds()  # what the functions use


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def deadline(clock: FakeClock) -> InvocationDeadline:
    return InvocationDeadline(reserve_seconds=1.0, clock=clock)


# --- The bounds


def test_the_config_counts_attempts_in_all_not_retries() -> None:
    config = BOUNDS.config(max_pool_connections=20)
    # botocore's `max_attempts` counts retries only: the old 3 made four attempts of 30 s each
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (2.0, 5.0, 20)
    assert BOUNDS.attempt_seconds == 7.0
    assert BOUNDS.call_seconds == 3 * 7.0 + 2 * 2.0


def test_one_call_fits_inside_the_shortest_timeout_any_function_of_the_stack_may_have() -> None:
    # GIVEN every function's timeout in the template (the describe function's is a parameter with allowed values)
    template = load_sam_template(DEFAULT_TEMPLATE_PATH)
    allowed = [int(value) for value in template["Parameters"]["FunctionTimeout"]["AllowedValues"]]
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    timeouts = []
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            timeout = resource["Properties"].get("Timeout", default)
            timeouts.append(min(allowed) if timeout == {"Ref": "FunctionTimeout"} else int(timeout))
    # THEN even with no deadline set, a call whose every attempt stalls ends well inside the shortest of them
    assert len(timeouts) >= 3
    assert BOUNDS.call_seconds < min(timeouts)


def test_the_model_calls_safety_margin_leaves_time_for_the_records_aws_calls() -> None:
    import app

    # The model stops SAFETY_MARGIN_SECONDS before the end; storing, announcing or releasing must still start after.
    room = app.SAFETY_MARGIN_SECONDS - RESERVE_SECONDS - BOUNDS.attempt_seconds
    assert room >= 1.0


# --- The decisions


def test_an_attempt_starts_only_if_its_stalled_worst_case_ends_before_the_deadline() -> None:
    assert may_start_attempt(None, BOUNDS)  # no invocation: the config alone bounds the call
    assert may_start_attempt(7.0, BOUNDS)
    assert not may_start_attempt(6.99, BOUNDS)
    assert not may_start_attempt(-3.0, BOUNDS)


def test_a_retry_needs_room_for_the_backoff_sleep_and_one_more_attempt() -> None:
    assert may_retry(None, BOUNDS)
    assert may_retry(9.0, BOUNDS)
    assert not may_retry(8.99, BOUNDS)  # an attempt would fit, but not after the longest sleep before it


# --- The invocation's deadline


def test_the_deadline_is_the_remaining_time_less_the_reserve_and_only_while_the_invocation_runs(
    deadline: InvocationDeadline, clock: FakeClock
) -> None:
    assert deadline.remaining() is None
    with deadline.invocation(remaining_ms=30_000):
        assert deadline.remaining() == 29.0
        clock.now += 25
        assert deadline.remaining() == 4.0
        clock.now += 10
        assert deadline.remaining() == -6.0
    assert deadline.remaining() is None


def test_the_deadline_is_cleared_when_the_invocation_raises(deadline: InvocationDeadline) -> None:
    with pytest.raises(RuntimeError), deadline.invocation(remaining_ms=30_000):
        raise RuntimeError("handler failed")
    assert deadline.remaining() is None


def test_invocations_running_at_once_in_one_process_never_cut_each_others_calls_short(
    deadline: InvocationDeadline, clock: FakeClock
) -> None:
    # GIVEN a short invocation, then a long one starting while it runs (as tests and local runs do)
    short = deadline.invocation(remaining_ms=10_000)
    short.__enter__()
    with deadline.invocation(remaining_ms=120_000):
        # THEN the later end counts while both run
        assert deadline.remaining() == 119.0
        short.__exit__(None, None, None)
        assert deadline.remaining() == 119.0
    assert deadline.remaining() is None


def test_the_handler_decorator_sets_the_process_deadline_from_the_lambda_context() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 120_000

    seen: list[float | None] = []

    @bounded_aws_calls
    def handler(event: dict[str, Any], context: Context) -> str:
        seen.append(AWS_DEADLINE.remaining())
        return "done"

    assert handler({}, Context()) == "done"
    (remaining,) = seen
    assert remaining is not None and 0 < remaining <= 120 - RESERVE_SECONDS
    assert AWS_DEADLINE.remaining() is None


# --- The guard's botocore handlers


def test_an_attempt_that_could_outlast_the_invocation_is_refused_with_a_transient_error(
    deadline: InvocationDeadline, clock: FakeClock
) -> None:
    guard = DeadlineGuard(deadline, BOUNDS)
    with deadline.invocation(remaining_ms=20_000):
        guard.before_send(event_name="before-send.s3.GetObject", request=None)  # 19 s left: goes
        clock.now += 12.5
        with pytest.raises(AwsDeadlineError) as raised:
            guard.before_send(event_name="before-send.s3.GetObject", request=None)  # 6.5 s left: refused
    error = raised.value
    assert isinstance(error, TransientError) and not isinstance(error, PermanentInputError)
    assert error.error_type == "AwsUnavailable"  # one documented type: retried, then parked in the DLQ
    assert error.message == (
        "s3 GetObject not attempted: 6.5 s left before the invocation's end, and an attempt may take 7.0 s"
        " (connect + read timeout)"
    )


def test_outside_an_invocation_no_attempt_is_refused(deadline: InvocationDeadline) -> None:
    guard = DeadlineGuard(deadline, BOUNDS)
    guard.before_send(event_name="before-send.dynamodb.UpdateItem", request=None)
    assert guard.needs_retry(attempts=2) is None


def test_a_retry_is_declined_when_no_attempt_fits_after_the_backoff(
    deadline: InvocationDeadline, clock: FakeClock
) -> None:
    guard = DeadlineGuard(deadline, BOUNDS)
    with deadline.invocation(remaining_ms=20_000):
        assert guard.needs_retry(attempts=1) is None  # botocore's standard handler decides
        clock.now += 11
        assert guard.needs_retry(attempts=1) is False  # 8 s left: no sleep, no retry; the attempt's error stands


def test_a_body_chunk_starts_only_while_a_stalled_read_still_fits(
    deadline: InvocationDeadline, clock: FakeClock
) -> None:
    guard = DeadlineGuard(deadline, BOUNDS)
    with deadline.invocation(remaining_ms=7_000):
        guard.before_body_read("reading s3://b/k")  # 6 s left, a read waits 5 s at most
        clock.now += 1.5
        with pytest.raises(AwsDeadlineError, match=r"^reading s3://b/k stopped: 4\.5 s left"):
            guard.before_body_read("reading s3://b/k")


# --- The S3 adapter's body read


class SlowBody(io.BytesIO):
    """A streamed body whose every read takes two seconds of the fake clock."""

    def __init__(self, data: bytes, clock: FakeClock) -> None:
        super().__init__(data)
        self.clock = clock
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.clock.now += 2
        self.reads += 1
        return super().read(size)


class OneObjectClient:
    def __init__(self, body: SlowBody) -> None:
        self.body = body

    def get_object(self, **request: Any) -> dict[str, Any]:
        return {"Body": self.body, "ContentLength": len(self.body.getvalue()), "ETag": '"abc"'}


def object_event(key: str) -> ObjectEvent:
    return ObjectEvent(bucket="uploads", key=key, event_name="ObjectCreated:Put", event_time="2026-11-25T08:00:00Z")


def test_a_slow_body_is_read_in_chunks_and_stopped_at_the_deadline_as_a_transient_error(
    deadline: InvocationDeadline, clock: FakeClock
) -> None:
    # GIVEN a 4 MiB object whose chunks take 2 s each, with 10 s left (9 s after the reserve)
    body = SlowBody(b"\xff" * (4 * BODY_CHUNK_BYTES), clock)
    store = S3ObjectStore(OneObjectClient(body), DeadlineGuard(deadline, BOUNDS))
    event = object_event("photos/big.jpg")
    # WHEN it is fetched
    with deadline.invocation(remaining_ms=10_000), pytest.raises(AwsDeadlineError) as raised:
        store.fetch(event, max_bytes=10 * BODY_CHUNK_BYTES)
    # THEN chunks were read while a stalled read still fitted (9, 7 and 5 s left), not at 3 s; the body is closed
    assert body.reads == 3 and body.closed
    assert raised.value.message.startswith("reading s3://uploads/photos/big.jpg stopped: 3.0 s left")


def test_without_a_deadline_the_whole_body_is_read_in_chunks(clock: FakeClock) -> None:
    body = SlowBody(b"\xff" * (2 * BODY_CHUNK_BYTES + 5), clock)
    store = S3ObjectStore(OneObjectClient(body), DeadlineGuard(InvocationDeadline(clock=clock), BOUNDS))
    fetched = store.fetch(object_event("k.jpg"), 10**8)
    assert fetched.body == b"\xff" * (2 * BODY_CHUNK_BYTES + 5)
    assert body.reads == 4  # three chunks, then the end of the stream
