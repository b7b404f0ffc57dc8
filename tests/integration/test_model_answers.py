"""What real OpenAI-compatible servers answer, through the real handler, moto and the loopback model server.

Each test is one observation from the field (reasoning models, refusals, gateways, streaming-only proxies,
oversized or badly encoded answers) and the outcome it must have: a succeeded record, a failed record with a
specific reason, or a retried item that ends in the DLQ with its reason recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devkit.model_server import Reply, completion, error_reply
from tests.conftest import Deployment
from tests.integration.test_pipeline import answer, deliver, depth, upload
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

GOOD = {
    "description": "A red square in the corner of a gradient.",
    "alt_text": "Red square on a grey gradient",
    "text": "",
    "tags": ["square", "gradient"],
}


def jpeg(seed: int = 0) -> bytes:
    return encode(photo(300 + seed, 200), "JPEG")


def message_for(deployment: Deployment, key: str) -> dict[str, Any]:
    (found,) = [n["message"] for n in deployment.received_notifications() if n["message"]["key"] == key]
    return found


def choice_reply(message: dict[str, Any], finish_reason: str = "stop") -> Reply:
    body = completion("", model="scripted", prompt_tokens=812, completion_tokens=64, finish_reason=finish_reason)
    body["choices"][0]["message"] = {"role": "assistant", **message}
    return Reply(body=body)


# --- Answers the reader must understand without a second paid call


def test_a_reasoning_block_with_a_json_draft_is_not_what_gets_stored(
    deployment: Deployment, function_env, model
) -> None:
    # GIVEN a reasoning model that drafts the schema example inside <think> before the real answer
    content = (
        '<think>The format is {"description": "...", "alt_text": "...", "text": "", "tags": []}. '
        "Let me look at the image.</think>\n" + json.dumps(GOOD)
    )
    model.responder.push(answer(content))
    upload(deployment, "photos/think.jpg", jpeg())
    # WHEN it is delivered
    deliver(deployment)
    # THEN the real answer is stored, with one paid call
    record = deployment.record("photos/think.jpg")
    assert record["status"] == "succeeded" and record["description"] == GOOD["description"]
    assert record["usage"]["model_calls"] == 1


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"altText": "Red square", "Description": "A red square.", "ocr_text": "EXIT", "keywords": ["red"]}),
        json.dumps({"result": GOOD}),
        '{"description": "A red square.", "alt_text": "Red square", "text": "", "tags": ["red",],}',
    ],
    ids=["synonyms-and-case", "result-wrapper", "trailing-commas"],
)
def test_answers_in_near_miss_shapes_cost_no_second_call(
    deployment: Deployment, function_env, model, content: str
) -> None:
    model.responder.push(answer(content))
    upload(deployment, "photos/shape.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/shape.jpg")
    assert record["status"] == "succeeded" and record["usage"]["model_calls"] == 1
    assert len(model.chat_requests) == 1


def test_ocr_text_under_another_key_is_kept(deployment: Deployment, function_env, model) -> None:
    model.responder.push(answer(json.dumps({**GOOD, "text": None, "ocr_text": "EXIT\nOPEN 9-5"})))
    upload(deployment, "photos/ocr.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/ocr.jpg")
    assert record["text"] == "EXIT\nOPEN 9-5" and record["has_text"] is True


def test_the_json_in_tool_calls_is_read_when_content_is_null(deployment: Deployment, function_env, model) -> None:
    tool_call = {"id": "c1", "type": "function", "function": {"name": "describe", "arguments": json.dumps(GOOD)}}
    model.responder.push(choice_reply({"content": None, "tool_calls": [tool_call]}, finish_reason="tool_calls"))
    upload(deployment, "photos/tools.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/tools.jpg")
    assert record["status"] == "succeeded" and record["alt_text"] == GOOD["alt_text"]
    assert len(model.chat_requests) == 1


def test_good_answers_are_not_mangled_by_validation(deployment: Deployment, function_env, model) -> None:
    description = "A U.S. Route 66 sign next to Dr. Smith's diner. The paint is faded. A red car is parked in front."
    model.responder.push(
        answer(
            json.dumps(
                {
                    "description": description,
                    "alt_text": "Photo of the Day banner above a shop door",
                    "text": "NONE",
                    "tags": ["sign", None, {"name": "red"}],
                }
            )
        )
    )
    upload(deployment, "photos/sign.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/sign.jpg")
    assert record["description"] == description
    assert record["alt_text"] == "Photo of the Day banner above a shop door"
    assert record["text"] == "NONE"
    assert record["tags"] == ["sign", "red"]


def test_markup_never_reaches_alt_text_and_its_removal_is_listed(deployment: Deployment, function_env, model) -> None:
    model.responder.push(answer(json.dumps({**GOOD, "alt_text": '"><script>alert(1)</script>A red square'})))
    upload(deployment, "photos/xss.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/xss.jpg")
    assert record["alt_text"] == "A red square"
    assert any("markup" in adjustment for adjustment in record["adjustments"])
    assert "<" not in message_for(deployment, "photos/xss.jpg")["alt_text"]


# --- Refusals and empty answers: failed records with the reason, no repair call


@pytest.mark.parametrize(
    "reply",
    [
        answer("I'm sorry, I can't help with that."),
        answer(json.dumps({**GOOD, "description": "I'm sorry, I can't help with that.", "alt_text": "I'm sorry"})),
        choice_reply({"content": None, "refusal": "I'm sorry, I can't help with that."}),
    ],
    ids=["prose", "inside-json", "refusal-field"],
)
def test_a_refusal_is_a_failed_record_not_alt_text(deployment: Deployment, function_env, model, reply: Reply) -> None:
    model.responder.push(reply)
    upload(deployment, "photos/refused.jpg", jpeg())
    report = deliver(deployment)
    record = deployment.record("photos/refused.jpg")
    assert record["status"] == "failed" and record["error_type"] == "ModelRefused"
    assert "sorry" in record["error_message"].lower() and "alt_text" not in record
    assert len(model.chat_requests) == 1 and record["usage"]["model_calls"] == 1
    assert message_for(deployment, "photos/refused.jpg")["error_type"] == "ModelRefused"
    assert report.failed_items == 0


def test_the_content_filter_is_a_refusal(deployment: Deployment, function_env, model) -> None:
    model.responder.push(answer("", finish_reason="content_filter"))
    upload(deployment, "photos/filtered.jpg", jpeg())
    deliver(deployment)
    assert deployment.record("photos/filtered.jpg")["error_type"] == "ModelRefused"


def test_an_empty_answer_gets_no_repair_call(deployment: Deployment, function_env, model) -> None:
    model.responder.push(answer(""))
    upload(deployment, "photos/empty.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/empty.jpg")
    assert record["status"] == "failed" and record["error_type"] == "EmptyModelAnswer"
    assert len(model.chat_requests) == 1


# --- The provider's faults: retried, then the DLQ with the reason; never the image's fault


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body="<html><body>Welcome to nginx!</body></html>", headers={"Content-Type": "text/html"}),
        Reply(body=b"null", headers={"Content-Type": "application/json"}),
        Reply(body={"error": {"message": "upstream failed", "type": "server_error"}}),
        Reply(body=b"", headers={"Content-Type": "application/json"}),
        Reply(
            body=b'{"id": "x", "choices": [{"message": {"content": "{\\"desc',
            headers={"Content-Type": "application/json"},
        ),
        Reply(body=b"[" * 100_000, headers={"Content-Type": "application/json"}),
    ],
    ids=["html-page", "null", "error-object", "empty-body", "truncated-json", "deeply-nested"],
)
def test_a_200_that_is_not_a_completion_is_retried_never_recorded_against_the_image(
    deployment: Deployment, function_env, model, reply: Reply
) -> None:
    # GIVEN a gateway that always answers 200 with something that is not a chat completion
    model.responder.default = reply
    upload(deployment, "photos/gateway.jpg", jpeg())
    # WHEN the item is delivered until SQS gives up on it
    report = deliver(deployment)
    # THEN it ends in the DLQ with the reason on the record, the claim free, every call counted
    assert report.failed_items == deployment.resources.max_receive_count
    assert depth(deployment, deployment.resources.dlq_url) == 1
    record = deployment.record("photos/gateway.jpg")
    assert record["status"] == "processing" and record["claim_until"] == 0
    assert record["last_error_type"] == "InvalidProviderResponse"
    assert record["attempt_usage"]["model_calls"] == deployment.resources.max_receive_count
    assert deployment.received_notifications() == []


def test_a_chunk_shaped_body_is_read_as_the_answer(deployment: Deployment, function_env, model) -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": json.dumps(GOOD)}, "finish_reason": "stop"}],
    }
    model.responder.push(Reply(body=chunk))
    upload(deployment, "photos/chunk.jpg", jpeg())
    deliver(deployment)
    assert deployment.record("photos/chunk.jpg")["status"] == "succeeded"


def test_a_malformed_retry_after_falls_back_to_backoff(
    deployment: Deployment, function_env, model, monkeypatch
) -> None:
    monkeypatch.setenv("MODEL_MAX_ATTEMPTS", "2")
    model.responder.push(
        error_reply(429, "slow down", "rate_limit_error", {"Retry-After": "soon"}), answer(json.dumps(GOOD))
    )
    upload(deployment, "photos/soon.jpg", jpeg())
    report = deliver(deployment)
    assert report.failed_items == 0 and deployment.record("photos/soon.jpg")["status"] == "succeeded"


def test_out_of_balance_is_a_configuration_error(deployment: Deployment, function_env, model) -> None:
    model.responder.default = error_reply(402, "Insufficient balance", "billing_error")
    upload(deployment, "photos/balance.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/balance.jpg")
    assert record["status"] == "processing" and record["last_error_type"] == "Configuration"


def test_a_413_from_a_gateway_is_not_retried(deployment: Deployment, function_env, model) -> None:
    model.responder.default = error_reply(413, "Request Entity Too Large", "invalid_request_error")
    upload(deployment, "photos/large.jpg", jpeg())
    report = deliver(deployment)
    record = deployment.record("photos/large.jpg")
    assert record["status"] == "failed" and record["error_type"] == "RequestTooLarge"
    assert len(model.chat_requests) == 1 and report.failed_items == 0


# --- Sizes and encodings AWS refuses


def test_an_answer_too_large_for_dynamodb_and_sns_is_stored_and_notified_bounded(
    deployment: Deployment, function_env, model
) -> None:
    huge = {
        "description": "A dense page of small print. " * 20_000,
        "alt_text": "Page of small print",
        "text": "Lorem ipsum dolor sit amet, é ü 漢字 " * 30_000,
        "tags": ["page"],
    }
    model.responder.push(Reply(body=completion(json.dumps(huge), model="m", prompt_tokens=900, completion_tokens=800)))
    upload(deployment, "scans/huge.jpg", jpeg())
    report = deliver(deployment)
    record = deployment.record("scans/huge.jpg")
    assert record["status"] == "succeeded" and record["notified"] is True
    assert record["text_truncated"] is True and len(model.chat_requests) == 1
    message = message_for(deployment, "scans/huge.jpg")
    assert message["text_truncated"] is True
    assert report.failed_items == 0


def test_a_lone_surrogate_in_the_answer_is_stored_and_notified(deployment: Deployment, function_env, model) -> None:
    content = '{"description": "A sign \\ud800 on a wall.", "alt_text": "Sign \\udfff", "text": "A\\ud83d", "tags": []}'
    model.responder.push(answer(content))
    upload(deployment, "photos/surrogate.jpg", jpeg())
    report = deliver(deployment)
    record = deployment.record("photos/surrogate.jpg")
    assert record["status"] == "succeeded" and record["notified"] is True
    assert "\ufffd" in record["description"]
    assert report.failed_items == 0


def test_a_deleted_topic_is_configuration_and_frees_the_notification_claim(
    deployment: Deployment, function_env, model
) -> None:
    # GIVEN the results topic was deleted
    deployment.client("sns").delete_topic(TopicArn=deployment.resources.topic_arn)
    upload(deployment, "photos/no-topic.jpg", jpeg())
    # WHEN the item is delivered until it is dead-lettered
    report = deliver(deployment)
    # THEN the description was paid once and stored; the notification claim is free for the redrive
    record = deployment.record("photos/no-topic.jpg")
    assert record["status"] == "succeeded" and record["notified"] is False and record["notify_until"] == 0
    assert len(model.chat_requests) == 1
    assert report.failed_items == deployment.resources.max_receive_count


def test_ten_twins_failing_permanently_cost_one_call_and_none_reaches_the_dlq(
    deployment: Deployment, function_env, model
) -> None:
    # GIVEN ten keys with identical bytes, and a model that refuses that image (slowly, so they overlap)
    model.responder.default = answer("I'm sorry, I can't help with that.")
    model.responder.delay_seconds = 0.5
    deliver(deployment)  # the s3:TestEvent
    body = jpeg(7)
    for index in range(10):
        upload(deployment, f"twins/{index}.jpg", body)
    # WHEN they arrive together
    report = deliver(deployment)
    # THEN one paid call, ten failed records with the reason, nothing retried or dead-lettered
    assert len(model.chat_requests) == 1
    records = [deployment.record(f"twins/{index}.jpg") for index in range(10)]
    assert {r["status"] for r in records} == {"failed"} and {r["error_type"] for r in records} == {"ModelRefused"}
    assert report.failed_items == 0 and depth(deployment, deployment.resources.dlq_url) == 0


# --- Structured output and streaming


def test_structured_output_is_asked_for_and_recorded(deployment: Deployment, function_env, model) -> None:
    model.responder.push(answer(json.dumps(GOOD)))
    upload(deployment, "photos/schema.jpg", jpeg())
    deliver(deployment)
    (request,) = model.chat_requests
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.body["response_format"]["json_schema"]["strict"] is True
    assert deployment.record("photos/schema.jpg")["output_mode"] == "json_schema"


def test_a_provider_without_json_schema_falls_back_and_the_image_is_not_failed(
    deployment: Deployment, function_env, model
) -> None:
    model.responder.push(
        error_reply(400, "response_format json_schema is not supported by this model", "invalid_request_error"),
        answer(json.dumps(GOOD)),
    )
    upload(deployment, "photos/fallback.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/fallback.jpg")
    assert record["status"] == "succeeded" and record["output_mode"] == "json_object"
    assert model.chat_requests[1].body["response_format"] == {"type": "json_object"}


def test_streaming_end_to_end_counts_the_usage_of_the_final_chunk(
    deployment: Deployment, function_env, model, monkeypatch
) -> None:
    monkeypatch.setenv("MODEL_STREAM", "true")
    upload(deployment, "photos/stream.jpg", jpeg())
    deliver(deployment)
    record = deployment.record("photos/stream.jpg")
    (request,) = model.chat_requests
    assert request.body["stream"] is True
    assert record["status"] == "succeeded" and record["usage"]["usage_reported"] is True
    assert record["usage"]["prompt_tokens"] > 0
