"""The ``slow`` marker is registered in pyproject.toml (an unknown mark only warns, and a typo would
silently keep a slow test in the fast set); ``make test-fast`` leaves it out, ``make test`` runs all."""
from conftest import ROOT


def test_the_slow_marker_is_registered_and_only_test_fast_deselects_it(pytestconfig):
    names = [line.split(":", 1)[0].strip() for line in pytestconfig.getini("markers")]
    assert "slow" in names
    recipes, variables = {}, {}
    target = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line and not line.startswith(("\t", "#", " ")) and ":=" in line:
            name, value = line.split(":=", 1)
            variables[name.strip()] = value.strip()
        elif line and not line.startswith(("\t", "#", " ")) and ":" in line and "=" not in line.split(":", 1)[0]:
            target = line.split(":", 1)[0]
        elif line.startswith("\t") and target:
            recipes.setdefault(target, []).append(line.strip().replace("$(PYTEST)", variables.get("PYTEST", "")))
    # both on two pytest-xdist workers
    assert recipes["test"] == ["$(PY) -m pytest -q -n 2"]
    assert recipes["test-fast"] == ['$(PY) -m pytest -q -n 2 -m "not slow"']
