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


CHECKED_TREES = ("flows", "tasks", "serving")
MAX_COMPLEXITY = 20      # radon's grade C ends here
MAX_MODULE_LINES = 400


def _python_files() -> list[Path]:
    return sorted(p for tree in CHECKED_TREES for p in (ROOT / tree).rglob("*.py"))


def _blocks(blocks, prefix: str = ""):
    """Every function, method and closure radon sees, with its dotted name and cyclomatic complexity."""
    for block in blocks:
        if not prefix and getattr(block, "is_method", False):
            continue                      # listed again at the top level; counted under its class
        name = f"{prefix}{block.name}"
        if hasattr(block, "complexity") and not hasattr(block, "methods"):
            yield name, block.complexity
        yield from _blocks(getattr(block, "methods", ()) or (), f"{name}.")
        yield from _blocks(getattr(block, "closures", ()) or (), f"{name}.")


def test_no_function_is_above_radon_grade_c():
    from radon.complexity import cc_visit

    tangled = [f"{path.relative_to(ROOT)}: {name} ({cc})" for path in _python_files()
               for name, cc in _blocks(cc_visit(path.read_text())) if cc > MAX_COMPLEXITY]
    assert tangled == []


def test_the_complexity_check_sees_closures_and_methods():
    from radon.complexity import cc_visit

    branches = "".join(f"        if x == {i}:\n            return {i}\n" for i in range(MAX_COMPLEXITY + 1))
    code = f"class A:\n    def m(self, x):\n        def inner(x):\n{branches.replace('        ', '            ')}" \
           f"        return inner(x)\n"
    assert [name for name, cc in _blocks(cc_visit(code)) if cc > MAX_COMPLEXITY] == ["A.m.inner"]


def test_no_module_is_over_400_lines():
    long = [f"{path.relative_to(ROOT)}: {n}" for path in _python_files()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == []


def test_the_architecture_page_maps_every_module():
    """docs/architecture.md's module map is what docs/generate_architecture.py writes from the tree now."""
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "generate_architecture.py"), "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    page = (ROOT / "docs" / "architecture.md").read_text()
    guide = (ROOT / "docs" / "how-to" / "model-server.md").read_text()      # the page that names the rooms
    for room in ("contract", "api", "scoring", "monitoring", "workers", "host"):
        assert f"### `serving/{room}/`" in page and f"`{room}/`" in guide
