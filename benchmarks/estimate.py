"""The cost estimate against the bill, object by object: probe (bytes read), estimate, then the real pipeline.

Uploads the sample corpus of `make run` (devkit.samples; with `--extra`, also a 24 MP photo, a scanned A4 page,
a three-page TIFF and a 10-page text PDF) to the stack from template.yaml in moto, probes each object as
`sightline backfill --dry-run` does (`sightline_cli.probe.probe_object`: ranged GETs of its first bytes) and
estimates it (`sightline.estimate.estimate_object`, with the options of the profile its key and metadata choose).
Then the objects' notifications go through the uploads queue to the real handler (devkit QueueFeeder), against
the embedded offline OCR endpoint of `make run` (devkit.ocr_model), and each record's billed usage is put beside
its estimate. Last, `sightline usage` for the same table: the estimate from what the records keep.

"Billed" here is the emulated provider's count (devkit.model_server.estimate_prompt_tokens: one token per
28×28 patch of each image plus the request's text / 4 plus 50; output: the answer's characters / 4). The error
therefore measures the probe, the sizing and the prompt accounting (which images are sent at which size, which
requests are made, how much text they carry), not a real provider's tokenizer or a real model's answers.

    python -m benchmarks.estimate            # the sample corpus, about a minute (offline OCR of every image)
    python -m benchmarks.estimate --extra    # and four larger objects
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "functions" / "describe_image", ROOT):  # runnable as a script, as well as from the Makefile
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import boto3  # noqa: E402

from devkit.samples import Sample, build_samples, upload_sample  # noqa: E402
from sightline.estimate import Estimate, EstimateReport, ObjectShape, estimate_object, human_bytes  # noqa: E402
from sightline_cli.probe import Probe, probe_object  # noqa: E402

METADATA_PROFILE = "sightline-profile"
METADATA_CONTEXT = "sightline-context"


@dataclass
class Row:
    sample: Sample
    profile: str
    probe: Probe
    estimate: Estimate
    record: dict[str, Any] | None = None


def extra_samples() -> list[Sample]:
    """Larger objects than the demo's: a photo, a scan, a multi-page TIFF and a longer PDF with a text layer."""
    from PIL import Image

    from devkit.documents import multipage_tiff, text_pdf
    from devkit.samples import SCAN_LINES, scanned_page

    def jpeg(image: Image.Image, quality: int = 90) -> bytes:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        return out.getvalue()

    photo = Image.linear_gradient("L").resize((6000, 4000)).convert("RGB")
    # Ten pages: more than a range (DOCUMENT_RANGE_PAGES, 8), so the document fans out as in production. A dozen
    # lines a page keeps the offline OCR of a page request within the function's model timeout.
    lines = [f"{number:02d}  {SCAN_LINES[number % len(SCAN_LINES)]}" for number in range(12)]
    pages = [[f"Report page {page}", *lines] for page in range(1, 11)]
    return [
        Sample("photos/extra/24mp.jpg", jpeg(photo), "image/jpeg", "succeeded"),
        Sample("scans/extra/a4-300dpi.jpg", jpeg(scanned_page()), "image/jpeg", "succeeded"),
        Sample("scans/extra/fax.tif", multipage_tiff(3), "image/tiff", "succeeded"),
        Sample("documents/extra/report-10.pdf", text_pdf(pages, font_size=10), "application/pdf", "succeeded"),
    ]


def shape_text(probe: Probe) -> str:
    shape: ObjectShape = probe.shape
    if shape.refusal:
        return f"refused ({shape.refusal[:40]})"
    if shape.kind == "image":
        return f"{probe.format or 'image'} {shape.width}×{shape.height}"
    if shape.kind == "pdf":
        layer = f", layer {shape.text_layer_chars:,} ch" if shape.text_layer_chars is not None else ""
        return f"PDF {shape.pages} p. {shape.width}×{shape.height} pt{layer}"
    if shape.kind == "tiff":
        return f"TIFF {shape.pages} p. {shape.width}×{shape.height}"
    return f"unknown ({probe.note or ''})"[:50]


def percent(estimated: int, billed: int) -> str:
    return f"{100 * (estimated - billed) / billed:+.1f} %" if billed else "-"


def table(rows: list[tuple[str, ...]], left: int = 2) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def report(rows: list[Row]) -> None:
    header: tuple[str, ...] = ("OBJECT", "PROBED SHAPE", "SIZE", "READ", "REQ EST/BILLED")
    header += ("PROMPT EST", "BILLED", "ERR", "OUTPUT EST", "BILLED", "ERR")
    lines: list[tuple[str, ...]] = [header]
    totals = [0, 0, 0, 0]  # estimated prompt, billed prompt, estimated output, billed output (paid objects)
    apart = []
    for row in rows:
        usage = (row.record or {}).get("usage") or {}
        calls = int(usage.get("model_calls") or 0)
        prompt, output = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        estimate = row.estimate
        paid = calls > 0 and not (row.record or {}).get("cache_hit")
        if paid:
            for index, value in enumerate((estimate.prompt_tokens, prompt, estimate.completion_tokens, output)):
                totals[index] += value
        else:
            status = (row.record or {}).get("status", "no record")
            apart.append(f"{row.sample.key} ({status}, estimated {estimate.requests} request(s))")
        lines.append(
            (
                row.sample.key,
                shape_text(row.probe),
                human_bytes(len(row.sample.body)),
                human_bytes(row.probe.bytes_read),
                f"{estimate.requests}/{calls}",
                f"{estimate.prompt_tokens:,}",
                f"{prompt:,}",
                percent(estimate.prompt_tokens, prompt) if paid else "-",
                f"{estimate.completion_tokens:,}",
                f"{output:,}",
                percent(estimate.completion_tokens, output) if paid else "-",
            )
        )
    lines.append(
        (
            "TOTAL (objects that paid)",
            "",
            human_bytes(sum(len(row.sample.body) for row in rows)),
            human_bytes(sum(row.probe.bytes_read for row in rows)),
            "",
            f"{totals[0]:,}",
            f"{totals[1]:,}",
            percent(totals[0], totals[1]),
            f"{totals[2]:,}",
            f"{totals[3]:,}",
            percent(totals[2], totals[3]),
        )
    )
    print("\n".join(table(lines)))
    estimated, billed = totals[0] + totals[2], totals[1] + totals[3]
    print(f"\nTotal tokens: estimated {estimated:,}, billed {billed:,}, error {percent(estimated, billed)}.")
    if apart:
        print("Not compared (no model call, or a cache hit): " + "; ".join(apart))
    print(
        "Output: the offline OCR endpoint answers with the text it reads and a fixed one-line description (it is no"
        " caption model), so its answers are shorter than the typical real answer the estimate assumes"
        " (sightline.estimate.COMPLETION_TOKENS): the output error here is the stand-in's, the prompt error is the"
        " estimate's."
    )
    print(
        '"Billed" is the emulated provider\'s count (devkit.model_server.estimate_prompt_tokens: 28×28 patches of each'
        " image + request text / 4 + 50; output: the answer's characters / 4). The error measures the probe, the"
        " sizing and the prompt accounting, not a real provider's tokenizer or a real model's answers."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra", action="store_true", help="also a 24 MP photo, an A4 scan, a TIFF and a 10-page PDF")
    args = parser.parse_args(argv)
    os.environ.update(
        POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="ERROR"
    )
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    from devkit.lambda_emulator import QueueFeeder
    from devkit.model_server import ModelServer
    from devkit.ocr_model import OcrResponder
    from devkit.run import REGION, emulated_aws
    from devkit.stack import deploy_stack
    from sightline.adapters.dynamodb import from_item
    from sightline.describe import DescribeOptions
    from sightline.pipeline import metadata_text
    from sightline.pricing import load_prices
    from sightline.profiles import load_profiles_file
    from sightline.settings import load_settings
    from sightline_cli.usage import scan_records, usage_report

    responder = OcrResponder()
    responder.warm_up()
    with emulated_aws() as endpoint, ModelServer(responder) as model:
        session = boto3.session.Session(region_name=REGION)
        stack = deploy_stack(session, endpoint_url=endpoint)
        os.environ.update(stack.function_environment, MODEL_BASE_URL=model.base_url, MODEL_API_KEY="bench")
        os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
        # The offline OCR reads one image at a time and answers only when done: page requests one after another,
        # and a patient stall guard, or queued requests are abandoned and paid again. Neither changes what a
        # request carries, so neither changes the estimate.
        os.environ.update(DOCUMENT_CONCURRENCY="1", MODEL_STREAM_STALL_SECONDS="60")
        import app

        settings = load_settings(os.environ)
        profiles = load_profiles_file(settings.profiles_file)
        prices = load_prices(settings.pricing_file)
        s3 = session.client("s3")
        samples = build_samples() + (extra_samples() if args.extra else [])
        estimates = EstimateReport()
        rows: list[Row] = []
        for sample in samples:
            upload_sample(s3, stack.bucket, sample)
            found = probe_object(s3, stack.bucket, sample.key, size=len(sample.body))
            named = metadata_text(sample.metadata.get(METADATA_PROFILE, "")).strip()
            profile = profiles.get(named) if named else profiles.for_key(sample.key)
            if profile is None:
                continue  # no profile and no default: the pipeline skips the object too
            context = metadata_text(sample.metadata.get(METADATA_CONTEXT, "")).strip() or None
            options = DescribeOptions.for_profile(profile, settings, context=context)
            estimate = estimate_object(found.shape, options, settings, prices.for_model(options.model_id))
            estimates.add(profile.name, options.detail, options.model_id, len(sample.body), estimate, found.bytes_read)
            rows.append(Row(sample, profile.name, found, estimate))
        print(f"Probed {len(rows)} objects in s3://{stack.bucket}: the dry run's estimate")
        print(estimates.render(prices))

        print("\nDescribing them through the queue and the real handler (offline OCR endpoint)…")
        QueueFeeder.for_stack(session.client("sqs"), stack, app.lambda_handler).drain()
        # A request the function gave up on may still be read by the OCR: let it finish before the server stops
        # (onnxruntime aborts the process when the interpreter exits under a running inference).
        settle = time.monotonic() + 60
        while model.in_flight and time.monotonic() < settle:
            time.sleep(0.1)
        items = session.client("dynamodb").get_paginator("scan").paginate(TableName=stack.table)
        records = {record["key"]: record for page in items for record in map(from_item, page["Items"])}
        for row in rows:
            row.record = records.get(row.sample.key)
            if row.record and row.record.get("status") == "processing":
                error = f"{row.record.get('last_error_type')}: {row.record.get('last_error_message')}"
                print(f"  not finished (retries pending): {row.sample.key}: {error}")
        print("\nEstimate (from the probe) against the bill (the emulated provider's), per object:")
        report(rows)

        print("\n`sightline usage` for the same table (the estimate from what the records keep):")
        usage = usage_report(
            scan_records(session.client("dynamodb"), stack.table),
            by="profile",
            prices=prices,
            profiles=profiles,
            settings=settings,
            source=stack.table,
        )
        print(usage.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
