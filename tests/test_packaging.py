"""Console entry points, and the citation files."""
import importlib
import inspect
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = PYPROJECT["project"].get("scripts", {})


def test_the_user_commands_are_console_entry_points():
    targets = set(SCRIPTS.values())
    assert {"evaluation.evaluate:main", "scripts.compare_strategies:main", "scripts.readme_tables:main",
            "scripts.plots:main", "scripts.verify:main"} <= targets


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
