"""The scripts that make the README's result tables, on a toy grid whose every number is known.

Each run's per-query table holds one value per setting (mono ``v``, cross ``v/2``, multi ``v/4``, rank
distance ``10/v``), so every mean, standard deviation, difference and verdict has an exact expected value.
"""
import pandas as pd
import pytest

from pipeline.metrics import headline_metrics

LANGS = ("en", "de")
IDS = [f"q{i}" for i in range(5)]
# run -> per-seed value v
VALUES = {"untrained": {0: 0.3}, "xx": {1: 0.5, 2: 0.5, 3: 0.5}, "xy": {1: 0.6, 2: 0.6, 3: 0.6},
          "hybrid": {1: 0.7, 2: 0.8, 3: 0.9}}


def per_query(v: float) -> pd.DataFrame:
    rows = []
    for i in IDS:
        for x in LANGS:
            qid = f"{x}:{i}"
            for y in LANGS:
                val = v if x == y else v / 2
                rows.append({"qid": qid, "query_lang": x, "setting": "mono" if x == y else "cross", "pool_lang": y,
                             "ap": val, "r@1": val, "r@10": val, "rank_distance": float("nan")})
            rows.append({"qid": qid, "query_lang": x, "setting": "multi", "pool_lang": "all", "ap": v / 4,
                         "r@1": v / 4, "r@10": v / 4, "rank_distance": 10 / v})
    return pd.DataFrame(rows)


@pytest.fixture
def toy_grid(tmp_path, monkeypatch):
    from experiments import collect, grids, report

    monkeypatch.setattr(grids, "OUT", tmp_path)
    monkeypatch.setattr(grids, "dataset_of", lambda grid: ("toy", []))
    monkeypatch.setattr(grids, "headline_of", lambda grid: headline_metrics((1, 10)))
    rows, tables = [], []
    for run, seeds in VALUES.items():
        for seed, v in seeds.items():
            params = {"sampling": {"mode": run if run != "untrained" else "hybrid", "alpha": 0.5}}
            train = {"select_by": "dev", "best_step": 20, "steps_run": 60, "stopped_early": False, "dev_score": v}
            scores = {"mono_map": v, "cross_map": v / 2, "multi_map": v / 4, "mono_r1": v, "cross_r1": v / 2,
                      "multi_r10": v / 4, "multi_rank_distance": 10 / v}
            rows.append(collect.run_record(run, seed, params, train, scores, headline_metrics((1, 10))))
            tables.append(per_query(v).assign(run=run, seed=seed))
    collect.save("toy-cpu", rows, tables, "cpu")
    report.report("toy-cpu")
    return tmp_path / "toy-cpu"


def test_summary_holds_the_mean_and_sd_over_seeds(toy_grid):
    s = pd.read_csv(toy_grid / "summary.csv").set_index("run")
    assert s.loc["hybrid", "seeds"] == 3 and s.loc["untrained", "seeds"] == 1
    assert s.loc["hybrid", "mono_map_mean"] == pytest.approx(0.8)
    assert s.loc["hybrid", "mono_map_sd"] == pytest.approx(0.1)
    assert s.loc["xy", "cross_map_mean"] == pytest.approx(0.3)
    assert s.loc["xx", "multi_rank_distance_mean"] == pytest.approx(20.0)
    assert s.loc["xx", "mono_map_sd"] == pytest.approx(0.0)


def test_intervals_come_from_the_per_query_tables(toy_grid):
    iv = pd.read_csv(toy_grid / "intervals.csv").set_index(["a_run", "b_run", "metric"])
    # xx and xy are the same in every seed: the difference and its interval are exact
    r = iv.loc[("xx", "xy", "cross_map")]
    assert (r["diff"], r["low"], r["high"]) == pytest.approx((0.05, 0.05, 0.05))
    # hybrid's seeds differ (0.7, 0.8, 0.9): the seed level widens the interval around 0.8 - 0.5
    r = iv.loc[("xx", "hybrid", "mono_map")]
    assert r["diff"] == pytest.approx(0.3)
    assert 0.2 - 1e-9 <= r["low"] < 0.3 < r["high"] <= 0.4 + 1e-9
    assert set(iv.index.get_level_values("metric")) == set(headline_metrics((1, 10)))


def test_verdicts_follow_the_intervals(toy_grid):
    v = pd.read_csv(toy_grid / "verdicts.csv").set_index("claim")["verdict"]
    assert v["X-X is best on monolingual mAP"] == "fails"  # xy and hybrid beat xx on mono
    assert v["X-Y is best on cross-lingual mAP"] == "fails"  # hybrid beats xy on cross
    assert v["hybrid >= X-Y on multilingual mAP (margin 0.01)"] == "holds"
    assert v["hybrid has less language bias than X-X (rank distance)"] == "holds"  # 10/0.8 < 10/0.5


def test_readme_blocks_render_the_toy_grid_exactly(toy_grid):
    from scripts.readme_tables import render

    text = "<!-- table toy-cpu summary -->\nOLD\n<!-- /table -->\n<!-- table toy-cpu runs -->\n<!-- /table -->\n"
    out = render(text, toy_grid.parent)
    assert "OLD" not in out  # the block is rewritten
    assert ("| hybrid (alpha 0.5) | 3 | 0.800 ± 0.100 | 0.400 ± 0.050 | 0.200 ± 0.025 | 0.800 ± 0.100 "
            "| 0.400 ± 0.050 | 0.200 ± 0.025 | 12.6 ± 1.6 |") in out
    assert "| X-X | 2 | dev | 20 of 60 | 0.500 | 0.500 | 0.250 | 0.125 | 0.500 | 0.250 | 0.125 | 20.0 |" in out
    assert out.count("| run | seeds | mono mAP | cross mAP | multi mAP | mono R@1 | cross R@1 | multi R@10 "
                     "| rank distance |") == 1
    assert render(out, toy_grid.parent) == out  # rendering is idempotent


def test_recall_columns_follow_score_recall_at():
    from experiments.collect import per_query_columns
    from scripts.readme_tables import label

    assert headline_metrics((100, 5, 20)) == ("mono_map", "cross_map", "multi_map", "mono_r5", "cross_r5",
                                              "multi_r100", "multi_rank_distance")
    assert per_query_columns(headline_metrics((5, 100)))[4:] == ["ap", "r@5", "r@100", "rank_distance"]
    assert [label(k) for k in ("multi_r100", "cross_map20", "multi_rank_distance")] == [
        "multi R@100", "cross mAP@20", "rank distance"]


# hardneg toy: run -> (mono v, rank distance per seed); the other settings follow v as above
HARDNEG = {"hybrid": (0.5, (20, 20, 20)), "hybrid-hn-query": (0.45, (15, 15, 15)),
           "hybrid-hn-passage": (0.5, (16, 20, 24)), "hybrid-hn-other": (0.55, (25, 25, 25)),
           "hybrid-hn-any": (0.4, (10, 10, 10))}


@pytest.fixture
def toy_hardneg(tmp_path, monkeypatch):
    """A results folder of the hardneg run set (plus a strategies run, to be left out), collected and reported
    as ``collect --from DIR --runs hardneg`` does."""
    import json

    import yaml

    from experiments import collect, grids, report

    monkeypatch.setattr(grids, "OUT", tmp_path / "grids")
    monkeypatch.setattr(grids, "dataset_of", lambda grid: ("toy", []))
    monkeypatch.setattr(grids, "headline_of", lambda grid: headline_metrics((1, 10)))
    monkeypatch.setattr(grids, "overrides", lambda grid, run, seed, run_set_name: [f"seed={seed}"])
    folder = tmp_path / "results"
    cases = [(run, seed, v, rank) for run, (v, ranks) in HARDNEG.items()
             for seed, rank in zip((1, 2, 3), ranks, strict=True)]
    for run, seed, v, rank in cases + [("xx", 1, 0.9, 5)]:
        d = folder / f"toy-cpu-{run}-s{seed}"
        d.mkdir(parents=True)
        pq = per_query(v)
        pq.loc[pq["setting"] == "multi", "rank_distance"] = float(rank)
        pq.to_parquet(d / "per_query.parquet")
        hn = run.startswith("hybrid-hn-")
        params = {"sampling": {"mode": "hybrid", "alpha": 0.5}, "seed": seed,
                  "train": {"hard_negatives": hn}, "mining": {"language": run.rsplit("-", 1)[1] if hn else "any"}}
        (d / "params.yaml").write_text(yaml.safe_dump(params))
        (d / "train.json").write_text(json.dumps({"select_by": "dev", "best_step": 20, "steps_run": 60,
                                                  "stopped_early": False, "dev_score": v}))
        (d / "toy.json").write_text(json.dumps({"mono_map": v, "cross_map": v / 2, "multi_map": v / 4, "mono_r1": v,
                                                "cross_r1": v / 2, "multi_r10": v / 4,
                                                "multi_rank_distance": float(rank)}))
    collect.collect_folder("toy-cpu", folder, "cpu", "hardneg")
    report.report("toy-cpu", "hardneg")
    return tmp_path / "grids" / "toy-cpu"


def test_a_run_set_writes_its_own_folder_with_findings_not_verdicts(toy_hardneg):
    assert sorted(p.name for p in toy_hardneg.iterdir()) == ["hardneg"]  # the strategies' files: untouched
    out = toy_hardneg / "hardneg"
    assert sorted(p.name for p in out.iterdir()) == ["code.json", "findings.csv", "intervals.csv",
                                                     "per-query.parquet", "runs.csv", "summary.csv"]
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["run"].unique()) == list(HARDNEG) and len(runs) == 15  # set order; the xx folder left out
    q = runs[runs["run"] == "hybrid-hn-query"].iloc[0]
    assert q["train.hard_negatives"] and q["mining.language"] == "query" and q["alpha"] == 0.5
    s = pd.read_csv(out / "summary.csv").set_index("run")
    assert s.loc["hybrid-hn-passage", "multi_rank_distance_mean"] == pytest.approx(20)
    assert s.loc["hybrid-hn-passage", "multi_rank_distance_sd"] == pytest.approx(4)
    iv = pd.read_csv(out / "intervals.csv")
    assert list(dict.fromkeys(zip(iv["a_run"], iv["b_run"], strict=True))) == [
        ("hybrid", "hybrid-hn-query"), ("hybrid", "hybrid-hn-passage"), ("hybrid", "hybrid-hn-other"),
        ("hybrid", "hybrid-hn-any"), ("hybrid-hn-other", "hybrid-hn-query")]
    f = pd.read_csv(out / "findings.csv").set_index(["a_run", "b_run"])
    r = f.loc[("hybrid", "hybrid-hn-query")]
    assert (r["rank_distance_diff"], r["rank_distance_low"], r["rank_distance_high"]) == pytest.approx((-5,) * 3)
    assert (r["mono_map_diff"], r["mono_map_low"], r["mono_map_high"]) == pytest.approx((-0.05,) * 3)
    assert r["reading"] == "lowers rank distance by 5.0 [5.0, 5.0] at a mono mAP cost of 0.050 [0.050, 0.050]"
    assert f.loc[("hybrid", "hybrid-hn-any"), "reading"] == (
        "lowers rank distance by 10.0 [10.0, 10.0] at a mono mAP cost of 0.100 [0.100, 0.100]")
    assert f.loc[("hybrid", "hybrid-hn-other"), "reading"] == (
        "raises rank distance by 5.0 [5.0, 5.0] with a mono mAP gain of 0.050 [0.050, 0.050]")
    assert f.loc[("hybrid-hn-other", "hybrid-hn-query"), "reading"].startswith("lowers rank distance by 10.0 [10.0,")
    p = f.loc[("hybrid", "hybrid-hn-passage")]  # seeds 16 / 20 / 24 around the baseline's 20
    assert p["rank_distance_diff"] == pytest.approx(0) and p["rank_distance_low"] < 0 < p["rank_distance_high"]
    assert p["reading"].startswith("not resolved (rank distance ")


def test_readme_blocks_render_a_run_sets_summary_and_findings(toy_hardneg):
    from scripts.readme_tables import render

    text = ("<!-- table toy-cpu/hardneg summary -->\nOLD\n<!-- /table -->\n"
            "<!-- table toy-cpu/hardneg findings -->\n<!-- /table -->\n")
    out = render(text, toy_hardneg.parent)
    assert "OLD" not in out  # the block is rewritten
    assert ("| hybrid-hn-query | 3 | 0.450 ± 0.000 | 0.225 ± 0.000 | 0.113 ± 0.000 | 0.450 ± 0.000 | 0.225 ± 0.000 "
            "| 0.113 ± 0.000 | 15.0 ± 0.0 |") in out
    assert "| hybrid (alpha 0.5) | 3 | 0.500 ± 0.000 |" in out  # the baseline keeps the strategies' name
    assert "| difference | seeds | rank distance | mono mAP | reading |" in out
    assert ("| hybrid-hn-query - hybrid (alpha 0.5) | 3 vs 3 | -5.0 [-5.0, -5.0] | -0.050 [-0.050, -0.050] "
            "| lowers rank distance by 5.0 [5.0, 5.0] at a mono mAP cost of 0.050 [0.050, 0.050] |") in out
    assert ("| hybrid-hn-query - hybrid-hn-other | 3 vs 3 | -10.0 [-10.0, -10.0] | -0.100 [-0.100, -0.100] "
            "| lowers rank distance by 10.0 [10.0, 10.0] at a mono mAP cost of 0.100 [0.100, 0.100] |") in out
    assert out.count("\n| hybrid-hn-") == 4 + 5  # four hn runs in the summary, five findings (one per pair)
    assert render(out, toy_hardneg.parent) == out


def test_readme_mining_block_shows_the_mine_stage_statistics(tmp_path):
    import json

    from scripts.readme_tables import render

    grid = tmp_path / "grids" / "toy-cpu" / "hardneg"
    grid.mkdir(parents=True)
    (grid / "mining.json").write_text(json.dumps({
        "model": "models/base", "engine": "ctranslate2", "rank_range": [10, 100], "margin": 0.02, "per_pair": 1,
        "questions": 3929, "passages": 3921, "negatives": 26135, "negatives_per_language": {"en": 3583, "de": 3722},
        "questions_without_negative_share": 0.000764, "cells_without_negative_share": 0.04974,
        "mean_score_gap": 0.076878, "rank_histogram": {"10-19": 23867, "20-29": 663}, "wall_s": [41.9, 24.0]}))
    out = render("<!-- table toy-cpu/hardneg mining -->\n<!-- /table -->\n", tmp_path / "grids")
    assert "| candidates mined | 26,135 (en 3,583, de 3,722) |" in out
    assert "| questions without any candidate | 0.08% |" in out and "| (question, language) cells without a " \
        "candidate | 4.97% |" in out
    assert "| rank range, margin, per (question, language) | 10-100, 0.02, 1 |" in out
    assert "| wall time of the stage | 24-42 s in 2 runs |" in out


def test_encoding_speed_table_shows_the_candidate_engines_of_their_own_run(tmp_path):
    """``<!-- table encoding speed -->``: the pipeline's engines, then ``--candidates`` rows as measured."""
    import json

    from scripts.readme_tables import render

    engine = {"texts_per_s": 100.0, "speedup_vs_torch": 1.0, "min_cosine": 1.0, "settings": {"engine": "torch"}}
    (tmp_path / "encoding_speed.json").write_text(json.dumps({
        "engines": {"torch fp32": engine},
        "candidates": {"engines": {"torch fp32": {**engine, "texts_per_s": 72.84},
                                   "openvino bf16": {**engine, "texts_per_s": 200.0, "speedup_vs_torch": 2.746,
                                                     "min_cosine": 0.99997}}}}))
    out = render("<!-- table encoding speed -->\n<!-- /table -->\n", tmp_path / "grids")
    assert "| `torch fp32` | engine torch | 100.0 | 1.00x | 1.0000 |" in out
    assert "| candidate engine (its own run) | texts/s | vs torch fp32 of that run | min cosine to fp32 |" in out
    assert "| `torch fp32` | 72.8 | 1.00x | 1.0000 |" in out and "| `openvino bf16` | 200.0 | 2.75x | 1.0000 |" in out


def test_collect_add_keeps_runs_collected_before_replaces_those_collected_again_and_seeds_choose(tmp_path, monkeypatch):
    """A grid run in parts on several machines: the second part is collected beside the first (``--add``), a run
    collected again replaces its old row, per-query rows and code identity, ``--seeds`` keeps those seeds alone,
    and without ``--add`` only the new part is kept."""
    import json

    import yaml

    from experiments import collect, grids

    monkeypatch.setattr(grids, "OUT", tmp_path / "grids")
    monkeypatch.setattr(grids, "dataset_of", lambda grid: ("toy", []))
    monkeypatch.setattr(grids, "headline_of", lambda grid: headline_metrics((1, 10)))
    monkeypatch.setattr(grids, "overrides", lambda grid, run, seed, run_set_name: [f"seed={seed}"])

    def part(name, runs):
        folder = tmp_path / name
        for run, seed, v in runs:
            d = folder / f"toy-cpu-{run}-s{seed}"
            d.mkdir(parents=True)
            per_query(v).to_parquet(d / "per_query.parquet")
            (d / "params.yaml").write_text(yaml.safe_dump({"sampling": {"mode": "hybrid", "alpha": 0.5}}))
            (d / "train.json").write_text(json.dumps({"best_step": 20}))
            (d / "toy.json").write_text(json.dumps({"mono_map": v}))
        return folder

    first = part("first", [("hybrid", 1, 0.7), ("hybrid", 2, 0.8), ("xy", 1, 0.6)])
    second = part("second", [("hybrid", 2, 0.85), ("xx", 1, 0.5)])
    out = tmp_path / "grids" / "toy-cpu"
    collect.collect_folder("toy-cpu", first, "machine A")
    collect.collect_folder("toy-cpu", second, "machine B", add=True)
    runs = pd.read_csv(out / "runs.csv")
    assert list(zip(runs["run"], runs["seed"], runs["machine"], strict=True)) == [
        ("xx", 1, "machine B"), ("xy", 1, "machine A"), ("hybrid", 1, "machine A"), ("hybrid", 2, "machine B")]
    assert runs.set_index(["run", "seed"]).loc[("hybrid", 2), "mono_map"] == pytest.approx(0.85)
    pq = pd.read_parquet(out / "per-query.parquet")
    assert len(pq) == 4 * len(per_query(0.5))  # no row of the replaced run left
    assert pq[(pq["run"] == "hybrid") & (pq["seed"] == 2) & (pq["setting"] == "mono")]["ap"].eq(0.85).all()
    code = json.loads((out / "code.json").read_text())
    assert sorted(r for i in code["identities"] for r in i["runs"]) == ["hybrid-s1", "hybrid-s2", "xx-s1", "xy-s1"]
    # a seed alone (one that every run has finished, while the next is still running)
    collect.collect_folder("toy-cpu", first, "machine A", seeds=[1])
    assert list(zip(pd.read_csv(out / "runs.csv")["run"], pd.read_csv(out / "runs.csv")["seed"], strict=True)) == [
        ("xy", 1), ("hybrid", 1)]
    assert set(pd.read_parquet(out / "per-query.parquet")["seed"]) == {1}
    # a seed no run has finished: nothing is written, and the message names the seed
    with pytest.raises(SystemExit, match=r"no run folders .* with seed 9"):
        collect.collect_folder("toy-cpu", first, "machine A", seeds=[9])
    assert set(pd.read_parquet(out / "per-query.parquet")["seed"]) == {1}
    # without --add: the new part alone
    collect.collect_folder("toy-cpu", second, "machine B")
    assert sorted(pd.read_csv(out / "runs.csv")["run"]) == ["hybrid", "xx"]
    # a collected run whose code is unknown cannot be kept beside new ones
    (out / "code.json").unlink()
    with pytest.raises(SystemExit, match=r"hybrid-s2, xx-s1 have no code identity"):
        collect.collect_folder("toy-cpu", first, "machine A", add=True)


def test_the_training_mix_counts_translated_pairs_and_the_largest_cross_lingual_pair(tmp_path):
    """What a run trained on: machine-translated pairs kept (a language of translations and human ones counts
    only its translations), and the language pair with most cross-lingual rows, a pair and its reverse
    together (en-de alone has more rows than en-es one way, fewer than en-es both ways)."""
    from experiments.collect import training_mix
    from scripts.readme_tables import mix_table

    data = {"languages": {
        "en": {"system": "source", "kept": 10},
        "es": {"system": "ctranslate2:gemma-270m,reference", "kept": 7,
               "by_system": {"ctranslate2:gemma-270m": {"kept": 4}, "reference": {"kept": 3}}},
        "de": {"system": "ctranslate2:nllb-600m", "kept": 5}}}
    stats = {"pairs_in": 22, "train_pair_ids": 9, "train_lang_pair_en_es": 3, "train_lang_pair_es_en": 2,
             "train_lang_pair_en_de": 4, "train_lang_pair_en_en": 50}
    mix = training_mix(data, stats)
    assert mix == {"mt_kept": 9, "train_pairs": 22, "train_pair_ids": 9, "xy_rows": 9, "xy_top_pair": "en-es",
                   "xy_top_pair_share": round(5 / 9, 4)}
    assert training_mix({}, {"pairs_in": 3, "train_pair_ids": 3, "train_lang_pair_en_en": 3})["xy_top_pair"] is None
    grid = tmp_path / "grid"
    grid.mkdir()
    pd.DataFrame([{"run": "mlqa-hybrid", "seed": 13, **mix}]).to_csv(grid / "runs.csv", index=False)
    assert "| mlqa-hybrid | 13 | 9 | 22 | 9 | 9 | en-es (0.556) |" in mix_table(grid)
    # a run kept from a part collected without the statistics (``collect --add``) beside one with them
    pd.DataFrame([{"run": "mlqa-hybrid", "seed": 13, **mix}, {"run": "mlqa-xy", "seed": 13}]).to_csv(
        grid / "runs.csv", index=False)
    assert "| mlqa-xy | 13 | - | - | - | - | - |" in mix_table(grid)
    pd.DataFrame([{"run": "hybrid", "seed": 13}]).to_csv(grid / "runs.csv", index=False)
    assert "without the batches' statistics" in mix_table(grid)
