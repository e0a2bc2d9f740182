"""serving/host/bundles.py: nothing unpacked that its MANIFEST does not vouch for; nothing fetched kept unless
its SHA-256 matches."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from serving.host.bundles import fetch, unpack
from serving.host.errors import HostError

pytestmark = pytest.mark.unit

FILES = {"serving/__init__.py": b'"""server"""\n', "model/m/1/metadata.json": b"{}"}


def _bundle(path: Path, files: dict[str, bytes], manifest: dict[str, bytes] | None = None) -> Path:
    listed = files if manifest is None else manifest
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("MANIFEST", "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in listed.items()))
    return path


def test_a_checked_bundle_becomes_a_release_once(tmp_path):
    bundle = _bundle(tmp_path / "b.zip", FILES)
    first = unpack(tmp_path / "host", bundle, "1")
    assert first == {"release_dir": str(tmp_path / "host" / "releases" / "1"), "reused": False}
    assert (tmp_path / "host" / "releases" / "1" / "serving" / "__init__.py").read_bytes() == FILES[
        "serving/__init__.py"]
    assert unpack(tmp_path / "host", bundle, "1")["reused"] is True
    other = _bundle(tmp_path / "c.zip", {**FILES, "model/m/1/metadata.json": b'{"v": 2}'})
    with pytest.raises(HostError, match="exists with different contents"):
        unpack(tmp_path / "host", other, "1")


@pytest.mark.parametrize("files, manifest, message", [
    ({**FILES, "extra.txt": b"x"}, FILES, "unexpected files: extra.txt"),
    ({**FILES, "serving/__init__.py": b"changed"}, FILES, "checksum mismatch.*serving/__init__.py"),
    ({**FILES, "../escape.txt": b"x"}, None, "would escape the release directory"),
])
def test_a_bundle_that_differs_from_its_manifest_is_refused(tmp_path, files, manifest, message):
    bundle = _bundle(tmp_path / "b.zip", files, manifest)
    with pytest.raises(HostError, match=message):
        unpack(tmp_path / "host", bundle, "1")
    assert not (tmp_path / "host" / "releases").exists()


def test_a_fetched_bundle_is_kept_only_when_its_digest_matches(tmp_path):
    source = _bundle(tmp_path / "b.zip", FILES)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(HostError, match="checksum mismatch"):
        fetch(tmp_path / "host", source.as_uri(), "0" * 64, "m-1.zip", timeout=10)
    assert list((tmp_path / "host" / "incoming").iterdir()) == []
    got = fetch(tmp_path / "host", source.as_uri(), digest, "m-1.zip", timeout=10)
    assert got == {"path": str(tmp_path / "host" / "incoming" / "m-1.zip"), "bytes": source.stat().st_size}
    with pytest.raises(HostError, match="standard input"):
        fetch(tmp_path / "host", "", digest, "m-1.zip", timeout=10)


def _model_bundle(path: Path, model: str, version: str) -> Path:
    files = {"serving/__init__.py": b'"""server"""\n',
             f"model/{model}/{version}/metadata.json": f'{{"model_name": "{model}"}}'.encode()}
    return _bundle(path, files)


def test_another_models_bundle_retires_the_stopped_models_releases(tmp_path):
    """A host serves one model: the demo's version 1, then a model of one's own whose first version is 1 too.
    The demo's releases and served state move to retired/, kept; the new version unpacks."""
    host = tmp_path / "host"
    unpack(host, _model_bundle(tmp_path / "demo.zip", "credit-risk", "1"), "1")
    (host / "run").mkdir()
    (host / "run" / "serving-state.json").write_text('{"versions": ["1"]}')
    (host / "current").symlink_to(Path("releases") / "1")
    result = unpack(host, _model_bundle(tmp_path / "mine.zip", "churn", "1"), "1")
    assert result["reused"] is False and result["retired"]["model"] == ["credit-risk"]
    archive = Path(result["retired"]["to"])
    assert archive.parent == host / "retired" and archive.name.startswith("credit-risk-")
    assert (archive / "releases" / "1" / "model" / "credit-risk" / "1" / "metadata.json").exists()
    assert (archive / "serving-state.json").exists() and (archive / "current").is_symlink()
    assert not (host / "run" / "serving-state.json").exists() and not (host / "current").exists()
    assert (host / "releases" / "1" / "model" / "churn" / "1" / "metadata.json").exists()
    # The same model again: nothing retired.
    assert "retired" not in unpack(host, _model_bundle(tmp_path / "mine2.zip", "churn", "2"), "2")


def test_another_models_running_server_keeps_serving(tmp_path, monkeypatch):
    from serving.host import bundles

    host = tmp_path / "host"
    unpack(host, _model_bundle(tmp_path / "demo.zip", "credit-risk", "1"), "1")
    monkeypatch.setattr(bundles, "server_pid", lambda base: 4242)
    with pytest.raises(HostError, match="this host serves model credit-risk, and a host serves one model: it keeps "
                                        "serving; stop its server first"):
        unpack(host, _model_bundle(tmp_path / "mine.zip", "churn", "1"), "1")
    assert (host / "releases" / "1" / "model" / "credit-risk").exists() and not (host / "retired").exists()
