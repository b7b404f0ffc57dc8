"""Documents end to end: wall time, pages per minute, paid requests and tokens per page, 20- and 200-page PDFs.

Runs the real handler against the stack from template.yaml in moto, as `make run` does: a PDF is put into the
uploads bucket, its S3 notification goes through the uploads queue, and MaxConcurrency (the template's default)
QueueFeeder threads drain that queue like as many concurrent function instances, each with the template's batch
size and function timeout. A long document fans out into page ranges through the same queue; the invocation
that finishes the last range assembles it and publishes one SNS notification, which a queue subscribed to the
topic receives: the wall time runs from put_object to that notification.

The model is the loopback server with a responder that takes `--model-seconds` per request and answers like a
good reader: each page's transcription is the text layer the request carried beside the page image (so
completion tokens are those of a real page of print), the summary an answer with every field unknown. Prompt
tokens are devkit.model_server.estimate_prompt_tokens (one per 28×28 patch of each image, plus the text /4).

The PDFs are letter pages of 30 lines of 10 pt Helvetica (devkit.documents.text_pdf, a real text layer), so the
renderer's child process renders real print. The first invocation (the runtime's cold start) and the first
render child are timed apart, before the documents, and are not in their figures.

    python -m benchmarks.documents                          # 20 and 200 pages, 1.0 s model, about a minute
    python -m benchmarks.documents --pages 50 --model-seconds 3 --concurrency 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "functions" / "describe_image", ROOT):  # runnable as a script, as well as from the Makefile
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import boto3  # noqa: E402

from devkit.documents import text_pdf  # noqa: E402
from devkit.lambda_emulator import DeliveryReport, QueueFeeder, queue_depth  # noqa: E402
from devkit.model_server import (  # noqa: E402
    ChatRequest,
    ModelServer,
    Reply,
    completion,
    error_reply,
    estimate_prompt_tokens,
)
from devkit.samples import SCAN_LINES  # noqa: E402
from devkit.stack import DEFAULT_TEMPLATE_PATH, StackResources, load_sam_template  # noqa: E402

LINES_PER_PAGE = 30
FONT_SIZE = 10
MARGIN = 54  # points: 3/4 in; 30 lines of 10 pt at 1.4 leading fill about two thirds of a letter page
KEY_PREFIX = "documents/"  # the `documents` profile of profiles.yaml: task document, detail high, invoice fields
POLL_SECONDS = 0.1
SETTLE_SECONDS = 10.0  # after the notification: the last deliveries delete their messages

PAGES_LINE = re.compile(r"^Pages in this request: (\d+(?:, \d+)*)$", re.MULTILINE)
TEXT_LAYER = re.compile(r'<text_layer page="(\d+)">\n(.*?)\n</text_layer>', re.DOTALL)
DOCUMENT_TEXT = re.compile(r"<document_text\b")


def template_parameter(name: str) -> str:
    """A parameter's default in template.yaml."""
    return str(load_sam_template(DEFAULT_TEMPLATE_PATH)["Parameters"][name]["Default"])


def batching_window() -> Any:
    """The SQS event source's MaximumBatchingWindowInSeconds in template.yaml (None when it sets none)."""
    resources = load_sam_template(DEFAULT_TEMPLATE_PATH)["Resources"]
    for definition in resources.values():
        for event in (definition.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") == "SQS":
                return event.get("Properties", {}).get("MaximumBatchingWindowInSeconds")
    return None


# --- The documents.


def document_pages(pages: int) -> list[list[str]]:
    """`pages` pages of LINES_PER_PAGE lines of invoice text; every line names its document and page, so no page
    of one document equals a page of another (the content cache would answer it for free)."""
    return [
        [
            f"R{pages}-{page:03d}.{line:02d}  {SCAN_LINES[(page + line) % len(SCAN_LINES)]}"
            for line in range(1, LINES_PER_PAGE + 1)
        ]
        for page in range(1, pages + 1)
    ]


# --- The model: 1 s per request, answering page requests with the pages' text layers.


def requested_pages(request: ChatRequest) -> list[int]:
    for text in request.text_parts:
        if found := PAGES_LINE.search(text):
            return [int(n) for n in found.group(1).split(", ")]
    return []


def is_summary(request: ChatRequest) -> bool:
    return any(DOCUMENT_TEXT.search(text) for text in request.text_parts)


def _field_names(request: ChatRequest) -> list[str] | None:
    """The properties of the "fields" object the summary's json_schema asks for (None: it asks for none)."""
    json_schema = (request.response_format or {}).get("json_schema")
    schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
    fields = (schema.get("properties") or {}).get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, dict):
        return None
    for option in [fields, *(fields.get("anyOf") or []), *(fields.get("oneOf") or [])]:
        if isinstance(option, dict) and isinstance(option.get("properties"), dict):
            return list(option["properties"])
    return []


class PageReader:
    """Takes `seconds` per request (the server waits, so requests overlap as they would at a provider)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, request: ChatRequest) -> Reply:
        numbers = requested_pages(request)
        if numbers:
            layers = {int(n): text for text in request.text_parts for n, text in TEXT_LAYER.findall(text)}
            pages = [
                {"page": n, "description": f"Page {n} of an invoice ledger.", "text": layers.get(n, f"Page {n}.")}
                for n in numbers
            ]
            answer: dict[str, Any] = {"pages": pages}
        elif is_summary(request):
            answer = {
                "description": "A ledger of invoices from Northwind to Harbour Street Bakery.",
                "alt_text": "Invoice ledger",
                "tags": ["invoice", "ledger"],
            }
            names = _field_names(request)
            if names is not None:
                answer["fields"] = dict.fromkeys(names)
        else:
            return error_reply(400, "neither a page request nor a summary request", "invalid_request_error")
        content = json.dumps(answer)
        body = completion(
            content,
            model=request.model or "bench",
            prompt_tokens=estimate_prompt_tokens(request),
            completion_tokens=len(content) // 4,
        )
        return Reply(body=body, delay_seconds=self.seconds)


# --- Concurrent instances: feeder threads on the uploads queue.


@dataclass
class Instances:
    """`count` QueueFeeder threads draining the uploads queue until stopped."""

    feeders: list[QueueFeeder]
    reports: list[DeliveryReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Instances:
        for index, feeder in enumerate(self.feeders):
            report = DeliveryReport()
            self.reports.append(report)
            thread = threading.Thread(target=self._run, args=(feeder, report), name=f"instance-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, feeder: QueueFeeder, report: DeliveryReport) -> None:
        while not self._stop.is_set():
            try:
                delivered = feeder.deliver_once(report)
            except Exception as exc:  # an invocation that raised: Lambda would retry the batch, so do we
                self.errors.append(f"{type(exc).__name__}: {exc}")
                delivered = 0
            if not delivered:
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=130)  # an invocation in flight ends within its function timeout

    @property
    def invocations(self) -> int:
        return sum(report.invocations for report in self.reports)

    @property
    def messages(self) -> int:
        return sum(report.messages for report in self.reports)

    @property
    def failed_items(self) -> int:
        return sum(report.failed_items for report in self.reports)


# --- One document.


@dataclass
class Result:
    pages: int
    seconds: float | None  # None: no notification within the timeout
    record: dict[str, Any] | None
    notification: dict[str, Any] | None
    requests: list[ChatRequest]
    invocations: int
    messages: int
    failed_items: int
    max_in_flight: int
    errors: list[str]
    put_at: float  # time.time() of put_object, for the requests' received_at
    instances_used: int
    concurrency: int
    batches: list[tuple[float, int, float]]  # (start after put_object, messages, seconds) of each invocation
    render_cpu: float  # CPU seconds of the render children until the notification (or the timeout)


def wait_for_notification(sqs: Any, listener: str, key: str, timeout: float) -> dict[str, Any] | None:
    """Poll the listener queue (no long poll: moto serves one request at a time) for the key's notification."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        for message in sqs.receive_message(QueueUrl=listener, MaxNumberOfMessages=10).get("Messages", []):
            sqs.delete_message(QueueUrl=listener, ReceiptHandle=message["ReceiptHandle"])
            envelope = json.loads(message["Body"])
            body = json.loads(envelope["Message"])
            if body.get("key") == key:
                attributes = {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()}
                return {"message": body, "attributes": attributes}
        time.sleep(POLL_SECONDS)
    return None


def read_record(session: boto3.session.Session, stack: StackResources, key: str) -> dict[str, Any] | None:
    from sightline.adapters.dynamodb import from_item

    item = (
        session.client("dynamodb")
        .get_item(TableName=stack.table, Key={"bucket": {"S": stack.bucket}, "key": {"S": key}})
        .get("Item")
    )
    return None if item is None else from_item(item)


def run_document(
    session: boto3.session.Session,
    stack: StackResources,
    listener: str,
    model: ModelServer,
    handler: Any,
    *,
    pages: int,
    concurrency: int,
    timeout: float,
) -> Result:
    body = text_pdf(document_pages(pages), font_size=FONT_SIZE, margin=MARGIN)
    key = f"{KEY_PREFIX}bench-{pages}-pages.pdf"
    sqs = session.client("sqs")
    batches: list[tuple[float, int, float]] = []  # (start, messages, seconds) of each invocation
    lock = threading.Lock()

    def timed(event: dict[str, Any], context: Any) -> dict[str, Any]:
        begun = time.perf_counter()
        try:
            return dict(handler(event, context))
        finally:
            with lock:
                batches.append((begun, len(event.get("Records") or []), time.perf_counter() - begun))

    feeders = [QueueFeeder.for_stack(session.client("sqs"), stack, timed) for _ in range(concurrency)]
    model.reset()
    instances = Instances(feeders).start()
    try:
        put_at = time.time()
        children_cpu = _children_cpu()
        started = time.perf_counter()
        session.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body, ContentType="application/pdf")
        notification = wait_for_notification(sqs, listener, key, timeout)
        seconds = time.perf_counter() - started if notification is not None else None
        render_cpu = _children_cpu() - children_cpu  # every render child has exited and been waited for by now
        if notification is None:  # what there is at the timeout, before the instances are stopped
            record, requests = read_record(session, stack, key), model.chat_requests
            counts = (instances.invocations, instances.messages, instances.failed_items)
        else:
            settle = time.monotonic() + SETTLE_SECONDS
            while queue_depth(sqs, stack.queue_url) and time.monotonic() < settle:
                time.sleep(POLL_SECONDS)
    finally:
        instances.stop()
    if notification is not None:
        record, requests = read_record(session, stack, key), model.chat_requests
        counts = (instances.invocations, instances.messages, instances.failed_items)
    return Result(
        pages=pages,
        seconds=seconds,
        record=record,
        notification=notification,
        requests=requests,
        invocations=counts[0],
        messages=counts[1],
        failed_items=counts[2],
        max_in_flight=model.max_in_flight,
        errors=instances.errors,
        put_at=put_at,
        instances_used=sum(1 for report in instances.reports if report.invocations),
        concurrency=concurrency,
        batches=sorted((begun - started, count, took) for begun, count, took in batches),
        render_cpu=render_cpu,
    )


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished child processes: the render children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- Printing.


def report(result: Result, model_seconds: float, timeout: float, queue_left: int, dead_letters: int) -> bool:
    record = result.record or {}
    document = record.get("document") if isinstance(record.get("document"), dict) else {}
    assert isinstance(document, dict)
    page_requests = [r for r in result.requests if requested_pages(r) and r.images]
    summaries = [r for r in result.requests if is_summary(r)]
    others = len(result.requests) - len(page_requests) - len(summaries)  # text-only repairs and the like
    images = Counter(len(r.images) for r in page_requests)
    pages = int(document.get("pages") or result.pages)
    print(f"\n{result.pages}-page PDF ({LINES_PER_PAGE} lines of {FONT_SIZE} pt Helvetica a page)")
    if result.seconds is None:
        print(
            f"  !! no SNS notification within {timeout:.0f}s (--timeout); at that moment: record status"
            f" {record.get('status')!r}, {len(page_requests)} page request(s) and {len(summaries)} summary request(s)"
            f" made; after stopping the instances {queue_left} message(s) were left on the uploads queue,"
            f" {dead_letters} in the dead-letter queue. The figures below are of that moment, not of a finished"
            " document."
        )
    else:
        print(
            f"  wall clock, put_object → notification: {result.seconds:.1f}s"
            f" ({pages / result.seconds * 60:.0f} pages/min)"
        )
        sequential = len(result.requests) * model_seconds
        print(
            f"  the same requests one at a time would take {sequential:.0f}s of model time alone"
            f" ({sequential / result.seconds:.1f}× the wall clock)"
        )
    ranges = document.get("ranges")
    print(
        f"  pages {pages}, ranges {ranges}; {result.invocations} invocation(s) on {result.instances_used} of"
        f" {result.concurrency} instances delivered {result.messages} message(s)"
        f" ({result.failed_items} reported as item failures and redelivered)"
    )
    shown = "; ".join(f"at {begun:.1f}s {count} msg {took:.1f}s" for begun, count, took in result.batches[:12])
    more = f"; … {len(result.batches) - 12} more" if len(result.batches) > 12 else ""
    print(f"  invocations (start after put_object, messages in the batch, duration): {shown}{more}")
    cpus = os.cpu_count() or 1
    print(
        f"  render children: {result.render_cpu:.1f} CPU-s on {cpus} CPU(s) here, i.e. at least"
        f" {result.render_cpu / cpus:.1f}s of the wall clock if nothing else ran"
    )
    if page_requests:
        first = min(r.received_at for r in page_requests) - result.put_at
        fanned_out = result.pages > int(os.environ.get("DOCUMENT_RANGE_PAGES") or 0)
        path = "the upload's render of the first range, fan-out, a range's render" if fanned_out else "render"
        print(f"  first page request {first:.1f}s after put_object ({path})")
    per_request = ", ".join(f"{count}× {n} image{'s' if n != 1 else ''}" for n, count in sorted(images.items()))
    mean_images = sum(n * count for n, count in images.items()) / len(page_requests) if page_requests else 0.0
    print(
        f"  paid model requests: {len(result.requests)} = {len(page_requests)} page + {len(summaries)} summary"
        + (f" + {others} other (repairs)" if others else "")
        + f"; page images per page request {mean_images:.2f} ({per_request or 'none'});"
        f" at most {result.max_in_flight} in flight"
    )
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    if usage.get("model_calls"):
        prompt, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        summary_prompt = sum(estimate_prompt_tokens(r) for r in summaries)
        print(
            f"  tokens per page (record usage / pages): {prompt / pages:,.0f} prompt + {completion_tokens / pages:,.0f}"
            f" completion ({prompt:,} + {completion_tokens:,} in {usage['model_calls']} call(s) in the record;"
            f" the summary's prompt is {summary_prompt:,} of them)"
        )
    else:
        print("  tokens per page: the record holds no usage")
    status = record.get("status")
    succeeded = document.get("pages_succeeded")
    failed = document.get("pages_failed") or []
    print(
        f"  status {status}; pages succeeded {succeeded}, failed {len(failed)}"
        + (f"; notification says {result.notification['attributes'].get('status')}" if result.notification else "")
    )
    for error in result.errors[:5]:
        print(f"  !! an invocation raised: {error}")
    return result.seconds is not None and status == "succeeded" and not result.errors


def cold_start(session: boto3.session.Session, stack: StackResources, handler: Any) -> None:
    """The first invocation builds the runtime (settings, clients, profiles, the openai client's models): deliver
    S3's test event with it. Then the renderer's first child process, and a second one, on a one-page PDF."""
    from sightline.adapters.page_renderer import render_document
    from sightline.settings import load_settings

    feeder = QueueFeeder.for_stack(session.client("sqs"), stack, handler)
    started = time.perf_counter()
    report = feeder.drain(idle_polls=1, max_seconds=30)
    first = time.perf_counter() - started
    what = "s3:TestEvent" if report.messages else "no message: the queue was empty"
    settings = load_settings()
    one_page = text_pdf(document_pages(1), font_size=FONT_SIZE, margin=MARGIN)
    renders = []
    for _ in range(2):
        started = time.perf_counter()
        render_document(
            one_page,
            max_pages=settings.document_max_pages,
            max_pixels=settings.max_image_pixels,
            page_seconds=settings.render_page_seconds,
            document_seconds=settings.render_document_seconds,
            memory_mb=settings.render_memory_mb,
        )
        renders.append(time.perf_counter() - started)
    print(
        f"cold start (not in the figures below): first invocation {first:.2f}s ({what}, builds the runtime);"
        f" a render child for a one-page PDF: first {renders[0]:.2f}s, next {renders[1]:.2f}s"
        " (every page range starts one)"
    )


def subscribe_listener(session: boto3.session.Session, topic_arn: str) -> str:
    sqs = session.client("sqs")
    url = sqs.create_queue(QueueName="bench-notification-listener")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    session.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, nargs="+", default=[20, 200], help="page counts, one PDF each")
    parser.add_argument("--model-seconds", type=float, default=1.0, help="seconds the model takes per request")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(template_parameter("MaxConcurrency")),
        help="concurrent function instances (default: template.yaml's MaxConcurrency default)",
    )
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds to wait for each document's notification")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or any(n < 1 for n in args.pages):
        parser.error("--concurrency and --pages must be positive")
    os.environ.update(
        POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="ERROR"
    )
    warnings.filterwarnings("ignore", message="No application metrics to publish")  # S3's test event has none

    from devkit.run import REGION, emulated_aws
    from devkit.stack import deploy_stack

    with emulated_aws() as endpoint, ModelServer(PageReader(args.model_seconds)) as model:
        session = boto3.session.Session(region_name=REGION)
        stack = deploy_stack(session, endpoint_url=endpoint)
        os.environ.update(stack.function_environment, MODEL_BASE_URL=model.base_url, MODEL_API_KEY="bench")
        os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
        import app

        listener = subscribe_listener(session, stack.topic_arn)
        env = stack.function_environment
        print(
            f"Stack from template.yaml in moto; {args.concurrency} concurrent instance(s) (MaxConcurrency default"
            f" {template_parameter('MaxConcurrency')}), batch size {stack.batch_size}, function timeout"
            f" {stack.function_timeout}s; DOCUMENT_RANGE_PAGES {env.get('DOCUMENT_RANGE_PAGES')},"
            f" DOCUMENT_CONCURRENCY {env.get('DOCUMENT_CONCURRENCY')} (page requests at once per range);"
            f" model {args.model_seconds:g}s per request; {os.cpu_count()} CPU(s) render"
        )
        window = batching_window()
        if window:
            print(
                f"not emulated: the event source's batching window ({window}s in template.yaml), during which Lambda"
                " may hold a batch that is not full; a feeder here takes what the queue holds at once"
            )
        cold_start(session, stack, app.lambda_handler)
        ok = True
        sqs = session.client("sqs")
        for pages in args.pages:
            result = run_document(
                session,
                stack,
                listener,
                model,
                app.lambda_handler,
                pages=pages,
                concurrency=args.concurrency,
                timeout=args.timeout,
            )
            left, dead = queue_depth(sqs, stack.queue_url), queue_depth(sqs, stack.dlq_url)
            ok = report(result, args.model_seconds, args.timeout, left, dead) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
