"""The train stage's dvclive folder appears whole at the end, or not at all."""
import pytest

from test_stages_eval import project  # noqa: F401  (the scratch project fixture)

from pipeline.stages.train import live_folder


def test_a_failed_train_leaves_the_previous_dvclive_files(tmp_path):
    live = tmp_path / "dvclive" / "train"
    (live / "plots" / "metrics").mkdir(parents=True)
    (live / "metrics.json").write_text('{"step": 60}')
    with pytest.raises(RuntimeError), live_folder(str(live)) as tmp:
        (tmp / "metrics.json").write_text('{"step": 3}')  # half a run...
        raise RuntimeError("killed")
    assert (live / "metrics.json").read_text() == '{"step": 60}'
    assert sorted(p.name for p in live.parent.iterdir()) == ["train"], "no temporary folder is left behind"


def test_a_finished_train_replaces_the_dvclive_folder_whole(tmp_path):
    live = tmp_path / "dvclive" / "train"
    (live / "plots" / "metrics" / "old").mkdir(parents=True)
    with live_folder(str(live)) as tmp:
        assert tmp != live and (tmp / "plots" / "metrics").is_dir()
        (tmp / "metrics.json").write_text('{"step": 2}')
    assert (live / "metrics.json").read_text() == '{"step": 2}'
    assert not (live / "plots" / "metrics" / "old").exists() and (live / "plots" / "metrics").is_dir()
    with live_folder("") as nothing:
        assert nothing is None


def test_the_untrained_baseline_writes_the_declared_dvclive_summary(project):  # noqa: F811
    """``train.steps: 0`` copies the base model and still writes dvclive/train/metrics.json (a declared out)."""
    import json

    import pandas as pd
    import yaml

    from pipeline.stages import train

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["steps"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    dev = project / "data/split/dev"
    dev.mkdir(parents=True)
    pd.DataFrame({"qid": ["en:q1", "de:q1"], "id": ["q1", "q1"], "lang": ["en", "de"],
                  "text": ["How tall is the tower?", "Wie hoch ist der Turm?"], "gold": ["en:0:0", "de:0:0"]}
                 ).to_parquet(dev / "queries.parquet")
    pd.DataFrame({"cand_id": ["en:0:0", "en:0:1", "de:0:0", "de:0:1"], "lang": ["en", "en", "de", "de"],
                  "text": ["The tower is 300 metres tall.", "Bread is baked.", "Der Turm ist 300 Meter hoch.",
                           "Brot wird gebacken."]}).to_parquet(dev / "pool.parquet")
    train.main(["--base", "models/trained", "--out", "models/untrained"])
    summary = json.loads((project / "dvclive/train/metrics.json").read_text())
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert summary["step"] == 0 and metrics["select_by"] == "untrained"
    assert summary["dev"] == {k[4:]: v for k, v in metrics.items() if k.startswith("dev_")}
    assert (project / "dvclive/train/plots/metrics").is_dir()
    base, copy = project / "models/trained", project / "models/untrained"
    assert (copy / "config.json").read_bytes() == (base / "config.json").read_bytes()
