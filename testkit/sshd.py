"""Start a throwaway OpenSSH server on 127.0.0.1, or inside a network namespace on its address (for the tests,
bench/bench_release.py and testkit/netns.py)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

from serving.contract.processes import children
from testkit.net import free_port, wait_for_port

SSHD = "/usr/sbin/sshd"


def start_sshd(d: Path, port: int | None = None, host_key: str = "host_key", address: str = "127.0.0.1",
               netns: str | None = None) -> tuple[subprocess.Popen, dict]:
    """Generate host and user keys under ``d`` (once), start sshd on ``address``:``port`` (default: a free
    one) with the host key ``host_key`` (``other_host_key``: a server whose key changed), write known_hosts
    files naming ``address``. ``netns``: sshd runs inside that network namespace (``ip netns exec``)."""
    for name in ("host_key", "user_key", "other_key", "other_host_key"):
        if not (d / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    port = port or free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress {address}
HostKey {d / host_key}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    os.makedirs("/run/sshd", exist_ok=True)
    inside = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen([*inside, SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    wait_for_port(port, proc, d / "sshd.log", timeout=30, host=address)
    known = address if port == 22 else f"[{address}]:{port}"   # how ssh (and paramiko) name the host
    host_pub = (d / f"{host_key}.pub").read_text().split()
    (d / "known_hosts").write_text(f"{known} {host_pub[0]} {host_pub[1]}\n")
    other_pub = (d / "other_host_key.pub").read_text().split()
    (d / "known_hosts_changed").write_text(f"{known} {other_pub[0]} {other_pub[1]}\n")
    (d / "known_hosts_empty").write_text("")
    return proc, {"port": port, "dir": d, "user": getpass.getuser(), "key": d / "user_key",
                  "known_hosts": d / "known_hosts", "pid": proc.pid}


def cut_connections(sshd_pid: int) -> int:
    """Kill (SIGKILL) the processes serving sshd's connections, as a dropped network would end them;
    the daemon keeps listening. Returns how many were killed."""
    import signal

    sessions = children(sshd_pid)
    for pid in sessions:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(sessions)
