"""scripts/verify.py: data outputs must be byte-identical, metrics within the stated tolerance."""
from scripts.verify import (TOLERANCE, compare_metrics, compare_outputs, compare_table, failed, lock_outs,
                            metric_kind, pipeline_stages)

import pandas as pd


def _lock(**stages):
    return {"schema": "2.0", "stages": {name: {"outs": [{"path": p, "md5": h} for p, h in outs.items()]}
                                        for name, outs in stages.items()}}


DVC_YAML = {"stages": {"filter": {"cmd": "x"}, "train": {"cmd": "x"}, "index": {"foreach": ["a"], "do": {}},
                       "mine": {"cmd": "x"}}}


def test_a_data_output_that_differs_fails_and_a_model_output_is_left_to_the_metrics():
    committed = lock_outs(_lock(filter={"data/filtered": "aa"}, mine={"data/mined": "mm"},
                                train={"models/trained": "t1"}, **{"index@a": {"data/embeddings/a": "e1"}},
                                index={"data/embeddings": "old"}))  # `index` without @: a stale entry
    regenerated = lock_outs(_lock(filter={"data/filtered": "bb"}, train={"models/trained": "t2"},
                                  **{"index@a": {"data/embeddings/a": "e1"}}))
    rows = {r["output"]: r["verdict"] for r in compare_outputs(committed, regenerated, pipeline_stages(DVC_YAML))}
    assert rows == {"data/filtered": "DIFFERENT", "data/mined": "NOT RUN",
                    "models/trained": "differs (see metrics)", "data/embeddings/a": "identical"}
    assert [r["output"] for r in failed([{"output": k, "verdict": v} for k, v in rows.items()])] == [
        "data/filtered", "data/mined"]


def test_metrics_are_compared_within_their_kind_of_tolerance():
    committed = {"multi_map": 0.5767, "multi_rank_distance": 323.25, "best_step": 40, "queries": 13090,
                 "select_by": "dev", "wall_s": 12.0}
    near = {"multi_map": 0.5767 + TOLERANCE["rate"] / 2, "multi_rank_distance": 323.25 - TOLERANCE["rank_distance"],
            "best_step": 40, "queries": 13090, "select_by": "dev", "wall_s": 99.0}
    rows = compare_metrics("m.json", committed, near)
    assert [r["output"] for r in rows] == ["m.json: multi_map", "m.json: multi_rank_distance", "m.json: best_step",
                                           "m.json: queries"]  # labels and timings are not compared
    assert not failed(rows)
    far = {**near, "multi_map": 0.5767 + 2 * TOLERANCE["rate"], "best_step": 60}
    assert [r["output"] for r in failed(compare_metrics("m.json", committed, far))] == [
        "m.json: multi_map", "m.json: best_step"]
    assert [r["verdict"] for r in failed(compare_metrics("m.json", committed, {}))] == ["MISSING"] * 4


def test_per_language_tables_report_their_worst_row():
    a = pd.DataFrame({"lang": ["de", "en"], "mono_map": [0.8, 0.9], "rank_distance": [300.0, 200.0],
                      "seen": [True, True]})
    b = a.assign(mono_map=[0.8, 0.9 + 3 * TOLERANCE["rate"]])
    rows = compare_table("l.csv", a, b)
    assert [(r["output"], r["verdict"]) for r in rows] == [
        ("l.csv: mono_map (worst: en)", f"OUT OF TOLERANCE ({TOLERANCE['rate']:g})"),
        ("l.csv: rank_distance (worst: de)", "identical")]
    assert failed(compare_table("l.csv", a, b.iloc[:1]))[0]["verdict"] == "MISSING ROWS"


def test_metric_kinds():
    assert [metric_kind(k) for k in ("mono_map_seen", "multi_r10", "dev_score", "final_train_loss",
                                     "multi_rank_distance_unseen", "steps_run", "total_params", "wall_s")] == [
        "rate", "rate", "rate", "loss", "rank_distance", "step", "count", None]


def test_the_readme_states_the_tolerance_verify_applies():
    from conftest import ROOT

    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (f"{TOLERANCE['rate']:g} for mAP and recall, {TOLERANCE['rank_distance']:.1f} for the rank distance, "
            f"{TOLERANCE['loss']:g} for the loss, and the same kept step") in text
    assert TOLERANCE["step"] == 0


def test_the_kernel_path_findings_the_readme_states_hold_in_the_benchmark_files():
    """README: each filter path keeps another set of pairs; portable overrides every path's switches and
    gives metrics/data.json; a bf16 step on the pinned path is many times slower than fp32 there; the
    full chain on another path stays well inside verify's tolerance."""
    import json

    from conftest import ROOT

    b = json.loads((ROOT / "metrics/isa_paths.json").read_text())
    assert len({f["data_json_sha256"] for f in b["filter"]}) == len(b["filter"]) >= 3
    # portable: one output on every path, the committed metrics/data.json of the benchmark's day (the default
    # before its SQuAD sample; today's data.json differs because the default's data changed, not the path)
    portable = {f["data_json_sha256"] for f in b["filter_portable"]}
    assert b["filter_portable"] and len(portable) == 1 and all(f["identical_to_metrics_data_json"]
                                                               for f in b["filter_portable"])
    step = {(t["path"], t["precision"]): t["step_time_vs_avx2_fp32"] for t in b["training"]}
    assert step[("avx2", "bf16")] > 3 * step[("avx2", "fp32")]
    encoding = {e["path"]: e for e in b["encoding"]}
    assert encoding["avx2, 1 thread"]["identical_to_avx2"]  # the pinned encoding ignores the core count
    chain = json.loads((ROOT / "metrics/isa_paths_chain.json").read_text())["chain"]
    assert chain
    for c in chain:
        worst = c["max_abs_difference_to_repro"]
        assert worst.get("rate", 0) <= TOLERANCE["rate"] / 2 and worst.get("rank_distance", 0) <= TOLERANCE[
            "rank_distance"] / 2
