"""The release decision: what a new version is called and whether it may ship.

    versioning.py  MAJOR.MINOR.PATCH from the feature schema and the previous release
    gate.py        absolute bounds and the allowed change against the champion, every reason listed
    compare.py     champion versus candidate for a person approving a promotion (metrics, PSI)
    reports.py     the runs' reports as markdown (published by flows.notify)
"""
