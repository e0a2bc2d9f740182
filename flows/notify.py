"""What the flows tell people, through Prefect: keyed report artifacts and alarm events.

Reports: one artifact key per report kind and model, so the UI's Artifacts page keeps each
report's history. Alarms: ``pipeline.alarm.critical`` triggers the ``rollback`` deployment
(prefect.yaml); ``pipeline.alarm.warning`` is for people (host down, registry and host
disagree), because serving another model version would not fix it. Every event names its
target as the resource ``pipeline.target.<name>`` and carries the target, the model, the
registry version the alarm is about and the reason in its payload.

The markdown itself is built by ``tasks.release.reports`` from plain dicts.
"""

from __future__ import annotations

import logging

from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from tasks.constants import ALARM_CRITICAL
from tasks.deploy.smoke import smoke_test
from tasks.deploy.targets import url_of
from tasks.release.reports import artifact_key

log = logging.getLogger(__name__)


def publish(kind: str, model: str, markdown: str, description: str) -> str:
    """Publish a report as the next version of the keyed artifact ``<kind>-<model>``; returns the key."""
    key = artifact_key(kind, model)
    create_markdown_artifact(markdown=markdown, key=key, description=description)
    return key


def emit_alarm(event: str, *, target: str, model: str, version: str | None, reason: str,
               details: dict | None = None) -> bool:
    """Emit the alarm; True when Prefect accepted it for sending (False without an events client)."""
    sent = emit_event(event=event,
                      resource={"prefect.resource.id": f"pipeline.target.{target}",
                                "prefect.resource.name": target},
                      related=[{"prefect.resource.id": f"pipeline.model.{model}",
                                "prefect.resource.role": "model", "prefect.resource.name": model}],
                      payload={"target": target, "model": model, "version": version, "reason": reason,
                               **(details or {})})
    (log.error if event == ALARM_CRITICAL else log.warning)("%s on target %s (model %s version %s): %s", event,
                                                            target, model, version, reason)
    return sent is not None


def check_after_promotion(model: str, version: str, targets: list, metadata) -> tuple[list, list, list[bool]]:
    """Each target still serves the promoted version, healthy and faithful (the smoke test's checks); a
    critical alarm for each that does not. Returns (every check, the failed ones, whether each alarm went)."""
    checks = [smoke_test(t.name, url_of(t), metadata) for t in targets]
    failed = [c for c in checks if not c.passed]
    sent = [emit_alarm(ALARM_CRITICAL, target=c.target, model=model, version=version,
                       reason="check after promotion failed: " + "; ".join(c.failures)) for c in failed]
    return checks, failed, sent
