"""Shared fixtures: isolated homes, a tiny demo dataset and a fast training config."""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the fault-injection suite (pytest -m faults) measured in its last run; docs/explanation/reliability.md quotes it.
FIGURES = ROOT / "build" / "reliability" / "figures.json"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Never touch the user's ~/.prefect: every test session gets its own Prefect home.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.pop("MLFLOW_TRACKING_URI", None)
for _var in ("PIPELINE_HOME", "PIPELINE_CONFIG", "PIPELINE_TARGETS"):
    os.environ.pop(_var, None)

FAST_CONFIG = """
model_name: test-model
seed: 7
training:
  cv_folds: 3
  epochs: 12
  batch_size: 128
  learning_rate: 0.01     # 12 epochs of 900 rows: converges from any seed (0.003 left one fold at 0.47)
  hidden_units: [16]
  early_stopping_patience: 3
  min_rows: 50
  intra_op_threads: 2
  inter_op_threads: 1
  search: {enabled: false}   # the defaults search five candidates: minutes, not seconds
export:
  golden_examples: 12
gate:
  # Bounds a useless model fails: chance gives roc_auc 0.5 and pr_auc_lift 1 (brier_skill 0 and ece_relative 0
  # for always predicting the positive rate). Measured on the demo data (900 rows, positive rate 0.19), seeds 7
  # and 8, 3 folds x 12 epochs and 2 x 8: roc_auc 0.61-0.74, pr_auc_lift 1.91-2.36, brier_skill -0.02-0.12,
  # ece_relative 0.05-0.37 (data/demo.csv: 0.73, 2.20, 0.11, 0.05).
  bounds:
    roc_auc: {min: 0.6}           # between chance (0.5) and the lowest measured (0.61); tests replace this line
    pr_auc_lift: {min: 1.25}      # configs/pipeline.yaml's: chance is 1, the lowest measured 1.91
    brier_skill: {min: -0.05}     # 2 folds x 8 epochs measured -0.02; random scores get about -1
    ece_relative: {max: 0.75}     # 2x the highest measured (0.37)
"""


TIERS = ("unit", "integration")

# Skips a CI run (CI=true) accepts: test id (or its prefix before "[") -> why it may skip there. Any other
# skip fails the run: CI runs as root with `make system-deps`, so namespaces, tmpfs mounts and every server
# the suite starts are there, and a skip would only hide a test that did not run. Empty today: the three
# skips in the suite (tests/fleet/conftest.py and test_netns_hosts.py without root or iproute2,
# tests/tasks/deploy/test_ssh.py's tmpfs without root) cannot happen on a CI machine.
ALLOWED_SKIPS: dict[str, str] = {}


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _fail_unlisted_skip(nodeid: str, report) -> None:
    if not (report.skipped and _ci()) or hasattr(report, "wasxfail"):
        return
    if nodeid in ALLOWED_SKIPS or nodeid.split("[")[0] in ALLOWED_SKIPS:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true and not in ALLOWED_SKIPS (tests/conftest.py): {reason}; "
                       "make it run here, or list it there with the reason it may skip")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a test's skip not in ``ALLOWED_SKIPS`` is reported as a failure, with the skip's reason."""
    _fail_unlisted_skip(item.nodeid, (yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at collection (``pytest.skip(..., allow_module_level=True)``)."""
    _fail_unlisted_skip(collector.nodeid, (yield).get_result())


def _collect_and_freeze() -> None:
    """Collect the garbage, then freeze what is left (``gc.freeze``): the collector's full passes stop walking
    it. TensorFlow and the libraries leave about 600,000 objects; in test_app.py a full pass over them took
    0.6-0.8 s, one over what was left after the freeze (about 100,000, mostly the unloaded models' garbage,
    which is freed as usual) 0.2-0.5 s. Called after each module and by the session fixtures that import or
    build much (they live to the end, so nothing of theirs becomes garbage frozen)."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a module (its fixtures torn down and collected): freeze what is left, its imports above all."""
    yield
    if nextitem is None or nextitem.path != item.path:
        _collect_and_freeze()


def mlflow_client(home: Path):
    """A client of the pipeline home's default SQLite MLflow store, and its URI."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


@pytest.fixture(scope="session")
def migrated_mlflow_store(tmp_path_factory, pytestconfig):
    """``migrated_mlflow_store(home)``: puts an empty MLflow SQLite store at ``home / "mlflow" / "mlflow.db"``,
    a copy of one whose schema migrations ran once (they take seconds each time), kept in pytest's cache
    between sessions for the MLflow, SQLAlchemy and Alembic versions that made it."""
    import shutil
    from importlib.metadata import version

    template = tmp_path_factory.mktemp("mlflow-template")
    (template / "mlflow").mkdir()
    cache = getattr(pytestconfig, "cache", None)
    kept = None if cache is None else cache.mkdir("mlflow-template") / (
        "-".join(version(d) for d in ("mlflow", "sqlalchemy", "alembic")) + ".db")
    if kept is not None and kept.exists():
        shutil.copy(kept, template / "mlflow" / "mlflow.db")
    else:
        mlflow_client(template)[0].search_registered_models()
        if kept is not None:
            partial = kept.with_suffix(f".{os.getpid()}.part")
            shutil.copy(template / "mlflow" / "mlflow.db", partial)
            partial.replace(kept)
    _collect_and_freeze()

    def put(home: Path) -> None:
        (home / "mlflow").mkdir(parents=True, exist_ok=True)
        shutil.copy(template / "mlflow" / "mlflow.db", home / "mlflow" / "mlflow.db")
    return put


@pytest.fixture(scope="session")
def demo_frame():
    from testkit.demo import make_demo

    return make_demo(n_rows=900, seed=11)


@pytest.fixture
def demo_csv(tmp_path, demo_frame) -> Path:
    path = tmp_path / "demo.csv"
    demo_frame.to_csv(path, index=False)
    return path


@pytest.fixture
def schema_path() -> Path:
    return ROOT / "configs" / "schema.yaml"


@pytest.fixture
def feature_list_path() -> Path:
    return ROOT / "configs" / "feature_list.csv"


@pytest.fixture
def fast_config(tmp_path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(FAST_CONFIG)
    return path


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(fast_config, home):
    from tasks.settings import load_settings

    return load_settings(fast_config, env={"PIPELINE_HOME": str(home)})


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect server (SQLite) for flow runs in this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# How every trained test model is trained: the fast config's network on 2 folds of 8 epochs. Fitting costs
# about 3 s a fold whatever the epochs (TensorFlow traces each new model), so the folds are what count.
DEMO_TRAINING = {"training.cv_folds": 2, "training.epochs": 8}


def train_demo(home: Path, frame, seed: int = 7, config: str = FAST_CONFIG, diagram: Path | None = None,
               fits: Path | None = None) -> dict:
    """Train and calibrate (isotonic) one model on ``frame`` under ``home`` (``DEMO_TRAINING``, ``seed``);
    returns what export needs: settings, schema, features, ds, train (the TrainResult) and cal.

    Args:
        fits: where the fold fits are kept between sessions (``testkit.demo.cached_fold_runner``); None: fit.
    """
    from tasks.contract_files import load_feature_list, load_schema
    from tasks.settings import load_settings
    from tasks.training.calibrate import calibrate
    from tasks.training.data import load_dataset
    from tasks.training.train import train

    home.mkdir(parents=True, exist_ok=True)
    (home / "pipeline.yaml").write_text(config)
    frame.to_csv(home / "data.csv", index=False)
    schema = load_schema(ROOT / "configs" / "schema.yaml")
    features = load_feature_list(ROOT / "configs" / "feature_list.csv")
    ds = load_dataset(home / "data.csv", schema, min_rows=50)
    settings = load_settings(home / "pipeline.yaml", env={"PIPELINE_HOME": str(home)},
                             overrides={**DEMO_TRAINING, "seed": seed})
    runner = None
    if fits is not None:
        from testkit.demo import cached_fold_runner, fits_key

        runner = cached_fold_runner(fits, fits_key(settings, home / "data.csv"), ds, schema, features)
    result = train(ds, schema, features, settings, run_folds=runner)
    cal = calibrate(result.oof_raw, ds.y, result.folds, "isotonic", 10, diagram)
    return {"settings": settings, "schema": schema, "features": features, "ds": ds, "train": result, "cal": cal,
            "home": home}


def export_demo(trained: dict, version: str, release: str):
    """``export_model`` of a ``train_demo`` result as ``version`` under its home's models directory."""
    from tasks.training.export import export_model

    t = trained
    return export_model(t["train"], t["cal"], t["ds"], t["schema"], t["features"], t["settings"], release,
                        version=version)


def train_and_export(home: Path, frame, seeds=(7,), config: str = FAST_CONFIG, first: int = 1,
                     fits: Path | None = None) -> list:
    """Train and export one version per seed under ``home`` (versions ``first``, ``first + 1``, ... released
    as 1.<version - 1>.0); returns the ExportedModel of each. ``fits``: as ``train_demo``'s."""
    return [export_demo(train_demo(home, frame, seed, config, fits=fits), str(first + i), f"1.{first + i - 1}.0")
            for i, seed in enumerate(seeds)]


@pytest.fixture(scope="session")
def demo_fits(pytestconfig) -> Path | None:
    """Where the demo trainings' fold fits are kept between sessions: pytest's cache (.pytest_cache/d/demo-fits;
    ``--cache-clear`` empties it), keyed by the code, data, settings, libraries and CPU that decide them
    (``testkit.demo.fits_key``). None (fit every session) with ``-p no:cacheprovider``."""
    cache = getattr(pytestconfig, "cache", None)
    return cache.mkdir("demo-fits") if cache is not None else None


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory, demo_frame, demo_fits):
    """The one model the unit tier trains: seed 7 (``train_demo``, reliability diagram included), exported as
    version 1 (release 1.0.0) under its own home; ``exported`` is that version. Tests may add versions
    to its models directory but leave version 1 as it is: ``served_models`` ships a copy of it."""
    home = tmp_path_factory.mktemp("demo-model")
    trained = train_demo(home, demo_frame, seed=7, diagram=home / "reliability.png", fits=demo_fits)
    built = {**trained, "exported": export_demo(trained, "1", "1.0.0")}
    _collect_and_freeze()
    return built


@pytest.fixture(scope="session")
def served_models(tmp_path_factory, demo_frame, demo_model, demo_fits):
    """Two exported versions (different seeds) under a model root: root/models/test-model/{1,2}. Version 1
    is a copy of ``demo_model``'s (seed 7), version 2 is trained here (seed 8)."""
    import dataclasses
    import shutil

    root = tmp_path_factory.mktemp("served")
    first = root / "models" / "test-model" / "1"
    shutil.copytree(demo_model["exported"].path, first)
    exported = [dataclasses.replace(demo_model["exported"], path=first),
                *train_and_export(root, demo_frame, seeds=(8,), first=2, fits=demo_fits)]
    _collect_and_freeze()
    return {"root": root / "models", "model_dir": root / "models" / "test-model", "exported": exported}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (high port, generated host and user keys); stopped at the end."""
    from testkit.sshd import start_sshd

    if not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("openssh-server is not installed; `make test` installs it")
    proc, info = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield info
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's standalone S3-compatible server on 127.0.0.1, with dummy credentials for the session."""
    import subprocess

    from testkit.net import free_port, wait_for_port

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_for_port(port, proc, log)
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    yield f"http://127.0.0.1:{port}"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def _figures():
    found: dict[str, dict] = {}
    yield found
    if found:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        kept = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        FIGURES.write_text(json.dumps({**kept, **found}, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def figure(_figures, request):
    """``figure(name, value, unit, note="")``: one measured figure of this test, kept for the run's record."""
    def record(name: str, value: float | int, unit: str, note: str = "") -> None:
        _figures[f"{request.node.name}:{name}"] = {"value": value, "unit": unit, "note": note,
                                                    "measured": datetime.now(UTC).isoformat(timespec="seconds")}
        print(f"FIGURE {name} = {value} {unit} {note}")
    return record


@pytest.fixture(scope="session")
def registry_home(tmp_path_factory, demo_frame, prefect_server):
    """A pipeline home whose registry holds versions 1 and 2 of test-model (released, gated, not deployed);
    shared by the fleet tests on local hosts and on namespaced ones."""
    from testkit.fleet import register_versions

    return register_versions(tmp_path_factory.mktemp("fleet"), demo_frame, FAST_CONFIG)


@pytest.fixture
def fleet(registry_home, fleet_hosts, tmp_path, monkeypatch):
    """``fleet_hosts`` (name -> target dict; each fleet test module says which hosts) in a fleet of their own,
    all on version 1 (champion 1); their servers are stopped after the test."""
    from testkit.fleet import Fleet

    monkeypatch.setenv("PIPELINE_HOME", str(registry_home["home"]))
    f = Fleet(registry_home, fleet_hosts, tmp_path)
    f.write("rolling")
    try:
        f.deploy("setup", "1")
        yield f
    finally:
        f.stop()
