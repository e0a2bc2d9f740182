"""Stage 8: smoke-test a served version — stronger than TFX's InfraValidator: the served
predictions must be the trained ones.

Checks, all run and all reported: /health is healthy; /model_info shows the expected version
as the default with the expected file hashes, in every server process of the host (its
``workers`` section: each worker's own record, all of them started, agreeing); /predict on the
golden examples returns the expected calibrated probabilities (max |Δp| ≤ 1e-6); a malformed
request gets a 422; single-row latency is measured.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import httpx

from serving.contract.metadata import ModelMetadata
from tasks.constants import GOLDEN_TOLERANCE

LATENCY_SAMPLES = 20


@dataclass(frozen=True)
class SmokeReport:
    target: str
    url: str
    version: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    golden_max_abs_diff: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_max: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def worker_failures(workers: dict, version: str, files: dict[str, str]) -> list[str]:
    """What is wrong with the server processes of /model_info's ``workers`` section, one line each."""
    failures = []
    count, expected = workers.get("count", 0), workers.get("expected") or 1
    if count < expected:
        failures.append(f"/model_info: {count} of {expected} server processes serve "
                        f"(starting: {workers.get('starting') or 'none listed'})")
    for w in workers.get("workers") or []:
        pid = w.get("pid")
        if w.get("default") != version:
            failures.append(f"/model_info: worker pid {pid} serves default version {w.get('default')}, "
                            f"expected {version}")
        served = (w.get("versions") or {}).get(version) if isinstance(w.get("versions"), dict) else None
        if served is None:
            failures.append(f"/model_info: worker pid {pid} has not loaded version {version}")
        elif served.get("files") != files:
            failures.append(f"/model_info: worker pid {pid}: file hashes of version {version} differ from the export's")
    if not workers.get("agree", True):
        failures.append("/model_info: the server processes disagree: " + "; ".join(workers.get("differences") or []))
    return failures


def smoke_test(target: str, url: str, metadata: ModelMetadata, timeout: float = 30) -> SmokeReport:
    failures: list[str] = []
    golden_diff = p50 = pmax = None
    version = metadata.version
    # The probe header keeps these requests out of the server's user traffic, errors and predictions.
    with httpx.Client(base_url=url, timeout=timeout, headers={"X-Pipeline-Probe": "smoke"}) as http:
        try:
            health = http.get("/health")
            if health.status_code != 200 or health.json().get("status") != "healthy":
                failures.append(f"/health: {health.status_code} {health.json()}")
            info = http.get("/model_info").json()
            if info.get("default_version") != version:
                failures.append(f"/model_info: default version is {info.get('default_version')}, expected {version}")
            served = (info.get("versions") or {}).get(version, {})
            if served.get("files") != metadata.files:
                failures.append(f"/model_info: file hashes of version {version} differ from the export's")
            if isinstance(info.get("workers"), dict):       # a server from before several workers has none
                failures += worker_failures(info["workers"], version, metadata.files)
            golden = metadata.golden_examples
            resp = http.post(f"/predict?version={version}", json={"features": [g.features for g in golden]})
            if resp.status_code != 200:
                failures.append(f"/predict golden examples: HTTP {resp.status_code}: {resp.text[:300]}")
            else:
                got = [p["probability"] for p in resp.json()["predictions"]]
                golden_diff = max(abs(a - g.probability) for a, g in zip(got, golden, strict=True))
                if not golden_diff <= GOLDEN_TOLERANCE:
                    failures.append(f"/predict: golden examples off by {golden_diff:.2e} "
                                    f"(tolerance {GOLDEN_TOLERANCE:.0e})")
            bad = http.post("/predict", json={"features": [{"no_such_feature": 1}]})
            if bad.status_code != 422:
                failures.append(f"/predict with a malformed row answered {bad.status_code}, expected 422")
            row = {"features": [golden[0].features]}
            timings = []
            for _ in range(LATENCY_SAMPLES):
                start = time.perf_counter()
                http.post("/predict", json=row)
                timings.append((time.perf_counter() - start) * 1e3)
            p50, pmax = round(statistics.median(timings), 3), round(max(timings), 3)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
    return SmokeReport(target=target, url=url, version=version, passed=not failures, failures=failures,
                       golden_max_abs_diff=golden_diff, latency_ms_p50=p50, latency_ms_max=pmax)
