"""Alarms as Prefect events. ``pipeline.alarm.critical`` triggers the ``rollback`` deployment
(prefect.yaml); ``pipeline.alarm.warning`` is for people (host down, registry and host disagree),
because serving another model version would not fix it.

Every event names its target as the resource ``pipeline.target.<name>`` and carries the target,
the model, the registry version the alarm is about and the reason in its payload.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CRITICAL = "pipeline.alarm.critical"
WARNING = "pipeline.alarm.warning"


def emit_alarm(event: str, *, target: str, model: str, version: str | None, reason: str,
               details: dict | None = None) -> bool:
    """Emit the alarm; True when Prefect accepted it for sending (False without an events client)."""
    from prefect.events import emit_event

    sent = emit_event(event=event,
                      resource={"prefect.resource.id": f"pipeline.target.{target}",
                                "prefect.resource.name": target},
                      related=[{"prefect.resource.id": f"pipeline.model.{model}",
                                "prefect.resource.role": "model", "prefect.resource.name": model}],
                      payload={"target": target, "model": model, "version": version, "reason": reason,
                               **(details or {})})
    (log.error if event == CRITICAL else log.warning)("%s on target %s (model %s version %s): %s", event, target,
                                                      model, version, reason)
    return sent is not None
