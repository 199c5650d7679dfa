"""English QA sets turned into training *pairs*, cleaned and kept apart from the evaluation sets.

A pair is one question and its answer passage, the sentence that holds the answer. Every loader
returns a frame with :data:`PAIR_COLUMNS`:

=========  ===================================================================================
pair_id    ``sha1(source + "\\x1f" + original question id)[:16]``: the same in every run and in
           every language, so a question's translations share its id
source     the source's name (``gather.sources[*].name``)
lang       ISO 639 code; English rows are the source pairs
question   the question
passage    the answer sentence
context    the paragraph holding the answer when ``with_context`` is set, else null
system     ``source`` for the English original, ``reference`` for a human translation the source
           itself carries (LAReQA folders)
=========  ===================================================================================

Loaders, by ``SourceSpec.type``:

* ``squad``: SQuAD v1.1 / v2.0 JSON. Unanswerable questions (``is_impossible`` or no answers) are
  dropped and counted. The answer sentence is the one holding ``answers[0].answer_start``, by the
  file's ``sentence_breaks`` when present, otherwise by :func:`split_sentences`; an answer that
  starts between two sentences goes to the following one (:func:`pipeline.lareqa.gold_sentence`).
* ``lareqa``: a LAReQA folder (``{lang}.json``), read by :func:`pipeline.lareqa.parse_file`; the
  English rows are the pairs, the other languages' rows with the same question ``id`` are their
  human translations. A translated question without an English original is dropped and counted.
* ``hf``: a Hugging Face dataset (``datasets.load_dataset(hub_id, split=split)``) with a
  ``columns`` mapping; ``hub_id`` may also be a local folder written by ``save_to_disk`` or a local
  ``.json``/``.jsonl``/``.csv``/``.parquet`` file.

Then :func:`clean_pairs` drops empty and duplicate pairs and :func:`apply_leakage_guard` drops every
pair whose question or passage also occurs, after :func:`normalize`, in an evaluation set.
Malformed input raises :class:`pipeline.lareqa.DataError` naming the file, the record and the field.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from .lareqa import DataError, LAReQA, gold_sentence, parse_file
from .text import sentence_spans

PAIR_COLUMNS = ["pair_id", "source", "lang", "question", "passage", "context", "system"]
SOURCE_LANG = "en"
HF_COLUMN_KEYS = {"question", "passage", "id", "context", "label"}


# --------------------------------------------------------------------------- text helpers

def pair_id(source: str, qid: str) -> str:
    """Stable id of a source question: the same across runs and languages."""
    return hashlib.sha1(f"{source}\x1f{qid}".encode("utf-8")).hexdigest()[:16]


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


def split_sentences(text: str) -> list[list[int]]:
    """Sentence spans of a context without ``sentence_breaks`` (:func:`pipeline.text.sentence_spans`);
    an empty context is one empty sentence, so every answer start maps to a sentence."""
    return sentence_spans(text) or [[0, len(text)]]


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    df["context"] = df["context"].astype("str")  # a string column even when every context is null
    return df


def _unique_ids(ids: Iterable[str]) -> list[str]:
    """Repeated ids get ``#2``, ``#3``, ... (in order), so every pair has its own pair_id."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if seen[i] == 1 else f"{i}#{seen[i]}")
    return out


@dataclass
class SourcePairs:
    """The pairs of one source, with what the statistics report about it."""

    name: str
    type: str
    licence: str
    location: str
    pairs: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count (unanswerable, no_source)


# --------------------------------------------------------------------------- loaders

def _json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text: {err}") from None


def _field(obj, key: str, where: str, kind):
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    val = obj[key]
    if not isinstance(val, kind):
        name = getattr(kind, "__name__", " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind)
        raise DataError(f"{where}: field {key!r} should be {name}, got {type(val).__name__}")
    return val


def load_squad(path: str | Path, source: str, with_context: bool = False) -> tuple[pd.DataFrame, int]:
    """English pairs of a SQuAD v1.1/v2.0 file and the number of unanswerable questions dropped."""
    path = Path(path)
    articles = _field(_json(path), "data", str(path), list)
    rows, unanswerable = [], 0
    for a, art in enumerate(articles):
        for p, par in enumerate(_field(art, "paragraphs", f"{path}: data[{a}]", list)):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(par, "context", where, str)
            if "sentence_breaks" in par:
                breaks = _field(par, "sentence_breaks", where, list)
                if not breaks or not all(isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) for x in s)
                                         for s in breaks):
                    raise DataError(f"{where}: field 'sentence_breaks' should be a non-empty list of [start, end]")
                sentences = par.get("sentences")
                if sentences is not None and (not isinstance(sentences, list) or len(sentences) != len(breaks)):
                    raise DataError(f"{where}: field 'sentences' does not match 'sentence_breaks'")
                texts = sentences or [context[s:e] for s, e in breaks]
            else:
                breaks = split_sentences(context)
                texts = [context[s:e] for s, e in breaks]
            for q, qa in enumerate(_field(par, "qas", where, list)):
                qwhere = f"{where}.qas[{q}]"
                qid = _field(qa, "id", qwhere, (str, int))
                question = _field(qa, "question", qwhere, str)
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise DataError(f"{qwhere} (id {qid}): field 'is_impossible' should be bool")
                answers = _field(qa, "answers", qwhere, list)
                if impossible or not answers:
                    unanswerable += 1
                    continue
                start = _field(answers[0], "answer_start", f"{qwhere}.answers[0]", int)
                if isinstance(start, bool) or not 0 <= start < len(context):
                    raise DataError(f"{qwhere} (id {qid}): field 'answer_start' {start} outside the context")
                s, _ = gold_sentence(breaks, start)
                if not isinstance(texts[s], str):
                    raise DataError(f"{where}.sentences[{s}]: should be str")
                rows.append({"pair_id": pair_id(source, str(qid)), "source": source, "lang": SOURCE_LANG,
                             "question": question, "passage": texts[s].strip(),
                             "context": context if with_context else None, "system": "source"})
    return _frame(rows), unanswerable


def load_lareqa_source(files: dict[str, str | Path], source: str, with_context: bool = False
                       ) -> tuple[pd.DataFrame, int]:
    """Pairs of a LAReQA folder: English sources plus the human translations sharing their ``id``.

    Returns the frame (English first, then the other languages in the order of ``files``, records
    in file order) and the number of translated questions dropped for lack of an English original.
    """
    if SOURCE_LANG not in files:
        raise DataError(f"source {source!r}: a LAReQA source needs its {SOURCE_LANG}.json (got {sorted(files)})")
    order = [SOURCE_LANG] + [lang for lang in files if lang != SOURCE_LANG]
    rows, english, no_source = [], set(), 0
    for lang in order:
        queries, pool, _ = parse_file(files[lang], lang)
        text = {c["cand_id"]: (c["text"], c["context"]) for c in pool}
        for q in queries:
            if lang == SOURCE_LANG:
                english.add(q["id"])
            elif q["id"] not in english:
                no_source += 1
                continue
            passage, context = text[q["gold"]]
            rows.append({"pair_id": pair_id(source, q["id"]), "source": source, "lang": lang,
                         "question": q["text"], "passage": passage.strip(),
                         "context": context if with_context else None,
                         "system": "source" if lang == SOURCE_LANG else "reference"})
    return _frame(rows), no_source


def _open_hf(hub_id: str, split: str):
    """``datasets`` object for a hub id, a ``save_to_disk`` folder or a local data file."""
    import datasets

    local = Path(hub_id)
    if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "state.json").exists()
                           or (local / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(local))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    builders = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    if local.is_file() and local.suffix in builders:
        return datasets.load_dataset(builders[local.suffix], data_files={split: str(local)}, split=split)
    return datasets.load_dataset(hub_id, split=split)


def load_hf(hub_id: str, split: str, columns: dict[str, str], source: str, with_context: bool = False
            ) -> tuple[pd.DataFrame, int]:
    """English pairs of a Hugging Face dataset; ``columns`` maps question/passage (required), id,
    context and label (optional) to column names. With ``label`` only rows whose label is true
    (1) are pairs (WikiQA style); the others are counted as dropped. Without ``id`` the row number is
    the id (stable for a fixed dataset version)."""
    unknown = set(columns) - HF_COLUMN_KEYS
    missing = {"question", "passage"} - set(columns)
    if unknown or missing:
        raise DataError(f"source {source!r}: field 'columns' must map question and passage (optional: id, "
                        f"context, label); unknown {sorted(unknown)}, missing {sorted(missing)}")
    ds = _open_hf(hub_id, split)
    absent = [c for c in columns.values() if c not in ds.column_names]
    if absent:
        raise DataError(f"{hub_id} (split {split}): columns {absent} not in the dataset ({ds.column_names})")
    table = ds.select_columns(sorted(set(columns.values()))).to_dict()
    data = {key: table[col] for key, col in columns.items()}
    n = len(ds)
    ids = [str(x) for x in data["id"]] if "id" in data else [str(i) for i in range(n)]
    ids = _unique_ids(ids)
    rows, unlabelled = [], 0
    for i in range(n):
        q, p = data["question"][i], data["passage"][i]
        for key, val in (("question", q), ("passage", p)):
            if val is not None and not isinstance(val, str):
                raise DataError(f"{hub_id} (split {split}): record {i} (id {ids[i]}): field {columns[key]!r} "
                                f"should be str, got {type(val).__name__}")
        if "label" in data and not data["label"][i]:
            unlabelled += 1
            continue
        ctx = data["context"][i] if "context" in data and with_context else None
        rows.append({"pair_id": pair_id(source, ids[i]), "source": source, "lang": SOURCE_LANG,
                     "question": q or "", "passage": (p or "").strip(), "context": ctx, "system": "source"})
    return _frame(rows), unlabelled


def source_files(spec, mirror: str | Path, languages: Iterable[str] | None = None) -> dict[str, Path] | Path:
    """Local file(s) of a squad/lareqa ``SourceSpec``: mirror first, canonical URL second."""
    from .assets import Asset, fetch

    if spec.type == "squad":
        return fetch(Asset(spec.name, spec.path, spec.url, spec.sha256), mirror)
    if spec.sha256:
        raise DataError(f"source {spec.name!r}: field 'sha256' is for a single file; a lareqa folder has one per language")
    langs = [lang for lang in spec.languages if languages is None or lang in languages or lang == SOURCE_LANG]
    return {lang: fetch(Asset(f"{spec.name}/{lang}.json",
                              f"{spec.path}/{lang}.json" if spec.path else None,
                              spec.url.format(lang=lang) if spec.url else None), mirror)
            for lang in langs}


def source_location(spec) -> str:
    """Where a source canonically lives: its URL, its hub id, or (failing both) its mirror path."""
    if spec.type == "hf":
        return f"https://huggingface.co/datasets/{spec.hub_id}" if not Path(spec.hub_id).exists() else spec.hub_id
    return spec.url or spec.path


def load_source(spec, mirror: str | Path, with_context: bool = False,
                languages: Iterable[str] | None = None) -> SourcePairs:
    """Load one ``SourceSpec``; ``languages`` (params.languages) limits the translations read."""
    if spec.type in ("squad", "hf") and list(spec.languages) != [SOURCE_LANG]:
        raise DataError(f"source {spec.name!r}: field 'languages' must be [{SOURCE_LANG}] for type {spec.type!r}")
    dropped = {}
    if spec.type == "squad":
        df, dropped["unanswerable"] = load_squad(source_files(spec, mirror), spec.name, with_context)
    elif spec.type == "lareqa":
        files = source_files(spec, mirror, None if languages is None else list(languages))
        df, dropped["no_source"] = load_lareqa_source(files, spec.name, with_context)
    elif spec.type == "hf":
        if not spec.columns:
            raise DataError(f"source {spec.name!r}: type 'hf' needs field 'columns'")
        df, dropped["unlabelled"] = load_hf(spec.hub_id, spec.split, spec.columns, spec.name, with_context)
    else:  # pragma: no cover - params validation forbids it
        raise DataError(f"source {spec.name!r}: unknown type {spec.type!r}")
    return SourcePairs(spec.name, spec.type, spec.licence, source_location(spec), df, dropped)


# --------------------------------------------------------------------------- cleaning

def _drop_groups(df: pd.DataFrame, bad: pd.Series) -> pd.Series:
    """Rows to remove: the ``bad`` rows, plus every row of a pair whose English source row is bad."""
    bad_sources = set(df.loc[bad & (df["system"] == "source"), "pair_id"])
    return bad | (df["pair_id"].isin(bad_sources))


def _count(df: pd.DataFrame, mask: pd.Series) -> dict[tuple[str, str], int]:
    return {k: int(v) for k, v in df[mask].groupby(["source", "lang"]).size().items()}


def clean_pairs(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[tuple[str, str], int]]]:
    """Drop empty and duplicate pairs; return the kept rows and counts ``{reason: {(source, lang): n}}``.

    * ``empty``: question or passage empty once normalised (nothing but whitespace and punctuation);
    * ``duplicate``: a (question, passage) pair equal, after :func:`normalize`, to an earlier row of
      the same language (across all sources; the first occurrence is kept).

    Removing an English source row removes its translations too (they would have no source);
    a translated row is removed alone.
    """
    qn, pn = df["question"].map(normalize), df["passage"].map(normalize)
    empty = _drop_groups(df, (qn == "") | (pn == ""))
    rest = df.index[~empty]
    first_seen = pd.Series(list(zip(df.loc[rest, "lang"], qn[rest], pn[rest])), index=rest).duplicated()
    dup = _drop_groups(df, first_seen.reindex(df.index, fill_value=False)) & ~empty
    counts = {"empty": _count(df, empty), "duplicate": _count(df, dup)}
    return df[~(empty | dup)].reset_index(drop=True), counts


# --------------------------------------------------------------------------- leakage guard

def evaluation_texts(datasets: Iterable[LAReQA]) -> set[str]:
    """Normalised questions and pool sentences of the evaluation sets, in every language."""
    texts: set[str] = set()
    for ds in datasets:
        texts.update(normalize(t) for t in ds.queries["text"])
        texts.update(normalize(t) for t in ds.pool["text"])
    texts.discard("")
    return texts


def apply_leakage_guard(df: pd.DataFrame, texts: set[str]) -> tuple[pd.DataFrame, dict[tuple[str, str], int]]:
    """Drop every pair whose question or passage, normalised, is in ``texts`` (see :func:`evaluation_texts`).

    A hit in any language removes the whole pair (all languages of its ``pair_id``): the
    translations of a leaked question leak it too. Returns the kept rows and the rows removed per
    ``(source, lang)``.
    """
    hit = df["question"].map(normalize).isin(texts) | df["passage"].map(normalize).isin(texts)
    leaked = df["pair_id"].isin(set(df.loc[hit, "pair_id"]))
    return df[~leaked].reset_index(drop=True), _count(df, leaked)
