"""The registry tells "not there" (no champion yet) apart from "did not answer" (network, auth)."""

from __future__ import annotations

import pytest

from tasks.errors import RegistryError
from testkit.procs import run_together

pytestmark = pytest.mark.unit

SERVER = "http://pipeline:S3cret@mlflow.internal:5000"


def _unreachable():
    from mlflow.exceptions import MlflowException

    # What MLflow's REST client raises once its retries are spent (INTERNAL_ERROR), URL and credentials included.
    return MlflowException(f"API request to {SERVER}/api/2.0/mlflow/registered-models/alias failed with exception "
                           "HTTPConnectionPool(host='mlflow.internal', port=5000): Max retries exceeded "
                           "(Caused by NewConnectionError('Connection refused'))")


class _DownClient:
    """An MlflowClient whose server cannot be reached: every call fails."""

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise _unreachable()
        return call


@pytest.fixture
def down(tmp_path):
    from tasks.registry import MlflowRegistry
    from tasks.settings import load_settings

    settings = load_settings(None, env={"PIPELINE_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": SERVER})
    registry = MlflowRegistry(settings)
    registry.client = _DownClient()
    return registry


def _says_registry_failed(error: RegistryError, step: str) -> None:
    text = str(error)
    assert "http://mlflow.internal:5000" in text and step in text and "did not answer" in text
    assert "S3cret" not in text and "pipeline:" not in text


@pytest.mark.parametrize(("call", "step"), [
    (lambda r: r.champion(), "reading alias 'champion'"),
    (lambda r: r.alias_version("challenger"), "reading alias 'challenger'"),
    (lambda r: r.resolve(None), "reading alias 'challenger'"),
    (lambda r: r.rollback_version(None), "reading alias 'champion'"),
    (lambda r: r.get_version("3"), "reading version 3"),
    (lambda r: r.reserve("fsh", lambda _prior, _taken: "1.0.0"), "listing the versions"),
    (lambda r: r.promote("3", "test", None), "reading alias 'champion'"),
], ids=["champion", "alias", "resolve", "rollback", "get_version", "reserve", "promote"])
def test_an_unreachable_registry_is_an_error_never_no_champion(down, call, step):
    """A registry that cannot be reached fails the step, naming the registry (no credentials) and the step,
    instead of reading as "no champion" (which skipped the gate's regression check and every rollback)."""
    with pytest.raises(RegistryError) as failure:
        call(down)
    _says_registry_failed(failure.value, step)
    assert "no champion" not in str(failure.value)


@pytest.fixture
def sqlite_registry(tmp_path, migrated_mlflow_store):
    from tasks.registry import MlflowRegistry
    from tasks.settings import load_settings

    migrated_mlflow_store(tmp_path)
    return MlflowRegistry(load_settings(None, env={"PIPELINE_HOME": str(tmp_path)}))


def test_a_missing_alias_in_a_real_sqlite_store_reads_as_none(sqlite_registry, tmp_path):
    """What MLflow 3.17 raises for an alias that is not set (INVALID_PARAMETER_VALUE), or for a model never
    registered (RESOURCE_DOES_NOT_EXIST), is "none"; a version that does not exist is named as such."""
    registry = sqlite_registry
    assert registry.alias_version("champion") is None           # no registered model yet
    assert registry.champion() is None
    registry.client.create_registered_model(registry.name)
    registry.client.create_model_version(registry.name, source=(tmp_path / "model").as_uri())
    assert registry.alias_version("champion") is None           # a model, a version, no alias
    with pytest.raises(RegistryError, match="no champion to roll back from"):
        registry.rollback_version(None)
    with pytest.raises(RegistryError, match="has no version 7"):
        registry.get_version("7")
    with pytest.raises(RegistryError, match="has no version x"):
        registry.get_version("x")
    registry.client.set_registered_model_alias(registry.name, "champion", "1")
    assert str(registry.alias_version("champion").version) == "1"


def test_reservations_at_once_get_distinct_versions_and_release_numbers(sqlite_registry, tmp_path):
    """Reading the latest release and reserving the next version, under the model's release lock, from
    several threads released together: every version and release number is taken once, and each version
    carries its release and feature-schema hash from the moment it exists."""
    import threading

    from tasks.locks import held
    from tasks.release.versioning import next_release

    registry, start, got = sqlite_registry, threading.Barrier(4), []

    def release():
        start.wait(timeout=60)
        with held(tmp_path, registry.name, "release", "reserving", timeout_s=120):
            got.append(registry.reserve("h1", lambda prior, _taken: next_release(prior, "h1")))

    threads = [threading.Thread(target=release) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(int(r.version) for r in got) == [1, 2, 3, 4]
    assert sorted(r.release for r in got) == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    for r in got:
        mv = registry.get_version(r.version)
        assert mv.tags["release"] == r.release and mv.tags["feature_schema_hash"] == "h1"
        assert mv.tags["release_status"] == "reserved" and mv.run_id == r.run_id


def test_a_failed_release_keeps_its_number_and_is_never_deployed(sqlite_registry):
    from tasks.release.versioning import next_release

    registry = sqlite_registry
    first = registry.reserve("h1", lambda prior, _taken: next_release(prior, "h1"))
    registry.abandon(first, "export", RuntimeError("disk full"))
    mv = registry.get_version(first.version)
    assert mv.tags["release_status"] == "failed" and mv.tags["release_error"] == "export: RuntimeError: disk full"
    assert registry.client.get_run(first.run_id).info.status == "FAILED"
    second = registry.reserve("h1", lambda prior, _taken: next_release(prior, "h1"))
    assert (second.version, second.release) == ("2", "1.1.0")    # neither number is given again
    with pytest.raises(RegistryError, match="reserved by a release that failed .*disk full.*no model to deploy"):
        registry.export_dir(mv, registry.settings.pipeline_home / "registry-cache")


def _open_registry(home: str, go, results) -> None:
    from tasks.registry import MlflowRegistry
    from tasks.settings import load_settings

    settings = load_settings(None, env={"PIPELINE_HOME": home})
    go.wait(timeout=120)
    try:
        results.put(repr(MlflowRegistry(settings).alias_version("champion")))
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}"[:500])


@pytest.mark.integration
def test_processes_opening_a_new_sqlite_store_at_once_do_not_break_its_creation(tmp_path):
    """Releases started together on a fresh pipeline home all create its SQLite store on first touch;
    MLflow's schema migrations must not run twice at once (one used to fail with an alembic error)."""
    _exit_codes, results = run_together(_open_registry, 4, str(tmp_path), timeout=300)
    assert sorted(results) == ["None"] * 4
