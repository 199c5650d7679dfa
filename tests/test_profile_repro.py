"""The per-stage profiler of `dvc repro` (scripts/profile_repro.py) on a stand-in process tree."""
import sys

from scripts.profile_repro import profile, stage_of

CHILD = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
PARENT = ("import subprocess, sys; "
          f"subprocess.run([sys.executable, '-c', {CHILD!r}, '-m', 'pipeline.stages.toy', '--lang', 'de'], check=True)")


def test_stage_names_follow_dvc_foreach_names():
    assert stage_of(["python", "-m", "pipeline.stages.translate", "--lang", "zh", "--out", "x"]) == "translate@zh"
    assert stage_of(["python", "-m", "pipeline.stages.score", "--dataset", "xquad-r"]) == "score@xquad-r"
    assert stage_of(["python", "-m", "pipeline.stages.train", "--out", "m"]) == "train"
    assert stage_of(["python", "-m", "dvc", "repro"]) is None and stage_of(["/bin/sh", "-c", "x"]) is None


def test_a_stage_process_wall_time_and_peak_memory_are_measured():
    run = profile([sys.executable, "-c", PARENT], interval=0.1)
    (stage,) = run["stages"]
    assert stage["stage"] == "toy@de"
    assert 1.4 <= stage["wall_s"] <= run["total_s"] + 0.2
    assert 300 <= stage["peak_rss_mb"] < 400  # the 300 MB buffer, touched page by page, plus the interpreter
