"""Watching what was deployed: probes of the served champion today; latency, volume, errors,
drift (PSI) and calibration (ECE) against the handover guide's thresholds as they come.

    probe.py   one target against the registry's champion: up, serving it, still as trained
    canary.py  the monitor's verdict on a fleet release's canary hosts over its window
    liveness.py  the health check: /health answered, "not deployed" for a target that never had a version,
               the watcher's heartbeat
    settings.py  configs/monitoring.yaml

The maths both sides need (ECE, PSI) lives in ``serving.contract.binning``; alarms are sent by the flows
(``flows.notify``), which turn a finding's level into a Prefect event.
"""
