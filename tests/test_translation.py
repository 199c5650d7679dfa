"""Translation: sentence splitting, NLLB codes, CTranslate2 NLLB == Hugging Face generate on a tiny
locally built model, the real Argos zh->en model's chrF on MLQA-R, resuming after a kill, the stage;
devices and batch types reaching CTranslate2, shards that resume and merge to the unsharded run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import pipeline.params
from pipeline.params import TranslateParams, TranslationModelSpec, load_params
from pipeline.translation import (
    NLLB_CODES,
    OUT_COLUMNS,
    NLLBTranslator,
    Translator,
    build_translator,
    convert_nllb,
    join_sentences,
    nllb_code,
    reference_pairs,
    split_sentences,
    translate_pairs,
)
from pipeline.translation_work import translate_resumable

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("PIPELINE_MIRROR", ROOT.parent / "shared"))
TINY_SENTENCES = [
    "How many people live in Berlin?", "The quick brown fox jumps over the lazy dog.",
    "Where is the capital of France?", "Paris is a large city in Europe.",
    "Rivers flow into the sea and mountains rise above the clouds.",
]


# --- sentence splitting and language codes -------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Hello there. How are you?  Fine! 3.14 is pi", ["Hello there.", "How are you?", "Fine!", "3.14 is pi"]),
    ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
    ("Wait... what?! Yes.", ["Wait... what?!", "Yes."]),  # no end before a lower-case letter
    ("Well… Maybe. OK", ["Well…", "Maybe.", "OK"]),
    ("Dr. Smith met J. R. R. Tolkien. Then he left.", ["Dr. Smith met J. R. R. Tolkien.", "Then he left."]),
    ("你好。我很好！真的吗？是", ["你好。", "我很好！", "真的吗？", "是"]),
    ("他说：“走。”然后走了。", ["他说：“走。”", "然后走了。"]),
    ("यह एक वाक्य है। यह दूसरा है।", ["यह एक वाक्य है।", "यह दूसरा है।"]),
    ("ما هذا؟ لا شيء.", ["ما هذا؟", "لا شيء."]),
    ("no boundary here", ["no boundary here"]),
    ("  padded text  ", ["padded text"]),
    ("example.com and 1.5 stay whole", ["example.com and 1.5 stay whole"]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_join_sentences_spacing():
    assert join_sentences(["A.", "B."], "en") == "A. B."
    assert join_sentences(["你好。", "是"], "zh") == "你好。是"
    assert join_sentences(["ก", "ข"], "th") == "กข"
    assert join_sentences(["は。", "い"], "jpn_Jpan") == "は。い"
    assert join_sentences([], "de") == ""


def test_nllb_codes():
    expected = {"ar": "arb_Arab", "zh": "zho_Hans", "de": "deu_Latn", "es": "spa_Latn", "hi": "hin_Deva",
                "vi": "vie_Latn", "ru": "rus_Cyrl", "th": "tha_Thai", "tr": "tur_Latn", "el": "ell_Grek",
                "en": "eng_Latn", "fr": "fra_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "it": "ita_Latn",
                "pt": "por_Latn", "nl": "nld_Latn", "pl": "pol_Latn", "id": "ind_Latn", "fa": "pes_Arab",
                "he": "heb_Hebr", "bn": "ben_Beng", "ur": "urd_Arab", "sw": "swh_Latn", "fi": "fin_Latn"}
    for iso, code in expected.items():
        assert nllb_code(iso) == NLLB_CODES[iso] == code
    assert nllb_code("deu_Latn") == "deu_Latn"
    with pytest.raises(ValueError, match="no NLLB-200 code for language 'xx'"):
        nllb_code("xx")


# --- a tiny NLLB-architecture model: CTranslate2 must equal transformers generate -----------------

@pytest.fixture(scope="session")
def tiny_nllb(tmp_path_factory):
    """A random M2M100 model with a locally trained BPE vocabulary and NLLB's language codes,
    saved as a Hugging Face folder and converted to CTranslate2 float32."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    root = tmp_path_factory.mktemp("tiny-nllb")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator(TINY_SENTENCES, trainers.BpeTrainer(vocab_size=200,
                                                               special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    spec = json.loads(bpe.to_str())["model"]
    tok = NllbTokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]])
    torch.manual_seed(0)
    cfg = M2M100Config(vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=2,
                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                       decoder_ffn_dim=128, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       decoder_start_token_id=tok.eos_token_id, init_std=0.3, dropout=0.0)
    model = M2M100ForConditionalGeneration(cfg).eval()
    # Large random weights make the output depend on the input; zeroing the embeddings of the language
    # codes (except the two used) keeps them out of the greedy output, so outputs are readable pieces.
    keep = {tok.convert_tokens_to_ids(c) for c in ("eng_Latn", "fra_Latn")}
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        for i in range(len(spec["vocab"]), len(tok)):
            if i not in keep:
                emb[i] = 0
    hf_dir = root / "hf"
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    ct2_dir = convert_nllb(hf_dir, root / "ct2", quantization="float32")
    return hf_dir, ct2_dir, model


def test_convert_nllb_layout(tiny_nllb):
    _, ct2_dir, _ = tiny_nllb
    assert (ct2_dir / "model.bin").exists() and (ct2_dir / "tokenizer" / "tokenizer.json").exists()
    assert json.loads((ct2_dir / "source.json").read_text())["quantization"] == "float32"


def test_convert_nllb_refuses_pickle_checkpoints(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="has no safetensors weights"):
        convert_nllb(tmp_path / "hf", tmp_path / "ct2")
    assert not (tmp_path / "ct2").exists()


def test_nllb_ctranslate2_equals_hf_generate(tiny_nllb):
    import torch

    hf_dir, ct2_dir, model = tiny_nllb
    n = 12
    tr = NLLBTranslator(ct2_dir, None, "en", "fr", beam_size=1, max_batch_size=3, compute_type="float32",
                        intra_threads=1, max_decoding_length=n, progress=False)
    assert isinstance(tr, Translator)
    sentences = TINY_SENTENCES + ["Berlin is big.", "Where do rivers flow?", "The dog sleeps."]
    fra = tr.tokenizer.convert_tokens_to_ids("fra_Latn")
    hf_ids, hf_text = [], []
    for s in sentences:
        enc = tr.tokenizer(s, return_tensors="pt")
        assert tr.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())[0] == "eng_Latn"
        with torch.inference_mode():
            out = model.generate(**enc, forced_bos_token_id=fra, num_beams=1, do_sample=False, max_new_tokens=n)
        ids = out[0].tolist()[1:]  # drop the decoder start token
        ids = ids[: ids.index(tr.tokenizer.eos_token_id)] if tr.tokenizer.eos_token_id in ids else ids
        hf_ids.append(ids)
        hf_text.append(tr.tokenizer.decode(ids[1:], skip_special_tokens=True).strip())
    ct2_ids = [tr.tokenizer.convert_tokens_to_ids(t) for t in tr.translate_tokens(sentences)]
    assert ct2_ids == hf_ids
    assert all(ids[0] == fra and len(ids) > 1 for ids in ct2_ids)
    assert len(set(map(tuple, ct2_ids))) > 3, "outputs should depend on the input"
    assert tr.translate_sentences(sentences) == hf_text
    # texts are split into sentences, translated and joined back
    assert tr.translate([f"{sentences[0]} {sentences[1]}", "", sentences[2]]) == [
        f"{hf_text[0]} {hf_text[1]}", "", hf_text[2]]


def test_build_translator_nllb_converts_once(tiny_nllb, tmp_path):
    hf_dir, _, _ = tiny_nllb
    spec = TranslationModelSpec(kind="nllb", hub_id=str(hf_dir))
    settings = TranslateParams(targets={}, compute_type="float32", beam_size=1, batch_size=4, threads=1,
                               max_decoding_length=8)
    tr = build_translator(spec, settings, MIRROR, "en", "fr", tmp_path, progress=False)
    (converted,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    stamp = (converted / "model.bin").stat().st_mtime_ns
    again = build_translator(spec, settings, MIRROR, "en", "fr", tmp_path, progress=False)
    assert (converted / "model.bin").stat().st_mtime_ns == stamp
    assert again.translate(TINY_SENTENCES[:2]) == tr.translate(TINY_SENTENCES[:2])
    with pytest.raises(ValueError, match="no NLLB-200 code"):
        build_translator(spec, settings, MIRROR, "en", "xx", tmp_path, progress=False)


# --- the real Argos zh->en model on MLQA-R ---------------------------------------------------------

@pytest.mark.slow
def test_argos_zh_en_chrf_on_mlqa_r(tmp_path_factory, capsys):
    import sacrebleu

    data = MIRROR / "data" / "lareqa" / "mlqa-r"
    if not (MIRROR / "models" / "translate-zh_en-1_9.argosmodel").exists() or not data.is_dir():
        pytest.skip(f"the asset mirror {MIRROR} (Argos model, MLQA-R) is absent; set PIPELINE_MIRROR")

    def questions(lang):
        doc = json.loads((data / f"{lang}.json").read_text(encoding="utf-8"))
        return {q["id"]: q["question"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]}

    zh, en = questions("zh"), questions("en")
    ids = [i for i in zh if i in en][:60]
    params = load_params(ROOT / "params.yaml").translate
    tr = build_translator(params.models["argos-zh-en"], params, MIRROR, "zh", "en",
                          tmp_path_factory.mktemp("argos"), progress=False)
    assert tr.translate(["柏林有多少人口？"]) == ["How many people are there in Berlin?"]
    hyp = tr.translate([zh[i] for i in ids])
    chrf = sacrebleu.corpus_chrf(hyp, [[en[i] for i in ids]]).score
    with capsys.disabled():
        print(f"\nArgos zh->en chrF on the first {len(ids)} MLQA-R questions: {chrf:.2f}")
    assert chrf > 30
    with pytest.raises(ValueError, match="translates zh->en, not en->zh"):
        build_translator(params.models["argos-zh-en"], params, MIRROR, "en", "zh", tmp_path_factory.mktemp("x"))


# --- resuming after a kill ---------------------------------------------------------------------------

class Reverser:
    """A deterministic fake translator that records what it was asked to translate."""

    def __init__(self):
        self.seen: list[str] = []

    def translate(self, texts):
        self.seen.extend(texts)
        return [t[::-1].upper() for t in texts]


KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from pipeline.translation_work import translate_resumable

    class KillOnSecondChunk:
        calls = 0
        def translate(self, texts):
            self.calls += 1
            if self.calls == 2:  # the first chunk is on disk by now
                os.kill(os.getpid(), signal.SIGKILL)
            return [t[::-1].upper() for t in texts]

    texts = json.loads(open(sys.argv[1], encoding="utf-8").read())
    translate_resumable(texts, KillOnSecondChunk(), sys.argv[2], chunk_size=4)
""")


def test_translate_resumable_resumes_after_kill(tmp_path):
    texts = [f"sentence number {i}." for i in range(10)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "killer.py").write_text(KILLER)
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "texts.json"), str(work)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["chunk-00000.json"]
    first = (work / "chunk-00000.json").read_bytes()

    fake = Reverser()
    resumed = translate_resumable(texts, fake, work, chunk_size=4)
    assert fake.seen == texts[4:], "the finished chunk must be reused, not retranslated"
    assert (work / "chunk-00000.json").read_bytes() == first
    uninterrupted = translate_resumable(texts, Reverser(), tmp_path / "fresh", chunk_size=4)
    assert resumed == uninterrupted == [t[::-1].upper() for t in texts]

    again = Reverser()
    assert translate_resumable(texts, again, work, chunk_size=4) == resumed and again.seen == []
    changed = texts[:5] + ["a changed text."] + texts[6:]
    fake = Reverser()
    assert translate_resumable(changed, fake, work, chunk_size=4)[5] == ".TXET DEGNAHC A"
    assert fake.seen == changed[4:8], "only the chunk whose input changed is retranslated"
    fake = Reverser()
    translate_resumable(changed, fake, work, chunk_size=4, fingerprint="another model")
    assert fake.seen == changed


# --- pair tables and the stage -------------------------------------------------------------------------

def _pairs() -> pd.DataFrame:
    rows = [("p1", "en", "Who won?", "Anna won. She was fast.", ""),
            ("p2", "en", "Where is it?", "It is here.", "Context one. Two."),
            ("p3", "en", "Who won?", "Bob did.", ""),
            ("p1", "de", "Wer gewann?", "Anna gewann.", ""),
            ("p9", "de", "Ohne Paar?", "Kein Englisch.", "")]
    df = pd.DataFrame(rows, columns=["pair_id", "lang", "question", "passage", "context"])
    return df.assign(source="mlqa-r", system=["source"] * 3 + ["reference"] * 2)[
        ["pair_id", "source", "lang", "question", "passage", "context", "system"]]


def test_reference_pairs():
    out = reference_pairs(_pairs(), "de")
    assert list(out.columns) == OUT_COLUMNS
    assert out.to_dict("records") == [{"pair_id": "p1", "source": "mlqa-r", "lang": "de", "question": "Wer gewann?",
                                       "passage": "Anna gewann.", "context": "", "system": "reference",
                                       "src_question": "Who won?", "src_passage": "Anna won. She was fast."}]
    with pytest.raises(ValueError, match="pairs: no rows in language 'fr'"):
        reference_pairs(_pairs(), "fr")
    with pytest.raises(ValueError, match=r"x.parquet: missing columns \['system'\]"):
        reference_pairs(_pairs().drop(columns="system"), "de", where="x.parquet")


def test_translate_pairs_translates_each_text_once(tmp_path):
    fake = Reverser()
    pairs = _pairs()
    pairs.loc[2, "context"] = None
    out = translate_pairs(pairs, "xx", fake, "fake", tmp_path, chunk_size=2)
    assert list(out.columns) == OUT_COLUMNS and len(out) == 3
    assert out["question"].tolist() == ["?NOW OHW", "?TI SI EREHW", "?NOW OHW"]
    assert out["context"].tolist()[:2] == ["", ".OWT .ENO TXETNOC"] and pd.isna(out["context"].iloc[2])
    assert out["src_passage"].tolist() == ["Anna won. She was fast.", "It is here.", "Bob did."]
    assert set(out["lang"]) == {"xx"} and set(out["system"]) == {"fake"}
    assert sorted(fake.seen) == sorted({*_pairs()["question"][:3], *_pairs()["passage"][:3], "Context one. Two."})


def test_stage_reference_and_ctranslate2(tiny_nllb, tmp_path, monkeypatch):
    from pipeline.stages import translate as stage

    hf_dir, _, _ = tiny_nllb
    params = load_params(ROOT / "params.yaml").model_dump()
    params["translate"]["targets"] = {"de": {"backend": "reference"},
                                      "fr": {"backend": "ctranslate2", "model": "tiny"}}
    params["translate"]["models"] = {"tiny": {"kind": "nllb", "hub_id": str(hf_dir)}}
    params["translate"].update(compute_type="float32", beam_size=1, threads=1, max_decoding_length=8)
    params["filter"]["roundtrip"] = {}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    monkeypatch.setattr(pipeline.params, "PARAMS_FILE", tmp_path / "params.yaml")
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    _pairs().to_parquet(tmp_path / "pairs.parquet", index=False)
    args = ["--pairs", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work")]

    stage.main(["--lang", "de", *args])
    de = pd.read_parquet(tmp_path / "out" / "de.parquet")
    assert de["pair_id"].tolist() == ["p1"] and set(de["system"]) == {"reference"}

    stage.main(["--lang", "fr", *args])
    fr = pd.read_parquet(tmp_path / "out" / "fr.parquet")
    assert list(fr.columns) == OUT_COLUMNS and len(fr) == 3 and set(fr["system"]) == {"ctranslate2:tiny"}
    assert fr["question"].str.len().gt(0).all()
    assert not (tmp_path / "work" / "fr").exists(), "the work folder is removed after success"

    with pytest.raises(SystemExit, match="'es' is not in params.yaml translate.targets"):
        stage.main(["--lang", "es", *args])

    # reference with fill: the human translation where the source carries one, the model for the rest
    params["translate"]["targets"]["de"] = {"backend": "reference", "fill": "tiny"}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    stage.main(["--lang", "de", *args])
    filled = pd.read_parquet(tmp_path / "out" / "de.parquet")
    assert list(filled.columns) == OUT_COLUMNS and len(filled) == 3
    assert filled.iloc[0].to_dict() == de.iloc[0].to_dict(), "the human translation is kept as it was"
    assert filled["system"].tolist() == ["reference", "ctranslate2:tiny", "ctranslate2:tiny"]
    assert sorted(filled["pair_id"]) == sorted(fr["pair_id"])
    assert not (tmp_path / "work" / "de").exists()

    # fill_sources: only the pairs of the named sources are filled (p3 comes from another source here)
    two_sources = _pairs()
    two_sources.loc[two_sources["pair_id"] == "p3", "source"] = "squad-train"
    two_sources.to_parquet(tmp_path / "pairs.parquet", index=False)
    params["translate"]["targets"]["de"] = {"backend": "reference", "fill": "tiny", "fill_sources": ["squad-train"]}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    stage.main(["--lang", "de", *args])
    some = pd.read_parquet(tmp_path / "out" / "de.parquet")
    assert some["pair_id"].tolist() == ["p1", "p3"] and some["system"].tolist() == ["reference", "ctranslate2:tiny"]


# --- devices, batch types and shards -----------------------------------------------------------------

def _argos(tmp_path_factory, **overrides):
    """The real Argos zh->en model with the offline default settings and ``overrides``."""
    if not (MIRROR / "models" / "translate-zh_en-1_9.argosmodel").exists():
        pytest.skip(f"the asset mirror {MIRROR} (Argos model) is absent; set PIPELINE_MIRROR")
    params = load_params(ROOT / "params.yaml").translate
    settings = TranslateParams(**{**params.model_dump(), **overrides})
    return build_translator(params.models["argos-zh-en"], settings, MIRROR, "zh", "en",
                            tmp_path_factory.mktemp("argos"), progress=False)


ZH = ["柏林有多少人口？", "长城有多长？", "谁发明了电话？", "北京是中国的首都。", "他在一九九八年出生于上海。",
      "这条河流入大海。", "学生们在图书馆里读书。", "今天天气很好。", "我们明天去公园吧。", "这本书是谁写的？"]


@pytest.mark.parametrize("overrides, message", [
    ({"device": "tpu"}, "device"),
    ({"device_index": []}, "device_index"),
    ({"device_index": [-1]}, "device_index"),
    ({"device": "cuda", "device_index": [0, 1, 0]}, "lists a device twice"),
    ({"device": "cpu", "device_index": [1]}, "the CPU has one device"),
    ({"batch_type": "sentences"}, "batch_type"),
    ({"batch_type": "tokens", "batch_size": 32}, "batch_size counts padded source tokens"),
    ({"shards": 0}, "shards"),
    ({"shards": True}, "a boolean"),
])
def test_translate_device_batch_and_shard_params_are_validated(overrides, message):
    base = load_params(ROOT / "params.yaml").translate.model_dump()
    with pytest.raises(ValueError, match=message):
        TranslateParams(**{**base, **overrides})
    ok = TranslateParams(**{**base, "device": "cuda", "device_index": [0, 1, 2, 3], "batch_type": "tokens",
                            "batch_size": 2048, "shards": 8})
    assert ok.device_index == [0, 1, 2, 3] and ok.shards == 8
    assert (base["device"], base["device_index"], base["batch_type"], base["shards"]) == ("cpu", [0], "examples", 1)


class FakeCT2:
    """Stands in for the ``ctranslate2`` module: records the Translator's arguments and every
    ``translate_batch`` call; 'translates' a sentence to its tokens reversed."""

    def __init__(self, cuda_devices=0):
        self.cuda_devices, self.init, self.calls = cuda_devices, None, []

    def get_cuda_device_count(self):
        return self.cuda_devices

    def Translator(self, model_dir, **kwargs):  # noqa: N802 (the ctranslate2 name)
        self.init = {"model_dir": model_dir, **kwargs}
        fake = self

        class Result:
            def __init__(self, tokens):
                self.hypotheses = [tokens[::-1]]

            def result(self):
                return self

        class Model:
            def translate_batch(self, tokens, **options):
                fake.calls.append({"n": len(tokens), **options})
                return [Result(t) for t in tokens]

        return Model()


class WordTranslator:
    """A CTranslate2Translator over whitespace tokens (no model files)."""

    def __new__(cls, **options):
        from pipeline.translation import CTranslate2Translator

        class Words(CTranslate2Translator):
            def _tokenize(self, sentences):
                return [s.split() for s in sentences]

            def _detokenize(self, tokens):
                return " ".join(tokens)

        tr = Words(progress=False, **options)
        tr._load("model-dir")
        return tr


def test_device_index_and_batch_type_reach_ctranslate2(monkeypatch):
    sentences = [" ".join(f"w{i}" for i in range(n)) for n in (3, 9, 1, 5, 7, 2, 8)]
    expected = [" ".join(reversed(s.split())) for s in sentences]

    fake = FakeCT2()
    monkeypatch.setitem(sys.modules, "ctranslate2", fake)
    tr = WordTranslator(max_batch_size=3, intra_threads=2)  # the defaults: today's calls
    assert tr.translate_sentences(sentences) == expected
    assert fake.init == {"model_dir": "model-dir", "device": "cpu", "device_index": [0], "compute_type": "int8",
                         "inter_threads": 1, "intra_threads": 2}
    assert [c["n"] for c in fake.calls] == [3, 3, 1], "length-sorted batches of max_batch_size sentences"
    assert {(c["max_batch_size"], c["batch_type"], c["asynchronous"]) for c in fake.calls} == {(3, "examples", False)}

    fake = FakeCT2(cuda_devices=4)
    monkeypatch.setitem(sys.modules, "ctranslate2", fake)
    tr = WordTranslator(max_batch_size=3, device="cuda", device_index=[0, 1, 2, 3], compute_type="float16")
    assert tr.replicas == 4 and tr.translate_sentences(sentences) == expected
    assert fake.init["device"] == "cuda" and fake.init["device_index"] == [0, 1, 2, 3]
    assert [c["n"] for c in fake.calls] == [3, 3, 1] and all(c["asynchronous"] for c in fake.calls), \
        "the same batches, queued at once so that every GPU takes one"

    fake = FakeCT2(cuda_devices=2)
    monkeypatch.setitem(sys.modules, "ctranslate2", fake)
    tr = WordTranslator(max_batch_size=1024, batch_type="tokens", device="cuda", device_index=[0, 1])
    assert tr.translate_sentences(sentences) == expected
    assert [(c["n"], c["max_batch_size"], c["batch_type"]) for c in fake.calls] == [(7, 1024, "tokens")], \
        "tokens: one call; CTranslate2 cuts it into token batches and spreads them over the GPUs"

    monkeypatch.setitem(sys.modules, "ctranslate2", FakeCT2(cuda_devices=1))
    with pytest.raises(RuntimeError, match=r"device_index \[0, 1\], but CTranslate2 sees 1 CUDA device"):
        WordTranslator(device="cuda", device_index=[0, 1])
    with pytest.raises(ValueError, match="batch_type must be"):
        WordTranslator(batch_type="words")


@pytest.mark.slow
def test_argos_runs_on_cpu_device_index_0_and_by_tokens(tmp_path_factory):
    tr = _argos(tmp_path_factory, device="cpu", device_index=[0])
    assert (tr.model.device, tr.model.device_index) == ("cpu", [0])
    by_examples = tr.translate(ZH)
    assert by_examples[0] == "How many people are there in Berlin?"
    tr.batch_type, tr.max_batch_size = "tokens", 256
    by_tokens = tr.translate(ZH)
    assert len(by_tokens) == len(ZH) and by_tokens[0] == by_examples[0]
    # int8 results may depend on the batch a sentence is in; most are the same
    assert sum(a == b for a, b in zip(by_tokens, by_examples, strict=True)) >= len(ZH) - 2


def test_argos_on_cuda(tmp_path_factory):
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("no CUDA device: CTranslate2 sees no GPU on this machine")
    gpus = list(range(ctranslate2.get_cuda_device_count()))
    tr = _argos(tmp_path_factory, device="cuda", device_index=gpus, compute_type="int8_float16")
    assert tr.model.device == "cuda" and tr.translate(ZH[:1]) == ["How many people are there in Berlin?"]
    assert len(tr.translate(ZH)) == len(ZH)


def test_shard_chunks_partition_the_chunks():
    from pipeline.translation_work import shard_chunks

    for n_chunks in range(0, 12):
        for shards in range(1, 6):
            ranges = [shard_chunks(n_chunks, i, shards) for i in range(shards)]
            assert [k for r in ranges for k in r] == list(range(n_chunks))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    with pytest.raises(ValueError, match="0 <= shard < shards"):
        shard_chunks(4, 2, 2)


SHARD_KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from pipeline.translation_work import translate_shard

    class KillOnSecondChunk:
        calls = 0
        def translate(self, texts):
            self.calls += 1
            if self.calls == 2:  # the shard's first chunk is on disk by now
                os.kill(os.getpid(), signal.SIGKILL)
            return [t[::-1].upper() for t in texts]

    texts = json.loads(open(sys.argv[1], encoding="utf-8").read())
    translate_shard(texts, KillOnSecondChunk(), sys.argv[2], chunk_size=3, shard=1, shards=3, fingerprint="fp")
""")


class NoModel:
    def translate(self, texts):
        raise AssertionError(f"every chunk was in a shard file, yet {len(texts)} texts were translated")


def test_shard_killed_midway_resumes_and_shards_merge_to_the_unsharded_run(tmp_path):
    from pipeline.translation_work import read_shards, shard_missing, translate_shard, write_shard

    texts = [f"sentence number {i}." for i in range(20)]  # 7 chunks of 3: shards of 2, 2 and 3 chunks
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "killer.py").write_text(SHARD_KILLER)
    work, shard_dir = tmp_path / "work", tmp_path / "shards"
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "texts.json"), str(work)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["chunk-00002.json"], "shard 1 of 3 starts at chunk 2"

    fake = Reverser()
    records = translate_shard(texts, fake, work, 3, 1, 3, "fp")
    assert fake.seen == texts[9:12], "the killed shard resumes after its finished chunk"
    assert [r["index"] for r in records] == [2, 3]
    write_shard(shard_dir, 1, 3, records)
    for shard in (0, 2):  # the other shards, e.g. on other machines
        write_shard(shard_dir, shard, 3, translate_shard(texts, Reverser(), tmp_path / f"work{shard}", 3, shard, 3,
                                                          "fp"))
    known = read_shards(shard_dir)
    assert sorted(p.name for p in shard_dir.iterdir()) == [f"shard-00{i}-of-003.json" for i in range(3)]
    assert all(shard_missing(texts, 3, i, 3, "fp", known) == 0 for i in range(3))
    assert shard_missing(texts, 3, 0, 3, "other settings", known) == 2, "other settings: other chunks"

    merged = translate_resumable(texts, NoModel(), tmp_path / "merge", 3, "fp", known=known)
    unsharded = translate_resumable(texts, Reverser(), tmp_path / "plain", 3, "fp")
    assert merged == unsharded == [t[::-1].upper() for t in texts]
    fake = Reverser()  # a missing shard is translated by the merge itself
    (shard_dir / "shard-002-of-003.json").unlink()
    assert translate_resumable(texts, fake, tmp_path / "merge2", 3, "fp", known=read_shards(shard_dir)) == merged
    assert fake.seen == texts[12:]


@pytest.mark.slow
def test_argos_shards_merge_to_the_unsharded_run(tmp_path_factory, tmp_path):
    """The real model: chunks translated in three shards (separate translators, as on three machines)
    merge to exactly the unsharded output."""
    from pipeline.translation_work import read_shards, translate_shard, write_shard

    unsharded = translate_resumable(ZH, _argos(tmp_path_factory), tmp_path / "plain", 4, "fp")
    for shard in range(3):
        records = translate_shard(ZH, _argos(tmp_path_factory), tmp_path / f"work{shard}", 4, shard, 3, "fp")
        write_shard(tmp_path / "shards", shard, 3, records)
    assert translate_resumable(ZH, NoModel(), tmp_path / "merge", 4, "fp",
                               known=read_shards(tmp_path / "shards")) == unsharded


def test_stage_shards_on_separate_runs_then_merge(tiny_nllb, tmp_path, monkeypatch):
    from pipeline.stages import translate as stage

    hf_dir, _, _ = tiny_nllb
    params = load_params(ROOT / "params.yaml").model_dump()
    params["translate"]["targets"] = {"fr": {"backend": "ctranslate2", "model": "tiny"}, "de": {"backend": "reference"}}
    params["translate"]["models"] = {"tiny": {"kind": "nllb", "hub_id": str(hf_dir)}}
    params["translate"].update(compute_type="float32", beam_size=1, threads=1, max_decoding_length=8, chunk_size=2)
    params["filter"]["roundtrip"] = {}
    monkeypatch.setattr(pipeline.params, "PARAMS_FILE", tmp_path / "params.yaml")
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    _pairs().to_parquet(tmp_path / "pairs.parquet", index=False)

    def run(out, *extra, shards=1):
        params["translate"]["shards"] = shards
        (tmp_path / "params.yaml").write_text(json.dumps(params))
        stage.main(["--lang", "fr", "--pairs", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / out),
                    "--work", str(tmp_path / "work"), "--shards-dir", str(tmp_path / "shards"), *extra])

    run("plain")  # 8 distinct texts: 4 chunks of 2
    assert not (tmp_path / "shards").exists(), "shards: 1 writes no shard files"
    run("unused", "--shard", "0/2", shards=2)  # e.g. machine A
    run("unused", "--shard", "1/2", shards=2)  # machine B
    assert sorted(p.name for p in (tmp_path / "shards" / "fr").iterdir()) == ["shard-000-of-002.json",
                                                                             "shard-001-of-002.json"]
    assert not (tmp_path / "unused").exists() and not list((tmp_path / "work" / "fr").glob("chunk-*"))

    def no_model(*a, **k):
        raise AssertionError("the merge of finished shards must not load a model")

    monkeypatch.setattr(stage, "build_translator", no_model)
    run("merged", shards=2)
    assert (tmp_path / "merged" / "fr.parquet").read_bytes() == (tmp_path / "plain" / "fr.parquet").read_bytes()
    run("merged4", shards=4)  # another shard count: the chunks are the same, so the shard files still serve
    assert (tmp_path / "merged4" / "fr.parquet").read_bytes() == (tmp_path / "plain" / "fr.parquet").read_bytes()
    run("unused", "--shard", "0/2", shards=2)  # a reference target has nothing to shard
    with pytest.raises(SystemExit):
        run("unused", "--shard", "2/2")
