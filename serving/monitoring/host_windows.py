"""The monitoring windows of the host's server processes, published as files and merged on read.

Each worker writes what its recorder holds under ``run/monitoring/<pid>-<start time>/`` (beside the
state file), atomically, at most once every ``PUBLISH_S`` and whenever a reader asks:

    w-<window start>.json   {version: request/row counts, histograms}   one per monitoring window
    l-<label window start>.json   {version: label histograms}           one per label window
    status.json             {"pid", "ack": the last read request it answered}

The counts are additive, so a read sums its own windows (in memory, flushed) with every other
folder's files. A reader first asks the others to publish (``ask``: a datagram with a token to each
worker's socket, in Linux's abstract namespace, named after the folder; the recorder thread waits on
that socket between its batches, so it wakes at once, flushes, publishes and acknowledges the token
in its status: no polling while nobody reads) and waits up to ``ASK_TIMEOUT_S``: every request a live worker answered
before the read is counted, and a worker that does not acknowledge in time is named in the answer
(its files are then at most PUBLISH_S old). A dead worker's folder stays until its windows expire,
so a killed worker loses at most what it recorded in its last PUBLISH_S.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from serving.contract.processes import alive, started_at
from serving.workers.state import live_workers, state_signature

log = logging.getLogger(__name__)

PUBLISH_S = 1.0
ASK_TIMEOUT_S = 2.0
ASK_POLL_S = 0.01
STATUS_FILE = "status.json"


def _atomic(path: Path, payload) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))
    os.replace(part, path)       # no fsync: these are a second's worth of counts, rewritten every second


class Peers:
    """One worker's view of the host's monitoring folder.

    Args:
        root: run/monitoring/.
        me: this worker's folder name (``<pid>-<start time>``).
        live: the folder names of the workers running now (from their records in run/workers/).
    """

    def __init__(self, root: Path, me: str, live: Callable[[], set[str]]) -> None:
        self.root, self.me, self.live = root, me, live
        self.mine = root / me
        self.mine.mkdir(parents=True, exist_ok=True)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self._address(me))
        self._socket.setblocking(False)
        self._cache: dict[Path, tuple[tuple, dict]] = {}

    # ------------------------------------------------------------ this worker's side
    def _address(self, name: str) -> bytes:
        # Abstract namespace (a leading NUL): no file, no path-length limit, gone with the process.
        digest = hashlib.sha256(f"{self.root.resolve()}/{name}".encode()).hexdigest()[:32]
        return b"\0ml-pipeline-monitoring-" + digest.encode()

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` for a reader's request to publish: the newest token, or None."""
        try:
            ready, _w, _x = select.select([self._socket], [], [], timeout)
        except (OSError, ValueError):          # closed
            return None
        token = None
        while ready:
            try:
                data = self._socket.recv(64)
            except (BlockingIOError, OSError):
                break
            try:
                token = max(token or 0, int(data))
            except ValueError:
                continue
        return token

    def close(self) -> None:
        self._socket.close()

    def publish(self, windows: dict[int, dict], labels: dict[int, dict], ack: int | None) -> None:
        """Write the windows and label windows given (start -> {version: counts}), then the status."""
        self.mine.mkdir(parents=True, exist_ok=True)
        for prefix, items in (("w", windows), ("l", labels)):
            for start, payload in items.items():
                _atomic(self.mine / f"{prefix}-{start}.json", payload)
        if ack is not None or not (self.mine / STATUS_FILE).exists():
            _atomic(self.mine / STATUS_FILE, {"pid": os.getpid(), "ack": ack or 0, "at": time.time()})

    def drop(self, window_oldest: int, label_oldest: int) -> None:
        """Delete expired files: this worker's, and those of dead workers (whose folder goes once empty)."""
        live = self.live() | {self.me}
        for folder in self._folders():
            # A worker that is starting has no record yet: its process, named by the folder, still runs.
            dead = folder.name not in live and not _running(folder.name)
            left = 0
            for path in folder.glob("[wl]-*.json"):
                start = _start(path)
                if start is not None and start < (window_oldest if path.name[0] == "w" else label_oldest):
                    path.unlink(missing_ok=True)
                else:
                    left += 1
            if dead and not left:
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------ a reader's side
    def ask(self, timeout: float | None = None) -> dict:
        """Ask the other live workers to publish now and wait (up to ``timeout``, default ASK_TIMEOUT_S) for
        their acknowledgements: merged (the workers counted), late (the pids that did not answer), waited_s."""
        timeout = ASK_TIMEOUT_S if timeout is None else timeout
        started = time.monotonic()
        token = time.time_ns()
        others = self.live() - {self.me}
        pending = set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            for name in others:
                try:
                    out.sendto(str(token).encode(), self._address(name))
                    pending.add(name)
                except OSError:     # no socket: the process is going; counted as of its last publication
                    log.info("monitoring: worker %s did not take the request to publish", name)
        late = others - pending
        while pending:
            pending = {name for name in pending if self._ack(name) < token}
            if not pending or time.monotonic() - started > timeout:
                break
            time.sleep(ASK_POLL_S)
        return {"merged": 1 + len(others), "late": sorted(int(name.split("-")[0]) for name in pending | late),
                "waited_s": round(time.monotonic() - started, 3)}

    def _ack(self, name: str) -> int:
        try:
            return int(orjson.loads((self.root / name / STATUS_FILE).read_bytes())["ack"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def read(self, prefix: str, lo: int, hi: float) -> list[tuple[int, dict]]:
        """The other folders' ``prefix`` files (w: windows, l: label windows) whose start is in [lo, hi)."""
        out = []
        seen = set()
        for folder in self._folders():
            if folder.name == self.me:
                continue
            for path in folder.glob(f"{prefix}-*.json"):
                start = _start(path)
                if start is None or not lo <= start < hi:
                    continue
                payload = self._load(path)
                if payload is not None:
                    seen.add(path)
                    out.append((start, payload))
        for path in [p for p in self._cache if p.name[0] == prefix and p not in seen]:
            del self._cache[path]
        return out

    def _load(self, path: Path) -> dict | None:
        # A window that has ended is no longer rewritten: parsed once, then served from the cache.
        signature = state_signature(path)
        if signature is None:
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            payload = orjson.loads(path.read_bytes())
        except (OSError, ValueError):
            log.warning("monitoring: %s unreadable; left out of this read", path)
            return None
        self._cache[path] = (signature, payload)
        return payload

    def _folders(self) -> list[Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return []


def _running(name: str) -> bool:
    """Whether the process a folder is named after (``<pid>-<start time>``) still runs."""
    pid, _, started = name.partition("-")
    return pid.isdigit() and alive(int(pid), started)


def _start(path: Path) -> int | None:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def host_peers(state_file: Path) -> Peers:
    """The host's monitoring folder beside ``state_file`` (run/monitoring/), seen from this process; the live
    workers are those with a record in run/workers/ (serving/workers/state.py)."""
    def live() -> set[str]:
        return {f"{r['pid']}-{r['started_at']}" for r in live_workers(state_file)}

    pid = os.getpid()
    return Peers(state_file.parent / "monitoring", f"{pid}-{started_at(pid)}", live)
