"""DVC stage ``translate``: the English pairs in one target language, by reference or by MT.

``python -m pipeline.stages.translate --lang <iso>`` reads ``data/gathered/pairs.parquet`` and writes
``data/translated/<lang>.parquet`` (pair_id, source, lang, question, passage, context, system,
src_question, src_passage). ``translate.targets[lang].backend`` picks how: ``reference`` keeps the
human translations the source carries (with ``fill: <model>``, the English pairs no source carries a
human translation of, or only those of the sources ``fill_sources`` names, are machine-translated by
``translate.models[fill]`` and added after them);
``ctranslate2`` translates the English pairs with ``translate.models[model]``, resumably through
``data/translate-work/<lang>/`` (removed on success).

Shards (ctranslate2 only): ``--shard i/N`` (0-based) translates only the i-th of N contiguous pieces of
the language's chunks into ``data/translate-shards/<lang>/shard-<i>-of-<N>.json`` and stops, so pieces
run on different machines or GPUs at once. The stage run without ``--shard`` (what ``dvc repro
translate@<lang>`` runs) first translates every shard of ``translate.shards`` that no shard file holds
yet (each written when done, so a killed run keeps the finished shards), then merges: the chunks found
in shard files are taken as they are and the rest translated, giving the same rows, in the same order,
as an unsharded run. With all shard files present the merge loads no model.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd

from ..assets import cache_root, sha256_of
from ..generation import PROMPTS_FILE
from ..io import read_parquet, write_parquet
from ..params import load_params
from ..reproducibility import current_mode
from ..schema import PAIR_COLUMNS
from ..translation import LazyTranslator, build_translator, pair_texts, reference_pairs, translate_pairs
from ..translation_work import read_shards, shard_chunks, shard_missing, shard_path, translate_shard, write_shard
from .. import console

#: settings that change where or in how many pieces a language is translated, not what comes out:
#: left out of the chunk fingerprint, so chunks and shard files stay valid when they change
PLACEMENT_SETTINGS = {"targets", "models", "shards", "device_index"}


def parse_shard(value: str) -> tuple[int, int]:
    """``"3/8"`` -> ``(3, 8)``: shard 3 (0-based) of 8."""
    try:
        shard, shards = (int(x) for x in value.split("/"))
        shard_chunks(0, shard, shards)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {value!r}: expected i/N with 0 <= i < N, e.g. 3/8") from None
    return shard, shards


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lang", required=True, help="ISO code of a key of translate.targets")
    ap.add_argument("--pairs", default="data/gathered/pairs.parquet")
    ap.add_argument("--out", default="data/translated")
    ap.add_argument("--work", default="data/translate-work")
    ap.add_argument("--shards-dir", default="data/translate-shards", help="shard files, per language")
    ap.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                    help="translate only shard I (0-based) of N into --shards-dir and stop (no merge)")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.translate
    if args.lang not in p.targets:
        raise SystemExit(f"translate: language {args.lang!r} is not in params.yaml translate.targets "
                         f"(configured: {', '.join(sorted(p.targets))})")
    spec = p.targets[args.lang]
    pairs = read_parquet(args.pairs, required=PAIR_COLUMNS)
    t0 = time.perf_counter()
    report = {"lang": args.lang, "backend": spec.backend}
    reference = None
    if spec.backend == "reference":
        if args.shard and not spec.fill:
            print(json.dumps({**report, "shard": "/".join(map(str, args.shard)),
                              "note": "a reference target has nothing to translate; nothing written"}))
            return
        reference = reference_pairs(pairs, args.lang, where=args.pairs, allow_empty=bool(spec.fill))
        if spec.fill:  # the English pairs without a human translation (of fill_sources, if set) go to the model
            pairs = pairs[~pairs["pair_id"].isin(set(reference["pair_id"]))]
            if spec.fill_sources is not None:
                pairs = pairs[pairs["source"].isin(spec.fill_sources)]
            report["fill"], report["reference_rows"] = spec.fill, len(reference)
            report["fill_pairs"] = int((pairs["lang"] == "en").sum())
    if spec.backend == "reference" and not spec.fill:
        out = reference
    else:
        name = spec.model if spec.backend == "ctranslate2" else spec.fill
        report["model"] = name
        model = p.models[name]
        translator = LazyTranslator(lambda: build_translator(model, p, params.mirror_path, "en", args.lang,
                                                             cache_root() / "translation" / name))
        prompt = {"prompt": sha256_of(PROMPTS_FILE)} if model.kind == "gemma" else {}
        fingerprint = json.dumps({"model": model.model_dump(exclude_unset=True), "arithmetic": current_mode(),
                                  "settings": p.model_dump(exclude=PLACEMENT_SETTINGS), **prompt}, sort_keys=True)
        work, shard_dir = Path(args.work) / args.lang, Path(args.shards_dir) / args.lang
        texts = pair_texts(pairs, where=args.pairs)
        known = read_shards(shard_dir)
        meta = {"lang": args.lang, "model": name, "texts": len(texts), "chunk_size": p.chunk_size}
        todo = [args.shard] if args.shard else [(i, p.shards) for i in range(p.shards)] if p.shards > 1 else []
        for shard, shards in todo:
            if args.shard or shard_missing(texts, p.chunk_size, shard, shards, fingerprint, known):
                records = translate_shard(texts, translator, work, p.chunk_size, shard, shards, fingerprint, known)
                write_shard(shard_dir, shard, shards, records, meta)
                known.update({r["input_sha256"]: r["outputs"] for r in records})
        if args.shard:  # its chunks are in the shard file now; other shards may be running beside it
            for r in records:
                (work / f"chunk-{r['index']:05d}.json").unlink(missing_ok=True)
            print(json.dumps({**report, "shard": f"{args.shard[0]}/{args.shard[1]}", "texts": len(texts),
                              "chunks": len(records), "file": str(shard_path(shard_dir, *args.shard)),
                              "seconds": round(time.perf_counter() - t0, 1)}))
            return
        out = translate_pairs(pairs, args.lang, translator, f"ctranslate2:{name}", work, p.chunk_size,
                              fingerprint, where=args.pairs, known=known)
        if reference is not None:
            out = pd.concat([reference, out], ignore_index=True)
    write_parquet(Path(args.out) / f"{args.lang}.parquet", out)
    if spec.backend == "ctranslate2" or spec.fill:
        shutil.rmtree(Path(args.work) / args.lang, ignore_errors=True)
    print(json.dumps({**report, "shards": p.shards, "rows": len(out),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    console.run(main, "translate")
