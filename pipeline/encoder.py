"""The index stage's encoder: embed texts with torch or CTranslate2 (int8 on CPU).

Both engines follow the recipe of :mod:`pipeline.embedding` (the one shared with training): prefix,
tokenise, truncate to ``max_length``, length-sorted batches, pool, L2-normalise, input order kept.
Only the forward pass differs: a ``transformers`` model, or a CTranslate2 ``Encoder`` converted once
from the same folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .embedding import encode_ids, forward_pooled, length_mask, normalise, pad, pool, tokenize

__all__ = ["Encoder", "convert_to_ctranslate2", "ct2_cache_dir", "model_fingerprint", "normalise"]


def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags)


class Encoder:
    """Embeds texts with a Hugging Face encoder folder.

    Args:
        model_dir: a Hugging Face folder (config, safetensors weights, tokenizer).
        engine: ``"torch"`` (fp32, the reference) or ``"ctranslate2"`` (the folder converted once into
            ``ct2_dir`` with the given ``compute_type``). On 2 CPU cores int8 with ``max_tokens`` 1024
            and ``inter_threads`` 2 ran 3.7x torch fp32 (batches of 64: 2.1x); on all of XQuAD-R its
            multilingual mAP is 0.009 below fp32 (metrics/encoding_speed.json, benchmarks/encoding_speed.py).
        pooling: ``"mean"`` or ``"cls"``.
        max_length: tokens per text, special tokens included.
        batch_size: most texts per batch; ``max_tokens``: most padded tokens per batch (None: no limit).
        threads: CPU threads in all. ctranslate2: ``inter_threads`` batches run at once, each on
            ``threads // inter_threads`` threads.
        device: torch device of the torch engine (``"cuda"`` on a GPU machine).

    CTranslate2 picks AVX2 kernels on AMD CPUs even when they have AVX512; where /proc/cpuinfo lists
    AVX512 the engine asks for it (``CT2_FORCE_CPU_ISA=AVX512``, unless the variable is already set),
    which measured about 15% faster here.
    """

    def __init__(self, model_dir, engine: str = "torch", pooling: str = "mean", max_length: int = 128,
                 batch_size: int = 64, threads: int = 2, compute_type: str = "int8", ct2_dir=None,
                 progress: bool = True, device: str = "cpu", max_tokens: int | None = None,
                 inter_threads: int = 1):
        from .assets import load_checked_tokenizer

        if engine not in ("torch", "ctranslate2"):
            raise ValueError(f"engine must be 'torch' or 'ctranslate2', got {engine!r}")
        if engine == "ctranslate2" and device != "cpu":
            raise ValueError("the ctranslate2 engine is used on CPU here; use engine 'torch' on a GPU")
        self.model_dir = str(model_dir)
        self.tokenizer, _ = load_checked_tokenizer(self.model_dir)  # safetensors weights, a fitting tokenizer
        self.engine, self.pooling, self.max_length = engine, pooling, max_length
        self.batch_size, self.max_tokens, self.progress, self.device = batch_size, max_tokens, progress, device
        self.workers = 1
        if engine == "torch":
            from transformers import AutoModel

            torch.set_num_threads(threads)
            self.model = AutoModel.from_pretrained(self.model_dir, add_pooling_layer=False,
                                                   use_safetensors=True).to(device).eval()
        else:
            if _cpu_has_avx512():
                os.environ.setdefault("CT2_FORCE_CPU_ISA", "AVX512")
            import ctranslate2

            ct2_dir = convert_to_ctranslate2(self.model_dir, ct2_dir, compute_type)
            self.workers = max(1, min(inter_threads, threads))
            self.model = ctranslate2.Encoder(str(ct2_dir), device="cpu", compute_type=compute_type,
                                             inter_threads=self.workers,
                                             intra_threads=max(1, threads // self.workers))

    @classmethod
    def from_params(cls, model_dir, encoder, index, **overrides) -> Encoder:
        """The encoder params.yaml describes (pooling and max length from the ``encoder`` section; engine,
        compute type, batch size, token budget, threads, device from ``index``), with
        ``overrides`` (same names as :meth:`__init__`) taking precedence: the index stage, the mine
        stage and ``evaluation.evaluate`` build theirs here."""
        settings = dict(engine=lambda: index.engine, pooling=lambda: encoder.pooling,
                        max_length=lambda: encoder.max_length, batch_size=lambda: index.batch_size,
                        max_tokens=lambda: index.max_tokens or None, threads=lambda: index.threads,
                        inter_threads=lambda: index.inter_threads, compute_type=lambda: index.compute_type,
                        device=lambda: index.device)
        # an overridden setting is not read from params (a stage declares only the params it reads)
        kw = {name: get() for name, get in settings.items() if name not in overrides}
        return cls(model_dir, **kw, **overrides)

    def _batch(self, ids: list[list[int]]) -> np.ndarray:
        """Pooled, not normalised, vectors of one batch of token ids."""
        if self.engine == "ctranslate2":
            hidden = torch.from_numpy(np.asarray(self.model.forward_batch(ids).last_hidden_state, dtype=np.float32))
            return pool(hidden, length_mask([len(x) for x in ids], hidden.shape[1]), self.pooling).numpy()
        input_ids, mask = pad(ids, self.tokenizer.pad_token_id)
        with torch.inference_mode():
            return forward_pooled(self.model, input_ids, mask, self.pooling).cpu().numpy()

    def encode(self, texts: list[str], prefix: str = "", desc: str = "encode") -> np.ndarray:
        """L2-normalised float32 vectors ``(len(texts), dim)`` in input order."""
        ids = tokenize(self.tokenizer, texts, prefix, self.max_length)
        return encode_ids(ids, self._batch, self.batch_size, self.max_tokens, self.workers, self.progress, desc)


def model_fingerprint(model_dir, quantization: str) -> dict:
    """What a converted folder depends on: the sha256 of every file of ``model_dir`` (weights, config,
    tokenizer), the quantization and the CTranslate2 version. Equal folders give equal fingerprints
    wherever they are, and any change of content gives another."""
    import ctranslate2

    from .assets import sha256_of

    files = {f.name: sha256_of(f) for f in sorted(Path(model_dir).iterdir()) if f.is_file()}
    return {"files": files, "quantization": quantization, "ctranslate2": ctranslate2.__version__}


def ct2_cache_dir(fingerprint: dict) -> Path:
    """``<pipeline cache>/ctranslate2-encoders/<content hash>-<quantization>``: one copy per distinct model,
    shared by every run and queued experiment that encodes it (``PIPELINE_CACHE`` moves the cache)."""
    import hashlib
    import json

    from .assets import cache_root

    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / "ctranslate2-encoders" / f"{digest}-{fingerprint['quantization']}"


def convert_to_ctranslate2(model_dir, out_dir=None, quantization: str = "int8"):
    """Convert a BERT-style HF folder to a CTranslate2 ``Encoder`` folder, once per content.

    ``out_dir`` defaults to :func:`ct2_cache_dir` of the folder's :func:`model_fingerprint`; a folder
    whose ``source.json`` holds the same fingerprint is reused, not converted again.
    CTranslate2 4.8's converter reads ``position_embedding_type`` from the config, which
    transformers 5 no longer writes: the key is added to a copy of the config before converting.
    """
    import json
    import shutil
    import tempfile

    import ctranslate2

    from .assets import build_lock, require_safetensors
    from .io import atomic_dir

    model_dir = require_safetensors(Path(model_dir))  # the converter would torch.load a pickle checkpoint
    fingerprint = model_fingerprint(model_dir, quantization)
    out_dir = Path(out_dir) if out_dir else ct2_cache_dir(fingerprint)
    stamp = out_dir / "source.json"

    def converted() -> bool:
        return stamp.exists() and json.loads(stamp.read_text()) == fingerprint

    if converted():
        return out_dir
    with build_lock(out_dir), tempfile.TemporaryDirectory() as tmp:  # another process may be converting it
        if converted():
            return out_dir
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
