"""What the commands that serve a version do (deploy, rollback, status, stop, monitor, watch, balancer): choose the
model (``flows.models``), check the targets or the fleet, then run the flow; print what a person needs and
return the exit code. The options are ``flows.cli``'s parser.

Light at import: Prefect and MLflow load inside the command, after its inputs were checked.
"""

from __future__ import annotations

import os

from flows.commands import EXIT_CRITICAL_ALARM, EXIT_DIFFERS, opt, print_deploy, write_json


def cmd_deploy(args) -> int:
    from flows.models import check_targets, check_version, choose_model

    chosen = choose_model(args.config, args.model)   # fail fast, before Prefect starts, on bad input
    check_version(chosen.settings, args.version)
    targets = None if args.fleet else (args.targets or ["local"])
    check_targets(chosen.settings, args.targets_file, targets, args.fleet)
    from flows.deploy import deploy_flow

    result = deploy_flow(version=args.version, targets=targets, targets_file=opt(args.targets_file),
                         config=chosen.config, reason="manual deploy", fleet=args.fleet, model=chosen.model)
    write_json(args.json_out, result)
    print_deploy(result, chosen.settings.models_dir)
    return 0


def cmd_rollback(args) -> int:
    from flows.models import check_targets, check_version, choose_model

    chosen = choose_model(args.config, args.model)   # fail fast, before Prefect starts, on bad input
    check_version(chosen.settings, args.version)
    names = check_targets(chosen.settings, args.targets_file, None if args.fleet else (args.targets or ["local"]),
                          args.fleet)
    from flows.deploy import rollback_flow

    common = {"targets_file": opt(args.targets_file), "config": chosen.config, "model": chosen.model}
    if args.fleet:
        result = rollback_flow(version=args.version, reason="manual rollback", fleet=args.fleet, **common)
        write_json(args.json_out, result)
        for d in result["deployments"]:
            print(f"target {d['target']}: now serves version {d['version']}; smoke test passed")
        print(f"champion: {result['champion_before']} -> {result['champion_after']}")
        return 0
    first = rollback_flow(target=names[0], version=args.version, reason="manual rollback", **common)
    # The other targets follow the champion the first one moved: switched only while they serve the version
    # rolled back from (the rollback deployment's rule for a burst of alarms).
    results = [first] + [rollback_flow(target=name, failing_version=first["champion_before"], **common,
                                       reason=f"manual rollback (with {names[0]})") for name in names[1:]]
    write_json(args.json_out, first if len(results) == 1 else {"rollbacks": results})
    for name, result in zip(names, results):
        if result.get("deployment"):
            print(f"target {name}: now serves version {result['deployment']['version']}; smoke test passed")
        else:
            print(f"target {name}: {result['action']} (it does not serve version {first['champion_before']})")
    print(f"champion: {first['champion_before']} -> {first['champion_after']}")
    return 0


def cmd_status(args) -> int:
    from flows.models import check_targets, choose_model
    from tasks.constants import CHAMPION
    from tasks.deploy.targets import load_targets, pick_targets
    from tasks.registry import MlflowRegistry

    chosen = choose_model(args.config, args.model)
    settings = chosen.settings
    check_targets(settings, args.targets_file, None if args.fleet else (args.targets or ["local"]), args.fleet)
    champion = MlflowRegistry(settings).alias_version(CHAMPION)
    expected = champion.tags.get("export_version") if champion else None
    print(f"registry: {settings.model_name} champion = version {champion.version if champion else 'none'}"
          f" (export version {expected or '-'})")
    result = {"model": settings.model_name, "champion": str(champion.version) if champion else None,
              "export_version": expected}
    if args.fleet:
        targets, drained = _fleet_status(args, settings, result)
    else:
        targets, drained = pick_targets(load_targets(args.targets_file, settings.pipeline_home),
                                        args.targets or ["local"]), None
    result["targets"] = [_target_status(target, expected, drained) for target in targets]
    result["differs"] = any(not t["matches"] for t in result["targets"])
    write_json(args.json_out, result)
    return EXIT_DIFFERS if result["differs"] else 0


def _fleet_status(args, settings, result: dict):
    """Print the fleet's line (its balancer's state); returns its targets and the hosts out of rotation."""
    from tasks.deploy.balancer import NginxBalancer
    from tasks.deploy.fleets import inventory_path, load_fleet

    fleet, targets = load_fleet(args.targets_file, settings.pipeline_home, args.fleet)
    result["fleet"] = {"name": fleet.name, "strategy": fleet.strategy, "hosts": len(targets)}
    print(f"fleet {fleet.name}: {fleet.strategy}, {len(targets)} hosts", end="")
    if fleet.balancer is None:
        print()
        return targets, None
    balancer = NginxBalancer(fleet, targets, str(inventory_path(args.targets_file)))
    state, answering = balancer.state(), balancer.served_generation()
    result["fleet"]["balancer"] = {"url": balancer.url, "generation": answering, "written": state.generation,
                                   "drained": sorted(state.drained)}
    print(f"; nginx at {balancer.url}: " + (f"generation {answering}" if answering is not None else "NOT answering")
          + f" (written: {state.generation}), out of rotation: {', '.join(sorted(state.drained)) or 'none'}")
    return targets, state.drained


def _target_status(target, expected: str | None, drained: set | None) -> dict:
    """Print one target's line; returns what it serves next to the champion's export."""
    from tasks.deploy.transports import transport_for
    from tasks.monitoring.liveness import ever_deployed

    state = transport_for(target).host("status")
    served = state.get("default_version")
    deployed = ever_deployed(state)
    ok = served == expected
    rotation = "" if drained is None else ", OUT of rotation" if target.name in drained else ", in rotation"
    diff = "" if ok else f"  <-- DIFFERS from the champion's {expected or 'nothing'}"
    what = (f"{'running' if state['running'] else 'not running'}, serves {served or 'nothing'}, health "
            f"{state.get('health', '-')}") if deployed else "not deployed (no version released to it yet)"
    print(f"target {target.name}: {what}{rotation}{diff}")
    return {"target": target.name, "deployed": deployed, "running": bool(state["running"]), "serves": served,
            "health": state.get("health"), "in_rotation": None if drained is None else target.name not in drained,
            "matches": ok}


def cmd_balancer(args) -> int:
    from tasks.deploy.balancer import NginxBalancer
    from tasks.deploy.fleets import inventory_path, load_fleet
    from tasks.errors import ConfigError
    from tasks.settings import load_settings

    settings = load_settings(args.config)
    fleet, targets = load_fleet(args.targets_file, settings.pipeline_home, args.fleet)
    if fleet.balancer is None:
        raise ConfigError(f"fleet {fleet.name} has no balancer: block in {inventory_path(args.targets_file)}")
    if args.out is not None:
        fleet = fleet.model_copy(update={"balancer": fleet.balancer.model_copy(update={"config_dir": args.out})})
    balancer = NginxBalancer(fleet, targets, str(inventory_path(args.targets_file)))
    drained = (balancer.state().drained | set(args.drain)) - set(args.undrain)
    if args.out is not None or not (args.drain or args.undrain):
        state = balancer.write(drained, example=args.out is not None)
        print(f"wrote {balancer.fleet_conf} and {balancer.conf} (generation {state.generation}; out of rotation: "
              f"{', '.join(sorted(state.drained)) or 'none'}); not reloaded")
    else:
        state = balancer.apply(drained)
        print(f"nginx at {balancer.url} serves generation {state.generation}; out of rotation: "
              f"{', '.join(sorted(state.drained)) or 'none'}")
    write_json(args.json_out, {"fleet": fleet.name, "generation": state.generation, "drained": sorted(state.drained),
                               "reloaded": args.out is None and bool(args.drain or args.undrain),
                               "config": str(balancer.conf)})
    return 0


def cmd_stop(args) -> int:
    from tasks.deploy.targets import load_targets, pick_targets
    from tasks.deploy.transports import transport_for
    from tasks.settings import load_settings

    settings = load_settings(args.config)
    stopped = []
    for target in pick_targets(load_targets(args.targets_file, settings.pipeline_home), args.targets or ["local"]):
        was_running = bool(transport_for(target).host("stop")["was_running"])
        print(f"target {target.name}: " + ("server stopped" if was_running else "no server was running"))
        stopped.append({"target": target.name, "was_running": was_running})
    write_json(args.json_out, {"targets": stopped})
    return 0


def cmd_monitor(args) -> int:
    from flows.models import check_targets, choose_model
    from tasks.monitoring.settings import load_monitoring

    chosen = choose_model(args.config, args.model)   # fail fast, before Prefect starts, on bad input
    load_monitoring(args.monitoring)
    names = check_targets(chosen.settings, args.targets_file, args.targets, args.fleet)
    from flows.monitor import monitor_flow

    result = monitor_flow(targets=names if (args.targets or args.fleet) else None, targets_file=opt(args.targets_file),
                          config=chosen.config, monitoring=opt(args.monitoring), model=chosen.model)
    write_json(args.json_out, result)
    for t in result["targets"]:
        f = t["finding"]
        print(f"target {f['target']}: serves {f['served'] or 'nothing'}; {f['finding']}")
        for version, alarms in t["alarms"].items():
            for a in alarms:
                print(f"  {a['level'].upper():8} {a['rule']} (v{version}): {a['message']} — {a['action']}")
    for c in result["transitions"]:
        print(f"{c['state']}: {c['level']} {c['rule']} on {c['target']}; sent to {', '.join(c['sent_to']) or '-'}")
    critical = any(a["level"] == "critical" for t in result["targets"] for found in t["alarms"].values()
                   for a in found)
    return EXIT_CRITICAL_ALARM if critical else 0


def cmd_watch(args) -> int:
    from flows.models import check_targets
    from tasks.monitoring.settings import load_monitoring
    from tasks.settings import load_settings

    settings = load_settings(args.config)   # fail fast, before Prefect loads, on bad input
    cfg = load_monitoring(args.monitoring)
    names = check_targets(settings, args.targets_file, args.targets, args.fleet)
    from flows.health import chosen_targets
    from flows.watcher import stop_on_signals, watch

    chosen = chosen_targets(args.targets_file, settings.pipeline_home, names)
    stop = stop_on_signals()
    result = watch(chosen, settings.pipeline_home, settings.model_name, cfg, dict(os.environ), rounds=args.rounds,
                   for_s=args.for_s, stop=stop)
    write_json(args.json_out, result)
    # Stopped by a signal (systemctl stop): a clean exit; a bounded run says whether a target is down.
    critical = not stop.is_set() and any(t["alarm"] for t in result["targets"].values())
    return EXIT_CRITICAL_ALARM if critical else 0
