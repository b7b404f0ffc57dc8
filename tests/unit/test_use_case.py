"""The use case with in-memory fakes of its ports: claims, the content cache, notifications, the describe step."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from json import JSONDecodeError
from typing import Any

import pytest

from sightline.describe import DescribeOptions, describe_image
from sightline.errors import (
    ConfigurationError,
    InProgressError,
    ModelRefusedError,
    ModelUnavailableError,
    ProviderResponseError,
    RecordRejectedError,
)
from sightline.events import ObjectEvent
from sightline.pipeline import Pipeline
from sightline.ports import ModelUsage
from sightline.prompt import ANSWER_SCHEMA
from sightline.records import SNS_MESSAGE_MAX_BYTES
from sightline.settings import Settings
from tests.support.fakes import (
    FakeContentCache,
    FakeNotifier,
    FakeObjectStore,
    FakeResultStore,
    ScriptedModel,
    answer,
)
from tests.unit.images import encode, photo

pytestmark = pytest.mark.unit

BUCKET = "uploads"
GOOD = {
    "description": "A red square on a gradient.",
    "alt_text": "Red square on a gradient",
    "text": "",
    "tags": ["red"],
}
IMAGE = encode(photo(320, 240), "PNG")
OTHER_IMAGE = encode(photo(300, 200), "PNG")


def good_answer(**fields: Any) -> Any:
    return answer(json.dumps(GOOD), **fields)


def event(key: str, sequencer: str = "0A", name: str = "ObjectCreated:Put", version: str | None = None) -> ObjectEvent:
    return ObjectEvent(
        bucket=BUCKET,
        key=key,
        event_name=name,
        event_time="2026-11-26T10:00:00.000Z",
        version_id=version or f"v-{sequencer}",
        etag="etag",
        size=None,
        sequencer=sequencer,
    )


class World:
    """The pipeline wired to fakes, as the composition root wires it to AWS."""

    def __init__(self, model: ScriptedModel, *, cache: bool = True) -> None:
        self.objects = FakeObjectStore()
        self.results = FakeResultStore()
        self.cache = FakeContentCache() if cache else None
        self.notifier = FakeNotifier()
        self.model = model
        self.pipeline = Pipeline(
            settings=Settings(results_table="results", results_topic_arn="arn:topic"),
            objects=self.objects,
            results=self.results,
            notifier=self.notifier,
            model=model,
            cache=self.cache,
        )

    def upload(self, key: str, body: bytes = IMAGE) -> None:
        self.objects.bodies[key] = body

    def record(self, key: str) -> dict[str, Any]:
        stored = self.results.get(BUCKET, key)
        assert stored is not None
        return stored


# --- The describe step alone


def test_a_valid_answer_becomes_a_succeeded_result_with_its_usage_and_the_schema_sent() -> None:
    # GIVEN a model that answers well
    model = ScriptedModel(good_answer())
    # WHEN an image is described
    result = describe_image(IMAGE, DescribeOptions(model_id="m"), model)
    # THEN the result is typed, validated and counts the one call; the strict schema was asked for
    assert result.succeeded and result.description is not None
    assert result.description.alt_text == "Red square on a gradient"
    assert result.usage.model_calls == 1 and result.usage.prompt_tokens == 100
    assert model.requests[0].json_schema == ANSWER_SCHEMA


def test_an_unparseable_answer_gets_one_text_only_repair_call() -> None:
    model = ScriptedModel(answer("The picture shows a red square."), good_answer())
    result = describe_image(IMAGE, DescribeOptions(model_id="m"), model)
    assert result.succeeded
    assert model.calls == 2
    repair_parts = model.requests[1].messages[-1]["content"]
    assert isinstance(repair_parts, str) and "The picture shows a red square." in repair_parts  # no image resent
    assert result.usage.model_calls == 2


def test_an_empty_answer_is_a_failure_without_a_repair_call() -> None:
    model = ScriptedModel(answer(""))
    result = describe_image(IMAGE, DescribeOptions(model_id="m"), model)
    assert not result.succeeded and result.error_type == "EmptyModelAnswer"
    assert model.calls == 1 and result.usage.model_calls == 1


def test_a_refusal_field_is_a_model_refused_failure_with_the_models_words_and_no_repair() -> None:
    model = ScriptedModel(answer(None, refusal="I'm sorry, I can't help with that."))
    result = describe_image(IMAGE, DescribeOptions(model_id="m"), model)
    assert result.error_type == "ModelRefused"
    assert "I'm sorry, I can't help with that." in (result.error_message or "")
    assert result.description is None and model.calls == 1


def test_a_refusal_in_prose_is_never_stored_as_alt_text() -> None:
    model = ScriptedModel(answer("I'm sorry, but I can't assist with this request."))
    result = describe_image(IMAGE, DescribeOptions(model_id="m"), model)
    assert result.error_type == "ModelRefused" and model.calls == 1


def test_an_answer_cut_by_the_token_limit_is_never_a_success() -> None:
    model = ScriptedModel(good_answer(finish_reason="length"))
    result = describe_image(IMAGE, DescribeOptions(model_id="m", max_output_tokens=64), model)
    assert result.error_type == "TruncatedModelOutput" and model.calls == 1


def test_a_stream_stopped_for_repetition_is_a_failure_of_its_own_kind() -> None:
    model = ScriptedModel(answer('{"description": "a a a a a a', finish_reason="repetition"))
    result = describe_image(IMAGE, DescribeOptions(model_id="m"), model)
    assert result.error_type == "RepetitiveModelOutput"


def test_the_json_in_tool_call_arguments_is_read_without_a_repair() -> None:
    model = ScriptedModel(answer(None, tool_arguments=(json.dumps(GOOD),)))
    result = describe_image(IMAGE, DescribeOptions(model_id="m"), model)
    assert result.succeeded and model.calls == 1


def test_a_provider_fault_is_raised_with_the_paid_calls_counted() -> None:
    usage = ModelUsage()
    model = ScriptedModel(answer("not json"), ProviderResponseError("HTML page instead of a completion"))
    with pytest.raises(ProviderResponseError):
        describe_image(IMAGE, DescribeOptions(model_id="m"), model, usage=usage)
    assert usage.model_calls == 1  # the first answer was paid for, even though the repair call then failed


def test_a_non_image_fails_before_any_model_call() -> None:
    model = ScriptedModel()
    result = describe_image(b"<html>hi</html>", DescribeOptions(model_id="m"), model)
    assert result.error_type == "NotAnImage" and model.calls == 0


# --- Claims, cache and notifications


def test_a_created_object_is_described_stored_and_notified_once() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    outcome = world.pipeline.process(event("a.png"))
    assert outcome.status == "succeeded"
    record = world.record("a.png")
    assert record["status"] == "succeeded" and record["notified"] is True
    assert record["usage"]["model_calls"] == 1 and record["output_mode"] == "off"
    assert len(world.notifier.published) == 1


def test_a_duplicate_delivery_pays_nothing_and_does_not_notify_again() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    world.pipeline.process(event("a.png"))
    outcome = world.pipeline.process(event("a.png"))
    assert outcome.status == "duplicate"
    assert world.model.calls == 1 and len(world.notifier.published) == 1


def test_an_older_event_after_a_newer_one_is_stale() -> None:
    world = World(ScriptedModel(default=good_answer()))
    world.upload("a.png")
    world.pipeline.process(event("a.png", sequencer="0B"))
    assert world.pipeline.process(event("a.png", sequencer="0A")).status == "stale"


@pytest.mark.parametrize(
    "error",
    [
        JSONDecodeError("Expecting value", "", 0),
        AttributeError("'NoneType' has no attribute 'choices'"),
        RecursionError(),
    ],
)
def test_any_exception_releases_the_claim_and_records_its_type(error: BaseException) -> None:
    # GIVEN a model call that fails with an exception of a type nobody planned for
    world = World(ScriptedModel(error, good_answer()))
    world.upload("a.png")
    # WHEN the event is processed
    with pytest.raises(type(error)):
        world.pipeline.process(event("a.png"))
    # THEN the claim is free and the record says why it is still processing
    record = world.record("a.png")
    assert record["status"] == "processing" and record["claim_until"] == 0
    assert record["last_error_type"] == type(error).__name__
    # AND the redelivery is applied at once, paying only once more
    assert world.pipeline.process(event("a.png")).status == "succeeded"
    assert world.model.calls == 2


def test_calls_paid_by_a_released_delivery_count_in_the_final_record() -> None:
    # GIVEN a first delivery whose repair call hits an outage after a paid, unparseable answer
    world = World(ScriptedModel(answer("not json"), ModelUnavailableError("503"), good_answer()))
    world.upload("a.png")
    with pytest.raises(ModelUnavailableError):
        world.pipeline.process(event("a.png"))
    assert world.record("a.png")["attempt_usage"]["model_calls"] == 1
    # WHEN the redelivery succeeds
    world.pipeline.process(event("a.png"))
    # THEN the record's usage counts both paid calls
    assert world.record("a.png")["usage"]["model_calls"] == 2


def test_identical_bytes_under_another_key_are_served_from_the_cache() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    world.upload("b.png")
    world.pipeline.process(event("a.png"))
    world.pipeline.process(event("b.png"))
    record = world.record("b.png")
    assert record["cache_hit"] is True and record["usage"]["model_calls"] == 0
    assert world.model.calls == 1


def test_ten_twins_whose_description_fails_permanently_cost_one_call_and_none_is_retried() -> None:
    # GIVEN ten keys with identical bytes and a model that refuses the image (slowly, so the twins overlap)
    world = World(ScriptedModel(answer(None, refusal="I can't help with that."), delay=0.2))
    keys = [f"twin-{i}.png" for i in range(10)]
    for key in keys:
        world.upload(key)
    # WHEN all ten are processed at once
    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(lambda key: world.pipeline.process(event(key)), keys))
    # THEN one call was made, every key has a failed record with the reason, and nothing was left to retry
    assert world.model.calls == 1
    assert [o.status for o in outcomes] == ["failed"] * 10
    assert {world.record(k)["error_type"] for k in keys} == {"ModelRefused"}
    assert sum(world.record(k)["cache_hit"] for k in keys) == 9


def test_a_twin_gives_up_waiting_with_in_progress_when_the_other_delivery_holds_on() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    assert world.cache is not None
    from sightline.pipeline import content_key

    options = world.pipeline.options(world.pipeline.profiles.default)  # type: ignore[arg-type]
    world.cache.claim(content_key(hashlib.sha256(IMAGE).hexdigest(), options), "someone-else", 10**15, 0)
    with pytest.raises(InProgressError):
        world.pipeline.process(event("a.png"), deadline=0.0)  # no time to wait
    assert world.model.calls == 0


def test_a_deleted_topic_frees_the_notification_claim_for_the_retry() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    world.notifier.failures.append(ConfigurationError("SNS Publish failed: NotFound: Topic does not exist"))
    with pytest.raises(ConfigurationError):
        world.pipeline.process(event("a.png"))
    record = world.record("a.png")
    assert record["status"] == "succeeded" and record["notified"] is False and record["notify_until"] == 0
    # the retry only notifies: no second model call
    assert world.pipeline.process(event("a.png")).status == "duplicate"
    assert world.record("a.png")["notified"] is True and world.model.calls == 1


def test_a_message_sns_refuses_is_announced_without_its_content_fields() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    world.notifier.failures.append(RecordRejectedError("SNS Publish failed: InvalidParameter: too long"))
    world.pipeline.process(event("a.png"))
    (message, _attributes) = world.notifier.published[0]
    assert message["content_omitted"] is True and "alt_text" not in message
    assert world.record("a.png")["notified"] is True


def test_a_record_dynamodb_refuses_is_stored_as_a_failed_record_that_says_why() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    world.results.reject_next_complete = 1
    outcome = world.pipeline.process(event("a.png"))
    record = world.record("a.png")
    assert outcome.status == "failed" and record["error_type"] == "RecordRejected"
    assert "ValidationException" in record["error_message"] and record["notified"] is True


def test_an_enormous_answer_still_fits_a_dynamodb_item_and_an_sns_message() -> None:
    # GIVEN an answer with megabytes of text, a huge description and a lone surrogate
    huge = {
        "description": "A page. " * 100_000 + "\ud800",
        "alt_text": "Page \ud800 of text " * 50,
        "text": "line of text é\n" * 200_000,
        "tags": ["t" * 500] * 500,
    }
    world = World(ScriptedModel(answer(json.dumps(huge))))
    world.upload("a.png")
    world.pipeline.process(event("a.png"))
    record = world.record("a.png")
    # THEN the item is far below 400 KB, the message below 256 KB, and nothing unencodable is left
    encoded_item = json.dumps(record, ensure_ascii=False).encode("utf-8")
    assert len(encoded_item) < 300_000
    assert record["text_truncated"] is True
    message = json.dumps(world.notifier.published[0][0], ensure_ascii=False).encode("utf-8")
    assert len(message) < SNS_MESSAGE_MAX_BYTES
    assert "\ud800" not in json.dumps(record, ensure_ascii=False)


def test_concurrent_deliveries_of_one_event_make_one_call() -> None:
    world = World(ScriptedModel(good_answer(), delay=0.1))
    world.upload("a.png")
    start = threading.Barrier(4)

    def deliver() -> str:
        start.wait()
        try:
            return world.pipeline.process(event("a.png")).status
        except InProgressError:
            return "in_progress"

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _i: deliver(), range(4)))
    assert statuses.count("succeeded") == 1 and world.model.calls == 1


def test_a_model_refusal_from_the_content_filter_is_a_failed_record() -> None:
    world = World(ScriptedModel(ModelRefusedError("the provider's content filter stopped the answer")))
    world.upload("a.png")
    outcome = world.pipeline.process(event("a.png"))
    assert outcome.status == "failed" and world.record("a.png")["error_type"] == "ModelRefused"
    assert len(world.notifier.published) == 1


# --- Profiles, metadata overrides and reviews


def test_the_objects_metadata_overrides_language_and_context() -> None:
    world = World(ScriptedModel(good_answer()))
    world.upload("a.png")
    world.objects.metadata["a.png"] = {"sightline-language": "ja", "sightline-context": "=?utf-8?b?5a2j56+A?="}
    world.pipeline.process(event("a.png"))
    record = world.record("a.png")
    assert record["language"] == "ja" and record["context_used"] is True
    (request,) = world.model.requests
    texts = [part["text"] for part in request.messages[-1]["content"] if part["type"] == "text"]
    assert any("Japanese" in text for text in texts) and any("季節" in text for text in texts)


def test_an_unknown_profile_in_the_metadata_is_a_failed_record_that_names_the_known_ones() -> None:
    world = World(ScriptedModel())
    world.upload("a.png")
    world.objects.metadata["a.png"] = {"sightline-profile": "nope"}
    outcome = world.pipeline.process(event("a.png"))
    assert outcome.status == "failed" and world.record("a.png")["error_type"] == "InvalidMetadata"
    assert "default" in world.record("a.png")["error_message"] and world.model.calls == 0


def test_a_review_written_while_the_key_is_re_described_is_kept() -> None:
    # GIVEN a described key
    world = World(ScriptedModel(good_answer(), default=good_answer()), cache=False)
    world.upload("a.png")
    world.pipeline.process(event("a.png", sequencer="0A"))
    review = {"alt_text": "Reviewed", "reviewed_by": "ed", "reviewed_at": "2026-11-26T10:00:00.000Z"}

    # WHEN a person reviews it while a new version is being described (during the model call)
    def review_during_the_call(_request: Any) -> Any:
        world.results.set_review(BUCKET, "a.png", {**review, "content_sha256": "old"})
        return good_answer()

    world.model.script.append(review_during_the_call)
    world.pipeline.process(event("a.png", sequencer="0B"))
    # THEN the stored record carries the review, flagged stale against the new bytes
    record = world.record("a.png")
    assert record["alt_text_reviewed"] == "Reviewed" and record["review_stale"] is True
    assert record["alt_text"] == GOOD["alt_text"]
