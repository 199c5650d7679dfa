"""Which params a stage really reads: a recording view of :class:`pipeline.params.Params`.

With ``PIPELINE_PARAMS_TRACE=<file>`` set, :func:`pipeline.params.load_params` returns :func:`traced`
params, and every value the stage reads is appended to ``<file>`` as a dotted key (``train.lr``,
``translate.targets.zh``), one line each, as it is read. ``tests/test_params_access.py`` runs every stage
so, and fails when a key it read is not under the stage's ``params:`` in ``dvc.yaml`` (DVC would not
rerun the stage when that key changes), when the value came from a schema default instead of
params.yaml, or when the schema changed it (then the stage would depend on ``pipeline/params.py``
itself, which the stages do not list as a dependency). A section dumped (``model_dump``) reads each field
it includes; a dict of params iterated or counted counts as reading every key below it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

_MISSING = object()


class Recorder:
    def __init__(self, log: Path, raw: dict):
        self.log, self.raw = Path(log), raw

    def raw_at(self, key: str):
        node = self.raw
        for part in key.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                return _MISSING
        return node

    def read(self, key: str, value) -> None:
        """Log ``key``; a value that is not params.yaml's own is logged with a mark saying why."""
        raw = self.raw_at(key)
        if raw is _MISSING:
            mark = "\tdefault"
        elif _plain(value) != _plain(raw):
            mark = "\tchanged"
        else:
            mark = ""
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{key}{mark}\n")


def _plain(value):
    """A value as YAML would hold it: models as the keys they were given, tuples as lists."""
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.model_dump(exclude_unset=True).items()}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class TracedSection:
    """A params section that logs each field read; methods and properties run on the view, so the fields
    they read are logged too."""

    def __init__(self, model: BaseModel, prefix: str, rec: Recorder):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_rec", rec)

    def _key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def __getattr__(self, name: str):
        model, rec = self._model, self._rec
        if name in type(model).model_fields:
            return _wrap(getattr(model, name), self._key(name), rec)
        attr = getattr(type(model), name, None)
        if isinstance(attr, property):
            return attr.fget(self)
        if name == "model_dump":
            return self._dump
        if callable(attr) and not name.startswith("model_") and not isinstance(attr, type):
            return lambda *a, **kw: attr(self, *a, **kw)
        if self._prefix:  # model_dump and the like: the whole section
            rec.read(self._prefix, model)
        return getattr(model, name)

    def _dump(self, *, include=None, exclude=None, exclude_unset=False, **kw):
        """``model_dump``: each field it includes is read (with ``exclude_unset``, those params.yaml gives)."""
        given = self._model.model_fields_set if exclude_unset else type(self._model).model_fields
        fields = [f for f in type(self._model).model_fields
                  if f in given and (include is None or f in include) and (exclude is None or f not in exclude)]
        for f in fields:
            self._rec.read(self._key(f), getattr(self._model, f))
        return self._model.model_dump(include=include, exclude=exclude, exclude_unset=exclude_unset, **kw)

    def __setattr__(self, name, value):
        raise AttributeError("params are read-only")

    def __eq__(self, other):
        return self._model == (other._model if isinstance(other, TracedSection) else other)

    def __hash__(self):
        return hash(self._model)

    def __repr__(self) -> str:
        return f"traced {self._model!r}"


class TracedMapping(Mapping):
    """A dict of params (``translate.targets``, ``datasets``): an item read by key logs that key;
    iterating or counting logs the whole mapping."""

    def __init__(self, data: Mapping, prefix: str, rec: Recorder):
        self._data, self._prefix, self._rec = data, prefix, rec

    def __getitem__(self, key):
        return _wrap(self._data[key], f"{self._prefix}.{key}", self._rec)

    def __contains__(self, key) -> bool:
        return key in self._data

    def get(self, key, default=None):
        return self[key] if key in self._data else default

    def __iter__(self):
        self._rec.read(self._prefix, self._data)
        return iter(self._data)

    def __len__(self) -> int:
        self._rec.read(self._prefix, self._data)
        return len(self._data)


def _wrap(value, key: str, rec: Recorder):
    if isinstance(value, BaseModel):
        return TracedSection(value, key, rec)
    if isinstance(value, Mapping):
        return TracedMapping(value, key, rec)
    rec.read(key, value)
    return value


def traced(params: BaseModel, raw: dict, log: str | Path) -> TracedSection:
    """``params`` as a view that appends each key read to ``log``; ``raw`` is params.yaml as loaded."""
    return TracedSection(params, "", Recorder(Path(log), raw))
