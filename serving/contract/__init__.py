"""The contract between training and serving: one implementation both sides import, so they cannot drift.

    schema       the data schema and feature list (columns, types, bounds) and their digests
    inputs       one rulebook per column type: raw values (CSV text, JSON, DataFrame columns) -> model inputs
    metadata     metadata.json: what an exported version is, and the manifest of its files
    calibration  the calibrators (plain numpy), unpickled only after their SHA-256 matches
    model        loading one exported version (checks first, TensorFlow last) and scoring rows with it
    binning      PSI and the reference bins the monitoring counts on
    drift        drift and calibration from counts: what the monitor and the dashboard both compute
    digest       SHA-256 of files and bytes
    files        an atomic write and a timed file lock (standard library only)
    errors       the errors the contract raises, with their hierarchy

Nothing here imports the rest of the server (``make lint``: the ``serving-contract`` contract).
"""
