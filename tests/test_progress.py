"""Long loops print one line per quarter on stdout when it is not a terminal (`dvc repro > log`, CI):
training steps and evaluations, the filter's rules and round trips, encoding. Never into an output file."""
import numpy as np
import pandas as pd
import torch

from test_quality import EN_P, EN_Q, ZH_P, ZH_Q, FakeTranslator, KilledTranslator, _row
from test_training import ENCODING, PARAMS, dev_set, text_batches_of, tiny_model  # noqa: F401  (fixture)

from pipeline.params import FilterParams


def shares(out: str, prefix: str) -> list[int]:
    """The percentages of the lines of ``out`` that start with ``prefix``."""
    return [int(line.split(" (")[1].split("%")[0]) for line in out.splitlines() if line.startswith(prefix)]


def test_training_prints_a_line_per_quarter_of_its_steps_and_evaluations(tiny_model, tmp_path, capsys):  # noqa: F811
    from pipeline.training import train

    params = PARAMS.model_copy(update={"select_by": "dev", "steps": 12, "eval_every": 4, "patience": 10})
    live = tmp_path / "live"
    *_, metrics = train(tiny_model, text_batches_of(), [], params, ENCODING, 7, live_dir=live,
                        device=torch.device("cpu"), dev=dev_set())
    out, err = capsys.readouterr()
    steps = [line for line in out.splitlines() if " steps (" in line]
    evals = [line for line in out.splitlines() if " evaluations (" in line]
    assert [s.split(",")[0] for s in steps] == [f"train: {k}/12 steps ({25 * k // 3}%)" for k in (3, 6, 9, 12)]
    assert all(", loss " in s and " s/step, ETA " in s and s.endswith(" s") for s in steps)
    assert [e.split(",")[0] for e in evals] == [f"train: {k}/4 evaluations ({25 * k}%)" for k in (1, 2, 3, 4)]
    assert evals[0].startswith("train: 1/4 evaluations (25%), step 0, dev_score ")
    assert evals[-1].split(", ")[1] == "step 12" and f"kept: step {metrics['best_step']}, " in evals[-1]
    assert "% )" not in out and " (25%" not in err  # the quarter lines are on stdout, not in the log
    written = b"".join(f.read_bytes() for f in live.rglob("*") if f.is_file())
    assert b"evaluations (" not in written and b"steps (" not in written


def test_an_early_stop_ends_the_progress_with_where_it_stopped(tiny_model, capsys):  # noqa: F811
    from pipeline.training import train

    params = PARAMS.model_copy(update={"select_by": "dev", "steps": 12, "eval_every": 2, "patience": 1,
                                       "lr": 5.0, "warmup_ratio": 0.0})
    *_, metrics = train(tiny_model, text_batches_of(), [], params, ENCODING, 7, device=torch.device("cpu"),
                        dev=dev_set())
    out = capsys.readouterr().out
    assert metrics["stopped_early"] and metrics["steps_run"] < 12
    last_step = [line for line in out.splitlines() if " steps (" in line][-1]
    assert last_step.startswith(f"train: {metrics['steps_run']}/12 steps (")


def test_training_without_progress_prints_nothing(tiny_model, capsys):  # noqa: F811
    from pipeline.training import train

    train(tiny_model, text_batches_of(), [], PARAMS.model_copy(update={"select_by": "last", "steps": 2}), ENCODING, 7,
          device=torch.device("cpu"), progress=False)
    assert capsys.readouterr().out == ""


def test_encoding_prints_a_line_per_quarter(capsys):
    from pipeline.embedding import encode_ids

    ids = [[1, 2, 3][: 1 + i % 3] for i in range(40)]
    vecs = encode_ids(ids, lambda batch: np.ones((len(batch), 4), dtype=np.float32), 5, progress=True,
                      desc="mine: passages")
    assert vecs.shape == (40, 4)
    out = capsys.readouterr().out
    assert shares(out, "mine: passages: ") == [25, 50, 75, 100]
    assert out.splitlines()[0].startswith("mine: passages: 10/40 texts (25%), ")


def _zh_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame([_row(str(i), "en", EN_Q, EN_P) for i in range(n)]
                        + [_row(str(i), "zh", f"{ZH_Q}{i}", f"{ZH_P}{i}", EN_Q, EN_P) for i in range(n)])


def test_the_filter_prints_a_line_per_quarter_of_its_rules_and_round_trips(tmp_path, capsys):
    from pipeline.quality import Resume, filter_pairs

    df = _zh_frame(4)
    table = {f"{ZH_Q}{i}": EN_Q for i in range(4)} | {f"{ZH_P}{i}": EN_P for i in range(4)}
    settings = FilterParams(roundtrip={"zh": {"model": "fake"}}, min_chrf=30.0, check_langid=False)
    kept, _ = filter_pairs(df, settings, {"zh": FakeTranslator(table)}, {"zh": Resume(tmp_path / "a", 2)},
                           progress=True)  # the stage's way: chunk by chunk, 4 chunks of 2 texts
    out = capsys.readouterr().out
    assert shares(out, "filter: rules: ") == [25, 50, 75, 100]
    assert shares(out, "filter: round trip zh: ") == [25, 50, 75, 100]
    assert "filter: round trip zh: 8/8 texts (100%)" in out
    assert not any(kept[c].astype(str).str.contains("%").any() for c in kept.columns)
    filter_pairs(df, settings, {"zh": FakeTranslator(table)}, progress=True)  # one call: one line
    assert shares(capsys.readouterr().out, "filter: round trip zh: ") == [100]
    filter_pairs(df, settings, {"zh": FakeTranslator(table)})
    assert capsys.readouterr().out == ""  # progress is asked for, by the stage
    # a rerun after a kill: the chunks of the killed run count too, so the round trip still reaches 100%
    resume = {"zh": Resume(tmp_path / "zh", 3, "model A")}
    try:
        filter_pairs(df, settings, {"zh": KilledTranslator(table, alive=2)}, resume, progress=True)
    except KeyboardInterrupt:
        pass
    capsys.readouterr()
    filter_pairs(df, settings, {"zh": FakeTranslator(table)}, resume, progress=True)
    out = capsys.readouterr().out
    assert shares(out, "filter: round trip zh: ")[-1] == 100
