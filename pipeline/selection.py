"""Which checkpoint is kept: dev-set retrieval scores and the rule of ``train.select_by``."""
from __future__ import annotations

from dataclasses import dataclass
import pandas as pd
import torch
from torch import nn
from .embedding import encode_ids, tokenize
from .dual_encoder import DualEncoder



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

