"""Server settings from SERVING_* variables."""

from __future__ import annotations

import pytest

from serving.contract.errors import ContractError
from serving.settings import settings_from_env

pytestmark = pytest.mark.unit


def test_the_admin_token_can_come_from_a_file(tmp_path):
    token = tmp_path / "admin_token"
    token.write_text("from-a-file\n")
    assert settings_from_env({"SERVING_ADMIN_TOKEN_FILE": str(token)}).admin_token == "from-a-file"
    both = {"SERVING_ADMIN_TOKEN_FILE": str(token), "SERVING_ADMIN_TOKEN": "from-env"}
    assert settings_from_env(both).admin_token == "from-env"
    with pytest.raises(ContractError, match="SERVING_ADMIN_TOKEN_FILE .*missing"):
        settings_from_env({"SERVING_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})
    assert "from-a-file" not in repr(settings_from_env({"SERVING_ADMIN_TOKEN_FILE": str(token)}))


def test_errors_name_the_variable(tmp_path):
    with pytest.raises(ContractError, match="SERVING_MAX_BATCH_ROWS"):
        settings_from_env({"SERVING_MAX_BATCH_ROWS": "lots"})
    assert settings_from_env({"SERVING_STATE_FILE": str(tmp_path / "s.json")}).state_file == tmp_path / "s.json"
