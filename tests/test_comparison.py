"""The seed-aware comparison: intervals, summaries, verdicts, and the scripts that turn them into files
and README tables, on per-query tables whose metrics are known exactly."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.grids import COMPARISONS, ROOT, RUNS, parse_run_name, run_name
from experiments.stats import findings, metric_matrix, question_ids, seed_question_bootstrap, summary_table, verdicts

GRID = "mlqa2xquad-cpu"
HN = ("hybrid-hn-query", "hybrid-hn-passage", "hybrid-hn-other", "hybrid-hn-any")
XY_HN = ("xy-hn-query", "xy-hn-passage", "xy-hn-other", "xy-hn-any")

LANGS = ["en", "de", "el"]


def per_query(ap: dict[str, float], n_ids: int = 30, jitter: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Every query's AP in setting s is ``ap[s]`` (+ optional noise); rank distance 100 * (1 - multi AP)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_ids):
        for q in LANGS:
            for p in LANGS:
                s = "mono" if p == q else "cross"
                rows.append({"qid": f"{q}:id{i}", "query_lang": q, "setting": s, "pool_lang": p,
                             "ap": ap[s] + jitter * rng.standard_normal(), "r@1": ap[s], "r@10": 1.0,
                             "rank_distance": np.nan})
            v = ap["multi"] + jitter * rng.standard_normal()
            rows.append({"qid": f"{q}:id{i}", "query_lang": q, "setting": "multi", "pool_lang": "all", "ap": v,
                         "r@1": v, "r@10": v, "rank_distance": 100 * (1 - v)})
    return pd.DataFrame(rows)


def test_run_names_round_trip():
    assert run_name("mlqa2xquad-cpu", "hybrid", 14) == "mlqa2xquad-cpu-hybrid-s14"
    assert parse_run_name("mlqa2xquad-cpu-hybrid-s14", "mlqa2xquad-cpu") == ("hybrid", 14)
    assert parse_run_name("mlqa2xquad-gpu-hybrid-s14", "mlqa2xquad-cpu") is None
    assert parse_run_name("mlqa2xquad-cpu-other-s1", "mlqa2xquad-cpu") is None


def test_metric_matrix_groups_cells_like_the_score_stage():
    t = per_query({"mono": 0.8, "cross": 0.5, "multi": 0.3}, n_ids=4)
    ids = question_ids(t)
    assert metric_matrix(t, "cross_map", ids).shape == (4, 6)  # 3 x 2 ordered pairs
    assert metric_matrix(t, "cross_map_unseen", ids, frozenset({"el"})).shape == (4, 4)  # pairs with el
    assert metric_matrix(t, "cross_map_seen", ids, frozenset({"el"})).shape == (4, 2)  # en>de, de>en
    assert metric_matrix(t, "multi_map_unseen", ids, frozenset({"el"})).shape == (4, 1)  # by query language


def test_a_constant_gap_gives_a_point_interval_and_seed_noise_widens_it():
    a = [per_query({"mono": 0.8, "cross": 0.5, "multi": 0.3})]
    b = [per_query({"mono": 0.7, "cross": 0.6, "multi": 0.5})]
    res = seed_question_bootstrap(a, b, ["mono_map", "multi_map", "multi_rank_distance"], n_boot=200)
    res = res.set_index("metric")
    assert res.loc["mono_map", "diff"] == pytest.approx(-0.1)
    assert res.loc["mono_map", "low"] == pytest.approx(-0.1) and res.loc["mono_map", "high"] == pytest.approx(-0.1)
    assert res.loc["multi_map", "diff"] == pytest.approx(0.2) and res.loc["multi_map", "p_le_0"] == 0
    assert res.loc["multi_rank_distance", "diff"] == pytest.approx(-20)
    # three seeds of b at 0.45 / 0.5 / 0.55 multi: the same mean gap, now with seed spread in the interval
    b3 = [per_query({"mono": 0.7, "cross": 0.6, "multi": m}) for m in (0.45, 0.5, 0.55)]
    res3 = seed_question_bootstrap(a, b3, ["multi_map"], n_boot=500).set_index("metric")
    assert res3.loc["multi_map", "diff"] == pytest.approx(0.2) and res3.loc["multi_map", "seeds_b"] == 3
    assert res3.loc["multi_map", "low"] < 0.17 and res3.loc["multi_map", "high"] > 0.23
    assert 0.15 - 1e-9 <= res3.loc["multi_map", "low"] and res3.loc["multi_map", "high"] <= 0.25 + 1e-9


def test_question_noise_alone_gives_an_interval_around_the_gap():
    a = [per_query({"mono": 0.8, "cross": 0.5, "multi": 0.3}, jitter=0.05, seed=1)]
    b = [per_query({"mono": 0.8, "cross": 0.5, "multi": 0.35}, jitter=0.05, seed=2)]
    r = seed_question_bootstrap(a, b, ["multi_map"], n_boot=500).iloc[0]
    assert r["low"] < r["diff"] < r["high"] and r["low"] > 0


def test_summary_table_mean_and_sd_over_seeds():
    runs = pd.DataFrame({"run": ["xx", "xx", "xx", "untrained"], "mono_map": [0.7, 0.8, 0.9, 0.5]})
    s = summary_table(runs, ["mono_map"]).set_index("run")
    assert list(s.index) == ["untrained", "xx"]
    assert s.loc["xx", "mono_map_mean"] == pytest.approx(0.8) and s.loc["xx", "mono_map_sd"] == pytest.approx(0.1)
    assert s.loc["xx", "seeds"] == 3 and np.isnan(s.loc["untrained", "mono_map_sd"])


def _iv(a, b, metric, diff, low, high):
    return {"a_run": a, "b_run": b, "metric": metric, "diff": diff, "low": low, "high": high}


def test_verdicts_follow_the_intervals():
    iv = pd.DataFrame([
        _iv("xx", "hybrid", "mono_map", -0.004, -0.008, -0.001),   # hybrid ~ xx: holds (margin 0.01)
        _iv("xy", "hybrid", "mono_map", 0.01, 0.005, 0.015),
        _iv("xx", "xy", "mono_map", -0.012, -0.02, -0.005),         # xx beats xy and hybrid: holds
        _iv("xx", "xy", "cross_map", 0.02, 0.01, 0.03),
        _iv("xy", "hybrid", "cross_map", -0.003, -0.006, 0.001),    # xy vs hybrid cross unresolved
        _iv("xy", "hybrid", "multi_map", -0.03, -0.04, -0.02),      # hybrid >= xy multi: fails
        _iv("xx", "hybrid", "multi_rank_distance", -200, -250, -150),
        _iv("untrained", "hybrid", "multi_map_unseen", 0.2, 0.18, 0.22),
    ])
    v = {d["claim"].split(" (")[0]: d["verdict"] for d in verdicts(iv, has_unseen=True)}
    assert v["X-X is best on monolingual mAP"] == "holds"
    assert v["X-Y is best on cross-lingual mAP"] == "not resolved"
    assert v["hybrid >= X-Y on multilingual mAP"] == "fails"
    assert v["hybrid ~ X-X on monolingual mAP"] == "holds"
    assert v["hybrid has less language bias than X-X"] == "holds"
    assert v["languages never trained on gain too"] == "holds"
    assert len(verdicts(iv, has_unseen=False)) == 5


def test_collect_report_and_readme_tables_from_a_results_folder(tmp_path, monkeypatch):
    """The path the GPU results take (collect --from), then report and the README blocks, end to end."""
    import scripts.readme_tables as rt
    from experiments import collect, grids, report

    grid = "mlqa2xquad-cpu"
    monkeypatch.setattr(grids, "OUT", tmp_path / "grids")
    folder = tmp_path / "results"
    levels = {"untrained": (0.80, 0.60, 0.30), "xx": (0.82, 0.68, 0.45), "xy": (0.80, 0.71, 0.58),
              "hybrid": (0.81, 0.70, 0.57)}
    for run, (mono, cross, multi) in levels.items():
        for k, seed in enumerate([13] if run == "untrained" else [13, 14, 15]):
            d = folder / run_name(grid, run, seed)
            d.mkdir(parents=True)
            bump = 0.005 * (k - 1)
            pq = per_query({"mono": mono + bump, "cross": cross + bump, "multi": multi + bump}, seed=seed)
            pq.to_parquet(d / "per_query.parquet")
            params = yaml.safe_load((grids.ROOT / "params.yaml").read_text())
            params["sampling"]["mode"], params["seed"] = ("hybrid" if run == "untrained" else run), seed
            (d / "params.yaml").write_text(yaml.safe_dump(params))
            (d / "train.json").write_text(json.dumps({"select_by": "dev", "best_step": 40, "steps_run": 60,
                                                      "stopped_early": False, "dev_score": 0.6}))
            (d / "xquad-r.json").write_text(json.dumps({"mono_map": mono + bump, "cross_map": cross + bump,
                                                        "multi_map": multi + bump, "multi_rank_distance": 300.0}))
    collect.collect_folder(grid, folder, "test")
    report.report(grid)
    out = tmp_path / "grids" / grid
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 10 and set(runs["select_by"]) == {"dev"} and list(runs["run"][:2]) == ["untrained", "xx"]
    summary = pd.read_csv(out / "summary.csv").set_index("run")
    assert summary.loc["xy", "multi_map_mean"] == pytest.approx(0.58) and summary.loc["xy", "seeds"] == 3
    iv = pd.read_csv(out / "intervals.csv")
    hx = iv[(iv.a_run == "xy") & (iv.b_run == "hybrid") & (iv.metric == "multi_map")].iloc[0]
    assert hx["diff"] == pytest.approx(-0.01, abs=1e-9) and hx["seeds_a"] == 3
    assert set(iv["metric"]) >= {"multi_map_unseen", "mono_map"}
    verdict = pd.read_csv(out / "verdicts.csv")
    assert verdict["claim"].str.startswith("X-X is best").any()
    # README blocks are filled from these files, and the check notices a hand edit
    readme = (f"a\n<!-- table {grid} summary -->\nSTALE\n<!-- /table -->\n"
              f"b\n<!-- table {grid} verdicts -->\n<!-- /table -->\n")
    text = rt.render(readme, tmp_path / "grids")
    assert "| X-Y | 3 | 0.800 ± 0.005 | 0.710 ± 0.005 | 0.580 ± 0.005 |" in text and "STALE" not in text
    assert rt.render(text, tmp_path / "grids") == text
    assert rt.render(text.replace("0.580 ± 0.005", "0.581 ± 0.005"), tmp_path / "grids") == text
    # the runs' code: the workspace's dvc.lock (no dvc.lock in the folder), so today's code
    from experiments import staleness

    code = json.loads((out / "code.json").read_text())
    # one identity per set of overridden keys (untrained: train.steps; xx and xy: sampling.mode; hybrid: + alpha)
    found = sorted(r for i in code["identities"] for r in i["runs"])
    assert found == sorted(runs["run"] + "-s" + runs["seed"].astype(str)) and len(code["identities"]) == 3
    assert all("seed" in i["overridden"] for i in code["identities"])
    assert f"*Code of {grid}: from today's code.*" in rt.render(readme, tmp_path / "grids", staleness.read_lock())


def test_every_grid_gives_valid_params_with_the_fold_and_scale_applied():
    from experiments.grids import dataset_of, params_for

    a = params_for("mlqa2xquad-cpu", "xy", 14)
    assert a["seed"] == 14 and a["sampling"]["mode"] == "xy" and a["index"]["datasets"] == ["xquad-r"]
    assert dataset_of("mlqa2xquad-cpu") == ("xquad-r", ["el", "ru", "th", "tr"])
    b = params_for("xquad2mlqa-gpu", "untrained", 13)
    assert len(b["languages"]) == 11 and b["gather"]["sources"][0]["name"] == "xquad-r"
    assert b["gather"]["leakage_guard"] == ["mlqa-r"] and set(b["translate"]["targets"]) == set(b["languages"]) - {"en"}
    assert b["train"]["steps"] == 0 and b["train"]["device"] == "cuda" and b["sampling"]["batch_size"] == 100
    assert dataset_of("xquad2mlqa-gpu") == ("mlqa-r", [])


def test_run_sets_the_strategies_are_the_module_defaults_and_hardneg_is_hybrid_plus_hard_negatives():
    from experiments.grids import grid_spec, run_set

    s = run_set()  # the default
    assert s["name"] == "strategies" and tuple(s["runs"]) == RUNS and tuple(s["comparisons"]) == COMPARISONS
    h = run_set("hardneg")
    assert tuple(h["runs"]) == ("hybrid",) + HN + ("xy",) + XY_HN and "untrained" not in h["runs"]
    assert h["runs"]["xy"] == s["runs"]["xy"] == ["sampling.mode=xy"]
    for run in XY_HN:
        assert h["runs"][run] == ["sampling.mode=xy", "train.hard_negatives=true",
                                  f"mining.language={run.rsplit('-', 1)[1]}"]
    assert h["runs"]["hybrid"] == s["runs"]["hybrid"] == ["sampling.mode=hybrid", "sampling.alpha=0.5"]
    for run in HN:
        assert h["runs"][run] == ["sampling.mode=hybrid", "sampling.alpha=0.5", "train.hard_negatives=true",
                                  f"mining.language={run.rsplit('-', 1)[1]}"]
    assert h["comparisons"] == ([("hybrid", r) for r in HN] + [("hybrid-hn-other", "hybrid-hn-query")]
                                + [("xy", r) for r in XY_HN])
    assert grid_spec(GRID, "hardneg")["runs"] == h["runs"] and grid_spec(GRID)["runs"] == s["runs"]
    with pytest.raises(SystemExit, match="unknown run set 'nope'"):
        run_set("nope")


def test_a_run_set_is_checked_against_the_others(tmp_path, monkeypatch):
    import experiments.grids as grids

    spec = yaml.safe_load(grids.GRIDS.read_text())
    spec["run_sets"]["hardneg"]["runs"]["hybrid"] = ["sampling.mode=hybrid", "sampling.alpha=0.3"]
    bad = tmp_path / "grids.yaml"
    bad.write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(grids, "GRIDS", bad)
    with pytest.raises(SystemExit, match="run 'hybrid' has other overrides"):  # one experiment name, two runs
        grids.run_set("hardneg")
    spec["run_sets"]["hardneg"]["runs"]["hybrid"] = ["sampling.mode=hybrid", "sampling.alpha=0.5"]
    spec["run_sets"]["hardneg"]["comparisons"].append(["hybrid", "xx"])
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit, match=r"comparison \['hybrid', 'xx'\] is not two of its runs"):
        grids.run_set("hardneg")


def test_run_names_with_dashes_parse_within_their_run_set_only():
    from experiments.grids import run_set

    hardneg = run_set("hardneg")["runs"]
    assert run_name(GRID, "hybrid-hn-passage", 13) == "mlqa2xquad-cpu-hybrid-hn-passage-s13"
    assert parse_run_name("mlqa2xquad-cpu-hybrid-hn-passage-s13", GRID, hardneg) == ("hybrid-hn-passage", 13)
    assert parse_run_name("mlqa2xquad-cpu-hybrid-hn-any-s7", GRID, hardneg) == ("hybrid-hn-any", 7)
    assert parse_run_name("mlqa2xquad-cpu-hybrid-s13", GRID, hardneg) == ("hybrid", 13)  # the shared baseline
    # the strategies do not take a hard-negative run for theirs (nor its tail for a seed), and vice versa
    assert parse_run_name("mlqa2xquad-cpu-hybrid-hn-passage-s13", GRID) is None
    assert parse_run_name("mlqa2xquad-cpu-xx-s13", GRID, hardneg) is None
    assert parse_run_name("mlqa2xquad-cpu-untrained-s13", GRID, hardneg) is None
    assert parse_run_name("mlqa2xquad-gpu-hybrid-hn-query-s13", GRID, hardneg) is None
    assert parse_run_name("mlqa2xquad-cpu-hybrid-hn-query-sx", GRID, hardneg) is None
    assert parse_run_name("mlqa2xquad-cpu-hybrid-hn-query", GRID, hardneg) is None


def _fake_dvc(monkeypatch):
    """The queue's DVC and git calls recorded instead of run."""
    import experiments.queue as q

    calls = []
    monkeypatch.setattr(q, "dvc", lambda *a, **k: calls.append(list(a)))
    monkeypatch.setattr(q, "check_committed_outputs", lambda: None)  # reads DVC's cache (tests/test_queue.py)

    class Done:
        returncode = 0

    monkeypatch.setattr(q, "subprocess", SimpleNamespace(run=lambda *a, **k: Done()))
    return calls


def test_the_strategies_queue_the_same_experiments_with_the_same_overrides_as_before(monkeypatch):
    """The dvc calls of `run`/`queue` for the default set, as recorded before run sets existed."""
    from experiments import cli, grids, queue

    before = json.loads((grids.ROOT / "tests" / "fixtures" / "strategies-queue.json").read_text())
    for grid in ("mlqa2xquad-cpu", "xquad2mlqa-gpu"):
        calls = _fake_dvc(monkeypatch)
        names = queue.queue(grid, [13, 14, 15])
        assert calls == before[grid], grid
        assert names == [c[4] for c in before[grid] if c[1] == "run"]
    calls = _fake_dvc(monkeypatch)
    cli.main(["queue", "--grid", GRID, "--runs", "strategies"])
    assert calls == before[GRID]


@pytest.fixture
def hardneg_params(tmp_path, monkeypatch):
    """params.yaml with the hard-negative keys (added by another change) and validation that ignores them,
    so these tests do not depend on the keys existing."""
    import experiments.grids as grids
    import pipeline.params

    base = yaml.safe_load((grids.ROOT / "params.yaml").read_text())
    base["train"].setdefault("hard_negatives", False)
    base.setdefault("mining", {"language": "any"})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    known = yaml.safe_load((grids.ROOT / "params.yaml").read_text())
    real_parse = pipeline.params.parse_params

    def parse(data, source="params"):
        data = {k: v for k, v in data.items() if k in known}
        data["train"] = {k: v for k, v in data["train"].items() if k in known["train"]}
        return real_parse(data, source)

    monkeypatch.setattr(pipeline.params, "parse_params", parse)
    real_params_for = grids.params_for
    monkeypatch.setattr(grids, "params_for", lambda grid, run, seed, base=path, run_set_name="strategies":
                        real_params_for(grid, run, seed, base, run_set_name))
    return path


def test_hardneg_params_apply_the_run_after_fold_and_scale(hardneg_params):
    import experiments.grids as grids

    p = grids.params_for("mlqa2xquad-gpu", "hybrid-hn-passage", 14, run_set_name="hardneg")
    assert p["train"]["hard_negatives"] is True and p["mining"]["language"] == "passage"
    assert p["sampling"]["mode"] == "hybrid" and p["sampling"]["alpha"] == 0.5 and p["seed"] == 14
    assert p["train"]["device"] == "cuda"  # the scale's overrides too
    base = grids.params_for(GRID, "hybrid", 13, run_set_name="hardneg")
    assert base["train"]["hard_negatives"] is False and base["sampling"]["mode"] == "hybrid"
    with pytest.raises(SystemExit, match="run set hardneg has no run 'xx'"):
        grids.params_for(GRID, "xx", 13, run_set_name="hardneg")
    lacking = yaml.safe_load(hardneg_params.read_text())
    del lacking["mining"]
    hardneg_params.write_text(yaml.safe_dump(lacking))  # params without the key a run sets: one line naming it
    with pytest.raises(SystemExit, match="hybrid-hn-any/s13 \\(run set hardneg\\): Could not override 'mining.lang"):
        grids.params_for(GRID, "hybrid-hn-any", 13, run_set_name="hardneg")


def test_queue_a_run_set_or_only_some_of_its_runs(hardneg_params, monkeypatch):
    from experiments import cli, grids

    calls = _fake_dvc(monkeypatch)
    cli.main(["queue", "--grid", GRID, "--runs", "hardneg", "--seeds", "13", "14"])
    queued = [c[4] for c in calls if c[1] == "run"]
    # no untrained
    assert queued == [run_name(GRID, r, s) for r in ("hybrid",) + HN + ("xy",) + XY_HN for s in (13, 14)]
    run = next(c for c in calls if c[1] == "run" and c[4] == "mlqa2xquad-cpu-hybrid-hn-other-s14")
    assert run[5:] == ["-S", "sampling.mode=hybrid", "-S", "sampling.alpha=0.5", "-S", "train.hard_negatives=true",
                       "-S", "mining.language=other", "-S", "seed=14"]
    calls.clear()
    cli.main(["queue", "--grid", GRID, "--runs", "hardneg", "--only", "hybrid-hn-any", "hybrid", "--seeds", "13"])
    assert [c[4] for c in calls if c[1] == "run"] == ["mlqa2xquad-cpu-hybrid-s13", "mlqa2xquad-cpu-hybrid-hn-any-s13"]
    assert grids.planned(GRID, [13, 14], only=["untrained", "xy"]) == [("untrained", 13), ("xy", 13), ("xy", 14)]
    calls.clear()
    with pytest.raises(SystemExit, match="--only xx: not in run set hardneg"):
        cli.main(["queue", "--grid", GRID, "--runs", "hardneg", "--only", "xx"])
    with pytest.raises(SystemExit):
        cli.main(["report", "--grid", GRID, "--runs", "hardneg", "--only", "hybrid"])
    with pytest.raises(SystemExit, match="unknown run set"):
        cli.main(["report", "--grid", GRID, "--runs", "hardnegs"])
    assert calls == []  # nothing queued by a refused command


def test_findings_read_rank_distance_and_mono_map_from_the_intervals():
    hybrid = [per_query({"mono": 0.8, "cross": 0.5, "multi": 0.3})]  # rank distance 70
    hn = [per_query({"mono": 0.75, "cross": 0.5, "multi": 0.5})]  # rank distance 50
    iv = seed_question_bootstrap(hybrid, hn, ["mono_map", "multi_map", "multi_rank_distance"], n_boot=200)
    f = findings(iv.assign(a_run="hybrid", b_run="hybrid-hn-query")).iloc[0]
    assert (f["a_run"], f["b_run"], f["seeds_a"], f["seeds_b"]) == ("hybrid", "hybrid-hn-query", 1, 1)
    assert (f["rank_distance_diff"], f["rank_distance_low"], f["rank_distance_high"]) == pytest.approx((-20,) * 3)
    assert (f["mono_map_diff"], f["mono_map_low"], f["mono_map_high"]) == pytest.approx((-0.05,) * 3)
    assert f["reading"] == "lowers rank distance by 20.0 [20.0, 20.0] at a mono mAP cost of 0.050 [0.050, 0.050]"

    def row(a, b, rank, mono):
        return [_iv(a, b, "multi_rank_distance", *rank), _iv(a, b, "mono_map", *mono)]

    iv = pd.DataFrame(row("h", "x", (-5, -8, 1), (-0.01, -0.02, 0.0)) + row("h", "y", (3, 1, 5), (0.02, 0.01, 0.03))
                      + row("h", "z", (-4, -6, -2), (-0.004, -0.01, 0.002))
                      + [_iv("h", "w", "multi_map", 0.1, 0.0, 0.2)])  # no rank distance or mono: no finding
    f = findings(iv).set_index("b_run")["reading"]
    assert list(f.index) == ["x", "y", "z"]
    assert f["x"] == "not resolved (rank distance -5.0 [-8.0, +1.0], mono mAP -0.010 [-0.020, +0.000])"
    assert f["y"] == "raises rank distance by 3.0 [1.0, 5.0] with a mono mAP gain of 0.020 [0.010, 0.030]"
    assert f["z"] == ("lowers rank distance by 4.0 [2.0, 6.0] at a mono mAP cost of 0.004 [-0.002, 0.010] "
                      "(interval includes 0)")


def test_the_mt_data_arms_change_only_the_training_data_and_copy_the_default_sources():
    """The four data arms: (a) MLQA-R only, (b) + SQuAD English, (c) + SQuAD machine-translated into Spanish,
    (d) SQuAD and its translation only; the source specs spelled out in grids.yaml equal params.yaml's."""
    from experiments.grids import params_for, run_set

    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    mlqa, squad = default["gather"]["sources"]
    arms = {run: params_for(GRID, run, 13, run_set_name="mtdata") for run in run_set("mtdata")["runs"]}
    for run, p in arms.items():
        assert p["gather"]["with_context"] is False and p["sampling"]["mode"] == run.rsplit("-", 1)[1], run
        assert p["index"] == default["index"] and p["train"] == default["train"], run
    for sampler in ("hybrid", "xy"):
        a, b, c, d = (arms[f"{arm}-{sampler}"] for arm in ("mlqa", "squad-en", "squad-mt", "mt-only"))
        assert a["gather"]["sources"] == [mlqa]
        assert b["gather"]["sources"] == c["gather"]["sources"] == [mlqa, {**squad, "limit": 1000}]
        assert b["translate"]["targets"]["es"]["fill"] is None
        assert c["translate"]["targets"] == default["translate"]["targets"]
        assert d["gather"]["sources"] == [{**squad, "limit": 1000}] and d["languages"] == ["en", "es"]
        assert d["translate"]["targets"] == {"es": default["translate"]["targets"]["es"]}
        assert a["filter"] == b["filter"] == c["filter"] == d["filter"] == default["filter"]
    assert arms["squad-mt-chrf30-hybrid"]["filter"]["min_chrf"] == 30
