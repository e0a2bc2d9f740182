"""One server process among several on a host: apply admin changes through the desired state, follow it.

The process that receives an admin change (``/load``, ``/default``, ``/split``, ``/unload``) takes the
desired state's lock, first catches up with the desired state if it is behind, validates and applies
the change, writes the next generation, and writes its record of what it serves; then it waits (bounded) until
the other workers have applied that generation and says which did. Every process watches the state
file (a stat every ``WATCH_INTERVAL_S``) and, when the generation changes, serves exactly what it
says (``LoadedVersions.converge``: all or nothing; a version that fails its checks leaves what it served
in place, and the failure is written to its record and retried). serving/workers/state.py holds the files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from serving.contract.errors import ServingError
from serving.scoring.versions import LoadedVersions
from serving.settings import ServingSettings
from serving.workers.state import (
    HostEvents,
    StateLock,
    StateLockTimeout,
    generation_of,
    live_workers,
    read_state,
    report,
    siblings,
    state_signature,
    worker_record,
    workers_dir,
    write_json,
    write_worker_record,
)

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.1     # a stat of the state file: cheap enough to do ten times a second
RETRY_FAILED_S = 10        # a generation this process could not apply is tried again after this
PRUNE_EVERY_S = 5          # records of dead workers are deleted this often
WAIT_POLL_S = 0.02
WAIT_MARGIN_S = 5          # the admin answer waits for the others: 3x its own apply time, plus this


__all__ = ["HostEvents", "Sync", "SyncError"]   # the workers' face to the API (HostEvents: the host's events)


class SyncError(ServingError):
    """This process could not bring itself to the host's desired state before applying a change."""


class Sync:
    """The desired state seen from one server process."""

    def __init__(self, settings: ServingSettings, store: LoadedVersions, load_lock: asyncio.Lock, warm,
                 applied: Callable[[list[str]], None], event: Callable[[str, str], None]) -> None:
        assert settings.state_file is not None
        self.settings, self.store, self.load_lock, self.warm = settings, store, load_lock, warm
        self.path = settings.state_file
        self.applied, self.event = applied, event
        self.generation: int | None = None          # the generation this process serves
        self.failed_generation: int | None = None   # one it could not apply (what it serves is older)
        self.error: str | None = None
        self._signature = None
        self._retry_at = 0.0

    # ------------------------------------------------------------ files
    def _record(self) -> dict:
        files = {v: m.metadata.files for v, m in self.store.routing.models.items()}
        return worker_record(self.store.snapshot(), files, self.generation, self.failed_generation, self.error)

    def write_my_record(self) -> None:
        """Write what this process serves for the other workers (``workers/<pid>.json``); a failure is an event."""
        try:
            write_worker_record(self.path, self._record())
        except OSError as exc:
            self.event("state_not_saved", f"{workers_dir(self.path)}: {exc}; other workers cannot see this one")

    def _write_desired(self, generation: int) -> None:
        write_json(self.path, {**self.store.snapshot(), "generation": generation, "written_by": os.getpid(),
                               "written_at": round(time.time(), 6)})
        self._signature = state_signature(self.path)
        self.generation, self.failed_generation, self.error = generation, None, None

    def _read(self) -> dict | None:
        try:
            return read_state(self.path)
        except (OSError, ValueError) as exc:
            self.event("state_unreadable", f"{self.path}: unreadable ({exc})")
            return None

    def forget(self) -> None:
        """This process ends: its record goes (a record of a dead pid is ignored anyway)."""
        (workers_dir(self.path) / f"{os.getpid()}.json").unlink(missing_ok=True)

    # ------------------------------------------------------------ start
    async def start(self, load_configured: Callable[[], Awaitable[None]]) -> None:
        """Serve the desired state; without one (or as the only live worker after its loss), the configured
        version, written as the desired state. The first worker of a fresh server decides, under the lock."""
        lock = StateLock(self.path, self.settings.converge_timeout_s)
        await asyncio.to_thread(lock.acquire)
        try:
            try:
                desired = read_state(self.path)
            except (OSError, ValueError) as exc:
                self.event("restore_failed", f"{self.path}: unreadable ({exc}); starting from the configured version")
                desired = None
            others = [w for w in live_workers(self.path, prune=True) if w["pid"] != os.getpid()]
            if desired is None or not others:
                async with self.load_lock:
                    generation = generation_of(desired)
                    if desired is not None:
                        problems = await self._restore(desired)
                        if self.store.routing.default is None:
                            await load_configured()
                    else:
                        problems = ["no desired state"]
                        await load_configured()
                    if problems:        # what is served now is the host's desired state
                        self._write_desired(generation + 1)
                    else:
                        self.generation = generation
                        self._signature = state_signature(self.path)
                    self.write_my_record()
                return
        finally:
            lock.release()
        # Other workers serve the desired state: follow it, and never rewrite it from here.
        async with self.load_lock:
            self._signature = state_signature(self.path)
            problems = await self._restore(desired)
            generation = generation_of(desired)
            if problems:
                self.failed_generation, self._retry_at = generation, time.monotonic() + RETRY_FAILED_S
                self.error = f"generation {generation} served in part: " + "; ".join(problems)
            else:
                self.generation = generation
            self.write_my_record()
        await self.check()       # a change written while this process loaded

    async def _restore(self, desired: dict) -> list[str]:
        problems = await asyncio.to_thread(self.store.restore, self.settings.model_root, desired, self.warm)
        for problem in problems:
            self.event("restore_failed", problem)
        self.applied(sorted(self.store.routing.models, key=int))
        log.info("restored from %s: default %s, loaded %s%s", self.path, self.store.routing.default,
                 sorted(self.store.routing.models, key=int), f" ({len(problems)} problem(s))" if problems else "")
        return problems

    # ------------------------------------------------------------ follow
    async def watch(self) -> None:
        """The background watcher: follow the desired state until cancelled."""
        prune_at = 0.0
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self.check()
                if time.monotonic() >= prune_at:
                    prune_at = time.monotonic() + PRUNE_EVERY_S
                    await asyncio.to_thread(live_workers, self.path, True)
            except Exception:      # the watcher must outlive any one bad round
                log.exception("following %s failed", self.path)

    async def check(self) -> None:
        """Apply the desired state if its generation is not the one served (and not a failed one, until its retry)."""
        signature = state_signature(self.path)
        retry = self.failed_generation is not None and time.monotonic() >= self._retry_at
        if signature == self._signature and not retry:
            return
        async with self.load_lock:
            signature = state_signature(self.path)
            desired = self._read()
            self._signature = signature
            if desired is None:
                return
            generation = generation_of(desired)
            if generation == self.generation:
                return
            if generation == self.failed_generation and time.monotonic() < self._retry_at:
                return
            await self._apply(desired, generation)

    async def _apply(self, desired: dict, generation: int) -> bool:
        """Serve ``desired`` (under the load lock); False: it failed, the failure is in this worker's record."""
        started = time.monotonic()
        try:
            loaded = await asyncio.to_thread(self.store.converge, self.settings.model_root, desired, self.warm)
        except ServingError as exc:
            self.failed_generation, self._retry_at = generation, time.monotonic() + RETRY_FAILED_S
            self.error = f"generation {generation}: {exc}"
            self.event("sync_failed", self.error)
            self.write_my_record()
            return False
        self.generation, self.failed_generation, self.error = generation, None, None
        self.applied(loaded)
        self.write_my_record()
        log.info("applied generation %s of %s in %.3f s: default %s, loaded %s", generation, self.path,
                 time.monotonic() - started, self.store.routing.default, sorted(self.store.routing.models, key=int))
        return True

    # ------------------------------------------------------------ change
    async def change(self, apply: Callable[[], Awaitable[dict]]) -> dict:
        """Run an admin change as the next generation of the desired state, then wait for the other workers.

        Returns:
            ``apply``'s answer, with ``workers``: the generation, which workers converged and which not.

        Raises:
            SyncError: this process could not catch up with the desired state first, or another process held
                the desired state's lock for too long (nothing changed either way).
        """
        async with self.load_lock:
            lock = StateLock(self.path, self.settings.converge_timeout_s)
            try:
                await asyncio.to_thread(lock.acquire)
            except StateLockTimeout as exc:
                raise SyncError(str(exc)) from None
            try:
                desired = self._read()
                generation = generation_of(desired)
                if desired is not None and generation != self.generation and not await self._apply(desired, generation):
                    raise SyncError(f"server process {os.getpid()} could not first serve the host's desired state: "
                                    f"{self.error}; nothing changed")
                started = time.monotonic()
                body = await apply()
                took = time.monotonic() - started
                self._write_desired(generation + 1)
                self.write_my_record()
            finally:
                lock.release()
        bound = min(self.settings.converge_timeout_s, WAIT_MARGIN_S + 3 * took)
        return {**body, "workers": await self.wait_for(generation + 1, bound)}

    async def wait_for(self, generation: int, bound: float) -> dict:
        """Wait up to ``bound`` seconds until every live worker applied ``generation`` (or failed to)."""
        started = time.monotonic()
        me = os.getpid()
        while True:
            live = await asyncio.to_thread(live_workers, self.path)
            done = [w for w in live if isinstance(w.get("generation"), int) and w["generation"] >= generation]
            failed = [w for w in live if w not in done and (w.get("failed_generation") or 0) >= generation]
            pending = [w for w in live if w not in done and w not in failed]
            if not pending or time.monotonic() - started > bound:
                break
            await asyncio.sleep(WAIT_POLL_S)
        waited = time.monotonic() - started
        behind = [{"pid": w["pid"], "generation": w.get("generation"), "error": w.get("last_error")} for w in failed]
        behind += [{"pid": w["pid"], "generation": w.get("generation"),
                    "error": f"had not applied generation {generation} after {waited:.1f} s"} for w in pending]
        starting = [p for p in siblings(self.settings.master_pid) if p not in {w["pid"] for w in live}]
        return {"generation": generation, "all_converged": not behind,
                "converged": sorted({w["pid"] for w in done} | {me}), "not_converged": behind,
                "starting": starting, "waited_s": round(waited, 3)}

    # ------------------------------------------------------------ report
    def report(self, full: bool = False) -> dict:
        """/health's and /model_info's worker section (reads the files: the other processes' own words)."""
        workers = live_workers(self.path)
        if os.getpid() not in {w["pid"] for w in workers}:
            workers = sorted([*workers, self._record()], key=lambda w: w["pid"])
        try:
            desired = read_state(self.path)
        except (OSError, ValueError):
            desired = None
        return report(desired, workers, siblings(self.settings.master_pid), self.settings.workers, full)
