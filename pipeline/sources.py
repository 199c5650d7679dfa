"""English QA sets turned into training *pairs*, cleaned and kept apart from the evaluation sets.

A pair is one question and its answer passage, the sentence that holds the answer. Every loader
returns a frame with :data:`pipeline.schema.PAIR_COLUMNS` (described there).

Loaders, by ``SourceSpec.type``:

* ``squad``: SQuAD v1.1 / v2.0 JSON. Unanswerable questions (``is_impossible`` or no answers) are
  dropped and counted. The answer sentence is the one holding ``answers[0].answer_start``, by the
  file's ``sentence_breaks`` when present (validated like the evaluation files'), otherwise by
  :func:`pipeline.text.sentence_spans`; an answer that starts between two sentences goes to the following one
  (:func:`pipeline.lareqa.gold_sentence`).
* ``lareqa``: a LAReQA folder (``{lang}.json``), read by :func:`pipeline.lareqa.parse_file`; the
  English rows are the pairs, the other languages' rows with the same question ``id`` are their
  human translations. A translated question without an English original is dropped and counted.
* ``hf``: a Hugging Face dataset (``datasets.load_dataset(hub_id, split=split)``) with a
  ``columns`` mapping; ``hub_id`` may also be a local folder written by ``save_to_disk`` or a local
  ``.json``/``.jsonl``/``.csv``/``.parquet`` file. A repeated id (WikiQA-style: several answers to one
  question) keeps its first pair; the later ones are dropped and counted (``duplicate_id``).

Every file loader applies the evaluation loader's rules (``docs/data-rules.md``): UTF-8 with an
optional byte-order mark, valid ``sentence_breaks``, question ids unique in a file, no blank question
or answer sentence. Malformed input raises :class:`pipeline.errors.DataError` naming the file, the
record and the field. Then :func:`clean_pairs` drops empty and duplicate pairs,
:func:`apply_leakage_guards` drops every pair whose question or passage also occurs, after
:func:`pipeline.normalize.normalize`, in an evaluation set its source is guarded against, and
:func:`limit_pairs` keeps a fixed sample of a source's English questions (``SourceSpec.limit``).
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import pandas as pd

from .assets import sha256_of
from .errors import DataError, field
from .io import read_json, read_text
from .lareqa import (
    LAReQA,
    answer_start,
    check_answer_sentence,
    check_breaks,
    check_question,
    check_unique_id,
    fetch_data_file,
    gold_sentence,
    parse_file,
)
from .normalize import is_blank, normalize
from .schema import PAIR_COLUMNS, REFERENCE_SYSTEM, SOURCE_LANG
from .text import sentence_spans

HF_COLUMN_KEYS = {"question", "passage", "id", "context", "label"}


# --------------------------------------------------------------------------- helpers

def pair_id(source: str, qid: str) -> str:
    """Stable id of a source question: the same across runs and languages."""
    return hashlib.sha1(f"{source}\x1f{qid}".encode()).hexdigest()[:16]


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    df["context"] = df["context"].astype("str")  # a string column even when every context is null
    return df


@dataclass
class SourcePairs:
    """The pairs of one source, with what the statistics report about it."""

    name: str
    type: str
    licence: str
    location: str
    pairs: pd.DataFrame
    dropped: dict[str, int] = dataclass_field(default_factory=dict)  # reason -> count (unanswerable, no_source, ...)
    sha256: str | None = None  # of a squad source's file


# --------------------------------------------------------------------------- loaders

def _squad_sentences(par: dict, context: str, where: str) -> tuple[list[list[int]], list]:
    """Spans and texts of a paragraph's sentences: the file's (validated) or the splitter's."""
    if "sentence_breaks" not in par:
        # a blank context is one blank sentence, so that every answer start maps to a sentence
        breaks = sentence_spans(context) or [[0, len(context)]]
        return breaks, [context[s:e] for s, e in breaks]
    breaks = check_breaks(field(par, "sentence_breaks", where, list), context, where)
    sentences = par.get("sentences")
    if sentences is not None and (not isinstance(sentences, list) or len(sentences) != len(breaks)):
        raise DataError(f"{where}: field 'sentences' does not match 'sentence_breaks' "
                        f"({len(breaks)} spans)")
    return breaks, sentences or [context[s:e] for s, e in breaks]


def load_squad(path: str | Path, source: str, with_context: bool = False) -> tuple[pd.DataFrame, int]:
    """English pairs of a SQuAD v1.1/v2.0 file and the number of unanswerable questions dropped."""
    path = Path(path)
    articles = field(read_json(path), "data", str(path), list)
    rows, unanswerable, seen = [], 0, {}
    for a, art in enumerate(articles):
        for p, par in enumerate(field(art, "paragraphs", f"{path}: data[{a}]", list)):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = field(par, "context", where, str)
            breaks, texts = _squad_sentences(par, context, where)
            for q, qa in enumerate(field(par, "qas", where, list)):
                qwhere = f"{where}.qas[{q}]"
                qid = field(qa, "id", qwhere, (str, int))
                check_unique_id(seen, qid, qwhere, path)
                question = field(qa, "question", qwhere, str)
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise DataError(f"{qwhere} (id {qid}): field 'is_impossible' should be bool")
                if impossible or not field(qa, "answers", qwhere, list):
                    unanswerable += 1
                    continue
                check_question(question, qwhere, qid)
                s, _ = gold_sentence(breaks, answer_start(qa, context, qwhere, qid))
                passage = check_answer_sentence(texts[s], s, where, qwhere, qid)
                rows.append({"pair_id": pair_id(source, str(qid)), "source": source, "lang": SOURCE_LANG,
                             "question": question, "passage": passage.strip(),
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
                         "system": "source" if lang == SOURCE_LANG else REFERENCE_SYSTEM})
    return _frame(rows), no_source


def _json_records(path: Path) -> list:
    """Records of a local ``.json`` (an array of objects) or ``.jsonl`` (one object a line) file."""
    text = read_text(path)
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise DataError(f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
        else:
            return doc if isinstance(doc, list) else [doc]  # an array of records, or a one-line JSON-lines file
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n}: not valid JSON at column {err.colno}: {err.msg}") from None
    return records


def _local_table(path: Path) -> tuple[list[str], dict[str, list], int]:
    """Column names, columns and length of a local ``.json``/``.jsonl``/``.csv`` file, decoded by the
    shared rules (UTF-8, byte-order mark accepted, errors name the file and the line)."""
    if path.suffix == ".csv":
        try:
            frame = pd.read_csv(io.StringIO(read_text(path)))
        except (ValueError, pd.errors.ParserError) as err:
            raise DataError(f"{path}: not valid CSV: {err}") from None
        frame = frame.astype(object).where(frame.notna(), None)
        return [str(c) for c in frame.columns], {str(c): frame[c].tolist() for c in frame.columns}, len(frame)
    records = _json_records(path)
    names: dict[str, None] = {}
    for n, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {n}: should be an object, got {type(rec).__name__}")
        names.update(dict.fromkeys(rec))
    return list(names), {c: [rec.get(c) for rec in records] for c in names}, len(records)


def _open_hf(hub_id: str, split: str) -> tuple[list[str], dict[str, list], int]:
    """Column names, columns and length of a hub id, a ``save_to_disk`` folder or a local data file."""
    local = Path(hub_id)
    if local.is_file() and local.suffix in (".json", ".jsonl", ".csv"):
        return _local_table(local)
    import datasets

    if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "state.json").exists()
                           or (local / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(local))
        ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    elif local.is_file() and local.suffix == ".parquet":
        ds = datasets.load_dataset("parquet", data_files={split: str(local)}, split=split)
    else:
        ds = datasets.load_dataset(hub_id, split=split)
    return list(ds.column_names), ds.to_dict(), len(ds)


def load_hf(hub_id: str, split: str, columns: dict[str, str], source: str, with_context: bool = False
            ) -> tuple[pd.DataFrame, dict[str, int]]:
    """English pairs of a Hugging Face dataset and the rows dropped, by reason.

    ``columns`` maps question/passage (required), id, context and label (optional) to column names.
    With ``label`` only rows whose label is true (1) are pairs (WikiQA style); the others are counted
    as ``unlabelled``. Without ``id`` the row number is the id (stable for a fixed dataset version).
    A repeated id keeps its first pair; each later one is counted as ``duplicate_id``.
    """
    unknown = set(columns) - HF_COLUMN_KEYS
    missing = {"question", "passage"} - set(columns)
    if unknown or missing:
        raise DataError(f"source {source!r}: field 'columns' must map question and passage (optional: id, "
                        f"context, label); unknown {sorted(unknown)}, missing {sorted(missing)}")
    names, table, n = _open_hf(hub_id, split)
    absent = [c for c in columns.values() if c not in names]
    if absent:
        raise DataError(f"{hub_id} (split {split}): columns {absent} not in the dataset ({names})")
    data = {key: table[col] for key, col in columns.items()}
    ids = [str(x) for x in data["id"]] if "id" in data else [str(i) for i in range(n)]
    rows, dropped, first = [], {"unlabelled": 0, "duplicate_id": 0}, set()
    for i in range(n):
        q, p = data["question"][i], data["passage"][i]
        where = f"{hub_id} (split {split}): record {i} (id {ids[i]})"
        for key, val in (("question", q), ("passage", p)):
            if val is not None and not isinstance(val, str):
                raise DataError(f"{where}: field {columns[key]!r} should be str, got {type(val).__name__}")
        if "label" in data and not data["label"][i]:
            dropped["unlabelled"] += 1
            continue
        for key, val in (("question", q), ("passage", p)):
            if is_blank(val):
                raise DataError(f"{where}: field {columns[key]!r} is blank")
        if ids[i] in first:
            dropped["duplicate_id"] += 1
            continue
        first.add(ids[i])
        ctx = data["context"][i] if "context" in data and with_context else None
        rows.append({"pair_id": pair_id(source, ids[i]), "source": source, "lang": SOURCE_LANG,
                     "question": q, "passage": p.strip(), "context": ctx, "system": "source"})
    return _frame(rows), dropped


def source_files(spec, mirror: str | Path, languages: Iterable[str] | None = None) -> dict[str, Path] | Path:
    """Local file(s) of a squad/lareqa ``SourceSpec``: mirror first, pinned canonical URL second."""
    if spec.type == "squad":
        if isinstance(spec.sha256, dict):
            raise DataError(f"source {spec.name!r}: field 'sha256' of a squad source is one hash, not a mapping")
        return fetch_data_file(spec.name, spec.path, spec.url, spec.sha256, mirror,
                               f"gather.sources[{spec.name}].sha256")
    if spec.sha256 is not None and not isinstance(spec.sha256, dict):
        raise DataError(f"source {spec.name!r}: field 'sha256' of a lareqa folder maps each language to a hash")
    sha = spec.sha256 or {}
    langs = [lang for lang in spec.languages if languages is None or lang in languages or lang == SOURCE_LANG]
    return {lang: fetch_data_file(f"{spec.name}/{lang}.json", f"{spec.path}/{lang}.json" if spec.path else None,
                                  spec.url.format(lang=lang) if spec.url else None, sha.get(lang), mirror,
                                  f"gather.sources[{spec.name}].sha256.{lang}")
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
    dropped, sha = {}, None
    if spec.type == "squad":
        path = source_files(spec, mirror)
        sha = spec.sha256 or sha256_of(path)  # a pinned file was checked against its pin
        df, dropped["unanswerable"] = load_squad(path, spec.name, with_context)
    elif spec.type == "lareqa":
        files = source_files(spec, mirror, None if languages is None else list(languages))
        df, dropped["no_source"] = load_lareqa_source(files, spec.name, with_context)
    elif spec.type == "hf":
        if not spec.columns:
            raise DataError(f"source {spec.name!r}: type 'hf' needs field 'columns'")
        df, dropped = load_hf(spec.hub_id, spec.split, spec.columns, spec.name, with_context)
    else:  # pragma: no cover - params validation forbids it
        raise DataError(f"source {spec.name!r}: unknown type {spec.type!r}")
    return SourcePairs(spec.name, spec.type, spec.licence, source_location(spec), df, dropped, sha)


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
    keys = zip(df.loc[rest, "lang"], qn[rest], pn[rest], strict=True)
    first_seen = pd.Series(list(keys), index=rest).duplicated()
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


def _hits(df: pd.DataFrame, texts: set[str], qn: pd.Series, pn: pd.Series) -> set[str]:
    """pair_ids with a question or passage (normalised: ``qn``, ``pn``) in ``texts``, in any language."""
    return set(df.loc[qn.isin(texts) | pn.isin(texts), "pair_id"])


def apply_leakage_guards(df: pd.DataFrame, texts: dict[str, set[str]], guards: dict[str, list[str]]
                         ) -> tuple[pd.DataFrame, dict[tuple[str, str], int], dict[str, dict[tuple[str, str], int]]]:
    """Drop every pair of a source that shares a question or passage with an evaluation set it is guarded
    against: ``texts`` maps each set to its :func:`evaluation_texts`, ``guards`` each source to its sets
    (a source not in ``guards`` is not guarded).

    As in :func:`apply_leakage_guard`, a hit in any language removes the whole pair. Returns the kept
    rows, the rows removed per ``(source, lang)`` and, per evaluation set, the rows that hit it per
    ``(source, lang)`` (a pair in two sets counts in both; the removal counts it once).
    """
    qn, pn = df["question"].map(normalize), df["passage"].map(normalize)
    hits = {name: _hits(df, t, qn, pn) for name, t in texts.items()}
    leaked = pd.Series(False, index=df.index)
    by_set = {}
    for name, ids in hits.items():
        guarded = df["source"].isin([s for s, sets in guards.items() if name in sets])
        hit = guarded & df["pair_id"].isin(ids)
        by_set[name] = _count(df, hit)
        leaked |= hit
    return df[~leaked].reset_index(drop=True), _count(df, leaked), by_set


def apply_leakage_guard(df: pd.DataFrame, texts: set[str]) -> tuple[pd.DataFrame, dict[tuple[str, str], int]]:
    """Drop every pair whose question or passage, normalised, is in ``texts`` (see :func:`evaluation_texts`).

    A hit in any language removes the whole pair (all languages of its ``pair_id``): the
    translations of a leaked question leak it too. Returns the kept rows and the rows removed per
    ``(source, lang)``.
    """
    hit = df["question"].map(normalize).isin(texts) | df["passage"].map(normalize).isin(texts)
    leaked = df["pair_id"].isin(set(df.loc[hit, "pair_id"]))
    return df[~leaked].reset_index(drop=True), _count(df, leaked)


# --------------------------------------------------------------------------- sample

def sample_key(seed: int, pid: str) -> str:
    """Where a pair comes in a source's sample order: sha256 of the seed and its ``pair_id``."""
    return hashlib.sha256(f"{seed}\x1f{pid}".encode()).hexdigest()


def limit_pairs(df: pd.DataFrame, source: str, limit: int | None, seed: int = 0
                ) -> tuple[pd.DataFrame, dict[tuple[str, str], int]]:
    """Keep ``limit`` English questions of ``source`` (all when fewer or ``None``) with their translations.

    The questions kept are the first ``limit`` in the order of :func:`sample_key`: the same on every
    machine and library version, nested (a smaller limit keeps a subset), and moved little by pairs
    that cleaning or the guard remove. Other sources' rows and the row order are untouched. Returns the
    kept rows and the rows sampled away per ``(source, lang)``.
    """
    if limit is None:
        return df, {}
    own = df["source"] == source
    ids = sorted(set(df.loc[own & (df["lang"] == SOURCE_LANG), "pair_id"]), key=lambda pid: sample_key(seed, pid))
    away = own & ~df["pair_id"].isin(set(ids[:limit]))
    return df[~away].reset_index(drop=True), _count(df, away)
