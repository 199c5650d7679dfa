"""Which code a grid's runs ran, and whether today's code is still that code.

A grid's folder (``metrics/grids/<grid>/``, or ``<grid>/<set>/``) holds ``code.json``, written by
:mod:`experiments.collect`: per distinct identity of its runs, the commit they started from and one digest
per stage of their ``dvc.lock``, with the runs that used it::

    {"identities": [{"commits": ["<sha>"], "overridden": ["sampling.mode", ...],
                     "stages": {"train": "<sha256>", ...}, "runs": ["xx-s0", ...]}],
     "inputs": {"train": {"code": ["pipeline/loss.py", ...], "params": {"params.yaml": ["train", ...]}}, ...}}

A stage's digest is the sha256 of the sorted ``(path, md5)`` of its ``.py`` dependencies and of its
``params`` entry: the code and the settings it ran with, not its data (data that changes follows from
them). The params keys a grid sets itself with ``-S`` (``sampling.mode``, ``seed``, ...) are left out of
the digest and listed in the identity as ``overridden``: a run applies them on top of whatever
params.yaml says, so only the rest of params.yaml can make it stale. :func:`stale_stages` compares the
digests with the workspace's ``dvc.lock`` the same way, by stage name (foreach stages as
``index@xquad-r``). A stage the workspace's ``dvc.lock`` lacks is one the grid's own overrides created (fold B's
``+translate.targets.el`` makes ``translate@el``, its ``index.datasets`` makes ``index@mlqa-r``): code.json
keeps the ``.py`` files and params keys each stage read (``inputs``), and such a stage is checked against
those files and params.yaml in the workspace. Only ``yaml`` and ``json`` are read: no DVC import.
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
    ``sampling``), through list items by index (``gather.sources.1.limit``)."""
    out = copy.deepcopy(params)
    for values in out.values():
        for key in keys:
            for name in list(values):
                if name == key:
                    del values[name]
                elif key.startswith(name + ".") and isinstance(values[name], (dict, list)):
                    *path, last = key[len(name) + 1:].split(".")
                    node = values[name]
                    for part in path:
                        node = _child(node, part)
                    if isinstance(node, dict):
                        node.pop(last, None)
                    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
                        node[int(last)] = None  # the item's place stays, so later items keep their index
    return out


def _child(node, part: str):
    """``node[part]`` of a dict, or of a list where ``part`` is an index (``gather.sources.1.limit``)."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


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


def stage_inputs(stage: dict) -> dict:
    """The ``.py`` dependencies and params keys (per params file) of a dvc.lock stage: what
    :func:`workspace_digest` needs to digest it again from the workspace."""
    return {"code": sorted(d["path"] for d in stage.get("deps") or [] if d["path"].endswith(".py")),
            "params": {file: sorted(values) for file, values in (stage.get("params") or {}).items()}}


def _lookup(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return {"missing": key}  # never equal to a recorded value: the stage reads as changed
        node = node[part]
    return node


def workspace_digest(inputs: dict, overridden=(), root: Path = ROOT) -> str:
    """:func:`stage_digest` of a stage with ``inputs`` (:func:`stage_inputs`) as the workspace under ``root``
    has it today: the md5 of each ``.py`` file (as DVC records it) and each params key's value."""
    deps = [{"path": path, "md5": hashlib.md5((root / path).read_bytes()).hexdigest()
             if (root / path).is_file() else ""} for path in inputs["code"]]
    params = {}
    for file, keys in inputs["params"].items():
        values = yaml.safe_load((root / file).read_text()) if (root / file).is_file() else {}
        params[file] = {key: _lookup(values or {}, key) for key in keys}
    return stage_digest({"deps": deps, "params": params}, overridden)


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
    """The dotted keys of ``-S key=value`` overrides, sorted, without DVC's ``+`` (append a key) or ``~``
    (delete it) in front."""
    return sorted({o.split("=", 1)[0].strip().lstrip("+~") for o in overrides})


def identities(runs) -> dict:
    """``code.json`` of ``(run name, commit, parsed dvc.lock[, overridden keys])`` per run: runs with the same
    overridden keys and stage digests share one identity (with every commit they started from)."""
    found: dict[str, dict] = {}
    inputs: dict[str, dict] = {}
    for run, commit, lock, *rest in runs:
        overridden = sorted(rest[0]) if rest else []
        stages = lock_digests(lock, overridden)
        key = json.dumps([overridden, stages], sort_keys=True)
        ident = found.setdefault(key, {"commits": [], "overridden": overridden, "stages": stages, "runs": []})
        if commit not in ident["commits"]:
            ident["commits"].append(commit)
        ident["runs"].append(run)
        for name, stage in (lock.get("stages") or {}).items():
            inputs.setdefault(name, stage_inputs(stage))
    return {"identities": list(found.values()), "inputs": inputs}


def merge(kept: dict, new: dict) -> dict:
    """``code.json`` of two collections: ``kept`` (runs collected before, without those ``new`` has again) and
    ``new``; identities with the same overridden keys and stage digests become one, and a stage's ``inputs``
    are ``new``'s where both have them."""
    replaced = {r for ident in new["identities"] for r in ident["runs"]}
    found: dict[str, dict] = {}
    pairs = [(i, [r for r in i.get("runs") or [] if r not in replaced]) for i in _identities(kept)]
    for ident, runs in pairs + [(i, i["runs"]) for i in new["identities"]]:
        if not runs:
            continue
        key = json.dumps([ident.get("overridden") or [], ident.get("stages") or {}], sort_keys=True)
        into = found.setdefault(key, {"commits": [], "overridden": ident.get("overridden") or [],
                                      "stages": ident.get("stages") or {}, "runs": []})
        into["commits"] += [c for c in ident.get("commits", []) if c not in into["commits"]]
        into["runs"] += [r for r in runs if r not in into["runs"]]
    return {"identities": list(found.values()), "inputs": {**(kept.get("inputs") or {}), **new["inputs"]}}


def write(folder: Path, runs: list[tuple[str, str, dict]], kept: dict | None = None) -> Path:
    """``code.json`` of ``runs`` (:func:`identities`), merged into ``kept`` (:func:`merge`) where given."""
    path = Path(folder) / CODE_FILE
    code = identities(runs)
    if kept is not None:
        code = merge(kept, code)
    path.write_text(json.dumps(code, indent=1, sort_keys=True) + "\n")
    return path


def _identities(code_json: dict) -> list[dict]:
    if "identities" in code_json:
        return code_json["identities"]
    return [code_json]  # one identity at the top level: {"commit": ..., "stages": {...}}


def stale_stages(code_json: dict | None, head_lock: dict, root: Path = ROOT) -> list[str]:
    """The stages whose digest in ``head_lock`` (the parsed workspace dvc.lock) differs from the one any
    identity of ``code_json`` recorded, in the order of ``head_lock``; a stage only ``head_lock`` has counts as
    changed, and one only the grid has is digested from the workspace under ``root`` where code.json kept its
    ``inputs`` (:func:`workspace_digest`; changed where it did not). ``[UNKNOWN]`` without a ``code_json``
    (the grid ran before identities were recorded)."""
    if code_json is None:
        return [UNKNOWN]
    inputs = code_json.get("inputs") or {}
    changed: list[str] = []
    for ident in _identities(code_json):
        overridden = ident.get("overridden") or ()
        head = lock_digests(head_lock, overridden)
        ran = ident.get("stages") or {}
        for name in list(head) + [n for n in ran if n not in head]:
            if name in head:
                now = head[name]
            elif name in inputs:
                now = workspace_digest(inputs[name], overridden, root)
            else:
                now = None
            if now != ran.get(name) and name not in changed:
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
