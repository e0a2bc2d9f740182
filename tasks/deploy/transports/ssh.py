"""The ssh transport (paramiko): SFTP upload, checked on the host, then host commands.

- Host keys are checked against the target's ``known_hosts``; an unknown or changed key is
  refused. ``auto_add_host_key: true`` is an explicit opt-in that trusts a new key on first use,
  logs a warning and saves it to ``known_hosts`` (created 0600): from then on that key, and only
  it, is accepted.
- Key authentication only. Every operation has a hard timeout; the session sends keepalives.
- The host agent goes to ``bin/host-agent.pyz`` (a zipapp, uploaded only when the host's copy has another
  SHA-256) and every host command runs it: ``python3 bin/host-agent.pyz COMMAND …``.
- The bundle goes to ``incoming/<name>-<version>.zip.part`` with pipelined writes; an interrupted
  upload resumes from the bytes already there. The host computes the SHA-256, and only a
  match is renamed into place.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import uuid
from pathlib import Path, PurePosixPath

from serving.contract.digest import sha256_bytes
from tasks.constants import HOST_AGENT
from tasks.deploy.package import Bundle, host_agent_zip
from tasks.deploy.targets import Target
from tasks.deploy.transports.base import BytesSent, TransferReceipt, host_command, parse_host_output, wait_timeout
from tasks.errors import TransferError


def _ssh_exception() -> type[Exception]:
    import paramiko

    return paramiko.SSHException

log = logging.getLogger(__name__)
CHUNK = 1 << 16   # paramiko splits writes into 32 KiB packets anyway
KEEPALIVE_S = 15


class _WarnAndAdd:
    """paramiko policy for the explicit opt-in: trust a host's first key, say so loudly, save it.

    A host that already has a key of another type in ``known_hosts`` is refused as a changed key.
    """

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        import paramiko

        known = client.get_host_keys().lookup(hostname)
        if known:
            raise paramiko.BadHostKeyException(hostname, key, next(iter(known.values())))
        log.warning("ssh: trusting the unknown host key of %s (%s %s) because auto_add_host_key is set; "
                    "saved to %s", hostname, key.get_name(), key.get_fingerprint().hex(), self.known_hosts)
        client.get_host_keys().add(hostname, key.get_name(), key)
        client.save_host_keys(str(self.known_hosts))


def _private_file(path: Path) -> None:
    """Create ``path`` (and its directory) readable by its owner only, unless it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class SSHTransport:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.where = f"target {target.name} ({target.user}@{target.host}:{target.ssh_port})"
        self._agent_installed = False   # checked (and uploaded if it differed) once per transport

    def _connect(self):
        import paramiko

        t = self.target
        known_hosts = t.known_hosts.expanduser() if t.known_hosts is not None else None
        client = paramiko.SSHClient()
        if t.auto_add_host_key:
            if known_hosts is None:
                raise TransferError(f"{self.where}: connect: auto_add_host_key needs a known_hosts path to save "
                                    "the trusted key to; set the target's known_hosts")
            try:
                _private_file(known_hosts)
            except OSError as exc:
                raise TransferError(f"{self.where}: connect: cannot create known_hosts {known_hosts}: {exc}") \
                    from None
        if known_hosts is not None and known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        else:
            raise TransferError(f"{self.where}: connect: no known_hosts file ({t.known_hosts}); host keys are "
                                "always checked")
        client.set_missing_host_key_policy(_WarnAndAdd(known_hosts) if t.auto_add_host_key
                                           else paramiko.RejectPolicy())
        try:
            client.connect(t.host, port=t.ssh_port, username=t.user,
                           key_filename=str(t.key_file) if t.key_file else None, timeout=t.connect_timeout_s,
                           banner_timeout=t.connect_timeout_s, auth_timeout=t.connect_timeout_s,
                           allow_agent=False, look_for_keys=False)
        except paramiko.BadHostKeyException as exc:
            raise TransferError(f"{self.where}: connect: the host key CHANGED ({exc.key.get_name()}, not the key "
                                f"{known_hosts} holds for this host); refusing to connect — check the host "
                                "before updating known_hosts") from None
        except paramiko.AuthenticationException:
            raise TransferError(f"{self.where}: connect: authentication failed with key {t.key_file}") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise TransferError(f"{self.where}: connect: unknown host key (not in {t.known_hosts}); "
                                    "refusing to connect") from None
            raise TransferError(f"{self.where}: connect: {exc}") from None
        except OSError as exc:
            raise TransferError(f"{self.where}: connect: host unreachable: {exc}") from None
        client.get_transport().set_keepalive(KEEPALIVE_S)
        return client

    def _exec(self, client, command: str, step: str, timeout: float | None = None,
              stdin: str | None = None) -> tuple[str, str, int]:
        try:
            channel_in, stdout, stderr = client.exec_command(command, timeout=timeout or self.target.command_timeout_s)
            if stdin is not None:
                channel_in.write(stdin)
            channel_in.close()     # end of input: a command that reads stdin does not wait for more
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            return out, err, stdout.channel.recv_exit_status()
        except OSError as exc:
            raise TransferError(f"{self.where}: {step}: {exc}") from None
        except (EOFError, _ssh_exception()) as exc:
            raise TransferError(f"{self.where}: {step}: the connection was lost ({exc or type(exc).__name__})") \
                from None

    def _install_agent(self, client, step: str) -> None:
        """Put the host agent's zipapp at ``<base_dir>/bin/host-agent.pyz`` unless the file there already has
        its SHA-256 (checked once per transport); it goes through a part file, so a host never runs half of it.

        Raises:
            TransferError: it could not be written (names the host and step).
        """
        if self._agent_installed:
            return
        blob = host_agent_zip()
        bin_dir = PurePosixPath(str(self.target.base_dir)) / "bin"
        remote = bin_dir / HOST_AGENT
        out, _err, _code = self._exec(client, f"mkdir -p {shlex.quote(str(bin_dir))} && "
                                              f"sha256sum {shlex.quote(str(remote))} 2>/dev/null", step)
        if out.split()[:1] != [sha256_bytes(blob)]:
            part = bin_dir / f".{HOST_AGENT}.{uuid.uuid4().hex}.part"
            try:
                sftp = client.open_sftp()
                try:
                    sftp.get_channel().settimeout(self.target.command_timeout_s)
                    sftp.putfo(io.BytesIO(blob), str(part))
                    sftp.posix_rename(str(part), str(remote))
                finally:
                    sftp.close()
            except OSError as exc:
                raise TransferError(f"{self.where}: {step}: cannot install the host agent at {remote}: {exc} "
                                    "(disk full or permission denied on the host?)") from None
        self._agent_installed = True

    def _upload(self, sftp, bundle: Bundle, part: PurePosixPath, max_bytes: int | None, chunk: int) -> tuple[int, int]:
        """Append the bundle to ``part`` from the bytes already there: (the offset resumed from, bytes sent).

        Raises:
            TransferError: ``max_bytes`` were sent, or fewer bytes landed than were sent.
            OSError: the host refused a write.
        """
        size = bundle.path.stat().st_size
        try:
            offset = sftp.stat(str(part)).st_size
        except OSError:
            offset = 0
        if offset > size:
            offset = 0
        sent = 0
        progress = BytesSent("ssh", self.target, size, start=offset)
        with open(bundle.path, "rb") as src, sftp.open(str(part), "ab" if offset else "wb") as dst:
            dst.set_pipelined(True)
            src.seek(offset)
            while block := src.read(chunk):
                dst.write(block)
                sent += len(block)
                progress(len(block))
                if max_bytes is not None and sent >= max_bytes:
                    raise TransferError(f"{self.where}: transfer: stopped after {sent} bytes (max_bytes)")
        # Pipelined writes report failures late or not at all: check what actually landed.
        written = sftp.stat(str(part)).st_size
        if written != size:
            sftp.remove(str(part))
            raise TransferError(f"{self.where}: transfer: only {written} of {size} bytes were written to "
                                f"{part} — disk full or no permission on the host?")
        return offset, sent

    def put(self, bundle: Bundle, max_bytes: int | None = None, chunk: int = CHUNK) -> TransferReceipt:
        """Install the host agent, upload (resuming a partial .part), verify on the host, rename.

        ``max_bytes`` interrupts the upload after that many bytes, as a dropped connection would.
        """
        incoming = PurePosixPath(str(self.target.base_dir)) / "incoming"
        final = incoming / bundle.path.name
        part = incoming / (bundle.path.name + ".part")
        client = self._connect()
        try:
            out, err, code = self._exec(client, f"mkdir -p {shlex.quote(str(incoming))}", "transfer")
            if code != 0:
                raise TransferError(f"{self.where}: transfer: cannot create {incoming}: {err.strip()}")
            self._install_agent(client, "transfer")
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.target.command_timeout_s)
            try:
                offset, sent = self._upload(sftp, bundle, part, max_bytes, chunk)
            except OSError as exc:
                raise TransferError(f"{self.where}: transfer: {exc} (disk full or permission denied on the host?)") \
                    from None
            out, err, code = self._exec(client, f"sha256sum {shlex.quote(str(part))}", "checksum")
            digest = out.split()[0] if out else ""
            if digest != bundle.sha256:
                self._exec(client, f"rm -f {shlex.quote(str(part))}", "checksum")
                raise TransferError(f"{self.where}: checksum: the uploaded bundle hashes to {digest[:12] or '?'}…, "
                                    f"expected {bundle.sha256[:12]}…")
            try:
                sftp.posix_rename(str(part), str(final))
            finally:
                sftp.close()
        except (EOFError, _ssh_exception()) as exc:
            # A dropped connection (network, a restarted sshd): what arrived stays in the .part file.
            raise TransferError(f"{self.where}: transfer: the connection was lost ({exc or type(exc).__name__}); "
                                "the next attempt resumes from what arrived") from None
        finally:
            client.close()
        log.info("%s: %s uploaded (%d bytes resumed from offset %d)", self.where, final, sent, offset)
        return TransferReceipt(self.target.name, str(final), bundle.sha256, bundle.path.stat().st_size,
                               resumed_from=offset)

    def host(self, *args: str, stdin: str | None = None) -> dict:
        script = str(PurePosixPath(str(self.target.base_dir)) / "bin" / HOST_AGENT)
        runner = self.target.python or "python3"
        command = " ".join(shlex.quote(a) for a in host_command(self.target, script, runner, self.target.python,
                                                                 *args))
        client = self._connect()
        try:
            self._install_agent(client, args[0])
            out, err, _code = self._exec(client, command, args[0], stdin=stdin,
                                         timeout=wait_timeout(self.target, args[0], self.target.command_timeout_s))
        finally:
            client.close()
        return parse_host_output(self.target, args[0], out, err)
