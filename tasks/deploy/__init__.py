"""From a registered version to a smoke-tested server on each target host.

    package.py     the deterministic release bundle with its MANIFEST
    targets.py     the target inventory (configs/targets.yaml)
    transports/    how a bundle reaches a host: local, ssh, s3 behind one protocol
    deploy.py      transfer, unpack, start or hot-load, smoke-test, restore on failure
    smoke.py       the served predictions must be the trained ones
"""
