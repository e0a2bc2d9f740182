"""A release to a fleet (``deploy_flow(fleet=…)``, ``python -m flows deploy --fleet NAME``).

    stage     every host at once, at most ``max_parallel_transfers`` at a time: transfer (with S3 the
              bundle is uploaded once and each host fetches it), unpack, environment. Nothing served
              changes; a host that fails here stops the release before any host switched.
    phases    ``tasks.deploy.plan``: all-at-once, rolling batches, or the canary then the rest. A drained
              phase leaves the balancer's rotation before its hosts switch and rejoins after their smoke
              tests passed. The canary's phase ends with the monitor's verdict over its window.
    halt      the first host that fails (smoke test, unreachable, refused) or a canary verdict stops the
              release: every host already switched goes back to its previous version, the hosts not
              reached stay as they are, the champion does not move (``FleetHalted``).
    promote   once every host passed; then the check after promotion, as for a single target.

The report (artifact ``deploy-report-<model>``) says which hosts were done, put back, never touched.
"""

from __future__ import annotations

import time

from prefect import get_run_logger
from prefect.runtime import flow_run

from flows import fleet_stages as st
from flows.notify import check_after_promotion, publish
from flows.output import progress_to_run_log
from flows.stages import package_task, promote_task
from tasks.constants import CHAMPION
from tasks.deploy.balancer import NginxBalancer
from tasks.deploy.deploy import Deployment, upload_once
from tasks.deploy.fleets import Fleet
from tasks.deploy.plan import CANARY, FleetOutcome, Phase, halt, plan
from tasks.deploy.targets import Target
from tasks.deploy.transports import transport_for
from tasks.errors import FleetHalted, PostPromotionCheckFailed, ReleaseError, RestoreFailed, SmokeTestFailed
from tasks.monitoring.settings import load_monitoring
from tasks.progress import Progress
from tasks.registry import MlflowRegistry
from tasks.release.reports import fleet_report


def _healthy(target: Target) -> bool:
    """The host runs a server that says it is healthy (whatever version): safe to send traffic to."""
    try:
        state = transport_for(target).host("status")
    except ReleaseError:
        return False
    return bool(state.get("running")) and state.get("health") == "healthy"


def _why(exc: BaseException) -> str:
    if isinstance(exc, SmokeTestFailed):
        return "smoke test failed: " + "; ".join(exc.failures)
    return f"{type(exc).__name__}: {exc}"


class FleetRelease:
    """One release of a registered version to a fleet: the hosts' outcomes as it goes."""

    def __init__(self, fleet: Fleet, targets: list[Target], source: str, registry: MlflowRegistry,
                 version: str, before: str | None) -> None:
        self.fleet, self.targets, self.registry, self.version, self.before = fleet, targets, registry, version, before
        self.by_name = {t.name: t for t in targets}
        self.balancer = NginxBalancer(fleet, targets, source) if fleet.balancer is not None else None
        self.outcome = FleetOutcome(fleet.name, fleet.strategy)
        self.phases = plan(fleet)
        self.deployments: dict[str, Deployment] = {}
        self.receipts: dict = {}
        self.logger = get_run_logger()

    def hosts(self, names) -> list[Target]:
        return [self.by_name[n] for n in names]

    # ------------------------------------------------------------ stages
    def stage(self, bundle, metadata) -> None:
        uploaded = upload_once(self.targets, bundle)
        results = st.in_parallel(st.stage_task, self.targets, self.fleet.max_parallel_transfers,
                              per_target={t.name: {"uploaded": uploaded.get(t.name)} for t in self.targets},
                              bundle=bundle, metadata=metadata)
        failed = {n: _why(r) for n, r in results.items() if isinstance(r, BaseException)}
        if failed:
            self.outcome.failed = failed
            self.outcome.untouched = [t.name for t in self.targets]
            raise FleetHalted(f"fleet {self.fleet.name}: staging version {self.version} failed on "
                              + "; ".join(f"{n}: {w}" for n, w in failed.items()) + "; no host was switched",
                              self.outcome)
        self.receipts = results

    def run_phase(self, phase: Phase, bundle, metadata) -> None:
        names = list(phase.hosts)
        try:
            if phase.drain and self.balancer is not None:
                st.balancer_task(self.balancer, drain=tuple(names))
            results = st.in_parallel(st.switch_task, self.hosts(names), len(names),
                                  per_target={n: {"receipt": self.receipts[n]} for n in names},
                                  bundle=bundle, metadata=metadata)
        except ReleaseError as exc:      # the balancer would not drain: nothing of this phase switched
            results = {n: exc for n in names}
        failed = []
        for name, result in results.items():
            if isinstance(result, BaseException):
                failed.append(name)
                self.outcome.failed[name] = _why(result)
                if isinstance(result, SmokeTestFailed) and result.restore is not None:
                    self.outcome.restored[name] = str(result.restore)
            else:
                self.deployments[name] = result
                self.outcome.done.append(name)
        if phase.drain and self.balancer is not None:
            back = [n for n in names if n not in failed or _healthy(self.by_name[n])]
            try:
                self._undrain(back)
            except ReleaseError as exc:
                self.halt(failed, f"the balancer would not take {', '.join(back)} back: {exc}")
        if failed:
            self.halt(failed, f"{', '.join(failed)} failed")
        if phase.kind == CANARY:
            self.canary(names, metadata)

    def canary(self, names: list[str], metadata) -> None:
        c = self.fleet.canary
        previous = self.registry.get_version(self.before).tags.get("export_version") if self.before else None
        verdict = st.canary_task(self.hosts(names), self.version, metadata, load_monitoring(c.monitoring), c.window_s,
                              c.check_every_s, c.halt_on, previous)
        self.outcome.canary = verdict.to_dict()
        if verdict.halt:
            self.halt([], "the canary's monitor said halt: " + "; ".join(verdict.reasons))

    def wait(self, phase: Phase) -> None:
        if phase.pause_after_s:
            self.logger.info("pausing %.0fs before the next batch", phase.pause_after_s)
            time.sleep(phase.pause_after_s)     # the inventory's pause_s: time to watch the hosts done

    def halt(self, failed: list[str], why: str) -> None:
        """Put every host switched so far back (drained while it swaps), then raise."""
        decision = halt(self.phases, list(self.outcome.done), failed)
        self.logger.error("fleet %s: halting (%s); putting back %s; never touched: %s", self.fleet.name, why,
                          ", ".join(decision.restore) or "none", ", ".join(decision.untouched) or "none")
        stuck = []
        for name in decision.restore:
            target = self.by_name[name]
            drained = self._drain_quietly([name])
            result = st.restore_task(target, self.deployments[name])
            self.outcome.restored[name] = str(result)
            if result.ok and drained:
                try:
                    self._undrain([name])
                except ReleaseError as exc:
                    stuck.append(f"{name} was put back but stays out of the balancer's rotation: {exc}")
            if not result.ok:
                stuck.append(str(result))
        self.outcome.untouched = list(decision.untouched)
        message = f"fleet {self.fleet.name}: {self.fleet.strategy} release of version {self.version} HALTED ({why}); "
        if stuck:
            raise RestoreFailed(message + "and putting hosts back FAILED: " + "; ".join(stuck) + "; check them with "
                                f"`python -m flows status --fleet {self.fleet.name}`")
        raise FleetHalted(message + self.outcome.summary(), self.outcome)

    # ------------------------------------------------------------ the balancer, best effort while halting
    def _drain_quietly(self, names: list[str]) -> bool:
        if self.balancer is None:
            return False
        try:
            st.balancer_task(self.balancer, drain=tuple(names))
            return True
        except ReleaseError as exc:
            self.logger.error("balancer: could not drain %s before putting it back (%s); restoring in place",
                              ", ".join(names), exc)
            return False

    def _undrain(self, names: list[str]) -> None:
        if self.balancer is not None and names:
            st.balancer_task(self.balancer, undrain=tuple(names))


@progress_to_run_log()
def fleet_deploy(settings, fleet: Fleet, targets: list[Target], source: str, version: str | None, reason: str,
                 approval: dict | None, started: float) -> dict:
    """Release ``version`` (default: the challenger) to the fleet by its strategy, then promote it."""
    registry = MlflowRegistry(settings)
    mv = registry.resolve(version)
    version = str(mv.version)
    champion = registry.alias_version(CHAMPION)
    before = str(champion.version) if champion is not None else None
    run = FleetRelease(fleet, targets, source, registry, version, before)
    bundle = metadata = None
    try:
        model_dir = registry.export_dir(mv, settings.pipeline_home / "registry-cache")
        bundle, metadata = package_task(model_dir, settings.pipeline_home / "bundles")
        registry.log_bundle(version, bundle)
        run.stage(bundle, metadata)
        for phase in run.phases:
            run.run_phase(phase, bundle, metadata)
            run.wait(phase)
        promotion = promote_task(registry, version, reason, flow_run.get_id(), approval)
    except Exception as exc:
        champion_note = registry.champion_after_failure(before)
        result = {"model": registry.name, "registry_version": version, "fleet": run.outcome.to_dict(),
                  "error": f"{type(exc).__name__}: {exc}", "champion": champion_note}
        publish("deploy-report", registry.name, fleet_report(result),
                f"{registry.name} v{version} on fleet {fleet.name}: HALTED; {run.outcome.summary()}; {champion_note}")
        if isinstance(exc, FleetHalted | RestoreFailed):
            exc.outcome, exc.champion = run.outcome, champion_note
        raise
    checks, failed, sent = check_after_promotion(registry.name, version, targets, metadata)
    result = {"model": registry.name, "registry_version": version, "version": metadata.version,
              "release": metadata.release, "bundle": {"path": str(bundle.path), "sha256": bundle.sha256},
              "deployments": [run.deployments[t.name].to_dict() for t in targets], **promotion,
              "approval": approval, "fleet": run.outcome.to_dict(),
              "balancer": run.balancer.url if run.balancer else None,
              "post_promotion_checks": [c.to_dict() for c in checks], "alarms_sent": sum(sent),
              "seconds": round(time.perf_counter() - started, 3)}
    publish("deploy-report", registry.name, fleet_report(result),
            f"{registry.name} v{version} on fleet {fleet.name}: {run.outcome.summary()}"
            + (": check after promotion FAILED" if failed else ""))
    if failed:
        raise PostPromotionCheckFailed(version, {c.target: c.failures for c in failed}, alarm_sent=all(sent))
    return result


@progress_to_run_log()
def fleet_rollback(settings, fleet: Fleet, targets: list[Target], source: str, version: str | None,
                   reason: str) -> dict:
    """Serve the previous champion (or ``version``) on every host of the fleet, one at a time and out of the
    balancer's rotation while it switches; the alias moves back once every host passed its smoke test.

    A host that fails does not stop the others (they are getting off a version being rolled back); the
    alias then stays, and the error names the hosts to fix before running the rollback again."""
    logger = get_run_logger()
    registry = MlflowRegistry(settings)
    current, goal = registry.rollback_version(version)
    model_dir = registry.export_dir(registry.get_version(goal), settings.pipeline_home / "registry-cache")
    balancer = NginxBalancer(fleet, targets, source) if fleet.balancer is not None else None
    done, failed = [], {}
    progress = Progress()
    for i, target in enumerate(targets, 1):
        progress.step(f"rollback: host {i}/{len(targets)} ({target.name})", i - 1, len(targets))
        try:
            if balancer is not None:
                st.balancer_task(balancer, drain=(target.name,))
            done.append(st.activate_task(target, model_dir, settings.pipeline_home / "bundles").to_dict())
        except ReleaseError as exc:
            failed[target.name] = _why(exc)
            logger.error("fleet %s: %s could not be switched to version %s: %s", fleet.name, target.name, goal, exc)
        if balancer is not None and (target.name not in failed or _healthy(target)):
            try:
                st.balancer_task(balancer, undrain=(target.name,))
            except ReleaseError as exc:
                failed.setdefault(target.name, f"switched, but stays out of the balancer's rotation: {exc}")
    result = {"model": registry.name, "fleet": fleet.name, "reason": reason, "champion_before": current,
              "deployments": done, "failed": failed}
    if failed:
        raise FleetHalted(f"fleet {fleet.name}: rollback to version {goal} failed on "
                          + "; ".join(f"{n}: {w}" for n, w in failed.items())
                          + f"; the champion stays {current}. Fix those hosts, then run the rollback again.")
    result |= registry.record_rollback(current, goal, reason, flow_run.get_id())
    logger.info("fleet %s rolled back: champion %s -> %s on %s", fleet.name, current, goal,
                ", ".join(t.name for t in targets))
    return result | {"action": "rolled back"}
