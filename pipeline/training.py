"""Fine-tune a Hugging Face encoder as a dual encoder (one set of weights for queries and passages).

Recipe (the paper's, at CPU scale): ``query: `` / ``passage: `` prefixes, mean (or first-token)
pooling, L2 normalisation, InfoNCE over the in-batch negatives (:func:`pipeline.loss.info_nce`);
AdamW without weight decay on biases and LayerNorm weights, linear warm-up then linear decay,
gradient-norm clipping. The batches come ready-made from :mod:`pipeline.batching` and are taken in
order, cycling when ``steps`` exceeds their number.

The validation loss (the fixed validation batches, dropout off) is measured before the first step
and every ``eval_every`` steps; after ``patience`` evaluations without improvement training stops,
and the weights of the best evaluation are kept (the untouched encoder if training never beat it).

Runs on CUDA when present (bf16 autocast, float32 weights) and on CPU otherwise, through the same
code. On CPU, ``torch.manual_seed(seed)`` and deterministic algorithms make equal inputs give
bit-identical weights (dropout is on while training, as the model's config sets it).
``freeze_embeddings`` freezes the word-embedding table (96M of multilingual-e5-small's 118M
parameters), which keeps AdamW's state small and its update cheap on CPU.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .encoder import pool
from .loss import info_nce

# files of a model folder that save_pretrained rewrites or that hold (stale) weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt")


@dataclass
class TextBatch:
    """The texts of one batch, prefix not yet added; ``hard_negatives`` is None when unused."""

    queries: list[str]
    passages: list[str]
    hard_negatives: list[str] | None = None

    def __len__(self) -> int:
        return len(self.queries)


def text_batches(df: pd.DataFrame, hard_negatives: bool = False) -> list[TextBatch]:
    """Batches of a batch table (see :data:`pipeline.batching.BATCH_COLUMNS`) in ``batch_id`` order."""
    if hard_negatives and "hard_negative" not in df.columns:
        raise ValueError("train.hard_negatives is set but the batches have no 'hard_negative' column")
    out = []
    for _, g in df.sort_values(["batch_id", "position"], kind="stable").groupby("batch_id", sort=True):
        out.append(TextBatch(g["query"].tolist(), g["passage"].tolist(),
                             g["hard_negative"].tolist() if hard_negatives else None))
    return out


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_encoder(model_dir: str | Path, device: torch.device | None = None):
    """``(model, tokenizer)`` of a Hugging Face folder; float32 weights, without a pooler head."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        model = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False, dtype=torch.float32)
    except TypeError:  # architectures without a pooler argument
        model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32)
    return model.to(device or pick_device()), tokenizer


def freeze_word_embeddings(model: nn.Module) -> int:
    """Stop gradients to the word-embedding table; returns the number of parameters frozen."""
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups over the trainable parameters: biases and LayerNorm weights get no weight decay."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if name.endswith("bias") or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def warmup_then_decay(steps: int, warmup_ratio: float):
    """LR multiplier of 0-based step ``s``: linear up to 1 over ``ceil(warmup_ratio * steps)`` steps,
    then linear down to ``1 / (steps - warmup)`` at the last step (no step runs at lr 0)."""
    warmup = math.ceil(warmup_ratio * steps)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        return (steps - s) / max(1, steps - warmup)

    return factor


class DualEncoder:
    """Embeds prefixed texts with a shared encoder: tokenise, encode, pool, L2-normalise."""

    def __init__(self, model, tokenizer, query_prefix: str = "query: ", passage_prefix: str = "passage: ",
                 pooling: str = "mean", max_length: int = 128):
        self.model, self.tokenizer = model, tokenizer
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.pooling, self.max_length = pooling, max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def embed(self, texts: list[str], prefix: str) -> torch.Tensor:
        enc = self.tokenizer([prefix + t for t in texts], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = self.model(**enc).last_hidden_state
        vec = pool(hidden.float(), enc["attention_mask"], self.pooling)
        return nn.functional.normalize(vec, dim=-1)

    def loss(self, batch: TextBatch, scale: float) -> torch.Tensor:
        q = self.embed(batch.queries, self.query_prefix)
        p = self.embed(batch.passages, self.passage_prefix)
        hn = self.embed(batch.hard_negatives, self.passage_prefix) if batch.hard_negatives else None
        return info_nce(q, p, scale, hn)

    @torch.no_grad()
    def mean_loss(self, batches: list[TextBatch], scale: float) -> float:
        """Mean loss over ``batches`` with dropout off (weighted by batch size)."""
        was_training = self.model.training
        self.model.eval()
        total = sum(self.loss(b, scale).item() * len(b) for b in batches)
        self.model.train(was_training)
        return total / sum(len(b) for b in batches)


class _Log:
    """dvclive when a folder is given (no git, no dvc.yaml, no DVC experiment needed), else nothing."""

    def __init__(self, live_dir):
        self.live = None
        if live_dir is not None:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(self, **values) -> None:
        if self.live:
            for name, v in values.items():
                self.live.log_metric(name, v)

    def next_step(self) -> None:
        if self.live:
            self.live.next_step()

    def end(self) -> None:
        if self.live:
            self.live.end()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def _restore(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    for n, p in model.named_parameters():
        if n in snap:
            p.copy_(snap[n])


def train(model_dir: str | Path, train_batches: list[TextBatch], val_batches: list[TextBatch], params, models,
          seed: int, live_dir: str | Path | None = None, device: torch.device | None = None, progress: bool = True):
    """Train the encoder in ``model_dir``; returns ``(model, tokenizer, metrics)`` with the best weights loaded.

    ``params`` is a :class:`~pipeline.params.TrainParams`, ``models`` a :class:`~pipeline.params.ModelsParams`.
    Without validation batches there is no early stopping and the last weights are kept.
    ``metrics``: steps_run, best_step, initial/best/final val loss, final train loss (mean of the last
    ``eval_every`` steps), stopped_early, wall_s, s_per_step (training steps only), eval_s (all
    validation passes), trainable/frozen/total parameters, device.
    """
    if params.steps < 1:
        raise ValueError("train() needs steps >= 1; steps 0 keeps the base model (see copy_model)")
    if not train_batches:
        raise ValueError("no training batches")
    device = device or pick_device()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(params.threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    log = _Log(live_dir)
    try:
        torch.manual_seed(seed)
        model, tokenizer = load_encoder(model_dir, device)
        frozen = freeze_word_embeddings(model) if params.freeze_embeddings else 0
        enc = DualEncoder(model, tokenizer, models.query_prefix, models.passage_prefix, models.pooling,
                          params.max_length)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameter_groups(model, params.weight_decay), lr=params.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(params.steps, params.warmup_ratio))

        best_val = initial_val = final_val = None
        best_step, best, bad, stopped_early, eval_s = 0, None, 0, False, 0.0
        t_train = time.perf_counter()  # evaluations included; eval_s is taken off below
        if val_batches:
            t_eval = time.perf_counter()
            initial_val = best_val = final_val = enc.mean_loss(val_batches, params.scale)
            eval_s += time.perf_counter() - t_eval
            best = _snapshot(model)
            log.log(**{"val/loss": initial_val})
        log.next_step()
        recent: list[float] = []
        model.train()
        step = 0
        for step in range(1, params.steps + 1):
            batch = train_batches[(step - 1) % len(train_batches)]
            lr = optimizer.param_groups[0]["lr"]
            loss = enc.loss(batch, params.scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm).item()
            optimizer.step()
            schedule.step()
            recent = (recent + [loss.item()])[-params.eval_every:]
            log.log(**{"train/loss": loss.item(), "train/lr": lr, "train/grad_norm": grad_norm})
            if progress and (step == 1 or step % 10 == 0):
                print(f"step {step}/{params.steps} loss {loss.item():.4f} lr {lr:.2e} "
                      f"{(time.perf_counter() - t_train - eval_s) / step:.2f} s/step", flush=True)
            if val_batches and (step % params.eval_every == 0 or step == params.steps):
                t_eval = time.perf_counter()
                final_val = enc.mean_loss(val_batches, params.scale)
                eval_s += time.perf_counter() - t_eval
                log.log(**{"val/loss": final_val})
                if progress:
                    print(f"step {step}: val loss {final_val:.4f} (best {best_val:.4f} at step {best_step})", flush=True)
                if final_val < best_val:
                    best_val, best_step, best, bad = final_val, step, _snapshot(model), 0
                else:
                    bad += 1
                    if bad >= params.patience and step < params.steps:
                        stopped_early = True
                        log.next_step()
                        break
            log.next_step()
        train_s = time.perf_counter() - t_train
        if best is not None:
            _restore(model, best)
        else:
            best_step = step
        model.eval()
    finally:
        log.end()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    total = sum(p.numel() for p in model.parameters())
    metrics = {
        "steps_run": step,
        "best_step": best_step,
        "initial_val_loss": _round(initial_val),
        "best_val_loss": _round(best_val),
        "final_val_loss": _round(final_val),
        "final_train_loss": _round(sum(recent) / len(recent)) if recent else None,
        "stopped_early": stopped_early,
        "wall_s": round(time.perf_counter() - t0, 1),
        "s_per_step": round((train_s - eval_s) / max(step, 1), 3),
        "eval_s": round(eval_s, 1),
        "trainable_params": sum(p.numel() for p in trainable),
        "frozen_params": frozen,
        "total_params": total,
        "device": device.type,
    }
    return model, tokenizer, metrics


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def save_encoder(model, base_dir: str | Path, out_dir: str | Path, info: dict | None = None) -> None:
    """Write ``model`` to ``out_dir`` as a HF folder (config + model.safetensors) with the base folder's
    tokenizer and other files copied byte for byte (re-saving a tokenizer through another class can
    lose its normaliser); weight files of the base are not copied. ``info`` goes to ``training.json``."""
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))  # transformers 5 always writes safetensors
    if not (out_dir / "model.safetensors").exists() and not list(out_dir.glob("model-*.safetensors")):
        raise RuntimeError(f"save_pretrained wrote no safetensors weights in {out_dir}")
    for f in sorted(Path(base_dir).iterdir()):
        if f.is_file() and not (out_dir / f.name).exists() and not f.name.endswith(WEIGHT_SUFFIXES) \
                and not f.name.endswith(".index.json"):
            shutil.copy2(f, out_dir / f.name)
    if info is not None:
        (out_dir / "training.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def copy_model(base_dir: str | Path, out_dir: str | Path) -> None:
    """Copy a model folder unchanged (``steps: 0``, the untrained baseline)."""
    shutil.copytree(base_dir, out_dir, dirs_exist_ok=True)
