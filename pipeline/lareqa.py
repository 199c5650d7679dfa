"""LAReQA evaluation data (XQuAD-R, MLQA-R): questions, the candidate pool and the gold answers.

Files are SQuAD v1.1 JSON with ``sentences`` and ``sentence_breaks`` (character spans into
``context``) per paragraph, one file per language. Following LAReQA:

* the **pool** is every sentence of every paragraph in every language;
* the **gold** of a question in language L is the sentence of its paragraph (in L) that holds
  ``answers[0].answer_start``. Spans are half-open ``[start, end)``. When the start falls in the gap
  between two sentences (outside every span) the *following* sentence is gold, because the answer
  text begins there; after the last sentence, the last one. ``LAReQA.gap_answers`` counts those
  cases (0 in the real XQuAD-R and MLQA-R files; 30+ answers start exactly where a sentence ends and
  the next begins, which the half-open rule gives to the next sentence).
* In the multilingual setting every language's gold sentence of the same question ``id`` is relevant.

Every file is checked record by record before anything is returned, with the same rules as the
training sources (:mod:`pipeline.sources`; table and error texts in ``docs/data-rules.md``): UTF-8
(a byte-order mark is accepted), ``sentence_breaks`` inside the context, ordered and not
overlapping, question ids unique in a file, no blank question or answer sentence.

Candidate ids are ``{lang}:{article}:{paragraph}:{sentence}``; query ids ``{lang}:{id}``.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import DataError, field
from .io import read_json
from .normalize import is_blank

logger = logging.getLogger(__name__)

__all__ = ["DataError", "LAReQA", "check_breaks", "dataset_files", "fetch_data_file", "gold_sentence",
           "load_lareqa", "parse_file"]


@dataclass
class LAReQA:
    """A LAReQA dataset. ``queries``: qid, id, lang, text, gold. ``pool``: cand_id, lang, text, context."""

    name: str
    queries: pd.DataFrame
    pool: pd.DataFrame
    gap_answers: int = 0

    @property
    def languages(self) -> list[str]:
        return sorted(self.pool["lang"].unique())

    def gold_by_id(self) -> dict[str, list[str]]:
        """Question ``id`` -> the gold candidate ids in every language where the question exists."""
        return self.queries.groupby("id", sort=False)["gold"].apply(list).to_dict()


def gold_sentence(breaks: list[list[int]], answer_start: int) -> tuple[int, bool]:
    """Index of the sentence holding ``answer_start`` and whether it fell in a gap (see module doc)."""
    starts = [b for b, _ in breaks]
    i = bisect.bisect_right(starts, answer_start) - 1
    if i >= 0 and answer_start < breaks[i][1]:
        return i, False
    return min(i + 1, len(breaks) - 1), True


def check_breaks(breaks, context: str, where: str) -> list[list[int]]:
    """``sentence_breaks`` validated against ``context``: a non-empty list of integer ``[start, end)``
    spans, each non-empty and inside the context, in order and not overlapping."""
    if not isinstance(breaks, list) or not breaks:
        raise DataError(f"{where}: field 'sentence_breaks' should be a non-empty list of [start, end] spans")
    prev = 0
    for i, span in enumerate(breaks):
        if not (isinstance(span, list) and len(span) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
            raise DataError(f"{where}: field 'sentence_breaks'[{i}] should be [start, end] integers, got {span!r}")
        a, b = span
        if not 0 <= a < b <= len(context):
            raise DataError(f"{where}: field 'sentence_breaks'[{i}] {span} is not a non-empty span inside the "
                            f"context (length {len(context)})")
        if a < prev:
            raise DataError(f"{where}: field 'sentence_breaks'[{i}] {span} starts before the previous span ends "
                            f"({prev}): spans must be ordered and must not overlap")
        prev = b
    return breaks


def answer_start(qa: dict, context: str, qwhere: str, qid) -> int:
    """``answers[0].answer_start``, an int inside ``context``."""
    start = field(qa["answers"][0], "answer_start", f"{qwhere}.answers[0]", int)
    if not 0 <= start < len(context):
        raise DataError(f"{qwhere} (id {qid}): field 'answer_start' {start} outside the context")
    return start


def check_question(question: str, qwhere: str, qid) -> str:
    """A question that is blank once normalised (:func:`pipeline.normalize.is_blank`) is an error."""
    if is_blank(question):
        raise DataError(f"{qwhere} (id {qid}): field 'question' is blank")
    return question


def check_answer_sentence(text, s: int, where: str, qwhere: str, qid) -> str:
    """The gold (answer) sentence ``s`` of a question: a string, not blank once normalised."""
    if not isinstance(text, str):
        raise DataError(f"{where}.sentences[{s}]: should be str, got {type(text).__name__}")
    if is_blank(text):
        raise DataError(f"{qwhere} (id {qid}): the answer sentence ({where.split(': ', 1)[-1]}.sentences[{s}]) "
                        f"is blank")
    return text


def check_unique_id(seen: dict, qid, qwhere: str, path) -> None:
    """Question ids are unique within a file: a repeat names both records."""
    key = str(qid)
    if key in seen:
        raise DataError(f"{qwhere}: field 'id' {qid!r} repeats the question at {seen[key]} "
                        f"(question ids must be unique in {Path(path).name})")
    seen[key] = qwhere.split(": ", 1)[-1]


def parse_file(path: str | Path, lang: str) -> tuple[list[dict], list[dict], int]:
    """Queries and candidates of one language file, validated record by record."""
    path = Path(path)
    articles = field(read_json(path), "data", str(path), list)
    queries, pool, gaps, seen = [], [], 0, {}
    for a, art in enumerate(articles):
        paragraphs = field(art, "paragraphs", f"{path}: data[{a}]", list)
        for p, par in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = field(par, "context", where, str)
            sentences = field(par, "sentences", where, list)
            breaks = check_breaks(field(par, "sentence_breaks", where, list), context, where)
            if len(sentences) != len(breaks):
                raise DataError(f"{where}: field 'sentence_breaks' has {len(breaks)} spans for "
                                f"{len(sentences)} sentences")
            for s, text in enumerate(sentences):
                if not isinstance(text, str):
                    raise DataError(f"{where}.sentences[{s}]: should be str, got {type(text).__name__}")
                pool.append({"cand_id": f"{lang}:{a}:{p}:{s}", "lang": lang, "text": text, "context": context})
            for q, qa in enumerate(field(par, "qas", where, list)):
                qwhere = f"{where}.qas[{q}]"
                qid = field(qa, "id", qwhere, str)
                check_unique_id(seen, qid, qwhere, path)
                question = check_question(field(qa, "question", qwhere, str), qwhere, qid)
                if not field(qa, "answers", qwhere, list):
                    raise DataError(f"{qwhere} (id {qid}): field 'answers' is empty")
                s, gap = gold_sentence(breaks, answer_start(qa, context, qwhere, qid))
                check_answer_sentence(sentences[s], s, where, qwhere, qid)
                gaps += gap
                queries.append({
                    "qid": f"{lang}:{qid}", "id": qid, "lang": lang, "text": question,
                    "gold": f"{lang}:{a}:{p}:{s}", "answer": qa["answers"][0].get("text", ""),
                })
    if not queries:
        raise DataError(f"{path}: no questions (field 'data' holds no paragraph with 'qas')")
    return queries, pool, gaps


def load_lareqa(name: str, files: dict[str, str | Path]) -> LAReQA:
    """Load one dataset from ``{lang: path}``; languages in sorted order, records in file order."""
    queries, pool, gaps = [], [], 0
    for lang in sorted(files):
        q, c, g = parse_file(files[lang], lang)
        queries += q
        pool += c
        gaps += g
    qdf = pd.DataFrame(queries, columns=["qid", "id", "lang", "text", "gold", "answer"])
    return LAReQA(name, qdf, pd.DataFrame(pool, columns=["cand_id", "lang", "text", "context"]), gaps)


def fetch_data_file(name: str, mirror_path: str | None, url: str | None, sha256: str | None, mirror: str | Path,
                    pin_key: str) -> Path:
    """A data file: the mirror copy (checked against ``sha256`` when given), else a download of ``url``,
    which must be pinned by ``sha256`` (``pin_key`` names where in params.yaml).

    A file missing from the mirror is reported on stderr, with the path tried, before the download.
    """
    from .assets import Asset, fetch

    local = (Path(mirror) / mirror_path).resolve() if mirror_path else None
    if local is not None and not local.exists() and url:
        if not sha256:
            raise DataError(f"{name}: not in the mirror: {local} is missing, and {url} is not pinned: "
                            f"add its sha256 to params.yaml {pin_key}")
        logger.warning("%s: not in the mirror: %s is missing; downloading %s (sha256 %s...)", name, local, url,
                       sha256[:12])
    if local is None and url and not sha256:
        raise DataError(f"{name}: {url} is not pinned: add its sha256 to params.yaml {pin_key}")
    return fetch(Asset(name, mirror_path, url, sha256), mirror)


def dataset_files(spec, mirror: str | Path) -> dict[str, Path]:
    """Resolve a ``DatasetSpec`` (params.datasets.*) to local files: mirror first, pinned URL second."""
    sha, name = spec.sha256 or {}, Path(spec.path).name
    return {lang: fetch_data_file(f"{spec.path}/{lang}.json", f"{spec.path}/{lang}.json", spec.url.format(lang=lang),
                                  sha.get(lang), mirror, f"datasets.{name}.sha256.{lang}")
            for lang in spec.languages}
