"""The dual encoder being trained: batches of texts, one shared encoder for queries and passages, and the
training forward pass (bf16 autocast with ``precision: bf16``, length-sorted micro-batches)."""
from __future__ import annotations

from dataclasses import dataclass
import pandas as pd
import torch
from torch import nn
from .embedding import forward_pooled, pad, pool, tokenize
from .loss import info_nce



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

