"""The Makefile reinstalls .venv only when the requirements' content changes, never for a newer file date
(a fresh clone, a `touch`): dry runs (`make -n`) in a scratch copy show the plan."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ("Makefile", "requirements.txt", "requirements-dev.txt")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.fixture
def copy(tmp_path):
    for name in FILES:
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def plan(folder: Path, target: str = "setup-dev") -> list[str]:
    """The commands `make <target>` would run, with the virtual environment in ``folder/venv``."""
    out = subprocess.run(["make", "-n", target, f"VENV={folder / 'venv'}"], cwd=folder, capture_output=True,
                         text=True, check=True, timeout=60)
    return out.stdout.splitlines()


def installs(lines: list[str]) -> list[str]:
    return [line.split(" -r ")[1] for line in lines if "pip install" in line and " -r " in line]


def install(folder: Path) -> None:
    """What the real recipes leave behind, without running pip: the venv folder and its stamps."""
    (folder / "venv").mkdir(exist_ok=True)
    for line in plan(folder):
        if line.startswith("touch "):
            Path(line.split(" ", 1)[1]).touch()


def test_a_fresh_machine_creates_the_venv_and_installs_both_files(copy):
    lines = plan(copy)
    assert any("-m venv" in line for line in lines)
    assert installs(lines) == ["requirements.txt", "requirements-dev.txt"]


def test_an_installed_venv_is_kept_when_the_requirements_are_only_newer(copy):
    install(copy)
    assert installs(plan(copy)) == []
    later = time.time() + 3600  # a fresh clone or `touch`: newer files, same content
    for name in ("requirements.txt", "requirements-dev.txt"):
        os.utime(copy / name, (later, later))
    assert installs(plan(copy)) == []
    assert installs(plan(copy, "test")) == [] and installs(plan(copy, "repro")) == []
    assert any("pytest" in line for line in plan(copy, "test"))
    assert any("dvc repro" in line for line in plan(copy, "repro"))


def test_a_changed_pin_reinstalls(copy):
    install(copy)
    dev = copy / "requirements-dev.txt"
    dev.write_text(dev.read_text() + "# one more pin\n")
    assert installs(plan(copy)) == ["requirements-dev.txt"]
    install(copy)
    assert installs(plan(copy)) == []
    runtime = copy / "requirements.txt"
    runtime.write_text(runtime.read_text() + "# one more pin\n")
    assert installs(plan(copy)) == ["requirements.txt", "requirements-dev.txt"]
    assert installs(plan(copy, "repro")) == ["requirements.txt"]


def test_a_real_run_keeps_one_stamp_per_file(copy):
    """`make setup-dev` run for real with a stand-in python that installs nothing: the stamps of older
    requirements are removed, so the venv holds one stamp per file."""
    python = copy / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)

    def run() -> list[str]:
        subprocess.run(["make", "-s", "setup-dev", f"VENV={copy / 'venv'}"], cwd=copy, check=True, timeout=60,
                       capture_output=True)
        return sorted(p.name for p in (copy / "venv").iterdir() if p.name.startswith(".installed"))

    first = run()
    assert len(first) == 2 and installs(plan(copy)) == []
    runtime = copy / "requirements.txt"
    runtime.write_text(runtime.read_text() + "# one more pin\n")
    second = run()
    assert len(second) == 2 and not set(first) & set(second) and installs(plan(copy)) == []
