"""DVC stage ``translate``: the English pairs in one target language, by reference or by MT.

``python -m pipeline.stages.translate --lang <iso>`` reads ``data/gathered/pairs.parquet`` and writes
``data/translated/<lang>.parquet`` (pair_id, source, lang, question, passage, context, system,
src_question, src_passage). ``translate.targets[lang].backend`` picks how: ``reference`` keeps the
human translations the source carries; ``ctranslate2`` translates the English pairs with
``translate.models[model]``, resumably through ``data/translate-work/<lang>/`` (removed on success).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd

from ..assets import cache_root
from ..io import write_parquet
from ..params import load_params
from ..translation import build_translator, reference_pairs, translate_pairs
from .. import console


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lang", required=True, help="ISO code of a key of translate.targets")
    ap.add_argument("--pairs", default="data/gathered/pairs.parquet")
    ap.add_argument("--out", default="data/translated")
    ap.add_argument("--work", default="data/translate-work")
    args = ap.parse_args(argv)
    params = load_params()
    p = params.translate
    if args.lang not in p.targets:
        raise SystemExit(f"translate: language {args.lang!r} is not in params.yaml translate.targets "
                         f"(configured: {', '.join(sorted(p.targets))})")
    spec = p.targets[args.lang]
    pairs = pd.read_parquet(args.pairs)
    t0 = time.perf_counter()
    if spec.backend == "reference":
        out = reference_pairs(pairs, args.lang, where=args.pairs)
    else:
        model = p.models[spec.model]
        translator = build_translator(model, p, params.mirror_path, "en", args.lang,
                                      cache_root() / "translation" / spec.model)
        fingerprint = json.dumps({"model": model.model_dump(), "settings": p.model_dump(exclude={"targets", "models"})},
                                 sort_keys=True)
        work = Path(args.work) / args.lang
        out = translate_pairs(pairs, args.lang, translator, f"ctranslate2:{spec.model}", work, p.chunk_size,
                              fingerprint, where=args.pairs)
    write_parquet(Path(args.out) / f"{args.lang}.parquet", out)
    if spec.backend == "ctranslate2":
        shutil.rmtree(Path(args.work) / args.lang, ignore_errors=True)
    print(json.dumps({"lang": args.lang, "backend": spec.backend, "model": spec.model, "rows": len(out),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    console.run(main, "translate")
