"""The bad-input corpus: every case is refused with its exact error class and a message a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.make_bad_corpus import BadCase, build_bad_corpus, write_corpus
from sightline import errors
from sightline.imaging import prepare_image

pytestmark = [
    pytest.mark.unit,
    # Pillow warns about the damaged and oversized files these tests feed it on purpose.
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

CORPUS = build_bad_corpus()


def test_the_corpus_covers_every_refusal() -> None:
    assert len(CORPUS) >= 25
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    expected = {case.expected for case in CORPUS}
    assert expected == {
        "EmptyObjectError",
        "NotAnImageError",
        "UnsupportedImageFormatError",
        "CorruptImageError",
        "ImageTooLargeError",
    }


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_bad_input_is_refused_with_the_expected_error(case: BadCase) -> None:
    expected = getattr(errors, case.expected)
    with pytest.raises(errors.PermanentInputError) as raised:
        prepare_image(case.data, "auto", max_pixels=100_000_000)
    assert type(raised.value) is expected, f"{case.why}: got {type(raised.value).__name__}: {raised.value.message}"
    assert raised.value.message.strip() and raised.value.message.isprintable()


def test_the_script_writes_files_and_a_manifest(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert {entry["name"] for entry in manifest} == {case.name for case in CORPUS}
    assert all((tmp_path / str(entry["name"])).stat().st_size == entry["bytes"] for entry in manifest)
