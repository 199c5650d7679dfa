"""Resumable corpus encoding in shards (large corpora such as MIRACL's, English ~33M passages).

Passages arrive as an iterable of ``(docid, text)`` in a fixed order and are cut into shards of
``shard_size``. Shard ``i`` is written as ``<folder>/shard-0000i.docids.txt`` (one docid a line) and then
``<folder>/shard-0000i.npy`` (float32 vectors), each atomically; a shard counts as finished once its
``.npy`` exists. A rerun skips finished shards without encoding them (their docids must equal the
passages at that place of the stream, else the corpus changed and it stops), so a kill loses at most
the shard being encoded. ``manifest.json`` holds what the vectors depend on (model, prefix, pooling,
length, shard size); a rerun with other settings stops instead of mixing vectors.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path, write_json


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def shard_paths(folder: Path, i: int) -> tuple[Path, Path]:
    return folder / f"shard-{i:05d}.npy", folder / f"shard-{i:05d}.docids.txt"


def encode_in_shards(passages: Iterable[tuple[str, str]], encode: Callable[[list[str]], np.ndarray],
                     folder: str | Path, shard_size: int, manifest: dict | None = None,
                     log: Callable[[str], None] | None = None) -> int:
    """Encode every passage into shards under ``folder`` (skipping finished ones); returns the shard count.

    ``encode`` maps a list of texts to float32 vectors ``(n, dim)``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    want = {**(manifest or {}), "shard_size": shard_size}
    mpath = folder / "manifest.json"
    if mpath.exists():
        have = json.loads(mpath.read_text(encoding="utf-8"))
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ValueError(f"{folder}: its shards were encoded with other settings ({', '.join(diff)}: "
                             f"{ {k: have.get(k) for k in diff} } vs { {k: want.get(k) for k in diff} }); "
                             f"remove the folder or choose another one")
    else:
        write_json(mpath, want)
    n = 0
    for i, chunk in enumerate(_chunks(passages, shard_size)):
        npy, ids = shard_paths(folder, i)
        docids = [d for d, _ in chunk]
        if npy.exists() and ids.exists():
            if ids.read_text(encoding="utf-8").splitlines() != docids:
                raise ValueError(f"{ids}: the docids of this finished shard differ from the corpus passages "
                                 f"{i * shard_size}..{i * shard_size + len(chunk) - 1}: the corpus changed; "
                                 f"remove {folder} to encode it again")
            n += 1
            continue
        bad = next((d for d in docids if "\n" in d or not d), None)
        if bad is not None:
            raise ValueError(f"shard {i}: docid {bad!r} is empty or holds a line break")
        vecs = np.asarray(encode([t for _, t in chunk]), dtype=np.float32)
        if len(vecs) != len(chunk):
            raise ValueError(f"shard {i}: the encoder returned {len(vecs)} vectors for {len(chunk)} passages")
        with atomic_path(ids, ".txt") as tmp:
            tmp.write_text("\n".join(docids) + "\n", encoding="utf-8")
        with atomic_path(npy, ".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, vecs)
        if log:
            log(f"shard {i}: {len(chunk)} passages encoded")
        n += 1
    return n


def load_shards(folder: str | Path, n: int, mmap: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """The vectors of shards ``0..n-1`` (memory-mapped by default) and all their docids in order."""
    folder = Path(folder)
    blocks, docids = [], []
    for i in range(n):
        npy, ids = shard_paths(folder, i)
        blocks.append(np.load(npy, mmap_mode="r" if mmap else None))
        docids += ids.read_text(encoding="utf-8").splitlines()
    return blocks, docids


def sample_rows(blocks: list[np.ndarray], size: int, seed: int = 0) -> np.ndarray:
    """Up to ``size`` rows drawn uniformly without replacement across the blocks (an index's training sample)."""
    total = sum(len(b) for b in blocks)
    rows = np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))
    out, offset = [], 0
    for b in blocks:
        mine = rows[(rows >= offset) & (rows < offset + len(b))] - offset
        if len(mine):
            out.append(np.asarray(b[mine], dtype=np.float32))
        offset += len(b)
    return np.concatenate(out) if out else np.zeros((0, blocks[0].shape[1] if blocks else 0), np.float32)
