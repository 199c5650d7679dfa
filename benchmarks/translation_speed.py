"""Benchmark: translation throughput of CTranslate2 vs Hugging Face ``generate`` (a script, not a test).

An NLLB-architecture model (M2M100: d_model 512, 6 + 6 layers, FFN 2048, 8 heads, vocabulary 32k with
NLLB's language codes; about 60M parameters) with random weights (seeded) is built locally, converted to
CTranslate2 int8 and float32, and the same N source sentences (random token ids, 10-40 tokens, seeded)
are translated by each engine, greedy and with beam 4. The output length is fixed at exactly 32 tokens
(the forced language token included: CTranslate2 ``min_decoding_length = max_decoding_length = 32``,
``generate`` ``min_new_tokens = max_new_tokens = 32``), so every engine does the same amount of work.
All engines: the same batches of --batch-size sorted by length, 2 threads (torch ``set_num_threads``,
CTranslate2 ``intra_threads``), a warm-up call not timed; the engines take turns batch by batch, each
batch is timed --repeats times and the fastest time kept, so background load on a shared machine
(which slows torch most) is spread over the engines and mostly filtered out; the 1-minute load average
at start and end is recorded. ``same_output_as_hf`` is the fraction of sentences whose output equals
torch's token for token (float32 should be 1.0 or close: beam search on random weights meets near-ties).

Writes metrics/translation_speed.json and prints a table. Usage: python -m benchmarks.translation_speed

``--argos``: batch_type examples vs tokens on the real Argos zh->en model (the asset mirror's
``models/translate-zh_en-1_9.argosmodel``) translating --sentences real MLQA-R Chinese texts (half
questions, half pool sentences, seeded sample), int8, beam 4, 2 threads, through the pipeline's own
``ArgosTranslator.translate_tokens``; each setting translates the whole set in turn, --repeats rounds,
the fastest kept. Writes metrics/translation_batch_type.json (sentences, source and output tokens per
second; ``same_output_as_default``: the fraction of sentences translated exactly as by the default).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from pipeline.io import write_json
from pipeline.translation import convert_nllb

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

OUT_TOKENS = 32
TARGET = "fra_Latn"


def build_model(folder: Path, vocab_size: int, seed: int):
    """A random M2M100 model with an NllbTokenizer over a synthetic vocabulary, saved in ``folder``."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    n_pieces = vocab_size - len(specials) - 203  # NllbTokenizer adds 202 language codes and <mask>
    vocab = {t: i for i, t in enumerate(specials + [f"▁w{i}" for i in range(n_pieces)])}
    tok = NllbTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(seed)
    cfg = M2M100Config(vocab_size=len(tok), d_model=512, encoder_layers=6, decoder_layers=6,
                       encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
                       decoder_ffn_dim=2048, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       decoder_start_token_id=tok.eos_token_id, dropout=0.0)
    model = M2M100ForConditionalGeneration(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok, n_pieces


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def batches(lengths: list[int], size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[i : i + size] for i in range(0, len(order), size)]


def hf_runner(model, tok, sources: list[list[int]], beam: int):
    """A function translating the sentences ``idx`` with ``generate``; returns output ids (no start token)."""
    import torch

    forced = tok.convert_tokens_to_ids(TARGET)

    def run(idx: list[int]) -> list[list[int]]:
        width = max(len(sources[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):  # padding on the right, as the NLLB tokenizer does
            ids[r, : len(sources[i])] = torch.tensor(sources[i])
            mask[r, : len(sources[i])] = 1
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, forced_bos_token_id=forced, num_beams=beam,
                                 do_sample=False, min_new_tokens=OUT_TOKENS, max_new_tokens=OUT_TOKENS,
                                 early_stopping=False, length_penalty=1.0)
        return [gen[r, 1:].tolist() for r in range(len(idx))]

    return run


def ct2_runner(translator, tok, sources: list[list[int]], beam: int):
    """A function translating the sentences ``idx`` with CTranslate2; returns output ids."""
    tokens = [tok.convert_ids_to_tokens(s) for s in sources]

    def run(idx: list[int]) -> list[list[int]]:
        res = translator.translate_batch([tokens[i] for i in idx], target_prefix=[[TARGET]] * len(idx),
                                         beam_size=beam, min_decoding_length=OUT_TOKENS,
                                         max_decoding_length=OUT_TOKENS, length_penalty=1.0)
        return [tok.convert_tokens_to_ids(r.hypotheses[0]) for r in res]

    return run


#: (batch_type, batch_size) settings of the --argos run; the first is params.yaml's default
ARGOS_SETTINGS = [("examples", 32), ("examples", 16), ("examples", 64), ("tokens", 512), ("tokens", 1024),
                  ("tokens", 2048)]


def argos_texts(mirror: Path, n: int, seed: int) -> list[str]:
    """``n`` MLQA-R Chinese texts: half questions, half answer-pool sentences, a seeded sample of each."""
    import json

    import numpy as np

    doc = json.loads((mirror / "data/lareqa/mlqa-r/zh.json").read_text(encoding="utf-8"))
    questions = [q["question"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    sentences = [s for a in doc["data"] for p in a["paragraphs"] for s in p["sentences"]]
    rng = np.random.default_rng(seed)
    pick = lambda xs, k: [xs[i] for i in sorted(rng.choice(len(xs), k, replace=False))]  # noqa: E731
    return pick(questions, n // 2) + pick(sentences, n - n // 2)


def argos_batch_types(args) -> None:
    from pipeline.params import load_params
    from pipeline.translation import build_translator

    p = load_params(ROOT / "params.yaml")
    load_before = os.getloadavg()[0]
    tr = build_translator(p.translate.models["argos-zh-en"], p.translate, p.mirror_path, "zh", "en",
                          Path(tempfile.mkdtemp(prefix="argos-")), progress=False)
    texts = argos_texts(p.mirror_path, args.sentences, args.seed)
    src_tokens = sum(len(t) for t in tr._tokenize(texts))
    tr.batch_type, tr.max_batch_size = "examples", 8
    tr.translate_tokens(texts[:8])  # warm-up
    best = {s: float("inf") for s in ARGOS_SETTINGS}
    outputs = {}
    for _ in range(args.repeats):  # settings take turns: background load hits all of them
        for setting in ARGOS_SETTINGS:
            tr.batch_type, tr.max_batch_size = setting
            t = time.perf_counter()
            outputs[setting] = tr.translate_tokens(texts)
            best[setting] = min(best[setting], time.perf_counter() - t)
    default = outputs[ARGOS_SETTINGS[0]]
    results = {}
    for (batch_type, size), seconds in best.items():
        out_tokens = sum(len(o) for o in outputs[(batch_type, size)])
        results[f"{batch_type} {size}"] = {
            "batch_type": batch_type, "batch_size": size, "seconds": round(seconds, 2),
            "sentences_per_s": round(len(texts) / seconds, 2),
            "source_tokens_per_s": round(src_tokens / seconds, 1),
            "output_tokens_per_s": round(out_tokens / seconds, 1),
            "speed_vs_default": round(best[ARGOS_SETTINGS[0]] / seconds, 3),
            "same_output_as_default": round(sum(a == b for a, b in zip(outputs[(batch_type, size)], default,
                                                                       strict=True)) / len(texts), 3),
        }
        print(f"{batch_type:8} {size:5}: {len(texts) / seconds:6.2f} sentences/s", flush=True)
    import ctranslate2

    write_json(args.out or ROOT / "metrics/translation_batch_type.json", {
        "model": "Argos Translate zh->en 1.9 (OPUS-MT transformer, CTranslate2)", "compute_type": "int8",
        "device": "cpu", "beam_size": 4, "threads": args.threads,
        "texts": f"{len(texts)} MLQA-R zh texts: {len(texts) // 2} questions, {len(texts) - len(texts) // 2} "
                 f"answer-pool sentences (seed {args.seed})",
        "source_tokens": src_tokens, "mean_source_tokens": round(src_tokens / len(texts), 1),
        "mean_output_tokens": round(sum(len(o) for o in default) / len(texts), 1),
        "timing": f"the whole set per setting, the fastest of {args.repeats} rounds (settings take turns)",
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_name(),
                    "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)}},
        "versions": {"ctranslate2": ctranslate2.__version__}, "results": results,
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--argos", action="store_true", help="batch_type examples vs tokens on the Argos model")
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="time each batch this often, keep the fastest")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default=None, help="default: metrics/translation_speed.json "
                                                 "(--argos: metrics/translation_batch_type.json)")
    args = ap.parse_args()
    if args.argos:
        return argos_batch_types(args)
    args.out = args.out or str(ROOT / "metrics/translation_speed.json")

    import ctranslate2
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="translation-speed-"))
    t0 = time.perf_counter()
    model, tok, n_pieces = build_model(work / "hf", args.vocab, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(args.seed)
    eos = tok.eos_token_id
    sources = [[tok.convert_tokens_to_ids("eng_Latn"), *(4 + rng.integers(0, n_pieces, int(n))).tolist(), eos]
               for n in rng.integers(10, 41, args.sentences)]
    translators, convert_s = {}, {}
    for ct in ("int8", "float32"):
        t = time.perf_counter()
        convert_nllb(work / "hf", work / f"ct2-{ct}", quantization=ct)
        convert_s[ct] = round(time.perf_counter() - t, 1)
        translators[ct] = ctranslate2.Translator(str(work / f"ct2-{ct}"), device="cpu", compute_type=ct,
                                                 inter_threads=1, intra_threads=args.threads)
    setup_s = time.perf_counter() - t0

    results = {}
    groups = batches([len(x) for x in sources], args.batch_size)
    for beam, mode in ((1, "greedy"), (4, "beam4")):
        runners = {"hf generate fp32": hf_runner(model, tok, sources, beam)}
        for ct in ("int8", "float32"):
            runners[f"ctranslate2 {ct}"] = ct2_runner(translators[ct], tok, sources, beam)
        best = {name: [float("inf")] * len(groups) for name in runners}
        outputs = {name: [[] for _ in sources] for name in runners}
        for run in runners.values():
            run(groups[-1][:2])  # warm-up
        for _ in range(args.repeats):
            for b, idx in enumerate(groups):  # engines take turns batch by batch: background load hits all
                for name, run in runners.items():
                    t = time.perf_counter()
                    for i, o in zip(idx, run(idx), strict=True):
                        outputs[name][i] = o
                    best[name][b] = min(best[name][b], time.perf_counter() - t)
        seconds = {name: sum(times) for name, times in best.items()}
        ref = outputs["hf generate fp32"]
        for name in runners:
            results[f"{name} {mode}"] = {
                "engine": name, "decoding": mode, "seconds": round(seconds[name], 2),
                "sentences_per_s": round(args.sentences / seconds[name], 2),
                "speedup_vs_hf": round(seconds["hf generate fp32"] / seconds[name], 2),
                "same_output_as_hf": round(float(np.mean([a == b for a, b in zip(outputs[name], ref, strict=True)])),
                                           3),
                "output_tokens": sorted({len(o) for o in outputs[name]}),
            }
            print(f"{name} {mode}: {args.sentences / seconds[name]:.2f} sentences/s", flush=True)

    out = {
        "model": {"architecture": "M2M100 (NLLB), random weights", "parameters": n_params, "d_model": 512,
                  "layers": "6+6", "ffn": 2048, "heads": 8, "vocab": len(tok)},
        "sentences": args.sentences, "source_tokens": "10-40 random ids (+ language token and </s>)",
        "output_tokens": OUT_TOKENS, "batch_size": args.batch_size, "threads": args.threads,
        "timing": f"per batch the fastest of {args.repeats} runs, summed over the batches",
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_name(), "CT2_USE_MKL": os.environ.get("CT2_USE_MKL"),
                    "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)}},
        "versions": {"ctranslate2": ctranslate2.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "convert_seconds": convert_s, "setup_seconds": round(setup_s, 1), "results": results,
    }
    write_json(args.out, out)
    print(f"\n{n_params / 1e6:.1f}M parameters, {args.sentences} sentences, {OUT_TOKENS} output tokens, "
          f"batch {args.batch_size}, {args.threads} threads")
    print(f"{'engine':20} {'decoding':8} {'sent/s':>8} {'x HF':>6} {'same as HF':>10}")
    for r in results.values():
        print(f"{r['engine']:20} {r['decoding']:8} {r['sentences_per_s']:8.2f} {r['speedup_vs_hf']:6.2f} "
              f"{r['same_output_as_hf']:10.3f}")
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
