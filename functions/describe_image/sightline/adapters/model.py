"""Model adapter: an OpenAI-compatible /chat/completions call with our own timeout, retry and parsing policy.

The SDK's own retries are off (max_retries=0): its default timeout is 10 minutes and it honours
Retry-After up to two minutes, neither of which fits inside a Lambda invocation. Here every attempt
and every wait is bounded by the time the invocation has left.

The body is never trusted to be what the SDK's types say: it is read raw (``with_raw_response``) and parsed
here, from every shape OpenAI-compatible servers and gateways send (content as a string or as parts,
refusals, tool calls, a chunk, a whole SSE stream nobody asked for). A 200 that is not a completion is the
provider's fault, never the image's: it is retried and then reported as ``ProviderResponseError``.

Streaming (``stream=True``) adds two guards a non-streaming call cannot have: a stream that goes quiet for
``stall_seconds`` is abandoned (and retried) long before the total timeout, and an answer that keeps repeating
itself is cut off early (``finish_reason="repetition"``) instead of running, and being paid for, to the limit.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, get_args

import anyio
import httpx2
import openai

from sightline.errors import (
    ConfigurationError,
    ModelRefusedError,
    ModelRejectedImageError,
    ModelUnavailableError,
    ProviderResponseError,
    RequestTooLargeError,
    TransientError,
)
from sightline.ports import ModelAnswer, ModelRequest, ModelUsage, OutputMode, OutputModeSetting
from sightline.redaction import redact, register_secret
from sightline.text import bounded, storable

# Below this much time for an attempt we do not start one: it would only end in a timeout.
MIN_ATTEMPT_SECONDS = 2.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# Without a deadline, a Retry-After longer than this ends the call instead of sleeping through it.
MAX_RETRY_AFTER_SECONDS = 60.0
# A completion is a few kilobytes; anything near this is not one, and is not parsed.
MAX_BODY_BYTES = 8 * 1024 * 1024
ERROR_TEXT_BYTES = 500
BODY_SNIPPET_CHARS = 200
# A streamed answer whose last REPETITION_WINDOW characters are one unit of at most REPETITION_MAX_UNIT
# characters repeated is a runaway; checked every REPETITION_CHECK_EVERY new characters.
REPETITION_WINDOW = 2_000  # long enough that a legitimately repetitive table or a row of dots is not cut
REPETITION_MAX_UNIT = 200
REPETITION_CHECK_EVERY = 256
REPETITION_FINISH_REASON = "repetition"

OUTPUT_MODES: tuple[OutputMode, ...] = get_args(OutputMode)  # strongest first: json_schema, json_object, off
_OUTPUT_MODE_SETTINGS: tuple[OutputModeSetting, ...] = get_args(OutputModeSetting)

# Statuses with which providers refuse a request *parameter* (response_format, stream_options).
_PARAMETER_REJECTION_STATUSES = frozenset({400, 404, 422, 501})
_RESPONSE_FORMAT_WORDS = re.compile(
    r"response[_ ]format|json[_ ]schema|json[_ ]object|json mode|structured[_ ]output|guided[_ ]json", re.IGNORECASE
)
_NOT_SUPPORTED_WORDS = re.compile(r"not supported|unsupported (?:parameter|argument|field)", re.IGNORECASE)
_STREAM_OPTIONS_WORDS = re.compile(r"stream[_ ]options|include[_ ]usage", re.IGNORECASE)
_CONTENT_FILTER_WORDS = re.compile(r"content[_ ](?:filter|policy|management)", re.IGNORECASE)
_SSE_FIRST_LINE = re.compile(rb"^\s*(?:data|event|id|retry)?:")
_MAX_TOKEN_COUNT = 10**12


def retry_after_seconds(headers: Any, *, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After as seconds: ``retry-after-ms``, ``retry-after`` in seconds, or an HTTP date.

    Never raises: a value that is missing, malformed ("soon", ""), not finite or a date in the past gives
    None, and the caller falls back to its own backoff.
    """
    if headers is None:
        return None
    try:
        milliseconds = _finite(headers.get("retry-after-ms"))
        if milliseconds is not None:
            return milliseconds / 1000
        value = headers.get("retry-after")
        if not isinstance(value, str) or not value.strip():
            return None
        seconds = _finite(value)
        if seconds is not None:
            return seconds
        parsed = email.utils.parsedate_to_datetime(value.strip())
        if parsed.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read the same way
            parsed = parsed.replace(tzinfo=UTC)
        wait = parsed.timestamp() - now()
        return wait if wait > 0 else None
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        return None


def _finite(value: Any) -> float | None:
    """A non-negative finite number of seconds from a header value, else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


# --- Internal signals between one attempt and the retry loop


class _Retry(Exception):
    """An attempt failed in a way another attempt may not: retried while attempts and time allow."""

    def __init__(self, message: str, *, error: type[TransientError] = ModelUnavailableError, wait: float | None = None):
        super().__init__(message)
        self.message = message
        self.error = error
        self.wait = wait


class _BadBody(Exception):
    """A 200 whose body is not a chat completion; ``what`` says what it was instead."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass
class _Parsed:
    """What one completion said, from whichever shape it came in."""

    content: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    refusal: str | None = None
    tool_arguments: tuple[str, ...] = ()


@dataclass
class _StreamAssembly:
    """Deltas of a stream (or of a chunk-shaped body) put back together."""

    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_arguments: dict[int, list[str]] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    choices_seen: int = 0
    done: bool = False
    chars: int = 0
    recent: str = ""  # the last REPETITION_WINDOW characters of everything the model said
    received: bytearray = field(default_factory=bytearray)  # the stream's first bytes, to describe it

    def add_event(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        for event in _event_objects(data):
            self.add_chunk(event)

    def add_chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            raise _BadBody(f"a stream event that is not a JSON object ({_json_kind(chunk)})")
        if chunk.get("error") is not None and not chunk.get("choices"):
            raise _BadBody(f"an error event in the stream: {_error_message(chunk['error'])}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens, self.completion_tokens = _usage_tokens(usage)
        choices = chunk.get("choices")
        if choices is None or choices == []:
            return  # keep-alives, usage-only chunks and other providers' extras
        if not isinstance(choices, list):
            raise _BadBody("a stream chunk whose choices are not a list")
        choice = _first_choice(choices)
        self.choices_seen += 1
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message")  # a few servers repeat the whole message in the last chunk
        if delta is None:
            delta = {}
        if not isinstance(delta, dict):
            raise _BadBody("a stream chunk whose delta is not an object")
        self._said(self.content, _content_text(delta.get("content")))
        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            self._said(self.refusal, refusal)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, call in enumerate(tool_calls):
                if isinstance(call, dict):
                    index = call.get("index")
                    key = index if isinstance(index, int) and not isinstance(index, bool) else position
                    self._said(self.tool_arguments.setdefault(key, []), _arguments(call.get("function")))
        function_call = delta.get("function_call")
        if isinstance(function_call, dict):
            self._said(self.tool_arguments.setdefault(-1, []), _arguments(function_call))
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str) and finish_reason:
            self.finish_reason = finish_reason

    def _said(self, into: list[str], text: str | None) -> None:
        if text:
            into.append(text)
            self.chars += len(text)
            self.recent = (self.recent + text)[-REPETITION_WINDOW:]

    def parsed(self) -> _Parsed:
        return _Parsed(
            content="".join(self.content),
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            refusal="".join(self.refusal) or None,
            tool_arguments=tuple("".join(parts) for _, parts in sorted(self.tool_arguments.items())),
        )


class _SSEDecoder:
    """Server-sent events from bytes as they arrive: the data of each event (data lines joined by newlines)."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._pending += chunk
        if b"\n" not in chunk:
            return []
        lines = bytes(self._pending).split(b"\n")
        self._pending = bytearray(lines.pop())
        events: list[str] = []
        for line in lines:
            self._line(line.rstrip(b"\r"), events)
        return events

    def finish(self) -> list[str]:
        events: list[str] = []
        if self._pending:
            self._line(bytes(self._pending).rstrip(b"\r"), events)
            self._pending.clear()
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(b":"):
            return  # a comment, e.g. a keep-alive
        name, _, value = line.partition(b":")
        if name.strip() == b"data":
            self._data.append(value.removeprefix(b" ").decode("utf-8", "replace"))


def _event_objects(data: str) -> list[Any]:
    """The JSON of one event's data; a server that puts one chunk per line without blank lines between
    them sends several in one event."""
    try:
        return [_loads(data)]
    except _BadBody:
        lines = [line for line in data.split("\n") if line.strip() and line.strip() != "[DONE]"]
        if len(lines) < 2:
            raise
        return [_loads(line) for line in lines]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise _BadBody("JSON nested too deeply to read") from None
    except ValueError:
        raise _BadBody("truncated or malformed JSON") from None


def _json_kind(value: Any) -> str:
    if value is None:
        return "JSON null"
    if isinstance(value, list):
        return "a JSON list"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, int | float):
        return "a JSON number"
    if isinstance(value, str):
        return "a JSON string"
    return "a JSON object"


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        text = message if isinstance(message, str) and message else json.dumps(error, default=str)[:4000]
        return f"{text} (code {code})" if isinstance(code, str | int) and code else text
    return str(error)[:BODY_SNIPPET_CHARS]


def _first_choice(choices: list[Any]) -> dict[str, Any]:
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    if isinstance(choices[0], dict):
        return choices[0]
    raise _BadBody("a choice that is not an object")


def _content_text(content: Any) -> str | None:
    """``content`` as text: a string, or a list of content parts whose texts are joined (or a JSON object,
    which a few gateways hand back already parsed in JSON mode: it is the answer, as JSON text)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, dict):
        if content.get("type") in ("text", "output_text"):
            content = [content]  # one part, sent bare
        else:
            return json.dumps(content, ensure_ascii=False)
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in (None, "text", "output_text"):
                text = part.get("text")
                if isinstance(text, dict):  # an older parts shape: {"text": {"value": ...}}
                    text = text.get("value")
                if isinstance(text, str):
                    texts.append(text)
        return "".join(texts)
    raise _BadBody(f"message content that is {_json_kind(content)}")


def _arguments(function: Any) -> str | None:
    if not isinstance(function, dict):
        return None
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict | list):
        return json.dumps(arguments)
    return None


def _usage_tokens(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None
    return _count(usage, "prompt_tokens", "input_tokens"), _count(usage, "completion_tokens", "output_tokens")


def _count(usage: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and 0 <= value < _MAX_TOKEN_COUNT:
            return value
    return None


def parse_completion_body(body: bytes, content_type: str | None) -> _Parsed:
    """The answer in a 200 body, whichever shape it came in; raises _BadBody when it is not a completion."""
    if len(body) > MAX_BODY_BYTES:
        raise _BadBody(f"a body of {len(body):,} bytes, above the {MAX_BODY_BYTES:,}-byte limit")
    text = body.decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not text:
        raise _BadBody("an empty body")
    if "event-stream" in (content_type or "").lower() or _SSE_FIRST_LINE.match(body.lstrip(b"\xef\xbb\xbf")):
        return _parse_sse_body(body)
    if text.startswith("<"):
        raise _BadBody("an HTML page, not a chat completion (is MODEL_BASE_URL right? a gateway's page?)")
    data = _loads(text)
    if not isinstance(data, dict):
        raise _BadBody(f"{_json_kind(data)}, not a completion object")
    if data.get("error") is not None and not data.get("choices"):
        raise _BadBody(f"an error object: {_error_message(data['error'])}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _BadBody("a JSON object without choices")
    choice = _first_choice(choices)
    if data.get("object") == "chat.completion.chunk" or ("delta" in choice and "message" not in choice):
        assembly = _StreamAssembly()
        assembly.add_chunk(data)
        return assembly.parsed()
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _BadBody("a choice without a message")
    prompt_tokens, completion_tokens = _usage_tokens(data.get("usage"))
    tool_arguments: list[str] = []
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        tool_arguments.extend(
            a for a in (_arguments(c.get("function")) for c in tool_calls if isinstance(c, dict)) if a
        )
    legacy = _arguments(message.get("function_call"))
    if legacy:
        tool_arguments.append(legacy)
    refusal = message.get("refusal")
    finish_reason = choice.get("finish_reason")
    return _Parsed(
        content=_content_text(message.get("content")) or "",
        finish_reason=finish_reason if isinstance(finish_reason, str) and finish_reason else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        refusal=refusal if isinstance(refusal, str) and refusal else None,
        tool_arguments=tuple(tool_arguments),
    )


def _parse_sse_body(body: bytes) -> _Parsed:
    """A whole stream in one body (streaming-only proxies stream whatever was asked)."""
    decoder = _SSEDecoder()
    assembly = _StreamAssembly()
    for data in [*decoder.feed(body), *decoder.finish()]:
        assembly.add_event(data)
        if assembly.done:
            break
    _check_stream_end(assembly)
    return assembly.parsed()


def _check_stream_end(assembly: _StreamAssembly) -> None:
    if assembly.choices_seen == 0:
        raise _BadBody("a stream without any completion chunk")
    if not assembly.done and assembly.finish_reason is None:
        raise _BadBody(
            f"a stream that ended mid-answer (no finish_reason, no [DONE]) after {assembly.chars:,} characters"
        )


def is_repetitive(text: str) -> bool:
    """Whether the last REPETITION_WINDOW characters are one unit of at most REPETITION_MAX_UNIT repeated."""
    if len(text) < REPETITION_WINDOW:
        return False
    window = text[-REPETITION_WINDOW:]
    return any(window[unit:] == window[:-unit] for unit in range(1, REPETITION_MAX_UNIT + 1))


class OpenAIVisionModel:
    """The VisionModel port over an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        client: openai.OpenAI,
        model_id: str,
        *,
        max_output_tokens: int,
        timeout_seconds: float,
        max_attempts: int,
        output_mode: OutputModeSetting = "auto",
        stream: bool = False,
        stall_seconds: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if output_mode not in _OUTPUT_MODE_SETTINGS:
            raise ValueError(f"output_mode must be one of {', '.join(_OUTPUT_MODE_SETTINGS)}, got {output_mode!r}")
        self._client = client
        self._model_id = model_id
        self._max_output_tokens = max_output_tokens
        self._timeout_seconds = timeout_seconds
        self._max_attempts = max(1, max_attempts)
        self._auto = output_mode == "auto"
        self._mode: OutputMode = "json_schema" if output_mode == "auto" else output_mode
        self._stream = stream
        self._stall_seconds = stall_seconds
        self._stream_options = True  # until the provider says it does not know them
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def output_mode(self) -> OutputMode:
        """The mode structured-output calls start with now (after any fallback remembered this cold start)."""
        with self._lock:
            return self._mode

    @property
    def stream(self) -> bool:
        return self._stream

    def complete(self, request: ModelRequest, deadline: float | None, usage: ModelUsage) -> ModelAnswer:
        """One answer, retrying 429/5xx/timeouts/connection errors/broken bodies while the deadline allows."""
        structured = request.json_schema is not None
        with self._lock:
            mode: OutputMode = self._mode if structured else "off"
            stream_options = self._stream_options
        fell_back = False
        attempt = 1
        last: _Retry | None = None
        while True:
            timeout = self._timeout_seconds
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining < MIN_ATTEMPT_SECONDS:
                    error = last.error if last else ModelUnavailableError
                    said = last.message if last else "no attempt made"
                    raise error(bounded(f"no time left for a model call ({said})", ERROR_TEXT_BYTES))
                timeout = min(timeout, remaining)
            params = self._params(request, mode, stream_options)
            try:
                answer = self._attempt(params, timeout, usage, mode)
            except openai.APIStatusError as exc:
                detail = self._error_detail(exc)
                text = _error_text(exc)
                status = exc.status_code
                if (
                    self._stream
                    and stream_options
                    and status in _PARAMETER_REJECTION_STATUSES
                    and _STREAM_OPTIONS_WORDS.search(text)
                ):
                    # Usage then comes only if the provider sends it unasked; resent at once, not an attempt.
                    stream_options = False
                    with self._lock:
                        self._stream_options = False
                    continue
                if mode != "off" and status in _PARAMETER_REJECTION_STATUSES and _rejects_output_mode(text):
                    if not self._auto:
                        raise ConfigurationError(
                            f"the model endpoint rejected response_format {mode} (MODEL_OUTPUT_MODE={mode}; "
                            f"auto falls back to what it accepts): {detail}"
                        ) from None
                    mode = OUTPUT_MODES[OUTPUT_MODES.index(mode) + 1]
                    fell_back = True
                    continue  # resent at once: a refused parameter is not an attempt, and was not billed
                last = self._status_failure(exc, detail, status)
            except _Retry as failure:
                last = failure
            else:
                if fell_back:
                    self._remember(mode)
                return answer
            assert last is not None  # every way here set it
            if attempt >= self._max_attempts:
                plural = "s" if attempt > 1 else ""
                raise last.error(bounded(f"{last.message} (after {attempt} attempt{plural})", ERROR_TEXT_BYTES))
            wait = last.wait
            if wait is None:
                # Full jitter keeps a fleet of functions from retrying in lockstep.
                wait = random.uniform(0, min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))
            if deadline is not None and self._clock() + wait + MIN_ATTEMPT_SECONDS > deadline:
                said = f"{last.message}; the wait of {wait:.1f}s does not fit in the time left"
                raise last.error(bounded(said, ERROR_TEXT_BYTES))
            if deadline is None and wait > MAX_RETRY_AFTER_SECONDS:
                raise last.error(bounded(f"{last.message}; the provider asks to wait {wait:.0f}s", ERROR_TEXT_BYTES))
            self._sleep(wait)
            attempt += 1

    # --- One attempt

    def _params(self, request: ModelRequest, mode: OutputMode, stream_options: bool) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model_id or self._model_id,
            "messages": request.messages,
            "max_tokens": request.max_output_tokens
            if request.max_output_tokens is not None
            else self._max_output_tokens,
            "temperature": 0,
        }
        if request.json_schema is not None and mode == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "strict": True, "schema": request.json_schema},
            }
        elif request.json_schema is not None and mode == "json_object":
            params["response_format"] = {"type": "json_object"}
        if self._stream:
            params["stream"] = True
            if stream_options:
                params["stream_options"] = {"include_usage": True}
        return params

    def _attempt(self, params: dict[str, Any], timeout: float, usage: ModelUsage, mode: OutputMode) -> ModelAnswer:
        if self._stream:
            # The read timeout is the stall guard: no byte for stall_seconds ends the attempt.
            limits: float | openai.Timeout = openai.Timeout(timeout, read=min(self._stall_seconds, timeout))
        else:
            limits = timeout
        client = self._client.with_options(timeout=limits, max_retries=0)
        started = self._clock()
        try:
            raw = client.chat.completions.with_raw_response.create(**params)
        except openai.APIStatusError:
            raise
        except openai.APITimeoutError:
            waited = f"no data for {min(self._stall_seconds, timeout):.1f}s" if self._stream else f"{timeout:.1f}s"
            raise _Retry(f"timed out ({waited})") from None
        except openai.APIConnectionError as exc:
            raise _Retry(f"connection failed: {self._cause(exc)}") from None
        except openai.OpenAIError as exc:
            raise _Retry(f"the openai client failed: {self._scrub(f'{type(exc).__name__}: {exc}')}") from None
        response = raw.http_response
        if self._stream:
            return self._read_stream(response, started, timeout, usage, mode)
        return self._read_body(response, response.content, started, usage, mode, streamed=False)

    def _read_body(
        self,
        response: httpx2.Response,
        body: bytes,
        started: float,
        usage: ModelUsage,
        mode: OutputMode,
        *,
        streamed: bool,
    ) -> ModelAnswer:
        latency_ms = self._elapsed_ms(started)
        content_type = _content_type(response)
        try:
            parsed = parse_completion_body(body, content_type)
        except Exception as exc:  # _BadBody, and anything a hostile body provokes: never the image's fault
            usage.add(None, None, latency_ms)  # a 200: it may be billed
            what = exc.what if isinstance(exc, _BadBody) else f"a body that could not be read ({type(exc).__name__})"
            raise _Retry(self._bad_body(what, content_type, body), error=ProviderResponseError) from None
        usage.add(parsed.prompt_tokens, parsed.completion_tokens, latency_ms)
        return self._answer(parsed, latency_ms, mode, streamed=streamed)

    def _read_stream(
        self, response: httpx2.Response, started: float, timeout: float, usage: ModelUsage, mode: OutputMode
    ) -> ModelAnswer:
        """Read a streamed answer chunk by chunk, with the stall, deadline and repetition guards.

        Every way out adds the call to ``usage`` exactly once: it got a 200, so it may be billed.
        """
        attempt_deadline = started + timeout
        assembly = _StreamAssembly()
        whole_body: bytes | None = None  # set when the provider answered the whole completion at once
        repetitive = False
        try:
            whole_body, repetitive = self._consume_stream(response, assembly, timeout, attempt_deadline)
        except _Retry:
            usage.add(None, None, self._elapsed_ms(started))
            raise
        except _BadBody as bad:
            usage.add(None, None, self._elapsed_ms(started))
            what, received = bad.what, bytes(assembly.received)
            raise _Retry(self._bad_body(what, _content_type(response), received), error=ProviderResponseError) from None
        except (httpx2.TimeoutException, openai.APITimeoutError):
            if assembly.finish_reason is None:
                usage.add(None, None, self._elapsed_ms(started))
                raise _Retry(
                    f"the stream stalled: no data for {min(self._stall_seconds, timeout):.1f}s"
                    f" after {assembly.chars:,} characters"
                ) from None
            # The answer is complete; only the usage chunk or [DONE] did not come. Keep what was said.
        except (
            httpx2.HTTPError,
            httpx2.StreamError,
            OSError,
            ssl.SSLError,
            anyio.EndOfStream,
            openai.APIConnectionError,
        ) as exc:
            if assembly.finish_reason is None:
                usage.add(None, None, self._elapsed_ms(started))
                raise _Retry(f"the stream broke off after {assembly.chars:,} characters: {self._cause(exc)}") from None
        except Exception as exc:  # anything else a hostile stream provokes: the provider's fault
            usage.add(None, None, self._elapsed_ms(started))
            what = f"a stream that could not be read ({type(exc).__name__})"
            raise _Retry(
                self._bad_body(what, _content_type(response), bytes(assembly.received)), error=ProviderResponseError
            ) from None
        finally:
            response.close()  # also what aborts a runaway or stalled stream
        if whole_body is not None:
            return self._read_body(response, whole_body, started, usage, mode, streamed=False)
        latency_ms = self._elapsed_ms(started)
        parsed = assembly.parsed()
        usage.add(parsed.prompt_tokens, parsed.completion_tokens, latency_ms)
        if repetitive:
            parsed.finish_reason = REPETITION_FINISH_REASON
        return self._answer(parsed, latency_ms, mode, streamed=True)

    def _consume_stream(
        self, response: httpx2.Response, assembly: _StreamAssembly, timeout: float, attempt_deadline: float
    ) -> tuple[bytes | None, bool]:
        """(the whole body when it was not a stream, whether the answer was cut off as repetitive)."""
        chunks = response.iter_bytes()
        sse = "event-stream" in _content_type(response).lower()
        if not sse:  # no content-type to go by: look at how the body starts
            first = next(chunks, b"")
            sse = bool(_SSE_FIRST_LINE.match(first.lstrip(b"\xef\xbb\xbf")))
            chunks = _chain(first, chunks)
        if not sse:  # the provider answered the whole completion at once: read it, bounded
            body = bytearray()
            for chunk in chunks:
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    break
                if self._clock() > attempt_deadline:
                    raise _Retry(f"the answer took longer than {timeout:.1f}s")
            return bytes(body), False
        decoder = _SSEDecoder()
        total = 0
        next_check = REPETITION_CHECK_EVERY
        for chunk in chunks:
            total += len(chunk)
            if len(assembly.received) < BODY_SNIPPET_CHARS:
                assembly.received += chunk[:BODY_SNIPPET_CHARS]
            if total > MAX_BODY_BYTES:
                raise _BadBody(f"a stream of more than {MAX_BODY_BYTES:,} bytes")
            for data in decoder.feed(chunk):
                assembly.add_event(data)
                if assembly.done:
                    return None, False
            if assembly.chars >= next_check:
                next_check = assembly.chars + REPETITION_CHECK_EVERY
                if is_repetitive(assembly.recent):
                    return None, True
            if self._clock() > attempt_deadline and assembly.finish_reason is None:
                raise _Retry(f"the stream ran past the attempt's {timeout:.1f}s after {assembly.chars:,} characters")
        for data in decoder.finish():
            assembly.add_event(data)
            if assembly.done:
                break
        _check_stream_end(assembly)
        return None, False

    def _answer(self, parsed: _Parsed, latency_ms: int, mode: OutputMode, *, streamed: bool) -> ModelAnswer:
        if parsed.finish_reason == "content_filter":
            said = f": {bounded(parsed.refusal, 300)}" if parsed.refusal else ""
            raise ModelRefusedError(
                f"the provider's content filter stopped the answer (finish_reason=content_filter){said}"
            )
        return ModelAnswer(
            content=parsed.content,
            finish_reason=parsed.finish_reason,
            prompt_tokens=parsed.prompt_tokens,
            completion_tokens=parsed.completion_tokens,
            latency_ms=latency_ms,
            refusal=parsed.refusal,
            tool_arguments=parsed.tool_arguments,
            output_mode=mode,
            streamed=streamed,
        )

    # --- Errors

    def _status_failure(self, exc: openai.APIStatusError, detail: str, status: int) -> _Retry:
        """The domain error for an HTTP error status: raised when permanent or our configuration, returned
        (to be retried) when another attempt may succeed."""
        if status in (401, 403):
            raise ConfigurationError(f"the model endpoint refused our key or permissions: {detail}") from None
        if status == 402:
            raise ConfigurationError(f"the model account is out of balance or credit: {detail}") from None
        if status in (404, 405, 410):
            raise ConfigurationError(
                f"the model endpoint or model was not found (check MODEL_BASE_URL and MODEL_ID): {detail}"
            ) from None
        if status == 413:
            size = _request_size(exc)
            raise RequestTooLargeError(
                f"the model endpoint refused a request of {size} as too large (HTTP 413); lower IMAGE_DETAIL"
                f" or use a gateway with a higher request size limit: {detail}"
            ) from None
        if status in (400, 422):
            if _CONTENT_FILTER_WORDS.search(_error_text(exc)):
                raise ModelRefusedError(f"the provider's content filter refused the request: {detail}") from None
            raise ModelRejectedImageError(f"the model rejected the request: {detail}") from None
        return _Retry(detail, wait=retry_after_seconds(exc.response.headers))

    def _error_detail(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        message: str | None = None
        if isinstance(body, dict):
            message = _error_message(body)
        elif isinstance(body, str) and body.strip():
            content_type = exc.response.headers.get("content-type") or "no content-type"
            message = f"{content_type}: {_snippet(self._scrub(body[:4000]))}"
        elif body is not None:
            message = _snippet(self._scrub(json.dumps(body, default=str)[:4000]))
        # Scrubbed before it is cut, so a cut can never leave part of a key behind.
        return bounded(self._scrub(f"HTTP {exc.status_code}: {message or 'no error message'}"), ERROR_TEXT_BYTES)

    def _bad_body(self, what: str, content_type: str | None, body: bytes) -> str:
        text = _snippet(self._scrub(body[:4000].decode("utf-8", "replace"))) if body.strip() else ""
        shown = f": {text!r}" if text else ""
        message = f"the provider answered HTTP 200 with {what} (content-type {content_type or 'none'}){shown}"
        return bounded(self._scrub(message), ERROR_TEXT_BYTES)

    def _cause(self, exc: BaseException) -> str:
        cause = exc.__cause__ or exc.__context__ or exc
        text = str(cause) or str(exc)
        return bounded(self._scrub(f"{type(cause).__name__}: {text}" if text else type(cause).__name__), 300)

    def _scrub(self, text: str) -> str:
        """Never let the API key (or any credential a gateway echoes back) into an error message.

        The client's current key is registered first (a key from a provider function may have been refreshed),
        so the adapter is safe even where no composition root registered it.
        """
        register_secret(getattr(self._client, "api_key", None))
        return redact(text)

    # --- Small helpers

    def _remember(self, mode: OutputMode) -> None:
        """Keep the mode that answered after a fallback, for every later call of this cold start."""
        with self._lock:
            if OUTPUT_MODES.index(mode) > OUTPUT_MODES.index(self._mode):
                self._mode = mode

    def _elapsed_ms(self, started: float) -> int:
        return max(0, int((self._clock() - started) * 1000))


def _rejects_output_mode(text: str) -> bool:
    """Whether an error refuses response_format, rather than the image: it names the parameter, or says
    something is not supported without mentioning the image."""
    if _RESPONSE_FORMAT_WORDS.search(text):
        return True
    return bool(_NOT_SUPPORTED_WORDS.search(text)) and "image" not in text.lower()


def _error_text(exc: openai.APIStatusError) -> str:
    """The error's message and (the start of) its body, to look for words in."""
    try:
        body = exc.response.text[:4000]
    except Exception:  # a body that was never read, or cannot be decoded
        body = ""
    return f"{exc.message} {body}"


def _request_size(exc: openai.APIStatusError) -> str:
    try:
        request = exc.response.request
        size = int(request.headers.get("content-length") or len(request.content))
    except Exception:
        return "unknown size"
    return f"{size:,} bytes"


def _content_type(response: httpx2.Response) -> str:
    return str(response.headers.get("content-type") or "")


def _snippet(text: str) -> str:
    return storable(" ".join(text[: BODY_SNIPPET_CHARS * 2].split()))[:BODY_SNIPPET_CHARS]


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


__all__ = [
    "MIN_ATTEMPT_SECONDS",
    "OpenAIVisionModel",
    "is_repetitive",
    "parse_completion_body",
    "retry_after_seconds",
]
