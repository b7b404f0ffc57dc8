"""The offline OCR stand-in served by ModelServer and called with the real openai client."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

import openai
import pytest
from openai import OpenAI
from PIL import Image

from devkit.model_server import ModelServer
from devkit.ocr_model import NO_CAPTION_DESCRIPTION, OcrBox, OcrResponder, order_lines
from devkit.samples import DOCUMENT_KEY, LOGO_KEY, Sample, build_samples

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
