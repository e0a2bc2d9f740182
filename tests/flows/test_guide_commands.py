"""Every command README.md, the documentation site (docs/) and deployments/HANDOVER.md give is run by a test.

``DOCS`` holds every one of those pages, keyed by its path in the repository. ``WHERE`` says, for each
documented command, which test runs it; the unit test fails on a command nobody runs (document a command,
then run it somewhere). The integration tests here run the ones no other test runs, as written, from a
directory laid out like a checkout: only the port (8000 may be taken here), the model's name and the
training's size differ, through the environment (``PIPELINE_TARGETS``, ``PIPELINE_CONFIG``) or, for the
tutorial on the reader's own CSV, a few training keys added to the config it drafts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testkit.net import free_port
from tests.conftest import FAST_CONFIG, ROOT

pytestmark = pytest.mark.integration



def site_pages() -> list[str]:
    """Every page of the documentation site, as mkdocs.yml's nav lists them (paths under docs/)."""
    def walk(entries) -> list[str]:
        found = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += walk(value) if isinstance(value, list) else [value]
        return found
    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


DOCS = {str(path.relative_to(ROOT)): path for path in (
    ROOT / "README.md", *(ROOT / "docs" / page for page in site_pages()), ROOT / "deployments" / "HANDOVER.md")}
HERE = "tests/flows/test_guide_commands.py::test_the_guides_commands_run_as_written"
OWN_DATA = "tests/flows/test_guide_commands.py::test_your_own_csv_runs_as_written"
OWN_DATA_PAGE = "docs/tutorial/your-own-data.md"
PREFECT_STACK = "tests/flows/test_prefect_deployments.py::test_deployments_register_with_schedules_and_trigger"
PREFECT_RUNS = "tests/flows/test_prefect_deployments.py::test_retrain_promote_with_approval_then_alarm_rolls_back"
# The team setup, with every host on 127.0.0.1: PostgreSQL, the Prefect and MLflow servers, moto for S3.
TEAM = "tests/team/test_team_setup.py::test_one_release_through_the_team_servers"

FLEET = "tests/flows/test_fleet_flow.py::test_the_guides_fleet_commands_run_as_written"
BACKUP = "tests/flows/test_backup_restore.py::test_release_twice_back_up_destroy_restore_then_status_and_rollback"
# (pattern, who runs it). A reason instead of a test: not run by any test, and why.
WHERE: list[tuple[str, str]] = [
    (r"^make (run|stop|lint)$", HERE),
    (r"^make docs$", "tests/test_docs_site.py::test_make_docs_serves_the_site_the_tests_build"),
    (r"^make test(-fast)?$", "CI: .ci/run is `make test`; `make test-fast` is its unit tier"),
    (r"^python -m flows (?!recalibrate --version \d)(?!.*--fleet)(?!.*loans)(?!backup |restore |score )", HERE),
    (r"^python -m flows score ", "tests/flows/test_score_flow.py::test_the_guides_score_commands_run_as_written"),
    (r"^python -m flows (backup|restore) ", BACKUP),
    (r"^python -m flows .*loans|^curl .*127\.0\.0\.1:8000/predict.*\"amount\"", OWN_DATA),   # the reader's own CSV
    (r"^(python -m flows .*--fleet|nginx -p )", FLEET),
    (r"^python -m flows recalibrate --version \d", "tests/flows/test_recalibrate_flow.py::"
                                                   "test_the_guides_recalibration_from_feedback_runs_as_written"),
    (r"^\[--", HERE),                                     # a synopsis continued on the next line
    (r"(^|\s)(\.venv/bin/)?python -m serving ", HERE),
    (r"^curl .*localhost:8000", HERE),                    # against the `python -m serving` above it on the page
    (r"^curl .*127\.0\.0\.1:8000(?!/predict.*\"amount\")", HERE),   # against the server `make run` leaves running
    (r"^curl .*\$SERVING_URL", "tests/flows/test_handover.py::test_every_curl_command_in_the_guide_runs"),
    (r"^export (SERVING_URL|ADMIN_TOKEN|MODEL_DIR)=", "tests/flows/test_handover.py::"
                                                      "test_every_curl_command_in_the_guide_runs"),
    (r"^git tag -l", HERE),          # the only git command without side effects
    (r"^git checkout main && git pull", "not run: it changes the checkout and needs the team's remote"),
    (r"^\.venv/bin/prefect (server start|work-pool create|--no-prompt deploy --all|worker start)", PREFECT_STACK),
    (r"^export PREFECT_API_URL=http://127\.0\.0\.1", PREFECT_STACK),
    (r"^prefect (deployment run promote/promote|event emit pipeline\.alarm\.critical)", PREFECT_RUNS),
    (r"^prefect gcl create pipeline-serving-", "tests/flows/test_deploy_flow.py::"
                                               "test_a_team_wide_concurrency_limit_is_held_too"),
    (r"^prefect gcl create pipeline-release-", "tests/flows/test_deploy_flow.py::"
                                               "test_a_team_wide_concurrency_limit_is_held_too (its twin)"),
    (r"^(export (PREFECT_API_DATABASE_CONNECTION_URL|PREFECT_SERVER_ANALYTICS_ENABLED|PREFECT_UI_API_URL|"
     r"MLFLOW_BACKEND_STORE_URI|AWS_ACCESS_KEY_ID|MLFLOW_SERVER_ENABLE_JOB_EXECUTION|PREFECT_API_URL(?==http://orch)|"
     r"MLFLOW_TRACKING_URI|PIPELINE_HOME)=|prefect server start --host|mlflow server )", TEAM),
    (r"^pg_(dump|restore) ", "tests/flows/test_backup_restore.py::"
                             "test_the_team_registry_round_trips_through_pg_dump_and_pg_restore"),
    (r"^(sudo systemctl (status|restart) ml-pipeline-api|journalctl -u ml-pipeline-api)",
     "not run: no systemd as init here; tests/faults/test_supervision.py checks the unit with systemd-analyze "
     "and starts the server exactly as its ExecStart says"),
]


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for every line of every ```bash block; continuations joined, comments dropped."""
    out = []
    for name, path in DOCS.items():
        if not path.exists():       # a page the nav names but nobody wrote: tests/test_docs_site.py's build says so
            continue
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            joined = re.sub(r"'([^']*)'", lambda m: "'" + m.group(1).replace("\n", " ") + "'", joined, flags=re.S)
            for line in joined.splitlines():
                command = re.split(r"\s{2,}#|^#", line.strip())[0].strip()
                if command:
                    out.append((name, command))
    return out


def who_runs(command: str) -> list[str]:
    return [where for pattern, where in WHERE if re.search(pattern, command)]


@pytest.mark.unit
def test_every_documented_command_is_run_by_a_named_test():
    commands = documented_commands()
    assert len(commands) > 40
    unplaced = [f"{doc}: {cmd}" for doc, cmd in commands if len(who_runs(cmd)) != 1]
    assert unplaced == [], "commands that no test runs (or two entries claim):\n" + "\n".join(unplaced)
    for _pattern, where in WHERE:
        if where.startswith("tests/"):
            path, name = where.split(" ")[0].split("::")
            assert f"def {name}(" in (ROOT / path).read_text(), where


def _run(argv: list[str] | str, cwd: Path, env: dict, timeout: float = 900, ok: tuple = (0,)) -> str:
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                         shell=isinstance(argv, str), executable="/bin/bash" if isinstance(argv, str) else None)
    assert out.returncode in ok, (argv, out.returncode, out.stdout[-2500:], out.stderr[-2500:])
    return out.stdout


def _here(doc: str) -> list[str]:
    return [cmd for d, cmd in documented_commands() if d == doc and HERE in who_runs(cmd)]


@pytest.fixture
def checkout(tmp_path):
    """A directory laid out like the repository (links to it), with its own artifacts/ (the pipeline home)."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("Makefile", ".venv", "requirements.txt", "constraints.txt", "pyproject.toml", "data", "configs",
                 "serving", "flows", "tasks", "testkit", "prefect.yaml", ".git"):
        (root / name).symlink_to(ROOT / name)
    return root


def test_the_guides_commands_run_as_written(checkout, tmp_path, prefect_server):
    from prefect.settings import PREFECT_API_URL

    port = free_port()
    (tmp_path / "pipeline.yaml").write_text(FAST_CONFIG.replace("model_name: test-model", "model_name: credit-risk"))
    (tmp_path / "targets.yaml").write_text(f"targets:\n  local:\n    transport: local\n    base_dir: targets/local\n"
                                           f"    host: 127.0.0.1\n    port: {port}\n")
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "SERVING_", "MLFLOW_"))}
    env = {**kept, "PATH": f"{checkout / '.venv' / 'bin'}:{os.environ['PATH']}",
           "PIPELINE_CONFIG": str(tmp_path / "pipeline.yaml"), "PIPELINE_TARGETS": str(tmp_path / "targets.yaml"),
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    handover = _here("deployments/HANDOVER.md")
    ran = []

    def run(command: str, **kw) -> str:
        ran.append(command)
        return _run(command, checkout, env, **kw)

    try:
        # `make run` (version 1, champion) and the pages' calls to the server it leaves running.
        run("make run")
        summary = json.loads((checkout / "artifacts" / "last_release.json").read_text())
        assert summary["registry"]["version"] == "1" and summary["registry"]["alias"] == "champion", summary
        for curl in dict.fromkeys(c for doc in DOCS for c in _here(doc) if c.startswith("curl ") and ":8000" in c
                                  and "localhost" not in c):
            _answered(curl, run(curl.replace("127.0.0.1:8000", f"127.0.0.1:{port}")))
        # The guide's release twice (2 and 3), its rollbacks and deploy.
        release = next(c for c in handover if c.startswith("python -m flows release"))
        run(release)
        run(release)
        rollback, named = (next(c for c in handover if c == f"python -m flows rollback --target local{tail}")
                           for tail in ("", " --version 2"))
        run(rollback)                                                          # 3 -> 2, the recorded previous
        run(next(c for c in handover if c.startswith("python -m flows deploy --version 3")))   # 3 again
        run(named)                                                             # 3 -> 2, named
        status = run(next(c for c in handover if c.startswith("python -m flows status")))
        assert "champion = version 2" in status, status
        run("make stop")
        ran.append("make lint")
        _run("make lint", ROOT, env, timeout=300)                            # the repository's own files
        run(next(c for c in [cmd for _d, cmd in documented_commands()] if c.startswith("git tag -l")))

        # The pages' other commands for hosts this test has not got (an SSH host, a bucket) and the monitor:
        # the command and every option they name exist (their transports run in tests/tasks/deploy/).
        for doc in DOCS:
            for command in [c for c in _here(doc) if c.startswith(("python -m flows", "[")) and c not in ran]:
                words = command.split()
                if words[:3] == ["python", "-m", "flows"] and len(words) > 3 and not words[3].startswith("-"):
                    helptext = run(f"python -m flows {words[3]} --help")
                elif words[:3] == ["python", "-m", "flows"]:
                    helptext = run("python -m flows --help")
                for flag in re.findall(r"--[a-z-]+", command):
                    assert flag in helptext, (doc, command, flag)

        # The servers the pages start by hand, each answering the commands beside it.
        for doc in DOCS:
            commands = _here(doc)
            for serve in [c for c in commands if "-m serving" in c]:
                curls = [c for c in commands if c.startswith("curl") and "localhost:8000" in c]
                _serve_and_call(serve, curls, checkout, env, port, run)
    finally:
        _run("make stop", checkout, env, ok=(0, 1, 2))
    assert len(ran) >= 15


def _answered(curl: str, out: str) -> dict:
    """The JSON a documented curl printed, checked to have done what it says (no error, not unhealthy)."""
    answer = json.loads(out)
    assert "detail" not in answer and answer.get("status") != "unhealthy", (curl, answer)
    return answer


def loans_csv(path: Path, rows: int = 2000, seed: int = 3) -> Path:
    """A table a reader might bring: loans, a few percent of them defaulted (label ``defaulted``, positive ``yes``),
    with integer, numeric, categorical and yes/no columns, in the columns the tutorial's request sends."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rate = rng.uniform(3, 25, rows).round(2)
    term = rng.choice([12, 24, 36, 60], rows)
    age = rng.integers(19, 75, rows)
    home = rng.choice(["rent", "own", "mortgage"], rows, p=[0.4, 0.2, 0.4])
    logit = -7.5 + 0.6 * (rate - 14) + 2.0 * (home == "rent") + 0.5 * (term == 60) - 0.02 * (age - 45)
    defaulted = rng.random(rows) < 1 / (1 + np.exp(-logit))
    lines = ["amount,term_months,rate,age,home,verified,defaulted"]
    lines += [f"{a:.0f},{t},{r},{g},{h},{v},{'yes' if d else 'no'}"
              for a, t, r, g, h, v, d in zip(rng.lognormal(9, 0.6, rows), term, rate, age, home,
                                             rng.choice(["yes", "no"], rows), defaulted, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_your_own_csv_runs_as_written(checkout, tmp_path, prefect_server):
    """The tutorial "Your own CSV" (and the README's three commands, the same words), every command in the page's
    order, on a generated CSV with a few percent positives: draft, validate, release (deployed and promoted),
    status, score a row, stop. The drafted config keeps its model name and defaults but for the training's size
    (a few keys added to it after `infer-schema`, as a reader could), and the target's port is a free one."""
    from prefect.settings import PREFECT_API_URL

    commands = [cmd for doc, cmd in documented_commands() if doc == OWN_DATA_PAGE and who_runs(cmd) == [OWN_DATA]]
    (checkout / "configs").unlink()                          # the drafts go into this checkout's own configs/
    shutil.copytree(ROOT / "configs", checkout / "configs")
    data = loans_csv(checkout / "loans.csv")
    port = free_port()
    (tmp_path / "targets.yaml").write_text(f"targets:\n  local:\n    transport: local\n    base_dir: targets/local\n"
                                           f"    host: 127.0.0.1\n    port: {port}\n")
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "SERVING_", "MLFLOW_"))}
    env = {**kept, "PATH": f"{checkout / '.venv' / 'bin'}:{os.environ['PATH']}",
           "PIPELINE_TARGETS": str(tmp_path / "targets.yaml"), "PREFECT_API_URL": PREFECT_API_URL.value()}
    fast = {k: v for k, v in yaml.safe_load(FAST_CONFIG).items() if k != "model_name"}
    steps = [c.split()[3] if c.startswith("python -m flows ") else c.split()[0] for c in commands]
    assert steps == ["infer-schema", "validate", "release", "status", "curl", "stop"], commands
    # In the README's order: the demo first (`make run`, then `make stop`), so the local target holds another
    # model's version 1 when the reader's own version 1 arrives.
    (tmp_path / "demo.yaml").write_text(FAST_CONFIG.replace("model_name: test-model", "model_name: credit-risk"))
    demo_env = {**env, "PIPELINE_CONFIG": str(tmp_path / "demo.yaml")}
    _run("make run", checkout, demo_env)
    _run("make stop", checkout, demo_env)
    try:
        for command in commands:
            out = _run(command.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), checkout, env)
            if " infer-schema " in command:
                printed = out.split("then release it:\n")[1].splitlines()[0].strip()
                assert printed == next(c for c in commands if " release " in c), out   # the page's next step
                drafted = checkout / "configs" / "loans" / "pipeline.yaml"
                assert yaml.safe_load(drafted.read_text()) == {"model_name": "loans"}, drafted.read_text()
                drafted.write_text(drafted.read_text() + yaml.safe_dump(fast))
            if " release " in command:
                assert "registered as loans version 1" in out and "champion: none -> 1" in out, out[-3000:]
                body = json.loads(re.search(r"-d '(\{.*\})'$", out, flags=re.M).group(1))   # "try it:", its own columns
                features = (checkout / "configs" / "loans" / "feature_list.csv").read_text().splitlines()[1:]
                assert set(body["features"][0]) >= {line.split(",")[0] for line in features}, body
            if " status " in command:
                assert "DIFFERS" not in out, out
            if command.startswith("curl "):
                (row,) = _answered(command, out)["predictions"]
                assert row["version"] == "1" and 0 < row["probability"] < 1, row
    finally:
        _run("python -m flows stop --target local", checkout, env, ok=(0, 1, 2))
    assert data.exists() and (checkout / "artifacts" / "models" / "loans" / "1" / "metadata.json").exists()
    (retired,) = (checkout / "artifacts" / "targets" / "local" / "retired").iterdir()   # the demo's, kept
    assert retired.name.startswith("credit-risk-") and (retired / "releases" / "1").is_dir()


def _serve_and_call(serve: str, curls: list[str], checkout: Path, env: dict, port: int, run) -> None:
    import signal
    import time

    from tests.serving.test_live_server import _call

    command = serve.replace("--port 8000", f"--port {port}").replace("0.0.0.0", "127.0.0.1")
    log = checkout / "artifacts" / f"serve-{port}.log"
    proc = subprocess.Popen(command, shell=True, executable="/bin/bash", cwd=checkout, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if _call(port, "GET", "/health", timeout=2)[0] in (200, 503):
                    break
            except OSError:
                time.sleep(0.2)
        for curl in curls:
            out = _answered(curl, run(curl.replace("localhost:8000", f"127.0.0.1:{port}")))
            assert not [e for e in out.get("recent_events", []) if e["event"] == "load_failed"], (serve, out)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


if __name__ == "__main__":       # the inventory: .venv/bin/python -m tests.flows.test_guide_commands
    for doc, cmd in documented_commands():
        print(f"{doc:12} {' | '.join(who_runs(cmd)) or '-- nobody --':60.60} {shlex.quote(cmd)[:90]}")
    sys.exit(0)
