"""Gradient caching (cached InfoNCE): the loss of a whole batch with the autograd graph of one chunk alive
at a time (``train.mini_batch_size``)."""
from __future__ import annotations

import torch
from torch import nn
from .embedding import tokenize
from .dual_encoder import DualEncoder, TextBatch, _encode_pass



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

