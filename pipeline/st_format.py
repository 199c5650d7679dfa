"""sentence-transformers files and a model card for a saved encoder folder.

:func:`write_sentence_transformers_files` adds ``modules.json`` (Transformer, Pooling, Normalize),
``sentence_bert_config.json``, ``1_Pooling/config.json`` and ``config_sentence_transformers.json``
(the ``query`` / ``passage`` prompts) to a Hugging Face folder, so
``SentenceTransformer(path).encode(q, prompt_name="query")`` gives the pipeline's embeddings (the
recipe of :mod:`pipeline.embedding`: prefix, truncate, pool, L2-normalise). The folder is saved without
a pooler head, so the Transformer module is told ``add_pooling_layer: false`` where the architecture
takes it and the weights have none (no "newly initialized pooler" warning; a copied base keeps its own).
:func:`model_card` writes the folder's README.md.
Plain JSON and text only; nothing depends on the time, so identical runs write identical files.
"""
from __future__ import annotations

import inspect
import json
import subprocess
from pathlib import Path


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _takes_pooler_flag(config: dict) -> bool:
    """Whether the config's AutoModel class has an ``add_pooling_layer`` argument (BERT, XLM-R, ...)."""
    try:
        from transformers import AutoConfig, AutoModel

        cfg = AutoConfig.for_model(config["model_type"])
        cls = AutoModel._model_mapping[type(cfg)]
        return "add_pooling_layer" in inspect.signature(cls.__init__).parameters
    except Exception:  # unknown or custom architecture: leave the loading arguments alone
        return False


def _has_pooler_weights(out: Path) -> bool:
    """Whether the folder's safetensors weights hold a pooler head (a copied base does; a trained folder not)."""
    index = out / "model.safetensors.index.json"
    if index.exists():
        keys = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    else:
        from safetensors import safe_open

        keys = []
        for f in sorted(out.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                keys += list(st.keys())
    return any("pooler." in k for k in keys)


def write_sentence_transformers_files(out_dir: str | Path, pooling: str, query_prefix: str, passage_prefix: str,
                                      max_length: int) -> None:
    """Make the Hugging Face folder ``out_dir`` a sentence-transformers model with the pipeline's recipe."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    out = Path(out_dir)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    st_config = {"max_seq_length": int(max_length), "do_lower_case": False}
    if not _has_pooler_weights(out) and _takes_pooler_flag(config):
        st_config["model_args"] = {"add_pooling_layer": False}
    _write_json(out / "sentence_bert_config.json", st_config)
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": int(config["hidden_size"]),
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "config_sentence_transformers.json", {
        "prompts": {"query": query_prefix, "passage": passage_prefix},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def git_revision() -> str:
    """The git tree hash of ``pipeline/`` at HEAD (``+modified`` when it has uncommitted changes), or
    ``"unknown"``. The tree of the code, not the commit: a commit that only records this run's dvc.lock
    and metrics leaves it unchanged, so identical runs at later commits write identical model folders."""
    try:
        tree = subprocess.run(["git", "rev-parse", "HEAD:pipeline"], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pipeline"], capture_output=True, text=True,
                               check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (tree + ("+modified" if dirty else "")) or "unknown"


def model_card(info: dict) -> str:
    """The folder's README.md (markdown) from the train stage's ``info``."""
    params = info.get("params", {})
    models, sampling, train = params.get("models", {}), params.get("sampling", {}), params.get("train", {})
    q, p = models.get("query_prefix", ""), models.get("passage_prefix", "")
    untrained = info.get("select_by") == "untrained"
    sources = ", ".join(info.get("sources") or ["see params.gather"])
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, feature-extraction, retrieval]",
        "---",
        "",
        "# Multilingual retrieval encoder" + (" (untrained base model)" if untrained else ""),
        "",
        ("The base model unchanged (`train.steps: 0`), saved with the pipeline's embedding recipe."
         if untrained else "The base model fine-tuned on the pipeline's training batches."),
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{models.get('encoder', info.get('base', 'unknown'))}`"
        + (f" (revision `{models['revision']}`)" if models.get("revision") else "") + " |",
        f"| training data | `data/batches/*.parquet` (sources: {sources}) |",
        f"| languages | {', '.join(params.get('languages', [])) or 'unknown'} |",
        f"| strategy | `{sampling.get('mode', 'unknown')}` (sampling.mode) |",
        f"| alpha | {sampling.get('alpha', 'unknown')} |",
        f"| seed | {params.get('seed', info.get('seed', 'unknown'))} |",
        f"| steps | {info.get('steps_run', train.get('steps', 'unknown'))} run, step {info.get('best_step', 'unknown')}"
        f" kept (select_by: {info.get('select_by', 'unknown')}) |",
        f"| pooling | {models.get('pooling', 'mean')}, L2-normalised |",
        f"| prompts | query `{q!r}`, passage `{p!r}` |",
        f"| code (git tree of `pipeline/`) | `{info.get('git_revision', 'unknown')}` |",
        "",
        "## Metrics (the pipeline's dev set, `data/split/dev`, mAP)",
        "",
        "| mono | cross | multi | score |",
        "|---|---|---|---|",
        "| " + " | ".join(str(info.get(f"dev_{k}", "n/a")) for k in ("mono_map", "cross_map", "multi_map", "score"))
        + " |",
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer(\"models/trained\")",
        "q = model.encode([\"...\"], prompt_name=\"query\")     # adds the query prefix",
        "d = model.encode([\"...\"], prompt_name=\"passage\")   # adds the passage prefix",
        "```",
        "",
        "Forgetting `prompt_name` gives other embeddings. `training.json` holds the params and the md5 of"
        " the input files that made this model.",
        "",
    ]
    return "\n".join(lines)


def write_st_folder(out_dir: str | Path, info: dict, max_length: int) -> None:
    """sentence-transformers files (prompts and pooling from ``info['params']['models']``) and README.md."""
    models = info.get("params", {}).get("models", {})
    write_sentence_transformers_files(out_dir, models.get("pooling", "mean"), models.get("query_prefix", ""),
                                      models.get("passage_prefix", ""), max_length)
    (Path(out_dir) / "README.md").write_text(model_card(info), encoding="utf-8")
