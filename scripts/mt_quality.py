"""Machine-translation quality on MLQA-R: Gemma 3 270M, and the filter's Argos zh->en model, against human text.

For each language a fixed sample of MLQA-R question ids is taken (:func:`sample_ids`: the ids with the
smallest sha256 of ``"<seed>:<id>"``, so the same on every machine, and a smaller sample is part of a
larger one). MLQA-R gives each English question in only some languages (at most 3 of the 6), so each
language has its own sample, drawn from the ids it shares with English. Each item is a text pair per kind:
``question`` (the English question and its human translation) and ``sentence`` (the gold answer sentence
in English and in the language: sentences of parallel Wikipedia paragraphs, not made as translations of
each other, so a looser reference than the questions).

Every text is translated as one sentence (``translate_sentences``, no re-splitting), English -> the
language and back, with Gemma (greedy, few-shot prompt ``pipeline/prompts/translate.yaml``, same-length
batches: the pipeline's own settings through :func:`pipeline.translation.build_translator`); zh -> en also
with the model ``filter.roundtrip.zh`` names (Argos). Scores are corpus chrF and corpus BLEU (sacrebleu;
BLEU tokenised ``zh`` into Chinese, ``13a`` otherwise) against the human text (into the language) or the
English original (into English). A language is "worth translating" when Gemma's questions into it reach
the bar (chrF >= ``--bar``, default 40).

Writes metrics/mt-quality.csv (a row per model, direction, language and kind) and metrics/mt-quality.json
(settings, sample digests, machine, versions, examples), each atomically, and prints a table.
Usage: python -m scripts.mt_quality [--sample 100] [--seed 13] [--langs ar,de] [--kinds question,sentence]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("ar", "de", "es", "hi", "vi", "zh")
KINDS = ("question", "sentence")
SOURCE = "en"
GEMMA = "gemma-3-270m"
BAR = 40.0
#: generated tokens per text at most, by kind: the longest human text of the 100-id samples is 43 Gemma
#: tokens (questions) and 120 (answer sentences), so only an output that loops reaches the cap
MAX_TOKENS = {"question": 64, "sentence": 160}
#: an output whose effective length is over this many times its source's counts as too long (a loop); the
#: filter's ``max_length_ratio``
TOO_LONG = 4.0
COLUMNS = ["model", "direction", "lang", "kind", "sentences", "chrf", "chrf_ci95", "bleu", "seconds",
           "chrf_sentence_mean", "empty_outputs", "too_long_outputs", "worth_translating"]


# --------------------------------------------------------------------------- the sample

def sample_key(seed: int, qid: str) -> str:
    """The sort key of a question id: sha256 of ``"<seed>:<id>"`` in hex."""
    return hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()


def sample_ids(ids: Iterable[str], n: int, seed: int) -> list[str]:
    """The ``n`` ids with the smallest :func:`sample_key` (all of them if fewer), in that order."""
    return sorted(set(ids), key=lambda qid: (sample_key(seed, qid), qid))[:n]


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the ids joined by newlines, in the given order."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def read_texts(path: str | Path, lang: str) -> dict[str, dict[str, str]]:
    """Question id -> ``{"question": ..., "sentence": <gold answer sentence>}`` of one LAReQA file."""
    from pipeline.lareqa import parse_file

    queries, pool, _ = parse_file(path, lang)
    sentences = {c["cand_id"]: c["text"] for c in pool}
    return {q["id"]: {"question": q["text"], "sentence": sentences[q["gold"]]} for q in queries}


@dataclass(frozen=True)
class Sample:
    """One language's items: ids, and per kind the English texts and the language's texts (same order)."""

    lang: str
    ids: list[str]
    english: dict[str, list[str]]
    other: dict[str, list[str]]


def make_sample(texts: Mapping[str, Mapping[str, Mapping[str, str]]], lang: str, n: int, seed: int) -> Sample:
    """The sample of ``lang``: :func:`sample_ids` over the ids that English and ``lang`` share."""
    if SOURCE not in texts or lang not in texts:
        raise DataError(f"MLQA-R: no {SOURCE if SOURCE not in texts else lang}.json texts were read")
    shared = texts[SOURCE].keys() & texts[lang].keys()
    if not shared:
        raise DataError(f"MLQA-R {lang}.json: no question id in common with {SOURCE}.json")
    ids = sample_ids(shared, n, seed)
    return Sample(lang, ids, {k: [texts[SOURCE][i][k] for i in ids] for k in KINDS},
                  {k: [texts[lang][i][k] for i in ids] for k in KINDS})


# --------------------------------------------------------------------------- scoring

#: bootstrap resamples of the chrF confidence interval (sacrebleu's, seeded by SACREBLEU_SEED, default 12345)
BOOTSTRAP = 1000


def scores(hypotheses: list[str], references: list[str], lang: str) -> tuple[float, float, float]:
    """Corpus chrF, corpus BLEU (tokenised ``zh`` when ``lang`` is zh, else ``13a``) and the half-width of
    chrF's 95% bootstrap interval (:data:`BOOTSTRAP` resamples of the sentences)."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} translations for {len(references)} references")
    chrf = CHRF().corpus_score(hypotheses, [references], n_bootstrap=BOOTSTRAP if len(hypotheses) > 1 else 1)
    bleu = BLEU(tokenize="zh" if lang == "zh" else "13a").corpus_score(hypotheses, [references])
    return float(chrf.score), float(bleu.score), float(getattr(chrf, "_ci", float("nan")))


@dataclass(frozen=True)
class Job:
    """One translator: ``model`` from ``src`` to ``tgt``, for the sample of ``lang``."""

    model: str
    src: str
    tgt: str
    lang: str

    @property
    def direction(self) -> str:
        return f"{self.src}->{self.tgt}"


def jobs(langs: Sequence[str], argos_langs: Iterable[str] = ("zh",), argos: str = "argos") -> list[Job]:
    """Gemma both ways for each language, then the Argos model into English for ``argos_langs``."""
    out = []
    for lang in langs:
        out += [Job(GEMMA, SOURCE, lang, lang), Job(GEMMA, lang, SOURCE, lang)]
        if lang in argos_langs:
            out.append(Job(argos, lang, SOURCE, lang))
    return out


def sentence_chrf_mean(hypotheses: list[str], references: list[str]) -> float:
    """The mean of sentence-level chrF (less moved than corpus chrF by a few looping outputs)."""
    from pipeline.quality import chrf

    return sum(map(chrf, hypotheses, references)) / len(hypotheses) if hypotheses else float("nan")


def too_long(hypotheses: list[str], sources: list[str], ratio: float = TOO_LONG) -> int:
    """How many outputs are over ``ratio`` times their source's effective length (script-weighted)."""
    from pipeline.quality import length_ratio

    return sum(length_ratio(h, s) > ratio for h, s in zip(hypotheses, sources, strict=True))


def evaluate(samples: Mapping[str, Sample], todo: Sequence[Job], kinds: Sequence[str],
             make: Callable[[Job], object], max_tokens: Mapping[str, int] | None = None, n_examples: int = 3,
             log: Callable[[str], None] = print) -> tuple[list[dict], dict[str, list[dict]]]:
    """Translate and score every job and kind: ``(rows, examples)``.

    ``make(job)`` gives an object with ``translate_sentences(list[str]) -> list[str]``; it is built once per
    job and dropped after it. ``max_tokens[kind]`` is set as the translator's ``max_decoding_length`` where
    it has one (Gemma; not the Argos model, a translator of its own settings). ``seconds`` is the time of
    the ``translate_sentences`` call alone."""
    rows, examples = [], {}
    for job in todo:
        sample = samples[job.lang]
        into = job.tgt != SOURCE
        translator = make(job)
        for kind in kinds:
            if max_tokens and kind in max_tokens and job.model == GEMMA and hasattr(translator, "max_decoding_length"):
                translator.max_decoding_length = max_tokens[kind]
            sources = sample.english[kind] if into else sample.other[kind]
            references = sample.other[kind] if into else sample.english[kind]
            start = time.perf_counter()
            out = list(translator.translate_sentences(list(sources)))
            seconds = time.perf_counter() - start
            if len(out) != len(sources):
                raise RuntimeError(f"{job.model} {job.direction}: {len(out)} translations for {len(sources)} texts")
            chrf, bleu, ci = scores(out, references, job.tgt)
            row = {"model": job.model, "direction": job.direction, "lang": job.lang, "kind": kind,
                   "sentences": len(sources), "chrf": round(chrf, 2), "chrf_ci95": round(ci, 2),
                   "bleu": round(bleu, 2),
                   "seconds": round(seconds, 2), "chrf_sentence_mean": round(sentence_chrf_mean(out, references), 2),
                   "empty_outputs": sum(not t.strip() for t in out), "too_long_outputs": too_long(out, sources)}
            rows.append(row)
            examples[f"{job.model} {job.direction} {kind}"] = [
                {"id": i, "source": s, "output": o, "reference": r}
                for i, s, o, r in list(zip(sample.ids, sources, out, references, strict=True))[:n_examples]]
            log(f"{job.model} {job.direction} {kind}: {len(sources)} sentences in {seconds:.1f} s, chrF "
                f"{row['chrf']:.1f}, BLEU {row['bleu']:.1f}, {row['too_long_outputs']} too long")
        del translator
    return rows, examples


def worth_translating(rows: list[dict], bar: float = BAR, kind: str = "question") -> dict[str, bool]:
    """Per language with a Gemma ``en->lang`` row of ``kind``: whether its chrF reaches ``bar``."""
    return {r["lang"]: r["chrf"] >= bar for r in rows
            if r["model"] == GEMMA and r["direction"] == f"{SOURCE}->{r['lang']}" and r["kind"] == kind}


def mark_worth(rows: list[dict], verdicts: Mapping[str, bool], kind: str = "question") -> list[dict]:
    """``rows`` with ``worth_translating`` set on the rows the bar judges (Gemma, into the language, ``kind``);
    None on the others."""
    out = []
    for r in rows:
        judged = r["model"] == GEMMA and r["direction"] == f"{SOURCE}->{r['lang']}" and r["kind"] == kind
        out.append({**r, "worth_translating": verdicts.get(r["lang"]) if judged else None})
    return out


def table(rows: list[dict], verdicts: Mapping[str, bool]) -> str:
    """A readable table: a line per language, a ``chrF/BLEU`` column per model, direction and kind."""
    cols = list(dict.fromkeys((r["model"], "into" if r["direction"].startswith(f"{SOURCE}->") else "back",
                               r["kind"]) for r in rows))
    cells = {(r["lang"], r["model"], "into" if r["direction"].startswith(f"{SOURCE}->") else "back", r["kind"]):
             f"{r['chrf']:.1f}/{r['bleu']:.1f}" for r in rows}
    names = [f"{'argos' if m != GEMMA else 'gemma'} {'en->X' if d == 'into' else 'X->en'} {k[:8]}"
             for m, d, k in cols]
    width = [max(len(n), 11) for n in names]
    lines = ["chrF/BLEU per language (X); worth translating: Gemma's questions into X reach the bar",
             "lang  " + "  ".join(n.rjust(w) for n, w in zip(names, width, strict=True)) + "  worth"]
    for lang in dict.fromkeys(r["lang"] for r in rows):
        verdict = {True: "yes", False: "no"}.get(verdicts.get(lang), "-")
        lines.append(f"{lang:4}  " + "  ".join(cells.get((lang, *c), "-").rjust(w)
                                                 for c, w in zip(cols, width, strict=True)) + f"  {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- writing

def write_outputs(rows: list[dict], record: dict, csv_path: str | Path, json_path: str | Path) -> None:
    """The CSV (:data:`COLUMNS`) and the JSON record, each written to a temporary file then renamed."""
    import pandas as pd

    from pipeline.io import atomic_path, write_json

    with atomic_path(csv_path, ".csv") as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
    write_json(json_path, record)


def parse_list(value: str, valid: Sequence[str], option: str) -> list[str]:
    """A comma-separated option's values, each one of ``valid``."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in valid]
    if not items or bad:
        raise DataError(f"{option}: {', '.join(bad) or 'nothing given'} not among {', '.join(valid)}")
    return list(dict.fromkeys(items))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=100, help="question ids per language")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--batch-size", type=int, default=32, help="Gemma: sentences per batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--max-question-tokens", type=int, default=MAX_TOKENS["question"],
                    help="Gemma: generated tokens per question at most")
    ap.add_argument("--max-sentence-tokens", type=int, default=MAX_TOKENS["sentence"],
                    help="Gemma: generated tokens per answer sentence at most")
    ap.add_argument("--bar", type=float, default=BAR, help="chrF of Gemma's questions into a language "
                                                           "at or above which it is worth translating")
    ap.add_argument("--no-argos", action="store_true", help="leave out the Argos zh->en model")
    ap.add_argument("--csv", default=str(ROOT / "metrics/mt-quality.csv"))
    ap.add_argument("--json", default=str(ROOT / "metrics/mt-quality.json"))
    args = ap.parse_args(argv)
    if args.sample < 1:
        raise DataError(f"--sample: should be at least 1, got {args.sample}")
    langs = parse_list(args.langs, LANGS, "--langs")
    kinds = parse_list(args.kinds, KINDS, "--kinds")

    from pipeline.reproducibility import machine, pin_from_params

    pin_from_params(ROOT / "params.yaml")  # the translate stage's arithmetic, before ctranslate2 loads
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()

    from pipeline import gemma
    from pipeline.assets import Asset, AssetError, cache_root, fetch
    from pipeline.params import TranslationModelSpec, load_params

    params = load_params(ROOT / "params.yaml")
    # the models first, before the data and any translation: a missing one is a one-line error
    try:
        gemma_dir = gemma.prepare_gemma(quantization=args.compute_type)
    except AssetError as err:
        raise AssetError(f"Gemma model: {err}") from None
    argos_key = None if args.no_argos else params.filter.roundtrip.get("zh")
    argos_key = argos_key.model if argos_key is not None else None
    argos_langs = ["zh"] if argos_key and "zh" in langs else []
    if argos_langs:
        argos_spec = params.translate.models.get(argos_key)
        if argos_spec is None:
            raise DataError(f"params.yaml: filter.roundtrip.zh.model {argos_key!r} is not under translate.models")
        try:
            fetch(Asset(Path(argos_spec.path or argos_spec.url or "argos").name, argos_spec.path, argos_spec.url,
                        argos_spec.sha256), params.mirror_path)
        except (AssetError, OSError) as err:
            raise AssetError(f"Argos model {argos_key!r}: {err}") from None
    todo = jobs(langs, argos_langs, argos_key or "argos")

    import ctranslate2
    import sacrebleu
    import transformers

    from benchmarks.translation_speed import cpu_name
    from pipeline.generation import load_prompts
    from pipeline.lareqa import dataset_files
    from pipeline.translation import build_translator

    spec = params.datasets.get("mlqa-r")
    if spec is None:
        raise DataError(f"{ROOT / 'params.yaml'}: datasets: no 'mlqa-r' entry")
    files = dataset_files(spec, params.mirror_path)  # mirror copies, sha256 checked
    texts = {lang: read_texts(files[lang], lang) for lang in [SOURCE, *langs]}
    samples = {lang: make_sample(texts, lang, args.sample, args.seed) for lang in langs}

    gemma_settings = params.translate.model_copy(update={
        "compute_type": args.compute_type, "threads": args.threads, "batch_size": args.batch_size,
        "batch_type": "examples", "device": "cpu", "device_index": [0]})
    max_tokens = {"question": args.max_question_tokens, "sentence": args.max_sentence_tokens}

    def make(job: Job):
        if job.model == GEMMA:
            return build_translator(TranslationModelSpec(kind="gemma"), gemma_settings, params.mirror_path,
                                    job.src, job.tgt, cache_root() / "translation" / "gemma", progress=False)
        return build_translator(params.translate.models[job.model], params.translate, params.mirror_path,
                                job.src, job.tgt, cache_root() / "translation" / job.model, progress=False)

    print(f"{args.sample} MLQA-R ids per language (seed {args.seed}), {', '.join(langs)}; {', '.join(kinds)}; "
          f"{len(todo)} translators", flush=True)
    rows, examples = evaluate(samples, todo, kinds, make, max_tokens,
                              log=lambda line: print(line, flush=True))
    verdicts = worth_translating(rows, args.bar) if "question" in kinds else {}
    rows = mark_worth(rows, verdicts)
    total = time.perf_counter() - t0
    prompts = load_prompts()

    record = {
        "what": "machine-translation quality on MLQA-R against human text: corpus chrF and BLEU (sacrebleu)",
        "sample": {
            "ids_per_language": args.sample, "seed": args.seed,
            "rule": "per language, the MLQA-R question ids it shares with English, sorted by sha256 of "
                    "'<seed>:<id>' (hex), the first N",
            "ids": {lang: {"count": len(s.ids), "sha256": ids_digest(s.ids),
                           "available": len(texts[SOURCE].keys() & texts[lang].keys())}
                    for lang, s in samples.items()},
            "ids_sha256": "sha256 of the ids joined by newlines, in sample order",
            "sha256_all": ids_digest([f"{lang}:{i}" for lang, s in samples.items() for i in s.ids]),
            "sha256_all_rule": "sha256 of '<lang>:<id>' lines, languages in --langs order",
            "data": {lang: str(Path(spec.path) / f"{lang}.json") for lang in [SOURCE, *langs]},
            "data_sha256": {lang: (spec.sha256 or {}).get(lang) for lang in [SOURCE, *langs]},
        },
        "kinds": {"question": "the question; references: MLQA's professional translations of the English "
                              "question",
                  "sentence": "the gold answer sentence (sentence_breaks span holding answers[0]); references: "
                              "the gold sentence of the same id in the other language, from parallel Wikipedia "
                              "paragraphs (mined, not translated: a looser reference)"},
        "texts": "each question and answer sentence translated as one sentence (translate_sentences, no "
                 "re-splitting); whitespace runs made one space in the Gemma prompt",
        "scoring": {"chrf": "sacrebleu.corpus_chrf defaults (character 6-grams, beta 2)",
                    "bleu": "sacrebleu.corpus_bleu, tokenize 'zh' into Chinese, '13a' otherwise",
                    "reference": "en->X: the human text in X; X->en: the English original",
                    "chrf_ci95": f"half-width of chrF's 95% bootstrap interval ({BOOTSTRAP} resamples of the "
                                 "sentences, sacrebleu's, seed SACREBLEU_SEED or 12345)",
                    "chrf_sentence_mean": "mean of sentence-level chrF (pipeline.quality.chrf)",
                    "too_long_outputs": f"outputs over {TOO_LONG:g} times their source's effective length "
                                        "(pipeline.quality.length_ratio; the filter's max_length_ratio): loops"},
        "worth_translating": {
            "bar": f"chrF >= {args.bar:g} on the questions translated by Gemma from English into the language",
            "min_chrf": args.bar, "kind": "question", "model": GEMMA,
            "languages": [lang for lang, ok in verdicts.items() if ok],
            "chrf": {r["lang"]: r["chrf"] for r in rows if r["worth_translating"] is not None},
        },
        "models": {
            GEMMA: {"name": gemma.HUB_ID, "gguf_sha256": gemma.GGUF_SHA256, "folder": str(gemma_dir),
                    "engine": "ctranslate2.Generator", "compute_type": args.compute_type,
                    "decoding": "greedy, stop at the first newline, same-length batches "
                                "(pipeline.translation.build_translator, kind gemma)",
                    "prompt_file": "pipeline/prompts/translate.yaml", "prompt_version": prompts.version,
                    "batch_size": args.batch_size, "threads": args.threads,
                    "max_generated_tokens": max_tokens,
                    "max_generated_tokens_note": "per kind, in place of translate.max_decoding_length "
                                                 f"({params.translate.max_decoding_length}): the longest human "
                                                 "text of the samples is well below it, so only a looping "
                                                 "output is cut"},
            **({argos_key: {"package": params.translate.models[argos_key].path,
                            "sha256": params.translate.models[argos_key].sha256,
                            "used_by": "filter.roundtrip.zh", "beam_size": params.translate.beam_size,
                            "batch_size": params.translate.batch_size, "threads": params.translate.threads,
                            "compute_type": params.translate.compute_type}} if argos_langs else {}),
        },
        "seconds": {"total": round(total, 1),
                    "translation": round(sum(r["seconds"] for r in rows), 1),
                    "note": "a row's seconds: its translate_sentences call alone (model load excluded)"},
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_name(), "CT2_USE_MKL": os.environ.get("CT2_USE_MKL"),
                    "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
                    "reproducibility": machine()},
        "versions": {"ctranslate2": ctranslate2.__version__, "transformers": transformers.__version__,
                     "sacrebleu": sacrebleu.__version__},
        "results": rows,
        "examples": examples,
    }
    write_outputs(rows, record, args.csv, args.json)
    print()
    print(table(rows, verdicts))
    if verdicts:
        print(f"\nworth translating (Gemma questions en->X chrF >= {args.bar:g}): "
              f"{', '.join(lang for lang, ok in verdicts.items() if ok) or 'none'}")
    print(f"{total / 60:.1f} min in all; wrote {args.csv} and {args.json}")


if __name__ == "__main__":
    from pipeline import console

    console.run(main, "mt_quality")
