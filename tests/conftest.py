import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("PIPELINE_MIRROR", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "data" / "lareqa").is_dir():
        pytest.skip(f"the asset mirror {MIRROR} is absent (set PIPELINE_MIRROR); real-data checks cannot run")
    return MIRROR
