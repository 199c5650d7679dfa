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

Candidate ids are ``{lang}:{article}:{paragraph}:{sentence}``; query ids ``{lang}:{id}``.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class DataError(ValueError):
    """Malformed input; the message names the file, the record and the field."""


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


def _field(obj: dict, key: str, where: str, kind: type | tuple):
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    val = obj[key]
    if not isinstance(val, kind):
        raise DataError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {type(val).__name__}")
    return val


def gold_sentence(breaks: list[list[int]], answer_start: int) -> tuple[int, bool]:
    """Index of the sentence holding ``answer_start`` and whether it fell in a gap (see module doc)."""
    starts = [b for b, _ in breaks]
    i = bisect.bisect_right(starts, answer_start) - 1
    if i >= 0 and answer_start < breaks[i][1]:
        return i, False
    return min(i + 1, len(breaks) - 1), True


def parse_file(path: str | Path, lang: str) -> tuple[list[dict], list[dict], int]:
    """Queries and candidates of one language file, validated record by record."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None
    articles = _field(doc, "data", str(path), list)
    queries, pool, gaps = [], [], 0
    for a, art in enumerate(articles):
        paragraphs = _field(art, "paragraphs", f"{path}: data[{a}]", list)
        for p, par in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(par, "context", where, str)
            sentences = _field(par, "sentences", where, list)
            breaks = _field(par, "sentence_breaks", where, list)
            if len(sentences) != len(breaks) or not sentences:
                raise DataError(f"{where}: field 'sentence_breaks' has {len(breaks)} spans for {len(sentences)} sentences")
            for s, (text, span) in enumerate(zip(sentences, breaks)):
                if not isinstance(text, str) or not (isinstance(span, list) and len(span) == 2):
                    raise DataError(f"{where}.sentences[{s}]: expected a string with a [start, end] span")
                pool.append({"cand_id": f"{lang}:{a}:{p}:{s}", "lang": lang, "text": text, "context": context})
            for q, qa in enumerate(_field(par, "qas", where, list)):
                qwhere = f"{where}.qas[{q}]"
                qid = _field(qa, "id", qwhere, str)
                question = _field(qa, "question", qwhere, str)
                answers = _field(qa, "answers", qwhere, list)
                if not answers:
                    raise DataError(f"{qwhere} (id {qid}): field 'answers' is empty")
                start = _field(answers[0], "answer_start", f"{qwhere}.answers[0]", int)
                if not 0 <= start < len(context):
                    raise DataError(f"{qwhere} (id {qid}): field 'answer_start' {start} outside the context")
                s, gap = gold_sentence(breaks, start)
                gaps += gap
                queries.append({
                    "qid": f"{lang}:{qid}", "id": qid, "lang": lang, "text": question,
                    "gold": f"{lang}:{a}:{p}:{s}", "answer": answers[0].get("text", ""),
                })
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
    dup = qdf["qid"].duplicated()
    if dup.any():
        raise DataError(f"{name}: question id {qdf.loc[dup, 'qid'].iloc[0]!r} occurs twice in one language")
    return LAReQA(name, qdf, pd.DataFrame(pool, columns=["cand_id", "lang", "text", "context"]), gaps)


def dataset_files(spec, mirror: str | Path) -> dict[str, Path]:
    """Resolve a ``DatasetSpec`` (params.datasets.*) to local files: mirror first, canonical URL second."""
    from .assets import Asset, fetch

    return {
        lang: fetch(Asset(f"{spec.path}/{lang}.json", f"{spec.path}/{lang}.json", spec.url.format(lang=lang)), mirror)
        for lang in spec.languages
    }
