"""AWS calls against a stalling endpoint on 127.0.0.1: the attempts a call makes are bounded by the client's config and
by the invocation's deadline, and an item whose S3 read stalls is retried, never blamed on the image."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError

import app
from devkit.lambda_emulator import FakeLambdaContext, lambda_sqs_event, s3_notification
from sightline.adapters.aws_clients import (
    RESERVE_SECONDS,
    AwsDeadlineError,
    CallBounds,
    DeadlineGuard,
    InvocationDeadline,
    bounded_client,
)
from sightline.adapters.s3 import S3ObjectStore
from sightline.errors import AwsUnavailableError, PermanentInputError, TransientError
from sightline.events import parse_s3_notification
from tests.conftest import Deployment
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

# Small bounds keep the suite fast; the arithmetic is the production one (tests/unit/test_deadlines.py).
BOUNDS = CallBounds(connect_timeout=0.25, read_timeout=0.5, max_attempts=3, backoff_allowance=0.25)
PARTIAL_BODY = b"\xff\xd8\xff\xe0" + b"x" * 6  # the first bytes of a JPEG; the rest never comes


class StallingServer(socketserver.ThreadingTCPServer):
    """Accepts connections and reads each request, then answers nothing (``headers=False``) or only the response
    headers and the first bytes of a longer body, and stalls until the client gives up."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *, send_headers: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _StallingHandler)
        self.send_headers = send_headers
        self.requests: list[str] = []  # request lines, in arrival order
        self.stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, line: str) -> None:
        with self._lock:
            self.requests.append(line)

    def __enter__(self) -> StallingServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()


class _StallingHandler(socketserver.BaseRequestHandler):
    server: StallingServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(0.1)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._recv(sock)
            if not chunk:
                return
            data += chunk
        self.server.record(data.split(b"\r\n", 1)[0].decode("latin-1"))
        if self.server.send_headers:
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n"
                b'ETag: "0123456789abcdef0123456789abcdef"\r\n\r\n' + PARTIAL_BODY
            )
        while self._recv(sock):  # stall: wait for the client to hang up (or the test to end), read what it sends
            pass

    def _recv(self, sock: socket.socket) -> bytes:
        while not self.server.stop.is_set():
            try:
                return sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return b""
        return b""


@pytest.fixture
def stalling() -> Iterator[StallingServer]:
    with StallingServer() as server:
        yield server


def s3_client(server: StallingServer, guard: DeadlineGuard, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The functions' own client factory, its S3 endpoint the stalling server (service endpoints win over
    AWS_ENDPOINT_URL)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.url)
    return bounded_client("s3", boto3.session.Session(region_name="us-east-1"), guard=guard)


def test_without_a_deadline_a_stalled_call_makes_three_attempts_in_all(
    stalling: StallingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a client with the bounded config and no invocation running
    client = s3_client(stalling, DeadlineGuard(InvocationDeadline(), BOUNDS), monkeypatch)
    # WHEN GetObject meets an endpoint that never answers
    with pytest.raises(ReadTimeoutError):
        client.get_object(Bucket="uploads", Key="photos/a.jpg")
    # THEN each attempt ended at the read timeout and there were three in all (the old config allowed four)
    assert stalling.requests == ["GET /uploads/photos/a.jpg HTTP/1.1"] * BOUNDS.max_attempts


def test_no_retry_is_made_when_the_attempt_after_the_backoff_would_outlast_the_invocation(
    stalling: StallingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an invocation with room for one stalled attempt, not for a second one after its backoff
    deadline = InvocationDeadline(reserve_seconds=0)
    client = s3_client(stalling, DeadlineGuard(deadline, BOUNDS), monkeypatch)
    assert 1.4 - BOUNDS.read_timeout < BOUNDS.attempt_seconds + BOUNDS.backoff_allowance
    # WHEN GetObject stalls
    with deadline.invocation(remaining_ms=1400), pytest.raises(ReadTimeoutError):
        client.get_object(Bucket="uploads", Key="photos/b.jpg")
    # THEN the one attempt's own error is raised at once, without a retry
    assert len(stalling.requests) == 1


def test_no_attempt_starts_when_a_stalled_one_could_outlast_the_invocation(
    stalling: StallingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an invocation with less time left than one stalled attempt takes
    deadline = InvocationDeadline(reserve_seconds=0)
    client = s3_client(stalling, DeadlineGuard(deadline, BOUNDS), monkeypatch)
    # WHEN GetObject is called
    with deadline.invocation(remaining_ms=500), pytest.raises(AwsDeadlineError) as raised:
        client.get_object(Bucket="uploads", Key="photos/c.jpg")
    # THEN nothing reached the endpoint, and the error is transient and says why
    assert stalling.requests == []
    assert isinstance(raised.value, TransientError) and raised.value.error_type == "AwsUnavailable"
    assert "s3 GetObject not attempted" in raised.value.message


def test_a_body_that_stalls_mid_read_is_a_transient_error_not_the_images_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an endpoint that sends GetObject's headers and ten bytes of a thousand, then nothing
    with StallingServer(send_headers=True) as server:
        guard = DeadlineGuard(InvocationDeadline(), BOUNDS)
        store = S3ObjectStore(s3_client(server, guard, monkeypatch), guard)
        (event,) = parse_s3_notification(s3_notification("uploads", "photos/d.jpg", etag="0123", size=1000))
        # WHEN the object is fetched
        with pytest.raises(AwsUnavailableError) as raised:
            store.fetch(event, max_bytes=10_000)
    # THEN the read ended at the read timeout: transient (retried), not a permanent failure of the image
    assert not isinstance(raised.value, PermanentInputError)
    assert "reading s3://uploads/photos/d.jpg" in raised.value.message
    assert len(server.requests) == 1  # a body read is not retried by the SDK


def test_a_stalled_getobject_near_the_invocations_end_is_retried_and_never_recorded_as_failed(
    deployment: Deployment, function_env: dict[str, str], stalling: StallingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sightline.composition as composition

    # GIVEN an uploaded photo, then S3 (and only S3) stalling for the function, whose clients use the small bounds
    body = encode(photo(300, 200), "JPEG")
    response = deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key="photos/e.jpg", Body=body)
    notification = s3_notification(
        deployment.resources.bucket,
        "photos/e.jpg",
        etag=response["ETag"].strip('"'),
        version_id=response.get("VersionId"),
        size=len(body),
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stalling.url)
    monkeypatch.setattr(composition, "AWS_CALLS", DeadlineGuard(bounds=BOUNDS))
    composition.get_runtime.cache_clear()
    composition.get_runtime()  # a warm instance: the short invocation below is spent on the item alone
    # WHEN the item arrives with 2.6 s left: after the 1 s reserve, room for two stalled attempts, never three
    remaining = 2.6
    assert remaining - RESERVE_SECONDS - 2 * BOUNDS.read_timeout < BOUNDS.attempt_seconds + BOUNDS.backoff_allowance
    message = {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": json.dumps(notification)}
    result = app.lambda_handler(
        lambda_sqs_event([message], deployment.resources.queue_arn), FakeLambdaContext(timeout_seconds=remaining)
    )
    # THEN the item is a batch-item failure (SQS redelivers it), the deadline cut the SDK's retries short,
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert len(stalling.requests) < BOUNDS.max_attempts
    assert all(line.startswith("GET ") for line in stalling.requests)
    # and nothing blames the image: the record (if the claim was made in time) waits for the retry, nothing announced
    record = deployment.record("photos/e.jpg")
    assert record is None or record["status"] == "processing"
    assert deployment.received_notifications() == []


def test_the_key_secret_is_read_on_a_bounded_client_and_a_refused_read_is_not_a_configuration_error(
    aws: boto3.session.Session,
) -> None:
    from sightline.adapters.aws_clients import AWS_DEADLINE
    from sightline.composition import secret_api_key

    # GIVEN the model key in Secrets Manager
    arn = aws.client("secretsmanager").create_secret(Name="deadline-key", SecretString="sk-deadline-test")["ARN"]
    # WHEN it is read with less time left than one attempt may take
    with AWS_DEADLINE.invocation(remaining_ms=1500), pytest.raises(AwsDeadlineError) as raised:
        secret_api_key(arn)
    # THEN the deadline is what the error says (transient, not alarmed as configuration), and with time it is read
    assert "secrets-manager GetSecretValue not attempted" in raised.value.message
    assert secret_api_key(arn) == "sk-deadline-test"
