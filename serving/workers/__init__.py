"""Several server processes on one host that serve the same thing.

    supervise    gunicorn's master with N uvicorn workers (a dead worker is replaced at once)
    state        the host's desired state (run/serving-state.json) under its lock, worker records, host events
    sync         how one worker applies an admin change through the desired state, and follows it
"""
