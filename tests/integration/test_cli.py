"""The `sightline` command as the project's set-up installs it, run as a user would (a separate process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.samples import document_image
from tests.unit.images import encode, photo

pytestmark = pytest.mark.integration

SIGHTLINE = Path(sys.executable).parent / "sightline"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MODEL_", "AWS_ENDPOINT"))}
    return subprocess.run(
        [str(SIGHTLINE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_set_up_installs_the_command() -> None:
    assert SIGHTLINE.exists(), "make venv installs the sightline console script into the venv"


def test_describe_reads_local_files_through_the_offline_endpoint_with_a_profile(tmp_path: Path) -> None:
    # GIVEN a page with text and a file that is not an image, and no API key
    page = tmp_path / "page.png"
    page.write_bytes(encode(document_image(), "PNG"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"<html>403</html>")
    # WHEN they are described with the document profile, a language and a context
    done = run(
        "describe", "--json", "--profile", "documents", "--language", "de", "--context", "Rechnung", "page.png",
        "broken.jpg", cwd=tmp_path,
    )  # fmt: skip
    # THEN one JSON result a line: the page read, the broken file refused; exit 1 because one failed
    assert done.returncode == 1, done.stderr
    results = {Path(line["file"]).name: line for line in map(json.loads, done.stdout.splitlines())}
    assert results["page.png"]["status"] == "succeeded" and "Invoice number 4821" in results["page.png"]["text"]
    assert (results["page.png"]["profile"], results["page.png"]["language"]) == ("documents", "de")
    assert results["page.png"]["context_used"] is True
    assert set(results["page.png"]["fields"]) == {"invoice_number", "total", "currency", "invoice_date"}
    assert results["broken.jpg"]["error_type"] == "NotAnImage"
    assert "embedded offline OCR endpoint" in done.stderr


def test_describe_refuses_an_unknown_profile_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(encode(photo(64, 48), "JPEG"))
    done = run("describe", "--profile", "nope", "a.jpg", cwd=tmp_path)
    assert done.returncode == 2 and "no profile named 'nope'" in done.stderr
