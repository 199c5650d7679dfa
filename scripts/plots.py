"""Plots of the workspace or of any set of DVC experiments, as PNG files, offline (matplotlib).

    python -m scripts.plots --out tmp/plots                                   # the workspace
    python -m scripts.plots --exp mlqa2xquad-cpu-xx-s13 mlqa2xquad-cpu-xy-s13 mlqa2xquad-cpu-hybrid-s13 \\
        --out tmp/compare                                                     # experiments side by side
    python -m scripts.plots --exp workspace HEAD my-exp --out tmp/compare    # names, git revisions, the workspace

DVC's own HTML plots load their scripts from a CDN; these need nothing online. Each source is an
experiment name (``dvc exp show``), a git revision, or ``workspace``; its files are read with
``git show <rev>:<path>`` (the plots data is small and kept in git: ``cache: false``). Writes into ``--out``:

* ``<dataset>-languages.png``: mono / cross / multi mAP per query language, one bar per source, the
  unseen languages marked;
* ``training.png``: training loss and dev-set score per step, one line per source.

Titles and legends carry the source names. The committed PNGs under ``plots/`` are the workspace of
the offline default (``python -m scripts.plots --out plots``).
"""
from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIVE = "dvclive/train/plots/metrics"
SETTINGS = ("mono_map", "cross_map", "multi_map")


def resolve(source: str, repo: Path = ROOT) -> str | None:
    """The git revision of ``source``: None for ``workspace``, an experiment's commit for its name, else
    ``source`` itself when git knows it as a revision."""
    if source == "workspace":
        return None
    refs = subprocess.run(["git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.split("\n")
    hits = [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == source]
    if len(hits) > 1:
        raise SystemExit(f"{source!r} names {len(hits)} experiments; pass a commit instead")
    if hits:
        return hits[0]
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{source}^{{commit}}"], cwd=repo,
                         capture_output=True, text=True)
    if rev.returncode:
        raise SystemExit(f"{source!r} is neither an experiment (dvc exp list --all-commits), a git revision, "
                         "nor 'workspace'")
    return rev.stdout.strip()


def read(rev: str | None, path: str, repo: Path = ROOT, sep: str = ",") -> pd.DataFrame | None:
    """A CSV/TSV file of the workspace (``rev`` None) or of a git revision; None when it has none."""
    if rev is None:
        return pd.read_csv(repo / path, sep=sep) if (repo / path).exists() else None
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True)
    return pd.read_csv(io.BytesIO(out.stdout), sep=sep) if out.returncode == 0 else None


def language_bars(tables: dict[str, pd.DataFrame], dataset: str, out: Path) -> Path:
    """One panel per setting; per query language one bar per source."""
    langs = sorted(set().union(*(set(t["lang"]) for t in tables.values())))
    unseen = sorted(set().union(*(set(t.loc[~t["seen"].astype(bool), "lang"]) for t in tables.values())))
    fig, axes = plt.subplots(len(SETTINGS), 1, figsize=(max(8.0, 0.9 * len(langs) + 3), 2.6 * len(SETTINGS)),
                             sharex=True)
    width = 0.8 / len(tables)
    for ax, setting in zip(axes, SETTINGS, strict=True):
        for i, (name, t) in enumerate(tables.items()):
            values = t.set_index("lang")[setting].reindex(langs)
            ax.bar([x + (i - (len(tables) - 1) / 2) * width for x in range(len(langs))], values, width, label=name)
        ax.set_ylabel(setting.replace("_map", " mAP"))
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(langs)), [f"{lang}*" if lang in unseen else lang for lang in langs])
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axes[0].set_title(f"{dataset}: " + " vs ".join(tables) + ("  (* unseen in training)" if unseen else ""))
    fig.tight_layout()
    path = out / f"{dataset}-languages.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(curves: dict[str, dict[str, pd.DataFrame]], out: Path) -> Path:
    """Training loss and dev-set score per step, one line per source."""
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 3.8))
    for name, c in curves.items():
        if c.get("loss") is not None:
            ax_loss.plot(c["loss"]["step"], c["loss"].iloc[:, -1], label=name, lw=1)
        if c.get("score") is not None:
            ax_dev.plot(c["score"]["step"], c["score"].iloc[:, -1], marker="o", label=name)
    ax_loss.set_xlabel("step"), ax_loss.set_ylabel("training InfoNCE loss")
    ax_dev.set_xlabel("step"), ax_dev.set_ylabel("dev score (mean of mono/cross/multi mAP)")
    for ax in (ax_loss, ax_dev):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("training: " + " vs ".join(curves))
    fig.tight_layout()
    path = out / "training.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(sources: list[str], out: Path, repo: Path = ROOT) -> list[Path]:
    """Every plot the sources have data for, into ``out``; returns the files written."""
    revs = {s: resolve(s, repo) for s in sources}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    datasets = sorted({p.name[: -len("-languages.csv")] for p in (repo / "metrics").glob("*-languages.csv")})
    for rev in revs.values():
        if rev is not None:
            listing = subprocess.run(["git", "ls-tree", "--name-only", rev, "metrics/"], cwd=repo,
                                     capture_output=True, text=True).stdout.split()
            datasets += [Path(p).name[: -len("-languages.csv")] for p in listing if p.endswith("-languages.csv")]
    for dataset in sorted(set(datasets)):
        tables = {s: t for s, rev in revs.items()
                  if (t := read(rev, f"metrics/{dataset}-languages.csv", repo)) is not None}
        if tables:
            written.append(language_bars(tables, dataset, out))
    curves = {s: {"loss": read(rev, f"{LIVE}/train/loss.tsv", repo, "\t"),
                  "score": read(rev, f"{LIVE}/dev/score.tsv", repo, "\t")} for s, rev in revs.items()}
    curves = {s: c for s, c in curves.items() if any(v is not None for v in c.values())}
    if curves:
        written.append(training_curves(curves, out))
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp", nargs="+", default=["workspace"],
                    help="experiment names, git revisions or 'workspace' (default: the workspace)")
    ap.add_argument("--out", required=True, help="folder for the PNG files (created)")
    args = ap.parse_args(argv)
    for path in render(args.exp, Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
