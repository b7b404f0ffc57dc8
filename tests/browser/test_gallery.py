"""The review gallery in a real browser: `make run`'s sample corpus through the real handler, `sightline report`
on the stack, the page opened from disk in headless Chromium (Debian's package, driven by Playwright), then
`sightline review apply` on the review file the page downloaded.

Never skipped: without Chromium the test fails and says how to install it (.ci/run installs it). The model is
the embedded OCR endpoint's answer shape with each sample's own text instead of running OCR (fast and exact),
plus one extra object whose key and text are hostile HTML, to show that nothing from a record becomes markup.
A full-page screenshot is kept in test-artifacts/gallery.png; with SIGHTLINE_UPDATE_DOCS=1 the top of the page is
also saved as docs/gallery.png, the README's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageOps

from devkit.ocr_model import OcrResponder
from devkit.samples import REPORT_KEY, REPORT_PAGES, Sample, build_samples
from tests.conftest import Deployment

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
DOCS_SCREENSHOT = REPO / "docs" / "gallery.png"
LETTER_RATIO = 612 / 792  # the sample PDF's pages

HOSTILE = '"><img src=x onerror=alert(1)></script><script>alert(2)</script>'
HOSTILE_KEY = 'photos/"><img src=x onerror=alert(1)></script>.png'
HOSTILE_SIZE = (900, 300)  # an aspect ratio no sample has: the responder knows it by that
LOGO_EDIT = "ACME-Logo: ein orangefarbener Kreis, daneben der Schriftzug „ACME“ in Blau"

CHROMIUM_MISSING = (
    "Chromium is not installed, and the gallery's browser test needs it (it is never skipped). Install Debian's "
    "package: `sudo apt-get install -y --no-install-recommends chromium fonts-dejavu-core` (.ci/run does this), "
    "then run the tests again."
)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(CHROMIUM_MISSING, pytrace=False)
    return path


def hostile_sample() -> Sample:
    image = Image.new("RGB", HOSTILE_SIZE, (250, 250, 245))
    ImageDraw.Draw(image).rectangle((40, 40, 860, 260), outline=(200, 40, 40), width=8)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return Sample(HOSTILE_KEY, out.getvalue(), "image/png", "succeeded", HOSTILE)


class SampleTextResponder(OcrResponder):
    """OcrResponder whose "OCR" returns the text a sample was drawn with, the sample found by its image's aspect
    ratio (every sample has its own): the same answers as `make run`'s endpoint, in milliseconds."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        super().__init__()
        self.by_ratio: list[tuple[float, list[str]]] = [(LETTER_RATIO, list(REPORT_PAGES[0]))]
        for sample in samples:
            if sample.key == REPORT_KEY or not sample.body:
                continue
            try:
                with Image.open(io.BytesIO(sample.body)) as opened:
                    upright = ImageOps.exif_transpose(opened)
            except OSError:
                continue  # not an image: the pipeline refuses it before the model
            self.by_ratio.append((upright.width / upright.height, sample.text.splitlines()))

    def read_lines(self, image: Image.Image) -> list[str]:
        ratio = image.width / image.height
        return list(min(self.by_ratio, key=lambda entry: abs(entry[0] - ratio))[1])


@pytest.fixture
def sample_run(deployment: Deployment, function_env: dict[str, str], model: Any) -> Iterator[list[Sample]]:
    """The sample corpus plus the hostile object, described by the real handler through the queue."""
    import app
    from devkit.lambda_emulator import QueueFeeder

    samples = [*build_samples(), hostile_sample()]
    model.responder.default = SampleTextResponder(samples)
    s3 = deployment.client("s3")
    for sample in samples:
        s3.put_object(
            Bucket=deployment.resources.bucket,
            Key=sample.key,
            Body=sample.body,
            ContentType=sample.content_type,
            Metadata=sample.metadata,
        )
    QueueFeeder.for_stack(deployment.client("sqs"), deployment.resources, app.lambda_handler).drain()
    ended = {sample.key: (deployment.record(sample.key) or {}).get("status") for sample in samples}
    assert ended == {sample.key: sample.expect for sample in samples}
    yield samples


def serious(violations: list[dict[str, Any]]) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[node['target'] for node in v['nodes']][:5]}"
        for v in violations
        if v.get("impact") in ("serious", "critical")
    ]


@pytest.mark.integration
def test_the_gallery_of_the_sample_run_works_in_a_real_browser(
    sample_run: list[Sample], deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import expect, sync_playwright

    from sightline_cli.main import main

    browser_path = chromium()
    started = time.perf_counter()
    keys = {sample.key for sample in sample_run}
    failed = {sample.key for sample in sample_run if sample.expect == "failed"}
    assert len(failed) == 2

    # GIVEN the gallery `sightline report` writes for the stack
    assert main(["report", "--stack-name", "sightline", "--out", str(tmp_path / "report")]) == 0
    page_path = Path(capsys.readouterr().out.strip())
    assert page_path == (tmp_path / "report" / "index.html").resolve() and page_path.is_file()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            problems: list[str] = []
            fetched: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
            page.on("request", lambda request: fetched.append(request.url))

            # WHEN it is opened from disk
            page.goto(page_path.as_uri())
            cards = page.locator("article.card")

            # THEN every object renders, the hostile one as text: no dialog, no injected element, nothing fetched
            expect(cards).to_have_count(len(keys))
            assert set(cards.evaluate_all("cards => cards.map(card => card.dataset.key)")) == keys
            expect(page.locator("#result-count")).to_have_text(f"Showing all {len(keys)} objects.")
            assert page.locator("img[src='x']").count() == 0 and page.locator("body script").count() == 2
            hostile = page.locator("article.card", has=page.get_by_role("heading", name=HOSTILE_KEY, exact=True))
            expect(hostile).to_have_count(1)
            hostile.locator("details.ocr summary").click()
            expect(hostile.locator("details.ocr pre")).to_have_text(HOSTILE)
            # thumbnails: each image and the PDF's first page (our own preparation); a placeholder saying why
            thumbs = page.locator("article.card .thumb img")
            expect(thumbs).to_have_count(len(keys) - len(failed))
            assert all(
                src.startswith("data:image/jpeg;base64,") for src in thumbs.evaluate_all("i => i.map(x => x.src)")
            )
            report = page.locator("article.card[data-key='documents/quarterly-report.pdf']")
            expect(report.locator(".thumb-note")).to_have_text("Page 1 of 3")
            expect(report.locator(".pages li")).to_have_count(3)
            expect(page.locator("article.card[data-key='photos/not-really.jpg'] .placeholder")).to_contain_text(
                "not an image"
            )

            # a filter narrows the list: status failed shows exactly the two failed samples, with their reasons
            page.select_option("#filter-status", "failed")
            expect(cards).to_have_count(2)
            assert set(cards.evaluate_all("cards => cards.map(card => card.dataset.key)")) == failed
            expect(page.locator("#result-count")).to_have_text(f"Showing 2 of {len(keys)} objects.")
            expect(cards.locator(".badge[data-flag='failed']")).to_have_count(2)
            page.select_option("#filter-status", "")
            page.select_option("#filter-profile", "cms-de")
            expect(cards).to_have_count(1)
            page.select_option("#filter-profile", "")
            page.select_option("#filter-flag", "markup_removed")
            assert cards.evaluate_all("cards => cards.map(card => card.dataset.key)") == [HOSTILE_KEY]
            page.click("#clear")
            expect(cards).to_have_count(len(keys))

            # search, reached with "/"
            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("/")
            expect(page.locator("#search")).to_be_focused()
            page.keyboard.type("sunset")
            expect(cards).to_have_count(1)
            expect(cards.first).to_have_attribute("data-key", "photos/sunset.JPG")
            page.fill("#search", "northwind")  # OCR text of the PDF and of the inbox page
            expect(cards).to_have_count(2)
            page.fill("#search", "")
            expect(cards).to_have_count(len(keys))

            # sort: the costliest first (the three-page PDF)
            page.select_option("#sort", "cost")
            page.select_option("#order", "desc")
            expect(cards.first).to_have_attribute("data-key", REPORT_KEY)
            page.select_option("#sort", "key")
            page.select_option("#order", "asc")

            # keyboard: j and k move between objects (k stops at the first), e edits the current one's alt text
            page.locator("body").click(position={"x": 5, "y": 5})
            order = cards.evaluate_all("cards => cards.map(card => card.dataset.key)")
            focused = "() => document.activeElement.classList.contains('card') && document.activeElement.dataset.key"
            page.keyboard.press("j")
            first = order.index(page.evaluate(focused))
            page.keyboard.press("j")
            assert page.evaluate(focused) == order[first + 1]
            page.keyboard.press("ArrowUp")
            assert page.evaluate(focused) == order[first]
            for _ in order:
                page.keyboard.press("k")
            assert page.evaluate(focused) == order[0] == "cms/produkte/acme-logo.png"
            page.keyboard.press("e")
            logo = cards.first
            editor = logo.locator("textarea")
            expect(editor).to_be_focused()
            editor.fill(LOGO_EDIT)
            expect(logo.locator(".edit-count-line")).to_have_text(f"{len(LOGO_EDIT)} of 125 characters")
            expect(logo.locator(".badge.edited")).to_be_visible()
            expect(page.locator("#edit-count")).to_have_text("1 alt text edited.")
            page.keyboard.press("Escape")
            assert page.evaluate(focused) == order[0]

            # the review file: the edited item only, with its key, version and the reviewer's name
            page.click("#download")
            expect(page.locator("#download-message")).to_contain_text("Enter your name")
            page.fill("#reviewer", "Rita Reviewer")
            with page.expect_download() as download_info:
                page.click("#download")
            download = download_info.value
            assert download.suggested_filename.startswith("sightline-review-")
            assert download.suggested_filename.endswith(".jsonl")
            review_file = tmp_path / download.suggested_filename
            download.save_as(review_file)
            lines = [json.loads(line) for line in review_file.read_text(encoding="utf-8").splitlines()]
            record = deployment.record("cms/produkte/acme-logo.png")
            assert record is not None
            assert lines == [
                {
                    "bucket": deployment.resources.bucket,
                    "key": "cms/produkte/acme-logo.png",
                    "version": record["version_token"],
                    "alt_text": LOGO_EDIT,
                    "content_sha256": record["content_sha256"],
                    "reviewed_by": "Rita Reviewer",
                }
            ]

            # accessible: axe-core finds nothing serious or critical, with an editor and a text section open
            report.locator("details.ocr summary").click()
            page.locator("details.legend-box summary").click()
            results = Axe().run(page)
            assert serious(results.response["violations"]) == []
            assert problems == []
            assert all(url.startswith(("file:", "data:", "blob:")) for url in fetched), fetched

            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "gallery.png"
            page.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("SIGHTLINE_UPDATE_DOCS"):  # the README's: the top of the page, as a person sees it
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                top = {"x": 0, "y": 0, "width": 1280, "height": 1400}
                page.screenshot(path=str(DOCS_SCREENSHOT), full_page=True, clip=top)
        finally:
            browser.close()

    # AND `sightline review apply` stores the downloaded review on the record
    assert main(["review", "apply", str(review_file), "--stack-name", "sightline"]) == 0
    stored = deployment.record("cms/produkte/acme-logo.png")
    assert stored is not None
    assert stored["alt_text_reviewed"] == LOGO_EDIT
    assert stored["review"]["reviewed_by"] == "Rita Reviewer" and stored["review_stale"] is False
    assert time.perf_counter() - started < 60


@pytest.mark.unit
def test_the_page_keeps_hostile_values_as_data() -> None:
    from sightline.gallery import Flag, GalleryItem
    from sightline_cli.report import Thumbnail, build_page, script_json

    item = GalleryItem(
        bucket="b",
        key="</script><script>alert(1)</script>",
        alt_text=HOSTILE,
        description="<!-- a comment opener --> & \u2028 line separator",
        tags=("</SCRIPT >",),
        flags=(Flag("alt_missing", "</script>"),),
    )
    page = build_page([item], [Thumbnail(note="<b>bold</b>")], source="<table>")
    # The two </script> of the page's own elements, and no other: nothing of the record closes an element.
    assert page.lower().count("</script") == 2
    assert "<!--" not in page.split('id="gallery-data">', 1)[1]
    assert "&lt;table&gt;" in page and "<table>" not in page
    data = page.split('<script type="application/json" id="gallery-data">', 1)[1].split("</script>", 1)[0]
    parsed = json.loads(data)
    assert parsed["items"][0]["alt_text"] == HOSTILE and parsed["items"][0]["key"] == item.key
    assert parsed["items"][0]["thumbnail"]["note"] == "<b>bold</b>"
    assert json.loads(script_json({"a": "</script>\u2028"})) == {"a": "</script>\u2028"}


class FakeS3:
    """get_object from a dict of key → bytes; any other key is NoSuchKey, "huge" claims 1 GB."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, **request: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        key = request["Key"]
        if key == "huge":
            return {"ContentLength": 10**9, "Body": io.BytesIO(b"")}
        if key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return {"ContentLength": len(self.objects[key]), "Body": io.BytesIO(self.objects[key])}


@pytest.mark.unit
def test_thumbnails_are_small_jpegs_and_every_failure_is_a_placeholder(tmp_path: Path) -> None:
    import base64

    from sightline.settings import Settings
    from sightline_cli.report import write_gallery

    big = Image.new("RGB", (3000, 1000), (10, 120, 200))
    out = io.BytesIO()
    big.save(out, format="PNG")
    records = [
        {"bucket": "b", "key": key, "status": "succeeded", "object": {"size": size}}
        for key, size in (("wide.png", len(out.getvalue())), ("gone.png", 10), ("huge", 10**9), ("text.jpg", 5))
    ]
    page = write_gallery(
        records,
        s3_client=FakeS3({"wide.png": out.getvalue(), "text.jpg": b"hello"}),
        out_dir=tmp_path,
        profiles=None,
        prices=None,
        settings=Settings(results_table="t", results_topic_arn="a"),
    )
    data = json.loads(page.read_text(encoding="utf-8").split('id="gallery-data">', 1)[1].split("</script>", 1)[0])
    thumbs = {item["key"]: item["thumbnail"] for item in data["items"]}
    assert (thumbs["wide.png"]["width"], thumbs["wide.png"]["height"]) == (240, 80)
    jpeg = base64.b64decode(thumbs["wide.png"]["src"].split(",", 1)[1])
    assert jpeg.startswith(b"\xff\xd8") and len(jpeg) < 20_000
    assert thumbs["gone.png"] == {"src": None, "width": None, "height": None, "note": thumbs["gone.png"]["note"]}
    assert "no longer in the bucket" in thumbs["gone.png"]["note"]
    assert "read for a thumbnail" in thumbs["huge"]["note"] and thumbs["huge"]["src"] is None
    assert thumbs["text.jpg"]["src"] is None and thumbs["text.jpg"]["note"]
