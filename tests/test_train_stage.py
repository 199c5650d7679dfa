"""The train stage's dvclive folder appears whole at the end, or not at all; the temporaries a killed
run leaves are removed by the next start, and nothing else is."""
import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_stages_eval import project  # noqa: F401  (the scratch project fixture)

from pipeline.io import atomic_dir, atomic_path, remove_stale_temps, temp_name_pattern
from pipeline.stages.train import live_folder, remove_stale_outputs

ROOT = Path(__file__).resolve().parents[1]


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
    stale = [project / "dvclive/.train.k1ll3d00.tmp", project / "models/.untrained.k1ll3d00.tmp"]
    for folder in stale:
        (folder / "plots").mkdir(parents=True)
    other = project / "models/.trained.k1ll3d00.tmp"  # a temporary of another output: kept
    other.mkdir()
    train.main(["--base", "models/trained", "--out", "models/untrained"])
    assert not any(p.exists() for p in stale) and other.is_dir()
    summary = json.loads((project / "dvclive/train/metrics.json").read_text())
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert summary["step"] == 0 and metrics["select_by"] == "untrained"
    assert summary["dev"] == {k[4:]: v for k, v in metrics.items() if k.startswith("dev_")}
    assert (project / "dvclive/train/plots/metrics").is_dir()
    base, copy = project / "models/trained", project / "models/untrained"
    assert (copy / "config.json").read_bytes() == (base / "config.json").read_bytes()


def test_atomic_temporaries_have_the_names_the_cleanup_looks_for(tmp_path):
    with atomic_dir(tmp_path / "train") as tmp:
        assert temp_name_pattern(tmp_path / "train").fullmatch(tmp.name)
    with atomic_path(tmp_path / "train.json", ".json") as tmp:
        assert temp_name_pattern(tmp_path / "train.json", ".json").fullmatch(tmp.name)
        assert not temp_name_pattern(tmp_path / "train").fullmatch(tmp.name)


def test_only_the_temporaries_of_the_stage_outputs_are_removed(tmp_path):
    """A trailing "/" makes a folder, else a file."""
    stale = ["dvclive/.train.abc123_x.tmp/", "dvclive/.train.old/", "models/.trained.q9w8e7r6.tmp/",
             "metrics/.train.json.a1b2c3d4.json.tmp", "logs/.train.json.zz99zz99.json.tmp"]
    kept = ["dvclive/train/metrics.json", "models/trained/config.json", "metrics/train.json",
            "dvclive/.train2.abc123_x.tmp/", "dvclive/.other.abc123_x.tmp/", "dvclive/.train.abc.def.tmp/",
            "models/.trained.json.a1b2c3d4.json.tmp", "metrics/.train.json.a1b2c3d4.csv.tmp",
            "metrics/.mining.json.a1b2c3d4.json.tmp", "data/.train.abc123_x.tmp/", "dvclive/train.tmp/",
            "dvclive/.train.abc123_x.tmp.keep"]
    for rel in stale + kept:
        path = tmp_path / rel
        if rel.endswith("/"):
            (path / "plots").mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
    args = argparse.Namespace(**{k: str(tmp_path / v) for k, v in {
        "out": "models/trained", "live": "dvclive/train", "metrics": "metrics/train.json",
        "timings": "logs/train.json"}.items()})
    removed = remove_stale_outputs(args)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == sorted(r.rstrip("/") for r in stale)
    assert not any((tmp_path / rel).exists() for rel in stale)
    assert all((tmp_path / rel).exists() for rel in kept)
    assert remove_stale_temps(tmp_path / "nowhere" / "train") == []


KILLED_WRITER = """
import sys, time
from pipeline.io import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "metrics.json").write_text("half")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_start_removes(tmp_path):
    live = tmp_path / "dvclive" / "train"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(live)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    left = [p.name for p in live.parent.iterdir()]
    assert len(left) == 1 and temp_name_pattern(live).fullmatch(left[0]) and not live.exists()
    args = argparse.Namespace(out=str(tmp_path / "models/trained"), live=str(live),
                              metrics=str(tmp_path / "metrics/train.json"), timings=str(tmp_path / "logs/t.json"))
    assert [p.name for p in remove_stale_outputs(args)] == left
    assert list(live.parent.iterdir()) == []


def test_every_atomic_folder_write_first_removes_what_a_killed_write_of_it_left(tmp_path):
    from pipeline.io import atomic_dir

    out = tmp_path / "data" / "embeddings"
    (tmp_path / "data").mkdir()
    stale = tmp_path / "data" / ".embeddings.k1ll3d_.tmp"
    other = tmp_path / "data" / ".scores.k1ll3d_.tmp"  # another output's temporary stays
    for p in (stale, other, tmp_path / "data" / ".embeddings.old"):
        p.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".scores.k1ll3d_.tmp", "embeddings"]
