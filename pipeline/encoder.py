"""The multilingual encoder: load a Hugging Face folder, embed texts with torch or CTranslate2.

Both engines share one recipe: prefix (``query: `` / ``passage: ``), tokenise with the folder's
tokenizer, truncate to ``max_length``, pool (mean over real tokens, or the first token), L2-normalise.
Texts are embedded in batches sorted by length (little padding) and returned in input order.
"""
from __future__ import annotations

import numpy as np
import torch


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Sentence vectors from token states ``(B, T, H)`` and attention mask ``(B, T)``; not normalised."""
    if mode == "cls":
        return hidden[:, 0]
    if mode != "mean":
        raise ValueError(f"pooling must be 'mean' or 'cls', got {mode!r}")
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pool_numpy(hidden: np.ndarray, lengths: np.ndarray, mode: str = "mean") -> np.ndarray:
    if mode == "cls":
        return hidden[:, 0]
    mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(hidden.dtype)
    return (hidden * mask[..., None]).sum(1) / np.maximum(lengths[:, None], 1)


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Encoder:
    """Embeds texts with a Hugging Face encoder folder.

    Args:
        model_dir: a Hugging Face folder (config, safetensors weights, tokenizer).
        model: an already loaded ``AutoModel`` to use instead of the folder's weights (torch engine).
        device: torch device of the torch engine (``"cuda"`` on a GPU machine).
        engine: ``"torch"`` (fp32, the reference) or ``"ctranslate2"`` (the folder converted once into
            ``ct2_dir`` with the given ``compute_type``; int8 is about 2x faster on CPU, see
            benchmarks/encoding_speed.py).
        pooling: ``"mean"`` or ``"cls"``.
        max_length: tokens per text, special tokens included.
    """

    def __init__(self, model_dir, engine: str = "torch", pooling: str = "mean", max_length: int = 128,
                 batch_size: int = 64, threads: int = 2, compute_type: str = "int8", ct2_dir=None,
                 progress: bool = True, device: str = "cpu", model=None):
        from transformers import AutoTokenizer

        self.model_dir = str(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.engine, self.pooling, self.max_length = engine, pooling, max_length
        self.batch_size, self.progress, self.device = batch_size, progress, device
        if engine == "torch":
            from transformers import AutoModel

            torch.set_num_threads(threads)
            self.model = model if model is not None else AutoModel.from_pretrained(self.model_dir,
                                                                                   add_pooling_layer=False)
            self.model = self.model.to(device).eval()
        elif engine == "ctranslate2":
            import ctranslate2

            ct2_dir = convert_to_ctranslate2(self.model_dir, ct2_dir, compute_type)
            self.model = ctranslate2.Encoder(str(ct2_dir), device="cpu", compute_type=compute_type,
                                             intra_threads=threads)
        else:
            raise ValueError(f"engine must be 'torch' or 'ctranslate2', got {engine!r}")
        if engine == "ctranslate2" and device != "cpu":
            raise ValueError("the ctranslate2 engine is used on CPU here; use engine 'torch' on a GPU")

    def _batch(self, ids: list[list[int]]) -> np.ndarray:
        lengths = np.array([len(x) for x in ids])
        if self.engine == "ctranslate2":
            tokens = [self.tokenizer.convert_ids_to_tokens(x) for x in ids]
            out = self.model.forward_batch(tokens)
            hidden = np.asarray(out.last_hidden_state, dtype=np.float32)
            return pool_numpy(hidden, lengths, self.pooling)
        width = int(lengths.max())
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return pool(hidden, mask, self.pooling).float().cpu().numpy()

    def encode(self, texts: list[str], prefix: str = "", desc: str = "encode") -> np.ndarray:
        """L2-normalised float32 vectors ``(len(texts), dim)`` in input order."""
        from tqdm.auto import tqdm

        ids = self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length,
                             add_special_tokens=True)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")[::-1]  # longest first: fail fast on memory
        out = None
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not self.progress, mininterval=5) as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                vecs = self._batch([ids[i] for i in idx])
                if out is None:
                    out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
                out[idx] = vecs
                bar.update(len(idx))
        if out is None:
            return np.zeros((0, 0), dtype=np.float32)
        return normalise(out).astype(np.float32)


def convert_to_ctranslate2(model_dir, out_dir=None, quantization: str = "int8"):
    """Convert a BERT-style HF folder to a CTranslate2 ``Encoder`` folder (cached beside it).

    CTranslate2 4.8's converter reads ``position_embedding_type`` from the config, which
    transformers 5 no longer writes: the key is added to a copy of the config before converting.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    import ctranslate2

    from .io import atomic_dir

    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "mdr-ct2" / (
        model_dir.resolve().as_posix().strip("/").replace("/", "_") + f"-{quantization}")
    stamp = out_dir / "source.json"
    source_cfg = (model_dir / "config.json").read_text()
    weights = model_dir / "model.safetensors"
    fingerprint = {"config": source_cfg, "weights_size": weights.stat().st_size,
                   "weights_mtime": weights.stat().st_mtime_ns, "quantization": quantization}
    if stamp.exists() and json.loads(stamp.read_text()) == fingerprint:
        return out_dir
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "hf"
        shutil.copytree(model_dir, src)
        cfg = json.loads((src / "config.json").read_text())
        cfg.setdefault("position_embedding_type", "absolute")
        (src / "config.json").write_text(json.dumps(cfg))
        with atomic_dir(out_dir) as dst:
            ctranslate2.converters.TransformersConverter(str(src)).convert(str(dst), quantization=quantization,
                                                                           force=True)
            (dst / "source.json").write_text(json.dumps(fingerprint))
    return out_dir
