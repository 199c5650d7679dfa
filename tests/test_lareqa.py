"""The LAReQA loader on small files written by the test, and on the real data where present."""
import json

import pytest

from pipeline.lareqa import DataError, gold_sentence, load_lareqa


def _paragraph(context, spans, qas):
    return {"context": context, "sentence_breaks": spans, "sentences": [context[a:b] for a, b in spans], "qas": qas}


def _write(path, paragraphs):
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def test_gold_sentence_rule():
    spans = [[0, 10], [11, 20], [20, 30]]
    assert gold_sentence(spans, 3) == (0, False)
    assert gold_sentence(spans, 10) == (1, True)  # in the gap: the following sentence
    assert gold_sentence(spans, 20) == (2, False)  # half-open: a start at an end belongs to the next one
    assert gold_sentence(spans, 35) == (2, True)


def test_loader_two_languages(tmp_path):
    en = _write(tmp_path / "en.json", [_paragraph("Paris is big. It has a tower.", [[0, 13], [14, 29]], [
        {"id": "q1", "question": "What has a tower?", "answers": [{"answer_start": 14, "text": "It"}]},
        {"id": "q2", "question": "Is Paris big?", "answers": [{"answer_start": 13, "text": " It"}]},
    ])])
    de = _write(tmp_path / "de.json", [_paragraph("Paris ist groß. Es hat einen Turm.", [[0, 15], [16, 34]], [
        {"id": "q1", "question": "Was hat einen Turm?", "answers": [{"answer_start": 16, "text": "Es"}]},
    ])])
    ds = load_lareqa("toy", {"en": en, "de": de})
    assert list(ds.pool["cand_id"]) == ["de:0:0:0", "de:0:0:1", "en:0:0:0", "en:0:0:1"]
    gold = dict(zip(ds.queries["qid"], ds.queries["gold"], strict=True))
    assert gold == {"de:q1": "de:0:0:1", "en:q1": "en:0:0:1", "en:q2": "en:0:0:1"}
    assert ds.gap_answers == 1
    assert ds.gold_by_id()["q1"] == ["de:0:0:1", "en:0:0:1"]


@pytest.mark.parametrize("breakage, message", [
    (lambda qa: qa.pop("question"), "qas[0]: missing field 'question'"),
    (lambda qa: qa["answers"][0].update(answer_start="7"), "field 'answer_start' should be int"),
    (lambda qa: qa["answers"][0].update(answer_start=999), "(id q1): field 'answer_start' 999 outside"),
])
def test_bad_record_names_file_record_and_field(tmp_path, breakage, message):
    qa = {"id": "q1", "question": "Q?", "answers": [{"answer_start": 0, "text": "A"}]}
    breakage(qa)
    path = _write(tmp_path / "en.json", [_paragraph("A b. C d.", [[0, 4], [5, 9]], [qa])])
    with pytest.raises(DataError) as err:
        load_lareqa("toy", {"en": path})
    assert str(path) in str(err.value) and "data[0].paragraphs[0]" in str(err.value)
    assert message in str(err.value)


def test_real_counts_match_the_shared_readme(mirror):
    from pipeline.lareqa import dataset_files
    from pipeline.params import load_params

    params = load_params()
    x = load_lareqa("xquad-r", dataset_files(params.datasets["xquad-r"], mirror))
    assert len(x.pool) == 13014 and len(x.queries) == 11 * 1190
    assert x.pool.groupby("lang").size()["th"] == 852
    m = load_lareqa("mlqa-r", dataset_files(params.datasets["mlqa-r"], mirror))
    assert len(m.pool) == 20534
    assert m.queries.groupby("lang").size().to_dict() == {
        "ar": 517, "de": 512, "en": 1148, "es": 500, "hi": 507, "vi": 511, "zh": 504}
