"""Stand-ins for the host agent's tests: a model server's admin surface on its own loopback address, a base
directory with one release, and processes that end with the test."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serving.host import layout

# A loopback address that is not 127.0.0.1: a call that ignored the address the server binds finds nothing.
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
        # shutdown() waits for the loop's next poll: every 0.5 s by default, 50 ms here.
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
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
    layout.record_server(layout.run_dir(base), proc.pid, ADDRESS, 0, "1")
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def session():
    """Start processes in sessions of their own (as the server runs); all of them end with the test."""
    procs: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        procs.append(subprocess.Popen(list(argv), start_new_session=True))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
