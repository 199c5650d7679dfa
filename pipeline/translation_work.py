"""The translation work queue: texts cut into hashed chunks, finished chunks kept on disk, shards.

:func:`translate_resumable` keeps finished chunks on disk so an interrupted run resumes where it
stopped; :func:`translate_shard` translates one contiguous range of those chunks (shard ``i`` of ``N``,
e.g. on another machine) and :func:`write_shard` / :func:`read_shards` carry the finished chunks to the
run that merges them. The chunk, not the shard, is the unit of translation, so a merged sharded run
returns exactly what an unsharded one does. Any :class:`Translator` does the translating (the engines
are in :mod:`pipeline.translation`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable
from collections.abc import Mapping, Sequence

from .io import write_json


@runtime_checkable
class Translator(Protocol):
    """Anything that translates a list of texts, keeping order and length."""

    def translate(self, texts: list[str]) -> list[str]: ...


def _texts_hash(texts: list[str], fingerprint: str) -> str:
    return hashlib.sha256(json.dumps([fingerprint, texts], ensure_ascii=False).encode("utf-8")).hexdigest()


def chunk_plan(texts: Sequence[str], chunk_size: int, fingerprint: str = "") -> list[tuple[list[str], str]]:
    """The chunks of ``texts`` that :func:`translate_resumable` translates one at a time: each chunk's
    texts and the sha256 of them and ``fingerprint`` (its identity in work folders and shard files)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunks = [list(texts[start : start + chunk_size]) for start in range(0, len(texts), chunk_size)]
    return [(chunk, _texts_hash(chunk, fingerprint)) for chunk in chunks]


def shard_chunks(n_chunks: int, shard: int, shards: int) -> range:
    """Chunk indices of shard ``shard`` (0-based) of ``shards``: contiguous, in order, sizes differing by at
    most one; the shards of one ``shards`` cover every chunk once (a shard may be empty)."""
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need shards >= 1 and 0 <= shard < shards")
    return range(n_chunks * shard // shards, n_chunks * (shard + 1) // shards)


def _run_chunk(k: int, chunk: list[str], digest: str, translator: Translator, work_dir: Path,
               known: Mapping[str, list[str]] | None) -> list[str]:
    """Outputs of chunk ``k``: from ``known`` (finished elsewhere), from ``work_dir`` (finished before a
    kill), or translated now and written to ``work_dir`` atomically."""
    if known and len(known.get(digest, ())) == len(chunk):
        return list(known[digest])
    path = work_dir / f"chunk-{k:05d}.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            saved = {}
        if saved.get("input_sha256") == digest and len(saved.get("outputs", [])) == len(chunk):
            return saved["outputs"]
    done = translator.translate(chunk)
    if len(done) != len(chunk):
        raise RuntimeError(f"translator returned {len(done)} texts for {len(chunk)} (chunk {path.name})")
    write_json(path, {"input_sha256": digest, "outputs": done})
    return done


def translate_resumable(texts: list[str], translator: Translator, work_dir: str | Path, chunk_size: int,
                        fingerprint: str = "", known: Mapping[str, list[str]] | None = None) -> list[str]:
    """Translate ``texts`` in chunks of ``chunk_size``, keeping each finished chunk on disk.

    Chunk ``k`` is written atomically to ``work_dir/chunk-{k:05d}.json`` with the sha256 of its input
    texts (and of ``fingerprint``, e.g. the model and decoding settings). A rerun reuses every chunk
    whose hash matches, so an interrupted run resumes after its last finished chunk and returns the
    same list as an uninterrupted one. ``known`` maps chunk hashes to outputs finished elsewhere (the
    shard files of :func:`read_shards`); those chunks are taken as they are, not translated.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    for k, (chunk, digest) in enumerate(chunk_plan(texts, chunk_size, fingerprint)):
        out.extend(_run_chunk(k, chunk, digest, translator, work_dir, known))
    return out


def translate_shard(texts: list[str], translator: Translator, work_dir: str | Path, chunk_size: int, shard: int,
                    shards: int, fingerprint: str = "", known: Mapping[str, list[str]] | None = None) -> list[dict]:
    """Translate shard ``shard`` of ``shards`` of ``texts``: the chunks :func:`shard_chunks` assigns it,
    resumably through ``work_dir`` as :func:`translate_resumable` does. Returns the shard's chunk records
    (``index``, ``input_sha256``, ``outputs``) for :func:`write_shard`."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    plan = chunk_plan(texts, chunk_size, fingerprint)
    return [{"index": k, "input_sha256": plan[k][1],
             "outputs": _run_chunk(k, *plan[k], translator, work_dir, known)}
            for k in shard_chunks(len(plan), shard, shards)]


def shard_missing(texts: Sequence[str], chunk_size: int, shard: int, shards: int, fingerprint: str,
                  known: Mapping[str, list[str]]) -> int:
    """How many chunks of shard ``shard`` of ``shards`` are not in ``known`` (0: the shard is done)."""
    plan = chunk_plan(texts, chunk_size, fingerprint)
    return sum(len(known.get(plan[k][1], ())) != len(plan[k][0]) for k in shard_chunks(len(plan), shard, shards))


def shard_path(folder: str | Path, shard: int, shards: int) -> Path:
    return Path(folder) / f"shard-{shard:03d}-of-{shards:03d}.json"


def write_shard(folder: str | Path, shard: int, shards: int, records: list[dict], meta: dict | None = None) -> Path:
    """Write one shard's finished chunks to ``folder/shard-<i>-of-<N>.json`` (atomically)."""
    path = shard_path(folder, shard, shards)
    write_json(path, {**(meta or {}), "shard": shard, "shards": shards, "chunks": records})
    return path


def read_shards(folder: str | Path) -> dict[str, list[str]]:
    """Chunk hash -> outputs over every ``shard-*.json`` in ``folder`` (none: empty). Shard files of other
    settings or inputs do no harm: their hashes match no chunk of this run."""
    known: dict[str, list[str]] = {}
    for path in sorted(Path(folder).glob("shard-*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            known.update({c["input_sha256"]: c["outputs"] for c in doc["chunks"]})
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a shard file ({err}); remove it") from None
    return known
