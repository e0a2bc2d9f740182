"""Several server processes on one host that serve the same thing: the files they agree through.

The host's desired state is ``SERVING_STATE_FILE`` (run/serving-state.json): the versions, default,
previous default, split and shadow, with a ``generation`` that grows by one at every admin change.
It is rewritten atomically (a reader sees the old file or the new one) and only under an exclusive
lock on ``<state file>.lock``, so two workers' changes cannot interleave: the second one starts from
what the first wrote.

Each worker writes what it actually serves to ``workers/<pid>.json`` beside the state file: the
generation it applied, the default, the versions with their metadata and file hashes, and its last
error. A file whose process is gone (or whose pid now names another process) is ignored and pruned.
``report`` compares the workers with the desired state: that is what /health and /model_info show.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import orjson

from serving.contract.errors import ServingError
from serving.contract.files import LockBusy, atomic_write, locked
from serving.contract.processes import alive, children, started_at

WORKERS_DIR = "workers"


class StateLockTimeout(ServingError):
    """Another worker held the desired state's lock for longer than allowed."""


def write_json(path: Path, payload: dict) -> None:
    """Write ``path`` as indented JSON, atomically and durably: a reader sees the old file or the new one."""
    atomic_write(path, orjson.dumps(payload, option=orjson.OPT_INDENT_2))


def read_state(path: Path) -> dict | None:
    """The desired state, or None without a file.

    Raises:
        ValueError: the file is not a JSON object.
        OSError: it cannot be read.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    state = orjson.loads(raw)
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    return state


def generation_of(state: dict | None) -> int:
    value = (state or {}).get("generation")
    return value if isinstance(value, int) else 0


def state_signature(path: Path) -> tuple | None:
    """What changes whenever the state file is replaced (a stat, no read): the watcher's cheap test."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class StateLock:
    """The exclusive lock over the desired state (``flock`` on ``<state file>.lock``), taken with a bound."""

    def __init__(self, state_file: Path, timeout: float) -> None:
        self.path = state_file.with_name(state_file.name + ".lock")
        self.timeout = timeout
        self._held: contextlib.ExitStack | None = None

    def acquire(self) -> None:
        """Raises: StateLockTimeout: not free within ``timeout`` seconds."""
        held = contextlib.ExitStack()
        try:
            held.enter_context(locked(self.path, self.timeout))
        except LockBusy:
            raise StateLockTimeout(f"{self.path}: another server process held the desired state's lock "
                                   f"for more than {self.timeout:g} s; retry") from None
        self._held = held

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            held.close()

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------ what each worker serves
def workers_dir(state_file: Path) -> Path:
    return state_file.parent / WORKERS_DIR


def served_view(entry: dict) -> dict:
    """The part of a state (desired, or a worker's) that decides what a request gets: compared between them."""
    versions = entry.get("models") or {}
    return {"default": entry.get("default"), "shadow": entry.get("shadow"), "weights": entry.get("weights") or {},
            "versions": {v: (m or {}).get("metadata_sha256") for v, m in versions.items()}}


def write_worker_record(state_file: Path, record: dict) -> Path:
    """Write this worker's record of what it serves (``workers/<pid>.json``) atomically."""
    path = workers_dir(state_file) / f"{record['pid']}.json"
    write_json(path, record)
    return path


def worker_record(snapshot: dict, files: dict[str, dict], generation: int | None, failed_generation: int | None,
                  error: str | None) -> dict:
    """What this process serves, for ``write_worker_record``: ``snapshot`` is ``LoadedVersions.snapshot()``,
    ``files`` each version's file hashes."""
    pid = os.getpid()
    models = {v: {**m, "files": files.get(v, {})} for v, m in (snapshot.get("models") or {}).items()}
    return {"pid": pid, "started_at": started_at(pid), "generation": generation,
            "failed_generation": failed_generation, "last_error": error, "updated_at": round(time.time(), 3),
            "default": snapshot.get("default"), "previous": snapshot.get("previous"),
            "shadow": snapshot.get("shadow"), "weights": snapshot.get("weights") or {}, "models": models}


def live_workers(state_file: Path, prune: bool = False) -> list[dict]:
    """The records of running workers, by pid; records of dead (or reused) pids are skipped,
    and deleted with ``prune``."""
    folder = workers_dir(state_file)
    try:
        entries = list(folder.glob("*.json"))
    except OSError:
        return []
    out = []
    for path in entries:
        try:
            record = orjson.loads(path.read_bytes())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue                      # being replaced, or not ours
        if alive(pid, record.get("started_at")):
            out.append(record)
        elif prune:
            path.unlink(missing_ok=True)
    return sorted(out, key=lambda r: r["pid"])


def siblings(master_pid: int | None) -> list[int]:
    """The worker processes of our gunicorn master (its children), or [] when not under one."""
    if not master_pid or os.getppid() != master_pid:
        return []
    return children(master_pid)


def _describe(view: dict) -> str:
    ordered = sorted(view["versions"].items(), key=lambda kv: int(kv[0]))
    versions = ", ".join(f"{v} (metadata {(h or '?')[:12]})" for v, h in ordered)
    text = f"default {view['default']}, versions [{versions}]"
    if view["weights"]:
        text += f", split {view['weights']}"
    if view["shadow"]:
        text += f", shadow {view['shadow']}"
    return text


def report(desired: dict | None, workers: list[dict], starting: list[int] = (), expected: int | None = None,
           full: bool = False) -> dict:
    """Whether the workers serve the desired state, for /health and /model_info.

    ``agree`` is true when every live worker serves what the desired state says (or, without a
    readable desired state, what the others serve). ``differences`` names each worker that does
    not, what it serves, what it should, and its last error.
    """
    reference = served_view(desired) if desired else (served_view(workers[0]) if workers else None)
    differences = []
    for w in workers:
        view = served_view(w)
        if reference is not None and view != reference:
            line = (f"worker pid {w['pid']} serves {_describe(view)} (generation {w.get('generation')}); "
                    f"the host's desired state (generation {generation_of(desired) or '?'}) is {_describe(reference)}")
            if w.get("last_error"):
                line += f"; its last error: {w['last_error']}"
            differences.append(line)
    listed = []
    for w in workers:
        entry = {"pid": w["pid"], "generation": w.get("generation"), "default": w.get("default"),
                 "last_error": w.get("last_error")}
        if full:
            entry["versions"] = {v: {"metadata_sha256": m.get("metadata_sha256"), "files": m.get("files", {})}
                                 for v, m in (w.get("models") or {}).items()}
            entry |= {"shadow": w.get("shadow"), "weights": w.get("weights") or {}}
        else:
            entry["versions"] = sorted(w.get("models") or {}, key=int)
        listed.append(entry)
    known = {w["pid"] for w in workers}
    return {"count": len(workers), "expected": expected, "agree": not differences,
            "generation": generation_of(desired) if desired else None,
            "starting": [p for p in starting if p not in known], "differences": differences, "workers": listed}


EVENTS_FILE_SUFFIX = ".events"   # run/serving-state.json.events: the host's model events, one JSON per line
EVENTS_TRIM_BYTES = 256 << 10    # past this the file is cut back to its newest ``kept`` events


class HostEvents:
    """The model events worth a person's eye (a refused load), host-wide: whichever worker a /load
    reached, /health and /model_info on every worker show it. Appended under an exclusive lock on the
    file itself, and cut back in place to the newest ``kept`` once it grows past EVENTS_TRIM_BYTES."""

    def __init__(self, state_file: Path, kept: int) -> None:
        self.path = state_file.with_name(state_file.name + EVENTS_FILE_SUFFIX)
        self.kept = kept

    def append(self, event: dict) -> None:
        with locked(self.path), open(self.path, "ab") as fh:    # the lock is the file's own: see the class
            fh.write(orjson.dumps(event) + b"\n")
            fh.flush()
            if fh.tell() > EVENTS_TRIM_BYTES:   # cut back in place: every appender locks this same file
                kept = self.path.read_bytes().splitlines()[-self.kept:]
                fh.truncate(0)
                fh.write(b"\n".join(kept) + b"\n")
                fh.flush()

    def recent(self) -> list[dict]:
        """The newest ``kept`` events, oldest first (a line torn by a crash is skipped)."""
        try:
            lines = self.path.read_bytes().splitlines()[-self.kept:]
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out
