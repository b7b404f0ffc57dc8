"""Text we store or publish: valid UTF-8 and bounded in bytes, because that is what AWS counts and refuses."""

from __future__ import annotations

import re

# A lone UTF-16 surrogate (json.loads turns "\ud800" into one) is not encodable as UTF-8: DynamoDB answers 500
# and the SNS client raises UnicodeEncodeError. Paired surrogates never reach a str, so any left is lone.
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls other than tab and newline, and DEL: invisible, and some AWS APIs reject them.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """The text with lone surrogates replaced and invisible control characters removed (carriage returns
    become newlines)."""
    text = _SURROGATE.sub(REPLACEMENT, text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """At most ``max_bytes`` of UTF-8, never splitting a character: (text, whether anything was cut)."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[: max(0, max_bytes)].decode("utf-8", "ignore"), True


def bounded(text: str, max_bytes: int) -> str:
    """Storable and at most ``max_bytes`` of UTF-8; a cut is marked with an ellipsis inside the bound."""
    text = storable(text)
    cut, truncated = truncate_utf8(text, max_bytes)
    if not truncated:
        return cut
    return truncate_utf8(text, max(0, max_bytes - 3))[0] + "…"
