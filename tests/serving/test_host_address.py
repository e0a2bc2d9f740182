"""serving/host/agent.py calls the server on the address it binds (the target's host), not on 127.0.0.1.

A stand-in server (a thread of this process) binds 127.0.0.2, a loopback address that is not
127.0.0.1: before the fix every health, load, status, activate and labelled call went to
127.0.0.1 and found nothing there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serving.host import agent as host

pytestmark = pytest.mark.unit

ADDRESS = "127.0.0.2"


class StandIn:
    """A model server's admin surface on ``address``: /health serves version 1, admin calls answer 200."""

    def __init__(self, address: str) -> None:
        self.calls: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: dict) -> None:
                outer.calls.append((self.command, self.path))
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):   # noqa: N802 (http.server's name)
                if self.path == "/health":
                    self._answer({"status": "ok", "default_version": "1", "loaded_versions": ["1"]})
                else:
                    self._answer({"version": "1", "rows": []})

            def do_POST(self):   # noqa: N802
                self._answer({"ok": True})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    server = StandIn(ADDRESS)
    yield server
    server.close()


@pytest.fixture
def base(tmp_path) -> Path:
    (tmp_path / "releases" / "1" / "model" / "m").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def recorded(base):
    """A process recorded as this host's server (run/server.json), so ``status`` asks it for /health."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    host._record_server(host._run_dir(base), proc.pid, ADDRESS, 0, "1")
    yield proc
    proc.kill()
    proc.wait()


def _main(capsys, *argv: str) -> dict:
    code = host.main(list(argv))
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == (0 if out["ok"] else 1)
    return out


@pytest.mark.parametrize("bound, probed", [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"),   # noqa: S104
                                           ("", "127.0.0.1"), ("::", "::1"), ("10.213.4.11", "10.213.4.11")])
def test_the_probe_goes_where_the_server_binds(bound, probed):
    assert host._probe_address(bound) == probed


def test_status_asks_the_server_on_its_own_address(base, stand_in, recorded, capsys):
    out = _main(capsys, "status", "--base-dir", str(base), "--host", ADDRESS, "--port", str(stand_in.port))
    assert out["running"] and out["health"] == "ok" and out["default_version"] == "1"
    assert ("GET", "/health") in stand_in.calls


def test_activate_and_labelled_reach_the_server_on_its_own_address(base, stand_in, capsys):
    where = ["--base-dir", str(base), "--host", ADDRESS, "--port", str(stand_in.port)]
    assert _main(capsys, "activate", *where, "--version", "1")["default_version"] == "1"
    assert _main(capsys, "labelled", *where, "--version", "1")["action"] == "labelled"
    assert [c for c in stand_in.calls if c[0] == "POST"] == [("POST", "/default?version=1")]
    assert ("GET", "/monitoring/labelled?version=1&since=0.0") in stand_in.calls
    assert (base / "current").resolve() == (base / "releases" / "1").resolve()


def test_a_server_this_script_did_not_start_on_the_address_is_hot_loaded(base, stand_in):
    """A server (e.g. the systemd unit's) already binds the target's address: ``start`` loads into it rather
    than starting a second one — the interpreter given here would fail at once if it were run."""
    result = host.start(base, "1", ADDRESS, stand_in.port, python="/bin/false", timeout=5)
    assert result["action"] == "hot-load" and result["previous_version"] == "1"
    assert any(m == "POST" and p.startswith("/load?") for m, p in stand_in.calls)


def test_the_port_is_taken_only_where_it_is_bound():
    with socket.socket() as held:
        held.bind((ADDRESS, 0))
        held.listen()
        port = held.getsockname()[1]
        assert host._port_free(ADDRESS, port) is False
        assert host._port_free("127.0.0.3", port) is True


STUB_SERVER = """
import argparse, json
from http.server import BaseHTTPRequestHandler, HTTPServer
parser = argparse.ArgumentParser()
parser.add_argument("-m")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        raw = json.dumps({"status": "ok", "default_version": "1", "loaded_versions": ["1"]}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *a):
        pass

HTTPServer((args.host, args.port), Handler).serve_forever()
"""


def test_a_server_started_on_another_address_is_seen_healthy(base, tmp_path, capsys):
    """``start`` launches the server bound to the target's address and waits for its /health there."""
    stub = tmp_path / "stub_server.py"
    stub.write_text(STUB_SERVER)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {stub} \"$@\"\n")
    python.chmod(0o755)
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        port = s.getsockname()[1]
    try:
        result = host.start(base, "1", ADDRESS, port, str(python), timeout=10)
        assert result["action"] == "start"
        with pytest.raises(ConnectionRefusedError):    # bound to its own address only
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        out = _main(capsys, "status", "--base-dir", str(base), "--host", ADDRESS, "--port", str(port))
        assert out["running"] and out["health"] == "ok" and out["pid"] == result["pid"]
    finally:
        host.stop(base, timeout=5)
