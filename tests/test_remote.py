"""The DVC remote workflow of docs/sharing-and-translation-at-scale.md, end to end on a tiny project:
a bare git repository stands for the team's git server and a local folder for the DVC remote (S3, GCS
or SSH take the same commands with another URL). Clone A reproduces and pushes; a fresh clone B pulls
the outputs with nothing left to reproduce; an experiment run in A travels to B with
``dvc exp push`` / ``dvc exp pull``, its outputs included."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real git and DVC processes: push, clone, pull, experiments

STAGE = """\
import yaml
factor = yaml.safe_load(open("params.yaml"))["factor"]
lines = open("data/input.txt", encoding="utf-8").read().splitlines()
open("out/result.txt", "w", encoding="utf-8").write("".join(f"{line}\\n" * factor for line in lines))
"""

DVC_YAML = """\
stages:
  copy:
    cmd: python make_result.py
    deps: [make_result.py, data/input.txt]
    params: [factor]
    outs: [out/result.txt]
"""


@pytest.fixture()
def env(tmp_path):
    if importlib.util.find_spec("dvc") is None:
        pytest.skip("dvc is not installed in this Python environment (pip install -r requirements.txt)")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               DVC_SITE_CACHE_DIR=str(tmp_path / "site-cache"), HOME=str(tmp_path / "home"),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.invalid", GIT_CONFIG_NOSYSTEM="1")
    (tmp_path / "home").mkdir()
    return env


def run(cwd: Path, *cmd: str, env: dict) -> str:
    if cmd[0] == "dvc":
        cmd = (sys.executable, "-m", "dvc", *cmd[1:])
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stdout}{out.stderr}"
    return out.stdout


def test_push_clone_pull_and_experiments_between_clones(tmp_path, env):
    origin, storage, a, b = (tmp_path / n for n in ("origin.git", "dvc-storage", "clone-a", "clone-b"))
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin), env=env)

    # clone A: a one-stage project with a local-folder DVC remote as default
    run(tmp_path, "git", "clone", "-q", str(origin), str(a), env=env)
    (a / "data").mkdir()
    (a / "data" / "input.txt").write_text("first line\nsecond line\n", encoding="utf-8")
    (a / "make_result.py").write_text(STAGE)
    (a / "params.yaml").write_text("factor: 1\n")
    (a / "dvc.yaml").write_text(DVC_YAML)
    (a / "out").mkdir()
    run(a, "git", "checkout", "-q", "-b", "main", env=env)
    run(a, "dvc", "init", "-q", env=env)
    run(a, "dvc", "config", "core.analytics", "false", env=env)
    run(a, "dvc", "remote", "add", "-d", "storage", str(storage), env=env)
    run(a, "dvc", "repro", env=env)
    assert (a / "out" / "result.txt").read_text() == "first line\nsecond line\n"
    run(a, "git", "add", "-A", env=env)
    run(a, "git", "commit", "-qm", "a one-stage pipeline, reproduced", env=env)
    run(a, "dvc", "push", env=env)
    run(a, "git", "push", "-q", "origin", "main", env=env)
    assert list(storage.rglob("*")), "dvc push filled the remote"

    # clone B: git clone + dvc pull restore the outputs; nothing to reproduce
    run(tmp_path, "git", "clone", "-q", "-b", "main", str(origin), str(b), env=env)
    assert not (b / "out" / "result.txt").exists(), "outputs are in the DVC remote, not in git"
    run(b, "dvc", "pull", env=env)
    assert (b / "out" / "result.txt").read_text() == "first line\nsecond line\n"
    assert json.loads(run(b, "dvc", "status", "--json", env=env) or "{}") == {}
    assert "up to date" in run(b, "dvc", "repro", env=env)

    # an experiment run in A reaches B through the git server and the DVC remote
    run(a, "dvc", "exp", "run", "-q", "-n", "triple", "-S", "factor=3", env=env)
    run(a, "dvc", "exp", "push", "origin", "triple", env=env)
    assert "triple" in run(b, "dvc", "exp", "list", "--all-commits", "origin", env=env)
    run(b, "dvc", "exp", "pull", "origin", "triple", env=env)
    shows = json.loads(run(b, "dvc", "exp", "show", "--json", env=env))
    names = [e.get("name") for row in shows for e in (row.get("experiments") or [])]
    assert "triple" in names
    run(b, "dvc", "exp", "apply", "triple", env=env)  # the outputs come from B's cache, which exp pull filled
    assert (b / "out" / "result.txt").read_text() == "first line\n" * 3 + "second line\n" * 3
    assert (b / "params.yaml").read_text().strip() == "factor: 3"
    assert json.loads(run(b, "dvc", "status", "--json", env=env) or "{}") == {}
