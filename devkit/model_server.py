"""A small OpenAI-compatible chat-completions server on loopback, for tests and the local run."""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import http.client
import ipaddress
import json
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any, NamedTuple, Self

__all__ = [
    "DEFAULT_ANSWER",
    "ChatRequest",
    "Headers",
    "ImagePart",
    "ImageUrlError",
    "ModelServer",
    "Reply",
    "Responder",
    "ScriptedResponder",
    "completion",
    "completion_chunk",
    "default_reply",
    "error_reply",
    "estimate_prompt_tokens",
    "image_url_error_reply",
    "is_loopback_url",
    "response_format_gate",
    "sse_body",
    "sse_event",
    "stream_reply",
]

log = logging.getLogger(__name__)

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})
DEFAULT_MODEL = "sightline-devkit"
# One token per 28x28 patch is the order of magnitude of current vision models.
PATCH_SIZE = 28
BASE_PROMPT_TOKENS = 50
# Image URLs: fetched only from these hosts (and any 127.0.0.0/8 address), like a provider fetching a presigned URL.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
IMAGE_URL_TIMEOUT_SECONDS = 10.0
MAX_IMAGE_URL_BYTES = 20 * 1024 * 1024  # OpenAI's limit for one image

DEFAULT_ANSWER: dict[str, Any] = {
    "description": "A test image.",
    "alt_text": "Test image",
    "text": "",
    "tags": ["test"],
}


class Headers(dict[str, str]):
    """A dict of HTTP headers with lower-case keys that looks keys up case-insensitively."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _ImageFields(NamedTuple):
    detail: str
    data: bytes
    mime: str


class ImagePart(_ImageFields):
    """One image of the request: (detail, data, mime), from a data URL or downloaded from an http(s) URL.

    ``url`` is the http(s) URL the image was downloaded from, None for a data URL. It is an attribute, not a
    tuple field, so ``detail, data, mime = part`` and comparisons with 3-tuples work as they always did.
    """

    url: str | None = None  # the class default also covers copies made by _make/_replace

    def __new__(cls, detail: str, data: bytes, mime: str, url: str | None = None) -> ImagePart:
        part = super().__new__(cls, detail, data, mime)
        part.url = url
        return part

    def __repr__(self) -> str:
        fields = f"detail={self.detail!r}, data=<{len(self.data)} bytes>, mime={self.mime!r}"
        return f"ImagePart({fields}" + (f", url={self.url!r})" if self.url is not None else ")")


class ImageUrlError(ValueError):
    """An http(s) image URL this server cannot fetch: not a loopback host, or the download failed.

    ``str(error)`` is the message a provider answers with (code ``invalid_image_url``).
    """

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


@dataclass
class ChatRequest:
    """A request the server received: parsed JSON body, headers, path and method."""

    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=Headers)
    path: str = "/v1/chat/completions"
    method: str = "POST"
    received_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    @property
    def model(self) -> str:
        return str(self.body.get("model") or "")

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The request's response_format object, or None when none was sent."""
        value = self.body.get("response_format")
        return value if isinstance(value, dict) else None

    @property
    def response_format_type(self) -> str:
        """ "json_schema", "json_object", "text" …, or "off" when no response_format was sent."""
        value = (self.response_format or {}).get("type")
        return str(value) if value else "off"

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether a streaming request asked for the usage chunk (stream_options.include_usage)."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def images(self) -> list[ImagePart]:
        """The request's images in message order: data URLs decoded, http(s) URLs on loopback downloaded.

        Other URLs (ftp:, file:, …) are ignored. Raises ValueError for a data URL that is not valid base64,
        and ImageUrlError (a ValueError) for an http(s) URL on any other host (never contacted) or one whose
        download failed. The outcome is worked out once per request, so a URL is fetched at most once.
        """
        outcome = self._images_outcome
        if isinstance(outcome, ValueError):
            raise outcome.with_traceback(None)
        return outcome

    @property
    def image_url_error(self) -> ImageUrlError | None:
        """Why an http(s) image URL of the request cannot be fetched (what ``images`` raises), or None."""
        outcome = self._images_outcome
        return outcome if isinstance(outcome, ImageUrlError) else None

    @cached_property
    def _images_outcome(self) -> list[ImagePart] | ValueError:
        try:
            return self._read_images()
        except ValueError as exc:
            return exc

    def _read_images(self) -> list[ImagePart]:
        found: list[ImagePart] = []
        for part in self._content_parts():
            if part.get("type") != "image_url":
                continue
            image_url = part.get("image_url")
            if isinstance(image_url, str):  # Some clients send the URL bare.
                image_url = {"url": image_url}
            if not isinstance(image_url, dict):
                continue
            url = image_url.get("url")
            if not isinstance(url, str):
                continue
            detail = str(image_url.get("detail") or "auto")
            if url.startswith("data:"):
                mime, data = _decode_data_url(url)
                found.append(ImagePart(detail, data, mime))
            elif url.lower().startswith(("http://", "https://")):
                mime, data = _download_image(url)
                found.append(ImagePart(detail, data, mime, url))
        return found

    @property
    def text_parts(self) -> list[str]:
        """The instruction texts of the user messages, in order."""
        return [
            part["text"]
            for part in self._content_parts(roles=("user",))
            if part.get("type") == "text" and isinstance(part.get("text"), str)
        ]

    @property
    def system_texts(self) -> list[str]:
        """The texts of system (or developer) messages, in order."""
        return [
            part["text"]
            for part in self._content_parts(roles=("system", "developer"))
            if part.get("type") == "text" and isinstance(part.get("text"), str)
        ]

    def _content_parts(self, roles: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for message in self.messages:
            if roles is not None and message.get("role") not in roles:
                continue
            content = message.get("content")
            if isinstance(content, str):
                parts.append({"type": "text", "text": content})
            elif isinstance(content, list):
                parts.extend(p for p in content if isinstance(p, dict))
        return parts


def _decode_data_url(url: str) -> tuple[str, bytes]:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ValueError("data URL without a comma")
    params = header[len("data:") :].split(";")
    mime = params[0] or "text/plain"
    if "base64" not in params[1:]:
        return mime, payload.encode()
    try:
        return mime, base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 in data URL: {exc}") from exc


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is loopback: localhost, ::1 or a 127.0.0.0/8 address."""
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _LoopbackRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to loopback, so a local server cannot bounce the download to the internet."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if not is_loopback_url(newurl):
            fp.close()
            raise ImageUrlError(req.full_url, f"redirected to {newurl}, which is not on loopback")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download_image(url: str) -> tuple[str, bytes]:
    """GET an image URL on loopback (no proxy, loopback redirects only); anything else is refused unfetched."""
    if not is_loopback_url(url):
        raise ImageUrlError(
            url,
            f"Cannot fetch the image at {url}: this local model server downloads images only from loopback hosts"
            " (127.0.0.1, ::1, localhost) and contacts no other host.",
        )
    # No ProxyHandler settings from the environment: a proxy would be a host other than loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _LoopbackRedirects())
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=IMAGE_URL_TIMEOUT_SECONDS) as response:
            data = response.read(MAX_IMAGE_URL_BYTES + 1)
            content_type = response.headers.get_content_type() if response.headers.get("Content-Type") else ""
    except ImageUrlError as exc:
        reason = str(exc)
    except urllib.error.HTTPError as exc:
        exc.close()
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        reason = str(exc) or type(exc).__name__
    else:
        if len(data) > MAX_IMAGE_URL_BYTES:
            reason = f"the image is larger than {MAX_IMAGE_URL_BYTES:,} bytes"
        else:
            return content_type or "application/octet-stream", data
    log.info("image URL download failed: %s: %s", url, reason)
    raise ImageUrlError(url, f"Error while downloading {url}. ({reason})")


@dataclass
class Reply:
    """What the server sends back; body dicts are sent as JSON, None as an empty body.

    With ``chunks`` the body is streamed instead: the headers go out after ``delay_seconds``, then each
    ``(delay, data)`` is written as one HTTP chunk (Transfer-Encoding: chunked) after waiting ``delay``
    seconds, so a client reads it incrementally; the default content type is ``text/event-stream``.
    ``drop_connection`` then means: after the chunks, drop the connection without ending the body.
    """

    status: int = 200
    body: dict[str, Any] | list[Any] | bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    drop_connection: bool = False
    chunks: list[tuple[float, bytes]] | None = None


Responder = Callable[[ChatRequest], Reply]


def completion(
    content: str,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """Build a chat.completion response body with one assistant choice."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error_reply(
    status: int,
    message: str,
    type_: str,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
) -> Reply:
    """A Reply in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return Reply(status=status, body=body, headers=dict(headers or {}))


def completion_chunk(
    content: str | None = None,
    *,
    model: str = DEFAULT_MODEL,
    finish_reason: str | None = None,
    role: str | None = None,
    refusal: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] | None = None,
    choices: bool = True,
    chunk_id: str | None = None,
) -> dict[str, Any]:
    """A chat.completion.chunk: one streamed delta (or, with ``choices=False``, the final usage-only chunk)."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if refusal is not None:
        delta["refusal"] = refusal
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": chunk_id or f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}] if choices else [],
    }
    if usage is not None:
        prompt_tokens, completion_tokens = usage
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return body


def sse_event(event: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` (or the string as is, e.g. "[DONE]") and a blank line."""
    data = event if isinstance(event, str) else json.dumps(event)
    return f"data: {data}\n\n".encode()


def sse_body(events: Iterable[dict[str, Any] | str], *, done: bool = True) -> bytes:
    """A whole text/event-stream body, e.g. for a streaming-only proxy that streams every answer."""
    return b"".join(sse_event(e) for e in events) + (sse_event("[DONE]") if done else b"")


def stream_reply(
    contents: Iterable[str],
    *,
    model: str = DEFAULT_MODEL,
    usage: tuple[int, int] | None = (100, 20),
    finish_reason: str | None = "stop",
    delay_between: float = 0.0,
    first_delay: float = 0.0,
    stall_after: int | None = None,
    stall_seconds: float = 60.0,
    done: bool = True,
    drop_connection: bool = False,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A streamed answer as OpenAI sends it: a role chunk, one chunk per content piece, a chunk with the
    finish_reason, a usage-only chunk (when ``usage`` is given) and ``data: [DONE]``.

    ``delay_between`` paces the pieces; ``first_delay`` is the time to the first token; ``stall_after=n``
    makes the server go quiet for ``stall_seconds`` after n pieces (closing the server wakes it).
    ``finish_reason=None`` with ``done=False`` ends the body mid-answer, as a broken upstream does.
    """
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    chunks: list[tuple[float, bytes]] = [
        (0.0, sse_event(completion_chunk("", model=model, role="assistant", chunk_id=chunk_id)))
    ]
    for index, piece in enumerate(contents):
        delay = first_delay if index == 0 else delay_between
        if stall_after is not None and index == stall_after:
            delay += stall_seconds
        chunks.append((delay, sse_event(completion_chunk(piece, model=model, chunk_id=chunk_id))))
    if finish_reason is not None:
        chunks.append((0.0, sse_event(completion_chunk(model=model, finish_reason=finish_reason, chunk_id=chunk_id))))
    if usage is not None:
        chunks.append((0.0, sse_event(completion_chunk(model=model, usage=usage, choices=False, chunk_id=chunk_id))))
    if done:
        chunks.append((0.0, sse_event("[DONE]")))
    return Reply(status=status, headers=dict(headers or {}), chunks=chunks, drop_connection=drop_connection)


def response_format_gate(
    *unsupported: str,
    status: int = 400,
    message: str = "response_format {type} is not supported by this model",
    then: Responder | None = None,
) -> Responder:
    """A responder for a provider without (some) structured output: a request whose response_format type
    is in ``unsupported`` ("json_schema", "json_object") gets an error; any other goes to ``then``."""
    answer = then or default_reply

    def respond(request: ChatRequest) -> Reply:
        kind = request.response_format_type
        if kind in unsupported:
            return error_reply(status, message.format(type=kind), "invalid_request_error", code="unsupported_parameter")
        return answer(request)

    return respond


def image_url_error_reply(request: ChatRequest) -> Reply | None:
    """The 400 a provider answers when an image URL of the request cannot be fetched; None when all can."""
    error = request.image_url_error
    if error is None:
        return None
    return error_reply(400, str(error), "invalid_request_error", code="invalid_image_url")


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A plausible prompt-token count: one per 28x28 patch of each image, plus text and overhead."""
    tokens = BASE_PROMPT_TOKENS + sum(len(t) for t in request.text_parts + request.system_texts) // 4
    try:
        images = request.images
    except ValueError:
        return tokens
    for image in images:
        size = _image_size(image.data)
        if size is not None:
            width, height = size
            tokens += math.ceil(width / PATCH_SIZE) * math.ceil(height / PATCH_SIZE)
    return tokens


def _image_size(data: bytes) -> tuple[int, int] | None:
    # Imported here so the server itself needs nothing beyond the standard library.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def default_reply(request: ChatRequest) -> Reply:
    """Answer with DEFAULT_ANSWER as JSON content and plausible usage.

    A request with ``stream: true`` is answered as a stream (server-sent events), with the usage chunk
    when ``stream_options.include_usage`` asks for it, as OpenAI does. An image URL that cannot be fetched
    gets the provider's 400 (invalid_image_url) instead.
    """
    refusal = image_url_error_reply(request)
    if refusal is not None:
        return refusal
    content = json.dumps(DEFAULT_ANSWER)
    model = request.model or DEFAULT_MODEL
    prompt_tokens = estimate_prompt_tokens(request)
    completion_tokens = len(content) // 4
    if request.stream:
        pieces = [content[i : i + 16] for i in range(0, len(content), 16)]
        usage = (prompt_tokens, completion_tokens) if request.include_usage else None
        return stream_reply(pieces, model=model, usage=usage)
    body = completion(content, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return Reply(body=body)


class ScriptedResponder:
    """Replies from a FIFO of scripted replies, then from a default; thread-safe.

    Items pushed may be Reply objects or callables taking the ChatRequest. `delay_seconds`
    is added to every reply's own delay.
    """

    def __init__(
        self,
        default: Reply | Responder | None = None,
        *,
        delay_seconds: float = 0.0,
    ) -> None:
        self.default: Reply | Responder = default if default is not None else default_reply
        self.delay_seconds = delay_seconds
        self._queue: collections.deque[Reply | Responder] = collections.deque()
        self._lock = threading.Lock()
        self.calls = 0

    def push(self, *replies: Reply | Responder) -> Self:
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def __call__(self, request: ChatRequest) -> Reply:
        with self._lock:
            self.calls += 1
            scripted = self._queue.popleft() if self._queue else self.default
        reply = scripted if isinstance(scripted, Reply) else scripted(request)
        if self.delay_seconds:
            reply = replace(reply, delay_seconds=reply.delay_seconds + self.delay_seconds)
        return reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Keep-alive, as the openai client's connection pool expects.
    server_version = "SightlineModelServer/1"
    timeout = 60  # Idle keep-alive connections give up after this long.
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # Small streamed chunks go out at once, not after a delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track_connection(self.connection, add=False)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _handle(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = Headers(self.headers.items())
        try:
            body = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        request = ChatRequest(body if isinstance(body, dict) else {}, headers, path, self.command)
        owner._record(request)
        with owner._in_flight_guard():
            reply = self._route(request, body)
            if reply.delay_seconds > 0 and owner._stopping.wait(reply.delay_seconds):
                reply = Reply(drop_connection=True)  # Shutting down: don't keep a client waiting.
            try:
                self._send(reply)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up first (e.g. its timeout was shorter than the delay).
                self.close_connection = True
                log.debug("client went away before the reply to %s", request.path)

    def _route(self, request: ChatRequest, body: Any) -> Reply:
        owner = self.server.owner
        if request.method == "GET" and request.path in MODELS_PATHS:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "sightline"} for m in owner.models]
            return Reply(body={"object": "list", "data": data})
        if request.method == "POST" and request.path in CHAT_PATHS:
            if not isinstance(body, dict):
                return error_reply(400, "Request body is not a JSON object.", "invalid_request_error")
            try:
                return owner.responder(request)
            except Exception as exc:  # A broken responder must not kill the server thread.
                log.exception("responder failed")
                owner._record_error(exc)
                return error_reply(500, f"Responder failed: {exc!r}", "server_error")
        return error_reply(404, f"No route for {request.method} {request.path}.", "invalid_request_error")

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # The client may have gone already.
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, reply: Reply) -> None:
        if reply.chunks is not None:
            self._send_chunked(reply, reply.chunks)
            return
        if reply.drop_connection:
            self._drop()
            return
        content_type, payload = _encode_body(reply.body)
        headers = Headers({"Content-Type": content_type})
        headers.update(Headers(reply.headers))
        headers["Content-Length"] = str(len(payload))
        headers.setdefault("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
        self.send_response(reply.status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_chunked(self, reply: Reply, chunks: list[tuple[float, bytes]]) -> None:
        headers = Headers({"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        headers.update(Headers(reply.headers))
        headers.pop("content-length", None)
        headers["Transfer-Encoding"] = "chunked"
        headers.setdefault("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
        self.send_response(reply.status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()
        stopping = self.server.owner._stopping
        for delay, data in chunks:
            if delay > 0 and stopping.wait(delay):
                self._drop()  # Shutting down mid-stream: end it as a broken connection.
                return
            if data:
                # Size line, data and CRLF in one write, so each chunk is one segment on the wire.
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
        if reply.drop_connection:
            self._drop()
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _encode_body(body: dict[str, Any] | list[Any] | bytes | str | None) -> tuple[str, bytes]:
    if body is None:
        return "application/json", b""
    if isinstance(body, bytes):
        return "application/octet-stream", body
    if isinstance(body, str):
        return "text/plain; charset=utf-8", body.encode()
    return "application/json", json.dumps(body).encode()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # The default of 5 is too small for bursts of concurrent clients.

    def __init__(self, address: tuple[str, int], owner: ModelServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; route them through logging instead.
        log.debug("error while serving %s", client_address, exc_info=True)


class ModelServer:
    """Serve a responder as an OpenAI-compatible endpoint on a free loopback port.

    Use as a context manager; `base_url` is what to pass to `OpenAI(base_url=...)`.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[str] = (DEFAULT_MODEL,),
    ) -> None:
        self.responder = responder
        self.models = list(models)
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._requests: list[ChatRequest] = []
        self._errors: list[BaseException] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._in_flight = 0
        self._max_in_flight = 0

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"model-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake delayed handlers and close open client connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ModelServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0]) if self._httpd is not None else "127.0.0.1"
        if host in ("0.0.0.0", ""):  # Bound to every interface: loopback reaches it.
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[ChatRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[ChatRequest]:
        return [r for r in self.requests if r.path in CHAT_PATHS]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by the responder (each was answered with a 500)."""
        with self._lock:
            return list(self._errors)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being handled at the same time."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget recorded requests, errors and the in-flight high-water mark."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()
            self._max_in_flight = self._in_flight

    def _record(self, request: ChatRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    @contextlib.contextmanager
    def _in_flight_guard(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
