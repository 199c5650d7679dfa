"""Console entry points, and the citation files."""
import importlib
import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = PYPROJECT["project"].get("scripts", {})


def test_the_user_commands_are_console_entry_points():
    targets = set(SCRIPTS.values())
    assert {"evaluation.evaluate:main", "experiments.cli:main", "scripts.readme_tables:main",
            "experiments.plots:main", "scripts.verify:main"} <= targets


def test_the_grids_file_is_package_data_of_the_package_that_reads_it():
    from experiments import grids

    assert "grids.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["experiments"]
    assert grids.GRIDS == ROOT / "experiments" / "grids.yaml" and grids.GRIDS.is_file()


@pytest.mark.parametrize("module", ["experiments", "scripts.compare_strategies", "experiments.gpu",
                                    "scripts.gpu_bundle", "experiments.plots", "scripts.plots"])
def test_the_experiment_commands_run_under_their_new_and_former_names(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: "), out.stderr


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_entry_point_imports_and_takes_argv(name):
    module, _, attr = SCRIPTS[name].partition(":")
    func = getattr(importlib.import_module(module), attr)
    assert callable(func)
    argv = inspect.signature(func).parameters.get("argv")
    assert argv is not None and argv.default is None, f"{name}: main(argv=None), so the console script passes none"
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert module.rsplit(".", 1)[0] in packages, f"{name}: its package is installed"


def test_citation_cff_has_the_required_keys_and_cites_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff[key], key
    assert cff.get("type", "software") == "software"
    paper = cff["preferred-citation"]
    for key in ("type", "title", "authors"):
        assert paper[key], key
    assert "2408.10536" in paper["doi"] + paper["url"] and "Synergistic" in paper["title"]
    assert [a["family-names"] for a in paper["authors"]] == ["Elmahdy", "Lin", "Ahmad"]
    for ref in cff.get("references", []):
        assert ref["type"] and ref["title"] and ref["authors"]
    for person in [*cff["authors"], *paper["authors"]]:
        assert person.get("family-names") or person.get("name")


def test_citation_bib_has_the_paper_and_the_datasets():
    bib = (ROOT / "CITATION.bib").read_text(encoding="utf-8")
    keys = re.findall(r"^@\w+\{([^,\s]+),", bib, re.M)
    assert len(keys) == len(set(keys)) == 5 and bib.count("{") == bib.count("}")
    for needed in ("2408.10536", "LAReQA", "Roy, Uma", "Artetxe, Mikel", "Lewis, Patrick", "Rajpurkar, Pranav",
                   "2020.emnlp-main.477", "2020.acl-main.421", "2020.acl-main.653", "D16-1264"):
        assert needed in bib, needed
