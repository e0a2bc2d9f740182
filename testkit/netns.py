"""Separate hosts for the tests and bench/: Linux network namespaces, each with its own address and sshd.

    with netns_hosts(3, tmp_path) as hosts:          # needs root and iproute2 (``ip netns``)
        target = Target.model_validate(hosts[0].target(port=8000))
        cut(hosts[1]); ...; mend(hosts[1])

Layout: one Linux bridge in the root namespace holds ``10.213.<k>.1/24`` (``k`` chosen so that no
address or route of this machine overlaps it); host ``i`` is the namespace ``<prefix>h<i>`` with
``lo`` and ``eth0`` (the peer of the veth ``<prefix>v<i>``, whose root end is on the bridge) at
``10.213.<k>.<10 + i>``. Each host runs OpenSSH on its address, port 22, with its own host key;
its base directory lives under the given directory (the filesystem is shared, the network is
not). Traffic stays between the namespaces and this machine: there is no route out of them.

Every name starts with ``mlp<pid><letter>`` (the creating process's pid; the letter tells apart
two sets made by one process), and the bridge's alias records the creator's start time, so a
later run removes what an aborted one left (``reap_leftovers``) without touching a live run's.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serving.contract.files import locked
from serving.contract.processes import started_at
from testkit.sshd import start_sshd

log = logging.getLogger(__name__)

PREFIX = "mlp"
NAME = re.compile(rf"^({PREFIX}(\d+)[a-z])(?:h\d+|v\d+|br)$")   # (prefix (creator pid)) kind
SUBNET = "10.213"
SSH_PORT = 22
FIRST_HOST = 10     # host i is 10.213.<k>.<10 + i>; .1 is the bridge (the test process's side)
ALIAS = "ml-pipeline testkit.netns"


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces here (not root, no iproute2, no permission)."""


@dataclass
class NetnsHost:
    """One host: a namespace with its own address, sshd and base directory."""

    index: int
    name: str              # the namespace
    address: str
    veth: str              # the root namespace's end of its link (on the bridge)
    dir: Path              # keys, sshd_config, sshd.log
    base_dir: Path         # the deploy base directory (targets' base_dir)
    ssh_port: int = SSH_PORT
    user: str = "root"
    sshd: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def key(self) -> Path:
        return self.dir / "user_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def target(self, **overrides) -> dict:
        """This host as an entry of the targets inventory (ssh transport; the server runs this interpreter,
        so no environment is built)."""
        spec = {"name": f"host{self.index}", "transport": "ssh", "base_dir": self.base_dir, "host": self.address,
                "port": 8000, "python": sys.executable, "user": self.user, "ssh_port": self.ssh_port,
                "key_file": self.key, "known_hosts": self.known_hosts, "connect_timeout_s": 5,
                "start_timeout_s": 120}
        return {**spec, **overrides}

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


_unavailable: list[str | None] = []


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can). Tried once per process: a probe namespace
    is added and deleted."""
    if not _unavailable:
        if os.geteuid() != 0:
            reason = "network namespaces need root (ip netns add); run the tests as root"
        elif shutil.which("ip") is None:
            reason = "no `ip` binary: install iproute2 (make system-deps does)"
        else:
            probe = f"{PREFIX}{os.getpid()}zh0"
            added = _ip("netns", "add", probe, check=False)
            _ip("netns", "del", probe, check=False)
            reason = None if added.returncode == 0 else f"`ip netns add` failed: {added.stderr.strip()}"
        _unavailable.append(reason)
    return _unavailable[0]


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[dict]:
    return json.loads(_ip("-j", "link", "show", check=False).stdout or "[]")


def _kill_inside(netns: str, timeout: float = 10) -> int:
    """SIGKILL every process in the namespace (sshd, its sessions, the servers they started); returns how many."""
    pids = [int(p) for p in _ip("netns", "pids", netns, check=False).stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while _ip("netns", "pids", netns, check=False).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(pids)


def _remove(prefix: str) -> list[str]:
    """Remove every namespace and link whose name starts with ``prefix`` (processes inside first)."""
    removed = []
    for netns in _namespaces():
        if netns.startswith(prefix) and NAME.match(netns):
            _kill_inside(netns)
            if _ip("netns", "del", netns, check=False).returncode == 0:
                removed.append(netns)
    for link in _links():   # deleting a namespace deletes its veth pair; what is left: the bridge, strays
        name = link["ifname"].split("@")[0]
        if name.startswith(prefix) and NAME.match(name) and _ip("link", "del", name, check=False).returncode == 0:
            removed.append(name)
    return removed


def reap_leftovers() -> list[str]:
    """Remove the namespaces and links an earlier run left behind (its creating process is gone, or the pid
    now belongs to another process); a live run's are kept. Returns what was removed."""
    links = _links()
    recorded: dict[str, str] = {}     # prefix -> its creator's start time, from the bridge's alias
    for link in links:
        alias = link.get("ifalias", "")
        if (m := NAME.match(link["ifname"])) and link["ifname"].endswith("br") and "start=" in alias:
            recorded[m.group(1)] = alias.rsplit("start=", 1)[1]
    creators = {m.group(1): int(m.group(2))
                for name in _namespaces() + [li["ifname"].split("@")[0] for li in links] if (m := NAME.match(name))}
    removed = []
    for prefix, pid in sorted(creators.items()):
        if _left_behind(pid, recorded.get(prefix)):
            removed += _remove(prefix)
    if removed:
        log.warning("testkit.netns: removed what an aborted run left: %s", ", ".join(removed))
    return removed


def _left_behind(pid: int, recorded: str | None) -> bool:
    """Whether a set's creator is gone: no process ``pid``, or one started at another time than its bridge's
    alias records. A record in another format (an older testkit wrote clock ticks after boot, without the
    decimal point of ``started_at``) cannot be compared: that set stays while its pid runs."""
    started = started_at(pid)
    if started is None:
        return True
    return recorded is not None and "." in recorded and recorded != started


@contextmanager
def _lock() -> Iterator[None]:
    """Serialise the choice of a subnet and of a prefix between processes."""
    with locked(Path(tempfile.gettempdir()) / "ml-pipeline-netns.lock"):
        yield


def _free_subnet() -> int:
    """A third octet ``k`` such that 10.213.<k>.0/24 overlaps no address or route of the root namespace."""
    taken = []
    for entry in json.loads(_ip("-j", "-4", "route", "show", "table", "all", check=False).stdout or "[]"):
        if entry.get("dst", "default") != "default":
            taken.append(ipaddress.ip_network(entry["dst"], strict=False))
    for link in json.loads(_ip("-j", "-4", "addr", "show", check=False).stdout or "[]"):
        for a in link.get("addr_info", []):
            taken.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    start = os.getpid() % 250
    for i in range(250):
        k = (start + i) % 250 + 1
        net = ipaddress.ip_network(f"{SUBNET}.{k}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return k
    raise NetnsUnavailable(f"no free /24 in {SUBNET}.0.0/16: every one overlaps an address or route here")


def _claim() -> str:
    """A prefix no set of this process uses, claimed by creating its bridge (under the lock)."""
    used = {n for n in _namespaces()} | {li["ifname"].split("@")[0] for li in _links()}
    for letter in "abcdefghijklmnopqrstuvwxy":
        prefix = f"{PREFIX}{os.getpid()}{letter}"
        if not any(u.startswith(prefix) for u in used):
            _ip("link", "add", f"{prefix}br", "type", "bridge")
            return prefix
    raise NetnsUnavailable(f"process {os.getpid()} already holds 25 sets of namespaces")


def _create(prefix: str, n: int, root: Path, hosts: list[NetnsHost]) -> None:
    """The bridge's address, namespaces, links, addresses, then one sshd per host (appended to ``hosts``)."""
    bridge = f"{prefix}br"
    _ip("link", "set", bridge, "alias", f"{ALIAS} pid={os.getpid()} start={started_at(os.getpid())}")
    with _lock():
        k = _free_subnet()
        _ip("addr", "add", f"{SUBNET}.{k}.1/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    for i in range(n):
        netns, veth = f"{prefix}h{i}", f"{prefix}v{i}"
        host = NetnsHost(index=i, name=netns, address=f"{SUBNET}.{k}.{FIRST_HOST + i}", veth=veth,
                         dir=root / netns, base_dir=root / netns / "base")
        _ip("netns", "add", netns)
        hosts.append(host)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", bridge, "up")
        _ip("-n", netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
    for host in hosts:
        host.dir.mkdir(parents=True, exist_ok=True)
        host.base_dir.mkdir(parents=True, exist_ok=True)
        host.sshd, info = start_sshd(host.dir, port=SSH_PORT, address=host.address, netns=host.name)
        host.user = info["user"]


def teardown(prefix: str, hosts: list[NetnsHost]) -> list[str]:
    """Kill every process inside the hosts' namespaces, delete the namespaces, links and the bridge."""
    removed = _remove(prefix)
    for host in hosts:
        if host.sshd is not None:
            try:
                host.sshd.wait(timeout=10)     # killed with its namespace: reap it
            except subprocess.TimeoutExpired:
                host.sshd.kill()
                host.sshd.wait(timeout=10)
    return removed


@contextmanager
def netns_hosts(n: int, root: Path) -> Iterator[list[NetnsHost]]:
    """``n`` hosts as network namespaces with sshd, under ``root``; all of it removed on exit, failed or not.

    Raises:
        NetnsUnavailable: namespaces cannot be made here (the reason says why).
    """
    reason = unavailable()
    if reason:
        raise NetnsUnavailable(reason)
    reap_leftovers()
    with _lock():
        prefix = _claim()
    hosts: list[NetnsHost] = []
    try:
        _create(prefix, n, root, hosts)
        yield hosts
    finally:
        teardown(prefix, hosts)


def cut(host: NetnsHost) -> None:
    """Take the host's link down: it is cut off from the network (its processes keep running)."""
    _ip("link", "set", host.veth, "down")


def mend(host: NetnsHost) -> None:
    """Bring the host's link back up."""
    _ip("link", "set", host.veth, "up")


def listeners(host: NetnsHost | None = None) -> set[str]:
    """The ``address:port`` of every listening TCP socket in the host's namespace (None: the root namespace)."""
    argv = ["ss", "-Hltn"]
    out = (host.run(*argv) if host else subprocess.run(argv, capture_output=True, text=True, timeout=30)).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}
