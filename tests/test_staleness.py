"""A grid's tables say whether its runs ran today's code: code.json against the workspace's dvc.lock."""
import copy
import json

import pytest
import yaml

from conftest import ROOT

BLOCK = "<!-- table toy-cpu verdicts -->\n<!-- /table -->\n"


@pytest.fixture
def lock():
    from experiments import staleness

    return staleness.read_lock(ROOT / "dvc.lock")


def _grid(tmp_path, lock=None):
    """``tmp_path/metrics/grids/toy-cpu`` with one verdict, and code.json of ``lock`` where given."""
    from experiments import staleness

    folder = tmp_path / "metrics" / "grids" / "toy-cpu"
    folder.mkdir(parents=True)
    (folder / "verdicts.csv").write_text("claim,verdict,evidence\nX-X is best,holds,\"+0.010 [+0.002, +0.020]\"\n")
    if lock is not None:
        staleness.write(folder, [("xx-s13", "c0ffee", lock), ("xy-s13", "c0ffee", lock)])
    return folder


def _first_py_dep(stage: dict) -> dict:
    return next(d for d in stage["deps"] if d["path"].endswith(".py"))


def test_a_grid_from_the_workspace_lock_is_from_todays_code(tmp_path, lock):
    from experiments import staleness
    from scripts.readme_tables import render

    folder = _grid(tmp_path, copy.deepcopy(lock))
    code = json.loads((folder / "code.json").read_text())
    assert code["identities"][0]["commits"] == ["c0ffee"] and code["identities"][0]["runs"] == ["xx-s13", "xy-s13"]
    assert staleness.stale_stages(code, lock) == []
    text = render(BLOCK, tmp_path / "metrics" / "grids", lock)
    assert "*Code of toy-cpu: from today's code.*" in text
    assert "| **holds** |" in text


def test_a_changed_code_dependency_names_exactly_its_stage(tmp_path, lock):
    from experiments import staleness
    from scripts.readme_tables import render

    ran = copy.deepcopy(lock)
    _first_py_dep(ran["stages"]["train"])["md5"] = "0" * 32
    folder = _grid(tmp_path, ran)
    code = json.loads((folder / "code.json").read_text())
    assert staleness.stale_stages(code, lock) == ["train"]
    text = render(BLOCK, tmp_path / "metrics" / "grids", lock)
    assert "*Code of toy-cpu: stale: train changed.*" in text
    # the overview's heading carries the same mark
    overview = render("<!-- table all overview -->\n<!-- /table -->\n", tmp_path / "metrics" / "grids", lock)
    assert "| claim (paper) | toy-cpu (stale: train changed) |" in overview


def test_params_count_and_data_dependencies_do_not(lock):
    from experiments import staleness

    ran = copy.deepcopy(lock)
    stage = next(n for n, s in ran["stages"].items() if "@" in n and s.get("params"))
    next(d for d in ran["stages"]["train"]["deps"] if not d["path"].endswith(".py"))["md5"] = "1" * 32
    ran["stages"][stage]["params"]["params.yaml"]["seed"] = -1
    assert staleness.stale_stages(staleness.identities([("xx-s13", "c0ffee", ran)]), lock) == [stage]


def test_runs_that_disagree_keep_one_identity_each(lock):
    from experiments import staleness

    ran = copy.deepcopy(lock)
    _first_py_dep(ran["stages"]["train"])["md5"] = "0" * 32
    code = staleness.identities([("xx-s13", "a", lock), ("xx-s14", "b", ran), ("xy-s13", "a", lock)])
    assert [(i["commits"], i["runs"]) for i in code["identities"]] == [(["a"], ["xx-s13", "xy-s13"]),
                                                                      (["b"], ["xx-s14"])]
    assert staleness.stale_stages(code, lock) == ["train"]


def test_a_grid_without_code_json_ran_before_identities_were_recorded(tmp_path, lock):
    from experiments import staleness
    from scripts.readme_tables import render

    _grid(tmp_path)
    assert staleness.stale_stages(None, lock) == [staleness.UNKNOWN]
    text = render(BLOCK, tmp_path / "metrics" / "grids", lock)
    assert "*Code of toy-cpu: stale: ran before code identities were recorded.*" in text


def test_the_published_grids_have_no_code_json_and_are_marked_stale():
    """The grids collected before code.json existed are not given one after the fact."""
    grids = ROOT / "metrics" / "grids"
    for verdicts in grids.glob("*/verdicts.csv"):
        if not (verdicts.parent / "code.json").exists():
            text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
            assert f"{verdicts.parent.name} (stale: ran before code identities were recorded)" in text


def test_the_check_fails_on_a_code_change_and_says_how_to_render(tmp_path, lock, capsys, monkeypatch):
    import scripts.readme_tables as rt

    _grid(tmp_path, copy.deepcopy(lock))
    (tmp_path / "dvc.lock").write_text((ROOT / "dvc.lock").read_text())
    monkeypatch.setattr(rt, "GRIDS", tmp_path / "metrics" / "grids")
    doc = tmp_path / "doc.md"
    doc.write_text(BLOCK)
    assert rt.main([str(doc)]) == 0
    assert "from today's code" in doc.read_text() and rt.main(["--check", str(doc)]) == 0
    changed = copy.deepcopy(lock)
    _first_py_dep(changed["stages"]["train"])["md5"] = "0" * 32
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(changed))
    assert rt.main(["--check", str(doc)]) == 1
    assert "run python -m scripts.readme_tables" in capsys.readouterr().out


def test_the_keys_a_grid_sets_itself_never_make_it_stale_but_the_rest_of_their_section_does(lock):
    """A grid's runs differ from params.yaml in the keys they override (sampling.mode, seed, ...): those are
    left out of the digests; a change elsewhere in the same section still names the stage."""
    from experiments import staleness

    ran = copy.deepcopy(lock)
    sampling = ran["stages"]["assemble"]["params"]["params.yaml"]["sampling"]
    sampling["mode"] = "xx" if sampling["mode"] != "xx" else "xy"
    ran["stages"]["assemble"]["params"]["params.yaml"]["seed"] = 99
    keys = staleness.override_keys(["sampling.mode=xx", "seed=99"])
    assert keys == ["sampling.mode", "seed"]
    assert staleness.stale_stages(staleness.identities([("xx-s99", "c0ffee", ran)]), lock) == ["assemble"]
    code = staleness.identities([("xx-s99", "c0ffee", ran, keys)])
    assert code["identities"][0]["overridden"] == keys
    assert staleness.stale_stages(code, lock) == []
    moved = copy.deepcopy(lock)
    moved["stages"]["assemble"]["params"]["params.yaml"]["sampling"]["batch_size"] += 1
    assert staleness.stale_stages(code, moved) == ["assemble"]


def test_the_fold_a_cpu_grid_records_the_keys_each_run_overrode():
    from experiments import grids

    code = json.loads((ROOT / "metrics" / "grids" / "mlqa2xquad-cpu" / "code.json").read_text())
    for ident in code["identities"]:
        for name in ident["runs"]:
            run, seed = name.rsplit("-s", 1)
            assert ident["overridden"] == sorted({o.split("=")[0] for o in grids.overrides("mlqa2xquad-cpu", run,
                                                                                         int(seed))}), name


def test_a_stage_only_the_grids_own_overrides_create_is_checked_against_the_workspace(tmp_path, lock):
    """Fold B appends languages (``+translate.targets.el``): its runs have ``translate@el``, which the
    workspace's dvc.lock lacks. Such a stage is digested from the workspace's files and params.yaml: from
    today's code while they are unchanged, stale once one of its files or params keys changes."""
    import shutil

    from experiments import staleness

    keys = staleness.override_keys(["+translate.targets.el={backend: reference}", "seed=13"])
    assert keys == ["seed", "translate.targets.el"]
    ran = copy.deepcopy(lock)
    el = copy.deepcopy(ran["stages"]["translate@ar"])
    values = el["params"]["params.yaml"]
    values["translate.targets.el"] = {"backend": "reference"}
    del values["translate.targets.ar"]
    ran["stages"]["translate@el"] = el
    code = staleness.identities([("xy-s13", "c0ffee", ran, keys)])
    assert code["inputs"]["translate@el"]["params"]["params.yaml"][-2] == "translate.targets.el"
    assert staleness.stale_stages(code, lock) == []
    # without the inputs, a stage the workspace lacks cannot be checked: it reads as changed
    assert staleness.stale_stages({"identities": code["identities"]}, lock) == ["translate@el"]

    root = tmp_path / "workspace"
    for path in code["inputs"]["translate@el"]["code"] + ["params.yaml"]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, root / path)
    assert staleness.stale_stages(code, lock, root) == []
    script = root / "pipeline" / "stages" / "translate.py"
    script.write_text(script.read_text() + "\n# changed\n")
    assert staleness.stale_stages(code, lock, root) == ["translate@el"]
    shutil.copy(ROOT / "pipeline" / "stages" / "translate.py", script)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["translate"]["beam_size"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert staleness.stale_stages(code, lock, root) == ["translate@el"]
    params["translate"]["beam_size"] -= 1
    params["translate"]["targets"]["el"] = {"backend": "nllb"}  # the grid's own key: never stale
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert staleness.stale_stages(code, lock, root) == []


def test_a_key_inside_a_list_item_is_left_out_by_its_index(lock):
    """The MT-data runs set ``gather.sources.1.limit`` (the SQuAD source's sample size): that key, reached through
    the list by index, is left out of gather's digest; another source's key still names the stage."""
    from experiments import staleness

    ran = copy.deepcopy(lock)
    sources = ran["stages"]["gather"]["params"]["params.yaml"]["gather"]["sources"]
    sources[1]["limit"] = (sources[1].get("limit") or 0) + 1000
    keys = staleness.override_keys(["gather.sources.1.limit=1000"])
    code = staleness.identities([("squad-en-s13", "c0ffee", ran, keys)])
    assert "gather" not in staleness.stale_stages(code, lock)
    moved = copy.deepcopy(lock)
    moved["stages"]["gather"]["params"]["params.yaml"]["gather"]["sources"][0]["languages"] = ["en"]
    assert "gather" in staleness.stale_stages(code, moved)
    assert "gather" in staleness.stale_stages(staleness.identities([("squad-en-s13", "c0ffee", ran)]), lock)
    # train declares the list itself (gather.sources): the index is the path's first step there
    ran["stages"]["train"]["params"]["params.yaml"]["gather.sources"][1]["limit"] = 1000
    code = staleness.identities([("squad-en-s13", "c0ffee", ran, keys)])
    assert staleness.stale_stages(code, lock) == []
