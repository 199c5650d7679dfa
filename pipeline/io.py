"""Atomic output writing: every file a stage produces appears whole or not at all.

Each helper writes to a temporary file in the destination folder, then ``os.replace``s it onto
the final name, so an interrupted stage never leaves a half-written output for DVC to cache.
A process killed outright (``kill -9``, out of memory) cannot remove its temporary file or folder:
a stage calls :func:`remove_stale_temps` on each of its outputs when it starts, which removes exactly
the temporary names these helpers give that output and nothing else.

The readers (:func:`read_parquet`, :func:`read_text`, :func:`read_json`, :func:`decode_text`) turn a
missing, undecodable or malformed file into a :class:`~pipeline.errors.DataError` naming it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds. What a
    killed earlier write of ``path`` left (:func:`remove_stale_temps`) is removed first, so every stage
    writing its folders through here cleans up after a kill -9 on its next run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def temp_name_pattern(path: str | Path, suffix: str = "") -> re.Pattern[str]:
    """The names :func:`atomic_path` (with ``suffix``) and :func:`atomic_dir` (``suffix`` "") give their
    temporary beside ``path``: ``.<name>.<random>.<suffix>tmp``, ``<random>`` being tempfile's
    letters, digits and underscores (never a dot, so no other output's temporary matches)."""
    return re.compile(rf"\.{re.escape(Path(path).name)}\.[a-z0-9_]+{re.escape(suffix)}\.tmp")


def remove_stale_temps(path: str | Path, suffix: str = "") -> list[Path]:
    """Remove what an atomic write of ``path`` left beside it when its process was killed: temporary
    files and folders named by :func:`temp_name_pattern` (``suffix`` as given to :func:`atomic_path`;
    "" for :func:`atomic_dir`) and, for a folder, the ``.<name>.old`` copy :func:`atomic_dir` swaps out.

    Only the temporaries of this exact output are touched, so stages writing other outputs in the same
    folder are safe; a stage calls it at its start for its own outputs (DVC's lock lets one run of a
    stage write them at a time). Returns the removed paths, sorted."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = temp_name_pattern(path, suffix)
    removed = []
    for entry in path.parent.iterdir():
        if not (pattern.fullmatch(entry.name) or (not suffix and entry.name == f".{path.name}.old")):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return sorted(removed)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")


def write_parquet(path: str | Path, df) -> None:
    """Write a pandas DataFrame as parquet, without the index (deterministic bytes for equal frames)."""
    with atomic_path(path, ".parquet") as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def read_parquet(path: str | Path, required=()):
    """A parquet file written by a stage as a pandas DataFrame (every column), for the next stage.

    A missing file, a file pyarrow cannot read (truncated, corrupt, not parquet) and a file without one
    of the ``required`` columns are a :class:`~pipeline.errors.DataError` naming the file, not a traceback
    from deep inside pyarrow."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except (pa.ArrowException, OSError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable parquet file ({detail})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (has {list(df.columns)})")
    return df


def write_csv(path: str | Path, df) -> None:
    with atomic_path(path, ".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")


def decode_text(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8 text (a leading byte-order mark is accepted and dropped); an undecodable byte
    is an error naming ``where``, the byte, its offset and its line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{where}: not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} "
                        f"(line {line})") from None


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a file (BOM accepted); a missing or undecodable file names the path."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return decode_text(raw, str(path))


def read_json(path: str | Path):
    """A JSON document; undecodable bytes or invalid JSON name the file, the line and the column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
