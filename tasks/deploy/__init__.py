"""From a registered version to a smoke-tested server on each target host.

    package.py     the deterministic release bundle with its MANIFEST
    targets.py     the target inventory (configs/targets.yaml)
    fleets.py      its fleets: targets released together by a strategy, optionally behind nginx
    plan.py        a fleet release's phases, and what a halt puts back
    balancer.py    nginx in front of a fleet: its generated configuration, draining hosts
    transports/    how a bundle reaches a host: local, ssh, s3 behind one protocol
    deploy.py      stage (transfer, unpack, environment), switch (start or hot-load), smoke-test, restore
    smoke.py       the served predictions must be the trained ones
"""
