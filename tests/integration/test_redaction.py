"""A provider or gateway that echoes the API key (or a presigned URL) into its error: through the real handler,
moto and the loopback model server, the secret reaches neither the record, nor the notification, nor the logs."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devkit.model_server import ChatRequest, Reply, error_reply
from tests.conftest import Deployment
from tests.integration.test_pipeline import deliver, depth, upload
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

# A realistic key with no recognisable shape: only its registration from MODEL_API_KEY can catch it.
API_KEY = "gw_live_4f9Qx7Lm2Rt8Vb3Nc6Zk1Hs5Jd0Pw9Ya3Ue"
SIGNATURE = "5b2e8f1c9d4a7e3b6c0f2a8d5e1b9c4f7a3d6e0b8c2f5a9d1e4b7c3f6a0d8e2b"
SECURITY_TOKEN = "IQoJb3JpZ2luX2VjEPr%2F%2F%2F%2F%2F%2F%2FwEaCXVzLWVhc3QtMSJGMEQCIGx"
PRESIGNED = (
    "https://uploads.s3.us-east-1.amazonaws.com/photos/echo.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=ASIAEXAMPLEKEYID0001%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-Security-Token={SECURITY_TOKEN}"
    f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)
LEAKS = (API_KEY, urllib.parse.quote(API_KEY, safe=""), API_KEY[:16], SIGNATURE, SECURITY_TOKEN[:20])


@pytest.fixture
def keyed_env(function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """function_env with a realistic key: the cold start must register it before any error is seen."""
    import resume_app

    from sightline.composition import get_runtime

    monkeypatch.setenv("MODEL_API_KEY", API_KEY)
    get_runtime.cache_clear()
    resume_app._runtime.cache_clear()
    yield {**function_env, "MODEL_API_KEY": API_KEY}
    get_runtime.cache_clear()
    resume_app._runtime.cache_clear()


def echoed(request: ChatRequest) -> str:
    """What a careless gateway says back: the request's Authorization header, the key and the image URL."""
    return (
        f"request rejected; Authorization: {request.headers['authorization']}; api_key={API_KEY};"
        f" upstream fetched {PRESIGNED}; key {API_KEY} (url-encoded {urllib.parse.quote(API_KEY, safe='')})"
    )


def json_error(status: int) -> Callable[[ChatRequest], Reply]:
    return lambda request: error_reply(status, echoed(request), "invalid_request_error" if status < 500 else "server")


def html_page(request: ChatRequest) -> Reply:
    page = f"<html><head><title>502 Bad Gateway</title></head><body><pre>{echoed(request)}</pre></body></html>"
    return Reply(status=502, body=page.encode(), headers={"Content-Type": "text/html"})


def assert_clean(where: str, text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak[:10]}... leaked into {where}: {text[:2000]}"


def everything_logged(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capfd.readouterr()
    records = "\n".join(f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in caplog.records)
    return "\n".join((out, err, caplog.text, records))


def test_a_400_that_echoes_the_key_fails_the_image_without_the_key(
    deployment: Deployment,
    keyed_env: dict[str, str],
    model: Any,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a provider that refuses the image and quotes our key, headers and a presigned URL in its error
    caplog.set_level(logging.INFO)  # the function's own level
    model.responder.default = json_error(400)
    upload(deployment, "photos/echo.jpg", encode(photo(320, 200), "JPEG"))
    # WHEN it is delivered
    deliver(deployment)
    # THEN the image fails with the provider's explanation, minus every secret
    assert model.chat_requests[0].headers["authorization"] == f"Bearer {API_KEY}"  # the key really was sent
    record = deployment.record("photos/echo.jpg")
    assert record is not None and record["status"] == "failed" and record["error_type"] == "ModelRejectedImage"
    assert "request rejected; Authorization: Bearer [redacted]; api_key=[redacted];" in record["error_message"]
    assert "uploads.s3.us-east-1.amazonaws.com/photos/echo.jpg" in record["error_message"]
    assert_clean("the record", json.dumps(record, default=str))
    (notification,) = deployment.received_notifications()
    assert notification["message"]["error_type"] == "ModelRejectedImage"
    assert "[redacted]" in json.dumps(notification, default=str)
    assert_clean("the notification", json.dumps(notification, default=str))
    logs = everything_logged(capfd, caplog)
    assert "object failed permanently" in logs and "[redacted]" in logs
    assert_clean("the logs", logs)


@pytest.mark.parametrize(
    ("responder", "error_type"),
    [(json_error(500), "ModelUnavailable"), (html_page, "ModelUnavailable"), (json_error(401), "Configuration")],
    ids=["500-json", "502-html-page", "401-json"],
)
def test_a_retried_error_that_echoes_the_key_parks_the_item_without_the_key(
    deployment: Deployment,
    keyed_env: dict[str, str],
    model: Any,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    responder: Callable[[ChatRequest], Reply],
    error_type: str,
) -> None:
    # GIVEN a provider (or the gateway in front of it) that keeps failing and echoes the request back
    caplog.set_level(logging.INFO)  # the function's own level
    model.responder.default = responder
    upload(deployment, "photos/echo.jpg", encode(photo(320, 200), "JPEG"))
    # WHEN it is delivered until SQS gives up on it
    deliver(deployment)
    # THEN the item waits in the DLQ with the reason on its record, never the key or the signature
    assert depth(deployment, deployment.resources.dlq_url) == 1
    record = deployment.record("photos/echo.jpg")
    assert record is not None and record["status"] == "processing"
    assert record["last_error_type"] == error_type
    assert "Authorization: Bearer [redacted]" in record["last_error_message"]
    assert_clean("the record", json.dumps(record, default=str))
    assert deployment.received_notifications() == []
    logs = everything_logged(capfd, caplog)
    assert "object will be retried" in logs and "[redacted]" in logs
    assert_clean("the logs", logs)
