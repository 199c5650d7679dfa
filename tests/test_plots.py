"""experiments/plots.py: experiments resolved by name through DVC's git refs, files read at their commits."""
import subprocess

import pytest

import json

import matplotlib.pyplot as plt
import pandas as pd

from experiments.plots import ema, kept_step, language_figure, read, render, resolve, training_figure

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
        kept = {"select_by": "dev", "best_step": 2 if v > 0.85 else 1}
        (tmp_path / "metrics/train.json").write_text(json.dumps(kept))
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


def test_the_kept_step_is_read_from_each_sources_train_metrics(repo):
    path, revs = repo
    assert kept_step(revs["xx-s1"], path) == 1 and kept_step(revs["hybrid-s1"], path) == 2
    assert kept_step(None, path) == 2  # the workspace holds the last commit's file
    (path / "metrics/train.json").unlink()
    assert kept_step(None, path) is None


def _table(values):
    return pd.DataFrame({"lang": ["de", "en", "th"], "mono_map": values, "cross_map": [v - 0.05 for v in values],
                         "multi_map": [v - 0.1 for v in values], "seen": [True, True, False]})


def test_language_bars_zoom_on_the_data_say_so_and_label_every_bar():
    fig = language_figure({"xx": _table([0.77, 0.81, 0.79]), "hybrid": _table([0.80, 0.85, 0.78])}, "toy")
    try:
        for ax in fig.axes:
            bars = [p for c in ax.containers for p in c]
            heights = [b.get_height() for b in bars]
            lo, hi = ax.get_ylim()
            assert 0 < lo <= min(heights) and max(heights) < hi, (lo, hi)
            assert hi - lo < 0.5, "the axis spans the data, not 0-1"
            assert "not from 0" in ax.get_ylabel()
            labels = [t.get_text() for t in ax.texts]
            assert len(labels) == len(bars) and all(t.startswith("0.") and len(t) == 5 for t in labels)
        assert "0.850" in [t.get_text() for t in fig.axes[0].texts]
    finally:
        plt.close(fig)


def test_training_curves_mark_the_kept_step_and_smooth_the_loss():
    noisy = [1.0 / s + (0.15 if s % 2 else -0.15) for s in range(1, 61)]
    loss = pd.DataFrame({"step": range(1, 61), "loss": noisy})
    score = pd.DataFrame({"step": [0, 20, 40, 60], "score": [0.62, 0.71, 0.724, 0.723]})
    fig = training_figure({"hybrid-s13": {"loss": loss, "score": score, "kept": 40}})
    try:
        ax_loss, ax_dev = fig.axes
        for ax in (ax_loss, ax_dev):
            vertical = [ln for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1 and ln.get_xdata()[0] == 40]
            assert vertical, "a vertical line at the kept step"
        assert any("kept" in t.get_text() and "40" in t.get_text() for t in ax_dev.texts)
        raw = [ln for ln in ax_loss.get_lines() if len(ln.get_xdata()) == 60 and (ln.get_alpha() or 1) < 0.5]
        smooth = [ln for ln in ax_loss.get_lines() if "EMA" in ln.get_label()]
        assert raw and smooth, "the raw loss faint, the smoothed one drawn over it"
        assert pd.Series(smooth[0].get_ydata()).diff().abs().mean() < loss["loss"].diff().abs().mean() / 3
    finally:
        plt.close(fig)


def test_ema_is_debiased_and_smooths():
    assert ema(pd.Series([0.5] * 10), 5).tolist() == [0.5] * 10  # no pull towards 0 at the start
    noisy = pd.Series([1.0, 0.0] * 20)
    assert ema(noisy, 9).iloc[10:].between(0.35, 0.65).all()
    assert len(ema(noisy, 9)) == len(noisy)
