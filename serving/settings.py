"""Server settings, read once from the environment at start-up."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.contract.errors import ContractError
from serving.contract.processes import available_cpus


def threads_per_worker(workers: int | None, cpus: int | None = None) -> int:
    """TensorFlow intra-op threads for one of ``workers`` server processes: the CPUs shared out, at least 1."""
    return max(1, (cpus or available_cpus()) // (workers or 1))


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_root: Path = Field(default_factory=Path.cwd, description=(
        "models are loaded only from inside this directory (/load's model_dir is checked against it)"))
    model_dir: Path | None = Field(None, description=(
        "a model directory (inside model_root) to load and serve at start-up, with model_version"))
    model_version: str | None = Field(None, description="the version of model_dir to load and serve at start-up")
    state_file: Path | None = Field(None, description=(
        "what the server serves (versions, default, split, shadow), rewritten after every admin change; a restarted "
        "server (its supervisor replaced it) serves that again instead of model_dir/model_version"))
    workers: int | None = Field(None, ge=1, le=256, description=(
        "server processes on this host (gunicorn workers; python -m serving sets it); they follow the state file: an "
        "admin change waits up to converge_timeout_s for the others to serve it (serving/workers/sync.py)"))
    master_pid: int | None = Field(None, description=(
        "the workers' parent process (set by serving/workers/supervise.py)"))
    converge_timeout_s: float = Field(120, gt=0, description=(
        "seconds an admin change waits for the host's other server processes to serve it"))
    metrics_dir: Path | None = Field(None, description=(
        "prometheus_client's multiprocess folder (set by serving/workers/supervise.py): the workers' counters are "
        "kept there and a scrape of any worker merges them all"))
    admin_token: str | None = Field(default=None, repr=False, description=(
        "the bearer token of the admin routes (and of reads with protect_reads); unset: admin routes answer 401"))
    max_batch_rows: int = Field(10_000, ge=1, description="most rows one /predict request may carry (more: 413)")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="larger bodies get 413 before they are read whole")
    score_timeout_s: float = Field(30, gt=0, description="a request waits at most this for the model: then 503")
    scorer_batch_rows: int = Field(20_000, ge=1, description=(
        "most rows the scorer thread puts in one model call when it gathers waiting requests"))
    unknown_category: str = Field("reject", pattern="^(reject|allow)$", description=(
        "a category outside the schema's list (hard bounds): reject (422) or allow (scored)"))
    out_of_range: str = Field("reject", pattern="^(reject|allow)$", description=(
        "a value outside the schema's hard bounds: reject (422) or allow (scored)"))
    protect_reads: bool = Field(False, description=(
        "/predict, /model_info, /shadow, /metrics and /monitoring/* need the admin token too"))
    intra_op_threads: int | None = Field(None, ge=1, description=(
        "TensorFlow's threads inside one operation; unset: the CPUs shared out among the workers"))
    inter_op_threads: int | None = Field(None, ge=1, description="TensorFlow's operations run side by side; unset: 1")
    degraded_queue_depth: int = Field(256, ge=1, description=(
        "more requests than this waiting for the model: /health reports degraded"))
    shadow_log_size: int = Field(1000, ge=0, description="comparisons with the shadow version kept for /shadow")
    monitoring: bool = Field(True, description=(
        "record monitoring counts (serving/monitoring/recorder.py); off: nothing is recorded, /monitoring/* and "
        "/feedback answer 503"))
    monitor_window_s: int = Field(60, ge=1, le=86400, description="seconds of one monitoring window")
    monitor_windows: int = Field(1440, ge=1, le=100_000, description="monitoring windows kept (1440: a day of minutes)")
    label_window_s: int = Field(3600, ge=60, le=86400, description=(
        "labels from /feedback are counted per window of this many seconds of scoring time"))
    feedback_ttl_s: int = Field(7 * 86400, ge=60, description="how long a scored row waits for its label")
    feedback_max_rows: int = Field(1_000_000, ge=1, description="most scored rows kept waiting for their labels")
    feedback_token: str | None = Field(default=None, repr=False, description=(
        "the bearer token of /feedback; unset: the admin token"))
    max_feedback_items: int = Field(100_000, ge=1, description="most labels one /feedback request may carry")
    drift_min_rows: int = Field(200, ge=1, description='the dashboard\'s PSI says "not enough data" below this')

    @property
    def policy(self) -> frozenset[str]:
        let_through = set()
        if self.unknown_category == "allow":
            let_through.add("unknown category")
        if self.out_of_range == "allow":
            let_through.add("out of range")
        return frozenset(let_through)


ENV = {
    "SERVING_MODEL_ROOT": "model_root", "SERVING_MODEL_DIR": "model_dir",
    "SERVING_MODEL_VERSION": "model_version", "SERVING_STATE_FILE": "state_file",
    "SERVING_WORKERS": "workers", "SERVING_MASTER_PID": "master_pid",
    "SERVING_CONVERGE_TIMEOUT_S": "converge_timeout_s", "PROMETHEUS_MULTIPROC_DIR": "metrics_dir",
    "SERVING_ADMIN_TOKEN": "admin_token",
    "SERVING_MAX_BATCH_ROWS": "max_batch_rows", "SERVING_MAX_BODY_BYTES": "max_body_bytes",
    "SERVING_SCORER_BATCH_ROWS": "scorer_batch_rows", "SERVING_SCORE_TIMEOUT_S": "score_timeout_s",
    "SERVING_UNKNOWN_CATEGORY": "unknown_category", "SERVING_OUT_OF_RANGE": "out_of_range",
    "SERVING_PROTECT_READS": "protect_reads", "SERVING_INTRA_OP_THREADS": "intra_op_threads",
    "SERVING_INTER_OP_THREADS": "inter_op_threads", "SERVING_DEGRADED_QUEUE_DEPTH": "degraded_queue_depth",
    "SERVING_SHADOW_LOG_SIZE": "shadow_log_size", "SERVING_MONITOR_WINDOW_S": "monitor_window_s",
    "SERVING_MONITOR_WINDOWS": "monitor_windows", "SERVING_LABEL_WINDOW_S": "label_window_s",
    "SERVING_FEEDBACK_TTL_S": "feedback_ttl_s", "SERVING_FEEDBACK_MAX_ROWS": "feedback_max_rows",
    "SERVING_FEEDBACK_TOKEN": "feedback_token", "SERVING_MAX_FEEDBACK_ITEMS": "max_feedback_items",
    "SERVING_DRIFT_MIN_ROWS": "drift_min_rows", "SERVING_MONITORING": "monitoring",
}


# Read besides ENV's variables (a systemd unit or a host keeps the token out of the environment and the process
# table); its meaning is the reference page's too (docs/generate_reference.py).
TOKEN_FILE_ENV = "SERVING_ADMIN_TOKEN_FILE"
TOKEN_FILE_MEANING = "a file holding the admin token, read when SERVING_ADMIN_TOKEN is unset"


def settings_from_env(env: dict[str, str] | None = None) -> ServingSettings:
    """Settings from SERVING_* variables; SERVING_ADMIN_TOKEN_FILE names a file holding the admin token
    (a systemd unit or a host keeps it out of the environment and the process table)."""
    env = dict(os.environ) if env is None else env
    data = {field: env[key] for key, field in ENV.items() if env.get(key)}
    token_file = env.get(TOKEN_FILE_ENV)
    if token_file and "admin_token" not in data:
        try:
            data["admin_token"] = Path(token_file).read_text().strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ContractError(f"serving configuration: {TOKEN_FILE_ENV} {token_file}: {exc}") from None
    try:
        return ServingSettings.model_validate(data)
    except ValidationError as exc:
        names = {v: k for k, v in ENV.items()}
        parts = [f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()]
        raise ContractError("serving configuration: " + "; ".join(parts)) from None
