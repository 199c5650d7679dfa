"""Source loaders, cleaning and the leakage guard on small files written by the tests; the real
MLQA-R source where the mirror is present."""
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.lareqa import load_lareqa
from pipeline.normalize import normalize
from pipeline.params import SourceSpec
from pipeline.schema import PAIR_COLUMNS
from pipeline.sources import (
    apply_leakage_guard,
    clean_pairs,
    evaluation_texts,
    load_hf,
    load_lareqa_source,
    load_source,
    load_squad,
    pair_id,
)
from pipeline.text import sentence_spans, split_sentences

CTX = "Paris is the capital of France. It has a tall tower. The tower was built in 1889."


def _squad(path, qas, context=CTX, breaks=None, version="1.1"):
    par = {"context": context, "qas": qas}
    if breaks is not None:
        par["sentence_breaks"] = breaks
    path.write_text(json.dumps({"version": version, "data": [{"title": "t", "paragraphs": [par]}]}))
    return path


def _lareqa_file(path, paragraphs):
    path.write_text(json.dumps({"version": "1.0", "data": [{"title": "t", "paragraphs": [
        {"context": c, "sentence_breaks": spans, "sentences": [c[a:b] for a, b in spans], "qas": qas}
        for c, spans, qas in paragraphs]}]}))
    return path


def _qa(qid, question, start, text="x", **extra):
    return {"id": qid, "question": question, "answers": [{"answer_start": start, "text": text}], **extra}


def test_normalize_and_pair_id():
    assert normalize("  ¿Qué  es\tESTO?! ") == "qué es esto"
    assert normalize("Ｐａｒｉｓ.") == "paris"  # NFKC folds full-width letters
    assert normalize(None) == ""
    assert pair_id("squad", "q1") == pair_id("squad", "q1") != pair_id("squad", "q2") != pair_id("other", "q1")
    assert pair_id("squad", "q1") == "d10c33c3db2621d8"  # fixed: stable across runs and versions


def test_split_sentences():
    """The SQuAD loader splits a context without ``sentence_breaks`` with pipeline.text's splitter."""
    spans = sentence_spans(CTX)
    assert [CTX[a:b] for a, b in spans] == split_sentences(CTX) == [
        "Paris is the capital of France.", "It has a tall tower.", "The tower was built in 1889."]
    text = "Dr. J. R. R. Tolkien wrote it. Then 3 more! 他来了。她也来了。"
    assert split_sentences(text) == ["Dr. J. R. R. Tolkien wrote it.", "Then 3 more!", "他来了。", "她也来了。"]
    assert sentence_spans("no end mark") == [[0, 11]]


def test_squad_v1_regex_splitter(tmp_path):
    path = _squad(tmp_path / "v1.json", [_qa("q1", "What has a tower?", 32), _qa("q2", "When?", 76)])
    df, unanswerable = load_squad(path, "toy")
    assert unanswerable == 0 and list(df.columns) == PAIR_COLUMNS
    assert df["passage"].tolist() == ["It has a tall tower.", "The tower was built in 1889."]
    assert df["pair_id"].tolist() == [pair_id("toy", "q1"), pair_id("toy", "q2")]
    assert set(df["lang"]) == {"en"} and set(df["system"]) == {"source"} and df["context"].isna().all()
    with_ctx, _ = load_squad(path, "toy", with_context=True)
    assert with_ctx["context"].tolist() == [CTX, CTX]


def test_squad_v2_drops_unanswerable_and_uses_sentence_breaks(tmp_path):
    qas = [
        _qa("q1", "What is the capital?", 0),
        {"id": "q2", "question": "What is the king?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"answer_start": 0, "text": "Paris"}]},
        {"id": "q3", "question": "Who?", "answers": [], "is_impossible": False},  # no answer either
        _qa("q4", "Tower built?", 53),
    ]
    # breaks deliberately differ from the regex splitter: the first two "sentences" are one span
    path = _squad(tmp_path / "v2.json", qas, breaks=[[0, 52], [53, 81]], version="v2.0")
    df, unanswerable = load_squad(path, "toy")
    assert unanswerable == 2
    assert df["passage"].tolist() == [CTX[0:52], "The tower was built in 1889."]


def test_lareqa_source_two_languages(tmp_path):
    en = _lareqa_file(tmp_path / "en.json", [("A b. C d.", [[0, 4], [5, 9]], [
        _qa("q1", "What is A?", 0), _qa("q2", "What is C?", 5)])])
    de = _lareqa_file(tmp_path / "de.json", [("A x. C y.", [[0, 4], [5, 9]], [
        _qa("q2", "Was ist C?", 5), _qa("q9", "Ohne Englisch?", 0)])])
    df, no_source = load_lareqa_source({"en": en, "de": de}, "toy", with_context=True)
    assert no_source == 1  # q9 has no English original
    assert df[["lang", "question", "passage", "system"]].values.tolist() == [
        ["en", "What is A?", "A b.", "source"], ["en", "What is C?", "C d.", "source"],
        ["de", "Was ist C?", "C y.", "reference"]]
    assert df.loc[2, "pair_id"] == df.loc[1, "pair_id"] == pair_id("toy", "q2")  # shared across languages
    assert df.loc[2, "context"] == "A x. C y."


def test_load_source_lareqa_resolves_files_in_the_mirror(tmp_path):
    folder = tmp_path / "mirror" / "data" / "toy"
    folder.mkdir(parents=True)
    _lareqa_file(folder / "en.json", [("A b. C d.", [[0, 4], [5, 9]], [_qa("q1", "What is A?", 0)])])
    _lareqa_file(folder / "de.json", [("A x. C y.", [[0, 4], [5, 9]], [_qa("q1", "Was ist A?", 0)])])
    spec = SourceSpec(name="toy", type="lareqa", path="data/toy", url="https://example.invalid/{lang}.json",
                      languages=["en", "de", "fr"], licence="CC0")
    got = load_source(spec, tmp_path / "mirror", languages=["en", "de"])  # fr is not wanted: never fetched
    assert got.licence == "CC0" and got.location == "https://example.invalid/{lang}.json"
    assert got.pairs["lang"].tolist() == ["en", "de"] and got.dropped == {"no_source": 0}


def test_load_source_squad_checks_sha256(tmp_path):
    from pipeline.assets import AssetError, sha256_of

    path = _squad(tmp_path / "train.json", [_qa("q1", "What has a tower?", 32)])
    spec = dict(name="sq", type="squad", path="train.json", licence="CC BY-SA 4.0")
    got = load_source(SourceSpec(**spec, sha256=sha256_of(path)), tmp_path)
    assert got.pairs["passage"].tolist() == ["It has a tall tower."] and got.location == "train.json"
    with pytest.raises(AssetError, match="sha256 mismatch"):
        load_source(SourceSpec(**spec, sha256="0" * 64), tmp_path)


def test_hf_loader_on_a_local_dataset(tmp_path):
    import datasets

    data = {"qid": ["a", "b", "b", "c", "b#2"], "query": ["Q1?", "Q2?", "Q2?", "Q3?", "Q4?"],
            "answer": ["S1.", "S2.", "S2 again.", "S3.", "S4."], "label": [1, 1, 1, 0, 1]}
    datasets.Dataset.from_dict(data).save_to_disk(str(tmp_path / "ds"))
    cols = {"question": "query", "passage": "answer", "id": "qid", "label": "label"}
    df, dropped = load_hf(str(tmp_path / "ds"), "train", cols, "wikiqa")
    # a repeated id keeps its first pair; the later one is a counted drop (an id that looks like an
    # occurrence suffix, "b#2", is its own question and keeps its own pair_id)
    assert dropped == {"unlabelled": 1, "duplicate_id": 1}
    assert df["passage"].tolist() == ["S1.", "S2.", "S4."]
    assert df["pair_id"].tolist() == [pair_id("wikiqa", "a"), pair_id("wikiqa", "b"), pair_id("wikiqa", "b#2")]
    # a local json-lines file as hub_id, no id column: the row number is the id
    jsonl = tmp_path / "nq.jsonl"
    jsonl.write_text("".join(json.dumps({"query": q, "answer": a}) + "\n" for q, a in [("Q?", "A."), ("R?", "B.")]))
    spec = SourceSpec(name="nq", type="hf", hub_id=str(jsonl), columns={"question": "query", "passage": "answer"},
                      licence="CC BY-SA 3.0")
    got = load_source(spec, tmp_path)
    assert got.pairs["pair_id"].tolist() == [pair_id("nq", "0"), pair_id("nq", "1")]
    with pytest.raises(DataError, match=r"columns \['nope'\] not in the dataset"):
        load_hf(str(jsonl), "train", {"question": "nope", "passage": "answer"}, "nq")


def test_clean_pairs_counts_empty_and_duplicates():
    def row(pid, lang, q, p, system=None):
        return {"pair_id": pid, "source": "s", "lang": lang, "question": q, "passage": p, "context": None,
                "system": system or ("source" if lang == "en" else "reference")}

    df = pd.DataFrame([
        row("1", "en", "What is A?", "A is a letter."),
        row("1", "de", "Was ist A?", "A ist ein Buchstabe."),
        row("2", "en", "  ", "Empty question."),  # empty: takes its German row along
        row("2", "de", "Leer?", "Leere Frage."),
        row("3", "en", "what is a", " A is a letter "),  # duplicate of 1 after normalisation
        row("3", "de", "Anders?", "Anders."),  # goes with its English duplicate
        row("4", "en", "What is B?", "B."),
        row("4", "de", "Was ist A?", "A ist ein Buchstabe."),  # German duplicate of 1: dropped alone
        row("5", "en", "What is C?", "?!"),  # only punctuation: empty
    ])
    kept, counts = clean_pairs(df)
    assert kept["pair_id"].tolist() == ["1", "1", "4"]
    assert counts["empty"] == {("s", "en"): 2, ("s", "de"): 1}
    assert counts["duplicate"] == {("s", "en"): 1, ("s", "de"): 2}


def test_leakage_guard_removes_exact_overlap(tmp_path):
    eval_en = _lareqa_file(tmp_path / "en.json", [("Berlin is big. It is old.", [[0, 14], [15, 25]], [
        _qa("e1", "How big is Berlin?", 0)])])
    eval_de = _lareqa_file(tmp_path / "de.json", [("Berlin ist groß. Es ist alt.", [[0, 16], [17, 28]], [
        _qa("e1", "Wie groß ist Berlin?", 0)])])
    texts = evaluation_texts([load_lareqa("eval", {"en": eval_en, "de": eval_de})])
    assert "it is old" in texts and "wie gross ist berlin" in texts  # casefold: ß -> ss
    rows = [
        ("1", "en", "HOW BIG is  Berlin", "Some other sentence."),  # question leaks (case, spaces, '?')
        ("1", "de", "Frage eins?", "Satz eins."),
        ("2", "en", "Unrelated?", "Unrelated answer."),
        ("2", "de", "Andere Frage?", "„Es ist alt.“"),  # German pool sentence, in quotes: leaks
        ("3", "en", "Fine?", "Fine."),
        ("3", "de", "Gut?", "Es ist alt, sehr alt."),  # contains a pool sentence but is not equal: kept
        ("4", "en", "Kept?", "Kept."),
    ]
    df = pd.DataFrame([{"pair_id": p, "source": "s", "lang": l, "question": q, "passage": a, "context": None,
                        "system": "source" if l == "en" else "reference"} for p, l, q, a in rows])
    kept, removed = apply_leakage_guard(df, texts)
    assert kept["pair_id"].tolist() == ["3", "3", "4"]
    assert removed == {("s", "en"): 2, ("s", "de"): 2}


@pytest.mark.parametrize("breakage, message", [
    (lambda qa: qa.pop("question"), "qas[0]: missing field 'question'"),
    (lambda qa: qa["answers"][0].update(answer_start="7"), "answers[0]: field 'answer_start' should be int"),
    (lambda qa: qa["answers"][0].update(answer_start=500), "(id q1): field 'answer_start' 500 outside"),
    (lambda qa: qa.update(is_impossible="no"), "(id q1): field 'is_impossible' should be bool"),
])
def test_malformed_squad_names_file_record_and_field(tmp_path, breakage, message):
    qa = _qa("q1", "What has a tower?", 32)
    breakage(qa)
    path = _squad(tmp_path / "bad.json", [qa])
    with pytest.raises(DataError) as err:
        load_squad(path, "toy")
    assert str(path) in str(err.value) and "data[0].paragraphs[0]" in str(err.value)
    assert message in str(err.value)


def test_real_mlqa_r_gather_and_xquad_r_guard(mirror, monkeypatch):
    from pipeline.params import load_params
    from pipeline.stages.gather import gather

    monkeypatch.setenv("PIPELINE_MIRROR", str(mirror))
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    pairs, stats = gather(params)
    src = stats["sources"]["mlqa-r"]
    counts = src["kept"]
    # shared/README.md: MLQA-R has 1,148 English questions and about 500 in each other language
    assert counts == {"en": 1148, "ar": 517, "de": 512, "es": 500, "hi": 507, "vi": 511, "zh": 504}
    # and the default's small SQuAD v1.1 train sample, English only
    assert stats["sources"]["squad-train"]["kept"] == {"en": 8}
    assert stats["languages"] == {**counts, "en": 1148 + 8}
    assert not pairs.duplicated(["pair_id", "lang"]).any()
    assert set(pairs.loc[pairs["lang"] != "en", "pair_id"]) <= set(pairs.loc[pairs["lang"] == "en", "pair_id"])
    assert src["licence"] == "CC BY-NC 4.0" and "mlqa-r" in src["location"]
    assert stats["leakage_guard"] == {"datasets": ["xquad-r"], "texts": 26005}
    # MLQA-R and XQuAD-R share no question or sentence: the guard removes nothing, and nothing is empty,
    # duplicated or without an English original
    assert src["no_source"] == 0 and src["read"] == counts
    assert set(src["leakage_removed"].values()) == set(src["empty_dropped"].values()) == {0}
    assert set(src["duplicates_dropped"].values()) == {0}
    assert set(pairs.loc[pairs["lang"] == "en", "system"]) == {"source"}
    assert set(pairs.loc[pairs["lang"] != "en", "system"]) == {"reference"}


def test_gather_stage_writes_nothing_on_bad_input(tmp_path, monkeypatch):
    from pipeline.params import load_params
    from pipeline.stages import gather as stage

    good = _squad(tmp_path / "good.json", [_qa("q1", "What has a tower?", 32)])
    bad = _squad(tmp_path / "bad.json", [{"id": "q9", "answers": []}])  # no question
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    sources = [SourceSpec(name=p.stem, type="squad", path=p.name, licence="x") for p in (good, bad)]
    params = params.model_copy(update={"mirror": str(tmp_path), "gather": params.gather.model_copy(
        update={"sources": sources, "leakage_guard": []})})
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)
    monkeypatch.setattr(stage, "load_params", lambda: params)
    out, metrics = tmp_path / "out" / "pairs.parquet", tmp_path / "gather.json"
    with pytest.raises(DataError, match=r"bad.json: data\[0\].paragraphs\[0\].qas\[0\]: missing field 'question'"):
        stage.main(["--out", str(out), "--metrics", str(metrics)])
    assert not out.exists() and not metrics.exists()
    params = params.model_copy(update={"gather": params.gather.model_copy(update={"sources": sources[:1]})})
    stage.main(["--out", str(out), "--metrics", str(metrics)])
    assert pd.read_parquet(out)["passage"].tolist() == ["It has a tall tower."]
    assert json.loads(metrics.read_text())["sources"]["good"]["kept"] == {"en": 1}
