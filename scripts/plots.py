"""Render the pipeline's plots as PNG files with matplotlib (DVC's HTML plots load scripts from a CDN).

    python -m scripts.plots [--out plots/]

Writes ``training.png`` (training loss, dev-set scores and learning rate per step, from dvclive's
``dvclive/train/plots/metrics``) and ``<dataset>-languages.png`` (mono / cross / multi mAP per query
language, from ``metrics/<dataset>-languages.csv``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def training_curves(live: Path, out: Path) -> Path | None:
    """Training loss, the dev-set scores the checkpoint is selected by, and the learning rate, per step."""
    if not (live / "train/loss.tsv").exists():
        return None
    read = lambda name: pd.read_csv(live / f"{name}.tsv", sep="\t")  # noqa: E731
    fig, (ax, ax_dev, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.5))
    d = read("train/loss")
    ax.plot(d["step"], d[d.columns[-1]])
    ax.set_xlabel("step"), ax.set_ylabel("training InfoNCE loss")
    for name in ("score", "mono_map", "cross_map", "multi_map"):
        if (live / f"dev/{name}.tsv").exists():
            d = read(f"dev/{name}")
            ax_dev.plot(d["step"], d[d.columns[-1]], marker="o", label=name, lw=2.5 if name == "score" else 1)
    ax_dev.set_xlabel("step"), ax_dev.set_ylabel("dev set mAP"), ax_dev.legend(fontsize=8)
    d = read("train/lr")
    ax_lr.plot(d["step"], d[d.columns[-1]])
    ax_lr.set_xlabel("step"), ax_lr.set_ylabel("learning rate")
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=120)
    plt.close(fig)
    return out / "training.png"


def language_bars(csv: Path, out: Path) -> Path:
    d = pd.read_csv(csv).set_index("lang")
    ax = d[["mono_map", "cross_map", "multi_map"]].plot.bar(figsize=(10, 3.5), width=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylabel("mAP"), ax.set_title(csv.stem.replace("-languages", "") + " (unseen: " +
                                       ", ".join(d.index[~d["seen"]]) + ")")
    path = out / f"{csv.stem}.png"
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "plots"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = [training_curves(ROOT / "dvclive/train/plots/metrics", out)]
    written += [language_bars(csv, out) for csv in sorted((ROOT / "metrics").glob("*-languages.csv"))]
    for path in filter(None, written):
        print(path)


if __name__ == "__main__":
    main()
