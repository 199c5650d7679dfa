"""The reproducibility pins: set by the pipeline before the numerical libraries load, and in force."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.reproducibility import (MODE_ENV, PORTABLE_ENV, ReproducibilityError, machine, mode_from_params,
                                      pin)

ROOT = Path(__file__).resolve().parents[1]


def test_portable_overrides_the_users_environment_and_fast_sets_nothing():
    env = {"CT2_USE_MKL": "1", "ATEN_CPU_CAPABILITY": "avx512"}
    assert pin("portable", env, modules={}) == PORTABLE_ENV
    assert env["CT2_USE_MKL"] == "0" and env["ATEN_CPU_CAPABILITY"] == "avx2" and env[MODE_ENV] == "portable"
    env = {"CT2_USE_MKL": "1"}
    assert pin("fast", env, modules={}) == {} and env == {"CT2_USE_MKL": "1", MODE_ENV: "fast"}
    with pytest.raises(ValueError, match="'exact' is not one of"):
        pin("exact", {}, modules={})


def test_pins_after_a_library_loaded_are_refused():
    with pytest.raises(ReproducibilityError, match="torch already loaded before the pins"):
        pin("portable", {}, modules={"torch": object()})
    env = dict(PORTABLE_ENV)  # already pinned when it loaded: nothing to refuse
    assert pin("portable", env, modules={"torch": object()}) == PORTABLE_ENV


def test_mode_is_read_from_params_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text("seed: 1\nreproducibility: fast\n")
    assert mode_from_params(tmp_path / "p.yaml") == "fast"
    (tmp_path / "p.yaml").write_text("seed: 1\n")
    assert mode_from_params(tmp_path / "p.yaml") == "portable"
    assert mode_from_params(tmp_path / "missing.yaml") == "portable"


@pytest.mark.parametrize("mode", ["portable", "fast"])
def test_a_stage_process_runs_with_the_pins_in_force(tmp_path, mode):
    """What a stage process sees: the environment set by pipeline.stages, and torch, CTranslate2 and
    faiss dispatching to their AVX2 paths (portable) or their own choice (fast)."""
    params = (ROOT / "params.yaml").read_text().replace("reproducibility: portable", f"reproducibility: {mode}")
    assert f"reproducibility: {mode}" in params
    (tmp_path / "params.yaml").write_text(params)
    code = ("import pipeline.stages, json, os, torch, ctranslate2, faiss\n"
            "from pipeline.reproducibility import machine\n"
            "print(json.dumps({'env': {k: os.environ.get(k) for k in ('CT2_USE_MKL', 'ATEN_CPU_CAPABILITY')},"
            " 'torch': torch.backends.cpu.get_cpu_capability(), 'machine': machine()}))")
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV and k != MODE_ENV}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["machine"]["reproducibility"] == mode
    if mode == "portable":
        assert seen["env"] == {"CT2_USE_MKL": "0", "ATEN_CPU_CAPABILITY": "avx2"}
        assert seen["torch"] in ("AVX2", "DEFAULT")  # DEFAULT on a CPU without AVX2
        assert seen["machine"]["pins"] == PORTABLE_ENV
    else:
        assert seen["env"] == {"CT2_USE_MKL": None, "ATEN_CPU_CAPABILITY": None} and seen["machine"]["pins"] == {}


def test_machine_names_the_cpu_and_the_libraries():
    m = machine()
    assert m["cpu"] and m["arch"] and {"torch", "ctranslate2", "numpy"} <= set(m["libraries"])
    assert set(m["isa_flags"]) <= {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                                   "amx_tile", "amx_bf16", "amx_int8", "avx_vnni"}
