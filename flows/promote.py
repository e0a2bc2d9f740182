"""Manual promotion with an approval in the Prefect UI.

compare (champion vs candidate, published as an artifact) → pause for a typed approval
(approver, reason; explicit timeout) → deploy, smoke-test and promote with the approval
recorded on the MLflow version. A rejection or a timeout changes nothing: no host, no alias,
no tag. The run ends in a state named by the outcome: Approved, Rejected, TimedOut, StaleApproval
(``flows.outcomes``).
"""

from __future__ import annotations

import httpx
from prefect import flow, get_run_logger, pause_flow_run
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from pydantic import Field

from flows.deploy import deploy_flow
from flows.notify import publish
from flows.outcomes import ends_in, promote_outcome
from tasks.constants import CHAMPION
from tasks.errors import ApprovalTimedOut, ReleaseError, StaleApproval
from tasks.registry import MlflowRegistry
from tasks.release.compare import compare
from tasks.settings import load_settings


class Approval(RunInput):
    """The form the Prefect UI shows on "Resume"."""

    # Not required: a form left as it appears (the switch off) is a rejection, in both Prefect UIs; the
    # new UI sends no value for a switch never touched.
    approve: bool = Field(default=False, description="On: deploy and promote the candidate. Off (as it "
                                                     "appears): reject it; nothing changes.")
    approver: str = Field(min_length=1, max_length=200, description="Who decides (name or e-mail); "
                                                                     "recorded on the MLflow version.")
    reason: str = Field(min_length=3, max_length=2000, description="Why; recorded on the MLflow version.")


def _wake_expired_pause() -> None:
    """Put the run back to Running after its pause expired. The server refuses any state after an expired
    pause but its own anonymous "Failed"; from Running, the run can end in its named ``TimedOut``."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.get_id(), Running(), force=True)


def _wait_for_approval(name: str, version: str, text: str, timeout_s: int, poll_interval_s: int) -> Approval:
    """Pause the run until the approval form is answered; a timeout or a server that stayed away raises."""
    try:
        return pause_flow_run(wait_for_input=Approval.with_initial_data(description=text),
                              timeout=timeout_s, poll_interval=poll_interval_s)
    except FlowPauseTimeout:
        _wake_expired_pause()
        publish("promotion-decision", name,
                f"# Timed out: {name} version {version}\n\nNo answer within {timeout_s} s; "
                "nothing was deployed or promoted.\n", f"{name} v{version}: timed out")
        raise ApprovalTimedOut(f"no approval for version {version} within {timeout_s} s; "
                               "nothing was deployed or promoted") from None
    except httpx.HTTPError as exc:
        # The run's process polls the server while it waits; Prefect's client retries about 62 s
        # (PREFECT_CLIENT_MAX_RETRIES: 5, 2 to 32 s apart), then gives up: the run ends Failed once the
        # server is back. Say so, and how to go on.
        raise ReleaseError(f"the Prefect server did not answer while version {version} waited for its "
                           f"approval ({type(exc).__name__}: {exc}); nothing was deployed or promoted: start a "
                           f"new promotion (prefect deployment run promote/promote --param "
                           f"version={version})") from None


@flow(name="promote", validate_parameters=False)
@ends_in(promote_outcome)
def promote_flow(version: str | int | None = None, targets: list[str] | None = None, targets_file: str | None = None,
                 config: str | None = None, approval_timeout_s: int = 24 * 3600, poll_interval_s: int = 5) -> dict:
    """Compare a registered version (default: the latest blessed one) with the champion, wait for an
    approval, then deploy it to ``targets`` and promote it."""
    logger = get_run_logger()
    settings = load_settings(config)
    registry = MlflowRegistry(settings)
    candidate = registry.get_version(version) if version else registry.latest_blessed()
    if candidate.tags.get("blessed") != "true":
        raise ReleaseError(f"version {candidate.version} of '{registry.name}' did not pass the quality gate "
                           f"({candidate.tags.get('gate_reasons', 'no verdict recorded')}); only blessed versions "
                           "are promoted")
    champion = registry.alias_version(CHAMPION)
    if champion is not None and str(champion.version) == str(candidate.version):
        raise ReleaseError(f"version {candidate.version} of '{registry.name}' already is the champion")
    comparison = compare(registry.name, candidate, registry.metadata_of(candidate),
                         champion, registry.metadata_of(champion) if champion is not None else None)
    text = comparison.markdown()
    key = publish("promotion-comparison", registry.name, text,
                  f"{registry.name}: champion {champion.version if champion else 'none'} vs candidate "
                  f"{candidate.version}")
    logger.info("comparison published as artifact %s; waiting up to %d s for an approval", key, approval_timeout_s)

    answer = _wait_for_approval(registry.name, str(candidate.version), text, approval_timeout_s, poll_interval_s)
    decision = {"version": str(candidate.version), "approve": answer.approve, "approver": answer.approver,
                "reason": answer.reason, "comparison": comparison.to_dict()}
    # The approval answers the comparison above; if the champion moved while the run waited (another
    # promotion, a rollback), that comparison is stale and the approval does not carry over.
    now = registry.alias_version(CHAMPION)
    compared = str(champion.version) if champion is not None else None
    stale = answer.approve and (str(now.version) if now is not None else None) != compared
    verdict = "Stale" if stale else "Approved" if answer.approve else "Rejected"
    publish("promotion-decision", registry.name,
            f"# {verdict}: {registry.name} version {candidate.version}\n\n"
            f"- by: {answer.approver}\n- reason: {answer.reason}\n"
            + (f"- not carried out: the champion moved from {compared or 'none'} to "
               f"{now.version if now else 'none'} while this run waited; start a new promotion to compare "
               "again\n" if stale else ""),
            f"{registry.name} v{candidate.version}: {verdict.lower()}")
    if stale:
        raise StaleApproval(f"the approval of version {candidate.version} answered a comparison with champion "
                           f"{compared or 'none'}, but the champion is now {now.version if now else 'none'}; "
                           "nothing was deployed or promoted (start a new promotion run)")
    if not answer.approve:
        logger.info("rejected by %s: %s; nothing changed", answer.approver, answer.reason)
        return {**decision, "decision": "rejected"}
    logger.info("approved by %s: %s", answer.approver, answer.reason)
    result = deploy_flow(version=str(candidate.version), targets=targets, targets_file=targets_file, config=config,
                         reason=f"approved by {answer.approver}: {answer.reason}",
                         approval={"approver": answer.approver, "reason": answer.reason})
    return {**decision, "decision": "approved", "deploy": result}
