"""A large synthetic tabular set for the scale benchmark: N rows × 20 feature columns + a label.

Deterministic (fixed seed → the same bytes): 10 numeric columns (3 with nulls, 2 heavy-tailed),
4 integer counts, 4 categorical (4, 6, 8 and 24 levels; one with nulls), 2 booleans, and a
binary label drawn from a logistic model with interactions, so a network has something to learn
(positive rate ≈ 0.2). Writes the data (.csv, or .parquet/.pq) and its contract (schema.yaml,
feature_list.csv) beside it.

Usage: .venv/bin/python bench/make_wide.py --rows 1000000 --out /tmp/wide/wide.csv [--out /tmp/wide/wide.parquet]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = {"cat_00": 4, "cat_01": 6, "cat_02": 8, "cat_03": 24}
NULLABLE = ("num_00", "num_01", "num_02", "cat_01")
TARGET = "label"


def make_wide(n_rows: int, seed: int = 13) -> pd.DataFrame:
    """The frame; nulls as NaN (numeric) or None (categorical)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for i in range(8):
        cols[f"num_{i:02d}"] = np.round(rng.normal(0.0, 1.0, n_rows), 5)
    cols["num_08"] = np.round(rng.lognormal(3.0, 1.0, n_rows), 3)            # heavy tail
    cols["num_09"] = np.round(rng.gamma(2.0, 0.3, n_rows), 4)
    for i, lam in enumerate((0.5, 2.0, 5.0, 12.0)):
        cols[f"int_{i:02d}"] = rng.poisson(lam, n_rows).astype(np.int64)
    codes = {}
    for name, k in CATEGORIES.items():
        codes[name] = rng.integers(0, k, n_rows)
        cols[name] = np.array([f"{name}_{j:02d}" for j in range(k)], dtype=object)[codes[name]]
    cols["bool_00"] = rng.random(n_rows) < 0.3
    cols["bool_01"] = rng.random(n_rows) < 0.6

    effects = {name: rng.normal(0.0, 0.5, k) for name, k in CATEGORIES.items()}
    logit = (-1.9 + 0.6 * cols["num_00"] - 0.5 * cols["num_01"] + 0.4 * cols["num_02"] * cols["num_03"]
             + 0.3 * np.sin(2 * cols["num_04"]) + 0.35 * (np.log(cols["num_08"]) - 3.0)
             + 0.8 * (cols["num_09"] - 0.6) + 0.25 * cols["int_00"] - 0.08 * (cols["int_02"] - 5)
             + 0.5 * cols["bool_00"] - 0.3 * cols["bool_01"] * (cols["num_05"] > 0)
             + sum(effects[name][codes[name]] for name in CATEGORIES))
    label = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    frame = pd.DataFrame(cols)
    for name in NULLABLE:   # nulls after the label, so a missing value hides information, as in real data
        missing = rng.random(n_rows) < 0.05
        frame[name] = frame[name].astype(object if name.startswith("cat") else np.float64)
        frame.loc[missing, name] = None if name.startswith("cat") else np.nan
    frame[TARGET] = label
    return frame


def contract_yaml(frame: pd.DataFrame) -> tuple[str, str]:
    """schema.yaml and feature_list.csv for the frame (hard ranges wide enough for any seed)."""
    lines = ["version: 1", "target:", f"  name: {TARGET}", "  positive_label: '1'", "columns:"]
    features = ["feature,preprocessing,imputation,embedding_dim"]
    for name in frame.columns:
        if name == TARGET:
            continue
        nullable = "true" if name in NULLABLE else "false"
        lines.append(f"- name: {name}")
        if name.startswith("num"):
            lines += ["  type: numeric", f"  nullable: {nullable}", "  min: -1000000", "  max: 1000000"]
            prep = "log_standardize" if name in ("num_08", "num_09") else "standardize"
            features.append(f"{name},{prep},{'median' if name in NULLABLE else 'none'},")
        elif name.startswith("int"):
            lines += ["  type: integer", f"  nullable: {nullable}", "  min: 0", "  max: 1000"]
            features.append(f"{name},standardize,none,")
        elif name.startswith("cat"):
            levels = ", ".join(f"{name}_{j:02d}" for j in range(CATEGORIES[name]))
            lines += ["  type: categorical", f"  nullable: {nullable}", f"  categories: [{levels}]"]
            prep = "embedding" if CATEGORIES[name] > 12 else "one_hot"
            imputation = "missing_category" if name in NULLABLE else "none"
            features.append(f"{name},{prep},{imputation},{4 if prep == 'embedding' else ''}")
        else:
            lines += ["  type: boolean", f"  nullable: {nullable}"]
            features.append(f"{name},binary,none,")
    return "\n".join(lines) + "\n", "\n".join(features) + "\n"


def write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False, row_group_size=100_000)
    else:
        frame.to_csv(path, index=False)
    schema, features = contract_yaml(frame)
    (path.parent / "schema.yaml").write_text(schema)
    (path.parent / "feature_list.csv").write_text(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, action="append", required=True, help="a .csv or .parquet path")
    args = parser.parse_args()
    frame = make_wide(args.rows, args.seed)
    for path in args.out:
        write(frame, path)
        print(f"wrote {path} ({args.rows} rows, {frame.shape[1] - 1} features + {TARGET}; "
              f"positive rate {frame[TARGET].mean():.3f}) and its schema.yaml, feature_list.csv")


if __name__ == "__main__":
    main()
