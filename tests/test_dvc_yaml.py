"""dvc.yaml stays honest: each stage lists its module and every pipeline module it imports (so DVC
reruns a stage when its code changes), and every stage module has a stage."""
import ast

import yaml
from conftest import ROOT


def _imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                if node.module:
                    names = [".".join(base + [node.module])]
                else:
                    names = [".".join(base + [a.name]) for a in node.names]
            elif node.module and node.module.startswith("pipeline"):
                names = [node.module]
            else:
                continue
            found |= {n for n in names if (ROOT / (n.replace(".", "/") + ".py")).exists()}
    return found


# The params schema is no dependency of any stage: each stage depends on the values it declares under
# params:, read from params.yaml unchanged (tests/test_params_access.py), not on the classes that check them.
NOT_DEPS = {"pipeline.params", "pipeline.params_trace"}
# run before every stage module: pins the numerical libraries' kernels (pipeline/reproducibility.py)
ALWAYS = ["pipeline.stages.__init__"]


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module, *ALWAYS]
    while todo:
        m = todo.pop()
        if m not in seen and m not in NOT_DEPS:
            seen.add(m)
            todo += _imports(m)
    return {m.replace(".", "/") + ".py" for m in seen}


def test_every_stage_depends_on_the_code_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        module = stage["cmd"].split("-m ", 1)[1].split()[0]
        deps = {d for d in stage["deps"] if d.endswith(".py")}
        missing = _closure(module) - deps
        assert not missing, f"dvc.yaml stage {name!r} does not list {sorted(missing)} under deps"


def test_every_stage_module_is_a_dvc_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    modules = {p.stem for p in (ROOT / "pipeline/stages").glob("*.py") if p.stem != "__init__"}
    assert modules == set(stages)


def test_every_plot_is_declared_once_and_drawn_from_a_stage_output():
    """A path under both the top-level ``plots`` and a stage's ``plots`` renders twice (once without its x/y)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    top = [next(iter(p)) for p in spec.get("plots", [])]
    stage_plots, stage_outs = [], []
    for stage in spec["stages"].values():
        stage = stage.get("do", stage)
        stage_plots += [next(iter(p)) if isinstance(p, dict) else p for p in stage.get("plots", [])]
        stage_outs += [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
    assert len(top + stage_plots) == len(set(top + stage_plots)), "a plot is declared twice"
    for path in top:
        candidates = {o.replace("${item}", d) for o in stage_outs for d in ("xquad-r", "mlqa-r")}
        assert path in candidates, f"top-level plot {path} is no stage's output"


# Plain uncached outputs allowed: the top-level plot must name a plain output (see the test above), and
# score takes seconds. Any other keeps its stage out of DVC's run cache.
PLAIN_UNCACHED = {"metrics/${item}-languages.csv"}


def test_every_uncached_output_is_a_metric_or_a_plot_so_the_run_cache_keeps_its_stage():
    """DVC (dvc/stage/__init__.py, ``run``) saves no run cache for a stage with an output that is
    ``cache: false`` and neither a metric nor a plot, so every queued experiment re-ran gather, filter (its
    round trip), mine and train although their inputs had not changed."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    plain = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        for out in stage.get("outs", []):
            if isinstance(out, dict):
                path, props = next(iter(out.items()))
                if props and props.get("cache") is False:
                    plain[path] = name
    assert set(plain) == PLAIN_UNCACHED, f"plain uncached outputs (declare them under metrics: or plots:): {plain}"
