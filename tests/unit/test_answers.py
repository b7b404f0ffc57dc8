"""Reading the model's answer: tolerant of how it is wrapped, strict about what it may contain, honest about fixes."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sightline.answers import FIELDS_MAX_BYTES, AnswerRules, ImageDescription, looks_like_refusal, read_answer
from sightline.errors import EmptyModelAnswerError, InvalidModelOutputError, ModelRefusedError
from sightline.text import storable, utf8_size

pytestmark = pytest.mark.unit

GOOD = {"description": "A red bicycle leans on a wall.", "alt_text": "Red bicycle", "text": "", "tags": ["bike"]}
DOMAIN_ERRORS = (InvalidModelOutputError, EmptyModelAnswerError, ModelRefusedError)


def read(document: Any, **rules: Any) -> ImageDescription:
    """The answer as the model would send it: one JSON object, non-ASCII characters as themselves."""
    return read_answer(json.dumps(document, ensure_ascii=False), rules=AnswerRules(**rules))


# --- Finding the answer in what the model wrote (ported from the old parser's tests, and more).


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: f"```json\n{s}\n```",
        lambda s: f"Here is the JSON you asked for:\n{s}\nHope this helps!",
        lambda s: f"```\n{s}\n```",
        lambda s: "{not json} then " + s,
        lambda s: f"  \n{s}\n\n",
    ],
)
def test_answers_wrapped_in_fences_or_prose_are_read_without_adjustments(wrap) -> None:
    # GIVEN a good answer wrapped the ways models wrap it
    # WHEN it is read
    description = read_answer(wrap(json.dumps(GOOD)))
    # THEN the object is found and nothing had to be fixed
    assert description.description == GOOD["description"]
    assert description.alt_text == "Red bicycle"
    assert description.tags == ("bike",)
    assert description.adjustments == ()
    assert not description.has_text


@pytest.mark.parametrize("tag", ["think", "thinking", "reasoning", "THINK", "Thinking"])
def test_a_json_draft_inside_a_reasoning_block_is_never_chosen(tag: str) -> None:
    # GIVEN reasoning that drafts a (valid) object, then the real answer
    draft = json.dumps({**GOOD, "description": "A draft that must not win."})
    answer = f"<{tag}>\nLet me look.\n{draft}\nDone.\n</{tag}>\n{json.dumps(GOOD)}"
    # WHEN it is read
    description = read_answer(answer)
    # THEN the answer after the block is the one kept
    assert description.description == GOOD["description"]


def test_a_reasoning_block_after_the_answer_is_removed_too() -> None:
    # GIVEN the answer followed by a reasoning block holding a later draft
    answer = json.dumps(GOOD) + "\n<think>\n" + json.dumps({**GOOD, "description": "Later draft."}) + "\n</think>"
    # WHEN it is read / THEN the draft in the block does not win although it comes last
    assert read_answer(answer).description == GOOD["description"]


def test_an_unclosed_reasoning_block_holds_no_answer() -> None:
    # GIVEN reasoning that never closes (the model ran out of budget while thinking), with a draft inside
    answer = "<think>\nThe image shows a bike. " + json.dumps(GOOD)
    # WHEN it is read / THEN the draft is not taken for the answer
    with pytest.raises(InvalidModelOutputError, match="only its reasoning"):
        read_answer(answer)


def test_a_closing_tag_without_its_opening_ends_the_reasoning() -> None:
    # GIVEN a server that strips the opening <think> but leaves the closing one
    answer = "Reasoning " + json.dumps({**GOOD, "description": "Draft."}) + " more</think>\n" + json.dumps(GOOD)
    # WHEN it is read / THEN only what follows the last closing tag counts
    assert read_answer(answer).description == GOOD["description"]


def test_reasoning_opened_before_a_long_answer_s_scanned_tail_is_still_reasoning() -> None:
    # GIVEN a reasoning block opened 300 KB before the end and never closed, with a draft near the end
    answer = "<think>" + "x" * 300_000 + json.dumps(GOOD)
    # WHEN it is read / THEN the draft inside it is not chosen
    with pytest.raises(InvalidModelOutputError):
        read_answer(answer)


@pytest.mark.parametrize("placeholder", ["...", "…", "string", "<description>", "", "[description]"])
def test_the_echoed_schema_example_before_the_answer_is_skipped(placeholder: str) -> None:
    # GIVEN the schema example echoed (with placeholder values) before the real answer
    echo = json.dumps({"description": placeholder, "alt_text": "...", "text": "...", "tags": ["..."]})
    # WHEN it is read
    description = read_answer(f"The format is:\n{echo}\nMy answer:\n{json.dumps(GOOD)}")
    # THEN the real answer is kept
    assert description == read_answer(json.dumps(GOOD))


def test_the_last_valid_object_wins_over_an_earlier_one() -> None:
    # GIVEN a first attempt and a corrected one
    first = json.dumps({**GOOD, "description": "A first attempt."})
    # WHEN both are in the answer / THEN the last one is the answer
    assert read_answer(f"{first}\nCorrected:\n{json.dumps(GOOD)}").description == GOOD["description"]


def test_a_placeholder_object_after_the_answer_does_not_hide_it() -> None:
    # GIVEN the answer followed by the echoed example
    answer = json.dumps(GOOD) + '\nFormat: {"description": "...", "alt_text": "..."}'
    # WHEN it is read / THEN the example is not valid, so the answer before it is kept
    assert read_answer(answer).description == GOOD["description"]


@pytest.mark.parametrize(
    "answer",
    [
        '{"description": "A dog.", "alt_text": "Dog", "tags": ["dog",],}',
        '{\n  "description": "A dog.", // what it shows\n  "alt_text": "Dog"\n}',
        '{"description": "A dog.\nRunning.", "alt_text": "Dog"}',
    ],
)
def test_near_json_is_read_leniently_and_said_so(answer: str) -> None:
    # GIVEN trailing commas, // comments or a raw line break inside a string
    # WHEN it is read
    description = read_answer(answer)
    # THEN the object is read, and the adjustments say it needed leniency
    assert description.description.startswith("A dog.")
    assert "answer read as lenient JSON" in description.adjustments


def test_the_lenient_pass_is_only_tried_when_strict_json_finds_nothing() -> None:
    # GIVEN a strictly valid answer followed by a later object that is only valid leniently
    answer = json.dumps(GOOD) + '\n{"description": "Lenient only.", "tags": ["x",],}'
    # WHEN it is read / THEN the strict answer wins and no leniency is reported
    description = read_answer(answer)
    assert description.description == GOOD["description"]
    assert description.adjustments == ()


@pytest.mark.parametrize("wrapper", ["result", "answer", "data", "output", "response", "Result"])
def test_answers_inside_a_wrapper_object_are_unwrapped(wrapper: str) -> None:
    # GIVEN {"result": {...}} and its variants
    # WHEN it is read
    description = read({wrapper: GOOD, "status": "ok"})
    # THEN the inner object is the answer, and the adjustments say it was unwrapped
    assert description.description == GOOD["description"]
    assert any("unwrapped" in note for note in description.adjustments)


def test_a_one_element_list_is_unwrapped_but_a_longer_one_is_not() -> None:
    # GIVEN [ {...} ] and [ {...}, {...} ]
    # WHEN each is read / THEN only the unambiguous one is an answer
    assert read([GOOD]).description == GOOD["description"]
    with pytest.raises(InvalidModelOutputError, match="list"):
        read([GOOD, GOOD])


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("Description", "description"),
        ("caption", "description"),
        ("summary", "description"),
        ("altText", "alt_text"),
        ("alt", "alt_text"),
        ("alt-text", "alt_text"),
        ("AltText", "alt_text"),
        ("alternative_text", "alt_text"),
        ("alt text", "alt_text"),
        ("ocr_text", "text"),
        ("ocrText", "text"),
        ("ocr", "text"),
        ("visible_text", "text"),
        ("extracted_text", "text"),
        ("text_in_image", "text"),
        ("transcription", "text"),
        ("keywords", "tags"),
        ("labels", "tags"),
        ("TAGS", "tags"),
    ],
)
def test_key_synonyms_and_spellings_are_understood(key: str, field: str) -> None:
    # GIVEN an answer using another name for one field
    values = {"description": "A cat on a mat.", "alt_text": "Cat on a mat", "text": "WELCOME", "tags": ["cat"]}
    document = {name: value for name, value in values.items() if name != field} | {key: values[field]}
    # WHEN it is read
    description = read(document)
    # THEN the field is filled as if it had its own name
    assert (description.description, description.alt_text, description.text, description.tags) == (
        "A cat on a mat.",
        "Cat on a mat",
        "WELCOME",
        ("cat",),
    )


def test_tool_call_arguments_are_read_when_the_content_has_no_answer() -> None:
    # GIVEN no content object, and two function calls: an invalid one last, a valid one before
    arguments = (json.dumps({**GOOD, "description": "From the tool."}), '{"description": "..."}')
    # WHEN it is read / THEN the last valid call's arguments are the answer
    assert read_answer(None, tool_arguments=arguments).description == "From the tool."
    assert read_answer("Calling the tool.", tool_arguments=arguments).description == "From the tool."


def test_a_valid_content_object_wins_over_tool_arguments() -> None:
    # GIVEN a valid object in the content and another in a tool call
    # WHEN it is read / THEN the content's is the answer
    arguments = (json.dumps({**GOOD, "description": "From the tool."}),)
    assert read_answer(json.dumps(GOOD), tool_arguments=arguments).description == GOOD["description"]


def test_tool_arguments_that_are_not_an_answer_are_invalid_output() -> None:
    # GIVEN no content and a tool call with other arguments
    # WHEN it is read / THEN it is invalid output
    with pytest.raises(InvalidModelOutputError):
        read_answer(None, tool_arguments=('{"query": "bike"}',))


# --- The three errors: refused, empty, invalid.


def test_a_provider_refusal_is_a_refusal_with_the_model_s_words() -> None:
    # GIVEN the provider's refusal field set (even with content)
    # WHEN it is read
    with pytest.raises(ModelRefusedError) as refused:
        read_answer(json.dumps(GOOD), refusal="I'm sorry, I can't help with that.")
    # THEN the model's own words are in the message, never in a field
    assert refused.value.message == "the model declined to describe the image: \"I'm sorry, I can't help with that.\""


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, I can't help with that.",
        "I cannot assist with this request",
        "As an AI language model, I can't describe images of people.",
        "Unable to process this image",
        "I’m sorry, but I can’t help with that.",
        "```\nI apologize, but I cannot provide a description of this image.\n```",
        "<think>The user wants a description.</think>I'm not able to help with that.",
        "Es tut mir leid, aber ich kann dabei nicht helfen.",
        "Je suis désolé, mais je ne peux pas vous aider.",
        "Lo siento, no puedo ayudar con eso.",
        "申し訳ありませんが、その画像についてはお手伝いできません。",
        "抱歉，我无法帮助处理这个请求。",
        "عذرًا، لا أستطيع المساعدة في ذلك.",
    ],
)
def test_a_refusal_written_as_the_answer_is_a_refusal(answer: str) -> None:
    # GIVEN content with no JSON that reads as the model declining
    # WHEN it is read / THEN it is a refusal (not invalid output a repair call would pay for)
    with pytest.raises(ModelRefusedError, match="declined"):
        read_answer(answer)


@pytest.mark.parametrize("field", ["description", "alt_text"])
def test_a_refusal_inside_the_json_never_becomes_a_field(field: str) -> None:
    # GIVEN an object whose description or alt text is the model declining
    document = {**GOOD, field: "I'm sorry, I can't help with that."}
    # WHEN it is read / THEN it is a refusal, quoting the words
    with pytest.raises(ModelRefusedError, match="can't help with that"):
        read(document)


def test_a_refusal_sentence_taken_as_missing_alt_text_is_still_a_refusal() -> None:
    # GIVEN a description that goes on describing after declining, and no alt text
    document = {"description": "I can't help with that. But the image shows a cat on a sofa."}
    # WHEN the alt text would be the first sentence / THEN that sentence is not published as alt text
    with pytest.raises(ModelRefusedError):
        read(document)


def test_a_sign_reading_sorry_we_are_closed_is_a_description_not_a_refusal() -> None:
    # GIVEN a photo of a shop sign with apologetic words
    document = {
        "description": 'A glass shop door with a sign reading "Sorry, we\'re closed".',
        "alt_text": "Sorry, we're closed sign on a shop door",
        "text": "Sorry, we're closed",
    }
    # WHEN it is read / THEN it is kept as the description it is
    description = read(document)
    assert description.alt_text == "Sorry, we're closed sign on a shop door"
    assert description.text == "Sorry, we're closed"


def test_a_partial_refusal_that_goes_on_describing_is_a_description() -> None:
    # GIVEN a description that declines one detail and goes on describing
    document = {**GOOD, "description": "I can't identify the person, but the image shows a man with a dog."}
    # WHEN it is read / THEN it is kept as a description
    assert read(document).description.endswith("a man with a dog.")


@pytest.mark.parametrize("content", [None, "", "   \n\t "])
def test_an_empty_answer_is_empty_not_invalid(content: str | None) -> None:
    # GIVEN no content, no tool call, no refusal
    # WHEN it is read / THEN it is the empty-answer error (the caller pays for no repair)
    with pytest.raises(EmptyModelAnswerError):
        read_answer(content)
    with pytest.raises(EmptyModelAnswerError):
        read_answer(content, tool_arguments=("", "  "))


@pytest.mark.parametrize(
    "answer",
    [
        "A red bicycle leans on a wall.",
        "[1, 2, 3]",
        json.dumps({"alt_text": "x"}),
        json.dumps({"description": "  "}),
        json.dumps({"description": 42}),
        json.dumps({"description": {"text": "A cat."}}),
        "{" * 1000,
    ],
)
def test_unusable_answers_raise_invalid_output(answer: str) -> None:
    # GIVEN text with no JSON object that has a usable description
    # WHEN it is read / THEN it is invalid output (which one repair call may fix), not empty, not refused
    with pytest.raises(InvalidModelOutputError) as invalid:
        read_answer(answer)
    assert type(invalid.value) is InvalidModelOutputError
    assert invalid.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("text", {"nested": True}), ("tags", {"nested": True}), ("alt_text", {"nested": True}), ("alt_text", ["a"])],
)
def test_wrong_types_are_invalid_and_never_turned_into_strings(field: str, value: Any) -> None:
    # GIVEN an object, or a list for alt text, where text is expected
    # WHEN it is read / THEN it is invalid output naming the field, not the object's repr stored as text
    with pytest.raises(InvalidModelOutputError, match=field):
        read({**GOOD, field: value})


def test_a_description_given_as_a_list_of_strings_is_joined() -> None:
    # GIVEN the description as a list of sentences
    # WHEN it is read
    description = read({**GOOD, "description": ["A red bicycle.", "It leans on a wall."]})
    # THEN they are joined with spaces, and the adjustment says so
    assert description.description == "A red bicycle. It leans on a wall."
    assert "description given as a list: joined" in description.adjustments


@pytest.mark.parametrize(
    "answer",
    [
        "[" * 100_000,
        '{"a":' * 50_000,
        '{"a":[' * 40_000,
        '{"description": "A cat.", "n": ' + "9" * 5_000 + "}",
        "<think>" * 100_000,
        "<" * 1_000_000,
        '"' * 1_000_000,
    ],
)
def test_deeply_nested_or_hostile_input_is_invalid_output_not_a_crash(answer: str) -> None:
    # GIVEN nesting deeper than the stack, an integer too long to convert, unclosed tags and quotes
    # WHEN it is read / THEN it is invalid output: no RecursionError, ValueError or hang escapes
    with pytest.raises(InvalidModelOutputError):
        read_answer(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "x" * 5_000_000 + json.dumps(GOOD),
        "{" * 5_000_000,
        '{"description": "' + "a" * 5_000_000,
        json.dumps(GOOD) * 50_000,
        '{"description":"' + '\\"' * 2_500_000,
        "<think>" + "y" * 5_000_000 + "</think>" + json.dumps(GOOD),
        json.dumps({**GOOD, "description": "A cat. " * 700_000, "text": "é" * 2_000_000}, ensure_ascii=False),
        json.dumps({"description": "A cat.", **{f"k{i}": 0 for i in range(300_000)}}),
        json.dumps({"description": "A cat.", "tags": ",".join(["a"] * 2_500_000)}),
        json.dumps({"description": ["A cat."] * 600_000, "text": ["line"] * 600_000}),
        "<" * 5_000_000 + "<think>",
    ],
)
def test_a_5_mb_answer_is_read_in_well_under_a_second(answer: str) -> None:
    # GIVEN a 5 MB answer (a rambling model, a hostile one)
    started = time.perf_counter()
    # WHEN it is read
    with contextlib.suppress(*DOMAIN_ERRORS):
        read_answer(answer)
    # THEN the scan is bounded: no quadratic search, no full-length regex backtracking
    assert time.perf_counter() - started < 1.0


def test_one_object_megabytes_long_is_read_and_bounded() -> None:
    # GIVEN a single answer object of several megabytes (a dense page transcribed), so it starts before the tail
    huge = {
        "description": "A page of dense text. " * 100_000,
        "alt_text": "Page of text " * 50,
        "text": "line of text é\n" * 200_000,
        "tags": ["t" * 500] * 500,
    }
    # WHEN it is read
    description = read(huge)
    # THEN it is found, every field is cut to its bound, and each cut is listed
    assert utf8_size(description.description) <= 4_000 and description.description.endswith("text.")
    assert len(description.alt_text) <= 125
    assert utf8_size(description.text) <= 100_000 and description.text_truncated
    assert description.tags == ("t" * 40,)
    assert {"description cut to 4000 bytes", "text cut to 100000 bytes", "alt_text cut to 125 characters"} <= set(
        description.adjustments
    )


def test_the_answer_at_the_end_of_a_long_ramble_is_found() -> None:
    # GIVEN 5 MB of prose before the answer
    # WHEN it is read / THEN the answer in the scanned tail is found
    assert read_answer("x" * 5_000_000 + json.dumps(GOOD)).description == GOOD["description"]


# --- Description: bounded in bytes, cut where a sentence ends (in any language).

ROUTE_66 = "A U.S. Route 66 sign next to Dr. Smith's diner. The sign is faded. A red car is parked. Clouds above."


def test_a_description_with_abbreviations_and_four_sentences_is_kept_whole() -> None:
    # GIVEN four sentences with "U.S." and "Dr." in them (the old parser cut this to a fragment)
    # WHEN it is read
    description = read({**GOOD, "description": ROUTE_66})
    # THEN nothing is cut: only the byte bound limits a description
    assert description.description == ROUTE_66
    assert description.adjustments == ()


def test_a_description_over_the_bound_is_cut_after_its_last_whole_sentence() -> None:
    # GIVEN the bound falls inside the third sentence
    # WHEN it is read
    description = read({**GOOD, "description": ROUTE_66}, description_max_bytes=75)
    # THEN it is cut after the second, never after an abbreviation
    assert description.description == "A U.S. Route 66 sign next to Dr. Smith's diner. The sign is faded."
    assert "description cut to 75 bytes" in description.adjustments


def test_a_description_without_a_sentence_end_in_the_bound_is_cut_at_a_word() -> None:
    # GIVEN a run-on sentence longer than the bound
    long = "A very long run-on description of a busy market street " * 10
    # WHEN it is read
    description = read({**GOOD, "description": long}, description_max_bytes=100)
    # THEN it is cut at a word inside the bound, with an ellipsis that fits the bound too
    assert utf8_size(description.description) <= 100
    assert description.description.endswith("…")
    assert long.startswith(description.description[:-1])
    assert long[len(description.description) - 1] == " "  # the cut is at a word boundary


@pytest.mark.parametrize(
    ("language", "text", "first"),
    [
        (
            "en",
            "Mr. J. Smith stands near St. Mary's, i.e. the church. It is raining.",
            "Mr. J. Smith stands near St. Mary's, i.e. the church.",
        ),
        (
            "de",
            "Ein Schild, z.B. ein Verkehrsschild, steht an der Str. zum Dorf. Daneben parkt ein Auto.",
            "Ein Schild, z.B. ein Verkehrsschild, steht an der Str. zum Dorf.",
        ),
        ("ja", "赤い自転車が壁に立てかけられている。横に青い郵便受けがある。", "赤い自転車が壁に立てかけられている。"),
        ("zh", "一辆红色自行车靠在墙上！旁边有一个蓝色邮箱。", "一辆红色自行车靠在墙上！"),
        ("ar", "هل هذه قطة؟ نعم، قطة على الأريكة.", "هل هذه قطة؟"),
        ("hi", "एक लाल साइकिल दीवार से टिकी है। पास में एक नीला डाकबक्सा है।", "एक लाल साइकिल दीवार से टिकी है।"),
    ],
)
def test_missing_alt_text_is_the_description_s_first_sentence_in_any_language(
    language: str, text: str, first: str
) -> None:
    # GIVEN no alt text, and a description whose first sentence ends the way its language ends sentences
    # WHEN it is read
    description = read({"description": text}, language=language)
    # THEN the alt text is that first sentence, not cut at an abbreviation, and the adjustment says so
    assert description.alt_text == first
    assert "alt_text missing: taken from the description" in description.adjustments


def test_a_japanese_description_over_the_bound_is_cut_after_a_full_stop() -> None:
    # GIVEN Japanese sentences (no spaces after 。) over the byte bound
    text = "赤い自転車が壁に立てかけられている。" * 20
    # WHEN it is read
    description = read({**GOOD, "description": text}, description_max_bytes=200)
    # THEN it ends after a whole sentence inside the bound
    assert utf8_size(description.description) <= 200
    assert description.description.endswith("。")


# --- Alt text: "image of" removed per language, except from names and from the image's own text.


@pytest.mark.parametrize(
    ("language", "alt_text", "expected"),
    [
        ("en", "Image of a red car", "A red car"),
        ("en", "A photo of an old lighthouse", "An old lighthouse"),
        ("en", "Photograph of the harbour at dawn", "The harbour at dawn"),
        ("en", "picture of a dog running", "A dog running"),
        ("en", "Photo: a red car", "A red car"),
        ("en", "Photo of the Day banner above a shop door", "Photo of the Day banner above a shop door"),
        ("en", "Picture of Dorian Gray book cover", "Picture of Dorian Gray book cover"),
        ("en", "Image offers a wide view of the bay", "Image offers a wide view of the bay"),
        ("en-GB", "An illustration of a fox", "A fox"),
        ("de", "Ein Bild von einem roten Fahrrad", "Einem roten Fahrrad"),
        ("de", "Foto: Ein roter Bus vor dem Bahnhof", "Ein roter Bus vor dem Bahnhof"),
        ("de", "Abbildung von Katzen im Garten", "Katzen im Garten"),
        ("de", "Image of a dog", "A dog"),
        ("fr", "Photo de la tour Eiffel la nuit", "La tour Eiffel la nuit"),
        ("fr", "Une image d'un chat noir", "Un chat noir"),
        ("fr", "Photo de Paris la nuit", "Photo de Paris la nuit"),
        ("es", "Imagen de un perro en la playa", "Un perro en la playa"),
        ("pt-BR", "Imagem de um gato", "Um gato"),
        ("it", "Immagine di un gatto", "Un gatto"),
        ("nl", "Afbeelding van een fiets", "Een fiets"),
        ("ja", "赤い自転車の写真", "赤い自転車"),
        ("ja", "写真：赤い自転車", "赤い自転車"),
        ("zh", "一张红色自行车的照片", "红色自行车"),
        ("zh-Hans", "图片：红色自行车", "红色自行车"),
        ("ar", "صورة لـقطة على الأريكة", "قطة على الأريكة"),
        ("ar", "صورة قطة على الأريكة", "قطة على الأريكة"),
        ("ar", "صورة شخصية لرجل مبتسم", "صورة شخصية لرجل مبتسم"),
    ],
)
def test_a_leading_image_of_is_removed_in_the_answer_s_language(language: str, alt_text: str, expected: str) -> None:
    # GIVEN alt text that announces itself as an image (which screen readers already say)
    # WHEN it is read in the answer's language
    description = read({**GOOD, "alt_text": alt_text}, language=language)
    # THEN the phrase is removed, unless it starts a name (where capitals mark names) or is not a preamble
    assert description.alt_text == expected
    assert any("removed" in note for note in description.adjustments) == (expected != alt_text)


def test_image_of_is_kept_when_the_image_itself_says_it() -> None:
    # GIVEN a board that reads "IMAGE OF THE WEEK", and alt text quoting it
    document = {**GOOD, "alt_text": "Image of the week board by a café door", "text": "IMAGE OF THE\nWEEK"}
    # WHEN it is read / THEN the words are content, not a preamble
    assert read(document).alt_text == "Image of the week board by a café door"


# --- Alt text length: at a word in spaced scripts, at the limit (or a CJK comma) in unspaced ones.


def test_long_alt_text_is_cut_at_a_word_boundary() -> None:
    # GIVEN English alt text over 125 characters
    alt_text = "A red bicycle with a wicker basket full of sunflowers leans against a whitewashed wall " * 3
    # WHEN it is read
    description = read({**GOOD, "alt_text": alt_text})
    # THEN it is cut before a space, inside the limit, and the adjustment says so
    assert len(description.alt_text) <= 125
    assert alt_text.startswith(description.alt_text)
    assert alt_text[len(description.alt_text)] == " "
    assert "alt_text cut to 125 characters" in description.adjustments


def test_long_german_alt_text_is_cut_at_a_word_boundary() -> None:
    # GIVEN German alt text over 125 characters
    alt_text = "Ein rotes Fahrrad mit Weidenkorb voller Sonnenblumen lehnt an einer weiß getünchten Hauswand " * 3
    # WHEN it is read
    description = read({**GOOD, "alt_text": alt_text}, language="de")
    # THEN it is cut before a space, with no separator left dangling
    assert len(description.alt_text) <= 125
    assert alt_text[len(description.alt_text)] == " "
    assert not description.alt_text.endswith((" ", ",", "-"))


def test_long_japanese_alt_text_is_cut_after_the_last_comma_inside_the_limit() -> None:
    # GIVEN Japanese (no spaces) with 、 between clauses
    alt_text = "赤い自転車が白い壁に立てかけられている、かごにはひまわりが入っている、" * 4
    # WHEN it is read
    description = read({**GOOD, "alt_text": alt_text}, language="ja")
    # THEN the cut follows a comma inside the limit, and the comma itself is not left dangling
    assert len(description.alt_text) <= 125
    assert alt_text.startswith(description.alt_text)
    assert alt_text[len(description.alt_text)] == "、"
    assert "alt_text cut to 125 characters" in description.adjustments


def test_long_chinese_alt_text_without_punctuation_is_cut_at_the_limit() -> None:
    # GIVEN Chinese alt text over the limit with no punctuation at all
    alt_text = "红色自行车靠在白色墙上" * 20
    # WHEN it is read / THEN it is cut at the limit itself
    assert read({**GOOD, "alt_text": alt_text}, language="zh").alt_text == alt_text[:125]


def test_long_arabic_alt_text_is_cut_at_a_space() -> None:
    # GIVEN Arabic (right-to-left, spaced) alt text over the limit
    alt_text = "دراجة حمراء مستندة إلى جدار أبيض وفي سلتها زهور عباد الشمس " * 4
    # WHEN it is read
    description = read({**GOOD, "alt_text": alt_text}, language="ar")
    # THEN it is cut before a space, like any spaced script
    assert len(description.alt_text) <= 125
    assert alt_text.startswith(description.alt_text)
    assert alt_text[len(description.alt_text)] == " "


@pytest.mark.parametrize(
    ("unit", "size"),
    [("e\u0301", 2), ("\u0628\u064e", 2), ("👍🏽", 2), ("👩\u200d💻", 3)],
)
def test_an_alt_text_cut_never_splits_a_character_from_its_marks(unit: str, size: int) -> None:
    # GIVEN unspaced alt text made of characters that take several code points (accents, harakat, emoji)
    alt_text = unit * 100
    # WHEN it is read
    description = read({**GOOD, "alt_text": alt_text})
    # THEN the cut keeps whole characters only
    assert len(description.alt_text) <= 125
    assert len(description.alt_text) % size == 0
    assert description.alt_text == unit * (len(description.alt_text) // size)


def test_a_placeholder_alt_text_is_replaced_by_the_description_s_first_sentence() -> None:
    # GIVEN alt text left as the schema's placeholder
    # WHEN it is read
    description = read({"description": "A dog runs. It is happy.", "alt_text": "..."})
    # THEN it is treated as missing
    assert description.alt_text == "A dog runs."


# --- OCR text: verbatim, with honest placeholders and bounds.


@pytest.mark.parametrize(
    "placeholder",
    [
        *("none", "None", "n/a", "N/A", "no text", "No text", "No visible text", "no visible text", "(none)"),
        *("null", "-", "—", "keine", "Kein Text", "なし", "无", "لا يوجد"),
    ],
)
def test_no_text_placeholders_mean_no_text_and_say_so(placeholder: str) -> None:
    # GIVEN the model writing a placeholder where no text is visible
    # WHEN it is read
    description = read({**GOOD, "text": f"  {placeholder} "})
    # THEN there is no text, and the adjustment says a placeholder was read as none
    assert description.text == ""
    assert not description.has_text
    assert any("placeholder" in note for note in description.adjustments)


@pytest.mark.parametrize("sign", ["NONE", "NULL", "No text messages while driving"])
def test_a_sign_that_reads_like_a_placeholder_keeps_its_text(sign: str) -> None:
    # GIVEN a sign reading "NONE" (the placeholder match is case-sensitive on purpose)
    # WHEN it is read / THEN the sign's text is kept
    assert read({**GOOD, "text": sign}).text == sign


@pytest.mark.parametrize("value", ["", None])
def test_empty_or_null_text_is_no_text_without_an_adjustment(value: Any) -> None:
    # GIVEN the answer the prompt asks for when there is no text (or null)
    # WHEN it is read
    description = read({**GOOD, "text": value})
    # THEN there is no text, and nothing needed fixing
    assert (description.text, description.adjustments) == ("", ())


def test_text_is_kept_verbatim_including_markup() -> None:
    # GIVEN a screenshot of HTML code: its text is content, consumers escape it
    code = '  <script>alert("hi")</script>\n<b>TOTAL  $42.00</b>\nThank   you  '
    # WHEN it is read
    description = read({**GOOD, "text": code})
    # THEN only the surrounding whitespace goes: inner spacing, lines and markup are the image's
    assert description.text == code.strip()
    assert description.has_text
    assert description.adjustments == ()


def test_text_given_as_a_list_of_lines_is_joined() -> None:
    # GIVEN the text as a list of lines, with a null, a number and an object among them
    # WHEN it is read
    description = read({**GOOD, "text": ["line 1", None, "line 2", 3, {"x": 1}]})
    # THEN text lines are joined by newlines, the rest skipped, and both adjustments listed
    assert description.text == "line 1\nline 2\n3"
    assert "text given as a list: joined by lines" in description.adjustments
    assert any("skipped" in note for note in description.adjustments)


def test_text_over_the_bound_is_cut_utf8_safely_and_flagged() -> None:
    # GIVEN OCR text of 2-byte characters over the byte bound, the bound falling inside a character
    # WHEN it is read
    description = read({**GOOD, "text": "é" * 60_000}, text_max_bytes=100_001)
    # THEN it is cut to whole characters inside the bound and flagged
    assert description.text == "é" * 50_000
    assert description.text_truncated
    assert "text cut to 100001 bytes" in description.adjustments


# --- Tags.


def test_tags_are_cleaned_and_every_fix_is_listed() -> None:
    # GIVEN tags with nulls, objects, a number, odd spacing and case, a duplicate, an overlong one and markup
    tags = [None, "Sunset", {"name": "Beach"}, {"score": 1}, 42, "  Golden   Hour ", "sunset", "x" * 60, "<b>Sea</b>"]
    # WHEN they are read
    description = read({**GOOD, "tags": tags})
    # THEN each is a short lower-case word, once, and the skipped items and markup are listed
    assert description.tags == ("sunset", "beach", "42", "golden hour", "x" * 40, "sea")
    assert "tags: 2 skipped (null, object)" in description.adjustments
    assert any(note.startswith("tags: markup removed") for note in description.adjustments)


def test_null_tags_are_no_tags_not_a_none_tag() -> None:
    # GIVEN "tags": null
    # WHEN it is read / THEN there are no tags (the old parser's str(None) made a "none" tag)
    assert read({**GOOD, "tags": None}).tags == ()


def test_tags_given_as_a_comma_separated_string_are_split() -> None:
    # GIVEN tags as one comma-separated string with a trailing comma
    # WHEN they are read
    description = read({**GOOD, "tags": "Cat, pet,  CAT ,猫,"})
    # THEN they are split, cleaned and de-duplicated; the empty one is listed as skipped
    assert description.tags == ("cat", "pet", "猫")
    assert "tags: 1 skipped (empty)" in description.adjustments
    assert "tags given as a string: split at commas" in description.adjustments


def test_more_tags_than_allowed_are_cut_and_said_so() -> None:
    # GIVEN twenty tags
    # WHEN they are read
    description = read({**GOOD, "tags": [f"t{i}" for i in range(20)]})
    # THEN the first ten are kept, and the adjustment says so
    assert description.tags == tuple(f"t{i}" for i in range(10))
    assert "tags cut to 10" in description.adjustments


def test_the_old_parser_s_combined_fixes_still_hold() -> None:
    # GIVEN (ported) a long "Image of" alt text, text as lines, duplicate and excess tags, in one answer
    answer = {
        "description": "One. Two. Three. Four.",
        "alt_text": "Image of " + "a very long alt text " * 10,
        "text": ["line 1", "line 2"],
        "tags": ["A", "a", " B ", *[f"t{i}" for i in range(20)]],
    }
    # WHEN it is read
    description = read(answer)
    # THEN each is fixed as before, except that four short sentences are no longer cut to three
    assert description.description == "One. Two. Three. Four."
    assert len(description.alt_text) <= 125
    assert description.alt_text.startswith("A very long")
    assert description.text == "line 1\nline 2"
    assert description.tags[:2] == ("a", "b") and len(description.tags) == 10


# --- Markup and unstorable characters.


def test_an_attribute_breakout_in_alt_text_is_removed_with_the_script() -> None:
    # GIVEN alt text crafted to break out of an HTML attribute and run a script
    # WHEN it is read
    description = read({**GOOD, "alt_text": '"><script>alert(1)</script>A red bicycle'})
    # THEN only the words remain, and the adjustment says what was removed
    assert description.alt_text == "A red bicycle"
    note = next(note for note in description.adjustments if note.startswith("alt_text: markup removed"))
    assert "<script>" in note


def test_markup_is_removed_from_the_description() -> None:
    # GIVEN a description with tags, a comment, a style element, an event handler and script URLs
    text = (
        "A <b>red</b> bicycle<!-- hidden -->.<style>p{color:red}</style> <img src=x onerror=alert(1)>"
        ' See <a href="javascript:alert(1)">here</a> javascript:void(0) and 3 < 5 > 2.'
    )
    # WHEN it is read
    description = read({**GOOD, "description": text})
    # THEN only the words remain, and the adjustment lists what was removed
    assert description.description == "A red bicycle. See here and 3 5 2."
    assert not any(mark in description.description for mark in "<>")
    assert "javascript" not in description.description
    assert any(note.startswith("description: markup removed") for note in description.adjustments)


def test_lone_surrogates_and_control_characters_never_survive() -> None:
    # GIVEN every field carrying a lone surrogate (json.loads makes one from "\ud800") and control characters
    answer = json.dumps(
        {"description": "A cat\ud800.\x00", "alt_text": "\udfffCat\x07", "text": "\ud800 OPEN\x1b", "tags": ["\ud800"]}
    )
    assert json.loads('"\\ud800"') == "\ud800"
    # WHEN it is read
    description = read_answer(answer)
    # THEN each is storable (encodable as UTF-8) as returned
    for value in (description.description, description.alt_text, description.text, *description.tags):
        value.encode("utf-8")
        assert storable(value) == value
    assert description.description == "A cat\ufffd."


def test_adjustments_are_short_and_few() -> None:
    # GIVEN an answer needing many fixes, one of them naming a very long tag
    document = {
        "description": ["A <x" + "y" * 1000 + ">cat</x>.", "Sits."],
        "alt_text": "Image of a <b>cat</b>",
        "text": [1, None, "N"],
        "tags": "a, " + ", ".join(f"<i>t{i}</i>" for i in range(30)) + ", " + "z" * 50,
    }
    # WHEN it is read
    description = read(document)
    # THEN the adjustments are at most 20, each at most 200 bytes
    assert 0 < len(description.adjustments) <= 20
    assert all(utf8_size(note) <= 200 for note in description.adjustments)


# --- looks_like_refusal on its own.


@pytest.mark.parametrize(
    "text",
    [
        "Sorry, we're closed",
        "'I can't help falling in love' written on a mug",
        "I cannot believe this dog poster on a wall",
        "I can't see the creature in the fog.",
        "Unable to park sign next to a garage",
        "看板には「説明できません」と書かれている",
        "Ich kann nicht mehr – Graffiti an einer Wand",
        "I'm sorry, I can't help with that. " + "The image shows a cat on a sofa. " * 10,
        "",
    ],
)
def test_looks_like_refusal_ignores_apologetic_content(text: str) -> None:
    # GIVEN content that apologises, quotes a refusal or says "I can't" about something else
    # WHEN it is checked / THEN it is not the model declining
    assert not looks_like_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "I must decline.",
        "Unfortunately, I am unable to analyze this image.",
        "**I cannot help with that.**",
        "\"I'm sorry, I can't help with that.\"",
        "Leider kann ich dieses Bild nicht beschreiben.",
        "No puedo describir esta imagen.",
        "この画像を説明することはできません。",
        "Desculpe, não posso ajudar com isso.",
    ],
)
def test_looks_like_refusal_recognises_the_model_declining(text: str) -> None:
    # GIVEN the model declining, however phrased, quoted or emphasised
    # WHEN it is checked / THEN it is a refusal
    assert looks_like_refusal(text)


def test_answer_rules_refuse_bounds_that_leave_no_room() -> None:
    # GIVEN bounds too small to hold anything (a configuration mistake)
    # WHEN the rules are built / THEN they fail at once, at cold start
    with pytest.raises(ValueError, match="alt_text_max_chars"):
        AnswerRules(alt_text_max_chars=0)
    with pytest.raises(ValueError, match="description_max_bytes must be at least 4"):
        AnswerRules(description_max_bytes=3)


def test_answer_rules_refuse_an_unknown_task_or_a_fields_schema_that_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="task must be one of caption, alt_text, document"):
        AnswerRules(task="poster")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fields_schema"):
        AnswerRules(task="document", fields_schema=["invoice_number"])  # type: ignore[arg-type]


def test_answer_rules_with_a_fields_schema_stay_hashable_and_comparable() -> None:
    # GIVEN rules carrying a (mutable) fields schema, as the describe options hold them
    schema = {"type": "object", "properties": {"total": {"type": "number"}}}
    rules = AnswerRules(task="document", fields_schema=schema)
    # THEN they can still be hashed, and compare by the schema too
    assert hash(rules) == hash(AnswerRules(task="document", fields_schema=dict(schema)))
    assert rules == AnswerRules(task="document", fields_schema=dict(schema))
    assert rules != AnswerRules(task="document")
    assert AnswerRules().task == "caption" and AnswerRules().fields_schema is None


# --- Decorative images: empty alt text by design, and the record says so.


@pytest.mark.parametrize(
    ("value", "decorative", "note"),
    [
        (True, True, None),
        (False, False, None),
        ("true", True, "decorative given as a string"),
        (" TRUE ", True, "decorative given as a string"),
        ("yes", True, "decorative given as a string"),
        ("false", False, "decorative given as a string"),
        ("No", False, "decorative given as a string"),
        ("maybe", False, "decorative: string value not understood, read as false"),
        ("", False, "decorative: string value not understood, read as false"),
        (1, False, "decorative: number value not understood, read as false"),
        ([True], False, "decorative: list value not understood, read as false"),
        (None, False, None),
    ],
)
def test_decorative_is_read_from_booleans_and_yes_no_strings(value: Any, decorative: bool, note: str | None) -> None:
    # GIVEN a real description with "decorative" given one way or another
    description = read({**GOOD, "alt_text": "", "decorative": value})
    # WHEN it is read / THEN booleans and their words are understood; anything else is false, and said so
    assert description.decorative is decorative
    if note is None:
        assert not any(adjustment.startswith("decorative") for adjustment in description.adjustments)
    else:
        assert note in description.adjustments


@pytest.mark.parametrize("key", ["decorative", "is_decorative", "isDecorative", "decorative_image", "Decorative"])
def test_decorative_synonyms_are_understood(key: str) -> None:
    description = read({"description": "A thin grey line.", "alt_text": "", "text": "", "tags": [], key: True})
    assert description.decorative is True and description.alt_text == ""


def test_a_decorative_image_has_empty_alt_text_by_design() -> None:
    # GIVEN a decorative image answered as the prompt asks: an empty alt text
    answer = {"description": "A thin grey divider line.", "alt_text": "", "text": "", "tags": [], "decorative": True}
    # WHEN it is read
    description = read(answer, task="alt_text")
    # THEN the alt text stays empty, is not taken from the description, and nothing had to be fixed
    assert (description.decorative, description.alt_text) == (True, "")
    assert description.description == "A thin grey divider line."
    assert description.adjustments == ()


@pytest.mark.parametrize("task", ["caption", "alt_text", "document"])
def test_alt_text_given_for_a_decorative_image_is_left_empty_and_said_so(task: str) -> None:
    # GIVEN a model that says the image is decorative but still writes alt text
    answer = {"description": "A beige paper texture.", "alt_text": "Beige texture", "decorative": True}
    # WHEN it is read
    description = read(answer, task=task)
    # THEN the alt text is empty by design, and the adjustments say it was dropped
    assert description.alt_text == ""
    assert "decorative: alt text left empty" in description.adjustments
    assert not any("alt_text missing" in note for note in description.adjustments)


@pytest.mark.parametrize("alt_text", [None, "", "  ", "...", "N/A"])
def test_a_decorative_image_without_alt_text_needs_no_adjustment(alt_text: str | None) -> None:
    description = read({"description": "A spacer.", "alt_text": alt_text, "decorative": True})
    assert description.alt_text == "" and description.adjustments == ()


@pytest.mark.parametrize("document", [{"decorative": True}, {"description": "", "decorative": True, "tags": []}])
def test_a_decorative_image_may_have_no_description(document: dict[str, Any]) -> None:
    # GIVEN a decorative image with nothing to describe / WHEN it is read
    description = read(document, task="alt_text")
    # THEN it is a valid answer with an empty description and an empty alt text
    assert (description.description, description.alt_text, description.decorative) == ("", "", True)
    assert description.adjustments == ()


@pytest.mark.parametrize("placeholder", ["N/A", "none", "None.", "-", "nothing"])
def test_a_decorative_image_s_no_description_word_is_read_as_empty(placeholder: str) -> None:
    description = read({"description": placeholder, "alt_text": "", "decorative": True})
    assert description.description == ""
    assert f'description "{placeholder}" read as empty: decorative image' in description.adjustments


@pytest.mark.parametrize("placeholder", ["...", "<description>", "string"])
def test_an_echoed_placeholder_is_no_answer_even_when_decorative(placeholder: str) -> None:
    # GIVEN the schema example echoed with "decorative": true: it is still a placeholder, not an answer
    with pytest.raises(InvalidModelOutputError, match="placeholder"):
        read({"description": placeholder, "alt_text": "...", "decorative": True})


@pytest.mark.parametrize("value", [False, "no", None, "maybe"])
def test_without_decorative_a_description_is_still_required(value: Any) -> None:
    with pytest.raises(InvalidModelOutputError, match="description"):
        read({"alt_text": "Red bicycle", "decorative": value})


def test_a_decorative_image_whose_alt_text_is_a_refusal_is_a_refusal() -> None:
    with pytest.raises(ModelRefusedError):
        read({"description": "", "alt_text": "I'm sorry, I can't help with that.", "decorative": True})


def test_a_decorative_image_keeps_its_tags_and_text() -> None:
    description = read({"description": "A floral ornament.", "text": "", "tags": ["ornament"], "decorative": "yes"})
    assert description.tags == ("ornament",) and description.description == "A floral ornament."


def test_an_image_that_is_not_decorative_still_gets_alt_text_from_its_description() -> None:
    description = read({**GOOD, "alt_text": "", "decorative": False}, task="alt_text")
    assert description.alt_text == GOOD["description"]
    assert "alt_text missing: taken from the description" in description.adjustments


# --- Extracted fields (the document task): passed through, but always storable and bounded.

INVOICE = {"description": "An invoice from ACME.", "alt_text": "", "text": "INVOICE 2024-117\nTotal 1,234.50 EUR"}


@pytest.mark.parametrize("key", ["fields", "extracted_fields", "extraction", "Fields", "extractedFields"])
def test_fields_are_passed_through_untouched(key: str) -> None:
    # GIVEN extracted fields as the model gave them (a null, a number, a list, a string that breaks the schema)
    fields = {"invoice_number": "2024-117", "total": 1234.5, "invoice_date": None, "lines": ["Bolts"], "x": "?"}
    # WHEN they are read
    description = read({**INVOICE, key: fields}, task="document")
    # THEN they are kept as given (validating them against the profile is not the reader's job)
    assert description.fields == fields
    assert description.adjustments == ()


@pytest.mark.parametrize("fields", ["2024-117", ["a", 1], 42, True, {}])
def test_fields_of_any_json_shape_are_passed_through(fields: Any) -> None:
    assert read({**INVOICE, "fields": fields}, task="document").fields == fields


@pytest.mark.parametrize("document", [INVOICE, {**INVOICE, "fields": None}])
def test_no_fields_read_as_none(document: dict[str, Any]) -> None:
    assert read(document, task="document").fields is None
    assert read({**GOOD, **document}).fields is None


def test_fields_over_16_kb_of_json_are_dropped_and_said_so() -> None:
    # GIVEN fields whose JSON is beyond the bound (a model that copied the whole transcription in)
    fields = {"notes": "é" * FIELDS_MAX_BYTES}
    # WHEN they are read
    description = read({**INVOICE, "fields": fields}, task="document")
    # THEN they are dropped, the rest of the answer kept, and the adjustments say why
    assert description.fields is None
    assert description.description == INVOICE["description"]
    assert f"fields dropped: over {FIELDS_MAX_BYTES} bytes of JSON" in description.adjustments


def test_fields_just_within_16_kb_are_kept() -> None:
    fields = {"notes": "x" * (FIELDS_MAX_BYTES - len('{"notes":""}'))}
    assert read({**INVOICE, "fields": fields}, task="document").fields == fields


def test_fields_nested_too_deep_are_dropped() -> None:
    deep: Any = "bottom"
    for _ in range(40):
        deep = {"child": deep}
    description = read({**INVOICE, "fields": deep}, task="document")
    assert description.fields is None
    assert any(note.startswith("fields dropped: nested deeper") for note in description.adjustments)


def test_fields_nested_as_deep_as_json_can_be_read_are_dropped_quickly() -> None:
    answer = json.dumps(INVOICE)[:-1] + ', "fields": ' + "[" * 900 + "]" * 900 + "}"
    description = read_answer(answer, rules=AnswerRules(task="document"))
    assert description.fields is None and description.description == INVOICE["description"]


def test_unstorable_values_in_fields_are_made_storable() -> None:
    # GIVEN fields with a lone surrogate (from a "\\ud800" escape), a control character and a NaN
    answer = json.dumps(INVOICE)[:-1] + ', "fields": {"vendor": "AC\\u0000ME\\ud800", "total": NaN}}'
    # WHEN they are read
    description = read_answer(answer, rules=AnswerRules(task="document"))
    # THEN they can be stored and published, and the adjustments say what changed
    assert description.fields == {"vendor": "ACME\ufffd", "total": None}
    assert "fields: unstorable characters replaced" in description.adjustments
    assert "fields: non-finite numbers read as null" in description.adjustments


# --- The document task: a label is optional, never made up from the transcription.


@pytest.mark.parametrize("alt_text", ["", None, "...", "  "])
def test_a_document_may_have_empty_alt_text(alt_text: str | None) -> None:
    # GIVEN a document answer without a label
    description = read({**INVOICE, "alt_text": alt_text}, task="document")
    # WHEN it is read / THEN the alt text stays empty: not taken from the description, and no adjustment
    assert description.alt_text == ""
    assert description.adjustments == ()
    assert description.text.startswith("INVOICE 2024-117")


def test_a_document_s_label_is_kept_and_bounded() -> None:
    description = read({**INVOICE, "alt_text": "Invoice 2024-117 from ACME Industrial Supplies"}, task="document")
    assert description.alt_text == "Invoice 2024-117 from ACME Industrial Supplies"
    cut = read({**INVOICE, "alt_text": "Invoice 2024-117 from ACME"}, task="document", alt_text_max_chars=20)
    assert cut.alt_text == "Invoice 2024-117" and "alt_text cut to 20 characters" in cut.adjustments


def test_a_document_still_needs_a_description() -> None:
    with pytest.raises(InvalidModelOutputError, match="description"):
        read({"text": "INVOICE", "fields": {"total": 1}}, task="document")


def test_lenient_reading_keeps_decorative_and_fields() -> None:
    # GIVEN an answer that is only valid leniently (trailing comma), with the new keys
    answer = '{"description": "An invoice.", "decorative": false, "fields": {"total": 12.5},}'
    # WHEN it is read / THEN the new keys survive the note about leniency
    description = read_answer(answer, rules=AnswerRules(task="document"))
    assert description.fields == {"total": 12.5} and description.decorative is False
    assert "answer read as lenient JSON" in description.adjustments


# --- Properties: any input gives a bounded, storable description or one of the three domain errors.

PROFILE = settings(
    max_examples=20_000 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 400,
    deadline=3000,
    derandomize=os.environ.get("HYPOTHESIS_PROFILE") != "deep",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Surrogates and control characters included: json.loads produces both from escapes.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)
TRICKY_TEXT = st.sampled_from(
    [
        "...",
        "None",
        "NONE",
        "",
        " ",
        "I'm sorry, I can't help with that.",
        "Image of a cat",
        "Photo of the Day",
        '"><script>alert(1)</script>x',
        "<think>",
        "</think>",
        "A. B. C.",
        "赤い自転車の写真",
        "صورة لـقطة",
        "e\u0301" * 70,
        "👩\u200d💻" * 50,
        "\ud800",
        "İ" * 60,
        "ß" * 130,
    ]
)
KEYS = st.sampled_from(
    [
        *("description", "Description", "caption", "alt_text", "altText", "alt", "text", "ocr", "tags"),
        *("keywords", "result", "answer", "data", "output", "response", "name", "label"),
        *("decorative", "isDecorative", "fields", "extraction"),
    ]
) | st.text(max_size=12)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | ANY_TEXT | TRICKY_TEXT
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=6) | st.dictionaries(KEYS, children, max_size=6)


JSON_VALUES = st.recursive(SCALARS, containers, max_leaves=30)
FIELD_VALUES = TRICKY_TEXT | ANY_TEXT | JSON_VALUES
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "description": FIELD_VALUES,
        "alt_text": FIELD_VALUES,
        "text": FIELD_VALUES,
        "tags": FIELD_VALUES | st.lists(FIELD_VALUES, max_size=15),
        "result": JSON_VALUES,
        "decorative": st.booleans() | st.sampled_from(["true", "no", "maybe"]) | FIELD_VALUES,
        "fields": JSON_VALUES | st.dictionaries(KEYS, FIELD_VALUES, max_size=6),
    },
)
RULES = st.builds(
    AnswerRules,
    language=st.sampled_from(["en", "de", "fr", "ja", "zh", "ar", "pt-BR", "x-unknown", ""]),
    alt_text_max_chars=st.integers(1, 200),
    description_max_bytes=st.integers(4, 5_000),
    text_max_bytes=st.integers(1, 5_000),
    max_tags=st.integers(1, 12),
    tag_max_chars=st.integers(1, 50),
    task=st.sampled_from(["caption", "alt_text", "document"]),
)
WRAPS = st.sampled_from(
    [
        "{}",
        "```json\n{}\n```",
        "Here you go: {} Thanks!",
        "<think>{}</think>{}",
        '{{"description": "..."}} {}',
        "{}\n// done",
        "[{}]",
        "{}" + "}" * 3,
        "[" * 50 + "{}",
    ]
)


def assert_read_or_refused(content: Any, rules: AnswerRules, **extra: Any) -> None:
    """The contract: a description whose every field is storable and within bounds, or a domain error."""
    try:
        found = read_answer(content, rules=rules, **extra)
    except DOMAIN_ERRORS as error:
        assert type(error) in DOMAIN_ERRORS  # not a subclass the caller treats differently (truncation)
        assert error.message and storable(error.message) == error.message
        error.message.encode("utf-8")
        return
    prose = (found.description, found.alt_text, *found.tags)
    for value in (*prose, found.text, *found.adjustments):
        assert storable(value) == value
        value.encode("utf-8")
    for value in prose:
        assert not any(mark in value for mark in "<>\n\t")
    assert found.description.strip() or (found.decorative and found.description == "")
    if found.decorative:
        assert found.alt_text == ""
    if found.fields is not None:
        encoded = json.dumps(found.fields, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        assert len(encoded.encode("utf-8")) <= FIELDS_MAX_BYTES and storable(encoded) == encoded
    assert utf8_size(found.description) <= rules.description_max_bytes
    assert len(found.alt_text) <= rules.alt_text_max_chars
    assert utf8_size(found.text) <= rules.text_max_bytes
    assert len(found.tags) <= rules.max_tags
    assert all(0 < len(tag) <= rules.tag_max_chars for tag in found.tags)
    assert len(set(found.tags)) == len(found.tags)
    assert len(found.adjustments) <= 20 and all(utf8_size(note) <= 200 for note in found.adjustments)
    assert not looks_like_refusal(found.description) and not looks_like_refusal(found.alt_text)


@PROFILE
@given(ANY_TEXT | st.text(max_size=2_000), RULES)
def test_arbitrary_text_is_read_or_refused(content: str, rules: AnswerRules) -> None:
    # GIVEN any text and any rules / WHEN it is read / THEN the contract holds
    assert_read_or_refused(content, rules)


@PROFILE
@given(DOCUMENTS, WRAPS, st.booleans(), RULES)
def test_arbitrary_json_documents_are_read_or_refused(
    document: dict[str, Any], wrap: str, ascii_only: bool, rules: AnswerRules
) -> None:
    # GIVEN any answer-shaped document, wrapped as models wrap it
    body = json.dumps(document, ensure_ascii=ascii_only)
    # WHEN it is read / THEN the contract holds
    assert_read_or_refused(wrap.replace("{}", body), rules)


@PROFILE
@given(JSON_VALUES, st.lists(JSON_VALUES.map(json.dumps) | ANY_TEXT, max_size=3), st.none() | ANY_TEXT, RULES)
def test_arbitrary_nesting_and_tool_arguments_are_read_or_refused(
    value: Any, arguments: list[str], refusal: str | None, rules: AnswerRules
) -> None:
    # GIVEN any JSON value, any tool arguments and any refusal / WHEN they are read / THEN the contract holds
    assert_read_or_refused(json.dumps(value), rules, tool_arguments=tuple(arguments), refusal=refusal)
