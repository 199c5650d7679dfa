"""Sentence splitting, shared by the SQuAD loader (answer sentences) and MT (translate by sentence).

A sentence ends at ``. ! ? …`` (plus closing quotes or brackets) followed by whitespace and a
character that is not a lower-case letter, unless the period follows a single capital (initials:
"J. R. R. Tolkien") or a common abbreviation ("Dr.", "e.g."); or at the CJK ``。！？``, the
Devanagari danda ``। ॥`` or the Arabic question mark ``؟``, whatever follows.
"""
from __future__ import annotations

import re

_LATIN_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s+([^\s]))")
_SCRIPT_END = re.compile(r"[。！？]+[\"'”’」』）]*|[।॥؟]+[\"'”’»)\]]*")
_NO_END = re.compile(r"(?:\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|Mt|No|vs|etc|e\.g|i\.e|U\.S))\.$")


def sentence_spans(text: str) -> list[list[int]]:
    """Half-open ``[start, end)`` spans of the sentences of ``text``, surrounding whitespace excluded.

    A text without an end mark is one sentence; blank text has none.
    """
    ends = sorted({m.end() for m in _LATIN_END.finditer(text)
                   if not m.group(1).islower() and not _NO_END.search(text[: m.end()])}
                  | {m.end() for m in _SCRIPT_END.finditer(text)})
    spans, start = [], 0
    for end in ends + [len(text)]:
        a, b = start, end
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append([a, b])
        start = end
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as strings (see :func:`sentence_spans`)."""
    return [text[a:b] for a, b in sentence_spans(text)]
