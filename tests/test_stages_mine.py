"""Stages mine and assemble with hard negatives, with a real encoder (all-MiniLM-L6-v2 from the test
wheel, torch engine) on a small English/German pair table, in the scratch project of test_stages_eval."""
import json
import shutil

import pandas as pd
import yaml
from test_stages_eval import project  # noqa: F401  (the scratch project fixture)

FACTS = [
    ("How tall is the Eiffel Tower?", "The Eiffel Tower is 330 metres tall.",
     "Wie hoch ist der Eiffelturm?", "Der Eiffelturm ist 330 Meter hoch."),
    ("When did the Berlin Wall fall?", "The Berlin Wall fell in 1989.",
     "Wann fiel die Berliner Mauer?", "Die Berliner Mauer fiel 1989."),
    ("What is the capital of Japan?", "Tokyo is the capital of Japan.",
     "Was ist die Hauptstadt Japans?", "Tokio ist die Hauptstadt Japans."),
    ("How long is the Nile?", "The Nile is about 6,650 kilometres long.",
     "Wie lang ist der Nil?", "Der Nil ist etwa 6.650 Kilometer lang."),
    ("Who wrote Faust?", "Goethe wrote Faust.", "Wer schrieb Faust?", "Goethe schrieb Faust."),
    ("How many legs does a spider have?", "A spider has eight legs.",
     "Wie viele Beine hat eine Spinne?", "Eine Spinne hat acht Beine."),
    ("What do bees make?", "Bees make honey.", "Was machen Bienen?", "Bienen machen Honig."),
    ("Where is Mount Everest?", "Mount Everest is in the Himalayas.",
     "Wo liegt der Mount Everest?", "Der Mount Everest liegt im Himalaya."),
    ("What is water made of?", "Water is made of hydrogen and oxygen.",
     "Woraus besteht Wasser?", "Wasser besteht aus Wasserstoff und Sauerstoff."),
    ("How tall is the Eiffel Tower with its antennas?", "The Eiffel Tower is 330 metres tall.",
     "Wie hoch ist der Eiffelturm mit Antennen?", "Der Eiffelturm ist 330 Meter hoch."),
]


def _setup(project, hard_negatives: bool, policy: str = "query"):  # noqa: F811
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["languages"] = ["en", "de"]
    params["train"]["hard_negatives"] = hard_negatives
    if not (project / "models/miner").exists():
        shutil.copytree(project / "models/trained", project / "models/miner")
    params["mining"] = {"model": "models/miner", "engine": "torch", "rank_range": [2, 8], "margin": 0.0,
                        "per_pair": 2, "language": policy}
    params["sampling"].update(batch_size=4, batches=4)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    rows = []
    for i, (qe, pe, qd, pd_) in enumerate(FACTS):
        rows += [{"pair_id": f"f{i}", "lang": "en", "question": qe, "passage": pe},
                 {"pair_id": f"f{i}", "lang": "de", "question": qd, "passage": pd_}]
    split = project / "data" / "split"
    split.mkdir(parents=True, exist_ok=True)
    pairs = pd.DataFrame(rows).assign(source="toy", context="", system="reference")
    pairs.to_parquet(split / "train.parquet", index=False)
    pairs.iloc[0:0].to_parquet(split / "dev.parquet", index=False)
    return pairs


def test_mine_then_assemble_adds_policy_negatives_that_are_never_an_answer(project):  # noqa: F811
    from pipeline.stages import assemble, mine

    _setup(project, True, "query")
    mine.main(["--train", "data/split/train.parquet", "--out", "data/mined", "--metrics", "metrics/mining.json"])
    neg = pd.read_parquet(project / "data/mined/negatives.parquet")
    groups = pd.read_parquet(project / "data/mined/groups.parquet").set_index("pair_id")["group"]
    assert groups["f9"] == groups["f0"] == "f0"  # one sentence answers both Eiffel questions
    assert len(neg) and neg["rank"].between(2, 8).all()
    assert (neg["pair_id"].map(groups) != neg["negative_group"]).all()
    eiffel = {FACTS[0][1], FACTS[0][3]}
    assert not set(neg.loc[neg["pair_id"].isin(["f0", "f9"]), "negative"]) & eiffel
    stats = json.loads((project / "metrics/mining.json").read_text())
    assert stats["enabled"] and stats["questions"] == 20 and stats["negatives"] == len(neg)
    assert stats["negatives_per_language"] == {"en": int((neg.negative_lang == "en").sum()),
                                               "de": int((neg.negative_lang == "de").sum())}
    assemble.main(["--split", "data/split", "--mined", "data/mined", "--out", "data/batches"])
    b = pd.read_parquet(project / "data/batches/train.parquet")
    assert b["hard_negatives"].apply(len).sum() > 0 and b["hard_negatives"].apply(len).max() <= 2
    for q_lang, langs in zip(b["query_lang"], b["negative_langs"], strict=True):
        assert set(langs) <= {q_lang}  # policy "query"
    for _, g in b.groupby("batch_id"):
        negs = [t for row in g["hard_negatives"] for t in row]
        assert len(negs) == len(set(negs)) and not set(negs) & set(g["passage"])
        batch_groups = set(g["pair_id"].map(groups))
        by_text = dict(zip(neg["negative"], neg["negative_group"], strict=False))
        assert not {by_text[t] for t in negs} & batch_groups  # never gold for a query of the batch
    stats = json.loads((project / "data/batches/stats.json").read_text())
    assert stats["negative_policy"] == "query" and stats["train_hard_negatives"] == b["hard_negatives"].apply(len).sum()


def test_without_hard_negatives_mine_embeds_nothing_and_assemble_adds_nothing(project):  # noqa: F811
    from pipeline.stages import assemble, mine

    _setup(project, False)
    mine.main(["--train", "data/split/train.parquet", "--model", "does/not/matter"])
    assert pd.read_parquet(project / "data/mined/negatives.parquet").empty
    assert json.loads((project / "metrics/mining.json").read_text()) == {"enabled": False, "questions": 20,
                                                                         "answer_groups": 9}
    assemble.main([])
    assert "hard_negatives" not in pd.read_parquet(project / "data/batches/train.parquet").columns
