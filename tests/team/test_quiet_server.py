"""``prefect server start`` as the one-machine team setup writes it (docs/how-to/team-setup.md, SQLite) starts
quietly: no traceback and no telemetry error in its log once it is healthy.

A control server, started beside it without the page's exports, shows that the check can fail: its
telemetry heartbeat logs an error, usually within seconds of health. Both servers' proxy is a closed
port on 127.0.0.1, so the control's call home is refused here and nothing leaves this machine.
"""

from __future__ import annotations

import shlex
import time

import httpx
import pytest

from testkit.net import free_port
from tests.faults.conftest import wait_until
from tests.flows.test_guide_commands import documented_commands
from tests.team.stack import QUIET_SERVER, clean_env, start_sqlite_prefect_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = "docs/how-to/team-setup.md"
START = ".venv/bin/prefect server start"
TELEMETRY = "prefect.server.services.telemetry"
HEALTHY_S = 120         # start on a loaded machine: migrations of a fresh SQLite database
# The control's heartbeat usually runs as its services start, right after health. Its first run is a docket
# "automatic perpetual" task: when that first seeding is skipped, docket's reseed loop (every 60 s,
# docket.worker.AUTOMATIC_PERPETUAL_RESEED_INTERVAL_SECONDS) starts it. CI once waited 60 s and saw none.
CONTROL_S = 150
MARGIN_S = 5            # the documented server is watched this much longer than the control needed


def documented_exports() -> dict[str, str]:
    """NAME: value of each ``export`` the page runs before its first ``prefect server start`` (the SQLite setup)."""
    commands = [command for doc, command in documented_commands() if doc == PAGE]
    before = commands[: commands.index(START)]
    return dict(shlex.split(c)[1].split("=", 1) for c in before if c.startswith("export "))


def noise(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Traceback" in line or TELEMETRY in line or "| ERROR" in line]


def test_the_documented_server_start_logs_no_traceback_and_no_telemetry_error(tmp_path):
    exports = documented_exports()
    assert QUIET_SERVER.items() <= exports.items(), exports
    refused = f"http://127.0.0.1:{free_port()}"        # nothing listens there
    local = {"HTTPS_PROXY": refused, "HTTP_PROXY": refused, "NO_PROXY": "127.0.0.1,localhost"}
    documented = start_sqlite_prefect_server(tmp_path / "documented", clean_env(**exports, **local))
    control = start_sqlite_prefect_server(tmp_path / "control", clean_env(**local))
    try:
        for server in (documented, control):
            server.wait_healthy("/api/health", HEALTHY_S)
        healthy = time.monotonic()
        settings = httpx.get(documented.url + "/api/admin/settings", timeout=10).json()
        assert settings["server"]["analytics_enabled"] is False
        try:
            wait_until(lambda: TELEMETRY in control.log.read_text(errors="replace"), CONTROL_S,
                       "the control server's telemetry error")
        except AssertionError as missing:
            raise AssertionError(f"{missing}; the control's log:\n{control.log_tail()}") from None
        deadline = time.monotonic() + (time.monotonic() - healthy) + MARGIN_S
        while time.monotonic() < deadline:      # watch the documented server as long again, failing early
            assert noise(documented.log.read_text(errors="replace")) == [], documented.log_tail()
            time.sleep(0.25)
        assert noise(documented.log.read_text(errors="replace")) == [], documented.log_tail()
        assert documented.proc.poll() is None
    finally:
        for server in (documented, control):
            server.stop()
