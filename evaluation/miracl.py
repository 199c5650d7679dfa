"""MIRACL (Zhang et al., TACL 2023): monolingual ad hoc retrieval over Wikipedia in 18 languages.

**Online only here**: the files come from the Hugging Face hub (``miracl/miracl`` for topics and qrels,
``miracl/miracl-corpus`` for the passages), which this project's machines cannot reach; the local
reader is tested on a small folder in MIRACL's layout (``tests/fixtures/miracl``). The hub files are
fetched as they are (:func:`fetch_miracl`, ``huggingface_hub.snapshot_download`` of one language's
files) rather than through ``datasets.load_dataset("miracl/miracl", lang)``: that dataset is a loading
script, which needs ``trust_remote_code`` (never used here) and which ``datasets`` >= 4 no longer runs.

MIRACL's layout, per language ``L`` and split ``S`` (``dev`` is the evaluation split MTEB reports)::

    miracl-v1.0-L/topics/topics.miracl-v1.0-L-S.tsv     qid<TAB>query text
    miracl-v1.0-L/qrels/qrels.miracl-v1.0-L-S.tsv       qid Q0 docid relevance (0 = judged not relevant)
    miracl-corpus-v1.0-L/docs-N.jsonl(.gz)              {"docid", "title", "text"} one passage a line

Records are checked as :mod:`pipeline.lareqa` checks LAReQA's (errors name the file, the line and the
field): UTF-8, a tab-separated topic line with a non-blank query and a unique qid, a qrel of four
fields with an integer relevance whose qid is a topic and whose docid is in the corpus, corpus lines of
JSON objects with string ``docid``/``title``/``text`` and a docid that no other passage has. The corpus is
streamed (never held whole): the qrel docids are checked in a first pass that also counts the passages.
"""
from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field as dc_field
from pathlib import Path

from pipeline.errors import DataError, field
from pipeline.io import decode_text
from pipeline.normalize import is_blank

HUB_TOPICS = "miracl/miracl"
HUB_CORPUS = "miracl/miracl-corpus"
# MIRACL language -> the ISO 639-3 + script codes MTEB's MIRACLRetrieval lists for it
MTEB_LANGUAGES = {
    "ar": "ara-Arab", "bn": "ben-Beng", "de": "deu-Latn", "en": "eng-Latn", "es": "spa-Latn", "fa": "fas-Arab",
    "fi": "fin-Latn", "fr": "fra-Latn", "hi": "hin-Deva", "id": "ind-Latn", "ja": "jpn-Jpan", "ko": "kor-Kore",
    "ru": "rus-Cyrl", "sw": "swa-Latn", "te": "tel-Telu", "th": "tha-Thai", "yo": "yor-Latn", "zh": "zho-Hans",
}


def topics_path(root: Path, lang: str, split: str) -> Path:
    return Path(root) / f"miracl-v1.0-{lang}" / "topics" / f"topics.miracl-v1.0-{lang}-{split}.tsv"


def qrels_path(root: Path, lang: str, split: str) -> Path:
    return Path(root) / f"miracl-v1.0-{lang}" / "qrels" / f"qrels.miracl-v1.0-{lang}-{split}.tsv"


def corpus_files(corpus_root: Path, lang: str) -> list[Path]:
    """``docs-N.jsonl`` / ``docs-N.jsonl.gz`` of one language, in the order of N."""
    folder = Path(corpus_root) / f"miracl-corpus-v1.0-{lang}"
    files = [p for p in folder.glob("docs-*.jsonl*") if re.fullmatch(r"docs-\d+\.jsonl(\.gz)?", p.name)]
    if not files:
        raise DataError(f"{folder}: no corpus files (docs-N.jsonl or docs-N.jsonl.gz)")
    return sorted(files, key=lambda p: int(re.search(r"\d+", p.name).group()))


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 text file (gzip when it ends in .gz); undecodable bytes name the line."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            yield n, decode_text(raw, f"{path}: line {n}") if n == 1 else _utf8(raw, path, n)


def _utf8(raw: bytes, path: Path, n: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: line {n}: not UTF-8 text: byte 0x{raw[err.start]:02x}") from None


def read_topics(path: Path) -> dict[str, str]:
    """qid -> query text."""
    topics: dict[str, str] = {}
    for n, line in _lines(Path(path)):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}: line {n}: expected 'qid<TAB>query', got {len(parts)} tab-separated fields")
        qid, text = parts[0].strip(), parts[1]
        if not qid:
            raise DataError(f"{path}: line {n}: field 'qid' is empty")
        if is_blank(text):
            raise DataError(f"{path}: line {n} (qid {qid}): field 'query' is blank")
        if qid in topics:
            raise DataError(f"{path}: line {n}: qid {qid!r} repeats an earlier topic")
        topics[qid] = text
    return topics


def read_qrels(path: Path, topics: dict[str, str]) -> dict[str, dict[str, int]]:
    """qid -> docid -> relevance, from TREC qrels ``qid Q0 docid rel``; every qid must be a topic."""
    qrels: dict[str, dict[str, int]] = {}
    for n, line in _lines(Path(path)):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DataError(f"{path}: line {n}: expected 'qid Q0 docid relevance', got {len(parts)} fields")
        qid, _, docid, rel = parts
        if qid not in topics:
            raise DataError(f"{path}: line {n}: field 'qid' {qid!r} is not in the topics file")
        try:
            value = int(rel)
        except ValueError:
            raise DataError(f"{path}: line {n} (qid {qid}): field 'relevance' should be an integer, "
                            f"got {rel!r}") from None
        if docid in qrels.setdefault(qid, {}):
            raise DataError(f"{path}: line {n}: qid {qid} judges docid {docid!r} twice")
        qrels[qid][docid] = value
    return qrels


def iter_corpus(files: list[Path]) -> Iterator[tuple[str, str, str]]:
    """``(docid, title, text)`` of every passage, in file and line order, each record checked.

    A docid may appear once in all ``files`` (a repeated passage would be indexed and ranked twice, and
    a query's nDCG could exceed 1): only a hash of each docid is kept, and a repeated hash is confirmed
    by finding the earlier line, which the error names.
    """
    seen: set[int] = set()
    for i, path in enumerate(files):
        for n, line in _lines(path):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON at column {err.colno}: {err.msg}") from None
            if not isinstance(rec, dict):
                raise DataError(f"{where}: should be a JSON object, got {type(rec).__name__}")
            docid = field(rec, "docid", where, str)
            if not docid.strip() or "\n" in docid:
                raise DataError(f"{where}: field 'docid' {docid!r} is empty or holds a line break")
            if hash(docid) in seen and (first := _first_line_of(files[: i + 1], docid, path, n)):
                raise DataError(f"{where}: docid {docid!r} repeats the passage of {first[0]} line {first[1]}; "
                                "every docid of the corpus must be unique")
            seen.add(hash(docid))
            yield docid, field(rec, "title", f"{where} (docid {docid})", str), field(
                rec, "text", f"{where} (docid {docid})", str)


def _first_line_of(files: list[Path], docid: str, stop: Path, stop_line: int) -> tuple[Path, int] | None:
    """``(file, line)`` of the first passage ``docid`` before line ``stop_line`` of ``stop``, if any."""
    for path in files:
        for n, line in _lines(path):
            if path == stop and n >= stop_line:
                return None
            if docid in line and line.strip() and json.loads(line).get("docid") == docid:
                return path, n
    return None


def passage_text(title: str, text: str) -> str:
    """A passage as MIRACL's dense baselines and MTEB encode it: title, a space, text."""
    return f"{title} {text}".strip() if title else text


@dataclass
class MIRACL:
    """One language and split of MIRACL: topics, qrels and the corpus files (streamed by :meth:`passages`)."""

    lang: str
    split: str
    topics: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: list[Path]
    passages_count: int = 0
    source: dict = dc_field(default_factory=dict)

    def passages(self) -> Iterator[tuple[str, str]]:
        """``(docid, title + " " + text)`` of every passage, in corpus order."""
        for docid, title, text in iter_corpus(self.corpus):
            yield docid, passage_text(title, text)


def load_miracl(root: str | Path, lang: str, split: str = "dev", corpus_root: str | Path | None = None,
                source: dict | None = None) -> MIRACL:
    """Read and check one language of a folder in MIRACL's layout (see the module doc).

    ``corpus_root`` holds ``miracl-corpus-v1.0-<lang>/`` (default: ``root``). The corpus is read once here,
    to check its records and that every judged docid exists.
    """
    root = Path(root)
    corpus_root = Path(corpus_root) if corpus_root else root
    tpath, qpath = topics_path(root, lang, split), qrels_path(root, lang, split)
    topics = read_topics(tpath)
    qrels = read_qrels(qpath, topics)
    files = corpus_files(corpus_root, lang)
    judged = {d for rels in qrels.values() for d in rels}
    count = 0
    for docid, _, _ in iter_corpus(files):
        judged.discard(docid)
        count += 1
    if judged:
        missing = sorted(judged)
        where = next(q for q, rels in sorted(qrels.items()) if missing[0] in rels)
        raise DataError(f"{qpath}: qid {where} judges docid {missing[0]!r}, which is not in the corpus "
                        f"({files[0].parent}); {len(missing)} judged docid(s) unknown in all")
    return MIRACL(lang, split, topics, qrels, files, count, source or {"from": "local folder", "root": str(root)})


def fetch_miracl(lang: str, split: str = "dev", revision: str | None = None,
                 corpus_revision: str | None = None) -> MIRACL:
    """Download one language of MIRACL from the hub (topics and qrels of ``split``, the whole corpus) and read it.

    The repositories are gated: accept their terms on the hub and log in (``HF_TOKEN``) first.
    """
    import os

    from huggingface_hub import snapshot_download

    if lang not in MTEB_LANGUAGES:
        raise DataError(f"MIRACL has no language {lang!r}; valid: {sorted(MTEB_LANGUAGES)}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    try:
        root = Path(snapshot_download(HUB_TOPICS, repo_type="dataset", revision=revision, allow_patterns=[
            f"miracl-v1.0-{lang}/topics/*-{split}.tsv", f"miracl-v1.0-{lang}/qrels/*-{split}.tsv"]))
        corpus = Path(snapshot_download(HUB_CORPUS, repo_type="dataset", revision=corpus_revision,
                                        allow_patterns=[f"miracl-corpus-v1.0-{lang}/docs-*"]))
    except Exception as err:  # the hub client raises many types; all mean "not available"
        hint = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise DataError(f"MIRACL {lang}: the hub datasets {HUB_TOPICS} and {HUB_CORPUS} could not be fetched"
                        f"{hint}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. MIRACL "
                        f"is online-only here; give a local copy in MIRACL's layout with --miracl-dir") from err
    source = {"from": "huggingface hub", "topics": HUB_TOPICS, "topics_revision": revision or "main",
              "corpus": HUB_CORPUS, "corpus_revision": corpus_revision or "main"}
    return load_miracl(root, lang, split, corpus, source)
