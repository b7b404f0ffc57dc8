"""Batch concurrency: a 10-record SQS batch against a model that takes 1 s per answer.

Prints the batch's wall time beside the 10 s a sequential handler would need. Runs the real handler
against moto (from template.yaml) and the loopback scripted model, like `make run`.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics

import boto3
from PIL import Image


def _photo_jpeg(index: int) -> bytes:
    image = Image.linear_gradient("L").resize((1600, 1200)).convert("RGB")
    image.paste((index * 20 % 255, 80, 160), (100, 100, 500, 400))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10)
    parser.add_argument("--model-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.update(
        POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="ERROR"
    )

    from devkit.lambda_emulator import QueueFeeder
    from devkit.model_server import ModelServer, ScriptedResponder
    from devkit.run import REGION, emulated_aws
    from devkit.stack import deploy_stack

    with emulated_aws() as endpoint, ModelServer(ScriptedResponder(delay_seconds=args.model_seconds)) as model:
        session = boto3.session.Session(region_name=REGION)
        stack = deploy_stack(session, endpoint_url=endpoint)
        os.environ.update(stack.function_environment, MODEL_BASE_URL=model.base_url, MODEL_API_KEY="bench")
        os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
        import app

        feeder = QueueFeeder.for_stack(session.client("sqs"), stack, app.lambda_handler)
        feeder.drain()  # the s3:TestEvent
        s3 = session.client("s3")
        times = []
        for round_ in range(args.rounds):
            model.reset()
            for index in range(args.records):
                s3.put_object(Bucket=stack.bucket, Key=f"bench/{round_}/{index}.jpg", Body=_photo_jpeg(index))
            report = feeder.drain()
            times.extend(report.batch_seconds)
            print(
                f"round {round_ + 1}: {report.messages} records in {report.invocations} batch(es):"
                f" {', '.join(f'{t:.2f}s' for t in report.batch_seconds)}; model calls in flight at once:"
                f" {model.max_in_flight}"
            )
        sequential = args.records * args.model_seconds
        median = statistics.median(times)
        print(
            f"\nmedian batch time {median:.2f}s for {args.records} records with a {args.model_seconds:.1f}s model;"
            f" a sequential handler needs ≥ {sequential:.1f}s ({sequential / median:.1f}× slower)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
