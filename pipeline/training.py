"""Fine-tune a Hugging Face encoder as a dual encoder (one set of weights for queries and passages).

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
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import console
from .distributed import SINGLE, Dist, all_sum, bounds, broadcast_flag, broadcast_parameters, gather_rows, \
    reduce_gradients, shard
from .embedding import encode_ids, forward_pooled, pad, pool, tokenize
from .loss import info_nce, info_nce_share
from .st_format import write_st_folder

logger = logging.getLogger(__name__)

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
    """Batches of a batch table (see :data:`pipeline.batching.BATCH_COLUMNS`) in ``batch_id`` order.
    With ``hard_negatives`` each batch's ``hard_negatives`` is the flat list of its rows' hard negatives
    (column ``hard_negatives``, a list per row; any number per row, none included)."""
    if hard_negatives and "hard_negatives" not in df.columns:
        raise ValueError("train.hard_negatives is set but the batches have no 'hard_negatives' column "
                         "(rerun mine and assemble)")
    out = []
    for _, g in df.sort_values(["batch_id", "position"], kind="stable").groupby("batch_id", sort=True):
        negs = [str(t) for row in g["hard_negatives"] for t in row] if hard_negatives else None
        out.append(TextBatch(g["query"].tolist(), g["passage"].tolist(), negs))
    return out


def pick_device(setting: str = "auto") -> torch.device:
    """The device of ``train.device``: ``auto`` takes CUDA when torch sees it; ``cuda`` without one is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda, but torch sees no CUDA device")
    return torch.device("cuda" if setting != "cpu" and torch.cuda.is_available() else "cpu")


def load_encoder(model_dir: str | Path, device: torch.device | None = None):
    """``(model, tokenizer)`` of a Hugging Face folder; float32 weights, without a pooler head. Only
    safetensors weights are loaded, and the tokenizer must fit the model
    (:func:`pipeline.assets.load_checked_tokenizer`)."""
    from transformers import AutoModel

    from .assets import load_checked_tokenizer

    tokenizer, _ = load_checked_tokenizer(model_dir)
    try:
        model = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False, dtype=torch.float32,
                                          use_safetensors=True)
    except TypeError:  # architectures without a pooler argument
        model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True)
    return model.to(device or pick_device()), tokenizer


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
        """Normalised vectors of one batch (differentiable; bf16 autocast on CUDA)."""
        return nn.functional.normalize(self.pooled(tokenize(self.tokenizer, texts, prefix, self.max_length)), dim=-1)

    def pooled(self, ids: list[list[int]]) -> torch.Tensor:
        """Pooled, not normalised, vectors of one batch of token ids (:mod:`pipeline.embedding`)."""
        return forward_pooled(self.model, *pad(ids, self.tokenizer.pad_token_id), self.pooling, bf16=True)

    def loss(self, batch: TextBatch, scale: float, precision: str = "fp32",
             micro_batch: int | None = None) -> torch.Tensor:
        """InfoNCE of ``batch``; each side encoded by :func:`forward_embed` (``precision``, ``micro_batch``)."""
        def side(texts: list[str], prefix: str) -> torch.Tensor:
            return forward_embed(self, texts, prefix, precision, micro_batch)

        q = side(batch.queries, self.query_prefix)
        p = side(batch.passages, self.passage_prefix)
        hn = side(batch.hard_negatives, self.passage_prefix) if batch.hard_negatives else None
        return info_nce(q, p, scale, hn)

    @torch.no_grad()
    def mean_loss(self, batches: list[TextBatch], scale: float) -> float:
        """Mean loss over ``batches`` with dropout off (weighted by batch size)."""
        was_training = self.model.training
        self.model.eval()
        total = sum(self.loss(b, scale).item() * len(b) for b in batches)
        self.model.train(was_training)
        return total / sum(len(b) for b in batches)


def forward_embed(enc: DualEncoder, texts: list[str], prefix: str, precision: str = "fp32",
                  micro_batch: int | None = None) -> torch.Tensor:
    """L2-normalised float32 vectors of ``texts`` in input order, through the autograd graph (the training pass).

    ``precision: bf16`` runs the encoder under bf16 autocast (on CPU and CUDA alike; the weights stay
    float32, pooling and normalisation are float32); ``fp32`` runs it without autocast.
    ``micro_batch``: texts per forward pass, taken in order of token length (stable), so that a short
    text is padded to its neighbours' length, not the batch's longest; ``None`` encodes all at once.
    The vectors are the same either way up to rounding (padding is masked); dropout draws differ.
    """
    ids = tokenize(enc.tokenizer, texts, prefix, enc.max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if micro_batch else list(range(len(ids)))
    size = micro_batch or max(len(ids), 1)
    parts = [_encode_pass(enc, [ids[i] for i in order[s : s + size]], precision) for s in range(0, len(order), size)]
    vecs = torch.cat(parts)
    if micro_batch:
        vecs = vecs[torch.tensor(order, device=vecs.device).argsort()]
    return nn.functional.normalize(vecs, dim=-1)


def _encode_pass(enc: DualEncoder, ids: list[list[int]], precision: str) -> torch.Tensor:
    """Pooled, not normalised, float32 vectors of one forward pass (bf16 autocast with ``precision: bf16``)."""
    input_ids, mask = (t.to(enc.device) for t in pad(ids, enc.tokenizer.pad_token_id))
    with torch.autocast(enc.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        hidden = enc.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return pool(hidden.float(), mask, enc.pooling)


class RandContext:
    """The random-number state at creation (CPU, and the CUDA device's when on one); ``with ctx:`` replays
    it and restores the outer state afterwards, so a forward pass re-run inside draws the same dropout
    masks as the first time (sentence-transformers' ``RandContext``, via ``torch.random.fork_rng``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self._fork = None

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[self.device] if self.cuda_state is not None else [])
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        return self

    def __exit__(self, *exc):
        fork, self._fork = self._fork, None
        return fork.__exit__(*exc)


def _sides(enc: DualEncoder, batch: TextBatch) -> list[list[list[int]]]:
    """Token ids of a batch's three sides: queries, passages, hard negatives (possibly none)."""
    sides = [(batch.queries, enc.query_prefix), (batch.passages, enc.passage_prefix),
             (batch.hard_negatives or [], enc.passage_prefix)]
    return [tokenize(enc.tokenizer, texts, prefix, enc.max_length) if texts else [] for texts, prefix in sides]


def _length_chunks(ids: list[list[int]], size: int) -> list[list[int]]:
    """Indices of ``ids`` in chunks of ``size``, shortest texts first (stable): :func:`forward_embed`'s passes."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[s : s + size] for s in range(0, len(order), size)]


def cached_backward(enc: DualEncoder, batch: TextBatch, precision: str, mini_batch_size: int, loss_fn):
    """Gradient caching (Gao et al. 2021, "Scaling deep contrastive learning batch size under memory
    limited setup"; Tevatron's grad_cache, sentence-transformers' ``CachedMultipleNegativesRankingLoss``).

    1. Embed each side of ``batch`` in length-sorted chunks of ``mini_batch_size`` texts without the
       autograd graph, recording the random-number state before each chunk (:class:`RandContext`).
    2. ``loss_fn(q, p, hard_negatives)`` on the whole batch's (detached) vectors; backward gives the
       gradient of the loss with respect to every vector.
    3. Re-embed each chunk with the graph under its recorded random state (the same dropout masks)
       and backpropagate its slice of that gradient into the weights.

    Peak activation memory is that of one chunk, whatever the batch size; the cost is a second forward
    pass. The loss and the gradients equal those of :func:`forward_embed` with ``micro_batch =
    mini_batch_size`` from the same random state (same passes, same dropout), up to float rounding.
    An empty side (no hard negatives) gives ``(0, H)``. Returns the loss (detached).
    """
    sides = _sides(enc, batch)
    chunks = [_length_chunks(ids, mini_batch_size) for ids in sides]
    states: list[list[RandContext]] = []
    vectors: list[torch.Tensor | None] = []
    with torch.no_grad():
        for ids, parts in zip(sides, chunks, strict=True):
            states.append([])
            out = None
            for idx in parts:
                states[-1].append(RandContext(enc.device))
                v = nn.functional.normalize(_encode_pass(enc, [ids[i] for i in idx], precision), dim=-1)
                if out is None:
                    out = v.new_empty(len(ids), v.shape[1])
                out[torch.tensor(idx, device=v.device)] = v
            vectors.append(out)
    dim = vectors[0].shape[1]
    leaves = [(v if v is not None else torch.zeros(0, dim, device=enc.device)).requires_grad_() for v in vectors]
    loss = loss_fn(*leaves)
    loss.backward()
    for ids, parts, rngs, leaf in zip(sides, chunks, states, leaves, strict=True):
        if leaf.grad is None:
            continue
        for idx, rng in zip(parts, rngs, strict=True):
            with rng:
                v = nn.functional.normalize(_encode_pass(enc, [ids[i] for i in idx], precision), dim=-1)
            v.backward(leaf.grad[torch.tensor(idx, device=leaf.device)])
    return loss.detach()


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


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    A dev evaluation and a training step allocate tensors of different sizes; glibc keeps the freed
    chunks of one in its arenas where the other cannot always reuse them. Called after each dev
    evaluation: about 0.1 GB off the train stage's peak here, in milliseconds."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


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


@dataclass
class DevSet:
    """The dev retrieval set (:mod:`pipeline.devset`): ``queries`` (qid, id, lang, text, gold), ``pool``
    (cand_id, lang, text)."""

    queries: pd.DataFrame
    pool: pd.DataFrame


@torch.no_grad()
def embed_all(enc: DualEncoder, texts: list[str], prefix: str, batch_size: int = 64) -> torch.Tensor:
    """Vectors of ``texts`` in input order with dropout off: the index stage's recipe
    (:func:`pipeline.embedding.encode_ids`, batches sorted by token length), so on CPU they equal the
    torch engine's vectors of the same folder bit for bit."""
    was_training = enc.model.training
    enc.model.eval()
    try:
        ids = tokenize(enc.tokenizer, texts, prefix, enc.max_length)
        return torch.from_numpy(encode_ids(ids, lambda b: enc.pooled(b).cpu().numpy(), batch_size))
    finally:
        enc.model.train(was_training)


def evaluate_dev(enc: DualEncoder, dev: DevSet) -> dict[str, float]:
    """Dev-set retrieval metrics (``dev_mono_map``, ``dev_cross_map``, ``dev_multi_map``) and ``dev_score``."""
    from .devset import DEV_METRICS, dev_score
    from .metrics import score

    qv = embed_all(enc, dev.queries["text"].tolist(), enc.query_prefix).numpy()
    pv = embed_all(enc, dev.pool["text"].tolist(), enc.passage_prefix).numpy()
    summary = score(dev.queries, dev.pool, qv, pv)[0]
    out = {f"dev_{k}": summary[k] for k in DEV_METRICS if k in summary}
    out["dev_score"] = dev_score(summary)
    return out


class Selector:
    """Keeps the checkpoint that ``train.select_by`` prefers and says when to stop early.

    ``dev``: the highest dev score; ``val_loss``: the lowest validation loss of the run's own batch
    mode; ``last``: the final weights, never stopping early. Ties keep the earlier step.
    """

    def __init__(self, rule: str, patience: int):
        self.rule, self.patience = rule, patience
        self.best_value, self.best_step, self.best_weights, self.bad = None, 0, None, 0

    def criterion(self, record: dict) -> float | None:
        if self.rule == "dev":
            return record["dev_score"]
        if self.rule == "val_loss":
            return -record["val_loss"]
        return None

    def update(self, step: int, record: dict, model: nn.Module) -> bool:
        """Record an evaluation at ``step``; True when training should stop (patience used up)."""
        value = self.criterion(record)
        if value is None:
            return False
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_step, self.best_weights, self.bad = value, step, _snapshot(model), 0
            return False
        self.bad += 1
        return self.bad >= self.patience


def _prepare(model_dir, params, models, device):
    """Step 1 of a run: the encoder (embeddings frozen if asked), AdamW and its learning-rate schedule."""
    model, tokenizer = load_encoder(model_dir, device)
    frozen = freeze_word_embeddings(model) if params.freeze_embeddings else 0
    if getattr(params, "attention_dropout", None) is not None:
        set_attention_dropout(model, params.attention_dropout)
    if params.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    enc = DualEncoder(model, tokenizer, models.query_prefix, models.passage_prefix, models.pooling,
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


def train(model_dir: str | Path, train_batches: list[TextBatch], val_batches: list[TextBatch], params, models,
          seed: int, live_dir: str | Path | None = None, device: torch.device | None = None, progress: bool = True,
          dev: DevSet | None = None, dist: Dist = SINGLE):
    """Train the encoder in ``model_dir``; returns ``(model, tokenizer, metrics)`` with the kept weights loaded.

    ``params`` is a :class:`~pipeline.params.TrainParams`, ``models`` a :class:`~pipeline.params.ModelsParams`.
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
        enc, optimizer, schedule, frozen = _prepare(model_dir, params, models, device)
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


def save_encoder(model, base_dir: str | Path, out_dir: str | Path, info: dict | None = None,
                 max_seq_length: int | None = None) -> None:
    """Write ``model`` to ``out_dir`` as a HF folder (config + model.safetensors) with the base folder's
    tokenizer and other files copied byte for byte (re-saving a tokenizer through another class can
    lose its normaliser); weight files of the base are not copied. ``info`` goes to ``training.json``;
    with ``max_seq_length`` and ``info['params']`` the folder also gets the sentence-transformers files
    and a model card (:mod:`pipeline.st_format`)."""
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
        if max_seq_length and "params" in info:
            write_st_folder(out_dir, info, max_seq_length)


def copy_model(base_dir: str | Path, out_dir: str | Path, info: dict | None = None,
               max_seq_length: int | None = None) -> None:
    """Copy a model folder unchanged (``steps: 0``, the untrained baseline); ``info`` and
    ``max_seq_length`` as in :func:`save_encoder` (weights and tokenizer stay as they were)."""
    shutil.copytree(base_dir, out_dir, dirs_exist_ok=True)
    out_dir = Path(out_dir)
    if info is not None:
        (out_dir / "training.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if max_seq_length and "params" in info:
            write_st_folder(out_dir, info, max_seq_length)
