"""The model server: the handover guide's API (/load, /health, /model_info, /predict) and more.

Start it with ``uvicorn serving.api.app:app --host 0.0.0.0 --port 8000`` (configured by
SERVING_* environment variables, see serving/settings.py) or ``python -m serving``.
The hot path keeps pandas and pydantic away: bytes → orjson → numpy columns →
one batched SavedModel call → orjson bytes.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import math
import os
import re
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from serving.api.encoding import predictions_json
from serving.api.openapi import feedback_extra, labelled_extra, predict_extra, split_extra
from serving.contract.errors import ServingError
from serving.contract.inputs import read_json_rows
from serving.contract.model import import_tensorflow
from serving.monitoring.dashboard import PAGE, summary
from serving.monitoring.prometheus import Metrics
from serving.monitoring.recorder import LABELLED_MAX_ROWS, Recorder
from serving.scoring.batcher import BatchScorer
from serving.scoring.versions import Conflict, LoadedVersions, LoadRefused, NotLoaded
from serving.settings import ServingSettings, settings_from_env, threads_per_worker
from serving.workers.sync import HostEvents, Sync, SyncError

log = logging.getLogger("serving")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SHADOW_ROWS_OBSERVED = 100
# Requests carrying this header (the smoke test, the monitor's probe) are counted apart from user
# traffic: they never enter the request, error, latency or prediction series.
PROBE_HEADER = "x-pipeline-probe"
EVENTS_KEPT = 50
RETRY_AFTER_S = 5
CLIENT_CLOSED = 499    # nginx's status for a request whose client hung up before the answer
JSON_KINDS = {dict: "an object", list: "an array", bool: "true or false"}
MAX_WEIGHT = 1e6       # split weights are relative; larger ones are typos (or 1e308, which routes by overflow)


class HTTPProblem(Exception):
    def __init__(self, status: int, detail: str, **extra) -> None:
        self.status, self.detail, self.extra = status, detail, extra


def _json(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


def configure_threads(settings: ServingSettings) -> None:
    tf = import_tensorflow()

    try:
        # Several server processes share the CPUs: each gets its part, so they do not oversubscribe.
        tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads
                                                             or threads_per_worker(settings.workers))
        tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads or 1)
    except RuntimeError:
        log.info("TensorFlow already initialised; thread settings unchanged")


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or settings_from_env()
    metrics = Metrics(settings.metrics_dir)
    store = LoadedVersions()
    load_lock = asyncio.Lock()
    shadow_log: collections.deque = collections.deque(maxlen=settings.shadow_log_size)
    started = time.time()
    state: dict = {"scorer": None, "recorder": None}
    events: collections.deque = collections.deque(maxlen=EVENTS_KEPT)

    # One of several server processes: a refused /load is the host's news, whichever worker it reached.
    host_events = HostEvents(settings.state_file, EVENTS_KEPT) if settings.state_file is not None else None

    def event(kind: str, detail: str) -> None:
        """A model event worth a person's eye (a refused load): kept for /health and /model_info."""
        entry = {"at": round(time.time(), 3), "event": kind, "detail": detail}
        events.append(entry)
        if host_events is not None:
            try:
                host_events.append({**entry, "pid": os.getpid(),
                                    "generation": sync.generation if sync is not None else None})
            except OSError as exc:
                log.warning("could not record the event on the host (%s): %s", host_events.path, exc)
        metrics.model_events.labels(kind).inc()

    def recent_events() -> list[dict]:
        """This host's model events: every worker's when they share a state file, else this process's."""
        if host_events is None:
            return list(events)
        try:
            return host_events.recent()
        except OSError:
            return list(events)

    def load_warnings(recent: list[dict]) -> list[str]:
        """What a refused /load left to see: this process's last error, and a refusal on another worker of
        the host while nothing has changed since (the generation it was refused at is still served)."""
        out = [store.last_error] if store.last_error else []
        refused = [e for e in recent if e.get("event") == "load_failed"]
        if refused and sync is not None and refused[-1].get("generation") == sync.generation \
                and refused[-1]["detail"] not in out:
            out.append(refused[-1]["detail"])
        return out

    def warm(model) -> None:
        rows = [g.features for g in model.metadata.golden_examples]
        for n in (1, len(rows)):
            model.score_rows(rows[:n])

    def routing_changed() -> None:
        """After every change of what is served: the gauges (the state file is the Sync's)."""
        routing = store.routing
        metrics.loaded.set(len(routing.models))
        metrics.set_default(routing.default)

    def applied(loaded: list[str]) -> None:
        """Another process's change (or the state file at start) is now served here."""
        for version in loaded:
            if state["recorder"] is not None and version in store.routing.models:
                state["recorder"].register(version, store.routing.models[version].metadata)
        routing_changed()

    # With a state file this is one of the host's server processes: they change what they serve
    # through it, and follow it (serving/workers/sync.py). Without one, a lone process.
    sync = Sync(settings, store, load_lock, warm, applied, event) if settings.state_file is not None else None

    async def changed(apply) -> dict:
        """Run an admin change: through the host's desired state when there is one."""
        if sync is None:
            async with load_lock:
                return await apply()
        try:
            return await sync.change(apply)
        except SyncError as exc:
            raise HTTPProblem(503, str(exc), retry_after=RETRY_AFTER_S) from None

    async def load_now(model_dir: str, version: str, make_default: bool, metadata_sha256: str | None = None) -> dict:
        """Load a version (the caller holds the load lock)."""
        before = store.routing.default
        try:
            model = await asyncio.to_thread(store.load, settings.model_root, model_dir, version, make_default,
                                            warm, metadata_sha256)
        except ServingError as exc:
            event("load_failed", f"load of version {version} refused: {exc}")
            raise
        if state["recorder"] is not None:
            state["recorder"].register(version, model.metadata)
        metrics.model_events.labels("load").inc()
        if store.routing.default != before:
            metrics.model_events.labels("swap").inc()
        routing_changed()
        return {"status": "loaded", "version": version, "model_dir": str(model.version_dir),
                "default_version": store.routing.default, "release": model.metadata.release,
                "loaded_versions": sorted(store.routing.models, key=int)}

    async def load_configured() -> None:
        if settings.model_dir and settings.model_version:
            try:
                await load_now(str(settings.model_dir), settings.model_version, True)
            except ServingError as exc:
                log.error("start-up load failed, serving nothing until /load succeeds: %s", exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(configure_threads, settings)
        state["scorer"] = BatchScorer(metrics, settings.scorer_batch_rows)
        if settings.monitoring:
            state["recorder"] = Recorder.for_settings(settings)
        watcher = None
        if sync is None:
            async with load_lock:
                await load_configured()
        else:
            await sync.start(load_configured)
            watcher = asyncio.create_task(sync.watch())
        if str(Path(settings.model_root).resolve()) == "/":
            log.warning("SERVING_MODEL_ROOT is /: models may be loaded from anywhere")
        yield
        if watcher is not None:
            watcher.cancel()
            sync.forget()
        state["scorer"].close()
        if state["recorder"] is not None:
            state["recorder"].close()

    app = FastAPI(title="Tabular model server", version="1.0", lifespan=lifespan)
    app.state.store = store
    app.state.metrics = metrics
    app.state.settings = settings

    @app.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem):
        return _json({"detail": exc.detail, **exc.extra}, exc.status)

    def authorize(request: Request, admin: bool, token: str | None = None) -> None:
        if not admin and not settings.protect_reads:
            return
        token = token or settings.admin_token
        if not token:
            raise HTTPProblem(401, "admin endpoints are disabled: the server has no SERVING_ADMIN_TOKEN")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPProblem(401, "missing or wrong bearer token")

    def record(request: Request, endpoint: str, status: int, version: str, start: float,
               rejected: tuple[str, ...] = ()) -> None:
        if PROBE_HEADER in request.headers:
            metrics.probe_requests.labels(endpoint, str(status)).inc()
            return
        seconds = time.perf_counter() - start
        metrics.requests.labels(endpoint, str(status), version).inc()
        metrics.latency.labels(endpoint).observe(seconds)
        if endpoint == "predict" and status != 200 and state["recorder"] is not None:
            state["recorder"].request(version, status, seconds, rejected)   # answered ones come with their rows

    async def read_body(request: Request) -> bytes:
        """The request body, refused with 413 once it passes SERVING_MAX_BODY_BYTES (before it is all read)."""
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPProblem(413, f"body of {declared} bytes; at most {limit} (SERVING_MAX_BODY_BYTES)")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPProblem(413, f"body over {limit} bytes (SERVING_MAX_BODY_BYTES)")
                chunks.append(chunk)
        except ClientDisconnect:
            # Nobody is left to answer; counted as nginx's 499, never logged as a server error.
            raise HTTPProblem(CLIENT_CLOSED, "the client closed the connection before the body was sent") from None
        return b"".join(chunks)

    # ------------------------------------------------------------ admin
    def admin_errors(exc: ServingError) -> HTTPProblem:
        status = {LoadRefused: 400, NotLoaded: 404, Conflict: 409}.get(type(exc), 422)
        return HTTPProblem(status, str(exc))

    def workers_section(full: bool = False) -> dict:
        """The host's server processes: what each serves, and whether they agree (one, without a state file)."""
        if sync is not None:
            return sync.report(full)
        served = {v: {"metadata_sha256": m.metadata_sha256, "files": m.metadata.files} if full else None
                  for v, m in store.routing.models.items()}
        me = {"pid": os.getpid(), "generation": None, "default": store.routing.default, "last_error": None,
              "versions": served if full else sorted(served, key=int)}
        return {"count": 1, "expected": 1, "agree": True, "generation": None, "starting": [], "differences": [],
                "workers": [me]}

    @app.post("/load")
    async def load(request: Request, model_dir: str, version: str, default: bool = True,
                   metadata_sha256: str | None = None):
        start = time.perf_counter()
        authorize(request, admin=True)
        async def apply() -> dict:
            try:
                return await load_now(model_dir, version, default, metadata_sha256)
            except ServingError as exc:
                raise admin_errors(exc) from None

        try:
            body = await changed(apply)
        except HTTPProblem as problem:
            record(request, "load", problem.status, version, start)
            raise
        record(request, "load", 200, version, start)
        return _json(body)

    async def apply_admin(change, event: str, answer) -> dict:
        async def apply() -> dict:
            try:
                change()
            except ServingError as exc:
                raise admin_errors(exc) from None
            metrics.model_events.labels(event).inc()
            routing_changed()
            return answer()

        return await changed(apply)

    @app.post("/unload")
    async def unload(request: Request, version: str):
        authorize(request, admin=True)
        return _json(await apply_admin(lambda: store.unload(version), "unload", lambda: {
            "status": "unloaded", "version": version, "loaded_versions": sorted(store.routing.models)}))

    @app.post("/default")
    async def make_default(request: Request, version: str):
        authorize(request, admin=True)
        return _json(await apply_admin(lambda: store.set_default(version), "swap",
                                       lambda: {"status": "ok", "default_version": version}))

    @app.post("/split", openapi_extra=split_extra())
    async def split(request: Request):
        authorize(request, admin=True)
        expected = 'expected {"weights": {"VERSION": WEIGHT, ...}, "shadow": VERSION or null}'
        try:
            body = orjson.loads(await read_body(request) or b"{}")
            weights = {str(k): v for k, v in (body.get("weights") or {}).items()}
            shadow = body.get("shadow")
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise HTTPProblem(422, expected) from None
        if shadow is not None and (type(shadow) not in (str, int) or not str(shadow).isdigit()):
            raise HTTPProblem(422, f"{expected}: shadow must be a version number")
        bad = [k for k, v in weights.items() if type(v) not in (int, float) or not 0 <= v <= MAX_WEIGHT]
        if bad:
            raise HTTPProblem(422, f"{expected}: weights must be finite numbers between 0 and {MAX_WEIGHT:g} "
                                   f"(not: {', '.join(sorted(bad))[:200]})")
        weights = {k: float(v) for k, v in weights.items()}
        shadow = None if shadow is None else str(shadow)
        return _json(await apply_admin(lambda: store.set_split(weights, shadow), "split", lambda: {
            "status": "ok", "weights": store.routing.weights(), "shadow": store.routing.shadow}))

    # ------------------------------------------------------------ reads
    def health_body() -> tuple[dict, int]:
        """Healthy means "can serve": a default version is loaded and the scorer runs. What a person
        should still see (a refused load, a long queue) is a warning, not unhealthiness: a refused
        /load leaves the previous version serving, and no rollback would fix it."""
        routing = store.routing
        scorer = state["scorer"]
        depth = scorer.depth() if scorer else 0
        reasons = []
        if routing.default is None:
            reasons.append("no model loaded")
        if scorer is None or not scorer.alive:
            reasons.append("scorer thread not running")
        recent = recent_events()
        warnings = load_warnings(recent)
        if depth > settings.degraded_queue_depth:
            warnings.append(f"{depth} requests waiting for the model")
        if state.get("shadow_error"):
            warnings.append(state["shadow_error"])
        workers = workers_section()
        if workers["count"] < (workers["expected"] or 1):
            warnings.append(f"{workers['count']} of {workers['expected']} server processes serve; "
                            f"starting: {workers['starting'] or 'none listed'}")
        if reasons:
            status = "unhealthy"
        elif not workers["agree"]:
            # Every process can answer, but not all the same way: a person must look (HTTP 200: it serves).
            status = "degraded"
            reasons.extend(workers["differences"])
        else:
            status = "healthy"
        body = {"status": status, "model_loaded": routing.default is not None, "default_version": routing.default,
                "loaded_versions": sorted(routing.models, key=int), "queue_depth": depth,
                "uptime_seconds": round(time.time() - started, 1), "reasons": reasons, "warnings": warnings,
                "recent_events": recent[-5:], "pid": os.getpid(), "workers": workers}
        return body, 503 if status == "unhealthy" else 200

    @app.get("/health")
    async def health(request: Request):
        start = time.perf_counter()
        body, status = health_body()
        record(request, "health", status, body["default_version"] or "none", start)
        return _json(body, status)

    @app.get("/model_info")
    async def model_info(request: Request, full: bool = False):
        # The full metadata holds raw training rows (the golden examples): only with the admin token.
        authorize(request, admin=full)
        routing = store.routing
        versions = {}
        for version, model in sorted(routing.models.items(), key=lambda kv: int(kv[0])):
            m = model.metadata
            versions[version] = {"model_dir": str(model.version_dir), "release": m.release,
                                 "model_name": m.model_name, "training_date": m.training_date,
                                 "model_digest": m.model_digest, "files": m.files}
        default = None
        if routing.default:
            meta = routing.models[routing.default].metadata.model_dump(mode="json", by_alias=True)
            if not full:
                for bulky in ("golden_examples", "reference", "training", "calibration"):
                    meta.pop(bulky, None)
            default = meta
        recent = recent_events()
        load_errors = load_warnings(recent)
        return _json({"default_version": routing.default, "metadata": default, "versions": versions,
                      "traffic_split": routing.weights(), "shadow": routing.shadow,
                      "last_load_error": load_errors[-1] if load_errors else None, "events": recent, "pid": os.getpid(),
                      "workers": workers_section(full=True),
                      "policy": {"unknown_category": settings.unknown_category,
                                 "out_of_range": settings.out_of_range, "max_batch_rows": settings.max_batch_rows}})

    @app.get("/shadow")
    async def shadow(request: Request, limit: int = 100):
        authorize(request, admin=False)
        return _json({"shadow": store.routing.shadow, "recent": list(shadow_log)[-max(0, limit):]})

    def recorder() -> Recorder:
        if state["recorder"] is None:
            raise HTTPProblem(503, "monitoring is off on this server (SERVING_MONITORING=false)")
        return state["recorder"]

    def references() -> dict[str, dict]:
        return {v: m.metadata.reference or {} for v, m in store.routing.models.items()}

    def recent_summary(minutes: float, fresh: bool = True) -> dict:
        """The dashboard's numbers over the last ``minutes``, from what the recorder holds (the host's)."""
        window = recorder().window(time.time() - minutes * 60, None, fresh)
        return summary(window, health_body()[0], references(), minutes, settings.drift_min_rows)

    def publish_monitoring(minutes: float = 60) -> None:
        """The last hour's drift and calibration as gauges, set whole (a feature under the minimum sample
        has no PSI, not a stale one). From the other workers' last publication (at most a second old):
        a scrape does not make them publish."""
        gauges: dict[str, dict[tuple[str, ...], float]] = {
            "serving_healthy": {(): 1.0 if health_body()[0]["status"] == "healthy" else 0.0}}
        if state["recorder"] is not None:
            numbers = recent_summary(minutes, fresh=False)
            psi, mean, ece, labelled, baseline = {}, {}, {}, {}, {}
            for version, v in numbers["versions"].items():
                for feature, value in v["psi"].items():
                    psi[(version, feature)] = value
                if v["mean_prediction"] is not None:
                    mean[(version,)] = v["mean_prediction"]
                if v["labels"].get("n"):
                    ece[(version,)] = v["labels"]["ece"]
                    labelled[(version,)] = v["labels"]["n"]
            for version, reference in references().items():
                if (reference.get("prediction") or {}).get("mean") is not None:
                    baseline[(version,)] = reference["prediction"]["mean"]
            gauges |= {"serving_feature_psi": psi, "serving_prediction_mean": mean, "serving_ece": ece,
                       "serving_labelled_rows": labelled, "serving_prediction_baseline_mean": baseline}
        metrics.scrape_gauges.set(gauges)

    @app.get("/metrics")
    async def prometheus(request: Request):
        authorize(request, admin=False)
        metrics.queue_depth.set(state["scorer"].depth() if state["scorer"] else 0)
        await asyncio.to_thread(publish_monitoring)
        return Response(await asyncio.to_thread(generate_latest, metrics.exposition), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------ monitoring
    @app.get("/monitoring/window")
    async def monitoring_window(request: Request, since: float | None = None, until: float | None = None):
        """Counts (never raw feature values) recorded since ``since`` (epoch seconds; default: an hour ago)."""
        authorize(request, admin=False)
        now = time.time()
        since = now - 3600 if since is None else since
        if not (math.isfinite(since) and (until is None or math.isfinite(until))):
            raise HTTPProblem(422, "since and until are epoch seconds")
        return _json(await asyncio.to_thread(recorder().window, since, until))

    @app.get("/monitoring/labelled", openapi_extra=labelled_extra())
    async def monitoring_labelled(request: Request, version: str, since: float = 0.0,
                                  limit: int = LABELLED_MAX_ROWS):
        """Admin. The labelled rows of ``version`` scored since ``since`` (epoch seconds), oldest first, with
        their raw scores: what ``python -m flows recalibrate --labels feedback`` refits a calibrator on."""
        authorize(request, admin=True)
        if not math.isfinite(since):
            raise HTTPProblem(422, "since is epoch seconds")
        if not 1 <= limit <= LABELLED_MAX_ROWS:
            raise HTTPProblem(422, f"limit must be between 1 and {LABELLED_MAX_ROWS}")
        return _json(await asyncio.to_thread(recorder().labelled, version, since, limit))

    @app.get("/monitoring/summary")
    async def monitoring_summary(request: Request, minutes: float = 60):
        """The dashboard's numbers over the last ``minutes``: the guide's panels, PSI and ECE included."""
        authorize(request, admin=False)
        if not (math.isfinite(minutes) and 0 < minutes <= 24 * 60):
            raise HTTPProblem(422, "minutes must be between 0 and 1440")
        return _json(await asyncio.to_thread(recent_summary, minutes))

    @app.get("/dashboard")
    async def dashboard(request: Request):
        """The guide's monitoring dashboard: one self-contained page (no CDN), refreshing every 30 s."""
        return Response(PAGE, media_type="text/html; charset=utf-8")

    @app.post("/feedback", openapi_extra=feedback_extra(settings))
    async def feedback(request: Request):
        """Labels for scored rows: {"labels": [{"request_id": ID, "label": 0|1, "row": N (default 0)}, ...]}."""
        authorize(request, admin=True, token=settings.feedback_token)
        try:
            items = orjson.loads(await read_body(request)).get("labels")
        except (orjson.JSONDecodeError, AttributeError):
            items = None
        if not isinstance(items, list):
            raise HTTPProblem(422, 'expected {"labels": [{"request_id": ID, "label": 0 or 1, "row": N}, ...]}')
        if len(items) > settings.max_feedback_items:
            raise HTTPProblem(413, f"{len(items)} labels; at most {settings.max_feedback_items} per request")
        result = await asyncio.to_thread(recorder().feedback, items)
        for outcome in ("accepted", "unchanged", "replaced", "unknown", "invalid"):
            if result[outcome]:
                metrics.feedback_labels.labels(outcome).inc(result[outcome])
        return _json(result)

    # ------------------------------------------------------------ predict
    def record_shadow(request_id: str, served: str, shadow_version: str, served_prob, fut) -> None:
        if fut.exception() is not None:     # the answer was already sent: a warning, never an error
            state["shadow_error"] = f"shadow version {shadow_version} failed to score: {fut.exception()}"
            event("shadow_failed", state["shadow_error"])
            return
        state["shadow_error"] = None
        _raw, prob = fut.result()
        diff = abs(prob - served_prob)
        metrics.shadow_rows.labels(shadow_version).inc(prob.size)
        hist = metrics.shadow_divergence.labels(shadow_version)
        for d in diff[:SHADOW_ROWS_OBSERVED].tolist():
            hist.observe(d)
        shadow_log.append({"request_id": request_id, "served_version": served, "shadow_version": shadow_version,
                           "rows": int(prob.size), "mean_abs_divergence": float(diff.mean()),
                           "max_abs_divergence": float(diff.max()), "shadow_probabilities": prob[:10].tolist(),
                           "served_probabilities": served_prob[:10].tolist(), "at": time.time()})

    @app.post("/predict", openapi_extra=predict_extra(settings))
    async def predict(request: Request):
        start = time.perf_counter()
        rid = request.headers.get("x-request-id", "")
        request_id = rid if REQUEST_ID_RE.match(rid) else uuid.uuid4().hex
        version = "none"
        try:
            authorize(request, admin=False)
            routing = store.routing
            try:
                body = orjson.loads(await read_body(request))
            except orjson.JSONDecodeError as exc:
                raise HTTPProblem(422, f"body is not valid JSON (NaN and Infinity are not JSON): {exc}") from None
            rows = body.get("features") if isinstance(body, dict) else None
            if not isinstance(rows, list) or not rows:
                raise HTTPProblem(422, 'expected {"features": [{"feature": value, ...}, ...]} with at least one row')
            if len(rows) > settings.max_batch_rows:
                raise HTTPProblem(413, f"{len(rows)} rows; at most {settings.max_batch_rows} per request")
            not_objects = [i for i, r in enumerate(rows) if type(r) is not dict]
            if not_objects:
                raise HTTPProblem(422, f"rows {not_objects[:10]} are not JSON objects")
            wanted = request.query_params.get("version")
            if wanted is not None:
                if wanted not in routing.models:
                    raise HTTPProblem(404, f"version {wanted} is not loaded; loaded: {sorted(routing.models)}")
                version = wanted
            else:
                key = request.headers.get("x-request-key") or body.get("key")
                if key is not None and type(key) not in (str, int, float):
                    # str() of a value nested a thousand levels deep recurses past Python's limit
                    raise HTTPProblem(422, '"key" (the sticky routing key) must be a string or a number, not '
                                           + JSON_KINDS.get(type(key), type(key).__name__))
                version = routing.pick(None if key is None else str(key))
                if version is None:
                    raise HTTPProblem(503, "no model loaded")
            model = routing.models[version]
            columns, problems = read_json_rows(model.specs, rows, settings.policy)
            if problems:
                for p in problems:
                    metrics.input_problems.labels(p.column or "", p.issue).inc()
                raise HTTPProblem(422, f"{len(problems)} problem(s) with the input; rows are 0-based",
                                  errors=[p.to_dict() for p in problems])
            try:
                raw, prob = await asyncio.wait_for(asyncio.wrap_future(state["scorer"].submit(model, columns,
                                                                                              len(rows))),
                                                   settings.score_timeout_s)
            except TimeoutError:      # the job is cancelled too: the scorer skips it
                raise HTTPProblem(503, f"the model did not answer within {settings.score_timeout_s:g} s; "
                                       "retry later", retry_after=RETRY_AFTER_S) from None
            shadow_version = routing.shadow
            if shadow_version and shadow_version != version and shadow_version in routing.models:
                shadow_model = routing.models[shadow_version]
                fut = state["scorer"].submit(shadow_model, columns, len(rows))
                fut.add_done_callback(lambda f: record_shadow(request_id, version, shadow_version, prob, f))
        except HTTPProblem as exc:
            rejected = tuple(e["column"] or "" for e in exc.extra.get("errors", ()))
            record(request, "predict", exc.status, version, start, rejected)
            headers = {"x-request-id": request_id}
            if exc.status == 503:
                headers["retry-after"] = str(RETRY_AFTER_S)
            return _json({"detail": exc.detail, **exc.extra, "request_id": request_id}, exc.status, headers)
        except Exception:
            log.exception("predict failed (request %s)", request_id)
            record(request, "predict", 500, version, start)
            return _json({"detail": "internal error; see the server log", "request_id": request_id}, 500,
                         {"x-request-id": request_id})
        if PROBE_HEADER not in request.headers:
            metrics.rows.labels(version).inc(len(rows))
            hist = metrics.probability.labels(version)
            for p in prob[:SHADOW_ROWS_OBSERVED].tolist():
                hist.observe(p)
            if state["recorder"] is not None:
                state["recorder"].scored(version, request_id, columns, prob, time.perf_counter() - start, raw)
        record(request, "predict", 200, version, start)
        return Response(predictions_json(request_id, version, prob, raw), media_type="application/json",
                        headers={"x-request-id": request_id})

    return app


def __getattr__(name: str):
    # `uvicorn serving.api.app:app` builds the app on first access, not at import.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
