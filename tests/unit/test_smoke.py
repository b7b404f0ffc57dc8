"""`sightline smoke`'s pure parts: the key, the test image, judging a record, the backoff, hints, the report."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from sightline_cli.smoke import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMED_OUT,
    SetupError,
    SmokeReport,
    StackTarget,
    choose_suffix,
    hints_for,
    image_format_for_key,
    judge,
    key_refusal,
    make_key,
    make_test_image,
    render_text,
    wait_for_record,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 8, 0, 5, tzinfo=UTC)
VERSION = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
ETAG = "9b2cf535f27731c974343645a3985328"
NOW_MS = 1_795_000_000_000


def record(**fields: Any) -> dict[str, Any]:
    return {"bucket": "b", "key": "k", "version_token": VERSION, **fields}


# --- The key and the image


def test_the_default_key_is_under_the_prefix_sorted_by_time_and_unique_per_run() -> None:
    assert make_key("", ".png", NOW, "feedc0de") == "sightline-smoke/20261125T080005Z-feedc0de.png"
    assert make_key("incoming/", ".jpg", NOW, "feedc0de") == "incoming/sightline-smoke/20261125T080005Z-feedc0de.jpg"


def test_the_suffix_is_png_unless_the_stack_takes_only_other_formats() -> None:
    assert choose_suffix(()) == ".png"
    assert choose_suffix((".jpg", ".png")) == ".png"
    assert choose_suffix((".JPEG", ".tif")) == ".jpeg"
    with pytest.raises(SetupError, match=r"none of the formats the smoke test writes"):
        choose_suffix((".pdf", ".heic"))


def test_a_key_outside_the_stacks_filters_is_refused_with_the_reason() -> None:
    assert key_refusal("sightline-smoke/a.png", "", ()) is None
    assert key_refusal("in/a.PNG", "in/", (".png",)) is None  # suffixes ignore case, as the function does
    assert "ObjectKeyPrefix 'in/'" in str(key_refusal("out/a.png", "in/", ()))
    assert "ObjectKeySuffixes (.jpg)" in str(key_refusal("in/a.png", "in/", (".jpg",)))


def test_the_image_format_follows_the_keys_suffix() -> None:
    assert image_format_for_key("a/b.JPG") == ("JPEG", "image/jpeg")
    assert image_format_for_key("a/b.webp") == ("WEBP", "image/webp")
    assert image_format_for_key("a/b") == ("PNG", "image/png")  # the function sniffs the bytes, not the name


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_the_test_image_is_a_small_card_whose_bytes_differ_per_run(image_format: str) -> None:
    body = make_test_image("feedc0de", NOW, image_format)
    image = Image.open(io.BytesIO(body))
    assert image.format == image_format and image.mode == "RGB"
    assert image.size == (720, 260) and len(body) < 100_000
    # dark text on white: a real share of the card is ink
    ink = sum(image.convert("L").histogram()[:100])
    assert ink > 0.02 * image.size[0] * image.size[1]
    assert make_test_image("0ddba11s", NOW, image_format) != body  # unique content: no content-cache hit


# --- Judging the key's record


def test_no_record_or_another_versions_record_means_waiting() -> None:
    assert judge(None, [VERSION], NOW_MS).state == "waiting"
    other = judge(record(version_token="older", status="succeeded", notified=True), [VERSION], NOW_MS)
    assert other.state == "waiting" and "another version" in other.detail


def test_the_records_version_is_matched_by_version_id_or_by_etag() -> None:
    # An event without a versionId (an emulator) is claimed under the ETag.
    assert judge(record(version_token=ETAG, status="failed"), [VERSION, ETAG], NOW_MS).state == "failed"
    stored = record(version_token="x", object={"version_id": VERSION}, status="failed")
    assert judge(stored, [VERSION, ETAG], NOW_MS).state == "failed"


def test_a_success_settles_only_once_notified() -> None:
    stored = judge(record(status="succeeded", notified=False), [VERSION], NOW_MS)
    assert stored.terminal and not stored.settled and stored.exit_code == EXIT_TIMED_OUT
    announced = judge(record(status="succeeded", notified=True), [VERSION], NOW_MS)
    assert announced.settled and announced.exit_code == EXIT_OK


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"status": "failed", "error_type": "NotAnImage", "notified": True}, "failed"),
        ({"status": "partial", "error_type": "PageSkipped", "notified": True}, "partial"),
        ({"status": "deferred", "error_type": "BudgetExhausted"}, "deferred"),
        ({"status": "deleted", "notified": True}, "deleted"),
        ({"status": "processing", "claim_until": 0, "last_error_type": "Configuration"}, "blocked"),
    ],
)
def test_failures_deferrals_and_configuration_errors_end_the_wait_with_exit_1(
    fields: dict[str, Any], state: str
) -> None:
    verdict = judge(record(**fields), [VERSION], NOW_MS)
    assert verdict.state == state and verdict.settled and verdict.exit_code == EXIT_FAILED


def test_a_delivery_in_flight_or_a_transient_failure_keeps_waiting() -> None:
    in_flight = judge(record(status="processing", claim_until=NOW_MS + 60_000), [VERSION], NOW_MS)
    assert in_flight.state == "waiting" and "describing it now" in in_flight.detail
    # A configuration error of an earlier attempt, while a retry holds the claim: not over yet.
    retried = record(status="processing", claim_until=NOW_MS + 60_000, last_error_type="Configuration")
    assert judge(retried, [VERSION], NOW_MS).state == "waiting"
    transient = judge(
        record(status="processing", claim_until=0, last_error_type="ModelUnavailable", last_error_message="HTTP 503"),
        [VERSION],
        NOW_MS,
    )
    assert transient.state == "waiting" and "ModelUnavailable: HTTP 503" in transient.detail


# --- Waiting


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_reads_back_off_from_1_to_8_seconds_and_the_last_is_at_the_deadline() -> None:
    clock = FakeClock()
    reads: list[float] = []

    def read() -> dict[str, Any] | None:
        reads.append(clock.now)
        return None

    verdict, waited = wait_for_record(read, [VERSION], 20, clock=clock, sleep=clock.sleep, wall_ms=lambda: NOW_MS)
    assert verdict.state == "waiting" and waited == 20
    assert clock.sleeps == [1, 2, 4, 8, 5]
    assert reads == [0, 1, 3, 7, 15, 20]


def test_a_change_reads_again_a_second_later_and_the_notification_ends_the_wait() -> None:
    clock = FakeClock()
    answers = iter(
        [None, None, None, record(status="succeeded", notified=False), record(status="succeeded", notified=True)]
    )
    changes: list[str] = []
    verdict, waited = wait_for_record(
        lambda: next(answers),
        [VERSION],
        180,
        on_change=lambda v: changes.append(v.detail),
        clock=clock,
        sleep=clock.sleep,
        wall_ms=lambda: NOW_MS,
    )
    assert verdict.state == "succeeded" and verdict.notified
    assert clock.sleeps == [1, 2, 4, 1]  # reset to 1 s when the record appeared
    assert waited == 8 and changes == ["no record yet", "succeeded"]


# --- Hints, the stack, the report


def test_hints_name_the_command_to_run_for_each_kind_of_error() -> None:
    config = hints_for("Configuration", stack_name="prod", secret_arn="arn:aws:secretsmanager:…:secret:key")
    assert any(
        "aws secretsmanager put-secret-value --secret-id arn:aws:secretsmanager:…:secret:key" in h for h in config
    )
    assert any("sightline redrive --stack-name prod" in h for h in config)
    assert any("sightline budget status" in h for h in hints_for("BudgetExhausted"))
    assert "--stack-name" not in " ".join(hints_for("BudgetExhausted"))  # the default stack needs no flag
    assert any("ModelId" in h for h in hints_for("InvalidModelOutput"))
    assert hints_for(None) == []


def test_the_stack_target_reads_outputs_and_the_key_filter_parameters() -> None:
    stack = {
        "StackName": "prod",
        "Outputs": [
            {"OutputKey": "UploadsBucketName", "OutputValue": "bucket"},
            {"OutputKey": "ResultsTableName", "OutputValue": "table"},
            {"OutputKey": "DescribeImageFunctionName", "OutputValue": "prod-fn"},
        ],
        "Parameters": [
            {"ParameterKey": "ObjectKeyPrefix", "ParameterValue": "in/"},
            {"ParameterKey": "ObjectKeySuffixes", "ParameterValue": " .JPG, .png "},
            {"ParameterKey": "IntakeRoute", "ParameterValue": "EventBridge"},
        ],
    }
    target = StackTarget.from_stack(stack)
    assert (target.bucket, target.table, target.function_name) == ("bucket", "table", "prod-fn")
    assert (target.key_prefix, target.key_suffixes, target.intake_route) == ("in/", (".jpg", ".png"), "EventBridge")
    assert target.queue_url is None and target.secret_arn is None
    with pytest.raises(SetupError, match="no output ResultsTableName"):
        StackTarget.from_stack({"StackName": "x", "Outputs": stack["Outputs"][:1]})


def report_for(stored: dict[str, Any], **fields: Any) -> SmokeReport:
    return SmokeReport(
        stack="sightline",
        bucket="bucket",
        key="sightline-smoke/20261125T080005Z-feedc0de.png",
        version_id=VERSION,
        run_id="feedc0de",
        size=19_716,
        timeout_seconds=180,
        verdict=judge(stored, [VERSION], NOW_MS),
        seen_after_seconds=7.0,
        cleanup="deleted version …",
        **fields,
    )


def test_the_report_of_a_success_shows_the_answer_usage_cost_and_notification() -> None:
    stored = record(
        status="succeeded",
        notified=True,
        profile="default",
        task="caption",
        language="en",
        model_id="qwen/qwen2.5-vl-72b-instruct",
        alt_text="Card reading Sightline smoke test",
        description="A white card with three lines of text.",
        text="Sightline smoke test\nrun feedc0de",
        usage={"prompt_tokens": 420, "completion_tokens": 60, "total_tokens": 480, "model_calls": 1},
        model_latency_ms=2310,
    )
    report = report_for(stored, record_after_seconds=4.25, cost=0.000384, currency="USD")
    text = render_text(report)
    assert report.exit_code == EXIT_OK and report.run_id_read is True
    assert "record       succeeded (4.2 s after the upload, seen after 7.0 s)" in text
    assert 'alt text     "Card reading Sightline smoke test"' in text
    assert "text         Sightline smoke test | run feedc0de (the run id was read back)" in text
    assert "1 model call(s), 420 prompt + 60 completion tokens, ≈ 0.000384 USD (pricing.toml), 2,310 ms" in text
    assert "notified     yes" in text
    assert text.endswith("OK: bucket → queue → function → model → record → notification all work.")
    document = report.to_dict()
    assert document["result"] == "succeeded" and document["exit_code"] == 0 and document["record_after_seconds"] == 4.25


def test_the_report_of_a_stored_but_unannounced_success_is_a_timeout() -> None:
    report = report_for(record(status="succeeded", notified=False, usage={"model_calls": 1}))
    assert report.exit_code == EXIT_TIMED_OUT and report.result == "timed_out"
    assert "TIMED OUT after 180 s: the record is succeeded, but not notified." in render_text(report)
