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

    model_root: Path = Field(default_factory=Path.cwd)
    model_dir: Path | None = None
    model_version: str | None = None
    # What the server serves (versions, default, split, shadow), rewritten after every admin change; a
    # restarted server (its supervisor replaced it) serves that again instead of model_dir/model_version.
    state_file: Path | None = None
    # Server processes on this host (gunicorn workers; python -m serving sets it). They follow the state file: an
    # admin change waits up to converge_timeout_s for the others to serve it (serving/workers/sync.py).
    workers: int | None = Field(None, ge=1, le=256)
    master_pid: int | None = None      # set by serving/workers/supervise.py: the workers' parent
    converge_timeout_s: float = Field(120, gt=0)
    # prometheus_client's multiprocess folder (PROMETHEUS_MULTIPROC_DIR, set by serving/workers/supervise.py): the
    # workers' counters are kept there and a scrape of any worker merges them all.
    metrics_dir: Path | None = None
    admin_token: str | None = Field(default=None, repr=False)
    max_batch_rows: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(16 << 20, ge=1024)   # larger bodies get 413 before they are read whole
    score_timeout_s: float = Field(30, gt=0)         # a request waits at most this for the model: then 503
    scorer_batch_rows: int = Field(20_000, ge=1)
    unknown_category: str = Field("reject", pattern="^(reject|allow)$")
    out_of_range: str = Field("reject", pattern="^(reject|allow)$")
    protect_reads: bool = False
    intra_op_threads: int | None = Field(None, ge=1)
    inter_op_threads: int | None = Field(None, ge=1)
    degraded_queue_depth: int = Field(256, ge=1)
    shadow_log_size: int = Field(1000, ge=0)
    # monitoring (serving/monitoring/recorder.py); off: nothing is recorded, /monitoring/* and /feedback answer 503
    monitoring: bool = True
    monitor_window_s: int = Field(60, ge=1, le=86400)
    monitor_windows: int = Field(1440, ge=1, le=100_000)
    label_window_s: int = Field(3600, ge=60, le=86400)
    feedback_ttl_s: int = Field(7 * 86400, ge=60)
    feedback_max_rows: int = Field(1_000_000, ge=1)
    feedback_token: str | None = Field(default=None, repr=False)   # unset: the admin token
    max_feedback_items: int = Field(100_000, ge=1)
    drift_min_rows: int = Field(200, ge=1)     # the dashboard's PSI says "not enough data" below this

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


def settings_from_env(env: dict[str, str] | None = None) -> ServingSettings:
    """Settings from SERVING_* variables; SERVING_ADMIN_TOKEN_FILE names a file holding the admin token
    (a systemd unit or a host keeps it out of the environment and the process table)."""
    env = dict(os.environ) if env is None else env
    data = {field: env[key] for key, field in ENV.items() if env.get(key)}
    token_file = env.get("SERVING_ADMIN_TOKEN_FILE")
    if token_file and "admin_token" not in data:
        try:
            data["admin_token"] = Path(token_file).read_text().strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ContractError(f"serving configuration: SERVING_ADMIN_TOKEN_FILE {token_file}: {exc}") from None
    try:
        return ServingSettings.model_validate(data)
    except ValidationError as exc:
        names = {v: k for k, v in ENV.items()}
        parts = [f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()]
        raise ContractError("serving configuration: " + "; ".join(parts)) from None
