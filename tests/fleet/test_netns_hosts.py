"""Releases to three real hosts: network namespaces with their own address, sshd and model server.

The hosts share this machine's filesystem but not its network: each server binds its host's
address (10.213.<k>.<10+i>) inside its namespace, and this process reaches it over the bridge.
Before the host agent (serving/host/) probed the address it binds, ``status`` on such a host said the server was
unreachable and ``start`` never saw it healthy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving.contract.processes import alive
from tasks.constants import GOLDEN_TOLERANCE
from tasks.deploy.targets import Target
from tasks.deploy.transports import transport_for
from tasks.errors import TransferError
from testkit import netns

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(netns_hosts):
    return netns_hosts(3)


@pytest.fixture(scope="module")
def bundles(served_models, tmp_path_factory):
    from tasks.deploy.package import package_version

    out = tmp_path_factory.mktemp("bundles")
    return {v: package_version(served_models["model_dir"] / v, out) for v in ("1", "2")}


@pytest.fixture(scope="module")
def deployed(hosts, bundles):
    """Version 1 deployed to every host over SSH (the hosts in parallel)."""
    from tasks.deploy.deploy import deploy_to

    targets = [Target.model_validate(h.target()) for h in hosts]
    bundle, meta = bundles["1"]
    with ThreadPoolExecutor(len(targets)) as pool:
        deployments = list(pool.map(lambda t: deploy_to(t, bundle, meta), targets))
    return targets, deployments


def _predict(address: str, port: int, meta) -> list[float]:
    rows = [g.features for g in meta.golden_examples]
    resp = httpx.post(f"http://{address}:{port}/predict", json={"features": rows}, timeout=30)
    assert resp.status_code == 200, resp.text
    return [p["probability"] for p in resp.json()["predictions"]]


def _serves(address: str, port: int, meta) -> bool:
    health = httpx.get(f"http://{address}:{port}/health", timeout=10)
    got = _predict(address, port, meta)
    return health.json()["status"] == "healthy" and max(
        abs(a - g.probability) for a, g in zip(got, meta.golden_examples, strict=True)) <= GOLDEN_TOLERANCE


def test_each_host_serves_on_its_own_address(hosts, deployed, bundles):
    targets, deployments = deployed
    _, meta = bundles["1"]
    root = netns.listeners()
    assert not [a for a in root if a.startswith(f"{netns.SUBNET}.")]    # nothing of theirs listens out here
    for host, target, deployment in zip(hosts, targets, deployments, strict=True):
        assert deployment.action == "start" and deployment.smoke.passed, deployment.smoke.failures
        assert deployment.url == f"http://{host.address}:{target.port}"
        assert f"{host.address}:{target.port}" in netns.listeners(host)
        assert _serves(host.address, target.port, meta)


def test_status_over_ssh_reports_each_server_running_and_healthy(hosts, deployed):
    """What the address defect broke: the host asked 127.0.0.1, where nothing of its server listens."""
    targets, deployments = deployed
    for host, target in zip(hosts, targets, strict=True):
        status = transport_for(target).host("status")
        assert status["running"] and status["health"] == "healthy", status
        assert status["default_version"] == "1" and status["loaded_versions"] == ["1"]
        inside = {int(p) for p in subprocess.run(["ip", "netns", "pids", host.name], capture_output=True,
                                                 text=True, check=True).stdout.split()}
        assert status["pid"] in inside      # the server runs in the host's namespace


def test_a_second_version_hot_loads_on_a_host_at_its_address(hosts, deployed, bundles):
    from tasks.deploy.deploy import deploy_to

    targets, _ = deployed
    bundle, meta = bundles["2"]
    deployment = deploy_to(targets[0], bundle, meta)
    assert deployment.action == "hot-load" and deployment.previous_version == "1" and deployment.smoke.passed
    assert transport_for(targets[0]).host("status")["loaded_versions"] == ["1", "2"]
    assert _serves(hosts[0].address, targets[0].port, meta)


def test_a_cut_off_host_fails_its_deploy_by_name_and_the_others_keep_serving(hosts, deployed, bundles):
    from tasks.deploy.deploy import deploy_to

    targets, _ = deployed
    bundle, meta = bundles["2"]
    cut_off = Target.model_validate(hosts[2].target(connect_timeout_s=3))
    netns.cut(hosts[2])
    try:
        with pytest.raises(TransferError, match=rf"target host2 \(root@{hosts[2].address}:22\): connect: host "
                                                "unreachable"):
            deploy_to(cut_off, bundle, meta)
        assert _serves(hosts[1].address, targets[1].port, bundles["1"][1])
        assert _serves(hosts[0].address, targets[0].port, meta)
    finally:
        netns.mend(hosts[2])
    # Cut off, not stopped: once its link is back, the host serves what it served before.
    assert transport_for(targets[2]).host("status")["default_version"] == "1"


def test_the_fixture_removes_everything_when_the_test_fails(tmp_path):
    if netns.unavailable():
        pytest.skip(netns.unavailable())
    with pytest.raises(RuntimeError, match="a failing test"), netns.netns_hosts(1, tmp_path) as made:
        name, veth, sshd = made[0].name, made[0].veth, made[0].sshd
        assert name in netns._namespaces() and sshd.poll() is None
        raise RuntimeError("a failing test")
    assert name not in netns._namespaces()
    assert not [li for li in netns._links() if li["ifname"].startswith(name[:-2])]
    assert sshd.poll() is not None and not [li for li in netns._links() if li["ifname"] == veth]


def test_leftovers_of_an_aborted_run_are_reaped_and_a_live_run_is_not(hosts, tmp_path):
    """A run killed before its teardown leaves namespaces, links and an sshd; the next run removes them."""
    code = ("import os, signal, sys; from pathlib import Path; from testkit.netns import netns_hosts\n"
            "with netns_hosts(1, Path(sys.argv[1])) as h:\n"
            "    print(h[0].name, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n")
    out = tmp_path / "out"
    with open(out, "w") as fh:     # a file, not a pipe: the orphaned sshd would hold a pipe open
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], stdout=fh, stderr=subprocess.STDOUT,
                              timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -signal.SIGKILL, out.read_text()
    left = out.read_text().split()[0]
    orphans = subprocess.run(["ip", "netns", "pids", left], capture_output=True, text=True).stdout.split()
    assert left in netns._namespaces() and orphans      # its sshd outlived it
    removed = netns.reap_leftovers()
    assert left in removed and f"{left[:-2]}br" in removed
    assert left not in netns._namespaces()
    assert not [pid for pid in orphans if alive(int(pid))]     # a zombie (not yet reaped) does not run
    assert all(h.name in netns._namespaces() for h in hosts)
