"""`sightline usage` against the deployed results table (moto): grouping, billed totals, cost, and the estimate's
error for the records that paid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sightline.adapters.dynamodb import to_item
from sightline.describe import DescribeOptions
from sightline.estimate import ObjectShape, estimate_object
from sightline.pricing import load_prices
from sightline.profiles import load_profiles_file
from sightline.settings import BUNDLED_PROFILES_FILE, Settings
from sightline_cli.main import main
from tests.conftest import Deployment
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

QWEN = "qwen/qwen2.5-vl-72b-instruct"
SETTINGS = Settings(results_table="t", results_topic_arn="arn:aws:sns:us-east-1:1:t")
PROFILES = load_profiles_file(BUNDLED_PROFILES_FILE)
PRICES = load_prices()


def record(
    key: str, profile: str, processed_at: str, *, calls: int, prompt: int, completion: int, **extra: Any
) -> dict:
    found = PROFILES.get(profile)
    assert found is not None
    return {
        "bucket": "uploads",
        "key": key,
        "status": "succeeded",
        "profile": profile,
        "task": found.task,
        "language": found.language,
        "detail": found.detail or "auto",
        "model_id": QWEN,
        "processed_at": processed_at,
        "cache_hit": False,
        "context_used": False,
        "description": "a long text the report never reads " * 50,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "model_calls": calls,
            "usage_reported": True,
        },
        **extra,
    }


def expected(profile: str, shape: ObjectShape) -> Any:
    found = PROFILES.get(profile)
    assert found is not None
    options = DescribeOptions.for_profile(found, SETTINGS)
    return estimate_object(shape, options, SETTINGS, PRICES.for_model(QWEN))


RECORDS = [
    record(
        "photos/a.jpg", "photos", "2026-03-01T10:00:00.000Z", calls=1, prompt=1_000, completion=100,
        image={"original_width": 1200, "original_height": 800, "sent_width": 941, "format": "JPEG"},
    ),
    record(
        "photos/b.jpg", "photos", "2026-03-02T09:00:00.000Z", calls=2, prompt=2_400, completion=300,
        image={"original_width": 4000, "original_height": 3000},
    ),
    # the same content as a.jpg: served from the cache, nothing paid
    record(
        "photos/copy.jpg", "photos", "2026-03-02T10:00:00.000Z", calls=0, prompt=0, completion=0, cache_hit=True,
        image={"original_width": 1200, "original_height": 800},
    ),
    # refused before the model
    record("photos/broken.jpg", "photos", "2026-03-02T11:00:00.000Z", calls=0, prompt=0, completion=0,
           status="failed", error_type="NotAnImage"),
    record(
        "documents/r.pdf", "documents", "2026-03-02T12:00:00.000Z", calls=3, prompt=12_000, completion=600,
        document={"kind": "pdf", "pages": 3, "text_layer_pages": 3, "page_statuses": ["succeeded"] * 3},
    ),
    # the provider omitted usage: flagged, not compared
    record(
        "cms/x.png", "cms-de", "2026-03-02T13:00:00.000Z", calls=1, prompt=0, completion=0,
        image={"original_width": 640, "original_height": 320},
    ),
    # a model the pricing table does not know
    record(
        "photos/other.jpg", "photos", "2026-03-02T14:00:00.000Z", calls=1, prompt=500, completion=50,
        model_id="someone/else", image={"original_width": 800, "original_height": 600},
    ),
    # before --since
    record(
        "photos/old.jpg", "photos", "2026-01-15T00:00:00.000Z", calls=1, prompt=999, completion=99,
        image={"original_width": 800, "original_height": 600},
    ),
]  # fmt: skip
RECORDS[5]["usage"]["usage_reported"] = False
DELETED = {"bucket": "uploads", "key": "photos/gone.jpg", "status": "deleted", "processed_at": "2026-03-02T15:00:00Z"}


@pytest.fixture
def table(deployment: Deployment) -> str:
    client = deployment.client("dynamodb")
    for item in [*RECORDS, DELETED]:
        client.put_item(TableName=deployment.resources.table, Item=to_item(item))
    return str(deployment.resources.table)


def usage(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()  # the handler's logs, if any ran
    assert main(["usage", *args]) == 0
    return capsys.readouterr().out


def test_usage_by_profile_sums_the_bill_prices_it_and_compares_the_paid_records_with_their_estimate(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = json.loads(usage(capsys, "--table", table, "--since", "2026-03-01", "--json"))
    photos, documents, cms = (report["groups"][name] for name in ("photos", "documents", "cms-de"))
    # photos: a, b, the cache hit, the refused one, the unpriced one (old.jpg is before --since)
    assert (photos["records"], photos["model_calls"], photos["cache_hits"], photos["no_call"]) == (5, 4, 1, 1)
    assert photos["billed"] == {"prompt_tokens": 3_900, "completion_tokens": 450}
    assert photos["cost"] == pytest.approx((1_000 + 100 + 2_400 + 300) * 0.8 / 1e6)
    assert photos["unpriced"] == {"someone/else": 1}
    # the estimate beside the bill: the paid records a, b and other.jpg, from their stored sizes
    a, b = expected("photos", ObjectShape("image", 1200, 800)), expected("photos", ObjectShape("image", 4000, 3000))
    other = expected("photos", ObjectShape("image", 800, 600))
    compared = photos["compared"]
    assert compared["records"] == 3
    assert compared["estimated"]["prompt_tokens"] == a.prompt_tokens + b.prompt_tokens + other.prompt_tokens
    assert compared["estimated"]["requests"] == 3
    billed = 1_000 + 2_400 + 500
    assert compared["error_percent"]["prompt_tokens"] == pytest.approx(
        100 * (compared["estimated"]["prompt_tokens"] - billed) / billed
    )
    assert compared["error_percent"]["cost"] is None  # one model has no price
    # documents: three pages with a text layer, the page size assumed
    document = expected("documents", ObjectShape("pdf", pages=3, text_layer_pages=3))
    assert documents["compared"]["estimated"]["prompt_tokens"] == document.prompt_tokens
    assert documents["compared"]["estimated"]["requests"] == 3
    assert documents["compared"]["error_percent"]["cost"] == pytest.approx(
        100 * (document.prompt_tokens + document.completion_tokens - 12_600) / 12_600
    )
    # usage not reported: flagged, not compared
    assert (cms["usage_not_reported"], cms["compared"]["records"]) == (1, 0)
    total = report["total"]
    assert total["records"] == 7 and total["billed"]["prompt_tokens"] == 15_900
    assert total["cost"] == pytest.approx((3_800 + 12_600) * 0.8 / 1e6)
    assert report["since"] == "2026-03-01" and report["by"] == "profile"


def test_usage_by_day_groups_on_the_utc_date_and_the_table_flags_what_is_not_compared(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = json.loads(usage(capsys, "--table", table, "--by", "day", "--json"))
    assert {name: group["records"] for name, group in report["groups"].items()} == {
        "2026-01-15": 1,
        "2026-03-01": 1,
        "2026-03-02": 6,
    }
    text = usage(capsys, "--table", table, "--by", "day", "--since", "2026-03-01T11:00:00+01:00")
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["DAY", "RECORDS", "CALLS"]
    assert [line.split()[0] for line in lines[2:4]] == ["2026-03-01", "2026-03-02*"]  # from 10:00 UTC
    assert "* 1 record(s) whose provider did not report usage" in text
    assert "No price for someone/else (1 record(s))" in text
    assert "1 cache hit(s)" in text and "1 record(s) without a model call" in text


def test_usage_reads_the_table_from_the_stack_and_a_bad_date_is_refused(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = json.loads(usage(capsys, "--stack-name", "sightline", "--json"))
    assert report["source"] == table and report["total"]["records"] == 8
    with pytest.raises(SystemExit):
        main(["usage", "--since", "last tuesday"])


def test_usage_of_records_the_handler_wrote_estimates_their_prompt_as_billed(
    deployment: Deployment, function_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two photos described by the real handler against the loopback model (which counts prompt tokens
    # as the estimate does: patches of the image as sent plus the text / 4 plus 50)
    import app
    from devkit.lambda_emulator import QueueFeeder

    s3 = deployment.client("s3")
    for key, size in (("photos/wide.jpg", (1600, 900)), ("photos/tall.jpg", (500, 1400))):
        s3.put_object(Bucket=deployment.resources.bucket, Key=key, Body=encode(photo(*size), "JPEG"))
    QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, app.lambda_handler).drain()
    # WHEN the usage is reported
    report = json.loads(usage(capsys, "--table", deployment.resources.table, "--json"))
    # THEN both are compared and the estimate from the records' facts is the bill's prompt to the token
    photos = report["groups"]["photos"]["compared"]
    assert photos["records"] == 2
    assert photos["estimated"]["prompt_tokens"] == photos["billed"]["prompt_tokens"]
    assert photos["error_percent"]["prompt_tokens"] == 0
