"""Batch samplers on a synthetic pair table whose texts name their pair_id and language."""
import hashlib

import pandas as pd
import pytest

from pipeline.batching import (
    BatchingError,
    assemble,
    batch_statistics,
    generator,
    hybrid_batches,
    validation_batch_count,
)
from pipeline.devset import split_pairs
from pipeline.io import write_parquet
from pipeline.params import SamplingParams

LANGS = ["en", "de", "zh"]


def synthetic_pairs(n: int = 120, counts: dict | None = None, shared_passages: bool = True) -> pd.DataFrame:
    """pair_id i exists in en always, in other languages for i < counts[lang]; pairs 2k and 2k+1
    share their passage text (two questions answered by one sentence)."""
    counts = counts or {"en": n, "de": n, "zh": n * 2 // 3}
    rows = []
    for i in range(n):
        for lang in LANGS:
            if i >= counts.get(lang, 0):
                continue
            k = i // 2 if shared_passages else i
            row = {"pair_id": f"p{i:04d}", "source": "synthetic", "lang": lang, "question": f"{lang} question {i}",
                   "passage": f"{lang} passage {k}", "context": "", "system": "reference"}
            rows.append(row)
    return pd.DataFrame(rows)


def batches(df, n=40, size=8, alpha=0.5, seed=3, weights="uniform", langs=LANGS):
    return hybrid_batches(df, langs, n, size, alpha, generator(seed, 1), weights)


def test_xx_batches_are_single_language_and_consistent():
    pairs = synthetic_pairs()
    b = batches(pairs, alpha=1.0)
    assert set(b["kind"]) == {"xx"}
    assert (b["query_lang"] == b["passage_lang"]).all()
    assert (b.groupby("batch_id")["query_lang"].nunique() == 1).all()
    # every text belongs to its pair_id and language
    for lang_col, text_col, src in (("query_lang", "query", "question"), ("passage_lang", "passage", "passage")):
        truth = pairs[["pair_id", "lang", src]].rename(columns={src: "truth"})
        m = b.merge(truth, left_on=["pair_id", lang_col], right_on=["pair_id", "lang"], how="left")
        assert (m[text_col] == m["truth"]).all()


def test_xy_batches_cross_languages_everywhere_and_mix_them():
    pairs = synthetic_pairs()
    b = batches(pairs, alpha=0.0)
    assert set(b["kind"]) == {"xy"}
    assert (b["query_lang"] != b["passage_lang"]).all()
    assert (b.groupby("batch_id")["query_lang"].nunique() > 1).all()
    m = b.merge(pairs, left_on=["pair_id", "passage_lang"], right_on=["pair_id", "lang"], how="left")
    assert (m["passage_x"] == m["passage_y"]).all()
    assert set(zip(b["query_lang"], b["passage_lang"], strict=True)) == {(a, c) for a in LANGS for c in LANGS if a != c}


def test_no_duplicate_pair_id_or_text_within_a_batch():
    pairs = synthetic_pairs()
    b = batches(pairs, n=200, size=16)
    for _, g in b.groupby("batch_id"):
        assert g["pair_id"].is_unique and g["query"].is_unique and g["passage"].is_unique


def test_pairs_are_drawn_without_replacement():
    pairs = synthetic_pairs(n=40, counts={"en": 40}, shared_passages=False)
    b = batches(pairs, n=10, size=8, alpha=1.0, langs=["en"])
    for start in (0, 5):  # each run of 5 batches covers the 40 pairs exactly once
        ids = b.loc[b["batch_id"].between(start, start + 4), "pair_id"]
        assert ids.is_unique and len(ids) == 40


def test_hybrid_share_of_xx_converges_to_alpha():
    pairs = synthetic_pairs(n=60)
    for alpha in (0.3, 0.5):
        stats = batch_statistics(batches(pairs, n=3000, size=4, alpha=alpha))
        assert stats["xx_share"] == pytest.approx(alpha, abs=0.03)  # 3 standard errors


def test_uniform_and_proportional_language_weights():
    pairs = synthetic_pairs(n=200, counts={"en": 200, "de": 100, "zh": 20})
    for weights, expected in (("uniform", [1 / 3] * 3), ("proportional", [200 / 320, 100 / 320, 20 / 320])):
        b = batches(pairs, n=2000, size=2, alpha=1.0, weights=weights)
        share = b.groupby("batch_id")["query_lang"].first().value_counts(normalize=True)
        assert share.reindex(LANGS).to_numpy() == pytest.approx(expected, abs=0.035)


def test_too_few_distinct_pairs_make_a_short_batch():
    pairs = synthetic_pairs(n=10, counts={"en": 10, "de": 3}, shared_passages=False)
    b = batches(pairs, n=30, size=8, alpha=1.0)
    sizes = b.groupby("batch_id").size()
    langs = b.groupby("batch_id")["query_lang"].first()
    assert set(sizes[langs == "de"]) == {3} and set(sizes[langs == "en"]) == {8}
    assert batch_statistics(b)["short_batches"] == (langs == "de").sum() > 0


def test_xy_without_multilingual_pairs_is_an_error():
    pairs = synthetic_pairs(n=10, counts={"en": 10})
    with pytest.raises(BatchingError, match="two or more training languages"):
        batches(pairs, alpha=0.0)
    with pytest.raises(BatchingError, match="two rows in language"):
        batches(pd.concat([pairs, pairs.iloc[:1]]), alpha=1.0)


def _digest(df, path) -> str:
    write_parquet(path, df)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_assemble_is_deterministic_to_the_byte(tmp_path):
    pairs = synthetic_pairs(n=200)
    sampling = SamplingParams(mode="hybrid", alpha=0.5, batch_size=8, batches=30)
    train_pairs, dev_pairs = split_pairs(pairs, 0.1, seed=0)
    digests = {}
    for name, seed in (("a", 13), ("b", 13), ("c", 14)):
        train, val = assemble(train_pairs, dev_pairs, LANGS, sampling, seed)
        digests[name] = (_digest(train, tmp_path / f"{name}-train.parquet"),
                         _digest(val, tmp_path / f"{name}-val.parquet"))
    assert digests["a"] == digests["b"]
    assert digests["a"][0] != digests["c"][0] and digests["a"][1] != digests["c"][1]
    assert list(train.columns) == ["batch_id", "position", "kind", "pair_id", "query_lang", "passage_lang",
                                   "query", "passage"]
    assert not set(train["pair_id"]) & set(val["pair_id"]) and set(val["pair_id"]) <= set(dev_pairs["pair_id"])
    n_val = validation_batch_count(dev_pairs, 8)
    assert val["batch_id"].nunique() == n_val
    assert batch_statistics(val)["xx_batches"] == round(0.5 * n_val)  # exact mix in validation


def test_batch_statistics():
    b = batches(synthetic_pairs(), n=20, size=8)
    stats = batch_statistics(b)
    assert stats["batches"] == 20 and stats["rows"] == 160 and stats["pair_ids"] == b["pair_id"].nunique()
    assert stats["xx_batches"] + stats["xy_batches"] == 20
    assert stats["xx_share"] == pytest.approx(stats["xx_batches"] / 20)
    pair_counts = {k: v for k, v in stats.items() if k.startswith("lang_pair_")}
    assert sum(pair_counts.values()) == 160
    assert all(isinstance(v, (int, float)) for v in stats.values())


def test_a_training_language_without_pairs_is_an_error_naming_it():
    pairs = synthetic_pairs(n=40, counts={"en": 40, "de": 1, "zh": 40})
    sampling = SamplingParams(mode="hybrid", alpha=0.5, batch_size=8, batches=5)
    with pytest.raises(BatchingError) as err:
        assemble(pairs, pairs.iloc[0:0], ["en", "de", "zh", "fr"], sampling, 13)
    assert str(err.value).startswith("languages: 'de' has 1, 'fr' has 0 training pairs (2 or more needed)")
    train, _ = assemble(pairs, pairs.iloc[0:0], ["en", "zh"], sampling, 13)  # without them it runs
    assert set(train["query_lang"]) == {"en", "zh"}
