"""MIRACL reading (tests/fixtures/miracl, MIRACL's layout), nDCG@10 / Recall@100 on hand-computed cases,
any FAISS factory string against exact search, and resumable sharded corpus encoding."""
import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.ir_metrics import evaluate_run, ndcg_at_k, trec_order, trec_recall_at_k
from evaluation.miracl import fetch_miracl, load_miracl
from evaluation.shards import encode_in_shards, load_shards, sample_rows
from pipeline.encoder import normalise
from pipeline.errors import DataError
from pipeline.retrieval import build_factory_index, exact_search_blocks, index_bytes, recall_vs_exact, search

FIXTURE = Path(__file__).parent / "fixtures" / "miracl"


# ---------------------------------------------------------------- metrics

def test_ndcg_graded_by_hand():
    rels = {"a": 0, "b": 2, "c": 1, "d": 1}  # a judged not relevant; d relevant but not retrieved
    dcg = 0 + 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(["a", "b", "c"], rels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b", "c", "d"], rels, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y", "b"], rels, 2) == 0.0  # b is below the cut-off
    # the ideal list is cut at k too: one relevant doc at rank 1 of k=1 is perfect
    assert ndcg_at_k(["c"], rels, 1) == pytest.approx(1 / 2)
    assert math.isnan(ndcg_at_k(["a"], {"a": 0}, 10))


def test_recall_by_hand():
    rels = {"a": 0, "b": 2, "c": 1, "d": 1}
    assert trec_recall_at_k(["a", "b", "c"], rels, 2) == pytest.approx(1 / 3)
    assert trec_recall_at_k(["a", "b", "c"], rels, 100) == pytest.approx(2 / 3)
    assert trec_recall_at_k(["b", "b", "c"], rels, 2) == pytest.approx(1 / 3)  # a docid listed twice counts once
    assert trec_recall_at_k([], rels, 100) == 0.0
    assert math.isnan(trec_recall_at_k(["a"], {"a": 0}, 100))


def test_trec_eval_order_and_run_summary():
    # score descending, ties by docid descending (trec_eval), whatever order the run lists them in
    assert trec_order([("x", 1.0), ("y", 1.0), ("z", 2.0)]) == ["z", "y", "x"]
    run = {"q1": [("d1", 0.9), ("d2", 0.5)], "q2": [("d3", 0.4)], "q9": [("d1", 0.1)]}
    qrels = {"q1": {"d2": 1}, "q2": {"d3": 0}, "q3": {"d1": 1}, "q4": {}}
    summary, rows = evaluate_run(run, qrels)
    # q1: relevant at rank 2 -> 1/log2(3); q3 relevant but not in the run -> 0; q2 and q4 have nothing relevant
    assert summary["queries_scored"] == 2 and summary["queries_skipped"] == 2
    assert summary["queries_not_retrieved"] == 1
    assert summary["ndcg@10"] == pytest.approx(round((1 / math.log2(3) + 0) / 2, 6))
    assert summary["recall@100"] == pytest.approx(0.5)
    assert [r["qid"] for r in rows] == ["q1", "q3"]


# ---------------------------------------------------------------- reader

def test_fixture_reads(tmp_path):
    ds = load_miracl(FIXTURE, "en")
    assert len(ds.topics) == 7 and ds.passages_count == 20 and len(ds.corpus) == 2
    assert ds.qrels["1"] == {"100#1": 1, "100#0": 1, "105#1": 0}
    first = next(ds.passages())
    assert first == ("100#0", "Eiffel Tower The Eiffel Tower is a wrought-iron lattice tower in Paris, "
                              "completed in 1889.")
    # MIRACL ships the corpus gzipped: the same files as docs-N.jsonl.gz read the same
    copy = tmp_path / "m"
    shutil.copytree(FIXTURE, copy)
    for f in (copy / "miracl-corpus-v1.0-en").glob("*.jsonl"):
        f.with_suffix(".jsonl.gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    assert list(load_miracl(copy, "en").passages()) == list(ds.passages())


def _broken(tmp_path, rel: str, text: str) -> Path:
    copy = tmp_path / "m"
    shutil.copytree(FIXTURE, copy)
    path = copy / rel
    path.write_text(path.read_text() + text)
    return copy


QRELS = "miracl-v1.0-en/qrels/qrels.miracl-v1.0-en-dev.tsv"
TOPICS = "miracl-v1.0-en/topics/topics.miracl-v1.0-en-dev.tsv"
DOCS = "miracl-corpus-v1.0-en/docs-1.jsonl"


@pytest.mark.parametrize("rel, text, message", [
    (QRELS, "1 Q0 999#9 1\n", r"qrels.miracl-v1.0-en-dev.tsv: qid 1 judges docid '999#9', which is not in the corpus"),
    (QRELS, "42 Q0 100#0 1\n", r"qrels.miracl-v1.0-en-dev.tsv: line 14: field 'qid' '42' is not in the topics file"),
    (QRELS, "2 Q0 100#0 yes\n", r"line 14 \(qid 2\): field 'relevance' should be an integer, got 'yes'"),
    (QRELS, "2 100#0 1\n", r"line 14: expected 'qid Q0 docid relevance', got 3 fields"),
    (TOPICS, "8\t  \n", r"topics.miracl-v1.0-en-dev.tsv: line 8 \(qid 8\): field 'query' is blank"),
    (TOPICS, "3\tagain?\n", r"line 8: qid '3' repeats an earlier topic"),
    (DOCS, '{"docid": "200#0", "title": "T"}\n', r"docs-1.jsonl: line 11 \(docid 200#0\): missing field 'text'"),
    (DOCS, '{"docid": 5, "title": "T", "text": "x"}\n', r"docs-1.jsonl: line 11: field 'docid' should be str"),
    (DOCS, "not json\n", r"docs-1.jsonl: line 11: not valid JSON"),
])
def test_bad_records_name_file_line_and_field(tmp_path, rel, text, message):
    with pytest.raises(DataError, match=message):
        load_miracl(_broken(tmp_path, rel, text), "en")


def test_online_path_is_refused_cleanly_offline(monkeypatch):
    """The hub path (miracl/miracl + miracl/miracl-corpus) cannot be exercised here: the hub is unreachable.
    Offline it stops with a DataError that says so and points to --miracl-dir, before any work."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"MIRACL en: the hub datasets miracl/miracl and miracl/miracl-corpus could "
                                        r"not be fetched \(HF_HUB_OFFLINE is set\).*--miracl-dir"):
        fetch_miracl("en")
    with pytest.raises(DataError, match="MIRACL has no language 'xx'"):
        fetch_miracl("xx")


# ---------------------------------------------------------------- FAISS factory strings

def _vectors(seed=0, n=600, q=30, d=16):
    rng = np.random.default_rng(seed)
    return normalise(rng.normal(size=(q, d))).astype(np.float32), normalise(rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW16", pytest.param("IVF4,PQ4", marks=pytest.mark.slow)])
def test_factory_index_recall_against_exact(factory):
    queries, pool = _vectors()
    blocks = [pool[:250], pool[250:500], pool[500:]]  # as shards
    index = build_factory_index(factory, 16, sample_rows(blocks, 400), blocks)
    assert index.ntotal == len(pool)
    _, rows = search(index, queries, 20)
    exact_s, exact_r = exact_search_blocks(queries, blocks, 20)
    ref = np.argsort(-(queries @ pool.T), axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(exact_r, ref)  # block-merged exact search equals one full sort
    recall = recall_vs_exact(rows, exact_r)
    assert 0.0 <= recall <= 1.0
    if factory == "Flat":
        assert recall == 1.0
    assert index_bytes(index) > 0


def test_factory_errors_name_the_string():
    with pytest.raises(ValueError, match="'IVF4,Nope' is not valid"):
        build_factory_index("IVF4,Nope", 16)
    with pytest.raises(ValueError, match="'IVF4,Flat' needs training vectors"):
        build_factory_index("IVF4,Flat", 16)


# ---------------------------------------------------------------- resumable shards

class FakeEncoder:
    """Vectors from the text's characters; counts calls and can fail on a chosen call."""

    def __init__(self, fail_on_call=None):
        self.calls, self.texts, self.fail_on_call = 0, [], fail_on_call

    def __call__(self, texts):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        self.texts += texts
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32)


def test_sharded_encoding_resumes_after_a_kill(tmp_path):
    passages = [(f"d{i}", "x" * (i + 1)) for i in range(10)]
    killed = FakeEncoder(fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        encode_in_shards(passages, killed, tmp_path / "s", 4, {"model": "m"})
    assert sorted(p.name for p in (tmp_path / "s").glob("shard-*")) == ["shard-00000.docids.txt", "shard-00000.npy"]
    resumed = FakeEncoder()
    assert encode_in_shards(passages, resumed, tmp_path / "s", 4, {"model": "m"}) == 3
    # the finished shard is not encoded again: only passages 4..9, in two calls
    assert resumed.calls == 2 and resumed.texts == [t for _, t in passages[4:]]
    blocks, docids = load_shards(tmp_path / "s", 3)
    whole = FakeEncoder()
    encode_in_shards(passages, whole, tmp_path / "fresh", 4, {"model": "m"})
    fresh, _ = load_shards(tmp_path / "fresh", 3)
    np.testing.assert_array_equal(np.concatenate(blocks), np.concatenate(fresh))
    assert docids == [d for d, _ in passages]
    # a third run encodes nothing
    again = FakeEncoder()
    encode_in_shards(passages, again, tmp_path / "s", 4, {"model": "m"})
    assert again.calls == 0


def test_sharded_encoding_refuses_other_settings_or_corpus(tmp_path):
    passages = [(f"d{i}", "text") for i in range(6)]
    encode_in_shards(passages, FakeEncoder(), tmp_path / "s", 4, {"model": "m"})
    with pytest.raises(ValueError, match=r"encoded with other settings \(model"):
        encode_in_shards(passages, FakeEncoder(), tmp_path / "s", 4, {"model": "other"})
    changed = [("z0", "text")] + passages[1:]
    with pytest.raises(ValueError, match="shard-00000.docids.txt: the docids of this finished shard differ"):
        encode_in_shards(changed, FakeEncoder(), tmp_path / "s", 4, {"model": "m"})


def test_params_know_the_miracl_languages():
    from evaluation.miracl import MTEB_LANGUAGES
    from pipeline.params import MIRACL_LANGUAGES

    assert MIRACL_LANGUAGES == tuple(sorted(MTEB_LANGUAGES))


def test_a_docid_repeated_in_the_corpus_is_refused_with_both_places(tmp_path):
    """A passage listed twice would be indexed and ranked twice (nDCG@10 above 1): the reader stops at the
    second copy, naming its file, line and id and where the first one was."""
    copy = _broken(tmp_path, DOCS, '{"docid": "100#0", "title": "Again", "text": "a second copy"}\n')
    with pytest.raises(DataError, match=r"docs-1.jsonl: line 11: docid '100#0' repeats the passage of "
                                        r".*docs-0.jsonl line 1"):
        load_miracl(copy, "en")


def test_a_metric_outside_zero_to_one_is_a_bug_named_by_the_metric():
    """A run that ranks a document twice scores nDCG@10 1.24 on this query; such a value is never written."""
    from evaluation.ir_metrics import MetricRangeError, check_unit_range

    run = {"q1": [("d1", 0.9), ("d1", 0.8)]}
    with pytest.raises(MetricRangeError, match=r"query q1: ndcg@10 = 1\.23\d* lies outside \[0, 1\]"):
        evaluate_run(run, {"q1": {"d1": 2, "d2": 1}})
    check_unit_range({"ndcg@10": 1.0, "recall@100": 0.0, "none": float("nan")}, "x")  # the bounds and NaN pass
    with pytest.raises(MetricRangeError, match=r"MIRACL en: recall@100 = -0\.1 lies outside"):
        check_unit_range({"recall@100": -0.1}, "MIRACL en")


def test_evaluate_checks_every_rate_metric_of_a_summary_before_writing():
    from evaluation.evaluate import check_summary
    from evaluation.ir_metrics import MetricRangeError

    ok = {"ndcg@10": 0.5, "recall@100": 1.0, "index_recall@100_vs_exact": 0.9, "queries": 30, "passages": 600,
          "mono_map": 0.4, "multi_r10_seen": 1.0, "multi_rank_distance": 3.2, "index_bytes": 12345}
    check_summary(ok, "miracl-en")  # counts and the rank distance are not rates
    for key, value in [("ndcg@10", 1.051), ("index_recall@100_vs_exact", 1.5), ("cross_map20_unseen", -0.2)]:
        with pytest.raises(MetricRangeError, match=rf"miracl-en: {key} = {value} lies outside \[0, 1\]"):
            check_summary({**ok, key: value}, "miracl-en")
