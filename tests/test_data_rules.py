"""One test per data rule of docs/data-rules.md, on small crafted files, for every path that reads
them: the evaluation loader (pipeline.lareqa), the SQuAD and LAReQA training sources and the HF
source's local files (pipeline.sources); then the mirror/URL rules and the stages that must not
write an empty output. Each error text is checked in full."""
import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.assets import AssetError, sha256_of
from pipeline.errors import DataError
from pipeline.lareqa import dataset_files, load_lareqa
from pipeline.params import DatasetSpec, FilterParams, SourceSpec, load_params
from pipeline.sources import load_hf, load_lareqa_source, load_source, load_squad, pair_id

ROOT = Path(__file__).resolve().parents[1]
CTX = "Paris is big. It has a tower."
SPANS = [[0, 13], [14, 29]]
SENTENCES = ["Paris is big.", "It has a tower."]


def _qa(qid="q1", question="What has a tower?", start=14):
    return {"id": qid, "question": question, "answers": [{"answer_start": start, "text": CTX[start:start + 2]}]}


def _par(qas=None, context=CTX, spans=SPANS, sentences=SENTENCES):
    return {"context": context, "sentence_breaks": spans, "sentences": sentences,
            "qas": [_qa()] if qas is None else qas}


def _doc(*paragraphs):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": list(paragraphs)}]}


def _write(path: Path, doc, prefix: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(prefix + json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
    return path


def _eval(path):
    ds = load_lareqa("toy", {"en": path})
    return [ds.queries, ds.pool]


#: every reader of a SQuAD-style file, each returning the frames it builds
READERS = {
    "evaluation": _eval,
    "squad source": lambda path: [load_squad(path, "toy")[0]],
    "lareqa source": lambda path: [load_lareqa_source({"en": path}, "toy")[0]],
}


def _error(reader, path) -> str:
    with pytest.raises(DataError) as err:
        READERS[reader](path)
    return str(err.value)


# --------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("reader", READERS)
def test_undecodable_byte_names_the_file_the_offset_and_the_line(tmp_path, reader):
    raw = json.dumps(_doc(_par()), indent=1).encode("utf-8").replace(b"Paris is big", b"Paris is b\xffg", 1)
    path = tmp_path / "en.json"
    path.write_bytes(raw)
    at = raw.index(b"\xff")
    line = raw[:at].count(b"\n") + 1
    assert _error(reader, path) == f"{path}: not UTF-8 text: byte 0xff at offset {at} (line {line})"


@pytest.mark.parametrize("reader", READERS)
def test_a_missing_file_is_named(tmp_path, reader):
    assert _error(reader, tmp_path / "en.json") == f"{tmp_path / 'en.json'}: file not found"


@pytest.mark.parametrize("reader", READERS)
def test_byte_order_mark_is_accepted(tmp_path, reader):
    plain = READERS[reader](_write(tmp_path / "en.json", _doc(_par())))
    with_bom = READERS[reader](_write(tmp_path / "bom" / "en.json", _doc(_par()), prefix=b"\xef\xbb\xbf"))
    for a, b in zip(plain, with_bom, strict=True):
        pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("reader", READERS)
def test_invalid_json_names_the_file_line_and_column(tmp_path, reader):
    path = tmp_path / "en.json"
    path.write_text('{"data":\n [}')
    assert _error(reader, path) == f"{path}: not valid JSON at line 2 column 3: Expecting value"


def test_hf_local_files_follow_the_same_decoding_rules(tmp_path):
    cols = {"question": "q", "passage": "p"}
    rows = [{"q": "Q1?", "p": "S1."}, {"q": "Q2?", "p": "S2."}]
    text = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    plain, bom = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    plain.write_bytes(text)
    bom.write_bytes(b"\xef\xbb\xbf" + text)
    pd.testing.assert_frame_equal(load_hf(str(plain), "train", cols, "s")[0], load_hf(str(bom), "train", cols, "s")[0])
    csv = tmp_path / "c.csv"
    csv.write_bytes(b"\xef\xbb\xbfq,p\nQ1?,S1.\nQ2?,S2.\n")
    pd.testing.assert_frame_equal(load_hf(str(csv), "train", cols, "s")[0], load_hf(str(plain), "train", cols, "s")[0])
    array, lines = tmp_path / "array.json", tmp_path / "lines.json"  # .json: an array, or JSON lines
    array.write_text(json.dumps(rows))
    lines.write_bytes(text)
    expected = load_hf(str(plain), "train", cols, "s")[0]
    for path in (array, lines):
        pd.testing.assert_frame_equal(load_hf(str(path), "train", cols, "s")[0], expected)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(text.replace(b"Q2", b"Q\xff"))
    at = text.index(b"Q2") + 1
    with pytest.raises(DataError) as err:
        load_hf(str(bad), "train", cols, "s")
    assert str(err.value) == f"{bad}: not UTF-8 text: byte 0xff at offset {at} (line 2)"
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(DataError) as err:
        load_hf(str(broken), "train", cols, "s")
    assert str(err.value) == (f"{broken}: line 2: not valid JSON at column 2: "
                              "Expecting property name enclosed in double quotes")


# --------------------------------------------------------------------------- sentence spans

@pytest.mark.parametrize("spans, message", [
    ([[0, 13], [14, 40]], "field 'sentence_breaks'[1] [14, 40] is not a non-empty span inside the context (length 29)"),
    ([[0, 13], [13, 13]], "field 'sentence_breaks'[1] [13, 13] is not a non-empty span inside the context (length 29)"),
    ([[-1, 13], [14, 29]], "field 'sentence_breaks'[0] [-1, 13] is not a non-empty span inside the context "
                           "(length 29)"),
    ([[14, 29], [0, 13]], "field 'sentence_breaks'[1] [0, 13] starts before the previous span ends (29): "
                          "spans must be ordered and must not overlap"),
    ([[0, 15], [14, 29]], "field 'sentence_breaks'[1] [14, 29] starts before the previous span ends (15): "
                          "spans must be ordered and must not overlap"),
    ([[0, 13], [14, "29"]], "field 'sentence_breaks'[1] should be [start, end] integers, got [14, '29']"),
    ([[0, 13], [14, 29, 30]], "field 'sentence_breaks'[1] should be [start, end] integers, got [14, 29, 30]"),
    ([[0, 13], [14, True]], "field 'sentence_breaks'[1] should be [start, end] integers, got [14, True]"),
])
@pytest.mark.parametrize("reader", READERS)
def test_sentence_spans_are_checked_against_the_context(tmp_path, reader, spans, message):
    path = _write(tmp_path / "en.json", _doc(_par(), _par(spans=spans)))
    assert _error(reader, path) == f"{path}: data[0].paragraphs[1]: {message}"


@pytest.mark.parametrize("reader", READERS)
def test_no_sentence_spans_is_an_error(tmp_path, reader):
    path = _write(tmp_path / "en.json", _doc(_par(spans=[], sentences=[])))
    assert _error(reader, path) == (f"{path}: data[0].paragraphs[0]: field 'sentence_breaks' should be a non-empty "
                                    "list of [start, end] spans")


# --------------------------------------------------------------------------- duplicate ids

@pytest.mark.parametrize("reader", READERS)
def test_a_repeated_question_id_in_a_file_is_an_error(tmp_path, reader):
    path = _write(tmp_path / "en.json", _doc(_par([_qa("q1"), _qa("q2", start=0)]), _par([_qa("q2")])))
    assert _error(reader, path) == (f"{path}: data[0].paragraphs[1].qas[0]: field 'id' 'q2' repeats the question at "
                                    "data[0].paragraphs[0].qas[1] (question ids must be unique in en.json)")


def test_hf_repeated_id_is_a_counted_drop_that_keeps_the_first(tmp_path):
    path = tmp_path / "wikiqa.jsonl"
    rows = [{"id": "a", "q": "Q?", "p": "first.", "y": 0},  # unlabelled: not a pair, does not claim the id
            {"id": "a", "q": "Q?", "p": "second.", "y": 1},
            {"id": "a", "q": "Q?", "p": "third.", "y": 1},
            {"id": "a#2", "q": "Other?", "p": "fourth.", "y": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df, dropped = load_hf(str(path), "train", {"question": "q", "passage": "p", "id": "id", "label": "y"}, "w")
    assert dropped == {"unlabelled": 1, "duplicate_id": 1}
    assert df["passage"].tolist() == ["second.", "fourth."]
    assert df["pair_id"].tolist() == [pair_id("w", "a"), pair_id("w", "a#2")] and df["pair_id"].is_unique


# --------------------------------------------------------------------------- blank texts

@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("question", ["", "   ", " ?! ", "\u3000。"])
def test_a_blank_question_is_an_error(tmp_path, reader, question):
    path = _write(tmp_path / "en.json", _doc(_par([_qa(question=question)])))
    assert _error(reader, path) == f"{path}: data[0].paragraphs[0].qas[0] (id q1): field 'question' is blank"


@pytest.mark.parametrize("reader", READERS)
def test_a_blank_answer_sentence_is_an_error_a_blank_distractor_is_not(tmp_path, reader):
    context = "Paris is big. ... It has a tower."
    spans = [[0, 13], [14, 17], [18, 33]]
    sentences = [context[a:b] for a, b in spans]
    gold_blank = _write(tmp_path / "en.json", _doc(_par([_qa(start=14)], context, spans, sentences)))
    assert _error(reader, gold_blank) == (f"{gold_blank}: data[0].paragraphs[0].qas[0] (id q1): the answer sentence "
                                          "(data[0].paragraphs[0].sentences[1]) is blank")
    # the real XQuAD-R and MLQA-R pools hold a few punctuation-only sentences that are nobody's gold
    fine = _write(tmp_path / "ok" / "en.json", _doc(_par([_qa(start=18)], context, spans, sentences)))
    assert READERS[reader](fine)[0].shape[0] == 1


def test_hf_blank_question_or_passage_is_an_error_on_a_pair_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("q,p,y\nQ1?,S1.,1\nQ2?,,0\nQ3?, . ,1\n")  # row 1 is unlabelled: its blank passage is no pair
    with pytest.raises(DataError) as err:
        load_hf(str(path), "train", {"question": "q", "passage": "p", "label": "y"}, "s")
    assert str(err.value) == f"{path} (split train): record 2 (id 2): field 'p' is blank"


def test_a_file_without_questions_is_an_error(tmp_path):
    path = _write(tmp_path / "en.json", _doc())
    for reader in ("evaluation", "lareqa source"):
        assert _error(reader, path) == f"{path}: no questions (field 'data' holds no paragraph with 'qas')"


# --------------------------------------------------------------------------- mirror, URL and sha256

@pytest.fixture()
def upstream(tmp_path, monkeypatch):
    """A folder served by file:// URLs, an empty mirror and a fresh download cache."""
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)
    (tmp_path / "upstream").mkdir()
    (tmp_path / "mirror").mkdir()
    _write(tmp_path / "upstream" / "en.json", _doc(_par()))
    return tmp_path


def _spec(root, **sha):
    return DatasetSpec(path="data/toy", url=f"file://{root}/upstream/{{lang}}.json", languages=["en"], licence="x",
                       sha256=sha or None)


def test_missing_mirror_file_is_reported_with_its_path_before_the_pinned_download(upstream, caplog):
    sha = sha256_of(upstream / "upstream" / "en.json")
    files = dataset_files(_spec(upstream, en=sha), upstream / "mirror")
    assert files["en"] == upstream / "cache" / sha / "en.json"
    assert files["en"].read_bytes() == (upstream / "upstream" / "en.json").read_bytes()
    assert caplog.messages == [
        f"data/toy/en.json: not in the mirror: {upstream}/mirror/data/toy/en.json is missing; "
        f"downloading file://{upstream}/upstream/en.json (sha256 {sha[:12]}...)"]


def test_an_unpinned_url_is_not_downloaded(upstream):
    with pytest.raises(DataError) as err:
        dataset_files(_spec(upstream), upstream / "mirror")
    assert str(err.value) == (f"data/toy/en.json: not in the mirror: {upstream}/mirror/data/toy/en.json is missing, "
                              f"and file://{upstream}/upstream/en.json is not pinned: add its sha256 to params.yaml "
                              "datasets.toy.sha256.en")
    assert not (upstream / "cache").exists()


def test_a_download_or_mirror_copy_that_does_not_match_its_pin_is_an_error(upstream):
    good = sha256_of(upstream / "upstream" / "en.json")
    wrong = "0" * 64
    with pytest.raises(AssetError) as err:
        dataset_files(_spec(upstream, en=wrong), upstream / "mirror")
    assert str(err.value) == (f"asset 'data/toy/en.json': sha256 mismatch for {upstream}/cache/{wrong}/en.json: "
                              f"expected {wrong}, got {good}")
    assert not (upstream / "cache" / wrong / "en.json").exists()  # a bad download is not kept
    copy = _write(upstream / "mirror" / "data" / "toy" / "en.json", _doc(_par([_qa("q9")])))  # a corrupted mirror
    with pytest.raises(AssetError) as err:
        dataset_files(_spec(upstream, en=good), upstream / "mirror")
    assert str(err.value) == (f"asset 'data/toy/en.json': sha256 mismatch for {copy}: expected {good}, "
                              f"got {sha256_of(copy)}")


def test_sources_follow_the_same_mirror_and_pin_rules(upstream, caplog):
    sha = sha256_of(upstream / "upstream" / "en.json")
    url = f"file://{upstream}/upstream/{{lang}}.json"
    lareqa = SourceSpec(name="toy", type="lareqa", path="data/toy", url=url, languages=["en"], licence="x",
                        sha256={"en": sha})
    assert load_source(lareqa, upstream / "mirror").pairs["question"].tolist() == ["What has a tower?"]
    assert any("not in the mirror: " in m for m in caplog.messages)
    squad = SourceSpec(name="sq", type="squad", path="train.json", url=url.format(lang="en"), licence="x")
    with pytest.raises(DataError) as err:
        load_source(squad, upstream / "mirror")
    assert str(err.value) == (f"sq: not in the mirror: {upstream}/mirror/train.json is missing, and "
                              f"file://{upstream}/upstream/en.json is not pinned: add its sha256 to params.yaml "
                              "gather.sources[sq].sha256")
    mirror_only = SourceSpec(name="m", type="lareqa", path="data/none", languages=["en"], licence="x")
    with pytest.raises(AssetError, match=r"asset 'm/en.json' not in the mirror: .*/data/none/en.json is missing"):
        load_source(mirror_only, upstream / "mirror")


@pytest.mark.parametrize("spec, message", [
    (dict(type="lareqa", languages=["en"], sha256={"en": "0" * 64, "de": "1" * 64}),
     "source 'x'.sha256: ['de'] are not in its languages ['en']"),
    (dict(type="squad", sha256={"en": "0" * 64}), "sha256 is one hash for type 'squad', a per-language mapping"),
    (dict(type="lareqa", sha256="0" * 64), "sha256 is one hash for type 'squad', a per-language mapping"),
    (dict(type="squad", sha256="abc"), "String should match pattern"),
])
def test_sha256_pins_are_validated_in_params(spec, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        SourceSpec(name="x", path="p", licence="x", **spec)


def test_every_dataset_and_lareqa_source_in_params_is_pinned_to_the_mirror_files(mirror):
    params = load_params(ROOT / "params.yaml")
    specs = [*params.datasets.values(), *(s for s in params.gather.sources if s.type == "lareqa")]
    for spec in specs:
        assert sorted(spec.sha256) == sorted(spec.languages)
        for lang, sha in spec.sha256.items():
            assert sha256_of(mirror / spec.path / f"{lang}.json") == sha


# --------------------------------------------------------------------------- stages that would write nothing

def test_gather_fails_when_the_leakage_guard_removes_every_pair(tmp_path, monkeypatch):
    from pipeline.stages import gather as stage

    _write(tmp_path / "data" / "toy" / "en.json", _doc(_par()))
    _write(tmp_path / "train.json", _doc(_par()))  # the same question and sentence as the evaluation set
    params = load_params(ROOT / "params.yaml")
    toy = DatasetSpec(path="data/toy", url="https://example.invalid/{lang}.json", languages=["en"], licence="x")
    source = SourceSpec(name="sq", type="squad", path="train.json", licence="x")
    gather = params.gather.model_copy(update={"sources": [source], "leakage_guard": ["toy"]})
    params = params.model_copy(update={"mirror": str(tmp_path), "datasets": {"toy": toy}, "gather": gather})
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)
    monkeypatch.setattr(stage, "load_params", lambda: params)
    out, metrics = tmp_path / "out" / "pairs.parquet", tmp_path / "gather.json"
    with pytest.raises(DataError) as err:
        stage.main(["--out", str(out), "--metrics", str(metrics)])
    assert str(err.value) == ("gather: no pairs left to write: 1 read, 0 empty, 0 duplicate, 1 removed by the "
                              "leakage guard (gather.leakage_guard)")
    assert not out.exists() and not metrics.exists()


def test_filter_fails_when_every_row_of_a_language_is_rejected(tmp_path, monkeypatch):
    from pipeline.stages import filter as stage

    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(update={
        "translate": params.translate.model_copy(update={"targets": {"de": params.translate.targets["de"]}}),
        "filter": FilterParams(check_langid=False)})
    monkeypatch.setattr(stage, "load_params", lambda: params)
    monkeypatch.setattr(stage, "roundtrip_translators", lambda p, langs, cache_dir: {})
    en = {"pair_id": "1", "source": "s", "lang": "en", "question": "Who built it?", "passage": "Eiffel built it.",
          "context": None, "system": "source"}
    pd.DataFrame([en]).to_parquet(tmp_path / "pairs.parquet", index=False)
    (tmp_path / "tr").mkdir()
    copy = {**en, "lang": "de", "system": "reference", "src_question": en["question"], "src_passage": en["passage"]}
    pd.DataFrame([copy]).to_parquet(tmp_path / "tr" / "de.parquet", index=False)
    out, metrics = tmp_path / "out", tmp_path / "data.json"
    with pytest.raises(DataError) as err:
        stage.main(["--pairs", str(tmp_path / "pairs.parquet"), "--translated", str(tmp_path / "tr"),
                    "--out", str(out), "--metrics", str(metrics), "--rejected-sample", str(tmp_path / "r.csv")])
    assert str(err.value) == ("filter: no pair left in language 'de': all 1 rows rejected (copy_question 1, "
                              "copy_passage 1); check params.yaml filter")
    assert not out.exists() and not metrics.exists()


def test_split_fails_without_pairs_in_the_training_languages(tmp_path, monkeypatch):
    from pipeline.stages import split as stage

    params = load_params(ROOT / "params.yaml")
    monkeypatch.setattr(stage, "load_params", lambda: params)
    pairs = tmp_path / "pairs.parquet"
    pd.DataFrame([{"pair_id": "1", "source": "s", "lang": "xx", "question": "q", "passage": "p", "context": None,
                   "system": "source"}]).to_parquet(pairs, index=False)
    with pytest.raises(DataError) as err:
        stage.main(["--pairs", str(pairs), "--out", str(tmp_path / "split")])
    assert str(err.value) == f"split: {pairs} has no pairs in the training languages {params.languages}"
    assert not (tmp_path / "split").exists()
