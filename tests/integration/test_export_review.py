"""`sightline export` and `sightline review apply` on records the real handler stored in the emulated stack."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from devkit.model_server import Reply, completion
from sightline.adapters.dynamodb import to_item
from sightline.gallery import EXPORT_COLUMNS, read_jsonl_rows
from sightline_cli.main import main
from sightline_cli.records_source import load_records
from tests.conftest import Deployment
from tests.integration.test_pipeline import deliver
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

CMS_ANSWER = {
    "description": "Eine Espressomaschine aus Edelstahl auf einer Küchenarbeitsplatte.",
    "alt_text": "Espressomaschine aus Edelstahl",
    "text": "",
    "tags": ["Espresso", "Küche"],
    "decorative": False,
}
PHOTO_ANSWER = {
    "description": "A red square on a grey gradient.",
    "alt_text": "=Red square",  # a spreadsheet would run this
    "text": "SALE",
    "tags": ["square", "red"],
}


def answer(content: dict[str, Any]) -> Reply:
    return Reply(body=completion(json.dumps(content), model="m", prompt_tokens=700, completion_tokens=60))


def put(deployment: Deployment, key: str, body: bytes) -> None:
    deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key=key, Body=body)


def describe(
    deployment: Deployment, model: Any, key: str, body: bytes, content: dict[str, Any] | None
) -> dict[str, Any]:
    if content is not None:
        model.responder.push(answer(content))
    put(deployment, key, body)
    deliver(deployment)
    found = deployment.record(key)
    assert found is not None
    return found


def export(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["export", *args]) == 0
    return capsys.readouterr().out


def review_file(tmp_path: Path, *entries: dict[str, Any]) -> str:
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries), encoding="utf-8")
    return str(path)


def entry_for(record: dict[str, Any], alt_text: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": record["bucket"],
        "key": record["key"],
        "version": record["version_token"],
        "alt_text": alt_text,
        "content_sha256": record["content_sha256"],
        "reviewed_by": "redaktion@example.com",
        **extra,
    }


@pytest.fixture
def described(deployment: Deployment, function_env, model) -> dict[str, dict[str, Any]]:
    """A CMS image (alt_text task, German), a photo (caption, English) and an upload that is no image."""
    return {
        "cms/hero.jpg": describe(deployment, model, "cms/hero.jpg", encode(photo(330, 200), "JPEG"), CMS_ANSWER),
        "photos/square.png": describe(
            deployment, model, "photos/square.png", encode(photo(200, 200), "PNG"), PHOTO_ANSWER
        ),
        "photos/notes.jpg": describe(deployment, model, "photos/notes.jpg", b"not an image at all", None),
    }


def test_export_csv_has_one_row_per_object_version(
    deployment: Deployment, described: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(capsys, "--format", "csv", "--stack-name", "sightline")
    assert out.startswith(",".join(EXPORT_COLUMNS) + "\r\n")
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(out, newline=""))}
    assert set(rows) == set(described)
    hero = rows["cms/hero.jpg"]
    assert hero["bucket"] == deployment.resources.bucket
    assert hero["version"] == described["cms/hero.jpg"]["version_token"] and hero["version"]
    assert (hero["alt_text"], hero["alt_text_source"], hero["language"]) == (
        "Espressomaschine aus Edelstahl",
        "model",
        "de",
    )
    assert (hero["profile"], hero["status"], hero["tags"], hero["decorative"]) == (
        "cms-de",
        "succeeded",
        "espresso; küche",
        "false",
    )
    square = rows["photos/square.png"]
    assert square["alt_text"] == "'=Red square"  # the formula guard
    assert square["text"] == "SALE" and square["profile"] == "photos"
    failed = rows["photos/notes.jpg"]
    assert failed["status"] == "failed" and failed["alt_text"] == "" and failed["description"] == ""


def test_export_jsonl_filters_and_writes_a_file(
    deployment: Deployment, described: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    table = deployment.resources.table
    out = tmp_path / "export.jsonl"
    capsys.readouterr()
    assert main(["export", "--format", "jsonl", "--table", table, "--prefix", "photos/", "--out", str(out)]) == 0
    assert "2 row(s)" in capsys.readouterr().err
    rows = read_jsonl_rows(out.read_text(encoding="utf-8").splitlines())
    assert [row.key for row in rows] == ["photos/notes.jpg", "photos/square.png"]
    assert rows[1].alt_text == "=Red square"  # JSONL is exact
    # --status and --profile filter too (several values, or the option repeated)
    text = export(capsys, "--format", "jsonl", "--table", table, "--status", "succeeded", "partial")
    assert sorted(json.loads(line)["key"] for line in text.splitlines()) == ["cms/hero.jpg", "photos/square.png"]
    text = export(capsys, "--format", "jsonl", "--table", table, "--profile", "cms-de", "--profile", "nope")
    assert [json.loads(line)["key"] for line in text.splitlines()] == ["cms/hero.jpg"]
    assert "ü" in text  # not escaped


def test_load_records_scans_or_queries_one_bucket_and_leaves_deleted_keys_out(
    deployment: Deployment, described: dict[str, dict[str, Any]]
) -> None:
    client, table, bucket = deployment.client("dynamodb"), deployment.resources.table, deployment.resources.bucket
    # a deleted key's record, as the handler stores it for an object-removed event
    client.put_item(TableName=table, Item=to_item({**described["photos/notes.jpg"], "status": "deleted"}))
    assert [r["key"] for r in load_records(client, table)] == ["cms/hero.jpg", "photos/square.png"]
    by_bucket = load_records(client, table, bucket=bucket, prefix="photos/", include_deleted=True)
    assert [(r["key"], r["status"]) for r in by_bucket] == [
        ("photos/notes.jpg", "deleted"),
        ("photos/square.png", "succeeded"),
    ]
    assert load_records(client, table, bucket="another-bucket") == []
    assert [r["key"] for r in load_records(client, table, statuses=["deleted"])] == ["photos/notes.jpg"]
    assert [r["key"] for r in load_records(client, table, profiles=["cms-de"], statuses=["succeeded"])] == [
        "cms/hero.jpg"
    ]


def test_export_of_an_unknown_stack_fails_clearly(
    aws: Any, capsys: pytest.CaptureFixture[str], function_env: dict[str, str]
) -> None:
    assert main(["export", "--format", "csv", "--stack-name", "no-such-stack"]) == 1
    assert "error:" in capsys.readouterr().err


def test_review_apply_stores_the_reviewed_alt_text_and_a_re_description_keeps_it(
    deployment: Deployment,
    described: dict[str, dict[str, Any]],
    model: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    hero = described["cms/hero.jpg"]
    path = review_file(
        tmp_path,
        entry_for(hero, "ACME Barista aus gebürstetem Edelstahl"),
        entry_for(hero, "Kein Datensatz", key="cms/never-uploaded.jpg"),
    )
    # A dry run stores nothing
    capsys.readouterr()
    assert main(["review", "apply", path, "--dry-run"]) == 0
    assert "1 would be applied" in capsys.readouterr().out
    assert "alt_text_reviewed" not in (deployment.record("cms/hero.jpg") or {})
    # WHEN the file is applied: the key with a record gets the review, the other is reported, not fatal
    assert main(["review", "apply", path, "--stack-name", "sightline", "--by", "operator"]) == 0
    out = capsys.readouterr().out
    assert "missing: s3://" in out and "cms/never-uploaded.jpg (line 2): no record" in out
    assert "1 applied (0 stale" in out and "1 missing, 0 failed" in out
    record = deployment.record("cms/hero.jpg")
    assert record is not None
    assert record["alt_text_reviewed"] == "ACME Barista aus gebürstetem Edelstahl" and record["review_stale"] is False
    assert record["review"]["reviewed_by"] == "redaktion@example.com"  # the entry's reviewer, not --by
    assert record["review"]["content_sha256"] == hero["content_sha256"]
    # Applying the same file again changes nothing
    assert main(["review", "apply", path]) == 0
    assert "0 applied (0 stale: the image changed since it was reviewed), 1 unchanged" in capsys.readouterr().out
    # WHEN the same bytes are uploaded again (described anew, from the cache): the reviewed text stands
    again = describe(deployment, model, "cms/hero.jpg", encode(photo(330, 200), "JPEG"), None)
    assert again["cache_hit"] is True and again["alt_text"] == "Espressomaschine aus Edelstahl"
    assert again["alt_text_reviewed"] == "ACME Barista aus gebürstetem Edelstahl"
    assert again["review_stale"] is False and again["processed_at"] > hero["processed_at"]
    # THEN the export uses the reviewed text, at the new version
    rows = {
        json.loads(line)["key"]: json.loads(line)
        for line in export(capsys, "--format", "jsonl", "--stack-name", "sightline").splitlines()
    }
    assert rows["cms/hero.jpg"]["alt_text"] == "ACME Barista aus gebürstetem Edelstahl"
    assert rows["cms/hero.jpg"]["alt_text_source"] == "reviewed"
    assert rows["cms/hero.jpg"]["version"] == again["version_token"]
    assert rows["photos/square.png"]["alt_text_source"] == "model"


def test_a_review_of_an_image_that_changed_since_is_stored_stale(
    deployment: Deployment,
    described: dict[str, dict[str, Any]],
    model: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    seen = described["cms/hero.jpg"]
    # GIVEN the image changed after the reviewer looked at it
    changed = describe(deployment, model, "cms/hero.jpg", encode(photo(331, 222), "JPEG"), CMS_ANSWER)
    assert changed["content_sha256"] != seen["content_sha256"]
    path = review_file(tmp_path, entry_for(seen, "Espressomaschine, alte Version"))
    capsys.readouterr()
    assert main(["review", "apply", path]) == 0
    out = capsys.readouterr().out
    assert "stale: s3://" in out and "1 applied (1 stale" in out
    record = deployment.record("cms/hero.jpg")
    assert record is not None
    assert record["alt_text_reviewed"] == "Espressomaschine, alte Version" and record["review_stale"] is True
    # AND a later re-description of the same (changed) bytes keeps it stale
    again = describe(deployment, model, "cms/hero.jpg", encode(photo(331, 222), "JPEG"), None)
    assert again["alt_text_reviewed"] == "Espressomaschine, alte Version" and again["review_stale"] is True
    # AND a review of what is there now clears it
    path = review_file(tmp_path, entry_for(again, "Espressomaschine, neue Version"))
    assert main(["review", "apply", path]) == 0
    record = deployment.record("cms/hero.jpg")
    assert record is not None and record["review_stale"] is False
    assert record["alt_text_reviewed"] == "Espressomaschine, neue Version"


def test_review_apply_refuses_an_invalid_file_and_other_buckets(
    deployment: Deployment, described: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hero = described["cms/hero.jpg"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(entry_for(hero, "ok")) + "\n" + '{"bucket": "b"}\n', encoding="utf-8")
    capsys.readouterr()
    assert main(["review", "apply", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "nothing was applied" in err and "bad.jsonl line 2: missing field 'key'" in err
    assert "alt_text_reviewed" not in (deployment.record("cms/hero.jpg") or {})
    # An entry for another bucket than the stack's fails (exit 1); the others are applied
    path = review_file(tmp_path, entry_for(hero, "Gut"), entry_for(hero, "Fremd", bucket="someone-elses-bucket"))
    assert main(["review", "apply", path]) == 1
    captured = capsys.readouterr()
    assert "failed: s3://someone-elses-bucket/cms/hero.jpg (line 2): not this deployment's bucket" in captured.err
    assert "1 applied" in captured.out and "1 failed" in captured.out
    assert (deployment.record("cms/hero.jpg") or {})["alt_text_reviewed"] == "Gut"
    # With --table and no --bucket, every bucket's entries are looked up (that one has no record)
    table = deployment.resources.table
    assert main(["review", "apply", path, "--table", table]) == 0
    assert "1 unchanged, 1 missing, 0 failed" in capsys.readouterr().out


def test_review_set_still_works_from_the_command(
    deployment: Deployment, described: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["review", "set", "--key", "photos/square.png", "--alt-text", "Rotes Quadrat", "--by", "ed"]
    assert main(args) == 0
    assert "reviewed alt text stored for s3://" in capsys.readouterr().out
    record = deployment.record("photos/square.png")
    assert record is not None and record["alt_text_reviewed"] == "Rotes Quadrat"
    assert main(["review", "set", "--table", deployment.resources.table, "--key", "x", "--alt-text", "y"]) == 2
