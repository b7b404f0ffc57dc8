"""The layer's build picks only an interpreter of the runtime's version to compile bytecode, and fails without one.

A .pyc of another Python version is ignored by the runtime, which then compiles the source again at every cold
start; so the build must never compile with the wrong interpreter, nor quietly ship no bytecode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

LAYER_SOURCE = Path(__file__).resolve().parents[2] / "layers" / "runtime"
FIND_PYTHON = LAYER_SOURCE / "find-python.sh"
THIS_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER_VERSION = f"{sys.version_info.major}.{sys.version_info.minor + 1}"


def find_python(version: str, explicit: str, *candidates: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(FIND_PYTHON), version, explicit, *candidates], capture_output=True, text=True, check=False
    )


def test_an_explicit_interpreter_of_the_runtimes_version_is_chosen_as_itself() -> None:
    # GIVEN this interpreter, asked for by its own version
    found = find_python(THIS_VERSION, sys.executable)
    # THEN it is the one, by its absolute path
    assert found.returncode == 0
    assert Path(found.stdout.strip()).resolve() == Path(sys.executable).resolve()


def test_an_explicit_interpreter_of_another_version_is_refused_and_not_replaced() -> None:
    # GIVEN LAYER_PYTHON naming an interpreter whose version is not the runtime's
    found = find_python(OTHER_VERSION, sys.executable)
    # THEN nothing is found, even if another interpreter of that version were installed
    assert found.returncode == 1
    assert found.stdout == ""


def test_a_candidate_of_another_version_is_skipped() -> None:
    # GIVEN no explicit choice, only candidates of the wrong version, and nowhere else to look
    env = {"PATH": "/nonexistent", "HOME": "/nonexistent", "PYENV_ROOT": "/nonexistent"}
    found = subprocess.run(
        ["/bin/sh", str(FIND_PYTHON), OTHER_VERSION, "", sys.executable],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert found.returncode == 1
    assert found.stdout == ""


def test_the_build_fails_before_downloading_when_no_interpreter_can_compile(tmp_path: Path) -> None:
    # GIVEN a layer build whose LAYER_PYTHON is not a CPython of the runtime's version
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    built = subprocess.run(
        [
            "make",
            "-C",
            str(LAYER_SOURCE),
            "build",
            f"ARTIFACTS_DIR={tmp_path}",
            f"PYTHON={sys.executable}",
            f"LAYER_PYTHON={sys.executable}",
            f"LAYER_PYTHON_VERSION={OTHER_VERSION}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    # THEN it stops at once with the way out, and has not started the download
    assert built.returncode != 0
    assert f"no CPython {OTHER_VERSION} to compile the bytecode with" in built.stderr
    assert "LAYER_BYTECODE=no" in built.stderr
    assert not (tmp_path / "python").exists()
