"""The team setup's servers, for real, on 127.0.0.1: PostgreSQL from the Debian packages, the Prefect
server and the MLflow tracking server on it. Every wait is bounded; every process is stopped by its id."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from testkit.net import free_port, wait_for_port

BIN = Path(sys.executable).parent


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding a server (what Debian's ``postgresql`` installs)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    """A throwaway cluster: the superuser ``postgres`` over a Unix socket (trust, local only), an
    application role ``pipeline`` over TCP with a password (scram-sha-256)."""

    bindir: Path
    root: Path
    port: int
    user: str = "pipeline"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, driver: str, database: str) -> str:
        return f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *cmd: str, timeout: float = 90) -> subprocess.CompletedProcess:
        # initdb and postgres refuse to run as root: run them as the `postgres` system user Debian creates.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return _run([*prefix, *cmd], cwd=self.root, timeout=timeout)

    def start(self) -> None:
        self.socket_dir.mkdir()
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(secrets.token_urlsafe(18) + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._as_owner(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                       "--no-sync")
        pwfile.unlink()
        self._as_owner(str(self.bindir / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-w",
                       "-t", "60", "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} "
                       f"-c unix_socket_directories={self.socket_dir} -c fsync=off -c full_page_writes=off")
        self.sql("postgres", f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        for db in ("prefect", "mlflow"):
            self.sql("postgres", f"CREATE DATABASE {db} OWNER {self.user}")
        # Prefect needs pg_trgm; a DBA enables it once (trusted since PostgreSQL 13, created here as superuser).
        self.sql("prefect", "CREATE EXTENSION IF NOT EXISTS pg_trgm")

    def sql(self, database: str, statement: str) -> str:
        """Run one statement as the superuser through the Unix socket; the result unaligned, no headers."""
        return _run([str(self.bindir / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
                     "-d", database, "-v", "ON_ERROR_STOP=1", "-X", "-tA", "-c", statement], timeout=30).stdout.strip()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._as_owner(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w",
                               "-t", "30", timeout=45)
            except (RuntimeError, subprocess.TimeoutExpired):
                self._as_owner(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate",
                               "-w", "-t", "15", timeout=30)


def start_postgres() -> Postgres:
    bindir = postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres); "
                                "`make test` installs it (make system-deps: Debian package postgresql)")
    # Not under pytest's tmp dir: that is 0700 root and the `postgres` user could not reach its data dir.
    root = Path(tempfile.mkdtemp(prefix="team-pg-"))
    pg = Postgres(bindir=bindir, root=root, port=free_port())
    try:
        pg.start()
    except BaseException:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return pg


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if proc.returncode != 0:
        prog = Path(cmd[4] if cmd[0] == "runuser" else cmd[0]).name   # not the arguments: they may hold a password
        raise RuntimeError(f"{prog} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Server:
    """A server process in its own process group (its workers go down with it), logging to a file."""

    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wait_for_port(self.port, self.proc, self.log, timeout=timeout)
        last = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(self.url + path, timeout=5)
                if last.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        raise RuntimeError(f"{self.name}: {path} not healthy after {timeout}s (last: {last!r}, "
                           f"exit {self.proc.poll()}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc, signal.SIGKILL)  # whatever of the group is left (uvicorn workers)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)   # the group this Popen started (start_new_session), nothing else
    except ProcessLookupError:
        pass


def spawn(name: str, cmd: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Server(name, proc, port, log)


# What the guides export before `prefect server start` (docs/how-to/team-setup.md): the server's telemetry
# service off, so no heartbeat competes for the database at start and nothing calls Prefect's host.
QUIET_SERVER = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect, S3, MLflow or proxy settings, plus ``extra``."""
    proxies = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "AWS_", "MLFLOW_")) and k.upper() not in proxies}
    return {**env, **extra}


def start_prefect_server(pg: Postgres, home: Path) -> Server:
    """``prefect server start`` with its database on PostgreSQL; PREFECT_HOME is ``home``, never ~/.prefect."""
    port = free_port()
    env = clean_env(PREFECT_HOME=str(home), PREFECT_API_DATABASE_CONNECTION_URL=pg.url("asyncpg", "prefect"),
                    **QUIET_SERVER)
    home.mkdir(parents=True, exist_ok=True)
    return spawn("prefect server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port)], env, port, home / "server.log")


def start_sqlite_prefect_server(home: Path, env: dict[str, str]) -> Server:
    """``prefect server start`` as the one-machine setup writes it (no options; SQLite under PREFECT_HOME =
    ``home``), on 127.0.0.1 and a free port through PREFECT_SERVER_API_HOST/PORT; ``env`` is the whole
    environment apart from those three."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port)}
    return spawn("prefect server", [str(BIN / "prefect"), "server", "start"], env, port, home / "server.log")


def start_mlflow_server(pg: Postgres, artifacts_destination: str, s3_env: dict[str, str], workdir: Path) -> Server:
    """``mlflow server`` on PostgreSQL, proxying artifacts to S3. The store URI (with its password) goes in
    through the environment (MLFLOW_BACKEND_STORE_URI is the --backend-store-uri option), not the command line."""
    port = free_port()
    env = clean_env(**s3_env, MLFLOW_BACKEND_STORE_URI=pg.url("psycopg2", "mlflow"),
                    # the server-side job runner (GenAI scorers, trace rollups: six huey processes) is not used here
                    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    workdir.mkdir(parents=True, exist_ok=True)
    return spawn("mlflow server", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                                   "--artifacts-destination", artifacts_destination, "--workers", "1"],
                 env, port, workdir / "server.log")
