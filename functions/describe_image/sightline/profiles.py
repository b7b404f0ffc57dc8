"""Profiles: what to do with an object (caption, alt text for a CMS, document intake), chosen per key.

Profiles live in one YAML file shipped with the function (``PROFILES_FILE``, default the bundled
``profiles.yaml``). It is read and validated once per cold start: an invalid file raises
:class:`ProfilesError` (a configuration error, never a per-image failure) whose message names the file, the
line and the field, one line per problem, e.g.::

    profiles.yaml line 9, profiles[1] (cms-de) field 'language': 'deutsch' is not a BCP 47 language tag ...
    profiles.yaml line 4, profiles[0] (photos) field 'langauge': unknown field; did you mean 'language'?

(``profiles[N]`` counts from 0, like every other index in these messages.)

The file format::

    version: 1                      # optional; 1 is the only version
    profiles:                       # tried in order: the first whose match accepts the key wins
      - name: photos                # unique; [A-Za-z0-9._-], up to 64 characters; "default" is reserved
        task: caption               # caption | alt_text | document (default caption)
        language: en                # BCP 47 (en, de, pt-BR, zh-Hant); default en; case is normalised
        detail: auto                # low | high | auto; absent: the IMAGE_DETAIL setting
        alt_text_max_chars: 125     # 20..1000, default 125
        instructions: "..."         # up to 2,000 characters, appended to ours
        model: qwen/qwen2.5-vl-72b-instruct   # absent: the MODEL_ID setting
        match:                      # at least one of the two lists; both compared case-insensitively
          prefixes: ["photos/"]     # the key starts with one of them (no list: any start)
          suffixes: [".jpg", ".png"]  # AND the key ends with one of them (no list: any end)
      - name: invoices
        task: document
        fields:                     # document only: a JSON Schema of the fields to extract
          type: object
          properties:
            invoice_number: {type: string, description: "The invoice number as printed"}
            total: {type: number, minimum: 0}
            invoice_date: {type: string, format: date}
            line_items: {type: array, items: {type: string}}
        match: {prefixes: ["documents/invoices/"]}
    default:                        # optional: catches every key no profile matched (its name is "default";
      task: caption                 # no name, no match). Without it such objects are skipped with a reason.

``fields`` is a Draft 2020-12 JSON Schema restricted to what a strict structured output can carry:
``type: object`` with ``properties`` (at most 50, names ``[A-Za-z_][A-Za-z0-9_]{0,63}``), optional
``required``/``description``/``additionalProperties: false``; each property has ``type`` string, number,
integer or boolean (with optional ``description``, ``enum``, ``format`` and ``pattern`` for strings,
``minimum``/``maximum`` for numbers), or ``type: array`` with ``items`` of such a scalar. Formats checked:
date, date-time, time, email, uuid. Null is never declared: every field is nullable in the request
(:func:`strict_fields_schema`) and a field the model could not read is null (:func:`validate_fields`).

Only plain YAML is read (the safe loader's values; tags such as ``!!python/object`` are refused), unknown
fields are errors (a typo is never silently ignored) and duplicate keys are errors.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from sightline.errors import SettingsError
from sightline.settings import DETAILS

Task = Literal["caption", "alt_text", "document"]
TASKS: tuple[Task, ...] = ("caption", "alt_text", "document")
DEFAULT_PROFILE_NAME = "default"

FORMAT_VERSION = 1
MAX_FILE_CHARS = 1_000_000
ALT_TEXT_MAX_CHARS_RANGE = (20, 1000)
MAX_INSTRUCTIONS_CHARS = 2000
MAX_FIELDS = 50
MAX_FIELD_STRING_CHARS = 1000  # each string in a validated `fields` answer
MAX_FIELD_ARRAY_ITEMS = 100  # each array in a validated `fields` answer
SCALAR_TYPES = ("string", "number", "integer", "boolean")
FIELD_FORMATS = ("date", "date-time", "time", "email", "uuid")
_FORMAT_HINTS = {
    "date": "a date as YYYY-MM-DD",
    "date-time": "a date and time as YYYY-MM-DDTHH:MM:SS with Z or an offset such as +02:00",
    "time": "a time as HH:MM:SS",
    "email": "an email address",
    "uuid": "a UUID",
}

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_NUMERIC_STRING = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")

_TOP_KEYS = ("version", "profiles", "default")
_PROFILE_KEYS = (
    "name",
    "task",
    "language",
    "detail",
    "alt_text_max_chars",
    "instructions",
    "model",
    "fields",
    "match",
)
_DEFAULT_KEYS = tuple(k for k in _PROFILE_KEYS if k not in ("name", "match"))
_MATCH_KEYS = ("prefixes", "suffixes")
_SCHEMA_KEYS = ("type", "properties", "required", "additionalProperties", "description")
_SCALAR_KEYS = ("type", "description", "enum", "format", "pattern", "minimum", "maximum")
_ARRAY_KEYS = ("type", "description", "items")

# Only the plain JSON-like YAML types; the merge key (<<) is resolved by the safe loader itself.
_YAML = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_YAML + t for t in ("null", "bool", "int", "float", "str", "seq", "map", "timestamp", "merge")}


class ProfilesError(SettingsError):
    """The profiles file is invalid; the message names the file, the line and the field."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: One line per problem (the message joins them).
        self.errors: list[str] = errors if errors is not None else [message]


@dataclass(frozen=True)
class Profile:
    name: str
    task: Task = "caption"
    language: str = "en"  # BCP 47, e.g. "de", "pt-BR"
    detail: str | None = None  # low | high | auto; None: the IMAGE_DETAIL setting
    alt_text_max_chars: int = 125
    instructions: str = ""  # appended to ours
    model: str | None = None  # None: the MODEL_ID setting
    fields: dict[str, Any] | None = None  # document task: a JSON Schema (type object) of the fields to extract
    match_prefixes: tuple[str, ...] = ()  # case-insensitive
    match_suffixes: tuple[str, ...] = ()  # case-insensitive

    def matches(self, key: str) -> bool:
        """(no prefixes OR the key starts with one) AND (no suffixes OR the key ends with one), ignoring case.

        A profile with neither list matches nothing (only the default catches everything, and it is not
        matched: :meth:`ProfileSet.for_key` falls back to it).
        """
        if not (self.match_prefixes or self.match_suffixes):
            return False
        lowered = key.lower()
        if self.match_prefixes and not lowered.startswith(tuple(p.lower() for p in self.match_prefixes)):
            return False
        return not self.match_suffixes or lowered.endswith(tuple(s.lower() for s in self.match_suffixes))


@dataclass(frozen=True)
class ProfileSet:
    profiles: tuple[Profile, ...]  # in file order, without the default
    default: Profile | None = None

    def for_key(self, key: str) -> Profile | None:
        """The first profile whose match accepts the key, else the default, else None (skip the object)."""
        for profile in self.profiles:
            if profile.matches(key):
                return profile
        return self.default

    def get(self, name: str) -> Profile | None:
        """The profile of that name (``default`` is the default profile), else None."""
        if name == DEFAULT_PROFILE_NAME:
            return self.default
        return next((p for p in self.profiles if p.name == name), None)


def normalize_language(tag: str) -> str | None:
    """A plausible BCP 47 tag in its conventional case (``pt-br`` → ``pt-BR``, ``zh-hant`` → ``zh-Hant``),
    or None when the text is not one."""
    if not isinstance(tag, str) or not _LANGUAGE.fullmatch(tag):
        return None
    first, *rest = tag.split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            parts.append(part.upper())  # region: BR, US
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())  # script: Hant, Latn
        else:
            parts.append(part.lower())  # numeric region (419), variants
    return "-".join(parts)


# --- Loading ---------------------------------------------------------------------------------------------------


def load_profiles_file(path: str | Path) -> ProfileSet:
    """Read and validate the profiles file; a missing, unreadable or invalid file raises ProfilesError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfilesError(f"profiles file {path}: not found (PROFILES_FILE)") from None
    except UnicodeDecodeError as exc:
        raise ProfilesError(f"profiles file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ProfilesError(f"profiles file {path}: cannot be read ({exc.strerror or exc})") from None
    return load_profiles(text, source=str(path))


def load_profiles(text: str, source: str = "profiles.yaml") -> ProfileSet:
    """Parse and validate a profiles file's text; ``source`` names it in the errors."""
    if len(text) > MAX_FILE_CHARS:
        raise ProfilesError(f"{source}: {len(text):,} characters, above the limit of {MAX_FILE_CHARS:,}")
    root, data = _parse(text, source)
    doc = _Document(source, root)
    profiles = _validate(data, doc)
    if doc.errors:
        raise ProfilesError("\n".join(doc.errors), list(doc.errors))
    assert profiles is not None
    return profiles


def _parse(text: str, source: str) -> tuple[yaml.Node, Any]:
    """The node tree (for line numbers) and the values, with the safe loader's semantics only."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        if root is None:
            raise ProfilesError(f"{source} line 1: the file is empty (it needs profiles and/or a default)")
        problems = _check_nodes(root)
        if problems:
            lines = [f"{source} line {line}: {problem}" for line, problem in problems]
            raise ProfilesError("\n".join(lines), lines)
        return root, loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem += f" ({exc.context})"
        raise ProfilesError(f"{source}{where}: YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control characters, U+FFFE)
        line = text.count("\n", 0, exc.position) + 1
        raise ProfilesError(
            f"{source} line {line}: YAML syntax error: character {exc.character:#06x} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        raise ProfilesError(f"{source}: YAML error: {exc}") from None
    except RecursionError:
        raise ProfilesError(f"{source}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_nodes(root: yaml.Node) -> list[tuple[int, str]]:
    """Refuse tags beyond plain YAML, duplicate keys, recursive aliases and absurd nesting, with their lines."""
    problems: list[tuple[int, str]] = []
    state: dict[int, str] = {}  # id(node) -> "open" (on the current path) | "done"

    def visit(node: yaml.Node, depth: int) -> None:
        line = node.start_mark.line + 1
        if state.get(id(node)) == "done":
            return
        if state.get(id(node)) == "open":
            problems.append((line, "an alias refers to a value that contains it (recursive alias)"))
            return
        if depth > 64:
            problems.append((line, "nested more than 64 levels deep"))
            return
        if node.tag not in _ALLOWED_TAGS:
            tag = node.tag.replace(_YAML, "!!")
            problems.append((line, f"the tag '{tag}' is not allowed: only plain YAML values are read"))
            return
        state[id(node)] = "open"
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                visit(key, depth + 1)
                if isinstance(key, yaml.ScalarNode) and key.tag != _YAML + "merge":
                    key_line = key.start_mark.line + 1
                    if key.value in seen:
                        problems.append((key_line, f"duplicate key '{key.value}' (first at line {seen[key.value]})"))
                    seen.setdefault(key.value, key_line)
                visit(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                visit(item, depth + 1)
        state[id(node)] = "done"

    visit(root, 0)
    return problems


KeyPath = tuple[str | int, ...]


class _Document:
    """The file's node tree: maps a path of keys and indexes to its line, and collects the errors."""

    def __init__(self, source: str, root: yaml.Node) -> None:
        self.source = source
        self.root = root
        self._errors: list[tuple[int, str]] = []
        self.names: dict[int, str] = {}  # profiles[i] -> its name, once known

    def _node(self, path: KeyPath) -> tuple[yaml.Node | None, int]:
        """The node at the path (None when it is not in the file) and the line of its nearest present part."""
        node: yaml.Node | None = self.root
        line = self.root.start_mark.line + 1
        for part in path:
            found: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key, value in reversed(node.value):  # the last of merged keys is the one that counts
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        found, line = value, key.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                found = node.value[part]
                line = found.start_mark.line + 1
            if found is None:
                return None, line
            node = found
        return node, line

    def line(self, path: KeyPath) -> int:
        return self._node(path)[1]

    def plain_scalar(self, path: KeyPath) -> str | None:
        """The unquoted text YAML read at the path (to explain `no` read as false), if any."""
        node, _ = self._node(path)
        if isinstance(node, yaml.ScalarNode) and node.style is None:
            return str(node.value)
        return None

    def error(self, path: KeyPath, problem: str) -> None:
        where = ""
        rest: KeyPath = path
        if len(path) >= 2 and path[0] == "profiles" and isinstance(path[1], int):
            name = self.names.get(path[1])
            where = f"profiles[{path[1]}]" + (f" ({name})" if name else "")
            rest = path[2:]
        elif path and path[0] == "default":
            where, rest = "default", path[1:]
        field = f"field '{_dotted(rest)}'" if rest else ""
        label = " ".join(part for part in (where, field) if part)
        line = self.line(path)
        self._errors.append((line, f"{self.source} line {line}" + (f", {label}" if label else "") + f": {problem}"))

    @property
    def errors(self) -> list[str]:
        """Every problem found, in the file's order."""
        return [text for _, text in sorted(self._errors, key=lambda entry: entry[0])]


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, datetime | date):
        return "a date"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _not_a(doc: _Document, path: KeyPath, value: Any, expected: str) -> None:
    """A type error; when YAML read an unquoted word as something else (no → false), say so."""
    problem = f"must be {expected}, not {_kind(value)}"
    raw = doc.plain_scalar(path)
    if raw is not None and not isinstance(value, str) and expected.startswith("a string"):
        problem += f' (YAML read the unquoted {raw} as {_kind(value)}; quote it: "{raw}")'
    doc.error(path, problem)


def _check_keys(doc: _Document, path: KeyPath, mapping: dict[Any, Any], allowed: tuple[str, ...]) -> None:
    for key in mapping:
        if path == ("default",) and key in ("name", "match"):
            doc.error((*path, key), "the default has no name or match: it catches every key no profile matched")
        elif not isinstance(key, str):
            doc.error(path, f"the key {key!r} is not a field name (known fields: {', '.join(allowed)})")
        elif key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(allowed)}"
            doc.error((*path, key), f"unknown field; {hint}")


def _validate(data: Any, doc: _Document) -> ProfileSet | None:
    if not isinstance(data, dict):
        doc.error((), f"the file must be a mapping with 'profiles' and/or 'default', not {_kind(data)}")
        return None
    _check_keys(doc, (), data, _TOP_KEYS)
    if "version" in data:
        version = data["version"]
        if isinstance(version, bool) or version != FORMAT_VERSION:
            doc.error(("version",), f"unsupported version {version!r}: this function reads version {FORMAT_VERSION}")
    raw_profiles = data.get("profiles")
    if raw_profiles is None:
        raw_profiles = []
    if not isinstance(raw_profiles, list):
        _not_a(doc, ("profiles",), raw_profiles, "a list of profiles")
        raw_profiles = []
    first_line: dict[str, int] = {}
    for index, item in enumerate(raw_profiles):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            name = doc.names[index] = item["name"]
            if name in first_line:
                doc.error(
                    ("profiles", index, "name"),
                    f"'{name}' is already the name of the profile at line {first_line[name]}",
                )
            first_line.setdefault(name, doc.line(("profiles", index)))

    profiles: list[Profile] = []
    for index, item in enumerate(raw_profiles):
        path: KeyPath = ("profiles", index)
        if not isinstance(item, dict):
            _not_a(doc, path, item, "a mapping (a profile)")
            continue
        profile = _profile(doc, path, item, is_default=False)
        if profile is not None:
            profiles.append(profile)

    default = None
    if "default" in data:
        if isinstance(data["default"], dict):
            default = _profile(doc, ("default",), data["default"], is_default=True)
        else:
            _not_a(doc, ("default",), data["default"], "a mapping (use {} for every default, or remove it)")
    elif not raw_profiles:
        doc.error((), "no profiles and no default: every object would be skipped")
    return ProfileSet(profiles=tuple(profiles), default=default)


def _profile(doc: _Document, path: KeyPath, item: dict[Any, Any], *, is_default: bool) -> Profile | None:
    before = len(doc.errors)
    _check_keys(doc, path, item, _DEFAULT_KEYS if is_default else _PROFILE_KEYS)

    def text(key: str) -> str | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            _not_a(doc, (*path, key), value, "a string")
            return None
        return value

    name = DEFAULT_PROFILE_NAME
    if not is_default:
        name = text("name") or ""
        if "name" not in item or item["name"] is None:
            doc.error((*path, "name"), "missing: every profile has a unique name")
        elif isinstance(item["name"], str) and not _PROFILE_NAME.fullmatch(name):
            doc.error((*path, "name"), f"{name!r} is not a name: letters, digits, '.', '_', '-', up to 64 characters")
        elif name == DEFAULT_PROFILE_NAME:
            doc.error((*path, "name"), "'default' is reserved for the top-level default profile")

    task: Task = "caption"
    if "task" in item:
        raw_task = item["task"]
        if raw_task in TASKS:
            task = raw_task
        else:
            doc.error((*path, "task"), f"{raw_task!r} is not a task: one of {', '.join(TASKS)}")

    language = "en"
    raw_language = text("language")
    if raw_language is not None:
        normalized = normalize_language(raw_language)
        if normalized is None:
            doc.error(
                (*path, "language"), f"{raw_language!r} is not a BCP 47 language tag (e.g. en, de, pt-BR, zh-Hant)"
            )
        else:
            language = normalized

    detail = text("detail")
    if detail is not None and detail not in DETAILS:
        doc.error((*path, "detail"), f"{detail!r} is not a detail: one of {', '.join(DETAILS)}")

    alt_text_max_chars = 125
    if item.get("alt_text_max_chars") is not None:
        raw_max = item["alt_text_max_chars"]
        low, high = ALT_TEXT_MAX_CHARS_RANGE
        if isinstance(raw_max, bool) or not isinstance(raw_max, int):
            _not_a(doc, (*path, "alt_text_max_chars"), raw_max, f"a whole number from {low} to {high}")
        elif not low <= raw_max <= high:
            doc.error((*path, "alt_text_max_chars"), f"{raw_max} is outside {low}..{high}")
        else:
            alt_text_max_chars = raw_max

    instructions = (text("instructions") or "").strip()
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        doc.error(
            (*path, "instructions"),
            f"{len(instructions):,} characters, above the limit of {MAX_INSTRUCTIONS_CHARS:,}",
        )

    model = text("model")
    if model is not None:
        model = model.strip()
        if not model:
            doc.error((*path, "model"), "must be a model id, not empty (remove it to use MODEL_ID)")

    fields = item.get("fields")
    if fields is not None:
        if task != "document":
            doc.error((*path, "fields"), f"only a 'document' profile extracts fields (this one's task is '{task}')")
        else:
            _check_fields(doc, (*path, "fields"), fields)

    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    if not is_default:
        match = item.get("match")
        if match is None:
            doc.error(
                (*path, "match"),
                "missing: a profile needs match.prefixes and/or match.suffixes"
                " (the top-level 'default' catches every other key)",
            )
        elif not isinstance(match, dict):
            _not_a(doc, (*path, "match"), match, "a mapping with prefixes and/or suffixes")
        else:
            _check_keys(doc, (*path, "match"), match, _MATCH_KEYS)
            prefixes = _strings(doc, (*path, "match", "prefixes"), match.get("prefixes"))
            suffixes = _strings(doc, (*path, "match", "suffixes"), match.get("suffixes"))
            if not prefixes and not suffixes and not any(match.get(k) for k in _MATCH_KEYS):
                doc.error(
                    (*path, "match"), "needs prefixes and/or suffixes (the top-level 'default' catches every other key)"
                )

    if len(doc.errors) > before:
        return None
    return Profile(
        name=name,
        task=task,
        language=language,
        detail=detail,
        alt_text_max_chars=alt_text_max_chars,
        instructions=instructions,
        model=model,
        fields=fields,
        match_prefixes=prefixes,
        match_suffixes=suffixes,
    )


def _strings(doc: _Document, path: KeyPath, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        _not_a(doc, path, value, 'a list of strings, e.g. ["photos/"]')
        return ()
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            _not_a(doc, (*path, index), item, "a string")
        elif not item:
            doc.error((*path, index), "an empty string would match every key (that is what 'default' is for)")
        else:
            result.append(item)
    return tuple(result)


# --- The `fields` schema -----------------------------------------------------------------------------------------


def _check_fields(doc: _Document, path: KeyPath, fields: Any) -> None:
    """A valid Draft 2020-12 schema of the restricted shape strict structured output can carry."""
    before = len(doc.errors)
    if not isinstance(fields, dict):
        _not_a(doc, path, fields, "a mapping (a JSON Schema with type: object and properties)")
        return
    if not _json_compatible(doc, path, fields):
        return
    _check_keys(doc, path, fields, _SCHEMA_KEYS)
    if fields.get("type") != "object":
        found = repr(fields["type"]) if "type" in fields else "missing"
        doc.error((*path, "type"), f"must be 'object' (a mapping of properties), not {found}")
    if "additionalProperties" in fields and fields["additionalProperties"] is not False:
        doc.error((*path, "additionalProperties"), "may only be false (unknown properties are always dropped)")
    if "description" in fields and not isinstance(fields["description"], str):
        _not_a(doc, (*path, "description"), fields["description"], "a string")
    properties = fields.get("properties")
    if not isinstance(properties, dict) or not properties:
        doc.error((*path, "properties"), "must be a mapping of at least one property to extract")
        return
    if len(properties) > MAX_FIELDS:
        doc.error((*path, "properties"), f"{len(properties)} properties, above the limit of {MAX_FIELDS}")
    for name, schema in properties.items():
        prop_path: KeyPath = (*path, "properties", name)
        if not _PROPERTY_NAME.fullmatch(name):
            doc.error(prop_path, f"property name {name!r} must match [A-Za-z_][A-Za-z0-9_]{{0,63}}")
        elif not isinstance(schema, dict):
            _not_a(doc, prop_path, schema, "a mapping (the property's schema)")
        elif schema.get("type") == "array":
            _check_keys(doc, prop_path, schema, _ARRAY_KEYS)
            _check_description(doc, prop_path, schema)
            items = schema.get("items")
            if not isinstance(items, dict):
                doc.error((*prop_path, "items"), "an array property needs items: a mapping with a scalar type")
            else:
                _check_scalar(doc, (*prop_path, "items"), items)
        else:
            _check_scalar(doc, prop_path, schema)
    required = fields.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            _not_a(doc, (*path, "required"), required, "a list of property names")
        else:
            for index, req in enumerate(required):
                if req not in properties:
                    doc.error((*path, "required", index), f"'{req}' is not one of the properties")
    if len(doc.errors) == before:  # the restricted shape holds: the meta-schema is the last word
        try:
            Draft202012Validator.check_schema(fields)
        except SchemaError as exc:
            doc.error((*path, *exc.path), _short(exc.message))


def _check_description(doc: _Document, path: KeyPath, schema: dict[str, Any]) -> None:
    if "description" in schema and not isinstance(schema["description"], str):
        _not_a(doc, (*path, "description"), schema["description"], "a string")


def _check_scalar(doc: _Document, path: KeyPath, schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    if kind not in SCALAR_TYPES:
        allowed = ", ".join(SCALAR_TYPES) + (", array" if path[-1] != "items" else "")
        hint = " (every field is nullable already)" if isinstance(kind, list) else ""
        doc.error((*path, "type"), f"{kind!r} is not a field type: one of {allowed}{hint}")
        return
    _check_keys(doc, path, schema, _SCALAR_KEYS)
    _check_description(doc, path, schema)
    if kind != "string":
        for keyword in ("format", "pattern"):
            if keyword in schema:
                doc.error((*path, keyword), f"only a string property has a {keyword}, not a {kind} one")
    if kind not in ("number", "integer"):
        for keyword in ("minimum", "maximum"):
            if keyword in schema:
                doc.error((*path, keyword), f"only a number or integer property has a {keyword}, not a {kind} one")
    if kind == "string" and "format" in schema and schema["format"] not in FIELD_FORMATS:
        close = difflib.get_close_matches(str(schema["format"]), FIELD_FORMATS, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        doc.error(
            (*path, "format"), f"{schema['format']!r} is not a format we check; {hint}one of {', '.join(FIELD_FORMATS)}"
        )
    if kind == "string" and "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            doc.error((*path, "pattern"), f"not a regular expression: {exc}")
    bounds = {k: schema[k] for k in ("minimum", "maximum") if k in schema}
    for keyword, bound in bounds.items():
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            _not_a(doc, (*path, keyword), bound, "a number")
    if len(bounds) == 2 and all(_is_number(b) for b in bounds.values()) and bounds["minimum"] > bounds["maximum"]:
        doc.error((*path, "minimum"), f"minimum {bounds['minimum']} is above maximum {bounds['maximum']}")
    if "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum:
            _not_a(doc, (*path, "enum"), enum, "a non-empty list")
            return
        for index, value in enumerate(enum):
            if not _is_type(kind, value):
                _not_a(doc, (*path, "enum", index), value, f"a {kind}" if kind != "integer" else "an integer")
        if len({json.dumps(v) for v in enum}) != len(enum):
            doc.error((*path, "enum"), "lists a value twice")


def _json_compatible(doc: _Document, path: KeyPath, value: Any) -> bool:
    """Only JSON values in a schema (YAML would give dates for unquoted 2026-01-01)."""
    if isinstance(value, dict):
        ok = True
        for key, item in value.items():
            if not isinstance(key, str):
                doc.error(path, f"the key {key!r} must be a string (quote it)")
                ok = False
            else:
                ok = _json_compatible(doc, (*path, key), item) and ok
        return ok
    if isinstance(value, list):
        return all([_json_compatible(doc, (*path, i), item) for i, item in enumerate(value)])
    if isinstance(value, float) and not math.isfinite(value):
        doc.error(path, f"{value} is not a JSON number")
        return False
    if value is None or isinstance(value, str | int | float | bool):
        return True
    raw = doc.plain_scalar(path)
    doc.error(path, f"{_kind(value)} is not a JSON value" + (f'; quote it: "{raw}"' if raw else ""))
    return False


# --- Structured output and the answer's validation --------------------------------------------------------------


def strict_fields_schema(fields: dict[str, Any]) -> dict[str, Any]:
    """The profile's `fields` as an OpenAI strict-mode schema: every property required and nullable,
    additionalProperties false, and only the keywords strict mode accepts (description, enum, items).

    format, pattern, minimum and maximum stay in the profile's own schema, which :func:`validate_fields`
    applies to the answer.
    """
    properties = fields.get("properties") or {}
    strict: dict[str, Any] = {"type": "object"}
    if isinstance(fields.get("description"), str):
        strict["description"] = fields["description"]
    strict["properties"] = {name: _strict_property(schema) for name, schema in properties.items()}
    strict["required"] = list(properties)
    strict["additionalProperties"] = False
    return strict


def _strict_property(schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("type") == "array":
        result: dict[str, Any] = {"type": ["array", "null"]}
        if isinstance(schema.get("description"), str):
            result["description"] = schema["description"]
        result["items"] = _strict_scalar(schema.get("items") or {}, nullable=False)
        return result
    return _strict_scalar(schema, nullable=True)


def _strict_scalar(schema: dict[str, Any], *, nullable: bool) -> dict[str, Any]:
    kind = schema.get("type", "string")
    result: dict[str, Any] = {"type": [kind, "null"] if nullable else kind}
    description = schema.get("description") if isinstance(schema.get("description"), str) else ""
    hint = _FORMAT_HINTS.get(schema.get("format"))  # type: ignore[arg-type]
    if hint:  # strict mode drops `format`: the model still needs to know what we will accept
        description = f"{description} ({hint})" if description else hint[0].upper() + hint[1:]
    if description:
        result["description"] = description
    if isinstance(schema.get("enum"), list):
        result["enum"] = [*schema["enum"], None] if nullable else list(schema["enum"])
    return result


def _format_checker() -> FormatChecker:
    """The formats we allow, checked the same way everywhere (jsonschema's own date-time and time checks
    need an optional package the Lambda layer does not ship)."""
    checker = FormatChecker(formats=[f for f in ("date", "email", "uuid") if f in FormatChecker.checkers])
    date_time = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
    time_ = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")

    @checker.checks("date-time", raises=ValueError)
    def is_date_time(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        return bool(date_time.fullmatch(instance)) and bool(datetime.fromisoformat(instance.replace("z", "Z")))

    @checker.checks("time", raises=ValueError)
    def is_time(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        if not time_.fullmatch(instance):
            return False
        hours, minutes, seconds = (int(instance[i : i + 2]) for i in (0, 3, 6))
        return hours < 24 and minutes < 60 and seconds < 61

    return checker


FORMAT_CHECKER = _format_checker()


def validate_fields(fields_schema: dict[str, Any], value: Any) -> tuple[dict[str, Any], list[str]]:
    """The model's `fields` answer checked against the profile's own schema (Draft 2020-12, formats checked).

    Returns every declared property (missing, invalid or unreadable: None, never invented) and what was
    adjusted, one note each. Unknown properties are dropped; strings are cut at 1,000 characters; a numeric
    string for a number is read as the number. Never raises.
    """
    properties = fields_schema.get("properties") if isinstance(fields_schema, dict) else None
    if not isinstance(properties, dict):
        return {}, ["fields: the profile declares no fields (answer ignored)"] if value is not None else []
    cleaned: dict[str, Any] = dict.fromkeys(properties)
    notes: list[str] = []
    if not isinstance(value, dict):
        shown = "null" if value is None else f"{_kind(value)}, not an object"
        notes.append(f"fields: {shown} (every field set to null)")
        return cleaned, notes
    for key in value:
        if key not in properties:
            notes.append(f"fields: unknown property {_shown(key)} dropped")
    for name, schema in properties.items():
        if name not in value:
            notes.append(f"fields.{name}: missing (set to null)")
            continue
        try:
            cleaned[name] = _field(f"fields.{name}", schema, value[name], notes)
        except Exception as exc:  # never raise for an answer: the field is unknown, say why
            cleaned[name] = None
            notes.append(f"fields.{name}: could not be checked ({type(exc).__name__}) (set to null)")
    return cleaned, notes


def _field(label: str, schema: Any, raw: Any, notes: list[str]) -> Any:
    if raw is None:
        return None
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    items = schema.get("items")
    item_schema: dict[str, Any] = items if isinstance(items, dict) else {}
    if kind == "array" and isinstance(raw, list):
        if len(raw) > MAX_FIELD_ARRAY_ITEMS:
            notes.append(f"{label}: {len(raw)} items, cut to {MAX_FIELD_ARRAY_ITEMS}")
            raw = raw[:MAX_FIELD_ARRAY_ITEMS]
        value: Any = [_prepared(f"{label}[{i}]", item_schema.get("type"), item, notes) for i, item in enumerate(raw)]
    else:
        value = _prepared(label, kind, raw, notes)
        if value is None:
            return None
    error = next(iter(Draft202012Validator(schema, format_checker=FORMAT_CHECKER).iter_errors(value)), None)
    if error is not None:
        where = "".join(f"[{p}]" for p in error.path)
        notes.append(f"{label}{where}: {_short(error.message)} (set to null)")
        return None
    return value


def _prepared(label: str, kind: Any, raw: Any, notes: list[str]) -> Any:
    """Bounded strings, numeric strings read as numbers, integral floats as integers."""
    if kind in ("number", "integer") and isinstance(raw, str) and len(raw) <= 64 and _NUMERIC_STRING.fullmatch(raw):
        number = float(raw)
        if math.isfinite(number):
            if kind == "integer" and number.is_integer():
                number = int(number)
            notes.append(f"{label}: {json.dumps(raw, ensure_ascii=False)} read as a number")
            return number
    if isinstance(raw, float) and not math.isfinite(raw):
        notes.append(f"{label}: {raw} is not a finite number (set to null)")
        return None
    if kind == "integer" and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and len(raw) > MAX_FIELD_STRING_CHARS:
        notes.append(f"{label}: {len(raw):,} characters, cut to {MAX_FIELD_STRING_CHARS:,}")
        return raw[:MAX_FIELD_STRING_CHARS]
    return raw


def _is_type(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return _is_number(value) and float(value).is_integer()
    return _is_number(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"
