"""The request we send the vision model: instruction, answer schema, and the text-only repair request."""

from __future__ import annotations

from typing import Any

from sightline.imaging import PreparedImage
from sightline.ports import ModelRequest

# Bump when the instruction or the answer's schema changes: cached results are reused for the same version only.
PROMPT_VERSION = "2"
ALT_TEXT_MAX = 125

SYSTEM_PROMPT = "You describe images for accessibility and search. You answer with one JSON object and nothing else."

INSTRUCTION = """Look at the image and answer with a JSON object with exactly these keys:
- "description": one to three sentences describing what the image shows.
- "alt_text": alternative text for a screen reader, at most 125 characters, without starting with "image of", "picture of" or "photo of".
- "text": all text visible in the image, verbatim, in reading order, lines separated by "\\n"; an empty string if there is none.
- "tags": up to 10 short lowercase keywords.
Answer with the JSON object only, no code fences, no commentary."""

REPAIR_INSTRUCTION = """The answer below was supposed to be a JSON object with the keys "description", "alt_text", "text" and "tags", but it could not be parsed. Rewrite it as that JSON object, keeping its content. Answer with the JSON object only.

Answer:
"""

# The answer's shape, sent as a strict JSON Schema where the provider supports structured output. Strict mode
# wants every key required and no others; the instruction above says the same for providers without it.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "alt_text": {"type": "string"},
        "text": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["description", "alt_text", "text", "tags"],
    "additionalProperties": False,
}
ANSWER_SCHEMA_NAME = "image_description"
REPAIR_ANSWER_MAX_CHARS = 8_000


def build_messages(image: PreparedImage) -> list[dict[str, Any]]:
    """The provider guide's shape: the image part first (base64 data URL with detail), then the instruction."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image.data_url, "detail": image.detail_sent}},
                {"type": "text", "text": INSTRUCTION},
            ],
        },
    ]


def build_repair_messages(answer: str) -> list[dict[str, Any]]:
    """A text-only follow-up: fixing the format must not pay for the image's tokens again."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": REPAIR_INSTRUCTION + answer[:REPAIR_ANSWER_MAX_CHARS]},
    ]


def description_request(image: PreparedImage, *, max_output_tokens: int | None = None) -> ModelRequest:
    return ModelRequest(
        messages=build_messages(image),
        json_schema=ANSWER_SCHEMA,
        schema_name=ANSWER_SCHEMA_NAME,
        max_output_tokens=max_output_tokens,
    )


def repair_request(answer: str, *, max_output_tokens: int | None = None) -> ModelRequest:
    return ModelRequest(
        messages=build_repair_messages(answer),
        json_schema=ANSWER_SCHEMA,
        schema_name=ANSWER_SCHEMA_NAME,
        max_output_tokens=max_output_tokens,
    )
