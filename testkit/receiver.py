"""A local HTTP receiver standing in for Slack and PagerDuty: it keeps every JSON body posted to it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """``with Receiver() as r:`` — POSTs to ``r.url + "/slack"`` etc. land in ``r.received`` as (path, body)."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[str, dict]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.received.append((self.path, json.loads(body or b"null")))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):   # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for the loop's next poll: every 0.5 s by default, 50 ms here.
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def on(self, path: str) -> list[dict]:
        return [body for p, body in self.received if p == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
