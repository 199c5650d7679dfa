"""scripts/plots.py: experiments resolved by name through DVC's git refs, files read at their commits."""
import subprocess

import pytest

from scripts.plots import read, render, resolve

LANGS = "lang,mono_map,cross_map,multi_map,seen\nde,{v},0.5,0.4,True\nth,0.7,0.4,0.3,False\n"


@pytest.fixture()
def repo(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    live = tmp_path / "dvclive/train/plots/metrics"
    (live / "train").mkdir(parents=True)
    (live / "dev").mkdir()
    (tmp_path / "metrics").mkdir()
    revs = {}
    for name, v in (("xx-s1", 0.8), ("hybrid-s1", 0.9)):
        (tmp_path / "metrics/toy-languages.csv").write_text(LANGS.format(v=v))
        (live / "train/loss.tsv").write_text(f"step\tloss\n1\t{v}\n2\t{v / 2}\n")
        (live / "dev/score.tsv").write_text(f"step\tscore\n0\t0.5\n2\t{v}\n")
        git("add", "-A")
        git("commit", "-qm", name)
        revs[name] = git("rev-parse", "HEAD")
        git("update-ref", f"refs/exps/ab/cdef0123/{name}", revs[name])  # where DVC keeps experiment commits
    (tmp_path / "metrics/toy-languages.csv").write_text(LANGS.format(v=0.1))  # an uncommitted workspace
    return tmp_path, revs


def test_sources_resolve_to_experiment_commits_revisions_or_the_workspace(repo):
    path, revs = repo
    assert resolve("xx-s1", path) == revs["xx-s1"]
    assert resolve(revs["hybrid-s1"][:10], path) == revs["hybrid-s1"]
    assert resolve("workspace", path) is None
    with pytest.raises(SystemExit, match="'nope' is neither an experiment"):
        resolve("nope", path)


def test_each_source_is_read_at_its_own_commit(repo):
    path, revs = repo
    assert read(revs["xx-s1"], "metrics/toy-languages.csv", path)["mono_map"].tolist() == [0.8, 0.7]
    assert read(revs["hybrid-s1"], "metrics/toy-languages.csv", path)["mono_map"].tolist() == [0.9, 0.7]
    assert read(None, "metrics/toy-languages.csv", path)["mono_map"].tolist() == [0.1, 0.7]
    assert read(revs["xx-s1"], "metrics/absent.csv", path) is None


def test_render_writes_one_png_per_plot_where_asked(repo):
    path, _ = repo
    out = path / "elsewhere" / "plots"
    written = render(["xx-s1", "hybrid-s1", "workspace"], out, path)
    assert sorted(p.name for p in written) == ["toy-languages.png", "training.png"]
    assert all(p.parent == out and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
