"""A table with 4 % positives, as a new user brings one: the drafted config's default gate judges the model on
figures relative to chance, so a useful model passes where an absolute PR-AUC floor of 0.3 refused it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from testkit.labels import labels_at_rate
from tests.conftest import FAST_CONFIG
from tests.flows.test_release_flow import _cli

pytestmark = pytest.mark.integration

ROWS, RATE = 10_000, 0.04


def _loans(path, seed: int = 5) -> float:
    """A loan table: defaults drawn from a logistic model of the features, the intercept set for RATE."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.8, 0.4, ROWS).round(-2)
    debt_ratio = rng.beta(2, 5, ROWS).round(3)
    late = rng.poisson(0.4, ROWS)
    purpose = rng.choice(["car", "home", "education", "other"], ROWS)
    mortgage = rng.random(ROWS) < 0.4
    signal = (4.0 * debt_ratio + 0.8 * late - 0.9 * (np.log(income) - 10.8) - 0.6 * mortgage
              + np.where(purpose == "education", 0.8, 0.0))
    default, _p = labels_at_rate(signal, RATE, rng)
    pd.DataFrame({"income": income, "debt_ratio": debt_ratio, "late_payments": late, "purpose": purpose,
                  "has_mortgage": np.where(mortgage, "yes", "no"),
                  "default": np.where(default, "yes", "no")}).to_csv(path, index=False)
    return float(default.mean())


def test_a_4_percent_table_passes_the_default_gate_a_pr_auc_floor_refused(tmp_path, prefect_server):
    data, cfg, home = tmp_path / "loans.csv", tmp_path / "cfg", tmp_path / "home"
    rate = _loans(data)
    assert 0.03 < rate < 0.05
    drafted = _cli(["infer-schema", "--data", str(data), "--target", "default", "--positive", "yes",
                    "--out", str(cfg)], home)
    assert drafted.returncode == 0, drafted.stderr
    # The drafted config names only the model; the tests' fast training replaces the search, the gate is the default.
    training = FAST_CONFIG[FAST_CONFIG.index("training:"):FAST_CONFIG.index("export:")]
    config = cfg / "pipeline.yaml"
    config.write_text(config.read_text() + training)
    summary = tmp_path / "summary.json"
    out = _cli(["release", "--data", str(data), "--schema", str(cfg / "schema.yaml"), "--feature-list",
                str(cfg / "feature_list.csv"), "--config", str(config), "--no-deploy", "--json-out", str(summary)],
               home)
    result = json.loads(summary.read_text())
    cv = result["cv_metrics"]
    assert out.returncode == 0, (out.stderr[-2000:], result["gate"])
    assert result["gate"]["passed"] and cv["roc_auc"] > 0.7
    assert cv["positive_rate"] == pytest.approx(rate)
    assert cv["pr_auc"] < 0.3 < cv["pr_auc_lift"]            # the old absolute floor would have refused it
    assert cv["pr_auc_lift"] == pytest.approx(cv["pr_auc"] / rate)
    assert cv["brier_skill"] > 0 and cv["ece_relative"] <= 0.25
