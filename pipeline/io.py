"""Atomic output writing: every file a stage produces appears whole or not at all.

Each helper writes to a temporary file in the destination folder, then ``os.replace``s it onto
the final name, so an interrupted stage never leaves a half-written output for DVC to cache.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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

    from .errors import DataError

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
