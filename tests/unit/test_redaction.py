"""Secrets out of error text: every credential shape, registered secrets, and no harm to ordinary messages."""

from __future__ import annotations

import hashlib
import threading
import urllib.parse

import pytest

from sightline.errors import ModelUnavailableError, SightlineError
from sightline.redaction import REDACTED, redact, register_secret

SECRET = "gw-7Qm2xZ9pL4vR8tY1uK6nB3cD5eF0hJ2aS8dG4k"  # no known shape: only registration can catch it
SIGNATURE = "9f2c4e7a1b3d5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e"
CREDENTIAL = "ASIAXEXAMPLE7KEYID12%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
TOKEN = "IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaCXVzLWVhc3QtMSJHMEUCIQ"
PRESIGNED = (
    "https://bucket.s3.us-east-1.amazonaws.com/photos/cat.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={CREDENTIAL}&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900"
    f"&X-Amz-Security-Token={TOKEN}&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("Authorization: Bearer abc123def456", "abc123def456", "Authorization: Bearer [redacted]"),
        ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "authorization: Basic [redacted]"),
        ('{"Authorization": "Bearer abc123def456", "Host": "api"}', "abc123def456", '"Host": "api"'),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Signature=deadbeefcafe",
            "deadbeefcafe",
            "Authorization: AWS4-HMAC-SHA256 [redacted]",
        ),
        ("invalid token: Bearer sk_live_0123456789 was revoked", "sk_live_0123456789", "Bearer [redacted] was"),
        ("GET /v1/models?api_key=k3y-v4lue-123&model=x", "k3y-v4lue-123", "api_key=[redacted]&model=x"),
        ("GET /v1/models?apikey=k3y-v4lue-123", "k3y-v4lue-123", "apikey=[redacted]"),
        ('{"api_key": "k3y-v4lue-123", "model": "x"}', "k3y-v4lue-123", '"api_key": "[redacted]", "model": "x"'),
        ("x-api-key: k3y-v4lue-123\nhost: api", "k3y-v4lue-123", "x-api-key: [redacted]\nhost: api"),
        ("X-Api-Key=k3y-v4lue-123", "k3y-v4lue-123", "X-Api-Key=[redacted]"),
        ("Incorrect API key provided: sk-proj-abcdefghij0123456789XYZ.", "sk-proj-abcdefghij0123456789", "provided: "),
        ("Incorrect API key provided: sk-abcdefghijklmnopqrstuvwx", "sk-abcdefghijklmnopqrstuvwx", "provided: "),
        ("credentials AKIAIOSFODNN7EXAMPLE were refused", "AKIAIOSFODNN7EXAMPLE", "credentials [redacted] were"),
        ("session ASIAIOSFODNN7EXAMPLE expired", "ASIAIOSFODNN7EXAMPLE", "session [redacted] expired"),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key=[redacted]",
        ),
        ("AWS_SESSION_TOKEN=IQoJb3JpZ2luX2VjEJr", "IQoJb3JpZ2luX2VjEJr", "AWS_SESSION_TOKEN=[redacted]"),
        (f"could not fetch {PRESIGNED}: 403", SIGNATURE, "photos/cat.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"),
        (f"could not fetch {PRESIGNED}: 403", CREDENTIAL, "X-Amz-Credential=[redacted]&X-Amz-Date="),
        (f"could not fetch {PRESIGNED}: 403", TOKEN, "X-Amz-Security-Token=[redacted]&X-Amz-SignedHeaders=host"),
        (f"could not fetch {PRESIGNED}: 403", "IQoJb3JpZ2luX2VjEJr", "X-Amz-Signature=[redacted]: 403"),
        (
            "https://b.s3.amazonaws.com/k.jpg?AWSAccessKeyId=AKIDEXAMPLE99&Signature=abc%2Bdef%3D&Expires=1700",
            "abc%2Bdef",
            "Signature=[redacted]&Expires=1700",
        ),
        (
            "https://d111.cloudfront.net/k.jpg?Expires=1700&Signature=Zm9vYmFy~x-_&Key-Pair-Id=K2J",
            "Zm9vYmFy",
            "&Key-Pair-Id=K2J",
        ),
        (
            "url=" + urllib.parse.quote(PRESIGNED, safe=""),
            SIGNATURE,
            "X-Amz-Signature%3D[redacted]",
        ),
    ],
)
def test_every_credential_shape_is_redacted_and_the_rest_stays_readable(text: str, secret: str, kept: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted
    assert kept in redacted


def test_a_url_encoded_presigned_url_loses_every_credential() -> None:
    redacted = redact("url=" + urllib.parse.quote(PRESIGNED, safe=""))
    assert (
        SIGNATURE not in redacted and "ASIAXEXAMPLE7KEYID12" not in redacted and "IQoJb3JpZ2luX2VjEJr" not in redacted
    )
    assert "bucket.s3.us-east-1.amazonaws.com" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "the model rejected the request: HTTP 400: Invalid image (unsupported format)",
        "the object is 12,582,912 bytes, above the limit of 10,485,760 bytes (MAX_OBJECT_BYTES)",
        "the model endpoint refused our key or permissions: HTTP 401: Incorrect API key provided",
        "a bearer token is required; basic authentication is not supported",
        "the task-scheduler-for-long-running-jobs stalled; the disk-usage-report-generator-service too",
        "content-sha256 " + hashlib.sha256(b"x").hexdigest(),
        "photos/2026/Summer trip (café)/IMG_20260101_120000-signature-edition.jpg",
        "s3://uploads/photos/risk-assessment-2026-final-version-approved.png?versionId=3HL4kqtJlcpXroDTDmJ",
        "Signature verification failed; key: photos/a.jpg; keys: 3",
        "HTTP 502: text/html: <html><head><title>502 Bad Gateway</title></head></html>",
        "",
    ],
)
def test_ordinary_messages_pass_unchanged(text: str) -> None:
    assert redact(text) == text


def test_a_registered_secret_is_redacted_verbatim_and_url_encoded() -> None:
    secret = SECRET + "+/="
    register_secret(secret)
    text = (
        f"echo: {secret} | query: key={urllib.parse.quote(secret, safe='')}"
        f" | form: k={urllib.parse.quote_plus(secret)} | path: /{urllib.parse.quote(secret)}/"
    )
    redacted = redact(text)
    assert SECRET not in redacted and SECRET[:12] not in redacted
    assert redacted == f"echo: {REDACTED} | query: key={REDACTED} | form: k={REDACTED} | path: /{REDACTED}/"


def test_a_longer_secret_containing_a_registered_one_is_redacted_whole() -> None:
    register_secret("sess-1234567890")
    register_secret("sess-1234567890-extended-part")
    assert redact("got sess-1234567890-extended-part") == f"got {REDACTED}"


@pytest.mark.parametrize("value", ["no-key", "short", "", "   ", None])
def test_short_values_are_never_registered(value: str | None) -> None:
    register_secret(value)
    assert redact("there is no-key and a short word here") == "there is no-key and a short word here"


def test_redaction_is_idempotent() -> None:
    register_secret(SECRET)
    text = (
        f"Authorization: Bearer {SECRET}\nx-api-key: abcdefgh123\n"
        f'{{"api_key": "k3y-v4lue-123"}} sk-abcdefghijklmnopqrstuvwx AKIAIOSFODNN7EXAMPLE {PRESIGNED}'
    )
    once = redact(text)
    assert redact(once) == once
    assert SECRET not in once and SIGNATURE not in once


def test_registration_is_safe_from_many_threads() -> None:
    values = [f"thread-secret-{n:04d}-abcdefgh" for n in range(64)]
    threads = [threading.Thread(target=register_secret, args=(value,)) for value in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    redacted = redact(" ".join(values))
    assert all(value not in redacted for value in values)
    assert redacted == " ".join([REDACTED] * len(values))


def test_every_domain_error_is_clean_at_the_source() -> None:
    register_secret(SECRET)
    error = ModelUnavailableError(f"HTTP 500: upstream said: key {SECRET} invalid; see {PRESIGNED}")
    for text in (error.message, str(error), repr(error)):
        assert SECRET not in text and SIGNATURE not in text
    assert isinstance(error, SightlineError) and error.message.startswith("HTTP 500: upstream said: key [redacted]")


def test_an_unexpected_exception_is_redacted_before_it_is_stored() -> None:
    from sightline.pipeline import _error_text

    register_secret(SECRET)
    text = _error_text(RuntimeError(f"boom with Authorization: Bearer {SECRET} at {PRESIGNED}"))
    assert text.startswith("RuntimeError: boom with Authorization: Bearer [redacted]")
    assert SECRET not in text and SIGNATURE not in text
