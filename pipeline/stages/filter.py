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
* ``metrics/data.json``: per language (and per system where a language mixes human and machine
  translations) pairs in, kept, rejected, the share kept, rejected by reason and the mean round-trip
  chrF where measured;
* ``metrics/rejected-sample.csv``: a few rejected rows of each language, system and first reason, to
  read what the filter removes and why (:func:`pipeline.quality.rejected_sample`).

The back-translation goes chunk by chunk through ``data/translate-work/roundtrip/<lang>/`` (the
translate stage's resumable chunks, :func:`pipeline.translation_work.translate_resumable`): a run killed
midway resumes from its finished chunks and gives the same rows; the folder is removed on success.

All inputs are read and validated, and every rule (the back-translation included) runs, before anything
is written; a language whose every row is rejected stops the stage instead of leaving it out of the table.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..io import read_parquet, write_csv, write_json, write_parquet
from ..params import load_params
from ..quality import filter_pairs, reason_counts, rejected_sample, roundtrip_resume, roundtrip_translators
from ..schema import PAIR_COLUMNS, SOURCE_COLUMNS, SOURCE_LANG
from .. import console


def _unique_pair_ids(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One row per pair_id in a language: a repeat would give two rows with one pair id downstream."""
    dup = df[df["pair_id"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: record {int(dup.index[0])}: field 'pair_id' {dup['pair_id'].iloc[0]!r} "
                        f"occurs twice in language {dup['lang'].iloc[0]!r}")
    return df


def read_inputs(pairs_path: Path, translated_dir: Path, langs: list[str]) -> pd.DataFrame:
    """English rows of the gathered pairs and the translated rows of ``langs``, validated."""
    if not pairs_path.exists():
        raise DataError(f"{pairs_path}: not found (run the gather stage)")
    pairs = read_parquet(pairs_path, required=PAIR_COLUMNS)
    frames = [_unique_pair_ids(pairs[pairs["lang"] == SOURCE_LANG][PAIR_COLUMNS], pairs_path)]
    english = set(frames[0]["pair_id"])
    for lang in langs:
        if lang == SOURCE_LANG:
            continue
        path = translated_dir / f"{lang}.parquet"
        if not path.exists():
            raise DataError(f"{path}: not found (run the translate stage for {lang!r})")
        df = read_parquet(path, required=PAIR_COLUMNS + SOURCE_COLUMNS)
        wrong = df[df["lang"] != lang]
        if len(wrong):
            raise DataError(f"{path}: record {int(wrong.index[0])} (pair_id {wrong['pair_id'].iloc[0]}): "
                            f"field 'lang' is {wrong['lang'].iloc[0]!r}, expected {lang!r}")
        orphan = df[~df["pair_id"].isin(english)]
        if len(orphan):
            raise DataError(f"{path}: record {int(orphan.index[0])}: field 'pair_id' "
                            f"{orphan['pair_id'].iloc[0]!r} has no English pair in {pairs_path}")
        frames.append(_unique_pair_ids(df[PAIR_COLUMNS + SOURCE_COLUMNS], path))
    return pd.concat(frames, ignore_index=True)


def check_kept(pairs_in: pd.DataFrame, kept: pd.DataFrame, rejected: pd.DataFrame) -> None:
    """Fail rather than write a table without a language of the input (every row of it rejected)."""
    if pairs_in.empty:
        raise DataError("filter: no input pairs (the gathered pairs have no English row)")
    for lang in dict.fromkeys(pairs_in["lang"]):
        if not (kept["lang"] == lang).any():
            counts = reason_counts(rejected[rejected["lang"] == lang])
            top = ", ".join(f"{r} {n}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n)
            raise DataError(f"filter: no pair left in language {lang!r}: all {int((pairs_in['lang'] == lang).sum())} "
                            f"rows rejected ({top}); check params.yaml filter")


def _counts(n_in: int, k: pd.DataFrame, r: pd.DataFrame) -> dict:
    """Pairs in, kept, rejected, the share kept, rejections by reason and the mean round-trip chrF."""
    entry = {"pairs_in": n_in, "kept": int(len(k)), "rejected": int(len(r)),
             "acceptance": round(len(k) / n_in, 4) if n_in else None, "rejected_by": reason_counts(r)}
    scores = pd.concat([k, r])[["roundtrip_chrf_question", "roundtrip_chrf_passage"]].dropna()
    if len(scores):
        entry["roundtrip_measured"] = int(len(scores))
        entry["mean_roundtrip_chrf_question"] = round(float(scores["roundtrip_chrf_question"].mean()), 3)
        entry["mean_roundtrip_chrf_passage"] = round(float(scores["roundtrip_chrf_passage"].mean()), 3)
    return entry


def data_metrics(pairs_in: pd.DataFrame, kept: pd.DataFrame, rejected: pd.DataFrame) -> dict:
    """``metrics/data.json``: per language counts, acceptance, rejections by reason, mean round-trip chrF;
    a language with rows from more than one system (human references and a model's fill) has the same
    per system under ``by_system``."""
    out: dict = {"languages": {}}
    for lang in dict.fromkeys(pairs_in["lang"]):
        rows = pairs_in[pairs_in["lang"] == lang]
        k, r = kept[kept["lang"] == lang], rejected[rejected["lang"] == lang]
        systems = sorted(set(rows["system"].astype(str)))
        entry = {"system": ",".join(systems), **_counts(len(rows), k, r)}
        if len(systems) > 1:
            entry["by_system"] = {sys_: _counts(int((rows["system"] == sys_).sum()), k[k["system"] == sys_],
                                                r[r["system"] == sys_]) for sys_ in systems}
        out["languages"][lang] = entry
    out["total"] = {"pairs_in": int(len(pairs_in)), "kept": int(len(kept)), "rejected": int(len(rejected))}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="data/gathered/pairs.parquet")
    ap.add_argument("--translated", default="data/translated")
    ap.add_argument("--out", default="data/filtered")
    ap.add_argument("--metrics", default="metrics/data.json")
    ap.add_argument("--rejected-sample", default="metrics/rejected-sample.csv")
    ap.add_argument("--cache-dir", default=None, help="where back-translation models are prepared "
                                                      "(default: the asset cache's translation/ folder)")
    ap.add_argument("--work", default="data/translate-work/roundtrip",
                    help="finished back-translation chunks, per language; a rerun after a kill resumes from them")
    args = ap.parse_args(argv)
    params = load_params()
    langs = list(params.translate.targets)
    df = read_inputs(Path(args.pairs), Path(args.translated), langs)
    translators = roundtrip_translators(params, set(df["lang"]), args.cache_dir)  # built on first use
    resume = roundtrip_resume(params, set(df["lang"]), args.work)
    kept, rejected = filter_pairs(df, params.filter, translators, resume, progress=True)  # lines on stdout
    check_kept(df, kept, rejected)
    stats = data_metrics(df, kept, rejected)
    write_parquet(Path(args.out) / "pairs.parquet", kept)
    write_parquet(Path(args.out) / "rejected.parquet", rejected)
    write_json(Path(args.metrics), stats)
    write_csv(Path(args.rejected_sample), rejected_sample(rejected))
    shutil.rmtree(args.work, ignore_errors=True)
    print(json.dumps({lang: {k: v for k, v in e.items() if k in ("pairs_in", "kept", "rejected")}
                      for lang, e in stats["languages"].items()}))


if __name__ == "__main__":
    console.run(main, "filter")
