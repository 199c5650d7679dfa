"""The dual-encoder training loop and the assemble/train stages, on a tiny BERT built here."""
import json
import math

import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT
from pipeline.batching import generator, hybrid_batches
from pipeline.params import EncoderParams, TrainParams

LANGS = ["en", "de"]
N = 48
WORDS = {"en": ("what", "is", "the", "answer", "about"), "de": ("was", "ist", "die", "antwort", "zu")}


def pair_table(n: int = N) -> pd.DataFrame:
    """Queries and passages share a topic token t{i} (and a language's function words)."""
    rows = []
    for i in range(n):
        for lang in LANGS:
            w = WORDS[lang]
            rows.append({"pair_id": i, "source": "synthetic", "lang": lang, "question": f"{w[0]} {w[1]} t{i}",
                         "passage": f"{w[2]} {w[3]} {w[4]} t{i} {lang}{i % 7}", "context": "", "system": "ref"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer BERT (hidden 32) with a word-level tokenizer saved as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted({w for ws in WORDS.values() for w in ws} | {"query", "passage", ":"}
                   | {f"t{i}" for i in range(N)} | {f"{lang}{k}" for lang in LANGS for k in range(7)})
    vocab = {t: i for i, t in enumerate(special + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    out = tmp_path_factory.mktemp("tiny") / "base"
    BertModel(cfg, add_pooling_layer=False).save_pretrained(out)
    fast.save_pretrained(out)
    (out / "source.json").write_text('{"encoder": "tiny"}\n')
    return out


def text_batches_of(n_batches=6, size=8, seed=1):
    from pipeline.dual_encoder import text_batches

    return text_batches(hybrid_batches(pair_table(), LANGS, n_batches, size, 0.5, generator(seed, 1)))


PARAMS = TrainParams(steps=12, lr=2e-3, warmup_ratio=0.1, max_length=32, eval_every=4, patience=3, threads=1,
                     select_by="val_loss")
ENCODING = EncoderParams()


def run(model_dir, params=PARAMS, seed=7, **kw):
    from pipeline.training import train

    return train(model_dir, text_batches_of(), text_batches_of(2, seed=2), params, ENCODING, seed,
                 device=torch.device("cpu"), progress=False, **kw)


def test_a_few_steps_lower_the_training_loss(tiny_model):
    from pipeline.dual_encoder import DualEncoder
    from pipeline.model_io import load_encoder

    batches = text_batches_of()
    before = DualEncoder(*load_encoder(tiny_model, torch.device("cpu")), max_length=32).mean_loss(batches, 20.0)
    model, tok, metrics = run(tiny_model, PARAMS.model_copy(update={"steps": 18, "patience": 10}))
    after = DualEncoder(model, tok, max_length=32).mean_loss(batches, 20.0)
    assert after < before - 0.1, (before, after)
    assert metrics["steps_run"] == 18 and metrics["val_loss"] <= metrics["initial_val_loss"]
    assert metrics["trainable_params"] + metrics["frozen_params"] == metrics["total_params"]


def test_cpu_training_is_deterministic(tiny_model):
    a, _, ma = run(tiny_model)
    b, _, mb = run(tiny_model)
    c, _, _ = run(tiny_model, seed=8)  # another dropout stream
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert ma["val_loss"] == mb["val_loss"]
    assert not torch.are_deterministic_algorithms_enabled()  # global state restored


def test_frozen_embeddings_stay_and_no_decay_groups(tiny_model):
    from pipeline.model_io import load_encoder
    from pipeline.training import parameter_groups

    base, _ = load_encoder(tiny_model, torch.device("cpu"))
    model, _, _ = run(tiny_model)
    assert torch.equal(model.get_input_embeddings().weight, base.get_input_embeddings().weight)
    decay, plain = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in plain["params"])
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert "embeddings.word_embeddings.weight" not in {names[id(p)] for p in decay["params"] + plain["params"]}


def test_hard_negatives_are_encoded_as_extra_passages(tiny_model):
    """A batch's hard negatives (any number per row, none included) are extra columns of every query's scores:
    the training loss equals InfoNCE computed by hand from the separately embedded texts."""
    from pipeline.loss import info_nce
    from pipeline.dual_encoder import DualEncoder, text_batches
    from pipeline.model_io import load_encoder
    from pipeline.selection import embed_all
    from pipeline.training import train

    df = hybrid_batches(pair_table(), LANGS, 3, 8, 0.5, generator(1, 1))
    df["hard_negatives"] = [[f"{t} x{k}" for k in range(i % 3)] for i, t in enumerate(df["passage"])]
    batches = text_batches(df, hard_negatives=True)
    first = df[df["batch_id"] == 0]
    assert batches[0].hard_negatives == [t for row in first["hard_negatives"] for t in row]
    assert len(batches[0].hard_negatives) != len(batches[0])  # not one per row
    enc = DualEncoder(*load_encoder(tiny_model, torch.device("cpu")), max_length=32)
    enc.model.eval()
    b = batches[0]
    with torch.no_grad():
        got = enc.loss(b, 20.0).item()
        q, p, hn = (embed_all(enc, texts, prefix) for texts, prefix in
                    ((b.queries, enc.query_prefix), (b.passages, enc.passage_prefix),
                     (b.hard_negatives, enc.passage_prefix)))
        scores = torch.cat([q @ p.T, q @ hn.T], dim=1) * 20.0  # unit vectors: inner product = cosine
        by_hand = (torch.logsumexp(scores, dim=1) - scores.diagonal()).mean().item()
    assert got == pytest.approx(by_hand, abs=1e-4)
    assert info_nce(q, p, 20.0, hn).item() == pytest.approx(by_hand, abs=1e-4)
    assert enc.loss(text_batches(df)[0], 20.0).item() < got  # fewer negatives, lower loss
    _, _, m = train(tiny_model, batches, batches[:1], PARAMS.model_copy(update={"steps": 2, "hard_negatives": True}),
                    ENCODING, 7, device=torch.device("cpu"), progress=False)
    assert m["steps_run"] == 2
    with pytest.raises(ValueError, match="no 'hard_negatives' column"):
        text_batches(df.drop(columns="hard_negatives"), hard_negatives=True)


def test_bf16_and_micro_batches_give_the_fp32_loss(tiny_model):
    """train.precision / train.micro_batch change rounding and padding only (dropout off here)."""
    from pipeline.dual_encoder import DualEncoder
    from pipeline.model_io import load_encoder

    enc = DualEncoder(*load_encoder(tiny_model, torch.device("cpu")), max_length=32)
    enc.model.eval()
    batch = text_batches_of()[0]
    with torch.no_grad():
        ref = enc.loss(batch, 20.0).item()
        assert enc.loss(batch, 20.0, "fp32", 3).item() == pytest.approx(ref, abs=1e-5)  # padding is masked
        assert enc.loss(batch, 20.0, "bf16", 3).item() == pytest.approx(ref, rel=0.05, abs=0.02)
    # gradients flow to float32 weights under bf16 autocast
    enc.loss(batch, 20.0, "bf16", 3).backward()
    grads = [p.grad for p in enc.model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_fp32_training_is_deterministic_and_checkpointing_changes_only_memory(tiny_model):
    params = PARAMS.model_copy(update={"precision": "fp32", "micro_batch": None, "steps": 4})
    a, _, ma = run(tiny_model, params)
    b, _, mb = run(tiny_model, params)
    c, _, mc = run(tiny_model, params.model_copy(update={"gradient_checkpointing": True}))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.allclose(sa[k], sc[k], atol=1e-5) for k in sa)  # the same dropout draws, recomputed
    assert not c.is_activation_checkpointing  # switched off again before saving


def test_attention_dropout_zero_is_set_for_training_only_and_deterministic(tiny_model):
    """attention_dropout 0: every self-attention dropout is off (SDPA's fused kernel can run), hidden
    dropout stays, the config (and so the saved folder) keeps the model's value, runs repeat exactly."""
    from pipeline.model_io import load_encoder
    from pipeline.training import set_attention_dropout

    model, _ = load_encoder(tiny_model, torch.device("cpu"))
    assert model.config._attn_implementation == "sdpa"
    assert set_attention_dropout(model, 0.0) == 2
    params = PARAMS.model_copy(update={"attention_dropout": 0.0, "steps": 4})
    a, _, ma = run(tiny_model, params)
    b, _, mb = run(tiny_model, params)
    c, _, _ = run(tiny_model, PARAMS.model_copy(update={"steps": 4}))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and ma["val_loss"] == mb["val_loss"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # dropout 0.1 of the config otherwise
    drops = {n: m.p for n, m in a.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert all(p == 0.0 for n, p in drops.items() if n.endswith("attention.self.dropout"))
    assert any(p == 0.1 for n, p in drops.items() if not n.endswith("attention.self.dropout"))
    assert a.config.attention_probs_dropout_prob == 0.1


def test_snapshot_holds_only_trainable_tensors_and_restores_them_exactly(tiny_model):
    from pipeline.model_io import load_encoder
    from pipeline.selection import _restore, _snapshot
    from pipeline.training import freeze_word_embeddings

    model, _ = load_encoder(tiny_model, torch.device("cpu"))
    freeze_word_embeddings(model)
    snap = _snapshot(model)
    assert set(snap) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "embeddings.word_embeddings.weight" not in snap
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    assert all(snap[n].data_ptr() != p.data_ptr() for n, p in model.named_parameters() if n in snap)  # copies
    _restore(model, snap)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_release_memory_finds_glibcs_malloc_trim_once():
    import platform

    from pipeline import device

    device.release_memory()
    found = device._malloc_trim
    assert found is not None  # looked up on the first call: the function, or False where there is none
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert callable(found) and found(0) in (0, 1)  # malloc_trim returns 1 when memory was released
    device.release_memory()
    assert device._malloc_trim is found  # not looked up again


def test_learning_rate_schedule():
    from pipeline.training import warmup_then_decay

    f = warmup_then_decay(10, 0.2)  # 2 warm-up steps
    assert [round(f(s), 4) for s in range(10)] == [round(x, 4) for x in
                                                   [1 / 3, 2 / 3, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]]


def test_early_stopping_keeps_the_best_weights(tiny_model):
    # a learning rate this large makes the validation loss worse at once: stop, keep the base weights
    from pipeline.model_io import load_encoder

    params = PARAMS.model_copy(update={"lr": 5.0, "warmup_ratio": 0.0, "eval_every": 2, "patience": 2, "steps": 20})
    model, _, metrics = run(tiny_model, params)
    assert metrics["stopped_early"] and metrics["steps_run"] == 4 and metrics["best_step"] == 0
    base, _ = load_encoder(tiny_model, torch.device("cpu"))
    sb = base.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in model.state_dict().items())


def dev_set():
    from pipeline.devset import retrieval_set
    from pipeline.selection import DevSet

    table = pair_table()
    return DevSet(*retrieval_set(table[table["pair_id"] >= N - 8], LANGS))


def test_dev_selection_is_the_same_rule_for_every_mode_and_repeatable(tiny_model):
    from pipeline.dual_encoder import DualEncoder, text_batches
    from pipeline.model_io import load_encoder
    from pipeline.selection import evaluate_dev
    from pipeline.training import train

    dev = dev_set()
    base = evaluate_dev(DualEncoder(*load_encoder(tiny_model, torch.device("cpu")), max_length=32), dev)
    assert set(base) == {"dev_mono_map", "dev_cross_map", "dev_multi_map", "dev_score"}
    assert base["dev_score"] == pytest.approx((base["dev_mono_map"] + base["dev_cross_map"]
                                               + base["dev_multi_map"]) / 3, abs=1e-6)
    params = PARAMS.model_copy(update={"select_by": "dev", "steps": 8, "eval_every": 2, "patience": 10})
    kept = {}
    for alpha in (1.0, 0.0, 1.0):
        batches = text_batches(hybrid_batches(pair_table()[pair_table()["pair_id"] < N - 8], LANGS, 8, 8, alpha,
                                              generator(1, 1)))
        model, tok, m = train(tiny_model, batches, [], params, ENCODING, 7, device=torch.device("cpu"), progress=False,
                              dev=dev)
        assert m["select_by"] == "dev" and m["initial_dev_score"] == pytest.approx(base["dev_score"], abs=1e-6)
        scores = {e["step"]: e["dev_score"] for e in m["evaluations"]}
        assert sorted(scores) == [0, 2, 4, 6, 8]
        # the kept step is the best dev score (the earliest on a tie), and its weights are the ones returned
        best = max(scores.values())
        assert m["best_step"] == min(s for s, v in scores.items() if v == best) and m["dev_score"] == best
        again = evaluate_dev(DualEncoder(model, tok, max_length=32), dev)["dev_score"]
        assert again == pytest.approx(best, abs=1e-6)
        kept.setdefault(alpha, []).append((m["best_step"], m["dev_score"]))
    assert kept[1.0][0] == kept[1.0][1]  # identical runs keep the same step with the same score


def test_select_by_last_keeps_the_final_weights(tiny_model):
    params = PARAMS.model_copy(update={"select_by": "last", "lr": 5.0, "warmup_ratio": 0.0, "eval_every": 2,
                                       "patience": 1, "steps": 6})
    from pipeline.training import train

    model, _, m = train(tiny_model, text_batches_of(), [], params, ENCODING, 7, device=torch.device("cpu"),
                        progress=False, dev=dev_set())
    assert m["select_by"] == "last" and m["steps_run"] == 6 and m["best_step"] == 6 and not m["stopped_early"]
    assert m["dev_score"] == m["final_dev_score"]
    with pytest.raises(ValueError, match="needs the dev set"):
        train(tiny_model, text_batches_of(), [], PARAMS.model_copy(update={"select_by": "dev"}), ENCODING, 7,
              device=torch.device("cpu"))


def _stage_params(tmp_path, **train):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["languages"] = LANGS
    raw["index"]["datasets"] = []
    raw["sampling"].update(batch_size=8, batches=6)
    raw["train"].update({"steps": 4, "max_length": 32, "eval_every": 2, "threads": 1, **train})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_stages_assemble_and_train_outside_git(tiny_model, tmp_path, monkeypatch):
    import pipeline.params
    from pipeline.stages import assemble, split, train

    monkeypatch.chdir(tmp_path)  # no git, no dvc repo: dvclive must still log
    monkeypatch.setattr(pipeline.params, "PARAMS_FILE", _stage_params(tmp_path))
    (tmp_path / "data/filtered").mkdir(parents=True)
    pair_table().to_parquet("data/filtered/pairs.parquet", index=False)
    split.main([])
    assemble.main([])
    first = (tmp_path / "data/batches/train.parquet").read_bytes()
    assemble.main([])
    assert (tmp_path / "data/batches/train.parquet").read_bytes() == first
    stats = json.loads((tmp_path / "data/batches/stats.json").read_text())
    assert stats["train_batches"] == 6 and all(not isinstance(v, (dict, list)) for v in stats.values())

    train.main(["--base", str(tiny_model)])
    out = tmp_path / "models/trained"
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    for name in ("tokenizer.json", "tokenizer_config.json", "source.json"):
        assert (out / name).read_bytes() == (tiny_model / name).read_bytes()
    m = json.loads((tmp_path / "metrics/train.json").read_text())
    assert m["steps_run"] == 4 and m["select_by"] == "dev" and m["best_step"] in (0, 2, 4)
    assert not math.isnan(m["dev_score"]) and not set(m) & {"wall_s", "s_per_step", "eval_s"}
    assert set(json.loads((tmp_path / "logs/train.json").read_text())) == {"wall_s", "s_per_step", "eval_s"}
    info = json.loads((out / "training.json").read_text())
    assert [e["step"] for e in info["evaluations"]] == [0, 2, 4] and info["best_step"] == m["best_step"]
    assert (tmp_path / "dvclive/train/plots/metrics/train/loss.tsv").exists()
    assert (tmp_path / "dvclive/train/plots/metrics/dev/score.tsv").exists()
    assert not (tmp_path / "dvc.yaml").exists()
    from transformers import AutoModel

    AutoModel.from_pretrained(out, add_pooling_layer=False)  # loads as a plain HF folder
    assert (out / "modules.json").exists() and f"step {m['best_step']} kept" in (out / "README.md").read_text()
    assert set(info["params"]) == {"models", "encoder", "sampling", "train", "seed", "languages"} and info["inputs_md5"]


def test_steps_zero_copies_the_base_model(tiny_model, tmp_path, monkeypatch):
    import pipeline.params
    from pipeline.stages import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline.params, "PARAMS_FILE", _stage_params(tmp_path, steps=0))
    dev = dev_set()
    (tmp_path / "data/split/dev").mkdir(parents=True)
    dev.queries.to_parquet(tmp_path / "data/split/dev/queries.parquet")
    dev.pool.to_parquet(tmp_path / "data/split/dev/pool.parquet")
    train.main(["--base", str(tiny_model)])  # no batches needed
    out = tmp_path / "models/trained"
    added = {"1_Pooling", "2_Normalize", "modules.json", "sentence_bert_config.json",  # pipeline.st_format
             "config_sentence_transformers.json", "README.md", "training.json"}
    assert {p.name for p in out.iterdir()} == {p.name for p in tiny_model.iterdir()} | added
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in tiny_model.iterdir() if p.name not in added)
    m = json.loads((tmp_path / "metrics/train.json").read_text())
    assert m["steps_run"] == 0 and m["select_by"] == "untrained" and 0 < m["dev_score"] <= 1
    info = json.loads((out / "training.json").read_text())
    assert info["params"]["seed"] == info["seed"] and set(info["inputs_md5"]) == {
        "data/split/dev/pool.parquet", "data/split/dev/queries.parquet"}
    assert "untrained base model" in (out / "README.md").read_text()
    assert (tmp_path / "dvclive/train/plots/metrics").is_dir()


def test_eta_counts_steps_and_the_evaluations_still_due():
    from types import SimpleNamespace

    from pipeline.training import eta

    evals = SimpleNamespace(seconds=30.0, history=[{}, {}, {}])  # 3 evaluations so far, 10 s each
    # 50 steps left at 2 s, evaluations every 20 steps: 3 more (at 20, 40, 50 steps from now) -> 100 + 30 s
    assert eta(50, 2.0, 20, evals) == "2:10"
    assert eta(0, 2.0, 20, evals) == "0:00"
    assert eta(2000, 2.0, 1000, SimpleNamespace(seconds=0.0, history=[])) == "1:06:40"
