"""The request we send: the provider guide's message shape, the strict answer schema, the text-only repair."""

from __future__ import annotations

import json

import pytest

from sightline.imaging import prepare_image
from sightline.prompt import ANSWER_SCHEMA, build_messages, build_repair_messages, description_request
from tests.unit.images import encode, photo

pytestmark = pytest.mark.unit


def test_message_shape_follows_the_provider_guide() -> None:
    image = prepare_image(encode(photo(800, 600), "JPEG"), "low", max_pixels=10**8)
    system, user = build_messages(image)
    assert system["role"] == "system"
    assert user["role"] == "user"
    image_part, text_part = user["content"]
    assert image_part["type"] == "image_url"
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert image_part["image_url"]["detail"] == "low"
    assert text_part["type"] == "text" and "JSON" in text_part["text"]


def test_repair_request_does_not_resend_the_image() -> None:
    messages = build_repair_messages("description: a cat")
    assert "image_url" not in json.dumps(messages)
    assert "description: a cat" in messages[-1]["content"]


def test_the_description_request_asks_for_a_strict_schema_every_key_required() -> None:
    image = prepare_image(encode(photo(64, 48), "PNG"), "low", max_pixels=10**8)
    request = description_request(image)
    assert request.json_schema == ANSWER_SCHEMA
    assert set(ANSWER_SCHEMA["required"]) == set(ANSWER_SCHEMA["properties"])
    assert ANSWER_SCHEMA["additionalProperties"] is False
