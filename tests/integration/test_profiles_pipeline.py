"""Profiles end to end: the bundled profiles.yaml, per-object metadata overrides, the cache, reviews."""

from __future__ import annotations

import email.header
import json
from pathlib import Path
from typing import Any

import pytest

import app
from devkit.lambda_emulator import FakeLambdaContext, lambda_sqs_event
from devkit.model_server import Reply, completion
from sightline.errors import SettingsError
from sightline_cli.review import set_review
from tests.conftest import Deployment
from tests.integration.test_pipeline import deliver, depth
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

GOOD = {
    "description": "A red square on a grey gradient.",
    "alt_text": "Red square",
    "text": "",
    "tags": ["square"],
    "decorative": False,
}


def answer(content: dict[str, Any]) -> Reply:
    return Reply(body=completion(json.dumps(content), model="m", prompt_tokens=700, completion_tokens=60))


def put(deployment: Deployment, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
    deployment.client("s3").put_object(Bucket=deployment.resources.bucket, Key=key, Body=body, Metadata=metadata or {})


def use_profiles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    """The function's next cold start reads this profiles file."""
    from sightline.composition import get_runtime

    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(text)
    monkeypatch.setenv("PROFILES_FILE", str(profiles))
    get_runtime.cache_clear()


def instruction(request: Any) -> str:
    return "\n".join(request.text_parts)


def attributes_for(deployment: Deployment, key: str) -> dict[str, str]:
    (found,) = [n["attributes"] for n in deployment.received_notifications() if n["message"]["key"] == key]
    return found


def test_the_bundled_profiles_choose_the_job_by_prefix(deployment: Deployment, function_env, model) -> None:
    # GIVEN a photo, a CMS asset and a scanned document under the bundled file's prefixes
    body = encode(photo(300, 200), "JPEG")
    put(deployment, "photos/a.jpg", body)
    put(deployment, "cms/b.jpg", encode(photo(301, 200), "JPEG"))
    put(deployment, "documents/c.jpg", encode(photo(302, 200), "JPEG"))
    model.responder.default = answer(GOOD)
    # WHEN they are delivered
    deliver(deployment)
    # THEN each record says its profile, task and language, and so do the notification attributes
    records = {key: deployment.record(key) for key in ("photos/a.jpg", "cms/b.jpg", "documents/c.jpg")}
    assert {k: (r["profile"], r["task"], r["language"]) for k, r in records.items()} == {
        "photos/a.jpg": ("photos", "caption", "en"),
        "cms/b.jpg": ("cms-de", "alt_text", "de"),
        "documents/c.jpg": ("documents", "document", "en"),
    }
    assert records["photos/a.jpg"]["schema_version"] == 2
    attributes = attributes_for(deployment, "cms/b.jpg")
    assert (attributes["profile"], attributes["task"], attributes["language"]) == ("cms-de", "alt_text", "de")
    # AND the German profile's request asked for German
    german = [r for r in model.chat_requests if "German" in instruction(r)]
    assert len(german) == 1


def test_metadata_overrides_language_and_passes_context_as_data(deployment: Deployment, function_env, model) -> None:
    # GIVEN a CMS asset whose metadata asks for Portuguese and names the page (non-ASCII as RFC 2047)
    context = "Página do produto: cafeteira ACME — «Barista»"
    put(
        deployment,
        "cms/pt.jpg",
        encode(photo(303, 200), "JPEG"),
        {
            "sightline-language": "pt-br",
            "sightline-context": email.header.Header(context, "utf-8").encode(maxlinelen=0),
        },
    )
    model.responder.push(answer(GOOD))
    deliver(deployment)
    # THEN the language and the context reached the request, the context in its own data part
    (request,) = model.chat_requests
    assert "Portuguese (Brazil)" in instruction(request)
    context_parts = [part for part in request.text_parts if context in part]
    assert len(context_parts) == 1 and "not instructions" in context_parts[0]
    record = deployment.record("cms/pt.jpg")
    assert record["language"] == "pt-BR" and record["context_used"] is True


def test_metadata_can_choose_another_profile_and_unknown_names_fail_clearly(
    deployment: Deployment, function_env, model
) -> None:
    put(deployment, "photos/doc.jpg", encode(photo(304, 200), "JPEG"), {"sightline-profile": "documents"})
    put(deployment, "photos/typo.jpg", encode(photo(305, 200), "JPEG"), {"sightline-profile": "documnets"})
    put(deployment, "photos/lang.jpg", encode(photo(306, 200), "JPEG"), {"sightline-language": "deutsch!"})
    model.responder.default = answer(GOOD)
    report = deliver(deployment)
    assert deployment.record("photos/doc.jpg")["profile"] == "documents"
    typo = deployment.record("photos/typo.jpg")
    assert (
        typo["status"] == "failed" and typo["error_type"] == "InvalidMetadata" and "documnets" in typo["error_message"]
    )
    assert deployment.record("photos/lang.jpg")["error_type"] == "InvalidMetadata"
    assert report.failed_items == 0 and len(model.chat_requests) == 1


def test_identical_bytes_under_two_profiles_are_two_descriptions_and_under_one_are_one(
    deployment: Deployment, function_env, model
) -> None:
    body = encode(photo(307, 200), "JPEG")
    put(deployment, "photos/x.jpg", body)
    put(deployment, "cms/x.jpg", body)
    put(deployment, "photos/y.jpg", body)
    model.responder.default = answer(GOOD)
    deliver(deployment)
    assert len(model.chat_requests) == 2  # one English caption, one German alt text
    hits = {key: deployment.record(key)["cache_hit"] for key in ("photos/x.jpg", "cms/x.jpg", "photos/y.jpg")}
    assert sorted(hits.values()) == [False, False, True]


def test_the_same_bytes_with_another_context_are_described_again(deployment: Deployment, function_env, model) -> None:
    body = encode(photo(308, 200), "JPEG")
    put(deployment, "cms/one.jpg", body, {"sightline-context": "Homepage hero"})
    put(deployment, "cms/two.jpg", body, {"sightline-context": "Careers page"})
    model.responder.default = answer(GOOD)
    deliver(deployment)
    assert len(model.chat_requests) == 2


def test_a_decorative_image_has_empty_alt_text_by_design(deployment: Deployment, function_env, model) -> None:
    model.responder.push(
        answer({**GOOD, "description": "A thin grey divider line.", "alt_text": "", "decorative": True})
    )
    put(deployment, "cms/divider.png", encode(photo(600, 20), "PNG"))
    deliver(deployment)
    record = deployment.record("cms/divider.png")
    assert record["status"] == "succeeded" and record["decorative"] is True and record["alt_text"] == ""
    assert not any("alt_text missing" in a for a in record["adjustments"])


def test_extraction_keeps_every_field_with_null_for_missing_and_refuses_wrong_types(
    deployment: Deployment, function_env, model
) -> None:
    # GIVEN a document whose answer has a wrongly typed total and no currency
    model.responder.push(
        answer({**GOOD, "text": "Invoice 4821", "fields": {"invoice_number": "4821", "total": "about twelve"}})
    )
    put(deployment, "documents/invoice.png", encode(photo(320, 240), "PNG"))
    deliver(deployment)
    record = deployment.record("documents/invoice.png")
    # THEN every declared field is there; missing and wrong values are null, the refusal is reported
    assert record["fields"]["invoice_number"] == "4821"
    assert record["fields"]["total"] is None and record["fields"]["currency"] is None
    assert any("fields.total" in a for a in record["adjustments"])
    # AND the request asked for the fields with a strict schema
    schema = model.chat_requests[0].body["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]["fields"]["required"]) >= {"invoice_number", "total", "currency"}


def test_a_reviewed_alt_text_survives_re_description_and_goes_stale_when_the_image_changes(
    deployment: Deployment, function_env, model
) -> None:
    key = "cms/hero.jpg"
    model.responder.default = answer(GOOD)
    put(deployment, key, encode(photo(330, 200), "JPEG"))
    deliver(deployment)
    # GIVEN a person reviewed the alt text
    review = set_review(
        deployment.client("dynamodb"),
        deployment.resources.table,
        deployment.resources.bucket,
        key,
        "Rotes Quadrat auf grauem Verlauf",
        "redaktion@example.com",
    )
    assert review is not None
    # WHEN the same bytes are uploaded again (a new version): the review stands and is not stale
    put(deployment, key, encode(photo(330, 200), "JPEG"))
    deliver(deployment)
    record = deployment.record(key)
    assert record["alt_text_reviewed"] == "Rotes Quadrat auf grauem Verlauf" and record["review_stale"] is False
    assert record["review"]["reviewed_by"] == "redaktion@example.com"
    # WHEN the image itself changes: the review still stands, flagged stale
    put(deployment, key, encode(photo(331, 222), "JPEG"))
    deliver(deployment)
    record = deployment.record(key)
    assert record["alt_text_reviewed"] == "Rotes Quadrat auf grauem Verlauf" and record["review_stale"] is True
    assert record["alt_text"] == GOOD["alt_text"]  # the model's own value is kept beside it
    message = [n["message"] for n in deployment.received_notifications() if n["message"]["key"] == key][-1]
    assert message["alt_text_reviewed"] == "Rotes Quadrat auf grauem Verlauf" and message["review_stale"] is True


def test_a_key_no_profile_matches_is_skipped_without_a_record(
    deployment: Deployment, function_env, model, monkeypatch, tmp_path: Path
) -> None:
    use_profiles(
        monkeypatch, tmp_path, "version: 1\nprofiles:\n  - name: only-photos\n    match: {prefixes: [photos/]}\n"
    )
    put(deployment, "elsewhere/a.jpg", encode(photo(340, 200), "JPEG"))
    put(deployment, "photos/a.jpg", encode(photo(341, 200), "JPEG"))
    model.responder.default = answer(GOOD)
    report = deliver(deployment)
    assert deployment.record("elsewhere/a.jpg") is None
    assert deployment.record("photos/a.jpg")["profile"] == "only-photos"
    assert report.failed_items == 0


def test_an_invalid_profiles_file_fails_the_cold_start_not_the_images(
    deployment: Deployment, function_env, model, monkeypatch, tmp_path: Path
) -> None:
    use_profiles(
        monkeypatch,
        tmp_path,
        "version: 1\nprofiles:\n  - name: broken\n    task: captions\n    match: {prefixes: [a/]}\n",
    )
    sqs = deployment.client("sqs")
    sqs.purge_queue(QueueUrl=deployment.resources.queue_url)  # the s3:TestEvent
    put(deployment, "photos/a.jpg", encode(photo(342, 200), "JPEG"))
    messages = sqs.receive_message(QueueUrl=deployment.resources.queue_url, MaxNumberOfMessages=10)["Messages"]
    with pytest.raises(SettingsError, match=r"line 4.*task"):
        app.lambda_handler(lambda_sqs_event(messages, deployment.resources.queue_arn), FakeLambdaContext())
    # the message is not lost: it comes back, and no record was written against the image
    assert depth(deployment, deployment.resources.queue_url) == 1
    assert deployment.record("photos/a.jpg") is None
