"""The cost estimate: shapes to requests and tokens by the pipeline's own sizing and requests, the report."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from devkit.model_server import ChatRequest, estimate_prompt_tokens
from sightline.describe import DescribeOptions
from sightline.estimate import (
    ASSUMED_DOCUMENT_PAGES,
    ASSUMED_PAGE_TEXT_CHARS,
    COMPLETION_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    Estimate,
    EstimateReport,
    ObjectShape,
    estimate_object,
    human_bytes,
)
from sightline.imaging import BUDGETS, prepare_image, target_size
from sightline.pages import RenderedPage, prepare_page
from sightline.pricing import ModelPrice, parse_prices
from sightline.profiles import load_profiles_file
from sightline.prompt import description_request, page_request, summary_request
from sightline.settings import BUNDLED_PROFILES_FILE, Settings
from tests.unit.images import encode, photo

pytestmark = pytest.mark.unit

SETTINGS = Settings(results_table="t", results_topic_arn="arn:aws:sns:us-east-1:1:t")
PROFILES = load_profiles_file(BUNDLED_PROFILES_FILE)
QWEN = ModelPrice("qwen/qwen2.5-vl-72b-instruct", 0.8, 0.8, "USD", "patch28")
GPT = ModelPrice("gpt-4o", 2.5, 10.0, "USD", "tiles512")
PRICES = parse_prices(
    """
currency = "USD"
[models."qwen/qwen2.5-vl-72b-instruct"]
input_per_million = 0.80
output_per_million = 0.80
[models."gpt-4o"]
input_per_million = 2.50
output_per_million = 10.00
image_tokens = "tiles512"
""",
    source="test prices",
)


def options(profile: str, **changes: object) -> DescribeOptions:
    found = PROFILES.get(profile)
    assert found is not None
    return dataclasses.replace(DescribeOptions.for_profile(found, SETTINGS), **changes)  # type: ignore[arg-type]


def billed_by_devkit(*requests: object) -> int:
    """What the emulated provider (devkit.model_server) bills for these requests' prompts."""
    return sum(estimate_prompt_tokens(ChatRequest(body={"messages": r.messages})) for r in requests)  # type: ignore[attr-defined]


# --- Images.


def test_a_photo_is_sized_to_the_standard_budget_and_its_prompt_is_the_real_request() -> None:
    # GIVEN the README's 24 MP photo under the caption profile (detail auto)
    estimate = estimate_object(ObjectShape("image", 6000, 4000), options("photos"), SETTINGS, QWEN)
    # THEN one request, the image at 941×627 (782 patches, the README's figure), the prompt as the devkit bills it
    assert (estimate.requests, estimate.image_tokens, estimate.exact_shape) == (1, 782, True)
    prepared = prepare_image(encode(photo(6000, 4000), "JPEG"), "auto", max_pixels=SETTINGS.max_image_pixels)
    assert (prepared.sent_width, prepared.sent_height) == target_size(6000, 4000, BUDGETS["standard"])
    request = description_request(prepared, options("photos").rules)
    assert abs(estimate.prompt_tokens - billed_by_devkit(request)) <= 1
    assert estimate.completion_tokens == COMPLETION_TOKENS["caption"]


def test_the_prompt_counts_the_profiles_instructions_language_and_context() -> None:
    plain = estimate_object(ObjectShape("image", 800, 600), options("photos"), SETTINGS, QWEN)
    german = estimate_object(ObjectShape("image", 800, 600), options("cms-de"), SETTINGS, QWEN)
    with_context = options("cms-de", context="Produktseite: ACME Barista " * 20)
    context = estimate_object(ObjectShape("image", 800, 600), with_context, SETTINGS, QWEN)
    assert plain.image_tokens == german.image_tokens == context.image_tokens
    assert plain.prompt_tokens < german.prompt_tokens < context.prompt_tokens
    prepared = prepare_image(encode(photo(800, 600), "JPEG"), "auto", max_pixels=SETTINGS.max_image_pixels)
    request = description_request(
        prepared, with_context.rules, instructions=with_context.instructions, context=with_context.context
    )
    assert abs(context.prompt_tokens - billed_by_devkit(request)) <= 1


@pytest.mark.parametrize(
    ("detail", "task", "budget", "sent"),
    [("low", "caption", "low", "low"), ("high", "caption", "high", "high"), ("auto", "document", "high", "high")],
)
def test_detail_picks_the_budget_and_auto_follows_the_task(detail: str, task: str, budget: str, sent: str) -> None:
    chosen = options("default", detail=detail)
    chosen = dataclasses.replace(chosen, rules=dataclasses.replace(chosen.rules, task=task))
    estimate = estimate_object(ObjectShape("image", 2480, 3508), chosen, SETTINGS, QWEN)
    width, height = target_size(2480, 3508, BUDGETS[budget])  # type: ignore[index]
    assert estimate.image_tokens == -(-width // 28) * -(-height // 28)
    tiles = estimate_object(ObjectShape("image", 2480, 3508), chosen, SETTINGS, GPT)
    assert tiles.image_tokens == (85 if sent == "low" else 85 + 170 * tiles_of(width, height))


def tiles_of(width: int, height: int) -> int:
    scale = min(1.0, 768 / min(width, height))  # pricing.toml's tiles512: never enlarged
    return -(-round(width * scale) // 512) * -(-round(height * scale) // 512)


def test_no_price_counts_patches_and_a_tiles_price_counts_tiles() -> None:
    shape = ObjectShape("image", 6000, 4000)
    assert estimate_object(shape, options("photos"), SETTINGS, None).image_tokens == 782
    # 941×627: within 2048 and its short side under 768 already, 2×2 tiles
    assert estimate_object(shape, options("photos"), SETTINGS, GPT).image_tokens == 85 + 170 * 4
    # 1646×1097 (high): its short side fitted to 768, 1152×768, 3×2 tiles
    high = options("photos", detail="high")
    assert estimate_object(shape, high, SETTINGS, GPT).image_tokens == 85 + 170 * 6


def test_an_image_of_unknown_size_is_the_worst_case_of_its_budget() -> None:
    unknown = estimate_object(ObjectShape("unknown"), options("photos"), SETTINGS, QWEN)
    assert not unknown.exact_shape and unknown.assumption == "image size" and unknown.requests == 1
    for width, height in ((768, 768), (1024, 576), (6000, 4000), (4000, 6000), (1000, 1000), (2048, 1024)):
        known = estimate_object(ObjectShape("image", width, height), options("photos"), SETTINGS, QWEN)
        assert known.image_tokens <= unknown.image_tokens
    high = estimate_object(ObjectShape("image"), options("documents"), SETTINGS, QWEN)
    assert high.image_tokens > unknown.image_tokens and high.assumption == "image size"


def test_refused_objects_cost_nothing() -> None:
    empty = estimate_object(ObjectShape("unknown", refusal="the object is empty"), options("photos"), SETTINGS, QWEN)
    assert (empty.requests, empty.total_tokens, empty.refused) == (0, 0, "the object is empty")
    bomb = estimate_object(ObjectShape("image", 20_000, 20_000), options("photos"), SETTINGS, QWEN)
    assert bomb.requests == 0 and bomb.refused and "above the limit" in bomb.refused
    strip = estimate_object(ObjectShape("image", 10_000, 100), options("photos"), SETTINGS, QWEN)
    assert strip.requests == 0 and strip.refused


def test_typical_output_can_be_replaced_with_measured_figures() -> None:
    estimate = estimate_object(
        ObjectShape("image", 800, 600), options("photos"), SETTINGS, QWEN, completion_tokens={"caption": 321}
    )
    assert estimate.completion_tokens == 321


# --- Documents.


def letter_page(number: int, layer: str | None) -> RenderedPage:
    image = prepare_page(Image.new("L", (1385, 1792), 255), kind="pdf")
    return RenderedPage(number=number, image=image, text_layer=layer)


def test_a_pdf_is_two_pages_a_request_at_the_page_size_with_anchors_and_a_summary() -> None:
    # GIVEN a 3-page letter PDF whose first page's text layer has 1,000 characters
    chosen = options("documents")
    estimate = estimate_object(ObjectShape("pdf", 612, 792, pages=3, text_layer_chars=1_000), chosen, SETTINGS, QWEN)
    # THEN pages 1-2, page 3, the summary; each page 1385×1792 (3,200 patches)
    assert (estimate.requests, estimate.image_tokens, estimate.exact_shape) == (3, 3 * 3_200, True)
    # AND the prompt is what the devkit bills for the same requests
    layer = "x" * 1_000
    pages = [letter_page(n, layer) for n in (1, 2, 3)]
    summary_text = "\n\n".join(f"[page {n}]\n{layer}" for n in (1, 2, 3))
    requests = [
        page_request(pages[:2], chosen.rules, instructions=chosen.instructions),
        page_request(pages[2:], chosen.rules, instructions=chosen.instructions),
        summary_request(summary_text, chosen.rules, page_count=3, instructions=chosen.instructions),
    ]
    assert abs(estimate.prompt_tokens - billed_by_devkit(*requests)) <= 3
    # AND the output: each page's transcription (its text layer's length) plus the summary with 4 fields
    assert estimate.completion_tokens == (3 * (1_000 + 160)) // 4 + 150 + 4 * 15


def test_a_pdf_without_text_layer_sends_no_anchor_and_assumes_a_page_of_text() -> None:
    scan = estimate_object(
        ObjectShape("pdf", 612, 792, pages=4, text_layer_chars=0), options("documents"), SETTINGS, QWEN
    )
    dense = estimate_object(
        ObjectShape("pdf", 612, 792, pages=4, text_layer_chars=ASSUMED_PAGE_TEXT_CHARS),
        options("documents"),
        SETTINGS,
        QWEN,
    )
    assert scan.image_tokens == dense.image_tokens
    assert dense.prompt_tokens - scan.prompt_tokens > 4 * ASSUMED_PAGE_TEXT_CHARS // 4  # the anchors
    assert scan.completion_tokens == dense.completion_tokens  # the transcription is assumed as long
    no_anchor = dataclasses.replace(SETTINGS, document_text_anchor=False)
    off = estimate_object(
        ObjectShape("pdf", 612, 792, pages=4, text_layer_chars=ASSUMED_PAGE_TEXT_CHARS),
        options("documents"),
        no_anchor,
        QWEN,
    )
    assert off.prompt_tokens == scan.prompt_tokens


def test_a_tiff_has_no_anchors_and_its_pages_fit_the_document_budget() -> None:
    tiff = estimate_object(ObjectShape("tiff", 2480, 3508, pages=2), options("documents"), SETTINGS, QWEN)
    # A4 at 300 dpi → within 1792 px and letter's pixel count
    width, height = 1267, 1792
    assert tiff.image_tokens == 2 * (-(-width // 28) * -(-height // 28))
    assert tiff.requests == 2


@pytest.mark.parametrize(
    ("pages", "queue", "range_pages", "requests"),
    [(1, None, 8, 2), (9, None, 8, 6), (9, "q", 8, 6), (9, "q", 5, 6), (9, "q", 3, 7), (20, "q", 8, 11)],
)
def test_page_requests_pair_pages_within_each_range(
    pages: int, queue: str | None, range_pages: int, requests: int
) -> None:
    settings = dataclasses.replace(SETTINGS, work_queue_url=queue, document_range_pages=range_pages)
    estimate = estimate_object(
        ObjectShape("pdf", 612, 792, pages=pages, text_layer_chars=10), options("documents"), settings, QWEN
    )
    assert estimate.requests == requests


def test_unknown_page_count_and_size_are_stated_assumptions() -> None:
    estimate = estimate_object(ObjectShape("pdf"), options("documents"), SETTINGS, QWEN)
    assert not estimate.exact_shape and estimate.assumption == "page count, page size"
    assert estimate.image_tokens == ASSUMED_DOCUMENT_PAGES * 3_200
    assert estimate.requests == -(-ASSUMED_DOCUMENT_PAGES // 2) + 1


def test_documents_the_pipeline_refuses_cost_nothing() -> None:
    too_many = estimate_object(ObjectShape("pdf", 612, 792, pages=501), options("documents"), SETTINGS, QWEN)
    assert too_many.requests == 0 and too_many.refused and "DOCUMENT_MAX_PAGES" in too_many.refused
    billboard = estimate_object(ObjectShape("pdf", 14_400, 14_400, pages=1), options("documents"), SETTINGS, QWEN)
    assert billboard.requests == 0 and billboard.refused


def test_a_long_documents_summary_is_bounded_like_the_prompt() -> None:
    short = estimate_object(
        ObjectShape("pdf", 612, 792, pages=10, text_layer_chars=5_000), options("documents"), SETTINGS, QWEN
    )
    long = estimate_object(
        ObjectShape("pdf", 612, 792, pages=400, text_layer_chars=5_000), options("documents"), SETTINGS, QWEN
    )
    per_page_short = short.prompt_tokens / 10
    per_page_long = long.prompt_tokens / 400
    # 10 pages: 50,000 characters of summary input; 400 pages: 60,000 at most, shared by 40 times more pages
    assert per_page_long < per_page_short
    assert long.prompt_tokens < 400 * (3_200 + 5_000 // 4 + 600) + 60_000 // 4 + 2_000


# --- The report.


def test_the_report_sums_per_profile_and_detail_with_totals_prices_and_bytes_read() -> None:
    report = EstimateReport()
    one = Estimate(1, 1_000, 150, 800, exact_shape=True)
    assumed = Estimate(1, 1_200, 150, 1_000, exact_shape=False, assumption="image size")
    document = Estimate(3, 10_000, 1_000, 9_600, exact_shape=False, assumption="page count, page size")
    refused = Estimate(0, 0, 0, 0, exact_shape=True, refused="the object is empty")
    report.add("photos", "auto", "qwen/qwen2.5-vl-72b-instruct", 2_000_000, one, 16_384)
    report.add("photos", "auto", "qwen/qwen2.5-vl-72b-instruct", 3_000_000, assumed, 20_480)
    report.add("documents", "high", "gpt-4o", 500_000, document, 30_000)
    report.add("photos", "auto", "qwen/qwen2.5-vl-72b-instruct", 0, refused, 0)
    report.add("odd", "low", "someone/else", 1_000, one, 1_000)
    data = report.to_dict(PRICES)
    groups = {row["profile"]: row for row in data["groups"]}
    assert groups["photos"]["objects"] == 3 and groups["photos"]["requests"] == 2
    assert groups["photos"]["prompt_tokens"] == 2_200 and groups["photos"]["completion_tokens"] == 300
    assert groups["photos"]["cost"] == pytest.approx((2_200 + 300) * 0.8 / 1e6)
    assert groups["documents"]["cost"] == pytest.approx((10_000 * 2.5 + 1_000 * 10.0) / 1e6)
    assert groups["odd"]["cost"] is None and data["no_price_for"] == ["someone/else"]
    assert data["total"]["objects"] == 5 and data["total"]["requests"] == 6
    assert data["total"]["prompt_tokens"] == 13_200 and data["total"]["image_tokens"] == 12_200
    assert data["total"]["cost"] == pytest.approx(groups["photos"]["cost"] + groups["documents"]["cost"])
    assert data["bytes_read"] == {"total": 67_864, "per_object": 67_864 / 5, "objects_bytes": 5_501_000}
    assert data["assumed"] == {"objects": 2, "by_assumption": {"image size": 1, "page count": 1, "page size": 1}}
    assert data["refused"] == 1

    text = report.render(PRICES)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["PROFILE", "DETAIL", "MODEL", "OBJECTS"] and "PRICE (USD)" in lines[0]
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert "13,200" in total and "1,450" in total and "+ unpriced" in total
    assert f"{data['total']['cost']:,.4f}" in total
    odd = next(line for line in lines if line.startswith("odd"))
    assert odd.endswith("no price for someone/else")
    assert "Bytes read for the estimate: 66.3 KiB in total, 13.3 KiB per object" in text
    assert "Shape assumed for 2 object(s), image size for 1, page count for 1, page size for 1" in text
    assert "Refused before any model call (no cost): 1 object(s)" in text
    assert "No price for someone/else in test prices" in text


def test_an_empty_report_renders_and_human_bytes_reads_well() -> None:
    text = EstimateReport().render(PRICES)
    assert "TOTAL" in text and "0 B in total" in text
    assert EstimateReport().to_dict()["total"]["objects"] == 0
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024**3)] == ["0 B", "1,023 B", "1.5 KiB", "5.0 GiB"]


def test_the_overhead_constant_is_in_every_request() -> None:
    one = estimate_object(ObjectShape("image", 800, 600), options("photos"), SETTINGS, QWEN)
    assert one.prompt_tokens > one.image_tokens + REQUEST_OVERHEAD_TOKENS
