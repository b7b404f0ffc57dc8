"""`sightline backfill` and the S3 Batch Operations function against the stack: what is queued, what is paid."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import batch_app
import pytest

import app
import sightline_cli.backfill as backfill_cli
from devkit.lambda_emulator import FakeLambdaContext, QueueFeeder, lambda_sqs_event, queue_depth, s3_notification
from sightline.events import BACKFILL_EVENT_NAME
from sightline_cli.main import main as sightline
from tests.conftest import Deployment
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

RealRateLimiter = backfill_cli.RateLimiter


# --- Helpers ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def quiet(
    deployment: Deployment, function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Deployment:
    """The stack, with objects that were in the bucket before it: uploads send no event here (the bucket's
    notifications are off and the queue empty), real events are invoked by hand. Checkpoints go to tmp_path."""
    s3, sqs = deployment.client("s3"), deployment.client("sqs")
    s3.put_bucket_notification_configuration(Bucket=deployment.resources.bucket, NotificationConfiguration={})
    sqs.purge_queue(QueueUrl=deployment.resources.queue_url)
    monkeypatch.chdir(tmp_path)
    return deployment


_SIZES = iter(range(10_000))


def put(deployment: Deployment, key: str, body: bytes | None = None, bucket: str | None = None) -> dict[str, Any]:
    """An object with bytes of its own (identical bytes would be served from the content cache)."""
    if body is None:
        step = next(_SIZES)
        body = encode(photo(200 + step, 150 + step % 7), "JPEG")
    response = deployment.client("s3").put_object(Bucket=bucket or deployment.resources.bucket, Key=key, Body=body)
    return {"etag": response["ETag"].strip('"'), "version_id": response.get("VersionId"), "size": len(body)}


_SEQUENCER = iter(range(0x1000, 0x100000))


def real_event(deployment: Deployment, key: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply the S3 event of this upload (as S3 sends it: versionId, a sequencer) through the real handler."""
    event = s3_notification(deployment.resources.bucket, key, sequencer=f"{next(_SEQUENCER):018X}", **obj)
    message = {"MessageId": "real", "ReceiptHandle": "r", "Body": json.dumps(event)}
    result = app.lambda_handler(lambda_sqs_event([message], deployment.resources.queue_arn), FakeLambdaContext())
    assert result == {"batchItemFailures": []}
    return event


def run_backfill(capsys: pytest.CaptureFixture[str], *args: str, stack: bool = True) -> tuple[int, str, str]:
    argv = ["backfill", *(["--stack-name", "sightline"] if stack else []), *args]
    status = sightline(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def peek(deployment: Deployment, url: str | None = None) -> list[dict[str, Any]]:
    """The S3 records of every message waiting in the queue, left in it (visible again at once)."""
    sqs = deployment.client("sqs")
    url = url or deployment.resources.queue_url
    seen: dict[str, dict[str, Any]] = {}
    held: list[str] = []
    for _ in range(50):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        if not messages:
            break
        for message in messages:
            held.append(message["ReceiptHandle"])
            seen[message["MessageId"]] = json.loads(message["Body"])
    for handle in held:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    records = []
    for body in seen.values():
        (record,) = body["Records"]  # one notification, one record per message
        records.append(record)
    return records


def keys_of(records: list[dict[str, Any]]) -> list[str]:
    from urllib.parse import unquote_plus

    return sorted(unquote_plus(r["s3"]["object"]["key"]) for r in records)


def deliver(deployment: Deployment) -> None:
    feeder = QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, app.lambda_handler)
    report = feeder.drain(max_invocations=100)
    assert report.failed_items == 0
    assert queue_depth(deployment.client("sqs"), deployment.resources.queue_url) == 0


def notifications_for(deployment: Deployment, key: str) -> list[dict[str, Any]]:
    return [n for n in deployment.received_notifications() if n["message"]["key"] == key]


def checkpoint_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / ".sightline").glob("backfill-*.json"))


# --- (a) only what has no record is queued, and paid once --------------------------------------------------------------


def test_backfill_queues_only_objects_without_a_record_and_pays_once_for_each(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # GIVEN six objects under old/, two of them already described by their own S3 events, and one elsewhere
    objects = {f"old/photo {index}.jpg": put(quiet, f"old/photo {index}.jpg") for index in range(6)}
    put(quiet, "elsewhere/x.jpg")
    described = ["old/photo 0.jpg", "old/photo 1.jpg"]
    for key in described:
        real_event(quiet, key, objects[key])
    before = {key: quiet.record(key) for key in described}
    assert len(model.chat_requests) == 2
    # WHEN the prefix is backfilled
    status, out, err = run_backfill(capsys, "--prefix", "old/")
    # THEN only the four others are queued, each as one backfill item of one run, for its current version
    assert status == 0, err
    assert "listed            6 objects" in out and "queued            4 objects" in out
    assert "2  already described" in out
    records = peek(quiet)
    assert keys_of(records) == [f"old/photo {index}.jpg" for index in range(2, 6)]
    runs = {r["sightline"]["backfill"]["run"] for r in records}
    assert len(runs) == 1 and all(r["eventName"] == BACKFILL_EVENT_NAME for r in records)
    for record in records:
        key = keys_of([record])[0]
        assert record["s3"]["object"]["versionId"] == objects[key]["version_id"]
        assert record["s3"]["object"]["eTag"] == objects[key]["etag"]
        assert "sequencer" not in record["s3"]["object"]
        assert record["sightline"]["backfill"]["force"] is False and record["sightline"]["backfill"]["profile"] is None
    # AND the finished run's checkpoint is marked done
    (checkpoint_path,) = checkpoint_files(tmp_path)
    saved = json.loads(checkpoint_path.read_text())
    assert saved["done"] is True and saved["run"] in runs and saved["counts"]["queued"] == 4
    # WHEN the queue is delivered to the function
    deliver(quiet)
    # THEN the model was paid once per new object and never for the described ones
    assert len(model.chat_requests) == 6
    for index in range(2, 6):
        record = quiet.record(f"old/photo {index}.jpg")
        assert record is not None and record["status"] == "succeeded"
    assert {key: quiet.record(key) for key in described} == before
    assert quiet.record("elsewhere/x.jpg") is None
    # AND the same command again starts a new run that finds everything described
    status, out, err = run_backfill(capsys, "--prefix", "old/")
    assert status == 0 and "starting a new run" in err
    assert "queued            0 objects" in out and "6  already described" in out
    assert peek(quiet) == []


# --- (b) Ctrl-C and resume --------------------------------------------------------------------------------------------


class InterruptOnAcquire(RealRateLimiter):
    """The rate limiter's wait interrupted (Ctrl-C) at its Nth call."""

    at = 0
    calls = 0

    def acquire(self, count: int = 1) -> float:
        type(self).calls += 1
        if type(self).calls == type(self).at:
            raise KeyboardInterrupt
        return super().acquire(count)


def interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    InterruptOnAcquire.at, InterruptOnAcquire.calls = call, 0
    monkeypatch.setattr(backfill_cli, "RateLimiter", InterruptOnAcquire)


def test_an_interrupted_backfill_resumes_from_its_checkpoint_and_queues_nothing_twice(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [f"bulk/{index:02d}.jpg" for index in range(25)]
    for key in keys:
        put(quiet, key)
    # WHEN Ctrl-C comes while waiting to send the third chunk of five
    monkeypatch.setattr(backfill_cli, "CHUNK_SIZE", 5)
    interrupt_at(monkeypatch, 3)
    status, out, err = run_backfill(capsys, "--prefix", "bulk/")
    # THEN two chunks are queued, the checkpoint holds them, and the command says how to resume
    assert status == 130
    assert "resume with: sightline backfill --stack-name sightline --prefix bulk/" in err
    (checkpoint_path,) = checkpoint_files(tmp_path)
    saved = json.loads(checkpoint_path.read_text())
    assert saved["done"] is False and saved["counts"]["queued"] == 10
    assert saved["position"] == {"key_marker": "bulk/09.jpg"}
    assert keys_of(peek(quiet)) == keys[:10]
    run_id = saved["run"]
    # WHEN the run resumes and Ctrl-C comes in the middle of a chunk (its second send of four)
    monkeypatch.setattr(backfill_cli, "CHUNK_SIZE", 10)
    monkeypatch.setattr(backfill_cli, "SEND_BATCH", 4)
    interrupt_at(monkeypatch, 2)
    status, out, err = run_backfill(capsys, "--prefix", "bulk/")
    # THEN the chunk is finished whole before stopping, in the same run
    assert status == 130
    assert f"resuming run {run_id}" in err
    saved = json.loads(checkpoint_path.read_text())
    assert saved["run"] == run_id and saved["counts"]["queued"] == 20 and saved["position"]["key_marker"] == keys[19]
    assert keys_of(peek(quiet)) == keys[:20]
    # WHEN it resumes again without interruption
    monkeypatch.setattr(backfill_cli, "RateLimiter", RealRateLimiter)
    status, out, err = run_backfill(capsys, "--prefix", "bulk/")
    assert status == 0, err
    assert "listed           25 objects" in out and "queued           25 objects" in out
    # THEN every object was queued exactly once, all in the one run
    records = peek(quiet)
    assert Counter(keys_of(records)) == Counter(keys)
    assert {r["sightline"]["backfill"]["run"] for r in records} == {run_id}
    assert json.loads(checkpoint_path.read_text())["done"] is True
    # AND all end described, each paid once
    deliver(quiet)
    assert len(model.chat_requests) == 25
    assert all((quiet.record(key) or {}).get("status") == "succeeded" for key in keys)


def test_a_real_ctrl_c_while_a_chunk_is_sent_lets_the_chunk_finish(
    quiet: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [f"sig/{index:02d}.jpg" for index in range(12)]
    for key in keys:
        put(quiet, key)
    monkeypatch.setattr(backfill_cli, "CHUNK_SIZE", 6)
    monkeypatch.setattr(backfill_cli, "SEND_BATCH", 2)
    real_send = backfill_cli.send_batch
    calls = {"n": 0}

    def send_with_ctrl_c(sqs: Any, queue_url: str, bodies: Any, sleep: Any = None) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the user presses Ctrl-C while the first chunk's second send is under way
            os.kill(os.getpid(), signal.SIGINT)
        real_send(sqs, queue_url, bodies)

    monkeypatch.setattr(backfill_cli, "send_batch", send_with_ctrl_c)
    status, _, err = run_backfill(capsys, "--prefix", "sig/")
    assert status == 130 and "finishing the chunk being sent" in err
    assert keys_of(peek(quiet)) == keys[:6]
    (checkpoint_path,) = checkpoint_files(tmp_path)
    assert json.loads(checkpoint_path.read_text())["position"] == {"key_marker": keys[5]}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_restart_ignores_the_checkpoint_and_a_checkpoint_of_other_parameters_is_refused(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(4):
        put(quiet, f"re/{index}.jpg")
    monkeypatch.setattr(backfill_cli, "CHUNK_SIZE", 2)
    interrupt_at(monkeypatch, 2)
    status, _, _ = run_backfill(capsys, "--prefix", "re/", "--checkpoint", "progress.json")
    assert status == 130
    first_run = json.loads((tmp_path / "progress.json").read_text())["run"]
    # another prefix with the same checkpoint file is refused
    status, _, err = run_backfill(capsys, "--prefix", "other/", "--checkpoint", "progress.json")
    assert status == 1 and "belongs to a run of other parameters" in err
    # --restart starts a new run from the beginning
    monkeypatch.setattr(backfill_cli, "RateLimiter", RealRateLimiter)
    status, _out, err = run_backfill(capsys, "--prefix", "re/", "--checkpoint", "progress.json", "--restart")
    assert status == 0, err
    saved = json.loads((tmp_path / "progress.json").read_text())
    assert saved["run"] != first_run and saved["counts"]["listed"] == 4 and saved["done"] is True


# --- (c) ordering with real S3 events ---------------------------------------------------------------------------------


def test_a_real_event_after_a_backfill_item_still_applies(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a backfill item described for the object's first version
    first = put(quiet, "race/a.jpg")
    assert run_backfill(capsys, "--prefix", "race/")[0] == 0
    deliver(quiet)
    assert (quiet.record("race/a.jpg") or {}).get("version_token") == first["version_id"]
    assert len(model.chat_requests) == 1
    # WHEN the key is overwritten and its real S3 event arrives
    second = put(quiet, "race/a.jpg")
    event = real_event(quiet, "race/a.jpg", second)
    # THEN the real event applies: its own record and notification
    record = quiet.record("race/a.jpg")
    assert record is not None and record["status"] == "succeeded"
    assert record["version_token"] == second["version_id"]
    assert record["object"]["sequencer"] == event["Records"][0]["s3"]["object"]["sequencer"]
    assert len(model.chat_requests) == 2
    published = notifications_for(quiet, "race/a.jpg")
    assert [n["message"]["version_id"] for n in published] == [first["version_id"], second["version_id"]]


def test_a_real_event_for_the_same_version_after_a_backfill_item_still_applies(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = put(quiet, "race/same.jpg")
    assert run_backfill(capsys, "--prefix", "race/")[0] == 0
    deliver(quiet)
    event = real_event(quiet, "race/same.jpg", obj)  # S3's own event for the version, arriving late
    record = quiet.record("race/same.jpg")
    assert record is not None and record["status"] == "succeeded"
    assert record["object"]["sequencer"] == event["Records"][0]["s3"]["object"]["sequencer"]
    assert len(notifications_for(quiet, "race/same.jpg")) == 2


def test_a_backfill_item_after_the_real_event_of_its_version_pays_nothing_and_changes_nothing(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a backfill item queued while the key had no record
    obj = put(quiet, "race/b.jpg")
    assert run_backfill(capsys, "--prefix", "race/")[0] == 0
    assert keys_of(peek(quiet)) == ["race/b.jpg"]
    # AND the object's real S3 event applied before the item is delivered
    real_event(quiet, "race/b.jpg", obj)
    record = quiet.record("race/b.jpg")
    assert len(model.chat_requests) == 1
    # WHEN the backfill item is delivered
    deliver(quiet)
    # THEN nothing is paid, the record is unchanged, nothing more is announced
    assert len(model.chat_requests) == 1
    assert quiet.record("race/b.jpg") == record
    assert len(notifications_for(quiet, "race/b.jpg")) == 1


def test_a_backfill_item_for_an_older_version_than_the_applied_event_is_stale(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    put(quiet, "race/c.jpg")
    assert run_backfill(capsys, "--prefix", "race/")[0] == 0
    newer = put(quiet, "race/c.jpg")
    real_event(quiet, "race/c.jpg", newer)
    record = quiet.record("race/c.jpg")
    deliver(quiet)
    assert len(model.chat_requests) == 1
    assert quiet.record("race/c.jpg") == record


def test_force_asks_first_then_describes_the_current_version_again_once_per_run(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = put(quiet, "force/a.jpg")
    real_event(quiet, "force/a.jpg", obj)
    assert len(model.chat_requests) == 1
    # without a terminal, --force needs --yes
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status, _, err = run_backfill(capsys, "--prefix", "force/", "--force")
    assert status == 2 and "1 objects" in err and "will be described again and paid for" in err and "--yes" in err
    assert peek(quiet) == []
    status, _out, err = run_backfill(capsys, "--prefix", "force/", "--force", "--yes")
    assert status == 0, err
    assert "will be described again and paid for (the content cache is bypassed)" in err
    ((record,),) = [peek(quiet)]
    assert record["sightline"]["backfill"]["force"] is True
    deliver(quiet)
    # THEN the version is described again (paid again, the cache bypassed) and stays the real event's record
    assert len(model.chat_requests) == 2
    described = quiet.record("force/a.jpg")
    assert described is not None and described["status"] == "succeeded" and described["cache_hit"] is False
    assert described["version_token"] == obj["version_id"]


# --- (d) S3 Batch Operations -----------------------------------------------------------------------------------------

JOB_ID = "f3cc4f60-61f6-4a2b-8a21-d07600c373ce"


@pytest.fixture
def batch(quiet: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    monkeypatch.setenv("UPLOADS_QUEUE_URL", quiet.resources.queue_url)
    batch_app.get_batch_runtime.cache_clear()
    yield quiet
    batch_app.get_batch_runtime.cache_clear()


def task_v1(bucket: str, key: str, version_id: str | None, task_id: str = "dGFza2lkZ29lc2hlcmUK") -> dict[str, Any]:
    return {
        "taskId": task_id,
        "s3Key": quote_plus(key, safe="/"),  # a CSV manifest holds keys URL-encoded, and 1.0 passes them so
        "s3VersionId": version_id,
        "s3BucketArn": f"arn:aws:s3:::{bucket}",
    }


def event_v1(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "invocationSchemaVersion": "1.0",
        "invocationId": "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
        "job": {"id": JOB_ID},
        "tasks": [task],
    }


def event_v2(bucket: str, key: str, version_id: str | None, **arguments: str) -> dict[str, Any]:
    return {
        "invocationSchemaVersion": "2.0",
        "invocationId": "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
        "job": {"id": JOB_ID, "userArguments": arguments},
        "tasks": [{"taskId": "dGFza2lkZ29lc2hlcmUK", "s3Bucket": bucket, "s3Key": key, "s3VersionId": version_id}],
    }


def invoke_batch(event: dict[str, Any]) -> tuple[str, str]:
    response = batch_app.lambda_handler(event, FakeLambdaContext(function_name="sightline-backfill"))
    assert response["invocationSchemaVersion"] == event["invocationSchemaVersion"]
    assert response["invocationId"] == event["invocationId"]
    assert response["treatMissingKeysAs"] == "PermanentFailure"
    (result,) = response["results"]
    assert result["taskId"] == "dGFza2lkZ29lc2hlcmUK"
    assert len(result["resultString"].encode()) <= 1_000
    return result["resultCode"], result["resultString"]


def test_batch_operations_schema_1_queues_skips_and_reports_missing_objects(batch: Deployment, model: Any) -> None:
    bucket = batch.resources.bucket
    new = put(batch, "batch/new photo+1.jpg")
    done = put(batch, "batch/done.jpg")
    real_event(batch, "batch/done.jpg", done)
    gone = put(batch, "batch/gone.jpg")
    batch.client("s3").delete_object(Bucket=bucket, Key="batch/gone.jpg")
    # a new object: queued, as a backfill item of the job's run
    assert invoke_batch(event_v1(task_v1(bucket, "batch/new photo+1.jpg", new["version_id"]))) == (
        "Succeeded",
        "queued",
    )
    # described already: an intentional skip succeeds
    assert invoke_batch(event_v1(task_v1(bucket, "batch/done.jpg", None))) == (
        "Succeeded",
        "skipped: already described",
    )
    # deleted (the current version is a delete marker) or never there: succeeded, with the reason
    assert invoke_batch(event_v1(task_v1(bucket, "batch/gone.jpg", None))) == (
        "Succeeded",
        "skipped: the object no longer exists",
    )
    assert invoke_batch(event_v1(task_v1(bucket, "batch/never.jpg", None)))[1] == "skipped: the object no longer exists"
    # the named version of a deleted key still exists: it is queued
    assert invoke_batch(event_v1(task_v1(bucket, "batch/gone.jpg", gone["version_id"])))[0] == "Succeeded"
    # a malformed task fails permanently with the reason
    code, text = invoke_batch(event_v1({"taskId": "dGFza2lkZ29lc2hlcmUK", "s3BucketArn": f"arn:aws:s3:::{bucket}"}))
    assert (code, text) == ("PermanentFailure", "the task has no s3Key")
    code, text = invoke_batch(event_v1({**task_v1(bucket, "a.jpg", None), "s3BucketArn": "not-an-arn"}))
    assert code == "PermanentFailure" and "is not a bucket ARN" in text
    # the queue holds one item per queued task, run = the job id
    records = peek(batch)
    assert keys_of(records) == ["batch/gone.jpg", "batch/new photo+1.jpg"]
    assert {r["sightline"]["backfill"]["run"] for r in records} == {JOB_ID}
    by_key = {keys_of([r])[0]: r for r in records}
    assert by_key["batch/new photo+1.jpg"]["s3"]["object"]["versionId"] == new["version_id"]
    assert by_key["batch/gone.jpg"]["s3"]["object"]["versionId"] == gone["version_id"]
    # AND the function describes what was queued
    deliver(batch)
    assert (batch.record("batch/new photo+1.jpg") or {}).get("status") == "succeeded"
    assert len(model.chat_requests) == 3  # done.jpg's own event, and the two queued


def test_batch_operations_schema_2_user_arguments_force_and_profile(batch: Deployment, model: Any) -> None:
    bucket = batch.resources.bucket
    done = put(batch, "photos/done.jpg")
    real_event(batch, "photos/done.jpg", done)
    plus = put(batch, "photos/a+b.jpg")
    # force: the described version is queued again, with the job's profile
    code, text = invoke_batch(event_v2(bucket, "photos/done.jpg", done["version_id"], force="true", profile="cms-de"))
    assert (code, text) == ("Succeeded", "queued")
    # a key given as it is (not URL-encoded) is found too
    assert invoke_batch(event_v2(bucket, "photos/a+b.jpg", None)) == ("Succeeded", "queued")
    records = {keys_of([r])[0]: r for r in peek(batch)}
    assert records["photos/done.jpg"]["sightline"]["backfill"] == {
        "run": JOB_ID,
        "force": True,
        "profile": "cms-de",
        "last_modified": records["photos/done.jpg"]["sightline"]["backfill"]["last_modified"],
    }
    assert records["photos/a+b.jpg"]["s3"]["object"]["eTag"] == plus["etag"]
    # malformed job arguments fail every task permanently
    code, text = invoke_batch(event_v2(bucket, "photos/done.jpg", None, force="maybe"))
    assert code == "PermanentFailure" and "force must be true or false" in text
    code, text = invoke_batch(event_v2(bucket, "photos/done.jpg", None, profile="nope"))
    assert code == "PermanentFailure" and "no profile named 'nope'" in text
    code, text = invoke_batch(event_v2(bucket, "photos/done.jpg", None, colour="red"))
    assert code == "PermanentFailure" and "unknown job.userArguments 'colour'" in text
    code, text = invoke_batch({**event_v2(bucket, "photos/done.jpg", None), "invocationSchemaVersion": "3.0"})
    assert code == "PermanentFailure"


def test_batch_operations_report_a_temporary_failure_when_the_queue_is_unreachable(
    batch: Deployment, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = batch.resources.bucket
    obj = put(batch, "batch/retry.jpg")
    # GIVEN a queue that does not exist
    monkeypatch.setenv("UPLOADS_QUEUE_URL", batch.resources.queue_url + "-deleted")
    batch_app.get_batch_runtime.cache_clear()
    code, text = invoke_batch(event_v1(task_v1(bucket, "batch/retry.jpg", obj["version_id"])))
    assert code == "TemporaryFailure" and "SendMessage" in text
    # GIVEN SQS not answering at all
    monkeypatch.setenv("UPLOADS_QUEUE_URL", batch.resources.queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:9")
    batch_app.get_batch_runtime.cache_clear()
    code, text = invoke_batch(event_v1(task_v1(bucket, "batch/retry.jpg", obj["version_id"])))
    assert code == "TemporaryFailure"
    # AND once it answers again, the retried task is queued
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    batch_app.get_batch_runtime.cache_clear()
    assert invoke_batch(event_v1(task_v1(bucket, "batch/retry.jpg", obj["version_id"]))) == ("Succeeded", "queued")


def test_batch_operations_without_configuration_fail_permanently_with_the_reason(
    batch: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPLOADS_QUEUE_URL")
    batch_app.get_batch_runtime.cache_clear()
    code, text = invoke_batch(event_v1(task_v1(batch.resources.bucket, "a.jpg", None)))
    assert code == "PermanentFailure" and "UPLOADS_QUEUE_URL" in text


# --- (e) versioned and unversioned listings, and S3 Inventory --------------------------------------------------------------


def test_a_versioned_bucket_is_listed_by_its_current_versions_without_deleted_keys(
    quiet: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = quiet.client("s3")
    put(quiet, "ver/a.jpg")
    latest = put(quiet, "ver/a.jpg")
    put(quiet, "ver/deleted.jpg")
    s3.delete_object(Bucket=quiet.resources.bucket, Key="ver/deleted.jpg")
    kept = put(quiet, "ver/b.jpg")
    status, _out, err = run_backfill(capsys, "--prefix", "ver/")
    assert status == 0, err
    records = {keys_of([r])[0]: r for r in peek(quiet)}
    assert sorted(records) == ["ver/a.jpg", "ver/b.jpg"]
    assert records["ver/a.jpg"]["s3"]["object"]["versionId"] == latest["version_id"]
    assert records["ver/b.jpg"]["s3"]["object"]["versionId"] == kept["version_id"]


def test_an_unversioned_bucket_is_listed_and_resumed_after_the_last_key(
    quiet: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = quiet.client("s3")
    s3.create_bucket(Bucket="plain-bucket")
    objects = {f"p/{index}.png": put(quiet, f"p/{index}.png", bucket="plain-bucket") for index in range(5)}
    put(quiet, "p/folder/", body=b"", bucket="plain-bucket")
    explicit = [
        "--bucket", "plain-bucket", "--queue-url", quiet.resources.queue_url, "--table", quiet.resources.table,
    ]  # fmt: skip
    monkeypatch.setattr(backfill_cli, "CHUNK_SIZE", 2)
    interrupt_at(monkeypatch, 2)
    status, _, err = run_backfill(capsys, *explicit, "--since", "2000-01-01", stack=False)
    assert status == 130
    assert "--bucket plain-bucket" in err and "--since 2000-01-01" in err
    monkeypatch.setattr(backfill_cli, "RateLimiter", RealRateLimiter)
    status, out, err = run_backfill(capsys, *explicit, "--since", "2000-01-01", stack=False)
    assert status == 0, err
    assert "1  a folder placeholder (an empty key ending in /)" in out
    records = peek(quiet)
    assert keys_of(records) == sorted(objects)
    for record in records:
        obj = record["s3"]["object"]
        assert "versionId" not in obj and obj["eTag"] == objects[keys_of([record])[0]]["etag"]
        assert record["s3"]["bucket"]["name"] == "plain-bucket"
    # objects older than --since are listed but not queued
    status, out, _ = run_backfill(capsys, *explicit, "--since", "2999-01-01", "--restart", stack=False)
    assert status == 0 and "6  last modified before --since" in out


def write_inventory(deployment: Deployment, rows_by_file: list[list[list[str]]], *, file_format: str = "CSV") -> str:
    s3 = deployment.client("s3")
    s3.create_bucket(Bucket="inventories")
    schema = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"
    files = []
    for index, rows in enumerate(rows_by_file):
        text = "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in rows)
        key = f"uploads/all/data/file-{index}.csv.gz"
        body = gzip.compress(text.encode())
        s3.put_object(Bucket="inventories", Key=key, Body=body)
        files.append({"key": key, "size": len(body), "MD5checksum": "0"})
    manifest = {
        "sourceBucket": deployment.resources.bucket,
        "destinationBucket": "arn:aws:s3:::inventories",
        "version": "2016-11-30",
        "creationTimestamp": "1764057600000",
        "fileFormat": file_format,
        "fileSchema": schema,
        "files": files,
    }
    s3.put_object(Bucket="inventories", Key="uploads/all/2026-11-25T01-00Z/manifest.json", Body=json.dumps(manifest))
    return "s3://inventories/uploads/all/2026-11-25T01-00Z/manifest.json"


def test_an_inventory_is_read_resumed_by_file_and_row_and_orc_is_refused(
    quiet: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = quiet.resources.bucket
    objects = {key: put(quiet, key) for key in ("inv/a b.jpg", "inv/c+d.jpg", "inv/e.jpg", "inv/f.jpg", "x/g.jpg")}

    def row(key: str, *, latest: str = "true", marker: str = "false") -> list[str]:
        obj = objects.get(key, {"version_id": "old", "etag": "00", "size": 1})
        return [bucket, quote_plus(key, safe="/"), obj["version_id"], latest, marker, str(obj["size"]),
                "2026-11-20T10:00:00.000Z", obj["etag"]]  # fmt: skip

    manifest_uri = write_inventory(
        quiet,
        [
            [row("inv/a b.jpg"), row("inv/old.jpg", latest="false"), row("inv/c+d.jpg"), row("x/g.jpg")],
            [row("inv/deleted.jpg", marker="true"), row("inv/e.jpg"), row("inv/f.jpg")],
        ],
    )
    monkeypatch.setattr(backfill_cli, "CHUNK_SIZE", 2)
    interrupt_at(monkeypatch, 2)
    status, _, err = run_backfill(capsys, "--inventory", manifest_uri, "--prefix", "inv/")
    assert status == 130 and f"--inventory {manifest_uri}" in err
    (checkpoint_path,) = checkpoint_files(Path.cwd())
    saved = json.loads(checkpoint_path.read_text())
    assert saved["position"] == {"file": 0, "row": 3} and saved["total"] == 4
    monkeypatch.setattr(backfill_cli, "RateLimiter", RealRateLimiter)
    status, out, err = run_backfill(capsys, "--inventory", manifest_uri, "--prefix", "inv/")
    assert status == 0, err
    assert "listed            4 objects" in out
    records = peek(quiet)
    assert Counter(keys_of(records)) == Counter(["inv/a b.jpg", "inv/c+d.jpg", "inv/e.jpg", "inv/f.jpg"])
    for record in records:
        assert record["s3"]["object"]["versionId"] == objects[keys_of([record])[0]]["version_id"]
    # an ORC inventory is refused with a clear message
    orc = write_inventory(quiet, [[row("inv/e.jpg")]], file_format="ORC")
    status, _, err = run_backfill(capsys, "--inventory", orc, "--restart")
    assert status == 1 and "only CSV inventories can be read" in err


# --- (f) the dry run ---------------------------------------------------------------------------------------------------


def test_a_dry_run_queues_nothing_and_prints_the_estimate(
    quiet: Deployment, model: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for index in range(3):
        put(quiet, f"dry/{index}.jpg")
    done = put(quiet, "dry/done.jpg")
    real_event(quiet, "dry/done.jpg", done)
    status, out, err = run_backfill(capsys, "--prefix", "dry/", "--dry-run")
    assert status == 0, err
    assert "queued            3 objects" in out and "(dry run: would be queued)" in out
    assert "1  already described" in out
    assert "PROFILE" in out and "TOTAL" in out and "Bytes read for the estimate" in out
    assert peek(quiet) == []
    assert checkpoint_files(tmp_path) == []
    assert len(model.chat_requests) == 1
