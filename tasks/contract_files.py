"""The data contract's files on the pipeline side: ``schema.yaml`` and ``feature_list.csv``, read and written.

The model server never reads these: it gets the schema and the feature list from a model's
``metadata.json`` (``serving.contract.schema.schema_from_dict``), so YAML is a pipeline dependency only.
The models themselves (``Schema``, ``FeatureList``) and their checks stay in ``serving.contract.schema``,
one implementation for training and serving.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml
from pydantic import ValidationError

from serving.contract.errors import ContractError
from serving.contract.schema import FeatureList, FeatureSpec, Schema, pydantic_message, schema_from_dict

FEATURE_LIST_COLUMNS = ("feature", "preprocessing", "imputation", "embedding_dim")


def dump_schema(schema: Schema, path: str | Path) -> None:
    data = schema.model_dump(mode="json", exclude_none=True)
    data["columns"] = [{k: v for k, v in c.contract().items() if v is not None} for c in schema.columns]
    for col in data["columns"]:
        for key in ("min", "max", "hard_min", "hard_max"):
            if isinstance(col.get(key), float) and col[key].is_integer():
                col[key] = int(col[key])
    Path(path).write_text(
        "# Data contract: every column of the training CSV, its type and what values are allowed.\n"
        "# Edit the ranges and category lists. Hard bounds (the default, and hard_min/hard_max) are refused;\n"
        "# with `bounds: soft` a value outside min/max/categories is scored and counted as drift.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )


def dump_feature_list(features: FeatureList, path: str | Path) -> None:
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FEATURE_LIST_COLUMNS)
        for f in features.features:
            writer.writerow([f.name, f.preprocessing, f.imputation, f.embedding_dim or ""])


def read_yaml(path: Path, what: str, error: type[Exception] = ContractError) -> object:
    """Parse a YAML file.

    Raises:
        error: the file cannot be read, is not text or is not YAML; the message names the file (the
            pipeline's settings pass their ConfigError).
    """
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (the {what} is YAML)") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None


def load_schema(path: str | Path) -> Schema:
    """The schema in a ``schema.yaml``; ContractError names the file and the field at fault."""
    path = Path(path)
    return schema_from_dict(read_yaml(path, "schema"), str(path))


def _feature_spec(row: dict, path: Path, lineno: int) -> FeatureSpec:
    """One data row of a feature list as a spec; ContractError names the row."""
    raw = {
        "name": (row.get("feature") or "").strip(),
        "preprocessing": (row.get("preprocessing") or "").strip(),
        "imputation": (row.get("imputation") or "none").strip() or "none",
    }
    dim = (row.get("embedding_dim") or "").strip()
    if dim:
        raw["embedding_dim"] = dim
    try:
        return FeatureSpec.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(f"{path}, row {lineno - 1}: {pydantic_message(exc)}") from None


def load_feature_list(path: str | Path) -> FeatureList:
    """The feature list in a ``feature_list.csv`` (``#`` lines are comments).

    Raises:
        ContractError: the file cannot be read, lacks a header column, or a row is invalid (named).
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(row for row in fh if not row.lstrip().startswith("#"))
            header = reader.fieldnames or []
            missing = [c for c in ("feature", "preprocessing") if c not in header]
            if missing:
                raise ContractError(f"{path}: missing header column(s) {missing}; "
                                    f"expected {list(FEATURE_LIST_COLUMNS)}")
            specs = [_feature_spec(row, path, lineno) for lineno, row in enumerate(reader, start=2)]
    except OSError as exc:
        raise ContractError(f"{path}: cannot read feature list: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ContractError(f"{path}: not a readable CSV feature list ({type(exc).__name__})") from None
    try:
        return FeatureList(features=tuple(specs))
    except ValidationError as exc:
        raise ContractError(f"{path}: {pydantic_message(exc)}") from None
