"""Profiles: one YAML file, validated once per cold start, errors naming the line and the field."""

from __future__ import annotations

import math
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sightline.describe import DescribeOptions
from sightline.errors import SettingsError
from sightline.profiles import (
    DEFAULT_PROFILE_NAME,
    Profile,
    ProfilesError,
    ProfileSet,
    load_profiles,
    load_profiles_file,
    normalize_language,
    strict_fields_schema,
    validate_fields,
)
from sightline.settings import BUNDLED_PROFILES_FILE, Settings

pytestmark = pytest.mark.unit

INVOICE_FIELDS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "description": "The invoice number as printed"},
        "total": {"type": "number", "minimum": 0, "description": "Grand total including tax"},
        "quantity": {"type": "integer"},
        "paid": {"type": "boolean"},
        "currency": {"type": "string", "enum": ["EUR", "USD"], "pattern": "^[A-Z]{3}$"},
        "invoice_date": {"type": "string", "format": "date"},
        "lines": {"type": "array", "items": {"type": "string"}, "description": "Each line item"},
    },
}


def load(text: str) -> ProfileSet:
    return load_profiles(textwrap.dedent(text).lstrip("\n"))


def refused(text: str) -> str:
    with pytest.raises(ProfilesError) as caught:
        load(text)
    return str(caught.value)


# --- Matching -----------------------------------------------------------------------------------------------------


def test_a_profile_with_only_prefixes_matches_every_key_under_them() -> None:
    # GIVEN a profile matching on prefixes only
    profile = Profile(name="p", match_prefixes=("photos/", "uploads/"))
    # WHEN / THEN any ending is accepted under those prefixes, nothing else
    assert profile.matches("photos/a.jpg")
    assert profile.matches("uploads/notes.txt")
    assert not profile.matches("other/photos/a.jpg")


def test_a_profile_with_only_suffixes_matches_every_key_with_them() -> None:
    # GIVEN a profile matching on suffixes only
    profile = Profile(name="p", match_suffixes=(".jpg", ".png"))
    # WHEN / THEN any start is accepted with those endings
    assert profile.matches("anywhere/deep/a.png")
    assert not profile.matches("anywhere/a.pdf")


def test_a_profile_with_prefixes_and_suffixes_needs_both() -> None:
    # GIVEN a profile with a prefix and a suffix
    profile = Profile(name="p", match_prefixes=("scans/",), match_suffixes=(".tif",))
    # WHEN / THEN only a key with both is accepted
    assert profile.matches("scans/page.tif")
    assert not profile.matches("scans/page.png")
    assert not profile.matches("other/page.tif")


def test_matching_ignores_case_on_both_sides() -> None:
    # GIVEN rules in mixed case
    profile = Profile(name="p", match_prefixes=("Photos/",), match_suffixes=(".JPG",))
    # WHEN / THEN keys in any case match
    assert profile.matches("PHOTOS/sunset.jpg")
    assert profile.matches("photos/sunset.Jpg")


def test_a_profile_without_rules_matches_nothing() -> None:
    # GIVEN a profile built in code without rules (the file refuses one; only the default catches all)
    # WHEN / THEN it matches no key
    assert not Profile(name="p").matches("photos/a.jpg")


def test_the_first_matching_profile_wins_then_the_default_then_none() -> None:
    # GIVEN two overlapping profiles and a default
    specific = Profile(name="specific", match_prefixes=("inbox/photos/",))
    broad = Profile(name="broad", match_prefixes=("inbox/",))
    default = Profile(name=DEFAULT_PROFILE_NAME)
    profiles = ProfileSet(profiles=(specific, broad), default=default)
    # WHEN / THEN the first in file order wins, the default catches the rest
    assert profiles.for_key("inbox/photos/a.jpg") is specific
    assert profiles.for_key("inbox/scan.png") is broad
    assert profiles.for_key("elsewhere.png") is default
    # AND without a default an unmatched key gets no profile (the object is skipped)
    assert replace(profiles, default=None).for_key("elsewhere.png") is None


def test_get_finds_profiles_by_name_and_the_default_by_its_name() -> None:
    # GIVEN a profile set with a default
    photos = Profile(name="photos", match_prefixes=("photos/",))
    default = Profile(name=DEFAULT_PROFILE_NAME)
    profiles = ProfileSet(profiles=(photos,), default=default)
    # WHEN / THEN names resolve, unknown names give None
    assert profiles.get("photos") is photos
    assert profiles.get("default") is default
    assert profiles.get("nope") is None
    assert ProfileSet(profiles=(photos,)).get("default") is None


# --- The bundled file -----------------------------------------------------------------------------------------


def test_the_bundled_file_loads_and_maps_the_sample_keys() -> None:
    # GIVEN the profiles file shipped with the function
    profiles = load_profiles_file(BUNDLED_PROFILES_FILE)
    # THEN it has the documented profiles and a caption default
    assert [p.name for p in profiles.profiles] == ["photos", "cms-de", "documents"]
    assert profiles.default is not None
    assert (profiles.default.name, profiles.default.task) == ("default", "caption")
    # AND sample keys get the profile the comments describe
    chosen = {
        key: profiles.for_key(key).name  # type: ignore[union-attr]
        for key in (
            "photos/sunset.JPG",
            "inbox/photos/holiday.jpg",
            "CMS/shoes/red.png",
            "inbox/Quarterly report (final) ü+1.png",
            "documents/invoice-7.pdf",
            "scans/page-1.tif",
            "logos/transparent logo.png",
        )
    }
    assert chosen == {
        "photos/sunset.JPG": "photos",
        "inbox/photos/holiday.jpg": "photos",  # photos comes before documents' inbox/
        "CMS/shoes/red.png": "cms-de",
        "inbox/Quarterly report (final) ü+1.png": "documents",
        "documents/invoice-7.pdf": "documents",
        "scans/page-1.tif": "documents",
        "logos/transparent logo.png": "default",
    }


def test_the_bundled_profiles_carry_their_settings() -> None:
    # GIVEN the bundled file
    profiles = load_profiles_file(Path(BUNDLED_PROFILES_FILE))
    cms, documents = profiles.get("cms-de"), profiles.get("documents")
    assert cms is not None and documents is not None
    # THEN the CMS profile writes German alt text and the document profile extracts invoice fields
    assert (cms.task, cms.language, cms.alt_text_max_chars) == ("alt_text", "de", 125)
    assert cms.instructions
    assert (documents.task, documents.detail) == ("document", "high")
    assert documents.fields is not None
    assert set(documents.fields["properties"]) == {"invoice_number", "total", "currency", "invoice_date"}
    assert strict_fields_schema(documents.fields)["required"] == list(documents.fields["properties"])


def test_the_example_of_the_issue_loads() -> None:
    # GIVEN the example file from the issue
    profiles = load(
        """
        version: 1
        profiles:
          - name: photos
            task: caption
            match: {prefixes: ["photos/", "uploads/images/"], suffixes: [".jpg", ".jpeg", ".png", ".webp", ".heic"]}
            detail: auto
          - name: cms-de
            task: alt_text
            language: de
            alt_text_max_chars: 125
            instructions: "Beschreibe Produkte sachlich, ohne Werbesprache."
            match: {prefixes: ["cms/"]}
          - name: invoices
            task: document
            detail: high
            match: {prefixes: ["documents/invoices/"], suffixes: [".pdf", ".png", ".jpg", ".tif", ".tiff"]}
            fields:
              type: object
              properties:
                invoice_number: {type: string, description: "The invoice number as printed"}
                total: {type: number, description: "Grand total including tax"}
                currency: {type: string}
                invoice_date: {type: string, format: date}
                due_date: {type: string, format: date}
        default:
          task: caption
        """
    )
    # THEN every profile is there, in file order, with its rules
    assert [p.name for p in profiles.profiles] == ["photos", "cms-de", "invoices"]
    assert profiles.for_key("uploads/images/A.HEIC").name == "photos"  # type: ignore[union-attr]
    assert profiles.for_key("documents/invoices/x.txt").name == "default"  # type: ignore[union-attr]


def test_a_file_with_only_a_default_or_only_profiles_loads() -> None:
    # GIVEN the two minimal files
    only_default = load("default: {}\n")
    only_profiles = load("profiles:\n  - name: a\n    match: {suffixes: [.png]}\n")
    # THEN an empty default has every default value, and without a default unmatched keys are skipped
    assert only_default.default == Profile(name="default")
    assert only_profiles.default is None
    assert only_profiles.for_key("a.jpg") is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("pt-br", "pt-BR"),
        ("zh-hant", "zh-Hant"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
    ],
)
def test_language_tags_are_normalised(raw: str, normal: str) -> None:
    # GIVEN a language tag in any case  WHEN it is read from the file  THEN it is stored in its usual case
    assert normalize_language(raw) == normal
    assert load(f"default: {{language: {raw}}}\n").default.language == normal  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", ["deutsch", "e", "en_US", "en-", "", "de-x", "12"])
def test_text_that_is_not_a_language_tag_is_not_normalised(raw: str) -> None:
    assert normalize_language(raw) is None


# --- Validation errors: every one names the line and the field -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """
            profiles:
              - name: photos
                langauge: de
                match: {prefixes: [photos/]}
            """,
            ["line 3,", "profiles[0] (photos) field 'langauge'", "did you mean 'language'?"],
            id="unknown key with a suggestion",
        ),
        pytest.param(
            "profles: []\ndefault: {}\n",
            ["line 1,", "field 'profles'", "did you mean 'profiles'?"],
            id="unknown top-level key",
        ),
        pytest.param(
            """
            default:
              task: caption
              colour: red
            """,
            ["line 3,", "default field 'colour'", "unknown field; known fields: task, language"],
            id="unknown key without a close match",
        ),
        pytest.param(
            """
            profiles:
              - name: photos
                match: {prefixes: [photos/], sufixes: [.jpg]}
            """,
            ["line 3,", "field 'match.sufixes'", "did you mean 'suffixes'?"],
            id="unknown key inside match",
        ),
        pytest.param(
            """
            profiles:
              - name: photos
                match: {prefixes: [photos/]}
                task: describe
            """,
            [
                "line 4,",
                "profiles[0] (photos) field 'task'",
                "'describe' is not a task: one of caption, alt_text, document",
            ],
            id="bad task",
        ),
        pytest.param(
            """
            profiles:
              - name: photos
                match: {prefixes: [photos/]}
              - name: cms-de
                task: alt_text
                language: deutsch
                match: {prefixes: [cms/]}
            """,
            ["line 6,", "profiles[1] (cms-de) field 'language'", "'deutsch' is not a BCP 47 language tag"],
            id="bad language",
        ),
        pytest.param(
            "default:\n  language: no\n",
            ["line 2,", "default field 'language'", "YAML read the unquoted no as a boolean; quote it"],
            id="language read as a boolean",
        ),
        pytest.param(
            "default: {detail: ultra}\n",
            ["line 1,", "default field 'detail'", "one of low, high, auto"],
            id="bad detail",
        ),
        pytest.param(
            "default:\n  alt_text_max_chars: 5000\n",
            ["line 2,", "field 'alt_text_max_chars'", "5000 is outside 20..1000"],
            id="alt text limit out of range",
        ),
        pytest.param(
            "default:\n  alt_text_max_chars: '125'\n",
            ["line 2,", "field 'alt_text_max_chars'", "must be a whole number from 20 to 1000, not a string"],
            id="alt text limit not a number",
        ),
        pytest.param(
            "default:\n  instructions: " + "x" * 2001 + "\n",
            ["line 2,", "field 'instructions'", "2,001 characters, above the limit of 2,000"],
            id="instructions too long",
        ),
        pytest.param(
            "default:\n  model: '  '\n",
            ["line 2,", "field 'model'", "not empty"],
            id="empty model",
        ),
        pytest.param(
            """
            profiles:
              - name: photos
                match: {prefixes: [photos/]}
                fields:
                  type: object
                  properties: {title: {type: string}}
            """,
            ["line 4,", "profiles[0] (photos) field 'fields'", "only a 'document' profile extracts fields"],
            id="fields on a caption profile",
        ),
        pytest.param(
            """
            profiles:
              - name: photos
                match: {prefixes: [photos/]}
              - name: photos
                match: {prefixes: [other/]}
            """,
            ["line 4,", "profiles[1] (photos) field 'name'", "already the name of the profile at line 2"],
            id="duplicate names",
        ),
        pytest.param(
            """
            profiles:
              - name: default
                match: {prefixes: [x/]}
            """,
            ["line 2,", "field 'name'", "'default' is reserved"],
            id="the reserved name",
        ),
        pytest.param(
            """
            profiles:
              - match: {prefixes: [x/]}
            """,
            ["line 2,", "profiles[0] field 'name'", "missing"],
            id="profile without a name",
        ),
        pytest.param(
            """
            profiles:
              - name: everything
                task: caption
            """,
            ["line 2,", "profiles[0] (everything) field 'match'", "missing", "'default'"],
            id="profile without a match",
        ),
        pytest.param(
            """
            profiles:
              - name: everything
                match: {prefixes: []}
            """,
            ["line 3,", "field 'match'", "needs prefixes and/or suffixes"],
            id="profile with an empty match",
        ),
        pytest.param(
            """
            profiles:
              - name: everything
                match:
                  prefixes: ["photos/", ""]
            """,
            ["line 4,", "field 'match.prefixes[1]'", "would match every key"],
            id="an empty prefix",
        ),
        pytest.param(
            """
            profiles:
              - name: photos
                match: {prefixes: photos/}
            """,
            ["line 3,", "field 'match.prefixes'", "must be a list of strings"],
            id="prefixes not a list",
        ),
        pytest.param(
            "default:\n  match: {prefixes: [x/]}\n",
            ["line 2,", "default field 'match'", "the default has no name or match"],
            id="a match on the default",
        ),
        pytest.param("- photos\n- documents\n", ["line 1:", "must be a mapping", "not a list"], id="not a mapping"),
        pytest.param(
            "profiles:\n  - photos\ndefault: {}\n",
            ["line 2,", "profiles[0]:", "must be a mapping (a profile), not a string"],
            id="a profile that is not a mapping",
        ),
        pytest.param("default: null\n", ["line 1, default: must be a mapping"], id="default null"),
        pytest.param(
            "version: 2\ndefault: {}\n", ["line 1,", "field 'version'", "unsupported version 2"], id="version"
        ),
        pytest.param("", ["line 1:", "the file is empty"], id="empty file"),
        pytest.param("# only a comment\n", ["line 1:", "the file is empty"], id="only comments"),
        pytest.param("version: 1\n", ["line 1:", "no profiles and no default"], id="neither profiles nor default"),
        pytest.param(
            "default:\n  task: caption\n  task: document\n",
            ["line 3:", "duplicate key 'task' (first at line 2)"],
            id="duplicate key",
        ),
        pytest.param(
            "profiles:\n  - name: a\n    match: {prefixes: [a/]\ndefault: {}\n",
            ["line 4, column 1: YAML syntax error"],
            id="YAML syntax error",
        ),
        pytest.param(
            "default: !!python/object/apply:os.getcwd []\n",
            ["line 1:", "the tag '!!python/object/apply:os.getcwd' is not allowed"],
            id="python tag",
        ),
        pytest.param("default: !!binary aGVsbG8=\n", ["line 1:", "'!!binary' is not allowed"], id="binary tag"),
        pytest.param("a: &x [*x]\n", ["line 1:", "recursive alias"], id="recursive alias"),
        pytest.param("default: {}\nx: \x1f\n", ["line 2:", "character 0x001f is not allowed"], id="control character"),
        pytest.param("default: {}\n---\ndefault: {}\n", ["line 2,", "expected a single document"], id="two documents"),
    ],
)
def test_an_invalid_file_is_refused_naming_the_line_and_the_field(text: str, expected: list[str]) -> None:
    # GIVEN an invalid profiles file
    # WHEN it is loaded
    message = refused(text)
    # THEN the error is a settings error naming the file, the line and the field
    assert message.startswith("profiles.yaml line ")
    for part in expected:
        assert part in message, message


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    text=st.text(max_size=200)
    | st.lists(
        st.sampled_from(["default:", " task:", "- ", "{", "[", "&a", "*a", ": ", "\n", "  ", "!!", "caption", "'"]),
        max_size=30,
    ).map("".join)
)
def test_any_text_loads_or_fails_as_a_profiles_error(text: str) -> None:
    # GIVEN any text  WHEN it is loaded  THEN it is a profile set or a ProfilesError that names a line
    try:
        load_profiles(text)
    except ProfilesError as exc:
        assert "line " in str(exc)


def test_a_profiles_error_is_a_settings_error() -> None:
    # GIVEN an invalid file  WHEN it is loaded  THEN the cold start fails as misconfiguration
    with pytest.raises(SettingsError):
        load_profiles("[]")


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    # GIVEN a file with three mistakes
    text = """
        profiles:
          - name: photos
            tsak: caption
            match: {prefixes: [photos/]}
          - name: cms
            language: deutsch
            match: {prefixes: [cms/]}
        default:
          detail: ultra
        """
    # WHEN it is loaded
    with pytest.raises(ProfilesError) as caught:
        load(text)
    # THEN each mistake has its own line, in the order of the file
    errors = caught.value.errors
    assert len(errors) == 3
    assert [e.split(",")[0] for e in errors] == ["profiles.yaml line 3", "profiles.yaml line 6", "profiles.yaml line 9"]
    assert str(caught.value) == "\n".join(errors)


def test_a_python_tag_is_never_constructed(tmp_path: Path) -> None:
    # GIVEN a file whose tag would run a command under an unsafe loader
    marker = tmp_path / "ran"
    text = f"default: !!python/object/apply:os.system ['touch {marker}']\n"
    # WHEN it is loaded  THEN it is refused and nothing ran
    with pytest.raises(ProfilesError, match="not allowed"):
        load_profiles(text)
    assert not marker.exists()


def test_a_missing_or_unreadable_file_names_its_path(tmp_path: Path) -> None:
    # GIVEN a path with no file, and a file that is not UTF-8
    missing = tmp_path / "nope.yaml"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    # WHEN they are loaded  THEN the error names the path
    with pytest.raises(ProfilesError, match=r"nope\.yaml: not found"):
        load_profiles_file(missing)
    with pytest.raises(ProfilesError, match=r"binary\.yaml: not UTF-8"):
        load_profiles_file(str(binary))
    with pytest.raises(ProfilesError, match="cannot be read"):
        load_profiles_file(tmp_path)  # a directory


def test_errors_in_a_file_name_that_file(tmp_path: Path) -> None:
    # GIVEN an invalid file on disk
    path = tmp_path / "custom.yaml"
    path.write_text("default:\n  task: poem\n", encoding="utf-8")
    # WHEN it is loaded  THEN its path starts the error
    with pytest.raises(ProfilesError, match=rf"^{path} line 2, default field 'task'"):
        load_profiles_file(path)


def document_profile(fields: str) -> str:
    body = textwrap.indent(textwrap.dedent(fields).strip("\n"), " " * 6)
    return f"profiles:\n  - name: invoices\n    task: document\n    match: {{prefixes: [inv/]}}\n    fields:\n{body}\n"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            "type: object\nproperties:\n  total: {type: money}\n",
            ["line 8,", "field 'fields.properties.total.type'", "'money' is not a field type"],
            id="unknown type",
        ),
        pytest.param(
            "type: object\nproperties:\n  total: {type: [number, 'null']}\n",
            ["line 8,", "fields.properties.total.type", "nullable already"],
            id="nullable declared",
        ),
        pytest.param(
            "type: object\nproperties:\n  address: {type: object}\n",
            ["line 8,", "fields.properties.address.type", "'object' is not a field type"],
            id="nested object",
        ),
        pytest.param(
            "type: object\nproperties:\n  invoice-number: {type: string}\n",
            ["line 8,", "fields.properties.invoice-number", "must match"],
            id="property name",
        ),
        pytest.param(
            "type: object\nproperties:\n  due: {type: string, format: dat}\n",
            ["line 8,", "fields.properties.due.format", "did you mean 'date'?"],
            id="format typo",
        ),
        pytest.param(
            "type: object\nproperties:\n  total: {type: number, format: date}\n",
            ["line 8,", "fields.properties.total.format", "only a string property has a format"],
            id="format on a number",
        ),
        pytest.param(
            "type: object\nproperties:\n  code: {type: string, pattern: '[a-'}\n",
            ["line 8,", "fields.properties.code.pattern", "not a regular expression"],
            id="bad pattern",
        ),
        pytest.param(
            "type: object\nproperties:\n  total: {type: number, minimum: 10, maximum: 1}\n",
            ["line 8,", "fields.properties.total.minimum", "above maximum"],
            id="bounds reversed",
        ),
        pytest.param(
            "type: object\nproperties:\n  paid:\n    type: string\n    enum: [yes, no]\n",
            ["line 10,", "fields.properties.paid.enum[0]", "quote it"],
            id="enum of the wrong type",
        ),
        pytest.param(
            "type: object\nproperties:\n  total: {type: number, descripton: x}\n",
            ["line 8,", "fields.properties.total.descripton", "did you mean 'description'?"],
            id="typo in a property",
        ),
        pytest.param(
            "type: object\nproperties:\n  tags: {type: array}\n",
            ["line 8,", "fields.properties.tags.items", "needs items"],
            id="array without items",
        ),
        pytest.param(
            "type: object\nproperties:\n  tags: {type: array, items: {type: array}}\n",
            ["line 8,", "fields.properties.tags.items.type", "one of string, number, integer, boolean"],
            id="array of arrays",
        ),
        pytest.param(
            "type: array\nitems: {type: string}\n",
            ["line 6,", "field 'fields.type'", "must be 'object'", "field 'fields.items'"],
            id="not an object schema",
        ),
        pytest.param(
            "type: object\n",
            ["line 5,", "field 'fields.properties'", "at least one property"],
            id="no properties",
        ),
        pytest.param(
            "type: object\nproperties:\n  a: {type: string}\nrequired: [b]\n",
            ["line 9,", "field 'fields.required[0]'", "'b' is not one of the properties"],
            id="required names an unknown property",
        ),
        pytest.param(
            "type: object\nadditionalProperties: true\nproperties:\n  a: {type: string}\n",
            ["line 7,", "field 'fields.additionalProperties'", "may only be false"],
            id="additional properties",
        ),
        pytest.param(
            "type: object\nproperties:\n  due: {type: string, enum: [2026-01-01]}\n",
            ["line 8,", "fields.properties.due.enum[0]", "a date is not a JSON value", 'quote it: "2026-01-01"'],
            id="a YAML date",
        ),
        pytest.param(
            "type: object\nproperties:\n" + "".join(f"  f{i}: {{type: string}}\n" for i in range(51)),
            ["line 7,", "field 'fields.properties'", "51 properties, above the limit of 50"],
            id="too many properties",
        ),
    ],
)
def test_a_bad_fields_schema_is_refused_naming_the_property(fields: str, expected: list[str]) -> None:
    # GIVEN a document profile whose fields schema cannot be turned into a strict structured output
    # WHEN the file is loaded
    with pytest.raises(ProfilesError) as caught:
        load_profiles(document_profile(fields))
    # THEN the error names the line and the offending property
    message = str(caught.value)
    assert "profiles[0] (invoices)" in message
    for part in expected:
        assert part in message, message


def test_a_schema_the_meta_schema_refuses_is_refused() -> None:
    # GIVEN a property whose minimum is not a number (the restricted check and the meta-schema both see it)
    text = document_profile("type: object\nproperties:\n  total: {type: number, minimum: low}\n")
    # WHEN / THEN it is refused naming the property
    with pytest.raises(ProfilesError, match=r"line 8, .*fields\.properties\.total\.minimum'"):
        load_profiles(text)


def test_a_valid_fields_schema_is_kept_as_written() -> None:
    # GIVEN a document profile with every supported keyword
    text = document_profile(
        """
        type: object
        description: Invoice header
        required: [total]
        additionalProperties: false
        properties:
          number: {type: string, description: As printed, pattern: '^[A-Z0-9-]+$'}
          total: {type: number, minimum: 0, maximum: 1000000}
          count: {type: integer, enum: [1, 2, 3]}
          paid: {type: boolean}
          due: {type: string, format: date}
          at: {type: string, format: date-time}
          tags: {type: array, description: Labels, items: {type: string, enum: [a, b]}}
        """
    )
    # WHEN it is loaded
    profile = load_profiles(text).get("invoices")
    # THEN the schema is the file's, unchanged
    assert profile is not None and profile.fields is not None
    assert profile.fields["properties"]["total"] == {"type": "number", "minimum": 0, "maximum": 1000000}
    assert list(profile.fields["properties"]) == ["number", "total", "count", "paid", "due", "at", "tags"]


# --- strict_fields_schema -------------------------------------------------------------------------------------------


def test_the_strict_schema_requires_every_property_and_makes_each_nullable() -> None:
    # GIVEN a profile's fields schema
    # WHEN it is turned into a strict structured-output schema
    strict = strict_fields_schema(INVOICE_FIELDS)
    # THEN every property is required, nullable, and nothing else is allowed
    assert strict["type"] == "object"
    assert strict["additionalProperties"] is False
    assert strict["required"] == list(INVOICE_FIELDS["properties"])
    props = strict["properties"]
    assert props["invoice_number"] == {"type": ["string", "null"], "description": "The invoice number as printed"}
    assert props["quantity"] == {"type": ["integer", "null"]}
    assert props["paid"] == {"type": ["boolean", "null"]}
    # AND arrays are nullable with plain items
    assert props["lines"] == {"type": ["array", "null"], "description": "Each line item", "items": {"type": "string"}}
    # AND an enum accepts null too
    assert props["currency"] == {"type": ["string", "null"], "enum": ["EUR", "USD", None]}


def test_the_strict_schema_drops_what_strict_mode_rejects_but_keeps_it_in_the_profile() -> None:
    # GIVEN fields with a format, a pattern and bounds
    # WHEN the strict schema is built
    strict = strict_fields_schema(INVOICE_FIELDS)
    # THEN format, pattern, minimum and maximum are gone from it
    for prop in strict["properties"].values():
        assert not {"format", "pattern", "minimum", "maximum"} & set(prop)
    assert strict["properties"]["total"] == {"type": ["number", "null"], "description": "Grand total including tax"}
    # AND the model is told the date format in words instead
    assert strict["properties"]["invoice_date"] == {"type": ["string", "null"], "description": "A date as YYYY-MM-DD"}
    # AND the profile's own schema is untouched, for validate_fields
    assert INVOICE_FIELDS["properties"]["invoice_date"] == {"type": "string", "format": "date"}
    assert INVOICE_FIELDS["properties"]["total"]["minimum"] == 0


def test_a_format_hint_follows_the_description() -> None:
    schema = {"type": "object", "properties": {"due": {"type": "string", "format": "date", "description": "Due date"}}}
    assert strict_fields_schema(schema)["properties"]["due"]["description"] == "Due date (a date as YYYY-MM-DD)"


# --- validate_fields ------------------------------------------------------------------------------------------------


def test_a_valid_answer_is_kept_without_adjustments() -> None:
    # GIVEN an answer that fits the schema
    answer = {
        "invoice_number": "INV-7",
        "total": 12.5,
        "quantity": 3,
        "paid": False,
        "currency": "EUR",
        "invoice_date": "2026-12-31",
        "lines": ["1 × widget"],
    }
    # WHEN it is validated  THEN it is returned as is
    assert validate_fields(INVOICE_FIELDS, answer) == (answer, [])


def test_missing_fields_are_null_and_never_invented() -> None:
    # GIVEN an answer with only one field
    fields, notes = validate_fields(INVOICE_FIELDS, {"total": 10})
    # THEN every declared property is present, the missing ones null, and each is noted
    assert fields == dict.fromkeys(INVOICE_FIELDS["properties"]) | {"total": 10}
    assert "fields.invoice_number: missing (set to null)" in notes
    # AND an explicit null is no adjustment
    assert validate_fields(INVOICE_FIELDS, dict.fromkeys(INVOICE_FIELDS["properties"]))[1] == []


def test_a_value_of_the_wrong_type_is_refused_and_reported() -> None:
    # GIVEN a total in words
    fields, notes = validate_fields(INVOICE_FIELDS, {"total": "twelve"})
    # THEN it is null, with the reason
    assert fields["total"] is None
    assert "fields.total: 'twelve' is not of type 'number' (set to null)" in notes


def test_a_date_in_another_format_is_refused() -> None:
    fields, notes = validate_fields(INVOICE_FIELDS, {"invoice_date": "31/12/2026"})
    assert fields["invoice_date"] is None
    assert "fields.invoice_date: '31/12/2026' is not a 'date' (set to null)" in notes
    # AND an impossible date is refused too
    assert validate_fields(INVOICE_FIELDS, {"invoice_date": "2026-02-30"})[0]["invoice_date"] is None


def test_bounds_patterns_and_enums_of_the_profile_are_applied() -> None:
    fields, notes = validate_fields(INVOICE_FIELDS, {"total": -5, "currency": "eur"})
    assert fields["total"] is None and fields["currency"] is None
    assert "fields.total: -5 is less than the minimum of 0 (set to null)" in notes
    assert any(note.startswith("fields.currency: 'eur' is not one of") for note in notes)


def test_numeric_strings_are_read_as_numbers() -> None:
    # GIVEN numbers written as strings
    fields, notes = validate_fields(INVOICE_FIELDS, {"total": "12.50", "quantity": "3"})
    # THEN they are read, and the reading is noted
    assert fields["total"] == 12.5
    assert fields["quantity"] == 3 and isinstance(fields["quantity"], int)
    assert 'fields.total: "12.50" read as a number' in notes
    # AND text that is not plainly a number is not guessed at
    assert validate_fields(INVOICE_FIELDS, {"total": "1,234.50"})[0]["total"] is None
    assert validate_fields(INVOICE_FIELDS, {"total": "1e999"})[0]["total"] is None


def test_a_whole_float_for_an_integer_becomes_an_integer_and_non_finite_numbers_are_refused() -> None:
    assert validate_fields(INVOICE_FIELDS, {"quantity": 3.0})[0]["quantity"] == 3
    fields, notes = validate_fields(INVOICE_FIELDS, {"total": math.nan})
    assert fields["total"] is None
    assert "fields.total: nan is not a finite number (set to null)" in notes


def test_unknown_properties_are_dropped() -> None:
    fields, notes = validate_fields(INVOICE_FIELDS, {"total": 1, "foo": "bar"})
    assert "foo" not in fields
    assert "fields: unknown property 'foo' dropped" in notes


@pytest.mark.parametrize("value", [None, "INV-7", ["a"], 3, True])
def test_an_answer_that_is_not_an_object_gives_every_field_null(value: Any) -> None:
    fields, notes = validate_fields(INVOICE_FIELDS, value)
    assert fields == dict.fromkeys(INVOICE_FIELDS["properties"])
    assert len(notes) == 1 and notes[0].startswith("fields: ") and "every field set to null" in notes[0]


def test_long_strings_and_long_arrays_are_cut() -> None:
    fields, notes = validate_fields(INVOICE_FIELDS, {"invoice_number": "9" * 5000, "lines": ["x" * 2000] * 150})
    assert fields["invoice_number"] == "9" * 1000
    assert "fields.invoice_number: 5,000 characters, cut to 1,000" in notes
    assert len(fields["lines"]) == 100 and all(len(line) == 1000 for line in fields["lines"])
    assert "fields.lines: 150 items, cut to 100" in notes


def test_an_array_with_a_bad_item_is_null() -> None:
    fields, notes = validate_fields(INVOICE_FIELDS, {"lines": ["ok", 3]})
    assert fields["lines"] is None
    assert "fields.lines[1]: 3 is not of type 'string' (set to null)" in notes


def test_the_adjustment_for_a_huge_wrong_value_stays_short() -> None:
    _, notes = validate_fields(INVOICE_FIELDS, {"paid": ["x" * 10_000]})
    assert all(len(note) < 400 for note in notes)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=1200),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)
answers = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from([*INVOICE_FIELDS["properties"], "extra"]), json_values, max_size=9),
    st.dictionaries(
        st.sampled_from(list(INVOICE_FIELDS["properties"])), st.from_regex(r"[-+ ]?\d{0,5}(\.\d*)?", fullmatch=True)
    ),
    st.builds(object),
    st.binary(),
    st.dictionaries(st.integers() | st.none(), st.integers(), max_size=3),
)


@settings(
    max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(value=answers)
def test_validate_fields_never_raises_and_returns_every_declared_property(value: Any) -> None:
    # GIVEN any answer at all  WHEN it is validated
    fields, notes = validate_fields(INVOICE_FIELDS, value)
    # THEN every declared property is there, each value fits its declared type or is null
    assert list(fields) == list(INVOICE_FIELDS["properties"])
    assert all(isinstance(note, str) for note in notes)
    for name, schema in INVOICE_FIELDS["properties"].items():
        result = fields[name]
        if result is None:
            continue
        kind = schema["type"]
        if kind == "string":
            assert isinstance(result, str) and len(result) <= 1000
        elif kind == "array":
            assert isinstance(result, list) and len(result) <= 100
        elif kind == "boolean":
            assert isinstance(result, bool)
        else:
            assert isinstance(result, int | float) and not isinstance(result, bool) and math.isfinite(result)


# --- fingerprint: what the content cache keys on (DescribeOptions, built from a profile) -------------------------


BASE = Profile(name="docs", task="document", fields=INVOICE_FIELDS, match_prefixes=("docs/",))
SETTINGS = Settings(results_table="t", results_topic_arn="arn:t")


def fingerprint(profile: Profile, **overrides: Any) -> str:
    return DescribeOptions.for_profile(profile, SETTINGS, **overrides).fingerprint


def test_the_fingerprint_is_short_and_stable() -> None:
    assert len(fingerprint(BASE).rsplit("|", 1)[1]) == 16
    assert fingerprint(BASE) == fingerprint(Profile(**{**BASE.__dict__}))
    assert int(fingerprint(BASE).rsplit("|", 1)[1], 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"language": "de"},
        {"instructions": "Be terse."},
        {"fields": {**INVOICE_FIELDS, "properties": {"total": {"type": "number"}}}},
        {"task": "caption", "fields": None},
        {"detail": "high"},
        {"alt_text_max_chars": 80},
        {"model": "other/model"},
    ],
)
def test_the_fingerprint_changes_with_what_changes_the_answer(change: dict[str, Any]) -> None:
    assert fingerprint(replace(BASE, **change)) != fingerprint(BASE)


def test_the_fingerprint_changes_with_the_objects_own_language_and_context() -> None:
    assert fingerprint(BASE, language="de") != fingerprint(BASE)
    assert fingerprint(BASE, context="Careers page") != fingerprint(BASE)


@pytest.mark.parametrize(
    "change",
    [{"name": "renamed"}, {"match_prefixes": ("other/",)}, {"match_suffixes": (".pdf",)}],
)
def test_the_fingerprint_ignores_the_name_and_the_match_rules(change: dict[str, Any]) -> None:
    assert fingerprint(replace(BASE, **change)) == fingerprint(BASE)
