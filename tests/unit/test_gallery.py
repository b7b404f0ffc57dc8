"""The gallery's data: records → items and their flags, the CMS export (CSV, JSONL), the review file."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from sightline.gallery import (
    EXPORT_COLUMNS,
    FLAG_CODES,
    FLAG_HELP,
    ExportRow,
    Flag,
    GalleryItem,
    ReviewEntry,
    ReviewFileError,
    export_rows,
    gallery_item,
    gallery_items,
    language_evidence,
    read_jsonl_rows,
    read_review_file,
    repeated_words,
    review_entry,
    write_csv,
    write_jsonl,
    write_review_file,
)
from sightline.pricing import parse_prices
from sightline.profiles import Profile, ProfileSet

pytestmark = pytest.mark.unit

SHA_A = "a" * 64
SHA_B = "b" * 64
PROFILES = ProfileSet(
    profiles=(
        Profile(name="photos", task="caption", language="en", alt_text_max_chars=40, match_prefixes=("photos/",)),
        Profile(name="cms-de", task="alt_text", language="de", alt_text_max_chars=125, match_prefixes=("cms/",)),
        Profile(name="docs", task="document", match_prefixes=("docs/",)),
    ),
    default=Profile(name="default"),
)
PRICES = parse_prices(
    """
    currency = "EUR"
    [models."m"]
    input_per_million = 2.0
    output_per_million = 10.0
    """
)


def record(key: str = "photos/a.jpg", **fields: Any) -> dict[str, Any]:
    """A succeeded record as the handler stores it (schema 2)."""
    base: dict[str, Any] = {
        "bucket": "uploads",
        "key": key,
        "schema_version": 2,
        "status": "succeeded",
        "profile": "photos",
        "task": "caption",
        "language": "en",
        "model_id": "m",
        "cache_hit": False,
        "description": "A red square on a grey gradient, with a thin border.",
        "alt_text": "Red square on a grey gradient",
        "text": "",
        "tags": ["square", "red"],
        "adjustments": [],
        "decorative": False,
        "has_text": False,
        "usage": {
            "prompt_tokens": 1_000,
            "completion_tokens": 100,
            "total_tokens": 1_100,
            "model_calls": 1,
            "usage_reported": True,
        },
        "content_sha256": SHA_A,
        "version_token": "v1",
        "object": {"version_id": "v1", "etag": "e1", "size": 1234, "content_type": "image/jpeg"},
        "image": {"original_width": 330, "original_height": 200},
        "processed_at": "2026-11-26T10:00:00.000Z",
    }
    base.update(fields)
    return base


def item(**fields: Any) -> GalleryItem:
    return gallery_item(record(**fields), PROFILES, PRICES)


def codes(found: GalleryItem) -> set[str]:
    return set(found.flag_codes)


def message(found: GalleryItem, code: str) -> str:
    (flag,) = [flag for flag in found.flags if flag.code == code]
    return flag.message


# --- Items ---------------------------------------------------------------------------------------------------


def test_a_record_becomes_an_item_with_its_fields_and_cost() -> None:
    found = item()
    assert (found.bucket, found.key, found.version, found.status) == ("uploads", "photos/a.jpg", "v1", "succeeded")
    assert (found.profile, found.task, found.language, found.alt_text_max_chars) == ("photos", "caption", "en", 40)
    assert found.tags == ("square", "red") and found.decorative is False and found.is_document is False
    assert (found.prompt_tokens, found.completion_tokens, found.model_calls) == (1_000, 100, 1)
    # 1,000 × 2.0 / 1M + 100 × 10.0 / 1M
    assert found.cost == pytest.approx(0.003) and found.currency == "EUR"
    assert (found.content_type, found.size, found.width, found.height) == ("image/jpeg", 1234, 330, 200)
    assert found.alt_text_reviewed is None and found.effective_alt_text == "Red square on a grey gradient"
    assert found.alt_text_source == "model" and found.s3_uri == "s3://uploads/photos/a.jpg"
    assert found.flags == ()


def test_costs_are_unknown_without_a_price_or_reported_usage_and_zero_for_a_cache_hit() -> None:
    assert gallery_item(record(), PROFILES, None).cost is None  # no pricing table
    assert item(model_id="unpriced").cost is None
    unreported = {"prompt_tokens": 0, "completion_tokens": 0, "model_calls": 1, "usage_reported": False}
    assert item(usage=unreported).cost is None
    hit = item(cache_hit=True, usage={"prompt_tokens": 0, "completion_tokens": 0, "model_calls": 0})
    assert hit.cost == 0.0


def test_the_profiles_limit_is_unknown_without_the_profile() -> None:
    assert gallery_item(record(), None, None).alt_text_max_chars is None
    assert item(profile="renamed-since").alt_text_max_chars is None
    assert item(profile="default").alt_text_max_chars == 125


def test_a_document_keeps_its_pages() -> None:
    found = item(
        key="docs/report.pdf",
        profile="docs",
        task="document",
        alt_text="",
        status="partial",
        document={"kind": "pdf", "pages": 12, "pages_failed": [3, 7], "page_statuses": ["succeeded"] * 2},
        result_uri="s3://results/r.json",
        result_markdown_uri="s3://results/r.md",
    )
    assert found.is_document and found.pages == 12 and found.pages_failed == (3, 7)
    assert found.page_statuses == ("succeeded", "succeeded") and found.result_markdown_uri == "s3://results/r.md"
    assert codes(found) == {"partial"} and message(found, "partial") == "2 page(s) of 12 failed: 3, 7"


def test_deleted_records_are_left_out_unless_asked_for() -> None:
    records = [record(), {"bucket": "uploads", "key": "photos/gone.jpg", "status": "deleted", "object": {}}]
    assert [i.key for i in gallery_items(records, PROFILES, PRICES)] == ["photos/a.jpg"]
    assert len(gallery_items(records, PROFILES, PRICES, include_deleted=True)) == 2


def test_flags_are_listed_in_the_documented_order_with_help() -> None:
    assert set(FLAG_HELP) == set(FLAG_CODES)
    found = item(alt_text="", adjustments=["alt_text: markup removed (<b>)"], cache_hit=True)
    assert list(found.flag_codes) == sorted(found.flag_codes, key=FLAG_CODES.index)
    assert found.flag_codes == ("alt_missing", "markup_removed", "cache_hit")


# --- Flags, one by one ---------------------------------------------------------------------------------------


def test_alt_missing() -> None:
    assert "alt_missing" in codes(item(alt_text=""))
    assert "alt_missing" not in codes(item(alt_text="", decorative=True))  # decorative: empty by design
    assert "alt_missing" not in codes(item(alt_text="", alt_text_reviewed=""))  # a person decided
    assert "alt_missing" not in codes(item(alt_text="", task="document", profile="docs"))  # optional for documents
    assert "alt_missing" not in codes(item(alt_text="", status="failed", error_type="X"))  # not described
    assert "alt_missing" not in codes(item())


def test_alt_too_long_counts_characters_against_the_profiles_limit() -> None:
    exactly = "é" * 40  # 80 bytes, 40 characters: at the limit
    assert "alt_too_long" not in codes(item(alt_text=exactly))
    found = item(alt_text="é" * 41)
    assert message(found, "alt_too_long") == "the alt text is 41 characters, above the profile's 40"
    reviewed = item(alt_text_reviewed="A reviewed alt text that is far longer than forty characters")
    assert message(reviewed, "alt_too_long").startswith("the reviewed alt text is 60 characters")
    assert "alt_too_long" not in codes(gallery_item(record(alt_text="x" * 500), None, None))  # limit unknown


def test_alt_duplicate_ignores_case_and_spaces_and_says_how_many_others() -> None:
    records = [
        record("photos/1.jpg", alt_text="Red  square", content_sha256="1" * 64),
        record("photos/2.jpg", alt_text="red square", content_sha256="2" * 64),
        record("photos/3.jpg", alt_text="RED SQUARE ", content_sha256="3" * 64),
        record("photos/4.jpg", alt_text="Blue circle", content_sha256="4" * 64),
    ]
    items = {found.key: found for found in gallery_items(records, PROFILES, PRICES)}
    assert message(items["photos/1.jpg"], "alt_duplicate") == (
        "the same alt text as 2 other objects: photos/2.jpg, photos/3.jpg"
    )
    assert "alt_duplicate" in codes(items["photos/3.jpg"])
    assert "alt_duplicate" not in codes(items["photos/4.jpg"])


def test_alt_duplicate_leaves_out_identical_bytes_failures_and_empty_text() -> None:
    records = [
        record("photos/logo.png", alt_text="ACME logo", content_sha256=SHA_A),
        record("cms/logo.png", alt_text="ACME logo", content_sha256=SHA_A, cache_hit=True),  # the same image
        record("photos/x.jpg", alt_text="", decorative=True, content_sha256="1" * 64),
        record("photos/y.jpg", alt_text="", decorative=True, content_sha256="2" * 64),
        record("photos/z.jpg", alt_text="ACME logo", status="failed", error_type="X", content_sha256="3" * 64),
    ]
    items = gallery_items(records, PROFILES, PRICES)
    assert not any(found.has_flag("alt_duplicate") for found in items)


def test_alt_duplicate_compares_the_reviewed_alt_text() -> None:
    records = [
        record("photos/1.jpg", alt_text="Red square", content_sha256="1" * 64),
        record("photos/2.jpg", alt_text="Red square", alt_text_reviewed="Crimson tile", content_sha256="2" * 64),
    ]
    assert not any(found.has_flag("alt_duplicate") for found in gallery_items(records, PROFILES, PRICES))


@pytest.mark.parametrize(
    ("alt_text", "expected"),
    [
        ("A dog on the the beach", '"the the": a word repeated back to back'),
        ("Red red apples in a bowl", '"Red red": a word repeated back to back'),
        ("Image of a dog on a beach", 'starts with "Image of" (a screen reader already says it is an image)'),
        ("A picture of two cats", 'starts with "picture of"'),
        ("photo of a bridge at night", 'starts with "photo of"'),
        ("Red car, red house, red door, red roof", '"red" is 4 of 8 words'),
    ],
)
def test_repeated_words_positive(alt_text: str, expected: str) -> None:
    found = repeated_words(alt_text)
    assert found is not None and found.startswith(expected)
    assert message(item(alt_text=alt_text), "repeated_words").startswith("the alt text: ")


@pytest.mark.parametrize(
    "alt_text",
    [
        "Bora Bora beach at sunset",  # a name
        "The man and the dog and the cat on a sofa",  # function words repeat
        "A dog on a beach",
        "Photographer of the year award",
        "Two dogs, two balls",
        "",
    ],
)
def test_repeated_words_negative(alt_text: str) -> None:
    assert repeated_words(alt_text) is None


def test_wrong_language_a_german_alt_text_under_english() -> None:
    found = item(alt_text="Ein Mann mit einem roten Hut steht auf der Straße vor dem Haus")
    assert message(found, "wrong_language") == (
        "the alt text appears to be German (de), not en: 7 German function words, 0 English"
    )
    assert "description" not in message(found, "wrong_language")


def test_wrong_language_checks_the_description_too_and_the_reviewed_text() -> None:
    found = item(description="Un homme avec un chapeau rouge dans la rue, devant la maison.")
    assert "the description appears to be French" in message(found, "wrong_language")
    reviewed = item(alt_text_reviewed="Een man met een rode hoed staat op de straat voor het huis")
    assert "the reviewed alt text" in message(reviewed, "wrong_language") and "Dutch" in message(
        reviewed, "wrong_language"
    )


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("A man in a red hat stands on the street in front of the house", "ja"),  # Latin under Japanese
        ("Мужчина в красной шляпе стоит на улице", "en"),  # Cyrillic under English
        ("A man in a red hat stands on the street", "ru"),
        ("一个戴红帽子的男人站在房子前面的街道上", "en"),  # Han under English
        ("赤い帽子をかぶった男性が家の前の通りに立っている", "zh"),  # Japanese kana under Chinese
        ("빨간 모자를 쓴 남자가 거리에 서 있다", "zh-Hant"),  # Hangul under Chinese
        ("A man in a red hat stands next to a car", "ar"),
        ("Ένας άνδρας με κόκκινο καπέλο", "en"),  # Greek under English
        ("Um homem com um chapéu vermelho na rua em frente da casa", "es"),  # Portuguese under Spanish
        ("A man in a red hat stands on the street in front of the house", "de-AT"),
    ],
)
def test_wrong_language_positive(text: str, language: str) -> None:
    assert language_evidence(text, language) is not None
    assert item(alt_text_reviewed=text[:40], description=text, language=language).has_flag("wrong_language")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("A man in a red hat stands on the street in front of the house", "en"),
        ("Ein rotes Quadrat auf einem grauen Verlauf.", "de"),
        ("Rotes Quadrat auf grauem Verlauf", "en"),  # too little evidence: one function word
        ("赤い帽子をかぶった男性が家の前の通りに立っている", "ja"),
        ("一个戴红帽子的男人站在房子前面的街道上", "zh-Hans"),
        ("빨간 모자를 쓴 남자가 거리에 서 있다", "ko"),
        ("Мужчина в красной шляпе стоит на улице", "ru"),
        ("رجل يرتدي قبعة حمراء يقف في الشارع", "ar"),
        ("ACME Barista エスプレッソマシン", "ja"),  # a Latin brand beside Japanese
        ("iPhone 15 Pro Max", "ja"),  # a name is Latin everywhere
        ("Un hombre con un sombrero rojo en la calle frente a la casa", "es"),
        ("Un uomo con un cappello rosso nella strada accanto alla casa", "es"),  # close languages: not clear
        ("A man in a red hat", "sw-KE"),  # Latin, no function-word list: script only
        ("A man in a red hat stands on the street", "tlh"),  # a language we know nothing of
        ("Red", "ja"),  # too short
    ],
)
def test_wrong_language_negative(text: str, language: str) -> None:
    assert language_evidence(text, language) is None


def test_wrong_language_is_not_checked_for_the_ocr_text_or_without_content() -> None:
    assert not item(text="Ein Mann mit einem roten Hut steht auf der Straße vor dem Haus").has_flag("wrong_language")
    failed = item(status="failed", error_type="X", alt_text="Ein Mann mit einem roten Hut steht auf der Straße")
    assert not failed.has_flag("wrong_language")


def test_failed_says_the_error_type_and_message() -> None:
    found = item(status="failed", error_type="CorruptImage", error_message="the image data is truncated")
    assert message(found, "failed") == "CorruptImage: the image data is truncated"
    assert codes(found) == {"failed"}
    assert not item().has_flag("failed")


def test_partial_lists_the_failed_pages() -> None:
    found = item(status="partial", document={"pages": 40, "pages_failed": list(range(1, 26))})
    assert message(found, "partial").startswith("25 page(s) of 40 failed: 1, 2, 3")
    assert message(found, "partial").endswith("20, …")
    assert not item(document={"pages": 2, "pages_failed": []}).has_flag("partial")


def test_cache_hit() -> None:
    assert item(cache_hit=True).has_flag("cache_hit")
    assert not item(cache_hit=False).has_flag("cache_hit")


def test_markup_removed_quotes_the_adjustments_answers_py_writes() -> None:
    adjustments = [
        "alt_text: markup removed (<b>, <script>)",
        "answer read as lenient JSON",
        "tags: markup removed (<i>)",
    ]
    found = item(adjustments=adjustments)
    assert message(found, "markup_removed") == "alt_text: markup removed (<b>, <script>); tags: markup removed (<i>)"
    assert not item(adjustments=["alt_text cut to 125 characters", 'alt_text: "Image of" removed']).has_flag(
        "markup_removed"
    )


def test_markup_removed_matches_what_the_answer_reader_really_says() -> None:
    from sightline.answers import AnswerRules, read_answer

    answer = json.dumps(
        {
            "description": "A <b>red</b> square.",
            "alt_text": "Red <script>alert(1)</script>square",
            "text": "",
            "tags": ["red"],
        }
    )
    described = read_answer(answer, rules=AnswerRules())
    found = item(adjustments=list(described.adjustments), alt_text=described.alt_text)
    assert found.has_flag("markup_removed")


def test_review_stale() -> None:
    review = {"alt_text": "Crimson tile", "reviewed_by": "ed", "reviewed_at": "2026-11-26T10:00:00.000Z"}
    stale = item(review=review, alt_text_reviewed="Crimson tile", review_stale=True)
    assert message(stale, "review_stale") == (
        "the image changed since its alt text was reviewed by ed on 2026-11-26T10:00:00.000Z"
    )
    assert stale.reviewed_by == "ed" and stale.effective_alt_text == "Crimson tile"
    assert not item(review=review, alt_text_reviewed="Crimson tile", review_stale=False).has_flag("review_stale")


@pytest.mark.parametrize("status", ["deferred", "processing"])
def test_not_finished(status: str) -> None:
    found = item(status=status, error_type="BudgetExhausted", error_message="the day's budget is spent")
    assert codes(found) == {status}  # no content flags: the fields describe the previous version
    assert not item().has_flag(status)


def test_deferred_and_processing_say_why() -> None:
    deferred = item(status="deferred", error_type="ProviderPaused", error_message="the breaker is open")
    assert message(deferred, "deferred") == "parked, resumed by itself (ProviderPaused: the breaker is open)"
    processing = item(status="processing", last_error_type="ModelUnavailable", last_error_message="503")
    assert "previous version" in message(processing, "processing")
    assert message(processing, "processing").endswith("(last error: ModelUnavailable: 503)")


# --- Export --------------------------------------------------------------------------------------------------


def rows_for(*records: dict[str, Any]) -> list[ExportRow]:
    return export_rows(gallery_items(records, PROFILES, PRICES))


def test_export_rows_use_the_reviewed_alt_text() -> None:
    (model, reviewed, decorative, failed) = rows_for(
        record("photos/1.jpg"),
        record("photos/2.jpg", alt_text_reviewed="Crimson tile", review={"alt_text": "Crimson tile"}),
        record("photos/3.jpg", alt_text="Red square", decorative=False, alt_text_reviewed=""),
        record("photos/4.jpg", status="failed", error_type="X", alt_text_reviewed="Kept"),
    )
    assert (model.alt_text, model.alt_text_source) == ("Red square on a grey gradient", "model")
    assert (reviewed.alt_text, reviewed.alt_text_source) == ("Crimson tile", "reviewed")
    assert (decorative.alt_text, decorative.decorative) == ("", True)  # a reviewed "" is decorative
    assert (failed.alt_text, failed.alt_text_source, failed.description, failed.tags) == ("Kept", "reviewed", "", ())
    assert model.version == "v1" and model.tags == ("square", "red") and model.profile == "photos"


def test_export_rows_of_unfinished_records_carry_no_previous_content() -> None:
    (row,) = rows_for(record(status="processing", version_token="v2"))
    assert (row.version, row.status, row.alt_text, row.description, row.tags) == ("v2", "processing", "", "", ())


def test_csv_has_a_header_and_round_trips_through_the_csv_module() -> None:
    rows = rows_for(
        record("photos/1.jpg", description='Line one,\nline "two"', tags=["a", "b c"]),
        record("photos/2.jpg", alt_text="Café crème à Zürich", language="fr"),
    )
    stream = io.StringIO(newline="")
    assert write_csv(rows, stream) == 2
    text = stream.getvalue()
    assert text.startswith(",".join(EXPORT_COLUMNS) + "\r\n")
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert parsed[0]["description"] == 'Line one,\nline "two"' and parsed[0]["tags"] == "a; b c"
    assert parsed[0]["decorative"] == "false" and parsed[1]["alt_text"] == "Café crème à Zürich"


@pytest.mark.parametrize("dangerous", ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\r=1"])
def test_csv_cells_a_spreadsheet_would_run_get_a_quote(dangerous: str) -> None:
    rows = rows_for(record(alt_text=dangerous, description=dangerous, tags=[dangerous, "ok"]))
    stream = io.StringIO(newline="")
    write_csv(rows, stream)
    (parsed,) = csv.DictReader(io.StringIO(stream.getvalue(), newline=""))
    assert parsed["alt_text"] == "'" + dangerous and parsed["description"] == "'" + dangerous
    assert parsed["tags"] == "'" + dangerous + "; ok"
    # JSONL keeps the exact value
    out = io.StringIO()
    write_jsonl(rows, out)
    assert json.loads(out.getvalue())["alt_text"] == dangerous


def test_csv_leaves_harmless_cells_alone() -> None:
    rows = rows_for(record(alt_text="A = B, 50% off - today @ noon"))
    stream = io.StringIO(newline="")
    write_csv(rows, stream)
    (parsed,) = csv.DictReader(io.StringIO(stream.getvalue(), newline=""))
    assert parsed["alt_text"] == "A = B, 50% off - today @ noon"


def test_jsonl_round_trip_keeps_unicode_unescaped() -> None:
    rows = rows_for(
        record("cms/ü.jpg", alt_text="赤い帽子の男性", language="ja", tags=["帽子", "男性"]),
        record("photos/2.jpg", alt_text_reviewed="Crimson tile", decorative=True),
    )
    stream = io.StringIO()
    assert write_jsonl(rows, stream) == 2
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "赤い帽子の男性" in lines[0]  # ensure_ascii=False
    first = json.loads(lines[0])
    assert first["tags"] == ["帽子", "男性"] and first["decorative"] is False
    assert read_jsonl_rows(stream.getvalue().splitlines(keepends=True)) == rows


# --- The review file ------------------------------------------------------------------------------------------


def line(**fields: Any) -> str:
    entry = {
        "bucket": "uploads",
        "key": "cms/hero.jpg",
        "version": "v1",
        "alt_text": "Espressomaschine aus Edelstahl",
        "content_sha256": SHA_A,
        "reviewed_by": "redaktion",
    }
    entry.update(fields)
    return json.dumps({k: v for k, v in entry.items() if v is not ...}, ensure_ascii=False) + "\n"


def test_a_review_file_is_read() -> None:
    entries = read_review_file(
        ["\ufeff" + line(), "\n", line(key="cms/b.jpg", content_sha256=None, reviewed_by=None, extra="ignored")]
    )
    assert entries == [
        ReviewEntry("uploads", "cms/hero.jpg", "v1", "Espressomaschine aus Edelstahl", SHA_A, "redaktion"),
        ReviewEntry("uploads", "cms/b.jpg", "v1", "Espressomaschine aus Edelstahl", None, None),
    ]
    assert [entry.line for entry in entries] == [1, 3]


def test_the_review_file_round_trips_with_what_the_gallery_writes() -> None:
    found = item(key="cms/hero.jpg")
    entry = review_entry(found, "Rotes Quadrat", "ed")
    stream = io.StringIO()
    write_review_file([entry], stream)
    assert read_review_file(io.StringIO(stream.getvalue())) == [entry]
    assert json.loads(stream.getvalue()) == {
        "bucket": "uploads",
        "key": "cms/hero.jpg",
        "version": "v1",
        "alt_text": "Rotes Quadrat",
        "content_sha256": SHA_A,
        "reviewed_by": "ed",
    }


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("{not json\n", "line 2: not JSON (Expecting property name enclosed in double quotes at column 2)"),
        ('["a list"]\n', "line 2: a JSON object is expected, not a list"),
        (line(alt_text=...), "line 2: missing field 'alt_text'"),
        (line(version=...), "line 2: missing field 'version'"),
        (line(key=7), "line 2: field 'key' must be a string, not a number"),
        (line(key=""), "line 2: field 'key' is empty"),
        (line(alt_text=None), "line 2: field 'alt_text' must be a string, not null"),
        (line(reviewed_by=["x"]), "line 2: field 'reviewed_by' must be a string or null, not a list"),
        (line(content_sha256="abc"), "line 2: field 'content_sha256' must be a SHA-256 digest"),
        (line(alt_text="ä" * 1_001), "line 2: field 'alt_text' is 2,002 bytes of UTF-8, above the limit of 2,000"),
        (line(), "line 2: s3://uploads/cms/hero.jpg again (first at line 1)"),
    ],
)
def test_review_file_errors_name_the_line(bad: str, problem: str) -> None:
    with pytest.raises(ReviewFileError) as raised:
        read_review_file([line(), bad], source="reviews.jsonl")
    assert str(raised.value).startswith(f"reviews.jsonl {problem}")


def test_an_alt_text_of_exactly_2000_bytes_is_accepted() -> None:
    (entry,) = read_review_file([line(alt_text="ä" * 1_000)])
    assert len(entry.alt_text.encode()) == 2_000


def test_every_problem_of_a_review_file_is_reported_at_once() -> None:
    with pytest.raises(ReviewFileError) as raised:
        read_review_file(["nope\n", line(), line(bucket=1, alt_text=2)])
    assert raised.value.errors == [
        "review file line 1: not JSON (Expecting value at column 1)",
        "review file line 3: field 'bucket' must be a string, not a number",
        "review file line 3: field 'alt_text' must be a string, not a number",
    ]


def test_flag_is_a_plain_value() -> None:
    assert Flag("cache_hit", "x") == Flag("cache_hit", "x")
    assert GalleryItem(bucket="b", key="k").effective_alt_text == ""
