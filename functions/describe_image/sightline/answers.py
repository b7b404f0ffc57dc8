"""A tolerant, honest reader of the vision model's answer: the last valid JSON object, cleaned and bounded. The same
reading serves an image's answer, a document's page answer (matched to the pages asked for) and its summary."""

from __future__ import annotations

import itertools
import json
import math
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sightline.errors import EmptyModelAnswerError, InvalidModelOutputError, ModelRefusedError
from sightline.profiles import TASKS, Task
from sightline.text import bounded, storable, truncate_utf8, utf8_size

__all__ = [
    "AnswerRules",
    "DocumentSummary",
    "ImageDescription",
    "PageAnswer",
    "PagesAnswer",
    "looks_like_refusal",
    "read_answer",
    "read_pages_answer",
    "read_summary_answer",
]

_Found = TypeVar("_Found")


@dataclass(frozen=True)
class AnswerRules:
    """The task, the bounds and the language the answer is asked for and checked against."""

    language: str = "en"  # BCP 47 tag of the answer's language, e.g. "de", "pt-BR", "ja", "ar"
    alt_text_max_chars: int = 125
    description_max_bytes: int = 4_000
    text_max_bytes: int = 100_000  # OCR text kept in the record
    max_tags: int = 10
    tag_max_chars: int = 40
    task: Task = "caption"
    # The document task's fields to extract, as the profile wrote them (a JSON Schema of type object); the
    # prompt turns it into a strict schema. Not hashed: a dict cannot be, and the task says enough for a hash.
    fields_schema: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"AnswerRules.task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.fields_schema is not None and not isinstance(self.fields_schema, dict):
            raise ValueError("AnswerRules.fields_schema must be a JSON Schema object (a dict) or None")
        # Settings build these at cold start: a zero or negative bound is a configuration mistake, not an answer's.
        minimums = {"alt_text_max_chars": 1, "text_max_bytes": 1, "max_tags": 1, "tag_max_chars": 1}
        # Four bytes hold any one character: a description is never cut to nothing.
        minimums["description_max_bytes"] = 4
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"AnswerRules.{name} must be at least {minimum}")


@dataclass(frozen=True)
class ImageDescription:
    """A validated answer. ``adjustments`` says what validation had to fix, so nothing is silent."""

    description: str
    alt_text: str
    text: str
    tags: tuple[str, ...]
    adjustments: tuple[str, ...] = ()
    text_truncated: bool = False
    # True when the image carries no information (a divider, a texture): alt_text is then "" by design.
    decorative: bool = False
    # The document task's extracted fields, as the model gave them (validated against the profile elsewhere);
    # None when the answer had none or they could not be kept within bounds.
    fields: Any = field(default=None, hash=False)

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())


@dataclass(frozen=True)
class PageAnswer:
    """One document page as the model transcribed it (``text`` bounded to the rules' text_max_bytes)."""

    number: int
    description: str
    text: str
    text_truncated: bool = False


@dataclass(frozen=True)
class PagesAnswer:
    """A page request's answer, matched to the pages asked for. Nothing is guessed: a page the model skipped is
    ``missing``, one it folded into another page's entry is ``merged`` (that entry's text is kept for the first
    page of it), and ``adjustments`` says what else reading had to fix or ignore."""

    pages: dict[int, PageAnswer] = field(
        hash=False
    )  # the requested pages that were answered, by number, in the requested order
    missing: tuple[int, ...]  # requested pages the model skipped
    merged: tuple[int, ...]  # requested pages the model merged into another page's entry
    adjustments: tuple[str, ...] = ()


@dataclass(frozen=True)
class DocumentSummary:
    """A whole document's summary, read from a text-only request over its transcribed pages."""

    description: str
    alt_text: str
    tags: tuple[str, ...]
    fields: Any | None = field(default=None, hash=False)  # as the model gave them; validated elsewhere
    adjustments: tuple[str, ...] = ()


# --- Limits that keep reading any answer linear and quick.

SCAN_WINDOW_CHARS = 200_000  # the answer is at the end: this tail is searched first, and with every tolerance
MAX_SCAN_STARTS = 2_000  # candidate "{" / "[" positions tried per pass
SCAN_BUDGET_CHARS = 4_000_000  # characters the decoder may walk over in one pass, failures included
MAX_CANDIDATES = 50  # objects validated, from the last one back: a real answer is never 50 objects from the end
MAX_KEYS = 100  # keys of one object looked at: an answer has four
PROSE_READ_CHARS = 65_536  # of a description, alt text or tag: far more than any bound keeps, cleaned in no time
MAX_TAG_ITEMS = 1_000
REFUSAL_MAX_CHARS = 300  # a refusal is a short answer; a long text that opens with one is a description
MAX_ADJUSTMENTS = 20
ADJUSTMENT_MAX_BYTES = 200
REFUSAL_QUOTE_MAX_BYTES = 500
FIELDS_MAX_BYTES = 16_384  # extracted fields, as compact JSON: an invoice's take far less
FIELDS_MAX_DEPTH = 16  # nesting of the extracted fields: DynamoDB refuses items nested deeper than 32


def read_answer(
    content: str | None,
    *,
    refusal: str | None = None,
    tool_arguments: Sequence[str] = (),
    rules: AnswerRules = AnswerRules(),  # frozen: one shared default is safe
) -> ImageDescription:
    """The model's answer as a validated description, or the permanent error that says why it cannot be used.

    Raises ModelRefusedError when the model declined (``refusal`` set, or its words read as declining),
    EmptyModelAnswerError when there is no content and no tool call, and InvalidModelOutputError when nothing
    usable was found (the only one a text-only repair call may fix).
    """
    return _read_model_answer(content, refusal, tool_arguments, lambda text: _best_description(text, rules))


def _read_model_answer(
    content: str | None,
    refusal: str | None,
    tool_arguments: Sequence[str],
    best: Callable[[str], tuple[_Found | None, str | None]],
) -> _Found:
    """What every reader shares: the refusal, the empty answer, reasoning stripped, the content then the tool
    calls searched by ``best`` (the found value, or the problem with the latest candidate), prose refusals."""
    if isinstance(refusal, str) and refusal:
        raise _refused(refusal)
    if content is not None and not isinstance(content, str):
        raise InvalidModelOutputError(f"the model's answer is a {type(content).__name__}, not text")
    if isinstance(tool_arguments, str):  # one string passed where a sequence was meant
        tool_arguments = (tool_arguments,)
    arguments = [argument for argument in tool_arguments if isinstance(argument, str) and argument.strip()]
    text = content or ""
    if not text.strip() and not arguments:
        raise EmptyModelAnswerError("the model completed with an empty answer")

    answer = _strip_reasoning(text)
    problem: str | None = None
    if answer.strip():
        found, problem = best(answer)
        if found is not None:
            return found
    elif text.strip():
        problem = "the model's answer holds only its reasoning, no JSON object"
    # Some providers put the answer in a function call instead of the content: the last valid call wins.
    for argument in reversed(arguments):
        found, argument_problem = best(argument)
        if found is not None:
            return found
        problem = problem or argument_problem
    bare = answer.strip().strip("`").removeprefix("json").strip()
    if looks_like_refusal(bare):
        raise _refused(bare)
    raise InvalidModelOutputError(problem or "the model's answer contains no JSON object")


def _refused(words: str) -> ModelRefusedError:
    """The model's own words go into the error, bounded, never into a field."""
    quoted = bounded(" ".join(words.split()), REFUSAL_QUOTE_MAX_BYTES)
    if not quoted:
        return ModelRefusedError("the model declined to describe the image")
    return ModelRefusedError(f'the model declined to describe the image: "{quoted}"')


# --- Reasoning blocks: drafts inside them are never the answer.

_REASONING_OPEN = re.compile(r"<\s*+(?P<name>think|thinking|reasoning)\b[^<>]{0,200}>", re.IGNORECASE)
_REASONING_CLOSE = re.compile(r"<\s*+/\s*+(?:think|thinking|reasoning)\s*+>", re.IGNORECASE)


def _strip_reasoning(text: str) -> str:
    """The answer without reasoning blocks, nor a draft inside one.

    Only the last ``SCAN_WINDOW_CHARS`` go through the regexes; the text in front of them is only searched for
    the tags (a regex tried at each "<" of a 5 MB answer takes most of a second). Reasoning there means the
    answer is in the tail: what is in front of it is dropped, and a block it left open runs into the tail.
    """
    head, tail = text[:-SCAN_WINDOW_CHARS], text[-SCAN_WINDOW_CHARS:]
    lowered = head.lower()
    if any(tag in lowered for tag in ("<think", "<reasoning", "</think", "</reasoning")):
        if max(lowered.rfind("<think"), lowered.rfind("<reasoning")) > max(
            lowered.rfind("</think"), lowered.rfind("</reasoning")
        ):
            tail = "<think>" + tail
        head = ""
    tail, blocks = _remove_blocks(tail, _REASONING_OPEN, lambda _name: _REASONING_CLOSE)
    # A close tag left without its opening: some servers strip the opening tag, so everything before it is reasoning.
    last_close = deque(_REASONING_CLOSE.finditer(tail), maxlen=1)
    if last_close:
        return tail[last_close[0].end() :]
    return tail if blocks else head + tail


def _remove_blocks(
    text: str, opener: re.Pattern[str], closer: Callable[[str], re.Pattern[str]]
) -> tuple[str, list[str]]:
    """Remove every element from its opening to its closing tag, in one pass (a lazy regex would be quadratic).

    An element that is never closed runs to the end, as it would in a browser. ``closer`` maps the opening's
    ``name`` group to the pattern of its closing tag. Returns the text and the names of what was removed.
    """
    parts: list[str] = []
    names: list[str] = []
    position = 0
    while (opening := opener.search(text, position)) is not None:
        parts.append(text[position : opening.start()])
        names.append(opening.group("name").lower())
        closing = closer(opening.group("name").lower()).search(text, opening.end())
        if closing is None:
            position = len(text)
            break
        position = closing.end()
    parts.append(text[position:])
    return "".join(parts), names


# --- Finding the JSON object: the last one that validates, never the schema example echoed before it.

_STRICT = json.JSONDecoder()
_LENIENT = json.JSONDecoder(strict=False)  # also accepts raw newlines and tabs inside strings
_START = re.compile(r"[{\[]")
# A // comment (not the one in "http://") or a comma before a closing bracket. Not string-aware on purpose: a
# tokenizer costs a Python call per string, this is one C-speed pass, and it only runs on text that strict and
# lenient-without-it parsing could not read. At worst it damages a string that holds " //" or ", }".
_LENIENT_FIX = re.compile(r"(?:^|(?<=[\s,{\[]))//[^\n]*+|,(?=\s*+[}\]])", re.MULTILINE)
_WRAPPERS = ("result", "answer", "data", "output", "response")
_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "description": ("description", "caption", "summary"),
    "alt_text": ("alt_text", "alttext", "alt", "alternative_text"),
    "text": ("text", "ocr_text", "ocrtext", "ocr", "visible_text", "extracted_text", "text_in_image", "transcription"),
    "tags": ("tags", "keywords", "labels"),
    "decorative": ("decorative", "is_decorative", "decorative_image"),
    "fields": ("fields", "extracted_fields", "extraction"),
}
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_KEY_SEPARATORS = re.compile(r"[\s\-_]+")


def _best_description(
    answer: str, rules: AnswerRules, *, ignored: tuple[str, ...] = ()
) -> tuple[ImageDescription | None, str | None]:
    found, problem, lenient = _best_in(answer, lambda values: _last_valid(values, rules, ignored=ignored))
    if found is not None and lenient:
        found = replace(found, adjustments=(*found.adjustments, "answer read as lenient JSON")[:MAX_ADJUSTMENTS])
    return found, problem


def _best_in(
    answer: str, last_valid: Callable[[list[Any]], tuple[_Found | None, str | None]]
) -> tuple[_Found | None, str | None, bool]:
    """The last candidate that validates, else the problem with the latest candidate; and whether it was read
    leniently.

    The tail is searched strictly, then leniently (raw line breaks in strings, then comments and trailing commas
    dropped too). Only when the answer is longer than the tail and none of that worked is the whole answer
    searched, strictly: one object megabytes long starts before the tail.
    """
    window = answer[-SCAN_WINDOW_CHARS:]
    found, problem = last_valid(_json_values(window, _STRICT, from_end=True))
    if found is not None:
        return found, None, False
    for text in (window, _LENIENT_FIX.sub("", window)):
        lenient, lenient_problem = last_valid(_json_values(text, _LENIENT, from_end=True))
        if lenient is not None:
            return lenient, None, True
        problem = problem or lenient_problem
    if len(answer) > len(window):
        found, whole_problem = last_valid(_json_values(answer, _STRICT, from_end=False))
        return found, (None if found else whole_problem or problem), False
    return None, problem, False


def _json_values(text: str, decoder: json.JSONDecoder, *, from_end: bool) -> list[Any]:
    """Top-level JSON objects and arrays in prose, left to right; each is skipped once parsed.

    Starts at the ``MAX_SCAN_STARTS``-th opening from the end (``from_end``) or at the first one. Bounded: at
    most ``MAX_SCAN_STARTS`` openings are tried and the decoder walks at most ``SCAN_BUDGET_CHARS``, so unclosed
    or deeply nested input cannot make this quadratic.
    """
    values: list[Any] = []
    if "{" not in text and "[" not in text:
        return values
    position = _first_start(text, from_end)
    tries, budget = 0, SCAN_BUDGET_CHARS
    while position >= 0 and tries < MAX_SCAN_STARTS and budget > 0:
        start = _START.search(text, position)
        if start is None:
            break
        tries += 1
        value, end, cost = _decode_at(text, start.start(), decoder)
        budget -= cost
        if end < 0:
            position = start.start() + 1
            continue
        values.append(value)
        position = end
    return values


def _first_start(text: str, from_end: bool) -> int:
    """The first opening, or the ``MAX_SCAN_STARTS``-th from the end (found in one backward pass); -1 if none."""
    if not from_end or text.count("{") + text.count("[") <= MAX_SCAN_STARTS:
        start = _START.search(text)
        return start.start() if start else -1
    brace, bracket = text.rfind("{"), text.rfind("[")
    for _ in range(MAX_SCAN_STARTS - 1):
        if brace > bracket:
            brace = text.rfind("{", 0, brace)
        else:
            bracket = text.rfind("[", 0, bracket)
    return max(brace, bracket)


_FIRST_SLICE_CHARS = 4_096
_NOTHING: tuple[Any, int] = (None, -1)


def _decode_at(text: str, start: int, decoder: json.JSONDecoder) -> tuple[Any, int, int]:
    """(value, end, cost) of the JSON value at ``start``; ``end`` is -1 when there is none there.

    Decodes a slice first: a JSONDecodeError counts the lines before its position, so failing in place near the
    end of a long text would cost O(length) for every start tried. Only a slice that failed where it was cut
    (at its end, or in a string it cut open) is retried on the whole rest, which the cost accounts for.
    """
    piece = text[start : start + _FIRST_SLICE_CHARS]
    rest = len(text) - start
    try:
        value, end = decoder.raw_decode(piece)
        return value, start + end, end
    except json.JSONDecodeError as error:
        cut_short = error.pos >= len(piece) - 8 or error.msg.startswith("Unterminated string")
        if len(piece) == rest or not cut_short:
            return *_NOTHING, max(1, error.pos)
    except RecursionError:  # nested deeper than the stack: costly to find out, so few of these are tried
        return *_NOTHING, SCAN_BUDGET_CHARS // 40
    except ValueError:  # an integer too long to convert
        return *_NOTHING, len(piece)
    try:
        value, end = decoder.raw_decode(text[start:])
        return value, start + end, rest
    except RecursionError:
        return *_NOTHING, max(rest, SCAN_BUDGET_CHARS // 40)
    except ValueError:  # JSONDecodeError included
        return *_NOTHING, rest


def _last_valid(
    values: list[Any], rules: AnswerRules, *, ignored: tuple[str, ...] = ()
) -> tuple[ImageDescription | None, str | None]:
    """The last value that builds a description; ``ignored`` keys are not read (a summary has no "text")."""
    problem = None
    for value in reversed(values[-MAX_CANDIDATES:]):
        fields, note = _unwrap(value)
        if fields is None:
            problem = problem or f"the model's JSON is a {_type_name(value)}, not an object"
            continue
        fields.update(dict.fromkeys(ignored))
        try:
            found = _build(fields, rules, [note] if note else [])
        except InvalidModelOutputError as error:
            problem = problem or error.message
            continue
        return found, None
    return None, problem


def _unwrap(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The answer's fields by canonical name, looking inside {"result": {...}}-style wrappers and [ {...} ]."""
    note = None
    for _ in range(4):
        if isinstance(value, list) and len(value) == 1:
            value, note = value[0], "answer unwrapped from a one-element list"
            continue
        if not isinstance(value, dict):
            return None, None
        keys = _snake_keys(value)
        fields = {name: _first_present(keys, synonyms) for name, synonyms in _SYNONYMS.items()}
        if fields["description"] is not None:
            return fields, note
        wrapper = next((name for name in _WRAPPERS if isinstance(keys.get(name), dict | list)), None)
        if wrapper is None:
            return fields, note
        value, note = keys[wrapper], f'answer unwrapped from "{wrapper}"'
    return None, None


def _snake_keys(document: dict[str, Any]) -> dict[str, Any]:
    """Keys as snake_case ("altText", "Alt-Text", "alt text" → "alt_text"); a non-null value wins a clash."""
    keys: dict[str, Any] = {}
    for key, value in itertools.islice(document.items(), MAX_KEYS):
        name = _KEY_SEPARATORS.sub("_", _CAMEL_HUMP.sub("_", str(key)).strip()).lower().strip("_")
        if keys.get(name) is None:
            keys[name] = value
    return keys


def _first_present(keys: dict[str, Any], synonyms: tuple[str, ...]) -> Any:
    return next((keys[name] for name in synonyms if keys.get(name) is not None), None)


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


# --- Building the description from the chosen object's fields.


class _Notes:
    """Adjustments: short, English, deduplicated and bounded, because they are stored with the record."""

    def __init__(self, initial: list[str]) -> None:
        self.items: list[str] = []
        for note in initial:
            self.add(note)

    def add(self, note: str) -> None:
        note = bounded(note, ADJUSTMENT_MAX_BYTES)
        if note not in self.items and len(self.items) < MAX_ADJUSTMENTS:
            self.items.append(note)


def _build(fields: dict[str, Any], rules: AnswerRules, initial: list[str]) -> ImageDescription:
    notes = _Notes(initial)
    decorative = _read_decorative(fields["decorative"], notes)
    description = _read_description(fields["description"], rules, notes, decorative=decorative)
    text, truncated = _read_text(fields["text"], rules, notes)
    if decorative:
        alt_text = _decorative_alt_text(fields["alt_text"], notes)
    else:
        alt_text = _read_alt_text(fields["alt_text"], description, text, rules, notes)
    tags = _read_tags(fields["tags"], rules, notes)
    extracted = _read_fields(fields["fields"], notes)
    return ImageDescription(
        description=storable(description),
        alt_text=storable(alt_text),
        text=storable(text),
        tags=tuple(storable(tag) for tag in tags),
        adjustments=tuple(notes.items),
        text_truncated=truncated,
        decorative=decorative,
        fields=extracted,
    )


# --- Decorative images: no information, so alt text is empty by design (consumers decide what to do with it).

_TRUE_WORDS = frozenset(["true", "yes"])
_FALSE_WORDS = frozenset(["false", "no"])


def _read_decorative(value: Any, notes: _Notes) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            notes.add("decorative given as a string")
            return word in _TRUE_WORDS
    notes.add(f"decorative: {_type_name(value)} value not understood, read as false")
    return False


# "N/A" for a decorative image's description means "nothing to describe"; an echoed "..." is still a placeholder.
_NO_DESCRIPTION = re.compile(r"\s*+(?:none|null|n/?a|nothing|-|—)?\s*+\.?\s*+", re.IGNORECASE)


def _says_nothing(value: Any) -> bool:
    return isinstance(value, str) and len(value.strip()) <= 20 and _NO_DESCRIPTION.fullmatch(value.strip()) is not None


def _decorative_alt_text(value: Any, notes: _Notes) -> str:
    """Empty by design. Alt text the model gave anyway is dropped (and said so), unless it is a refusal."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidModelOutputError(f"'alt_text' must be a string, got {_type_name(value)}")
    given = " ".join(storable(value[:PROSE_READ_CHARS]).split())
    if given and not _is_placeholder(given):
        _refuse_if_refusal(given)
        notes.add("decorative: alt text left empty")
    return ""


# --- Extracted fields: passed through as the model gave them, but always storable and bounded.


def _read_fields(value: Any, notes: _Notes) -> Any:
    if value is None:
        return None
    try:
        too_big = _json_size(value, FIELDS_MAX_BYTES) > FIELDS_MAX_BYTES
    except RecursionError:  # nested deeper than the encoder's stack: far deeper than any record may be
        too_big, value = False, _TOO_DEEP
    if too_big:
        notes.add(f"fields dropped: over {FIELDS_MAX_BYTES} bytes of JSON")
        return None
    cleaned, changes = (value, []) if value is _TOO_DEEP else _storable_json(value, FIELDS_MAX_DEPTH)
    if cleaned is _TOO_DEEP:
        notes.add(f"fields dropped: nested deeper than {FIELDS_MAX_DEPTH} levels")
        return None
    if changes and _json_size(cleaned, FIELDS_MAX_BYTES) > FIELDS_MAX_BYTES:  # a NaN's "null" is one byte longer
        notes.add(f"fields dropped: over {FIELDS_MAX_BYTES} bytes of JSON")
        return None
    for change in changes:
        notes.add(f"fields: {change}")
    return cleaned


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _json_size(value: Any, limit: int) -> int:
    """The bytes of the value's compact JSON, counted only up to just past ``limit`` (a huge value costs little)."""
    size = 0
    for chunk in _ENCODER.iterencode(value):
        size += utf8_size(chunk)
        if size > limit:
            break
    return size


_TOO_DEEP = object()


def _storable_json(value: Any, depth: int) -> tuple[Any, list[str]]:
    """The value with every string (keys included) storable and non-finite numbers as null, or ``_TOO_DEEP``."""
    changes: list[str] = []

    def clean(item: Any, level: int) -> Any:
        if level > depth:
            raise _NestedTooDeep
        if isinstance(item, str):
            kept = storable(item)
            if kept != item:
                changes.append("unstorable characters replaced")
            return kept
        if isinstance(item, float) and not math.isfinite(item):
            changes.append("non-finite numbers read as null")
            return None
        if isinstance(item, dict):
            return {clean(str(key), level): clean(child, level + 1) for key, child in item.items()}
        if isinstance(item, list):
            return [clean(child, level + 1) for child in item]
        return item

    try:
        return clean(value, 1), list(dict.fromkeys(changes))
    except _NestedTooDeep:
        return _TOO_DEEP, []


class _NestedTooDeep(Exception):
    pass


# Placeholders from a schema example the model echoed: "...", "string", "<description>", "[alt text]".
_PLACEHOLDER = re.compile(
    r"[\s.…]*|<[^<>]*>|\[[^\[\]]*\]|\{[^{}]*\}|string|str|description|alt[ _-]?text|none|null|n/?a|tbd|todo",
    re.IGNORECASE,
)


def _is_placeholder(value: str) -> bool:
    return _PLACEHOLDER.fullmatch(value.strip()) is not None


def _read_description(value: Any, rules: AnswerRules, notes: _Notes, *, decorative: bool = False) -> str:
    if decorative and (value is None or _says_nothing(value)):
        if isinstance(value, str) and value.strip():
            notes.add(f'description "{value.strip()}" read as empty: decorative image')
        return ""  # a divider or a texture: nothing to describe, and saying so is a valid answer
    if value is None:
        raise InvalidModelOutputError("the model's JSON has no 'description' text")
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        value = " ".join(value[:PROSE_READ_CHARS])
        notes.add("description given as a list: joined")
    if not isinstance(value, str):
        raise InvalidModelOutputError(f"'description' must be a string, got {_type_name(value)}")
    value = _read_head("description", value, max(PROSE_READ_CHARS, rules.description_max_bytes), notes)
    if _is_placeholder(value):
        raise InvalidModelOutputError("the model's JSON has only a placeholder 'description'")
    description = _clean_prose("description", value, notes)
    if not description or _is_placeholder(description):
        raise InvalidModelOutputError("the model's JSON has no 'description' text")
    _refuse_if_refusal(description)
    description = _bound_description(description, rules.description_max_bytes, notes)
    _refuse_if_refusal(description)  # a cut can leave just an opening apology
    return description


def _read_head(field: str, value: str, chars: int, notes: _Notes) -> str:
    """The start of a prose field: cleaning megabytes that no bound keeps would only cost time."""
    if len(value) <= chars:
        return value
    notes.add(f"{field}: only the first {chars} characters read")
    return value[:chars]


def _refuse_if_refusal(value: str) -> None:
    if looks_like_refusal(value):
        raise _refused(value)


def _bound_description(description: str, max_bytes: int, notes: _Notes) -> str:
    """At most ``max_bytes``: cut after the last sentence inside the bound, else at a word with an ellipsis."""
    head, cut = truncate_utf8(description, max_bytes)
    if not cut:
        return description
    notes.add(f"description cut to {max_bytes} bytes")
    ends = list(_sentence_ends(description, len(head)))
    # A sentence end near the start would throw most of the allowed text away: then a word boundary is better.
    if ends and ends[-1] >= len(head) // 2:
        return description[: ends[-1]]
    ellipsis = "…" if max_bytes >= 8 else ""
    room = len(truncate_utf8(description, max_bytes - utf8_size(ellipsis))[0])
    return _cut_at_boundary(description, room) + ellipsis


# --- Sentences, in any script: ". ! ?" before a space (not after an abbreviation), "。！？" anywhere,
# "؟ ۔" (Arabic, Urdu) and "।" (Hindi) before a space.

_SENTENCE_END = re.compile(
    r"(?<![.!?])[.!?]++[\"'”’»)\]]*+(?=\s|$)|[。！？][\"'”’」』）)]*+|(?<![؟۔।])[؟۔।]++[\"'”’)]*+(?=\s|$)",
)
_ABBREVIATIONS = frozenset(
    [
        *("dr.", "mr.", "mrs.", "ms.", "st.", "u.s.", "e.g.", "i.e.", "etc.", "vs.", "no.", "fig.", "prof."),
        *("jr.", "sr.", "mt.", "ave.", "inc.", "ltd.", "co.", "approx.", "ca.", "nr.", "str.", "usw.", "bzw."),
        *("z.b.", "u.a.", "sog.", "mme.", "mlle.", "sra.", "dra.", "sig."),
    ]
)
_DOTTED_INITIALS = re.compile(r"(?:[^\W\d_]\.){2,}")
_WORD_BEFORE = re.compile(r"\S+$")


def _sentence_ends(text: str, limit: int) -> Iterator[int]:
    """Offsets just after each sentence end at or before ``limit`` (the character after it is looked at)."""
    for match in _SENTENCE_END.finditer(text, 0, min(len(text), limit + 1)):
        if match.end() > limit:
            break
        if match.group() == "." and _is_abbreviation(text, match.start()):
            continue
        yield match.end()


def _is_abbreviation(text: str, dot: int) -> bool:
    word = _WORD_BEFORE.search(text, max(0, dot - 20), dot + 1)
    if word is None:
        return False
    token = word.group().lstrip("([{\"'“‘«")
    if token.lower() in _ABBREVIATIONS or _DOTTED_INITIALS.fullmatch(token):
        return True
    return len(token) == 2 and token[0].isupper()  # an initial: "J. Smith"


def _first_sentence(text: str) -> str:
    end = next(_sentence_ends(text, len(text)), len(text))
    return text[:end]


# --- Cutting at a boundary, in any script, without splitting a character from its marks.

_TRAILING = " ,;:-、，\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CJK_PUNCTUATION = "、。，！？；："
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0003ffff]"
)


_MAX_MARKS = 32  # marks on one character that a cut looks past; more is a pile ("Zalgo" text), cut anyway


def _extends_previous(text: str, index: int) -> bool:
    """Whether the character at ``index`` belongs to the one before it (a mark, a joiner's partner, a modifier)."""
    char = text[index]
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Mc", "Me"):
        return True
    if "\U0001f3fb" <= char <= "\U0001f3ff" or char == "\u200d":  # skin tones; a zero-width joiner
        return True
    return index > 0 and text[index - 1] == "\u200d"


def _cut_at_boundary(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a space (spaced scripts) or a CJK comma or full stop (unspaced ones),
    else at the limit, never inside a character with its combining marks; trailing separators removed."""
    if len(text) <= limit:
        return text
    cut, floor = limit, max(0, limit - _MAX_MARKS)
    while cut > floor and _extends_previous(text, cut):
        cut -= 1
    if cut == floor and _extends_previous(text, cut):  # not a character with its marks but a pile of them
        cut = limit
    head = text[:cut] or text[:limit]
    if _UNSPACED.match(head[-1:]) or " " not in head:
        boundary = max(head.rfind(mark) + 1 for mark in _CJK_PUNCTUATION)
    else:
        boundary = len(head) if text[len(head)] == " " else head.rfind(" ")
    # A boundary in the first half would throw most of the allowed text away: then the limit is better.
    kept = head[:boundary] if boundary > 0 and boundary >= limit // 2 else head
    return kept.rstrip(_TRAILING) or head


# --- Prose fields (description, alt text, tags) carry no markup.

_BREAKOUT = re.compile(r"""\s*["'`]+\s*/?>""")  # the '">' that closes an HTML attribute early
_ELEMENT_OPEN = re.compile(r"<\s*+(?P<name>script|style)\b[^<>]*+>", re.IGNORECASE)
_ELEMENT_CLOSE = {
    "script": re.compile(r"<\s*+/\s*+script\s*+>", re.IGNORECASE),
    "style": re.compile(r"<\s*+/\s*+style\s*+>", re.IGNORECASE),
}
_COMMENT_OPEN = re.compile(r"(?P<name><!--)")
_COMMENT_CLOSE = re.compile(r"-->")
_TAG = re.compile(r"</?(?P<name>[A-Za-z][\w:-]*+)[^<>]*+>|<[!?][^<>]*+>")  # "a < b" is not a tag
_SCRIPT_URL = re.compile(r"\b(?:javascript|vbscript)\s*:\S*", re.IGNORECASE)


def _remove_markup(text: str) -> tuple[str, list[str]]:
    """The text without HTML: script and style elements with their content, comments, tags, script URLs and
    stray angle brackets. Returns the text and what was removed, for the adjustment."""
    removed: list[str] = []
    breakout = _BREAKOUT.match(text)
    if breakout:
        text = text[breakout.end() :]
        removed.append('leading ">')
    text, elements = _remove_blocks(text, _ELEMENT_OPEN, _ELEMENT_CLOSE.__getitem__)
    removed += [f"<{name}>" for name in elements]
    text, comments = _remove_blocks(text, _COMMENT_OPEN, lambda _name: _COMMENT_CLOSE)
    removed += ["<!-- -->"] * len(comments)

    def tag(match: re.Match[str]) -> str:
        removed.append(f"<{(match.group('name') or '!').lower()}>")
        return " "  # "A<br>B" must not become "AB"

    text = _TAG.sub(tag, text)
    text, urls = _SCRIPT_URL.subn("", text)
    removed += ["javascript: URL"] * urls
    if "<" in text or ">" in text:
        text = text.replace("<", "").replace(">", "")
        removed.append("stray < >")
    return text, list(dict.fromkeys(removed))


def _clean_prose(field: str, value: str, notes: _Notes) -> str:
    text, removed = _remove_markup(storable(value))
    _note_markup(field, removed, notes)
    return " ".join(text.split())


def _note_markup(field: str, removed: list[str], notes: _Notes) -> None:
    if removed:
        removed = list(dict.fromkeys(removed))
        shown = ", ".join(removed[:5]) + (", …" if len(removed) > 5 else "")
        notes.add(f"{field}: markup removed ({shown})")


# --- Alt text: no "image of" (per language), at most N characters, never a refusal.

_EN_ARTICLES = r"(?:(?:a|an|the)\s+)?"
# Per primary language subtag: (prefix pattern, the articles that may follow it, or "" where a capital letter is
# grammar, not a name). Each pattern captures the removable phrase, so the image's own text can be checked for it.
_PREFIX_RULES: Mapping[str, tuple[str, str]] = {
    "en": (
        r"(?:(?:a|an|the)\s+)?(?P<phrase>(?:image|picture|photo|photograph|illustration|graphic)\s+"
        r"(?:of|showing|depicting)\b|(?:image|picture|photo|photograph)\s*:)\s*",
        _EN_ARTICLES,
    ),
    "de": (
        r"(?:(?:ein|eine|das|dieses|diese)\s+)?(?P<phrase>(?:bild|foto|abbildung|aufnahme|fotografie|grafik"
        r"|illustration)\s+(?:von|vom|zeigt)\b|(?:bild|foto|abbildung)\s*:)\s*",
        "",
    ),
    "fr": (
        r"(?:(?:une|la|cette)\s+|l['’])?(?P<phrase>(?:image|photo|photographie|illustration)\s+(?:de\b|d['’])"
        r"|(?:image|photo)\s*:)\s*",
        r"(?:(?:le|la|les|un|une|des)\s+|l['’])?",
    ),
    "es": (
        r"(?:(?:una|la|esta)\s+)?(?P<phrase>(?:imagen|foto|fotografía|ilustración)\s+de\b|(?:imagen|foto)\s*:)\s*",
        r"(?:(?:el|la|los|las|un|una|unos|unas)\s+)?",
    ),
    "pt": (
        r"(?:(?:uma|a|esta)\s+)?(?P<phrase>(?:imagem|foto|fotografia|ilustração)\s+de\b|(?:imagem|foto)\s*:)\s*",
        r"(?:(?:o|a|os|as|um|uma)\s+)?",
    ),
    "it": (
        r"(?:(?:una|la)\s+|un['’]|l['’])?(?P<phrase>(?:immagine|foto|fotografia|illustrazione)\s+(?:di\b|d['’])"
        r"|(?:immagine|foto)\s*:)\s*",
        r"(?:(?:il|lo|la|i|gli|le|un|uno|una)\s+|l['’]|un['’])?",
    ),
    "nl": (
        r"(?:(?:een|de|het|deze)\s+)?(?P<phrase>(?:afbeelding|foto|plaatje|illustratie)\s+van\b"
        r"|(?:afbeelding|foto)\s*:)\s*",
        r"(?:(?:de|het|een)\s+)?",
    ),
    # "صورة لـ…" / "صورة ل …" / "صورة …": a ل joined to the next word is left alone (it may be the word's own
    # first letter), and "صورة شخصية" (a portrait), "ذاتية" (a selfie), "جوية" (aerial) are kept whole.
    "ar": (
        r"(?:هذه\s+)?(?P<phrase>صورة\s+(?:لـ|ل(?=\s)|تظهر|تُظهر|توضح)|صورة(?=\s)(?!\s+(?:شخصية|ذاتية|جوية)))\s*",
        "",
    ),
}
_PREFIXES = {
    language: (
        re.compile(pattern + r"(?P<rest>\S.*)", re.IGNORECASE | re.DOTALL),
        re.compile(articles, re.IGNORECASE) if articles else None,
    )
    for language, (pattern, articles) in _PREFIX_RULES.items()
}
# Japanese and Chinese say "…の写真" / "…的照片": the phrase is a suffix. A "写真：" label is a prefix.
_AFFIXES = {
    "ja": (
        re.compile(r"(?P<phrase>(?:画像|写真|イラスト)\s*[:：])\s*(?P<rest>\S.*)", re.DOTALL),
        re.compile(r"(?P<rest>.+?)(?P<phrase>の(?:画像|写真|イラスト))(?:です)?[。.]?", re.DOTALL),
    ),
    "zh": (
        re.compile(r"(?P<phrase>(?:图片|图像|照片|插图)\s*[:：])\s*(?P<rest>\S.*)", re.DOTALL),
        re.compile(r"(?:这是)?(?:一张|一幅)?(?P<rest>.+?)(?P<phrase>的(?:图片|图像|照片|插图))[。.]?", re.DOTALL),
    ),
}


def _primary_language(tag: str) -> str:
    return re.split(r"[-_]", tag.strip().lower(), maxsplit=1)[0]


def _remove_image_of(alt_text: str, ocr_text: str, language: str, notes: _Notes) -> str:
    """Without a leading "image of" (or its translation), unless it is part of a name or of the image's own text.

    English is always checked too: models often slip into it. A capital letter after the phrase marks a name
    ("Photo of the Day") only where capitals are not grammar (not in German, where every noun has one).
    """
    rules: list[tuple[re.Pattern[str], re.Pattern[str] | None]] = []
    if language != "en" and language in _PREFIXES:
        rules.append(_PREFIXES[language])
    rules += [(affix, None) for affix in _AFFIXES.get(language, ())]
    rules.append(_PREFIXES["en"])
    for pattern, articles in rules:
        match = pattern.fullmatch(alt_text)
        if match is None:
            continue
        rest, phrase = match.group("rest").strip(), match.group("phrase").strip()
        if not rest or _starts_with_name(rest, articles) or _in_text(phrase.rstrip(":："), ocr_text):
            return alt_text
        notes.add(f'alt_text: "{phrase}" removed')
        return rest[:1].upper() + rest[1:]
    return alt_text


def _starts_with_name(rest: str, articles: re.Pattern[str] | None) -> bool:
    if articles is None:
        return False
    skipped = articles.match(rest)
    return rest[skipped.end() if skipped else 0 :][:1].isupper()


def _in_text(phrase: str, ocr_text: str) -> bool:
    """Whether the phrase is written in the image ("PHOTO OF THE WEEK"): then it is content, not a preamble."""
    words = r"\s+".join(re.escape(word) for word in phrase.casefold().split())
    return bool(words) and re.search(rf"(?<!\w){words}(?!\w)", ocr_text.casefold()) is not None


def _read_alt_text(value: Any, description: str, ocr_text: str, rules: AnswerRules, notes: _Notes) -> str:
    if value is not None and not isinstance(value, str):
        raise InvalidModelOutputError(f"'alt_text' must be a string, got {_type_name(value)}")
    alt_text = _clean_prose("alt_text", _read_head("alt_text", value or "", PROSE_READ_CHARS, notes), notes)
    if alt_text and not _is_placeholder(alt_text):
        _refuse_if_refusal(alt_text)
    elif rules.task == "document":
        return ""  # a document's label is optional; its description or transcription is no alt text
    else:
        alt_text = _first_sentence(description)
        notes.add("alt_text missing: taken from the description")
    alt_text = _remove_image_of(alt_text, ocr_text, _primary_language(rules.language), notes)
    if len(alt_text) > rules.alt_text_max_chars:
        alt_text = _cut_at_boundary(alt_text, rules.alt_text_max_chars)
        notes.add(f"alt_text cut to {rules.alt_text_max_chars} characters")
    _refuse_if_refusal(alt_text)  # also when it came from the description's first sentence
    return alt_text


# --- OCR text: verbatim (markup included: a screenshot of HTML keeps its code), storable and bounded.

# Case-sensitive on purpose: a sign that reads "NONE" keeps its text.
_NO_TEXT = frozenset(
    [
        *("none", "None", "None.", "n/a", "N/A", "N/A.", "no text", "No text", "No text.", "(no text)"),
        *("No visible text", "no visible text", "No visible text.", "(none)", "null", "-", "—"),
        *("keine", "Keine", "Kein Text", "kein Text", "Kein Text."),
        *("Aucun texte", "Sin texto", "Ninguno", "Sem texto", "Nenhum", "Nessun testo", "Geen tekst"),
        *("なし", "なし。", "テキストなし", "无", "无。", "没有文字", "无文字", "لا يوجد", "لا يوجد نص"),
    ]
)


def _read_text(value: Any, rules: AnswerRules, notes: _Notes) -> tuple[str, bool]:
    if value is None:
        return "", False
    if isinstance(value, list):
        value = _join_lines(value, rules.text_max_bytes + 1, notes)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
        notes.add("text given as a number")
    if not isinstance(value, str):
        raise InvalidModelOutputError(f"'text' must be a string, got {_type_name(value)}")
    text = value.strip()
    # A character is at least one byte, and storable() rarely removes much: this many always fill the bound.
    head = text[: 4 * rules.text_max_bytes]
    cut_early = len(head) < len(text)
    text = storable(head).strip()
    if text in _NO_TEXT:
        notes.add(f'text placeholder "{text}" read as no text')
        return "", False
    text, truncated = truncate_utf8(text, rules.text_max_bytes)
    truncated = truncated or cut_early
    if truncated:
        notes.add(f"text cut to {rules.text_max_bytes} bytes")
    return text, truncated


def _join_lines(lines: list[Any], limit: int, notes: _Notes) -> str:
    lines = lines[:limit]  # each line takes at least one byte of the bound (its newline)
    kept = [str(line) if not isinstance(line, str) else line for line in lines if _is_scalar(line)]
    notes.add("text given as a list: joined by lines")
    if len(kept) < len(lines):
        notes.add(f"text: {len(lines) - len(kept)} list items that were not text skipped")
    return "\n".join(kept)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


# --- Tags: short, lower-case, distinct, at most N.

_TAG_SEPARATORS = re.compile(r"[,，、;]")
_TAG_NAME_KEYS = ("name", "tag", "label", "value", "text")


def _read_tags(value: Any, rules: AnswerRules, notes: _Notes) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = _TAG_SEPARATORS.split(_read_head("tags", value, PROSE_READ_CHARS, notes))
        notes.add("tags given as a string: split at commas")
    if not isinstance(value, list):
        raise InvalidModelOutputError(f"'tags' must be a list, got {_type_name(value)}")
    if len(value) > MAX_TAG_ITEMS:
        value = value[:MAX_TAG_ITEMS]
        notes.add(f"tags: only the first {MAX_TAG_ITEMS} read")
    tags: list[str] = []
    skipped: list[str] = []
    markup: list[str] = []  # one note for all tags, so tags cannot crowd out the other adjustments
    for item in value:
        raw = _tag_text(item)
        if raw is None:
            skipped.append(_type_name(item))
            continue
        text, removed = _remove_markup(storable(raw[:PROSE_READ_CHARS]))
        markup += removed
        tag = " ".join(text.split()).lower()
        if len(tag) > rules.tag_max_chars:
            tag = _cut_at_boundary(tag, rules.tag_max_chars)
            notes.add(f"tags cut to {rules.tag_max_chars} characters each")
        if not tag or _is_placeholder(tag):
            skipped.append("empty")
        elif tag not in tags:
            tags.append(tag)
            if len(tags) > rules.max_tags:  # the rest would be cut anyway; stop before a huge list costs time
                break
    _note_markup("tags", markup, notes)
    if skipped:
        notes.add(f"tags: {len(skipped)} skipped ({', '.join(dict.fromkeys(skipped))})")
    if len(tags) > rules.max_tags:
        notes.add(f"tags cut to {rules.max_tags}")
    return tags[: rules.max_tags]


def _tag_text(item: Any) -> str | None:
    """A tag's text: a string, a number, or an object's name; None for anything else (never a dict's repr)."""
    if isinstance(item, dict):
        item = next((item[key] for key in _TAG_NAME_KEYS if isinstance(item.get(key), str)), None)
    if _is_scalar(item):
        return str(item)
    return None


# --- Refusals: the model speaking about itself declining, as (essentially) the whole answer.

_EN_APOLOGY = (
    r"(?:(?:i'm|i\s+am)\s+(?:(?:so|very|really|truly|terribly)\s+)?sorry|sorry|i\s+apologi[sz]e|apologies|unfortunately)"
    r"[\s,.!;:-]*(?:but\s*,?\s*)?"
)
_EN_AS_AI = r"(?:as\s+an?\s+(?:ai|artificial\s+intelligence|language\s+model|assistant)\b[^.!?]{0,80}?,?\s*)?"
_EN_DECLINE = (
    r"(?:i(?:'m|\s+am)\s+(?:unable|not\s+able|not\s+allowed|not\s+permitted|not\s+comfortable)(?:\s+to)?"
    r"|i\s+(?:can't|cannot|can\s+not|won't|will\s+not|do\s+not|don't)"
    r"|i\s+(?:must|have\s+to|will|need\s+to)\s+(?:respectfully\s+)?(?:decline|refuse)(?:\s+to)?"
    r"|(?:sorry[\s,.!]*)?(?:unable|not\s+able)\s+to)"
)
_EN_VERB = (  # explicit forms: a bare stem with \w* would also match "dog" (do) or "creature" (creat)
    r"(?:(?:help|assist|process|answer|support|interpret|caption|respond|offer|discuss)(?:s|ed|ing)?"
    r"|(?:describ|provid|analy[sz]|complet|generat|transcrib|creat|engag|handl|recogni[sz]|evaluat|examin|shar)"
    r"(?:e|es|ed|ing)|identif(?:y|ies|ied|ying)|compl(?:y|ies|ied|ying)|fulfil+(?:s|ed|ing)?|do(?:ing)?)\b"
)
# What follows the verb in a refusal ("with that", "this image", "."); "I can't help falling in love" is a song.
_EN_OBJECT = (
    r"(?:\s+(?:you|with|on|in|for|to|this|that|it|these|those|the|a|an|any|anything|such|your|images?|requests?"
    r"|people|persons?|individuals?|content|here|information|assistance|details?|descriptions?|specific"
    r"|identify\w*|describ\w*|analy[sz]\w*|process\w*)\b|\s*[.!,;:]|\s*$)"
)
_REFUSALS = (
    re.compile(
        rf"(?:{_EN_APOLOGY})?{_EN_AS_AI}(?:{_EN_DECLINE}(?:\s+[\w'-]+){{0,4}}?\s+{_EN_VERB}{_EN_OBJECT}"
        r"|i\s+(?:must|have\s+to|will)\s+(?:respectfully\s+)?(?:decline|refuse)\b)",
        re.IGNORECASE,
    ),
    re.compile(  # German, also "Leider kann ich …" with the verb last
        r"(?:(?:es\s+)?tut\s+mir\s+(?:sehr\s+)?leid|entschuldigung|leider)?[\s,.!]*(?:aber\s+)?"
        r"(?:als\s+ki\b[^,]{0,40},?\s*)?(?:ich\s+(?:kann|darf|werde|bin)|(?:kann|darf|werde|bin)\s+ich)\s+"
        r"(?:[\w'-]+\s+){0,5}?(?:nicht|keine[nmrs]?)\b(?:\s+[\w'-]+){0,5}?\s*,?\s*(?:zu\s+)?"
        r"(?:helfen|beschreiben|verarbeiten|analysieren|bearbeiten|erfüllen|unterstützen|identifizieren|erkennen"
        r"|beantworten|liefern|bereitstellen|behilflich|in\s+der\s+lage)",
        re.IGNORECASE,
    ),
    re.compile(  # French
        r"(?:(?:je\s+suis\s+)?désolée?|malheureusement|pardon)?[\s,.!]*(?:mais\s+)?"
        r"(?:en\s+tant\s+qu['’e]\s*(?:ia|intelligence\s+artificielle|assistant)[^,]{0,40},?\s*)?"
        r"je\s+ne\s+(?:peux|pourrai|suis\s+pas\s+en\s+mesure\s+de|suis\s+pas\s+capable\s+de)\s*(?:pas\s+)?"
        r"(?:[\w'’-]+\s+){0,3}?(?:aider|décrire|traiter|analyser|répondre|identifier|fournir|satisfaire)",
        re.IGNORECASE,
    ),
    re.compile(  # Spanish and Portuguese
        r"(?:lo\s+siento(?:\s+mucho)?|lamentablemente|disculpa|perdón|desculpe|lamento|infelizmente|sinto\s+muito)?"
        r"[\s,.!]*(?:pero\s+|mas\s+)?(?:no\s+(?:puedo|podré|estoy\s+en\s+condiciones\s+de|me\s+es\s+posible)"
        r"|não\s+(?:posso|consigo|sou\s+capaz\s+de))\s+(?:[\w'-]+\s+){0,3}?"
        r"(?:ayudar|describir|procesar|analizar|identificar|proporcionar|cumplir|responder|atender"
        r"|ajudar|descrever|processar|analisar|fornecer)",
        re.IGNORECASE,
    ),
    re.compile(  # Japanese: "申し訳ありませんが、…お手伝いできません"
        r"(?:申し訳(?:ありません|ございません)|すみません)?[がけど、。,\s]*(?:私は)?[^「」『』\"]{0,40}?"
        r"(?:お手伝い|説明|対応|処理|分析|識別|特定|提供|支援|回答|協力)(?:すること|いたすこと)?[はがを]?"
        r"(?:でき(?:ません|かねます)|いたしかねます)",
    ),
    re.compile(  # Chinese: "抱歉，我无法…"
        r"(?:(?:很|非常|十分)?抱歉|对不起|不好意思)?[，,。!！\s]*(?:但(?:是)?)?[，,\s]*"
        r"(?:作为(?:一个)?(?:ai|人工智能)(?:助手|模型)?[，,\s]*)?我(?:无法|不能|不可以|没办法|没法|不便)"
        r".{0,20}?(?:帮助|帮忙|描述|处理|分析|识别|提供|协助|完成|回答|满足)",
        re.IGNORECASE,
    ),
    re.compile(  # Arabic: "عذرًا، لا أستطيع …" (the verb carries the first person)
        r"(?:عذرا|عذرًا|آسف|أعتذر|للأسف)?[\s،,.!]*(?:ولكن\s+|لكن\s+)?"
        r"(?:لا\s+(?:أستطيع|يمكنني|أقدر\s+على)|لن\s+أتمكن\s+من|لا\s+أتمكن\s+من)",
    ),
)
# A partial refusal that goes on to describe ("I can't identify him, but the image shows …") is a description.
_GOES_ON_DESCRIBING = re.compile(
    r"\b(?:but|however|though|although|yet)\b.*?\b(?:shows?|showing|depicts?|depicting|contains?|appears?"
    r"|features?|there\s+(?:is|are)|i\s+can\s+(?:see|tell|describe)|it\s+(?:is|looks))\b",
    re.IGNORECASE | re.DOTALL,
)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "「": "」"}


def looks_like_refusal(text: str) -> bool:
    """Whether the text is the model declining to describe the image, as (essentially) the whole of it.

    Only the model speaking about itself counts ("I'm sorry, I can't help with that", "As an AI, I cannot …",
    "Unable to process this image"), matched at the start of a short text: a sign reading "Sorry, we're closed"
    is a description.
    """
    if not isinstance(text, str) or len(text) > 100 * REFUSAL_MAX_CHARS:  # generous room for odd whitespace
        return False
    folded = " ".join(text.split()).strip("*_ ")
    if len(folded) > 1 and _QUOTES.get(folded[0]) == folded[-1]:  # the whole text quoted
        folded = folded[1:-1].strip()
    if not folded or len(folded) > REFUSAL_MAX_CHARS:
        return False
    folded = folded.replace("’", "'")
    for pattern in _REFUSALS:
        match = pattern.match(folded)
        if match is not None:
            return _GOES_ON_DESCRIBING.search(folded, match.end()) is None
    return False


# --- Document pages: one entry per page, matched by its number; what cannot be matched is reported, not guessed.

MAX_PAGE_ENTRIES = 100  # entries of one answer looked at: a request has one or two pages
MAX_PAGE_SPAN = 1_000  # numbers a range ("7-8") may cover: "1-99999" is no page number

_PAGES_KEYS = ("pages", "page_answers", "transcriptions", "results", "entries", "items")
_PAGE_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "page": ("page", "page_number", "number", "page_no", "page_num", "page_nr", "page_numbers", "pages"),
    "description": _SYNONYMS["description"],
    "text": (*_SYNONYMS["text"], "content", "page_text", "full_text", "markdown"),
}
_PAGE_PREFIX = re.compile(r"(?:pages?|pp?\.)\s*+[_#:]?\s*+", re.IGNORECASE)
_PAGE_NUMBER = re.compile(r"\d{1,6}")
_PAGE_RANGE = re.compile(r"(\d{1,6})\s*+(?:-|–|—|‒|−|to|through|thru|bis)\s*+(\d{1,6})", re.IGNORECASE)
_PAGE_LIST = re.compile(r"\d{1,6}(?:\s*+(?:,|;|&|\+|/|and|und|et|y)\s*+\d{1,6})+", re.IGNORECASE)


def read_pages_answer(
    content: str | None,
    numbers: Sequence[int],
    *,
    rules: AnswerRules,
    refusal: str | None = None,
    tool_arguments: Sequence[str] = (),
) -> PagesAnswer:
    """A page request's answer (``{"pages": [{"page": 7, "description": …, "text": …}, …]}``) matched to the
    requested page ``numbers``.

    As tolerant as read_answer about where the object is and how its keys are spelt, and it raises the same
    errors: ModelRefusedError, EmptyModelAnswerError, and InvalidModelOutputError when no candidate holds an
    entry for any requested page. Entries are matched by their page number (by position only when none has one
    and there are as many as pages asked for); a page skipped is ``missing``, a page folded into another's entry
    ("7-8") is ``merged``. Each page's text is bounded to ``rules.text_max_bytes``.
    """
    requested = tuple(dict.fromkeys(numbers))
    if not requested or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in requested):
        raise ValueError(f"page numbers must be positive integers, got {list(numbers)!r}")

    def last_valid(values: list[Any]) -> tuple[PagesAnswer | None, str | None]:
        return _last_valid_pages(values, requested, rules)

    def best(text: str) -> tuple[PagesAnswer | None, str | None]:
        found, problem, lenient = _best_in(text, last_valid)
        if found is not None and len(text) > SCAN_WINDOW_CHARS:
            # A page's text can be longer than the tail searched first: an entry inside the answer is then found
            # there on its own. The whole answer wins if it covers more of the pages (a tie keeps the later one).
            whole, _problem = last_valid(_json_values(text, _STRICT, from_end=False))
            if whole is not None and _covered(whole) > _covered(found):
                return whole, None
        if found is not None and lenient:
            found = replace(found, adjustments=(*found.adjustments, "answer read as lenient JSON")[:MAX_ADJUSTMENTS])
        return found, problem

    return _read_model_answer(content, refusal, tool_arguments, best)


def read_summary_answer(
    content: str | None,
    *,
    rules: AnswerRules,
    refusal: str | None = None,
    tool_arguments: Sequence[str] = (),
) -> DocumentSummary:
    """A summary request's answer (description, alt_text, tags and the fields, if any), read as read_answer reads
    an image's: the same tolerance, bounds and errors, but no "text" nor "decorative" is read or required."""
    found = _read_model_answer(
        content, refusal, tool_arguments, lambda text: _best_description(text, rules, ignored=("text", "decorative"))
    )
    return DocumentSummary(
        description=found.description,
        alt_text=found.alt_text,
        tags=found.tags,
        fields=found.fields,
        adjustments=found.adjustments,
    )


def _covered(answer: PagesAnswer) -> int:
    return len(answer.pages) + len(answer.merged)


@dataclass(frozen=True)
class _Entry:
    numbers: tuple[int, ...]  # empty: the entry gave no page number (or none that could be read)
    description: str
    text: str
    truncated: bool


class _Prefixed(_Notes):
    """Notes about one page entry, each said of it ("page 7: text cut to 100000 bytes")."""

    def __init__(self, notes: _Notes, prefix: str) -> None:
        super().__init__([])
        self._notes, self._prefix = notes, prefix

    def add(self, note: str) -> None:
        self._notes.add(f"{self._prefix}: {note}")


def _last_valid_pages(
    values: list[Any], requested: tuple[int, ...], rules: AnswerRules
) -> tuple[PagesAnswer | None, str | None]:
    candidates = values[-MAX_CANDIDATES:]
    problem = None
    # One object per page, one after the other (JSON lines): the run of page objects at the end is the answer.
    run = list(itertools.takewhile(_is_page_object, reversed(candidates)))[::-1]
    if len(run) > 1:
        try:
            return _pages_answer(run, requested, rules, ["pages given as separate JSON objects"]), None
        except InvalidModelOutputError as error:
            problem = error.message
    for value in reversed(candidates):
        entries, note = _page_entries(value)
        if entries is None:
            problem = problem or f'the model\'s JSON ({_type_name(value)}) has no "pages" list'
            continue
        try:
            return _pages_answer(entries, requested, rules, [note] if note else []), None
        except InvalidModelOutputError as error:
            problem = problem or error.message
    return None, problem


def _is_page_object(value: Any) -> bool:
    """A single page's entry: a page number and a text or description, and no list of pages inside."""
    if not isinstance(value, dict):
        return False
    keys = _snake_keys(value)
    fields = {name: _first_present(keys, synonyms) for name, synonyms in _PAGE_SYNONYMS.items()}
    return (
        fields["page"] is not None
        and not isinstance(fields["page"], dict)
        and (fields["text"] is not None or fields["description"] is not None)
        and not (isinstance(fields["page"], list) and any(isinstance(item, dict) for item in fields["page"]))
    )


def _page_entries(value: Any) -> tuple[list[Any] | None, str | None]:
    """The page entries of a candidate, looking inside {"result": …} wrappers; None when it holds none.

    Accepted: {"pages": [entry, …]}, a bare [entry, …], {"pages": {"7": entry, …}} (or without "pages"), and
    a single entry on its own.
    """
    note = None
    for _ in range(4):
        if isinstance(value, list):
            if len(value) == 1 and isinstance(value[0], dict) and not _is_page_object(value[0]):
                value, note = value[0], "answer unwrapped from a one-element list"
                continue
            if not any(isinstance(item, dict) for item in value[:MAX_PAGE_ENTRIES]):
                return None, None
            return value, note or "pages given as a bare list"
        if not isinstance(value, dict):
            return None, None
        keys = _snake_keys(value)
        listed = _first_present(keys, _PAGES_KEYS)
        if isinstance(listed, list) and not _is_page_object(value):
            return listed, note
        keyed = _keyed_by_number(listed if isinstance(listed, dict) else value)
        if keyed is not None:
            return keyed, "pages given as an object keyed by page number"
        if _is_page_object(value):
            return [value], note or "answer is a single page object"
        if isinstance(listed, dict):
            value, note = listed, note
            continue
        wrapper = next((name for name in _WRAPPERS if isinstance(keys.get(name), dict | list)), None)
        if wrapper is None:
            # No page number anywhere: one object with a text is one unnumbered entry (matched by position).
            has_text = any(keys.get(name) is not None for name in _PAGE_SYNONYMS["text"])
            return ([value], note) if has_text else (None, None)
        value, note = keys[wrapper], f'answer unwrapped from "{wrapper}"'
    return None, None


def _keyed_by_number(value: dict[str, Any]) -> list[Any] | None:
    """{"7": {…}, "8": "text"} as entries with their page numbers; None if any key is not a page number."""
    if not value:
        return None
    entries: list[Any] = []
    for key, item in itertools.islice(value.items(), MAX_PAGE_ENTRIES):
        if _page_numbers(key) is None or not isinstance(item, dict | str):
            return None
        entries.append({**item, "page": key} if isinstance(item, dict) else {"page": key, "text": item})
    return entries


def _page_numbers(value: Any) -> tuple[int, ...] | None:
    """7, 7.0, "7", "Page 7", "7-8", "7–8", "7, 8", [7, 8] → the page numbers, in order; None if not one."""
    if isinstance(value, list):
        numbers: list[int] = []
        for item in value[:MAX_PAGE_ENTRIES]:
            found = None if isinstance(item, list) else _page_numbers(item)
            if found is None:
                return None
            numbers += found
        return tuple(dict.fromkeys(numbers)) or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value,)
    if isinstance(value, float):
        return (int(value),) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    text = value.strip()[:100]
    prefix = _PAGE_PREFIX.match(text)
    text = text[prefix.end() :] if prefix else text
    if _PAGE_NUMBER.fullmatch(text):
        return (int(text),)
    span = _PAGE_RANGE.fullmatch(text)
    if span:
        first, last = int(span.group(1)), int(span.group(2))
        return tuple(range(first, last + 1)) if 0 <= last - first < MAX_PAGE_SPAN else None
    if _PAGE_LIST.fullmatch(text):
        return tuple(dict.fromkeys(int(number) for number in _PAGE_NUMBER.findall(text)))
    return None


def _pages_answer(
    entries: list[Any], requested: tuple[int, ...], rules: AnswerRules, initial: list[str]
) -> PagesAnswer:
    notes = _Notes(initial)
    if len(entries) > MAX_PAGE_ENTRIES:
        notes.add(f"pages: only the first {MAX_PAGE_ENTRIES} entries read")
    read: list[_Entry] = []
    for position, raw in enumerate(entries[:MAX_PAGE_ENTRIES], start=1):
        entry = _read_page_entry(raw, position, rules, notes)
        if entry is not None:
            read.append(entry)
    if not read:
        raise InvalidModelOutputError("the model's JSON has no usable page entry")
    return _match_pages(read, requested, notes)


def _read_page_entry(raw: Any, position: int, rules: AnswerRules, notes: _Notes) -> _Entry | None:
    """One entry, read and bounded; None (and a note) when it is unusable: not an object, an echoed example, a
    text of the wrong type. A refusal in it raises ModelRefusedError."""
    if not isinstance(raw, dict):
        notes.add(f"entry {position}: a {_type_name(raw)}, not an object, skipped")
        return None
    keys = _snake_keys(raw)
    fields = {name: _first_present(keys, synonyms) for name, synonyms in _PAGE_SYNONYMS.items()}
    numbers = _page_numbers(fields["page"]) if fields["page"] is not None else None
    label = f"page {numbers[0]}" if numbers else f"entry {position}"
    if fields["page"] is not None and numbers is None:
        notes.add(f"entry {position}: page number {_shown(fields['page'])} not understood")
    described, text_value = fields["description"], fields["text"]
    if described is None and text_value is None:
        notes.add(f"{label}: no text and no description, skipped")
        return None
    if all(isinstance(value, str) and value.strip() and _is_placeholder(value) for value in (described, text_value)):
        notes.add(f"{label}: an echoed example, skipped")
        return None
    own = _Prefixed(notes, label)
    try:
        text, truncated = _read_text(text_value, rules, own)
    except InvalidModelOutputError as error:
        notes.add(f"{label}: skipped, {error.message}")
        return None
    if text_value is None:
        own.add("no text given, read as a blank page")
    description = _page_description(described, rules, own)
    if not description and looks_like_refusal(text):
        raise _refused(text)
    return _Entry(numbers or (), storable(description), storable(text), truncated)


def _page_description(value: Any, rules: AnswerRules, notes: _Notes) -> str:
    """Bounded as an image's description is; a page's may be missing or empty (its text is what matters)."""
    if value is None or (isinstance(value, str) and _is_placeholder(value)):
        return ""
    try:
        return _read_description(value, rules, notes)
    except InvalidModelOutputError as error:
        notes.add(f"description dropped: {error.message}")
        return ""


def _match_pages(entries: list[_Entry], requested: tuple[int, ...], notes: _Notes) -> PagesAnswer:
    numbered = [entry for entry in entries if entry.numbers]
    if not numbered:
        if len(entries) != len(requested):
            raise InvalidModelOutputError(
                f"the answer's {len(entries)} page entries carry no page number, for {len(requested)} pages asked for"
            )
        notes.add("the answer gave no page numbers: entries matched to the pages by position")
        numbered = [replace(entry, numbers=(number,)) for entry, number in zip(entries, requested, strict=True)]
    elif len(numbered) < len(entries):
        notes.add(f"{len(entries) - len(numbered)} entries without a page number ignored")
    wanted = set(requested)
    answered: dict[int, PageAnswer] = {}
    merged: set[int] = set()
    unknown: list[int] = []
    for entry in numbered:
        unknown += [number for number in entry.numbers if number not in wanted]
        covered = [number for number in entry.numbers if number in wanted]
        if not covered:
            continue
        first, *others = covered
        if first in answered or first in merged:
            notes.add(f"page {first}: a second entry ignored")
            continue
        answered[first] = PageAnswer(first, entry.description, entry.text, entry.truncated)
        for number in others:
            if number in answered or number in merged:
                notes.add(f"page {number}: a second entry ignored")
            else:
                merged.add(number)
        if others:
            notes.add(f"pages {', '.join(map(str, covered))} merged into one entry: its text is kept for page {first}")
    if unknown:
        shown = ", ".join(map(str, list(dict.fromkeys(unknown))[:10]))
        notes.add(f"entries for pages not asked for ignored: {shown}")
    if not answered:
        asked = ", ".join(map(str, requested))
        if unknown:
            raise InvalidModelOutputError(f"the answer's pages ({shown}) are not the pages asked for ({asked})")
        raise InvalidModelOutputError(f"the answer has no entry for the pages asked for ({asked})")
    return PagesAnswer(
        pages={number: answered[number] for number in requested if number in answered},
        missing=tuple(n for n in requested if n not in answered and n not in merged),
        merged=tuple(n for n in requested if n in merged),
        adjustments=tuple(notes.items),
    )


def _shown(value: Any) -> str:
    return bounded(json.dumps(value, ensure_ascii=False, default=str)[:80], 60)
