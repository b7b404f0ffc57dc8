"""Reading a page request's answer: entries matched to the requested pages by number, never guessed; skipped and
merged pages reported; as tolerant as the image reader about where the JSON is, and as strict about bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sightline.answers import (
    AnswerRules,
    DocumentSummary,
    PageAnswer,
    PagesAnswer,
    read_pages_answer,
    read_summary_answer,
)
from sightline.errors import EmptyModelAnswerError, InvalidModelOutputError, ModelRefusedError
from sightline.text import utf8_size

pytestmark = pytest.mark.unit

RULES = AnswerRules(task="document")
PAGE_7: dict[str, Any] = {
    "page": 7,
    "description": "The first page of an invoice from ACME.",
    "text": "ACME GmbH\nInvoice 2024-117",
}
PAGE_8: dict[str, Any] = {
    "page": 8,
    "description": "The invoice's second page, its totals.",
    "text": "Total | 119.00 EUR",
}


def read(document: Any, numbers: tuple[int, ...] = (7, 8), **rules: Any) -> PagesAnswer:
    content = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    return read_pages_answer(content, numbers, rules=AnswerRules(task="document", **rules))


def texts(answer: PagesAnswer) -> dict[int, str]:
    return {number: page.text for number, page in answer.pages.items()}


# --- The expected answer.


def test_a_good_answer_gives_every_page_in_the_requested_order_without_adjustments() -> None:
    # GIVEN both pages, answered in reverse order
    # WHEN the answer is read
    answer = read({"pages": [PAGE_8, PAGE_7]})
    # THEN both are there, keyed and ordered as requested, and nothing had to be fixed
    assert list(answer.pages) == [7, 8]
    assert answer.pages[7] == PageAnswer(7, PAGE_7["description"], PAGE_7["text"], False)
    assert answer.pages[8].text == "Total | 119.00 EUR"
    assert (answer.missing, answer.merged, answer.adjustments) == ((), (), ())


def test_a_blank_page_with_empty_strings_is_a_valid_page() -> None:
    # GIVEN page 8 answered as blank, with an empty description too
    answer = read({"pages": [PAGE_7, {"page": 8, "description": "", "text": ""}]})
    # THEN it is answered, with no text, and not missing
    assert answer.pages[8] == PageAnswer(8, "", "", False)
    assert answer.missing == ()


def test_a_single_page_request_is_read() -> None:
    answer = read({"pages": [{**PAGE_7, "page": 9}]}, numbers=(9,))
    assert texts(answer) == {9: PAGE_7["text"]}
    assert answer.missing == ()


# --- Skipped, merged, duplicated and unknown pages.


def test_a_skipped_page_is_missing() -> None:
    # GIVEN an answer for page 7 only
    answer = read({"pages": [PAGE_7]})
    # THEN page 8 is missing, not invented
    assert list(answer.pages) == [7]
    assert answer.missing == (8,)
    assert answer.merged == ()


@pytest.mark.parametrize("page", ["7-8", "7–8", "7 — 8", "7, 8", "7 and 8", [7, 8], ["7", "8"], "pages 7-8"])
def test_a_merged_entry_gives_its_text_to_the_first_page_and_reports_the_others(page: Any) -> None:
    # GIVEN one entry for both pages, its number a range or a list
    merged_text = "ACME GmbH\nInvoice 2024-117\nTotal | 119.00 EUR"
    answer = read({"pages": [{"page": page, "description": "An invoice.", "text": merged_text}]})
    # THEN the first page holds the text, the second is merged (not missing), and it is said
    assert texts(answer) == {7: merged_text}
    assert answer.merged == (8,)
    assert answer.missing == ()
    assert any("merged" in note for note in answer.adjustments)


def test_a_merged_entry_that_also_covers_an_unrequested_page_notes_it() -> None:
    answer = read({"pages": [{"page": "7-9", "description": "An invoice.", "text": "all of it"}]})
    assert texts(answer) == {7: "all of it"}
    assert answer.merged == (8,)
    assert any("not asked for" in note and "9" in note for note in answer.adjustments)


def test_a_second_entry_for_the_same_page_is_ignored_and_noted() -> None:
    # GIVEN page 7 twice
    second = {**PAGE_7, "text": "a second try"}
    answer = read({"pages": [PAGE_7, second, PAGE_8]})
    # THEN the first one is kept and the duplicate is said
    assert answer.pages[7].text == PAGE_7["text"]
    assert any("page 7: a second entry ignored" in note for note in answer.adjustments)


def test_an_entry_for_a_page_already_merged_is_a_duplicate() -> None:
    # GIVEN "7-8" and then an entry for 8
    answer = read({"pages": [{**PAGE_7, "page": "7-8"}, PAGE_8]})
    # THEN 8 stays merged (its text is in 7's), and the later entry is said to be ignored
    assert list(answer.pages) == [7]
    assert answer.merged == (8,)
    assert any("page 8: a second entry ignored" in note for note in answer.adjustments)


def test_entries_for_pages_not_asked_for_are_ignored_and_noted() -> None:
    answer = read({"pages": [PAGE_7, PAGE_8, {**PAGE_8, "page": 9}]})
    assert list(answer.pages) == [7, 8]
    assert any("not asked for" in note and "9" in note for note in answer.adjustments)


def test_an_answer_for_other_pages_only_is_invalid() -> None:
    # GIVEN a model that numbered the images 1 and 2 instead of 7 and 8: no guessing which is which
    with pytest.raises(InvalidModelOutputError, match=r"not the pages asked for \(7, 8\)"):
        read({"pages": [{**PAGE_7, "page": 1}, {**PAGE_8, "page": 2}]})


# --- Page numbers: given as strings, under other names, or not at all.


@pytest.mark.parametrize("number", ["7", " 7 ", "Page 7", "p. 7", 7.0])
def test_page_numbers_given_as_strings_or_floats_are_read(number: Any) -> None:
    answer = read({"pages": [{**PAGE_7, "page": number}, PAGE_8]})
    assert list(answer.pages) == [7, 8]
    assert answer.pages[7].text == PAGE_7["text"]


@pytest.mark.parametrize("key", ["page_number", "pageNumber", "PageNumber", "number", "page no"])
@pytest.mark.parametrize("text_key", ["transcription", "content", "ocr", "OCR_text", "text"])
def test_synonyms_of_the_page_and_text_keys_are_read(key: str, text_key: str) -> None:
    entries = [{key: n, "description": "A page.", text_key: f"text of {n}"} for n in (7, 8)]
    answer = read({"pages": entries})
    assert texts(answer) == {7: "text of 7", 8: "text of 8"}


def test_entries_without_page_numbers_are_matched_by_position_when_their_count_fits() -> None:
    # GIVEN two entries and no page numbers
    answer = read({"pages": [{"description": "A.", "text": "first"}, {"description": "B.", "text": "second"}]})
    # THEN the order of the images is used, and it is said
    assert texts(answer) == {7: "first", 8: "second"}
    assert any("by position" in note for note in answer.adjustments)


def test_one_unnumbered_entry_for_two_pages_is_not_guessed() -> None:
    with pytest.raises(InvalidModelOutputError, match="no page number"):
        read({"pages": [{"description": "An invoice.", "text": "everything"}]})


def test_a_single_unnumbered_object_answers_a_single_page_request() -> None:
    answer = read({"description": "A letter.", "text": "Dear Sir"}, numbers=(3,))
    assert texts(answer) == {3: "Dear Sir"}


def test_an_unreadable_page_number_makes_the_entry_unnumbered() -> None:
    # GIVEN one entry numbered "seven": it cannot be matched while the other is numbered
    answer = read({"pages": [{**PAGE_7, "page": "seven"}, PAGE_8]})
    assert list(answer.pages) == [8]
    assert answer.missing == (7,)
    assert any("not understood" in note for note in answer.adjustments)


def test_a_single_numbered_entry_for_a_two_page_request_is_matched_by_its_number() -> None:
    # GIVEN page 7's entry holding (perhaps) both pages' text: there is no way to know, so it is not split
    answer = read({"pages": [{**PAGE_7, "text": "page one text\npage two text"}]})
    assert texts(answer) == {7: "page one text\npage two text"}
    assert answer.missing == (8,)


# --- Where the JSON is.


@pytest.mark.parametrize(
    "document",
    [
        {"result": {"pages": [PAGE_7, PAGE_8]}},
        {"answer": {"data": {"pages": [PAGE_7, PAGE_8]}}},
        [PAGE_7, PAGE_8],
        [{"pages": [PAGE_7, PAGE_8]}],
        {"Pages": [PAGE_7, PAGE_8]},
        {"pages": {"7": PAGE_7, "8": PAGE_8}},
        {"7": PAGE_7, "8": PAGE_8},
    ],
)
def test_wrapped_and_reshaped_answers_are_read(document: Any) -> None:
    answer = read(document)
    assert texts(answer) == {7: PAGE_7["text"], 8: PAGE_8["text"]}


def test_pages_keyed_by_number_with_bare_texts_are_read() -> None:
    answer = read({"pages": {"7": "seven", "8": "eight"}})
    assert texts(answer) == {7: "seven", 8: "eight"}
    assert any("keyed by page number" in note for note in answer.adjustments)


@pytest.mark.parametrize("tag", ["think", "reasoning"])
def test_a_draft_inside_a_reasoning_block_is_never_chosen(tag: str) -> None:
    # GIVEN reasoning with a complete draft, then the real answer
    draft = json.dumps({"pages": [{**PAGE_7, "text": "DRAFT"}, {**PAGE_8, "text": "DRAFT"}]})
    real = json.dumps({"pages": [PAGE_7, PAGE_8]})
    answer = read(f"<{tag}>Let me look.\n{draft}\nok</{tag}>\n{real}")
    assert texts(answer) == {7: PAGE_7["text"], 8: PAGE_8["text"]}


def test_an_answer_with_only_reasoning_is_invalid() -> None:
    with pytest.raises(InvalidModelOutputError, match="only its reasoning"):
        read(f"<think>{json.dumps({'pages': [PAGE_7, PAGE_8]})}</think>")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: f"```json\n{s}\n```",
        lambda s: f"Here are the pages:\n```\n{s}\n```\nAnything else?",
        lambda s: f'Example: {{"pages": [{{"page": 7, "description": "...", "text": "..."}}]}}\n{s}',
    ],
)
def test_fenced_and_prose_wrapped_answers_are_read(wrap: Any) -> None:
    answer = read(wrap(json.dumps({"pages": [PAGE_7, PAGE_8]})))
    assert texts(answer) == {7: PAGE_7["text"], 8: PAGE_8["text"]}
    assert answer.adjustments == ()


def test_one_object_per_page_one_after_the_other_is_read() -> None:
    # GIVEN JSON lines: one object per page, not a list
    answer = read(f"{json.dumps(PAGE_7)}\n{json.dumps(PAGE_8)}")
    assert texts(answer) == {7: PAGE_7["text"], 8: PAGE_8["text"]}
    assert any("separate JSON objects" in note for note in answer.adjustments)


def test_an_echoed_example_alone_is_not_an_answer() -> None:
    with pytest.raises(InvalidModelOutputError):
        read(
            {
                "pages": [
                    {"page": 7, "description": "...", "text": "..."},
                    {"page": 8, "description": "...", "text": "..."},
                ]
            }
        )


def test_lenient_json_is_read_and_said() -> None:
    answer = read('{"pages": [{"page": 7, "description": "A.", "text": "line one\nline two"},]}', numbers=(7,))
    assert texts(answer) == {7: "line one\nline two"}
    assert "answer read as lenient JSON" in answer.adjustments


def test_the_answer_in_a_tool_call_is_read() -> None:
    answer = read_pages_answer("", [7, 8], rules=RULES, tool_arguments=[json.dumps({"pages": [PAGE_7, PAGE_8]})])
    assert list(answer.pages) == [7, 8]


# --- Refusals, empty answers, garbage.


def test_a_structured_refusal_is_a_refusal() -> None:
    with pytest.raises(ModelRefusedError):
        read_pages_answer(json.dumps({"pages": [PAGE_7]}), [7], rules=RULES, refusal="I can't help with that.")


def test_refusal_prose_is_a_refusal() -> None:
    with pytest.raises(ModelRefusedError):
        read("I'm sorry, but I can't help with transcribing this document.")


def test_a_refusal_inside_the_json_is_a_refusal() -> None:
    with pytest.raises(ModelRefusedError):
        read({"pages": [{"page": 7, "description": "I'm sorry, I can't help with that.", "text": ""}, PAGE_8]})


def test_a_refusal_given_as_the_text_of_an_undescribed_page_is_a_refusal() -> None:
    with pytest.raises(ModelRefusedError):
        read({"pages": [{"page": 7, "text": "Sorry, I cannot transcribe this page."}]}, numbers=(7,))


@pytest.mark.parametrize("content", ["", "   \n "])
def test_an_empty_answer_is_empty(content: str) -> None:
    with pytest.raises(EmptyModelAnswerError):
        read_pages_answer(content, [7, 8], rules=RULES)


@pytest.mark.parametrize(
    "content",
    [
        "The first page is an invoice.",
        "{not json at all",
        json.dumps({"pages": []}),
        json.dumps({"pages": "page 7 says hello"}),
        json.dumps({"foo": 1}),
        json.dumps([1, 2, 3]),
        json.dumps({"pages": [1, 2]}),
    ],
)
def test_garbage_is_invalid(content: str) -> None:
    with pytest.raises(InvalidModelOutputError):
        read_pages_answer(content, [7, 8], rules=RULES)


def test_an_entry_with_a_text_of_the_wrong_type_is_skipped_and_its_page_missing() -> None:
    answer = read({"pages": [{**PAGE_7, "text": {"lines": ["x"]}}, PAGE_8]})
    assert list(answer.pages) == [8]
    assert answer.missing == (7,)
    assert any("page 7: skipped" in note for note in answer.adjustments)


@pytest.mark.parametrize("numbers", [[], [0], [7, -1], ["7"], [True]])
def test_requested_numbers_must_be_positive_integers(numbers: list[Any]) -> None:
    with pytest.raises(ValueError, match="page numbers"):
        read_pages_answer(json.dumps({"pages": [PAGE_7]}), numbers, rules=RULES)


# --- Bounds.


def test_an_over_long_text_is_cut_by_bytes_and_flagged() -> None:
    # GIVEN a page of multi-byte text far over the bound, and a short page
    long_text = "Größe " * 100
    answer = read({"pages": [{**PAGE_7, "text": long_text}, PAGE_8]}, text_max_bytes=50)
    # THEN page 7 keeps at most 50 bytes (no split character) and says so; page 8 is untouched
    page = answer.pages[7]
    assert page.text_truncated
    assert 0 < utf8_size(page.text) <= 50
    assert long_text.startswith(page.text)
    assert not answer.pages[8].text_truncated
    assert any(note.startswith("page 7: text cut to 50 bytes") for note in answer.adjustments)


def test_a_page_text_longer_than_the_scanned_tail_does_not_hide_the_other_page() -> None:
    # GIVEN page 7's text longer than the tail searched first, so page 8's entry alone is in that tail
    answer = read({"pages": [{**PAGE_7, "text": "a" * 300_000}, PAGE_8]})
    # THEN the whole answer is read: both pages, page 7 cut to the bound
    assert list(answer.pages) == [7, 8]
    assert answer.pages[7].text == "a" * 100_000
    assert answer.pages[7].text_truncated
    assert answer.missing == ()


def test_a_long_description_is_bounded_in_bytes() -> None:
    description = "This page lists the invoice's items. " * 50
    answer = read({"pages": [{**PAGE_7, "description": description}, PAGE_8]}, description_max_bytes=100)
    assert 0 < utf8_size(answer.pages[7].description) <= 100


def test_a_text_given_as_a_list_of_lines_is_joined() -> None:
    answer = read({"pages": [{**PAGE_7, "text": ["line 1", "line 2"]}]}, numbers=(7,))
    assert answer.pages[7].text == "line 1\nline 2"


# --- The summary.

SUMMARY: dict[str, Any] = {
    "description": "An invoice from ACME GmbH to Example Ltd.",
    "alt_text": "Invoice 2024-117 from ACME",
    "tags": ["Invoice", "acme"],
}


def test_a_summary_is_read_without_a_text_key() -> None:
    summary = read_summary_answer(json.dumps(SUMMARY), rules=RULES)
    assert summary == DocumentSummary(
        description=SUMMARY["description"],
        alt_text="Invoice 2024-117 from ACME",
        tags=("invoice", "acme"),
        fields=None,
        adjustments=(),
    )


def test_a_summary_ignores_a_text_or_decorative_key_of_any_shape() -> None:
    # GIVEN an answer that also gives a "text" the image reader would refuse (an object)
    summary = read_summary_answer(json.dumps({**SUMMARY, "text": {"x": 1}, "decorative": True}), rules=RULES)
    # THEN it is read, and the alt text is not emptied as a decorative image's would be
    assert summary.alt_text == "Invoice 2024-117 from ACME"


def test_a_summary_keeps_the_fields_as_given() -> None:
    rules = AnswerRules(task="document", fields_schema={"type": "object", "properties": {"total": {"type": "number"}}})
    summary = read_summary_answer(f"```json\n{json.dumps({**SUMMARY, 'fields': {'total': 119.0}})}\n```", rules=rules)
    assert summary.fields == {"total": 119.0}


def test_a_summary_in_a_wrapper_after_reasoning_is_read() -> None:
    content = f"<think>{json.dumps({**SUMMARY, 'description': 'draft'})}</think>{json.dumps({'result': SUMMARY})}"
    assert read_summary_answer(content, rules=RULES).description == SUMMARY["description"]


def test_a_summary_without_a_description_is_invalid() -> None:
    with pytest.raises(InvalidModelOutputError, match="description"):
        read_summary_answer(json.dumps({"alt_text": "x", "tags": []}), rules=RULES)


def test_a_summary_refusal_and_an_empty_summary_are_errors() -> None:
    with pytest.raises(ModelRefusedError):
        read_summary_answer("I'm sorry, I can't help with that.", rules=RULES)
    with pytest.raises(EmptyModelAnswerError):
        read_summary_answer("", rules=RULES)
