"""The architecture is checked, not described: import-linter's contracts (pyproject.toml) hold, they
catch a violation, and the stage packages import no Prefect, MLflow or TensorFlow at import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
STAGE_MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                       for p in (ROOT / "tasks").rglob("*.py") if p.name != "pyfunc_model.py")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "COLUMNS": "250"})


def test_the_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("serving/api/app.py", "import mlflow", "serving ships to hosts alone"),
    ("tasks/release/gate.py", "from prefect import task", "stages are plain code"),
    ("tasks/registry/store.py", "from tasks.deploy import targets", "stage packages in one direction"),
    ("tasks/deploy/transports/ssh.py", "from tasks.deploy.transports import s3", "transports"),
])
def test_a_violation_breaks_its_contract(tmp_path, module, line, contract):
    for part in ("serving", "tasks", "flows", "pyproject.toml"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = [ln for ln in result.stdout.splitlines() if ln.endswith(" BROKEN")]
    assert any(ln.startswith(contract) for ln in broken), result.stdout[-3000:]


def test_stage_modules_import_no_prefect_mlflow_or_tensorflow():
    code = ("import importlib, sys\n"
            f"for m in {STAGE_MODULES!r}: importlib.import_module(m)\n"
            "print(sorted({'prefect', 'mlflow', 'tensorflow', 'keras', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    assert "tasks.release.gate" in STAGE_MODULES and len(STAGE_MODULES) > 20
