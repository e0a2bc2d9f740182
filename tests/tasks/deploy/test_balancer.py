"""The nginx configuration generated from the inventory, and a real nginx draining hosts: two small
HTTP backends behind it, requests counted where they land."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.deploy.balancer import NginxBalancer, State, render_fleet_conf
from tasks.deploy.fleets import load_fleet
from tasks.errors import BalancerError
from testkit.net import free_port
from testkit.nginx import running_nginx

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deployments" / "nginx"


def _balanced(tmp_path: Path, ports: list[int], listen: int = 8080):
    hosts = "".join(f"  b{i}:\n    base_dir: targets/b{i}\n    port: {p}\n" for i, p in enumerate(ports, 1))
    names = ", ".join(f"b{i}" for i in range(1, len(ports) + 1))
    inventory = tmp_path / "targets.yaml"
    inventory.write_text(f"targets:\n{hosts}fleets:\n  web:\n    targets: [{names}]\n    strategy: rolling\n"
                         f"    balancer: {{listen_port: {listen}, config_dir: {tmp_path / 'nginx'}, "
                         "reload_timeout_s: 20}\n")
    fleet, targets = load_fleet(inventory, tmp_path / "home", "web")
    return NginxBalancer(fleet, targets, str(inventory))


@pytest.mark.unit
def test_the_upstream_lists_every_host_and_marks_the_drained_ones_down(tmp_path):
    balancer = _balanced(tmp_path, [8001, 8002, 8003])
    conf = render_fleet_conf(balancer.fleet, balancer.targets, State(7, frozenset({"b2"})))
    assert "    server 127.0.0.1:8001 max_fails=1 fail_timeout=5s;   # b1\n" in conf
    assert "    server 127.0.0.1:8002 max_fails=1 fail_timeout=5s down;   # b2\n" in conf
    assert "listen 127.0.0.1:8080;" in conf and "add_header X-Fleet-Generation 7 always;" in conf
    predict = conf.split("location = /predict {")[1].split("}")[0]
    rest = conf.split("location / {")[1].split("}")[0]
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in predict
    assert "non_idempotent" not in rest           # POST /feedback is not sent twice
    assert "location ~ ^/(load|unload|default|split|monitoring/labelled)$" in conf


@pytest.mark.unit
def test_draining_an_unknown_host_is_refused(tmp_path):
    with pytest.raises(BalancerError, match=r"unknown host\(s\) \['b9'\]"):
        _balanced(tmp_path, [8001, 8002]).write({"b9"})


@pytest.mark.unit
def test_the_committed_example_is_what_the_example_inventory_generates(tmp_path):
    """deployments/nginx/ holds the configuration the documented command writes for the example fleet."""
    fleet, targets = load_fleet(EXAMPLE / "example-targets.yaml", tmp_path, "web")
    out = fleet.model_copy(update={"balancer": fleet.balancer.model_copy(update={"config_dir": tmp_path / "out"})})
    balancer = NginxBalancer(out, targets, "deployments/nginx/example-targets.yaml")
    balancer.write(example=True)
    for name in ("fleet-web.conf", "nginx.conf"):
        assert (tmp_path / "out" / name).read_text() == (EXAMPLE / name).read_text(), name


class _Backend:
    """A tiny HTTP server that answers every request with its name and counts what it got."""

    def __init__(self, name: str) -> None:
        backend = self
        self.name, self.hits = name, []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"    # one connection per request: a closed server refuses the next

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                backend.hits.append((self.command, self.path))
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        # shutdown() waits for the loop's next poll: every 0.5 s by default, 50 ms here.
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if getattr(self, "closed", False):
            return
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


def _post(port: int, path: str = "/predict") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=b"{}", headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp.getheader("X-Fleet-Generation")
    finally:
        conn.close()


@pytest.mark.integration
def test_a_real_nginx_drains_restores_and_retries_on_the_next_host(tmp_path):
    a, b = _Backend("a"), _Backend("b")
    try:
        balancer = _balanced(tmp_path, [a.port, b.port], listen=free_port())
        with running_nginx(balancer):
            port = balancer.spec.listen_port
            assert {_post(port)[1] for _ in range(6)} == {"a", "b"}           # round robin
            state = balancer.drain(["b1"])
            assert balancer.served_generation() == state.generation and balancer.old_workers() == []
            seen = [_post(port) for _ in range(6)]
            assert {s[1] for s in seen} == {"b"} and {s[2] for s in seen} == {str(state.generation)}
            back = balancer.undrain(["b1"])
            assert back.generation == state.generation + 1 and back.drained == frozenset()
            assert {_post(port)[1] for _ in range(6)} == {"a", "b"}
            assert _post(port, "/load")[0] == 403 and _post(port, "/default")[0] == 403
            a.close()                                                        # a host goes away unannounced
            answers = [_post(port) for _ in range(6)]
            assert [s[:2] for s in answers] == [(200, "b")] * 6              # retried on b: no failed request
            # A configuration nginx refuses (a host name it cannot resolve) is never reloaded: it keeps serving.
            bad = [balancer.targets[0].model_copy(update={"host": "no-such-host.invalid"}), balancer.targets[1]]
            with pytest.raises(BalancerError, match="nginx refused"):
                NginxBalancer(balancer.fleet, bad, "x").apply(frozenset())
            assert balancer.served_generation() == back.generation and _post(port)[:2] == (200, "b")
    finally:
        a.close()
        b.close()
