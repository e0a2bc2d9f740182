"""Generate the demo credit-risk dataset shipped as ``data/demo.csv``.

Deterministic (fixed seed), so the CSV in the repository can always be rebuilt
byte for byte: ``python data/make_demo.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

REGIONS = ["north", "south", "east", "west", "central"]
PURPOSES = ["car", "home", "education", "business", "medical", "other"]


def make_demo(n_rows: int = 6000, seed: int = 7) -> pd.DataFrame:
    """A synthetic loan book: the default risk rises with debt and late payments."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n_rows)
    income = np.round(rng.lognormal(mean=10.6, sigma=0.55, size=n_rows), 2)
    debt_ratio = np.round(np.clip(rng.gamma(2.0, 0.22, n_rows), 0, 3.0), 4)
    credit_lines = rng.poisson(5, n_rows).clip(0, 30)
    late_payments = rng.poisson(0.7, n_rows).clip(0, 20)
    employment_years = np.round(np.clip(rng.normal((age - 18) * 0.45, 4.0), 0, 50), 1)
    region = rng.choice(REGIONS, n_rows, p=[0.22, 0.24, 0.18, 0.2, 0.16])
    purpose = rng.choice(PURPOSES, n_rows, p=[0.3, 0.25, 0.1, 0.12, 0.08, 0.15])
    has_mortgage = rng.random(n_rows) < 0.35

    region_effect = {"north": -0.2, "south": 0.25, "east": 0.0, "west": -0.1, "central": 0.1}
    purpose_effect = {"car": 0.0, "home": -0.3, "education": 0.2, "business": 0.45,
                      "medical": 0.35, "other": 0.1}
    logit = (
        -2.1
        + 2.0 * (debt_ratio - 0.44)
        + 0.55 * late_payments
        - 0.9 * (np.log(income) - 10.6)
        - 0.025 * (employment_years - 10)
        + 0.6 * ((age < 25) | (age > 70))
        + np.vectorize(region_effect.get)(region)
        + np.vectorize(purpose_effect.get)(purpose)
        - 0.3 * has_mortgage
        + 0.8 * (debt_ratio > 1.0) * (late_payments > 1)
    )
    default = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)

    frame = pd.DataFrame({
        "age": age,
        "income": income,
        "debt_ratio": debt_ratio,
        "credit_lines": credit_lines,
        "late_payments": late_payments,
        "employment_years": employment_years,
        "region": region,
        "purpose": purpose,
        "has_mortgage": np.where(has_mortgage, "true", "false"),
        "default": default,
    })
    # Real loan books have gaps: income and employment are self-reported.
    frame.loc[rng.random(n_rows) < 0.04, "income"] = np.nan
    frame.loc[rng.random(n_rows) < 0.06, "employment_years"] = np.nan
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo.csv"))
    args = parser.parse_args()
    make_demo(args.rows, args.seed).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
