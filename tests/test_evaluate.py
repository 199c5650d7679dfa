"""python -m evaluation: any model, one command. On the toy LAReQA set of test_stages_eval (its
``project`` fixture: a scratch project with params.yaml and the small English test model) it gives exactly
the metrics of the index + score stages; on the MIRACL fixture it writes nDCG@10 / Recall@100, the index's
recall against exact search and MTEB's result layout, with a FAISS index other than Flat."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT
from test_stages_eval import project  # noqa: F401 - the fixture, reused

FIXTURE = Path(__file__).parent / "fixtures" / "miracl"


@pytest.mark.parametrize("module", ["evaluation", "evaluation.evaluate"])
def test_help_documents_the_command(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("usage: python -m evaluation ")
    for option in ("--model", "--dataset", "--out", "--query-prefix", "--passage-prefix", "--pooling", "--engine",
                   "--faiss-index", "--miracl-dir", "--run-depth"):
        assert option in out


def _trec(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=" ", header=None, names=["qid", "q0", "docid", "rank", "score", "tag"],
                       dtype={"qid": str, "docid": str})


def test_evaluate_equals_index_then_score(project):  # noqa: F811 - the imported fixture
    from evaluation import evaluate
    from pipeline.stages import index, score

    index.main(["--dataset", "toy", "--model", "models/trained"])
    score.main(["--dataset", "toy"])
    before = sorted(p.name for p in (project / "metrics").iterdir())
    evaluate.main(["--model", "models/trained", "--dataset", "toy", "--out", "eval", "--engine", "torch",
                   "--batch-size", "2", "--query-prefix", "query: ", "--passage-prefix", "passage: ",
                   "--pooling", "mean", "--run-depth", "5", "--tag", "minilm"])
    got = json.loads((project / "eval/toy/metrics.json").read_text())
    assert got == json.loads((project / "data/scores/toy/summary.json").read_text())  # exactly the same numbers
    pd.testing.assert_frame_equal(pd.read_parquet(project / "eval/toy/per_query.parquet"),
                                  pd.read_parquet(project / "data/scores/toy/per_query.parquet"))
    pd.testing.assert_frame_equal(pd.read_csv(project / "eval/toy/languages.csv"),
                                  pd.read_csv(project / "metrics/toy-languages.csv"))
    assert sorted(p.name for p in (project / "metrics").iterdir()) == before  # metrics/ untouched
    run = _trec(project / "eval/toy/run.trec")
    stage_run = pd.read_parquet(project / "data/embeddings/toy/run.parquet")
    assert len(run) == 6 * 5 and (run.q0 == "Q0").all() and (run.tag == "minilm").all()
    top5 = stage_run[stage_run["rank"] <= 5].reset_index(drop=True)
    assert list(run.qid) == list(top5.qid) and list(run.docid) == list(top5.cand_id) and list(run["rank"]) == list(
        top5["rank"])
    info = json.loads((project / "eval/info.json").read_text())
    assert info["via"] == "local folder" and info["query_prefix"] == "query: " and info["engine"] == "torch"
    assert info["pooling"] == "mean" and info["datasets"]["toy"]["languages"] == ["de", "en"]
    assert "git_revision" in info and "sha256" in info["datasets"]["toy"]


def test_out_inside_metrics_and_unknown_dataset_are_refused(project):  # noqa: F811
    from evaluation import evaluate

    with pytest.raises(SystemExit, match="inside the committed metrics/ folder"):
        evaluate.main(["--model", "models/trained", "--dataset", "toy", "--out", "metrics/x"])
    with pytest.raises(SystemExit, match="unknown dataset 'nope'"):
        evaluate.main(["--model", "models/trained", "--dataset", "nope", "--out", "eval"])
    with pytest.raises(SystemExit, match="'miracl:xx' is not a MIRACL language; valid: ar, bn, de"):
        evaluate.main(["--model", "models/trained", "--dataset", "miracl:xx", "--out", "eval"])
    assert not (project / "eval").exists()


def test_miracl_languages_and_index_settings_come_from_params(project):  # noqa: F811
    from evaluation.evaluate import expand_datasets
    from pipeline.params import load_params, parse_params

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["miracl"] = {"languages": ["sw", "en"]}
    params = parse_params(raw)
    assert expand_datasets(["toy", "miracl", "miracl:en"], params) == ["toy", "miracl:sw", "miracl:en"]
    assert params.miracl.faiss_index == "Flat" and params.miracl.split == "dev"
    assert load_params().miracl.languages == ["de", "en"]  # the default when params.yaml has no miracl section


def test_miracl_end_to_end_with_an_ivf_index(project, capsys):  # noqa: F811
    from evaluation import evaluate

    args = ["--model", "models/trained", "--dataset", "miracl:en", "--miracl-dir", str(FIXTURE), "--out", "eval",
            "--engine", "torch", "--batch-size", "4", "--faiss-index", "IVF2,Flat", "--search-params", "nprobe=1",
            "--shard-size", "8", "--train-size", "20"]
    evaluate.main(args)
    m = json.loads((project / "eval/miracl-en/metrics.json").read_text())
    assert m["queries"] == 7 and m["passages"] == 20 and m["queries_scored"] == 6 and m["queries_skipped"] == 1
    assert m["faiss_index"] == "IVF2,Flat" and m["index_bytes"] > 0
    assert 0 <= m["index_recall@100_vs_exact"] <= 1 and m["index_recall_sample_queries"] == 7
    assert 0 < m["ndcg@10"] <= 1 and 0 < m["recall@100"] <= 1
    shards = sorted(p.name for p in (project / "eval/work/miracl-en/shards").glob("shard-*.npy"))
    assert shards == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    mteb = json.loads((project / "eval/miracl-en/mteb.json").read_text())
    assert mteb["task_name"] == "MIRACLRetrieval" and set(mteb) >= {"dataset_revision", "mteb_version",
                                                                      "evaluation_time", "scores"}
    (entry,) = mteb["scores"]["dev"]
    assert entry["hf_subset"] == "en" and entry["languages"] == ["eng-Latn"]
    assert entry["main_score"] == entry["ndcg_at_10"] == m["ndcg@10"] and entry["recall_at_100"] == m["recall@100"]
    # the metrics recomputed from the TREC run file with the qrels give the same numbers
    from evaluation.ir_metrics import evaluate_run
    from evaluation.miracl import load_miracl

    run = _trec(project / "eval/miracl-en/run.trec")
    hits = {q: list(zip(g.docid, g.score, strict=True)) for q, g in run.groupby("qid")}
    ds = load_miracl(FIXTURE, "en")
    again, _ = evaluate_run(hits, {q: ds.qrels.get(q, {}) for q in ds.topics})
    assert again["ndcg@10"] == pytest.approx(m["ndcg@10"], abs=1e-6)
    # exact search (Flat) on the same shards: recall vs exact is 1, and the finished shards are not encoded again
    stamps = {p.name: p.stat().st_mtime_ns for p in (project / "eval/work/miracl-en/shards").iterdir()}
    evaluate.main(["--model", "models/trained", "--dataset", "miracl:en", "--miracl-dir", str(FIXTURE), "--out", "eval",
                   "--engine", "torch", "--batch-size", "4", "--shard-size", "8"])
    flat = json.loads((project / "eval/miracl-en/metrics.json").read_text())
    assert flat["faiss_index"] == "Flat" and flat["index_recall@100_vs_exact"] == 1.0
    assert {p.name: p.stat().st_mtime_ns for p in (project / "eval/work/miracl-en/shards").iterdir()} == stamps
    assert "shard 0: 8 passages encoded" not in capsys.readouterr().err.split("IVF2,Flat")[-1]


def test_hub_id_offline_stops_with_one_line(project, monkeypatch, capsys):  # noqa: F811
    """A hub id goes through pipeline.assets.hub_snapshot (safetensors only); the hub is unreachable here, so
    only its refusal is tested: one line naming the model, exit 1, nothing written."""
    from evaluation import evaluate
    from pipeline import console

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PIPELINE_VERBOSE", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        console.run(evaluate.main, "evaluate", ["--model", "org/no-such-model", "--dataset", "toy", "--out", "eval"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "evaluate: error: hub model 'org/no-such-model' (revision main) could not be fetched: ")
    with pytest.raises(SystemExit, match="is not a folder"):
        evaluate.main(["--model", "./missing", "--dataset", "toy", "--out", "eval"])
    assert not (project / "eval").exists()
