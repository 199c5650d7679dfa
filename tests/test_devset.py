"""The dev set: one split for every strategy and seed, a LAReQA-style pool, and the split stage."""
import hashlib
import json

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from pipeline.devset import DevSetError, dev_score, retrieval_set, split_pairs


def pairs_with_context(n: int = 40) -> pd.DataFrame:
    rows = []
    for i in range(n):
        for lang in ("en", "de") if i % 2 else ("en",):
            answer = f"Answer {lang} {i} is here."
            context = f"Intro {lang} {i} first. {answer} Outro {lang} {i} last."
            rows.append({"pair_id": f"p{i:03d}", "source": "s", "lang": lang, "question": f"Question {lang} {i}?",
                         "passage": answer, "context": context, "system": "ref"})
    return pd.DataFrame(rows)


def test_split_holds_out_whole_ids_and_ignores_row_order():
    pairs = pairs_with_context(100)
    train, dev = split_pairs(pairs, 0.1, seed=0)
    assert dev["pair_id"].nunique() == 10 and not set(train["pair_id"]) & set(dev["pair_id"])
    assert len(train) + len(dev) == len(pairs)
    # every language of a held-out id goes with it
    assert set(dev["pair_id"]) == set(pairs.loc[pairs["pair_id"].isin(dev["pair_id"]), "pair_id"])
    shuffled = pairs.sample(frac=1.0, random_state=3)
    assert set(split_pairs(shuffled, 0.1, seed=0)[1]["pair_id"]) == set(dev["pair_id"])
    assert set(split_pairs(pairs, 0.1, seed=1)[1]["pair_id"]) != set(dev["pair_id"])
    with pytest.raises(DevSetError, match="two or more question ids"):
        split_pairs(pairs.iloc[:1], 0.5, seed=0)


def test_retrieval_set_pool_holds_paragraph_sentences_and_one_gold_per_row():
    dev = pairs_with_context(4)  # ids 0..3; 1 and 3 also in German
    queries, pool = retrieval_set(dev, ["en", "de"])
    assert list(queries["qid"]) == ["en:p000", "en:p001", "de:p001", "en:p002", "en:p003", "de:p003"]
    assert list(queries["id"]) == ["p000", "p001", "p001", "p002", "p003", "p003"]
    # three sentences per paragraph, none duplicated; English candidates first, then German
    assert len(pool) == 3 * 6 and pool["cand_id"].is_unique
    assert list(pool["lang"]) == ["en"] * 12 + ["de"] * 6
    text = pool.set_index("cand_id")["text"]
    assert [text[g] for g in queries["gold"]] == list(dev.sort_values(["pair_id", "lang"], ascending=[True, False])
                                                       ["passage"])
    # a paragraph sentence that overlaps the answer sentence is not a second candidate
    odd = dev.iloc[:1].assign(passage="Answer en 0 is", context="Intro. Answer en 0 is here. Outro.")
    _, p = retrieval_set(odd, ["en"])
    assert list(p["text"]) == ["Answer en 0 is", "Intro.", "Outro."]
    # without contexts the pool is the answer sentences
    _, p = retrieval_set(dev.assign(context=None), ["en", "de"])
    assert len(p) == 6


def test_dev_score_is_the_mean_of_the_three_settings():
    assert dev_score({"mono_map": 0.9, "cross_map": 0.6, "multi_map": 0.3, "mono_r1": 0.1}) == pytest.approx(0.6)
    assert dev_score({"mono_map": 0.8, "multi_map": 0.4}) == pytest.approx(0.6)  # one language: no cross
    with pytest.raises(DevSetError):
        dev_score({"mono_r1": 1.0})


def _stage(tmp_path, monkeypatch, **changes):
    """Run the split stage with params.yaml changed at dotted keys (``sampling.mode`` as ``sampling__mode``);
    return the sha256 of every file it wrote."""
    import pipeline.params
    from pipeline.stages import split

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["languages"] = ["en", "de"]
    raw["dev"]["fraction"] = 0.1
    for key, value in changes.items():
        *parents, name = key.split("__")
        node = raw
        for part in parents:
            node = node[part]
        node[name] = value
    path = tmp_path / f"params-{len(list(tmp_path.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(pipeline.params, "PARAMS_FILE", path)
    split.main(["--pairs", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "split")])
    files = sorted(p for p in (tmp_path / "split").rglob("*") if p.is_file())
    return {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_split_stage_gives_one_byte_identical_dev_set_for_every_mode_and_seed(tmp_path, monkeypatch):
    pairs_with_context(60).to_parquet(tmp_path / "pairs.parquet", index=False)
    first = _stage(tmp_path, monkeypatch)
    assert set(first) == {"split/train.parquet", "split/dev.parquet", "split/dev/queries.parquet",
                          "split/dev/pool.parquet", "split/dev/stats.json"}
    # the run's seed, mode and alpha are not inputs of the dev set
    for change in ({"sampling__mode": "xx"}, {"sampling__mode": "xy"}, {"sampling__alpha": 0.3}, {"seed": 14},
                   {"seed": 15, "sampling__mode": "xy"}):
        assert _stage(tmp_path, monkeypatch, **change) == first, change
    # the dev seed is: another one draws other ids
    assert _stage(tmp_path, monkeypatch, dev__seed=1)["split/dev/queries.parquet"] != first["split/dev/queries.parquet"]
    stats = json.loads((tmp_path / "split/dev/stats.json").read_text())
    assert stats["dev_pair_ids"] == 6 and stats["train_pair_ids"] == 54
    assert stats["dev_queries"]["en"] == 6
    assert stats["dev_queries"]["en"] + stats["dev_queries"]["de"] == stats["dev_rows"]


def test_dvc_yaml_keeps_seed_and_sampling_out_of_the_split_stage():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["split"]
    assert not {"seed", "sampling"} & {p if isinstance(p, str) else next(iter(p)) for p in stage["params"]}
