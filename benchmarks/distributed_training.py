"""Benchmark: data-parallel training (1 vs 2 processes) and gradient caching (uncached vs cached InfoNCE
at growing batch sizes) on this machine's CPU (a script, not a test).

Every configuration runs in processes of its own, so that its peak RSS (``ru_maxrss``: model,
tokenizer, AdamW state, activations, allocator) is its own. The batches are the assembled training
batches (data/batches/train.parquet, 32 pairs each); a global batch of ``32 k`` pairs is ``k``
consecutive assembled batches put together. The ``train:`` section of params.yaml gives the other
settings (bf16 autocast, micro-batches of 8, max_length, frozen word embeddings).

1. ``processes``: the same global batches of 32 on 1 process x 2 threads, 1 process x 1 thread and
   2 processes x 1 thread (``torchrun --standalone --nproc_per_node 2``, gloo; each rank takes 16 pairs
   and all-gathers the passages). On a 2-core machine all use the same two cores: this measures the
   cost of the distributed path (gathers, the gradient all-reduce, a second copy of the model), not a
   speed-up. 1 process x 1 thread is the control with the 2-process run's threads per process: two
   OpenMP threads on two cores that other jobs also use can wait on each other at every barrier.
2. ``batch_growth`` (one process, ``--growth-threads`` threads, default 1: see above): uncached
   (``micro_batch: 8``) and cached (``mini_batch_size: 8``) training at
   global batches 32, 64, 128, ... until a point's peak RSS exceeds ``--budget-gb`` (4 GB), its step
   exceeds ``--max-step-s`` (60 s), the ladder ends or the benchmark's time budget would be exceeded;
   the largest batch under the budget and the reason the growth stopped are recorded.

Each point runs ``--warmup`` untimed steps (first-call allocations, oneDNN kernels, AdamW state), then
``--steps`` timed steps (one when a warm-up step took over 20 s). The 1-minute load average before and
after each point is recorded: other jobs on a shared machine slow the steps down (not the RSS).
Writes metrics/distributed_training.json (ratios against the baselines of the same run: 1 process;
uncached at batch 32) and prints tables. The machine is shared: compare ratios within a run.

Usage: python -m benchmarks.distributed_training [--base models/base] [--batches data/batches]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LADDER = (32, 64, 128, 256, 512, 1024)


def _default(path: str) -> str:
    """``path`` in this checkout, else in the main checkout next to it (worktrees hold no DVC outputs)."""
    here = ROOT / path
    return str(here if here.exists() else ROOT.parent / "main" / path)


def worker(args) -> dict:
    """Train ``warmup + steps`` steps in this process (a rank when under torchrun); timings and peak RSS."""
    import pandas as pd
    import torch

    from pipeline import distributed
    from pipeline.params import load_params
    from pipeline.dual_encoder import TextBatch, text_batches
    from pipeline.training import _prepare, optimisation_step

    params = load_params()
    update = {"threads": args.threads}
    if args.cached:
        update["mini_batch_size"] = 8
    p = params.train.model_copy(update=update)
    d, device = distributed.setup(p.device)
    torch.set_num_threads(p.threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    assembled = text_batches(pd.read_parquet(Path(args.batches) / "train.parquet"), p.hard_negatives)
    k = args.batch // len(assembled[0])
    batches = []
    for i in range(args.warmup + args.steps):
        parts = [assembled[(i * k + j) % len(assembled)] for j in range(k)]
        batches.append(TextBatch(sum((b.queries for b in parts), []), sum((b.passages for b in parts), [])))
    torch.manual_seed(params.seed)
    enc, optimizer, schedule, _ = _prepare(args.base, p, params.encoder, device)
    if d.enabled:
        distributed.broadcast_parameters(enc.model, d)
        torch.manual_seed(params.seed + d.rank)
    trainable = [t for t in enc.model.parameters() if t.requires_grad]
    enc.model.train()
    times, losses, timed = [], [], args.steps
    for i, batch in enumerate(batches):
        if i >= args.warmup + timed:
            break
        distributed.barrier(d)
        t = time.perf_counter()
        loss, _, _ = optimisation_step(enc, batch, optimizer, schedule, trainable, p, d)
        elapsed = time.perf_counter() - t
        if i < args.warmup:
            if elapsed > 20:
                timed = 1
            if elapsed > args.max_step_s:  # no point timing more: over the limit already
                times.append(elapsed)
                losses.append(loss)
                break
        else:
            times.append(elapsed)
            losses.append(loss)
    distributed.teardown(d)
    return {
        "rank": d.rank,
        "processes": d.world_size,
        "threads_per_process": p.threads,
        "batch": args.batch,
        "cached": bool(args.cached),
        "timed_steps": len(times),
        "s_per_step": round(sum(times) / len(times), 3),
        "pairs_per_s": round(args.batch * len(times) / sum(times), 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),  # KiB on Linux
        "mean_loss": round(sum(losses) / len(losses), 4),
    }


def launch(args, batch: int, cached: bool, processes: int, threads: int) -> dict:
    """Run one configuration in fresh processes; rank 0's result, with every rank's peak RSS."""
    flags = ["--worker", "--batch", str(batch), "--threads", str(threads), "--base", args.base, "--batches",
             args.batches, "--steps", str(args.steps), "--warmup", str(args.warmup), "--max-step-s",
             str(args.max_step_s)] + (["--cached"] if cached else [])
    if processes == 1:
        cmd = [sys.executable, "-m", "benchmarks.distributed_training", *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "benchmarks.distributed_training", *flags]
    t, load = time.perf_counter(), os.getloadavg()[0]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    lines = [json.loads(x.split("RESULT ", 1)[1]) for x in run.stdout.splitlines() if "RESULT " in x]
    if run.returncode or len(lines) != processes:
        return {"batch": batch, "cached": cached, "failed": f"exit {run.returncode}: {run.stderr[-600:]}"}
    out = next(r for r in lines if r["rank"] == 0)
    out["peak_rss_gb_per_process"] = max(r["peak_rss_gb"] for r in lines)
    out["peak_rss_gb_total"] = round(sum(r["peak_rss_gb"] for r in lines), 3)
    del out["peak_rss_gb"], out["rank"]
    out["wall_s"] = round(time.perf_counter() - t, 1)
    out["load_avg_1min_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]  # the machine is shared
    return out


def grow(args, cached: bool, deadline: float) -> dict:
    """Batch sizes up the ladder until a limit; the points and the largest batch under the RSS budget."""
    points, fits, reason = [], None, "ladder end (not limited)"
    last_wall = 0.0
    for batch in LADDER:
        if batch > args.max_batch:
            break
        if time.monotonic() + 2.2 * last_wall > deadline:  # the next point takes about twice the last
            reason = f"benchmark time budget ({args.budget_s} s): batch {batch} not run"
            break
        r = launch(args, batch, cached, 1, args.growth_threads)
        points.append(r)
        print(json.dumps(r), flush=True)
        if "failed" in r:
            reason = f"batch {batch} failed (out of memory?)"
            break
        last_wall = r["wall_s"]
        if r["peak_rss_gb_total"] > args.budget_gb:
            reason = f"peak RSS over {args.budget_gb} GB at batch {batch}"
            break
        fits = batch
        if r["s_per_step"] > args.max_step_s:
            reason = f"step over {args.max_step_s} s at batch {batch}"
            break
    return {"points": points, "largest_batch_under_budget": fits, "stopped_because": reason}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=_default("models/base"))
    ap.add_argument("--batches", default=_default("data/batches"))
    ap.add_argument("--steps", type=int, default=1, help="timed steps per point of the batch growth")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--dist-steps", type=int, default=3, help="timed steps of the 1-vs-2-process comparison")
    ap.add_argument("--budget-gb", type=float, default=4.0, help="peak RSS budget of the batch growth")
    ap.add_argument("--max-step-s", type=float, default=60.0, help="stop growing past this step time")
    ap.add_argument("--max-batch", type=int, default=LADDER[-1])
    ap.add_argument("--growth-threads", type=int, default=1, help="threads of the batch-growth process")
    ap.add_argument("--budget-s", type=float, default=540.0, help="time budget of the whole benchmark")
    ap.add_argument("--out", default=str(ROOT / "metrics" / "distributed_training.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    if not Path(args.base, "config.json").exists():
        sys.exit(f"no encoder at {args.base} (models/base, the offline multilingual-e5-small): nothing to measure")
    deadline = time.monotonic() + args.budget_s
    t0 = time.perf_counter()

    steps = args.steps
    args.steps = args.dist_steps
    processes = {"1 process x 2 threads": launch(args, 32, False, 1, 2),
                 "1 process x 1 thread": launch(args, 32, False, 1, 1),
                 "2 processes x 1 thread": launch(args, 32, False, 2, 1)}
    args.steps = steps
    for r in processes.values():
        print(json.dumps(r), flush=True)
    two = processes["2 processes x 1 thread"]
    for name in ("1 process x 2 threads", "1 process x 1 thread"):
        one = processes[name]
        if "failed" not in one and "failed" not in two:
            processes[f"ratios_2_processes_vs_{name.replace(' ', '_')}"] = {
                "throughput": round(two["pairs_per_s"] / one["pairs_per_s"], 2),
                "s_per_step": round(two["s_per_step"] / one["s_per_step"], 2),
                "peak_rss_total": round(two["peak_rss_gb_total"] / one["peak_rss_gb_total"], 2),
            }

    remaining = deadline - time.monotonic()
    uncached = grow(args, False, time.monotonic() + 0.35 * remaining)
    cached = grow(args, True, deadline)
    base = next((p for p in uncached["points"] if p["batch"] == 32 and "failed" not in p), None)
    for p in uncached["points"] + cached["points"]:
        if base and "failed" not in p:
            p["pairs_per_s_vs_uncached_32"] = round(p["pairs_per_s"] / base["pairs_per_s"], 2)
            p["peak_rss_vs_uncached_32"] = round(p["peak_rss_gb_total"] / base["peak_rss_gb_total"], 2)
    same = {p["batch"]: p for p in uncached["points"] if "failed" not in p}
    for p in cached["points"]:
        if p["batch"] in same and "failed" not in p:
            p["s_per_step_vs_uncached_same_batch"] = round(p["s_per_step"] / same[p["batch"]]["s_per_step"], 2)
            p["peak_rss_vs_uncached_same_batch"] = round(p["peak_rss_gb_total"] / same[p["batch"]]["peak_rss_gb_total"],
                                                         2)

    from pipeline.params import load_params

    params = load_params()
    out = {
        "what": "training optimisation steps (loss, backward, gradient all-reduce, clip, AdamW) on assembled "
                "batches; global batch 32k = k consecutive assembled batches; each configuration in its own "
                "process(es); peak RSS from ru_maxrss (total = sum over processes)",
        "model": f"{params.models.encoder} ({args.base}), word embeddings "
                 f"{'frozen' if params.train.freeze_embeddings else 'trained'}",
        "train_settings": {k: getattr(params.train, k) for k in ("precision", "micro_batch", "max_length",
                                                                   "attention_dropout", "gradient_checkpointing")},
        "cached_chunk": 8,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch {__import__('torch').__version__}",
        "timed_steps": {"processes": args.dist_steps, "batch_growth": args.steps},
        "batch_growth_threads": args.growth_threads,
        "warmup_steps": args.warmup,
        "rss_budget_gb": args.budget_gb,
        "max_step_s": args.max_step_s,
        "processes": processes,
        "batch_growth": {"uncached": uncached, "cached": cached},
        "benchmark_wall_s": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'configuration':28s} {'batch':>6s} {'s/step':>8s} {'pairs/s':>8s} {'peak RSS':>9s}")
    rows = [(k, v) for k, v in processes.items() if not k.startswith("ratios")]
    rows += [(f"{name} b{p['batch']}", p) for name, g in (("uncached", uncached), ("cached", cached))
             for p in g["points"]]
    for name, r in rows:
        if "failed" in r:
            print(f"{name:28s} failed")
            continue
        print(f"{name:28s} {r['batch']:6d} {r['s_per_step']:8.2f} {r['pairs_per_s']:8.1f} "
              f"{r['peak_rss_gb_total']:7.2f}GB")
    for name, g in (("uncached", uncached), ("cached", cached)):
        print(f"{name}: largest batch under {args.budget_gb} GB: {g['largest_batch_under_budget']} "
              f"({g['stopped_because']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
