"""The training loop: fine-tune a Hugging Face encoder as a dual encoder (one set of weights for queries
and passages). Its parts live beside it: :mod:`pipeline.device` (where it runs), :mod:`pipeline.model_io`
(model folders in and out), :mod:`pipeline.dual_encoder` (batches and the forward pass),
:mod:`pipeline.gradcache` (cached InfoNCE) and :mod:`pipeline.selection` (dev scores, the kept checkpoint).

Recipe (the paper's, at CPU scale): ``query: `` / ``passage: `` prefixes, mean (or first-token)
pooling, L2 normalisation, InfoNCE over the in-batch negatives (:func:`pipeline.loss.info_nce`);
AdamW without weight decay on biases and LayerNorm weights, linear warm-up then linear decay,
gradient-norm clipping. The batches come ready-made from :mod:`pipeline.batching` and are taken in
order, cycling when ``steps`` exceeds their number.

Checkpoints are chosen by ``train.select_by`` (:class:`Selector`): by default the dev-set retrieval
score (:mod:`pipeline.devset`: the same held-out questions for every strategy), measured before the
first step and every ``eval_every`` steps; after ``patience`` evaluations without improvement training
stops and the best evaluation's weights are kept (the untouched encoder if training never beat it).
``last`` keeps the final weights of a fixed step budget; ``val_loss`` is the old rule (the loss on
validation batches built in the run's own mode), kept for comparison.

Runs on CUDA when present and on CPU otherwise, through the same code. ``train.precision: bf16``
autocasts the training forward pass to bfloat16 on either (float32 weights, pooling and loss; fast on
CPUs with AVX512-BF16 or AMX); ``train.micro_batch`` encodes each side of a batch in length-sorted
passes of that many texts, so that short texts are not padded to the batch's longest (the loss is
still over the whole batch); ``train.gradient_checkpointing`` trades step time for activation memory.
On CPU, ``torch.manual_seed(seed)`` and deterministic algorithms make equal inputs give bit-identical
weights in either precision (dropout is on while training, as the model's config sets it).
``freeze_embeddings`` freezes the word-embedding table (96M of multilingual-e5-small's 118M
parameters), which keeps AdamW's state small and its update cheap on CPU.
"""

from __future__ import annotations
import contextlib
import logging
import math
import time
from pathlib import Path
import torch
from torch import nn
from . import console
from .distributed import SINGLE, Dist, all_sum, bounds, broadcast_flag, broadcast_parameters, gather_rows, \
    reduce_gradients, shard
from .loss import info_nce, info_nce_share
from .device import pick_device, release_memory
from .dual_encoder import DualEncoder, TextBatch, forward_embed
from .gradcache import cached_backward
from .model_io import load_encoder
from .selection import DevSet, Selector, _restore, evaluate_dev

logger = logging.getLogger(__name__)


def freeze_word_embeddings(model: nn.Module) -> int:
    """Stop gradients to the word-embedding table; returns the number of parameters frozen."""
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


def set_attention_dropout(model: nn.Module, p: float) -> int:
    """Set the attention-probability dropout of every self-attention module to ``p`` for training (the
    config, and so the saved folder, keep the model's own value; hidden dropout is unchanged). With
    ``p = 0`` PyTorch's fused SDPA kernel (flash attention on CPU) can run while training, which keeps
    no float32 attention-probability matrices for the backward pass. Returns the modules changed."""
    n = 0
    for m in model.modules():
        if type(m).__name__.endswith("SelfAttention") and isinstance(getattr(m, "dropout", None), nn.Dropout):
            m.dropout.p = float(p)
            n += 1
    if not n:
        raise ValueError(f"train.attention_dropout: no self-attention dropout found in {type(model).__name__}")
    return n


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


def contrastive_backward(enc: DualEncoder, batch: TextBatch, params, d: Dist = SINGLE) -> float:
    """Loss of the global ``batch`` and its gradients in the weights' ``.grad`` (summed over the
    processes, or averaged with ``cross_device_negatives: false``); the path of gradient caching
    (``params.mini_batch_size``) and of several processes.

    This process embeds its slice (:func:`pipeline.distributed.shard`); with ``cross_device_negatives``
    the passages and hard negatives of every slice are all-gathered (gradients flow back to their
    owners) and this slice's queries are scored against all of them, its share of the batch-mean
    InfoNCE being the sum of its rows' losses over the global batch size: the shares add up to the
    one-process loss, and the summed gradients to its gradients. Without it each process's loss is
    InfoNCE over its slice alone and the result is the mean over the processes (as DDP would do).
    Forward passes: chunks of ``mini_batch_size`` when caching (``micro_batch`` is then not used),
    else ``micro_batch`` as in :func:`forward_embed`.
    """
    local = shard(batch, d)
    n_total, m_total = len(batch), len(batch.hard_negatives or [])
    cross = d.enabled and getattr(params, "cross_device_negatives", True)

    def loss_fn(q, p, hn):
        if not cross:
            return info_nce(q, p, params.scale, hn if m_total else None)
        candidates = gather_rows(p, n_total, d)
        if m_total:
            candidates = torch.cat([candidates, gather_rows(hn, m_total, d)])
        return info_nce_share(q, candidates, bounds(n_total, d.world_size, d.rank)[0], n_total, params.scale)

    mini = getattr(params, "mini_batch_size", None)
    if mini:
        loss = cached_backward(enc, local, params.precision, mini, loss_fn)
    else:
        q = forward_embed(enc, local.queries, enc.query_prefix, params.precision, params.micro_batch)
        p = forward_embed(enc, local.passages, enc.passage_prefix, params.precision, params.micro_batch)
        hn = (forward_embed(enc, local.hard_negatives, enc.passage_prefix, params.precision, params.micro_batch)
              if local.hard_negatives else q.new_zeros(0, q.shape[1]))
        loss = loss_fn(q, p, hn)
        loss.backward()
    total = all_sum(loss.item(), d)
    return total if cross else total / d.world_size


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


def _prepare(model_dir, params, encoding, device):
    """Step 1 of a run: the encoder (embeddings frozen if asked), AdamW and its learning-rate schedule."""
    model, tokenizer = load_encoder(model_dir, device)
    frozen = freeze_word_embeddings(model) if params.freeze_embeddings else 0
    if getattr(params, "attention_dropout", None) is not None:
        set_attention_dropout(model, params.attention_dropout)
    if params.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    enc = DualEncoder(model, tokenizer, encoding.query_prefix, encoding.passage_prefix, encoding.pooling,
                      params.max_length)
    optimizer = torch.optim.AdamW(parameter_groups(model, params.weight_decay), lr=params.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(params.steps, params.warmup_ratio))
    return enc, optimizer, schedule, frozen


class _Evaluations:
    """Step 2 of a run: score the encoder at a step (dev set; validation loss under ``select_by:
    val_loss``), log it, and let the :class:`Selector` keep the weights or call a stop.

    With several processes only rank 0 evaluates (the weights are equal on every rank) and its
    decision to stop is broadcast, so all ranks stop at the same step."""

    def __init__(self, enc: DualEncoder, dev: DevSet | None, val_batches: list[TextBatch], params, log: _Log,
                 progress: bool, d: Dist = SINGLE, bar=None):
        self.enc, self.dev, self.val_batches, self.params, self.log, self.progress, self.d = \
            enc, dev, val_batches, params, log, progress, d
        self.bar = bar  # console.progress over the evaluations due (a line per quarter on stdout)
        self.selector = Selector(params.select_by, params.patience)
        self.history: list[dict] = []
        self.seconds = 0.0

    def __call__(self, step: int) -> bool:
        """Evaluate at ``step``; True when training should stop (on every rank)."""
        if not self.d.is_main:
            return broadcast_flag(False, self.d)  # waits for rank 0's evaluation and decision
        t = time.perf_counter()
        record = {"step": step}
        if self.dev is not None:
            record.update(evaluate_dev(self.enc, self.dev))
        if self.params.select_by == "val_loss":
            record["val_loss"] = self.enc.mean_loss(self.val_batches, self.params.scale)
        release_memory()
        self.seconds += time.perf_counter() - t
        self.history.append(record)
        self.log.log(**{k.replace("dev_", "dev/").replace("val_loss", "val/loss"): v for k, v in record.items()
                        if k != "step"})
        stop = self.selector.update(step, record, self.enc.model)
        if self.progress:
            shown = {k: round(v, 4) for k, v in record.items() if k != "step"}
            logger.info("step %d: %s (kept so far: step %s)", step, shown, self.selector.best_step)
        if self.bar is not None:
            scores = ", ".join(f"{k} {record[k]:.4f}" for k in ("dev_score", "val_loss") if k in record)
            self.bar.set_postfix_str(f"step {step}{', ' + scores if scores else ''}, "
                                     f"kept: step {self.selector.best_step}")
            self.bar.update(1)
        return broadcast_flag(stop, self.d)


def optimisation_step(enc: DualEncoder, batch: TextBatch, optimizer, schedule, trainable: list[torch.Tensor],
                      params, d: Dist = SINGLE) -> tuple[float, float, float]:
    """Step 3, once per batch: loss (``params.precision``, ``params.micro_batch``), backward, clip, AdamW,
    schedule. Returns ``(loss, learning rate used, gradient norm before clipping)``.

    With gradient caching (``params.mini_batch_size``) or several processes (``d``) the loss and
    backward are :func:`contrastive_backward`'s, then the gradients are reduced over the processes, so
    every process clips and steps the same gradients and the weights stay equal."""
    lr = optimizer.param_groups[0]["lr"]
    if d.enabled or getattr(params, "mini_batch_size", None):
        optimizer.zero_grad(set_to_none=True)
        loss = contrastive_backward(enc, batch, params, d)
        reduce_gradients(trainable, d, average=not getattr(params, "cross_device_negatives", True))
    else:  # one process, no caching: the original path, unchanged
        loss = enc.loss(batch, params.scale, params.precision, params.micro_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm).item()
    optimizer.step()
    schedule.step()
    return loss, lr, grad_norm


def _check_inputs(train_batches, val_batches, params, dev, dist: Dist = SINGLE) -> None:
    if params.steps < 1:
        raise ValueError("train() needs steps >= 1; steps 0 keeps the base model (see copy_model)")
    if not train_batches:
        raise ValueError("no training batches")
    if params.select_by == "dev" and dev is None:
        raise ValueError("train.select_by: dev needs the dev set (data/split/dev)")
    if params.select_by == "val_loss" and not val_batches:
        raise ValueError("train.select_by: val_loss needs validation batches")
    if train_batches and min(len(b) for b in train_batches) < dist.world_size:
        raise ValueError(f"{dist.world_size} processes need batches of at least {dist.world_size} pairs")


def _finish(model: nn.Module, evals: _Evaluations, step: int, stopped_early: bool, recent: list[float],
            timings: dict, frozen: int, device: torch.device) -> dict:
    """Step 4: load the kept weights into ``model`` (eval mode) and gather the run's metrics."""
    selector, history = evals.selector, evals.history
    if selector.best_weights is not None:
        _restore(model, selector.best_weights)
    else:  # select_by: last
        selector.best_step = step
    if evals.params.gradient_checkpointing:
        model.activation_checkpointing_disable()
    model.eval()
    kept = next(r for r in history if r["step"] == selector.best_step)
    return {
        "select_by": evals.params.select_by,
        "steps_run": step,
        "best_step": selector.best_step,
        "stopped_early": stopped_early,
        **{k: _round(v) for k, v in kept.items() if k != "step"},
        "initial_dev_score": _round(history[0].get("dev_score")),
        "final_dev_score": _round(history[-1].get("dev_score")),
        "initial_val_loss": _round(history[0].get("val_loss")),
        "final_val_loss": _round(history[-1].get("val_loss")),
        "final_train_loss": _round(sum(recent) / len(recent)) if recent else None,
        **timings,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_params": frozen,
        "total_params": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "evaluations": [{k: _round(v) if k != "step" else v for k, v in r.items()} for r in history],
    }


def train(model_dir: str | Path, train_batches: list[TextBatch], val_batches: list[TextBatch], params, encoding,
          seed: int, live_dir: str | Path | None = None, device: torch.device | None = None, progress: bool = True,
          dev: DevSet | None = None, dist: Dist = SINGLE):
    """Train the encoder in ``model_dir``; returns ``(model, tokenizer, metrics)`` with the kept weights loaded.

    ``params`` is a :class:`~pipeline.params.TrainParams`, ``encoding`` an :class:`~pipeline.params.EncoderParams`
    (prefixes and pooling; the texts are cut at ``params.max_length``).
    The dev set (when given) is scored before the first step and every ``eval_every`` steps, whatever
    the rule, so every run logs the same curve; the validation loss only under ``select_by: val_loss``.
    ``params.select_by`` picks the kept weights (:class:`Selector`); the untouched encoder (step 0)
    is a candidate too. ``metrics``: select_by, steps_run, best_step (the step kept), stopped_early, the
    dev metrics of the kept weights and of step 0 (``initial_dev_score``) and the last evaluation
    (``final_dev_score``), validation losses where measured, final train loss (mean of the last
    ``eval_every`` steps), wall_s, s_per_step (training steps only), eval_s, parameter counts, device.
    The steps: :func:`_prepare`, :class:`_Evaluations`, :func:`optimisation_step`, :func:`_finish`.

    ``dist`` (:mod:`pipeline.distributed`): this process's rank when several train together, each on
    its slice of every batch. Every rank loads the same weights under ``seed`` (rank 0's are then
    broadcast, as a guard) and reseeds with ``seed + rank`` for its dropout draws; only rank 0
    evaluates, logs and keeps checkpoints; the other ranks return ``metrics`` None and their final,
    not the kept, weights.
    """
    _check_inputs(train_batches, val_batches, params, dev, dist)
    device = device or pick_device()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(params.threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    progress = progress and dist.is_main
    log = _Log(live_dir if dist.is_main else None)
    try:
        torch.manual_seed(seed)
        enc, optimizer, schedule, frozen = _prepare(model_dir, params, encoding, device)
        if dist.enabled:
            broadcast_parameters(enc.model, dist)
            torch.manual_seed(seed + dist.rank)  # dropout draws differ per rank
        with contextlib.ExitStack() as stack:  # the progress lines end before the run's summary
            # stdout, a line per quarter (console.progress): the evaluations due and the steps
            evals_due = 1 + math.ceil(params.steps / params.eval_every)
            eval_bar = stack.enter_context(console.progress(evals_due, "train", "evaluations", enabled=progress))
            evals = _Evaluations(enc, dev, val_batches, params, log, progress, dist, eval_bar)
            trainable = [p for p in enc.model.parameters() if p.requires_grad]
            evals(0)
            log.next_step()
            recent: list[float] = []
            stopped_early, step = False, 0
            t_train = time.perf_counter()  # evaluations included; their seconds are taken off below
            eval_before = evals.seconds
            bar = stack.enter_context(console.progress(params.steps, "train", "steps", enabled=progress))
            enc.model.train()
            for step in range(1, params.steps + 1):
                batch = train_batches[(step - 1) % len(train_batches)]
                loss, lr, grad_norm = optimisation_step(enc, batch, optimizer, schedule, trainable, params, dist)
                recent = (recent + [loss])[-params.eval_every:]
                log.log(**{"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm})
                if progress:
                    per_step = (time.perf_counter() - t_train - (evals.seconds - eval_before)) / step
                    left = eta(params.steps - step, per_step, params.eval_every, evals)
                    if step == 1 or step % 10 == 0:
                        logger.info("step %d/%d loss %.4f lr %.2e %.2f s/step, ETA %s", step, params.steps, loss, lr,
                                    per_step, left)
                    bar.set_postfix_str(f"loss {loss:.4f}, {per_step:.2f} s/step, ETA {left}")
                    bar.update(1)
                if step % params.eval_every == 0 or step == params.steps:
                    if evals(step) and step < params.steps:
                        stopped_early = True
                        log.next_step()
                        break
                log.next_step()
        train_s = time.perf_counter() - t_train - (evals.seconds - eval_before)
        timings = {"wall_s": None, "s_per_step": round(train_s / max(step, 1), 3), "eval_s": round(evals.seconds, 1)}
        if not dist.is_main:
            return enc.model, enc.tokenizer, None
        metrics = _finish(enc.model, evals, step, stopped_early, recent, timings, frozen, device)
        if dist.enabled:
            metrics["processes"] = dist.world_size
    finally:
        log.end()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    return enc.model, enc.tokenizer, metrics


def eta(steps_left: int, s_per_step: float, eval_every: int, evals: _Evaluations) -> str:
    """Time left as ``M:SS`` (or ``H:MM:SS``): the steps left at the mean step time so far, plus the
    evaluations still due at the mean evaluation time so far (an early stop makes it shorter)."""
    per_eval = evals.seconds / max(len(evals.history), 1)
    seconds = round(steps_left * s_per_step + math.ceil(steps_left / eval_every) * per_eval)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)

