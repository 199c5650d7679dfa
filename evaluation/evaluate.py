"""Evaluate any encoder in one command, without params edits and without touching metrics/.

    python -m evaluation --model PATH_OR_HUB_ID --dataset xquad-r [--dataset mlqa-r] --out DIR
    python -m evaluation --model PATH --miracl-dir DIR --dataset miracl:en --faiss-index IVF4096,PQ32 --out DIR

(``python -m evaluation.evaluate`` is the same command.) LAReQA sets (the keys of params.yaml ``datasets:``)
go through the library functions of the ``index`` and ``score`` stages: read as ``index`` reads them (mirror
first, sha256-pinned URL second), encoded by :class:`pipeline.encoder.Encoder`, indexed and searched with
:mod:`pipeline.retrieval` (params.yaml's ``index.faiss_index``) and scored with :func:`pipeline.metrics.score`
(the scorer of :func:`pipeline.metrics.score_embeddings`) with params.yaml's ``score`` settings and
:func:`pipeline.metrics.unseen_languages`, so a model evaluated here gets exactly the numbers the ``index`` +
``score`` stages give it (tests/test_evaluate.py). ``miracl:<lang>`` is MIRACL's dev split (:mod:`evaluation.miracl`;
online-only unless ``--miracl-dir`` names a local copy), encoded in resumable shards, searched with any
FAISS index factory string and scored from the top-k run with nDCG@10 and Recall@100.

Output, per dataset under ``--out``: ``<dataset>/metrics.json``, ``<dataset>/per_query.parquet``,
``<dataset>/run.trec`` (``qid Q0 docid rank score tag``; top ``--run-depth`` of the multilingual pool)
and, for LAReQA, ``<dataset>/languages.csv``; for MIRACL ``<dataset>/mteb.json`` (MTEB's result layout).
``info.json``: the model, prefixes, pooling, engine, git revision (:func:`pipeline.st_format.git_revision`),
datasets and their sha256 pins.
Encoder settings not given on the command line default to params.yaml's ``encoder`` / ``index`` sections.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io import atomic_dir, atomic_path, write_csv, write_json
from pipeline.metrics import check_summary  # noqa: F401  (used below and by callers)

from .miracl import MTEB_LANGUAGES

MTEB_TASK = "MIRACLRetrieval"


def resolve_model(model: str, revision: str | None = None) -> tuple[Path, dict]:
    """A local Hugging Face folder for ``model``: the folder itself, or a hub snapshot (safetensors only;
    the encoder loads it with transformers' default ``trust_remote_code=False``)."""
    from pipeline.assets import hub_snapshot, require_safetensors, snapshot_commit

    local = Path(model).expanduser()
    if local.is_dir():
        return require_safetensors(local), {"model": str(local.resolve()), "via": "local folder"}
    if local.exists() or model.startswith((".", "/")):
        raise SystemExit(f"evaluate: --model {model!r} is not a folder")
    snap = require_safetensors(hub_snapshot(model, revision))
    return snap, {"model": model, "revision": revision or "main", "commit": snapshot_commit(snap),
                  "via": "huggingface hub", "snapshot": str(snap)}


def trec_lines(qids, docids: np.ndarray, rows: np.ndarray, scores: np.ndarray, tag: str) -> list[str]:
    """TREC run lines ``qid Q0 docid rank score tag`` (rows < 0, FAISS's 'no result', are left out)."""
    out = []
    for qid, r, s in zip(qids, rows, scores, strict=True):
        rank = 0
        for row, score in zip(r, s, strict=True):
            if row < 0:
                continue
            rank += 1
            out.append(f"{qid} Q0 {docids[row]} {rank} {float(score):.6f} {tag}")
    return out


def write_lines(path: Path, lines: list[str]) -> None:
    with atomic_path(path, ".txt") as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _check_ids(ids, what: str) -> None:
    bad = next((i for i in ids if not str(i) or any(c.isspace() for c in str(i))), None)
    if bad is not None:
        raise ValueError(f"{what} {bad!r} is empty or holds whitespace: it cannot go into a TREC run file")


# ---------------------------------------------------------------- LAReQA (XQuAD-R, MLQA-R)

def evaluate_lareqa(name: str, params, encoder, query_prefix: str, passage_prefix: str, out: Path,
                    run_depth: int = 100, languages: list[str] | None = None, tag: str = "run") -> dict:
    """Encode, score and write one LAReQA set (``params.datasets[name]``) with the library functions of the
    ``index`` and ``score`` stages; returns its summary."""
    from pipeline.lareqa import dataset_files, load_lareqa
    from pipeline.metrics import score, unseen_languages
    from pipeline.retrieval import build_index, search

    spec = params.datasets[name]
    if languages:
        unknown = sorted(set(languages) - set(spec.languages))
        if unknown:
            raise SystemExit(f"evaluate: {name} has no languages {unknown}; it has {spec.languages}")
        spec = spec.model_copy(update={"languages": [lang for lang in spec.languages if lang in languages]})
    ds = load_lareqa(name, dataset_files(spec, params.mirror_path))
    q = encoder.encode(ds.queries["text"].tolist(), query_prefix, desc=f"{name} queries")
    c = encoder.encode(ds.pool["text"].tolist(), passage_prefix, desc=f"{name} pool")
    sp = params.score
    unseen = unseen_languages(params.datasets[name].languages, params.languages, sp.unseen_languages)
    summary, langs, _, per_query = score(ds.queries[["qid", "id", "lang", "text", "gold"]],
                                         ds.pool[["cand_id", "lang"]], q, c, sp.map_cutoff, sp.recall_at, unseen)
    scores, rows = search(build_index(c, params.index.faiss_index), q, run_depth)
    _check_ids(ds.queries["qid"], f"{name}: query id")
    run = trec_lines(ds.queries["qid"], ds.pool["cand_id"].to_numpy(), rows, scores, tag)
    langs["seen"] = ~langs["lang"].isin(unseen)
    check_summary(summary, name)
    with atomic_dir(out / name) as tmp:
        write_json(tmp / "metrics.json", summary)
        write_csv(tmp / "languages.csv", langs)
        per_query.to_parquet(tmp / "per_query.parquet", index=False)
        write_lines(tmp / "run.trec", run)
    return summary


# ---------------------------------------------------------------- MIRACL

def evaluate_miracl(ds, encoder, query_prefix: str, passage_prefix: str, out: Path, name: str, work: Path,
                    factory: str = "Flat", train_size: int = 100_000, shard_size: int = 100_000,
                    run_depth: int = 100, recall_sample: int = 1000, search_params: str | None = None,
                    manifest: dict | None = None, tag: str = "run", seed: int = 0, log=print) -> dict:
    """Encode MIRACL's corpus in resumable shards, index it with ``factory``, score the top-k run.

    Writes ``<out>/<name>/`` (metrics.json, per_query.parquet, run.trec, mteb.json); the shards stay in
    ``work`` for reruns. metrics.json also reports the index's recall@``run_depth`` against exact search on
    up to ``recall_sample`` queries and its size in bytes.
    """
    from pipeline.retrieval import (build_factory_index, exact_search_blocks, index_bytes, recall_vs_exact, search,
                                    set_search_params)

    from .ir_metrics import evaluate_run
    from .shards import encode_in_shards, load_shards, sample_rows

    t0 = time.perf_counter()
    qids = sorted(ds.topics)
    _check_ids(qids, f"MIRACL {ds.lang}: qid")
    q = encoder.encode([ds.topics[i] for i in qids], query_prefix, desc=f"{name} queries")
    n = encode_in_shards(ds.passages(), lambda texts: encoder.encode(texts, passage_prefix, desc=f"{name} shard"),
                         work / "shards", shard_size, manifest, log)
    blocks, docids = load_shards(work / "shards", n)
    docids = np.asarray(docids, dtype=object)
    index = build_factory_index(factory, q.shape[1], sample_rows(blocks, train_size, seed), blocks)
    set_search_params(index, search_params)
    scores, rows = search(index, q, run_depth)
    run = {qid: [(docids[r], float(s)) for r, s in zip(rr, ss, strict=True) if r >= 0]
           for qid, rr, ss in zip(qids, rows, scores, strict=True)}
    summary, per_query = evaluate_run(run, {i: ds.qrels.get(i, {}) for i in qids}, 10, 100)
    pick = np.sort(np.random.default_rng(seed).choice(len(q), size=min(recall_sample, len(q)), replace=False))
    _, exact_rows = exact_search_blocks(q[pick], blocks, min(run_depth, len(docids)))
    seconds = round(time.perf_counter() - t0, 1)
    summary.update({
        "language": ds.lang, "split": ds.split, "queries": len(qids), "passages": len(docids),
        "faiss_index": factory, "search_params": search_params or "",
        f"index_recall@{run_depth}_vs_exact": round(recall_vs_exact(rows[pick], exact_rows), 6),
        "index_recall_sample_queries": int(len(pick)), "index_bytes": index_bytes(index),
        "source": ds.source,
    })
    mteb = {
        "dataset_revision": ds.source.get("topics_revision", "local"), "task_name": MTEB_TASK,
        "mteb_version": "n/a: written by evaluation.evaluate in MTEB's result layout",
        "scores": {ds.split: [{"hf_subset": ds.lang, "languages": [MTEB_LANGUAGES.get(ds.lang, ds.lang)],
                               "ndcg_at_10": summary["ndcg@10"], "recall_at_100": summary["recall@100"],
                               "main_score": summary["ndcg@10"]}]},
        "evaluation_time": seconds, "kg_co2_emissions": None,
    }
    check_summary(summary, name)
    with atomic_dir(out / name) as tmp:
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "mteb.json", mteb)
        pd.DataFrame(per_query).to_parquet(tmp / "per_query.parquet", index=False)
        write_lines(tmp / "run.trec", trec_lines(qids, docids, rows, scores, tag))
    return summary


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Encoder settings left out default to params.yaml's encoder/index sections.")
    ap.add_argument("--model", required=True, help="a Hugging Face folder or a hub id (safetensors only)")
    ap.add_argument("--revision", help="hub revision of --model (default: main)")
    ap.add_argument("--dataset", action="append", required=True,
                    help="a key of params.yaml datasets (xquad-r, mlqa-r), miracl:<lang>, or miracl (every "
                         "language of params.yaml miracl.languages); repeatable")
    ap.add_argument("--out", required=True, type=Path, help="output folder (never metrics/)")
    ap.add_argument("--query-prefix", help='e.g. "query: "')
    ap.add_argument("--passage-prefix", help='e.g. "passage: "')
    ap.add_argument("--pooling", choices=["mean", "cls"])
    ap.add_argument("--engine", choices=["torch", "ctranslate2"])
    ap.add_argument("--compute-type", choices=["int8", "int8_float32", "float32"], help="ctranslate2 only")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="torch engine only")
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--max-tokens", type=int, help="most padded tokens per batch (0: batch size alone)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--languages", nargs="+", help="LAReQA: evaluate only these languages of each set")
    ap.add_argument("--run-depth", type=int, default=100, help="k of the top-k run written (default 100)")
    ap.add_argument("--tag", help="run tag of run.trec (default: the model folder's name)")
    g = ap.add_argument_group("MIRACL (settings left out default to params.yaml's miracl section)")
    g.add_argument("--miracl-dir", type=Path, help="a local copy in MIRACL's layout (default: the hub, online)")
    g.add_argument("--miracl-corpus-dir", type=Path, help="where miracl-corpus-v1.0-<lang>/ is (default: --miracl-dir)")
    g.add_argument("--miracl-split")
    g.add_argument("--faiss-index", help='FAISS index factory string, e.g. "IVF4096,PQ32" or "HNSW32"')
    g.add_argument("--search-params", help='FAISS search settings, e.g. "nprobe=32" or "efSearch=256"')
    g.add_argument("--train-size", type=int, help="vectors sampled to train the index")
    g.add_argument("--shard-size", type=int, help="passages per resumable corpus shard")
    g.add_argument("--recall-sample", type=int, help="queries for the index's recall vs exact search")
    g.add_argument("--work", type=Path, help="corpus shards (default: <out>/work/<dataset>); kept for reruns")
    return ap


def main(argv=None) -> None:
    run(build_parser().parse_args(argv))


def expand_datasets(names: list[str], params) -> list[str]:
    """``--dataset`` values in order: ``miracl`` becomes ``miracl:<lang>`` for each of params.yaml's
    ``miracl.languages``; an unknown name or MIRACL language is an error naming the valid ones."""
    from pipeline.params import MIRACL_LANGUAGES

    out = []
    for name in names:
        if name == "miracl":
            out += [f"miracl:{lang}" for lang in params.miracl.languages]
        elif name.startswith("miracl:"):
            if name.split(":", 1)[1] not in MIRACL_LANGUAGES:
                raise SystemExit(f"evaluate: {name!r} is not a MIRACL language; valid: {', '.join(MIRACL_LANGUAGES)}")
            out.append(name)
        elif name in params.datasets:
            out.append(name)
        else:
            raise SystemExit(f"evaluate: unknown dataset {name!r}; valid: {sorted(params.datasets)}, miracl or "
                             "miracl:<lang>")
    return list(dict.fromkeys(out))


def run(args: argparse.Namespace) -> None:
    """Every dataset of ``args`` (see :func:`build_parser`), then ``info.json``."""
    from pipeline.assets import unpinned_assets
    from pipeline.encoder import Encoder, model_fingerprint
    from pipeline.params import load_params
    from pipeline.st_format import git_revision

    params = load_params()
    m, p = params.encoder, params.index
    out = args.out.resolve()
    committed = (Path.cwd() / "metrics").resolve()
    if out == committed or committed in out.parents:
        raise SystemExit(f"evaluate: --out {args.out} is inside the committed metrics/ folder; choose another")
    args.dataset = expand_datasets(args.dataset, params)
    mp = params.miracl
    for key in ("miracl_split", "faiss_index", "search_params", "train_size", "shard_size", "recall_sample"):
        if getattr(args, key) is None:
            setattr(args, key, getattr(mp, key.removeprefix("miracl_")))
    settings = {
        "query_prefix": m.query_prefix if args.query_prefix is None else args.query_prefix,
        "passage_prefix": m.passage_prefix if args.passage_prefix is None else args.passage_prefix,
        "pooling": args.pooling or m.pooling, "engine": args.engine or p.engine,
        "compute_type": args.compute_type or p.compute_type, "device": args.device or p.device,
        "max_length": args.max_length or m.max_length, "batch_size": args.batch_size or p.batch_size,
        "max_tokens": p.max_tokens if args.max_tokens is None else args.max_tokens,
        "threads": args.threads or p.threads,
    }
    model_dir, model_info = resolve_model(args.model, args.revision)
    tag = args.tag or "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(args.model).name)
    keys = ("engine", "pooling", "max_length", "batch_size", "threads", "compute_type", "device")
    encoder = Encoder.from_params(model_dir, m, p, max_tokens=settings["max_tokens"] or None,
                                  **{k: settings[k] for k in keys})
    results, datasets, fingerprint = {}, {}, None
    for name in args.dataset:
        t0 = time.perf_counter()
        if name.startswith("miracl:"):
            from .miracl import fetch_miracl, load_miracl

            lang = name.split(":", 1)[1]
            ds = (load_miracl(args.miracl_dir, lang, args.miracl_split, args.miracl_corpus_dir) if args.miracl_dir
                  else fetch_miracl(lang, args.miracl_split))
            folder = name.replace(":", "-")
            # what the corpus vectors depend on: the model folder's content (sha256 of every file), then the settings
            fingerprint = fingerprint or model_fingerprint(model_dir, settings["compute_type"])
            manifest = {**fingerprint, **{k: settings[k] for k in
                        ("passage_prefix", "pooling", "engine", "compute_type", "max_length")},
                        "corpus": [f.name for f in ds.corpus]}
            results[name] = evaluate_miracl(
                ds, encoder, settings["query_prefix"], settings["passage_prefix"], out, folder,
                args.work or out / "work" / folder, args.faiss_index, args.train_size, args.shard_size,
                args.run_depth, args.recall_sample, args.search_params, manifest, tag,
                log=lambda s: print(s, file=sys.stderr))
            datasets[name] = {"folder": folder, **ds.source, "split": ds.split}
        else:
            spec = params.datasets[name]
            results[name] = evaluate_lareqa(name, params, encoder, settings["query_prefix"],
                                            settings["passage_prefix"], out, args.run_depth, args.languages, tag)
            datasets[name] = {"folder": name, "path": spec.path, "url": spec.url,
                              "languages": args.languages or spec.languages, "sha256": spec.sha256 or {}}
        print(name, json.dumps(results[name]), f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    write_json(out / "info.json", {**model_info, **settings, "run_depth": args.run_depth, "tag": tag,
                                   "git_revision": git_revision(), "datasets": datasets,
                                   "score": params.score.model_dump(), "mirror": str(params.mirror_path),
                                   **({"unpinned_assets": unpinned_assets()} if unpinned_assets() else {})})


if __name__ == "__main__":
    from pipeline import console

    console.run(main, "evaluate")  # bad or unreachable inputs: one line, no traceback (--verbose for it)
