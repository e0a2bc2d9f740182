"""The backup archive's logic on a small made-up home: what goes in, the manifest, every refusal, traversal."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
import threading
import time
from pathlib import Path

import pytest

from serving.contract.digest import sha256_bytes
from tasks.backup import MANIFEST, BackupError, backup, rehome_database, restore, verify

pytestmark = pytest.mark.unit

TAKEN = {"mlflow/mlflow.db", "mlflow/artifacts/1/abc/artifacts/model.txt", "models/m/1/metadata.json",
         "bundles/m-1.zip", "reports/m/run/reliability.png", "monitoring/alarms.json",
         "monitoring/alarm-history.jsonl", "last_release.json", "targets/t1/run/serving-state.json",
         "targets/t1/releases/1/metadata.json"}
LEFT = ("locks/m.release.lock", "prefect/prefect.db", "registry-cache/m/1/x", "targets/t1/venvs/ab/pyvenv.cfg",
        "targets/t1/run/server.pid", "targets/t1/run/admin_token", "targets/t1/incoming/m-1.zip",
        "models/m/.staging-x/partial", "models/m/1/.metadata.json.1.ab.part")


def _database(path: Path, home: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    with con:
        con.executescript("""
            CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256),
                                      artifact_location VARCHAR(256));
            CREATE TABLE runs (run_uuid VARCHAR(32), artifact_uri VARCHAR(200), start_time BIGINT);
            CREATE TABLE registered_models (name VARCHAR(256) PRIMARY KEY);
            CREATE TABLE model_versions (name VARCHAR(256), version INTEGER, source VARCHAR(500));
            CREATE TABLE registered_model_aliases (name VARCHAR(256), alias VARCHAR(256), version INTEGER);
            CREATE TABLE model_version_tags (name VARCHAR(256), version INTEGER, key VARCHAR(250), value TEXT);
            CREATE TABLE writes (n INTEGER);""")
        con.execute("INSERT INTO experiments VALUES (1, 'e', ?)", ((home / "mlflow/artifacts").as_uri(),))
        con.execute("INSERT INTO runs VALUES ('abc', ?, 1)", ((home / "mlflow/artifacts/1/abc/artifacts").as_uri(),))
        con.execute("INSERT INTO registered_models VALUES ('m')")
        for v in (1, 2):
            con.execute("INSERT INTO model_versions VALUES ('m', ?, ?)",
                        (v, (home / f"mlflow/artifacts/1/abc/artifacts/v{v}").as_uri()))
        con.execute("INSERT INTO registered_model_aliases VALUES ('m', 'champion', 2)")
        con.execute("INSERT INTO model_version_tags VALUES ('m', 2, 'previous_champion', '1')")
        con.execute("INSERT INTO model_version_tags VALUES ('m', 2, 'model_dir', ?)", (f"{home}/models/m/2",))
        con.execute("INSERT INTO model_version_tags VALUES ('m', 2, 'elsewhere', ?)", (f"{home}2/models",))
    con.close()


@pytest.fixture
def pipeline_home(tmp_path) -> Path:
    home = tmp_path / "home"
    for name in sorted(TAKEN - {"mlflow/mlflow.db"}) + list(LEFT):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(f"content of {name}\n")
    (home / "targets/t1/current").symlink_to("releases/1")
    state = {"default": "1", "models": {"1": {"model_dir": f"{home}/targets/t1/releases/1"}}}
    (home / "targets/t1/run/serving-state.json").write_text(json.dumps(state))
    _database(home / "mlflow/mlflow.db", home)
    return home


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


def _files(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_backup_takes_the_state_and_leaves_what_is_regenerated(pipeline_home, tmp_path):
    done = backup(pipeline_home, tmp_path / "b.tar.gz")
    members = _members(done.path)
    assert set(members) == TAKEN | {MANIFEST, "targets/t1/current"}
    assert members["targets/t1/current"].issym() and members["targets/t1/current"].linkname == "releases/1"
    manifest, links = verify(done.path)
    files = _files(done.path)
    assert {f["path"] for f in manifest["files"]} == TAKEN and done.files == len(TAKEN)
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256_bytes(files[entry["path"]]) and entry["size"] == len(files[entry["path"]])
    assert files["models/m/1/metadata.json"] == b"content of models/m/1/metadata.json\n"
    assert links == {"targets/t1/current": "releases/1"}
    assert manifest["registry"] == {"m": {"versions": ["1", "2"], "aliases": {"champion": "2"}}}
    assert manifest["home"] == str(pipeline_home.resolve()) and manifest["created"]
    assert "code_commit" in manifest["tool"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary left


def test_an_existing_archive_is_kept_unless_overwrite(pipeline_home, tmp_path):
    out = tmp_path / "b.tar.gz"
    out.write_text("keep me")
    with pytest.raises(BackupError, match="already exists; pass --overwrite"):
        backup(pipeline_home, out)
    assert out.read_text() == "keep me"
    backup(pipeline_home, out, overwrite=True)
    assert verify(out)[0]["registry"]["m"]["aliases"] == {"champion": "2"}


def test_a_directory_without_a_registry_is_not_backed_up(tmp_path):
    with pytest.raises(BackupError, match="not a pipeline home"):
        backup(tmp_path, tmp_path.parent / "x.tar.gz")
    assert not (tmp_path.parent / "x.tar.gz").exists()


def test_the_database_snapshot_is_consistent_while_a_writer_commits(pipeline_home, tmp_path):
    """The online backup API copies a committed state even while another connection commits in a loop."""
    stop, written = threading.Event(), []

    def writer():
        con = sqlite3.connect(pipeline_home / "mlflow/mlflow.db", timeout=30)
        for n in range(100_000):   # bounded in count and in time
            if stop.is_set():
                break
            with con:
                con.execute("INSERT INTO writes VALUES (?)", (n,))
            written.append(n)
            time.sleep(0.002)   # a busy release commits often, not back to back
        con.close()

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 10
    while len(written) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        done = backup(pipeline_home, tmp_path / "b.tar.gz")
    finally:
        stop.set()
        thread.join(timeout=30)
    restored = restore(done.path, tmp_path / "new")
    con = sqlite3.connect(restored.home / "mlflow/mlflow.db")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = [n for (n,) in con.execute("SELECT n FROM writes ORDER BY n")]
    con.close()
    assert len(written) >= 20 and rows == list(range(len(rows))) and 20 <= len(rows) <= len(written)


def test_restore_rehomes_the_registry_and_keeps_links(pipeline_home, tmp_path):
    done = backup(pipeline_home, tmp_path / "b.tar.gz")
    new = tmp_path / "elsewhere" / "home2"
    restored = restore(done.path, new)
    assert restored.home == new.resolve() and restored.files == len(TAKEN)
    assert (new / "targets/t1/current").readlink() == Path("releases/1")
    assert (new / "targets/t1/current/metadata.json").read_text().startswith("content of")
    assert not (new / "locks").exists() and not (new / "prefect").exists()
    con = sqlite3.connect(new / "mlflow/mlflow.db")
    assert con.execute("SELECT artifact_location FROM experiments").fetchone()[0] == (new / "mlflow/artifacts").as_uri()
    assert con.execute("SELECT artifact_uri FROM runs").fetchone()[0].startswith(new.as_uri() + "/mlflow/")
    assert {s for (s,) in con.execute("SELECT source FROM model_versions")} == {
        (new / f"mlflow/artifacts/1/abc/artifacts/v{v}").as_uri() for v in (1, 2)}
    tags = dict(con.execute("SELECT key, value FROM model_version_tags"))
    con.close()
    assert tags == {"previous_champion": "1", "model_dir": f"{new}/models/m/2", "elsewhere": f"{pipeline_home}2/models"}
    state = json.loads((new / "targets/t1/run/serving-state.json").read_text())
    assert state["models"]["1"]["model_dir"] == f"{new.resolve()}/targets/t1/releases/1"
    assert restored.manifest["rewritten_cells"] == 5 + 1
    assert [p.name for p in new.parent.iterdir()] == ["home2"]   # the temporary sibling was renamed


def test_rehoming_touches_only_the_old_home(tmp_path):
    db, old = tmp_path / "x.db", Path("/srv/home")
    _database(db, old)
    assert rehome_database(db, Path("/nowhere"), Path("/new")) == 0
    assert rehome_database(db, old, Path("/new")) == 5


def test_a_live_home_is_refused_unless_forced(pipeline_home, tmp_path):
    done = backup(pipeline_home, tmp_path / "b.tar.gz")
    with pytest.raises(BackupError, match="live pipeline home .*--force"):
        restore(done.path, pipeline_home)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="is not empty"):
        restore(done.path, busy)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    (pipeline_home / "monitoring/alarms.json").write_text("changed since")
    restore(done.path, pipeline_home, force=True)
    assert (pipeline_home / "monitoring/alarms.json").read_text() == "content of monitoring/alarms.json\n"
    assert not (pipeline_home / "locks").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz", "busy", "home"]
    (tmp_path / "empty").mkdir()
    assert restore(done.path, tmp_path / "empty").files == len(TAKEN)   # an empty directory is not live


def _rewrite(archive: Path, out: Path, change) -> Path:
    """A copy of ``archive`` with ``change(name, data) -> (name, data) | None`` applied to each file."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            changed = change(m.name, data) if m.isfile() else (m.name, None)
            if changed is None:
                continue
            info = tarfile.TarInfo(changed[0]) if m.isfile() else m
            if m.isfile():
                info.size = len(changed[1])
            dst.addfile(info, io.BytesIO(changed[1]) if m.isfile() else None)
    return out


def _extra(archive: Path, out: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    _rewrite(archive, out, lambda n, d: (n, d))
    with tarfile.open(out) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(out, "w:gz") as tar:
        for m, d in [*members, (info, data)]:
            info_size = len(d) if d is not None else 0
            if m.isfile():
                m.size = info_size
            tar.addfile(m, io.BytesIO(d) if m.isfile() else None)
    return out


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


BAD = {
    "tampered": (lambda a, o: _rewrite(a, o, lambda n, d: (n, d + b"!" if n == "models/m/1/metadata.json" else d)),
                 "models/m/1/metadata.json does not match its SHA-256"),
    "missing": (lambda a, o: _rewrite(a, o, lambda n, d: None if n == "bundles/m-1.zip" else (n, d)),
                "bundles/m-1.zip is listed in the manifest but missing"),
    "no manifest": (lambda a, o: _rewrite(a, o, lambda n, d: None if n == MANIFEST else (n, d)),
                    "no readable MANIFEST.json"),
    "wrong format": (lambda a, o: _rewrite(a, o, lambda n, d: (n, json.dumps({"format": "zip/9"}).encode())
                                            if n == MANIFEST else (n, d)), "format 'zip/9', expected"),
    "dot-dot": (lambda a, o: _extra(a, o, _file("../outside.txt"), b"evil"), "'../outside.txt' would land outside"),
    "absolute": (lambda a, o: _extra(a, o, _file("/tmp/outside.txt"), b"evil"), "would land outside the home"),
    "unlisted": (lambda a, o: _extra(a, o, _file("models/extra.txt"), b"evil"), "'models/extra.txt' is not in the"),
    "link out": (lambda a, o: _extra(a, o, _symlink("targets/t1/current", "../../../etc")), "link 'targets/t1/curr"),
    "truncated": (lambda a, o: (o.write_bytes(a.read_bytes()[: a.stat().st_size // 2]), o)[1], "corrupt archive|not a"),
    "not gzip": (lambda a, o: (o.write_bytes(b"PK\x03\x04 a zip, not a tar"), o)[1], "not a backup archive"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_archive_is_refused_before_anything_is_written(pipeline_home, tmp_path, case):
    done = backup(pipeline_home, tmp_path / "b.tar.gz")
    make, message = BAD[case]
    bad = make(done.path, tmp_path / "bad.tar.gz")
    target = tmp_path / "restored"
    with pytest.raises(BackupError, match=message):
        restore(bad, target)
    assert not target.exists() and not (tmp_path / "outside.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz", "bad.tar.gz", "home"]


def test_a_missing_archive_is_named(tmp_path):
    with pytest.raises(BackupError, match=r"nothere.tar.gz: no such file"):
        restore(tmp_path / "nothere.tar.gz", tmp_path / "home")
    assert list(tmp_path.iterdir()) == []


def test_the_commands_answer_bad_input_in_one_line_and_write_nothing(pipeline_home, tmp_path, monkeypatch, capsys):
    """``python -m flows backup`` / ``restore`` (flows.cli): exit 2, one line on stderr, no Prefect home made."""
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path / "restored"))
    assert main(["restore", "--from", "missing.tar.gz", "--home", "restored"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/missing.tar.gz: no such file\n"
    monkeypatch.setenv("PIPELINE_HOME", str(pipeline_home))
    assert main(["backup", "--out", "b.tar.gz", "--json-out", "b.json"]) == 0
    said = capsys.readouterr().out.strip()
    assert said.startswith(f"backup of {pipeline_home} (m 2 versions) written to {tmp_path}/b.tar.gz: ")
    assert json.loads((tmp_path / "b.json").read_text())["files"] == len(TAKEN)
    assert main(["backup", "--out", "b.tar.gz"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "b.tar.gz").write_bytes(b"garbage")
    assert main(["restore", "--from", "b.tar.gz", "--home", "restored"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}/b.tar.gz: not a backup archive")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.tar.gz", "home"]


def test_a_link_out_of_the_home_is_refused_at_backup(pipeline_home, tmp_path):
    (pipeline_home / "models/m/latest").symlink_to("/etc")
    with pytest.raises(BackupError, match=r"'models/m/latest' -> '/etc' points outside the home"):
        backup(pipeline_home, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_restore_that_fails_half_way_leaves_nothing(pipeline_home, tmp_path, monkeypatch):
    import tasks.backup

    done = backup(pipeline_home, tmp_path / "b.tar.gz")

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tasks.backup, "rehome_database", full_disk)
    with pytest.raises(BackupError, match=r"into .*/new failed \(\[Errno 28\] No space left on device\); nothing"):
        restore(done.path, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz", "home"]
