"""InfoNCE with in-batch negatives: the contrastive loss of the dual encoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, p: torch.Tensor, scale: float = 20.0,
             hard_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Mean InfoNCE loss of queries ``q`` ``(B, H)`` against passages ``p`` ``(B, H)``.

    Row ``i`` of ``q`` scores every passage by cosine similarity x ``scale``; the positive is
    ``p[i]``, the other rows' passages (and, if given, all of the batch's hard negatives
    ``hard_negatives`` ``(M, H)``, any number ``M``, appended as ``M`` extra columns) are its negatives. The loss is
    the cross-entropy of each row's scores against its own index. Vectors need not be normalised.
    Computed in float32 whatever the input dtype. This is sentence-transformers'
    ``MultipleNegativesRankingLoss`` (InfoNCE, NT-Xent) on pre-computed embeddings; a batch must hold
    no duplicate texts (:mod:`pipeline.batching`), or a true answer counts as a negative.
    """
    if q.shape != p.shape or q.dim() != 2:
        raise ValueError(f"q and p must both be (batch, dim), got {tuple(q.shape)} and {tuple(p.shape)}")
    candidates = p if hard_negatives is None else torch.cat([p, hard_negatives], dim=0)
    if candidates.shape[1] != q.shape[1]:
        raise ValueError(f"hard_negatives must be (n, {q.shape[1]}), got {tuple(hard_negatives.shape)}")
    q = F.normalize(q.float(), dim=-1)
    candidates = F.normalize(candidates.float(), dim=-1)
    scores = q @ candidates.T * scale
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(scores, labels)


def info_nce_share(q: torch.Tensor, candidates: torch.Tensor, first: int, total: int,
                   scale: float = 20.0) -> torch.Tensor:
    """One slice's share of :func:`info_nce` over a batch of ``total`` pairs split across processes.

    ``q`` ``(n, H)`` are the queries of rows ``first .. first + n - 1`` of the batch, ``candidates``
    ``(total + M, H)`` the whole batch's passages in row order followed by its ``M`` hard negatives
    (any ``M``, 0 included). Returns the sum of these rows' cross-entropies divided by ``total``, so
    the shares of all slices add up to the batch's mean loss. Float32 whatever the input dtype.
    """
    if q.dim() != 2 or candidates.dim() != 2 or candidates.shape[1] != q.shape[1] or candidates.shape[0] < total:
        raise ValueError(f"q (n, dim) and candidates (>= {total}, dim) expected, got {tuple(q.shape)} and "
                         f"{tuple(candidates.shape)}")
    q = F.normalize(q.float(), dim=-1)
    candidates = F.normalize(candidates.float(), dim=-1)
    scores = q @ candidates.T * scale
    labels = torch.arange(first, first + q.shape[0], device=q.device)
    return F.cross_entropy(scores, labels, reduction="sum") / total
