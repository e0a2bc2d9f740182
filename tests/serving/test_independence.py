"""serving/ ships alone to target hosts: it may import only itself and its own requirements."""

import ast
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

ALLOWED = {"serving", "numpy", "pydantic", "fastapi", "uvicorn", "orjson", "prometheus_client",
           "tensorflow", "gunicorn", "uvicorn_worker", "starlette",   # starlette: fastapi's own, pinned with it
           "psutil"}


def test_serving_imports_only_its_own_requirements():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    offenders = []
    for path in (ROOT / "serving").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top not in ALLOWED and top not in stdlib:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_serving_requirements_cover_its_imports():
    lines = (ROOT / "serving" / "requirements.txt").read_text().splitlines()
    reqs = "\n".join(ln for ln in lines if not ln.startswith("#"))
    for package in ("tensorflow-cpu", "numpy", "pydantic", "fastapi", "uvicorn", "orjson",
                    "prometheus-client", "gunicorn", "uvicorn-worker", "psutil"):
        assert f"{package}==" in reqs
    for banned in ("prefect", "mlflow", "pandas", "scikit-learn", "pyyaml"):   # YAML is the pipeline's alone
        assert banned not in reqs


@pytest.mark.integration
def test_the_server_scores_without_keras_or_scikit_learn_in_memory(served_models):
    """TensorFlow would import Keras and, through it, scikit-learn (~170 MB): the server keeps both out
    and still reproduces the golden examples; code that imports them later in the process gets them."""
    import subprocess

    code = ("import sys\n"
            "from serving.contract.model import LoadedModel\n"
            "model = LoadedModel.load(sys.argv[1])\n"
            "print(model.golden_max_error(), 'keras' in sys.modules, 'sklearn' in sys.modules)\n"
            "import keras, sklearn\n")
    done = subprocess.run([sys.executable, "-c", code, str(served_models["model_dir"] / "1")], cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    error, keras_loaded, sklearn_loaded = done.stdout.split()
    assert float(error) <= 1e-6
    assert (keras_loaded, sklearn_loaded) == ("False", "False")
