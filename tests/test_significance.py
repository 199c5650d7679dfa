"""The paired bootstrap over questions."""
import numpy as np
import pandas as pd
import pytest

from pipeline.significance import headline, paired_bootstrap


def _run(ap_by_lang: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for lang, aps in ap_by_lang.items():
        for i, ap in enumerate(aps):
            rows.append({"qid": f"{lang}:q{i}", "query_lang": lang, "setting": "mono", "pool_lang": lang,
                         "ap": ap, "ap@20": ap, "r@1": float(ap == 1.0), "r@10": 1.0, "rank_distance": np.nan})
    return pd.DataFrame(rows)


def test_headline_is_a_macro_average_over_cells():
    values = np.array([[1.0, 0.0], [0.5, np.nan], [0.0, 1.0]])  # 3 questions x 2 cells
    assert headline(values, np.ones((1, 3)))[0] == pytest.approx(((1.5 / 3) + (1.0 / 2)) / 2)
    # a replicate that drew question 0 twice and question 2 not at all
    assert headline(values, np.array([[2.0, 1.0, 0.0]]))[0] == pytest.approx(((2.5 / 3) + 0.0) / 2)


def test_identical_runs_have_a_zero_interval():
    rng = np.random.default_rng(0)
    a = _run({"en": list(rng.random(50)), "de": list(rng.random(50))})
    res = paired_bootstrap(a, a.copy(), metrics=["mono_map"], n_boot=200).iloc[0]
    assert res["diff"] == 0 and res["low"] == 0 and res["high"] == 0


def test_a_consistent_gain_is_detected_and_noise_is_not():
    rng = np.random.default_rng(1)
    base = {"en": list(rng.random(200) * 0.8), "de": list(rng.random(200) * 0.8)}
    a = _run(base)
    better = _run({k: [v + 0.05 for v in vals] for k, vals in base.items()})
    res = paired_bootstrap(a, better, metrics=["mono_map"], n_boot=500).iloc[0]
    assert res["diff"] == pytest.approx(0.05)
    assert 0.049 < res["low"] and res["high"] < 0.051 and res["p_le_0"] == 0.0  # every question gained 0.05
    noisy = _run({k: list(rng.random(200) * 0.8) for k in base})
    res = paired_bootstrap(a, noisy, metrics=["mono_map"], n_boot=500).iloc[0]
    assert res["low"] < 0 < res["high"] or abs(res["diff"]) > 0.05
