"""What the registry writes into reports that every Prefect UI user reads: no credentials."""

from __future__ import annotations

import pytest

from tasks.registry.links import run_link, safe_uri

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("uri", "shown"), [
    ("postgresql+psycopg2://pipeline:S3cret@db.internal:5432/mlflow", "postgresql+psycopg2://db.internal:5432/mlflow"),
    ("mysql://root:p%40ss@127.0.0.1/mlflow", "mysql://127.0.0.1/mlflow"),
    ("https://alice:tok@mlflow.example.com/", "https://mlflow.example.com/"),
    ("sqlite:////srv/pipeline/mlflow/mlflow.db", "sqlite:////srv/pipeline/mlflow/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_uris_lose_their_credentials(uri, shown):
    assert safe_uri(uri) == shown


def test_run_link_to_a_database_store_names_no_password():
    # A database store needs no client call: the link is the store and the run id.
    link = run_link(None, "postgresql+psycopg2://pipeline:S3cret@db.internal:5432/mlflow", "abc123")
    assert "S3cret" not in link and "pipeline:" not in link
    assert link == ("run abc123 in postgresql+psycopg2://db.internal:5432/mlflow "
                    "(`mlflow ui --backend-store-uri postgresql+psycopg2://db.internal:5432/mlflow`)")
