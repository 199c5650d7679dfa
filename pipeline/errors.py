"""Malformed input data: the one exception every loader and stage raises, and the checks they share.

Every message names the file (or the source), the record (question id, index or line) and the field,
and is raised before the stage writes anything. ``docs/data-rules.md`` lists each rule and its text.
"""
from __future__ import annotations


class PipelineError(Exception):
    """An expected error, not a bug: bad input data, a missing asset, invalid params. Its message says
    what is wrong and where; :func:`pipeline.console.run` shows it as one line, without a traceback."""


class DataError(PipelineError, ValueError):
    """Malformed input; the message names the file, the record and the field."""


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
