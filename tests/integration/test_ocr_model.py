"""The offline OCR stand-in served by ModelServer and called with the real openai client."""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from PIL import Image, ImageDraw

from devkit.model_server import ModelServer
from devkit.ocr_model import NO_CAPTION_DESCRIPTION, OcrBox, OcrResponder, order_lines
from devkit.samples import DOCUMENT_KEY, LOGO_KEY, Sample, build_samples, font

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def samples() -> dict[str, Sample]:
    return {sample.key: sample for sample in build_samples()}


@pytest.fixture(scope="module")
def client() -> Iterator[OpenAI]:
    # One responder for the module: building the OCR engine is the slow part.
    with (
        ModelServer(OcrResponder(), models=["local-ocr"]) as server,
        OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as openai_client,
    ):
        yield openai_client


def _as_jpeg(data: bytes) -> bytes:
    """Re-encode as the pipeline sends images: RGB JPEG."""
    out = BytesIO()
    Image.open(BytesIO(data)).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def _describe(client: OpenAI, image: bytes, mime: str = "image/jpeg") -> Any:
    url = f"data:{mime};base64," + base64.b64encode(image).decode()
    return client.chat.completions.create(
        model="local-ocr",
        messages=[
            {"role": "system", "content": "You describe images for accessibility."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                    {"type": "text", "text": "Answer with a JSON object."},
                ],
            },
        ],
        max_tokens=800,
        temperature=0,
    )


def _squash(text: str) -> str:
    # The OCR model sometimes drops the space between words; compare without whitespace.
    return "".join(text.split()).lower()


def test_reads_the_document_sample(client: OpenAI, samples: dict[str, Sample]) -> None:
    document = samples[DOCUMENT_KEY]

    response = _describe(client, _as_jpeg(document.body))
    answer = json.loads(response.choices[0].message.content)

    expected_words = document.text.split()
    found = [word for word in expected_words if _squash(word) in _squash(answer["text"])]
    assert len(found) >= 0.8 * len(expected_words), answer["text"]
    assert len(answer["text"].splitlines()) == len(document.text.splitlines())
    assert answer["description"] == NO_CAPTION_DESCRIPTION
    assert answer["alt_text"].startswith("Image containing the text: Quarterly")
    assert len(answer["alt_text"]) <= 125
    assert answer["tags"] == ["local-ocr", "has-text"]
    assert response.model == "local-ocr"
    assert response.usage.prompt_tokens > 1000  # 1000x1400 px is ~1800 patches of 28 px.
    assert response.usage.completion_tokens == len(response.choices[0].message.content) // 4


def test_applies_exif_orientation_and_transparency(client: OpenAI, samples: dict[str, Sample]) -> None:
    rotated = json.loads(_describe(client, samples["photos/rotated-exif.jpg"].body).choices[0].message.content)
    logo_png = samples[LOGO_KEY].body
    logo = json.loads(_describe(client, logo_png, "image/png").choices[0].message.content)

    assert _squash(rotated["text"]).startswith("top")
    assert _squash(logo["text"]) == "acme"


def test_image_without_text_says_so(client: OpenAI, samples: dict[str, Sample]) -> None:
    answer = json.loads(_describe(client, samples["photos/sunset.JPG"].body).choices[0].message.content)

    assert answer == {
        "description": NO_CAPTION_DESCRIPTION,
        "alt_text": "Image (no caption model configured)",
        "text": "",
        "tags": ["local-ocr", "no-text"],
    }


def test_undecodable_image_is_a_bad_request(client: OpenAI, samples: dict[str, Sample]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _describe(client, samples["photos/not-really.jpg"].body)

    assert caught.value.code == "invalid_image_format"


def test_concurrent_requests_are_serialised_safely(client: OpenAI, samples: dict[str, Sample]) -> None:
    image = samples["photos/rotated-exif.jpg"].body

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: _describe(client, image), range(4)))

    texts = {json.loads(a.choices[0].message.content)["text"] for a in answers}
    assert len(texts) == 1


def test_order_lines_groups_by_line_then_left_to_right() -> None:
    boxes = [
        OcrBox("world", 120, 12, 200, 40),
        OcrBox("second", 10, 60, 100, 88),
        OcrBox("hello", 10, 10, 100, 38),  # Slightly higher than "world": same line.
        OcrBox("line", 110, 58, 170, 86),
    ]

    assert order_lines(boxes) == ["hello world", "second line"]
    assert order_lines([]) == []


# --- Documents: page requests (one or two page images) and the text-only summary request.

PAGE_SEVEN = ("Annual Statement 2026", "Opening balance 1,200.00", "Closing balance 980.50")
PAGE_EIGHT = ("Notes to the statement", "Interest paid monthly", "Signed by the treasurer")
PAGE_DESCRIPTION_7 = "Page 7 of a document (read by local OCR; no caption model configured)"


def _page_jpeg(lines: tuple[str, ...]) -> bytes:
    """A small rendered page: black lines of text on white, as a JPEG like the pipeline sends."""
    page = Image.new("RGB", (900, 120 + 80 * len(lines)), "white")
    draw = ImageDraw.Draw(page)
    for index, line in enumerate(lines):
        draw.text((60, 60 + 80 * index), line, fill=(20, 20, 20), font=font(40))
    out = BytesIO()
    page.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _data_url(image: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(image).decode()


def _ask_pages(client: OpenAI, pages: dict[int, bytes | str], *, schema: bool = True) -> Any:
    """A page request as sightline/prompt.py writes it: the images (bytes, or a URL), the page line, text layers
    and context."""
    numbers = ", ".join(str(number) for number in pages)
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image if isinstance(image, str) else _data_url(image)}}
        for image in pages.values()
    ]
    content.append({"type": "text", "text": f"Pages in this request: {numbers}\nDescribe each page as JSON."})
    content.extend(
        {"type": "text", "text": f'<text_layer page="{number}">Ignore this digital text</text_layer>'}
        for number in pages
    )
    content.append({"type": "text", "text": "<context>An upload to the finance inbox</context>"})
    params: dict[str, Any] = {}
    if schema:
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "document_pages", "strict": True, "schema": {"type": "object"}},
        }
    messages: list[Any] = [
        {"role": "system", "content": "You read document pages."},
        {"role": "user", "content": content},
    ]
    return client.chat.completions.create(
        model="local-ocr",
        messages=messages,
        max_tokens=2000,
        temperature=0,
        **params,
    )


def _ask_summary(client: OpenAI, text: str, pages: int, fields: dict[str, Any] | None = None) -> Any:
    properties: dict[str, Any] = {"description": {"type": "string"}, "alt_text": {"type": "string"}}
    if fields is not None:
        properties["fields"] = fields
    return client.chat.completions.create(
        model="local-ocr",
        messages=[
            {"role": "system", "content": "You summarise documents."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise this document as JSON."},
                    {"type": "text", "text": f'<document_text pages="{pages}">\n{text}\n</document_text>'},
                ],
            },
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "document_summary",
                "strict": True,
                "schema": {"type": "object", "properties": properties},
            },
        },
        max_tokens=800,
    )


def _lines_match(text: str, expected: tuple[str, ...]) -> bool:
    return [_squash(line) for line in text.splitlines()] == [_squash(line) for line in expected]


def test_two_page_request_answers_each_page_with_its_own_text(client: OpenAI) -> None:
    # GIVEN a request with pages 7 and 8, each image showing different text
    response = _ask_pages(client, {7: _page_jpeg(PAGE_SEVEN), 8: _page_jpeg(PAGE_EIGHT)})

    # WHEN the answer is read
    content = response.choices[0].message.content
    answer = json.loads(content)

    # THEN there is one entry per image, in order, each with the text of its own image
    assert [entry["page"] for entry in answer["pages"]] == [7, 8]
    assert set(answer) == {"pages"}
    seven, eight = answer["pages"]
    assert _lines_match(seven["text"], PAGE_SEVEN), seven["text"]
    assert _lines_match(eight["text"], PAGE_EIGHT), eight["text"]
    assert seven["description"] == PAGE_DESCRIPTION_7
    assert eight["description"].startswith("Page 8 of a document")
    assert response.usage.completion_tokens == len(content) // 4
    assert response.usage.prompt_tokens > 2 * 32 * 10  # two images of 900 px width: over 32 patches a row each


def test_one_page_request_answers_that_page(client: OpenAI) -> None:
    answer = json.loads(_ask_pages(client, {9: _page_jpeg(PAGE_EIGHT)}, schema=False).choices[0].message.content)

    [entry] = answer["pages"]
    assert entry["page"] == 9
    assert _lines_match(entry["text"], PAGE_EIGHT), entry["text"]


def test_page_request_with_an_undecodable_image_is_a_bad_request(client: OpenAI, samples: dict[str, Sample]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask_pages(client, {1: _page_jpeg(PAGE_SEVEN), 2: samples["photos/not-really.jpg"].body})

    assert caught.value.code == "invalid_image_format"


def test_page_request_whose_page_line_disagrees_with_its_images_is_a_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="local-ocr",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": _data_url(_page_jpeg(PAGE_SEVEN))}},
                        {"type": "text", "text": "Pages in this request: 3, 4"},
                    ],
                }
            ],
        )

    assert caught.value.code == "page_count_mismatch"


def test_summary_request_is_answered_from_the_document_text(client: OpenAI) -> None:
    # GIVEN the assembled text of a 20-page document whose first line is long
    first = "Master services agreement between Northwind Imaging Ltd and Harbour Street Bakery, " * 2
    text = f"\n  \n{first.strip()}\nSecond line\n"

    # WHEN the summary is asked for without fields
    content = _ask_summary(client, text, 20).choices[0].message.content
    answer = json.loads(content)

    # THEN the description and alt text come from the first line, cut to 100 characters; no fields
    cut = first.strip()[:100]
    assert answer == {
        "description": f"A 20-page document beginning: {cut}",
        "alt_text": cut,
        "tags": ["local-ocr", "document"],
    }


def test_summary_request_with_a_fields_schema_answers_every_field_null(client: OpenAI) -> None:
    fields = {
        "type": "object",
        "properties": {"invoice_number": {"type": ["string", "null"]}, "total": {"type": ["number", "null"]}},
        "required": ["invoice_number", "total"],
    }

    answer = json.loads(_ask_summary(client, "Invoice 4821\nTotal 12.00", 2, fields).choices[0].message.content)

    assert answer["fields"] == {"invoice_number": None, "total": None}
    assert answer["description"] == "A 2-page document beginning: Invoice 4821"
    assert answer["alt_text"] == "Invoice 4821"


def test_summary_of_a_document_without_text_says_document(client: OpenAI) -> None:
    answer = json.loads(_ask_summary(client, "", 3).choices[0].message.content)

    assert answer["alt_text"] == "Document"
    assert answer["tags"] == ["local-ocr", "document"]


def test_text_only_request_without_document_text_still_needs_an_image(client: OpenAI) -> None:
    # GIVEN a repair request: text only, no <document_text>
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="local-ocr",
            messages=[{"role": "user", "content": 'Fix this JSON: {"description": '}],
        )

    assert caught.value.code == "missing_image"


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over http on loopback: (directory, base URL)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_page_images_by_loopback_url_are_read(client: OpenAI, web_root: tuple[Path, str]) -> None:
    # GIVEN page images served on loopback, as the emulated S3 serves presigned page images
    directory, base = web_root
    (directory / "p3.jpg").write_bytes(_page_jpeg(PAGE_SEVEN))
    (directory / "p4.jpg").write_bytes(_page_jpeg(PAGE_EIGHT))

    # WHEN the pages are sent by URL
    answer = json.loads(_ask_pages(client, {3: f"{base}/p3.jpg", 4: f"{base}/p4.jpg"}).choices[0].message.content)

    # THEN each page is read from its own image
    assert [entry["page"] for entry in answer["pages"]] == [3, 4]
    assert _lines_match(answer["pages"][0]["text"], PAGE_SEVEN)
    assert _lines_match(answer["pages"][1]["text"], PAGE_EIGHT)


def test_page_image_url_that_cannot_be_fetched_is_a_bad_request(client: OpenAI, web_root: tuple[Path, str]) -> None:
    _, base = web_root

    with pytest.raises(openai.BadRequestError) as missing:
        _ask_pages(client, {1: f"{base}/expired.jpg"})
    with pytest.raises(openai.BadRequestError) as remote:
        _ask_pages(client, {1: "https://example.com/page.jpg"})

    assert missing.value.code == remote.value.code == "invalid_image_url"
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["message"].startswith(f"Error while downloading {base}/expired.jpg.")
