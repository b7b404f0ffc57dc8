"""`make run`: the whole pipeline on this machine — emulated AWS from template.yaml, sample uploads, the real handler.

No AWS account and no API key needed. With MODEL_API_KEY set, the model is whatever OpenAI-compatible
provider MODEL_BASE_URL names (Novita by default); without one, an embedded loopback endpoint answers
with real offline OCR and says plainly that no caption model is configured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
REPO = Path(__file__).resolve().parent.parent
GALLERY_DIR = REPO / ".build" / "gallery"  # `make run` writes the review gallery of its samples here


def free_port() -> int:
    """A port nothing listens on, on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AtomicRequests:
    """WSGI middleware that lets moto handle one request at a time.

    Each AWS request is atomic: a DynamoDB conditional write, an SQS receive. Moto's backends are not
    thread-safe (two concurrent ReceiveMessage calls were seen to hand out and then lose the same message;
    concurrent conditional writes can both pass), so without this the emulator, not the code under test,
    would break exactly-once. Clients stay concurrent; only moto's work is serialised.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))  # the body is produced inside the lock too


def _atomic_moto_server(port: int) -> Any:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler, ThreadedMotoServer
    from werkzeug.serving import make_server

    class AtomicMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # ThreadedMotoServer's own, with the app wrapped
            app = AtomicRequests(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return AtomicMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


@contextlib.contextmanager
def emulated_aws() -> Iterator[str]:
    """A moto server on loopback, with fake credentials so nothing can reach a real account."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    port = free_port()
    server = _atomic_moto_server(port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_SESSION_TOKEN="local",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_ENDPOINT_URL=endpoint,  # every boto3 client, the handler's included, goes to moto
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield endpoint
    finally:
        server.stop()


@contextlib.contextmanager
def model_endpoint() -> Iterator[tuple[str, str]]:
    """(base URL, what it is): a real provider when a key is given, else the embedded OCR endpoint."""
    if os.environ.get("MODEL_API_KEY"):
        from sightline.settings import DEFAULT_MODEL_BASE_URL

        url = os.environ.get("MODEL_BASE_URL") or DEFAULT_MODEL_BASE_URL
        yield url, f"{url} (MODEL_API_KEY given)"
        return
    from devkit.model_server import ModelServer
    from devkit.ocr_model import OcrResponder

    responder = OcrResponder()
    # The OCR engine (onnxruntime) is built here, in the main thread, not lazily in a request thread: its native
    # thread pool then belongs to the thread that outlives every request, and tears down cleanly at exit.
    responder.warm_up()
    with ModelServer(responder) as server:
        yield server.base_url, f"{server.base_url} (embedded offline OCR endpoint; no caption model configured)"


def _subscribe_listener(session: boto3.session.Session, topic_arn: str) -> str:
    """A queue subscribed to the results topic, standing in for a subscriber."""
    sqs = session.client("sqs")
    url = sqs.create_queue(QueueName="local-notification-listener")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    session.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def _scan_records(session: boto3.session.Session, table: str) -> list[dict[str, Any]]:
    from sightline.adapters.dynamodb import from_item

    return [from_item(item) for item in session.client("dynamodb").scan(TableName=table)["Items"]]


PAGE_STATUSES_SHOWN = 20  # pages listed one by one; a longer document is shown as runs of equal statuses


def _page_statuses(document: dict[str, Any]) -> str:
    """ "1 ✓ 2 ✓ 3 ✗(ModelTimeout)"; past PAGE_STATUSES_SHOWN pages, runs: "1–187 ✓ 188 ✗(…) 189–600 ✓", and
    when those are too many as well, the counts and the first failed pages."""
    statuses = [str(status) for status in document.get("page_statuses") or []]
    errors = {
        error.get("page"): error.get("error_type")
        for error in document.get("page_errors") or []
        if isinstance(error, dict)
    }

    def mark(number: int, status: str) -> str:
        if status == "succeeded":
            return "✓"
        return f"✗({errors[number]})" if errors.get(number) else "✗"

    marks = [mark(number, status) for number, status in enumerate(statuses, start=1)]
    if len(marks) <= PAGE_STATUSES_SHOWN:
        return " ".join(f"{number} {m}" for number, m in enumerate(marks, start=1))
    runs: list[tuple[int, int, str]] = []  # (first page, last page, mark)
    for number, m in enumerate(marks, start=1):
        if runs and runs[-1][2] == m:
            runs[-1] = (runs[-1][0], number, m)
        else:
            runs.append((number, number, m))
    if len(runs) <= PAGE_STATUSES_SHOWN:
        return " ".join(f"{first} {m}" if first == last else f"{first}–{last} {m}" for first, last, m in runs)
    failed = [f"{number} {m}" for number, m in enumerate(marks, start=1) if m != "✓"]
    listed = ", ".join(failed[:PAGE_STATUSES_SHOWN]) + (" …" if len(failed) > PAGE_STATUSES_SHOWN else "")
    return f"{len(marks) - len(failed)} ✓, {len(failed)} ✗: {listed}"


def _print_document(record: dict[str, Any]) -> None:
    document = record.get("document")
    if not isinstance(document, dict):
        return
    pages = document.get("pages")
    statuses = document.get("page_statuses") or []
    failed = len(document.get("pages_failed") or [])
    succeeded = document.get("pages_succeeded", sum(1 for status in statuses if status == "succeeded"))
    kind = str(document.get("kind") or "document").upper()
    print(f"   document: {kind}, {pages} page{'' if pages == 1 else 's'} ({succeeded} succeeded, {failed} failed)")
    if statuses:
        print(f"   page statuses: {_page_statuses(document)}")
    summary_error = record.get("summary_error")
    if isinstance(summary_error, dict):
        print(f"   summary error: {summary_error.get('error_type')}: {summary_error.get('error_message')}")
    if record.get("result_uri"):
        print(f"   result: {record['result_uri']}")
    if record.get("result_markdown_uri"):
        print(f"   markdown: {record['result_markdown_uri']}")


def _print_record(record: dict[str, Any], expected: str | None) -> None:
    image = record.get("image", {})
    usage = record.get("usage", {})
    status = record.get("status")
    mark = "ok " if expected in (None, status) else "!! "  # a `partial` document is a mismatch for `succeeded`
    print(f"\n{mark}s3://{record.get('bucket')}/{record.get('key')}")
    print(f"   status: {status}" + (f" (expected {expected})" if expected else ""))
    if "profile" in record:
        context = " with context from the object's metadata" if record.get("context_used") else ""
        print(
            f"   profile: {record['profile']} (task {record.get('task')}, language {record.get('language')}){context}"
        )
    _print_document(record)
    if status == "failed":
        print(f"   error: {record.get('error_type')}: {record.get('error_message')}")
    else:  # succeeded, or a `partial` document: what it has is printed the same way
        print(f"   description: {record.get('description', '')}")
        print(f"   alt_text: {record.get('alt_text', '')}")
        text = str(record.get("text") or "").replace("\n", " | ")
        label = "text preview" if "document" in record else "text"
        print(f"   {label} ({'has text' if record.get('has_text') else 'none'}): {text[:200]}")
        print(f"   tags: {', '.join(record.get('tags') or [])}")
        if record.get("decorative"):
            print("   decorative: true (alt text empty by design)")
        if "fields" in record:
            print(f"   fields: {json.dumps(record['fields'], ensure_ascii=False)}")
    if image:
        print(
            f"   image: {image.get('format')} {image.get('original_width')}×{image.get('original_height')}"
            f" → sent {image.get('sent_width')}×{image.get('sent_height')} ({image.get('detail_sent')}),"
            f" {image.get('bytes_sent', 0):,} bytes base64, ≈{image.get('estimated_image_tokens')} image tokens"
        )
    if usage.get("model_calls"):
        print(
            f"   usage: {usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion tokens"
            f" in {usage['model_calls']} call(s), {record.get('model_latency_ms')} ms"
        )


def _profile_summary(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per profile: its job, and how its objects ended."""
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_profile.setdefault(str(record.get("profile", "-")), []).append(record)
    lines = []
    for name, group in sorted(by_profile.items()):
        statuses = Counter(record["status"] for record in group)
        first = group[0]
        ended = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        lines.append(f"{name:<10} task {first.get('task', '-'):<9} language {first.get('language', '-'):<6} {ended}")
    return lines


def write_sample_gallery(records: list[dict[str, Any]], s3_client: Any, out_dir: Path = GALLERY_DIR) -> Path:
    """The review gallery of the run's records (`sightline report`'s page), thumbnails read from the bucket."""
    from sightline.pricing import load_prices
    from sightline.profiles import load_profiles_file
    from sightline.settings import load_settings
    from sightline_cli.report import write_gallery

    settings = load_settings(require_stack=False)
    return write_gallery(
        records,
        s3_client=s3_client,
        out_dir=out_dir,
        profiles=load_profiles_file(settings.profiles_file),
        prices=load_prices(settings.pricing_file),
        settings=settings,
        source="the local run's results table",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print records and notifications as JSON")
    parser.add_argument("--verbose", action="store_true", help="show the function's structured logs")
    args = parser.parse_args(argv)

    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

    with emulated_aws() as endpoint, model_endpoint() as (model_url, model_label):
        from devkit.lambda_emulator import QueueFeeder, queue_depth, read_sns_notifications
        from devkit.samples import build_samples, upload_sample
        from devkit.stack import deploy_stack

        session = boto3.session.Session(region_name=REGION)
        started = time.perf_counter()
        stack = deploy_stack(session, endpoint_url=endpoint)
        print(f"AWS emulated by moto at {endpoint}: stack from template.yaml in {time.perf_counter() - started:.1f}s")
        print(f"  bucket {stack.bucket}\n  table  {stack.table}\n  topic  {stack.topic_arn}")
        print(f"Model: {model_url}")
        print(f"  {model_label}")
        listener = _subscribe_listener(session, stack.topic_arn)

        # The function's environment exactly as template.yaml sets it, plus the local model endpoint.
        os.environ.update(stack.function_environment)
        os.environ["MODEL_BASE_URL"] = model_url
        os.environ["POWERTOOLS_LOG_LEVEL"] = "INFO" if args.verbose else "ERROR"
        import app

        samples = build_samples()
        s3 = session.client("s3")
        for sample in samples:
            upload_sample(s3, stack.bucket, sample)
        print(f"\nUploaded {len(samples)} samples; delivering their notifications through the queue to the handler…")

        feeder = QueueFeeder.for_stack(session.client("sqs"), stack, app.lambda_handler)
        report = feeder.drain()
        print(
            f"{report.invocations} invocation(s), {report.messages} message(s),"
            f" {report.failed_items} item failure(s); batch times: "
            + ", ".join(f"{seconds:.2f}s" for seconds in report.batch_seconds)
        )

        records = {record["key"]: record for record in _scan_records(session, stack.table)}
        notifications = read_sns_notifications(session.client("sqs"), listener)
        expected = {sample.key: sample.expect for sample in samples}
        if args.json:
            print(
                json.dumps({"records": list(records.values()), "notifications": notifications}, default=str, indent=2)
            )
        else:
            print("\nRecords in DynamoDB:")
            for key in expected:
                if key in records:
                    _print_record(records[key], expected[key])
                else:
                    print(f"\n!! s3://{stack.bucket}/{key}\n   no record (expected {expected[key]})")
            print("\nBy profile (profiles.yaml maps key prefixes to a job):")
            for line in _profile_summary(records.values()):
                print(f"  {line}")
            print("\nNotifications on SNS (via a subscribed queue):")
            for notification in notifications:
                message = notification["message"]
                print(f"  {json.dumps(notification['attributes'])}  {message['key']}")

        gallery = write_sample_gallery(list(records.values()), s3)
        dead_letters = queue_depth(session.client("sqs"), stack.dlq_url)
        mismatches = [key for key, status in expected.items() if records.get(key, {}).get("status") != status]
        print(
            f"\n{len(records)} records, {len(notifications)} notifications, {dead_letters} in the dead-letter queue;"
            f" {len(expected) - len(mismatches)}/{len(expected)} samples ended as expected."
        )
        print(f"\nThe review gallery of the samples, to open in a browser:\n  {gallery}")
        return 1 if mismatches or len(notifications) != len(records) else 0


if __name__ == "__main__":
    sys.exit(main())
