"""`sightline smoke` against the emulated stack: the real handler consumes the uploads queue in a background thread
(as the SQS event source would) while the command waits for the record."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import resume_app

import app
from devkit.lambda_emulator import DeliveryReport, QueueFeeder
from devkit.model_server import Reply, completion, error_reply
from sightline.composition import get_runtime
from sightline_cli import smoke
from sightline_cli.main import main
from tests.conftest import Deployment

pytestmark = pytest.mark.integration

RUN_ID = "feedc0de"


def answer_reading_the_card() -> Reply:
    """What a vision model reads on the test card (the run id fixed by the test)."""
    content = {
        "description": "A white card with a blue border and three lines of black text.",
        "alt_text": "Card reading Sightline smoke test",
        "text": f"Sightline smoke test\nrun {RUN_ID}\n2026-11-25 08:00:00 UTC",
        "tags": ["text", "card"],
    }
    return Reply(body=completion(json.dumps(content), model="scripted", prompt_tokens=420, completion_tokens=60))


@contextlib.contextmanager
def function_consuming(deployment: Deployment) -> Iterator[DeliveryReport]:
    """The describe function on the uploads queue, in a background thread, until the block ends."""
    feeder = QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, app.lambda_handler)
    report = DeliveryReport()
    stop = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while not stop.is_set():
                if not feeder.deliver_once(report):
                    stop.wait(0.05)
        except BaseException as exc:  # surfaced in the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=consume, name="describe-function", daemon=True)
    thread.start()
    try:
        yield report
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors


def run_smoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command as the operator runs it; a test that goes wrong waits 30 s at most, not the default 180."""
    if "--timeout" not in args:
        args = (*args, "--timeout", "30")
    code = main(["smoke", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def smoke_json(out: str) -> dict[str, Any]:
    """The command's JSON object; the handler, running in this process, logs on the same stdout."""
    document, _ = json.JSONDecoder().raw_decode(out[out.index('{\n  "result"') :])
    return dict(document)


def versions(deployment: Deployment, key: str) -> list[dict[str, Any]]:
    listing = deployment.client("s3").list_object_versions(Bucket=deployment.resources.bucket, Prefix=key)
    return [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]


@pytest.fixture
def fixed_run_id(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(smoke, "new_run_id", lambda: RUN_ID)
    return RUN_ID


def test_a_working_stack_passes_with_the_record_the_notification_and_nothing_left_behind(
    deployment: Deployment, function_env: dict[str, str], model: Any, fixed_run_id: str, capsys
) -> None:
    # GIVEN the deployed stack with the function consuming its queue and a model that reads the card
    model.responder.default = answer_reading_the_card()
    # WHEN the operator runs the smoke test
    with function_consuming(deployment):
        code, out, err = run_smoke(capsys, "--json")
    # THEN it passes, with the record's content, usage, cost and the notification
    result = smoke_json(out)
    assert code == 0 and result["result"] == "succeeded" and result["exit_code"] == 0, err
    key = result["key"]
    assert key.startswith("sightline-smoke/") and key.endswith(f"-{RUN_ID}.png")
    assert result["status"] == "succeeded" and result["notified"] is True
    assert result["alt_text"] == "Card reading Sightline smoke test"
    assert result["run_id_read"] is True
    assert (result["profile"], result["task"]) == ("default", "caption")
    assert result["usage"]["prompt_tokens"] == 420 and result["usage"]["completion_tokens"] == 60
    assert result["model_id"] == function_env["MODEL_ID"]
    assert result["cost"] == pytest.approx((420 + 60) * 0.80 / 1e6) and result["currency"] == "USD"
    assert result["record_after_seconds"] is not None and result["hints"] == []
    assert "uploaded s3://" in err  # progress goes to stderr, the JSON alone to stdout
    # AND the card was a PNG, described in one model call
    assert result["image"]["format"] == "PNG" and len(model.chat_requests) == 1
    # AND the exact version was deleted: no version and no delete marker left
    assert "deleted version" in result["cleanup"]
    assert versions(deployment, key) == []
    # AND once the deletion's event is processed the record says deleted, without the description
    QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, app.lambda_handler).drain()
    record = deployment.record(key)
    assert record is not None and record["status"] == "deleted" and "alt_text" not in record
    # AND the subscriber got the succeeded notification, then the deleted one
    notified = [n["message"]["status"] for n in deployment.received_notifications() if n["message"]["key"] == key]
    assert sorted(notified) == ["deleted", "succeeded"]


def test_a_model_that_refuses_the_image_fails_the_smoke_test_with_the_reason(
    deployment: Deployment, function_env: dict[str, str], model: Any, capsys
) -> None:
    # GIVEN a model that answers every request with a permanent 400 for the image
    model.responder.default = error_reply(400, "image could not be processed", "invalid_request_error")
    # WHEN the smoke test runs
    with function_consuming(deployment):
        code, out, _ = run_smoke(capsys)
    # THEN exit 1, with the error type, the model's reason and what to check
    assert code == 1, out
    assert "FAILED: the record failed (ModelRejectedImage)." in out
    assert "failed: ModelRejectedImage: the model rejected the request: HTTP 400: image could not be processed" in out
    assert "hint: the model answered, but not with a usable description" in out
    assert "notified" in out and "dead letters" in out and "/aws/lambda/sightline-describe-image" in out


def test_a_missing_api_key_stops_the_wait_early_with_how_to_store_it(
    deployment: Deployment, function_env: dict[str, str], model: Any, capsys
) -> None:
    # GIVEN a provider refusing the API key: a configuration error, retried and never the image's fault
    model.responder.default = error_reply(401, "Incorrect API key provided", "invalid_request_error")
    # WHEN the smoke test runs with a long timeout
    with function_consuming(deployment):
        code, out, _ = run_smoke(capsys, "--json", "--timeout", "60")
    # THEN it stops at the configuration error (exit 1) instead of waiting out the timeout
    result = smoke_json(out)
    assert code == 1 and result["result"] == "blocked", result
    assert result["status"] == "processing" and result["error_type"] == "Configuration"
    assert "Incorrect API key" in result["error_message"]
    assert any("aws secretsmanager put-secret-value" in hint for hint in result["hints"])
    assert any("sightline redrive" in hint for hint in result["hints"])


def test_a_spent_budget_defers_the_item_and_points_at_the_budget(
    deployment: Deployment, function_env: dict[str, str], model: Any, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # GIVEN a daily cap smaller than one request's reservation
    monkeypatch.setenv("BUDGET_DAILY_LIMIT", "100")
    monkeypatch.setenv("BUDGET_UNIT", "tokens")
    get_runtime.cache_clear()
    resume_app._runtime.cache_clear()
    # WHEN the smoke test runs
    with function_consuming(deployment):
        code, out, _ = run_smoke(capsys)
    # THEN exit 1: deferred, with the reason and `sightline budget status`
    assert code == 1, out
    assert "FAILED: the item was deferred (BudgetExhausted): no model call was made." in out
    assert "deferred: BudgetExhausted: " in out
    assert "hint: the day's spend cap is reached: sightline budget status" in out
    assert not model.chat_requests  # no model call was made


def test_nobody_consuming_the_queue_times_out_with_what_to_check(
    deployment: Deployment, function_env: dict[str, str], model: Any, capsys
) -> None:
    # GIVEN the stack with nothing consuming its queue (the event source mapping disabled, say)
    # WHEN the smoke test runs with a short timeout and --keep
    code, out, err = run_smoke(capsys, "--timeout", "2", "--keep")
    # THEN exit 2, saying there is no record, the queue holds the upload's event, the DLQ, and the log group
    assert code == 2, out + err
    assert "TIMED OUT after 2 s without a terminal record (no record yet)." in out
    assert "waiting, 0 in flight: nothing is consuming the queue" in out
    assert "0 message(s) in the dead-letter queue (sightline redrive --dry-run lists them)" in out
    assert "/aws/lambda/sightline-describe-image" in out
    # AND the test object is still there (--keep), with how to delete it
    assert "kept (--keep); delete it with: aws s3api delete-object" in out
    (kept,) = versions(deployment, smoke.SMOKE_FOLDER)
    assert f"s3://{deployment.resources.bucket}/{kept['Key']} (version {kept['VersionId']}" in out


def test_the_key_follows_the_stacks_prefix_and_suffixes(
    aws: Any, model: Any, monkeypatch: pytest.MonkeyPatch, fixed_run_id: str, capsys
) -> None:
    # GIVEN a stack that takes only keys under incoming/ ending in .jpg or .jpeg
    from devkit.stack import deploy_stack

    resources = deploy_stack(
        aws,
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        parameters={"ObjectKeyPrefix": "incoming/", "ObjectKeySuffixes": ".jpg,.jpeg"},
    )
    env = {**resources.function_environment, "MODEL_BASE_URL": model.base_url, "MODEL_API_KEY": "test-key"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_runtime.cache_clear()
    model.responder.default = answer_reading_the_card()
    deployment = Deployment(session=aws, resources=resources, notifications_url="")
    # WHEN the smoke test runs
    with function_consuming(deployment):
        code, out, err = run_smoke(capsys, "--json")
    get_runtime.cache_clear()
    # THEN the key is under the prefix with an accepted suffix, the image a JPEG, and the path works
    result = smoke_json(out)
    assert code == 0, (result, err)
    assert result["key"].startswith("incoming/sightline-smoke/") and result["key"].endswith(".jpg")
    assert result["image"]["format"] == "JPEG" and len(model.chat_requests) == 1
    # AND a --key outside the prefix is refused before anything is uploaded (exit 3)
    code, _, err = run_smoke(capsys, "--key", "elsewhere/test.jpg")
    assert code == 3 and "does not start with the stack's ObjectKeyPrefix 'incoming/'" in err


def test_an_unknown_stack_is_reported_without_uploading(aws: Any, capsys) -> None:
    code, out, err = run_smoke(capsys, "--stack-name", "no-such-stack", "--json")
    assert code == 3 and smoke_json(out)["result"] == "not_run"
    assert "cannot read stack no-such-stack" in err


def test_an_existing_key_is_never_overwritten(deployment: Deployment, capsys) -> None:
    # GIVEN a real object at the key the operator names
    s3 = deployment.client("s3")
    s3.put_object(Bucket=deployment.resources.bucket, Key="photos/cat.png", Body=b"not the smoke test's")
    # WHEN the smoke test is asked to use that key
    code, _, err = run_smoke(capsys, "--key", "photos/cat.png")
    # THEN it refuses (exit 3) and the object is untouched
    assert code == 3 and "exists: the smoke test never overwrites an object" in err
    (only,) = versions(deployment, "photos/cat.png")
    assert s3.get_object(Bucket=deployment.resources.bucket, Key="photos/cat.png")["Body"].read() == (
        b"not the smoke test's"
    )
    assert only["IsLatest"]
