"""Documents end to end: the real handler, the stack from template.yaml in moto, the PDF renderer in its child
process, and an OpenAI-compatible server on loopback reached through the real openai client."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

import app
from devkit.documents import encrypted_pdf, image_pdf, multipage_tiff, text_pdf
from devkit.lambda_emulator import FakeLambdaContext, lambda_sqs_event
from devkit.model_server import ChatRequest, Reply, completion
from tests.conftest import Deployment
from tests.integration.test_pipeline import deliver, depth

pytestmark = pytest.mark.integration

PAGES_LINE = re.compile(r"^Pages in this request: (\d+(?:, \d+)*)$", re.MULTILINE)


def requested_pages(request: ChatRequest) -> list[int]:
    for text in request.text_parts:
        if found := PAGES_LINE.search(text):
            return [int(n) for n in found.group(1).split(", ")]
    return []


def page_reader(*, skip: frozenset[int] = frozenset()) -> Any:
    """A model that answers every page it is shown with that page's number in its text (but the pages in
    `skip`), and a summary request with a summary."""

    def respond(request: ChatRequest) -> Reply:
        numbers = requested_pages(request)
        if numbers:
            assert len(request.images) in (0, len(numbers)) and len(numbers) <= 2  # no image: a text-only repair
            pages = [
                {"page": n, "description": f"Page {n}.", "text": f"Text of page {n}."} for n in numbers if n not in skip
            ]
            content = json.dumps({"pages": pages})
        else:
            assert not request.images  # the summary pass is text only
            content = json.dumps(
                {
                    "description": "An invoice from ACME.",
                    "fields": {"invoice_number": "2024-117", "total": 119.0, "currency": "EUR", "invoice_date": None},
                    "alt_text": "Invoice 2024-117",
                    "tags": ["invoice"],
                }
            )
        return Reply(body=completion(content, model="m", prompt_tokens=1000, completion_tokens=50))

    return respond


def put(deployment: Deployment, key: str, body: bytes) -> dict[str, Any]:
    return deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key=key, Body=body)


def read_result(deployment: Deployment, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return deployment.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def lines(page: int) -> list[str]:
    return [f"Quarterly report page {page}", f"Revenue grew {page * 3} percent", "Signed by the board"]


def test_a_pdf_with_a_text_layer_is_read_page_by_page_and_its_result_written(
    deployment: Deployment, function_env, model
) -> None:
    put(deployment, "documents/report.pdf", text_pdf([lines(n) for n in (1, 2, 3)]))
    model.responder.default = page_reader()
    report = deliver(deployment)
    assert report.failed_items == 0
    record = deployment.record("documents/report.pdf")
    assert record["status"] == "succeeded" and record["task"] == "document"
    assert record["document"]["pages"] == 3 and record["document"]["page_statuses"] == ["succeeded"] * 3
    assert record["document"]["text_layer_pages"] == 3
    assert record["fields"] == {"invoice_number": "2024-117", "total": 119, "currency": "EUR", "invoice_date": None}
    # At most two page images per request, each page once, then one text-only summary.
    page_requests = [requested_pages(r) for r in model.chat_requests if requested_pages(r)]
    assert sorted(page_requests) == [[1, 2], [3]] and len(model.chat_requests) == 3
    # The text layer went beside its page, as an anchor.
    (first,) = [r for r in model.chat_requests if requested_pages(r) == [1, 2]]
    assert any("Revenue grew 6 percent" in text and 'page="2"' in text for text in first.text_parts)
    # The result in the results bucket: per-page JSON (with the text layer) and Markdown.
    assert record["result_uri"].startswith(f"s3://{deployment.resources.results_bucket}/results/")
    result = json.loads(read_result(deployment, record["result_uri"]))
    assert [p["page"] for p in result["pages"]] == [1, 2, 3]
    assert "Revenue grew 9 percent" in result["pages"][2]["text_layer"]
    markdown = read_result(deployment, record["result_markdown_uri"]).decode()
    assert "<!-- page 3 -->" in markdown and "Text of page 3." in markdown
    (notification,) = deployment.received_notifications()
    message = notification["message"]
    assert message["result_uri"] == record["result_uri"] and message["pages"] == 3 and message["pages_failed"] == []


def test_a_scanned_pdf_and_a_multipage_tiff_are_read_on_every_page(deployment: Deployment, function_env, model) -> None:
    put(deployment, "scans/scan.pdf", image_pdf(3))
    put(deployment, "scans/fax.tif", multipage_tiff(3))
    model.responder.default = page_reader()
    deliver(deployment)
    scan, fax = deployment.record("scans/scan.pdf"), deployment.record("scans/fax.tif")
    assert scan["status"] == "succeeded" and scan["document"]["kind"] == "pdf" and scan["document"]["pages"] == 3
    assert scan["document"]["text_layer_pages"] == 0
    assert fax["status"] == "succeeded" and fax["document"]["kind"] == "tiff" and fax["document"]["pages"] == 3
    assert "Text of page 3." in fax["text"]


def test_documents_that_cannot_be_read_are_failed_records_with_a_reason(
    deployment: Deployment, function_env, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sightline.composition import get_runtime

    monkeypatch.setenv("DOCUMENT_MAX_PAGES", "3")
    monkeypatch.setenv("RENDER_PAGE_SECONDS", "2")
    monkeypatch.setenv("SIGHTLINE_RENDER_TEST_HANG", "1")  # honoured by the render worker only
    get_runtime.cache_clear()
    put(deployment, "documents/locked.pdf", encrypted_pdf([["Secret"]], user_password="pw"))
    put(deployment, "documents/long.pdf", text_pdf([[f"Page {n}"] for n in range(1, 5)]))
    put(deployment, "documents/hangs.pdf", text_pdf([["Only page"]]))
    model.responder.default = page_reader()
    report = deliver(deployment)
    assert report.failed_items == 0 and depth(deployment, deployment.resources.dlq_url) == 0
    locked = deployment.record("documents/locked.pdf")
    assert locked["status"] == "failed" and locked["error_type"] == "EncryptedDocument"
    long = deployment.record("documents/long.pdf")
    assert long["error_type"] == "TooManyPages" and "3" in long["error_message"]
    hangs = deployment.record("documents/hangs.pdf")
    assert hangs["status"] == "failed" and hangs["error_type"] == "RendererFailed"
    assert "page 1" in hangs["error_message"]
    assert model.chat_requests == []  # nothing was paid for
    assert {n["message"]["key"]: n["attributes"]["status"] for n in deployment.received_notifications()} == {
        "documents/locked.pdf": "failed",
        "documents/long.pdf": "failed",
        "documents/hangs.pdf": "failed",
    }


def test_a_page_that_crashes_the_renderer_fails_alone_and_the_document_is_partial(
    deployment: Deployment, function_env, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_RENDER_TEST_CRASH", "2")
    put(deployment, "documents/crash.pdf", text_pdf([lines(n) for n in (1, 2, 3)]))
    model.responder.default = page_reader()
    deliver(deployment)
    record = deployment.record("documents/crash.pdf")
    assert record["status"] == "partial" and record["document"]["pages_failed"] == [2]
    assert record["document"]["page_errors"][0]["error_type"] == "RendererFailed"
    # The pages that rendered are asked together, in order.
    assert [requested_pages(r) for r in model.chat_requests if requested_pages(r)] == [[1, 3]]
    (notification,) = deployment.received_notifications()
    assert notification["attributes"]["status"] == "partial" and notification["message"]["pages_failed"] == [2]


def test_a_page_the_model_keeps_skipping_fails_with_its_reason(deployment: Deployment, function_env, model) -> None:
    put(deployment, "documents/skip.pdf", text_pdf([lines(n) for n in (1, 2, 3, 4)]))
    model.responder.default = page_reader(skip=frozenset({3}))
    deliver(deployment)
    record = deployment.record("documents/skip.pdf")
    assert record["status"] == "partial" and record["document"]["pages_failed"] == [3]
    assert record["document"]["page_errors"][0]["error_type"] == "PageSkipped"
    markdown = read_result(deployment, record["result_markdown_uri"]).decode()
    assert "Page 3 could not be read" in markdown and "Text of page 4." in markdown


# --- Fan-out through the uploads queue.


def receive_all(deployment: Deployment) -> list[dict[str, Any]]:
    sqs = deployment.client("sqs")
    found = []
    while messages := sqs.receive_message(
        QueueUrl=deployment.resources.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    ).get("Messages", []):
        for message in messages:
            if "s3:TestEvent" not in message["Body"]:  # S3 tests the queue when the stack sets it up
                found.append(message)
            sqs.delete_message(QueueUrl=deployment.resources.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


def invoke(deployment: Deployment, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return app.lambda_handler(lambda_sqs_event(messages, deployment.resources.queue_arn), FakeLambdaContext())


def is_range(message: dict[str, Any]) -> bool:
    return json.loads(message["Body"]).get("type") == "sightline.page-range"


@pytest.fixture
def small_ranges(function_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from sightline.composition import get_runtime

    monkeypatch.setenv("DOCUMENT_RANGE_PAGES", "2")
    get_runtime.cache_clear()


def test_a_long_document_fans_out_and_is_assembled_once_despite_duplicates_and_reordering(
    deployment: Deployment, small_ranges, model
) -> None:
    put(deployment, "documents/long.pdf", text_pdf([lines(n) for n in range(1, 6)]))
    model.responder.default = page_reader()
    (upload,) = receive_all(deployment)
    assert invoke(deployment, [upload]) == {"batchItemFailures": []}
    ranges = receive_all(deployment)
    assert len(ranges) == 3 and all(is_range(m) for m in ranges)
    assert deployment.record("documents/long.pdf")["status"] == "processing"
    # S3 delivers the upload's event again: nothing is sent twice.
    assert invoke(deployment, [upload]) == {"batchItemFailures": []} and receive_all(deployment) == []
    # Every range twice, in a shuffled order, in several batches.
    deliveries = ranges + ranges
    random.Random(3).shuffle(deliveries)
    for batch in (deliveries[:2], deliveries[2:5], deliveries[5:]):
        assert invoke(deployment, batch) == {"batchItemFailures": []}
    record = deployment.record("documents/long.pdf")
    assert record["status"] == "succeeded" and record["document"]["ranges"] == 3
    assert record["document"]["page_statuses"] == ["succeeded"] * 5
    page_requests = sorted(requested_pages(r) for r in model.chat_requests if requested_pages(r))
    assert page_requests == [[1, 2], [3, 4], [5]]  # each page paid once
    notifications = deployment.received_notifications()
    assert len(notifications) == 1 and notifications[0]["message"]["pages"] == 5


def test_the_queue_alone_finishes_a_long_document(deployment: Deployment, small_ranges, model) -> None:
    put(deployment, "documents/long.pdf", text_pdf([lines(n) for n in range(1, 8)]))
    model.responder.default = page_reader()
    report = deliver(deployment)
    assert report.failed_items == 0
    record = deployment.record("documents/long.pdf")
    assert record["status"] == "succeeded" and record["document"]["pages"] == 7 and record["document"]["ranges"] == 4
    assert len(deployment.received_notifications()) == 1


def test_a_newer_version_mid_document_wins_and_the_stale_ranges_are_dropped(
    deployment: Deployment, small_ranges, model
) -> None:
    put(deployment, "documents/v.pdf", text_pdf([lines(n) for n in range(1, 6)]))
    model.responder.default = page_reader()
    (first_upload,) = receive_all(deployment)
    invoke(deployment, [first_upload])
    old_ranges = receive_all(deployment)
    invoke(deployment, old_ranges[:1])
    # Version 2 (one page) arrives while version 1's ranges are in flight.
    newer = put(deployment, "documents/v.pdf", text_pdf([["Version two"]]))
    (second_upload,) = receive_all(deployment)
    invoke(deployment, [second_upload])
    assert invoke(deployment, old_ranges[1:]) == {"batchItemFailures": []}
    record = deployment.record("documents/v.pdf")
    assert record["status"] == "succeeded" and record["object"]["version_id"] == newer["VersionId"]
    assert record["document"]["pages"] == 1
    notifications = deployment.received_notifications()
    assert [n["message"]["version_id"] for n in notifications] == [newer["VersionId"]]


def test_images_can_reach_the_model_by_presigned_url(
    deployment: Deployment, function_env, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sightline.composition import get_runtime

    monkeypatch.setenv("MODEL_IMAGE_TRANSPORT", "url")
    get_runtime.cache_clear()
    put(deployment, "documents/by-url.pdf", text_pdf([lines(n) for n in (1, 2)]))
    model.responder.default = page_reader()
    deliver(deployment)
    assert deployment.record("documents/by-url.pdf")["status"] == "succeeded"
    (request,) = [r for r in model.chat_requests if requested_pages(r)]
    urls = [part["image_url"]["url"] for part in request.body["messages"][-1]["content"] if part["type"] == "image_url"]
    assert len(urls) == 2 and all(url.startswith("http://127.0.0.1") and "page-images/" in url for url in urls)
    assert all(image.url for image in request.images)  # fetched by the model server, not sent inline
