"""LAReQA results of the score stage in MTEB's result layout, the layout python -m evaluation writes for MIRACL."""
import json
from pathlib import Path

import pytest

from pipeline.mteb_format import MTEB_LANGUAGES, lareqa_mteb

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"mono_map": 0.805005, "mono_map_seen": 0.812988, "mono_map_unseen": 0.791034, "cross_map": 0.708146,
           "cross_map_seen": 0.723006, "cross_map_unseen": 0.698968, "multi_map": 0.576697, "mono_r1": 0.716501,
           "cross_r1": 0.599969, "multi_r10": 0.503688, "multi_rank_distance": 323.253323,
           "multi_rank_distance_seen": 314.952221, "queries": 13090, "pool": 13014, "languages": 11}
LANGS = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]


def test_the_score_stages_metrics_become_one_mteb_entry_per_setting():
    out = lareqa_mteb(METRICS, "xquad-r", LANGS)
    assert set(out) == {"dataset_revision", "task_name", "mteb_version", "scores", "evaluation_time",
                        "kg_co2_emissions"}, "the keys of the MIRACL mteb.json"
    assert out["task_name"] == "LAReQA-XQuAD-R" and out["dataset_revision"] == "local"
    [split] = out["scores"]
    by_subset = {e["hf_subset"]: e for e in out["scores"][split]}
    assert sorted(by_subset) == ["cross", "mono", "multi"]
    mono, cross, multi = by_subset["mono"], by_subset["cross"], by_subset["multi"]
    assert mono["main_score"] == mono["map"] == 0.805005 and mono["map_seen"] == 0.812988
    assert mono["map_unseen"] == 0.791034 and mono["recall_at_1"] == 0.716501
    assert cross["main_score"] == 0.708146 and cross["recall_at_1"] == 0.599969
    assert multi["main_score"] == 0.576697 and multi["recall_at_10"] == 0.503688
    assert multi["rank_distance"] == 323.253323 and multi["rank_distance_seen"] == 314.952221
    for entry in by_subset.values():
        assert entry["languages"] == [MTEB_LANGUAGES[lang] for lang in LANGS]
        assert "queries" not in entry and "pool" not in entry
    json.dumps(out)  # plain JSON


def test_the_workspace_metrics_file_converts_and_bad_input_is_refused():
    path = ROOT / "metrics" / "xquad-r.json"
    if path.exists():
        out = lareqa_mteb(json.loads(path.read_text()), "xquad-r")
        assert {e["hf_subset"] for e in out["scores"]["test"]} == {"mono", "cross", "multi"}
    with pytest.raises(ValueError, match="no mAP"):
        lareqa_mteb({"queries": 3}, "xquad-r")
    with pytest.raises(ValueError, match="no MTEB code"):
        lareqa_mteb(METRICS, "xquad-r", ["xx"])
