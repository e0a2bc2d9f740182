"""What one server process holds: its settings, metrics, loaded versions, scorer, recorder and events.

One ``ServerState`` per app, on ``app.state.server``; the routes take it as the ``Server`` dependency. The
lifespan (serving/api/app.py) calls ``start`` and ``stop``; everything else here is what several routes
share: running an admin change (through the host's desired state when there is one), loading a
version, the model events, and the health report.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from serving.api.errors import RETRY_AFTER_S, HTTPProblem
from serving.contract.errors import ServingError
from serving.monitoring.prometheus import Metrics
from serving.monitoring.recorder import Recorder
from serving.scoring.batcher import BatchScorer
from serving.scoring.versions import LoadedVersions
from serving.settings import ServingSettings
from serving.workers.sync import HostEvents, Sync, SyncError

log = logging.getLogger(__name__)
EVENTS_KEPT = 50


class ServerState:
    """The state of one server process (the app's, never a module's: several apps can share a process).

    ``scorer`` and ``recorder`` exist between ``start`` and ``stop``; ``sync`` only with a state file,
    when this process is one of the host's several.
    """

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.metrics_dir)
        self.versions = LoadedVersions()
        self.load_lock = asyncio.Lock()
        self.shadow_log: collections.deque[dict] = collections.deque(maxlen=settings.shadow_log_size)
        self.shadow_error: str | None = None
        self.started = time.time()
        self.events: collections.deque[dict] = collections.deque(maxlen=EVENTS_KEPT)
        self.scorer: BatchScorer | None = None
        self.recorder: Recorder | None = None
        # One of several server processes: a refused /load is the host's news, whichever worker it reached.
        self.host_events = HostEvents(settings.state_file, EVENTS_KEPT) if settings.state_file is not None else None
        # With a state file the host's server processes change what they serve through it, and follow it
        # (serving/workers/sync.py). Without one, a lone process.
        self.sync = (Sync(settings, self.versions, self.load_lock, self.warm, self.applied, self.event)
                     if settings.state_file is not None else None)
        self._watcher: asyncio.Task | None = None

    # ------------------------------------------------------------ life
    async def start(self) -> None:
        """Start the scorer and the recorder, and serve what the state file (or the settings) say."""
        self.scorer = BatchScorer(self.metrics, self.settings.scorer_batch_rows)
        if self.settings.monitoring:
            self.recorder = Recorder.for_settings(self.settings)
        if self.sync is None:
            async with self.load_lock:
                await self.load_configured()
        else:
            await self.sync.start(self.load_configured)
            self._watcher = asyncio.create_task(self.sync.watch())
        if str(Path(self.settings.model_root).resolve()) == "/":
            log.warning("SERVING_MODEL_ROOT is /: models may be loaded from anywhere")

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self.sync.forget()
        if self.scorer is not None:
            self.scorer.close()
        if self.recorder is not None:
            self.recorder.close()

    # ------------------------------------------------------------ events
    def event(self, kind: str, detail: str) -> None:
        """A model event worth a person's eye (a refused load): kept for /health and /model_info."""
        entry = {"at": round(time.time(), 3), "event": kind, "detail": detail}
        self.events.append(entry)
        if self.host_events is not None:
            try:
                self.host_events.append({**entry, "pid": os.getpid(),
                                         "generation": self.sync.generation if self.sync is not None else None})
            except OSError as exc:
                log.warning("could not record the event on the host (%s): %s", self.host_events.path, exc)
        self.metrics.model_events.labels(kind).inc()

    def recent_events(self) -> list[dict]:
        """This host's model events: every worker's when they share a state file, else this process's."""
        if self.host_events is None:
            return list(self.events)
        try:
            return self.host_events.recent()
        except OSError:
            return list(self.events)

    def load_warnings(self, recent: list[dict]) -> list[str]:
        """What a refused /load left to see: this process's last error, and a refusal on another worker of
        the host while nothing has changed since (the generation it was refused at is still served)."""
        out = [self.versions.last_error] if self.versions.last_error else []
        refused = [e for e in recent if e.get("event") == "load_failed"]
        if refused and self.sync is not None and refused[-1].get("generation") == self.sync.generation \
                and refused[-1]["detail"] not in out:
            out.append(refused[-1]["detail"])
        return out

    # ------------------------------------------------------------ what is served
    @staticmethod
    def warm(model) -> None:
        rows = [g.features for g in model.metadata.golden_examples]
        for n in (1, len(rows)):
            model.score_rows(rows[:n])

    def routing_changed(self) -> None:
        """After every change of what is served: the gauges (the state file is the Sync's)."""
        routing = self.versions.routing
        self.metrics.loaded.set(len(routing.models))
        self.metrics.set_default(routing.default)

    def applied(self, loaded: list[str]) -> None:
        """Another process's change (or the state file at start) is now served here."""
        for version in loaded:
            if self.recorder is not None and version in self.versions.routing.models:
                self.recorder.register(version, self.versions.routing.models[version].metadata)
        self.routing_changed()

    async def changed(self, apply) -> dict:
        """Run an admin change: through the host's desired state when there is one."""
        if self.sync is None:
            async with self.load_lock:
                return await apply()
        try:
            return await self.sync.change(apply)
        except SyncError as exc:
            raise HTTPProblem(503, str(exc), retry_after=RETRY_AFTER_S) from None

    async def load_now(self, model_dir: str, version: str, make_default: bool,
                       metadata_sha256: str | None = None) -> dict:
        """Load a version (the caller holds the load lock); returns /load's answer.

        Raises:
            ServingError: the version was refused (a model event says why).
        """
        store = self.versions
        before = store.routing.default
        try:
            model = await asyncio.to_thread(store.load, self.settings.model_root, model_dir, version, make_default,
                                            self.warm, metadata_sha256)
        except ServingError as exc:
            self.event("load_failed", f"load of version {version} refused: {exc}")
            raise
        if self.recorder is not None:
            self.recorder.register(version, model.metadata)
        self.metrics.model_events.labels("load").inc()
        if store.routing.default != before:
            self.metrics.model_events.labels("swap").inc()
        self.routing_changed()
        return {"status": "loaded", "version": version, "model_dir": str(model.version_dir),
                "default_version": store.routing.default, "release": model.metadata.release,
                "loaded_versions": sorted(store.routing.models, key=int)}

    async def load_configured(self) -> None:
        settings = self.settings
        if settings.model_dir and settings.model_version:
            try:
                await self.load_now(str(settings.model_dir), settings.model_version, True)
            except ServingError as exc:
                log.error("start-up load failed, serving nothing until /load succeeds: %s", exc)

    # ------------------------------------------------------------ reports
    def workers_section(self, full: bool = False) -> dict:
        """The host's server processes: what each serves, and whether they agree (one, without a state file)."""
        if self.sync is not None:
            return self.sync.report(full)
        routing = self.versions.routing
        served = {v: {"metadata_sha256": m.metadata_sha256, "files": m.metadata.files} if full else None
                  for v, m in routing.models.items()}
        me = {"pid": os.getpid(), "generation": None, "default": routing.default, "last_error": None,
              "versions": served if full else sorted(served, key=int)}
        return {"count": 1, "expected": 1, "agree": True, "generation": None, "starting": [], "differences": [],
                "workers": [me]}

    def health(self) -> tuple[dict, int]:
        """/health's answer and status. Healthy means "can serve": a default version is loaded and the scorer
        runs. What a person should still see (a refused load, a long queue) is a warning, not unhealthiness:
        a refused /load leaves the previous version serving, and no rollback would fix it."""
        routing = self.versions.routing
        depth = self.scorer.depth() if self.scorer else 0
        reasons = []
        if routing.default is None:
            reasons.append("no model loaded")
        if self.scorer is None or not self.scorer.alive:
            reasons.append("scorer thread not running")
        recent = self.recent_events()
        warnings = self.load_warnings(recent)
        if depth > self.settings.degraded_queue_depth:
            warnings.append(f"{depth} requests waiting for the model")
        if self.shadow_error:
            warnings.append(self.shadow_error)
        workers = self.workers_section()
        if workers["count"] < (workers["expected"] or 1):
            warnings.append(f"{workers['count']} of {workers['expected']} server processes serve; "
                            f"starting: {workers['starting'] or 'none listed'}")
        # Monitoring's store cannot be written (a full disk): predictions are answered, their records are lost.
        store_faults = self.recorder.write_faults.reasons() if self.recorder is not None else []
        if reasons:
            status = "unhealthy"
        elif not workers["agree"] or store_faults:
            # Every process can answer, but not all the same way, or not all is recorded: a person must look
            # (HTTP 200: it serves).
            status = "degraded"
            reasons.extend(workers["differences"] + store_faults)
        else:
            status = "healthy"
        body = {"status": status, "model_loaded": routing.default is not None, "default_version": routing.default,
                "loaded_versions": sorted(routing.models, key=int), "queue_depth": depth,
                "uptime_seconds": round(time.time() - self.started, 1), "reasons": reasons, "warnings": warnings,
                "recent_events": recent[-5:], "pid": os.getpid(), "workers": workers}
        return body, 503 if status == "unhealthy" else 200

    def require_recorder(self) -> Recorder:
        """The monitoring recorder.

        Raises:
            HTTPProblem: 503 when monitoring is off.
        """
        if self.recorder is None:
            raise HTTPProblem(503, "monitoring is off on this server (SERVING_MONITORING=false)")
        return self.recorder


def server_of(request: Request) -> ServerState:
    """The state of the app that received ``request``."""
    return request.app.state.server


async def _current_server(request: Request) -> ServerState:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a hand-off on every request
    return request.app.state.server


Server = Annotated[ServerState, Depends(_current_server)]
