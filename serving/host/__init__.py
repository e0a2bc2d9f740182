"""The host agent: the release operations on a target host, standard library only.

Run as ``python -m serving.host COMMAND --base-dir DIR ...`` (or ``python3 bin/host-agent.pyz COMMAND ...``,
the zipapp the pipeline ships to a host); it prints one JSON object.

    fetch        download a bundle (its URL on stdin) into incoming/, checked against its SHA-256
    unpack       check a bundle against its MANIFEST and make it releases/<version>/
    ensure-venv  the release's Python environment, built once per requirements and constraints
    start        hot-load the version into the running server, or start one and wait for /health
    activate     make a loaded (or loadable) version the default
    stop         stop the server this host started (never a process that took a stale pid)
    status       whether the server runs, what it serves, the releases unpacked here
    labelled     the labelled rows the server holds for a version (the admin token stays on the host)

Modules: ``cli`` (the parser and the command table), ``layout`` (the base directory, the token, the
server's record), ``processes`` (/proc: liveness, start times, process groups), ``client`` (HTTP calls to
the server), ``bundles``, ``environments``, ``server``, ``labelled``, ``errors``. It imports nothing of the
server but ``serving.contract.files`` and ``serving.contract.constants`` (both standard library only), and
nothing else imports it (``make lint``).
"""
