"""The model adapter, through the real openai client, against the scriptable loopback server.

Every server behaviour here ends in a ModelAnswer or in one of the domain's errors, never in anything else.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from devkit.model_server import (
    DEFAULT_ANSWER,
    ChatRequest,
    ModelServer,
    Reply,
    completion,
    completion_chunk,
    default_reply,
    error_reply,
    response_format_gate,
    sse_body,
    sse_event,
    stream_reply,
)
from sightline.adapters.model import (
    BACKOFF_BASE_SECONDS,
    MIN_ATTEMPT_SECONDS,
    REPETITION_CHECK_EVERY,
    REPETITION_FINISH_REASON,
    REPETITION_WINDOW,
    OpenAIVisionModel,
)
from sightline.errors import (
    ConfigurationError,
    ModelRefusedError,
    ModelRejectedImageError,
    ModelUnavailableError,
    ProviderResponseError,
    RequestTooLargeError,
    SightlineError,
)
from sightline.ports import ModelAnswer, ModelRequest, ModelUsage

pytestmark = pytest.mark.integration

API_KEY = "test-key-5f3a9c"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"description": {"type": "string"}},
    "required": ["description"],
    "additionalProperties": False,
}
PLAIN = ModelRequest(messages=[{"role": "user", "content": "Describe the image."}])
STRUCTURED = ModelRequest(messages=[{"role": "user", "content": "Describe the image as JSON."}], json_schema=SCHEMA)
JSON = {"Content-Type": "application/json"}

Adapter = Callable[..., OpenAIVisionModel]


@pytest.fixture
def client(model: ModelServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=model.base_url, api_key=API_KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the adapter asked for; nothing really sleeps, so retries cost no test time."""
    return []


@pytest.fixture
def adapter(client: openai.OpenAI, sleeps: list[float]) -> Adapter:
    def make(**options: Any) -> OpenAIVisionModel:
        settings: dict[str, Any] = {
            "max_output_tokens": 300,
            "timeout_seconds": 5.0,
            "max_attempts": 1,
            "sleep": sleeps.append,
        } | options
        return OpenAIVisionModel(client, "vision-test", **settings)

    return make


def ask(
    vision: OpenAIVisionModel, request: ModelRequest = PLAIN, deadline: float | None = None
) -> tuple[ModelAnswer, ModelUsage]:
    usage = ModelUsage()
    return vision.complete(request, deadline, usage), usage


def fails(
    vision: OpenAIVisionModel, error: type[Exception], request: ModelRequest = PLAIN, deadline: float | None = None
) -> tuple[Exception, ModelUsage]:
    usage = ModelUsage()
    with pytest.raises(error) as caught:
        vision.complete(request, deadline, usage)
    return caught.value, usage


def answer(content: str = "A red bicycle.", **kwargs: Any) -> Reply:
    options: dict[str, Any] = {"model": "m", "prompt_tokens": 812, "completion_tokens": 64} | kwargs
    return Reply(body=completion(content, **options))


def body_with(**message: Any) -> dict[str, Any]:
    body = completion("", model="m", prompt_tokens=10, completion_tokens=5)
    body["choices"][0]["message"] = {"role": "assistant"} | message
    return body


# --- 1. Reading the answer from every shape a 200 comes in


def test_a_normal_completion_is_read_with_its_usage_and_sent_with_temperature_zero(
    model: ModelServer, adapter: Adapter
) -> None:
    # GIVEN a provider that answers normally
    model.responder.push(answer("A red bicycle."))

    # WHEN we ask without a schema
    result, usage = ask(adapter(max_output_tokens=123))

    # THEN the answer, its usage and what was sent are as configured
    assert (result.content, result.finish_reason) == ("A red bicycle.", "stop")
    assert (result.prompt_tokens, result.completion_tokens) == (812, 64)
    assert (result.output_mode, result.streamed, result.refusal, result.tool_arguments) == ("off", False, None, ())
    assert (usage.model_calls, usage.prompt_tokens, usage.completion_tokens, usage.usage_reported) == (1, 812, 64, True)
    [sent] = model.chat_requests
    assert (sent.model, sent.body["max_tokens"], sent.body["temperature"]) == ("vision-test", 123, 0)
    assert sent.response_format is None and "stream" not in sent.body


def test_the_requests_model_and_token_limit_override_the_configured_ones(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a request that names its own model and output limit
    request = ModelRequest(messages=PLAIN.messages, model_id="other-model", max_output_tokens=42)

    # WHEN it is sent
    ask(adapter(), request)

    # THEN those are what the provider sees
    [sent] = model.chat_requests
    assert (sent.model, sent.body["max_tokens"]) == ("other-model", 42)


def test_content_sent_as_a_list_of_parts_is_joined(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN content as text parts (and a part that is not text)
    parts = [{"type": "text", "text": '{"description": '}, {"type": "image_url"}, {"type": "text", "text": '"x"}'}]
    model.responder.push(Reply(body=body_with(content=parts)))

    # WHEN it is read
    result, _ = ask(adapter())

    # THEN the texts are joined in order
    assert result.content == '{"description": "x"}'


def test_a_refusal_field_is_returned_as_the_refusal(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a structured refusal instead of content
    model.responder.push(Reply(body=body_with(content=None, refusal="I can't help with that.")))

    # WHEN it is read
    result, usage = ask(adapter())

    # THEN the caller gets the refusal (and the call is counted)
    assert (result.content, result.refusal) == ("", "I can't help with that.")
    assert usage.model_calls == 1


def test_tool_call_and_legacy_function_call_arguments_are_returned(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a model that answered through tools, and one through the legacy function_call
    tool_calls = [{"id": "c1", "type": "function", "function": {"name": "describe", "arguments": '{"a": 1}'}}]
    model.responder.push(
        Reply(body=body_with(content=None, tool_calls=tool_calls)),
        Reply(body=body_with(content=None, function_call={"name": "describe", "arguments": '{"b": 2}'})),
    )
    vision = adapter()

    # WHEN both are read
    first, _ = ask(vision)
    second, _ = ask(vision)

    # THEN their arguments come back
    assert first.tool_arguments == ('{"a": 1}',)
    assert second.tool_arguments == ('{"b": 2}',)


def test_a_chunk_shaped_body_is_read_as_a_completion(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a gateway that answers a non-streaming call with one chat.completion.chunk
    chunk = completion_chunk("A cat.", finish_reason="stop", usage=(30, 4))
    model.responder.push(Reply(body=chunk))

    # WHEN it is read
    result, usage = ask(adapter())

    # THEN the delta is the answer
    assert (result.content, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        "A cat.",
        "stop",
        30,
        4,
    )
    assert usage.model_calls == 1


@pytest.mark.parametrize("content_type", ["text/event-stream", "application/octet-stream"])
def test_an_sse_body_to_a_non_streaming_request_is_assembled_with_the_last_usage(
    model: ModelServer, adapter: Adapter, content_type: str
) -> None:
    # GIVEN a streaming-only proxy that streams although we did not ask (labelled or not)
    events = [
        completion_chunk("", role="assistant"),
        completion_chunk("A red "),
        completion_chunk("bicycle."),
        completion_chunk(finish_reason="stop"),
        completion_chunk(usage=(11, 3), choices=False),
    ]
    model.responder.push(Reply(body=b": keep-alive\n\n" + sse_body(events), headers={"Content-Type": content_type}))

    # WHEN it is read
    result, usage = ask(adapter())

    # THEN the deltas are assembled and the usage comes from the last chunk that has it
    assert (result.content, result.finish_reason, result.streamed) == ("A red bicycle.", "stop", False)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.usage_reported) == (11, 3, True)


@pytest.mark.parametrize(
    "usage_field",
    [None, {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}, {"prompt_tokens": "many"}],
    ids=["missing", "nulls", "not-a-number"],
)
def test_missing_or_null_usage_gives_no_token_counts_and_says_so(
    model: ModelServer, adapter: Adapter, usage_field: dict[str, Any] | None
) -> None:
    # GIVEN an answer whose usage is missing or unusable
    body = completion("A cat.", model="m", prompt_tokens=1, completion_tokens=1)
    if usage_field is None:
        del body["usage"]
    else:
        body["usage"] = usage_field
    model.responder.push(Reply(body=body))

    # WHEN it is read
    result, usage = ask(adapter())

    # THEN the answer stands, the tokens are unknown, and the usage says it was not reported
    assert result.content == "A cat."
    assert (result.prompt_tokens, result.completion_tokens) == (None, None)
    assert (usage.model_calls, usage.usage_reported) == (1, False)


BAD_BODIES: dict[str, tuple[Reply, str]] = {
    "html-page": (
        Reply(
            body=b"<!DOCTYPE html><html><body>Welcome to nginx!</body></html>", headers={"Content-Type": "text/html"}
        ),
        "HTML page",
    ),
    "json-null": (Reply(body=b"null", headers=JSON), "JSON null"),
    "error-object": (
        Reply(body={"error": {"message": "upstream overloaded", "type": "server_error"}}),
        "upstream overloaded",
    ),
    "empty-body": (Reply(body=None), "empty body"),
    "truncated-json": (Reply(body=b'{"id": "chatcmpl-1", "choices": [{"mess', headers=JSON), "malformed JSON"),
    "json-list": (Reply(body=[completion("x", model="m", prompt_tokens=1, completion_tokens=1)]), "JSON list"),
    "no-choices": (Reply(body={"id": "chatcmpl-1", "object": "chat.completion", "choices": []}), "without choices"),
    "choice-without-message": (Reply(body={"choices": [{"index": 0, "finish_reason": "stop"}]}), "without a message"),
    "content-a-number": (Reply(body=body_with(content=42)), "message content"),
    "deeply-nested-json": (Reply(body=b"[" * 200_000 + b"]" * 200_000, headers=JSON), "nested too deeply"),
    "over-8-mb": (Reply(body=b'{"pad": "' + b"x" * (9 * 1024 * 1024) + b'"}', headers=JSON), "above the"),
    "sse-ending-mid-answer": (
        Reply(body=sse_body([completion_chunk("A red")], done=False), headers={"Content-Type": "text/event-stream"}),
        "mid-answer",
    ),
    "not-utf8": (Reply(body=b"\xff\xfe\x00garbage\x80", headers=JSON), "malformed JSON"),
}


@pytest.mark.parametrize("case", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_200_that_is_not_a_completion_is_the_providers_fault_and_is_counted(
    model: ModelServer, adapter: Adapter, case: tuple[Reply, str]
) -> None:
    # GIVEN a 200 whose body is not a chat completion
    reply, what = case
    model.responder.push(reply)

    # WHEN it is read
    error, usage = fails(adapter(), ProviderResponseError)

    # THEN it is a transient provider error saying what came back, and the call is counted as maybe billed
    assert what in error.message
    assert "content-type" in error.message
    assert len(error.message.encode()) <= 500
    assert (usage.model_calls, usage.usage_reported) == (1, False)


def test_an_html_200_is_retried_like_a_5xx_and_every_attempt_is_counted(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a wrong base URL that answers every call with a web page
    page = Reply(body=b"<html><title>Sign in</title></html>", headers={"Content-Type": "text/html; charset=utf-8"})
    model.responder.default = page

    # WHEN we ask with three attempts
    error, usage = fails(adapter(max_attempts=3), ProviderResponseError)

    # THEN all three were made and counted, and the error shows the page
    assert len(model.chat_requests) == 3 and usage.model_calls == 3
    assert "text/html" in error.message and "<html><title>Sign in" in error.message
    assert "after 3 attempts" in error.message


def test_a_bad_200_then_a_good_one_returns_the_answer(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN one broken body, then a completion
    model.responder.push(Reply(body=b"null", headers=JSON), answer("A cat."))

    # WHEN we ask with two attempts
    result, usage = ask(adapter(max_attempts=2))

    # THEN the second answer is returned and both calls are counted
    assert result.content == "A cat."
    assert usage.model_calls == 2 and not usage.usage_reported


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (200, ProviderResponseError),
        (400, ModelRejectedImageError),
        (401, ConfigurationError),
        (502, ModelUnavailableError),
    ],
)
def test_a_page_that_echoes_the_authorization_header_does_not_leak_the_key(
    model: ModelServer, adapter: Adapter, status: int, error_type: type[SightlineError]
) -> None:
    # GIVEN a gateway page that echoes the request's headers back, far enough in for a cut to fall in the key
    def echo(request: ChatRequest) -> Reply:
        text = f"<html><pre>{'.' * 190}Authorization: {request.headers['authorization']}\nkey={API_KEY}</pre></html>"
        return Reply(status=status, body=text.encode(), headers={"Content-Type": "text/html"})

    model.responder.push(echo)

    # WHEN it is read
    error, _ = fails(adapter(), error_type)

    # THEN no part of the key appears in the error
    assert API_KEY[:6] not in error.message
    assert "[redacted]" in error.message or "Authorization" not in error.message


HOSTILE_REPLIES = [
    Reply(body={"choices": "many"}),
    Reply(body={"choices": [None]}),
    Reply(body={"choices": [{"message": "text"}]}),
    Reply(body={"choices": [{"message": {"content": 5}}]}),
    Reply(body={"choices": [{"message": {"content": [{"type": "text", "text": {"value": "x"}}]}}]}),
    Reply(body={"choices": [{"message": {"content": "x", "tool_calls": [None, {"function": 3}]}}]}),
    Reply(body={"choices": [{"message": {"content": "x"}, "finish_reason": 7}], "usage": [1, 2]}),
    Reply(body={"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1e300}}),
    Reply(body={"choices": [{"delta": None}], "object": "chat.completion.chunk"}),
    Reply(body=b'{"choices": [{"message": {"content": "\\ud800"}}]}', headers=JSON),
    Reply(body=b"data: {not json}\n\ndata: [DONE]\n\n", headers={"Content-Type": "text/event-stream"}),
    Reply(body=b"data: [1, 2]\n\n", headers={"Content-Type": "text/event-stream"}),
    Reply(body=b"data: [DONE]\n\n", headers={"Content-Type": "text/event-stream"}),
    Reply(body=b'data: {"error": {"message": "overloaded"}}\n\n', headers={"Content-Type": "text/event-stream"}),
    Reply(body=b'{"a": ' + b"1" * 5000 + b"}", headers=JSON),  # an int too long for Python to parse
    Reply(status=200, body="plain text, not JSON"),
    Reply(status=204),
    Reply(status=418, body="I'm a teapot"),
    Reply(status=451, body={"error": "unavailable for legal reasons"}),
    Reply(drop_connection=True),
]


@pytest.mark.parametrize("reply", HOSTILE_REPLIES, ids=lambda reply: repr(reply.body)[:40])
def test_nothing_but_a_domain_error_or_an_answer_comes_out_of_any_server_behaviour(
    model: ModelServer, adapter: Adapter, reply: Reply
) -> None:
    # GIVEN a server that answers strangely
    model.responder.push(reply)
    usage = ModelUsage()

    # WHEN we ask
    try:
        result: ModelAnswer | SightlineError = adapter().complete(PLAIN, None, usage)
    except SightlineError as error:
        result = error

    # THEN we get an answer or a domain error (anything else would have escaped the try above)
    assert isinstance(result, ModelAnswer | SightlineError)
    if isinstance(result, SightlineError):
        assert len(result.message.encode()) <= 500


# --- 2. Status classes


@pytest.mark.parametrize(
    ("status", "said"),
    [(401, "key or permissions"), (402, "out of balance or credit"), (403, "key or permissions"), (404, "not found")],
)
def test_auth_billing_and_not_found_statuses_are_configuration_errors_without_retry(
    model: ModelServer, adapter: Adapter, status: int, said: str
) -> None:
    # GIVEN an endpoint that refuses our configuration
    model.responder.push(
        error_reply(status, "Insufficient balance" if status == 402 else "nope", "invalid_request_error")
    )

    # WHEN we ask with three attempts
    error, usage = fails(adapter(max_attempts=3), ConfigurationError)

    # THEN it is our configuration's fault, said once, not retried and not counted as billed
    assert said in error.message and f"HTTP {status}" in error.message
    assert len(model.chat_requests) == 1 and usage.model_calls == 0


@pytest.mark.parametrize("status", [400, 422])
def test_a_400_or_422_is_the_images_fault_and_not_retried(model: ModelServer, adapter: Adapter, status: int) -> None:
    # GIVEN a model that rejects the image
    model.responder.push(error_reply(status, "Invalid image data", "invalid_request_error", code="invalid_image"))

    # WHEN we ask
    error, _ = fails(adapter(max_attempts=3), ModelRejectedImageError)

    # THEN it is permanent, with the provider's words
    assert "Invalid image data" in error.message
    assert len(model.chat_requests) == 1


def test_a_content_policy_400_is_a_refusal(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a provider whose filter refuses the request itself
    model.responder.push(error_reply(400, "The response was filtered", "invalid_request_error", code="content_filter"))

    # WHEN we ask
    error, _ = fails(adapter(), ModelRefusedError)

    # THEN it is a permanent refusal
    assert "content filter" in error.message


def test_a_413_is_a_permanent_request_too_large_error_naming_the_size(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a gateway with a small body limit, answering with its own HTML page
    page = b"<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>"
    model.responder.push(Reply(status=413, body=page, headers={"Content-Type": "text/html"}))

    # WHEN we ask with three attempts
    error, usage = fails(adapter(max_attempts=3), RequestTooLargeError)

    # THEN one request was made, and the message names its size and what to change
    [sent] = model.chat_requests
    size = len(json.dumps(sent.body, separators=(",", ":")))
    assert "bytes" in error.message and "IMAGE_DETAIL" in error.message and "gateway" in error.message
    assert any(f"{n:,} bytes" in error.message for n in range(size - 50, size + 50))
    assert usage.model_calls == 0


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_within_max_attempts_then_unavailable(
    model: ModelServer, adapter: Adapter, sleeps: list[float], status: int
) -> None:
    # GIVEN an endpoint that keeps failing with a transient status
    model.responder.default = error_reply(status, "try again later", "server_error")

    # WHEN we ask with three attempts
    error, usage = fails(adapter(max_attempts=3), ModelUnavailableError)

    # THEN three requests were made, with full-jitter backoff between them, and none was billed
    assert len(model.chat_requests) == 3
    assert len(sleeps) == 2 and all(0 <= wait <= BACKOFF_BASE_SECONDS * 2 for wait in sleeps)
    assert f"HTTP {status}" in error.message and "after 3 attempts" in error.message
    assert usage.model_calls == 0


def test_a_503_then_an_answer_returns_the_answer(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN one overloaded reply, then an answer
    model.responder.push(error_reply(503, "overloaded", "server_error"), answer("A cat."))

    # WHEN we ask with two attempts
    result, usage = ask(adapter(max_attempts=2))

    # THEN the answer comes back and only the answered call is counted
    assert result.content == "A cat." and usage.model_calls == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"retry-after-ms": "soon", "Retry-After": "3"}, 3.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "@@garbage@@"}, None),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # a date in the past
        ({"Retry-After": "Mon, 99 Foo 2015 99:99:99 GMT"}, None),
    ],
    ids=lambda value: str(value)[:40],
)
def test_retry_after_is_honoured_and_a_malformed_one_falls_back_to_backoff(
    model: ModelServer, adapter: Adapter, sleeps: list[float], headers: dict[str, str], expected: float | None
) -> None:
    # GIVEN a 429 with this Retry-After, then an answer
    model.responder.push(error_reply(429, "Rate limit reached", "rate_limit_error", headers), answer())

    # WHEN we ask with two attempts
    result, _ = ask(adapter(max_attempts=2))

    # THEN it never raised: the wait is the header's, or the backoff when the header is unusable
    assert result.content == "A red bicycle."
    [wait] = sleeps
    if expected is None:
        assert 0 <= wait <= BACKOFF_BASE_SECONDS
    else:
        assert wait == pytest.approx(expected)


def test_retry_after_as_a_future_http_date_is_waited_for(
    model: ModelServer, adapter: Adapter, sleeps: list[float]
) -> None:
    # GIVEN a 503 asking us to come back at a date 30 s from now
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    model.responder.push(error_reply(503, "maintenance", "server_error", {"Retry-After": date}), answer())

    # WHEN we ask with two attempts and no deadline
    ask(adapter(max_attempts=2))

    # THEN the wait is about those 30 s
    [wait] = sleeps
    assert 27 <= wait <= 31


def test_a_timeout_is_retried_then_unavailable(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a model slower than our per-attempt timeout
    model.responder.default = Reply(
        delay_seconds=3, body=completion("late", model="m", prompt_tokens=1, completion_tokens=1)
    )

    # WHEN we ask with two attempts of 0.3 s
    started = time.monotonic()
    error, usage = fails(adapter(max_attempts=2, timeout_seconds=0.3), ModelUnavailableError)

    # THEN both timed out quickly and nothing was counted
    assert "timed out" in error.message
    assert time.monotonic() - started < 2
    assert len(model.chat_requests) == 2 and usage.model_calls == 0


def test_a_dropped_connection_is_unavailable(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a server that hangs up
    model.responder.push(Reply(drop_connection=True))

    # WHEN we ask
    error, _ = fails(adapter(), ModelUnavailableError)

    # THEN it is a transient connection failure
    assert "connection failed" in error.message


def test_an_unexpected_openai_error_is_unavailable(model: ModelServer) -> None:
    # GIVEN a client whose key provider fails inside the SDK
    def broken_key() -> str:
        raise openai.OpenAIError("the key provider failed")

    client = openai.OpenAI(base_url=model.base_url, api_key=broken_key, max_retries=0)
    vision = OpenAIVisionModel(client, "m", max_output_tokens=10, timeout_seconds=5, max_attempts=1)

    # WHEN we ask
    error, _ = fails(vision, ModelUnavailableError)

    # THEN it is a transient model error, not an OpenAIError
    assert "OpenAIError" in error.message
    client.close()


def test_a_content_filter_finish_is_a_refusal_and_is_counted(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN an answer the provider's filter stopped
    model.responder.push(answer("", finish_reason="content_filter"))

    # WHEN it is read
    error, usage = fails(adapter(max_attempts=3), ModelRefusedError)

    # THEN it is a permanent refusal, said clearly, after the call was counted
    assert "content filter" in error.message
    assert len(model.chat_requests) == 1 and usage.model_calls == 1


# --- 3. Structured output


def test_json_schema_mode_sends_a_strict_schema(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN the default output mode (auto) and a request with a schema
    vision = adapter()

    # WHEN it is sent
    result, _ = ask(vision, STRUCTURED)

    # THEN the strict schema went out under its name, and the answer says which mode answered
    [sent] = model.chat_requests
    assert sent.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "strict": True, "schema": SCHEMA},
    }
    assert result.output_mode == "json_schema" and vision.output_mode == "json_schema"


@pytest.mark.parametrize(("mode", "sent_format"), [("json_object", {"type": "json_object"}), ("off", None)])
def test_json_object_and_off_modes_send_what_they_say(
    model: ModelServer, adapter: Adapter, mode: str, sent_format: dict[str, Any] | None
) -> None:
    # GIVEN an explicit output mode
    vision = adapter(output_mode=mode)

    # WHEN a request with a schema is sent
    result, _ = ask(vision, STRUCTURED)

    # THEN the response_format matches the mode
    [sent] = model.chat_requests
    assert sent.response_format == sent_format
    assert result.output_mode == mode


def test_auto_falls_back_to_json_object_when_json_schema_is_rejected_and_remembers_it(
    model: ModelServer, adapter: Adapter
) -> None:
    # GIVEN a provider without json_schema support
    model.responder.default = response_format_gate("json_schema")
    vision = adapter(max_attempts=1)

    # WHEN two calls are made
    first, first_usage = ask(vision, STRUCTURED)
    second, _ = ask(vision, STRUCTURED)

    # THEN the first resent at once with json_object (not an attempt, not billed), and the second started there
    assert [r.response_format_type for r in model.chat_requests] == ["json_schema", "json_object", "json_object"]
    assert first.output_mode == second.output_mode == vision.output_mode == "json_object"
    assert first_usage.model_calls == 1
    assert json.loads(first.content) == DEFAULT_ANSWER


def test_auto_falls_back_to_no_response_format_when_neither_is_supported(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a provider that knows no response_format at all (answering 422)
    model.responder.default = response_format_gate(
        "json_schema", "json_object", status=422, message="Unsupported parameter: response_format"
    )
    vision = adapter()

    # WHEN two calls are made
    first, _ = ask(vision, STRUCTURED)
    ask(vision, STRUCTURED)

    # THEN the prompt alone carries the shape from then on
    assert [r.response_format_type for r in model.chat_requests] == ["json_schema", "json_object", "off", "off"]
    assert first.output_mode == vision.output_mode == "off"


@pytest.mark.parametrize("status", [404, 501])
def test_auto_also_falls_back_on_a_404_or_501_that_names_response_format(
    model: ModelServer, adapter: Adapter, status: int
) -> None:
    # GIVEN a gateway that routes structured output to no endpoint
    model.responder.push(error_reply(status, "No endpoints found that support response_format json_schema", "x"))

    # WHEN we ask
    result, _ = ask(adapter(), STRUCTURED)

    # THEN json_object answered
    assert result.output_mode == "json_object"


def test_a_404_that_does_not_name_response_format_stays_a_configuration_error(
    model: ModelServer, adapter: Adapter
) -> None:
    # GIVEN an unknown model (404) under auto
    model.responder.push(error_reply(404, "The model `vision-test` does not exist", "invalid_request_error"))

    # WHEN we ask
    fails(adapter(), ConfigurationError, STRUCTURED)

    # THEN nothing was resent
    assert len(model.chat_requests) == 1


@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
def test_an_explicit_output_mode_that_is_rejected_is_a_configuration_error(
    model: ModelServer, adapter: Adapter, mode: str
) -> None:
    # GIVEN an operator who asked for a mode the provider does not support
    model.responder.default = response_format_gate(mode)

    # WHEN we ask
    error, _ = fails(adapter(output_mode=mode, max_attempts=3), ConfigurationError, STRUCTURED)

    # THEN it is our configuration's fault, never the image's, and there was no fallback
    assert f"MODEL_OUTPUT_MODE={mode}" in error.message
    assert len(model.chat_requests) == 1


def test_a_400_that_does_not_mention_response_format_stays_the_images_fault(
    model: ModelServer, adapter: Adapter
) -> None:
    # GIVEN a rejected image under auto
    model.responder.push(error_reply(400, "Image format not supported", "invalid_request_error"))
    vision = adapter()

    # WHEN we ask
    fails(vision, ModelRejectedImageError, STRUCTURED)

    # THEN nothing was resent and the mode is unchanged
    assert len(model.chat_requests) == 1 and vision.output_mode == "json_schema"


def test_a_fallback_that_ends_in_a_rejected_image_is_not_remembered(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN json_schema refused, then the image rejected in json_object mode
    model.responder.push(
        error_reply(400, "response_format json_schema is not supported", "invalid_request_error"),
        error_reply(400, "Invalid image data", "invalid_request_error"),
    )
    vision = adapter()

    # WHEN we ask
    fails(vision, ModelRejectedImageError, STRUCTURED)

    # THEN no mode was learnt from a call that never worked
    assert vision.output_mode == "json_schema"


def test_concurrent_calls_share_the_remembered_mode_safely(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a provider without json_schema and one adapter used by eight threads
    model.responder.default = response_format_gate("json_schema")
    vision = adapter()

    # WHEN they all ask at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: ask(vision, STRUCTURED)[0], range(8)))

    # THEN every one answered with json_object, and the adapter kept it
    assert {r.output_mode for r in results} == {"json_object"}
    assert vision.output_mode == "json_object"


def test_without_a_schema_no_response_format_is_sent_whatever_the_mode(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN an explicit json_schema mode
    vision = adapter(output_mode="json_schema")

    # WHEN a request without a schema is sent (a repair call, say)
    result, _ = ask(vision, PLAIN)

    # THEN no response_format went out
    assert model.chat_requests[0].response_format is None and result.output_mode == "off"


# --- 4. Streaming


def test_streaming_assembles_the_answer_and_reads_usage_from_the_final_chunk(
    model: ModelServer, adapter: Adapter
) -> None:
    # GIVEN the default responder, which streams when asked
    vision = adapter(stream=True)

    # WHEN we ask with a schema
    result, usage = ask(vision, STRUCTURED)

    # THEN the pieces make the whole answer, the usage chunk was asked for and read, and it says it streamed
    [sent] = model.chat_requests
    assert sent.stream and sent.include_usage and sent.response_format_type == "json_schema"
    assert json.loads(result.content) == DEFAULT_ANSWER
    assert (result.finish_reason, result.streamed, result.output_mode) == ("stop", True, "json_schema")
    assert result.prompt_tokens is not None and result.prompt_tokens > 0
    assert (usage.model_calls, usage.usage_reported, usage.prompt_tokens) == (1, True, result.prompt_tokens)


def test_streamed_refusals_and_tool_call_arguments_are_assembled_by_index(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a stream with refusal deltas and two tool calls whose arguments arrive interleaved
    def call(index: int, arguments: str) -> dict[str, Any]:
        return {"index": index, "function": {"arguments": arguments}}

    events = [
        completion_chunk(refusal="I can't "),
        completion_chunk(refusal="do that."),
        completion_chunk(tool_calls=[call(0, '{"a":')]),
        completion_chunk(tool_calls=[call(1, '{"b":')]),
        completion_chunk(tool_calls=[call(0, " 1}"), call(1, " 2}")]),
        completion_chunk(finish_reason="tool_calls"),
    ]
    model.responder.push(Reply(chunks=[(0.0, sse_event(e)) for e in events] + [(0.0, sse_event("[DONE]"))]))

    # WHEN it is read
    result, _ = ask(adapter(stream=True))

    # THEN each is whole
    assert result.refusal == "I can't do that."
    assert result.tool_arguments == ('{"a": 1}', '{"b": 2}')
    assert result.finish_reason == "tool_calls"


def test_a_provider_that_rejects_stream_options_is_asked_again_without_them(
    model: ModelServer, adapter: Adapter
) -> None:
    # GIVEN a provider that knows no stream_options
    def strict(request: ChatRequest) -> Reply:
        if "stream_options" in request.body:
            return error_reply(400, "Unrecognized request argument supplied: stream_options", "invalid_request_error")
        return default_reply(request)

    model.responder.default = strict
    vision = adapter(stream=True)

    # WHEN two calls are made
    result, usage = ask(vision)
    ask(vision)

    # THEN the first was resent at once without them, the second never sent them, and usage is unknown
    assert ["stream_options" in r.body for r in model.chat_requests] == [True, False, False]
    assert json.loads(result.content) == DEFAULT_ANSWER
    assert (usage.model_calls, usage.usage_reported) == (1, False)


def test_a_stalled_stream_is_abandoned_after_stall_seconds_and_retried(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a stream that goes quiet for 30 s after two pieces, then a good stream
    model.responder.push(stream_reply(["{", '"description"', ": "], stall_after=2, stall_seconds=30))

    # WHEN we ask with a 1 s stall guard, a 20 s timeout and two attempts
    started = time.monotonic()
    result, usage = ask(adapter(stream=True, stall_seconds=1.0, timeout_seconds=20, max_attempts=2))

    # THEN the stall ended the first attempt in about a second, and the retry answered
    assert time.monotonic() - started < 5
    assert json.loads(result.content) == DEFAULT_ANSWER
    assert usage.model_calls == 2  # the stalled 200 may be billed too


def test_a_stream_that_stalls_on_every_attempt_is_unavailable(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a provider whose stream always stalls
    model.responder.default = stream_reply(["{"] * 3, stall_after=1, stall_seconds=30)

    # WHEN we ask with one attempt
    started = time.monotonic()
    error, usage = fails(adapter(stream=True, stall_seconds=1.0, timeout_seconds=20), ModelUnavailableError)

    # THEN it was abandoned in about stall_seconds
    assert time.monotonic() - started < 5
    assert "stalled" in error.message
    assert (usage.model_calls, usage.usage_reported) == (1, False)


def test_a_runaway_repetitive_stream_is_cut_off_early(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a model that would repeat one phrase for about 16 s (4,000 pieces, 4 ms apart)
    model.responder.push(stream_reply(["The cat sat on the mat. "] * 4000, delay_between=0.004))

    # WHEN we stream it
    started = time.monotonic()
    result, usage = ask(adapter(stream=True, timeout_seconds=30))
    elapsed = time.monotonic() - started

    # THEN the answer came back as repetitive long before the model would have finished
    assert result.finish_reason == REPETITION_FINISH_REASON and result.streamed
    assert elapsed < 3
    assert REPETITION_WINDOW <= len(result.content) < REPETITION_WINDOW + 2 * REPETITION_CHECK_EVERY
    assert (usage.model_calls, usage.usage_reported) == (1, False)


def test_a_long_answer_that_does_not_repeat_is_not_cut_off(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a long answer made of different sentences
    pieces = [f"Item {n} is a {['red', 'green', 'blue'][n % 3]} thing number {n * 7}. " for n in range(300)]
    model.responder.push(stream_reply(pieces))

    # WHEN we stream it
    result, _ = ask(adapter(stream=True))

    # THEN it is whole
    assert result.content == "".join(pieces) and result.finish_reason == "stop"


def test_a_stream_that_ends_mid_answer_is_the_providers_fault(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a stream whose body ends cleanly but without a finish_reason or [DONE]
    model.responder.push(stream_reply(["A red ", "bicy"], finish_reason=None, usage=None, done=False))

    # WHEN we stream it
    error, usage = fails(adapter(stream=True), ProviderResponseError)

    # THEN it is a transient provider error, and the call is counted
    assert "mid-answer" in error.message
    assert usage.model_calls == 1


def test_a_stream_that_breaks_off_is_unavailable(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a stream whose connection drops mid-answer
    model.responder.push(
        stream_reply(["A red ", "bicy"], finish_reason=None, usage=None, done=False, drop_connection=True)
    )

    # WHEN we stream it
    error, usage = fails(adapter(stream=True), ModelUnavailableError)

    # THEN it is a transient failure, counted as maybe billed
    assert "broke off" in error.message
    assert usage.model_calls == 1


def test_an_error_event_in_the_stream_is_the_providers_fault(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a stream that carries an error event after a piece
    chunks = [(0.0, sse_event(completion_chunk("A "))), (0.0, sse_event({"error": {"message": "overloaded"}}))]
    model.responder.push(Reply(chunks=chunks))

    # WHEN we stream it
    error, _ = fails(adapter(stream=True), ProviderResponseError)

    # THEN the provider's words are in the error
    assert "overloaded" in error.message


def test_a_content_filter_finish_in_a_stream_is_a_refusal(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a stream the provider's filter stopped
    model.responder.push(stream_reply(["A "], finish_reason="content_filter"))

    # WHEN we stream it
    error, usage = fails(adapter(stream=True), ModelRefusedError)

    # THEN it is a permanent refusal, counted
    assert "content filter" in error.message and usage.model_calls == 1


def test_a_stream_request_answered_with_a_whole_completion_is_read(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a provider that ignores stream: true
    model.responder.push(answer("A cat."))

    # WHEN we stream
    result, usage = ask(adapter(stream=True))

    # THEN the completion is read as is
    assert (result.content, result.streamed, usage.prompt_tokens) == ("A cat.", False, 812)


def test_a_complete_stream_without_its_usage_chunk_keeps_the_answer(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a stream that finishes its answer, then stalls instead of sending usage and [DONE]
    reply = stream_reply(["A cat."], usage=None, done=False)
    assert reply.chunks is not None
    reply.chunks.append((30.0, b""))  # silence after the finish_reason
    model.responder.push(reply)

    # WHEN we stream it with a 1 s stall guard
    result, usage = ask(adapter(stream=True, stall_seconds=1.0))

    # THEN the finished answer is kept rather than paid for again
    assert (result.content, result.finish_reason) == ("A cat.", "stop")
    assert (usage.model_calls, usage.usage_reported) == (1, False)


# --- 5. Deadline


def test_no_attempt_starts_with_less_than_the_minimum_time_left(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a deadline closer than MIN_ATTEMPT_SECONDS
    deadline = time.monotonic() + MIN_ATTEMPT_SECONDS / 2

    # WHEN we ask
    error, _ = fails(adapter(), ModelUnavailableError, deadline=deadline)

    # THEN no request was made
    assert "no time left" in error.message
    assert model.chat_requests == []


def test_an_attempts_timeout_is_cut_to_the_time_left(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a model that takes 10 s, a 30 s configured timeout and 2.5 s left
    model.responder.push(
        Reply(delay_seconds=10, body=completion("late", model="m", prompt_tokens=1, completion_tokens=1))
    )
    started = time.monotonic()

    # WHEN we ask with three attempts
    fails(adapter(timeout_seconds=30, max_attempts=3), ModelUnavailableError, deadline=started + 2.5)

    # THEN it gave up at the deadline, after the one attempt that fitted
    assert time.monotonic() - started < 4
    assert len(model.chat_requests) == 1


def test_a_stream_that_keeps_trickling_is_ended_at_the_attempts_time_limit(
    model: ModelServer, adapter: Adapter
) -> None:
    # GIVEN a stream that never stalls (a piece every 0.2 s) but would take 40 s
    pieces = [f"piece {n}; " for n in range(200)]
    model.responder.push(stream_reply(pieces, delay_between=0.2))
    started = time.monotonic()

    # WHEN we stream with a 5 s stall guard and 2.5 s left
    error, usage = fails(
        adapter(stream=True, stall_seconds=5, timeout_seconds=30), ModelUnavailableError, deadline=started + 2.5
    )

    # THEN the deadline, checked between chunks, ended it
    assert time.monotonic() - started < 4
    assert "ran past" in error.message
    assert usage.model_calls == 1


def test_a_wait_that_does_not_fit_the_time_left_is_not_slept(
    model: ModelServer, adapter: Adapter, sleeps: list[float]
) -> None:
    # GIVEN a 429 asking for 30 s with 10 s left
    model.responder.push(error_reply(429, "slow down", "rate_limit_error", {"Retry-After": "30"}))

    # WHEN we ask with three attempts
    error, _ = fails(adapter(max_attempts=3), ModelUnavailableError, deadline=time.monotonic() + 10)

    # THEN it gave up at once
    assert "does not fit" in error.message
    assert sleeps == [] and len(model.chat_requests) == 1


def test_without_a_deadline_an_absurd_retry_after_is_not_slept(
    model: ModelServer, adapter: Adapter, sleeps: list[float]
) -> None:
    # GIVEN a 429 asking for an hour
    model.responder.push(error_reply(429, "slow down", "rate_limit_error", {"Retry-After": "3600"}))

    # WHEN we ask with no deadline
    fails(adapter(max_attempts=3), ModelUnavailableError)

    # THEN it did not wait an hour
    assert sleeps == []


def test_the_loopback_server_stops_streaming_when_the_client_goes_away(model: ModelServer, adapter: Adapter) -> None:
    # GIVEN a runaway stream that the adapter cuts off
    model.responder.push(stream_reply(["ab"] * 20000, delay_between=0.001))
    ask(adapter(stream=True))

    # WHEN a moment passes
    deadline = time.monotonic() + 5
    while model.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)

    # THEN the server's handler noticed and ended (no thread left streaming into the void)
    assert model.in_flight == 0
    assert threading.active_count() < 50
