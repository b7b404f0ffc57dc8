"""The loopback model server, driven by the real openai client: replies, errors, timeouts, concurrency."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any

import boto3
import openai
import pytest
from openai import OpenAI
from PIL import Image

import devkit.model_server
from devkit.model_server import (
    DEFAULT_ANSWER,
    ChatRequest,
    ImagePart,
    ImageUrlError,
    ModelServer,
    Reply,
    ScriptedResponder,
    completion,
    error_reply,
    response_format_gate,
    stream_reply,
)

pytestmark = pytest.mark.integration

ClientFactory = Callable[..., OpenAI]


def _jpeg(width: int = 280, height: int = 140) -> bytes:
    out = BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def _messages(image: bytes, *, detail: str = "low", system: str | None = None) -> list[dict[str, Any]]:
    url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    user = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": url, "detail": detail}},
            {"type": "text", "text": "Describe this image as JSON."},
        ],
    }
    return ([{"role": "system", "content": system}] if system else []) + [user]


@pytest.fixture
def responder() -> ScriptedResponder:
    return ScriptedResponder()


@pytest.fixture
def server(responder: ScriptedResponder) -> Iterator[ModelServer]:
    with ModelServer(responder) as running:
        yield running


@pytest.fixture
def make_client(server: ModelServer) -> Iterator[ClientFactory]:
    clients: list[OpenAI] = []

    def make(**options: Any) -> OpenAI:
        settings: dict[str, Any] = {
            "base_url": server.base_url,
            "api_key": "sk-test",
            "max_retries": 0,
            "timeout": 10.0,
        } | options
        client = OpenAI(**settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _ask(client: OpenAI, **overrides: Any) -> Any:
    params: dict[str, Any] = {
        "model": "vision-test",
        "messages": _messages(_jpeg()),
        "max_tokens": 300,
        "temperature": 0,
    }
    return client.chat.completions.create(**(params | overrides))


def test_happy_path_returns_parseable_json_and_usage(make_client: ClientFactory) -> None:
    response = _ask(make_client())

    assert json.loads(response.choices[0].message.content) == DEFAULT_ANSWER
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "vision-test"
    # 280x140 is 10x5 patches of 28 px, plus the base and the instruction text.
    assert response.usage.prompt_tokens == 10 * 5 + 50 + len("Describe this image as JSON.") // 4
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_records_body_headers_images_and_texts(server: ModelServer, make_client: ClientFactory) -> None:
    image = _jpeg(56, 28)
    _ask(make_client(api_key="sk-secret"), messages=_messages(image, detail="high", system="Be terse."))

    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-secret"
    assert request.headers["authorization"] == "Bearer sk-secret"
    assert request.model == "vision-test"
    assert request.body["max_tokens"] == 300
    assert request.body["temperature"] == 0
    assert request.images == [("high", image, "image/jpeg")]
    assert request.text_parts == ["Describe this image as JSON."]
    assert request.system_texts == ["Be terse."]


def test_unversioned_path_and_models_list(server: ModelServer, make_client: ClientFactory) -> None:
    client = make_client(base_url=server.url)  # Posts to /chat/completions.
    _ask(client)
    models = make_client().models.list()

    assert [r.path for r in server.requests] == ["/chat/completions", "/v1/models"]
    assert [m.id for m in models] == ["sightline-devkit"]


def test_scripted_replies_are_fifo_then_default(responder: ScriptedResponder, make_client: ClientFactory) -> None:
    first = completion('{"n": 1}', model="m", prompt_tokens=1, completion_tokens=1)
    second = completion("not json", model="m", prompt_tokens=2, completion_tokens=3, finish_reason="length")
    responder.push(Reply(body=first), lambda request: Reply(body=second))
    client = make_client()

    contents = [_ask(client).choices[0] for _ in range(3)]

    assert [c.message.content for c in contents[:2]] == ['{"n": 1}', "not json"]
    assert contents[1].finish_reason == "length"
    assert json.loads(contents[2].message.content) == DEFAULT_ANSWER
    assert responder.pending == 0
    assert responder.calls == 3


def test_429_with_retry_after_raises_rate_limit_error(responder: ScriptedResponder, make_client: ClientFactory) -> None:
    responder.push(error_reply(429, "Rate limit reached", "requests", {"Retry-After": "7"}, code="rate_limit"))

    with pytest.raises(openai.RateLimitError) as caught:
        _ask(make_client())

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body == {
        "message": "Rate limit reached",
        "type": "requests",
        "param": None,
        "code": "rate_limit",
    }


def test_429_is_retried_by_a_client_that_retries(
    server: ModelServer, responder: ScriptedResponder, make_client: ClientFactory
) -> None:
    responder.push(error_reply(429, "slow down", "requests", {"retry-after-ms": "10"}))

    response = _ask(make_client(max_retries=1))

    assert json.loads(response.choices[0].message.content) == DEFAULT_ANSWER
    assert len(server.chat_requests) == 2


def test_500_raises_internal_server_error(responder: ScriptedResponder, make_client: ClientFactory) -> None:
    responder.push(error_reply(500, "The server had an error", "server_error"))

    with pytest.raises(openai.InternalServerError):
        _ask(make_client())


def test_delay_longer_than_client_timeout_raises_timeout(
    responder: ScriptedResponder, make_client: ClientFactory
) -> None:
    responder.push(Reply(body=completion("late", model="m", prompt_tokens=1, completion_tokens=1), delay_seconds=5))

    with pytest.raises(openai.APITimeoutError):
        _ask(make_client(timeout=0.3))


def test_dropped_connection_raises_connection_error(responder: ScriptedResponder, make_client: ClientFactory) -> None:
    responder.push(Reply(drop_connection=True))

    with pytest.raises(openai.APIConnectionError) as caught:
        _ask(make_client())

    assert not isinstance(caught.value, openai.APITimeoutError)


def test_serves_concurrent_requests_in_parallel(
    server: ModelServer, responder: ScriptedResponder, make_client: ClientFactory
) -> None:
    responder.delay_seconds = 1.0
    client = make_client()

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda _: _ask(client), range(10)))

    assert all(json.loads(r.choices[0].message.content) == DEFAULT_ANSWER for r in responses)
    assert len(server.chat_requests) == 10
    # Each request sleeps 1 s inside the server, so all 10 overlapped only if it is threaded.
    assert server.max_in_flight == 10
    assert server.in_flight == 0


def test_responder_exception_becomes_500_and_is_recorded(make_client: ClientFactory) -> None:
    def broken(request: ChatRequest) -> Reply:
        raise RuntimeError("boom")

    with ModelServer(broken) as broken_server:
        with pytest.raises(openai.InternalServerError):
            _ask(make_client(base_url=broken_server.base_url))
        assert [str(e) for e in broken_server.errors] == ["boom"]


def _raw(url: str, data: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_bad_json_and_unknown_routes_get_openai_error_shape(server: ModelServer) -> None:
    status, body = _raw(server.base_url + "/chat/completions", b"{not json")
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"

    status, body = _raw(server.base_url + "/embeddings")
    assert status == 404
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_close_wakes_delayed_handlers_and_frees_the_port(responder: ScriptedResponder) -> None:
    responder.push(Reply(delay_seconds=30))
    server = ModelServer(responder).start()
    port = server.port
    client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_ask, client)
        deadline = time.monotonic() + 5
        while server.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        server.close()
        with pytest.raises(openai.APIConnectionError):
            pending.result(timeout=5)
        assert time.monotonic() - started < 5
    client.close()
    server.close()  # A second close is a no-op.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_default_reply_streams_with_usage_when_asked(server: ModelServer, make_client: ClientFactory) -> None:
    # GIVEN the default responder and a streaming request that asks for usage
    stream = _ask(make_client(), stream=True, stream_options={"include_usage": True})

    # WHEN the SDK reads the stream
    chunks = list(stream)

    # THEN the deltas make the default answer and the last chunk carries the usage
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(content) == DEFAULT_ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    [request] = server.chat_requests
    assert request.stream and request.include_usage


def test_default_reply_streams_without_usage_unless_asked(make_client: ClientFactory) -> None:
    chunks = list(_ask(make_client(), stream=True))

    assert all(c.usage is None for c in chunks)


def test_stream_reply_paces_its_chunks(responder: ScriptedResponder, make_client: ClientFactory) -> None:
    # GIVEN a stream of four pieces 0.2 s apart
    responder.push(stream_reply(["a", "b", "c", "d"], delay_between=0.2))

    # WHEN the SDK reads it, noting when each piece arrives
    started = time.monotonic()
    arrivals = [
        (c.choices[0].delta.content, time.monotonic() - started)
        for c in _ask(make_client(), stream=True)
        if c.choices and c.choices[0].delta.content
    ]

    # THEN they arrived one by one, not all at the end
    assert [piece for piece, _ in arrivals] == ["a", "b", "c", "d"]
    assert arrivals[0][1] < 0.15 and arrivals[-1][1] >= 0.55


def test_response_format_is_recorded_and_a_gate_can_refuse_it(
    server: ModelServer, responder: ScriptedResponder, make_client: ClientFactory
) -> None:
    # GIVEN a provider without json_schema support
    responder.default = response_format_gate("json_schema")
    client = make_client()

    # WHEN json_schema and then json_object are asked for
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}}})
    response = _ask(client, response_format={"type": "json_object"})

    # THEN the first is refused, the second answered, and both were recorded
    assert "json_schema is not supported" in caught.value.message
    assert json.loads(response.choices[0].message.content) == DEFAULT_ANSWER
    assert [r.response_format_type for r in server.chat_requests] == ["json_schema", "json_object"]
    assert server.chat_requests[1].response_format == {"type": "json_object"}


# --- Images by URL: fetched from loopback only, as a provider fetches a presigned URL.


class _Files:
    """A tiny loopback web server: path -> (status, body, content type), optional delay and redirects."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, str]] = {}
        self.redirects: dict[str, str] = {}
        self.delay_seconds = 0.0
        self.hits: list[str] = []
        files = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                files.hits.append(self.path)
                if files.delay_seconds:
                    time.sleep(files.delay_seconds)
                if self.path in files.redirects:
                    self.send_response(302)
                    self.send_header("Location", files.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, body, content_type = files.routes.get(self.path, (404, b"Not Found", "text/plain"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def files() -> Iterator[_Files]:
    served = _Files()
    yield served
    served.close()


def _url_messages(url: str, detail: str = "high") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url, "detail": detail}},
                {"type": "text", "text": "Describe this image as JSON."},
            ],
        }
    ]


@pytest.fixture
def no_remote_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test on any attempt to reach a host other than loopback; returns the hosts attempted."""
    attempts: list[str] = []
    real_create_connection = socket.create_connection
    real_getaddrinfo = socket.getaddrinfo
    real_open = urllib.request.OpenerDirector.open

    def guard(host: Any) -> None:
        if str(host) not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(str(host))
            raise AssertionError(f"network attempt to {host}")

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        guard(address[0])
        return real_create_connection(address, *args, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        guard(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def opener_open(self: urllib.request.OpenerDirector, fullurl: Any, *args: Any, **kwargs: Any) -> Any:
        url = fullurl if isinstance(fullurl, str) else fullurl.full_url
        guard(urllib.parse.urlsplit(url).hostname)
        return real_open(self, fullurl, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", opener_open)  # urlopen and every opener
    return attempts


def test_image_by_loopback_url_is_downloaded_and_decoded(
    server: ModelServer, files: _Files, make_client: ClientFactory
) -> None:
    # GIVEN an image served on loopback, as a presigned URL to the emulated S3 is
    image = _jpeg(56, 28)
    files.routes["/page-images/p1.jpg?X-Amz-Signature=abc"] = (200, image, "image/jpeg")
    url = f"{files.url}/page-images/p1.jpg?X-Amz-Signature=abc"

    # WHEN a request sends it by URL
    response = _ask(make_client(), messages=_url_messages(url))

    # THEN the server fetched it once and the request holds its bytes, with the URL it came from
    assert json.loads(response.choices[0].message.content) == DEFAULT_ANSWER
    [request] = server.chat_requests
    [part] = request.images
    assert part == ("high", image, "image/jpeg")  # still the (detail, data, mime) tuple it always was
    assert part.url == url
    assert request.image_url_error is None
    assert response.usage.prompt_tokens == 2 * 1 + 50 + len("Describe this image as JSON.") // 4
    assert files.hits == ["/page-images/p1.jpg?X-Amz-Signature=abc"]


def test_image_part_stays_a_three_tuple_for_data_urls(server: ModelServer, make_client: ClientFactory) -> None:
    image = _jpeg(28, 28)
    _ask(make_client(), messages=_messages(image))

    [part] = server.chat_requests[0].images
    detail, data, mime = part
    assert (detail, data, mime, part.url) == ("low", image, "image/jpeg", None)
    assert ImagePart("auto", b"x", "image/png").url is None


def test_image_url_answering_404_is_a_bad_request(files: _Files, make_client: ClientFactory) -> None:
    url = f"{files.url}/page-images/expired.jpg"

    with pytest.raises(openai.BadRequestError) as caught:
        _ask(make_client(), messages=_url_messages(url))

    assert caught.value.code == "invalid_image_url"
    assert caught.value.type == "invalid_request_error"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == f"Error while downloading {url}. (HTTP 404 Not Found)"


def test_image_url_on_another_host_is_refused_unfetched(
    server: ModelServer, make_client: ClientFactory, no_remote_network: list[str]
) -> None:
    url = "https://example.com/x.jpg"

    with pytest.raises(openai.BadRequestError) as caught:
        _ask(make_client(), messages=_url_messages(url))

    assert caught.value.code == "invalid_image_url"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"].startswith(f"Cannot fetch the image at {url}: ")
    assert "loopback" in caught.value.body["message"]
    assert no_remote_network == []
    error = server.chat_requests[0].image_url_error
    assert isinstance(error, ImageUrlError) and isinstance(error, ValueError) and error.url == url


def test_redirect_away_from_loopback_is_not_followed(files: _Files, no_remote_network: list[str]) -> None:
    files.redirects["/bounce.jpg"] = "http://198.51.100.7/x.jpg"
    request = ChatRequest({"messages": _url_messages(f"{files.url}/bounce.jpg")})

    with pytest.raises(ImageUrlError, match="not on loopback"):
        _ = request.images

    assert no_remote_network == []


def test_refused_connection_and_timeout_are_download_errors(files: _Files, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setattr(devkit.model_server, "IMAGE_URL_TIMEOUT_SECONDS", 0.2)
    files.delay_seconds = 1.0

    refused = ChatRequest({"messages": _url_messages(f"http://localhost:{closed_port}/x.jpg")})
    slow = ChatRequest({"messages": _url_messages(f"{files.url}/slow.jpg")})

    with pytest.raises(ImageUrlError, match=r"Error while downloading .*refused"):
        _ = refused.images
    started = time.monotonic()
    with pytest.raises(ImageUrlError, match="timed out"):
        _ = slow.images
    assert time.monotonic() - started < 1.0
    with pytest.raises(ImageUrlError):  # the outcome is kept: no second download
        _ = slow.images
    assert files.hits == ["/slow.jpg"]


def test_presigned_url_from_the_emulated_s3_is_fetched(aws: boto3.session.Session) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="page-images")
    image = _jpeg(84, 56)
    s3.put_object(Bucket="page-images", Key="doc/page-1.jpg", Body=image, ContentType="image/jpeg")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "page-images", "Key": "doc/page-1.jpg"})

    [part] = ChatRequest({"messages": _url_messages(url)}).images

    assert part.data == image and part.mime == "image/jpeg" and part.url == url
