"""The README's error taxonomy matches the code: every documented type exists, every type is documented."""

from __future__ import annotations

import re

import pytest

import sightline.documents
import sightline.errors
import sightline.events
import sightline.pages
from sightline.errors import SightlineError
from tests.conftest import REPO

pytestmark = pytest.mark.unit

# Bases that are never raised themselves.
ABSTRACT = {"SightlineError", "PermanentInputError", "TransientError"}


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def error_types() -> set[str]:
    # imported so that their error classes are registered
    assert sightline.events and sightline.pages and sightline.documents
    return {cls.error_type for cls in _subclasses(SightlineError)} - ABSTRACT


def readme_table_types() -> set[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Errors: what is retried and what is not", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return {name for row in rows[1:] for name in re.findall(r"`([A-Z][A-Za-z]+)`", row.split("|")[2])}


def test_every_error_type_in_the_readme_table_exists_in_the_code() -> None:
    assert readme_table_types() - error_types() == set()


def test_every_error_type_the_code_can_record_is_documented() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    undocumented = {name for name in error_types() if f"`{name}`" not in readme}
    assert undocumented == set()
    assert sightline.errors.RecordRejectedError.error_type in readme_table_types()
