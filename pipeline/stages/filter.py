"""DVC stage ``filter``: translation quality filters (:mod:`pipeline.quality`) over every target language.

Reads the English pairs of ``data/gathered/pairs.parquet`` and ``data/translated/<lang>.parquet``
for every language of ``params.translate.targets`` (``pair_id, source, lang, question, passage,
context, system, src_question, src_passage``), applies ``params.filter`` (back-translating with
``filter.roundtrip`` models where configured) and writes:

* ``data/filtered/pairs.parquet``: every kept row of every language, English included:
  ``pair_id, source, lang, question, passage, context, system`` plus the quality columns
  (``length_ratio_*``, ``langid_*``, ``roundtrip_chrf_*``; null where not measured);
* ``data/filtered/rejected.parquet``: the rejected rows with their English original, the
  back-translations and ``reasons`` (``;``-joined);
* ``metrics/data.json``: per language pairs in, kept, rejected, rejected by reason and the mean
  round-trip chrF where measured.

All inputs are read and validated (and the back-translators built) before anything is written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ..io import write_json, write_parquet
from ..lareqa import DataError
from ..params import load_params
from ..quality import SOURCE_COLUMNS, filter_pairs, reason_counts, roundtrip_translators
from ..sources import PAIR_COLUMNS, SOURCE_LANG


def read_inputs(pairs_path: Path, translated_dir: Path, langs: list[str]) -> pd.DataFrame:
    """English rows of the gathered pairs and the translated rows of ``langs``, validated."""
    if not pairs_path.exists():
        raise DataError(f"{pairs_path}: not found (run the gather stage)")
    pairs = pd.read_parquet(pairs_path)
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise DataError(f"{pairs_path}: missing columns {missing}")
    frames = [pairs[pairs["lang"] == SOURCE_LANG][PAIR_COLUMNS]]
    english = set(frames[0]["pair_id"])
    for lang in langs:
        if lang == SOURCE_LANG:
            continue
        path = translated_dir / f"{lang}.parquet"
        if not path.exists():
            raise DataError(f"{path}: not found (run the translate stage for {lang!r})")
        df = pd.read_parquet(path)
        missing = [c for c in PAIR_COLUMNS + SOURCE_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{path}: missing columns {missing}")
        wrong = df[df["lang"] != lang]
        if len(wrong):
            raise DataError(f"{path}: record {int(wrong.index[0])} (pair_id {wrong['pair_id'].iloc[0]}): "
                            f"field 'lang' is {wrong['lang'].iloc[0]!r}, expected {lang!r}")
        orphan = df[~df["pair_id"].isin(english)]
        if len(orphan):
            raise DataError(f"{path}: record {int(orphan.index[0])}: field 'pair_id' "
                            f"{orphan['pair_id'].iloc[0]!r} has no English pair in {pairs_path}")
        frames.append(df[PAIR_COLUMNS + SOURCE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def data_metrics(pairs_in: pd.DataFrame, kept: pd.DataFrame, rejected: pd.DataFrame) -> dict:
    """``metrics/data.json``: per language counts, rejections by reason, mean round-trip chrF."""
    out: dict = {"languages": {}}
    for lang in dict.fromkeys(pairs_in["lang"]):
        k, r = kept[kept["lang"] == lang], rejected[rejected["lang"] == lang]
        entry = {
            "system": ",".join(sorted(set(pairs_in.loc[pairs_in["lang"] == lang, "system"].astype(str)))),
            "pairs_in": int((pairs_in["lang"] == lang).sum()),
            "kept": int(len(k)),
            "rejected": int(len(r)),
            "rejected_by": reason_counts(r),
        }
        scores = pd.concat([k, r])[["roundtrip_chrf_question", "roundtrip_chrf_passage"]].dropna()
        if len(scores):
            entry["roundtrip_measured"] = int(len(scores))
            entry["mean_roundtrip_chrf_question"] = round(float(scores["roundtrip_chrf_question"].mean()), 3)
            entry["mean_roundtrip_chrf_passage"] = round(float(scores["roundtrip_chrf_passage"].mean()), 3)
        out["languages"][lang] = entry
    out["total"] = {"pairs_in": int(len(pairs_in)), "kept": int(len(kept)), "rejected": int(len(rejected))}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="data/gathered/pairs.parquet")
    ap.add_argument("--translated", default="data/translated")
    ap.add_argument("--out", default="data/filtered")
    ap.add_argument("--metrics", default="metrics/data.json")
    ap.add_argument("--cache-dir", default=None, help="where back-translation models are prepared "
                                                      "(default: the asset cache's translation/ folder)")
    args = ap.parse_args(argv)
    params = load_params()
    langs = list(params.translate.targets)
    df = read_inputs(Path(args.pairs), Path(args.translated), langs)
    translators = roundtrip_translators(params, set(df["lang"]), args.cache_dir, progress=True)
    kept, rejected = filter_pairs(df, params.filter, translators)
    stats = data_metrics(df, kept, rejected)
    write_parquet(Path(args.out) / "pairs.parquet", kept)
    write_parquet(Path(args.out) / "rejected.parquet", rejected)
    write_json(Path(args.metrics), stats)
    print(json.dumps({lang: {k: v for k, v in e.items() if k in ("pairs_in", "kept", "rejected")}
                      for lang, e in stats["languages"].items()}))


if __name__ == "__main__":
    main()
