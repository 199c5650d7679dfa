"""Benchmark: training step time, throughput and peak memory (a script, not a test).

All in one run, on the same batches (the first ``--warmup + --steps`` of data/batches/train.parquet),
the same base encoder (models/base) and the ``train:`` section of params.yaml, each configuration in a
subprocess of its own so that its peak RSS (``ru_maxrss``: model, tokenizer, AdamW state, activations,
allocator) is its own:

- ``baseline``: ``precision: fp32``, ``micro_batch: null``, no gradient checkpointing (the settings
  before issue 8: each side of a batch in one float32 forward pass, padded to its longest text);
- ``params.yaml``: the ``train:`` section as it stands (bf16 autocast, length-sorted micro-batches);
- ``params.yaml + gradient_checkpointing``: the same with activations recomputed in the backward pass.
- ``bf16 + attention_dropout 0``: bf16, micro-batches of 8 and no attention-probability dropout while
  training (hidden dropout stays), so that PyTorch's fused SDPA (flash) kernel runs in the training
  pass too and keeps no float32 attention-probability matrices for the backward pass.
- ``bf16 + attention_dropout 0 + gradient_checkpointing``: the same with activations recomputed.
- ``params.yaml + mini_batch_size 8``: gradient caching (cached InfoNCE, :func:`pipeline.gradcache.cached_backward`):
  the batch embedded once without the graph, then re-embedded in chunks of 8 to backpropagate, so the
  graph of only one chunk is alive at a time.

Each runs ``--warmup`` optimisation steps (not timed: first-call allocations, oneDNN kernel creation)
and then ``--steps`` timed steps (:func:`pipeline.training.optimisation_step`: loss, backward, clip,
AdamW). s/step and pairs/s are over the timed steps; dev-set evaluations are not included (they are
float32 in every configuration). Writes metrics/training_speed.json (ratios vs the baseline) and
prints a table. Ratios are only compared within a run: the machine is shared.

Usage: python -m benchmarks.training_speed [--steps 12] [--warmup 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "baseline": {"precision": "fp32", "micro_batch": None, "gradient_checkpointing": False},
    "params.yaml": {},
    "params.yaml + gradient_checkpointing": {"gradient_checkpointing": True},
    "bf16 + attention_dropout 0": {"precision": "bf16", "micro_batch": 8, "attention_dropout": 0.0},
    "bf16 + attention_dropout 0 + gradient_checkpointing": {"precision": "bf16", "micro_batch": 8,
                                                            "attention_dropout": 0.0, "gradient_checkpointing": True},
    "params.yaml + mini_batch_size 8": {"mini_batch_size": 8},
}


def worker(name: str, steps: int, warmup: int, base: str, batches: str) -> dict:
    """Train ``warmup + steps`` steps in this process under configuration ``name``; its timings and peak RSS."""
    import pandas as pd
    import torch

    from pipeline.params import load_params
    from pipeline.device import pick_device
    from pipeline.dual_encoder import text_batches
    from pipeline.training import _prepare, optimisation_step

    params = load_params()
    p = params.train.model_copy(update=CONFIGS[name])
    device = pick_device(p.device)
    torch.set_num_threads(p.threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    train_b = text_batches(pd.read_parquet(Path(batches) / "train.parquet"), p.hard_negatives)
    train_b = [train_b[i % len(train_b)] for i in range(warmup + steps)]
    torch.manual_seed(params.seed)
    enc, optimizer, schedule, _ = _prepare(base, p, params.encoder, device)
    trainable = [t for t in enc.model.parameters() if t.requires_grad]
    enc.model.train()
    times, losses = [], []
    for i, batch in enumerate(train_b):
        t = time.perf_counter()
        loss, _, _ = optimisation_step(enc, batch, optimizer, schedule, trainable, p)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
            losses.append(loss)
    s_per_step = sum(times) / len(times)
    pairs = sum(len(b) for b in train_b[warmup:])
    return {
        "settings": {k: getattr(p, k) for k in ("precision", "micro_batch", "gradient_checkpointing",
                                                    "attention_dropout", "mini_batch_size", "threads")},
        "device": device.type,
        "s_per_step": round(s_per_step, 3),
        "pairs_per_s": round(pairs / sum(times), 2),
        "slowest_step_s": round(max(times), 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),  # KiB on Linux
        "mean_loss": round(sum(losses) / len(losses), 4),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--batches", default="data/batches")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    ap.add_argument("--out", default=str(ROOT / "metrics" / "training_speed.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.steps, args.warmup, args.base, args.batches)), flush=True)
        return
    results = {}
    for name in args.configs.split(","):
        cmd = [sys.executable, "-m", "benchmarks.training_speed", "--worker", name, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--base", args.base, "--batches", args.batches]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        lines = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
        if run.returncode or not lines:
            sys.exit(f"{name}: worker failed ({run.returncode})\n{run.stderr[-3000:]}")
        results[name] = json.loads(lines[-1][len("RESULT "):])
    base = results.get("baseline")
    for r in results.values():
        if base:
            r["speedup_vs_baseline"] = round(base["s_per_step"] / r["s_per_step"], 2)
            r["peak_rss_vs_baseline"] = round(r["peak_rss_gb"] / base["peak_rss_gb"], 2)
    from pipeline.params import load_params

    params = load_params()
    out = {
        "what": "train-stage optimisation steps (loss, backward, clip, AdamW) on the same batches; "
                "dev evaluations not included; each configuration in its own process",
        "model": "intfloat/multilingual-e5-small (models/base), word embeddings frozen"
                 if params.train.freeze_embeddings else "models/base",
        "batch_size": params.sampling.batch_size,
        "max_length": params.train.max_length,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "configs": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"{'configuration':40s} {'s/step':>7s} {'pairs/s':>8s} {'speedup':>8s} {'peak RSS':>9s} {'loss':>7s}")
    for name, r in results.items():
        print(f"{name:40s} {r['s_per_step']:7.2f} {r['pairs_per_s']:8.1f} {r.get('speedup_vs_baseline', 1):7.2f}x "
              f"{r['peak_rss_gb']:7.2f}GB {r['mean_loss']:7.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
