"""Text normalisation for comparisons: the key for duplicates, leakage, copies and blank texts.

One definition serves gathering (:mod:`pipeline.sources`), evaluation (:mod:`pipeline.lareqa`) and
the quality filter (:mod:`pipeline.quality`), so "blank" and "equal" mean the same everywhere.
"""
from __future__ import annotations

import unicodedata


def _is_edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def normalize(text: str | None) -> str:
    """Comparison key: Unicode NFKC, casefold, whitespace collapsed, punctuation stripped at both ends."""
    if not isinstance(text, str):
        return ""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return text[start:end]


def is_blank(text: str | None) -> bool:
    """Nothing left once normalised: missing, empty, whitespace or punctuation only."""
    return normalize(text) == ""
