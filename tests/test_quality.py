"""Translation quality rules on crafted pairs, filter_pairs with a fake back-translator, the filter
stage on files written by the test, and the cheap rules on MLQA-R's human translations."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.params import FilterParams
from pipeline.quality import (
    QUALITY_COLUMNS,
    REASONS,
    chrf,
    copy_reasons,
    detect_language,
    effective_length,
    empty_reasons,
    filter_pairs,
    langid_reasons,
    language_matches,
    length_ratio,
    length_reasons,
    reason_counts,
    rejected_sample,
    roundtrip_reasons,
)

EN_Q = "When was the tower in Paris built?"
EN_P = "The tower was built in 1889 for the world fair."
DE_Q = "Wann wurde der Turm in Paris gebaut?"
DE_P = "Der Turm wurde 1889 für die Weltausstellung gebaut."
ZH_Q = "巴黎的塔是什么时候建造的？"
ZH_P = "这座塔建于1889年，是为世界博览会而建的。"


def _row(pid, lang, q, p, sq=None, sp=None):
    return {"pair_id": pid, "source": "s", "lang": lang, "question": q, "passage": p, "context": None,
            "system": "source" if lang == "en" else "reference", "src_question": sq, "src_passage": sp}


class FakeTranslator:
    """Back-translates by table lookup; records what it was asked."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def translate(self, texts):
        self.calls.append(list(texts))
        return [self.table.get(t, "") for t in texts]


def test_empty_and_copy_rules():
    assert empty_reasons("", DE_P) == ["empty"] and empty_reasons(DE_Q, " ... ") == ["empty"]
    assert empty_reasons(None, DE_P) == ["empty"] and empty_reasons(DE_Q, DE_P) == []
    assert copy_reasons(EN_Q.upper() + " ", DE_P, EN_Q, EN_P, "de") == ["copy_question"]
    assert copy_reasons(DE_Q, EN_P, EN_Q, EN_P, "de") == ["copy_passage"]
    assert copy_reasons(EN_Q, EN_P, EN_Q, EN_P, "en") == []  # English is never a "copy"


def test_length_ratio_with_script_weights():
    assert length_ratio(DE_P, EN_P) == pytest.approx(len(DE_P) / len(EN_P))
    assert effective_length("巴黎 ab") == 3 + 3 + 1 + 2
    # legitimate Chinese is about a third of the English characters, but not "too short"
    assert len(ZH_P) / len(EN_P) < 0.5 and 0.5 < length_ratio(ZH_P, EN_P) < 2
    assert length_reasons(0.2, 1.0, 0.25, 4.0) == ["length_ratio_question"]
    assert length_reasons(1.0, 4.5, 0.25, 4.0) == ["length_ratio_passage"]
    assert math.isinf(length_ratio("x", ""))


def test_langid_rule():
    assert detect_language(DE_P) == "de" and detect_language(ZH_P) == "zh"
    assert detect_language("Warum?") is None  # shorter than LANGID_MIN_CHARS: not judged
    assert langid_reasons("fr", "de", "de") == ["langid_question"]
    assert langid_reasons(None, "en", "de") == ["langid_passage"]
    assert language_matches("wuu", "zh") and language_matches("arz", "ar") and not language_matches("ja", "zh")


def test_roundtrip_rule():
    assert chrf(EN_Q, EN_Q) == pytest.approx(100.0)
    assert chrf("Completely unrelated words here", EN_Q) < 15
    assert roundtrip_reasons(10.0, 80.0, 15.0) == ["roundtrip_question"]
    assert roundtrip_reasons(20.0, 14.9, 15.0) == ["roundtrip_passage"]


def test_filter_pairs_each_rule_and_reasons():
    fr_q = "Quand la tour de Paris a-t-elle été construite ?"
    fr_p = "La tour a été construite en 1889 pour l'exposition."
    df = pd.DataFrame([
        _row("0", "en", EN_Q, EN_P),
        _row("1", "de", DE_Q, DE_P, EN_Q, EN_P),  # good
        _row("2", "de", fr_q, fr_p, EN_Q, EN_P),  # wrong language
        _row("3", "de", DE_Q, DE_P * 6, EN_Q, EN_P),  # passage too long
        _row("4", "de", "Wann?", DE_P, EN_Q, EN_P),  # question too short (and too short for langid)
        _row("5", "de", EN_Q, DE_P, EN_Q, EN_P),  # question copied (and not German)
        _row("6", "de", "", DE_P, EN_Q, EN_P),  # empty
        _row("7", "zh", ZH_Q, ZH_P, EN_Q, EN_P),  # good Chinese; round trip fine
        _row("8", "zh", ZH_Q + "?", ZH_P + "。", EN_Q, EN_P),  # round trip poor
        _row("9", "en", "  ", EN_P),  # English: only the empty check applies
    ])
    fake = FakeTranslator({ZH_Q: EN_Q, ZH_P: EN_P, ZH_Q + "?": "Tower time?", ZH_P + "。": "Nothing like it at all."})
    settings = FilterParams(roundtrip={"zh": {"model": "fake"}}, min_chrf=30.0)
    kept, rejected = filter_pairs(df, settings, {"zh": fake})
    assert kept["pair_id"].tolist() == ["0", "1", "7"]
    reasons = dict(zip(rejected["pair_id"], rejected["reasons"], strict=True))
    assert reasons == {
        "2": "langid_question;langid_passage",
        "3": "length_ratio_passage",
        "4": "length_ratio_question",
        "5": "copy_question;langid_question",
        "6": "empty",
        "8": "roundtrip_question;roundtrip_passage",
        "9": "empty",
    }
    # only the zh rows that passed the cheap rules were back-translated, each text once
    assert len(fake.calls) == 1 and sorted(fake.calls[0]) == sorted([ZH_Q, ZH_Q + "?", ZH_P, ZH_P + "。"])
    zh = kept.set_index("pair_id").loc["7"]
    assert zh["roundtrip_chrf_question"] == pytest.approx(100.0) and zh["langid_question"] == "zh"
    assert kept.set_index("pair_id").loc["1"][["roundtrip_chrf_question", "roundtrip_chrf_passage"]].isna().all()
    assert list(kept.columns[-len(QUALITY_COLUMNS):]) == QUALITY_COLUMNS
    assert rejected.set_index("pair_id").loc["8", "roundtrip_question"] == "Tower time?"
    counts = reason_counts(rejected)
    assert list(counts) == REASONS and counts["empty"] == 2 and counts["langid_question"] == 2
    # the langid rule can be switched off
    kept2, _ = filter_pairs(df[df["pair_id"] == "2"], FilterParams(check_langid=False))
    assert kept2["pair_id"].tolist() == ["2"]


def test_roundtrip_of_machine_rows_only_leaves_the_human_references_alone():
    """rows: machine back-translates only what a model made; the references of the language keep no score."""
    machine = {**_row("8", "zh", ZH_Q + "?", ZH_P + "。", EN_Q, EN_P), "system": "ctranslate2:m"}
    df = pd.DataFrame([_row("0", "en", EN_Q, EN_P), _row("7", "zh", ZH_Q, ZH_P, EN_Q, EN_P), machine])
    fake = FakeTranslator({ZH_Q + "?": "Tower time?", ZH_P + "。": "Nothing like it at all."})
    kept, rejected = filter_pairs(df, FilterParams(roundtrip={"zh": {"model": "m", "rows": "machine"}}, min_chrf=30.0),
                                  {"zh": fake})
    assert fake.calls == [[ZH_Q + "?", ZH_P + "。"]]  # the reference row "7" was not sent
    assert kept["pair_id"].tolist() == ["0", "7"] and math.isnan(kept.set_index("pair_id").loc["7",
                                                                                                 "roundtrip_chrf_question"])
    assert rejected["reasons"].tolist() == ["roundtrip_question;roundtrip_passage"]
    # rows: all (the default) sends both
    fake_all = FakeTranslator({ZH_Q: EN_Q, ZH_P: EN_P})
    filter_pairs(df, FilterParams(roundtrip={"zh": {"model": "m"}}), {"zh": fake_all})
    assert sorted(fake_all.calls[0]) == sorted([ZH_Q, ZH_Q + "?", ZH_P, ZH_P + "。"])


def test_rejected_sample_and_the_counts_per_system():
    from pipeline.stages.filter import data_metrics

    rows = [{**_row(str(i), "de", DE_Q, DE_P, EN_Q, EN_P), "system": system, "reasons": reasons}
            for i, (system, reasons) in enumerate([
                ("reference", "langid_question"), ("reference", "langid_question"), ("reference", "langid_question"),
                ("reference", "empty"), ("ctranslate2:m", "roundtrip_question;roundtrip_passage"),
                ("ctranslate2:m", "copy_question;langid_question")])]
    for col in QUALITY_COLUMNS + ["roundtrip_question", "roundtrip_passage"]:
        for r in rows:
            r[col] = None
    rejected = pd.DataFrame(rows)
    sample = rejected_sample(rejected, per_reason=2)
    # per language and system, at most two rows per first reason, reasons in the filter's order
    assert sample[["system", "pair_id", "reasons"]].values.tolist() == [
        ["ctranslate2:m", "5", "copy_question;langid_question"],
        ["ctranslate2:m", "4", "roundtrip_question;roundtrip_passage"],
        ["reference", "3", "empty"], ["reference", "0", "langid_question"], ["reference", "1", "langid_question"]]
    assert rejected_sample(rejected.iloc[:0]).empty

    pairs_in = pd.DataFrame([{"lang": "de", "system": s} for s in ["reference"] * 10 + ["ctranslate2:m"] * 4])
    kept = pd.DataFrame([{"lang": "de", "system": s, "roundtrip_chrf_question": None,
                          "roundtrip_chrf_passage": None} for s in ["reference"] * 6 + ["ctranslate2:m"] * 2])
    stats = data_metrics(pairs_in, kept, rejected)["languages"]["de"]
    assert (stats["system"], stats["pairs_in"], stats["kept"], stats["acceptance"]) == (
        "ctranslate2:m,reference", 14, 8, round(8 / 14, 4))
    assert {k: (v["pairs_in"], v["kept"], v["rejected"], v["acceptance"]) for k, v in stats["by_system"].items()} == {
        "ctranslate2:m": (4, 2, 2, 0.5), "reference": (10, 6, 4, 0.6)}


def test_filter_pairs_needs_a_translator_for_configured_languages():
    df = pd.DataFrame([_row("7", "zh", ZH_Q, ZH_P, EN_Q, EN_P)])
    with pytest.raises(ValueError, match="filter.roundtrip.zh"):
        filter_pairs(df, FilterParams(roundtrip={"zh": {"model": "x"}}), {})
    with pytest.raises(DataError, match="pair_id 7, lang zh.*'src_passage'"):
        filter_pairs(pd.DataFrame([_row("7", "zh", ZH_Q, ZH_P, EN_Q, None)]), FilterParams())


class KilledTranslator(FakeTranslator):
    """Dies (like a killed process) on call number ``alive + 1``."""

    def __init__(self, table, alive):
        super().__init__(table)
        self.alive = alive

    def translate(self, texts):
        if len(self.calls) == self.alive:
            raise KeyboardInterrupt("killed")
        return super().translate(texts)


def test_roundtrip_resumes_from_finished_chunks_after_a_kill(tmp_path):
    from pipeline.quality import Resume

    rows = [_row(str(i), "zh", f"{ZH_Q}{i}", f"{ZH_P}{i}", EN_Q, EN_P) for i in range(5)]
    df = pd.DataFrame(rows)
    table = {f"{ZH_Q}{i}": EN_Q if i % 2 else "Something else entirely" for i in range(5)}
    table |= {f"{ZH_P}{i}": EN_P for i in range(5)}
    settings = FilterParams(roundtrip={"zh": {"model": "fake"}}, min_chrf=30.0, check_langid=False)
    whole_kept, whole_rejected = filter_pairs(df, settings, {"zh": FakeTranslator(table)})
    assert whole_kept["pair_id"].tolist() == ["1", "3"] and len(whole_rejected) == 3
    resume = {"zh": Resume(tmp_path / "zh", 3, "model A")}  # 10 distinct texts: chunks of 3, 3, 3, 1
    with pytest.raises(KeyboardInterrupt):
        filter_pairs(df, settings, {"zh": KilledTranslator(table, alive=1)}, resume)
    assert [p.name for p in (tmp_path / "zh").iterdir()] == ["chunk-00000.json"]
    again = FakeTranslator(table)
    kept, rejected = filter_pairs(df, settings, {"zh": again}, resume)
    texts = [f"{ZH_Q}{i}" for i in range(5)] + [f"{ZH_P}{i}" for i in range(5)]
    assert again.calls == [texts[3:6], texts[6:9], texts[9:]]  # the first chunk is not translated again
    pd.testing.assert_frame_equal(kept, whole_kept)
    pd.testing.assert_frame_equal(rejected, whole_rejected)
    other = FakeTranslator(table)  # another model's chunks are never reused
    filter_pairs(df, settings, {"zh": other}, {"zh": Resume(tmp_path / "zh", 3, "model B")})
    assert len(other.calls) == 4


def test_filter_stage_killed_midway_resumes_to_the_same_files(tmp_path, monkeypatch):
    """A kill during the round trip leaves finished chunks in --work; the rerun reuses them and writes
    byte-identical outputs to an uninterrupted run's."""
    from pipeline.params import load_params
    from pipeline.stages import filter as stage

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params = params.model_copy(update={
        "translate": params.translate.model_copy(update={"targets": {"zh": params.translate.targets["zh"]},
                                                         "chunk_size": 2}),
        "filter": FilterParams(roundtrip={"zh": {"model": "argos-zh-en"}}, min_chrf=30.0, check_langid=False)})
    monkeypatch.setattr(stage, "load_params", lambda: params)
    rows = [_row(str(i), "en", f"{EN_Q} {i}", f"{EN_P} {i}") for i in range(3)]
    pd.DataFrame(rows).drop(columns=["src_question", "src_passage"]).to_parquet(tmp_path / "pairs.parquet", index=False)
    (tmp_path / "tr").mkdir()
    zh = [_row(str(i), "zh", f"{ZH_Q}{i}", f"{ZH_P}{i}", f"{EN_Q} {i}", f"{EN_P} {i}") for i in range(3)]
    pd.DataFrame(zh).to_parquet(tmp_path / "tr" / "zh.parquet", index=False)
    table = {f"{ZH_Q}{i}": f"{EN_Q} {i}" for i in range(3)} | {f"{ZH_P}{i}": f"{EN_P} {i}" for i in range(3)}

    def run(out, translator):
        monkeypatch.setattr(stage, "roundtrip_translators", lambda p, langs, cache_dir: {"zh": translator})
        stage.main(["--pairs", str(tmp_path / "pairs.parquet"), "--translated", str(tmp_path / "tr"),
                    "--out", str(tmp_path / out), "--metrics", str(tmp_path / out / "data.json"),
                    "--rejected-sample", str(tmp_path / out / "rejected.csv"), "--work", str(tmp_path / "work")])
        return {f.name: f.read_bytes() for f in sorted((tmp_path / out).iterdir())}

    whole = run("whole", FakeTranslator(table))
    with pytest.raises(KeyboardInterrupt):
        run("resumed", KilledTranslator(table, alive=1))
    assert not (tmp_path / "resumed").exists()
    assert [f.name for f in (tmp_path / "work" / "zh").iterdir()] == ["chunk-00000.json"]
    again = FakeTranslator(table)
    assert run("resumed", again) == whole
    assert len(again.calls) == 2  # chunks 2 and 3 of the 6 texts; chunk 1 came from the killed run
    assert not (tmp_path / "work").exists()


def test_filter_stage_end_to_end(tmp_path, monkeypatch):
    from pipeline.params import load_params
    from pipeline.stages import filter as stage

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params = params.model_copy(update={"translate": params.translate.model_copy(
        update={"targets": {"de": params.translate.targets["de"], "zh": params.translate.targets["zh"]}})})
    monkeypatch.setattr(stage, "load_params", lambda: params)
    fake = FakeTranslator({ZH_Q: EN_Q, ZH_P: EN_P})
    monkeypatch.setattr(stage, "roundtrip_translators", lambda p, langs, cache_dir: {"zh": fake})
    cols = ["pair_id", "source", "lang", "question", "passage", "context", "system"]
    gathered = pd.DataFrame([_row("1", "en", EN_Q, EN_P), _row("1", "de", DE_Q, DE_P),
                             _row("2", "en", EN_Q, EN_P)])[cols]
    (tmp_path / "tr").mkdir()
    gathered.to_parquet(tmp_path / "pairs.parquet", index=False)
    pd.DataFrame([_row("1", "de", DE_Q, DE_P, EN_Q, EN_P)]).to_parquet(tmp_path / "tr" / "de.parquet", index=False)
    args = ["--pairs", str(tmp_path / "pairs.parquet"), "--translated", str(tmp_path / "tr"),
            "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "data.json"), "--work", str(tmp_path / "work"),
            "--rejected-sample", str(tmp_path / "rejected.csv")]
    with pytest.raises(DataError, match=r"zh.parquet: not found"):
        stage.main(args)
    assert not (tmp_path / "out").exists() and not (tmp_path / "data.json").exists()  # nothing written
    assert not (tmp_path / "rejected.csv").exists()
    pd.DataFrame([_row("1", "zh", ZH_Q, ZH_P, EN_Q, EN_P), _row("1", "zh", EN_Q, ZH_P, EN_Q, EN_P)]).to_parquet(
        tmp_path / "tr" / "zh.parquet", index=False)
    with pytest.raises(DataError) as err:  # two zh rows of one pair
        stage.main(args)
    assert str(err.value) == (f"{tmp_path / 'tr' / 'zh.parquet'}: record 1: field 'pair_id' '1' occurs twice "
                              "in language 'zh'")
    assert not (tmp_path / "out").exists()
    pd.DataFrame([_row("1", "zh", ZH_Q, ZH_P, EN_Q, EN_P), _row("2", "zh", EN_Q, ZH_P, EN_Q, EN_P)]).to_parquet(
        tmp_path / "tr" / "zh.parquet", index=False)
    stage.main(args)
    assert not (tmp_path / "work").exists()  # the back-translation chunks are removed on success
    kept = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert kept["lang"].tolist() == ["en", "en", "de", "zh"] and kept.columns.tolist() == cols + QUALITY_COLUMNS
    import pyarrow.parquet as pq

    assert "string" in str(pq.read_schema(tmp_path / "out" / "pairs.parquet").field("context").type)
    assert pd.read_parquet(tmp_path / "out" / "rejected.parquet")["reasons"].tolist() == [
        "copy_question;langid_question"]
    metrics = json.loads((tmp_path / "data.json").read_text())
    zh = metrics["languages"]["zh"]
    assert (zh["pairs_in"], zh["kept"], zh["rejected"]) == (2, 1, 1) and zh["rejected_by"]["copy_question"] == 1
    assert zh["mean_roundtrip_chrf_question"] == pytest.approx(100.0) and zh["roundtrip_measured"] == 1
    assert "mean_roundtrip_chrf_question" not in metrics["languages"]["de"]
    assert metrics["total"] == {"pairs_in": 5, "kept": 4, "rejected": 1}
    assert zh["acceptance"] == 0.5 and metrics["languages"]["de"]["acceptance"] == 1.0
    sample = pd.read_csv(tmp_path / "rejected.csv")
    assert sample[["lang", "pair_id", "reasons"]].values.tolist() == [["zh", 2, "copy_question;langid_question"]]


def test_mlqa_r_human_translations_mostly_pass(mirror, monkeypatch):
    """The cheap rules keep at least 95% of MLQA-R's human translations in every language."""
    from pipeline.params import load_params
    from pipeline.stages.gather import gather

    monkeypatch.setenv("PIPELINE_MIRROR", str(mirror))
    pairs, _ = gather(load_params(Path(__file__).resolve().parents[1] / "params.yaml"))
    en = pairs[pairs["lang"] == "en"].set_index("pair_id")
    tr = pairs[pairs["lang"] != "en"].copy()
    tr["src_question"] = en.loc[tr["pair_id"], "question"].to_numpy()
    tr["src_passage"] = en.loc[tr["pair_id"], "passage"].to_numpy()
    kept, rejected = filter_pairs(tr, FilterParams())
    rate = kept.groupby("lang").size() / tr.groupby("lang").size()
    assert (rate >= 0.95).all(), rate.to_dict()
    assert (kept.loc[kept["lang"] == "zh", "length_ratio_question"].median()) == pytest.approx(0.85, abs=0.1)
