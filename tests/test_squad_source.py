"""A source's ``limit`` sample, its own leakage guard and the SQuAD dev refusal, on small files written by
the tests; SQuAD v1.1 train through the gather stage where the mirror holds it."""
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from pipeline.errors import DataError
from pipeline.params import SQUAD_DEV_SHA256, ParamsError, parse_params, read_params_file
from pipeline.sources import limit_pairs, pair_id
from pipeline.stages import gather as stage

SQUAD_TRAIN = {"name": "squad-train", "type": "squad", "path": "data/squad-v1.1/train-v1.1.json",
               "url": "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json",
               "sha256": "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
               "licence": "CC BY-SA 4.0", "leakage_guard": ["xquad-r", "mlqa-r"], "limit": 20000}


def _par(context: str, qas: list[tuple[str, str, int]]) -> dict:
    """A paragraph; each question is (id, question, offset of its answer in the context)."""
    return {"context": context, "qas": [{"id": i, "question": q, "answers": [{"answer_start": a, "text": "x"}]}
                                        for i, q, a in qas]}


def _eval_set(folder: Path, context: str, spans, question: str) -> None:
    folder.mkdir(parents=True)
    doc = {"data": [{"title": "t", "paragraphs": [{
        "context": context, "sentence_breaks": spans, "sentences": [context[a:b] for a, b in spans],
        "qas": [{"id": f"{folder.name}-1", "question": question, "answers": [{"answer_start": 0, "text": "x"}]}]}]}]}
    (folder / "en.json").write_text(json.dumps(doc))


@pytest.fixture
def mirror_dir(tmp_path, monkeypatch):
    """Two evaluation sets (``eva``, ``evb``) and a SQuAD file with 12 clean questions, 1 duplicate, 1
    question of eva, 2 passages of evb and 1 pair in both."""
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)
    _eval_set(tmp_path / "data" / "eva", "Goethe wrote Faust. It is a play.", [[0, 19], [20, 32]], "Who wrote Faust?")
    _eval_set(tmp_path / "data" / "evb", "Bees make honey. Honey is sweet.", [[0, 16], [17, 32]], "What do bees make?")
    pars = [_par(f"Fact {i} holds. Item {i} weighs {i} kilograms.", [(f"q{i}", f"How much does item {i} weigh?", 16)])
            for i in range(12)]
    pars[3]["qas"].append({**pars[3]["qas"][0], "id": "q3-again"})  # the same pair again: a duplicate
    pars.append(_par("Faust is a play. Bees make honey. Honey is sweet.", [
        ("leak-a", "Who wrote Faust?", 0),  # eva's question
        ("leak-b1", "What is made by bees?", 17), ("leak-b2", "Is honey sweet?", 34),  # evb's sentences
        ("leak-ab", "Who wrote Faust?", 17)]))  # eva's question and evb's sentence: in both sets
    (tmp_path / "sq.json").write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": pars}]}))
    return tmp_path


def _data(mirror: Path, sources: list[dict], guard=("eva",), index=("eva",)) -> dict:
    data = read_params_file(ROOT / "params.yaml")
    data["mirror"] = str(mirror)
    for name in ("eva", "evb"):
        data["datasets"][name] = {"path": f"data/{name}", "url": f"https://example.invalid/{name}/{{lang}}.json",
                                  "languages": ["en"], "licence": "test"}
    data["gather"].update(sources=sources, leakage_guard=list(guard))
    data["translate"]["targets"]["es"] = {"backend": "reference", "fill": None}  # the default fills squad-train
    data["index"]["datasets"] = list(index)
    data["score"]["unseen_languages"] = []
    return data


def _sq(**extra) -> dict:
    return {"name": "sq", "type": "squad", "path": "sq.json", "licence": "test", **extra}


EVB_SOURCE = {"name": "evb", "type": "lareqa", "path": "data/evb", "url": "https://example.invalid/evb/{lang}.json",
              "languages": ["en"], "licence": "test"}


def _kept_ids(pairs: pd.DataFrame, source: str = "sq") -> list[str]:
    return pairs.loc[pairs["source"] == source, "pair_id"].tolist()


def test_limit_pairs_is_a_seeded_hash_order_with_translations_following():
    rows = [{"pair_id": f"p{i}", "source": "s", "lang": lang, "question": f"q{i}", "passage": "p", "context": None,
             "system": "source" if lang == "en" else "reference"} for i in range(10) for lang in ("en", "de")]
    other = {**rows[0], "source": "t", "pair_id": "t0"}
    df = pd.DataFrame([*rows, other])
    kept, away = limit_pairs(df, "s", 3, seed=0)
    # fixed by sha256(seed, pair_id): the same on every machine and pandas version
    assert sorted(set(_kept_ids(kept, "s"))) == ["p1", "p2", "p7"]
    assert away == {("s", "en"): 7, ("s", "de"): 7}
    assert kept.groupby("pair_id")["lang"].apply(list).loc[["p1", "p2", "p7"]].tolist() == [["en", "de"]] * 3
    assert _kept_ids(kept, "t") == ["t0"]  # another source is untouched
    assert _kept_ids(kept, "s") == [p for p in _kept_ids(df, "s") if p in {"p1", "p2", "p7"}]  # row order kept
    assert set(_kept_ids(limit_pairs(df, "s", 3, seed=1)[0], "s")) != {"p1", "p2", "p7"}
    assert set(_kept_ids(limit_pairs(df, "s", 2, seed=0)[0], "s")) < {"p1", "p2", "p7"}  # nested
    everything, none_away = limit_pairs(df, "s", 50, seed=0)
    assert everything.equals(df) and none_away == {}
    assert limit_pairs(df, "s", None)[0] is df


def test_per_source_guard_and_limit_in_gather(mirror_dir):
    params = parse_params(_data(mirror_dir, [EVB_SOURCE, _sq(leakage_guard=["evb"], limit=5)]))
    pairs, stats = stage.gather(params)
    sq, evb = stats["sources"]["sq"], stats["sources"]["evb"]
    # evb is a training source and an evaluation set: guarded by the global list (eva) only, it keeps its pair
    assert evb["leakage_guard"] == ["eva"] and evb["kept"] == evb["read"] == {"en": 1}
    assert sq["leakage_guard"] == ["eva", "evb"] and (sq["limit"], sq["sample_seed"]) == (5, 0)
    assert sq["read"] == {"en": 17} and sq["duplicates_dropped"] == {"en": 1}
    # leak-ab is in both sets: counted under each, removed once
    assert sq["leakage_removed_by"] == {"eva": {"en": 2}, "evb": {"en": 3}} and sq["leakage_removed"] == {"en": 4}
    assert sq["sampled_away"] == {"en": 7} and sq["kept"] == {"en": 5}
    assert stats["leakage_guard"] == {"datasets": ["eva"], "texts": 3}
    clean = {pair_id("sq", f"q{i}") for i in range(12)}
    five = _kept_ids(pairs)
    assert len(five) == 5 and set(five) <= clean  # sampled after cleaning and the guard

    again = stage.gather(params)[0]
    assert _kept_ids(again) == five
    data = _data(mirror_dir, [EVB_SOURCE, _sq(leakage_guard=["evb"], limit=5, sample_seed=7)])
    assert set(_kept_ids(stage.gather(parse_params(data))[0])) != set(five)
    data = _data(mirror_dir, [EVB_SOURCE, _sq(leakage_guard=["evb"], limit=1000)])
    pairs, stats = stage.gather(parse_params(data))
    assert set(_kept_ids(pairs)) == clean and stats["sources"]["sq"]["sampled_away"] == {"en": 0}


def test_the_global_guard_alone_leaves_evb_pairs_in(mirror_dir):
    pairs, stats = stage.gather(parse_params(_data(mirror_dir, [_sq()])))
    sq = stats["sources"]["sq"]
    assert sq["leakage_removed_by"] == {"eva": {"en": 2}} and sq["sampled_away"] == {"en": 0}
    assert sq["kept"] == {"en": 14} and sq["limit"] is None


@pytest.mark.parametrize("change, message", [
    (dict(limit=0), "gather.sources.0.limit: Input should be greater than or equal to 1"),
    (dict(limit=True), "gather.sources.0.limit: Value error, a boolean (True) is not a number"),
    (dict(limit="all"), "gather.sources.0.limit: Input should be a valid integer"),
    (dict(sample_seed=-1), "gather.sources.0.sample_seed: Input should be greater than or equal to 0"),
    (dict(leakage_guard="eva"), "gather.sources.0.leakage_guard: Input should be a valid list"),
    (dict(leakage_guard=["evc"]), "gather.sources[sq].leakage_guard: unknown dataset 'evc'; valid: ['eva', 'evb', "),
    (dict(path="data/squad-v1.1/dev-v1.1.json"), "gather.sources[sq]: SQuAD v1.1 dev (dev-v1.1.json) is what "
                                                 "XQuAD, hence 'xquad-r' (index.datasets), was made from"),
    (dict(sha256=SQUAD_DEV_SHA256), "SQuAD v1.1 dev (sha256 95aa6a52d5d6...) is what XQuAD"),
    (dict(type="hf", path=None, hub_id="rajpurkar/squad", split="validation"),
     "SQuAD v1.1 dev (rajpurkar/squad split validation) is what XQuAD"),
])
def test_bad_source_params_name_the_key(change, message):
    with pytest.raises(ParamsError) as err:
        parse_params(_data(Path("mirror"), [_sq(**change)], index=("xquad-r",)))
    assert message in str(err.value)


def test_squad_dev_is_accepted_where_no_xquad_set_is_evaluated():
    parse_params(_data(Path("mirror"), [_sq(path="data/squad-v1.1/dev-v1.1.json")], index=("mlqa-r",)))


def test_a_source_guarded_against_itself_is_refused():
    with pytest.raises(ParamsError, match=r"gather.leakage_guard: 'evb' is the source 'evb' itself \(path data/evb\): "
                                          r"the guard would remove every pair"):
        parse_params(_data(Path("mirror"), [EVB_SOURCE], guard=("evb",)))
    with pytest.raises(ParamsError, match=r"gather.sources\[evb\].leakage_guard: 'evb' is the source 'evb' itself"):
        parse_params(_data(Path("mirror"), [{**EVB_SOURCE, "leakage_guard": ["evb"]}]))


def test_gather_refuses_squad_dev_by_content_when_guarded_against_xquad(mirror_dir, monkeypatch):
    """A renamed, unpinned copy of SQuAD v1.1 dev passes the params check; the gather stage knows it by its
    sha256 (here: the fixture's, standing in for the real file's)."""
    sha = hashlib.sha256((mirror_dir / "sq.json").read_bytes()).hexdigest()
    monkeypatch.setattr(stage, "SQUAD_DEV_SHA256", sha)
    data = _data(mirror_dir, [_sq()])
    data["datasets"]["xquad-eva"] = data["datasets"].pop("eva")
    data["gather"]["leakage_guard"] = data["index"]["datasets"] = ["xquad-eva"]
    with pytest.raises(DataError, match=r"gather.sources\[sq\]: sq.json is SQuAD v1.1 dev \(sha256 "
                                        rf"{sha[:12]}...\), what XQuAD, hence 'xquad-eva', was made from"):
        stage.gather(parse_params(data))
    stage.gather(parse_params(_data(mirror_dir, [_sq()])))  # guarded against no XQuAD set: loaded


def test_real_squad_dev_under_another_name_is_refused(mirror, tmp_path, monkeypatch):
    dev = mirror / "data" / "squad-v1.1" / "dev-v1.1.json"
    if not dev.is_file():
        pytest.skip(f"SQuAD v1.1 dev is not in the mirror ({dev})")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "questions.json").symlink_to(dev)
    monkeypatch.setenv("PIPELINE_MIRROR", str(tmp_path))
    data = read_params_file(ROOT / "params.yaml")  # fold A: guarded against xquad-r, which is evaluated
    data["gather"]["sources"] = [{"name": "qa", "type": "squad", "path": "data/questions.json", "licence": "x"}]
    with pytest.raises(DataError, match=r"gather.sources\[qa\]: data/questions.json is SQuAD v1.1 dev "
                                        r"\(sha256 95aa6a52d5d6...\), what XQuAD, hence 'xquad-r', was made from"):
        stage.gather(parse_params(data))


@pytest.mark.slow  # reads all of SQuAD v1.1 train (87,599 questions, ~4 s) and both evaluation sets (~14 s in all)
def test_real_squad_train_guarded_against_xquad_r_and_mlqa_r(mirror, monkeypatch):
    if not (mirror / SQUAD_TRAIN["path"]).is_file():
        pytest.skip(f"SQuAD v1.1 train is not in the mirror ({mirror / SQUAD_TRAIN['path']})")
    monkeypatch.setenv("PIPELINE_MIRROR", str(mirror))
    data = read_params_file(ROOT / "params.yaml")
    # the offline default's own squad-train (a small sample) replaced by this larger one
    data["gather"]["sources"] = [s for s in data["gather"]["sources"] if s["name"] != "squad-train"] + [SQUAD_TRAIN]
    pairs, stats = stage.gather(parse_params(data))
    sq, mlqa = stats["sources"]["squad-train"], stats["sources"]["mlqa-r"]
    assert sq["read"] == {"en": 87599} and sq["unanswerable"] == 0 and sq["empty_dropped"] == {"en": 0}
    assert sq["duplicates_dropped"] == {"en": 179}  # same question and answer sentence, normalised
    # "What was the average family size?" is an XQuAD-R question; MLQA-R shares 4 questions and 20 sentences
    assert sq["leakage_removed_by"] == {"xquad-r": {"en": 1}, "mlqa-r": {"en": 24}}
    assert sq["leakage_removed"] == {"en": 25}
    assert sq["sampled_away"] == {"en": 87599 - 179 - 25 - 20000} and sq["kept"] == {"en": 20000}
    ids = sorted(pairs.loc[pairs["source"] == "squad-train", "pair_id"])
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] == "7a60616c44b3e7b8"
    # MLQA-R, a training source here, is guarded by the global list (xquad-r) only, never against itself
    assert mlqa["leakage_guard"] == ["xquad-r"] and mlqa["kept"] == mlqa["read"]
    assert stats["languages"]["en"] == 1148 + 20000
