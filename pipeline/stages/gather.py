"""DVC stage ``gather``: the English QA sources as pairs, cleaned and kept apart from the evaluation sets.

Reads ``params.gather`` (sources, with_context, leakage_guard), ``params.datasets``,
``params.languages`` and ``params.mirror_path``. Loads every source (:mod:`pipeline.sources`), keeps
English plus the translations in ``params.languages``, drops empty and duplicate pairs, then every
pair of a source that shares a question or a passage with an evaluation set of ``gather.leakage_guard``
or of the source's own ``leakage_guard``, and last keeps a fixed sample of ``limit`` English questions
of a source that has one (``sample_seed``). Writes:

* ``data/gathered/pairs.parquet``: ``pair_id, source, lang, question, passage, context, system``
  (``system``: ``source`` for the English originals, ``reference`` for human translations the
  source carries);
* ``metrics/gather.json``: per source its licence, location, the evaluation sets it is guarded against,
  its limit and, per language, pairs read, empty and duplicate pairs dropped, leakage removed (in all,
  and per evaluation set: ``leakage_removed_by``), pairs sampled away by the limit and pairs kept, so that
  kept = read - empty - duplicates - leakage - sampled away.

A SQuAD source whose file is SQuAD v1.1 dev (by its sha256, whatever its name) is refused when it is
guarded against an XQuAD set: XQuAD was made from that file, and the guard removes only exact overlaps
(``pipeline.params`` refuses it by name or pin while an XQuAD set is in ``index.datasets``).

Every input is read and validated before anything is written; a run that leaves no pair fails
instead of writing an empty table (``docs/data-rules.md``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ..assets import unpinned_assets
from ..errors import DataError
from ..io import write_json, write_parquet
from ..lareqa import dataset_files, load_lareqa
from ..params import SQUAD_DEV_SHA256, is_xquad, load_params
from ..schema import PAIR_COLUMNS, SOURCE_LANG
from ..sources import apply_leakage_guards, clean_pairs, evaluation_texts, limit_pairs, load_source
from .. import console


def _per_lang(counts: dict, source: str, langs: list[str]) -> dict[str, int]:
    return {lang: int(counts.get((source, lang), 0)) for lang in langs}


def _check_output(pairs: pd.DataFrame, read: dict, dropped: dict, leaked: dict, own_guards: bool) -> None:
    """Fail rather than write an empty table, or one with two rows for one (pair_id, lang)."""
    if pairs.empty:
        def total(counts):
            return sum(int(v) for v in counts.values())
        keys = "gather.leakage_guard" + (", gather.sources[*].leakage_guard" if own_guards else "")
        raise DataError(f"gather: no pairs left to write: {total(read)} read, {total(dropped['empty'])} empty, "
                        f"{total(dropped['duplicate'])} duplicate, {total(leaked)} removed by the leakage guard "
                        f"({keys})")
    dup = pairs[pairs.duplicated(["pair_id", "lang"])]
    if len(dup):
        row = dup.iloc[0]
        raise DataError(f"gather: pair_id {row['pair_id']!r} has two rows in language {row['lang']!r} "
                        f"(source {row['source']!r})")


def _refuse_squad_dev(loaded: list, guards: dict[str, list[str]], specs: dict) -> None:
    """A SQuAD v1.1 dev file (by content) guarded against an XQuAD set is an error: XQuAD was made from it."""
    for s in loaded:
        xquad = [name for name in guards[s.name] if is_xquad(name, specs[name])]
        if s.sha256 == SQUAD_DEV_SHA256 and xquad:
            raise DataError(f"gather.sources[{s.name}]: {s.location} is SQuAD v1.1 dev (sha256 {s.sha256[:12]}...), "
                            f"what XQuAD, hence {xquad[0]!r}, was made from; the leakage guard removes only exact "
                            f"overlaps, not the rest of the same articles: train on SQuAD v1.1 train "
                            f"(train-v1.1.json)")


def gather(params) -> tuple[pd.DataFrame, dict]:
    """All sources of ``params.gather``, cleaned and leakage-guarded, and their statistics."""
    g = params.gather
    names = [s.name for s in g.sources]
    if len(set(names)) != len(names):
        raise DataError(f"gather.sources: source names must be unique (got {names})")
    keep = [SOURCE_LANG] + [lang for lang in params.languages if lang != SOURCE_LANG]
    loaded = [load_source(spec, params.mirror_path, g.with_context, keep) for spec in g.sources]
    guards = {s.name: list(dict.fromkeys([*g.leakage_guard, *s.leakage_guard])) for s in g.sources}
    specs = {name: params.datasets[name] for name in dict.fromkeys(n for sets in guards.values() for n in sets)}
    _refuse_squad_dev(loaded, guards, specs)
    texts = {name: evaluation_texts([load_lareqa(name, dataset_files(spec, params.mirror_path))])
             for name, spec in specs.items()}

    frames = [s.pairs[s.pairs["lang"].isin(keep)] for s in loaded]
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PAIR_COLUMNS)
    read = pairs.groupby(["source", "lang"]).size().to_dict()
    pairs, dropped = clean_pairs(pairs)
    pairs, leaked, leaked_by = apply_leakage_guards(pairs, texts, guards)
    sampled = {}
    for spec in g.sources:
        pairs, away = limit_pairs(pairs, spec.name, spec.limit, spec.sample_seed)
        sampled.update(away)
    lang_rank = {lang: i for i, lang in enumerate(keep)}
    source_rank = {name: i for i, name in enumerate(names)}
    pairs = pairs.sort_values(["source", "lang"], key=lambda c: c.map(source_rank if c.name == "source" else lang_rank),
                              kind="stable").reset_index(drop=True)
    kept = pairs.groupby(["source", "lang"]).size().to_dict()
    _check_output(pairs, read, dropped, leaked, any(s.leakage_guard for s in g.sources))

    stats = {
        "pairs": int(len(pairs)),
        "languages": {lang: int((pairs["lang"] == lang).sum()) for lang in keep},
        "leakage_guard": {"datasets": list(g.leakage_guard),
                          "texts": len(set().union(*(texts[name] for name in g.leakage_guard)))},
        "with_context": g.with_context,
        "sources": {},
    }
    if unpinned_assets():  # mirror copies used without a sha256 pin: what they were, recorded with the outputs
        stats["unpinned_assets"] = unpinned_assets()
    for s, spec in zip(loaded, g.sources, strict=True):
        langs = [lang for lang in keep if lang in set(s.pairs["lang"])]
        stats["sources"][s.name] = {
            "type": s.type,
            "licence": s.licence,
            "location": s.location,
            "leakage_guard": guards[s.name],
            "limit": spec.limit,
            "sample_seed": spec.sample_seed,
            **{k: int(v) for k, v in s.dropped.items()},
            "read": _per_lang(read, s.name, langs),
            "empty_dropped": _per_lang(dropped["empty"], s.name, langs),
            "duplicates_dropped": _per_lang(dropped["duplicate"], s.name, langs),
            "leakage_removed": _per_lang(leaked, s.name, langs),
            "leakage_removed_by": {name: _per_lang(leaked_by[name], s.name, langs) for name in guards[s.name]},
            "sampled_away": _per_lang(sampled, s.name, langs),
            "kept": _per_lang(kept, s.name, langs),
        }
    return pairs[PAIR_COLUMNS], stats


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/gathered/pairs.parquet")
    ap.add_argument("--metrics", default="metrics/gather.json")
    args = ap.parse_args(argv)
    pairs, stats = gather(load_params())
    write_parquet(Path(args.out), pairs)
    write_json(Path(args.metrics), stats)
    print(json.dumps({"pairs": stats["pairs"], "languages": stats["languages"]}))


if __name__ == "__main__":
    console.run(main, "gather")
