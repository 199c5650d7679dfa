"""The one embedding recipe, shared by training (:mod:`pipeline.training`) and the index stage
(:mod:`pipeline.encoder`): prefix (``query: `` / ``passage: ``), tokenise with the folder's tokenizer
(special tokens, truncated to ``max_length``), pad on the right, encode, pool (mean over real tokens,
or the first token), L2-normalise. Many texts go in batches sorted by token length (little padding),
of at most ``batch_size`` texts and, optionally, ``max_tokens`` padded tokens.

Only torch and numpy here (no CTranslate2), so the ``train`` stage does not depend on the code of the
faster inference engines.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import console


def tokenize(tokenizer, texts: list[str], prefix: str, max_length: int) -> list[list[int]]:
    """Token ids of ``prefix + text`` for each text, special tokens added, truncated to ``max_length``."""
    return tokenizer([prefix + t for t in texts], truncation=True, max_length=max_length,
                     add_special_tokens=True)["input_ids"]


def pad(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of shape ``(B, longest)``, padded on the right."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids, mask


def length_mask(lengths, width: int) -> torch.Tensor:
    """Attention mask ``(B, width)`` of right-padded sequences of the given lengths."""
    return (torch.arange(width)[None, :] < torch.as_tensor(lengths)[:, None]).long()


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Sentence vectors from token states ``(B, T, H)`` and attention mask ``(B, T)``; not normalised."""
    if mode == "cls":
        return hidden[:, 0]
    if mode != "mean":
        raise ValueError(f"pooling must be 'mean' or 'cls', got {mode!r}")
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def forward_pooled(model, input_ids: torch.Tensor, mask: torch.Tensor, pooling: str,
                   bf16: bool = False) -> torch.Tensor:
    """Pooled float32 vectors ``(B, H)`` of a Hugging Face encoder (bf16 autocast on CUDA when asked);
    gradients flow when the caller has them on."""
    device = next(model.parameters()).device
    input_ids, mask = input_ids.to(device), mask.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return pool(hidden.float(), mask, pooling)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (numpy)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def length_batches(lengths, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices in batches, longest texts first (ties in reverse input order).

    A batch holds at most ``batch_size`` texts and, when ``max_tokens`` is set, at most ``max_tokens``
    padded tokens (texts x its longest text; a single longer text still gets a batch of its own).
    """
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")[::-1]
    if not max_tokens:
        return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    out, start = [], 0
    while start < len(order):
        width = max(int(lengths[order[start]]), 1)  # the longest of the batch comes first
        n = max(1, min(batch_size, max_tokens // width))
        out.append(order[start : start + n])
        start += n
    return out


def encode_ids(ids: list[list[int]], embed_batch: Callable[[list[list[int]]], np.ndarray], batch_size: int,
               max_tokens: int | None = None, workers: int = 1, progress: bool = False,
               desc: str = "encode") -> np.ndarray:
    """L2-normalised float32 vectors ``(len(ids), dim)`` in input order.

    ``embed_batch`` maps the ids of one batch to pooled, not normalised, vectors. With ``workers`` > 1
    that many batches run at once on threads (for engines that release the GIL).
    """
    batches = length_batches([len(x) for x in ids], batch_size, max_tokens)
    out = None
    with console.progress(len(ids), desc, "texts", enabled=progress) as bar:
        def results():
            if workers <= 1:
                for idx in batches:
                    yield idx, embed_batch([ids[i] for i in idx])
                return
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as ex:
                yield from zip(batches, ex.map(lambda idx: embed_batch([ids[i] for i in idx]), batches), strict=True)

        for idx, vecs in results():
            if out is None:
                out = np.empty((len(ids), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
            bar.update(len(idx))
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    return normalise(out).astype(np.float32)
