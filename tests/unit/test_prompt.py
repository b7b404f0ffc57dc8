"""The request shape and tolerant, strict validation of the model's answer."""

from __future__ import annotations

import json

import pytest

from sightline.errors import InvalidModelOutputError
from sightline.imaging import prepare_image
from sightline.prompt import ALT_TEXT_MAX, build_messages, build_repair_messages, parse_description
from tests.unit.images import encode, photo

pytestmark = pytest.mark.unit

GOOD = {"description": "A red bicycle leans on a wall.", "alt_text": "Red bicycle", "text": "", "tags": ["bike"]}


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


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: f"```json\n{s}\n```",
        lambda s: f"Here is the JSON you asked for:\n{s}\nHope this helps!",
        lambda s: f"```\n{s}\n```",
        lambda s: "{not json} then " + s,
    ],
)
def test_answers_wrapped_in_fences_or_prose_are_parsed(wrap) -> None:
    description = parse_description(wrap(json.dumps(GOOD)))
    assert description.description == GOOD["description"]
    assert description.tags == ("bike",)
    assert description.adjustments == ()


@pytest.mark.parametrize(
    "answer",
    ["", "I cannot help with that.", "[1, 2, 3]", json.dumps({"alt_text": "x"}), json.dumps({"description": "  "})],
)
def test_unusable_answers_raise_invalid_output(answer: str) -> None:
    with pytest.raises(InvalidModelOutputError):
        parse_description(answer)


def test_validation_fixes_what_it_can_and_says_so() -> None:
    answer = {
        "description": "One. Two. Three. Four.",
        "alt_text": "Image of " + "a very long alt text " * 10,
        "text": ["line 1", "line 2"],
        "tags": ["A", "a", " B ", *[f"t{i}" for i in range(20)]],
    }
    description = parse_description(json.dumps(answer))
    assert description.description == "One. Two. Three."
    assert len(description.alt_text) <= ALT_TEXT_MAX
    assert not description.alt_text.lower().startswith("image of")
    assert description.alt_text.startswith("A very long")
    assert description.text == "line 1\nline 2"
    assert description.tags[:2] == ("a", "b") and len(description.tags) == 10
    assert len(description.adjustments) == 5


def test_text_is_kept_verbatim_and_placeholders_mean_none() -> None:
    verbatim = parse_description(json.dumps({**GOOD, "text": "  TOTAL  $42.00\nThank   you  "}))
    assert verbatim.text == "TOTAL  $42.00\nThank   you"
    assert verbatim.has_text
    assert not parse_description(json.dumps({**GOOD, "text": "N/A"})).has_text
    assert not parse_description(json.dumps({**GOOD, "text": None})).has_text


def test_missing_alt_text_comes_from_the_description() -> None:
    description = parse_description(json.dumps({"description": "A dog runs. It is happy."}))
    assert description.alt_text == "A dog runs."


@pytest.mark.parametrize("field", ["text", "tags", "alt_text"])
def test_wrong_types_are_invalid(field: str) -> None:
    with pytest.raises(InvalidModelOutputError):
        parse_description(json.dumps({**GOOD, field: {"nested": True}}))
