"""A parquet file between stages that is missing, unreadable or short of a column is one DataError line
naming the file (pipeline.io.read_parquet), in every stage that reads one, not a pyarrow traceback."""
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from pipeline.errors import DataError
from pipeline.io import read_parquet
from pipeline.params import load_params

PAIRS = [{"pair_id": "1", "source": "s", "lang": "en", "question": "q", "passage": "p", "context": None,
          "system": "source"}]


def _good(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(PAIRS).to_parquet(path, index=False)
    return path


def _truncated(path: Path) -> Path:
    raw = _good(path).read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def test_read_parquet_reads_every_column_and_checks_the_required_ones(tmp_path):
    df = read_parquet(_good(tmp_path / "pairs.parquet"), required=["pair_id", "lang"])
    assert list(df.columns) == list(PAIRS[0]) and df["question"].tolist() == ["q"]
    with pytest.raises(DataError, match=r"pairs\.parquet: missing columns \['gold'\] \(has \['pair_id', "):
        read_parquet(tmp_path / "pairs.parquet", required=["pair_id", "gold"])


@pytest.mark.parametrize("make, message", [
    (lambda p: p, r"x\.parquet: file not found$"),
    (lambda p: (p.write_bytes(b"not parquet at all"), p)[1], r"x\.parquet: not a readable parquet file \("),
    (_truncated, r"x\.parquet: not a readable parquet file \("),
])
def test_read_parquet_names_the_file_of_a_missing_or_corrupt_input(tmp_path, make, message):
    path = make(tmp_path / "x.parquet")
    with pytest.raises(DataError, match=message) as err:
        read_parquet(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _stage(monkeypatch, module):
    params = load_params(ROOT / "params.yaml")
    monkeypatch.setattr(module, "load_params", lambda: params)
    return module


def test_stages_report_a_corrupt_input_as_one_line(tmp_path, monkeypatch):
    from pipeline.stages import assemble, mine, split, translate

    bad = _truncated(tmp_path / "bad.parquet")
    calls = [
        (split, ["--pairs", str(bad), "--out", str(tmp_path / "split")]),
        (mine, ["--train", str(bad), "--out", str(tmp_path / "mined"), "--metrics", str(tmp_path / "m.json")]),
        (translate, ["--lang", sorted(load_params(ROOT / "params.yaml").translate.targets)[0], "--pairs", str(bad),
                     "--out", str(tmp_path / "tr"), "--work", str(tmp_path / "work")]),
    ]
    for module, argv in calls:
        with pytest.raises(DataError, match=rf"^{bad}: not a readable parquet file"):
            _stage(monkeypatch, module).main(argv)
    split_dir = tmp_path / "split-in"
    _truncated(split_dir / "train.parquet")
    with pytest.raises(DataError, match=rf"^{split_dir / 'train.parquet'}: not a readable parquet file"):
        _stage(monkeypatch, assemble).main(["--split", str(split_dir), "--out", str(tmp_path / "batches")])
    assert not any((tmp_path / d).exists() for d in ("split", "mined", "tr", "batches"))


def test_filter_reports_a_corrupt_translation(tmp_path):
    from pipeline.stages.filter import read_inputs

    pairs = _good(tmp_path / "pairs.parquet")
    _truncated(tmp_path / "tr" / "de.parquet")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'tr' / 'de.parquet'}: not a readable parquet file"):
        read_inputs(pairs, tmp_path / "tr", ["en", "de"])


def test_score_embeddings_reports_a_missing_column(tmp_path):
    import numpy as np

    from pipeline.metrics import score_embeddings

    pd.DataFrame({"qid": ["q"], "id": ["1"], "lang": ["en"]}).to_parquet(tmp_path / "queries.parquet")
    pd.DataFrame({"cand_id": ["c"], "lang": ["en"]}).to_parquet(tmp_path / "pool.parquet")
    np.save(tmp_path / "queries.npy", np.ones((1, 2), np.float32))
    np.save(tmp_path / "pool.npy", np.ones((1, 2), np.float32))
    with pytest.raises(DataError, match=r"queries\.parquet: missing columns \['gold'\]"):
        score_embeddings(tmp_path)
