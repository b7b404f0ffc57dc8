"""The request we send the vision model and the validation of what it answers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sightline.errors import InvalidModelOutputError
from sightline.imaging import PreparedImage

# Bump when the instruction changes: cached results are only reused for the same prompt version.
PROMPT_VERSION = "1"
ALT_TEXT_MAX = 125
DESCRIPTION_MAX_SENTENCES = 3
MAX_TAGS = 10
MAX_TAG_LENGTH = 40

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

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_ALT_PREFIX = re.compile(
    r"^\s*(?:an?\s+|the\s+)?(?:image|picture|photo|photograph|graphic|illustration)\s+(?:of|showing|that shows)\s+",
    re.IGNORECASE,
)
_NO_TEXT_PLACEHOLDERS = {"none", "n/a", "no text", "(none)", "null", "no visible text", "-"}


@dataclass(frozen=True)
class ImageDescription:
    """A validated answer. ``adjustments`` says what validation had to fix, so nothing is silent."""

    description: str
    alt_text: str
    text: str
    tags: tuple[str, ...]
    adjustments: tuple[str, ...] = field(default=())

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())


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
        {"role": "user", "content": REPAIR_INSTRUCTION + answer[:8000]},
    ]


def extract_json_object(answer: str) -> dict[str, Any]:
    """The first JSON object in an answer, tolerating code fences and prose around it."""
    candidates = [m.group(1) for m in _FENCE.finditer(answer)] + [answer]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except ValueError:
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = candidate.find("{", start + 1)
    raise InvalidModelOutputError("the model's answer contains no JSON object")


def _clean_space(value: str) -> str:
    return " ".join(value.split())


def _limit_sentences(description: str, adjustments: list[str]) -> str:
    sentences = _SENTENCE_END.split(description)
    if len(sentences) > DESCRIPTION_MAX_SENTENCES:
        adjustments.append(f"description cut to {DESCRIPTION_MAX_SENTENCES} sentences")
        return " ".join(sentences[:DESCRIPTION_MAX_SENTENCES])
    return description


def _clean_alt_text(alt_text: str, description: str, adjustments: list[str]) -> str:
    alt_text = _clean_space(alt_text)
    if not alt_text:
        alt_text = _SENTENCE_END.split(description)[0]
        adjustments.append("alt_text missing: taken from the description")
    stripped = _ALT_PREFIX.sub("", alt_text)
    if stripped != alt_text and stripped:
        alt_text = stripped[0].upper() + stripped[1:]
        adjustments.append('alt_text: leading "image of" removed')
    if len(alt_text) > ALT_TEXT_MAX:
        cut = alt_text[: ALT_TEXT_MAX + 1].rsplit(" ", 1)[0] if " " in alt_text[:ALT_TEXT_MAX] else alt_text
        alt_text = cut[:ALT_TEXT_MAX].rstrip(" ,;:-")
        adjustments.append(f"alt_text cut to {ALT_TEXT_MAX} characters")
    return alt_text


def _clean_text(value: Any, adjustments: list[str]) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = "\n".join(str(line) for line in value)
        adjustments.append("text given as a list: joined by lines")
    if not isinstance(value, str):
        raise InvalidModelOutputError(f"'text' must be a string, got {type(value).__name__}")
    text = value.strip()
    if text.lower() in _NO_TEXT_PLACEHOLDERS:
        adjustments.append(f"text placeholder {text!r} read as no text")
        return ""
    return text


def _clean_tags(value: Any, adjustments: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        raise InvalidModelOutputError(f"'tags' must be a list, got {type(value).__name__}")
    tags: list[str] = []
    for item in value:
        tag = _clean_space(str(item)).lower()[:MAX_TAG_LENGTH]
        if tag and tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        adjustments.append(f"tags cut to {MAX_TAGS}")
    return tuple(tags[:MAX_TAGS])


def parse_description(answer: str) -> ImageDescription:
    """Parse and validate the model's answer; raise InvalidModelOutputError when it cannot be used."""
    document = extract_json_object(answer)
    adjustments: list[str] = []
    description = document.get("description")
    if not isinstance(description, str) or not description.strip():
        raise InvalidModelOutputError("the model's JSON has no 'description' text")
    description = _limit_sentences(_clean_space(description), adjustments)
    alt_text = document.get("alt_text") or ""
    if not isinstance(alt_text, str):
        raise InvalidModelOutputError(f"'alt_text' must be a string, got {type(alt_text).__name__}")
    return ImageDescription(
        description=description,
        alt_text=_clean_alt_text(alt_text, description, adjustments),
        text=_clean_text(document.get("text"), adjustments),
        tags=_clean_tags(document.get("tags"), adjustments),
        adjustments=tuple(adjustments),
    )
