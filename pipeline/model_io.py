"""Model folders in and out: load an encoder (safetensors only, tokenizer checked), save a trained one
or copy the base one, each with the sentence-transformers files and the model card (:mod:`pipeline.st_format`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
import torch
from .st_format import write_st_folder
from .device import pick_device



# files of a model folder that save_pretrained rewrites or that hold (stale) weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt")


def load_encoder(model_dir: str | Path, device: torch.device | None = None):
    """``(model, tokenizer)`` of a Hugging Face folder; float32 weights, without a pooler head. Only
    safetensors weights are loaded, and the tokenizer must fit the model
    (:func:`pipeline.assets.load_checked_tokenizer`)."""
    from transformers import AutoModel

    from .assets import load_checked_tokenizer

    tokenizer, _ = load_checked_tokenizer(model_dir)
    try:
        model = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False, dtype=torch.float32,
                                          use_safetensors=True)
    except TypeError:  # architectures without a pooler argument
        model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True)
    return model.to(device or pick_device()), tokenizer


def save_encoder(model, base_dir: str | Path, out_dir: str | Path, info: dict | None = None,
                 max_seq_length: int | None = None) -> None:
    """Write ``model`` to ``out_dir`` as a HF folder (config + model.safetensors) with the base folder's
    tokenizer and other files copied byte for byte (re-saving a tokenizer through another class can
    lose its normaliser); weight files of the base are not copied. ``info`` goes to ``training.json``;
    with ``max_seq_length`` and ``info['params']`` the folder also gets the sentence-transformers files
    and a model card (:mod:`pipeline.st_format`)."""
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))  # transformers 5 always writes safetensors
    if not (out_dir / "model.safetensors").exists() and not list(out_dir.glob("model-*.safetensors")):
        raise RuntimeError(f"save_pretrained wrote no safetensors weights in {out_dir}")
    for f in sorted(Path(base_dir).iterdir()):
        if f.is_file() and not (out_dir / f.name).exists() and not f.name.endswith(WEIGHT_SUFFIXES) \
                and not f.name.endswith(".index.json"):
            shutil.copy2(f, out_dir / f.name)
    if info is not None:
        (out_dir / "training.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if max_seq_length and "params" in info:
            write_st_folder(out_dir, info, max_seq_length)


def copy_model(base_dir: str | Path, out_dir: str | Path, info: dict | None = None,
               max_seq_length: int | None = None) -> None:
    """Copy a model folder unchanged (``steps: 0``, the untrained baseline); ``info`` and
    ``max_seq_length`` as in :func:`save_encoder` (weights and tokenizer stay as they were)."""
    shutil.copytree(base_dir, out_dir, dirs_exist_ok=True)
    out_dir = Path(out_dir)
    if info is not None:
        (out_dir / "training.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if max_seq_length and "params" in info:
            write_st_folder(out_dir, info, max_seq_length)

