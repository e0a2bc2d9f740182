"""serving/host/client.py calls the server on the address it binds (the target's host), not on 127.0.0.1.

Before the fix every health, load, status, activate and labelled call went to 127.0.0.1 and found nothing
where the server binds another address (the stand-in server of these tests binds 127.0.0.2).
"""

from __future__ import annotations

import socket

import pytest

from serving.host import client
from tests.serving.host.conftest import ADDRESS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("bound, probed", [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"),   # noqa: S104
                                           ("", "127.0.0.1"), ("::", "::1"), ("10.213.4.11", "10.213.4.11")])
def test_the_probe_goes_where_the_server_binds(bound, probed):
    assert client.probe_address(bound) == probed


def test_the_port_is_taken_only_where_it_is_bound():
    with socket.socket() as held:
        held.bind((ADDRESS, 0))
        held.listen()
        port = held.getsockname()[1]
        assert client.port_free(ADDRESS, port) is False
        assert client.port_free("127.0.0.3", port) is True


def test_a_server_is_recognised_by_its_health(stand_in):
    assert client.server_health(ADDRESS, stand_in.port)["loaded_versions"] == ["1"]
    with socket.socket() as unused:
        unused.bind((ADDRESS, 0))
        assert client.server_health(ADDRESS, unused.getsockname()[1]) is None


@pytest.mark.parametrize("workers, agreeing, serving", [
    (None, True, True),                                                  # an older server: one process
    ({"count": 2, "expected": 2, "agree": True}, True, True),
    ({"count": 2, "expected": 2, "agree": False}, True, False),
    ({"count": 2, "expected": 2, "agree": False}, False, True),
    ({"count": 1, "expected": 2, "agree": True}, False, False),
])
def test_every_worker_serves(workers, agreeing, serving):
    health = {"status": "ok"} if workers is None else {"status": "ok", "workers": workers}
    assert client.all_workers_serving(health, agreeing=agreeing) is serving
