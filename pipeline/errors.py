"""Malformed input data: the one exception every loader and stage raises, and the checks they share.

Every message names the file (or the source), the record (question id, index or line) and the field,
and is raised before the stage writes anything. ``docs/data-rules.md`` lists each rule and its text.
"""
from __future__ import annotations

import json
from pathlib import Path


class PipelineError(Exception):
    """An expected error, not a bug: bad input data, a missing asset, invalid params. Its message says
    what is wrong and where; :func:`pipeline.console.run` shows it as one line, without a traceback."""


class DataError(PipelineError, ValueError):
    """Malformed input; the message names the file, the record and the field."""


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


def field(obj, key: str, where: str, kind: type | tuple):
    """``obj[key]``, which must exist and be of ``kind`` (a bool is not an int)."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    val = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(val, kinds) or (isinstance(val, bool) and bool not in kinds):
        name = " or ".join(k.__name__ for k in kinds)
        raise DataError(f"{where}: field {key!r} should be {name}, got {type(val).__name__}")
    return val
