"""Which code a grid's runs ran, and whether today's code is still that code.

A grid's folder (``metrics/grids/<grid>/``, or ``<grid>/<set>/``) holds ``code.json``, written by
:mod:`experiments.collect`: per distinct identity of its runs, the commit they started from and one digest
per stage of their ``dvc.lock``, with the runs that used it::

    {"identities": [{"commits": ["<sha>"], "stages": {"train": "<sha256>", ...}, "runs": ["xx-s0", ...]}]}

A stage's digest is the sha256 of the sorted ``(path, md5)`` of its ``.py`` dependencies and of its
``params`` entry: the code and the settings it ran with, not its data (data that changes follows from
them). The params keys a grid sets itself with ``-S`` (``sampling.mode``, ``seed``, ...) are left out of
the digest and listed in the identity as ``overridden``: a run applies them on top of whatever
params.yaml says, so only the rest of params.yaml can make it stale. :func:`stale_stages` compares the
digests with the workspace's ``dvc.lock`` the same way, by stage name (foreach stages as
``index@xquad-r``). Only ``yaml`` and ``json`` are read: no DVC import.
"""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE_FILE = "code.json"
UNKNOWN = "unknown"  # the stage list of a grid without code.json: it ran before identities were recorded
BEFORE = "ran before code identities were recorded"
CURRENT = "from today's code"


def _without(params: dict, keys) -> dict:
    """A dvc.lock ``params`` entry (``{file: {key: value}}``) without the dotted ``keys``: a key is dropped
    where the entry names it, or removed from inside the section the entry names (``sampling.mode`` from
    ``sampling``)."""
    out = copy.deepcopy(params)
    for values in out.values():
        for key in keys:
            for name in list(values):
                if name == key:
                    del values[name]
                elif key.startswith(name + ".") and isinstance(values[name], dict):
                    *path, last = key[len(name) + 1:].split(".")
                    node = values[name]
                    for part in path:
                        node = node.get(part) if isinstance(node, dict) else None
                    if isinstance(node, dict):
                        node.pop(last, None)
    return out


def stage_digest(stage: dict, overridden=()) -> str:
    """sha256 of a dvc.lock stage's ``.py`` dependencies (sorted ``(path, md5)``) and its ``params``
    without the ``overridden`` keys."""
    code = sorted((d["path"], d.get("md5", "")) for d in stage.get("deps") or [] if d["path"].endswith(".py"))
    params = _without(stage.get("params") or {}, overridden)
    text = json.dumps({"code": code, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def lock_digests(lock: dict, overridden=()) -> dict[str, str]:
    """Stage name -> :func:`stage_digest` of a parsed dvc.lock."""
    return {name: stage_digest(stage, overridden) for name, stage in (lock.get("stages") or {}).items()}


def read_lock(path: Path = ROOT / "dvc.lock") -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}


def lock_at(rev: str) -> dict:
    """The dvc.lock of commit ``rev`` (an experiment's commit)."""
    return yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=ROOT, check=True,
                                         capture_output=True, text=True).stdout) or {}


def commit_of(rev: str = "HEAD") -> str:
    return subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def override_keys(overrides) -> list[str]:
    """The dotted keys of ``-S key=value`` overrides, sorted."""
    return sorted({o.split("=", 1)[0].strip() for o in overrides})


def identities(runs) -> dict:
    """``code.json`` of ``(run name, commit, parsed dvc.lock[, overridden keys])`` per run: runs with the same
    overridden keys and stage digests share one identity (with every commit they started from)."""
    found: dict[str, dict] = {}
    for run, commit, lock, *rest in runs:
        overridden = sorted(rest[0]) if rest else []
        stages = lock_digests(lock, overridden)
        key = json.dumps([overridden, stages], sort_keys=True)
        ident = found.setdefault(key, {"commits": [], "overridden": overridden, "stages": stages, "runs": []})
        if commit not in ident["commits"]:
            ident["commits"].append(commit)
        ident["runs"].append(run)
    return {"identities": list(found.values())}


def write(folder: Path, runs: list[tuple[str, str, dict]]) -> Path:
    path = Path(folder) / CODE_FILE
    path.write_text(json.dumps(identities(runs), indent=1, sort_keys=True) + "\n")
    return path


def _identities(code_json: dict) -> list[dict]:
    if "identities" in code_json:
        return code_json["identities"]
    return [code_json]  # one identity at the top level: {"commit": ..., "stages": {...}}


def stale_stages(code_json: dict | None, head_lock: dict) -> list[str]:
    """The stages whose digest in ``head_lock`` (the parsed workspace dvc.lock) differs from the one any
    identity of ``code_json`` recorded, or that only one side has, in the order of ``head_lock``;
    ``[UNKNOWN]`` without a ``code_json`` (the grid ran before identities were recorded)."""
    if code_json is None:
        return [UNKNOWN]
    changed: list[str] = []
    for ident in _identities(code_json):
        head = lock_digests(head_lock, ident.get("overridden") or ())
        ran = ident.get("stages") or {}
        for name in list(head) + [n for n in ran if n not in head]:
            if head.get(name) != ran.get(name) and name not in changed:
                changed.append(name)
    head = lock_digests(head_lock)
    order = {n: i for i, n in enumerate(head)}
    return sorted(changed, key=lambda n: order.get(n, len(order)))


def grid_stale(folder: Path, head_lock: dict) -> list[str]:
    """:func:`stale_stages` of a grid folder (its ``code.json`` or none)."""
    path = Path(folder) / CODE_FILE
    return stale_stages(json.loads(path.read_text()) if path.exists() else None, head_lock)


def mark(stale: list[str]) -> str:
    """The words of a grid's mark: ``from today's code``, ``stale: train, index changed`` or
    ``stale: ran before code identities were recorded``."""
    if not stale:
        return CURRENT
    if stale == [UNKNOWN]:
        return f"stale: {BEFORE}"
    return f"stale: {', '.join(stale)} changed"
