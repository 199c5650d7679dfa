"""Quality filters for translated pairs: small pure rules, one :func:`filter_pairs` that applies them.

A translated row carries its English original (``src_question``, ``src_passage``). Each rule returns
the list of reasons it rejects the row for (empty when the row passes):

==========================  ===========================================================================
reason                      rule
==========================  ===========================================================================
``empty``                   question or passage is empty once normalised (only whitespace/punctuation)
``copy_question``           the question equals the English question after
``copy_passage``            :func:`pipeline.normalize.normalize` (same for the passage); never for English
``length_ratio_question``   effective length (:func:`effective_length`) of the translation over the
``length_ratio_passage``    English original's lies outside ``[min_length_ratio, max_length_ratio]``
``langid_question``         py3langid's label for the text is not the target language or one of its
``langid_passage``          :data:`LANGID_ACCEPT` varieties; skipped for texts shorter than
                            :data:`LANGID_MIN_CHARS` characters and for languages py3langid lacks
``roundtrip_question``      sentence chrF of the back-translation to English against the English
``roundtrip_passage``       original is below ``min_chrf`` (languages with ``filter.roundtrip`` only)
==========================  ===========================================================================

English rows (``lang == "en"``, the sources themselves) get the ``empty`` check only. The round
trip is the one expensive rule: it is measured only on rows that passed the others, so a row
rejected by a cheap rule has no chrF.

Length is measured in *effective characters* so scripts that pack more meaning per character are
not rejected as "too short": a Han character counts 3 (MLQA-R, human zh translations: median
character ratio zh/en 0.30 for questions and 0.35 for answer sentences; XQuAD-R 0.30 / 0.32),
kana 2, a Hangul syllable 2 (literature figures: Japanese and Korean text run about 0.4-0.5 of the
English character count; no parallel ja/ko data is available offline to calibrate them), Thai 1
(XQuAD-R: median th/en ratio 0.89 for questions). Every other character counts 1.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import console
from .errors import DataError
from .normalize import normalize
from .reproducibility import current_mode
from .schema import PAIR_COLUMNS, REFERENCE_SYSTEM, SOURCE_COLUMNS, SOURCE_LANG

REASONS = [
    "empty", "copy_question", "copy_passage", "length_ratio_question", "length_ratio_passage",
    "langid_question", "langid_passage", "roundtrip_question", "roundtrip_passage",
]
QUALITY_COLUMNS = [
    "length_ratio_question", "length_ratio_passage", "langid_question", "langid_passage",
    "roundtrip_chrf_question", "roundtrip_chrf_passage",
]

#: py3langid is unreliable on very short strings (a name, a number, "Warum?"): below this many
#: characters (after stripping) the language check is skipped.
LANGID_MIN_CHARS = 10

#: Labels accepted for a target language besides itself: varieties py3langid separates but that a
#: correct translation is often labelled as (checked on MLQA-R's human translations: 66 of 504 zh
#: questions come out as "wuu", 13 of 507 hi questions as "ne", 12 of 517 ar ones as "arz").
LANGID_ACCEPT: dict[str, set[str]] = {
    "zh": {"wuu", "yue"},
    "ar": {"arz", "ary"},
    "hi": {"ne", "mr"},
    "es": {"ext", "an"},
    "de": {"lb"},
    "it": {"vec", "lij"},
    "no": {"nn"}, "nb": {"no", "nn"}, "nn": {"no"},
    "sr": {"hr", "bs"}, "hr": {"sr", "bs"}, "bs": {"sr", "hr"},
    "ms": {"id"}, "id": {"ms"},
    "uz": {"uzs"},
    "ku": {"sdh"},
}

# (first code point, last code point, weight): see the module docstring.
SCRIPT_WEIGHTS = [
    (0x3400, 0x4DBF, 3.0), (0x4E00, 0x9FFF, 3.0), (0xF900, 0xFAFF, 3.0), (0x20000, 0x2FFFF, 3.0),  # Han
    (0x3040, 0x30FF, 2.0), (0x31F0, 0x31FF, 2.0), (0xFF66, 0xFF9F, 2.0),  # kana
    (0xAC00, 0xD7AF, 2.0), (0x1100, 0x11FF, 2.0), (0x3130, 0x318F, 2.0),  # Hangul
    (0x0E00, 0x0E7F, 1.0),  # Thai
]


def _str(value) -> str:
    return value if isinstance(value, str) else ""


# --------------------------------------------------------------------------- rules

def empty_reasons(question: str | None, passage: str | None) -> list[str]:
    return ["empty"] if normalize(question) == "" or normalize(passage) == "" else []


def copy_reasons(question: str, passage: str, src_question: str, src_passage: str, lang: str) -> list[str]:
    """The translation is the English original again (an MT failure mode); English itself is exempt."""
    if lang == SOURCE_LANG:
        return []
    out = []
    if normalize(question) == normalize(src_question):
        out.append("copy_question")
    if normalize(passage) == normalize(src_passage):
        out.append("copy_passage")
    return out


def effective_length(text: str) -> float:
    """Characters of ``text`` (stripped), each weighted by its script (:data:`SCRIPT_WEIGHTS`)."""
    total = 0.0
    for ch in _str(text).strip():
        cp, w = ord(ch), 1.0
        for lo, hi, weight in SCRIPT_WEIGHTS:
            if lo <= cp <= hi:
                w = weight
                break
        total += w
    return total


def length_ratio(translated: str, source: str) -> float:
    """Effective length of the translation over that of the English original (inf if the source is empty)."""
    src = effective_length(source)
    return effective_length(translated) / src if src else math.inf


def length_reasons(ratio_question: float, ratio_passage: float, low: float, high: float) -> list[str]:
    out = []
    if not low <= ratio_question <= high:
        out.append("length_ratio_question")
    if not low <= ratio_passage <= high:
        out.append("length_ratio_passage")
    return out


def detect_language(text: str, min_chars: int = LANGID_MIN_CHARS) -> str | None:
    """py3langid's label for ``text``, or None when it is too short to judge."""
    import py3langid

    text = _str(text).strip()
    if len(text) < min_chars:
        return None
    return py3langid.classify(text)[0]


def langid_known(lang: str) -> bool:
    """Whether py3langid can recognise ``lang`` at all (otherwise the check is skipped)."""
    import py3langid.langid as L

    return lang in L._get_identifier().labels


def language_matches(detected: str | None, lang: str) -> bool:
    return detected is None or detected == lang or detected in LANGID_ACCEPT.get(lang, set())


def langid_reasons(detected_question: str | None, detected_passage: str | None, lang: str) -> list[str]:
    out = []
    if not language_matches(detected_question, lang):
        out.append("langid_question")
    if not language_matches(detected_passage, lang):
        out.append("langid_passage")
    return out


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence-level chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100."""
    import sacrebleu

    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score)


def roundtrip_reasons(chrf_question: float, chrf_passage: float, min_chrf: float) -> list[str]:
    out = []
    if chrf_question < min_chrf:
        out.append("roundtrip_question")
    if chrf_passage < min_chrf:
        out.append("roundtrip_passage")
    return out


class _Counting:
    """``translator`` whose ``translate`` calls count their texts on a progress ``bar``."""

    def __init__(self, translator, bar):
        self.translator, self.bar, self.count = translator, bar, 0

    def translate(self, texts: list[str]) -> list[str]:
        out = self.translator.translate(texts)
        self.count += len(texts)
        self.bar.update(len(texts))
        return out

    def __getattr__(self, name: str):
        return getattr(self.translator, name)


def back_translate(translator, texts: list[str], resume: Resume | None = None, desc: str | None = None
                   ) -> list[str]:
    """``translator.translate`` over the distinct texts, mapped back onto ``texts``; with ``resume``,
    chunk by chunk through :func:`pipeline.translation_work.translate_resumable`, so a rerun after a kill
    reuses the finished chunks. With ``desc``, progress over the distinct texts (a line per quarter on
    stdout, :func:`pipeline.console.progress`; chunks reused from a killed run count at the end)."""
    unique = list(dict.fromkeys(texts))
    with console.progress(len(unique), desc or "", "texts", enabled=desc is not None and bool(unique)) as bar:
        counting = _Counting(translator, bar)
        if resume is not None and unique:
            from .translation_work import translate_resumable

            out = translate_resumable(unique, counting, resume.work_dir, resume.chunk_size, resume.fingerprint)
        else:
            out = counting.translate(unique) if unique else []
        if counting.count < len(unique):
            bar.update(len(unique) - counting.count)
    if len(out) != len(unique):
        raise RuntimeError(f"back-translation returned {len(out)} texts for {len(unique)}")
    mapping = dict(zip(unique, out, strict=True))
    return [mapping[t] for t in texts]


@dataclass(frozen=True)
class Resume:
    """Where one language's back-translation keeps its finished chunks (``work_dir``), how many texts a
    chunk holds, and the fingerprint (model and decoding settings) a reused chunk must match."""

    work_dir: Path
    chunk_size: int
    fingerprint: str = ""


# --------------------------------------------------------------------------- all rules together

def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with a fresh index, the source columns (null where absent) and a string context."""
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"filter input: missing columns {missing}")
    df = df.reset_index(drop=True).copy()
    for col in SOURCE_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df["context"] = df["context"].astype("str")  # a string column even when every context is null
    return df


def _cheap_rules(df: pd.DataFrame, settings, quality: dict[str, list], progress: bool = False) -> list[list[str]]:
    """Per row, the reasons of the empty, copy, length and langid rules; fills ``quality``."""
    reasons: list[list[str]] = []
    known: dict[str, bool] = {}
    with console.progress(len(df), "filter: rules", "rows", enabled=progress) as bar:
        for i, row in enumerate(df.itertuples(index=False)):
            reasons.append(_row_reasons(i, row, settings, quality, known))
            bar.update(1)
    return reasons


def _row_reasons(i: int, row, settings, quality: dict[str, list], known: dict[str, bool]) -> list[str]:
    """The cheap rules' reasons for row ``i`` (``known``: per language, whether py3langid knows it)."""
    q, p, lang = _str(row.question), _str(row.passage), row.lang
    r = empty_reasons(q, p)
    if lang != SOURCE_LANG and not r:
        sq, sp = _str(row.src_question), _str(row.src_passage)
        if not sq or not sp:
            raise DataError(f"filter input: row {i} (pair_id {row.pair_id}, lang {lang}): "
                            f"field {'src_question' if not sq else 'src_passage'!r} is empty")
        r += copy_reasons(q, p, sq, sp, lang)
        rq, rp = length_ratio(q, sq), length_ratio(p, sp)
        quality["length_ratio_question"][i], quality["length_ratio_passage"][i] = rq, rp
        r += length_reasons(rq, rp, settings.min_length_ratio, settings.max_length_ratio)
        if settings.check_langid:
            if lang not in known:
                known[lang] = langid_known(lang)
            if known[lang]:
                dq, dp = detect_language(q), detect_language(p)
                quality["langid_question"][i], quality["langid_passage"][i] = dq, dp
                r += langid_reasons(dq, dp, lang)
    return r


def _roundtrip_rule(df: pd.DataFrame, settings, translators: Mapping[str, Any], reasons: list[list[str]],
                    quality: dict[str, list], resume: Mapping[str, Resume], progress: bool = False
                    ) -> dict[str, list]:
    """Back-translate the rows that passed the cheap rules in the ``settings.roundtrip`` languages and
    add the round-trip reasons; fills ``quality`` and returns the back-translations by column."""
    n = len(df)
    back = {"roundtrip_question": [None] * n, "roundtrip_passage": [None] * n}
    for lang in sorted(set(df["lang"]) & set(settings.roundtrip)):
        if lang == SOURCE_LANG:
            continue
        if lang not in translators:
            raise ValueError(f"filter.roundtrip.{lang} is configured but no back-translator was given for {lang!r}")
        machine_only = settings.roundtrip[lang].rows == "machine"
        rows = [i for i in range(n) if df.at[i, "lang"] == lang and not reasons[i]
                and not (machine_only and df.at[i, "system"] == REFERENCE_SYSTEM)]
        if not rows:
            continue
        texts = [_str(df.at[i, "question"]) for i in rows] + [_str(df.at[i, "passage"]) for i in rows]
        out = back_translate(translators[lang], texts, resume.get(lang),
                             desc=f"filter: round trip {lang}" if progress else None)
        for k, i in enumerate(rows):
            bq, bp = out[k], out[len(rows) + k]
            cq, cp = chrf(bq, _str(df.at[i, "src_question"])), chrf(bp, _str(df.at[i, "src_passage"]))
            back["roundtrip_question"][i], back["roundtrip_passage"][i] = bq, bp
            quality["roundtrip_chrf_question"][i], quality["roundtrip_chrf_passage"][i] = cq, cp
            reasons[i] += roundtrip_reasons(cq, cp, settings.min_chrf)
    return back


def _split(df: pd.DataFrame, reasons: list[list[str]], quality: dict[str, list], back: dict[str, list]
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(kept, rejected)`` frames with the measured columns and the ``;``-joined reasons."""
    for col, values in quality.items():
        df[col] = pd.Series(values, dtype="float64" if not col.startswith("langid") else "str")
    for col, values in back.items():
        df[col] = pd.Series(values, dtype="str")
    order = {r: k for k, r in enumerate(REASONS)}
    df["reasons"] = [";".join(sorted(r, key=order.__getitem__)) for r in reasons]
    bad = df["reasons"] != ""
    kept = df.loc[~bad, PAIR_COLUMNS + QUALITY_COLUMNS].reset_index(drop=True)
    rejected = df.loc[bad, PAIR_COLUMNS + SOURCE_COLUMNS + QUALITY_COLUMNS + list(back) + ["reasons"]]
    return kept, rejected.reset_index(drop=True)


def filter_pairs(df: pd.DataFrame, settings, translators: Mapping[str, Any] | None = None,
                 resume: Mapping[str, Resume] | None = None, progress: bool = False
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply every rule to ``df``; return ``(kept, rejected)``.

    ``df`` has :data:`pipeline.schema.PAIR_COLUMNS` plus ``src_question``/``src_passage`` (the
    English original; may be null on English rows). ``settings`` is a ``FilterParams``
    (``params.filter``); ``translators`` maps a language to an object with
    ``translate(list[str]) -> list[str]`` into English, and must cover every language of ``df``
    listed in ``settings.roundtrip``. ``resume`` maps a language to where its back-translation keeps
    finished chunks (:class:`Resume`); without it the round trip is one call, kept in memory only.

    ``kept`` has the pair columns plus :data:`QUALITY_COLUMNS`; ``rejected`` has also the source
    columns, the back-translations (``roundtrip_question``, ``roundtrip_passage``) and
    ``reasons``: the rejecting rules, ``;``-joined in :data:`REASONS` order. Row order is kept.
    With ``progress``, a line per quarter of the rows checked and of each language's round trip, on
    stdout (:func:`pipeline.console.progress`).
    """
    df = _prepare(df)
    n = len(df)
    quality = {c: [None] * n if c.startswith("langid") else [math.nan] * n for c in QUALITY_COLUMNS}
    reasons = _cheap_rules(df, settings, quality, progress)
    back = _roundtrip_rule(df, settings, dict(translators or {}), reasons, quality, dict(resume or {}), progress)
    return _split(df, reasons, quality, back)


def rejected_sample(rejected: pd.DataFrame, per_reason: int = 2) -> pd.DataFrame:
    """A few rejected rows to read: per language and system, the first ``per_reason`` rows (in row order)
    whose first reason is each reason that occurs; the texts, their English original, the
    back-translations where made, the measured scores and every reason."""
    columns = ["lang", "system", "pair_id", "reasons", "question", "src_question", "roundtrip_question",
               "roundtrip_chrf_question", "passage", "src_passage", "roundtrip_passage", "roundtrip_chrf_passage",
               "length_ratio_question", "length_ratio_passage", "langid_question", "langid_passage"]
    if rejected.empty:
        return pd.DataFrame(columns=columns)
    first = rejected["reasons"].str.split(";").str[0]
    picked = rejected.assign(_first=first).groupby(["lang", "system", "_first"], sort=False).head(per_reason)
    order = {r: k for k, r in enumerate(REASONS)}
    picked = picked.assign(_order=picked["_first"].map(order)).sort_values(
        ["lang", "system", "_order"], kind="stable")
    return picked[columns].reset_index(drop=True)


def reason_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """How many rejected rows name each reason (a row with two reasons counts for both)."""
    counts = dict.fromkeys(REASONS, 0)
    for reasons in rejected["reasons"]:
        for r in reasons.split(";"):
            counts[r] += 1
    return counts


def roundtrip_resume(params, langs, work_dir: str | Path) -> dict[str, Resume]:
    """Per round-trip language of ``langs``: its chunk folder ``work_dir/<lang>`` and a fingerprint of
    the direction, the model and the decoding settings (as the translate stage fingerprints its own), so
    a chunk left by another model or setting is translated again, never reused."""
    import json

    out = {}
    for lang in sorted(set(langs) & set(params.filter.roundtrip)):
        if lang == SOURCE_LANG:
            continue
        key = params.filter.roundtrip[lang].model
        fingerprint = json.dumps({"direction": f"{lang}->{SOURCE_LANG}", "arithmetic": current_mode(),
                                  "model": params.translate.models[key].model_dump(exclude_unset=True),
                                  "settings": params.translate.model_dump(
                                      exclude={"targets", "models", "shards", "device_index"})},
                                 sort_keys=True)
        out[lang] = Resume(Path(work_dir) / lang, params.translate.chunk_size, fingerprint)
    return out


def roundtrip_translators(params, langs, cache_dir=None) -> dict[str, Any]:
    """Back-translators into English for the languages of ``langs`` that ``params.filter.roundtrip`` lists.

    Each is built on its first use (:class:`pipeline.translation.LazyTranslator`), its model prepared under
    ``cache_dir / <model key>`` (default: the asset cache's ``translation/`` folder, the one the translate
    stage uses): a language with nothing to back-translate (``rows: machine`` and no model's rows) loads
    no model. :func:`filter_pairs` reports each language's round trip as it runs.
    """
    from .assets import cache_root
    from .translation import LazyTranslator, build_translator

    root = Path(cache_dir) if cache_dir is not None else cache_root() / "translation"
    out = {}
    for lang in sorted(set(langs) & set(params.filter.roundtrip)):
        if lang == SOURCE_LANG:
            continue
        key = params.filter.roundtrip[lang].model
        out[lang] = LazyTranslator(functools.partial(
            build_translator, params.translate.models[key], params.translate, params.mirror_path,
            src_lang=lang, tgt_lang=SOURCE_LANG, cache_dir=root / key, progress=False))
    return out
