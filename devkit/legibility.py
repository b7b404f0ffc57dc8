"""Character error rate of OCR output against ground truth: the legibility test and the render-size benchmark."""

from __future__ import annotations

from collections.abc import Sequence


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def character_error_rate(read: Sequence[str], truth: Sequence[str]) -> float:
    """Characters only: RapidOCR drops some inter-word spaces on any input, so spaces are not compared."""
    expected = "".join(truth).replace(" ", "")
    return levenshtein("".join(read).replace(" ", ""), expected) / len(expected)
