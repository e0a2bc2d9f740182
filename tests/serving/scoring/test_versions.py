"""Which versions stay loaded: the default, the previous default, the split and the shadow."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import serving.scoring.versions as store_mod
from serving.scoring.versions import LoadedVersions

pytestmark = pytest.mark.unit


@pytest.fixture
def store(monkeypatch, tmp_path):
    # The seam: what the loader returns (the real loader is tested in test_app and test_model).
    monkeypatch.setattr(store_mod, "resolve_inside", lambda root, model_dir, version: tmp_path / version)
    monkeypatch.setattr(store_mod.LoadedModel, "load", staticmethod(lambda path, metadata_sha256=None: SimpleNamespace(
        metadata=SimpleNamespace(version=Path(path).name), version_dir=Path(path), golden_max_error=lambda: 0.0)))
    return LoadedVersions()


def _load(store, version, default=True):
    store.load(Path("/root"), "models", version, make_default=default)
    return sorted(store.routing.models, key=int)


def test_twenty_weekly_releases_keep_two_versions_loaded(store):
    for week in range(1, 21):
        loaded = _load(store, str(week))
    assert loaded == ["19", "20"] and store.routing.default == "20" and store.routing.previous == "19"


def test_the_split_and_the_shadow_stay_loaded(store):
    _load(store, "1")
    _load(store, "2")
    store.set_split({"1": 90, "2": 10}, shadow=None)
    _load(store, "3", default=False)           # a canary, loaded beside
    store.set_split({"1": 90, "2": 10}, shadow="3")
    assert _load(store, "4") == ["1", "2", "3", "4"]      # 4 default, 2 previous, 1 and 2 split, 3 shadow
    store.set_split({}, shadow=None)
    assert _load(store, "5") == ["4", "5"]


def test_switching_the_default_keeps_the_one_before(store):
    _load(store, "1")
    _load(store, "2")
    store.set_default("1")                    # a rollback by /default
    assert store.routing.previous == "2" and _load(store, "3") == ["1", "3"]
