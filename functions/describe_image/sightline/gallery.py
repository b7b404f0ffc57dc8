"""The review gallery's data: records → items with flags, CMS export rows, and the review file. Pure, no AWS.

Records come from the results table (``sightline_cli.records_source.load_records``); :func:`gallery_items` turns
them into :class:`GalleryItem` values, each with the :class:`Flag` values a reviewer should look at, in the order of
:data:`FLAG_CODES`. Deleted records are left out (there is no image to review).

Flags (``Flag.code`` is stable; ``Flag.message`` is for people and may change):

``alt_missing``
    Described (succeeded or partial), not decorative, no reviewed alt text, and the model's alt text is empty.
    Not raised for the document task or PDFs/TIFFs, whose alt text is optional by design.
``alt_too_long``
    The effective alt text (the reviewed one if any, else the model's) is longer than the profile's
    ``alt_text_max_chars``, counted in characters (code points, as the function counts them). Only when the
    profile is known: the model's text is cut to the limit, so this mostly catches reviewed text or a limit
    lowered since.
``alt_duplicate``
    The effective alt text is identical (ignoring case and runs of white space) to another object's in the same
    set. Objects with the same bytes (same ``content_sha256``) do not count: identical images should share their
    alt text. The message says how many others, and names up to three.
``repeated_words``
    A word repeated back to back ("the the"; a Title-case pair such as "Bora Bora" or "Walla Walla" is a name
    and is left alone), one word making up a large share of the alt text (at least 3 times and a quarter of
    6+ words, function words aside), or an alt text that starts with "image of", "picture of", "photo of" or
    "photograph of" (a screen reader already says it is an image).
``wrong_language``
    The effective alt text or the description appears to be in another language than the record's
    ``language``. A deliberately small heuristic that flags only clear evidence (see :func:`language_evidence`):
    a script check (at least 10 letters, less than 15 % of them in the expected script: Latin text under ``ja``,
    Cyrillic text under ``en``; Latin text under a non-Latin language also needs 3 function words or 30 letters,
    since names are written in Latin everywhere) for the languages whose script we know, then, for en, de, fr,
    es, it, nl and pt, a function-word count (another of these seven languages has at least 3 function words
    and at least twice the expected language's count plus one). Other languages, and short texts, are never
    flagged; the OCR text (never translated) is never checked.
``failed``
    Status failed: the message is the error type and message.
``partial``
    A document some of whose pages failed: the failed page numbers.
``cache_hit``
    The description was reused from identical bytes described before (no model call, no cost).
``markup_removed``
    The record's ``adjustments`` say validation removed markup (HTML) from a field: the adjustments are quoted.
``review_stale``
    A reviewed alt text whose image changed since the review (``review_stale`` on the record).
``deferred``, ``processing``
    Not finished: parked by the budget or the provider breaker (resumed by itself), or being described (or
    waiting for a retry). The other fields still describe the previous version.

The CMS export (:func:`export_rows`, :func:`write_csv`, :func:`write_jsonl`) has one row per object version with
the reviewed alt text where there is one. CSV cells that a spreadsheet would run as a formula (starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) are prefixed with a single quote; JSONL is never altered.

The review file (:func:`read_review_file`) is what the gallery page downloads: JSON Lines, one object per line,
``{"bucket", "key", "version", "alt_text", "content_sha256", "reviewed_by"}``.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import IO, Any, Final, Literal

from sightline.pricing import PriceTable
from sightline.profiles import ProfileSet

# --- Flags ------------------------------------------------------------------------------------------------------

ALT_MISSING: Final = "alt_missing"
ALT_TOO_LONG: Final = "alt_too_long"
ALT_DUPLICATE: Final = "alt_duplicate"
REPEATED_WORDS: Final = "repeated_words"
WRONG_LANGUAGE: Final = "wrong_language"
FAILED_FLAG: Final = "failed"
PARTIAL_FLAG: Final = "partial"
CACHE_HIT: Final = "cache_hit"
MARKUP_REMOVED: Final = "markup_removed"
REVIEW_STALE: Final = "review_stale"
DEFERRED_FLAG: Final = "deferred"
PROCESSING_FLAG: Final = "processing"

#: Every flag code, in the order an item's flags are listed.
FLAG_CODES: tuple[str, ...] = (
    FAILED_FLAG,
    PARTIAL_FLAG,
    DEFERRED_FLAG,
    PROCESSING_FLAG,
    REVIEW_STALE,
    ALT_MISSING,
    ALT_TOO_LONG,
    ALT_DUPLICATE,
    REPEATED_WORDS,
    WRONG_LANGUAGE,
    MARKUP_REMOVED,
    CACHE_HIT,
)

#: One line per flag code, for a legend.
FLAG_HELP: Mapping[str, str] = {
    FAILED_FLAG: "describing the object failed",
    PARTIAL_FLAG: "a document some of whose pages failed",
    DEFERRED_FLAG: "parked by the budget or the provider breaker; resumed by itself",
    PROCESSING_FLAG: "being described; the fields still describe the previous version",
    REVIEW_STALE: "the image changed since its alt text was reviewed",
    ALT_MISSING: "no alt text, and the image is not marked decorative",
    ALT_TOO_LONG: "the alt text is longer than the profile's limit",
    ALT_DUPLICATE: "the same alt text as another image",
    REPEATED_WORDS: "a word repeated, or an alt text starting with 'image of'",
    WRONG_LANGUAGE: "the text appears to be in another language than the profile's",
    MARKUP_REMOVED: "validation removed markup from the model's answer",
    CACHE_HIT: "reused from identical bytes described before (no model call)",
}

_SUCCEEDED, _PARTIAL, _FAILED, _DELETED, _PROCESSING, _DEFERRED = (
    "succeeded",
    "partial",
    "failed",
    "deleted",
    "processing",
    "deferred",
)
_WITH_CONTENT = (_SUCCEEDED, _PARTIAL)
_NOT_FINISHED = (_PROCESSING, _DEFERRED)
_PAGES_SHOWN = 20
_KEYS_SHOWN = 3
_MESSAGE_MAX_CHARS = 500


@dataclass(frozen=True)
class Flag:
    code: str  # one of FLAG_CODES
    message: str


# --- Items ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GalleryItem:
    """One record, as the gallery and the export see it. Every field has a default, for building items by hand."""

    bucket: str = ""
    key: str = ""
    version: str = ""  # record["version_token"] (versionId, else ETag); "" when the record has none
    status: str = ""
    profile: str = ""
    task: str = ""
    language: str = ""
    alt_text: str = ""  # the model's
    alt_text_max_chars: int | None = None  # the profile's limit; None when the profile is unknown
    alt_text_reviewed: str | None = None  # a person's; "" is a deliberate empty alt text (decorative)
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_stale: bool = False
    description: str = ""
    text: str = ""
    text_truncated: bool = False
    tags: tuple[str, ...] = ()
    decorative: bool = False  # the model's answer
    adjustments: tuple[str, ...] = ()
    fields: dict[str, Any] | None = None  # the document task's extracted fields
    error_type: str | None = None
    error_message: str | None = None
    cache_hit: bool = False
    model_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    cost: float | None = None  # by the pricing table; None without a price (or when usage was not reported)
    currency: str | None = None
    pages: int | None = None  # PDFs and TIFFs only
    page_statuses: tuple[str, ...] = ()
    pages_failed: tuple[int, ...] = ()
    result_uri: str | None = None
    result_markdown_uri: str | None = None
    content_sha256: str | None = None
    content_type: str | None = None
    size: int | None = None
    width: int | None = None  # the image as uploaded, upright
    height: int | None = None
    processed_at: str | None = None
    is_document: bool = False  # a PDF or multi-page TIFF (the record has a `document` map), whatever the task
    flags: tuple[Flag, ...] = ()

    @property
    def effective_alt_text(self) -> str:
        """The reviewed alt text if there is one (even ""), else the model's."""
        return self.alt_text_reviewed if self.alt_text_reviewed is not None else self.alt_text

    @property
    def alt_text_source(self) -> Literal["reviewed", "model"]:
        return "reviewed" if self.alt_text_reviewed is not None else "model"

    @property
    def effective_decorative(self) -> bool:
        """A reviewed alt text decides: "" is decorative, anything else is not; else the model's answer."""
        return self.alt_text_reviewed == "" if self.alt_text_reviewed is not None else self.decorative

    @property
    def has_content(self) -> bool:
        """The fields describe this version (succeeded or partial)."""
        return self.status in _WITH_CONTENT

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def flag_codes(self) -> tuple[str, ...]:
        return tuple(flag.code for flag in self.flags)

    def has_flag(self, code: str) -> bool:
        return any(flag.code == code for flag in self.flags)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cost(record: dict[str, Any], prices: PriceTable | None) -> tuple[float | None, str | None]:
    if prices is None:
        return None, None
    usage = _map(record.get("usage"))
    if usage.get("model_calls") and usage.get("usage_reported") is False:
        return None, prices.currency  # the provider did not say what it billed
    calls = _int(usage.get("model_calls")) or 0
    price = prices.for_model(_str(record.get("model_id")))
    if price is None:
        return (0.0 if calls == 0 and not usage.get("prompt_tokens") else None), prices.currency
    return price.cost(_int(usage.get("prompt_tokens")) or 0, _int(usage.get("completion_tokens")) or 0), prices.currency


def gallery_item(
    record: dict[str, Any], profiles: ProfileSet | None = None, prices: PriceTable | None = None
) -> GalleryItem:
    """One record as an item, with the flags that need only the record (not ``alt_duplicate``)."""
    usage = _map(record.get("usage"))
    document = record.get("document")
    doc = _map(document)
    obj = _map(record.get("object"))
    image = _map(record.get("image"))
    review = _map(record.get("review"))
    profile_name = _str(record.get("profile"))
    profile = profiles.get(profile_name) if profiles is not None and profile_name else None
    reviewed = record.get("alt_text_reviewed")
    if reviewed is None and "alt_text" in review:
        reviewed = review.get("alt_text")
    cost, currency = _cost(record, prices)
    version = record.get("version_token") or obj.get("version_id") or obj.get("etag") or ""
    item = GalleryItem(
        bucket=_str(record.get("bucket")),
        key=_str(record.get("key")),
        version=_str(version),
        status=_str(record.get("status")),
        profile=profile_name,
        task=_str(record.get("task")),
        language=_str(record.get("language")),
        alt_text=_str(record.get("alt_text")),
        alt_text_max_chars=profile.alt_text_max_chars if profile is not None else None,
        alt_text_reviewed=_opt_str(reviewed),
        reviewed_by=_opt_str(review.get("reviewed_by")),
        reviewed_at=_opt_str(review.get("reviewed_at")),
        review_stale=bool(record.get("review_stale")) and reviewed is not None,
        description=_str(record.get("description")),
        text=_str(record.get("text")),
        text_truncated=bool(record.get("text_truncated")),
        tags=tuple(_str(tag) for tag in record.get("tags") or () if tag is not None),
        decorative=bool(record.get("decorative")),
        adjustments=tuple(_str(note) for note in record.get("adjustments") or ()),
        fields=record.get("fields") if isinstance(record.get("fields"), dict) else None,
        error_type=_opt_str(record.get("error_type")),
        error_message=_opt_str(record.get("error_message")),
        cache_hit=bool(record.get("cache_hit")),
        model_id=_str(record.get("model_id")),
        prompt_tokens=_int(usage.get("prompt_tokens")) or 0,
        completion_tokens=_int(usage.get("completion_tokens")) or 0,
        model_calls=_int(usage.get("model_calls")) or 0,
        cost=cost,
        currency=currency,
        pages=_int(doc.get("pages")),
        page_statuses=tuple(_str(status) for status in doc.get("page_statuses") or ()),
        pages_failed=tuple(n for n in (_int(p) for p in doc.get("pages_failed") or ()) if n is not None),
        result_uri=_opt_str(record.get("result_uri")),
        result_markdown_uri=_opt_str(record.get("result_markdown_uri")),
        content_sha256=_opt_str(record.get("content_sha256")),
        content_type=_opt_str(obj.get("content_type")),
        size=_int(obj.get("size")),
        width=_int(image.get("original_width")),
        height=_int(image.get("original_height")),
        processed_at=_opt_str(record.get("processed_at")),
        is_document=isinstance(document, dict),
    )
    flags = _record_flags(item, record)
    return replace(item, flags=tuple(sorted(flags, key=lambda f: FLAG_CODES.index(f.code))))


def gallery_items(
    records: Iterable[dict[str, Any]],
    profiles: ProfileSet | None,
    prices: PriceTable | None,
    *,
    include_deleted: bool = False,
) -> list[GalleryItem]:
    """The records as items, in their order, with every flag (``alt_duplicate`` across the set).

    Deleted records are left out unless ``include_deleted``: they keep nothing of the image.
    """
    items = [
        gallery_item(record, profiles, prices)
        for record in records
        if include_deleted or record.get("status") != _DELETED
    ]
    duplicates = _duplicate_flags(items)
    result = []
    for index, item in enumerate(items):
        extra = duplicates.get(index)
        if extra is not None:
            flags = sorted((*item.flags, extra), key=lambda f: FLAG_CODES.index(f.code))
            item = replace(item, flags=tuple(flags))
        result.append(item)
    return result


def _cut(text: str, limit: int = _MESSAGE_MAX_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _record_flags(item: GalleryItem, record: dict[str, Any]) -> list[Flag]:
    flags: list[Flag] = []
    if item.status == _FAILED:
        reason = ": ".join(part for part in (item.error_type, item.error_message) if part) or "no reason recorded"
        flags.append(Flag(FAILED_FLAG, _cut(reason)))
    elif item.status == _PARTIAL:
        failed = item.pages_failed
        shown = ", ".join(str(n) for n in failed[:_PAGES_SHOWN]) + (", …" if len(failed) > _PAGES_SHOWN else "")
        of = f" of {item.pages}" if item.pages else ""
        message = f"{len(failed)} page(s){of} failed: {shown}" if failed else "some pages failed"
        summary_error = _map(record.get("summary_error"))
        if summary_error:
            message += f"; the summary failed ({_str(summary_error.get('error_type')) or 'error'})"
        flags.append(Flag(PARTIAL_FLAG, message))
    elif item.status == _DEFERRED:
        reason = ": ".join(part for part in (item.error_type, item.error_message) if part)
        flags.append(Flag(DEFERRED_FLAG, _cut("parked, resumed by itself" + (f" ({reason})" if reason else ""))))
    elif item.status == _PROCESSING:
        last = ": ".join(_str(record.get(n)) for n in ("last_error_type", "last_error_message") if record.get(n))
        message = "being described; the fields still describe the previous version"
        flags.append(Flag(PROCESSING_FLAG, _cut(message + (f" (last error: {last})" if last else ""))))
    if item.review_stale:
        who = f" by {item.reviewed_by}" if item.reviewed_by else ""
        when = f" on {item.reviewed_at}" if item.reviewed_at else ""
        flags.append(Flag(REVIEW_STALE, f"the image changed since its alt text was reviewed{who}{when}"))
    if not item.has_content:
        return flags
    flags += _alt_text_flags(item)
    flags += _language_flags(item)
    markup = [note for note in item.adjustments if "markup removed" in note]
    if markup:
        flags.append(Flag(MARKUP_REMOVED, _cut("; ".join(markup))))
    if item.cache_hit:
        flags.append(Flag(CACHE_HIT, "reused the description of identical bytes described before (no model call)"))
    return flags


def _alt_text_flags(item: GalleryItem) -> list[Flag]:
    flags: list[Flag] = []
    alt = item.effective_alt_text
    label = "the reviewed alt text" if item.alt_text_reviewed is not None else "the alt text"
    optional = item.task == "document" or item.is_document
    if not alt.strip() and item.alt_text_reviewed is None and not item.decorative and not optional:
        flags.append(Flag(ALT_MISSING, "no alt text, and the model did not mark the image decorative"))
    limit = item.alt_text_max_chars
    if limit is not None and len(alt) > limit:
        flags.append(Flag(ALT_TOO_LONG, f"{label} is {len(alt):,} characters, above the profile's {limit:,}"))
    problem = repeated_words(alt)
    if problem:
        flags.append(Flag(REPEATED_WORDS, f"{label}: {problem}"))
    return flags


def _normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def _duplicate_flags(items: list[GalleryItem]) -> dict[int, Flag]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        text = _normalized(item.effective_alt_text)
        if text and item.has_content:
            groups[text].append(index)
    flags: dict[int, Flag] = {}
    for members in groups.values():
        for index in members:
            sha = items[index].content_sha256
            others = [
                items[other] for other in members if other != index and not (sha and items[other].content_sha256 == sha)
            ]
            if not others:
                continue
            names = ", ".join(other.key for other in others[:_KEYS_SHOWN]) + (
                ", …" if len(others) > _KEYS_SHOWN else ""
            )
            count = len(others)
            flags[index] = Flag(
                ALT_DUPLICATE,
                _cut(f"the same alt text as {count} other object{'s' if count != 1 else ''}: {names}"),
            )
    return flags


# --- Repeated words --------------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_BACK_TO_BACK = re.compile(r"(?<!\w)([^\W\d_]+)\s+(\1)(?!\w)", re.IGNORECASE)
_IMAGE_OF = re.compile(r"^\W*(?:(?:a|an|the)\s+)?(?P<phrase>(?:image|picture|photo|photograph)\s+of)\b", re.IGNORECASE)
_SHARE_MIN_WORDS = 6
_SHARE_MIN_COUNT = 3
_SHARE = 0.25


def repeated_words(text: str) -> str | None:
    """What is repeated or redundant in an alt text, or None. See the module's ``repeated_words`` flag."""
    found = _IMAGE_OF.match(text)
    if found:
        return f'starts with "{" ".join(found.group("phrase").split())}" (a screen reader already says it is an image)'
    for match in _BACK_TO_BACK.finditer(text):
        first, second = match.group(1), match.group(2)
        if first[:1].isupper() and second[:1].isupper() and first[1:].islower() and second[1:].islower():
            continue  # "Bora Bora", "Walla Walla": a name
        return f'"{first} {second}": a word repeated back to back'
    words = [word.casefold() for word in _WORD.findall(text)]
    if len(words) >= _SHARE_MIN_WORDS:
        counts = Counter(word for word in words if word not in _ALL_FUNCTION_WORDS and len(word) > 1)
        if counts:
            word, count = counts.most_common(1)[0]
            if count >= _SHARE_MIN_COUNT and count / len(words) >= _SHARE:
                return f'"{word}" is {count} of {len(words)} words'
    return None


# --- Language ----------------------------------------------------------------------------------------------------

# The expected script(s) of a primary language subtag. Languages not listed are not script-checked.
_LATIN_TAGS = "en de fr es it nl pt pl sv da no nb nn fi cs sk hu ro tr hr sl et lv lt id ms vi ca eu gl ga cy is sq af sw tl mt lb"
_LATIN_LANGUAGES = frozenset(_LATIN_TAGS.split())
_SCRIPT_LANGUAGES: Mapping[str, tuple[str, ...]] = {
    "ja": ("Hiragana", "Katakana", "Han"),
    "zh": ("Han",),
    "ko": ("Hangul",),
    "ar": ("Arabic",),
    "fa": ("Arabic",),
    "ur": ("Arabic",),
    "ru": ("Cyrillic",),
    "uk": ("Cyrillic",),
    "bg": ("Cyrillic",),
    "be": ("Cyrillic",),
    "mk": ("Cyrillic",),
    "kk": ("Cyrillic",),
    "el": ("Greek",),
    "he": ("Hebrew",),
    "yi": ("Hebrew",),
    "hi": ("Devanagari",),
    "mr": ("Devanagari",),
    "ne": ("Devanagari",),
    "th": ("Thai",),
    "ka": ("Georgian",),
    "hy": ("Armenian",),
    "bn": ("Bengali",),
    "ta": ("Tamil",),
    **{language: ("Latin",) for language in _LATIN_LANGUAGES},
}
_SCRIPT_NAMES = {  # the first word(s) of a letter's Unicode name → its script
    "LATIN": "Latin",
    "FULLWIDTH LATIN": "Latin",
    "CYRILLIC": "Cyrillic",
    "GREEK": "Greek",
    "ARABIC": "Arabic",
    "HEBREW": "Hebrew",
    "HIRAGANA": "Hiragana",
    "KATAKANA": "Katakana",
    "HALFWIDTH KATAKANA": "Katakana",
    "KATAKANA-HIRAGANA": "Katakana",
    "CJK": "Han",
    "HANGUL": "Hangul",
    "HALFWIDTH HANGUL": "Hangul",
    "DEVANAGARI": "Devanagari",
    "THAI": "Thai",
    "GEORGIAN": "Georgian",
    "ARMENIAN": "Armenian",
    "BENGALI": "Bengali",
    "TAMIL": "Tamil",
}
_LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
}
# Short, frequent function words (articles, prepositions, conjunctions, copulas). Words shared by several of the
# languages are listed in each: they count for all of them and so decide nothing.
_FUNCTION_WORDS: Mapping[str, frozenset[str]] = {
    language: frozenset(words.split())
    for language, words in {
        "en": "the a an of and with on in at is are to from by for its his her their this that which while "
        "into over under near behind next some two three",
        "de": "der die das den dem des ein eine einer einem einen eines und mit auf im vor von vom zu zum zur "
        "ist sind bei beim neben über unter hinter aus nach für sich am an in zwei drei",
        "fr": "le la les un une des du de et avec sur dans est sont au aux pour par sous devant derrière qui "
        "son sa ses en deux trois près",
        "es": "el la los las un una unos unas y con sobre en es son del al por para que su sus de junto frente "
        "dos tres",
        "it": "il lo la gli le un una uno e con su sul sulla nel nella è sono del della di per che da dei delle "
        "alla al accanto due tre",
        "nl": "de het een en met op in is zijn van voor bij naast onder achter aan uit die dat wordt twee drie",
        "pt": "o a os as um uma e com sobre em no na nos nas é são do da dos das de por para que seu sua ao "
        "dois duas três",
    }.items()
}
_ALL_FUNCTION_WORDS = frozenset().union(*_FUNCTION_WORDS.values())
_MIN_LETTERS = 10
_MIN_LATIN_LETTERS = 30  # Latin text under a non-Latin language without function words: names are Latin too
_SCRIPT_SHARE = 0.15
_MIN_FUNCTION_WORDS = 3
_CHECKED_CHARS = 2_000


def primary_language(tag: str) -> str:
    return re.split(r"[-_]", tag.strip().lower(), maxsplit=1)[0]


def _script(char: str) -> str | None:
    name = unicodedata.name(char, "")
    for prefix in (name.split(" ", 2)[:2], name.split(" ", 1)[:1]):
        found = _SCRIPT_NAMES.get(" ".join(prefix))
        if found:
            return found
    return None


def language_evidence(text: str, language: str) -> str | None:
    """Why ``text`` appears not to be in ``language`` (a BCP 47 tag), as a predicate ("is written in Latin script…",
    "appears to be German…"), or None when the evidence is not clear.

    1. Script: with at least 10 letters, fewer than 15 % of them in the language's script (Latin for en, de,
       pl…; kana or Han for ja; Han for zh; Hangul for ko; Cyrillic for ru, uk…; Arabic, Greek, Hebrew…).
       Latin text under a non-Latin language also needs 3 function words of one language or 30 letters: product
       and brand names are written in Latin script everywhere.
       Under ``zh``, text with more kana than a third of its CJK letters is Japanese.
    2. Function words, for en, de, fr, es, it, nl, pt only: another of these has at least 3 function words in
       the text and at least twice the expected language's count plus one (Spanish under Portuguese, which
       share most of theirs, is rarely that clear, and is then not flagged).
    """
    primary = primary_language(language)
    expected = _SCRIPT_LANGUAGES.get(primary)
    if expected is None:
        return None
    text = text[:_CHECKED_CHARS]
    scripts = Counter(script for char in text if char.isalpha() and (script := _script(char)) is not None)
    letters = sum(scripts.values())
    if letters >= _MIN_LETTERS:
        share = sum(scripts[s] for s in expected) / letters
        if share < _SCRIPT_SHARE:
            dominant = scripts.most_common(1)[0][0]
            wanted = " or ".join(expected)
            hint = ""
            if dominant == "Latin":
                guess = _function_word_guess(text)
                if guess is None and letters < _MIN_LATIN_LETTERS:
                    return None  # "iPhone 15 Pro Max": a name, in any language
                hint = f", apparently {_LANGUAGE_NAMES[guess]}" if guess else ""
            return f"is written in {dominant} script{hint}, not {wanted} as expected for {language}"
        if primary == "zh":
            kana = scripts["Hiragana"] + scripts["Katakana"]
            if kana >= 5 and kana / (kana + scripts["Han"]) > 1 / 3:
                return f"is written with Japanese kana ({kana} of {kana + scripts['Han']} CJK letters), not {language}"
    if primary not in _FUNCTION_WORDS:
        return None
    counts = _function_word_counts(text)
    guess = _function_word_guess(text, counts)
    if guess is None or guess == primary:
        return None
    if counts[guess] < 2 * counts[primary] + 1:
        return None
    return (
        f"appears to be {_LANGUAGE_NAMES[guess]} ({guess}), not {language}: {counts[guess]} {_LANGUAGE_NAMES[guess]} "
        f"function words, {counts[primary]} {_LANGUAGE_NAMES.get(primary, primary)}"
    )


def _function_word_counts(text: str) -> Counter[str]:
    words = [word.casefold() for word in _WORD.findall(text)]
    return Counter(
        {language: sum(1 for w in words if w in vocabulary) for language, vocabulary in _FUNCTION_WORDS.items()}
    )


def _function_word_guess(text: str, counts: Counter[str] | None = None) -> str | None:
    """The one language with the most function words (at least 3), or None on a tie or too few."""
    counts = counts if counts is not None else _function_word_counts(text)
    ranked = counts.most_common()
    if not ranked or ranked[0][1] < _MIN_FUNCTION_WORDS:
        return None
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return None
    return ranked[0][0]


def _language_flags(item: GalleryItem) -> list[Flag]:
    if not item.language:
        return []
    label = "the reviewed alt text" if item.alt_text_reviewed is not None else "the alt text"
    found = []
    for name, text in ((label, item.effective_alt_text), ("the description", item.description)):
        evidence = language_evidence(text, item.language) if text.strip() else None
        if evidence:
            found.append(f"{name} {evidence}")
    return [Flag(WRONG_LANGUAGE, _cut("; ".join(found)))] if found else []


# --- Export ------------------------------------------------------------------------------------------------------

EXPORT_COLUMNS: tuple[str, ...] = (
    "bucket",
    "key",
    "version",
    "alt_text",
    "alt_text_source",
    "description",
    "language",
    "tags",
    "text",
    "status",
    "profile",
    "decorative",
)
TAG_SEPARATOR = "; "
# A spreadsheet runs a cell starting with these as a formula (OWASP "CSV injection"): such cells get a quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportRow:
    """One object version for a CMS import.

    The model's fields (description, text, tags) belong to this version only when it was described (succeeded,
    partial); for other statuses they are empty. The reviewed alt text belongs to the key and is always used.
    """

    bucket: str
    key: str
    version: str
    alt_text: str  # the reviewed alt text if there is one, else the model's
    alt_text_source: Literal["reviewed", "model"]
    description: str
    language: str
    tags: tuple[str, ...]  # a JSON list; in CSV joined with "; "
    text: str
    status: str
    profile: str
    decorative: bool

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["tags"] = list(self.tags)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExportRow:
        missing = [name for name in EXPORT_COLUMNS if name not in values]
        if missing:
            raise ValueError(f"export row without {', '.join(missing)}")
        source = values["alt_text_source"]
        if source not in ("reviewed", "model"):
            raise ValueError(f"alt_text_source must be 'reviewed' or 'model', got {source!r}")
        return cls(
            bucket=_str(values["bucket"]),
            key=_str(values["key"]),
            version=_str(values["version"]),
            alt_text=_str(values["alt_text"]),
            alt_text_source=source,
            description=_str(values["description"]),
            language=_str(values["language"]),
            tags=tuple(_str(tag) for tag in values["tags"] or ()),
            text=_str(values["text"]),
            status=_str(values["status"]),
            profile=_str(values["profile"]),
            decorative=bool(values["decorative"]),
        )


def export_row(item: GalleryItem) -> ExportRow:
    content = item.has_content
    return ExportRow(
        bucket=item.bucket,
        key=item.key,
        version=item.version,
        alt_text=item.effective_alt_text if (content or item.alt_text_reviewed is not None) else "",
        alt_text_source=item.alt_text_source,
        description=item.description if content else "",
        language=item.language,
        tags=item.tags if content else (),
        text=item.text if content else "",
        status=item.status,
        profile=item.profile,
        decorative=item.effective_decorative if (content or item.alt_text_reviewed is not None) else False,
    )


def export_rows(items: Iterable[GalleryItem]) -> list[ExportRow]:
    """One row per item (each item is one key at its record's current version), in the items' order."""
    return [export_row(item) for item in items]


def csv_cell(value: str) -> str:
    """The value, with a single quote before it when a spreadsheet would run it as a formula."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _csv_values(row: ExportRow) -> list[str]:
    values = row.to_dict()
    values["tags"] = TAG_SEPARATOR.join(row.tags)
    values["decorative"] = "true" if row.decorative else "false"
    return [csv_cell(_str(values[name])) for name in EXPORT_COLUMNS]


def write_csv(rows: Iterable[ExportRow], stream: IO[str]) -> int:
    """RFC 4180 CSV (CRLF line ends, quoted where needed) with a header row; returns the rows written.

    Open a file with ``newline=""`` and ``encoding="utf-8"``. Cells starting with ``= + - @``, a tab or a carriage
    return get a leading single quote (formula injection); use JSONL where values must be exact.
    """
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(_csv_values(row))
        count += 1
    return count


def write_jsonl(rows: Iterable[ExportRow], stream: IO[str]) -> int:
    """One JSON object per line (UTF-8 as is, not escaped; tags a list, decorative a boolean); returns the rows."""
    count = 0
    for row in rows:
        stream.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
        count += 1
    return count


def read_jsonl_rows(lines: Iterable[str]) -> list[ExportRow]:
    """What :func:`write_jsonl` wrote, read back (blank lines skipped)."""
    return [ExportRow.from_dict(json.loads(line)) for line in lines if line.strip()]


# --- The review file ---------------------------------------------------------------------------------------------

REVIEW_ALT_TEXT_MAX_BYTES = 2_000  # what `sightline review` stores at most
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ERRORS_SHOWN = 50


class ReviewFileError(ValueError):
    """The review file is invalid: one line per problem, each naming its line number. Nothing was applied."""

    def __init__(self, errors: list[str]) -> None:
        shown = errors[:_ERRORS_SHOWN]
        if len(errors) > _ERRORS_SHOWN:
            shown.append(f"… and {len(errors) - _ERRORS_SHOWN} more")
        super().__init__("\n".join(shown))
        self.errors = errors


@dataclass(frozen=True)
class ReviewEntry:
    """One line of a review file: the alt text a person wrote for a key, and the content they saw."""

    bucket: str
    key: str
    version: str  # the version the reviewer saw (record["version_token"])
    alt_text: str
    content_sha256: str | None = None  # the bytes the reviewer saw; decides review_stale
    reviewed_by: str | None = None
    line: int = field(default=0, compare=False)  # in the file it was read from (0: built here)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version": self.version,
            "alt_text": self.alt_text,
            "content_sha256": self.content_sha256,
            "reviewed_by": self.reviewed_by,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def review_entry(item: GalleryItem, alt_text: str, reviewed_by: str | None = None) -> ReviewEntry:
    """The review file's line for a person's alt text on this item, as the gallery page writes it."""
    return ReviewEntry(
        bucket=item.bucket,
        key=item.key,
        version=item.version,
        alt_text=alt_text,
        content_sha256=item.content_sha256,
        reviewed_by=reviewed_by,
    )


def write_review_file(entries: Iterable[ReviewEntry], stream: IO[str]) -> int:
    count = 0
    for entry in entries:
        stream.write(entry.to_json() + "\n")
        count += 1
    return count


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string"


_REQUIRED = ("bucket", "key", "version", "alt_text")
_OPTIONAL = ("content_sha256", "reviewed_by")


def _entry(value: Any, number: int) -> tuple[ReviewEntry | None, list[str]]:
    if not isinstance(value, dict):
        return None, [f"a JSON object is expected, not {_kind(value)}"]
    problems: list[str] = []
    for name in _REQUIRED:
        if name not in value:
            problems.append(f"missing field '{name}'")
        elif not isinstance(value[name], str):
            problems.append(f"field '{name}' must be a string, not {_kind(value[name])}")
        elif name in ("bucket", "key") and not value[name]:
            problems.append(f"field '{name}' is empty")
    for name in _OPTIONAL:
        if value.get(name) is not None and not isinstance(value[name], str):
            problems.append(f"field '{name}' must be a string or null, not {_kind(value[name])}")
    sha = value.get("content_sha256")
    if isinstance(sha, str) and not _SHA256.fullmatch(sha):
        problems.append("field 'content_sha256' must be a SHA-256 digest (64 lowercase hex digits) or null")
    alt = value.get("alt_text")
    if isinstance(alt, str):
        size = len(alt.encode("utf-8", "surrogatepass"))
        if size > REVIEW_ALT_TEXT_MAX_BYTES:
            problems.append(
                f"field 'alt_text' is {size:,} bytes of UTF-8, above the limit of {REVIEW_ALT_TEXT_MAX_BYTES:,}"
            )
    if problems:
        return None, problems
    return (
        ReviewEntry(
            bucket=value["bucket"],
            key=value["key"],
            version=value["version"],
            alt_text=value["alt_text"],
            content_sha256=sha,
            reviewed_by=value.get("reviewed_by"),
            line=number,
        ),
        [],
    )


def read_review_file(lines: Iterable[str], source: str = "review file") -> list[ReviewEntry]:
    """The entries of a review file (JSON Lines; blank lines skipped; unknown fields ignored), or
    :class:`ReviewFileError` listing every problem as ``<source> line N: <problem>``: not JSON, not an object, a
    missing field, a wrong type, an alt text over 2,000 bytes, the same bucket and key twice."""
    entries: list[ReviewEntry] = []
    errors: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.lstrip("\ufeff") if number == 1 else raw
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{source} line {number}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            errors.append(f"{source} line {number}: not JSON (nested too deeply)")
            continue
        entry, problems = _entry(value, number)
        errors += [f"{source} line {number}: {problem}" for problem in problems]
        if entry is None:
            continue
        first = seen.setdefault((entry.bucket, entry.key), number)
        if first != number:
            errors.append(f"{source} line {number}: s3://{entry.bucket}/{entry.key} again (first at line {first})")
            continue
        entries.append(entry)
    if errors:
        raise ReviewFileError(errors)
    return entries
